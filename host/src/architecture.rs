//! The invariants of ARCHITECTURE.md that a crate boundary alone does not enforce, checked
//! against the sources: which crates each crate may depend on, that no module of the engine
//! imports in a circle, and that no async worker is ever turned into a blocking thread.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the binary's crate is in the workspace")
        .to_path_buf()
}

/// The `evhost-*` crates a manifest names among its dependencies (not dev-dependencies).
fn evhost_dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).expect("a manifest");
    let mut section = String::new();
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
        } else if section == "[dependencies]"
            && let Some(name) = line.split(['.', ' ', '=']).next()
            && name.starts_with("evhost-")
        {
            found.insert(name.to_owned());
        }
    }
    found
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn each_crate_depends_only_on_the_crates_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("store", &[][..]),
        ("redb", &["evhost-store"][..]),
        ("postgres", &["evhost-store"][..]),
        ("runtime", &["evhost-store"][..]),
        ("engine", &["evhost-store", "evhost-runtime"][..]),
        (
            "api",
            &["evhost-store", "evhost-runtime", "evhost-engine"][..],
        ),
    ]);
    for (dir, allowed) in &allowed {
        let manifest = root().join("crates").join(dir).join("Cargo.toml");
        let found = evhost_dependencies(&manifest);
        let extra: Vec<&String> = found
            .iter()
            .filter(|d| !allowed.contains(&d.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "crates/{dir} depends on {extra:?}, which are not below it"
        );
    }
    // The engine and the API know no storage engine: only the binary picks one.
    for dir in ["engine", "api", "runtime", "store"] {
        let manifest = std::fs::read_to_string(root().join("crates").join(dir).join("Cargo.toml"))
            .expect("a manifest");
        for engine in ["redb", "tokio-postgres", "deadpool-postgres"] {
            assert!(
                !manifest.lines().any(|l| l.trim_start().starts_with(engine)),
                "crates/{dir} depends on {engine}"
            );
        }
    }
}

#[test]
fn no_module_of_the_engine_imports_in_a_circle() {
    let src = root().join("crates/engine/src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(&src) {
        let relative = file.strip_prefix(&src).expect("under src");
        let module = relative
            .components()
            .next()
            .expect("a file")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a source file");
        let uses = edges.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                uses.insert(name);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        module: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("modules import each other in a circle: {:?}", &path[at..]);
        }
        if done.contains(module) {
            return;
        }
        path.push(module.to_owned());
        for next in edges.get(module).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
        done.insert(module.to_owned());
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        visit(module, &edges, &mut Vec::new(), &mut done);
    }
    assert!(edges.contains_key("policies") && edges.contains_key("commands"));
}

#[test]
fn nothing_blocks_an_async_worker() {
    let mut files = sources(&root().join("crates"));
    files.extend(sources(&root().join("host/src")));
    let needle = ["block", "in", "place"].join("_");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a source file");
        assert!(
            !text.contains(&needle),
            "{} uses {needle}: hand the work to the plugin threads or a blocking task instead",
            file.display()
        );
    }
}

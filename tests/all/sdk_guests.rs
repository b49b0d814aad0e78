//! Guests written in Python and JavaScript, built by their SDKs' build commands the first time a
//! test asks for one: all of them, the Python ones and the JavaScript ones side by side, once per
//! test run. A build whose inputs (its source and its SDK) are unchanged since an earlier run is
//! kept, so only a change pays the build again (some 15 s per component).
//!
//! The build tools are what `scripts/guest-tools.sh` installs: a virtual environment with the
//! Python SDK and componentize-py in `target/guest-tools/python` (or the Python named by
//! `EVHOST_GUEST_PYTHON`), and the JavaScript SDK's packages in `sdk/js/node_modules`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;

use sha2::{Digest, Sha256};

/// The language a guest is written in, which says how its SDK builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    JavaScript,
}

impl Language {
    /// The extension of its source files.
    fn extension(self) -> &'static str {
        match self {
            Language::Python => "py",
            Language::JavaScript => "js",
        }
    }

    /// The SDK's directory, relative to the repository.
    fn sdk_dir(self) -> &'static str {
        match self {
            Language::Python => "sdk/python",
            Language::JavaScript => "sdk/js",
        }
    }
}

/// Every guest the tests deploy that is not written in Rust: its language and its directory in
/// the repository, which holds one source file named after it (`-` read as `_`).
const SDK_GUESTS: &[(Language, &str)] = &[
    (Language::Python, "plugins/python/stays"),
    (Language::Python, "plugins/python/returns"),
    (Language::Python, "tests/fixtures/python/hostile"),
    (Language::Python, "tests/fixtures/python/hostile-projection"),
    (Language::Python, "tests/fixtures/python/hostile-policy"),
    (Language::JavaScript, "plugins/js/stays"),
    (Language::JavaScript, "plugins/js/survey"),
    (Language::JavaScript, "tests/fixtures/js/hostile"),
    (Language::JavaScript, "tests/fixtures/js/hostile-projection"),
    (Language::JavaScript, "tests/fixtures/js/hostile-policy"),
];

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate sits in the repository")
        .to_path_buf()
}

/// The component of the guest in `dir` (one of [`SDK_GUESTS`]).
pub fn sdk_wasm(dir: &str) -> Vec<u8> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    assert!(
        SDK_GUESTS.iter().any(|(_, known)| *known == dir),
        "{dir} is not a guest the tests build"
    );
    if let Err(failure) = BUILT.get_or_init(build_all) {
        panic!("{failure}");
    }
    let file = output_of(dir);
    std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
}

/// Builds the Python guests and the JavaScript guests, the two languages at once.
fn build_all() -> Result<(), String> {
    let builders: Vec<_> = [Language::Python, Language::JavaScript]
        .into_iter()
        .map(|language| {
            thread::spawn(move || {
                SDK_GUESTS
                    .iter()
                    .filter(|(of, _)| *of == language)
                    .try_for_each(|(_, dir)| build_if_changed(language, dir))
            })
        })
        .collect();
    builders
        .into_iter()
        .try_for_each(|builder| builder.join().expect("a guest builder panicked"))
}

fn output_of(dir: &str) -> PathBuf {
    repo_root()
        .join("target/sdk-guests")
        .join(format!("{}.wasm", dir.replace('/', "_")))
}

fn build_if_changed(language: Language, dir: &str) -> Result<(), String> {
    let root = repo_root();
    let name = Path::new(dir)
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a guest directory has a name")
        .replace('-', "_");
    let source = root
        .join(dir)
        .join(format!("{name}.{}", language.extension()));
    let output = output_of(dir);
    let stamp_file = output.with_extension("stamp");
    let stamp = inputs_digest(&source, &root.join(language.sdk_dir()))?;
    let unchanged = output.exists()
        && std::fs::read_to_string(&stamp_file).is_ok_and(|recorded| recorded == stamp);
    if unchanged {
        return Ok(());
    }
    std::fs::create_dir_all(output.parent().expect("the output has a directory"))
        .map_err(|e| format!("cannot create the guests' output directory: {e}"))?;
    let mut command = match language {
        Language::Python => {
            let python = std::env::var_os("EVHOST_GUEST_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/guest-tools/python/bin/python"));
            let mut command = Command::new(python);
            command.args(["-m", "evhost", "build"]);
            command
        }
        Language::JavaScript => {
            let mut command = Command::new("node");
            command
                .arg(root.join("sdk/js/bin/evhost-js.js"))
                .arg("build");
            command
        }
    };
    let ran = command
        .arg(&source)
        .arg("-o")
        .arg(&output)
        .current_dir(&root)
        .output()
        .map_err(|e| {
            format!(
                "cannot run the {language:?} SDK's build for {dir} ({e}); run \
                 scripts/guest-tools.sh to install the guest toolchains"
            )
        })?;
    if !ran.status.success() {
        return Err(format!(
            "building {dir} failed ({}):\n{}\n{}",
            ran.status,
            String::from_utf8_lossy(&ran.stdout),
            String::from_utf8_lossy(&ran.stderr)
        ));
    }
    std::fs::write(&stamp_file, stamp).map_err(|e| format!("cannot write a build stamp: {e}"))
}

/// A digest of what a build reads: the guest's source and every file of its SDK but its
/// installed packages, caches and tests.
fn inputs_digest(source: &Path, sdk: &Path) -> Result<String, String> {
    let mut files = vec![source.to_path_buf()];
    collect_files(sdk, &mut files);
    files.sort();
    let mut digest = Sha256::new();
    for file in files {
        let bytes =
            std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        digest.update(file.to_string_lossy().as_bytes());
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(&bytes);
    }
    Ok(digest
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    const SKIPPED: &[&str] = &[
        "node_modules",
        "__pycache__",
        "test",
        "tests",
        "build",
        "dist",
    ];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".egg-info") || SKIPPED.contains(&name.as_str())
        {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

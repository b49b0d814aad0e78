//! The "your first plugin" guides in `docs/` run as written: every ```sh block is a command the
//! reader types and every block whose info string names a `file=` is a file the reader saves,
//! in the order of the guide, as one bash script started in the root of the checkout with an
//! empty home directory and the `evhost` these tests built on the PATH. A guide that drifts from
//! the SDKs, the CLI or the API fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sdk_guests::repo_root;

/// The guides, in the order they run (one at a time: each starts a host on the default port).
const GUIDES: &[&str] = &[
    "docs/first-plugin-rust.md",
    "docs/first-plugin-python.md",
    "docs/first-plugin-js.md",
];

/// Marks the end of a file written by a heredoc; no guide's file holds it.
const END_OF_FILE: &str = "EVHOST_GUIDE_END_OF_FILE";

/// The bash script a guide's blocks make.
fn script_of(guide: &str) -> String {
    // Background jobs (the host) end with the script, whether it passes or fails.
    let mut script =
        String::from("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|line| !line.trim_start().starts_with("```"))
            .collect();
        let mut words = info.split_whitespace();
        let language = words.next().unwrap_or_default();
        let file = words.find_map(|word| word.strip_prefix("file="));
        match (language, file) {
            (_, Some(path)) => {
                script.push_str(&format!(
                    "mkdir -p \"$(dirname '{path}')\"\ncat > '{path}' <<'{END_OF_FILE}'\n{}\n{END_OF_FILE}\n",
                    body.join("\n")
                ));
            }
            ("sh", None) => {
                script.push_str(&body.join("\n"));
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

/// Where rustup and cargo keep toolchains and crates for the user running the tests: the guide's
/// empty home must not hide them (a reader's own home has them).
fn tool_home(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(default)
    })
}

fn run_guide(guide: &str) {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join(guide))
        .unwrap_or_else(|e| panic!("cannot read {guide}: {e}"));
    let script = script_of(&text);
    assert!(
        script.contains("evhost deploy"),
        "{guide} deploys nothing:\n{script}"
    );
    let home = tempfile::tempdir().expect("a temporary home");
    let evhost_dir = Path::new(env!("CARGO_BIN_EXE_evhost"))
        .parent()
        .expect("the binary has a directory");
    let path = std::env::join_paths(std::iter::once(evhost_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("a PATH");
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&root)
        .env("HOME", home.path())
        .env("PATH", path)
        .env("CARGO_HOME", tool_home("CARGO_HOME", ".cargo"))
        .env("RUSTUP_HOME", tool_home("RUSTUP_HOME", ".rustup"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("EVHOST_URL")
        .env_remove("EVHOST_TOKEN")
        .env_remove("VIRTUAL_ENV")
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "{guide} failed ({}):\n--- script ---\n{script}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_first_plugin_guide_runs_as_written() {
    for guide in GUIDES {
        run_guide(guide);
    }
}

#[test]
fn a_guide_becomes_files_and_commands_in_order() {
    let guide = "Intro\n```sh\nmkdir -p ~/x && cd ~/x\n```\nSave:\n```python file=app.py\nprint(1)\n```\n\
                 Output:\n```text\n1\n```\n```sh\npython3 app.py\n```\n";
    let script = script_of(guide);
    let body = script.split_once("EXIT\n").unwrap().1;
    assert_eq!(
        body,
        format!(
            "mkdir -p ~/x && cd ~/x\nmkdir -p \"$(dirname 'app.py')\"\ncat > 'app.py' <<'{END_OF_FILE}'\n\
             print(1)\n{END_OF_FILE}\npython3 app.py\n"
        )
    );
}

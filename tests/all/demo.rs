//! The README's main command, `bash scripts/demo.sh`, runs to its end and what it prints is
//! true: the live follower kept following across the restart on the same port (it shows the
//! events appended after the restart, and every visit event the demo showed), the plugins came
//! back from their compiled cache, the three languages' projections gave the same answer, the
//! dry run of visit v2 named the one command whose outcome changes and that of the JavaScript
//! survey none, and the summary at the end holds (every plugin running, the host healthy, a
//! clean stop).
//!
//! The demo runs with the binary and the components these tests built rather than the builds it
//! makes by itself: the same code and the same build commands, without minutes of compiling a
//! second host and the same components again on every test run.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{compile_cache, guest_wasm};
use crate::sdk_guests::{repo_root, sdk_wasm};

/// The Rust plugins the demo deploys (all of them among the tests' guests).
const RUST_PLUGINS: &[&str] = &[
    "visit",
    "visits",
    "rooms",
    "survey",
    "visit-survey",
    "order",
    "loyalty",
    "order-loyalty",
    "stays",
    "visit-v2",
    "visits-v2",
];

/// The Python and JavaScript plugins the demo deploys: the directory of each (among the tests'
/// guests) and the file the demo looks for.
const SDK_PLUGINS: &[(&str, &str)] = &[
    ("plugins/python/stays", "stays_py.wasm"),
    ("plugins/python/returns", "returns_py.wasm"),
    ("plugins/js/stays", "stays_js.wasm"),
    ("plugins/js/survey", "survey_js.wasm"),
];

/// The plugins deployed at the end of the demo, in every language.
const DEPLOYED: &[&str] = &[
    "loyalty",
    "order",
    "order-loyalty",
    "returns-py",
    "rooms",
    "stays",
    "stays-js",
    "stays-py",
    "survey",
    "visit",
    "visit-survey",
    "visits",
];

/// Only a demo that hangs takes this long; it usually ends within two minutes.
const DEMO_TIMEOUT: Duration = Duration::from_secs(900);

/// What the demo printed: its stdout as sections (the `== ` lines and the lines after each), and
/// its stderr.
struct Demo {
    stdout: String,
    stderr: String,
    sections: Vec<(String, Vec<String>)>,
}

impl Demo {
    /// The lines after the first heading that starts with `heading`.
    #[track_caller]
    fn section(&self, heading: &str) -> (&str, &[String]) {
        self.sections
            .iter()
            .find(|(title, _)| title.starts_with(heading))
            .map(|(title, lines)| (title.as_str(), lines.as_slice()))
            .unwrap_or_else(|| panic!("no section {heading:?} in:\n{}", self.stdout))
    }
}

/// An event line as the CLI prints one: `position  stream@version  type  data`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct EventLine {
    position: u64,
    stream: String,
    event_type: String,
}

fn event_line(line: &str) -> Option<EventLine> {
    let (position, rest) = line.trim_start().split_once("  ")?;
    let position = position.parse().ok()?;
    let (stream_at, rest) = rest.split_once("  ")?;
    let (stream, version) = stream_at.rsplit_once('@')?;
    version.parse::<u64>().ok()?;
    let event_type = rest.split("  ").next()?;
    Some(EventLine {
        position,
        stream: stream.to_owned(),
        event_type: event_type.to_owned(),
    })
}

fn event_lines(lines: &[String]) -> Vec<EventLine> {
    lines.iter().filter_map(|line| event_line(line)).collect()
}

/// The number after `name ` on the line of metric `name`.
fn metric(lines: &[String], name: &str) -> Option<u64> {
    lines.iter().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A directory with what the demo builds, as `EVHOST_DEMO_BUILT` holds it: the binary these tests
/// run and every component it deploys, built as the other tests' guests are (once per run).
fn built_for_the_demo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a directory for the demo's builds");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_evhost"), dir.path().join("evhost"))
        .expect("link the binary");
    let files = RUST_PLUGINS
        .iter()
        .map(|package| {
            (
                format!("{}.wasm", package.replace('-', "_")),
                guest_wasm(package),
            )
        })
        .chain(
            SDK_PLUGINS
                .iter()
                .map(|(source, file)| (file.to_string(), sdk_wasm(source))),
        );
    for (file, wasm) in files {
        std::fs::write(dir.path().join(file), wasm).expect("write a component");
    }
    dir
}

/// Runs the demo to its end in its own process group (killed whole if it hangs).
fn run_demo() -> Demo {
    let built = built_for_the_demo();
    let dir = tempfile::tempdir().expect("a directory for the demo's output");
    let (stdout_path, stderr_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let create = |path: &std::path::Path| std::fs::File::create(path).expect("an output file");
    let mut child = Command::new("bash")
        .arg("scripts/demo.sh")
        .current_dir(repo_root())
        .env("EVHOST_DEMO_BUILT", built.path())
        .env("EVHOST_COMPILE_CACHE", compile_cache())
        .env_remove("EVHOST_URL")
        .env_remove("EVHOST_TOKEN")
        .stdin(Stdio::null())
        .stdout(create(&stdout_path))
        .stderr(create(&stderr_path))
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let deadline = Instant::now() + DEMO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(format!("-{}", child.id()))
                .status();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let read = |path: &std::path::Path| {
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
    };
    let (stdout, stderr) = (read(&stdout_path), read(&stderr_path));
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!("the demo failed ({status}):\n{stdout}\n--- stderr ---\n{stderr}"),
        None => panic!(
            "the demo did not end within {DEMO_TIMEOUT:?}:\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in stdout.lines() {
        match line.strip_prefix("== ") {
            Some(title) => sections.push((title.to_owned(), Vec::new())),
            None => {
                if let Some((_, lines)) = sections.last_mut() {
                    lines.push(line.to_owned());
                }
            }
        }
    }
    Demo {
        stdout,
        stderr,
        sections,
    }
}

#[test]
fn the_demo_runs_to_its_end_and_what_it_prints_holds() {
    let demo = run_demo();
    let all = || format!("{}\n--- stderr ---\n{}", demo.stdout, demo.stderr);

    // The restart, and the plugins back from their compiled cache without compiling.
    let (restart, after_restart) = demo.section("restart the host at position ");
    let restarted_at: u64 = restart
        .strip_prefix("restart the host at position ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|head| head.parse().ok())
        .unwrap_or_else(|| panic!("no position in {restart:?}"));
    assert_eq!(
        metric(after_restart, "evhost_plugin_compilations_total"),
        Some(0),
        "{}",
        all()
    );
    assert!(
        metric(after_restart, "evhost_plugin_cache_loads_total").is_some_and(|n| n > 0),
        "{}",
        all()
    );

    // The follower: in log order, only visits, past the restart, and every visit event the demo
    // showed elsewhere (from commands and reads, before and after the restart).
    let (_, followed) = demo.section("what the live follower saw");
    let followed = event_lines(followed);
    let positions: Vec<u64> = followed.iter().map(|e| e.position).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "the follower's events are not in log order once each: {positions:?}\n{}",
        all()
    );
    assert!(
        followed.iter().all(|e| e.stream.starts_with("visit-")),
        "the follower showed events outside its category: {followed:?}"
    );
    let after: Vec<&EventLine> = followed
        .iter()
        .filter(|e| e.position > restarted_at)
        .collect();
    assert!(
        !after.is_empty(),
        "the follower showed nothing after the restart at position {restarted_at}:\n{}",
        all()
    );
    let shown: BTreeSet<EventLine> = demo
        .sections
        .iter()
        .filter(|(title, _)| !title.starts_with("what the live follower saw"))
        .flat_map(|(_, lines)| event_lines(lines))
        .filter(|e| e.stream.starts_with("visit-"))
        .collect();
    let missing: Vec<&EventLine> = shown.iter().filter(|e| !followed.contains(e)).collect();
    assert!(
        missing.is_empty(),
        "the follower missed events the demo showed: {missing:?}\n{}",
        all()
    );
    assert!(
        shown.iter().any(|e| e.position > restarted_at),
        "the demo showed no visit event after the restart:\n{}",
        all()
    );
    assert!(
        demo.stderr
            .contains("the host closed the stream; reconnecting"),
        "the follower did not see the restart:\n{}",
        all()
    );

    // The dry run of visit v2 names the one recorded command whose outcome changes; the
    // JavaScript survey decides every recorded survey command as the Rust one did.
    let (_, dry_run) = demo.section("dry run: v2 decides every recorded visit command again");
    assert!(
        dry_run.iter().any(|line| line.ends_with(", 1 differ")),
        "{}",
        all()
    );
    let changed: Vec<&String> = dry_run
        .iter()
        .filter(|line| line.starts_with("  command "))
        .collect();
    assert!(
        changed.len() == 1 && changed[0].starts_with("  command checkout-again-1002 "),
        "{changed:?}\n{}",
        all()
    );
    let (_, ported) = demo.section("survey v2 is the survey handler ported to JavaScript");
    assert!(
        ported.iter().any(|line| line.ends_with(", 0 differ")),
        "{}",
        all()
    );

    // Rust, Python and JavaScript: the same stays per hospital.
    let (_, stays) = demo.section("the stays per hospital");
    let answer = |name: &str| -> Value {
        let prefix = format!("   {name}: ");
        let line = stays
            .iter()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no answer of {name}:\n{}", all()));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"))
    };
    let rust = answer("stays");
    assert!(
        rust["hospitals"].as_array().is_some_and(|h| !h.is_empty()),
        "{rust}"
    );
    assert_eq!(answer("stays-py"), rust);
    assert_eq!(answer("stays-js"), rust);

    // The summary: every plugin running, the host healthy, and a clean stop.
    let (_, listed) = demo.section("the plugins: status");
    let mut names = Vec::new();
    for line in listed.iter().filter(|line| !line.starts_with(' ')) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(columns.get(2), Some(&"running"), "{line}\n{}", all());
        names.push(columns[0]);
    }
    names.sort();
    assert_eq!(names, DEPLOYED, "{}", all());
    let (_, health) = demo.section("the host's health");
    let health: Value = serde_json::from_str(&health[0])
        .unwrap_or_else(|e| panic!("the health is not JSON ({e}):\n{}", all()));
    assert_eq!(health["status"], "ok", "{health}");
    let highest_shown = shown.iter().map(|e| e.position).max().unwrap_or(0);
    assert!(
        health["head"]
            .as_u64()
            .is_some_and(|head| head >= highest_shown),
        "{health}"
    );
    let last = demo.stdout.lines().last().unwrap_or_default();
    assert!(last.contains("stopped cleanly"), "{}", all());
}

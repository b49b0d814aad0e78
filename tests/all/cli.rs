//! The client subcommands: `evhost append` writes through a running server's HTTP API and
//! `evhost read` shows a stream; both exit 0 on success and non-zero when the server refuses.

use std::process::Output;

use serde_json::json;

use crate::harness::{Server, guest_wasm, run_evhost};

#[track_caller]
fn assert_success(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "exit {}; stdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn append_then_read_from_the_command_line() {
    let server = Server::start();
    let url = server.url();
    let data = r#"{"who":"cli-test"}"#;
    assert_success(&run_evhost(&[
        "append", "--url", url, "cli-1", "--type", "Opened", "--data", data, "--json",
    ]));
    let rename = |data: &str, expected_version: &str| {
        run_evhost(&[
            "append",
            "--url",
            url,
            "cli-1",
            "--type",
            "Renamed",
            "--data",
            data,
            "--expected-version",
            expected_version,
        ])
    };
    assert_success(&rename(r#"{"to":"x"}"#, "1"));
    let refused = rename("{}", "7");
    assert!(
        !refused.status.success(),
        "a wrong expected version must fail the command"
    );

    let stdout = assert_success(&run_evhost(&["read", "--url", url, "cli-1", "--json"]));
    for wanted in ["cli-test", "Opened", "Renamed"] {
        assert!(stdout.contains(wanted), "{wanted} missing from:\n{stdout}");
    }

    let stored = server.api().stream_events("cli-1");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["data"], json!({"who": "cli-test"}));
    assert_eq!(stored[1]["type"], "Renamed");
}

#[test]
fn deploy_list_and_command_from_the_command_line() {
    let server = Server::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("visit.wasm");
    std::fs::write(&file, guest_wasm("visit")).unwrap();
    let file = file.to_str().unwrap();

    let deployed = assert_success(&run_evhost(&[
        "deploy",
        "--url",
        url,
        file,
        "--timeout-ms",
        "500",
        "--memory-mib",
        "64",
    ]));
    assert!(
        deployed.contains("handler visit: deployed, active, version "),
        "{deployed}"
    );
    let again = assert_success(&run_evhost(&["deploy", "--url", url, file]));
    assert!(again.contains("uploaded before; active"), "{again}");

    let listed = assert_success(&run_evhost(&["plugins", "--url", url]));
    assert!(
        listed.contains("visit") && listed.contains("handler") && listed.contains("running"),
        "{listed}"
    );
    let shown = assert_success(&run_evhost(&["plugins", "--url", url, "visit", "--json"]));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["limits"],
        json!({"memory_mib": 64, "timeout_ms": 500, "state_mib": 1024})
    );

    let check_in = r#"{"patient_id": "p-9", "patient_name": "Ana Lima", "complaint": "fever",
        "triage_level": 3, "room": "B-1", "tests": ["cbc"]}"#;
    let applied = assert_success(&run_evhost(&[
        "command",
        "--url",
        url,
        "visit",
        "visit-9",
        "CheckIn",
        check_in,
        "--id",
        "cli-checkin",
    ]));
    assert!(
        applied.contains("command cli-checkin: 3 events") && applied.contains("PatientCheckedIn"),
        "{applied}"
    );
    let rejected = run_evhost(&[
        "command",
        "--url",
        url,
        "visit",
        "visit-9",
        "AssignRoom",
        r#"{"room": "B-1"}"#,
    ]);
    assert!(
        !rejected.status.success(),
        "a rejection must fail the command"
    );
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(
        stderr.contains("422 command_rejected") && stderr.contains("B-1"),
        "{stderr}"
    );

    let as_json = assert_success(&run_evhost(&[
        "command",
        "--url",
        url,
        "visit",
        "visit-9",
        "RecordTest",
        r#"{"test": "cbc", "result": "normal"}"#,
        "--json",
    ]));
    let answer: serde_json::Value = serde_json::from_str(&as_json).unwrap();
    assert_eq!(answer["events"][0]["type"], "TestResultRecorded");
    assert_eq!(server.api().stream_events("visit-9").len(), 4);

    let missing = run_evhost(&["deploy", "--url", url, "/nonexistent/plugin.wasm"]);
    assert!(!missing.status.success());
}

/// `evhost deploy --promote manual`, `evhost replay` (a readable report of the commands whose
/// outcome changes), `evhost promote` and `evhost rollback`, by version prefix.
#[test]
fn replay_promote_and_rollback_from_the_command_line() {
    let server = Server::start();
    let url = server.url();
    let api = server.api();
    api.deploy_guest("visit");
    let visit = |id: &str, command: &str, data: serde_json::Value| {
        api.command(
            "visit",
            &json!({"id": id, "stream": "visit-7", "type": command, "data": data}),
        )
        .expect(200)
    };
    visit(
        "in",
        "CheckIn",
        json!({"patient_id": "p-7", "patient_name": "Bo", "complaint": "cough",
               "triage_level": 4, "room": "B-2"}),
    );
    visit("out", "CheckOut", json!({"disposition": "discharged"}));
    visit(
        "out-again",
        "CheckOut",
        json!({"disposition": "discharged"}),
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("visit_v2.wasm");
    std::fs::write(&file, guest_wasm("visit-v2")).unwrap();
    let deployed = assert_success(&run_evhost(&[
        "deploy",
        "--url",
        url,
        file.to_str().unwrap(),
        "--promote",
        "manual",
    ]));
    assert!(deployed.contains("deployed as the candidate"), "{deployed}");
    let v2 = api.get("/plugins/visit").expect(200)["candidate_version"]
        .as_str()
        .unwrap()
        .to_owned();

    let report = assert_success(&run_evhost(&[
        "replay",
        "visit",
        "--url",
        url,
        "--version",
        &v2[..10],
    ]));
    for wanted in [
        "3 commands, 1 differ",
        "now_rejected  1",
        "command out-again",
        "applied [PatientCheckedOut] → rejected: patient p-7 is already checked out",
    ] {
        assert!(
            report.contains(wanted),
            "{wanted:?} missing from:\n{report}"
        );
    }
    let unknown = run_evhost(&["replay", "visit", "--url", url, "--version", "zz"]);
    assert!(!unknown.status.success());

    let promoted = assert_success(&run_evhost(&["promote", "visit", "--url", url]));
    assert!(
        promoted.contains(&format!("version {} is active", &v2[..12])),
        "{promoted}"
    );
    assert_eq!(
        api.get("/plugins/visit").expect(200)["active_version"],
        v2.as_str()
    );
    let rolled_back = assert_success(&run_evhost(&["rollback", "visit", "--url", url]));
    assert!(
        rolled_back.contains(&format!("was {}", &v2[..12])),
        "{rolled_back}"
    );
    let shown = assert_success(&run_evhost(&["plugins", "visit", "--url", url]));
    assert!(
        shown.contains("previous") && shown.contains("3 commands decided"),
        "{shown}"
    );
}

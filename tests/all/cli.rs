//! The client subcommands: `evhost append` writes through a running server's HTTP API and
//! `evhost read` shows a stream; both exit 0 on success and non-zero when the server refuses.

use std::process::Output;

use serde_json::json;

use crate::harness::{Server, run_evhost};

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

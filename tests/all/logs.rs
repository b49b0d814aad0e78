//! The host's log: readable lines that name the request, command or plugin call they happened
//! in, or one JSON object per line with `--log-format json`.

use serde_json::{Value, json};

use crate::harness::{Launch, Server};

const DEPLOYED: &str = "deployed handler counter";

#[test]
fn readable_lines_name_the_request_they_happened_in() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    let line = server.wait_for_log_line(DEPLOYED, std::time::Duration::from_secs(30));
    assert!(
        line.contains(" INFO  request{method=POST path=/plugins}: deployed handler counter"),
        "{line}"
    );
}

#[test]
fn json_lines_are_one_object_each_with_their_spans() {
    let server = Launch::default().arg("--log-format").arg("json").start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    api.command(
        "counter",
        &json!({"id": "c-1", "stream": "counter-1", "type": "Increment", "data": {"by": 1}}),
    )
    .expect(200);
    server.wait_for_log_line(DEPLOYED, std::time::Duration::from_secs(30));
    let lines: Vec<Value> = server
        .stderr()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let deployed = lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(DEPLOYED))
        })
        .expect("the deploy's line");
    assert_eq!(deployed["level"], "INFO");
    assert!(
        deployed["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(
        deployed["spans"],
        json!([{"name": "request", "method": "POST", "path": "/plugins"}])
    );
}

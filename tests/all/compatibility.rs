//! A data directory written by the previous release opens and serves: the same log byte for
//! byte, the same read model, the same command records, idempotent retries recognised, and it
//! goes on from where it was. `tests/data/previous-release/make.sh` wrote the directory with
//! that release's binary, and what that binary answered about it.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Launch, event_with_id};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/previous-release")
        .join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).expect("a fixture");
    serde_json::from_str(&text).expect("a JSON fixture")
}

#[test]
fn a_data_directory_of_the_previous_release_opens_and_serves() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let unpacked = Command::new("tar")
        .arg("-xzf")
        .arg(fixture("evhost-data.tar.gz"))
        .arg("-C")
        .arg(dir.path())
        .arg("--strip-components=1")
        .status()
        .expect("tar runs");
    assert!(unpacked.success());
    let server = Launch::default().start_in(dir);
    let api = server.api();

    let log = api.get("/events?limit=1000").expect(200);
    assert_eq!(log, expected("log.json"), "the log reads as it did");
    let head = log["head"].as_u64().expect("a head");
    let visits = api
        .get(&format!("/projections/visits/keys?min_position={head}"))
        .expect(200);
    assert_eq!(
        visits,
        expected("visits.json"),
        "the read model reads as it did"
    );
    let recorded = api.get("/commands/check-in-2").expect(200);
    assert_eq!(
        recorded,
        expected("check-in-2.json"),
        "the command record reads as it did"
    );

    // Retries are recognised: a command by its id, an append by its event ids.
    // Sent as make.sh sent it: a command's data is compared as the text it was.
    let command = r#"{"id": "check-in-1", "stream": "visit-1", "type": "CheckIn",
        "data": {"patient_id": "p-1", "patient_name": "Patient 1", "complaint": "chest pain",
                 "triage_level": 2, "room": "A-1", "tests": ["ecg"]}}"#;
    let again = api
        .send(
            "POST",
            "/handlers/visit/commands",
            &[("content-type", "application/json")],
            Some(command.as_bytes().to_vec()),
        )
        .json();
    assert_eq!(again["command_id"], "check-in-1", "{again}");
    assert_eq!(again["position"], 3, "{again}");
    let retried = api.append(
        "audit-1",
        &json!({"events": [event_with_id(
            "00000000-0000-4000-8000-000000000001", "Noted", json!({"n": 1}))]}),
    );
    let original = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["id"] == "00000000-0000-4000-8000-000000000001")
        .expect("the audit event")
        .clone();
    assert_eq!(retried.json()["first_position"], original["position"]);
    assert_eq!(api.head(), head, "the retries wrote nothing");

    // And it goes on from where it was.
    let checked_in = api
        .post(
            "/handlers/visit/commands",
            &json!({
                "stream": "visit-9", "type": "CheckIn",
                "data": {"patient_id": "p-9", "patient_name": "Patient 9",
                         "complaint": "fever", "triage_level": 3, "room": "B-9", "tests": []},
            }),
        )
        .expect(200);
    assert_eq!(checked_in["events"][0]["position"], head + 1);
    let position = checked_in["position"].as_u64().expect("a position");
    let present = api
        .get(&format!(
            "/projections/visits/keys/hospital%2Fmain%2Fpresent%2F9?min_position={position}"
        ))
        .expect(200);
    assert_eq!(present["patient_id"], "p-9");
    let plugins = api.get("/plugins").expect(200);
    let names: Vec<&str> = plugins
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["visit", "visits"]);
}

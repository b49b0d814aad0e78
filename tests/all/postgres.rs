//! evhost on PostgreSQL through the real binary: a host keeps its events, plugins, command
//! records and plugin state in the database across `kill -9`, compiling its plugins into its
//! own cache rather than trusting compiled code in the database; several hosts on one database
//! serve one log, and each one's followers see every host's appends at once, in order.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Launch, Server, event, event_with_id, fresh_schema};
use crate::sse::{Follower, assert_followed};

const SETTLE: Duration = Duration::from_secs(60);

fn check_in(server: &Server, visit: &str) {
    let reply = server.api().command(
        "visit",
        &json!({"stream": format!("visit-{visit}"), "type": "CheckIn", "data": {
            "patient_id": format!("p-{visit}"),
            "patient_name": "Ada Lovelace",
            "complaint": "chest pain",
            "triage_level": 2,
            "room": "R1",
            "expected_stay_seconds": 3600,
        }}),
    );
    reply.expect(200);
}

fn check_out(server: &Server, visit: &str) {
    server
        .api()
        .command(
            "visit",
            &json!({"stream": format!("visit-{visit}"), "type": "CheckOut",
                    "data": {"disposition": "discharged"}}),
        )
        .expect(200);
}

#[test]
fn a_host_on_postgres_keeps_its_log_plugins_and_state_across_kill_9() {
    let mut server = Launch::default().on_postgres(&fresh_schema()).start();
    let api = server.api();
    for package in ["visit", "survey", "visit-survey", "visits"] {
        api.deploy_guest(package);
    }
    check_in(&server, "pg1");
    check_out(&server, "pg1");
    // The policy's command went through the outbox, the handler and the store.
    api.wait_for_events("survey-pg1", 1, SETTLE);
    let head = api.head();
    let before = api.all_events();
    let visits = api
        .get(&format!(
            "/projections/visits/keys?prefix=&min_position={head}"
        ))
        .expect(200);

    server.kill_9();
    server.restart();
    let api = server.api();
    assert_eq!(
        api.all_events(),
        before,
        "the log is the same after kill -9"
    );
    assert!(
        server.stderr().contains("PostgreSQL schema"),
        "{}",
        server.stderr()
    );
    let listed = api.get("/plugins").expect(200);
    let loaded = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["error"].is_null() && p["active_version"].is_string())
        .count();
    assert_eq!(loaded, 4, "{listed}");
    assert_eq!(
        api.get(&format!(
            "/projections/visits/keys?prefix=&min_position={head}"
        ))
        .expect(200),
        visits,
        "the projection's state is kept"
    );
    // Plugins come back compiled by this node (from its own cache), never from the database.
    assert!(
        !server
            .stderr()
            .contains("loaded from its compiled artifact"),
        "{}",
        server.stderr()
    );
    // And they work: another visit goes through handler, policy and projection.
    check_in(&server, "pg2");
    check_out(&server, "pg2");
    api.wait_for_events("survey-pg2", 1, SETTLE);
    let head = api.head();
    let keys = api
        .get(&format!(
            "/projections/visits/keys?prefix=&min_position={head}"
        ))
        .expect(200);
    assert!(keys.to_string().contains("pg2"), "{keys}");
}

#[test]
fn hosts_on_one_database_serve_one_log_and_follow_each_others_appends() {
    let schema = fresh_schema();
    let first = Launch::default().on_postgres(&schema).start();
    let second = Launch::default().on_postgres(&schema).start();
    let (a, b) = (first.api(), second.api());
    a.append_ok("acct-1", json!([event("Opened", json!({"n": 0}))]));
    let mut on_second = Follower::open(&second, "from=1", None);
    let mut on_first = Follower::open(&first, "from=1", None);
    for n in 1..10 {
        let api = if n % 2 == 0 { &a } else { &b };
        api.append_ok(
            &format!("acct-{}", n % 3),
            json!([event("Moved", json!({"n": n}))]),
        );
    }
    let log = a.all_events();
    assert_eq!(log, b.all_events(), "both hosts read the same log");
    let positions: Vec<u64> = log
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=10).collect::<Vec<_>>());
    assert_followed(&on_second.take(10), &log);
    assert_followed(&on_first.take(10), &log);

    // The same append sent to both hosts is written once.
    let body = json!({"expected_version": "any", "events": [
        event_with_id("pg-same-1", "Opened", json!({"n": 1})),
    ]});
    let written = a.append("acct-9", &body).expect(201);
    let again = b.append("acct-9", &body).expect(200);
    assert_eq!(written, again);
    // A stream's expected version holds across hosts.
    let conflict = b.append(
        "acct-9",
        &json!({"expected_version": 0, "events": [event("Opened", json!({}))]}),
    );
    crate::harness::assert_error(&conflict, 409, "wrong_expected_version");
    let live: Value = on_second.next_event().data;
    assert_eq!(live["id"], "pg-same-1");
}

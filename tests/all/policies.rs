//! Policies through the real binary: commands sent from events exactly once across crashes
//! injected between the outbox write and dispatch and between dispatch and bookkeeping, timers
//! that fire after a restart, compensation when a handler rejects, correlation and causation
//! ids along the chain, and poison or hostile reactions parked without stopping the policy.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Api, Server, assert_error, event};

const SETTLE: Duration = Duration::from_secs(30);

fn check_in(api: &Api, visit: &str, extra: Value) -> u64 {
    let mut data = json!({
        "patient_id": format!("p-{visit}"),
        "patient_name": "Ada Lovelace",
        "complaint": "chest pain",
        "triage_level": 2,
        "room": "R1",
    });
    data.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let reply = api.command(
        "visit",
        &json!({"stream": format!("visit-{visit}"), "type": "CheckIn", "data": data}),
    );
    reply.expect(200)["position"].as_u64().unwrap()
}

#[test]
fn a_crash_after_the_outbox_write_still_delivers_the_command_once() {
    let mut server = crate::harness::Launch::default()
        .env("EVHOST_CRASH_AT", "policy-after-outbox")
        .start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    api.deploy_guest("fixture-hostile-policy");
    api.append_ok("hostile-a", json!([event("Ping", json!({}))]));
    assert!(server.wait_for_crash(SETTLE), "the crash point aborts");
    server.set_env("EVHOST_CRASH_AT", None);
    server.restart();
    let api = server.api();
    let events = api.wait_for_events("counter-a", 1, SETTLE);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(api.stream_events("counter-a").len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Incremented");
}

#[test]
fn a_crash_between_dispatch_and_bookkeeping_does_not_execute_twice() {
    let mut server = crate::harness::Launch::default()
        .env("EVHOST_CRASH_AT", "policy-after-dispatch")
        .start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    api.deploy_guest("fixture-hostile-policy");
    api.append_ok("hostile-b", json!([event("Ping", json!({}))]));
    assert!(server.wait_for_crash(SETTLE), "the crash point aborts");
    server.set_env("EVHOST_CRASH_AT", None);
    server.restart();
    let api = server.api();
    // The command ran before the crash; delivered again, the handler answers from its record.
    let events = api.wait_for_events("counter-b", 1, SETTLE);
    api.wait_for_plugin("hostile-policy", SETTLE, |_| {
        server.stderr().matches("crashing at").count() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let events_now = api.stream_events("counter-b");
    assert_eq!(events_now.len(), 1, "{events_now:?}");
    let correlation = &events[0]["metadata"]["correlation_id"];
    let causation = events[0]["metadata"]["causation_id"].as_str().unwrap();
    let command = api
        .get(&format!("/commands/{}", urlencode(causation)))
        .expect(200);
    assert_eq!(command["outcome"], "applied");
    assert!(causation.starts_with("hostile-policy/"), "{causation}");
    // The command carries the correlation of the event that caused it, and names it.
    let cause = &api.stream_events("hostile-b")[0];
    assert_eq!(command["metadata"]["causation_id"], cause["id"]);
    assert_eq!(&command["metadata"]["correlation_id"], correlation);
}

fn urlencode(text: &str) -> String {
    text.replace('/', "%2F")
}

#[test]
fn timers_fire_after_a_restart() {
    let mut server = Server::start();
    let api = server.api();
    api.deploy_guest("visit");
    api.deploy_guest("survey");
    api.deploy_guest("visit-survey");
    let position = check_in(&api, "t1", json!({"expected_stay_seconds": 2}));
    api.wait_for_position("visit-survey", position, SETTLE);
    server.kill_9();
    std::thread::sleep(Duration::from_millis(2_500));
    server.restart();
    let api = server.api();
    // Check-in and room, then the reminder the timer sends once the host is back.
    let events = api.wait_for_events("visit-t1", 3, SETTLE);
    let overdue = &events[2];
    assert_eq!(overdue["type"], "VisitOverdue", "{events:?}");
    assert!(
        overdue["metadata"]["causation_id"]
            .as_str()
            .unwrap()
            .starts_with("visit-survey/timer/"),
        "{overdue}"
    );
    let check_in = &events[0];
    assert_eq!(
        overdue["metadata"]["correlation_id"],
        check_in["metadata"]["correlation_id"]
    );
}

#[test]
fn a_checkout_prepares_a_survey_and_cancels_the_reminder() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("visit");
    api.deploy_guest("survey");
    api.deploy_guest("visit-survey");
    // The stay is long enough for the check-out to come before it ends even on a busy machine.
    check_in(&api, "s1", json!({"expected_stay_seconds": 3}));
    let checkout = api.command(
        "visit",
        &json!({"stream": "visit-s1", "type": "CheckOut", "data": {"disposition": "discharged"}}),
    );
    checkout.expect(200);
    let survey = api.wait_for_events("survey-s1", 1, SETTLE);
    assert_eq!(survey[0]["type"], "SurveyPrepared");
    // A visit checked in after it, with the same stay, is not checked out: once its reminder has
    // come, the first visit's would have fired before it had the check-out not cancelled it.
    // That reminder would have been refused (the visit is closed), so the count of refused
    // commands says whether it was sent.
    check_in(&api, "s2", json!({"expected_stay_seconds": 3}));
    let control = api.wait_for_events("visit-s2", 3, SETTLE);
    assert_eq!(control[2]["type"], "VisitOverdue", "{control:?}");
    let visit = api.stream_events("visit-s1");
    assert!(
        visit.iter().all(|e| e["type"] != "VisitOverdue"),
        "{visit:?}"
    );
    assert_eq!(
        api.metric("evhost_commands_total{outcome=\"rejected\"} "),
        0.0,
        "the cancelled reminder was sent"
    );
}

#[test]
fn a_rejected_reservation_cancels_the_order() {
    let server = Server::start();
    let api = server.api();
    for plugin in ["order", "loyalty", "order-loyalty"] {
        api.deploy_guest(plugin);
    }
    api.command(
        "loyalty",
        &json!({"stream": "loyalty-c1", "type": "EarnPoints", "data": {"points": 50}}),
    )
    .expect(200);
    // Enough points: reserved, the order stands.
    api.command(
        "order",
        &json!({"stream": "order-o1", "type": "PlaceOrder",
                "data": {"customer_id": "c1", "total_cents": 1000, "points": 30}}),
    )
    .expect(200);
    let loyalty = api.wait_for_events("loyalty-c1", 2, SETTLE);
    assert_eq!(loyalty[1]["type"], "PointsReserved");
    // Not enough left: the loyalty handler rejects, and the policy compensates.
    api.command(
        "order",
        &json!({"stream": "order-o2", "type": "PlaceOrder",
                "data": {"customer_id": "c1", "total_cents": 5000, "points": 40}}),
    )
    .expect(200);
    let order = api.wait_for_events("order-o2", 2, SETTLE);
    let cancelled = order
        .iter()
        .find(|e| e["type"] == "OrderCancelled")
        .unwrap_or_else(|| panic!("no OrderCancelled in {order:?}"));
    assert!(
        cancelled["data"].to_string().contains("not enough points"),
        "{cancelled}"
    );
    assert_eq!(
        cancelled["metadata"]["correlation_id"],
        order[0]["metadata"]["correlation_id"]
    );
    assert_eq!(api.stream_events("loyalty-c1").len(), 2);
    assert!(
        api.stream_events("order-o1")
            .iter()
            .all(|e| e["type"] != "OrderCancelled")
    );
}

#[test]
fn poison_and_hostile_reactions_are_parked_and_the_policy_goes_on() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    api.deploy(
        &crate::harness::guest_wasm("fixture-hostile-policy"),
        "timeout_ms=200",
    )
    .expect(201);
    let poison = api.append_ok("hostile-p", json!([event("Poison", json!({}))]))["last_position"]
        .as_u64()
        .unwrap();
    let looping = api.append_ok("hostile-p", json!([event("Loop", json!({}))]))["last_position"]
        .as_u64()
        .unwrap();
    api.append_ok("hostile-p", json!([event("Ping", json!({}))]));
    let events = api.wait_for_events("counter-p", 1, SETTLE);
    assert_eq!(events.len(), 1);
    let parked = api.get("/plugins/hostile-policy/parked").expect(200);
    let positions: Vec<u64> = parked
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![poison, looping]);
    assert!(
        parked[0]["error"].as_str().unwrap().contains("poison"),
        "{parked}"
    );
    assert!(
        parked[1]["error"].as_str().unwrap().contains("time budget"),
        "{parked}"
    );
    let listed = api.get("/plugins/hostile-policy").expect(200);
    assert_eq!(listed["parked"], 2);
    assert_eq!(listed["status"], "running");

    // A retry that fails again keeps it parked; a skip forgets it.
    let retried = api
        .post(
            &format!("/plugins/hostile-policy/parked/{poison}/retry"),
            &json!({}),
        )
        .expect(200);
    assert!(retried["retry_error"].as_str().unwrap().contains("poison"));
    api.post(
        &format!("/plugins/hostile-policy/parked/{looping}/skip"),
        &json!({}),
    )
    .expect(200);
    assert_error(
        &api.post(
            &format!("/plugins/hostile-policy/parked/{looping}/skip"),
            &json!({}),
        ),
        404,
        "not_found",
    );
    let parked = api.get("/plugins/hostile-policy/parked").expect(200);
    assert_eq!(parked.as_array().unwrap().len(), 1);
    assert_error(
        &api.post("/plugins/counter/pause", &json!({})),
        400,
        "invalid_request",
    );
    assert_error(
        &api.post("/plugins/nothing/pause", &json!({})),
        404,
        "plugin_not_found",
    );
}

#[test]
fn a_paused_policy_reacts_once_resumed_also_across_a_restart() {
    let mut server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    api.deploy_guest("fixture-hostile-policy");
    let paused = api
        .post("/plugins/hostile-policy/pause", &json!({}))
        .expect(200);
    assert_eq!(paused["status"], "paused");
    let position = api.append_ok("hostile-z", json!([event("Ping", json!({}))]))["last_position"]
        .as_u64()
        .unwrap();
    server.restart();
    let api = server.api();
    std::thread::sleep(Duration::from_millis(300));
    let listed = api.get("/plugins/hostile-policy").expect(200);
    assert_eq!(listed["status"], "paused", "{listed}");
    assert_eq!(listed["lag"], 1);
    assert_eq!(api.get("/streams/counter-z").status, 404);
    api.post("/plugins/hostile-policy/resume", &json!({}))
        .expect(200);
    api.wait_for_position("hostile-policy", position, SETTLE);
    assert_eq!(api.wait_for_events("counter-z", 1, SETTLE).len(), 1);
    assert_error(
        &api.get("/plugins/hostile-policy/pause"),
        405,
        "method_not_allowed",
    );
}

#[test]
fn a_new_policy_version_continues_from_the_checkpoint() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    let first = api.deploy_guest("fixture-hostile-policy");
    let position = api.append_ok("hostile-v", json!([event("Ping", json!({}))]))["last_position"]
        .as_u64()
        .unwrap();
    api.wait_for_events("counter-v", 1, SETTLE);
    api.wait_for_position("hostile-policy", position, SETTLE);

    let wasm = crate::harness::guest_wasm("fixture-hostile-policy");
    let deployed = api
        .deploy(&crate::harness::another_build(&wasm, 2), "")
        .expect(201);
    assert_ne!(deployed["version"], first.as_str());
    let listed = api.get("/plugins/hostile-policy").expect(200);
    assert_eq!(listed["active_version"], deployed["version"]);
    // It starts where the old version stopped: history is not reacted to again.
    assert!(listed["position"].as_u64().unwrap() >= position, "{listed}");
    let next = api.append_ok("hostile-v", json!([event("Ping", json!({}))]))["last_position"]
        .as_u64()
        .unwrap();
    let events = api.wait_for_events("counter-v", 2, SETTLE);
    api.wait_for_position("hostile-policy", next, SETTLE);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(api.stream_events("counter-v").len(), 2, "{events:?}");
    // A version that reacted to the first event again would have delivered its command again,
    // and the handler would have answered from its record.
    assert_eq!(
        api.metric("evhost_commands_total{outcome=\"replayed\"} "),
        0.0
    );
}

//! Dry-run replays through the real binary: exact reports on constructed histories for a
//! handler, a projection and a policy, ranges, progress, cancellation, bad requests, and no side
//! effects (the log, the states, the positions and the command counts are the same before and
//! after, and no scratch state is left behind).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Api, Server, another_build, append_ones, assert_error, event, guest_wasm};

const SETTLE: Duration = Duration::from_secs(60);

/// Starts a replay of plugin `name` and answers its id.
fn start(api: &Api, name: &str, body: Value) -> String {
    let started = api
        .post(&format!("/plugins/{name}/replays"), &body)
        .expect(202);
    assert_eq!(started["plugin"], name);
    started["id"].as_str().expect("an id").to_owned()
}

/// Runs a replay to its end and answers its report, checking it is done at 100 %.
#[track_caller]
fn report(api: &Api, name: &str, body: Value) -> Value {
    let id = start(api, name, body);
    let replay = api.wait_for_replay(&id, SETTLE);
    assert_eq!(replay["status"], "done", "{replay}");
    assert_eq!(replay["progress"]["percent"], 100.0);
    replay["report"].clone()
}

/// What a replay must leave as it found: the whole log, every plugin's listing (versions,
/// positions, command counts), and the whole state of every running projection version.
fn observable(api: &Api) -> (Vec<Value>, Value, Vec<Value>) {
    let mut plugins = api.get("/plugins").expect(200);
    let mut states = Vec::new();
    for plugin in plugins.as_array_mut().unwrap() {
        let name = plugin["name"].as_str().unwrap().to_owned();
        *plugin = api.get(&format!("/plugins/{name}")).expect(200);
        plugin.as_object_mut().unwrap().remove("last_switch");
        if plugin["kind"] != "projection" {
            continue;
        }
        for version in plugin["versions"].as_array().unwrap() {
            if version["position"].is_u64() {
                let version = version["version"].as_str().unwrap();
                let keys = api.projection_items(&name, &format!("version={version}"));
                states.push(json!({"version": version, "keys": keys}));
            }
        }
    }
    (api.all_events(), plugins, states)
}

fn increment(api: &Api, id: &str, stream: &str, data: Value) -> Value {
    let reply = api.command(
        "counter",
        &json!({"id": id, "stream": stream, "type": "Increment", "data": data}),
    );
    assert!(reply.status == 200 || reply.status == 422, "{}", reply.body);
    reply.json()
}

#[test]
fn a_handler_replay_reports_exactly_the_commands_whose_outcome_changes() {
    let mut server = Server::start();
    let api = server.api();
    let v1 = api.deploy_guest("fixture-counter");
    // counter-a: three increments under the limit of 3, then two rejected.
    for i in 0..5 {
        increment(
            &api,
            &format!("a{i}"),
            "counter-a",
            json!({"by": 1, "limit": 3}),
        );
    }
    // counter-b: four increments and two commands that decide no event.
    for i in 0..4 {
        increment(&api, &format!("b{i}"), "counter-b", json!({"by": 2}));
    }
    for i in 0..2 {
        api.command(
            "counter",
            &json!({"id": format!("n{i}"), "stream": "counter-b", "type": "Noop", "data": {}}),
        )
        .expect(200);
    }
    let v2 = api
        .deploy(&guest_wasm("fixture-counter-v2"), "promote=manual")
        .expect(201);
    assert_eq!(v2["status"], "candidate");
    let v2 = v2["version"].as_str().unwrap().to_owned();
    let before = observable(&api);

    // v2 marks its events "v2": each command that produced events now produces other ones;
    // the rejections and the commands without events come out the same.
    let report_v2 = report(&api, "counter", json!({"version": v2, "differences": 100}));
    assert_eq!(report_v2["kind"], "handler");
    assert_eq!(report_v2["commands"], 11);
    assert_eq!(report_v2["same"], 4);
    assert_eq!(report_v2["different"], 7);
    assert_eq!(
        report_v2["outcomes"],
        json!({"same": 4, "other_events": 7, "other_reason": 0, "now_rejected": 0,
               "now_accepted": 0, "failed": 0})
    );
    let differing: Vec<&str> = report_v2["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["command_id"].as_str().unwrap())
        .collect();
    assert_eq!(differing, ["a0", "a1", "a2", "b0", "b1", "b2", "b3"]);
    let first = &report_v2["differences"][0];
    assert_eq!(first["change"], "other_events");
    assert_eq!(first["stream"], "counter-a");
    assert_eq!(first["stream_version"], 0);
    assert_eq!(
        first["recorded"],
        json!({"outcome": "applied", "events": [
            {"type": "Incremented", "data": {"by": 1, "total": 1, "build": "v1"}}]})
    );
    assert_eq!(
        first["candidate"],
        json!({"outcome": "applied", "events": [
            {"type": "Incremented", "data": {"by": 1, "total": 1, "build": "v2"}}]})
    );
    // The third increment of counter-b was decided on the stream as it was: a total of 6.
    assert_eq!(
        report_v2["differences"][5]["candidate"]["events"][0]["data"]["total"],
        6
    );

    // The version that decided them decides them all the same.
    let report_v1 = report(&api, "counter", json!({"version": v1}));
    assert_eq!(
        (report_v1["commands"].clone(), report_v1["same"].clone()),
        (json!(11), json!(11))
    );
    assert_eq!(report_v1["differences"], json!([]));

    // A range: only the commands whose positions fall in it, and at most `differences` shown.
    let b = api.stream_events("counter-b");
    let (from, to) = (
        b[1]["position"].as_u64().unwrap(),
        b[2]["position"].as_u64().unwrap(),
    );
    let ranged = report(
        &api,
        "counter",
        json!({"version": v2, "from": from, "to": to, "differences": 1}),
    );
    assert_eq!(ranged["commands"], 2);
    assert_eq!(ranged["different"], 2);
    assert_eq!(ranged["differences"].as_array().unwrap().len(), 1);
    assert_eq!(ranged["differences"][0]["command_id"], "b1");

    assert_eq!(observable(&api), before, "a replay changes nothing");
    let listed = api.get("/replays").expect(200);
    assert_eq!(listed.as_array().unwrap().len(), 3);

    // Bad requests.
    let replays = "/plugins/counter/replays";
    assert_error(&api.post(replays, &json!({})), 400, "invalid_request");
    assert_error(
        &api.post(replays, &json!({"version": v2, "from": 5, "to": 4})),
        400,
        "invalid_request",
    );
    assert_error(
        &api.post(replays, &json!({"version": v2, "from": 0})),
        400,
        "invalid_request",
    );
    assert_error(
        &api.post(replays, &json!({"version": v2, "differences": 100_000})),
        400,
        "invalid_request",
    );
    assert_error(
        &api.post(replays, &json!({"version": v2, "extra": 1})),
        400,
        "invalid_request",
    );
    assert_error(
        &api.post(replays, &json!({"version": "f".repeat(64)})),
        404,
        "version_not_found",
    );
    assert_error(
        &api.post("/plugins/nothing/replays", &json!({"version": v2})),
        404,
        "plugin_not_found",
    );
    assert_error(&api.get("/replays/nothing"), 404, "replay_not_found");

    // Replays live in the process that ran them.
    server.restart();
    let api = server.api();
    assert_eq!(api.get("/replays").expect(200), json!([]));
    assert!(!server.stderr().contains("scratch state left by replays"));
}

#[test]
fn a_projection_replay_compares_states_key_by_key_and_can_be_cancelled() {
    let mut server = Server::start();
    let api = server.api();
    append_ones(&api, 100_000, 4);
    api.deploy_guest("fixture-counting-projection");
    api.wait_for_position("counting-projection", 100_000, SETTLE);
    let build = another_build(&guest_wasm("fixture-counting-projection"), 7);
    let candidate = api.deploy(&build, "promote=manual").expect(201)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    api.wait_for_plugin("counting-projection", SETTLE, |p| {
        p["candidate"]["position"] == 100_000
    });
    let before = observable(&api);

    // The same logic over the whole history: every key the same.
    let whole = report(&api, "counting-projection", json!({"version": candidate}));
    assert_eq!(whole["kind"], "projection");
    assert_eq!(whole["to"], 100_000);
    assert_eq!(whole["compared_with"], "the active version's state");
    assert_eq!(whole["keys"], 6, "4 totals, events and last-position");
    assert_eq!(
        (whole["same"].clone(), whole["different"].clone()),
        (json!(6), json!(0))
    );

    // Over part of history, against the active version replayed over the same part: the
    // states agree with each other, not with the active version's full state.
    let part = report(
        &api,
        "counting-projection",
        json!({"version": candidate, "from": 1, "to": 2_500}),
    );
    assert_eq!(
        part["compared_with"],
        "the active version replayed over the same range"
    );
    assert_eq!(part["keys"], 5, "three streams seen by position 2 500");
    assert_eq!(part["different"], 0);

    // A cancelled replay stops, and its scratch state goes.
    let id = start(&api, "counting-projection", json!({"version": candidate}));
    let cancelled = api
        .post(&format!("/replays/{id}/cancel"), &json!({}))
        .expect(200);
    assert!(
        ["cancelled", "done"].contains(&cancelled["status"].as_str().unwrap()),
        "{cancelled}"
    );
    assert_eq!(observable(&api), before, "replays change nothing");
    let reads = api
        .get("/projections/counting-projection/keys/events")
        .expect(200);
    assert_eq!(reads, 100_000);

    // Nothing is left in scratch space: a restart finds none to delete.
    server.restart();
    assert!(
        !server.stderr().contains("scratch state left by replays"),
        "{}",
        server.stderr()
    );
}

#[test]
fn a_policy_replay_compares_the_commands_it_would_send_with_the_recorded_ones() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    let policy = api.deploy_guest("fixture-hostile-policy");
    for i in 0..5 {
        api.append_ok(
            &format!("hostile-{}", i % 2),
            json!([event("Ping", json!({"n": i}))]),
        );
    }
    // A timer due at once: it fires, and its command is recorded under the timer's id.
    let scheduled = api.append_ok(
        "hostile-3",
        json!([event("Schedule", json!({"delay_ms": 0}))]),
    )["last_position"]
        .as_u64()
        .unwrap();
    let head = api.head();
    api.wait_for_position("hostile-policy", head, SETTLE);
    let deadline = Instant::now() + SETTLE;
    while api.all_events().len() < 12 {
        assert!(
            Instant::now() < deadline,
            "the policy's commands were not delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The last command's event is not the policy's: it moves past it without reacting.
    api.wait_for_position("hostile-policy", api.head(), SETTLE);
    let before = observable(&api);
    let same = report(&api, "hostile-policy", json!({"version": policy}));
    assert_eq!(same["kind"], "policy");
    assert_eq!(same["events"], 6);
    assert_eq!(same["timers_fired"], 1);
    assert_eq!(same["same"], 7);
    assert_eq!(same["commands_recorded"], 6);
    assert_eq!(same["commands_candidate"], 6);
    assert_eq!(same["differences"], json!([]));
    // Short of the head, timers fire only by the events' times: this one is never due before
    // an event, so it stays pending.
    let part = report(
        &api,
        "hostile-policy",
        json!({"version": policy, "to": scheduled}),
    );
    assert_eq!(part["events"], 6);
    assert_eq!(part["timers_fired"], 0);
    assert_eq!(part["timers_pending"], 1);
    assert_eq!(observable(&api), before, "a replay sends nothing");
}

#[test]
fn scratch_state_a_crash_leaves_behind_is_deleted_at_start_up() {
    let mut server = Server::start();
    let api = server.api();
    append_ones(&api, 200_000, 4);
    api.deploy_guest("fixture-counting-projection");
    api.wait_for_position("counting-projection", 200_000, SETTLE);
    let build = another_build(&guest_wasm("fixture-counting-projection"), 9);
    let candidate = api.deploy(&build, "promote=manual").expect(201)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = start(&api, "counting-projection", json!({"version": candidate}));
    // Killed once the replay has committed some scratch state, before it ends.
    let deadline = Instant::now() + SETTLE;
    loop {
        let replay = api.get(&format!("/replays/{id}")).expect(200);
        assert_eq!(
            replay["status"], "running",
            "the replay ended too soon: {replay}"
        );
        if replay["progress"]["done"].as_u64().unwrap() >= 16_384 {
            break;
        }
        assert!(Instant::now() < deadline, "{replay}");
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill_9();
    server.restart();
    let line = server.wait_for_log_line("scratch state left by replays", SETTLE);
    let deleted: u64 = line
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("a count in {line:?}"));
    assert!(deleted > 0, "{line}");
    let api = server.api();
    assert_eq!(
        api.get("/projections/counting-projection/keys/events")
            .expect(200),
        200_000
    );
}

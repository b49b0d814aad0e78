//! Projections through the real binary: catch-up from position 1, live updates woken by appends,
//! exactly once across `kill -9`, read-your-writes with `min_position`, key reads, listings and
//! queries, a poison event pausing the projection, and hostile projections that stop only
//! themselves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Api, Launch, Server, assert_error, event};

const CATCH_UP: Duration = Duration::from_secs(120);

/// Appends `count` `Incremented` events over `streams` counter streams, 1 000 per request, and
/// answers the totals an independent fold computes: (stream → sum of `by`).
fn append_increments(api: &Api, count: u64, streams: u64) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    let mut appended = 0;
    while appended < count {
        let stream = format!("counter-{}", (appended / 1_000) % streams);
        let batch: Vec<Value> = (0..1_000.min(count - appended))
            .map(|i| {
                let by = (appended + i) % 7 + 1;
                *totals.entry(stream.clone()).or_insert(0) += by;
                event(
                    "Incremented",
                    json!({"by": by, "total": 0, "build": "test"}),
                )
            })
            .collect();
        appended += batch.len() as u64;
        api.append_ok(&stream, json!(batch));
    }
    totals
}

/// The projection's `events` count and `total/<stream>` keys, read at `min_position`.
fn counted(api: &Api, min_position: u64) -> (u64, BTreeMap<String, u64>) {
    let path = |key: &str| {
        format!(
            "/projections/counting-projection/keys/{key}?min_position={min_position}&timeout_ms=60000"
        )
    };
    let events = api
        .get(&path("events"))
        .expect(200)
        .as_u64()
        .expect("a count");
    let mut totals = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = format!("prefix=total/&limit=1000&min_position={min_position}");
        if let Some(after) = &after {
            query.push_str(&format!("&after={after}"));
        }
        let page = api
            .get(&format!("/projections/counting-projection/keys?{query}"))
            .expect(200);
        for item in page["items"].as_array().expect("items") {
            let key = item["key"].as_str().expect("a key");
            let stream = key.strip_prefix("total/").expect("a total key");
            totals.insert(stream.to_string(), item["value"].as_u64().expect("a total"));
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    (events, totals)
}

#[test]
fn a_projection_catches_up_from_position_one_then_follows_appends() {
    let server = Server::start();
    let api = server.api();
    let before = append_increments(&api, 3_000, 3);
    api.deploy_guest("fixture-counting-projection");
    let head = api.head();
    let (events, totals) = counted(&api, head);
    assert_eq!(events, 3_000);
    assert_eq!(totals, before);

    let listing = api.get("/plugins").expect(200);
    let entry = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "counting-projection")
        .expect("listed");
    assert_eq!(entry["kind"], "projection");
    assert_eq!(entry["status"], "running");
    assert_eq!(entry["position"], head);
    assert_eq!(entry["lag"], 0);
    let gauge = |name: &str| {
        api.metric(&format!(
            "{name}{{plugin=\"counting-projection\",kind=\"projection\"}} "
        ))
    };
    assert_eq!(gauge("evhost_plugin_position"), head as f64);
    assert_eq!(gauge("evhost_plugin_lag"), 0.0);
    assert_eq!(gauge("evhost_plugin_paused"), 0.0);

    // Live: an append is visible without any read asking for it.
    let appended = api.append_ok("counter-9", json!([event("Incremented", json!({"by": 5}))]));
    let position = appended["last_position"].as_u64().unwrap();
    let started = Instant::now();
    api.wait_for_position("counting-projection", position, Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let reply = api.get("/projections/counting-projection/keys/total/counter-9");
    assert_eq!(reply.expect(200), json!(5));
    assert!(reply.position.expect("Evhost-Position") >= position);

    // Events outside the subscription move the position too, without changing the state.
    let other = api.append_ok("visit-1", json!([event("Noted", json!({}))]));
    let other_position = other["last_position"].as_u64().unwrap();
    api.wait_for_position(
        "counting-projection",
        other_position,
        Duration::from_secs(10),
    );
    assert_eq!(counted(&api, other_position).0, 3_001);
}

#[test]
fn kill_9_during_catch_up_leaves_every_event_applied_exactly_once() {
    let mut server = Server::start();
    let api = server.api();
    let expected = append_increments(&api, 100_000, 16);
    let head = api.head();
    api.deploy_guest("fixture-counting-projection");
    // Kill it while it is part of the way through.
    let deadline = Instant::now() + CATCH_UP;
    let killed_at = loop {
        let position = api.get("/plugins/counting-projection").expect(200)["position"]
            .as_u64()
            .unwrap_or(0);
        if position > 0 {
            server.kill_9();
            break position;
        }
        assert!(Instant::now() < deadline, "the projection never started");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(
        killed_at < head,
        "the catch-up ended before the kill ({killed_at} of {head})"
    );
    server.restart();
    let api = server.api();
    let (events, totals) = counted(&api, head);
    assert_eq!(events, 100_000, "killed at {killed_at}");
    assert_eq!(totals, expected, "killed at {killed_at}");
}

#[test]
fn a_read_with_min_position_sees_the_command_before_it() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    api.deploy_guest("fixture-counting-projection");
    let mut total = 0;
    for n in 1..=40u64 {
        let reply = api.command(
            "counter",
            &json!({"stream": "counter-ryw", "type": "Increment", "data": {"by": n}}),
        );
        let position = reply.expect(200)["position"].as_u64().unwrap();
        total += n;
        let read = api.get(&format!(
            "/projections/counting-projection/keys/total/counter-ryw?min_position={position}&timeout_ms=60000"
        ));
        assert_eq!(read.expect(200), json!(total), "after command {n}");
        assert!(read.position.expect("Evhost-Position") >= position);
    }
}

#[test]
fn reads_answer_clear_errors() {
    let server = Server::start();
    let api = server.api();
    assert_error(
        &api.get("/projections/nothing-here/keys/a"),
        404,
        "plugin_not_found",
    );
    api.deploy_guest("fixture-counter");
    assert_error(
        &api.get("/projections/counter/keys/a"),
        400,
        "invalid_request",
    );
    api.deploy_guest("fixture-counting-projection");
    let missing = api.get("/projections/counting-projection/keys/no-such-key");
    assert_error(&missing, 404, "key_not_found");
    assert!(
        missing.position.is_some(),
        "an absent key says at which position"
    );
    let head = api.head();
    let reply = api.get(&format!(
        "/projections/counting-projection/keys/events?min_position={}&timeout_ms=50",
        head + 10
    ));
    assert_error(&reply, 504, "not_caught_up");
    assert_eq!(reply.json()["error"]["min_position"], head + 10);
    for bad in [
        "min_position=-1",
        "min_position=ten",
        "timeout_ms=600001",
        "limit=0",
        "limit=1001",
        "bogus=1",
    ] {
        assert_error(
            &api.get(&format!("/projections/counting-projection/keys?{bad}")),
            400,
            "invalid_request",
        );
    }
    assert_error(
        &api.get("/projections/counting-projection/keys/events?version=0000"),
        404,
        "version_not_found",
    );
    assert_error(
        &api.get("/projections/counting-projection/elsewhere"),
        404,
        "not_found",
    );
    assert_error(
        &api.post("/projections/counting-projection/keys/a", &json!({})),
        405,
        "method_not_allowed",
    );
}

#[test]
fn listings_page_in_key_order_and_queries_reach_the_plugin() {
    let server = Server::start();
    let api = server.api();
    for n in 0..25 {
        api.append_ok(
            &format!("counter-{n:02}"),
            json!([event("Incremented", json!({"by": n + 1}))]),
        );
    }
    api.deploy_guest("fixture-counting-projection");
    let head = api.head();
    let mut keys = Vec::new();
    let mut after = String::new();
    loop {
        let page = api
            .get(&format!(
                "/projections/counting-projection/keys?prefix=total/&limit=10&after={after}&min_position={head}&timeout_ms=60000"
            ))
            .expect(200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 10);
        keys.extend(items.iter().map(|i| i["key"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|n| format!("total/counter-{n:02}")).collect();
    assert_eq!(keys, expected);

    let count = api.get(&format!(
        "/projections/counting-projection/query/events?min_position={head}"
    ));
    assert_eq!(count.expect(200), json!(25));
    assert!(count.position.is_some());
    let refused = api.get("/projections/counting-projection/query/no-such-query");
    assert_error(&refused, 400, "query_rejected");
    assert!(
        refused.json()["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown query")
    );
    assert!(refused.position.is_some());
    // Parameters reach the plugin decoded; the host's own are not among them.
    let total = api.get(&format!(
        "/projections/counting-projection/query/total?stream=counter%2D03&min_position={head}"
    ));
    assert_eq!(total.expect(200), json!(4));
}

#[test]
fn a_poison_event_pauses_the_projection_until_it_is_skipped() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-hostile-projection");
    api.append_ok("hostile-1", json!([event("Ping", json!({"n": 1}))]));
    let poison = api.append_ok("hostile-1", json!([event("Poison", json!({}))]))["last_position"]
        .as_u64()
        .unwrap();
    let after =
        api.append_ok("hostile-1", json!([event("Ping", json!({"n": 2}))]))["last_position"]
            .as_u64()
            .unwrap();
    let paused = api.wait_for_plugin("hostile-projection", Duration::from_secs(30), |p| {
        p["status"] == "paused"
    });
    assert_eq!(paused["position"], poison - 1, "{paused}");
    assert!(
        paused["error"].as_str().unwrap().contains("poison"),
        "{paused}"
    );
    assert_eq!(paused["parked"], 1);
    let parked = api.get("/plugins/hostile-projection/parked").expect(200);
    assert_eq!(parked[0]["position"], poison);
    // The event before the poison is applied; the one after waits.
    assert_eq!(
        api.get("/projections/hostile-projection/keys/count")
            .expect(200),
        json!(1)
    );

    // Retrying fails again and pauses again; a skip moves on.
    let retried = api
        .post(
            &format!("/plugins/hostile-projection/parked/{poison}/retry"),
            &json!({}),
        )
        .expect(200);
    assert_ne!(retried["status"], "paused", "{retried}");
    let again = api.wait_for_plugin("hostile-projection", Duration::from_secs(30), |p| {
        p["status"] == "paused"
    });
    assert_eq!(again["position"], poison - 1, "{again}");
    assert_error(
        &api.post("/plugins/hostile-projection/parked/1/skip", &json!({})),
        404,
        "not_found",
    );
    api.post(
        &format!("/plugins/hostile-projection/parked/{poison}/skip"),
        &json!({}),
    )
    .expect(200);
    api.wait_for_position("hostile-projection", after, Duration::from_secs(10));
    assert_eq!(
        api.get("/projections/hostile-projection/keys/count")
            .expect(200),
        json!(2)
    );
    assert_eq!(
        api.get("/plugins/hostile-projection").expect(200)["status"],
        "running"
    );

    // An operator's pause holds until resume, also across a restart.
    api.post("/plugins/hostile-projection/pause", &json!({}))
        .expect(200);
    let next = api.append_ok("hostile-1", json!([event("Ping", json!({"n": 3}))]))["last_position"]
        .as_u64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let listed = api.get("/plugins/hostile-projection").expect(200);
    assert_eq!(listed["status"], "paused");
    assert_eq!(listed["position"], after);
    api.post("/plugins/hostile-projection/resume", &json!({}))
        .expect(200);
    api.wait_for_position("hostile-projection", next, Duration::from_secs(10));
}

#[test]
fn hostile_projections_stop_only_themselves() {
    let server = Launch::default().start();
    let api = server.api();
    let wasm = crate::harness::guest_wasm("fixture-hostile-projection");
    api.deploy(&wasm, "timeout_ms=200&memory_mib=32")
        .expect(201);
    api.deploy_guest("fixture-counting-projection");
    api.deploy_guest("fixture-counter");
    for hostile in ["Loop", "Allocate", "Panic", "BadWrite"] {
        api.append_ok(
            &format!("hostile-{hostile}"),
            json!([event(hostile, json!({}))]),
        );
    }
    // The others go on while the hostile one retries and pauses.
    let reply = api.command(
        "counter",
        &json!({"stream": "counter-ok", "type": "Increment", "data": {"by": 3}}),
    );
    let position = reply.expect(200)["position"].as_u64().unwrap();
    let read = api.get(&format!(
        "/projections/counting-projection/keys/total/counter-ok?min_position={position}&timeout_ms=10000"
    ));
    assert_eq!(read.expect(200), json!(3));
    let paused = api.wait_for_plugin("hostile-projection", Duration::from_secs(60), |p| {
        p["status"] == "paused"
    });
    let error = paused["error"].as_str().unwrap();
    assert!(error.contains("time budget"), "{paused}");
    // The memory bomb comes next: with the longest budget (the same bytes deployed again, taken
    // at the next call) the cap is the only limit it can reach, however busy the machine.
    api.deploy(&wasm, "timeout_ms=60000&memory_mib=32")
        .expect(200);
    // Skip each in turn: every kind of failure pauses the projection with its own reason.
    let mut reasons = vec![error.to_string()];
    for _ in 0..3 {
        let position = paused_position(&api);
        api.post(
            &format!("/plugins/hostile-projection/parked/{position}/skip"),
            &json!({}),
        )
        .expect(200);
        let paused = api.wait_for_plugin("hostile-projection", Duration::from_secs(60), |p| {
            p["status"] == "paused" && p["position"].as_u64() >= Some(position)
        });
        reasons.push(paused["error"].as_str().unwrap().to_string());
    }
    assert!(reasons[1].contains("memory"), "{reasons:?}");
    assert!(reasons[2].contains("trapped"), "{reasons:?}");
    assert!(reasons[3].contains("not JSON"), "{reasons:?}");
    let health = api.get("/health").expect(200);
    assert_eq!(health["status"], "ok");
}

fn paused_position(api: &Api) -> u64 {
    let parked = api.get("/plugins/hostile-projection/parked").expect(200);
    parked[0]["position"].as_u64().expect("a parked position")
}

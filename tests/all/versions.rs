//! Versions through the real binary: a projection's candidate builds its own state beside the
//! active version and takes over when caught up (by itself or when promoted), the previous
//! version stays current for an instant rollback, `version=` reads any running version, deleting
//! a version frees its state, a rebuild resumes after `kill -9`; handlers switch and roll back,
//! and each version counts the commands it decided.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Api, Server, another_build, append_ones, assert_error, guest_wasm};

const CATCH_UP: Duration = Duration::from_secs(120);
const PROJECTION: &str = "counting-projection";

/// The `events` key of the projection's version `version` (the active one when `None`), read
/// once it has processed `min_position`: the count and the version that answered.
fn events_counted(api: &Api, version: Option<&str>, min_position: u64) -> (u64, String) {
    let mut path = format!(
        "/projections/{PROJECTION}/keys/events?min_position={min_position}&timeout_ms=60000"
    );
    if let Some(version) = version {
        path.push_str(&format!("&version={version}"));
    }
    let reply = api.get(&path);
    let count = reply.expect(200).as_u64().expect("a count");
    (count, reply.version.expect("an Evhost-Version header"))
}

fn version_states(plugin: &Value) -> Vec<(String, String)> {
    plugin["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_candidate_builds_beside_the_active_version_and_takes_over_when_promoted() {
    let server = Server::start();
    let api = server.api();
    append_ones(&api, 5_000, 3);
    let v1 = api.deploy_guest("fixture-counting-projection");
    assert_eq!(events_counted(&api, None, 5_000), (5_000, v1.clone()));

    let v2_wasm = another_build(&guest_wasm("fixture-counting-projection"), 1);
    let deployed = api.deploy(&v2_wasm, "promote=manual").expect(201);
    assert_eq!(deployed["status"], "candidate");
    let v2 = deployed["version"].as_str().unwrap().to_owned();
    let listed = api.wait_for_plugin(PROJECTION, CATCH_UP, |p| {
        p["candidate"]["position"].as_u64() == Some(5_000)
    });
    assert_eq!(listed["active_version"], v1.as_str());
    assert_eq!(listed["candidate_version"], v2.as_str());
    assert_eq!(listed["candidate"]["promote"], "manual");
    assert_eq!(listed["candidate"]["lag"], 0);
    let list = api.get("/plugins").expect(200);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == PROJECTION)
        .expect("listed");
    assert_eq!(entry["candidate_version"], v2.as_str());
    assert_eq!(entry["candidate"]["position"], 5_000);
    // Caught up, a manual candidate still waits; both versions answer, each from its own state.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(events_counted(&api, None, 5_000), (5_000, v1.clone()));
    assert_eq!(events_counted(&api, Some(&v2), 5_000), (5_000, v2.clone()));
    assert_eq!(
        version_states(&api.get(&format!("/plugins/{PROJECTION}")).expect(200)),
        [
            (v1.clone(), "active".into()),
            (v2.clone(), "candidate".into())
        ]
    );

    let promoted = api
        .post(&format!("/plugins/{PROJECTION}/promote"), &json!({}))
        .expect(200);
    assert_eq!(promoted["active_version"], v2.as_str());
    assert_eq!(promoted["previous_version"], v1.as_str());
    assert_eq!(promoted["switch"]["trigger"], "promote");
    assert_eq!(events_counted(&api, None, 5_000), (5_000, v2.clone()));

    // The previous version keeps following the log, so a rollback finds it current.
    append_ones(&api, 2_000, 3);
    assert_eq!(events_counted(&api, Some(&v1), 7_000), (7_000, v1.clone()));
    let rolled_back = api
        .post(&format!("/plugins/{PROJECTION}/rollback"), &json!({}))
        .expect(200);
    assert_eq!(rolled_back["active_version"], v1.as_str());
    assert_eq!(rolled_back["previous_version"], v2.as_str());
    assert_eq!(rolled_back["switch"]["trigger"], "rollback");
    let reply = api.get(&format!("/projections/{PROJECTION}/keys/events"));
    assert_eq!(reply.expect(200), 7_000);
    assert_eq!(reply.version.as_deref(), Some(v1.as_str()));
    assert!(reply.position.unwrap() >= 7_000);

    // Refusals.
    let base = format!("/plugins/{PROJECTION}");
    assert_error(
        &api.send("DELETE", &format!("{base}/versions/{v1}"), &[], None),
        409,
        "version_active",
    );
    assert_error(
        &api.post(&format!("{base}/promote"), &json!({})),
        409,
        "no_candidate",
    );
    assert_error(
        &api.post(
            &format!("{base}/promote"),
            &json!({"version": "0".repeat(64)}),
        ),
        404,
        "version_not_found",
    );
    assert_error(
        &api.send("POST", &format!("{base}/promote"), &[], Some(b"{".to_vec())),
        400,
        "invalid_request",
    );
    assert_error(
        &api.post(&format!("{base}/promote"), &json!({"version": 7})),
        400,
        "invalid_request",
    );
    assert_error(
        &api.get(&format!("{base}/promote")),
        405,
        "method_not_allowed",
    );
    assert_error(
        &api.post("/plugins/nothing/rollback", &json!({})),
        404,
        "plugin_not_found",
    );
    // Promoting the active version changes nothing.
    let same = api
        .post(&format!("{base}/promote"), &json!({"version": v1}))
        .expect(200);
    assert_eq!(same["switched"], false);

    // Deleting the previous version frees its state; it can no longer be read or rolled back to.
    let deleted = api
        .send("DELETE", &format!("{base}/versions/{v2}"), &[], None)
        .expect(200);
    assert!(
        deleted["state_entries_freed"].as_u64().unwrap() >= 5,
        "{deleted}"
    );
    assert_error(
        &api.get(&format!(
            "/projections/{PROJECTION}/keys/events?version={v2}"
        )),
        404,
        "version_not_found",
    );
    assert_error(
        &api.post(&format!("{base}/rollback"), &json!({})),
        409,
        "no_previous_version",
    );
    let details = api.get(&base).expect(200);
    assert_eq!(version_states(&details), [(v1.clone(), "active".into())]);
    assert_error(
        &api.send("DELETE", &format!("{base}/versions/{v2}"), &[], None),
        404,
        "version_not_found",
    );

    // Deployed again, the version builds from position 1 (its state is gone), then promotes
    // itself once caught up.
    let again = api.deploy(&v2_wasm, "").expect(201);
    assert_eq!(again["status"], "candidate");
    let switched =
        api.wait_for_plugin(PROJECTION, CATCH_UP, |p| p["active_version"] == v2.as_str());
    assert_eq!(switched["last_switch"]["trigger"], "auto");
    assert!(
        switched["last_switch"]["caught_up_to_active_us"].is_u64(),
        "{switched}"
    );
    assert_eq!(events_counted(&api, None, 7_000), (7_000, v2.clone()));
    let from_scratch = format!("version {v2} follows the log from position 1\n");
    assert_eq!(
        server.stderr().matches(&from_scratch).count(),
        2,
        "a deleted version rebuilds from position 1"
    );
}

#[test]
fn a_rebuild_interrupted_by_kill_9_resumes_from_its_checkpoint_then_promotes_itself() {
    let mut server = Server::start();
    let api = server.api();
    append_ones(&api, 100_000, 10);
    let v1 = api.deploy_guest("fixture-counting-projection");
    api.wait_for_position(PROJECTION, 100_000, CATCH_UP);

    let v2_wasm = another_build(&guest_wasm("fixture-counting-projection"), 1);
    let v2 = api.deploy(&v2_wasm, "").expect(201)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = api.wait_for_plugin(PROJECTION, CATCH_UP, |p| {
        p["candidate"]["position"].as_u64().is_some_and(|p| p > 0)
            || p["active_version"] == v2.as_str()
    });
    let reached = listed["candidate"]["position"]
        .as_u64()
        .expect("the kill comes mid-way through the rebuild");
    assert!(reached < 100_000, "the kill comes mid-way: {listed}");
    server.kill_9();
    server.restart();
    let api = server.api();
    let needle = format!("version {v2} follows the log from position ");
    let resumed_at = loop {
        let log = server.stderr();
        let since_restart = log.rsplit("----- restart -----").next().unwrap_or_default();
        if let Some(line) = since_restart.lines().find(|line| line.contains(&needle)) {
            break line
                .rsplit(' ')
                .next()
                .and_then(|p| p.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("a position in {line:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        resumed_at > reached,
        "resumed from its checkpoint ({resumed_at}), not position 1 (it had processed {reached})"
    );
    let switched =
        api.wait_for_plugin(PROJECTION, CATCH_UP, |p| p["active_version"] == v2.as_str());
    assert_eq!(switched["previous_version"], v1.as_str());
    assert_eq!(events_counted(&api, None, 100_000), (100_000, v2));
    assert_eq!(events_counted(&api, Some(&v1), 100_000), (100_000, v1));
}

#[test]
fn a_handler_switches_rolls_back_and_counts_the_commands_of_each_version() {
    let server = Server::start();
    let api = server.api();
    let increment = |id: &str| {
        api.command(
            "counter",
            &json!({"id": id, "stream": "counter-1", "type": "Increment", "data": {"by": 1}}),
        )
        .expect(200)["events"][0]["data"]["build"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let v1 = api.deploy_guest("fixture-counter");
    for i in 0..3 {
        assert_eq!(increment(&format!("a{i}")), "v1");
    }
    let v2 = api.deploy_guest("fixture-counter-v2");
    assert_eq!(increment("b0"), "v2");
    assert_eq!(increment("b1"), "v2");
    // A repeated command id is answered from its record and counts nothing.
    assert_eq!(increment("b1"), "v2");
    let details = api.get("/plugins/counter").expect(200);
    assert_eq!(details["previous_version"], v1.as_str());
    let commands = |details: &Value, version: &str| {
        details["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == version)
            .unwrap()["commands"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(commands(&details, &v1), 3);
    assert_eq!(commands(&details, &v2), 2);

    let rolled_back = api
        .post("/plugins/counter/rollback", &json!({}))
        .expect(200);
    assert_eq!(rolled_back["active_version"], v1.as_str());
    assert_eq!(increment("c0"), "v1");
    let details = api.get("/plugins/counter").expect(200);
    assert_eq!(commands(&details, &v1), 4);
    assert_eq!(
        version_states(&details),
        [
            (v1.clone(), "active".into()),
            (v2.clone(), "previous".into())
        ]
    );

    // Deployed for manual promotion, a handler waits as a candidate.
    let v3_wasm = another_build(&guest_wasm("fixture-counter-v2"), 3);
    let v3 = api.deploy(&v3_wasm, "promote=manual").expect(201);
    assert_eq!(v3["status"], "candidate");
    let v3 = v3["version"].as_str().unwrap().to_owned();
    assert_eq!(increment("c1"), "v1");
    api.post("/plugins/counter/promote", &json!({"version": v3}))
        .expect(200);
    assert_eq!(increment("c2"), "v2");
    let details = api.get("/plugins/counter").expect(200);
    assert_eq!(commands(&details, &v3), 1);
    assert_eq!(details["previous_version"], v1.as_str());

    // The counts survive a restart with the records they count.
    let mut server = server;
    server.restart();
    let api = server.api();
    let details = api.get("/plugins/counter").expect(200);
    assert_eq!(
        [&v1, &v2, &v3].map(|v| commands(&details, v)),
        [5, 2, 1],
        "{details}"
    );
    assert_eq!(details["active_version"], v3.as_str());
    api.post("/plugins/counter/rollback", &json!({}))
        .expect(200);
    assert_eq!(
        api.command(
            "counter",
            &json!({"id": "d0", "stream": "counter-1", "type": "Increment", "data": {"by": 1}}),
        )
        .expect(200)["events"][0]["data"]["build"],
        "v1"
    );
}

fn check_in(api: &Api, visit: u64) -> Value {
    api.command(
        "visit",
        &json!({"id": format!("in-{visit}"), "stream": format!("visit-{visit}"), "type": "CheckIn",
                "data": {"patient_id": format!("p-{visit}"), "patient_name": "Ana Lima",
                         "complaint": "chest pain", "triage_level": 2,
                         "room": format!("R-{visit}")}}),
    )
    .expect(200)
}

fn check_out(api: &Api, id: &str, visit: u64) -> crate::harness::Reply {
    api.command(
        "visit",
        &json!({"id": id, "stream": format!("visit-{visit}"), "type": "CheckOut",
                "data": {"disposition": "discharged"}}),
    )
}

#[test]
fn a_replay_of_the_fixed_visit_names_exactly_the_repeated_check_outs() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("visit");
    for visit in 1..=6 {
        check_in(&api, visit);
        check_out(&api, &format!("out-{visit}"), visit).expect(200);
    }
    // The bug of v1: a visit checked out twice.
    for visit in [2, 5] {
        check_out(&api, &format!("again-{visit}"), visit).expect(200);
    }
    let fixed = api
        .deploy(&guest_wasm("visit-v2"), "promote=manual")
        .expect(201);
    let v2 = fixed["version"].as_str().unwrap().to_owned();
    let replay = api
        .post("/plugins/visit/replays", &json!({"version": v2}))
        .expect(202);
    let id = replay["id"].as_str().unwrap().to_owned();
    let done = api.wait_for_replay(&id, CATCH_UP);
    let report = &done["report"];
    assert_eq!(report["commands"], 14);
    assert_eq!(report["different"], 2);
    assert_eq!(report["outcomes"]["now_rejected"], 2);
    let changed: Vec<&str> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["command_id"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["again-2", "again-5"]);
    assert_eq!(
        report["differences"][0]["candidate"]["reason"],
        "patient p-2 is already checked out; the visit is closed"
    );
    assert_eq!(report["differences"][0]["recorded"]["outcome"], "applied");

    // A projection's replay: visits v2 adds a field to each visit, and changes nothing else.
    api.deploy_guest("visits");
    let v2_visits = api
        .deploy(&guest_wasm("visits-v2"), "promote=manual")
        .expect(201)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    api.wait_for_position("visits", api.head(), CATCH_UP);
    let replay = api
        .post(
            "/plugins/visits/replays",
            &json!({"version": v2_visits, "differences": 10}),
        )
        .expect(202);
    let done = api.wait_for_replay(replay["id"].as_str().unwrap(), CATCH_UP);
    let report = &done["report"];
    assert_eq!(
        [&report["changed"], &report["added"], &report["removed"]],
        [&json!(6), &json!(0), &json!(0)],
        "{report}"
    );
    let keys: Vec<&str> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "visit/1", "visit/2", "visit/3", "visit/4", "visit/5", "visit/6"
        ]
    );
    for difference in report["differences"].as_array().unwrap() {
        let mut candidate = difference["candidate"].clone();
        assert!(candidate["length_of_stay_seconds"].is_u64(), "{difference}");
        candidate
            .as_object_mut()
            .unwrap()
            .remove("length_of_stay_seconds");
        assert_eq!(
            candidate, difference["active"],
            "only the new field differs"
        );
    }

    // Switched, the fix holds; rolled back, the bug is back.
    api.post("/plugins/visit/promote", &json!({"version": v2}))
        .expect(200);
    assert_error(&check_out(&api, "third-2", 2), 422, "command_rejected");
    api.post("/plugins/visit/rollback", &json!({})).expect(200);
    check_out(&api, "third-2-v1", 2).expect(200);
}

#[test]
fn a_blue_green_switch_under_read_load_serves_no_failed_or_mixed_read_and_rolls_back() {
    const VISITS: u64 = 60;
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("visit");
    let v1 = api.deploy_guest("visits");
    for visit in 1..=VISITS {
        check_in(&api, visit);
        if visit % 2 == 0 {
            check_out(&api, &format!("out-{visit}"), visit).expect(200);
        }
    }
    let head = api.head();
    let key = |visit: u64| {
        format!("/projections/visits/keys/visit/{visit}?min_position={head}&timeout_ms=60000")
    };
    let before: Vec<Value> = (1..=VISITS).map(|v| api.get(&key(v)).expect(200)).collect();
    assert!(
        before
            .iter()
            .all(|v| v.get("length_of_stay_seconds").is_none())
    );

    let stop = AtomicBool::new(false);
    // How many reads each reader had answered by v1, and by v2, so far.
    let from_v1s: [AtomicU64; 3] = Default::default();
    let from_v2s: [AtomicU64; 3] = Default::default();
    let v2 = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..3u64)
            .map(|reader| {
                let (api, stop, v1, key) = (server.api(), &stop, &v1, &key);
                let counts = (&from_v1s[reader as usize], &from_v2s[reader as usize]);
                scope.spawn(move || {
                    let (mut reads, mut seen_v2, mut last_position) = (0u64, false, 0u64);
                    let mut from_v1 = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let visit = (reads * 7 + reader) % VISITS + 1;
                        let reply = api.get(&key(visit));
                        let value = reply.expect(200);
                        let version = reply.version.clone().expect("Evhost-Version");
                        let position = reply.position.expect("Evhost-Position");
                        let is_v1 = &version == v1;
                        // One version's state answers each read, and it is that version's shape.
                        assert_eq!(
                            value.get("length_of_stay_seconds").is_none(),
                            is_v1,
                            "version {version} answered {value}"
                        );
                        assert!(!(seen_v2 && is_v1), "a read went back to v1 after v2");
                        assert!(position >= last_position, "the position went back");
                        seen_v2 |= !is_v1;
                        from_v1 += u64::from(is_v1);
                        let count = if is_v1 { counts.0 } else { counts.1 };
                        count.fetch_add(1, Ordering::Relaxed);
                        last_position = position;
                        reads += 1;
                    }
                    (reads, from_v1)
                })
            })
            .collect();
        // Each reader is answered by v1 before the deploy and by v2 after the switch: waited for,
        // so that a busy machine makes the test slower, not failed.
        wait_for_each_reader(&from_v1s, &readers, &stop);
        let v2 = api.deploy_guest("visits-v2");
        api.wait_for_plugin("visits", CATCH_UP, |p| p["active_version"] == v2.as_str());
        wait_for_each_reader(&from_v2s, &readers, &stop);
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            let (reads, from_v1) = reader.join().expect("no failed read");
            assert!(
                from_v1 > 0 && reads > from_v1,
                "{from_v1} of {reads} reads from v1"
            );
        }
        v2
    });
    let switched = api.get(&key(2)).expect(200);
    assert!(switched["length_of_stay_seconds"].is_u64(), "{switched}");
    assert!(api.get(&key(1)).expect(200)["length_of_stay_seconds"].is_null());

    // A rollback restores the earlier answers at once, from the state v1 kept current.
    api.post("/plugins/visits/rollback", &json!({})).expect(200);
    let after: Vec<Value> = (1..=VISITS).map(|v| api.get(&key(v)).expect(200)).collect();
    assert_eq!(after, before);
    let reply = api.get(&key(1));
    assert_eq!(reply.version.as_deref(), Some(v1.as_str()));
    assert_eq!(
        api.get(&format!("/projections/visits/keys/visit/2?version={v2}"))
            .expect(200)["length_of_stay_seconds"],
        switched["length_of_stay_seconds"]
    );
}

/// Waits until every reader has counted a read in `counts`. If one of them ended (a read
/// failed) or one did not count within the catch-up time, it stops them all instead, so that
/// the checks of what they return say which.
fn wait_for_each_reader<T>(
    counts: &[AtomicU64],
    readers: &[ScopedJoinHandle<'_, T>],
    stop: &AtomicBool,
) {
    let deadline = Instant::now() + CATCH_UP;
    while counts
        .iter()
        .any(|count| count.load(Ordering::Relaxed) == 0)
    {
        if readers.iter().any(|reader| reader.is_finished()) || Instant::now() > deadline {
            // Stopped, the others end, and the scope reports the reader that failed.
            stop.store(true, Ordering::Relaxed);
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

//! evhost on PostgreSQL through the real binary: a host keeps its events, plugins, command
//! records and plugin state in the database across `kill -9`, compiling its plugins into its
//! own cache rather than trusting compiled code in the database; several hosts on one database
//! serve one log, and each one's followers see every host's appends at once, in order.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Launch, Server, event, event_with_id, fresh_schema, guest_wasm};
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

/// Appends `count` counted events, spread over five streams, through `server`.
fn append_counted(server: &Server, from: usize, count: usize) {
    let api = server.api();
    for n in from..from + count {
        api.append_ok(
            &format!("counter-{}", n % 5),
            json!([event("Incremented", json!({"by": 1}))]),
        );
    }
}

/// How many events the counting projection has applied, as `server` answers once the
/// projection has processed `server`'s head (waiting for it, on whichever node runs it).
fn counted(server: &Server) -> u64 {
    let api = server.api();
    let head = api.head();
    api.get(&format!(
        "/projections/counting-projection/query/events?min_position={head}&timeout_ms=60000"
    ))
    .expect(200)
    .as_u64()
    .expect("a count")
}

/// The node rendezvous hashing prefers for `lease` among `nodes`, as every node computes it
/// (FNV-1a of the lease, a NUL and the node's name; the highest wins).
fn preferred<'a>(lease: &str, nodes: &[&'a str]) -> &'a str {
    nodes
        .iter()
        .copied()
        .max_by_key(|node| {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in lease.bytes().chain([0]).chain(node.bytes()) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            hash
        })
        .expect("a node")
}

/// Two data directories whose nodes are named so that the first is the one preferred for
/// `lease`: it keeps the lease once placement settles, so a test knows which node to kill.
fn nodes_preferring_the_first(lease: &str) -> [tempfile::TempDir; 2] {
    let (a, b) = ("node-one", "node-two");
    let names = if preferred(lease, &[a, b]) == a {
        [a, b]
    } else {
        [b, a]
    };
    names.map(named_node)
}

/// A data directory for a node named `name`.
fn named_node(name: impl AsRef<str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a data directory");
    std::fs::write(dir.path().join("node-id"), name.as_ref()).expect("the node's name");
    dir
}

/// Waits until `server` says the node `holder` runs the lease `lease` (placement has settled:
/// a node that loaded it first may hold it for a moment before handing it to its preferred
/// node).
fn wait_for_holder(server: &Server, lease: &str, holder: &Server) {
    let wanted = holder.api().get("/cluster").expect(200)["node"]["node"].clone();
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let cluster = server.api().get("/cluster").expect(200);
        let held = cluster["leases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["lease"] == lease && l["holder"]["node"] == wanted);
        if held {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{lease} never held by {wanted}: {cluster}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn projection_lease(package: &str, name: &str) -> String {
    let version = hex_sha256(&crate::harness::guest_wasm(package));
    format!("projection/{name}/{version}")
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Two nodes with the counting projection deployed on both: the first runs it (and is the
/// node preferred for it, so it keeps it), the second stands by.
fn two_nodes_counting() -> (Server, Server) {
    let schema = fresh_schema();
    let lease = projection_lease("fixture-counting-projection", "counting-projection");
    let [one, two] = nodes_preferring_the_first(&lease);
    let first = Launch::default().on_postgres(&schema).start_in(one);
    let second = Launch::default().on_postgres(&schema).start_in(two);
    first.api().deploy_guest("fixture-counting-projection");
    second.api().deploy_guest("fixture-counting-projection");
    wait_for_holder(&second, &lease, &first);
    append_counted(&first, 0, 20);
    assert_eq!(counted(&first), 20);
    (first, second)
}

#[test]
fn a_projection_moves_to_another_node_when_its_node_is_killed() {
    let (mut first, second) = two_nodes_counting();
    first.kill_9();
    append_counted(&second, 20, 30);
    // The second node takes the lease once the first's claim expires, and goes on from the
    // first's checkpoint: every event counted once.
    assert_eq!(counted(&second), 50);
    second.wait_for_log_line("this node runs projection/counting-projection/", SETTLE);
    // The first comes back: the lease stays where it is, and both answer the same count.
    first.restart();
    append_counted(&first, 50, 5);
    assert_eq!(counted(&first), 55);
    assert_eq!(counted(&second), 55);
    // Both nodes say so: the nodes, who holds the projection, and the database.
    let runner = second.api().get("/cluster").expect(200)["node"]["node"].clone();
    let deadline = std::time::Instant::now() + SETTLE;
    let cluster = loop {
        let cluster = first.api().get("/cluster").expect(200);
        if cluster["nodes"].as_array().unwrap().len() == 2 {
            break cluster;
        }
        assert!(std::time::Instant::now() < deadline, "{cluster}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let lease = cluster["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["lease"]
                .as_str()
                .unwrap()
                .starts_with("projection/counting-projection/")
        })
        .expect("the projection's lease")
        .clone();
    assert_eq!(lease["holder"]["node"], runner, "{cluster}");
    assert_eq!(cluster["database"]["engine"], "postgresql");
    assert_eq!(cluster["database"]["role"], "primary");
    let printed = crate::harness::run_evhost(&["cluster", "--url", first.url()]);
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains("(this node)") && printed.contains("postgresql primary"),
        "{printed}"
    );
    // A read waiting for a position past events the projection does not subscribe to is
    // answered on the node standing by too.
    first
        .api()
        .append_ok("other-1", json!([event("Unrelated", json!({}))]));
    assert_eq!(counted(&first), 55);
}

#[test]
fn a_node_that_hung_past_its_lease_cannot_commit_when_it_wakes() {
    let (first, second) = two_nodes_counting();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &first.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("STOP");
    append_counted(&second, 20, 30);
    assert_eq!(counted(&second), 50);
    signal("CONT");
    // Woken, the first node's runner finds its lease gone: its commits are refused, and it
    // stands by; the count stays exact whichever node is asked.
    append_counted(&second, 50, 10);
    assert_eq!(counted(&second), 60);
    assert_eq!(counted(&first), 60);
}

#[test]
fn a_policy_whose_node_dies_after_its_outbox_write_delivers_once_from_another_node() {
    let schema = fresh_schema();
    let [one, two] = nodes_preferring_the_first("policy/hostile-policy");
    let mut first = Launch::default()
        .on_postgres(&schema)
        .env("EVHOST_CRASH_AT", "policy-after-outbox")
        .start_in(one);
    let second = Launch::default().on_postgres(&schema).start_in(two);
    for server in [&first, &second] {
        server.api().deploy_guest("fixture-counter");
        server.api().deploy_guest("fixture-hostile-policy");
    }
    wait_for_holder(&second, "policy/hostile-policy", &first);
    // The first node runs the policy (it claimed it first) and dies once the command is in
    // the outbox, before delivering it.
    second
        .api()
        .append_ok("hostile-a", json!([event("Ping", json!({}))]));
    assert!(first.wait_for_crash(SETTLE), "the crash point aborts");
    // The second node takes the policy over and delivers the command: once.
    let events = second.api().wait_for_events("counter-a", 1, SETTLE);
    assert_eq!(events[0]["type"], "Incremented");
    second.wait_for_log_line("this node runs policy/hostile-policy", SETTLE);
    first.set_env("EVHOST_CRASH_AT", None);
    first.restart();
    second
        .api()
        .append_ok("hostile-b", json!([event("Ping", json!({}))]));
    second.api().wait_for_events("counter-b", 1, SETTLE);
    assert_eq!(second.api().stream_events("counter-a").len(), 1);
    assert_eq!(first.api().stream_events("counter-b").len(), 1);
}

/// The active version of plugin `name` as `server` lists it, once it says so.
fn wait_for_active(server: &Server, name: &str, version: &str) {
    server
        .api()
        .wait_for_plugin(name, SETTLE, |plugin| plugin["active_version"] == version);
}

#[test]
fn a_deploy_promotion_or_rollback_on_one_node_takes_effect_on_every_node() {
    let schema = fresh_schema();
    let first = Launch::default().on_postgres(&schema).start();
    let second = Launch::default().on_postgres(&schema).start();
    let v1 = first.api().deploy_guest("fixture-counter");
    // The second node loads what the first deployed, and serves its commands.
    let listed = |server: &Server, name: &str| {
        let deadline = std::time::Instant::now() + SETTLE;
        while server.api().get(&format!("/plugins/{name}")).status != 200 {
            assert!(std::time::Instant::now() < deadline, "{name} never listed");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    listed(&second, "counter");
    wait_for_active(&second, "counter", &v1);
    let increment = |server: &Server, id: &str| {
        server
            .api()
            .command(
                "counter",
                &json!({"id": id, "stream": "counter-x", "type": "Increment", "data": {"by": 1}}),
            )
            .expect(200)
    };
    increment(&second, "x-1");
    let v2 = second.api().deploy_guest("fixture-counter-v2");
    wait_for_active(&first, "counter", &v2);
    increment(&first, "x-2");
    second
        .api()
        .post("/plugins/counter/rollback", &json!({}))
        .expect(200);
    wait_for_active(&first, "counter", &v1);
    let log = first.api().stream_events("counter-x");
    assert_eq!(log.len(), 2, "{log:?}");
    // And a projection deployed on one node runs on one of them, readable on both.
    second.api().deploy_guest("fixture-counting-projection");
    listed(&first, "counting-projection");
    increment(&first, "x-3");
    assert_eq!(counted(&first), 3);
    assert_eq!(counted(&second), 3);
}

#[test]
fn a_pause_or_resume_on_a_node_that_stands_by_reaches_the_node_that_runs_it() {
    let (first, second) = two_nodes_counting();
    // The first node runs the projection; the second pauses it.
    second
        .api()
        .post("/plugins/counting-projection/pause", &json!({}))
        .expect(200);
    first
        .api()
        .wait_for_plugin("counting-projection", SETTLE, |p| p["status"] == "paused");
    append_counted(&first, 20, 5);
    let head = first.api().head();
    let early = first.api().get(&format!(
        "/projections/counting-projection/query/events?min_position={head}&timeout_ms=200"
    ));
    assert_ne!(
        early.status, 200,
        "a paused projection applied: {}",
        early.body
    );
    second
        .api()
        .post("/plugins/counting-projection/resume", &json!({}))
        .expect(200);
    assert_eq!(counted(&first), 25);
    assert_eq!(counted(&second), 25);
}

#[test]
fn a_single_host_shows_itself_as_its_cluster() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counting-projection");
    let cluster = api.get("/cluster").expect(200);
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{cluster}");
    assert_eq!(nodes[0]["node"], cluster["node"]["node"]);
    let leases = cluster["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 1, "{cluster}");
    assert_eq!(leases[0]["holder"]["node"], cluster["node"]["node"]);
    assert!(cluster["database"]["engine"].is_string(), "{cluster}");
}

#[test]
fn the_work_spreads_over_the_nodes_and_moves_when_one_leaves() {
    let schema = fresh_schema();
    let runners = [
        ("fixture-counting-projection", "counting-projection"),
        ("visits", "visits"),
        ("stays", "stays"),
    ];
    let leases: Vec<String> = runners
        .iter()
        .map(|(package, name)| projection_lease(package, name))
        .collect();
    // Names under which the three runners do not all prefer one node.
    let names = (0..)
        .map(|n| [format!("node-a{n}"), format!("node-b{n}")])
        .find(|[a, b]| {
            let chosen: Vec<&str> = leases.iter().map(|l| preferred(l, &[a, b])).collect();
            chosen.contains(&a.as_str()) && chosen.contains(&b.as_str())
        })
        .expect("names that split the work");
    let [one, two] = names.map(named_node);
    let first = Launch::default().on_postgres(&schema).start_in(one);
    for (package, _) in runners {
        first.api().deploy_guest(package);
    }
    let mut second = Launch::default().on_postgres(&schema).start_in(two);
    let holders = |server: &Server| -> Vec<String> {
        let cluster = server.api().get("/cluster").expect(200);
        cluster["leases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["holder"]["node"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let name = |server: &Server| {
        server.api().get("/cluster").expect(200)["node"]["node"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (one, two) = (name(&first), name(&second));
    // Both nodes end up running some of the three runners, with each held by one of them.
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let held = holders(&first);
        if held.len() == 3 && held.contains(&one) && held.contains(&two) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never spread: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    append_counted(&first, 0, 10);
    assert_eq!(counted(&second), 10);
    // The second leaves: everything comes back to the first.
    second.terminate();
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let held = holders(&first);
        if held.iter().all(|h| *h == one) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never came back: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    append_counted(&first, 10, 5);
    assert_eq!(counted(&first), 15);
}

/// Appends from `writers` threads through `servers` in turn until `stop`, each event with an id
/// of its own; answers the ids of the appends that were acknowledged (201).
fn appending(
    servers: &[&Server],
    writers: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acknowledged: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..writers)
        .map(|writer| {
            let api = servers[writer % servers.len()].api();
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("w{writer}-{n}");
                    let body = json!({"events": [
                        event_with_id(&id, "Incremented", json!({"by": 1})),
                    ]});
                    if let Ok(reply) = api.try_append(&format!("counter-{}", n % 7), &body) {
                        if reply.status == 201 {
                            acknowledged.lock().unwrap().push(id);
                        }
                        if reply.status == 201 || reply.status == 200 {
                            n += 1;
                        }
                    }
                }
            })
        })
        .collect()
}

/// Two nodes on a fresh schema of the database at `url`, the counting projection deployed and
/// run by the first.
fn two_nodes_counting_on(url: &str) -> (Server, Server) {
    let schema = fresh_schema();
    let lease = projection_lease("fixture-counting-projection", "counting-projection");
    let [one, two] = nodes_preferring_the_first(&lease);
    let launch = |dir| {
        Launch::default()
            .arg("--store")
            .arg(url)
            .arg("--store-schema")
            .arg(&schema)
            .start_in(dir)
    };
    let (first, second) = (launch(one), launch(two));
    first.api().deploy_guest("fixture-counting-projection");
    wait_for_holder(&second, &lease, &first);
    (first, second)
}

/// A follower of the whole log on each node.
fn following(first: &Server, second: &Server) -> [Follower; 2] {
    [
        Follower::open(first, "", None),
        Follower::open(second, "", None),
    ]
}

/// Appends from 4 writers through both nodes; once 100 appends are acknowledged, injects
/// `fault`, and stops once 100 more are. Checks that the log is gapless, holds every
/// acknowledged append and each event once; answers the log.
fn through_a_fault(first: &Server, second: &Server, fault: impl FnOnce()) -> Vec<Value> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers = appending(&[first, second], 4, stop.clone(), acknowledged.clone());
    let acked = || acknowledged.lock().unwrap().len();
    let wait_for_acks = |count: usize| {
        let deadline = std::time::Instant::now() + SETTLE;
        while acked() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} appends acknowledged",
                acked()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for_acks(100);
    fault();
    // Appends go on once the database is back.
    wait_for_acks(acked() + 100);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let log = second.api().all_events();
    let positions: Vec<u64> = log
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        positions,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "gapless"
    );
    let stored: std::collections::BTreeSet<&str> =
        log.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let lost: Vec<String> = acknowledged
        .lock()
        .unwrap()
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .cloned()
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    assert_eq!(stored.len(), log.len(), "an event stored twice");
    log
}

#[test]
fn killing_the_postgresql_primary_loses_no_acknowledged_append() {
    use evhost_postgres::test_server::TestServer;
    let primary = TestServer::start().expect("a primary");
    let standby = primary
        .start_synchronous_standby("standby1")
        .expect("a synchronous standby");
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write&connect_timeout=2",
        primary.port, standby.port
    );
    let (first, second) = two_nodes_counting_on(&url);
    let mut followers = following(&first, &second);

    let log = through_a_fault(&first, &second, || {
        primary.kill_9();
        standby.promote().expect("the standby takes over");
    });
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()").unwrap(), "f");
    // The projection counted every event once, on the new primary.
    assert_eq!(counted(&first), log.len() as u64);
    assert_eq!(counted(&second), log.len() as u64);
    for follower in &mut followers {
        assert_followed(&follower.take(log.len()), &log);
    }
}

#[test]
fn restarting_postgresql_with_every_node_connected_loses_nothing_and_work_goes_on() {
    use evhost_postgres::test_server::TestServer;
    let mut database = TestServer::start().expect("a server");
    let (first, second) = two_nodes_counting_on(&database.url("postgres"));
    let mut followers = following(&first, &second);

    // Every connection of both nodes is cut; the nodes reconnect to the same server.
    let log = through_a_fault(&first, &second, || {
        database.restart().expect("PostgreSQL starts again");
    });
    assert_eq!(counted(&first), log.len() as u64);
    assert_eq!(counted(&second), log.len() as u64);
    // Each node's follower saw every event once, in order, across the restart.
    for follower in &mut followers {
        assert_followed(&follower.take(log.len()), &log);
    }
}

/// A deploy whose node dies just before or just after it is saved is all there or not there:
/// the other node serves it (or not) whole, and the dead node, back, agrees.
#[test]
fn a_node_killed_during_a_deploy_leaves_the_deploy_whole() {
    for (point, saved) in [("deploy-before-save", false), ("deploy-after-save", true)] {
        let schema = fresh_schema();
        let mut first = Launch::default()
            .on_postgres(&schema)
            .env("EVHOST_CRASH_AT", point)
            .start();
        let second = Launch::default().on_postgres(&schema).start();
        let wasm = guest_wasm("fixture-counting-projection");
        let upload = first.api().try_send(
            "POST",
            "/plugins",
            &[("content-type", "application/wasm")],
            Some(wasm),
        );
        assert!(
            upload.as_ref().is_err(),
            "{point}: the deploy was answered: {upload:?}"
        );
        assert!(
            first.wait_for_crash(SETTLE),
            "{point}: the node did not crash"
        );
        if saved {
            wait_for_plugin_listed(&second, "counting-projection");
        } else {
            second.api().get("/plugins/counting-projection").expect(404);
            second.api().deploy_guest("fixture-counting-projection");
        }
        append_counted(&second, 0, 10);
        assert_eq!(counted(&second), 10, "{point}");
        first.set_env("EVHOST_CRASH_AT", None);
        first.restart();
        assert_eq!(counted(&first), 10, "{point}");
    }
}

/// A promotion whose node dies just before or just after it is saved switches every node or
/// none.
#[test]
fn a_node_killed_during_a_promotion_switches_every_node_or_none() {
    for (point, saved) in [("promote-before-save", false), ("promote-after-save", true)] {
        let schema = fresh_schema();
        let second = Launch::default().on_postgres(&schema).start();
        let v1 = second.api().deploy_guest("fixture-counter");
        let v2 = second
            .api()
            .deploy(&guest_wasm("fixture-counter-v2"), "promote=manual")
            .expect(201)["version"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut first = Launch::default()
            .on_postgres(&schema)
            .env("EVHOST_CRASH_AT", point)
            .start();
        wait_for_plugin_listed(&first, "counter");
        let promoted = first.api().try_send(
            "POST",
            "/plugins/counter/promote",
            &[],
            Some(b"{}".to_vec()),
        );
        assert!(
            promoted.as_ref().is_err(),
            "{point}: the promotion was answered: {promoted:?}"
        );
        assert!(
            first.wait_for_crash(SETTLE),
            "{point}: the node did not crash"
        );
        let (expected, build) = if saved { (&v2, "v2") } else { (&v1, "v1") };
        wait_for_active(&second, "counter", expected);
        let reply = second
            .api()
            .command(
                "counter",
                &json!({"stream": "counter-p", "type": "Increment", "data": {"by": 1}}),
            )
            .expect(200);
        assert_eq!(
            reply["events"][0]["data"]["build"], build,
            "{point}: {reply}"
        );
        first.set_env("EVHOST_CRASH_AT", None);
        first.restart();
        wait_for_active(&first, "counter", expected);
    }
}

fn wait_for_plugin_listed(server: &Server, name: &str) {
    let deadline = std::time::Instant::now() + SETTLE;
    while server.api().get(&format!("/plugins/{name}")).status != 200 {
        assert!(std::time::Instant::now() < deadline, "{name} never listed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

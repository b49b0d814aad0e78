//! Commands through deployed handlers: events appended atomically with the command's record,
//! rejections as outcomes, repeated ids answered from the record, no lost update when many
//! clients command one stream, hot swap under load without a failed request, and acknowledged
//! commands surviving `kill -9`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Api, Server, assert_error, check_store, guest_wasm};

fn increment(stream: &str, by: u64) -> Value {
    json!({"stream": stream, "type": "Increment", "data": {"by": by}})
}

/// The totals recorded in a counter stream's events, in order.
fn totals(api: &Api, stream: &str) -> Vec<u64> {
    api.stream_events(stream)
        .iter()
        .map(|e| e["data"]["total"].as_u64().expect("a total"))
        .collect()
}

#[test]
fn a_command_becomes_events_with_its_record() {
    let server = Server::start();
    let api = server.api();
    let version = api.deploy_guest("fixture-counter");

    let first = api
        .command(
            "counter",
            &json!({"id": "cmd-1", "stream": "counter-a", "type": "Increment", "data": {"by": 5},
                    "metadata": {"correlation_id": "journey-7", "user": "ana"}}),
        )
        .expect(200);
    assert_eq!(first["command_id"], "cmd-1");
    let events = first["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event["stream"], "counter-a");
    assert_eq!(event["version"], 1);
    assert_eq!(event["type"], "Incremented");
    assert_eq!(event["data"], json!({"by": 5, "total": 5, "build": "v1"}));
    assert_eq!(event["metadata"]["causation_id"], "cmd-1");
    assert_eq!(event["metadata"]["correlation_id"], "journey-7");
    assert_eq!(first["position"], event["position"]);

    // Without a correlation id, the command's own id starts the chain; a generated id is
    // returned.
    let second = api
        .command("counter", &increment("counter-a", 2))
        .expect(200);
    let generated = second["command_id"].as_str().expect("a generated id");
    assert!(!generated.is_empty());
    assert_eq!(second["events"][0]["metadata"]["correlation_id"], generated);
    assert_eq!(second["events"][0]["data"]["total"], 7);

    let record = api.get("/commands/cmd-1").expect(200);
    assert_eq!(record["command_id"], "cmd-1");
    assert_eq!(record["handler"], "counter");
    assert_eq!(record["handler_version"], version.as_str());
    assert_eq!(record["outcome"], "applied");
    assert_eq!(record["stream"], "counter-a");
    assert_eq!(record["type"], "Increment");
    assert_eq!(record["data"], json!({"by": 5}));
    assert_eq!(record["metadata"]["user"], "ana");
    assert_eq!(record["stream_version"], 0);
    assert_eq!(record["events"], first["events"]);
    assert_eq!(record["position"], first["position"]);

    // A command the handler accepts with no event appends nothing and answers the head.
    let head = api.head();
    let noop = api
        .command(
            "counter",
            &json!({"stream": "counter-a", "type": "Noop", "data": null}),
        )
        .expect(200);
    assert_eq!(noop["events"], json!([]));
    assert_eq!(noop["position"], head);
    assert_eq!(api.head(), head);
    check_store(&api);
}

#[test]
fn rejections_are_outcomes_and_repeated_ids_get_them_again() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    let limited = |id: &str, by: u64| json!({"id": id, "stream": "counter-r", "type": "Increment", "data": {"by": by, "limit": 10}});
    api.command("counter", &limited("r-1", 8)).expect(200);
    let rejected = api.command("counter", &limited("r-2", 5));
    assert_error(&rejected, 422, "command_rejected");
    let reason = rejected.json()["error"]["reason"].clone();
    assert!(
        reason.as_str().is_some_and(|r| r.contains("limit")),
        "the plugin's reason is passed on: {}",
        rejected.body
    );
    assert_eq!(rejected.json()["error"]["command_id"], "r-2");

    // The same ids again: the same answers, from the records; nothing is decided or appended.
    let head = api.head();
    let replayed = api.command("counter", &limited("r-1", 8)).expect(200);
    assert_eq!(replayed["events"][0]["data"]["total"], 8);
    let again = api.command("counter", &limited("r-2", 5));
    assert_error(&again, 422, "command_rejected");
    assert_eq!(again.json()["error"]["reason"], reason);
    assert_eq!(api.head(), head, "a repeated id appends nothing");
    assert_eq!(totals(&api, "counter-r"), [8]);

    let record = api.get("/commands/r-2").expect(200);
    assert_eq!(record["outcome"], "rejected");
    assert_eq!(record["reason"], reason);
    assert_eq!(record["events"], json!([]));

    // An id is one command: reusing it for another one is refused.
    let reused = api.command("counter", &limited("r-1", 1));
    assert_error(&reused, 409, "command_id_reused");
    let elsewhere = api.command(
        "counter",
        &json!({"id": "r-1", "stream": "counter-other", "type": "Increment", "data": {"by": 8, "limit": 10}}),
    );
    assert_error(&elsewhere, 409, "command_id_reused");
    assert_eq!(api.head(), head);
}

#[test]
fn commands_that_cannot_be_run_are_refused_before_anything_is_decided() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("nobody", increment("counter-1", 1), 404, "plugin_not_found"),
        ("counter", increment("visit-1", 1), 400, "invalid_request"),
        (
            "counter",
            json!({"stream": "counter-1", "type": "Increment"}),
            400,
            "invalid_request",
        ),
        (
            "counter",
            json!({"stream": "counter-1", "type": "In crement", "data": {}}),
            400,
            "invalid_request",
        ),
        (
            "counter",
            json!({"stream": "", "type": "Increment", "data": {}}),
            400,
            "invalid_request",
        ),
        (
            "counter",
            json!({"stream": "counter-1", "type": "Increment", "data": {}, "id": ""}),
            400,
            "invalid_request",
        ),
        (
            "counter",
            json!({"stream": "counter-1", "type": "Increment", "data": {}, "metadata": [1]}),
            400,
            "invalid_request",
        ),
        (
            "counter",
            json!({"stream": "counter-1", "type": "Increment", "data": {}, "extra": 1}),
            400,
            "invalid_request",
        ),
        (
            "counter",
            json!({"stream": 7, "type": "Increment", "data": {}}),
            400,
            "invalid_request",
        ),
    ];
    for (handler, body, status, code) in cases {
        let reply = api.command(handler, &body);
        assert_error(&reply, status, code);
    }
    let malformed = api.send(
        "POST",
        "/handlers/counter/commands",
        &[],
        Some(b"{\"stream\": \"counter-1\", ".to_vec()),
    );
    assert_error(&malformed, 400, "invalid_request");
    let oversized =
        json!({"stream": "counter-1", "type": "Increment", "data": "x".repeat(2 << 20)});
    assert_error(
        &api.command("counter", &oversized),
        413,
        "payload_too_large",
    );
    assert_error(&api.get("/commands/never-sent"), 404, "command_not_found");
    assert_eq!(api.head(), 0, "nothing was appended");
}

/// Sixteen clients command one stream at once. The counter rejects increments past its limit,
/// so exactly `LIMIT` commands are applied, each on the total the one before left: a lost update
/// would show as a repeated or skipped total.
#[test]
fn sixteen_clients_on_one_stream_lose_no_update() {
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 20;
    const LIMIT: u64 = 250;
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    let outcomes: Vec<Vec<(String, u16)>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let api = api.clone();
                scope.spawn(move || {
                    (0..PER_CLIENT)
                        .map(|n| {
                            let id = format!("c{client}-n{n}");
                            let body = json!({"id": id, "stream": "counter-hot", "type": "Increment",
                                              "data": {"by": 1, "limit": LIMIT}});
                            let reply = api.command("counter", &body);
                            assert!(
                                reply.status == 200 || reply.status == 422,
                                "command {id}: {} {}",
                                reply.status,
                                reply.body
                            );
                            (id, reply.status)
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let applied: Vec<&String> = outcomes
        .iter()
        .flatten()
        .filter(|(_, status)| *status == 200)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        applied.len() as u64,
        LIMIT,
        "every increment up to the limit applies"
    );
    assert_eq!(
        totals(&api, "counter-hot"),
        (1..=LIMIT).collect::<Vec<_>>(),
        "each command decided on the state the previous one left"
    );
    // Every command is recorded with the outcome its client saw.
    for (id, status) in outcomes.iter().flatten() {
        let record = api.get(&format!("/commands/{id}")).expect(200);
        let expected = if *status == 200 {
            "applied"
        } else {
            "rejected"
        };
        assert_eq!(record["outcome"], expected, "command {id}");
    }
    let causes: BTreeSet<String> = api
        .stream_events("counter-hot")
        .iter()
        .map(|e| e["metadata"]["causation_id"].as_str().unwrap().to_string())
        .collect();
    let applied: BTreeSet<String> = applied.into_iter().cloned().collect();
    assert_eq!(
        causes, applied,
        "each applied command produced exactly its event"
    );
    check_store(&api);
}

/// Direct appends race with commands on one stream: a command whose stream moved between its load
/// and its append is decided again on the new state, so every command's event continues from the
/// event before it.
#[test]
fn commands_decide_again_when_a_direct_append_gets_in_first() {
    const COMMANDERS: usize = 4;
    const PER_COMMANDER: usize = 40;
    const DIRECT: u64 = 80;
    const COMMANDS: usize = COMMANDERS * PER_COMMANDER;
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    let answered = Arc::new(AtomicUsize::new(0));
    thread::scope(|scope| {
        let appender = {
            let (api, answered) = (api.clone(), answered.clone());
            scope.spawn(move || {
                for k in 1..=DIRECT {
                    // A writer that appends back to back, never reading, would win every race
                    // against a command (which reads and decides first); that is what the
                    // bounded retries and their 409 are for. This writer waits, after each
                    // append, until another command has been answered: commands on one stream
                    // take turns, so no command can lose more than two races in a row, however
                    // slow the machine, and the next append lands while the next command is
                    // being decided.
                    let seen = answered.load(Ordering::SeqCst);
                    api.append_past_handler(
                        "counter-mixed",
                        json!([{"type": "Incremented",
                                "data": {"by": 0, "total": k * 1_000_000, "build": "direct"}}]),
                    );
                    loop {
                        let now = answered.load(Ordering::SeqCst);
                        if now != seen || now == COMMANDS {
                            break;
                        }
                        thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        };
        for client in 0..COMMANDERS {
            let (api, answered) = (api.clone(), answered.clone());
            scope.spawn(move || {
                for n in 0..PER_COMMANDER {
                    let body = json!({"id": format!("m{client}-{n}"), "stream": "counter-mixed",
                                      "type": "Increment", "data": {"by": 1}});
                    api.command("counter", &body).expect(200);
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        appender.join().unwrap();
    });
    let events = api.stream_events("counter-mixed");
    assert_eq!(events.len() as u64, DIRECT + COMMANDS as u64);
    let mut previous = 0;
    for event in &events {
        let total = event["data"]["total"].as_u64().unwrap();
        if event["data"]["build"] == "v1" {
            assert_eq!(
                total,
                previous + 1,
                "a command decided on a stale state: {event}"
            );
        }
        previous = total;
    }
    assert!(
        api.metric("evhost_command_conflicts_total ") > 0.0,
        "the appends never got in between a command's load and its append"
    );
    check_store(&api);
}

/// Deploying v2 while clients send commands fails no request; once the deploy is answered,
/// every new command is decided by v2.
#[test]
fn hot_swap_under_load_fails_no_request() {
    const CLIENTS: usize = 6;
    let server = Server::start();
    let api = server.api();
    let v1 = api.deploy_guest("fixture-counter");
    let v2_wasm = guest_wasm("fixture-counter-v2");
    let stop = Arc::new(AtomicBool::new(false));
    let deployed = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let records: Vec<Vec<(String, bool)>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (api, stop, deployed, sent) =
                    (api.clone(), stop.clone(), deployed.clone(), sent.clone());
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let id = format!("swap-c{client}-n{n}");
                        // Whether the deploy had been answered before this command was sent.
                        let after_deploy = deployed.load(Ordering::SeqCst);
                        let body = json!({"id": id, "stream": format!("counter-swap{}", client % 3),
                                          "type": "Increment", "data": {"by": 1}});
                        api.command("counter", &body).expect(200);
                        sent.fetch_add(1, Ordering::SeqCst);
                        mine.push((id, after_deploy));
                        n += 1;
                    }
                    mine
                })
            })
            .collect();
        while sent.load(Ordering::SeqCst) < 60 {
            thread::sleep(Duration::from_millis(5));
        }
        let reply = api.deploy(&v2_wasm, "");
        assert_eq!(reply.status, 201, "{}", reply.body);
        deployed.store(true, Ordering::SeqCst);
        let at_deploy = sent.load(Ordering::SeqCst);
        while sent.load(Ordering::SeqCst) < at_deploy + 60 {
            thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::SeqCst);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let v2 = api.get("/plugins/counter").expect(200)["active_version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v1, v2);
    let mut decided_by: BTreeMap<String, usize> = BTreeMap::new();
    for (id, after_deploy) in records.iter().flatten() {
        let record = api.get(&format!("/commands/{id}")).expect(200);
        let version = record["handler_version"].as_str().unwrap().to_string();
        let build = &record["events"][0]["data"]["build"];
        if *after_deploy {
            assert_eq!(
                version, v2,
                "command {id}, sent after the deploy, was decided by v1"
            );
            assert_eq!(build, "v2");
        } else {
            assert!(version == v1 || version == v2);
            assert_eq!(build, if version == v1 { "v1" } else { "v2" });
        }
        *decided_by.entry(version).or_default() += 1;
    }
    assert!(decided_by[&v1] > 0 && decided_by[&v2] > 0, "{decided_by:?}");
    // Each stream's totals still count up by one: v1 and v2 share the state's meaning.
    for stream in 0..3 {
        let totals = totals(&api, &format!("counter-swap{stream}"));
        assert_eq!(totals, (1..=totals.len() as u64).collect::<Vec<_>>());
    }
    let details = api.get("/plugins/counter").expect(200);
    let states: Vec<&str> = details["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["previous", "active"]);
}

/// Commands are acknowledged only once durable: after `kill -9` every acknowledged command is
/// recorded with its events, and sending any command id again (acknowledged or not) never
/// decides it twice.
#[test]
fn acknowledged_commands_survive_kill_9() {
    const CLIENTS: usize = 4;
    let mut server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let sent: Vec<Vec<(String, Option<Value>)>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (api, stop, acks) = (server.api(), stop.clone(), acks.clone());
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for n in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let id = format!("crash-c{client}-n{n}");
                        let body = json!({"id": id, "stream": format!("counter-crash{}", client % 2),
                                          "type": "Increment", "data": {"by": 1}});
                        match api.try_send("POST", "/handlers/counter/commands", &[], Some(body.to_string().into_bytes())) {
                            Ok(reply) if reply.status == 200 => {
                                mine.push((id, Some(reply.json())));
                                acks.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {
                                mine.push((id, None));
                                break;
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        // The kill comes once some commands are acknowledged, however long they take to be.
        while acks.load(Ordering::SeqCst) < 40 && !workers.iter().all(|w| w.is_finished()) {
            thread::sleep(Duration::from_millis(5));
        }
        server.kill_9();
        stop.store(true, Ordering::SeqCst);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    server.restart();
    let api = server.api();
    let mut acknowledged = 0;
    for (id, answer) in sent.iter().flatten() {
        let Some(answer) = answer else { continue };
        acknowledged += 1;
        let record = api.get(&format!("/commands/{id}")).expect(200);
        assert_eq!(record["events"], answer["events"], "command {id}");
    }
    assert!(
        acknowledged > 0,
        "no command was acknowledged before the kill"
    );
    // Sending everything again decides only what was never recorded.
    for (id, answer) in sent.iter().flatten() {
        let client: usize = id[7..].split('-').next().unwrap().parse().unwrap();
        let body = json!({"id": id, "stream": format!("counter-crash{}", client % 2),
                          "type": "Increment", "data": {"by": 1}});
        let again = api.command("counter", &body).expect(200);
        if let Some(answer) = answer {
            assert_eq!(
                &again["events"], &answer["events"],
                "command {id} was decided twice"
            );
        }
    }
    for stream in ["counter-crash0", "counter-crash1"] {
        let totals = totals(&api, stream);
        assert_eq!(totals, (1..=totals.len() as u64).collect::<Vec<_>>());
        let causes: BTreeSet<String> = api
            .stream_events(stream)
            .iter()
            .map(|e| e["metadata"]["causation_id"].to_string())
            .collect();
        assert_eq!(causes.len(), totals.len(), "a command produced two events");
    }
    check_store(&api);
}

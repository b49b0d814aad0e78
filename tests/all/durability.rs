//! Crash safety: clients append continuously while the server is killed with SIGKILL; after a
//! restart on the same data every acknowledged append is there, at the position and version it was
//! acknowledged with, the log is gapless and every stream contiguous. An append that was in flight
//! when the server died is either entirely there or not at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Api, Rng, Server, append_numbers, check_store};

const ROUNDS: usize = 3;
const CLIENTS: usize = 4;
/// How long the clients write before the kill, per round, once a first append is acknowledged;
/// varied so the kill lands at different moments of the server's work.
const KILL_AFTER_MS: [u64; ROUNDS] = [900, 1400, 650];
const TYPES: [&str; 3] = ["Deposited", "Withdrawn", "Noted"];

/// One append a client sent, and its acknowledgement if one arrived.
struct Sent {
    stream: String,
    /// (id, type, data) of each event, in request order.
    events: Vec<(String, String, Value)>,
    /// (first_version, last_version, first_position, last_position) of a 201.
    acknowledged: Option<(u64, u64, u64, u64)>,
}

/// Appends until the server goes away: single events and small batches to shared streams with
/// any version, and batches with exact expected versions to a stream only this client writes.
/// Counts the appends acknowledged in `acks`.
fn append_until_killed(
    api: &Api,
    round: usize,
    client: usize,
    stop: &AtomicBool,
    acks: &AtomicUsize,
) -> Vec<Sent> {
    let mut rng = Rng::new((round * 100 + client) as u64);
    let own_stream = format!("own-{client}");
    // The previous round may have died with an append to the own stream in flight: ask.
    let Ok(mut own_version) = api.try_stream_version(&own_stream) else {
        return Vec::new();
    };
    let mut sent = Vec::new();
    for request in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (stream, count, expected) = match rng.below(10) {
            0..=3 => (format!("shared-{}", rng.below(3)), 1, None),
            4..=6 => (format!("shared-{}", rng.below(3)), rng.between(2, 5), None),
            _ => (own_stream.clone(), rng.between(1, 3), Some(own_version)),
        };
        let events: Vec<(String, String, Value)> = (0..count)
            .map(|k| {
                let id = format!("r{round}-c{client}-n{request}-k{k}");
                let event_type = rng.pick(&TYPES).to_string();
                let pad = "x".repeat(rng.below(300) as usize);
                let data =
                    json!({"round": round, "client": client, "n": request, "k": k, "pad": pad});
                (id, event_type, data)
            })
            .collect();
        let mut body = json!({
            "events": events
                .iter()
                .map(|(id, event_type, data)| json!({"id": id, "type": event_type, "data": data}))
                .collect::<Vec<_>>(),
        });
        if let Some(version) = expected {
            body["expected_version"] = json!(version);
        }
        let reply = api.try_append(&stream, &body);
        let acknowledged = match &reply {
            Ok(reply) if reply.status == 201 => Some(append_numbers(&reply.json())),
            Ok(reply) => panic!(
                "append to {stream} answered {}: {}",
                reply.status, reply.body
            ),
            Err(_) => None,
        };
        if let Some((_, last_version, _, _)) = acknowledged
            && stream == own_stream
        {
            own_version = last_version;
        }
        if acknowledged.is_some() {
            acks.fetch_add(1, Ordering::SeqCst);
        }
        sent.push(Sent {
            stream,
            events,
            acknowledged,
        });
        if acknowledged.is_none() {
            break;
        }
    }
    sent
}

/// Checks the restarted store against everything the clients sent so far.
fn verify(api: &Api, sent: &[Sent]) {
    let (log, _) = check_store(api);
    let index_of: HashMap<&str, usize> = log
        .iter()
        .enumerate()
        .map(|(index, event)| (event["id"].as_str().unwrap(), index))
        .collect();
    let mut highest_acknowledged = 0;
    for append in sent {
        let found: Vec<Option<usize>> = append
            .events
            .iter()
            .map(|(id, _, _)| index_of.get(id.as_str()).copied())
            .collect();
        let Some(first_index) = found[0] else {
            assert!(
                append.acknowledged.is_none(),
                "acknowledged append lost: {} {:?}",
                append.stream,
                append.events[0].0
            );
            assert!(
                found.iter().all(Option::is_none),
                "half an append is stored: {found:?}"
            );
            continue;
        };
        let first_version = log[first_index]["version"].as_u64().unwrap();
        for (k, (id, event_type, data)) in append.events.iter().enumerate() {
            let index = first_index + k;
            let stored = &log[index];
            assert_eq!(
                found[k],
                Some(index),
                "append not stored contiguously: {id}"
            );
            assert_eq!(
                stored["stream"].as_str(),
                Some(append.stream.as_str()),
                "{stored}"
            );
            assert_eq!(
                stored["version"].as_u64(),
                Some(first_version + k as u64),
                "{stored}"
            );
            assert_eq!(
                stored["type"].as_str(),
                Some(event_type.as_str()),
                "{stored}"
            );
            assert_eq!(&stored["data"], data, "{stored}");
        }
        if let Some((first_v, last_v, first_p, last_p)) = append.acknowledged {
            let count = append.events.len() as u64;
            assert_eq!(
                first_index as u64 + 1,
                first_p,
                "acknowledged at another position"
            );
            assert_eq!(first_version, first_v, "acknowledged at another version");
            assert_eq!((last_v - first_v + 1, last_p - first_p + 1), (count, count));
            highest_acknowledged = highest_acknowledged.max(last_p);
        }
    }
    let sent_ids: usize = sent.iter().map(|a| a.events.len()).sum();
    let known = sent
        .iter()
        .flat_map(|a| &a.events)
        .filter(|(id, _, _)| index_of.contains_key(id.as_str()))
        .count();
    assert_eq!(
        known,
        log.len(),
        "the log holds events nobody sent ({sent_ids} sent)"
    );
    assert!(log.len() as u64 >= highest_acknowledged);
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let mut server = Server::start();
    let mut sent: Vec<Sent> = Vec::new();
    for (round, kill_after) in KILL_AFTER_MS.into_iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let api = server.api();
                let (stop, acks) = (Arc::clone(&stop), Arc::clone(&acks));
                thread::spawn(move || append_until_killed(&api, round, client, &stop, &acks))
            })
            .collect();
        // However slow the machine, the kill comes after an acknowledged append.
        while acks.load(Ordering::SeqCst) == 0 && !clients.iter().all(|c| c.is_finished()) {
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(kill_after));
        server.kill_9();
        stop.store(true, Ordering::SeqCst);
        let mut round_sent: Vec<Sent> = clients
            .into_iter()
            .flat_map(|client| client.join().unwrap())
            .collect();
        let acknowledged = round_sent
            .iter()
            .filter(|a| a.acknowledged.is_some())
            .count();
        assert!(
            acknowledged > 0,
            "round {round}: no append was acknowledged before the kill"
        );
        sent.append(&mut round_sent);

        server.restart();
        verify(&server.api(), &sent);
    }
}

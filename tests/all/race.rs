//! Concurrent writers on one stream: every append carries the version its writer read, so each
//! attempt either lands exactly once at the next version or is refused with
//! `wrong_expected_version`. No edit is lost and none is applied twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;

use serde_json::{Value, json};

use crate::harness::{Api, Server, append_numbers, assert_error, event_with_id};

const WRITERS: usize = 8;
const ATTEMPTS_PER_WRITER: usize = 25;

/// What one writer saw.
#[derive(Default)]
struct Outcome {
    /// (version the append landed at, event id, data) for every 201.
    landed: Vec<(u64, String, Value)>,
    conflicts: usize,
}

fn write_with_expected_versions(
    api: &Api,
    stream: &str,
    writer: usize,
    start: &Barrier,
) -> Outcome {
    let mut outcome = Outcome::default();
    start.wait();
    for attempt in 0..ATTEMPTS_PER_WRITER {
        let version = api.stream_version(stream);
        let id = format!("race-w{writer}-a{attempt}");
        let data = json!({ "writer": writer, "attempt": attempt });
        let body = json!({
            "expected_version": version,
            "events": [event_with_id(&id, "Edited", data.clone())],
        });
        let reply = api.append(stream, &body);
        match reply.status {
            201 => {
                let (first, last, _, _) = append_numbers(&reply.json());
                assert_eq!((first, last), (version + 1, version + 1), "{}", reply.body);
                outcome.landed.push((first, id, data));
            }
            409 => {
                assert_error(&reply, 409, "wrong_expected_version");
                let answer = reply.json();
                let actual = answer["error"]["actual"].as_u64().expect("numeric actual");
                // The stream only grows, so whoever won went past what this writer read.
                assert!(
                    actual > version,
                    "actual {actual} not above expected {version}"
                );
                outcome.conflicts += 1;
            }
            _ => panic!(
                "unexpected answer to an append: {} {}",
                reply.status, reply.body
            ),
        }
    }
    outcome
}

#[test]
fn concurrent_writers_never_lose_an_edit() {
    let server = Server::start();
    let stream = "race-1";
    let start = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let api = server.api();
            let start = Arc::clone(&start);
            thread::spawn(move || write_with_expected_versions(&api, stream, writer, &start))
        })
        .collect();
    let outcomes: Vec<Outcome> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    let successes: usize = outcomes.iter().map(|o| o.landed.len()).sum();
    let conflicts: usize = outcomes.iter().map(|o| o.conflicts).sum();
    assert_eq!(successes + conflicts, WRITERS * ATTEMPTS_PER_WRITER);
    assert!(successes > 0);

    let api = server.api();
    assert_eq!(api.stream_version(stream), successes as u64);
    let stored = api.stream_events(stream);
    assert_eq!(stored.len(), successes);

    // Every acknowledged edit is in the stream once, at the version its answer named.
    let mut by_version: BTreeMap<u64, (String, Value)> = BTreeMap::new();
    for (version, id, data) in outcomes.into_iter().flat_map(|o| o.landed) {
        let earlier = by_version.insert(version, (id, data));
        assert!(
            earlier.is_none(),
            "two appends acknowledged at version {version}"
        );
    }
    for (event, (version, (id, data))) in stored.iter().zip(&by_version) {
        assert_eq!(event["version"].as_u64(), Some(*version), "{event}");
        assert_eq!(event["id"].as_str(), Some(id.as_str()), "{event}");
        assert_eq!(&event["data"], data, "{event}");
    }
}

#[test]
fn only_one_of_many_creators_wins_no_stream() {
    let server = Server::start();
    let stream = "race-create";
    let start = Arc::new(Barrier::new(WRITERS));
    let creators: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let api = server.api();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let id = format!("create-{writer}");
                let body = json!({
                    "expected_version": "no_stream",
                    "events": [event_with_id(&id, "Created", json!(writer))],
                });
                api.append(stream, &body)
            })
        })
        .collect();
    let replies: Vec<_> = creators.into_iter().map(|c| c.join().unwrap()).collect();
    let winners = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(winners, 1, "{replies:?}");
    for loser in replies.iter().filter(|r| r.status != 201) {
        assert_error(loser, 409, "wrong_expected_version");
        assert_eq!(loser.json()["error"]["expected"], json!("no_stream"));
        assert_eq!(loser.json()["error"]["actual"], json!(1));
    }
    assert_eq!(server.api().stream_events(stream).len(), 1);
}

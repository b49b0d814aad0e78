//! Following the log over server-sent events: stored events first, then live ones, in position
//! order; a follower that reconnects with `Last-Event-ID` continues after the last event it saw,
//! with no gap and no duplicate, and that header wins over `from`. Filters apply to the follow.

use std::io::{BufRead, BufReader};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Api, Server, event};

/// How long one read of the event stream may block before the test fails instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One server-sent event.
#[derive(Debug)]
pub(crate) struct Sse {
    pub id: u64,
    pub event: String,
    pub data: Value,
}

/// An open `GET /events` with `Accept: text/event-stream`, read line by line.
pub(crate) struct Follower {
    reader: BufReader<reqwest::blocking::Response>,
}

impl Follower {
    pub fn open(server: &Server, query: &str, last_event_id: Option<u64>) -> Follower {
        let api = Api::with_timeout(server.url(), READ_TIMEOUT);
        let last_event_id = last_event_id.map(|id| id.to_string());
        let mut headers = vec![("accept", "text/event-stream")];
        if let Some(id) = &last_event_id {
            headers.push(("last-event-id", id.as_str()));
        }
        let response = api
            .open("GET", &format!("/events?{query}"), &headers, None)
            .expect("open the event stream");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Follower {
            reader: BufReader::new(response),
        }
    }

    /// The next event, skipping comment lines (keep-alives) and fields the tests do not use.
    pub fn next_event(&mut self) -> Sse {
        let (mut id, mut event, mut data) = (None, None, Vec::new());
        loop {
            let mut line = String::new();
            let read = self
                .reader
                .read_line(&mut line)
                .expect("read the event stream (timed out?)");
            assert!(read > 0, "the event stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                let data: Value = serde_json::from_str(&data.join("\n")).expect("data is JSON");
                return Sse {
                    id: id.expect("an event without id"),
                    event: event.expect("an event without event type"),
                    data,
                };
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "id" => id = Some(value.parse::<u64>().expect("a numeric id")),
                "event" => event = Some(value),
                "data" => data.push(value),
                _ => {}
            }
        }
    }

    pub fn take(&mut self, count: usize) -> Vec<Sse> {
        (0..count).map(|_| self.next_event()).collect()
    }
}

/// Asserts that the followed events are exactly `expected` (events of the global log), in order.
#[track_caller]
pub(crate) fn assert_followed(followed: &[Sse], expected: &[Value]) {
    let positions: Vec<u64> = followed.iter().map(|e| e.id).collect();
    let wanted: Vec<u64> = expected
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, wanted);
    for (got, want) in followed.iter().zip(expected) {
        assert_eq!(&got.data, want);
        assert_eq!(got.event, want["type"].as_str().unwrap());
    }
}

fn append_numbered(api: &Api, stream: &str, event_type: &str, numbers: std::ops::Range<u64>) {
    let events: Vec<Value> = numbers
        .map(|n| event(event_type, json!({"n": n})))
        .collect();
    api.append_ok(stream, Value::Array(events));
}

#[test]
fn follower_sees_stored_then_live_events_in_order() {
    let server = Server::start();
    let api = server.api();
    append_numbered(&api, "acct-1", "Opened", 0..3);
    append_numbered(&api, "order-1", "Placed", 3..5);

    let mut follower = Follower::open(&server, "from=1", None);
    assert_followed(&follower.take(5), &api.all_events());

    // Live: these are appended while the follower is already waiting.
    let writer = thread::spawn({
        let api = api.clone();
        move || {
            for n in 5..9 {
                thread::sleep(Duration::from_millis(50));
                append_numbered(&api, "acct-2", "Renamed", n..n + 1);
            }
            append_numbered(&api, "acct-1", "Closed", 9..12);
        }
    });
    let live = follower.take(7);
    writer.join().unwrap();
    assert_followed(&live, &api.all_events()[5..]);
}

#[test]
fn reconnect_with_last_event_id_has_no_gap_and_no_duplicate() {
    let server = Server::start();
    let api = server.api();
    append_numbered(&api, "acct-1", "Opened", 0..6);
    append_numbered(&api, "order-1", "Placed", 6..10);

    let mut follower = Follower::open(&server, "from=1", None);
    let seen = follower.take(4);
    let last_seen = seen.last().unwrap().id;
    drop(follower);
    append_numbered(&api, "acct-1", "Renamed", 10..13);

    let mut follower = Follower::open(&server, "from=1", Some(last_seen));
    let resumed = follower.take(9);
    append_numbered(&api, "order-1", "Shipped", 13..14);
    let live = follower.next_event();

    let log = api.all_events();
    assert_eq!(log.len(), 14);
    let mut all = seen;
    all.extend(resumed);
    all.push(live);
    assert_followed(&all, &log);
}

#[test]
fn last_event_id_takes_precedence_over_from() {
    let server = Server::start();
    let api = server.api();
    append_numbered(&api, "acct-1", "Opened", 0..10);
    let log = api.all_events();

    let mut behind = Follower::open(&server, "from=2", Some(7));
    assert_followed(&behind.take(3), &log[7..10]);
    let mut ahead = Follower::open(&server, "from=9", Some(3));
    assert_followed(&ahead.take(7), &log[3..10]);
}

#[test]
fn follower_applies_category_and_type_filters() {
    let server = Server::start();
    let api = server.api();
    append_numbered(&api, "acct-1", "Opened", 0..2);
    append_numbered(&api, "order-1", "Opened", 2..4);
    append_numbered(&api, "acct-2", "Closed", 4..6);
    append_numbered(&api, "acct-1", "Renamed", 6..8);

    let mut follower = Follower::open(&server, "from=1&category=acct&type=Opened,Closed", None);
    let matching = |log: &[Value]| -> Vec<Value> {
        log.iter()
            .filter(|e| e["stream"].as_str().unwrap().starts_with("acct-"))
            .filter(|e| ["Opened", "Closed"].contains(&e["type"].as_str().unwrap()))
            .cloned()
            .collect()
    };
    assert_followed(&follower.take(4), &matching(&api.all_events()));

    // Live events that do not match are skipped; the next one that matches arrives.
    append_numbered(&api, "order-2", "Closed", 8..9);
    append_numbered(&api, "acct-3", "Renamed", 9..10);
    append_numbered(&api, "acct-3", "Closed", 10..11);
    let log = api.all_events();
    assert_followed(&[follower.next_event()], &matching(&log)[4..]);
}

#[test]
fn sigterm_ends_open_followers_and_exits() {
    let mut server = Server::start();
    let api = server.api();
    append_numbered(&api, "acct-1", "Opened", 0..2);
    let mut follower = Follower::open(&server, "from=1", None);
    follower.take(2);
    // A follower never finishes by itself; shutting down must not wait for it forever.
    server.terminate();
    server.restart();
    assert_eq!(server.api().head(), 2);
}

/// An idle follower costs nothing: while nothing is appended the server sleeps (it is woken by
/// commits, it does not poll), and an append then reaches the follower at once.
#[test]
fn an_idle_follower_sleeps_until_an_append() {
    let server = Server::start();
    let api = server.api();
    append_numbered(&api, "acct-1", "Opened", 0..1);
    let mut follower = Follower::open(&server, "from=1", None);
    assert_eq!(follower.next_event().id, 1);
    thread::sleep(Duration::from_millis(300));
    let before = server.context_switches();
    thread::sleep(Duration::from_secs(3));
    let woken = server.context_switches() - before;
    assert!(
        woken < 30,
        "an idle server with one follower was switched out {woken} times in 3 s"
    );
    append_numbered(&api, "acct-1", "Renamed", 1..2);
    assert_eq!(follower.next_event().id, 2);
}

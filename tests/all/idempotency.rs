//! Event ids make appends safe to retry: a retry of a stored append answers 200 with the original
//! numbers and writes nothing (even when its expected version no longer holds), while an id that is
//! already used in any other way is refused with `duplicate_event_id`, and a repeated id inside one
//! request is a malformed request. Ids the server generates are unique.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::harness::{Api, Server, assert_error, event, event_with_id};

/// Asserts that `body` answers `status` `code` on `stream` and that the store did not change.
#[track_caller]
fn assert_refused(api: &Api, stream: &str, body: &Value, status: u16, code: &str) {
    let before = api.all_events();
    assert_error(&api.append(stream, body), status, code);
    assert_eq!(
        api.all_events(),
        before,
        "a refused append changed the store"
    );
}

#[test]
fn retry_of_a_stored_append_returns_its_original_numbers() {
    let server = Server::start();
    let api = server.api();
    api.append_ok("other-1", json!([event("Noise", json!(0))]));
    let body = json!({
        "events": [
            event_with_id("idem-a", "Opened", json!({"n": 1})),
            event_with_id("idem-b", "Renamed", json!({"n": 2})),
        ],
    });
    let first = api.append("acct-1", &body).expect(201);
    assert_eq!(first["stream"], "acct-1");
    assert_eq!(first["first_version"], 1);
    assert_eq!(first["last_version"], 2);
    assert_eq!(first["first_position"], 2);
    assert_eq!(first["last_position"], 3);
    // The store moves on before the retry arrives.
    api.append_ok("acct-1", json!([event("Closed", json!({}))]));
    api.append_ok("other-1", json!([event("Noise", json!(1))]));
    let before = api.all_events();

    for _ in 0..2 {
        let retry = api.append("acct-1", &body).expect(200);
        assert_eq!(retry, first, "a retry must answer the original numbers");
    }
    assert_eq!(api.all_events(), before, "a retry wrote something");
    assert_eq!(api.head(), 5);
}

#[test]
fn retry_after_success_ignores_the_expected_version() {
    let server = Server::start();
    let api = server.api();
    for expected in [json!(0), json!("no_stream")] {
        let stream = format!("create-{}", expected.to_string().replace('"', ""));
        let body = json!({
            "expected_version": expected,
            "events": [event_with_id(&format!("{stream}-e1"), "Created", json!({}))],
        });
        let first = api.append(&stream, &body).expect(201);
        let retry = api.append(&stream, &body).expect(200);
        assert_eq!(retry, first);
    }
    // An exact expected version that held for the original append no longer holds for the retry.
    let body = json!({
        "expected_version": 1,
        "events": [event_with_id("create-0-e2", "Renamed", json!({"to": "x"}))],
    });
    let first = api.append("create-0", &body).expect(201);
    assert_eq!(first["first_version"], 2);
    let before = api.all_events();
    assert_eq!(api.append("create-0", &body).expect(200), first);
    assert_eq!(api.all_events(), before);
}

#[test]
fn an_id_stored_in_another_stream_is_a_duplicate() {
    let server = Server::start();
    let api = server.api();
    let body = json!({ "events": [event_with_id("shared-id", "Opened", json!({"n": 1}))] });
    api.append("acct-1", &body).expect(201);
    assert_refused(&api, "acct-2", &body, 409, "duplicate_event_id");
    assert_error(&api.get("/streams/acct-2"), 404, "stream_not_found");
}

#[test]
fn partly_stored_or_changed_events_are_duplicates() {
    let server = Server::start();
    let api = server.api();
    let a = event_with_id("dup-a", "Opened", json!({"n": 1}));
    let b = event_with_id("dup-b", "Renamed", json!({"n": 2}));
    let c = event_with_id("dup-c", "Closed", json!({"n": 3}));
    api.append_ok("acct-1", json!([a, b]));
    api.append_ok("acct-1", json!([c]));

    let refused = [
        // One stored id next to a new one.
        json!([b, event_with_id("dup-new", "Opened", json!({}))]),
        // A new event without an id next to a stored one.
        json!([a, event("Opened", json!({}))]),
        // Only a part of an earlier append.
        json!([a]),
        // Events of two earlier appends together.
        json!([b, c]),
        json!([a, b, c]),
        // The same id with other data, or another type.
        json!([event_with_id("dup-c", "Closed", json!({"n": 4}))]),
        json!([event_with_id("dup-c", "Reopened", json!({"n": 3}))]),
    ];
    for events in refused {
        assert_refused(
            &api,
            "acct-1",
            &json!({ "events": events }),
            409,
            "duplicate_event_id",
        );
    }
}

#[test]
fn the_same_id_twice_in_one_request_is_invalid() {
    let server = Server::start();
    let api = server.api();
    let body = json!({
        "events": [
            event_with_id("twice", "Opened", json!(1)),
            event_with_id("twice", "Opened", json!(1)),
        ],
    });
    assert_refused(&api, "acct-1", &body, 400, "invalid_request");
    assert_error(&api.get("/streams/acct-1"), 404, "stream_not_found");
}

#[test]
fn generated_ids_are_unique_uuids() {
    let server = Server::start();
    let api = server.api();
    let batch: Vec<Value> = (0..50).map(|n| event("Generated", json!(n))).collect();
    api.append_ok("gen-1", Value::Array(batch));
    for n in 0..10 {
        api.append_ok("gen-2", json!([event("Generated", json!(n))]));
    }
    let events = api.all_events();
    assert_eq!(events.len(), 60);
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "generated ids repeat");
    for id in ids {
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "not a UUID: {id}");
        assert!(
            id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "not a UUID: {id}"
        );
    }
}

/// Generated ids carry their event's place instead of an index entry; copied back by a client
/// they behave like any stored id: the whole append again is a retry, anything else a duplicate,
/// and the restart of the server changes none of it.
#[test]
fn generated_ids_read_back_are_stored_ids() {
    let mut server = Server::start();
    let api = server.api();
    api.append_ok(
        "gen-1",
        json!([event("Opened", json!({"n": 1})), event("Noted", json!(2))]),
    );
    server.restart();
    let api = server.api();
    let stored = api.stream_events("gen-1");
    let copy = |e: &Value| {
        event_with_id(
            e["id"].as_str().unwrap(),
            e["type"].as_str().unwrap(),
            e["data"].clone(),
        )
    };
    let whole = json!({"expected_version": 0, "events": [copy(&stored[0]), copy(&stored[1])]});
    let retry = api.append("gen-1", &whole).expect(200);
    assert_eq!(
        (
            retry["first_position"].as_u64(),
            retry["last_position"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let one = json!({"events": [copy(&stored[1])]});
    assert_refused(&api, "gen-1", &one, 409, "duplicate_event_id");
    assert_refused(&api, "gen-2", &whole, 409, "duplicate_event_id");
}

/// An id of the form the store generates, naming an event the store did not write, is refused,
/// so that no later generated id can collide with it.
#[test]
fn ids_of_the_generated_form_that_name_no_event_are_refused() {
    let server = Server::start();
    let api = server.api();
    api.append_ok("gen-1", json!([event("Opened", json!(1))]));
    let generated = api.stream_events("gen-1")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The low bits of a generated id count the events of its append: the same id with a count
    // of 3 names the same position as an append it was not part of.
    assert!(generated.ends_with('1'), "{generated}");
    let other = format!("{}3", &generated[..generated.len() - 1]);
    let body = json!({"events": [event_with_id(&other, "Opened", json!(1))]});
    let before = api.all_events();
    let reply = api.append("gen-9", &body);
    assert_eq!(api.all_events(), before);
    assert!(
        reply.status == 400 && reply.error_code() == "invalid_request",
        "a made-up id of the generated form must be refused, got {} {}",
        reply.status,
        reply.body
    );
}

//! Malformed and refused requests: each case of a table is sent to a server holding a few events
//! and must be answered with its status and error code in the JSON error body; afterwards the log
//! and every stream are exactly as before, because a refused request never changes stored data.

use serde_json::json;

use crate::harness::{Reply, Server, event, event_with_id, send_raw};

const MIB: usize = 1024 * 1024;

/// One request of the table and the error it must be answered with.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
}

fn get(name: &'static str, path: &str, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method: "GET",
        path: path.to_string(),
        headers: Vec::new(),
        body: None,
        status,
        code,
    }
}

fn post(
    name: &'static str,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method: "POST",
        path: path.to_string(),
        headers: Vec::new(),
        body: Some(body.into()),
        status,
        code,
    }
}

/// The stream the pre-populated appends and most cases go to.
const ACCT: &str = "/streams/acct-1";
const INVALID: &str = "invalid_request";
const TOO_LARGE: &str = "payload_too_large";
const WRONG_VERSION: &str = "wrong_expected_version";

/// An append of the events given as JSON text, to `acct-1`.
fn append_events(name: &'static str, events_json: &str, status: u16, code: &'static str) -> Case {
    post(
        name,
        ACCT,
        format!(r#"{{"events":[{events_json}]}}"#),
        status,
        code,
    )
}

/// An append of one malformed event given as JSON text, to `acct-1`.
fn append_one(name: &'static str, event_json: &str) -> Case {
    append_events(name, event_json, 400, INVALID)
}

/// An append to `acct-1` of a valid event with the given `expected_version` JSON text.
fn with_expected(name: &'static str, expected_json: &str, status: u16, code: &'static str) -> Case {
    let event = r#"{"type":"Opened","data":{}}"#;
    let body = format!(r#"{{"expected_version":{expected_json},"events":[{event}]}}"#);
    post(name, ACCT, body, status, code)
}

/// A valid append to a path whose stream name is invalid.
fn bad_stream(name: &'static str, path: &str) -> Case {
    post(
        name,
        path,
        r#"{"events":[{"type":"A","data":1}]}"#,
        400,
        INVALID,
    )
}

fn cases() -> Vec<Case> {
    let big = |bytes: usize| "x".repeat(bytes);
    let twins = json!([
        event_with_id("twin", "A", json!(1)),
        event_with_id("twin", "A", json!(1))
    ]);
    let many_events = vec![r#"{"type":"A","data":0}"#; 10_001].join(",");
    let huge = big(1_000_000);
    // 17 events just under the per-event limit: the request is over 16 MiB.
    let huge_request = vec![format!(r#"{{"type":"A","data":"{huge}"}}"#); 17].join(",");
    let data_and_metadata = format!(
        r#"{{"type":"A","data":"{}","metadata":{{"m":"{}"}}}}"#,
        big(600_000),
        big(600_000)
    );
    vec![
        // The body as a whole.
        post("malformed json", ACCT, "{", 400, INVALID),
        post("not json", ACCT, "events please", 400, INVALID),
        post("empty body", ACCT, "", 400, INVALID),
        Case {
            // Without configured tokens a token is ignored, not a reason to skip validation.
            headers: vec![
                ("authorization", "Bearer whatever"),
                ("content-type", "text/plain"),
            ],
            ..post(
                "malformed json with headers",
                ACCT,
                r#"{"events":"#,
                400,
                INVALID,
            )
        },
        post("array body", ACCT, "[]", 400, INVALID),
        post("null body", ACCT, "null", 400, INVALID),
        post("missing events", ACCT, "{}", 400, INVALID),
        post("events an object", ACCT, r#"{"events":{}}"#, 400, INVALID),
        post("events a string", ACCT, r#"{"events":"x"}"#, 400, INVALID),
        post("events null", ACCT, r#"{"events":null}"#, 400, INVALID),
        post("empty events", ACCT, r#"{"events":[]}"#, 400, INVALID),
        post(
            "invalid utf-8 in body",
            ACCT,
            b"{\"events\":[{\"type\":\"A\",\"data\":\"\xff\xfe\"}]}",
            400,
            INVALID,
        ),
        // One event.
        append_one("event not an object", "1"),
        append_one("missing type", r#"{"data":{}}"#),
        append_one("missing data", r#"{"type":"Opened"}"#),
        append_one("type a number", r#"{"type":5,"data":{}}"#),
        append_one("empty type", r#"{"type":"","data":{}}"#),
        append_one("type with a space", r#"{"type":"has space","data":{}}"#),
        append_one("type not ascii", r#"{"type":"Öffnen","data":{}}"#),
        append_one("type with a slash", r#"{"type":"a/b","data":{}}"#),
        append_one(
            "type too long",
            &format!(r#"{{"type":"{}","data":{{}}}}"#, big(129)),
        ),
        append_one(
            "metadata an array",
            r#"{"type":"A","data":{},"metadata":[]}"#,
        ),
        append_one(
            "metadata a string",
            r#"{"type":"A","data":{},"metadata":"x"}"#,
        ),
        append_one(
            "metadata a number",
            r#"{"type":"A","data":{},"metadata":3}"#,
        ),
        append_one("id a number", r#"{"id":5,"type":"A","data":{}}"#),
        append_one("id empty", r#"{"id":"","type":"A","data":{}}"#),
        append_one("id an object", r#"{"id":{},"type":"A","data":{}}"#),
        post(
            "same id twice",
            ACCT,
            json!({ "events": twins }).to_string(),
            400,
            INVALID,
        ),
        // expected_version.
        with_expected("expected version negative", "-1", 400, INVALID),
        with_expected("expected version a float", "1.5", 400, INVALID),
        with_expected("expected version unknown word", r#""maybe""#, 400, INVALID),
        with_expected("expected version empty word", r#""""#, 400, INVALID),
        with_expected("expected version an object", "{}", 400, INVALID),
        with_expected("expected version an array", "[1]", 400, INVALID),
        with_expected("expected version a bool", "true", 400, INVALID),
        with_expected("wrong expected version", "1", 409, WRONG_VERSION),
        with_expected(
            "no_stream on an existing stream",
            r#""no_stream""#,
            409,
            WRONG_VERSION,
        ),
        post(
            "exists on a missing stream",
            "/streams/acct-9",
            json!({"expected_version": "exists", "events": [event("A", json!(1))]}).to_string(),
            409,
            WRONG_VERSION,
        ),
        post(
            "id stored in another stream",
            "/streams/order-7",
            json!({"events": [event_with_id("seed-1", "Opened", json!({"n": 1}))]}).to_string(),
            409,
            "duplicate_event_id",
        ),
        // Stream names.
        bad_stream("empty stream name", "/streams/"),
        bad_stream("stream name too long", &format!("/streams/{}", big(257))),
        bad_stream("control character in stream", "/streams/acct%01x"),
        bad_stream("newline in stream", "/streams/acct%0Ax"),
        bad_stream("bad percent-encoding", "/streams/acct%ZZ"),
        bad_stream("invalid utf-8 in stream", "/streams/acct%FF%FE"),
        bad_stream("truncated utf-8 in stream", "/streams/acct%E0%A4"),
        // Limits.
        append_events(
            "event data over 1 MiB",
            &format!(r#"{{"type":"A","data":"{}"}}"#, big(MIB + 16)),
            413,
            TOO_LARGE,
        ),
        append_events(
            "event data and metadata over 1 MiB",
            &data_and_metadata,
            413,
            TOO_LARGE,
        ),
        append_events("request over 16 MiB", &huge_request, 413, TOO_LARGE),
        append_events("over 10 000 events", &many_events, 413, TOO_LARGE),
        // Query parameters of a stream read.
        get("stream limit 0", "/streams/acct-1?limit=0", 400, INVALID),
        get(
            "stream limit above max",
            "/streams/acct-1?limit=10001",
            400,
            INVALID,
        ),
        get(
            "stream limit negative",
            "/streams/acct-1?limit=-1",
            400,
            INVALID,
        ),
        get(
            "stream limit a word",
            "/streams/acct-1?limit=abc",
            400,
            INVALID,
        ),
        get(
            "stream limit a float",
            "/streams/acct-1?limit=1.5",
            400,
            INVALID,
        ),
        get("stream limit empty", "/streams/acct-1?limit=", 400, INVALID),
        get(
            "stream from negative",
            "/streams/acct-1?from=-1",
            400,
            INVALID,
        ),
        get("stream from a word", "/streams/acct-1?from=x", 400, INVALID),
        get(
            "stream unknown direction",
            "/streams/acct-1?direction=sideways",
            400,
            INVALID,
        ),
        get(
            "stream unknown parameter",
            "/streams/acct-1?limt=5",
            400,
            INVALID,
        ),
        // Query parameters of the global log.
        get("log limit 0", "/events?limit=0", 400, INVALID),
        get("log limit above max", "/events?limit=10001", 400, INVALID),
        get("log limit a float", "/events?limit=2.5", 400, INVALID),
        get("log from negative", "/events?from=-3", 400, INVALID),
        get("log from a word", "/events?from=abc", 400, INVALID),
        get(
            "log from beyond u64",
            "/events?from=99999999999999999999999",
            400,
            INVALID,
        ),
        get("log unknown parameter", "/events?fromm=1", 400, INVALID),
        // Things that are not there.
        get("unknown route", "/nope", 404, "not_found"),
        get(
            "missing stream",
            "/streams/never-1",
            404,
            "stream_not_found",
        ),
    ]
}

/// Why a reply does not match its case, if it does not.
fn mismatch(case: &Case, reply: &Reply) -> Option<String> {
    let body: String = reply.body.chars().take(300).collect();
    if reply.status != case.status {
        return Some(format!(
            "status {} instead of {}: {body}",
            reply.status, case.status
        ));
    }
    if !reply.content_type.starts_with("application/json") {
        return Some(format!("content-type {:?}: {body}", reply.content_type));
    }
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&reply.body) else {
        return Some(format!("body is not JSON: {body}"));
    };
    let error = &json["error"];
    if error["code"] != case.code {
        return Some(format!(
            "code {} instead of {}: {body}",
            error["code"], case.code
        ));
    }
    if error["message"].as_str().is_none_or(str::is_empty) {
        return Some(format!("no message: {body}"));
    }
    None
}

#[test]
fn malformed_requests_are_refused_and_change_nothing() {
    let server = Server::start();
    let api = server.api();
    api.append_ok(
        "acct-1",
        json!([
            event_with_id("seed-1", "Opened", json!({"n": 1})),
            event_with_id("seed-2", "Renamed", json!({"n": 2})),
        ]),
    );
    api.append_ok("order-7", json!([event("Placed", json!({"n": 3}))]));
    api.append_ok(
        "acct-1",
        json!([event_with_id("seed-3", "Closed", json!({"n": 4}))]),
    );
    api.append_ok("order-7", json!([event("Shipped", json!({"n": 5}))]));
    let before = api.get("/events?limit=10000").expect(200);
    let streams_before = [api.stream_events("acct-1"), api.stream_events("order-7")];

    let cases = cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for case in &cases {
        let body = case.body.as_deref().unwrap_or_default();
        let reply = send_raw(server.url(), case.method, &case.path, &case.headers, body);
        let problem = match reply {
            Ok(reply) => mismatch(case, &reply),
            Err(error) => Some(format!("transport error: {error}")),
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "{} ({} {:.80}): {problem}",
                case.name, case.method, case.path
            ));
        }
    }

    assert_eq!(
        api.get("/events?limit=10000").expect(200),
        before,
        "the log changed"
    );
    let streams_after = [api.stream_events("acct-1"), api.stream_events("order-7")];
    assert_eq!(streams_after, streams_before, "a stream changed");
    assert_eq!(api.head(), 5);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

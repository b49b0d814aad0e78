//! Limits that hold on every path, and clients that cannot stall the host: each test here is a
//! way an adversary or a careless plugin once got past a limit (a body that never ends, a
//! handler's output, nesting, a refused request's body, the last page of keys, ...), checked
//! against the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::harness::{Api, Launch, Server, assert_error, event, guest_wasm, run_evhost};
use crate::hostile::hostile;

/// The longest a test waits for the host to act on a stalled client. The host's own deadline
/// is 5 s (the body grace at the default rate); before these limits it waited forever.
const STALL_OUTCOME: Duration = Duration::from_secs(40);

/// The `host:port` of a server's URL.
fn address(server: &Server) -> String {
    server.url().trim_start_matches("http://").to_string()
}

/// Opens a connection and sends `head` (and `body`, which may be incomplete) without closing.
fn send_partial(server: &Server, head: &str, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(address(server)).expect("connect");
    stream.set_read_timeout(Some(STALL_OUTCOME)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream
}

/// Reads what the host sends until it closes the connection; panics if it stays open.
fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&received).into_owned();
            }
            Err(e) => panic!(
                "the host kept the connection open ({e}); received so far: {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

/// The status code of the first response in `text`.
fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"))
}

#[test]
fn a_body_that_stops_coming_is_answered_408_and_closed() {
    let server = Server::start();
    let head = "POST /streams/s-1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 100\r\n\r\n";
    let mut stalled = send_partial(&server, head, b"{\"events\":");
    let answer = read_until_closed(&mut stalled);
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // A chunked body that never ends is the same.
    let head = "POST /streams/s-1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\n\r\n";
    let mut stalled = send_partial(&server, head, b"a\r\n{\"events\":\r\n");
    let answer = read_until_closed(&mut stalled);
    assert_eq!(status_of(&answer), 408, "{answer}");

    // Nothing was written, and the host serves everyone else.
    assert_error(&server.api().get("/streams/s-1"), 404, "stream_not_found");
    assert_eq!(server.api().head(), 0);
}

#[test]
fn a_body_arriving_slower_than_the_minimum_rate_is_cut_off() {
    let server = Launch::default()
        .arg("--body-min-rate")
        .arg("100000")
        .start();
    let head = "POST /streams/s-1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 10000000\r\n\r\n";
    let mut slow = send_partial(&server, head, b"{\"events\":[");
    // A trickle: a byte now and then, far below 100 kB/s once the grace is over.
    let mut writer = slow.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        while writer.write_all(b" ").is_ok() {
            thread::sleep(Duration::from_millis(200));
        }
    });
    let answer = read_until_closed(&mut slow);
    assert_eq!(status_of(&answer), 408, "{answer}");
    drop(slow);
    trickle.join().unwrap();
    assert_eq!(server.api().head(), 0);
}

#[test]
fn a_request_refused_for_its_token_is_answered_without_its_body() {
    let server = Launch::default().tokens("a", "w", "r").start();
    // The body will never come; the 401 must not wait for it.
    let head = "POST /streams/s-1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 100\r\n\r\n";
    let mut refused = send_partial(&server, head, b"{\"events\":");
    let answer = read_until_closed(&mut refused);
    assert_eq!(status_of(&answer), 401, "{answer}");
    assert!(answer.contains("unauthorized"), "{answer}");
    // The answer came before any body deadline could have passed.
    assert!(
        !answer.contains("408"),
        "the refusal waited for the body: {answer}"
    );
}

#[test]
fn stalled_clients_past_the_connection_cap_get_503_and_health_answers_once_they_go() {
    let server = Launch::default()
        .arg("--max-connections")
        .arg("8")
        .tokens("a", "w", "r")
        .start();
    let head = "POST /streams/s-1 HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n";
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect(address(&server)).unwrap();
            // Headers not finished: the connection is open and holds its place.
            stream.write_all(head.as_bytes()[..20].as_ref()).unwrap();
            stream
        })
        .collect();
    let mut ninth = send_partial(&server, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n", b"");
    let answer = read_until_closed(&mut ninth);
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    drop(stalled);
    // Once they are gone, the host answers again.
    let api = server.api();
    let deadline = std::time::Instant::now() + STALL_OUTCOME;
    loop {
        match api.try_send("GET", "/health", &[], None) {
            Ok(reply) if reply.status == 200 => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "health does not answer after the stalled clients left: {other:?}"
            ),
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_body_past_every_bound_is_answered_413_to_a_client_that_reads_only_after_writing() {
    let server = Server::start();
    let mut stream = TcpStream::connect(address(&server)).unwrap();
    stream.set_read_timeout(Some(STALL_OUTCOME)).unwrap();
    let size = 100 << 20;
    let head = format!(
        "POST /streams/s-1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    // A simple client: the whole body first, the answer after.
    let chunk = vec![b' '; 1 << 20];
    let mut written = 0;
    while written < size {
        if let Err(error) = stream.write_all(&chunk) {
            panic!("the host broke the connection after {written} bytes: {error}");
        }
        written += chunk.len();
    }
    let answer = read_until_closed(&mut stream);
    assert_eq!(status_of(&answer), 413, "after {written} bytes: {answer}");
}

#[test]
fn a_request_with_both_content_length_and_chunked_encoding_cannot_smuggle_a_second_one() {
    // RFC 9112 (6.3): the chunked encoding wins over the length, and the connection closes
    // after the answer, so that bytes a proxy would read as another request never are one.
    let server = Server::start();
    let body = "{\"events\":[{\"type\":\"T\",\"data\":1}]}";
    let head = format!(
        "POST /streams/s-1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\ntransfer-encoding: chunked\r\n\r\n",
        body.len()
    );
    let smuggled = format!(
        "POST /streams/s-2 HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n{smuggled}", body.len());
    let mut stream = send_partial(&server, &head, chunked.as_bytes());
    let answer = read_until_closed(&mut stream);
    assert_eq!(status_of(&answer), 201, "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "two answers: {answer}"
    );
    assert!(answer.contains("connection: close"), "{answer}");
    assert_error(&server.api().get("/streams/s-2"), 404, "stream_not_found");
    assert_eq!(server.api().head(), 1);
}

#[test]
fn head_is_answered_on_every_get_route() {
    let server = Server::start();
    let api = server.api();
    api.append_ok("s-1", json!([event("T", json!({"a": 1}))]));
    for path in ["/health", "/events", "/streams/s-1", "/plugins", "/metrics"] {
        let get = api.get(path);
        let head = api.send("HEAD", path, &[], None);
        assert_eq!(head.status, get.status, "HEAD {path}: {}", head.body);
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} sent a body");
    }
    let missing = api.send("HEAD", "/streams/nope", &[], None);
    assert_eq!(missing.status, 404);
}

#[test]
fn sigterm_right_after_the_listening_line_stops_the_host_cleanly() {
    for _ in 0..20 {
        // `terminate` signals as soon as the line is seen, and asserts exit code 0.
        let mut server = Server::start();
        server.terminate();
    }
}

#[test]
fn a_lowercase_bearer_scheme_is_accepted() {
    let server = Launch::default().tokens("a", "w", "r").start();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let header = format!("{scheme} r");
        let reply = server
            .api()
            .send("GET", "/events", &[("authorization", &header)], None);
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.body);
    }
    let reply = server
        .api()
        .send("GET", "/events", &[("authorization", "Basic r")], None);
    assert_error(&reply, 401, "unauthorized");
}

/// `depth` arrays nested in each other around a number: JSON text nesting `depth` levels.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn json_nested_past_128_levels_is_refused_on_every_path() {
    let server = Server::start();
    let api = server.api();
    let append = |data: &str, metadata: &str| {
        let body =
            format!("{{\"events\":[{{\"type\":\"T\",\"data\":{data},\"metadata\":{metadata}}}]}}");
        api.send("POST", "/streams/deep-1", &[], Some(body.into_bytes()))
    };
    for depth in [129, 200, 100_000] {
        assert_error(&append(&nested(depth), "{}"), 400, "invalid_request");
    }
    let meta_deep = format!("{{\"a\":{}}}", nested(128));
    assert_error(&append("1", &meta_deep), 400, "invalid_request");
    assert_eq!(api.head(), 0, "a refused append wrote something");
    append(&nested(128), "{}").expect(201);

    // What was stored reads back, with the CLI too.
    let output = run_evhost(&["read", "deep-1", "--url", server.url(), "--json"]);
    assert!(
        output.status.success(),
        "evhost read failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Commands: the data a client sends and the events a handler returns.
    api.deploy_guest("fixture-hostile");
    let body = format!(
        "{{\"stream\":\"hostile-1\",\"type\":\"Ok\",\"data\":{}}}",
        nested(129)
    );
    let reply = api.send(
        "POST",
        "/handlers/hostile/commands",
        &[],
        Some(body.into_bytes()),
    );
    assert_error(&reply, 400, "invalid_request");
    // Data nested at the limit is stored; the answer nests deeper than serde_json's default
    // limit for a whole document, so only its status is looked at here.
    let reply = api.command(
        "hostile",
        &json!({"stream": "hostile-1", "type": "Nest", "data": {"depth": 127}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The handler folds that event when it decides the next command on the stream.
    let reply = api.command(
        "hostile",
        &json!({"stream": "hostile-1", "type": "Ok", "data": null}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = api.command(
        "hostile",
        &json!({"stream": "hostile-2", "type": "Nest", "data": {"depth": 128}}),
    );
    assert_error(&reply, 500, "plugin_failed");
    assert!(reply.body.contains("nests 129 levels"), "{}", reply.body);
    assert_eq!(api.stream_version("hostile-2"), 0);
}

#[test]
fn a_handlers_events_meet_the_limits_of_an_http_append() {
    let server = Server::start();
    let api = server.api();
    api.deploy(
        &guest_wasm("fixture-hostile"),
        "memory_mib=512&timeout_ms=10000",
    )
    .expect(201);
    let cases = [
        // More events than an append may hold.
        (
            json!({"count": 10_001, "bytes": 1}),
            "10001 events in one append",
        ),
        // One event larger than an event may be.
        (
            json!({"count": 1, "bytes": 1 << 20}),
            "bytes of data and metadata",
        ),
        // Events each within bounds, together past what one request may carry.
        (json!({"count": 20, "bytes": 1_000_000}), "together"),
    ];
    for (data, words) in cases {
        let reply = hostile(&api, "hostile-out", "Emit", data.clone());
        assert_error(&reply, 500, "plugin_failed");
        assert!(reply.body.contains(words), "{data}: {}", reply.body);
    }
    assert_eq!(api.head(), 0, "a refused handler output was stored");
    // At the limits, it is stored.
    let reply = hostile(
        &api,
        "hostile-out",
        "Emit",
        json!({"count": 10_000, "bytes": 1}),
    );
    assert_eq!(
        reply.expect(200)["events"].as_array().unwrap().len(),
        10_000
    );
}

#[test]
fn a_policy_asking_for_more_actions_than_one_call_may_is_parked() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    api.deploy_guest("fixture-hostile-policy");
    for data in [json!({"commands": 1001}), json!({"timers": 1001})] {
        api.append_ok("hostile-9", json!([event("Flood", data)]));
    }
    api.append_ok("hostile-9", json!([event("Flood", json!({"commands": 3}))]));
    let plugin = api.wait_for_plugin("hostile-policy", Duration::from_secs(120), |p| {
        p["parked"].as_u64() == Some(2) && p["position"].as_u64() >= Some(3)
    });
    let parked = api.get("/plugins/hostile-policy/parked").expect(200);
    let errors: Vec<&str> = parked
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["error"].as_str().unwrap())
        .collect();
    assert!(
        errors[0].contains("1001 commands in one call"),
        "{errors:?}"
    );
    assert!(errors[1].contains("1001 timers in one call"), "{errors:?}");
    // The reaction within the limits went through.
    api.wait_for_events("counter-9", 3, Duration::from_secs(60));
    assert_eq!(plugin["kind"], "policy");
}

#[test]
fn keys_page_on_at_the_largest_page() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-hostile-projection");
    api.append_ok(
        "hostile-1",
        json!([event("Flood", json!({"puts": 1500, "bytes": 1}))]),
    );
    api.wait_for_position("hostile-projection", 1, Duration::from_secs(60));
    let first = api
        .get("/projections/hostile-projection/keys?prefix=flood/&limit=1000")
        .expect(200);
    assert_eq!(first["items"].as_array().unwrap().len(), 1000);
    let next = first["next"]
        .as_str()
        .unwrap_or_else(|| panic!("no next page after 1000 of 1500 keys: {}", first["next"]));
    let second = api
        .get(&format!(
            "/projections/hostile-projection/keys?prefix=flood/&limit=1000&after={next}"
        ))
        .expect(200);
    assert_eq!(second["items"].as_array().unwrap().len(), 500);
    assert!(second["next"].is_null());
}

/// Sends `Random` with id `id` on `stream` to the hostile handler, and answers the value rolled.
fn roll(api: &Api, id: &str, stream: &str) -> u64 {
    let reply = api.command(
        "hostile",
        &json!({"id": id, "stream": stream, "type": "Random", "data": null}),
    );
    reply.expect(200)["events"][0]["data"]["value"]
        .as_u64()
        .unwrap_or_else(|| panic!("no value rolled: {}", reply.body))
}

/// Makes the hostile handler trap, which drops the instance it ran on.
fn drop_an_instance(api: &Api) {
    let reply = api.command(
        "hostile",
        &json!({"stream": "hostile-panic", "type": "Panic", "data": null}),
    );
    assert_error(&reply, 500, "plugin_failed");
}

#[test]
fn a_calls_randomness_depends_on_its_inputs_not_on_the_instance_that_runs_it() {
    let first = Server::start();
    let api = first.api();
    let version = api.deploy_guest("fixture-hostile");
    let a = roll(&api, "roll-a", "hostile-a");
    let b = roll(&api, "roll-b", "hostile-b");
    drop_an_instance(&api);
    let c = roll(&api, "roll-c", "hostile-c");
    assert!(
        a != b && b != c && a != c,
        "different commands rolled alike: {a} {b} {c}"
    );

    // Another host, another order, other instances: the same commands roll the same values.
    let second = Server::start();
    let other = second.api();
    other.deploy_guest("fixture-hostile");
    drop_an_instance(&other);
    assert_eq!(roll(&other, "roll-c", "hostile-c"), c);
    assert_eq!(roll(&other, "roll-b", "hostile-b"), b);
    drop_an_instance(&other);
    assert_eq!(roll(&other, "roll-a", "hostile-a"), a);

    // And a replay decides them again exactly as they were decided.
    let replay = api
        .post("/plugins/hostile/replays", &json!({"version": version}))
        .expect(202);
    let done = api.wait_for_replay(replay["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["report"]["same"], 3, "{done}");
}

#[test]
fn deploying_the_same_bytes_with_new_limits_applies_them_to_a_running_projection() {
    let server = Server::start();
    let api = server.api();
    let wasm = guest_wasm("fixture-hostile-projection");
    api.deploy(&wasm, "").expect(201);
    let again = api.deploy(&wasm, "timeout_ms=300");
    assert_eq!(again.status, 200, "{}", again.body);
    api.append_ok("hostile-1", json!([event("Loop", json!(null))]));
    let plugin = api.wait_for_plugin("hostile-projection", Duration::from_secs(120), |p| {
        p["error"]
            .as_str()
            .is_some_and(|e| e.contains("time budget"))
    });
    let error = plugin["error"].as_str().unwrap();
    assert!(
        error.contains("300 ms"),
        "the old budget still holds: {error}"
    );
    assert_eq!(plugin["limits"]["timeout_ms"], 300, "{plugin}");
}

#[test]
fn a_handlers_category_is_closed_to_direct_appends_but_for_an_admin_who_says_so() {
    let server = Launch::default().tokens("a", "w", "r").start();
    let admin = server.api().with_token("a");
    let writer = server.api().with_token("w");
    admin.deploy_guest("fixture-counter");
    let body =
        json!({"events": [event("Incremented", json!({"by": 5, "total": 5, "build": "raw"}))]});
    let refused = writer.append("counter-RAW", &body);
    assert_error(&refused, 403, "category_owned");
    assert_eq!(refused.json()["error"]["handler"], "counter");
    // Saying so is not enough for a write token; an admin may.
    let path = "/streams/counter-RAW?bypass_handler=true";
    assert_error(&writer.post(path, &body), 403, "forbidden");
    assert_error(&admin.append("counter-RAW", &body), 403, "category_owned");
    admin.post(path, &body).expect(201);
    // Other categories stay open to a write token, and the handler's commands go on.
    writer.append_ok("other-1", json!([event("T", json!({}))]));
    writer
        .command(
            "counter",
            &json!({"stream": "counter-1", "type": "Increment", "data": {"by": 1}}),
        )
        .expect(200);
    assert_eq!(writer.stream_version("counter-RAW"), 1);
}

#[test]
fn a_projections_writes_per_batch_are_bounded_and_a_full_batch_just_ends_early() {
    let server = Server::start();
    let api = server.api();
    // The longest budget there is: a call making 100 001 writes must meet the write limit before
    // it meets its budget, however busy the machine (it takes seconds in a debug build, and
    // plugin threads yield to the rest of the host and of the machine).
    api.deploy(
        &guest_wasm("fixture-hostile-projection"),
        "memory_mib=512&timeout_ms=60000",
    )
    .expect(201);
    // Three events of 40 000 writes each: more than one batch holds, each within it.
    let flood = || event("Flood", json!({"puts": 40_000, "bytes": 1}));
    api.append_ok("hostile-1", json!([flood(), flood(), flood()]));
    let plugin = api.wait_for_position("hostile-projection", 3, Duration::from_secs(120));
    assert_eq!(plugin["status"], "running", "{plugin}");
    assert_eq!(plugin["parked"], 0, "{plugin}");
    for position in 1..=3 {
        api.get(&format!(
            "/projections/hostile-projection/keys/flood/{position}/39999"
        ))
        .expect(200);
    }

    // One event past the limits by itself pauses the projection there, with the reason.
    for (data, words) in [
        (
            json!({"puts": 100_001, "bytes": 1}),
            "state writes in one batch",
        ),
        (
            json!({"puts": 70, "bytes": 1_000_000}),
            "bytes in one batch",
        ),
    ] {
        let position =
            api.append_ok("hostile-2", json!([event("Flood", data.clone())]))["last_position"]
                .as_u64()
                .unwrap();
        let plugin = api.wait_for_plugin("hostile-projection", Duration::from_secs(180), |p| {
            p["status"] == "paused" && p["parked"] == 1
        });
        let parked = api.get("/plugins/hostile-projection/parked").expect(200);
        assert_eq!(parked[0]["position"], position, "{parked}");
        let error = parked[0]["error"].as_str().unwrap();
        assert!(error.contains(words), "{data}: {error}");
        assert_eq!(plugin["position"], position - 1);
        api.post(
            &format!("/plugins/hostile-projection/parked/{position}/skip"),
            &json!({}),
        )
        .expect(200);
    }
}

#[test]
fn slow_plugin_calls_in_bulk_are_queued_then_refused_with_retry_after_not_run_late() {
    let server = Server::start();
    let api = server.api();
    api.deploy(&guest_wasm("fixture-hostile"), "timeout_ms=2000")
        .expect(201);
    const CLIENTS: usize = 40;
    let answers: Vec<(u16, String, Option<String>, Duration)> = thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let api = api.clone();
                scope.spawn(move || {
                    let body = json!({"stream": format!("hostile-spin-{n}"), "type": "Loop",
                                      "data": null});
                    let started = std::time::Instant::now();
                    let response = api
                        .open(
                            "POST",
                            "/handlers/hostile/commands",
                            &[],
                            Some(body.to_string().into_bytes()),
                        )
                        .expect("the host answers");
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let text = response.text().unwrap();
                    (status, text, retry_after, started.elapsed())
                })
            })
            .collect();
        // Meanwhile the host serves a client that calls no plugin.
        for _ in 0..5 {
            api.get("/health").expect(200);
        }
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut refused = 0;
    for (status, body, retry_after, elapsed) in &answers {
        match status {
            500 => {
                assert!(body.contains("time budget of 2000 ms"), "{body}");
                // Generous for a busy machine; before the bound, calls ran for many budgets.
                assert!(*elapsed < Duration::from_secs(20), "a call ran {elapsed:?}");
            }
            503 => {
                assert!(body.contains("\"overloaded\""), "{body}");
                assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        refused >= CLIENTS / 2,
        "only {refused} of {CLIENTS} slow calls were refused; the rest ran"
    );
    // Nothing was appended, and the handler serves once the crowd is gone.
    assert_eq!(api.head(), 0);
    hostile(&api, "hostile-out", "Ok", json!(null)).expect(200);
}

#[test]
fn pages_of_large_events_end_at_the_page_bytes_and_point_on() {
    let server = Server::start();
    let api = server.api();
    let big = || event("Big", json!({"pad": "x".repeat(1_000_000)}));
    for _ in 0..2 {
        api.append_ok("big-1", json!((0..10).map(|_| big()).collect::<Vec<_>>()));
    }
    let limit = 8 << 20;
    let first = api.get("/events?limit=300");
    assert_eq!(first.status, 200);
    assert!(
        first.body.len() < limit + (2 << 20),
        "{} bytes",
        first.body.len()
    );
    let page = first.json();
    let count = page["events"].as_array().unwrap().len() as u64;
    assert!(count < 20, "the page was not cut: {count} events");
    assert_eq!(page["next"], count + 1);
    // Paging with next reads every event once, in order, forward and backward.
    let all = api.all_events();
    assert_eq!(all.len(), 20);
    assert_eq!(api.stream_events("big-1").len(), 20);
    let backward = api
        .get("/streams/big-1?direction=backward&limit=300")
        .json();
    let events = backward["events"].as_array().unwrap();
    assert!(events.len() < 20);
    assert_eq!(events[0]["version"], 20);
    assert_eq!(backward["next"], 20 - events.len() as u64);
}

#[test]
fn a_policy_that_feeds_itself_is_stopped_at_the_chain_bound_and_says_why() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-hostile");
    api.deploy_guest("fixture-counter");
    api.deploy_guest("fixture-hostile-policy");
    // The handler's Stormed makes the policy send another Storm, whose answer is a Stormed.
    api.command(
        "hostile",
        &json!({"stream": "hostile-storm", "type": "Storm", "data": null}),
    )
    .expect(200);
    let plugin = api.wait_for_plugin("hostile-policy", Duration::from_secs(180), |p| {
        p["parked"] == 1
    });
    let parked = api.get("/plugins/hostile-policy/parked").expect(200);
    let error = parked[0]["error"].as_str().unwrap();
    assert!(error.contains("chain of 64 policy commands"), "{error}");
    assert_eq!(parked[0]["stream"], "hostile-storm");
    // The storm stopped: the first event and 64 more, and nothing is waiting to be sent.
    let events = api.wait_for_events("hostile-storm", 65, Duration::from_secs(60));
    assert_eq!(events.len(), 65);
    assert_eq!(events[64]["metadata"]["causation_depth"], 64);
    assert_eq!(plugin["kind"], "policy");
    let head = api.head();
    api.append_ok("other-1", json!([event("T", json!({}))]));
    api.wait_for_position("hostile-policy", head + 1, Duration::from_secs(60));
    assert_eq!(api.stream_version("hostile-storm"), 65);
}

#[test]
fn a_projections_state_is_kept_to_its_maximum_size_across_restarts() {
    let mut server = Server::start();
    let api = server.api();
    api.deploy(&guest_wasm("fixture-hostile-projection"), "state_mib=1")
        .expect(201);
    // 600 kB, then 600 kB more: the second event would take the state past 1 MiB.
    let flood = || event("Flood", json!({"puts": 600, "bytes": 1000}));
    api.append_ok("hostile-1", json!([flood()]));
    let plugin = api.wait_for_position("hostile-projection", 1, Duration::from_secs(60));
    let size = plugin["versions"][0]["state_bytes"].as_u64().unwrap();
    assert!((600_000..700_000).contains(&size), "{plugin}");
    api.append_ok("hostile-1", json!([flood()]));
    api.wait_for_plugin("hostile-projection", Duration::from_secs(120), |p| {
        p["status"] == "paused" && p["parked"] == 1
    });
    let parked = api.get("/plugins/hostile-projection/parked").expect(200);
    let error = parked[0]["error"].as_str().unwrap();
    assert!(
        error.contains("past its maximum of 1048576 bytes"),
        "{error}"
    );
    assert_eq!(parked[0]["position"], 2);

    // The size is kept with the state: after a restart it still counts, and a larger maximum
    // deployed for the same bytes lets the event through.
    server.restart();
    let api = server.api();
    let plugin = api.get("/plugins/hostile-projection").expect(200);
    assert_eq!(plugin["versions"][0]["state_bytes"], size, "{plugin}");
    api.deploy(&guest_wasm("fixture-hostile-projection"), "state_mib=2")
        .expect(200);
    api.post("/plugins/hostile-projection/parked/2/retry", &json!({}))
        .expect(200);
    let plugin = api.wait_for_position("hostile-projection", 2, Duration::from_secs(60));
    assert!(
        plugin["versions"][0]["state_bytes"].as_u64().unwrap() > 1_200_000,
        "{plugin}"
    );
}

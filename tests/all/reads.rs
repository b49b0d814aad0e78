//! Reading: paging a stream forward and backward, paging the global log, category and type
//! filters, the `head` of a log page, `/health` and `/metrics`, not-found answers, and a graceful
//! shutdown on SIGTERM that keeps every acknowledged append.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Server, append_numbers, assert_error, check_store, event};

/// The `field` of every event of a page.
fn field_of(page: &Value, field: &str) -> Vec<Value> {
    page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("page without events: {page}"))
        .iter()
        .map(|e| e[field].clone())
        .collect()
}

fn numbers(range: impl Iterator<Item = u64>) -> Vec<Value> {
    range.map(|n| json!(n)).collect()
}

#[test]
fn stream_pages_forward_and_backward() {
    let server = Server::start();
    let api = server.api();
    for batch in 0..25u64 {
        let events: Vec<Value> = (0..10)
            .map(|k| event("Counted", json!(batch * 10 + k)))
            .collect();
        api.append_ok("page-1", Value::Array(events));
        api.append_ok("other-1", json!([event("Noise", json!(batch))]));
    }

    let forward = api.pages("/streams/page-1", "limit=40");
    assert_eq!(forward.len(), 7);
    for (index, page) in forward.iter().enumerate() {
        let first = index as u64 * 40 + 1;
        let last = (first + 39).min(250);
        assert_eq!(page["stream"], "page-1");
        assert_eq!(page["version"], 250);
        assert_eq!(field_of(page, "version"), numbers(first..=last));
        assert_eq!(field_of(page, "data"), numbers(first - 1..last));
        let next = if last < 250 {
            json!(last + 1)
        } else {
            Value::Null
        };
        assert_eq!(page["next"], next);
    }

    let backward = api.pages("/streams/page-1", "limit=40&direction=backward");
    assert_eq!(backward.len(), 7);
    for (index, page) in backward.iter().enumerate() {
        let top = 250 - index as u64 * 40;
        let bottom = top.saturating_sub(39).max(1);
        assert_eq!(field_of(page, "version"), numbers((bottom..=top).rev()));
        let next = if bottom > 1 {
            json!(bottom - 1)
        } else {
            Value::Null
        };
        assert_eq!(page["next"], next);
    }

    // Defaults: from the start (or the end, backward), 100 events.
    let page = api.get("/streams/page-1").expect(200);
    assert_eq!(field_of(&page, "version"), numbers(1..=100));
    assert_eq!(page["next"], 101);
    let page = api.get("/streams/page-1?direction=backward").expect(200);
    assert_eq!(field_of(&page, "version"), numbers((151..=250).rev()));
    assert_eq!(page["next"], 150);
    // `from=0` is the start; past the end there is nothing more.
    let page = api.get("/streams/page-1?from=0&limit=3").expect(200);
    assert_eq!(field_of(&page, "version"), numbers(1..=3));
    let page = api.get("/streams/page-1?from=251").expect(200);
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["next"], Value::Null);
    let page = api
        .get("/streams/page-1?from=240&direction=forward&limit=10000")
        .expect(200);
    assert_eq!(field_of(&page, "version"), numbers(240..=250));
    assert_eq!(page["next"], Value::Null);
    let page = api
        .get("/streams/page-1?from=3&direction=backward")
        .expect(200);
    assert_eq!(field_of(&page, "version"), numbers((1..=3).rev()));
    assert_eq!(page["next"], Value::Null);
}

#[test]
fn global_log_pages_with_head() {
    let server = Server::start();
    let api = server.api();
    let empty = api.get("/events").expect(200);
    assert_eq!(empty["events"], json!([]));
    assert_eq!(empty["next"], Value::Null);
    assert_eq!(empty["head"], 0);
    for n in 0..30u64 {
        let answer = api.append_ok(
            &format!("log-{}", n % 4),
            json!([event("Logged", json!(n))]),
        );
        assert_eq!(append_numbers(&answer).3, n + 1);
    }

    let log_pages = api.pages("/events", "limit=7");
    assert_eq!(log_pages.len(), 5);
    let mut positions = Vec::new();
    for page in &log_pages {
        assert_eq!(page["head"], 30);
        positions.extend(field_of(page, "position"));
    }
    assert_eq!(positions, numbers(1..=30));
    assert_eq!(log_pages[0]["next"], 8);

    let default = api.get("/events").expect(200);
    assert_eq!(field_of(&default, "position"), numbers(1..=30));
    assert_eq!(default["next"], Value::Null);
    let from_zero = api.get("/events?from=0&limit=2").expect(200);
    assert_eq!(field_of(&from_zero, "position"), numbers(1..=2));
    assert_eq!(from_zero["next"], 3);
    let past_head = api.get("/events?from=31").expect(200);
    assert_eq!(past_head["events"], json!([]));
    assert_eq!(past_head["next"], Value::Null);
    assert_eq!(past_head["head"], 30);
    check_store(&api);
}

#[test]
fn category_and_type_filters() {
    let server = Server::start();
    let api = server.api();
    let appends = [
        ("acct-1", "Opened"),
        ("acct-2", "Opened"),
        ("order-1", "Placed"),
        ("acct-1", "Closed"),
        ("order-2-b", "Shipped"),
        ("misc", "Opened"),
        ("accounting-1", "Opened"),
        ("order-1", "Closed"),
    ];
    for (n, (stream, event_type)) in appends.iter().enumerate() {
        api.append_ok(stream, json!([event(event_type, json!(n))]));
    }
    let cases: [(&str, &[u64]); 12] = [
        ("category=acct", &[1, 2, 4]),
        ("category=order", &[3, 5, 8]),
        ("category=misc", &[6]),
        ("category=nothing", &[]),
        ("category=acct&category=misc", &[1, 2, 4, 6]),
        ("category=acct,misc", &[1, 2, 4, 6]),
        ("type=Opened", &[1, 2, 6, 7]),
        ("type=Closed&type=Shipped", &[4, 5, 8]),
        ("type=Closed,Shipped", &[4, 5, 8]),
        ("category=order&type=Closed", &[8]),
        ("category=acct,order&type=Closed,Placed", &[3, 4, 8]),
        ("category=acct&type=Opened&from=2", &[2]),
    ];
    for (query, positions) in cases {
        let page = api.get(&format!("/events?{query}")).expect(200);
        let expected = numbers(positions.iter().copied());
        assert_eq!(field_of(&page, "position"), expected, "{query}");
        assert_eq!(page["next"], Value::Null, "{query}");
        assert_eq!(page["head"], 8, "{query}");
    }
    // A full filtered page with more matches after it points just past its last event.
    let page = api.get("/events?category=acct&limit=2").expect(200);
    assert_eq!(field_of(&page, "position"), numbers([1, 2].into_iter()));
    assert_eq!(page["next"], 3);
}

#[test]
fn health_and_metrics() {
    let server = Server::start();
    let api = server.api();
    let health = api.get("/health").expect(200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["head"], 0);
    let version = health["version"].as_str().expect("a version string");
    let core = version.split(['-', '+']).next().unwrap();
    assert!(
        core.split('.').count() == 3 && core.split('.').all(|n| n.parse::<u64>().is_ok()),
        "not semver: {version}"
    );

    api.append_ok(
        "acct-1",
        json!([event("Opened", json!(1)), event("Renamed", json!(2))]),
    );
    api.append_ok("acct-2", json!([event("Opened", json!(3))]));
    assert_eq!(api.head(), 3);

    let metrics = api.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.content_type.starts_with("text/plain"),
        "{}",
        metrics.content_type
    );
    let appended: f64 = metrics
        .body
        .lines()
        .filter(|line| {
            line.strip_prefix("evhost_events_appended_total")
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .map(|line| {
            let value = line.rsplit(' ').next().unwrap();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("not a sample: {line}"))
        })
        .sum();
    assert!(
        appended >= 3.0,
        "evhost_events_appended_total is {appended}:\n{}",
        metrics.body
    );
}

#[test]
fn missing_things_are_404() {
    let server = Server::start();
    let api = server.api();
    assert_error(&api.get("/streams/nobody-1"), 404, "stream_not_found");
    api.append_ok("somebody-1", json!([event("Opened", json!(1))]));
    assert_error(
        &api.get("/streams/nobody-1?direction=backward"),
        404,
        "stream_not_found",
    );
    assert_error(&api.get("/no/such/route"), 404, "not_found");
    assert_error(
        &api.send("DELETE", "/nothing-here", &[], None),
        404,
        "not_found",
    );
}

#[test]
fn sigterm_finishes_requests_and_keeps_data() {
    let mut server = Server::start();
    let api = server.api();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = thread::spawn({
        let api = api.clone();
        let stop = Arc::clone(&stop);
        move || {
            let mut acknowledged = Vec::new();
            for n in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let body =
                    json!({"events": [event("Ticked", json!(n)), event("Tocked", json!(n))]});
                match api.try_append("clock-1", &body) {
                    // A server that is stopping may refuse new work; that ends the writer too.
                    Ok(reply) if reply.status == 503 => break,
                    Ok(reply) => acknowledged.push((n, append_numbers(&reply.expect(201)))),
                    Err(_) => break,
                }
            }
            acknowledged
        }
    });
    // Let some appends through, then ask the server to stop while the writer keeps going.
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.head() < 20 {
        assert!(
            !writer.is_finished() && Instant::now() < deadline,
            "the writer stopped early"
        );
        thread::sleep(Duration::from_millis(10));
    }
    server.terminate();
    stop.store(true, Ordering::SeqCst);
    let acknowledged = writer.join().unwrap();
    assert!(!acknowledged.is_empty());

    server.restart();
    let api = server.api();
    let (log, _) = check_store(&api);
    for (n, (first_version, _, first_position, _)) in acknowledged {
        let stored = &log[first_position as usize - 1];
        assert_eq!(stored["data"], n, "{stored}");
        assert_eq!(stored["version"], first_version, "{stored}");
        assert_eq!(stored["type"], "Ticked", "{stored}");
    }
}

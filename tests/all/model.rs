//! Model-based test of the store over HTTP: a seeded random sequence of appends (random streams,
//! batch sizes, expected versions right and wrong, reused and repeated ids) and reads (streams
//! forward and backward with random `from`/`limit`, the global log with random filters), each
//! checked against a simple in-memory model, status codes included. A failure prints the seed;
//! set `EVHOST_MODEL_SEED` to replay it.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::harness::{
    Api, Reply, Rng, SeedReport, Server, append_numbers, assert_error, assert_event_shape,
    check_store, seed_from_env,
};

const OPERATIONS: usize = 300;
const WRITTEN_STREAMS: [&str; 5] = ["acct-1", "acct-2", "order-1", "order-x-2", "misc"];
const NEVER_WRITTEN: &str = "ghost-1";
const CATEGORIES: [&str; 4] = ["acct", "order", "misc", "ghost"];
const TYPES: [&str; 5] = ["Opened", "Renamed", "Closed", "noted.v2", "x:y-z_1"];
const STREAM_DEFAULT_LIMIT: u64 = 100;
const LOG_DEFAULT_LIMIT: u64 = 1000;

/// An event as the store must serve it.
struct StoredEvent {
    stream: String,
    version: u64,
    id: String,
    event_type: String,
    data: Value,
    metadata: Value,
}

/// An earlier successful append whose events all carried ids, so that it can be retried.
struct StoredAppend {
    stream: String,
    events: Vec<Value>,
    answer: Value,
}

/// What the store must answer to an append.
enum Expected {
    Created,
    Retried(Value),
    Refused(u16, &'static str),
    WrongVersion { expected: Value, actual: u64 },
}

#[derive(Default)]
struct Model {
    log: Vec<StoredEvent>,
    versions: HashMap<String, u64>,
    ids: HashSet<String>,
    retryable: Vec<StoredAppend>,
}

impl Model {
    fn version(&self, stream: &str) -> u64 {
        self.versions.get(stream).copied().unwrap_or(0)
    }

    fn predict_append(&self, stream: &str, events: &[Value], expected: Option<&Value>) -> Expected {
        let ids: Vec<Option<&str>> = events.iter().map(|e| e["id"].as_str()).collect();
        let given: Vec<&str> = ids.iter().flatten().copied().collect();
        if given.iter().collect::<HashSet<_>>().len() < given.len() {
            return Expected::Refused(400, "invalid_request");
        }
        if given.iter().any(|id| self.ids.contains(*id)) {
            let same = self
                .retryable
                .iter()
                .find(|earlier| earlier.stream == stream && earlier.events == events);
            return match same {
                Some(earlier) => Expected::Retried(earlier.answer.clone()),
                None => Expected::Refused(409, "duplicate_event_id"),
            };
        }
        let version = self.version(stream);
        let holds = match expected {
            None => true,
            Some(Value::String(word)) => match word.as_str() {
                "any" => true,
                "no_stream" => version == 0,
                "exists" => version > 0,
                other => panic!("the generator made an unknown word {other}"),
            },
            Some(number) => number.as_u64() == Some(version),
        };
        match expected {
            Some(expected) if !holds => Expected::WrongVersion {
                expected: expected.clone(),
                actual: version,
            },
            _ => Expected::Created,
        }
    }

    /// Records a successful append, given the events as the store now serves them.
    fn record(&mut self, stream: &str, request: &[Value], served: &[Value], answer: &Value) {
        for event in served {
            self.ids.insert(event["id"].as_str().unwrap().to_string());
            self.log.push(StoredEvent {
                stream: stream.to_string(),
                version: event["version"].as_u64().unwrap(),
                id: event["id"].as_str().unwrap().to_string(),
                event_type: event["type"].as_str().unwrap().to_string(),
                data: event["data"].clone(),
                metadata: event["metadata"].clone(),
            });
        }
        *self.versions.entry(stream.to_string()).or_default() += served.len() as u64;
        if request.iter().all(|e| e["id"].is_string()) {
            self.retryable.push(StoredAppend {
                stream: stream.to_string(),
                events: request.to_vec(),
                answer: answer.clone(),
            });
        }
    }
}

/// Checks a served event against the model's event at `position`.
#[track_caller]
fn assert_served(served: &Value, model: &Model, position: u64) {
    assert_event_shape(served);
    let stored = &model.log[position as usize - 1];
    let want = json!({
        "position": position,
        "stream": stored.stream,
        "version": stored.version,
        "id": stored.id,
        "type": stored.event_type,
        "data": stored.data,
        "metadata": stored.metadata,
    });
    for (field, value) in want.as_object().unwrap() {
        assert_eq!(&served[field], value, "field {field} of {served}");
    }
}

#[track_caller]
fn assert_page(reply: &Reply, model: &Model, positions: &[u64]) -> Value {
    let page = reply.expect(200);
    let events = page["events"].as_array().expect("events array");
    let served: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(served, positions, "wrong events in {page}");
    for (event, position) in events.iter().zip(positions) {
        assert_served(event, model, *position);
    }
    page
}

/// Generates and checks one append.
fn append(api: &Api, model: &mut Model, rng: &mut Rng, op: usize) {
    let stream = *rng.pick(&WRITTEN_STREAMS);
    let fresh_event = |rng: &mut Rng, k: usize| {
        let mut event = json!({
            "type": *rng.pick(&TYPES),
            "data": {"op": op, "k": k, "r": rng.below(1000)},
        });
        if rng.chance(80) {
            event["id"] = json!(format!("m{op}-{k}"));
        }
        if rng.chance(30) {
            event["metadata"] = json!({"trace": rng.below(100)});
        }
        event
    };
    let size = if rng.chance(85) {
        rng.between(1, 4)
    } else {
        rng.between(5, 12)
    } as usize;
    let mut events: Vec<Value> = (0..size).map(|k| fresh_event(rng, k)).collect();
    let mut stream = stream.to_string();
    match rng.below(100) {
        // An exact retry of an earlier append, sometimes to another stream.
        0..=11 if !model.retryable.is_empty() => {
            let earlier = rng.pick(&model.retryable);
            events = earlier.events.clone();
            if rng.chance(80) {
                stream = earlier.stream.clone();
            }
        }
        // An id that is already stored, among new events.
        12..=19 if !model.ids.is_empty() => {
            let index = rng.below(model.log.len() as u64) as usize;
            let at = rng.below(events.len() as u64) as usize;
            events[at]["id"] = json!(model.log[index].id);
        }
        // The same new id twice in one request.
        20..=23 if events.len() >= 2 => {
            events[1]["id"] = json!(format!("twice-{op}"));
            events[0]["id"] = json!(format!("twice-{op}"));
        }
        _ => {}
    }
    let version = model.version(&stream);
    let expected = match rng.below(10) {
        0 => None,
        1 => Some(json!("any")),
        2 => Some(json!("no_stream")),
        3 => Some(json!(0)),
        4 => Some(json!("exists")),
        5 | 6 => Some(json!(version)),
        7 => Some(json!(version + 1)),
        8 => Some(json!(version.saturating_sub(1))),
        _ => Some(json!(rng.below(12))),
    };
    let mut body = json!({ "events": events });
    if let Some(expected) = &expected {
        body["expected_version"] = expected.clone();
    }
    let prediction = model.predict_append(&stream, &events, expected.as_ref());
    let reply = api.append(&stream, &body);
    let context = format!("append to {stream}: {body}");
    match prediction {
        Expected::Created => {
            let answer = reply.expect(201);
            let head = model.log.len() as u64;
            let count = events.len() as u64;
            assert_eq!(answer["stream"], json!(stream), "{context}");
            assert_eq!(
                append_numbers(&answer),
                (version + 1, version + count, head + 1, head + count),
                "{context}"
            );
            let served = api
                .get(&format!("/events?from={}&limit={count}", head + 1))
                .expect(200)["events"]
                .as_array()
                .expect("events array")
                .clone();
            assert_eq!(served.len() as u64, count, "{context}");
            for (k, (sent, served)) in events.iter().zip(&served).enumerate() {
                assert_event_shape(served);
                assert_eq!(served["position"], json!(head + 1 + k as u64));
                assert_eq!(served["stream"], json!(stream));
                assert_eq!(served["version"], json!(version + 1 + k as u64));
                assert_eq!(served["type"], sent["type"]);
                assert_eq!(served["data"], sent["data"]);
                let metadata = sent.get("metadata").cloned().unwrap_or(json!({}));
                assert_eq!(served["metadata"], metadata, "{served}");
                if let Some(id) = sent.get("id") {
                    assert_eq!(&served["id"], id);
                }
                assert!(
                    !model.ids.contains(served["id"].as_str().unwrap()),
                    "{served}"
                );
            }
            model.record(&stream, &events, &served, &answer);
        }
        Expected::Retried(original) => {
            let answer = reply.expect(200);
            assert_eq!(
                append_numbers(&answer),
                append_numbers(&original),
                "{context}"
            );
            assert_eq!(answer["stream"], original["stream"], "{context}");
        }
        Expected::Refused(status, code) => assert_error(&reply, status, code),
        Expected::WrongVersion { expected, actual } => {
            assert_error(&reply, 409, "wrong_expected_version");
            let error = &reply.json()["error"];
            let echo = "error.expected must be the expected_version as sent";
            assert_eq!(error["expected"], expected, "{echo}; {context}");
            assert_eq!(error["actual"], json!(actual), "{context}");
        }
    }
}

/// Generates and checks one stream read.
fn read_stream(api: &Api, model: &Model, rng: &mut Rng) {
    let stream = if rng.chance(10) {
        NEVER_WRITTEN
    } else {
        *rng.pick(&WRITTEN_STREAMS)
    };
    let version = model.version(stream);
    let backward = rng.chance(40);
    let mut query = Vec::new();
    if backward {
        query.push("direction=backward".to_string());
    } else if rng.chance(30) {
        query.push("direction=forward".to_string());
    }
    let from = rng
        .chance(60)
        .then(|| rng.between(u64::from(backward), version + 2));
    if let Some(from) = from {
        query.push(format!("from={from}"));
    }
    let limit = if rng.chance(70) {
        let limit = if rng.chance(5) {
            10_000
        } else {
            rng.between(1, 20)
        };
        query.push(format!("limit={limit}"));
        limit
    } else {
        STREAM_DEFAULT_LIMIT
    };
    let reply = api.get(&format!("/streams/{stream}?{}", query.join("&")));
    if version == 0 {
        assert_error(&reply, 404, "stream_not_found");
        return;
    }
    let versions: Vec<u64> = if backward {
        let top = from.unwrap_or(version).min(version);
        (top.saturating_sub(limit) + 1..=top).rev().collect()
    } else {
        let start = from.unwrap_or(1).max(1);
        (start..=version.min(start + limit - 1)).collect()
    };
    let positions: Vec<u64> = versions
        .iter()
        .map(|v| {
            let index = model
                .log
                .iter()
                .position(|e| e.stream == stream && e.version == *v)
                .unwrap();
            index as u64 + 1
        })
        .collect();
    let page = assert_page(&reply, model, &positions);
    assert_eq!(page["stream"], json!(stream));
    assert_eq!(page["version"], json!(version), "{page}");
    let next = match (backward, versions.last()) {
        (false, Some(&last)) if last < version => json!(last + 1),
        (true, Some(&last)) if last > 1 => json!(last - 1),
        _ => Value::Null,
    };
    assert_eq!(page["next"], next, "next of {page}");
}

/// A filter on `name` with one or two values, repeated or comma-separated; None if not chosen.
fn random_filter<'a>(
    rng: &mut Rng,
    name: &str,
    values: &[&'a str],
    query: &mut Vec<String>,
) -> Option<Vec<&'a str>> {
    if !rng.chance(35) {
        return None;
    }
    let mut chosen = vec![*rng.pick(values)];
    if rng.chance(50) {
        chosen.push(*rng.pick(values));
    }
    if rng.chance(50) {
        query.push(format!("{name}={}", chosen.join(",")));
    } else {
        query.extend(chosen.iter().map(|value| format!("{name}={value}")));
    }
    Some(chosen)
}

fn category(stream: &str) -> &str {
    stream.split('-').next().unwrap()
}

/// Generates and checks one read of the global log.
fn read_log(api: &Api, model: &Model, rng: &mut Rng) {
    let head = model.log.len() as u64;
    let mut query = Vec::new();
    let from = rng.chance(60).then(|| rng.between(0, head + 2));
    if let Some(from) = from {
        query.push(format!("from={from}"));
    }
    let limit = if rng.chance(70) {
        let limit = rng.between(1, 30);
        query.push(format!("limit={limit}"));
        limit
    } else {
        LOG_DEFAULT_LIMIT
    };
    let categories = random_filter(rng, "category", &CATEGORIES, &mut query);
    let types = random_filter(rng, "type", &TYPES, &mut query);
    let matching: Vec<u64> = model
        .log
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            categories
                .as_ref()
                .is_none_or(|c| c.contains(&category(&e.stream)))
        })
        .filter(|(_, e)| {
            types
                .as_ref()
                .is_none_or(|t| t.contains(&e.event_type.as_str()))
        })
        .map(|(index, _)| index as u64 + 1)
        .filter(|position| *position >= from.unwrap_or(1))
        .collect();
    let positions = &matching[..matching.len().min(limit as usize)];
    let path = format!("/events?{}", query.join("&"));
    let page = assert_page(&api.get(&path), model, positions);
    assert_eq!(page["head"], json!(head), "{path}: {page}");
    let next = &page["next"];
    match positions.last() {
        // A full page with more matches after it must point just past its last event.
        Some(&last) if matching.len() > positions.len() => {
            assert_eq!(next, &json!(last + 1), "{path}: {page}")
        }
        // A full page that happens to end the matches may point past it, unless it ends the log.
        Some(&last) if positions.len() as u64 == limit && last < head => {
            assert!(next.is_null() || next == &json!(last + 1), "{path}: {page}")
        }
        _ => assert!(next.is_null(), "{path}: the page reached the head: {page}"),
    }
}

fn run(seed: u64) {
    let _report = SeedReport {
        var: "EVHOST_MODEL_SEED",
        seed,
    };
    let mut rng = Rng::new(seed);
    let server = Server::start();
    let api = server.api();
    let mut model = Model::default();
    for op in 0..OPERATIONS {
        match rng.below(100) {
            0..=49 => append(&api, &mut model, &mut rng, op),
            50..=74 => read_stream(&api, &model, &mut rng),
            75..=96 => read_log(&api, &model, &mut rng),
            _ => assert_eq!(api.head(), model.log.len() as u64),
        }
    }
    let (log, _) = check_store(&api);
    assert_eq!(log.len(), model.log.len());
    for (index, event) in log.iter().enumerate() {
        assert_served(event, &model, index as u64 + 1);
    }
}

#[test]
fn random_operations_match_the_model() {
    run(seed_from_env("EVHOST_MODEL_SEED"));
}

#[test]
fn fixed_seed_operations_match_the_model() {
    run(20_260_101);
}

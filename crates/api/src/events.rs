//! Events and streams: append, read a stream, read the global log, and follow it live over
//! server-sent events.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::query::{Query, percent_decode};
use super::{App, Body, Role, json_response, raw_json_response, read_body};
use evhost_store::{
    AppendLimits, AppendOutcome, AppendRequest, Direction, EventView, ExpectedVersion, LogFilter,
    ProposedEvent, RecordedEvent, StorageError, category_of, minify_json, validate_event_id,
    validate_event_type, validate_stream_name,
};

/// Page sizes: defaults and maxima of `limit`.
const STREAM_PAGE_DEFAULT: usize = 100;
const STREAM_PAGE_MAX: usize = 10_000;
const LOG_PAGE_DEFAULT: usize = 1_000;
const LOG_PAGE_MAX: usize = 10_000;
/// How many events a follower reads from the store at a time.
const FOLLOW_BATCH: usize = 1_000;
/// How often an idle follower gets a comment line, so proxies and clients see the connection live.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `expected_version` as a client writes it: a number or one of three words.
struct ExpectedVersionField(ExpectedVersion);

impl<'de> Deserialize<'de> for ExpectedVersionField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExpectedVisitor;
        impl Visitor<'_> for ExpectedVisitor {
            type Value = ExpectedVersionField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or one of \"any\", \"no_stream\", \"exists\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                // 0 stays a number (it means the same as "no_stream") so errors echo what was sent.
                Ok(ExpectedVersionField(ExpectedVersion::Exact(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                u64::try_from(n)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: de::Error>(self, word: &str) -> Result<Self::Value, E> {
                match word {
                    "any" => Ok(ExpectedVersionField(ExpectedVersion::Any)),
                    "no_stream" => Ok(ExpectedVersionField(ExpectedVersion::NoStream)),
                    "exists" => Ok(ExpectedVersionField(ExpectedVersion::Exists)),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
        }
        deserializer.deserialize_any(ExpectedVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody<'a> {
    #[serde(default)]
    expected_version: Option<ExpectedVersionField>,
    #[serde(borrow)]
    events: Vec<EventBody<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default, borrow)]
    metadata: Option<&'a RawValue>,
}

/// The stream name of a `/streams/{stream}` path, decoded and checked.
fn stream_name(raw: &str) -> Result<String, ApiError> {
    let name = percent_decode(raw, false, "the stream name")?;
    validate_stream_name(&name).map_err(ApiError::InvalidRequest)?;
    Ok(name)
}

/// `POST /streams/{stream}`.
pub(super) async fn append(
    app: &App,
    raw_name: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let stream = stream_name(raw_name)?;
    let query = Query::parse(request.uri().query(), &["bypass_handler"])?;
    let bypass = match query.single("bypass_handler")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "bypass_handler must be true or false, found {other:?}"
            )));
        }
    };
    // A handler's category holds what its commands decided: a direct append would put events
    // there that the handler never saw. An admin may still do it, saying so.
    if let Some(handler) = app.plugins.category_owner(category_of(&stream)) {
        if !bypass {
            return Err(ApiError::CategoryOwned {
                category: category_of(&stream).to_owned(),
                handler,
            });
        }
        app.tokens.authorize(request.headers(), Role::Admin)?;
    }
    let body = read_body(app, request, app.limits.max_request_bytes).await?;
    let append = parse_append(&app.limits.append, stream, &body)?;
    let count = append.events.len() as u64;
    let stream = append.stream.clone();
    let (status, result) = match app.store.append(append).await? {
        AppendOutcome::Written(result) => {
            app.metrics.appended(count);
            (StatusCode::CREATED, result)
        }
        AppendOutcome::AlreadyWritten(result) => {
            app.metrics.idempotent_append();
            (StatusCode::OK, result)
        }
    };
    Ok(json_response(
        status,
        &serde_json::json!({
            "stream": stream,
            "first_version": result.first_version,
            "last_version": result.last_version,
            "first_position": result.first_position,
            "last_position": result.last_position,
        }),
    ))
}

/// Turns an append body into a checked [`AppendRequest`].
fn parse_append(
    append_limits: &AppendLimits,
    stream: String,
    body: &[u8],
) -> Result<AppendRequest, ApiError> {
    let parsed: AppendBody<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not a valid append: {e}")))?;
    if parsed.events.is_empty() {
        return Err(ApiError::invalid(
            "events is empty; an append needs at least one event",
        ));
    }
    // Checked before the events are built; the store checks the rest of its limits.
    append_limits.check_count(parsed.events.len())?;
    let mut seen_ids = std::collections::HashSet::new();
    let mut events = Vec::with_capacity(parsed.events.len());
    for (index, event) in parsed.events.into_iter().enumerate() {
        let at = |message: String| ApiError::invalid(format!("events[{index}]: {message}"));
        validate_event_type(&event.event_type).map_err(at)?;
        let metadata = event.metadata.map_or("{}", RawValue::get);
        if !metadata.trim_start().starts_with('{') {
            return Err(at("metadata must be a JSON object".into()));
        }
        let id = match event.id {
            Some(id) => {
                validate_event_id(&id).map_err(at)?;
                if !seen_ids.insert(id.clone()) {
                    return Err(at(format!("event id {id:?} appears twice in this append")));
                }
                Some(id.into_owned())
            }
            // The store generates the id, once it knows the event's position.
            None => None,
        };
        events.push(ProposedEvent {
            id,
            event_type: event.event_type.into_owned(),
            data: minify_json(event.data.get()).into_owned(),
            metadata: minify_json(metadata).into_owned(),
        });
    }
    let expected_version = parsed
        .expected_version
        .map_or(ExpectedVersion::Any, |e| e.0);
    Ok(AppendRequest {
        stream,
        expected_version,
        events,
        command: None,
    })
}

/// `GET /streams/{stream}`.
pub(super) async fn read_stream(
    app: &App,
    raw_name: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let stream = stream_name(raw_name)?;
    let query = Query::parse(request.uri().query(), &["from", "limit", "direction"])?;
    let from = query.number("from", u64::MAX)?;
    let limit = query.limit(STREAM_PAGE_DEFAULT, STREAM_PAGE_MAX)?;
    let direction = match query.single("direction")? {
        None | Some("forward") => Direction::Forward,
        Some("backward") => Direction::Backward,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "direction must be forward or backward, found {other:?}"
            )));
        }
    };
    let page = app
        .store
        .read_stream(&stream, from, limit, direction)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "stream_not_found",
                format!("stream {stream:?} does not exist"),
            )
        })?;
    let mut opening = b"{\"stream\":".to_vec();
    serde_json::to_writer(&mut opening, &stream).expect("writing to a Vec cannot fail");
    opening.extend_from_slice(format!(",\"version\":{},\"events\":", page.version).as_bytes());
    let closing = format!(",\"next\":{}}}", json_option(page.next));
    Ok(raw_json_response(
        StatusCode::OK,
        page_body(&opening, &page.events, &closing),
    ))
}

/// The filter and start of a global log read, from its query and headers.
struct LogQuery {
    from: u64,
    limit: usize,
    filter: LogFilter,
}

fn log_query(request: &Request<Incoming>) -> Result<LogQuery, ApiError> {
    let query = Query::parse(
        request.uri().query(),
        &["from", "limit", "category", "type"],
    )?;
    let from = query.number("from", u64::MAX)?.unwrap_or(1);
    let limit = query.limit(LOG_PAGE_DEFAULT, LOG_PAGE_MAX)?;
    let filter = LogFilter {
        categories: query.list("category"),
        event_types: query.list("type"),
    };
    for event_type in &filter.event_types {
        validate_event_type(event_type)
            .map_err(|m| ApiError::invalid(format!("type filter: {m}")))?;
    }
    Ok(LogQuery {
        from,
        limit,
        filter,
    })
}

/// `GET /events`.
pub(super) async fn read_log(
    app: &App,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let LogQuery {
        from,
        limit,
        filter,
    } = log_query(request)?;
    let page = app.store.read_log(from, limit, &filter).await?;
    let closing = format!(
        ",\"next\":{},\"head\":{}}}",
        json_option(page.next),
        page.head
    );
    Ok(raw_json_response(
        StatusCode::OK,
        page_body(b"{\"events\":", &page.events, &closing),
    ))
}

/// A page as JSON: `opening` (ending in `"events":`), the records as stored in an array, then
/// `closing` (the remaining fields and the closing brace), in one buffer sized up front.
pub(super) fn page_body(opening: &[u8], events: &[RecordedEvent], closing: &str) -> Vec<u8> {
    let records: usize = events.iter().map(|e| e.json.len() + 1).sum();
    let mut out = Vec::with_capacity(opening.len() + records + 1 + closing.len());
    out.extend_from_slice(opening);
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&event.json);
    }
    out.push(b']');
    out.extend_from_slice(closing.as_bytes());
    out
}

fn json_option(value: Option<u64>) -> String {
    value.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

/// Whether a `GET /events` asks for server-sent events.
pub(super) fn wants_event_stream(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// `GET /events` with `Accept: text/event-stream`: the log from a position on, then live events.
pub(super) fn follow(
    app: &std::sync::Arc<App>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let LogQuery { from, filter, .. } = log_query(request)?;
    let resume_after = match request.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Last-Event-ID must be the position of the last event received",
                    )
                })?,
        ),
    };
    // Last-Event-ID names the last event seen, so the stream resumes just after it.
    let start = resume_after
        .map_or(from, |last| last.saturating_add(1))
        .max(1);
    let (sender, receiver) = mpsc::channel(8);
    tokio::spawn(feed_follower(app.clone(), start, filter, sender));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache")
        .body(ChannelBody(receiver).boxed())
        .expect("a static response is valid"))
}

/// Sends the log from `next` on to a follower, then waits for new heads. It wakes only when an
/// append commits, when the keep-alive is due, when the client leaves, or when the host stops.
async fn feed_follower(
    app: std::sync::Arc<App>,
    mut next: u64,
    filter: LogFilter,
    sender: mpsc::Sender<Bytes>,
) {
    let _counted = app.metrics.follower();
    let mut heads = app.store.watch_head();
    let mut stopping = app.stopping.clone();
    // A follower that arrives while the host is stopping would otherwise wait for a change that
    // already happened.
    if *stopping.borrow() {
        return;
    }
    if sender
        .send(Bytes::from_static(b": following\n\n"))
        .await
        .is_err()
    {
        return;
    }
    let mut retry = Duration::from_millis(50);
    loop {
        let page = match app.store.read_log(next, FOLLOW_BATCH, &filter).await {
            Ok(page) => page,
            // The database restarting or failing over: the follower waits for it rather than
            // ending the stream, and goes on from where it was.
            Err(StorageError::Unavailable(reason)) => {
                tracing::warn!("a follower waits for the store: {reason}");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = sender.closed() => return,
                    _ = stopping.changed() => return,
                }
                retry = (retry * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(error) => {
                tracing::error!("a follower stopped: {error}");
                return;
            }
        };
        retry = Duration::from_millis(50);
        if !page.events.is_empty() {
            let mut chunk = Vec::with_capacity(page.events.iter().map(|e| e.json.len() + 48).sum());
            for event in &page.events {
                write_sse_event(&mut chunk, event);
            }
            if sender.send(chunk.into()).await.is_err() {
                return;
            }
        }
        match page.next {
            Some(position) => {
                next = position;
                continue;
            }
            None => next = next.max(page.head + 1),
        }
        loop {
            tokio::select! {
                changed = heads.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *heads.borrow() >= next {
                        break;
                    }
                }
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    if sender.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                        return;
                    }
                }
                () = sender.closed() => return,
                _ = stopping.changed() => return,
            }
        }
    }
}

fn write_sse_event(out: &mut Vec<u8>, event: &RecordedEvent) {
    let event_type = EventView::parse(&event.json)
        .map(|v| v.event_type.into_owned())
        .unwrap_or_default();
    out.extend_from_slice(
        format!("id: {}\nevent: {event_type}\ndata: ", event.position).as_bytes(),
    );
    out.extend_from_slice(&event.json);
    out.extend_from_slice(b"\n\n");
}

/// A response body fed by a channel; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<AppendRequest, ApiError> {
        parse_append(&AppendLimits::default(), "s".into(), body.as_bytes())
    }

    #[test]
    fn expected_version_accepts_numbers_and_words() {
        let version = |v: &str| {
            parse(&format!(
                r#"{{"expected_version":{v},"events":[{{"type":"T","data":1}}]}}"#
            ))
        };
        assert_eq!(
            version("0").unwrap().expected_version,
            ExpectedVersion::Exact(0)
        );
        assert!(ExpectedVersion::Exact(0).admits(0) && !ExpectedVersion::Exact(0).admits(1));
        assert_eq!(
            version("7").unwrap().expected_version,
            ExpectedVersion::Exact(7)
        );
        assert_eq!(
            version("\"exists\"").unwrap().expected_version,
            ExpectedVersion::Exists
        );
        assert_eq!(
            version("null").unwrap().expected_version,
            ExpectedVersion::Any
        );
        for bad in ["-1", "1.5", "\"some\"", "{}", "[]", "true"] {
            assert!(
                matches!(version(bad), Err(ApiError::InvalidRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn events_are_checked_and_minified() {
        let request =
            parse(r#"{"events":[{"type":"T","data":{ "a" : [1, 2] },"metadata":{ "k": "v w" }}]}"#)
                .unwrap();
        assert_eq!(request.events[0].data, r#"{"a":[1,2]}"#);
        assert_eq!(request.events[0].metadata, r#"{"k":"v w"}"#);
        assert!(request.events[0].id.is_none());
        assert!(matches!(
            parse(r#"{"events":[{"type":"T","data":1,"metadata":[1]}]}"#),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse(r#"{"events":[{"type":"T"}]}"#),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse(r#"{"events":[]}"#),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse(r#"{"events":[{"id":"a","type":"T","data":1},{"id":"a","type":"T","data":2}]}"#),
            Err(ApiError::InvalidRequest(_))
        ));
    }
}

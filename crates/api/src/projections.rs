//! Read models and the operator's controls of a running projection:
//! `GET /projections/{name}/keys/{key}`, `GET /projections/{name}/keys?prefix=&after=&limit=`,
//! `GET /projections/{name}/query/{path}?{params}`, and `POST /plugins/{name}/pause|resume`,
//! `GET /plugins/{name}/parked`, `POST /plugins/{name}/parked/{position}/retry|skip`.
//!
//! Every read accepts `min_position` (wait until the projection has processed that position, at
//! most `timeout_ms`, else 504 `not_caught_up`) and answers with `Evhost-Position`, the position
//! the state read reflects at least.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::ApiError;
use super::query::{Query, pairs_except, percent_decode};
use super::{App, Body, error_response, json_response, raw_json_response};
use evhost_engine::plugins::{HandlerLookupError, Runner};
use evhost_engine::policies::RetryError;
use evhost_engine::projections::{ControlError, ProjectionRunner, StateReader};

/// The header naming the position a read model answer reflects.
const POSITION_HEADER: &str = "evhost-position";
/// The header naming the projection version whose state answered.
const VERSION_HEADER: &str = "evhost-version";
/// How long a read waits for `min_position` by default, and at most.
const DEFAULT_WAIT_MS: u64 = 5_000;
const MAX_WAIT_MS: u64 = 60_000;
/// Keys per page of a listing: by default, and at most.
const DEFAULT_KEYS: usize = 100;
const MAX_KEYS: usize = 1_000;
/// The parameters the host reads itself on every read model route.
const READ_PARAMETERS: &[&str] = &["min_position", "timeout_ms", "version"];

/// `GET /projections/{rest}`.
pub(super) async fn read(
    app: &App,
    rest: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (raw_name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let name = percent_decode(raw_name, false, "the projection name")?;
    let raw_query = request.uri().query();
    if let Some(raw_key) = tail.strip_prefix("keys/") {
        let key = percent_decode(raw_key, false, "the key")?;
        let query = Query::parse(raw_query, READ_PARAMETERS)?;
        let (reader, at) = reader(app, &name, &query).await?;
        let value = reader.get(&key).await?;
        // An absent key is an answer about the state too: it carries the position it holds at.
        let response = match value {
            Some(value) => raw_json_response(StatusCode::OK, value),
            None => error_response(
                app,
                ApiError::not_found(
                    "key_not_found",
                    format!(
                        "projection {name:?} has no key {key:?} at position {}",
                        at.position
                    ),
                ),
            ),
        };
        return Ok(at.mark(response));
    }
    if tail == "keys" {
        let mut allowed = READ_PARAMETERS.to_vec();
        allowed.extend(["prefix", "after", "limit"]);
        let query = Query::parse(raw_query, &allowed)?;
        let prefix = query.single("prefix")?.unwrap_or_default().to_owned();
        let after = query.single("after")?.map(str::to_owned);
        let limit = query.limit(DEFAULT_KEYS, MAX_KEYS)?;
        let (reader, at) = reader(app, &name, &query).await?;
        // One more than asked tells whether a next page exists.
        let mut entries = reader.scan(&prefix, after.as_deref(), limit + 1).await?;
        let next = (entries.len() > limit).then(|| {
            entries.truncate(limit);
            entries.last().map(|(key, _)| key.clone())
        });
        let items = entries
            .into_iter()
            .map(|(key, value)| {
                let value: serde_json::Value = serde_json::from_slice(&value)
                    .map_err(|e| ApiError::Internal(format!("a stored value is not JSON: {e}")))?;
                Ok(serde_json::json!({"key": key, "value": value}))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let body = serde_json::json!({"items": items, "next": next.flatten()});
        return Ok(at.mark(json_response(StatusCode::OK, &body)));
    }
    if let Some(raw_path) = tail.strip_prefix("query/") {
        let path = percent_decode(raw_path, false, "the query path")?;
        let query = Query::parse_where(raw_query, READ_PARAMETERS, |name| {
            !READ_PARAMETERS.contains(&name)
        })?;
        let params = pairs_except(raw_query, READ_PARAMETERS)?;
        let runner = projection(app, &name, &query)?;
        let (reader, at) = reader_of(&runner, &query).await?;
        let _admitted = app.plugins.admission.admit(&name).await?;
        let querying = runner.clone();
        let answer = runner
            .threads()
            .run(move || querying.query(reader, &path, &params))
            .await;
        let json = match answer {
            Ok(Ok(json)) => json,
            Ok(Err(reason)) => {
                let refused = error_response(app, ApiError::QueryRejected(reason));
                return Ok(at.mark(refused));
            }
            Err(failure) => {
                return Err(ApiError::PluginFailed(format!(
                    "projection {name} failed to answer the query: {failure}"
                )));
            }
        };
        serde_json::from_str::<serde::de::IgnoredAny>(&json).map_err(|e| {
            ApiError::PluginFailed(format!(
                "projection {name} answered the query with text that is not JSON: {e}"
            ))
        })?;
        return Ok(at.mark(raw_json_response(StatusCode::OK, json.into_bytes())));
    }
    Err(ApiError::not_found(
        "not_found",
        format!("no route for {}", request.uri().path()),
    ))
}

/// The runner of projection `name`: its active version, or the running version `version=`
/// names.
fn projection(app: &App, name: &str, query: &Query) -> Result<Arc<ProjectionRunner>, ApiError> {
    let version = query.single("version")?;
    app.plugins.projection(name, version).map_err(lookup_error)
}

pub(super) fn lookup_error(error: HandlerLookupError) -> ApiError {
    match error {
        HandlerLookupError::NotFound(name) => ApiError::not_found(
            "plugin_not_found",
            format!("no plugin named {name:?} is deployed"),
        ),
        wrong @ HandlerLookupError::WrongKind { .. } => ApiError::invalid(wrong.to_string()),
        failed @ HandlerLookupError::Failed { .. } => ApiError::PluginFailed(failed.to_string()),
        missing @ HandlerLookupError::VersionNotRunning { .. } => {
            ApiError::not_found("version_not_found", missing.to_string())
        }
    }
}

/// Which state answered a read: the version, and the position it reflects at least.
struct Answered {
    version: String,
    position: u64,
}

impl Answered {
    /// Names the state in the response's headers.
    fn mark(&self, mut response: Response<Body>) -> Response<Body> {
        let headers = response.headers_mut();
        headers.insert(POSITION_HEADER, HeaderValue::from(self.position));
        if let Ok(version) = HeaderValue::from_str(&self.version) {
            headers.insert(VERSION_HEADER, version);
        }
        response
    }
}

async fn reader(app: &App, name: &str, query: &Query) -> Result<(StateReader, Answered), ApiError> {
    let runner = projection(app, name, query)?;
    reader_of(&runner, query).await
}

/// Waits for `min_position`, then takes a snapshot of the runner's state.
async fn reader_of(
    runner: &ProjectionRunner,
    query: &Query,
) -> Result<(StateReader, Answered), ApiError> {
    let timeout = query
        .number("timeout_ms", MAX_WAIT_MS)?
        .unwrap_or(DEFAULT_WAIT_MS);
    if let Some(wanted) = query.number("min_position", u64::MAX)? {
        runner
            .wait_for(wanted, Duration::from_millis(timeout))
            .await
            .map_err(|e| ApiError::NotCaughtUp {
                wanted: e.wanted,
                reached: e.reached,
            })?;
    }
    let (reader, position) = runner.reader().await?;
    let answered = Answered {
        version: runner.version.clone(),
        position,
    };
    Ok((reader, answered))
}

/// `POST /plugins/{name}/pause|resume`, `GET /plugins/{name}/parked`,
/// `POST /plugins/{name}/parked/{position}/retry|skip`, for projections and policies.
pub(super) async fn control(
    app: &App,
    raw_name: &str,
    action: &str,
    request: &http::request::Parts,
) -> Result<Response<Body>, ApiError> {
    let query = Query::parse(request.uri.query(), &["version"])?;
    let name = percent_decode(raw_name, false, "the plugin name")?;
    let runner = app
        .plugins
        .runner(&name, query.single("version")?)
        .map_err(lookup_error)?;
    let get = request.method == http::Method::GET;
    let no_route =
        || ApiError::not_found("not_found", format!("no route for {}", request.uri.path()));
    let not_parked = |position: u64| {
        ApiError::not_found(
            "not_found",
            format!("no event is parked at position {position}"),
        )
    };
    let mut retry_error = None;
    match (action, get) {
        ("pause", false) => runner.pause().await?,
        ("resume", false) => runner.resume().await?,
        ("parked", true) => {
            let parked = match &runner {
                Runner::Projection(r) => serde_json::to_value(r.parked()),
                Runner::Policy(r) => serde_json::to_value(r.parked().await?),
            };
            return Ok(json_response(
                StatusCode::OK,
                &parked.expect("parked items serialize"),
            ));
        }
        ("pause" | "resume" | "promote" | "rollback", true) | ("parked", false) => {
            return Err(ApiError::MethodNotAllowed);
        }
        _ => {
            let (raw_position, verb) = action
                .strip_prefix("parked/")
                .and_then(|rest| rest.split_once('/'))
                .ok_or_else(no_route)?;
            let position: u64 = raw_position.parse().map_err(|_| {
                ApiError::invalid(format!(
                    "a parked position is a number, not {raw_position:?}"
                ))
            })?;
            match (verb, get, &runner) {
                ("skip" | "retry", true, _) => return Err(ApiError::MethodNotAllowed),
                ("skip", false, Runner::Projection(r)) => {
                    r.skip(position).await.map_err(|e| match e {
                        ControlError::NotParked(p) => not_parked(p),
                        ControlError::Storage(storage) => storage.into(),
                    })?;
                }
                ("retry", false, Runner::Projection(r)) => {
                    if !r.parked().iter().any(|p| p.position == Some(position)) {
                        return Err(not_parked(position));
                    }
                    r.resume().await?;
                }
                ("skip", false, Runner::Policy(r)) => {
                    if !r.skip(position).await? {
                        return Err(not_parked(position));
                    }
                }
                ("retry", false, Runner::Policy(r)) => {
                    retry_error = r.retry(position).await.map_err(|e| match e {
                        RetryError::NotParked(p) => not_parked(p),
                        RetryError::Storage(storage) => storage.into(),
                    })?;
                }
                _ => return Err(no_route()),
            }
        }
    }
    let (status, position, error) = runner.progress(app.store.head());
    let mut body = serde_json::json!({
        "name": name,
        "status": status,
        "position": position,
        "error": error,
    });
    if let Some(retry_error) = retry_error {
        // The retry failed again: the event stays parked.
        body["retry_error"] = retry_error.into();
    }
    Ok(json_response(StatusCode::OK, &body))
}

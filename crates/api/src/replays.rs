//! Dry-run replays: `POST /plugins/{name}/replays` starts one, `GET /replays/{id}` shows its
//! progress and report, `GET /replays` lists them, `POST /replays/{id}/cancel` stops one.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::ApiError;
use super::query::{Query, percent_decode};
use super::{App, Body, json_response, read_body};
use evhost_engine::replays::{DEFAULT_DIFFERENCES, MAX_DIFFERENCES, ReplayRequest, StartError};

/// The body of `POST /plugins/{name}/replays`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    version: String,
    from: Option<u64>,
    to: Option<u64>,
    /// How many differences the report shows in full.
    differences: Option<usize>,
}

/// `POST /plugins/{name}/replays`.
pub(super) async fn start(
    app: &App,
    raw_name: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Query::parse(request.uri().query(), &[])?;
    let name = percent_decode(raw_name, false, "the plugin name")?;
    let body = read_body(app, request, app.limits.max_request_bytes).await?;
    let body: StartBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(format!(
            "the body must be {{\"version\": string, \"from\"?: position, \"to\"?: position, \
             \"differences\"?: number}}: {e}"
        ))
    })?;
    let differences = body.differences.unwrap_or(DEFAULT_DIFFERENCES);
    if differences > MAX_DIFFERENCES {
        return Err(ApiError::invalid(format!(
            "differences is at most {MAX_DIFFERENCES}, not {differences}"
        )));
    }
    let request = ReplayRequest {
        version: body.version,
        from: body.from,
        to: body.to,
        differences,
    };
    let replay = app
        .replays
        .start(&name, request)
        .await
        .map_err(|error| match error {
            StartError::Version(version) => super::plugins::version_error(version),
            StartError::Invalid(message) => ApiError::InvalidRequest(message),
            StartError::Busy => ApiError::Conflict {
                code: "too_many_replays",
                message: error.to_string(),
            },
        })?;
    Ok(json_response(StatusCode::ACCEPTED, &replay.to_json()))
}

/// `GET /replays` and `GET /replays/{id}`.
pub(super) fn show(
    app: &App,
    raw_id: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Query::parse(request.uri().query(), &[])?;
    if raw_id.is_empty() {
        let listed: Vec<serde_json::Value> = app
            .replays
            .list()
            .iter()
            .map(|replay| {
                let mut summary = replay.to_json();
                // A listing shows progress; the reports are read one by one.
                summary["report"] = serde_json::Value::Null;
                summary
            })
            .collect();
        return Ok(json_response(StatusCode::OK, &listed.into()));
    }
    let id = percent_decode(raw_id, false, "the replay id")?;
    let replay = app.replays.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(json_response(StatusCode::OK, &replay.to_json()))
}

/// `POST /replays/{id}/cancel`.
pub(super) async fn cancel(
    app: &App,
    rest: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Query::parse(request.uri().query(), &[])?;
    let raw_id = rest.strip_suffix("/cancel").ok_or_else(|| {
        ApiError::not_found(
            "not_found",
            format!("no route for {}", request.uri().path()),
        )
    })?;
    let id = percent_decode(raw_id, false, "the replay id")?;
    let replay = app
        .replays
        .cancel(&id)
        .await
        .ok_or_else(|| not_found(&id))?;
    Ok(json_response(StatusCode::OK, &replay.to_json()))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "replay_not_found",
        format!("no replay {id:?} in this process (replays are forgotten when the host restarts)"),
    )
}

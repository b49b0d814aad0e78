//! Plugins: deploy (`POST /plugins` with the component as the body), list and show.

use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::ApiError;
use super::query::{Query, percent_decode};
use super::{App, Body, json_response, read_body};
use crate::plugins::{DeployError, LimitOverrides};
use crate::runtime::{MAX_MEMORY_MIB, MAX_TIMEOUT_MS};

/// Content types a deploy may carry: the component's own, or plain bytes.
const ACCEPTED_TYPES: &[&str] = &["application/wasm", "application/octet-stream"];

/// `POST /plugins`.
pub(super) async fn deploy(
    app: &App,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    // The body is read before anything is checked: a client sending a large component sees the
    // answer only once it has sent the whole of it.
    let uri = request.uri().clone();
    let content_type = request.headers().get(CONTENT_TYPE).cloned();
    let wasm = read_body(request, app.limits.max_plugin_bytes).await?;
    let query = Query::parse(uri.query(), &["memory_mib", "timeout_ms", "promote"])?;
    let overrides = LimitOverrides {
        memory_mib: query.positive("memory_mib", MAX_MEMORY_MIB)?,
        timeout_ms: query.positive("timeout_ms", MAX_TIMEOUT_MS)?,
    };
    // Projections are promoted automatically or by hand; a handler takes over at once either way.
    if let Some(promote) = query.single("promote")?
        && !["auto", "manual"].contains(&promote)
    {
        return Err(ApiError::invalid(format!(
            "query parameter promote must be auto or manual, found {promote:?}"
        )));
    }
    if let Some(content_type) = content_type {
        let essence = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !ACCEPTED_TYPES.contains(&essence.as_str()) {
            return Err(ApiError::invalid(format!(
                "a plugin is uploaded as application/wasm, not {essence:?}"
            )));
        }
    }
    let deployed = app
        .plugins
        .deploy(&wasm, overrides)
        .await
        .map_err(|error| match error {
            DeployError::Invalid(invalid) => ApiError::InvalidPlugin(invalid.0),
            DeployError::Storage(storage) => storage.into(),
        })?;
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &serde_json::to_value(&deployed).expect("a deploy answer serializes"),
    ))
}

/// `GET /plugins`.
pub(super) fn list(app: &App, request: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    Query::parse(request.uri().query(), &[])?;
    Ok(json_response(StatusCode::OK, &app.plugins.list().into()))
}

/// `GET /plugins/{name}`.
pub(super) fn show(
    app: &App,
    raw_name: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Query::parse(request.uri().query(), &[])?;
    let name = percent_decode(raw_name, false, "the plugin name")?;
    let details = app.plugins.details(&name).ok_or_else(|| {
        ApiError::not_found(
            "plugin_not_found",
            format!("no plugin named {name:?} is deployed"),
        )
    })?;
    Ok(json_response(StatusCode::OK, &details))
}

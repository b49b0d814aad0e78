//! Plugins: deploy (`POST /plugins` with the component as the body), list and show, and switch
//! between versions: `POST /plugins/{name}/promote`, `POST /plugins/{name}/rollback`,
//! `DELETE /plugins/{name}/versions/{version}`.

use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::ApiError;
use super::query::{Query, percent_decode};
use super::{App, Body, json_response, read_body};
use evhost_engine::plugins::{DeployOptions, Promote, Switch, VersionError};
use evhost_runtime::{MAX_MEMORY_MIB, MAX_STATE_MIB, MAX_TIMEOUT_MS};

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
    let wasm = read_body(app, request, app.limits.max_plugin_bytes).await?;
    let query = Query::parse(
        uri.query(),
        &["memory_mib", "timeout_ms", "state_mib", "promote"],
    )?;
    let promote = match query.single("promote")? {
        None => None,
        Some("auto") => Some(Promote::Auto),
        Some("manual") => Some(Promote::Manual),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "query parameter promote must be auto or manual, found {other:?}"
            )));
        }
    };
    let options = DeployOptions {
        memory_mib: query.positive("memory_mib", MAX_MEMORY_MIB)?,
        timeout_ms: query.positive("timeout_ms", MAX_TIMEOUT_MS)?,
        state_mib: query.positive("state_mib", MAX_STATE_MIB)?,
        promote,
    };
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
        .deploy(&wasm, options)
        .await
        .map_err(version_error)?;
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
pub(super) async fn show(
    app: &App,
    raw_name: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Query::parse(request.uri().query(), &[])?;
    let name = percent_decode(raw_name, false, "the plugin name")?;
    let details = app.plugins.details(&name).await?.ok_or_else(|| {
        ApiError::not_found(
            "plugin_not_found",
            format!("no plugin named {name:?} is deployed"),
        )
    })?;
    Ok(json_response(StatusCode::OK, &details))
}

/// The body of `POST /plugins/{name}/promote`; without a version, the candidate is promoted.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    version: Option<String>,
}

/// `POST /plugins/{name}/promote` and `POST /plugins/{name}/rollback`.
pub(super) async fn switch(
    app: &App,
    raw_name: &str,
    rollback: bool,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Query::parse(request.uri().query(), &[])?;
    let name = percent_decode(raw_name, false, "the plugin name")?;
    let body = read_body(app, request, app.limits.max_request_bytes).await?;
    let switched = if rollback {
        app.plugins.rollback(&name).await
    } else {
        // An empty body promotes the candidate.
        let promote: PromoteBody = if body.iter().all(u8::is_ascii_whitespace) {
            PromoteBody { version: None }
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                ApiError::invalid(format!("the body must be {{\"version\": string}}: {e}"))
            })?
        };
        app.plugins.promote(&name, promote.version.as_deref()).await
    };
    let switched: Option<Switch> = switched.map_err(version_error)?;
    let details = app.plugins.details(&name).await?.ok_or_else(|| {
        ApiError::not_found(
            "plugin_not_found",
            format!("no plugin named {name:?} is deployed"),
        )
    })?;
    let body = serde_json::json!({
        "name": name,
        "active_version": details["active_version"],
        "previous_version": details["previous_version"],
        "candidate_version": details["candidate_version"],
        "switched": switched.is_some(),
        "switch": switched,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// `DELETE /plugins/{name}/versions/{version}`.
pub(super) async fn delete_version(
    app: &App,
    raw_name: &str,
    raw_version: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Query::parse(request.uri().query(), &[])?;
    let name = percent_decode(raw_name, false, "the plugin name")?;
    let version = percent_decode(raw_version, false, "the version")?;
    let freed = app
        .plugins
        .delete_version(&name, &version)
        .await
        .map_err(version_error)?;
    let body = serde_json::json!({
        "name": name,
        "version": version,
        "deleted": true,
        "state_entries_freed": freed,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// The answer to a refused change of versions.
pub(super) fn version_error(error: VersionError) -> ApiError {
    let message = error.to_string();
    match error {
        VersionError::Invalid(invalid) => ApiError::InvalidPlugin(invalid.0),
        VersionError::Storage(storage) => storage.into(),
        VersionError::PluginNotFound(_) => ApiError::not_found("plugin_not_found", message),
        VersionError::VersionNotFound { .. } => ApiError::not_found("version_not_found", message),
        VersionError::NoCandidate(_) => ApiError::Conflict {
            code: "no_candidate",
            message,
        },
        VersionError::NoPrevious(_) => ApiError::Conflict {
            code: "no_previous_version",
            message,
        },
        VersionError::Active { .. } => ApiError::Conflict {
            code: "version_active",
            message,
        },
        VersionError::NotReady { .. } => ApiError::Conflict {
            code: "version_not_ready",
            message,
        },
    }
}

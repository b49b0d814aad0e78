//! Commands: `POST /handlers/{handler}/commands` and `GET /commands/{id}`.

use std::borrow::Cow;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use super::events::page_body;
use super::query::{Query, percent_decode};
use super::{App, Body, raw_json_response, read_body};
use evhost_engine::commands::{CommandError, CommandOutcome, CommandRequest};
use evhost_engine::plugins::HandlerLookupError;
use evhost_store::{minify_json, validate_event_id, validate_event_type, validate_stream_name};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    command_type: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    metadata: Option<&'a RawValue>,
}

/// `POST /handlers/{handler}/commands`.
pub(super) async fn send(
    app: &App,
    raw_handler: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let handler = percent_decode(raw_handler, false, "the handler name")?;
    Query::parse(request.uri().query(), &[])?;
    let body = read_body(app, request, app.limits.max_request_bytes).await?;
    let command = parse_command(app, &body)?;
    let outcome = app
        .commands
        .execute(&handler, command)
        .await
        .map_err(command_error)?;
    match outcome {
        CommandOutcome::Applied {
            command_id,
            events,
            position,
        } => {
            let opening = format!(
                "{{\"command_id\":{},\"events\":",
                serde_json::to_string(&command_id).expect("a string serializes")
            );
            let closing = format!(",\"position\":{position}}}");
            Ok(raw_json_response(
                StatusCode::OK,
                page_body(opening.as_bytes(), &events, &closing),
            ))
        }
        CommandOutcome::Rejected { command_id, reason } => {
            Err(ApiError::CommandRejected { command_id, reason })
        }
    }
}

/// `GET /commands/{id}`: the record, the events the command produced and the last position.
pub(super) async fn show(
    app: &App,
    raw_id: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Query::parse(request.uri().query(), &[])?;
    let id = percent_decode(raw_id, false, "the command id")?;
    let not_found = || {
        ApiError::not_found(
            "command_not_found",
            format!("no command {id:?} is recorded"),
        )
    };
    let (stored, events) = app.commands.recorded(&id).await?.ok_or_else(not_found)?;
    // The record is a JSON object: open it up and append the events and the position.
    let record = std::str::from_utf8(&stored.record)
        .ok()
        .and_then(|text| text.trim_end().strip_suffix('}'))
        .ok_or_else(|| ApiError::Internal(format!("the record of command {id:?} is corrupt")))?;
    let opening = format!("{record},\"events\":");
    let closing = format!(",\"position\":{}}}", stored.position);
    Ok(raw_json_response(
        StatusCode::OK,
        page_body(opening.as_bytes(), &events, &closing),
    ))
}

fn parse_command(app: &App, body: &[u8]) -> Result<CommandRequest, ApiError> {
    let parsed: CommandBody<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not a valid command: {e}")))?;
    validate_stream_name(&parsed.stream).map_err(ApiError::InvalidRequest)?;
    validate_event_type(&parsed.command_type)
        .map_err(|e| ApiError::invalid(format!("command {}", e.replacen("event ", "", 1))))?;
    if let Some(id) = &parsed.id {
        validate_event_id(id)
            .map_err(|e| ApiError::invalid(format!("command {}", e.replacen("event ", "", 1))))?;
    }
    let metadata = parsed.metadata.map_or("{}", RawValue::get);
    if !metadata.trim_start().starts_with('{') {
        return Err(ApiError::invalid("metadata must be a JSON object"));
    }
    let size = parsed.data.get().len() + metadata.len();
    if size > app.limits.max_command_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "the command has {size} bytes of data and metadata; the limit is {}",
            app.limits.max_command_bytes
        )));
    }
    Ok(CommandRequest {
        id: parsed.id.map(Cow::into_owned),
        stream: parsed.stream.into_owned(),
        command_type: parsed.command_type.into_owned(),
        data: minify_json(parsed.data.get()).into_owned(),
        metadata: minify_json(metadata).into_owned(),
    })
}

fn command_error(error: CommandError) -> ApiError {
    match error {
        CommandError::Handler(HandlerLookupError::NotFound(name)) => ApiError::not_found(
            "plugin_not_found",
            format!("no handler named {name:?} is deployed"),
        ),
        CommandError::Handler(lookup) => super::projections::lookup_error(lookup),
        CommandError::Invalid(message) => ApiError::InvalidRequest(message),
        error @ CommandError::IdReused { .. } => ApiError::CommandIdReused(error.to_string()),
        error @ CommandError::PluginFailed { .. } => ApiError::PluginFailed(error.to_string()),
        error @ CommandError::RetriesExhausted { .. } => {
            ApiError::RetriesExhausted(error.to_string())
        }
        CommandError::Busy(busy) => busy.into(),
        CommandError::Storage(storage) => storage.into(),
    }
}

//! The one error type of the HTTP API: each variant knows its status and its `code`, and renders
//! as `{"error": {"code", "message", ...details}}`.
//!
//! Client mistakes are answered, not logged as errors; internal failures are logged in full and
//! answered with a generic message.

use http::StatusCode;
use serde_json::{Map, Value, json};

use evhost_store::{CommitError, StorageError};

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed or breaks a documented rule.
    InvalidRequest(String),
    /// 401: no valid token.
    Unauthorized,
    /// 403: the token's role may not do this.
    Forbidden { needed: &'static str },
    /// 404 with a specific code (`stream_not_found`, ...) or `not_found` for unknown routes.
    NotFound { code: &'static str, message: String },
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409 `wrong_expected_version`.
    WrongExpectedVersion { expected: Value, actual: u64 },
    /// 409 `duplicate_event_id`.
    DuplicateEventId { id: String, message: String },
    /// 413: a body, an event or a count above its limit.
    PayloadTooLarge(String),
    /// 400 `invalid_plugin`: the upload is not a plugin this host can run.
    InvalidPlugin(String),
    /// 422 `command_rejected`: the handler refused the command, for this reason.
    CommandRejected { command_id: String, reason: String },
    /// 500 `plugin_failed`: the plugin trapped, ran out of time or memory, or answered nonsense.
    PluginFailed(String),
    /// 409 with a specific code: the request conflicts with the state of a plugin's versions
    /// (`version_active`, `version_not_ready`, `no_candidate`, `no_previous_version`).
    Conflict { code: &'static str, message: String },
    /// 409 `concurrency_retries_exhausted`: the stream kept changing under the command.
    RetriesExhausted(String),
    /// 409 `command_id_reused`: the id is recorded for a different command.
    CommandIdReused(String),
    /// 504 `not_caught_up`: a read waited for a position the projection did not reach in time.
    NotCaughtUp { wanted: u64, reached: u64 },
    /// 400 `query_rejected`: the projection's `query` refused the request, for this reason.
    QueryRejected(String),
    /// 500: a failure of the host; the details go to the log only.
    Internal(String),
    /// 503: the host is shutting down.
    Unavailable,
    /// 403 `category_owned`: the stream is in a category a handler owns; its events come from
    /// the handler's commands.
    CategoryOwned { category: String, handler: String },
    /// 408 `request_timeout`: the request body did not arrive in time.
    RequestTimeout(String),
    /// 503 `overloaded`, with `Retry-After`: too much work is waiting already (plugin calls
    /// queued past their bound); the request did nothing and may be sent again.
    Overloaded(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::CategoryOwned { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::WrongExpectedVersion { .. }
            | ApiError::DuplicateEventId { .. }
            | ApiError::RetriesExhausted(_)
            | ApiError::CommandIdReused(_)
            | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidPlugin(_) => StatusCode::BAD_REQUEST,
            ApiError::CommandRejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PluginFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotCaughtUp { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::QueryRejected(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::CategoryOwned { .. } => "category_owned",
            ApiError::NotFound { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::WrongExpectedVersion { .. } => "wrong_expected_version",
            ApiError::DuplicateEventId { .. } => "duplicate_event_id",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::InvalidPlugin(_) => "invalid_plugin",
            ApiError::CommandRejected { .. } => "command_rejected",
            ApiError::PluginFailed(_) => "plugin_failed",
            ApiError::RetriesExhausted(_) => "concurrency_retries_exhausted",
            ApiError::CommandIdReused(_) => "command_id_reused",
            ApiError::Internal(_) => "internal_error",
            ApiError::Unavailable => "unavailable",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::NotCaughtUp { .. } => "not_caught_up",
            ApiError::QueryRejected(_) => "query_rejected",
        }
    }

    /// The JSON body of the error response.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), self.code().into());
        let message = match self {
            ApiError::InvalidRequest(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::PluginFailed(m)
            | ApiError::RetriesExhausted(m)
            | ApiError::CommandIdReused(m)
            | ApiError::RequestTimeout(m)
            | ApiError::Overloaded(m) => m.clone(),
            ApiError::InvalidPlugin(reason) => {
                error.insert("reason".into(), reason.clone().into());
                format!("the upload is not a valid plugin: {reason}")
            }
            ApiError::CommandRejected { command_id, reason } => {
                error.insert("reason".into(), reason.clone().into());
                error.insert("command_id".into(), command_id.clone().into());
                format!("the handler rejected the command: {reason}")
            }
            ApiError::Unauthorized => "a valid bearer token is required".into(),
            ApiError::Forbidden { needed } => format!("this request needs the {needed} role"),
            ApiError::CategoryOwned { category, handler } => {
                error.insert("category".into(), category.clone().into());
                error.insert("handler".into(), handler.clone().into());
                format!(
                    "category {category} is owned by handler {handler}: send it a command, or \
                     append with bypass_handler=true as an admin"
                )
            }
            ApiError::NotFound { message, .. } | ApiError::Conflict { message, .. } => {
                message.clone()
            }
            ApiError::MethodNotAllowed => "this route does not take that method".into(),
            ApiError::WrongExpectedVersion { expected, actual } => {
                error.insert("expected".into(), expected.clone());
                error.insert("actual".into(), (*actual).into());
                format!("the stream is at version {actual}, expected {expected}")
            }
            ApiError::DuplicateEventId { id, message } => {
                error.insert("id".into(), id.clone().into());
                message.clone()
            }
            ApiError::NotCaughtUp { wanted, reached } => {
                error.insert("min_position".into(), (*wanted).into());
                error.insert("position".into(), (*reached).into());
                format!(
                    "the projection has processed position {reached}, not yet {wanted}; try \
                     again or wait longer with timeout_ms"
                )
            }
            ApiError::QueryRejected(reason) => {
                error.insert("reason".into(), reason.clone().into());
                format!("the projection refused the query: {reason}")
            }
            ApiError::Internal(_) => "the host failed to handle the request; see its log".into(),
            ApiError::Unavailable => {
                "the host is shutting down or its store cannot take requests now; try again".into()
            }
        };
        error.insert("message".into(), message.into());
        json!({ "error": error })
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }
}

impl From<evhost_engine::plugins::Busy> for ApiError {
    fn from(busy: evhost_engine::plugins::Busy) -> Self {
        ApiError::Overloaded(busy.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            // Nothing was done, or what was done is not known: either way the client may try
            // again (an append with event ids, or a command with an id, is recognised).
            StorageError::Closed
            | StorageError::Unavailable(_)
            | StorageError::OutcomeUnknown(_) => ApiError::Unavailable,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::WrongExpectedVersion { expected, actual } => {
                ApiError::WrongExpectedVersion {
                    expected: expected.to_json(),
                    actual,
                }
            }
            CommitError::DuplicateEventId { ref id, .. } => ApiError::DuplicateEventId {
                id: id.clone(),
                message: error.to_string(),
            },
            CommitError::Invalid(message) => ApiError::InvalidRequest(message),
            CommitError::TooLarge(message) => ApiError::PayloadTooLarge(message),
            // Only command appends carry a command id, and they answer this case themselves.
            CommitError::CommandRecorded(_) => ApiError::Internal(error.to_string()),
            // Only the plugin runners' commits carry a fence.
            CommitError::Fenced { .. } => ApiError::Internal(error.to_string()),
            CommitError::Storage(storage) => storage.into(),
        }
    }
}

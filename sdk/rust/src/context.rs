//! `CommandContext`: what a handler knows about a command besides its typed payload.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Rejection;

/// The command's id, its stream and its metadata, handed to [`Handler::decide`](crate::Handler::decide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    id: String,
    stream_id: String,
    /// The metadata as JSON text (an object).
    metadata: String,
}

impl CommandContext {
    /// A context for the command `id` on the stream `stream_id`, with empty metadata: for
    /// calling [`Handler::decide`](crate::Handler::decide) in tests.
    pub fn new(id: impl Into<String>, stream_id: impl Into<String>) -> Self {
        CommandContext {
            id: id.into(),
            stream_id: stream_id.into(),
            metadata: "{}".to_owned(),
        }
    }

    /// The same context with `metadata` (serialized to JSON) as the command's metadata.
    ///
    /// # Panics
    ///
    /// If `metadata` cannot be serialized to JSON (a map with keys that are not strings).
    pub fn with_metadata<T: Serialize>(mut self, metadata: &T) -> Self {
        self.metadata = serde_json::to_string(metadata)
            .unwrap_or_else(|error| panic!("command metadata cannot be serialized: {error}"));
        self
    }

    /// A context from the wire form of a command.
    pub(crate) fn from_wire(id: &str, stream_id: &str, metadata: &str) -> Self {
        CommandContext {
            id: id.to_owned(),
            stream_id: stream_id.to_owned(),
            metadata: metadata.to_owned(),
        }
    }

    /// The command's id. The host records a command's outcome under its id: a command sent
    /// again with the same id gets that outcome instead of a new decision.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The stream the command is about (`visit-42`).
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The part of the stream's name after its category and the first `-` (`42` for
    /// `visit-42`); empty if the name has no `-`.
    pub fn entity_id(&self) -> &str {
        self.stream_id
            .split_once('-')
            .map_or("", |(_category, entity)| entity)
    }

    /// The command's metadata, decoded into `T`; a [`Rejection`] saying what did not match if it
    /// does not fit, so `?` rejects the command.
    pub fn metadata<T: DeserializeOwned>(&self) -> Result<T, Rejection> {
        let text = if self.metadata.is_empty() {
            "{}"
        } else {
            &self.metadata
        };
        serde_json::from_str(text)
            .map_err(|error| Rejection::new(format!("command metadata does not match: {error}")))
    }
}

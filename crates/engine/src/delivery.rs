//! The seam between the policies and the command service: a policy hands its commands to a
//! [`CommandSink`] and learns only what it needs to go on (applied, rejected, or try again),
//! so that policies know nothing of how commands run and no module imports in a circle.

use async_trait::async_trait;

/// A command as a client (or a policy) sends it, validated.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// The client's id for the command, or none to have one generated.
    pub id: Option<String>,
    pub stream: String,
    pub command_type: String,
    /// JSON text on one line.
    pub data: String,
    /// JSON object text on one line.
    pub metadata: String,
}

/// What became of a delivered command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The handler accepted it (its events are appended).
    Applied,
    /// The handler rejected it, or no handler will ever take it (its request breaks a rule, or
    /// its id is recorded for another command): the reason, for the policy's `on-rejected`.
    Rejected(String),
}

/// Where policies deliver their commands.
#[async_trait]
pub trait CommandSink: Send + Sync {
    /// Runs `request` through handler `handler`; an error is a failure worth retrying later
    /// (the command has no outcome yet).
    async fn deliver(&self, handler: &str, request: CommandRequest) -> Result<Delivered, String>;
}

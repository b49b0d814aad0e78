//! `Failure`: why a projection or a policy could not handle what the host gave it.

use std::fmt;

/// A projection's or a policy's failure to handle an event, a timer or a rejection, or to answer
/// a query: the message is shown to operators (or, from a query, to the caller).
///
/// A failure is not a verdict on the input the way a handler's [`Rejection`](crate::Rejection)
/// is: the host retries a failing batch or event with backoff, and then pauses the projection
/// at it (or parks the policy's event) for an operator. Build one with [`Failure::new`], from a
/// `&str` or `String`, or let `?` convert a [`serde_json::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Failure {
    message: String,
}

impl Failure {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
        }
    }

    /// The message shown to operators.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message, taken out of the failure.
    pub fn into_message(self) -> String {
        self.message
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::new(message)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::new(message)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(error: serde_json::Error) -> Self {
        Failure::new(format!("json: {error}"))
    }
}

//! Why a store operation failed, typed so that a caller can tell what to do next: a conflict
//! (someone else got there first: reload and decide again), a refused request (it will never
//! succeed as it is), a retryable failure (nothing happened: try again), or an unknown outcome
//! (the commit may or may not have happened: find out before trying again).

use crate::{ExpectedVersion, StoredCommand};

/// What a caller can do about a failed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request lost a race with another writer (a version, an id, a command id, a lease).
    /// Nothing was written.
    Conflict,
    /// The request breaks a rule or a limit; it would be refused again. Nothing was written.
    Refused,
    /// The store could not do it now (a connection lost before the commit was sent, a
    /// failover); nothing was written, and the same request may be sent again.
    Retryable,
    /// The commit was sent but its answer was lost: it may be durable or not. Appends carrying
    /// event ids or a command id can be sent again safely (the store recognises the retry).
    OutcomeUnknown,
    /// The store is broken or closed for this process (I/O error, corruption, shutdown).
    Fatal,
}

/// Why a commit (an append, plugin data, or both) was refused or failed. Nothing of a refused
/// commit is written.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The stream's version did not satisfy the expected version.
    #[error("stream is at version {actual}, expected {}", expected.to_json())]
    WrongExpectedVersion {
        expected: ExpectedVersion,
        actual: u64,
    },
    /// An event id is already stored, and the request is not a retry of the append that stored it.
    #[error("event id {id:?} is already stored ({why})")]
    DuplicateEventId { id: String, why: &'static str },
    /// The request broke a rule the store keeps (callers validate first; this is the last line).
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The request carries more than [`crate::AppendLimits`] allow.
    #[error("{0}")]
    TooLarge(String),
    /// The request's command id is already recorded: this is its record, and nothing was written.
    #[error("command {} is already recorded", .0.position)]
    CommandRecorded(StoredCommand),
    /// The commit's fence names a lease that has since been taken by another holder.
    #[error(
        "lease {lease:?} is held under token {current}, not {token}: the commit was fenced off"
    )]
    Fenced {
        lease: String,
        token: u64,
        current: u64,
    },
    /// The store could not write; nothing of the request is stored, unless the error says the
    /// outcome is unknown.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CommitError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CommitError::WrongExpectedVersion { .. }
            | CommitError::DuplicateEventId { .. }
            | CommitError::CommandRecorded(_)
            | CommitError::Fenced { .. } => ErrorKind::Conflict,
            CommitError::Invalid(_) | CommitError::TooLarge(_) => ErrorKind::Refused,
            CommitError::Storage(error) => error.kind(),
        }
    }
}

/// A failure of the storage engine itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// Nothing was done, and the same operation may succeed if tried again.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A commit was sent, but whether it became durable is not known.
    #[error("the outcome of a commit is unknown: {0}")]
    OutcomeUnknown(String),
    /// The underlying database failed (I/O, a full disk, a bug); this store takes no more writes
    /// or this operation cannot succeed.
    #[error("storage engine: {0}")]
    Failed(String),
    /// A stored record could not be decoded.
    #[error("corrupt record at position {position}: {reason}")]
    Corrupt { position: u64, reason: String },
    /// The store is shutting down and takes no more writes.
    #[error("the store is closed")]
    Closed,
}

impl StorageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::Unavailable(_) => ErrorKind::Retryable,
            StorageError::OutcomeUnknown(_) => ErrorKind::OutcomeUnknown,
            StorageError::Failed(_) | StorageError::Corrupt { .. } | StorageError::Closed => {
                ErrorKind::Fatal
            }
        }
    }
}

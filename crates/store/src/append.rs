//! What an append carries and what it is answered: the expected version, the events, the
//! command record it may carry, and the limits every append meets whoever proposes it.

use serde::Serialize;

use crate::CommitError;
use crate::record::json_depth;

/// The version a writer expects a stream to be at; checked in the same transaction as the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet (the same as version 0).
    NoStream,
    /// The stream must exist, at any version.
    Exists,
    /// The stream must be exactly at this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// The word or number a client wrote, as it appears in API errors.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            ExpectedVersion::Any => "any".into(),
            ExpectedVersion::NoStream => "no_stream".into(),
            ExpectedVersion::Exists => "exists".into(),
            ExpectedVersion::Exact(n) => n.into(),
        }
    }

    /// Whether a stream currently at `actual` (0 = does not exist) satisfies this expectation.
    pub fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exists => actual > 0,
            ExpectedVersion::Exact(n) => actual == n,
        }
    }
}

/// One event a client wants appended, already validated and with its JSON minified.
#[derive(Debug, Clone)]
pub struct ProposedEvent {
    /// The id the client chose; the store generates one when there is none.
    pub id: Option<String>,
    pub event_type: String,
    /// JSON text on one line.
    pub data: String,
    /// JSON object text on one line.
    pub metadata: String,
}

/// The most an append may carry, whoever proposes it: a client over HTTP, a handler's
/// `decide`, any later path. The store refuses an append past them ([`CommitError::TooLarge`]),
/// or nested past [`MAX_JSON_DEPTH`] ([`CommitError::Invalid`]), so no path can skip them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendLimits {
    /// Most events in one append.
    pub max_events: usize,
    /// Largest `data` plus `metadata` of one event, in bytes.
    pub max_event_bytes: usize,
    /// Largest `data` plus `metadata` of all of an append's events together, in bytes.
    pub max_append_bytes: usize,
}

impl Default for AppendLimits {
    fn default() -> Self {
        AppendLimits {
            max_events: 10_000,
            max_event_bytes: 1 << 20,
            max_append_bytes: 16 << 20,
        }
    }
}

/// The deepest nesting of arrays and objects the host takes in any JSON it stores or passes on
/// (event data and metadata, command data, plugin state, timers): deeper documents break
/// ordinary parsers (serde_json's default limit is 128 levels for a whole document).
pub const MAX_JSON_DEPTH: usize = 128;

/// Checks that JSON text nests no deeper than [`MAX_JSON_DEPTH`]; the error names `what`.
pub fn check_json_depth(what: &str, json: &str) -> Result<(), String> {
    let depth = json_depth(json);
    if depth > MAX_JSON_DEPTH {
        return Err(format!(
            "{what} nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}"
        ));
    }
    Ok(())
}

impl AppendLimits {
    /// Checks a count of events before they are built.
    pub fn check_count(&self, count: usize) -> Result<(), CommitError> {
        if count > self.max_events {
            return Err(CommitError::TooLarge(format!(
                "{count} events in one append; the limit is {}",
                self.max_events
            )));
        }
        Ok(())
    }

    /// Checks one event, the `index`-th of its append.
    pub fn check_event(&self, index: usize, event: &ProposedEvent) -> Result<(), CommitError> {
        let size = event.data.len() + event.metadata.len();
        if size > self.max_event_bytes {
            return Err(CommitError::TooLarge(format!(
                "events[{index}] has {size} bytes of data and metadata; the limit is {}",
                self.max_event_bytes
            )));
        }
        for (what, json) in [("data", &event.data), ("metadata", &event.metadata)] {
            check_json_depth(&format!("events[{index}]: its {what}"), json)
                .map_err(CommitError::Invalid)?;
        }
        Ok(())
    }

    /// Checks a whole append.
    pub fn check(&self, events: &[ProposedEvent]) -> Result<(), CommitError> {
        self.check_count(events.len())?;
        let mut total = 0;
        for (index, event) in events.iter().enumerate() {
            self.check_event(index, event)?;
            total += event.data.len() + event.metadata.len();
        }
        if total > self.max_append_bytes {
            return Err(CommitError::TooLarge(format!(
                "the events hold {total} bytes of data and metadata together; the limit is {}",
                self.max_append_bytes
            )));
        }
        Ok(())
    }
}

/// An append of one or more events to one stream, all or nothing.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub stream: String,
    pub expected_version: ExpectedVersion,
    /// At least one event, unless the request only records a command.
    pub events: Vec<ProposedEvent>,
    /// The command whose outcome these events are, recorded in the same transaction: either
    /// both are stored or neither. A command id is recorded once; a request whose command id is
    /// already recorded writes nothing and is answered with [`CommitError::CommandRecorded`].
    pub command: Option<CommandEntry>,
}

/// The record of a command that an append carries; the store keeps it opaque.
#[derive(Debug, Clone)]
pub struct CommandEntry {
    pub id: String,
    /// JSON object text describing the command and its outcome.
    pub record: Vec<u8>,
    /// The tally the command counts in (its handler's version, say): the store adds one to it in
    /// the same transaction as the record, so tallies always agree with the records.
    pub tally: String,
}

/// A recorded command, with where the events it produced landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCommand {
    /// The record as the append carried it.
    pub record: Vec<u8>,
    /// The last position the command's append wrote, or the head when it wrote no event.
    pub position: u64,
    /// How many events the command's append wrote, ending at `position`.
    pub event_count: u64,
}

impl StoredCommand {
    /// The positions of the events the command produced, in order.
    pub fn positions(&self) -> std::ops::RangeInclusive<u64> {
        (self.position + 1 - self.event_count)..=self.position
    }
}

/// Where an acknowledged append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AppendResult {
    pub first_version: u64,
    pub last_version: u64,
    pub first_position: u64,
    pub last_position: u64,
}

/// The outcome of an append that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The events were written by this request.
    Written(AppendResult),
    /// Every event was already stored by one earlier, identical append: nothing was written.
    AlreadyWritten(AppendResult),
}

//! The event store: the book of record that everything else in the host stands on.
//!
//! This module owns the storage interface ([`EventStore`]), the values that cross it and the
//! rules every backend keeps: global positions are 1-based, gapless and strictly increasing;
//! stream versions are 1-based and contiguous; an event id is unique in the whole store; an
//! acknowledged append is durable. [`RedbStore`] is the embedded backend on one redb file.
//!
//! Architecture Invariant: the store knows nothing of HTTP or WebAssembly. Events arrive as
//! validated values and leave as their canonical JSON record, which is also the form the API
//! serves, so reading the log is a copy and not a re-encoding.

pub mod clock;
pub mod event_id;
pub mod names;
pub mod record;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

pub use clock::{millis_from_rfc3339, now_rfc3339};
pub use names::category_of;
pub use names::{validate_event_id, validate_event_type, validate_stream_name};
pub use record::{EventView, RecordView, json_depth, minify_json};

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
/// `decide`, any later path. The store refuses an append past them ([`AppendError::TooLarge`]),
/// or nested past [`MAX_JSON_DEPTH`] ([`AppendError::Invalid`]), so no path can skip them.
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
    pub fn check_count(&self, count: usize) -> Result<(), AppendError> {
        if count > self.max_events {
            return Err(AppendError::TooLarge(format!(
                "{count} events in one append; the limit is {}",
                self.max_events
            )));
        }
        Ok(())
    }

    /// Checks one event, the `index`-th of its append.
    pub fn check_event(
        &self,
        index: usize,
        event: &ProposedEvent,
    ) -> Result<(), AppendError> {
        let size = event.data.len() + event.metadata.len();
        if size > self.max_event_bytes {
            return Err(AppendError::TooLarge(format!(
                "events[{index}] has {size} bytes of data and metadata; the limit is {}",
                self.max_event_bytes
            )));
        }
        for (what, json) in [("data", &event.data), ("metadata", &event.metadata)] {
            check_json_depth(&format!("events[{index}]: its {what}"), json)
                .map_err(AppendError::Invalid)?;
        }
        Ok(())
    }

    /// Checks a whole append.
    pub fn check(&self, events: &[ProposedEvent]) -> Result<(), AppendError> {
        self.check_count(events.len())?;
        let mut total = 0;
        for (index, event) in events.iter().enumerate() {
            self.check_event(index, event)?;
            total += event.data.len() + event.metadata.len();
        }
        if total > self.max_append_bytes {
            return Err(AppendError::TooLarge(format!(
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
    /// already recorded writes nothing and is answered with [`AppendError::CommandRecorded`].
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

/// Why an append was refused. Nothing of a refused append is written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
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
    /// The request carries more than [`AppendLimits`] allow.
    #[error("{0}")]
    TooLarge(String),
    /// The request's command id is already recorded: this is its record, and nothing was written.
    #[error("command {} is already recorded", .0.position)]
    CommandRecorded(StoredCommand),
    /// The store could not write; nothing of the request is stored.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A failure of the storage engine itself (I/O, corruption, shutdown).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The underlying database reported an error.
    #[error("storage engine: {0}")]
    Engine(String),
    /// A stored record could not be decoded.
    #[error("corrupt record at position {position}: {reason}")]
    Corrupt { position: u64, reason: String },
    /// The store is shutting down and takes no more writes.
    #[error("the store is closed")]
    Closed,
}

/// An event as recorded: its position and its canonical JSON record.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub position: u64,
    /// `{"position","stream","version","id","type","data","metadata","recorded_at"}` on one line.
    pub json: Vec<u8>,
}

/// Which way to read a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// A page of one stream.
#[derive(Debug)]
pub struct StreamPage {
    /// The stream's current version.
    pub version: u64,
    pub events: Vec<RecordedEvent>,
    /// The version to ask for next, or `None` when the page reached the end in its direction.
    pub next: Option<u64>,
}

/// Which events of the global log to return. Empty lists mean "all"; values within one list
/// are alternatives, and the two lists must both match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub categories: Vec<String>,
    pub event_types: Vec<String>,
}

impl LogFilter {
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty() && self.event_types.is_empty()
    }
}

/// A page of the global log.
#[derive(Debug)]
pub struct LogPage {
    pub events: Vec<RecordedEvent>,
    /// The position to ask for next, or `None` when the page reached the head.
    pub next: Option<u64>,
    /// The last position in the store when the page was read.
    pub head: u64,
}

/// Counters a backend keeps about its own work, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreStats {
    pub commits: u64,
    pub committed_appends: u64,
    pub commit_seconds: f64,
}

/// A future an append resolves to once its group has been made durable.
pub type AppendFuture =
    Pin<Box<dyn Future<Output = Result<AppendOutcome, AppendError>> + Send>>;

/// A future an append resolves to, with the records it wrote, once its group is durable.
pub type AppendRecordsFuture =
    Pin<Box<dyn Future<Output = Result<(AppendOutcome, Vec<RecordedEvent>), AppendError>> + Send>>;

/// A change to the data plugins keep beside the log (projection and policy state, checkpoints,
/// outboxes, timers): a key of a space set to a value, or removed. The store keeps spaces, keys
/// and values opaque; the plugin runners give them meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataWrite {
    pub space: Arc<str>,
    pub key: String,
    /// The new value, or `None` to remove the key.
    pub value: Option<Vec<u8>>,
}

/// A future that resolves once a batch of [`DataWrite`]s is durable.
pub type DataFuture = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send>>;

/// A consistent, read-only view of the plugin data at one moment: every later write is
/// invisible to it.
pub trait DataSnapshot: Send + Sync {
    /// The value of `key` in `space`.
    fn get(&self, space: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Up to `limit` entries of `space` whose keys start with `prefix` and come after `after`,
    /// in key order.
    fn scan(
        &self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
}

/// The narrow interface the rest of the host uses to reach stored events; a backend on another
/// engine implements this and nothing above it changes.
pub trait EventStore: Send + Sync + 'static {
    /// Appends atomically; resolves only once the events are durable (or the append is refused).
    fn append(&self, request: AppendRequest) -> AppendFuture;

    /// Appends as [`EventStore::append`] does, and answers with the records written (none when
    /// the append was refused or had been written before), sparing the caller a read.
    fn append_returning_records(&self, request: AppendRequest) -> AppendRecordsFuture;

    /// Reads up to `limit` events of one stream starting at version `from` (`None`: the start in
    /// that direction). `Ok(None)` when the stream does not exist.
    fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        limit: usize,
        direction: Direction,
    ) -> Result<Option<StreamPage>, StorageError>;

    /// Reads up to `limit` events of the global log from position `from` on, in position order.
    fn read_log(
        &self,
        from: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, StorageError>;

    /// The last durable position (0 when empty).
    fn head(&self) -> u64;

    /// Follows the head: the receiver sees every new durable head, without polling.
    fn watch_head(&self) -> watch::Receiver<u64>;

    /// Work counters for metrics.
    fn stats(&self) -> StoreStats;

    /// Whether appends can still be made durable: false once the store has been closed or its
    /// writer has failed.
    fn accepts_writes(&self) -> bool;

    /// The record of a command, if its id is recorded.
    fn read_command(&self, id: &str) -> Result<Option<StoredCommand>, StorageError>;

    /// Up to `limit` recorded commands whose ids start with `prefix` and come after `after`, in
    /// id order. Blocks on I/O.
    fn scan_commands(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredCommand)>, StorageError>;

    /// The tallies of recorded commands whose names start with `prefix`, by name.
    fn command_tallies(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError>;

    /// The records of every plugin, by name. The store keeps them opaque.
    fn plugin_records(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError>;

    /// Durably stores a plugin's record together with new blobs (its uploaded file, say), in
    /// one transaction. Blocks on I/O; call it off the async threads.
    fn save_plugin(
        &self,
        name: &str,
        record: &[u8],
        blobs: &[(&str, &[u8])],
    ) -> Result<(), StorageError>;

    /// A blob by key. Blocks on I/O.
    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Durably removes the blobs whose keys start with `prefix`; answers how many there were.
    /// Blocks on I/O.
    fn delete_blobs(&self, prefix: &str) -> Result<u64, StorageError>;

    /// Durably stores a blob under `key`, replacing what was there. Blocks on I/O.
    fn save_blob(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError>;

    /// Applies `writes`, in order, in one durable transaction: all of them or none. They may
    /// share the transaction (and its fsync) with appends, never with part of another batch.
    fn write_data(&self, writes: Vec<DataWrite>) -> DataFuture;

    /// Durably removes every entry of the data spaces whose names start with `prefix`; answers
    /// how many entries were removed. Blocks on I/O for as long as that takes.
    fn delete_data(&self, space_prefix: &str) -> Result<u64, StorageError>;

    /// A snapshot of the plugin data, as of the last durable transaction.
    fn data_snapshot(&self) -> Result<Box<dyn DataSnapshot>, StorageError>;

    /// Stops taking writes, finishes the ones in flight and closes the files cleanly.
    fn close(&self);
}

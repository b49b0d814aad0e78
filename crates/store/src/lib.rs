//! The store contract of evhost: the values that cross the storage seam, the traits a backend
//! implements (one per concern, all async), the append rules every backend calls, a reference
//! backend in memory, and the conformance suite that holds every backend to the same answers.
//!
//! The rules every backend keeps: global positions are 1-based, gapless and strictly
//! increasing, and commit order is position order; stream versions are 1-based and contiguous;
//! an event id is unique in the whole store, and a command id is recorded once; an acknowledged
//! commit is durable, and a refused one wrote nothing. `docs/storage.md` states them in full.
//!
//! Architecture Invariant: the contract knows nothing of HTTP, WebAssembly or any storage
//! engine. Events arrive as validated values and leave as their canonical JSON record, which is
//! also the form the API serves, so reading the log is a copy and not a re-encoding.

mod append;
pub mod claims;
pub mod clock;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod contract;
mod error;
pub mod event_id;
pub mod memory;
pub mod names;
mod read;
pub mod record;
pub mod rules;

pub use append::{
    AppendLimits, AppendOutcome, AppendRequest, AppendResult, CommandEntry, ExpectedVersion,
    MAX_JSON_DEPTH, ProposedEvent, StoredCommand, check_json_depth,
};
pub use clock::{millis_from_rfc3339, now_rfc3339};
pub use contract::{
    Catalog, CommandLog, Commit, Commits, Committed, Coordination, DataSnapshot, DataWrite,
    EventLog, Fence, Lifecycle, PluginData, Store, StoreStats,
};
pub use error::{CommitError, ErrorKind, StorageError};
pub use names::category_of;
pub use names::{validate_event_id, validate_event_type, validate_stream_name};
pub use read::{
    Direction, LogFilter, LogPage, PAGE_BYTES, RecordedEvent, StreamPage, log_next, stream_next,
    stream_window, take_page,
};
pub use record::{EventView, RecordView, json_depth, minify_json};

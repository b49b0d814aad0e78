//! Running projections and policies natively, without WebAssembly or a host: for unit tests
//! (`cargo test`) and for benchmarks.
//!
//! [`MemoryState`] is a key-value state in memory with the host's rules: keys of 1 to 1024
//! bytes, values of JSON text up to 1 MiB, scans in key order served in pages of at most 1000,
//! and a call's writes kept all together or not at all. The functions here run a plugin through
//! the same code as the component's exports, batch cache included:
//!
//! - projections: [`apply`] (a batch of [`EventRecord`]s), [`apply_json`] (a batch of the host's
//!   canonical event records as JSON, for benchmarks that fold what a host would feed) and
//!   [`query`];
//! - policies: [`react`], [`fire`] (a due timer) and [`reject`] (a rejected command).
//!
//! ```
//! # use evhost_sdk::testing::{self, MemoryState};
//! # use evhost_sdk::{Envelope, Failure, Projection, State};
//! # struct Counting;
//! # impl Projection for Counting {
//! #     const NAME: &'static str = "counting";
//! #     type Event = serde::de::IgnoredAny;
//! #     fn apply(state: &mut State<'_>, _: Envelope<'_, Self::Event>) -> Result<(), Failure> {
//! #         state.update("events", |n: &mut u64| *n += 1)
//! #     }
//! # }
//! let records = [
//!     r#"{"position":1,"stream":"visit-1","version":1,"id":"e-1","type":"PatientCheckedIn","data":{"patient_id":"p-1"},"metadata":{},"recorded_at":"2026-11-23T19:35:53.123456Z"}"#,
//!     r#"{"position":2,"stream":"visit-1","version":2,"id":"e-2","type":"RoomAssigned","data":{"room":"A-12"},"metadata":{},"recorded_at":"2026-11-23T19:35:54.000000Z"}"#,
//! ];
//! let mut state = MemoryState::new();
//! testing::apply_json::<Counting>(&mut state, &records)?;
//! assert_eq!(state.get("events"), Some("2"));
//! # Ok::<(), Failure>(())
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::envelope::WireEvent;
use crate::policy::{ScheduleTimer, SendCommand};
use crate::state::{Backend, Write};
use crate::{Action, Failure, Policy, Projection, RejectedCommand, State, StateView};

/// Longest key the host stores, in bytes.
const MAX_KEY_BYTES: usize = 1024;
/// Longest value the host stores, in bytes.
const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most entries the host returns from one `scan` call.
const SCAN_PAGE: u32 = 1000;
/// The time of the record at position 0 when a test gives none: 2026-01-01T00:00:00Z.
const TEST_EPOCH_MS: u64 = 1_767_225_600_000;

/// A projection's or a policy's key-value state in memory, with the host's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    entries: BTreeMap<String, String>,
    writes: u64,
}

impl MemoryState {
    /// An empty state.
    pub fn new() -> Self {
        MemoryState::default()
    }

    /// The value under `key` (JSON text).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The value under `key`, decoded into `T`.
    pub fn get_as<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Failure> {
        self.view().get(key)
    }

    /// Stores `value` under `key` directly (outside any call), to set up a test.
    pub fn insert<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), Failure> {
        let json = serde_json::to_string(value)?;
        self.commit(vec![Write {
            key: key.to_owned(),
            value: Some(json),
        }])
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// How many keys hold a value.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key holds a value.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many writes (puts and deletes) calls have handed over so far: one per key written in
    /// a call, however often the call wrote it.
    pub fn write_count(&self) -> u64 {
        self.writes
    }

    /// The state as a query sees it.
    pub fn view(&self) -> StateView<'_> {
        StateView::new(self)
    }

    /// Runs `call` with this state as a [`State`], as one call of a plugin: its writes are kept
    /// if it returns `Ok`, and none of them if it fails.
    pub fn with_state<R>(
        &mut self,
        call: impl FnOnce(&mut State<'_>) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        let mut state = State::new(self);
        let result = call(&mut state)?;
        state.commit()?;
        Ok(result)
    }
}

impl Backend for MemoryState {
    fn get(&self, key: &str) -> Option<String> {
        self.entries.get(key).cloned()
    }

    fn scan(&self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<(String, String)> {
        let lower = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.entries
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit.min(SCAN_PAGE) as usize)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    fn commit(&mut self, writes: Vec<Write>) -> Result<(), Failure> {
        for write in &writes {
            check_write(write)?;
        }
        self.writes += writes.len() as u64;
        for Write { key, value } in writes {
            match value {
                Some(value) => {
                    self.entries.insert(key, value);
                }
                None => {
                    self.entries.remove(&key);
                }
            }
        }
        Ok(())
    }
}

/// Refuses a write the host would refuse (it fails the whole call).
fn check_write(write: &Write) -> Result<(), Failure> {
    let key = &write.key;
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(Failure::new(format!(
            "state key {key:?} is {} bytes; expected 1 to {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if let Some(value) = &write.value {
        if value.len() > MAX_VALUE_BYTES {
            return Err(Failure::new(format!(
                "the value of state key {key:?} is {} bytes; expected at most {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        serde_json::from_str::<IgnoredAny>(value).map_err(|error| {
            Failure::new(format!(
                "the value of state key {key:?} is not JSON text: {error}"
            ))
        })?;
    }
    Ok(())
}

/// A recorded event as a test makes it: the fields of the host's event record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position in the global log.
    pub position: u64,
    /// The stream's name (`visit-42`).
    pub stream: String,
    /// Version within the stream.
    pub version: u64,
    /// The event's id.
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's data: JSON text.
    pub data: Box<RawValue>,
    /// The event's metadata: a JSON object as text.
    pub metadata: Box<RawValue>,
    /// When it was recorded: RFC 3339 in UTC.
    pub recorded_at: String,
}

impl EventRecord {
    /// The event `event_type` with `data` (serialized to JSON) at `position` on `stream`, with
    /// the version `position`, the id `event-<position>`, empty metadata, and recorded
    /// `position` seconds after 2026-01-01T00:00:00Z; change these with the methods below.
    ///
    /// # Panics
    ///
    /// If `data` cannot be serialized to JSON.
    pub fn new<T: Serialize + ?Sized>(
        position: u64,
        stream: &str,
        event_type: &str,
        data: &T,
    ) -> Self {
        EventRecord {
            position,
            stream: stream.to_owned(),
            version: position,
            id: format!("event-{position}"),
            event_type: event_type.to_owned(),
            data: serde_json::value::to_raw_value(data)
                .unwrap_or_else(|error| panic!("event data cannot be serialized: {error}")),
            metadata: RawValue::from_string("{}".to_owned()).expect("{} is JSON"),
            recorded_at: crate::time::rfc3339_from_millis(TEST_EPOCH_MS + position * 1000),
        }
    }

    /// Like [`new`](EventRecord::new), from a variant of an enum tagged
    /// `#[serde(tag = "type", content = "data")]` (a handler's event): its name is the type.
    ///
    /// # Panics
    ///
    /// If `event` is not such an enum.
    pub fn typed<E: Serialize>(position: u64, stream: &str, event: &E) -> Self {
        let (event_type, data) = crate::codec::encode(event)
            .unwrap_or_else(|error| panic!("the event cannot be encoded: {error}"));
        let mut record = EventRecord::new(position, stream, &event_type, &());
        record.data = RawValue::from_string(data).expect("the codec writes JSON");
        record
    }

    /// The same record with this version.
    pub fn version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// The same record with this id.
    pub fn id(mut self, id: &str) -> Self {
        self.id = id.to_owned();
        self
    }

    /// The same record recorded at `recorded_at` (RFC 3339).
    pub fn recorded_at(mut self, recorded_at: &str) -> Self {
        self.recorded_at = recorded_at.to_owned();
        self
    }

    /// The same record with `metadata` (serialized to JSON, an object) as its metadata.
    ///
    /// # Panics
    ///
    /// If `metadata` cannot be serialized to JSON.
    pub fn metadata<T: Serialize>(mut self, metadata: &T) -> Self {
        self.metadata = serde_json::value::to_raw_value(metadata)
            .unwrap_or_else(|error| panic!("event metadata cannot be serialized: {error}"));
        self
    }

    /// The record as the host's canonical JSON, on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }

    fn wire(&self) -> WireEvent<'_> {
        WireEvent {
            position: self.position,
            stream: &self.stream,
            version: self.version,
            id: &self.id,
            event_type: &self.event_type,
            data: self.data.get(),
            metadata: self.metadata.get(),
            recorded_at: &self.recorded_at,
        }
    }
}

/// The fields of a canonical event record, borrowed from its JSON.
#[derive(Deserialize)]
struct RecordView<'a> {
    position: u64,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    version: u64,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    metadata: &'a RawValue,
    #[serde(borrow)]
    recorded_at: Cow<'a, str>,
}

/// Applies `records` to `state` as one batch of the projection `P`, exactly as the component's
/// `apply` export does (one decode per event, the batch cache, one write per key written). An
/// error writes nothing.
pub fn apply<P: Projection>(
    state: &mut MemoryState,
    records: &[EventRecord],
) -> Result<(), Failure> {
    crate::projection::apply::<P>(state, records.iter().map(EventRecord::wire))
        .map_err(Failure::new)
}

/// Applies the host's canonical event records, one JSON object each
/// (`{"position":1,"stream":"visit-1","version":1,"id":"..","type":"PatientCheckedIn",
/// "data":{..},"metadata":{..},"recorded_at":"2026-11-23T19:35:53.123456Z"}`, as the store keeps
/// them and the HTTP API serves them), to `state` as one batch of the projection `P`, through the
/// same path as the component's `apply` export. A record that is not such JSON, or an error of
/// the projection, writes nothing.
///
/// This is the entry point for benchmarks that compare a projection's fold natively against the
/// same fold in WebAssembly: call it once per batch (the host's batch size), with the same
/// records the host would feed.
pub fn apply_json<P: Projection>(
    state: &mut MemoryState,
    records: &[impl AsRef<[u8]>],
) -> Result<(), Failure> {
    let views = records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            serde_json::from_slice::<RecordView<'_>>(record.as_ref()).map_err(|error| {
                Failure::new(format!(
                    "record {index} of the batch is not an event record: {error}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let events = views.iter().map(|view| WireEvent {
        position: view.position,
        stream: &view.stream,
        version: view.version,
        id: &view.id,
        event_type: &view.event_type,
        data: view.data.get(),
        metadata: view.metadata.get(),
        recorded_at: &view.recorded_at,
    });
    crate::projection::apply::<P>(state, events).map_err(Failure::new)
}

/// Asks the projection `P` the query `path` with `params`, as the host's
/// `GET /projections/{name}/query/{path}` does, and returns its answer.
pub fn query<P: Projection>(
    state: &MemoryState,
    path: &str,
    params: &[(&str, &str)],
) -> Result<serde_json::Value, Failure> {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let answer = crate::projection::query::<P>(state, path, &params).map_err(Failure::new)?;
    Ok(serde_json::from_str(&answer)?)
}

/// Has the policy `P` react to `record`, as the component's `react` export does: its actions,
/// with its writes kept in `state` (none if it fails).
pub fn react<P: Policy>(
    state: &mut MemoryState,
    record: &EventRecord,
) -> Result<Vec<Action>, Failure> {
    crate::policy::react::<P>(state, record.wire()).map_err(Failure::new)
}

/// Fires `timer` (one the policy `P` scheduled), as the host's call of `on-timer` does.
pub fn fire<P: Policy>(
    state: &mut MemoryState,
    timer: &ScheduleTimer,
) -> Result<Vec<Action>, Failure> {
    crate::policy::on_timer::<P>(state, &timer.key, &timer.payload).map_err(Failure::new)
}

/// Tells the policy `P` that `command` (one it sent) was rejected for `reason`, as the host's
/// call of `on-rejected` does; the command is delivered with the id `rejected-1` and empty
/// metadata.
pub fn reject<P: Policy>(
    state: &mut MemoryState,
    command: &SendCommand,
    reason: &str,
) -> Result<Vec<Action>, Failure> {
    let command = RejectedCommand::new(
        "rejected-1",
        &command.stream_id,
        &command.command_type,
        &command.data,
        "{}",
    );
    crate::policy::on_rejected::<P>(state, command, reason).map_err(Failure::new)
}

//! Commands: a handler decides, the store appends, and the outcome is recorded with the events in
//! one transaction.
//!
//! A command loads its stream's state (from the snapshot cache, then the events after the
//! snapshot folded with `evolve`), calls `decide`, and appends the events with the expected
//! version it loaded. A conflict means another writer got there first: reload and decide again,
//! a bounded number of times. The command's record (handler version, outcome) is written in the
//! same transaction as its events, so a command id is decided at most once, also across
//! crashes; a repeated id is answered from the record.
//!
//! Architecture Invariant: this module knows nothing of HTTP or of wasmtime: it reaches the
//! store through [`Store`] and plugins through [`Plugins`] and the runtime's plain types.

mod snapshots;
mod stream_locks;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::Instrument;

pub use crate::delivery::CommandRequest;
use crate::delivery::{CommandSink, Delivered};
use crate::metadata::{causation_depth, correlation_id};
use crate::plugins::{ActiveHandler, Busy, HandlerLookupError, Plugins, command_tally};
use evhost_runtime::{CommandInput, EventInput, HandlerPlugin, NewEvent, PluginFailure};
use evhost_store::{
    AppendLimits, AppendOutcome, AppendRequest, CommandEntry, CommitError, Direction,
    ExpectedVersion, LogFilter, ProposedEvent, RecordedEvent, StorageError, Store, StoredCommand,
    category_of, check_json_depth, minify_json, now_rfc3339, validate_event_type,
};
use snapshots::SnapshotCache;

use crate::wait::{Started, wait};

use stream_locks::StreamLocks;

/// How many times a command is decided before a run of conflicts makes it give up.
const MAX_ATTEMPTS: u32 = 8;
/// Most events folded by one `evolve` call, and most bytes of their data and metadata.
const EVOLVE_BATCH_EVENTS: usize = 512;
const EVOLVE_BATCH_BYTES: usize = 4 << 20;
/// Events read from the store per page while loading a stream.
const LOAD_PAGE: usize = 1_000;

/// How a command ended, whether decided now or earlier.
#[derive(Debug)]
pub enum CommandOutcome {
    /// The handler accepted the command: these events were appended (perhaps none). `position`
    /// is the last one appended, or the head when none was.
    Applied {
        command_id: String,
        events: Vec<RecordedEvent>,
        position: u64,
    },
    /// The handler rejected the command.
    Rejected { command_id: String, reason: String },
}

/// Why a command has no outcome. None of these records anything: sending the command again
/// decides it afresh.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Handler(#[from] HandlerLookupError),
    /// The request breaks a rule (the stream is not in the handler's category, ...).
    #[error("{0}")]
    Invalid(String),
    /// The id is recorded for a different command.
    #[error("command id {id:?} is already recorded for another command ({difference})")]
    IdReused { id: String, difference: String },
    /// The handler's plugin failed (trap, time budget, memory cap, unusable answer).
    #[error("handler {handler} version {version} failed: {failure}")]
    PluginFailed {
        handler: String,
        version: String,
        failure: PluginFailure,
    },
    /// No place to call the handler came free in time; nothing was decided.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// Other writers kept changing the stream between load and append.
    #[error("the stream changed under the command {attempts} times in a row; nothing was appended")]
    RetriesExhausted { attempts: u32 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Counters of command work, for metrics.
#[derive(Debug, Default)]
pub struct CommandCounters {
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    pub conflicts: AtomicU64,
    pub replayed: AtomicU64,
    pub evolve_calls: AtomicU64,
    pub decide_calls: AtomicU64,
}

/// Runs commands against the deployed handlers.
pub struct Commands {
    store: Arc<dyn Store>,
    plugins: Arc<Plugins>,
    /// What a handler's events may carry: the limits of any append.
    append_limits: AppendLimits,
    snapshots: SnapshotCache,
    streams: StreamLocks,
    /// Shared with the plugin work of commands, which counts its calls as they start.
    pub counters: Arc<CommandCounters>,
}

/// The record kept for each command, and shown by `GET /commands/{id}` (with its events).
#[derive(Debug, serde::Serialize, Deserialize)]
pub struct CommandRecord<'a> {
    pub command_id: Cow<'a, str>,
    pub handler: Cow<'a, str>,
    pub handler_version: Cow<'a, str>,
    pub stream: Cow<'a, str>,
    #[serde(rename = "type")]
    pub command_type: Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
    #[serde(borrow)]
    pub metadata: &'a RawValue,
    /// `applied` or `rejected`.
    pub outcome: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'a, str>>,
    /// The stream's version the decision was made on.
    pub stream_version: u64,
    /// How many times the command was decided (conflicts make it more than one).
    pub attempts: u32,
    pub recorded_at: Cow<'a, str>,
}

impl Commands {
    pub fn new(store: Arc<dyn Store>, plugins: Arc<Plugins>, append_limits: AppendLimits) -> Self {
        Commands {
            store,
            plugins,
            append_limits,
            snapshots: SnapshotCache::default(),
            streams: StreamLocks::default(),
            counters: Arc::default(),
        }
    }

    /// Runs a command through handler `handler_name`, or answers a repeated id from its record.
    pub async fn execute(
        &self,
        handler_name: &str,
        request: CommandRequest,
    ) -> Result<CommandOutcome, CommandError> {
        let handler = self.plugins.handler(handler_name)?;
        let span = tracing::info_span!(
            "command",
            handler = handler_name,
            version = %handler.version,
            command_id = request.id.as_deref(),
            stream = %request.stream,
        );
        self.execute_on(handler, handler_name, request)
            .instrument(span)
            .await
    }

    async fn execute_on(
        &self,
        handler: Arc<ActiveHandler>,
        handler_name: &str,
        request: CommandRequest,
    ) -> Result<CommandOutcome, CommandError> {
        for (what, json) in [
            ("the command's data", &request.data),
            ("the command's metadata", &request.metadata),
        ] {
            check_json_depth(what, json).map_err(CommandError::Invalid)?;
        }
        let category = category_of(&request.stream);
        if category != handler.category {
            return Err(CommandError::Invalid(format!(
                "handler {} owns category {}; stream {:?} is in category {category:?}",
                handler.name, handler.category, request.stream
            )));
        }
        // Generated ids are time-ordered (UUIDv7), so their records go in at the end of the
        // commands table rather than into random leaves of it.
        let command_id = request
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let _turn = self.streams.turn(&request.stream).await;
        if request.id.is_some()
            && let Some(stored) = self.store.read_command(&command_id).await?
        {
            return self.replay(stored, handler_name, &request).await;
        }
        // Only a command that will call the handler waits for a place to; a recorded one is
        // answered above without one.
        let _admitted = self.plugins.admission.admit(handler_name).await?;
        for attempt in 1..=MAX_ATTEMPTS {
            let (rejection, appending) = self
                .decide_and_append(&handler, &command_id, &request, attempt)
                .await?;
            let appended = appending.finish().await;
            match appended {
                Ok((
                    AppendOutcome::Written(result) | AppendOutcome::AlreadyWritten(result),
                    events,
                )) => {
                    if let Some(reason) = rejection {
                        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                        return Ok(CommandOutcome::Rejected { command_id, reason });
                    }
                    self.counters.applied.fetch_add(1, Ordering::Relaxed);
                    return Ok(CommandOutcome::Applied {
                        command_id,
                        events,
                        position: result.last_position,
                    });
                }
                Err(CommitError::WrongExpectedVersion { .. }) => {
                    self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                // Another request with the same id was decided first.
                Err(CommitError::CommandRecorded(stored)) => {
                    return self.replay(stored, handler_name, &request).await;
                }
                Err(CommitError::Storage(error)) => return Err(error.into()),
                Err(other) => {
                    return Err(self.failed(
                        &handler,
                        PluginFailure::Returned(format!("its events cannot be appended: {other}")),
                    ));
                }
            }
        }
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        Err(CommandError::RetriesExhausted {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The recorded command with id `id`, and the events it produced.
    pub async fn recorded(
        &self,
        id: &str,
    ) -> Result<Option<(StoredCommand, Vec<RecordedEvent>)>, StorageError> {
        let Some(stored) = self.store.read_command(id).await? else {
            return Ok(None);
        };
        let events = self.events_of(&stored).await?;
        Ok(Some((stored, events)))
    }

    /// Answers a repeated command id from its record, if the request is the same command.
    async fn replay(
        &self,
        stored: StoredCommand,
        handler_name: &str,
        request: &CommandRequest,
    ) -> Result<CommandOutcome, CommandError> {
        let record: CommandRecord<'_> = serde_json::from_slice(&stored.record)
            .map_err(|e| StorageError::Failed(format!("a recorded command is corrupt: {e}")))?;
        let differences = [
            ("handler", record.handler.as_ref(), handler_name),
            ("stream", record.stream.as_ref(), request.stream.as_str()),
            (
                "type",
                record.command_type.as_ref(),
                request.command_type.as_str(),
            ),
            ("data", record.data.get(), request.data.as_str()),
        ];
        if let Some((field, was, now)) = differences.iter().find(|(_, was, now)| was != now) {
            return Err(CommandError::IdReused {
                id: record.command_id.into_owned(),
                difference: format!("its {field} was {was}, not {now}"),
            });
        }
        self.counters.replayed.fetch_add(1, Ordering::Relaxed);
        let command_id = record.command_id.into_owned();
        if record.outcome == "rejected" {
            return Ok(CommandOutcome::Rejected {
                command_id,
                reason: record.reason.unwrap_or_default().into_owned(),
            });
        }
        let events = self.events_of(&stored).await?;
        Ok(CommandOutcome::Applied {
            command_id,
            events,
            position: stored.position,
        })
    }

    fn failed(&self, handler: &ActiveHandler, failure: PluginFailure) -> CommandError {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        CommandError::PluginFailed {
            handler: handler.name.clone(),
            version: handler.version.clone(),
            failure,
        }
    }

    /// Loads the state of the command's stream as of its current version (the cached
    /// snapshot, with the events after it folded in by `evolve`), decides the command on it and
    /// sends its append. The plugin calls run on the plugin threads, one hand-over per page of
    /// events (one in all, for most commands); the last page is read there too and the append
    /// is sent from there, so nothing waits for a hand-over between the read the decision
    /// stands on and its append. The state is cached for the next command. Answers the
    /// rejection, if `decide` rejected the command, and the append under way (which records the
    /// outcome either way).
    async fn decide_and_append(
        &self,
        handler: &Arc<ActiveHandler>,
        command_id: &str,
        request: &CommandRequest,
        attempt: u32,
    ) -> Result<(Option<String>, Started<Appended>), CommandError> {
        let stream = &request.stream;
        let mut snapshot = self
            .snapshots
            .get(&handler.version, stream)
            .unwrap_or_default();
        let before = snapshot.version;
        let threads = handler.plugin.threads();
        loop {
            let work = Decision {
                handler: handler.clone(),
                counters: self.counters.clone(),
                store: self.store.clone(),
                state: snapshot.state.clone(),
                from: snapshot.version + 1,
                command: CommandPlan {
                    id: command_id.to_owned(),
                    request: request.clone(),
                    attempt,
                    limits: self.append_limits,
                },
            };
            let done = threads.run(move || work.run()).await;
            let (folded, version, decided) = done.map_err(|undecided| match undecided {
                Undecided::Plugin(failure) => self.failed(handler, failure),
                Undecided::Storage(error) => CommandError::Storage(error),
            })?;
            if let Some(state) = folded {
                snapshot.state = Some(Arc::new(state));
            }
            snapshot.version = version.unwrap_or(snapshot.version);
            if let Some(decided) = decided {
                if snapshot.version != before {
                    self.snapshots
                        .put(&handler.version, stream, snapshot.clone());
                }
                return Ok(decided);
            }
        }
    }

    /// Turns what `decide` returned into events to append, with the command's correlation and
    /// causation ids in their metadata. An event the store would refuse is the plugin's fault.
    fn proposed_events(
        limits: AppendLimits,
        events: Vec<NewEvent>,
        command_id: &str,
        command_metadata: &str,
    ) -> Result<Vec<ProposedEvent>, PluginFailure> {
        let refused = |error: CommitError| {
            PluginFailure::Returned(format!("decide returned events past the limits: {error}"))
        };
        // Counted before anything is built: a plugin returning a million events costs no more.
        limits.check_count(events.len()).map_err(refused)?;
        let causation_depth = causation_depth(command_metadata);
        let correlation_id =
            correlation_id(command_metadata).unwrap_or_else(|| command_id.to_owned());
        events
            .into_iter()
            .enumerate()
            .map(|(index, event)| {
                let bad = |why: String| {
                    PluginFailure::Returned(format!(
                        "decide returned an invalid event #{index}: {why}"
                    ))
                };
                validate_event_type(&event.event_type).map_err(bad)?;
                serde_json::from_str::<&RawValue>(&event.data)
                    .map_err(|e| bad(format!("its data is not JSON: {e}")))?;
                let mut metadata = match &event.metadata {
                    None => serde_json::Map::new(),
                    Some(text) => serde_json::from_str(text)
                        .map_err(|e| bad(format!("its metadata is not a JSON object: {e}")))?,
                };
                metadata.insert("correlation_id".into(), correlation_id.clone().into());
                metadata.insert("causation_id".into(), command_id.into());
                // How many policy commands led here, for the policies reacting to these events.
                if causation_depth > 0 {
                    metadata.insert("causation_depth".into(), causation_depth.into());
                }
                Ok(ProposedEvent {
                    id: None,
                    event_type: event.event_type,
                    data: minify_json(&event.data).into_owned(),
                    metadata: serde_json::to_string(&metadata).expect("a JSON map serializes"),
                })
            })
            // The store checks the rest of the limits (sizes, nesting); what it refuses is the
            // plugin's failure, as any event it refuses.
            .collect()
    }

    /// The events a recorded command produced, read from the log.
    async fn events_of(&self, stored: &StoredCommand) -> Result<Vec<RecordedEvent>, StorageError> {
        if stored.event_count == 0 {
            return Ok(Vec::new());
        }
        let first = *stored.positions().start();
        let page = self
            .store
            .read_log(first, stored.event_count as usize, &LogFilter::default())
            .await?;
        Ok(page.events)
    }
}

/// The answer of an append, with the records it wrote.
type Appended = Result<(AppendOutcome, Vec<RecordedEvent>), CommitError>;

/// What a command is, for the append its decision sends.
struct CommandPlan {
    id: String,
    request: CommandRequest,
    attempt: u32,
    limits: AppendLimits,
}

/// The plugin work of one page of a command's load, run on the plugin threads: read the page
/// of the stream's events from `from`, fold them into the state, and, on the last page, decide
/// the command on it and send its append.
struct Decision {
    handler: Arc<ActiveHandler>,
    counters: Arc<CommandCounters>,
    store: Arc<dyn Store>,
    state: Option<Arc<Vec<u8>>>,
    from: u64,
    command: CommandPlan,
}

/// What a [`Decision`] did: the folded state and the version it is at (none when there was
/// nothing to fold), and on the last page the rejection, if any, and the append under way.
type Decided = (
    Option<Vec<u8>>,
    Option<u64>,
    Option<(Option<String>, Started<Appended>)>,
);

/// Why a [`Decision`] has no answer.
enum Undecided {
    Plugin(PluginFailure),
    Storage(StorageError),
}

impl From<PluginFailure> for Undecided {
    fn from(failure: PluginFailure) -> Self {
        Undecided::Plugin(failure)
    }
}

impl From<StorageError> for Undecided {
    fn from(error: StorageError) -> Self {
        Undecided::Storage(error)
    }
}

impl Decision {
    fn run(self) -> Result<Decided, Undecided> {
        let counters = &self.counters;
        (|| {
            let stream = &self.command.request.stream;
            let page = wait(self.store.read_stream(
                stream,
                Some(self.from),
                LOAD_PAGE,
                Direction::Forward,
            ))?;
            let (events, last) = match page {
                Some(page) if !page.events.is_empty() => (page.events, page.next.is_none()),
                _ => (Vec::new(), true),
            };
            let records = events
                .iter()
                .map(StoredEvent::parse)
                .collect::<Result<Vec<_>, _>>()?;
            let plugin = &self.handler.plugin;
            let folded = fold(
                plugin,
                self.state.as_deref().map(Vec::as_slice),
                &records,
                || {
                    counters.evolve_calls.fetch_add(1, Ordering::Relaxed);
                },
            )?;
            let version = records.last().map(|e| e.version);
            if !last {
                return Ok((folded, version, None));
            }
            let plan = &self.command;
            let request = &plan.request;
            let input = CommandInput {
                id: &plan.id,
                stream: &request.stream,
                command_type: &request.command_type,
                data: &request.data,
                metadata: &request.metadata,
            };
            let state = folded
                .as_deref()
                .or(self.state.as_deref().map(Vec::as_slice));
            // Counted as it starts: a `decide` that runs to its budget is visible meanwhile.
            counters.decide_calls.fetch_add(1, Ordering::Relaxed);
            let decided = plugin.decide(state, &input)?;
            let stream_version = version.unwrap_or(self.from - 1);
            let (append, rejection) = appending(&self.handler, plan, stream_version, decided)?;
            let store = self.store.clone();
            // Sent from here: the append reaches the store with no hand-over after the read.
            let appending =
                Started::start(async move { store.append_returning_records(append).await });
            Ok((folded, version, Some((rejection, appending))))
        })()
    }
}

/// The append that records a decided command: its events (none for a rejection) with the
/// version it was decided on as the expected version, and its record. Answers the append and
/// the rejection, if any.
fn appending(
    handler: &ActiveHandler,
    plan: &CommandPlan,
    version: u64,
    decided: Result<Vec<NewEvent>, String>,
) -> Result<(AppendRequest, Option<String>), PluginFailure> {
    let request = &plan.request;
    let record = |outcome: &str, reason: Option<&str>| {
        let record = CommandRecord {
            command_id: Cow::Borrowed(&plan.id),
            handler: Cow::Borrowed(&handler.name),
            handler_version: Cow::Borrowed(&handler.version),
            stream: Cow::Borrowed(&request.stream),
            command_type: Cow::Borrowed(&request.command_type),
            data: raw(&request.data),
            metadata: raw(&request.metadata),
            outcome: Cow::Borrowed(outcome),
            reason: reason.map(Cow::Borrowed),
            stream_version: version,
            attempts: plan.attempt,
            recorded_at: Cow::Owned(now_rfc3339()),
        };
        CommandEntry {
            id: plan.id.clone(),
            record: serde_json::to_vec(&record).expect("a command record serializes"),
            tally: command_tally(&handler.name, &handler.version),
        }
    };
    let (events, entry, rejection) = match decided {
        Ok(events) => {
            let events =
                Commands::proposed_events(plan.limits, events, &plan.id, &request.metadata)?;
            (events, record("applied", None), None)
        }
        Err(reason) => {
            let entry = record("rejected", Some(&reason));
            (Vec::new(), entry, Some(reason))
        }
    };
    let expected_version = match (&rejection, version) {
        (Some(_), _) => ExpectedVersion::Any,
        (None, 0) => ExpectedVersion::NoStream,
        (None, version) => ExpectedVersion::Exact(version),
    };
    let append = AppendRequest {
        stream: request.stream.clone(),
        expected_version,
        events,
        command: Some(entry),
    };
    Ok((append, rejection))
}

/// What `evolve` needs of a stored event record, borrowed from it; the other fields are skipped
/// without being decoded.
#[derive(Deserialize)]
pub struct StoredEvent<'a> {
    pub version: u64,
    #[serde(rename = "type", borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

impl<'a> StoredEvent<'a> {
    /// The fields of a stored event record.
    pub fn parse(event: &'a RecordedEvent) -> Result<Self, StorageError> {
        serde_json::from_slice(&event.json).map_err(|e| StorageError::Corrupt {
            position: event.position,
            reason: e.to_string(),
        })
    }

    pub fn input(&self) -> EventInput<'_> {
        EventInput {
            version: self.version,
            event_type: &self.event_type,
            data: self.data.get(),
        }
    }
}

/// Folds `events` into `state` with the handler's `evolve`, as many per call as one call takes
/// ([`batches`]), calling `on_call` before each call; `None` when there was nothing to fold.
pub fn fold(
    plugin: &HandlerPlugin,
    state: Option<&[u8]>,
    events: &[StoredEvent<'_>],
    mut on_call: impl FnMut(),
) -> Result<Option<Vec<u8>>, PluginFailure> {
    let mut folded: Option<Vec<u8>> = None;
    for batch in batches(events) {
        let inputs: Vec<EventInput<'_>> = batch.iter().map(StoredEvent::input).collect();
        on_call();
        folded = Some(plugin.evolve(folded.as_deref().or(state), &inputs)?);
    }
    Ok(folded)
}

/// Splits events into runs that one `evolve` call takes.
fn batches<'a, 'e>(events: &'a [StoredEvent<'e>]) -> impl Iterator<Item = &'a [StoredEvent<'e>]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut end = 0;
        while end < rest.len() && end < EVOLVE_BATCH_EVENTS {
            bytes += rest[end].data.get().len();
            end += 1;
            if bytes >= EVOLVE_BATCH_BYTES {
                break;
            }
        }
        let (batch, after) = rest.split_at(end);
        rest = after;
        Some(batch)
    })
}

/// How long to wait before deciding again after the `attempt`-th conflict: a random time up to
/// a bound that doubles each attempt (from 250 µs), so that a command stops meeting the writer
/// it lost to at the same moment of every commit.
fn backoff(attempt: u32) -> Duration {
    let bound_micros = 250u64 << attempt.min(10);
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    Duration::from_micros(random % bound_micros)
}

/// JSON text known to be valid, as a raw value.
fn raw(json: &str) -> &RawValue {
    serde_json::from_str(json).expect("validated JSON")
}

#[async_trait::async_trait]
impl CommandSink for Commands {
    async fn deliver(&self, handler: &str, request: CommandRequest) -> Result<Delivered, String> {
        match self.execute(handler, request).await {
            Ok(CommandOutcome::Applied { .. }) => Ok(Delivered::Applied),
            Ok(CommandOutcome::Rejected { reason, .. }) => Ok(Delivered::Rejected(reason)),
            // Delivering it again cannot help: the request asks for something no handler will
            // take. It counts as a rejection, so the policy can compensate.
            Err(error @ (CommandError::Invalid(_) | CommandError::IdReused { .. })) => {
                Ok(Delivered::Rejected(error.to_string()))
            }
            Err(error) => Err(error.to_string()),
        }
    }
}

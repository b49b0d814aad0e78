//! A handler's replay: every command of the range that the handler recorded is decided again by
//! the replayed version, on its stream as it was when the command was decided (the recorded
//! events up to the command's stream version, folded with the replayed version's `evolve`), and
//! the answer is compared with the recorded outcome.
//!
//! Commands are replayed stream by stream in version order, so each stream is read and folded
//! once. Nothing is written.

use crate::wait::wait;
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{FirstDifferences, Job, Stop, json_value};
use crate::commands::{CommandRecord, StoredEvent, fold};
use evhost_runtime::{CommandInput, HandlerPlugin, NewEvent};
use evhost_store::{Direction, RecordedEvent, StorageError, Store};

/// Commands read from the store per page while collecting the range.
const COLLECT_PAGE: usize = 1_000;
/// Events read per page of a stream.
const STREAM_PAGE: usize = 1_000;

/// A recorded command of the replayed handler, as much as the replay needs of it.
struct Recorded {
    id: String,
    position: u64,
    stream: String,
    stream_version: u64,
    event_count: u64,
    command_type: String,
    data: String,
    metadata: String,
    /// The rejection's reason, when it was rejected.
    rejected: Option<String>,
}

/// How a command's replayed outcome compares with the recorded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    Same,
    OtherEvents,
    OtherReason,
    NowRejected,
    NowAccepted,
    Failed,
}

impl Change {
    const ALL: [Change; 6] = [
        Change::Same,
        Change::OtherEvents,
        Change::OtherReason,
        Change::NowRejected,
        Change::NowAccepted,
        Change::Failed,
    ];

    fn name(self) -> &'static str {
        match self {
            Change::Same => "same",
            Change::OtherEvents => "other_events",
            Change::OtherReason => "other_reason",
            Change::NowRejected => "now_rejected",
            Change::NowAccepted => "now_accepted",
            Change::Failed => "failed",
        }
    }
}

pub(super) fn run(job: &Job<'_>, plugin: &HandlerPlugin, to: Option<u64>) -> Result<Value, Stop> {
    let replay = job.replay;
    let to = to.unwrap_or_else(|| job.store.head());
    let mut commands = collect(job.store, &replay.plugin, replay.from, to)?;
    replay.set_range(to, commands.len() as u64);
    commands.sort_by(|a, b| {
        (&a.stream, a.stream_version, a.position).cmp(&(&b.stream, b.stream_version, b.position))
    });
    let mut counts: BTreeMap<Change, u64> = BTreeMap::new();
    let mut differences = FirstDifferences::new(job.differences);
    let mut start = 0;
    while start < commands.len() {
        let end = start
            + commands[start..]
                .iter()
                .take_while(|c| c.stream == commands[start].stream)
                .count();
        let stream = &commands[start..end];
        let needed = stream
            .iter()
            .map(|c| c.stream_version + c.event_count)
            .max()
            .unwrap_or(0);
        let records = read_stream(job.store, &stream[0].stream, needed)?;
        let events = records
            .iter()
            .map(StoredEvent::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let mut state: Option<Vec<u8>> = None;
        let mut folded = 0usize;
        let mut broken: Option<String> = None;
        for command in stream {
            let wanted = (command.stream_version as usize).min(events.len());
            if broken.is_none() && folded < wanted {
                match fold(plugin, state.as_deref(), &events[folded..wanted], || {}) {
                    Ok(next) => {
                        state = next.or(state);
                        folded = wanted;
                    }
                    Err(error) => broken = Some(format!("evolve failed: {error}")),
                }
            }
            let recorded_events = &events[wanted
                ..(command.stream_version + command.event_count).min(events.len() as u64) as usize];
            let decided = match &broken {
                Some(error) => Err(error.clone()),
                None => plugin
                    .decide(
                        state.as_deref(),
                        &CommandInput {
                            id: &command.id,
                            stream: &command.stream,
                            command_type: &command.command_type,
                            data: &command.data,
                            metadata: &command.metadata,
                        },
                    )
                    .map_err(|failure| failure.to_string()),
            };
            let change = compare(command, recorded_events, &decided);
            *counts.entry(change).or_default() += 1;
            if change != Change::Same {
                differences.offer((command.position, command.id.clone()), || {
                    json!({
                        "command_id": command.id,
                        "position": command.position,
                        "stream": command.stream,
                        "stream_version": command.stream_version,
                        "type": command.command_type,
                        "data": json_value(&command.data),
                        "change": change.name(),
                        "recorded": recorded_outcome(command, recorded_events),
                        "candidate": candidate_outcome(&decided),
                    })
                });
            }
            if !replay.advance(1, command.position) {
                return Err(Stop::Cancelled);
            }
        }
        start = end;
    }
    let same = counts.get(&Change::Same).copied().unwrap_or(0);
    let outcomes: serde_json::Map<String, Value> = Change::ALL
        .iter()
        .map(|change| {
            let count = counts.get(change).copied().unwrap_or(0);
            (change.name().to_owned(), count.into())
        })
        .collect();
    Ok(json!({
        "kind": "handler",
        "from": replay.from,
        "to": to,
        "commands": commands.len(),
        "same": same,
        "different": commands.len() as u64 - same,
        "outcomes": outcomes,
        "differences": differences.into_values(),
    }))
}

/// The recorded commands of handler `name` whose positions are in `from..=to`.
fn collect(
    store: &dyn Store,
    name: &str,
    from: u64,
    to: u64,
) -> Result<Vec<Recorded>, StorageError> {
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = wait(store.scan_commands("", after.as_deref(), COLLECT_PAGE))?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (id, stored) in page {
            if stored.position < from || stored.position > to {
                continue;
            }
            let record: CommandRecord<'_> = serde_json::from_slice(&stored.record)
                .map_err(|e| StorageError::Failed(format!("command {id} is corrupt: {e}")))?;
            if record.handler != name {
                continue;
            }
            found.push(Recorded {
                position: stored.position,
                stream: record.stream.into_owned(),
                stream_version: record.stream_version,
                event_count: stored.event_count,
                command_type: record.command_type.into_owned(),
                data: record.data.get().to_owned(),
                metadata: record.metadata.get().to_owned(),
                rejected: (record.outcome == "rejected")
                    .then(|| record.reason.unwrap_or_default().into_owned()),
                id,
            });
        }
    }
    Ok(found)
}

/// The first `until` events of `stream`.
fn read_stream(
    store: &dyn Store,
    stream: &str,
    until: u64,
) -> Result<Vec<RecordedEvent>, StorageError> {
    let mut events = Vec::new();
    let mut from = 1;
    while from <= until {
        let Some(page) =
            wait(store.read_stream(stream, Some(from), STREAM_PAGE, Direction::Forward))?
        else {
            break;
        };
        events.extend(page.events);
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    events.truncate(until as usize);
    Ok(events)
}

fn compare(
    command: &Recorded,
    recorded: &[StoredEvent<'_>],
    decided: &Result<Result<Vec<NewEvent>, String>, String>,
) -> Change {
    match (decided, &command.rejected) {
        (Err(_), _) => Change::Failed,
        (Ok(Err(reason)), Some(was)) if reason == was => Change::Same,
        (Ok(Err(_)), Some(_)) => Change::OtherReason,
        (Ok(Err(_)), None) => Change::NowRejected,
        (Ok(Ok(_)), Some(_)) => Change::NowAccepted,
        (Ok(Ok(events)), None) => {
            let same = events.len() == recorded.len()
                && events.iter().zip(recorded).all(|(new, old)| {
                    new.event_type == old.event_type
                        && json_value(&new.data) == json_value(old.data.get())
                });
            if same {
                Change::Same
            } else {
                Change::OtherEvents
            }
        }
    }
}

fn recorded_outcome(command: &Recorded, events: &[StoredEvent<'_>]) -> Value {
    match &command.rejected {
        Some(reason) => json!({"outcome": "rejected", "reason": reason}),
        None => json!({
            "outcome": "applied",
            "events": events
                .iter()
                .map(|e| json!({"type": e.event_type, "data": json_value(e.data.get())}))
                .collect::<Vec<_>>(),
        }),
    }
}

fn candidate_outcome(decided: &Result<Result<Vec<NewEvent>, String>, String>) -> Value {
    match decided {
        Err(error) => json!({"outcome": "failed", "error": error}),
        Ok(Err(reason)) => json!({"outcome": "rejected", "reason": reason}),
        Ok(Ok(events)) => json!({
            "outcome": "applied",
            "events": events
                .iter()
                .map(|e| json!({"type": e.event_type, "data": json_value(&e.data)}))
                .collect::<Vec<_>>(),
        }),
    }
}

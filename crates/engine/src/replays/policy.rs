//! A policy's replay: the replayed version reacts to every event of the range it subscribes
//! to, over a state of its own in the replay's scratch space (empty at the start of the range),
//! and the commands it would send are compared with the commands the policy recorded for that
//! event (their ids derive from the event's position).
//!
//! Its timers fire as the policy's would have: the ones it set that are due by an event's
//! `recorded_at` fire before that event, in order of due time, and the commands `on-timer`
//! sends are compared with those recorded for the same timer and due time (their ids derive from
//! both). After the last event, timers due by now fire when the range reaches the head.
//! Commands still waiting in the policy's outbox are not recorded yet, so they count as not
//! sent; `on-rejected` is not replayed.

use crate::projections::storage;
use crate::wait::wait;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{FirstDifferences, Job, Stop, json_value};
use crate::commands::CommandRecord;
use crate::policies::{event_command_prefix, timer_command_prefix};
use crate::projections::log_event;
use crate::projections::state::BatchState;
use evhost_runtime::{PluginInfo, PolicyAction, PolicyPlugin};
use evhost_store::{LogFilter, RecordView, StorageError, Store, millis_from_rfc3339};

/// Events reacted to per batch of state writes.
const BATCH_EVENTS: usize = 256;
/// Most commands one reaction is compared with.
const MAX_COMMANDS: usize = 1_000;

/// Where a difference sorts in the report: before the event at this position, a timer that
/// fired (by key), or the event itself.
type Order = (u64, u8, String);

/// The replay's tallies, and its first differences.
struct Tally {
    reactions: u64,
    timers_fired: u64,
    same: u64,
    failed: u64,
    recorded_commands: u64,
    candidate_commands: u64,
    differences: FirstDifferences<Order>,
}

impl Tally {
    /// Counts one reaction (to an event or a timer): the commands recorded for it against what
    /// the replayed version answered; `describe` adds what the difference is about.
    fn compare(
        &mut self,
        order: Order,
        recorded: Vec<Value>,
        reacted: &Result<Vec<PolicyAction>, String>,
        describe: impl FnOnce() -> Value,
    ) {
        self.recorded_commands += recorded.len() as u64;
        let candidate = match reacted {
            Ok(actions) => {
                let sent = sent(actions);
                self.candidate_commands += sent.len() as u64;
                if sent == recorded {
                    self.same += 1;
                    return;
                }
                json!({"outcome": "reacted", "commands": sent})
            }
            Err(error) => {
                self.failed += 1;
                json!({"outcome": "failed", "error": error})
            }
        };
        let change = if reacted.is_ok() {
            "other_commands"
        } else {
            "failed"
        };
        self.differences.offer(order, || {
            let mut difference = describe();
            difference["change"] = change.into();
            difference["recorded"] = json!({"commands": recorded});
            difference["candidate"] = candidate;
            difference
        });
    }
}

/// The replayed version's timers: key → (due, payload).
type Timers = BTreeMap<String, (u64, String)>;

pub(super) fn run(
    job: &Job<'_>,
    runtime: &tokio::runtime::Handle,
    plugin: &PolicyPlugin,
    info: &PluginInfo,
    to: Option<u64>,
) -> Result<Value, Stop> {
    let replay = job.replay;
    let name = replay.plugin.as_str();
    let from = replay.from;
    let head = job.store.head();
    let to = to.unwrap_or(u64::MAX).min(head);
    replay.set_range(to, (to + 1).saturating_sub(from));
    let filter = LogFilter {
        categories: info.categories.clone(),
        event_types: info.event_types.clone(),
    };
    let space: Arc<str> = format!("{}state", replay.scratch).into();
    let mut tally = Tally {
        reactions: 0,
        timers_fired: 0,
        same: 0,
        failed: 0,
        recorded_commands: 0,
        candidate_commands: 0,
        differences: FirstDifferences::new(job.differences),
    };
    let mut timers = Timers::new();
    let mut next = from;
    while next <= to {
        let page = wait(job.store.read_log(next, BATCH_EVENTS, &filter))?;
        let covered = match page.next {
            Some(next) => next - 1,
            None => page.head.max(next - 1),
        }
        .min(to);
        let state = Arc::new(BatchState::writable(
            space.clone(),
            wait(job.store.snapshot())?,
            None,
        ));
        for record in page.events.iter().filter(|e| e.position <= to) {
            let view = RecordView::parse(&record.json).map_err(|e| StorageError::Corrupt {
                position: record.position,
                reason: e.to_string(),
            })?;
            if let Some(now) = millis_from_rfc3339(&view.recorded_at) {
                fire(
                    job,
                    plugin,
                    &state,
                    &mut timers,
                    &mut tally,
                    now,
                    record.position,
                )?;
            }
            let event = log_event(&view);
            let reacted = state.call(
                "react returned an error",
                |state| plugin.react(&event, state),
                Ok,
            );
            if let Ok(actions) = &reacted {
                set_timers(&mut timers, actions);
            }
            let prefix = event_command_prefix(name, record.position);
            let recorded = recorded(job.store, &prefix)?;
            tally.reactions += 1;
            tally.compare(
                (record.position, 1, String::new()),
                recorded,
                &reacted,
                || {
                    json!({
                        "position": record.position,
                        "stream": view.stream,
                        "event_type": view.event_type,
                    })
                },
            );
        }
        let state = Arc::into_inner(state).expect("the plugin returns the state after its call");
        let (writes, _) = state.into_writes();
        if !writes.is_empty() {
            runtime
                .block_on(job.store.write_data(writes, None))
                .map_err(storage)?;
        }
        if covered < next {
            break;
        }
        if !replay.advance(covered + 1 - next, covered) {
            return Err(Stop::Cancelled);
        }
        next = covered + 1;
    }
    // Up to the head, the policy's timers fired by the clock: those due by now have.
    if to == head {
        let state = Arc::new(BatchState::writable(
            space.clone(),
            wait(job.store.snapshot())?,
            None,
        ));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        fire(job, plugin, &state, &mut timers, &mut tally, now, to + 1)?;
    }
    let compared = tally.reactions + tally.timers_fired;
    Ok(json!({
        "kind": "policy",
        "from": from,
        "to": to,
        "events": tally.reactions,
        "timers_fired": tally.timers_fired,
        "same": tally.same,
        "different": compared - tally.same,
        "failed": tally.failed,
        "commands_recorded": tally.recorded_commands,
        "commands_candidate": tally.candidate_commands,
        "timers_pending": timers.len(),
        "differences": tally.differences.into_values(),
    }))
}

/// Fires the timers due by `now`, in order of due time, before the event at `position`.
fn fire(
    job: &Job<'_>,
    plugin: &PolicyPlugin,
    state: &Arc<BatchState>,
    timers: &mut Timers,
    tally: &mut Tally,
    now: u64,
    position: u64,
) -> Result<(), Stop> {
    loop {
        let due = timers
            .iter()
            .filter(|(_, (due, _))| *due <= now)
            .min_by_key(|(key, (due, _))| (*due, (*key).clone()))
            .map(|(key, _)| key.clone());
        let Some(key) = due else {
            return Ok(());
        };
        let (due_ms, payload) = timers.remove(&key).expect("found above");
        let reacted = state.call(
            "on-timer returned an error",
            |state| plugin.on_timer(&key, &payload, state),
            Ok,
        );
        if let Ok(actions) = &reacted {
            set_timers(timers, actions);
        }
        let prefix = timer_command_prefix(&job.replay.plugin, &key, due_ms);
        let recorded = recorded(job.store, &prefix)?;
        tally.timers_fired += 1;
        tally.compare(
            (position, 0, key.clone()),
            recorded,
            &reacted,
            || json!({"timer": key, "due_ms": due_ms, "before_position": position}),
        );
    }
}

/// Applies the timer actions among `actions`.
fn set_timers(timers: &mut Timers, actions: &[PolicyAction]) {
    for action in actions {
        match action {
            PolicyAction::Schedule {
                key,
                due_ms,
                payload,
            } => {
                timers.insert(key.clone(), (*due_ms, payload.clone()));
            }
            PolicyAction::CancelTimer(key) => {
                timers.remove(key);
            }
            PolicyAction::Send { .. } => {}
        }
    }
}

/// The commands recorded under the id prefix `prefix`, in the order they were sent.
fn recorded(store: &dyn Store, prefix: &str) -> Result<Vec<Value>, Stop> {
    wait(store.scan_commands(prefix, None, MAX_COMMANDS))?
        .into_iter()
        .map(|(id, stored)| {
            let record: CommandRecord<'_> = serde_json::from_slice(&stored.record)
                .map_err(|e| Stop::Failed(format!("command {id} is corrupt: {e}")))?;
            Ok(json!({
                "handler": record.handler,
                "stream": record.stream,
                "type": record.command_type,
                "data": json_value(record.data.get()),
            }))
        })
        .collect()
}

/// The commands among `actions`, as [`recorded`] shows them.
fn sent(actions: &[PolicyAction]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|action| match action {
            PolicyAction::Send {
                handler,
                stream,
                command_type,
                data,
            } => Some(json!({
                "handler": handler,
                "stream": stream,
                "type": command_type,
                "data": json_value(data),
            })),
            _ => None,
        })
        .collect()
}

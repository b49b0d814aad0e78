//! A policy's replay: the replayed version reacts to every event of the range it subscribes
//! to, over a state of its own in the replay's scratch space (empty at the start of the range),
//! and the commands it would send are compared with the commands the policy recorded for that
//! event (their ids derive from the event's position).
//!
//! Timers the replayed version sets or cancels are counted, not fired: firing them would need
//! the clock of the past. Commands still waiting in the policy's outbox are not recorded yet,
//! so they count as not sent.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{FirstDifferences, Job, Stop, json_value};
use crate::commands::CommandRecord;
use crate::policies::event_command_prefix;
use crate::projections::log_event;
use crate::projections::state::BatchState;
use crate::runtime::{PluginInfo, PolicyAction, PolicyPlugin};
use crate::store::{EventStore, LogFilter, RecordView, StorageError};

/// Events reacted to per batch of state writes.
const BATCH_EVENTS: usize = 256;
/// Most commands one event's reaction is compared with.
const MAX_COMMANDS: usize = 1_000;

pub(super) fn run(
    job: &Job<'_>,
    runtime: &tokio::runtime::Handle,
    plugin: &PolicyPlugin,
    info: &PluginInfo,
    to: Option<u64>,
) -> Result<Value, Stop> {
    let replay = job.replay;
    let from = replay.from;
    let to = to.unwrap_or(u64::MAX).min(job.store.head());
    replay.set_range(to, (to + 1).saturating_sub(from));
    let filter = LogFilter {
        categories: info.categories.clone(),
        event_types: info.event_types.clone(),
    };
    let space: Arc<str> = format!("{}state", replay.scratch).into();
    let (mut events, mut same, mut failed) = (0u64, 0u64, 0u64);
    let (mut recorded_commands, mut candidate_commands, mut timers) = (0u64, 0u64, 0u64);
    let mut differences = FirstDifferences::new(job.differences);
    let mut next = from;
    while next <= to {
        let page = job.store.read_log(next, BATCH_EVENTS, &filter)?;
        let covered = match page.next {
            Some(next) => next - 1,
            None => page.head.max(next - 1),
        }
        .min(to);
        let state = Arc::new(BatchState::writable(
            space.clone(),
            job.store.data_snapshot()?,
            None,
        ));
        for record in page.events.iter().filter(|e| e.position <= to) {
            let view = RecordView::parse(&record.json).map_err(|e| StorageError::Corrupt {
                position: record.position,
                reason: e.to_string(),
            })?;
            let event = log_event(&view);
            let reacted = state.call(
                "react returned an error",
                |state| plugin.react(&event, state),
                Ok,
            );
            let recorded = recorded(job.store, &replay.plugin, record.position)?;
            events += 1;
            recorded_commands += recorded.len() as u64;
            let candidate = match &reacted {
                Ok(actions) => {
                    timers += actions
                        .iter()
                        .filter(|a| !matches!(a, PolicyAction::Send { .. }))
                        .count() as u64;
                    let sent = sent(actions);
                    candidate_commands += sent.len() as u64;
                    if sent == recorded {
                        same += 1;
                        continue;
                    }
                    json!({"outcome": "reacted", "commands": sent})
                }
                Err(error) => {
                    failed += 1;
                    json!({"outcome": "failed", "error": error})
                }
            };
            differences.offer(record.position, || {
                json!({
                    "position": record.position,
                    "stream": view.stream,
                    "event_type": view.event_type,
                    "change": if reacted.is_ok() { "other_commands" } else { "failed" },
                    "recorded": {"commands": recorded},
                    "candidate": candidate,
                })
            });
        }
        let state = Arc::into_inner(state).expect("the plugin returns the state after its call");
        let (writes, _) = state.into_writes();
        if !writes.is_empty() {
            runtime.block_on(job.store.write_data(writes))?;
        }
        if covered < next {
            break;
        }
        if !replay.advance(covered + 1 - next, covered) {
            return Err(Stop::Cancelled);
        }
        next = covered + 1;
    }
    Ok(json!({
        "kind": "policy",
        "from": from,
        "to": to,
        "events": events,
        "same": same,
        "different": events - same,
        "failed": failed,
        "commands_recorded": recorded_commands,
        "commands_candidate": candidate_commands,
        "timer_actions": timers,
        "differences": differences.into_values(),
    }))
}

/// The commands policy `policy` recorded for the event at `position`, in the order it sent
/// them.
fn recorded(store: &dyn EventStore, policy: &str, position: u64) -> Result<Vec<Value>, Stop> {
    let prefix = event_command_prefix(policy, position);
    store
        .scan_commands(&prefix, None, MAX_COMMANDS)?
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

//! A projection's replay: the replayed version builds its state over the range in the replay's
//! scratch space, and that state is compared key by key with the active version's state at the
//! same position.
//!
//! Over the whole of history up to the active version's position (the default range), the
//! active version's state is read as it was when the replay started, from a snapshot held for
//! the replay's duration. Over any other range, the active version is replayed too, into a
//! second scratch space, so that both states cover the same events.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{FirstDifferences, Job, StartError, Stop, json_value};
use crate::plugins::{HandlerLookupError, Plugins};
use crate::projections::state::Overlay;
use crate::projections::{Source, read_checkpoint, state_space};
use evhost_runtime::{PluginCalls, PluginInfo, ProjectionPlugin};
use evhost_store::{CommitError, DataSnapshot, LogFilter, Store};

use crate::projections::storage;
use crate::wait::wait;

/// Entries read per page of a state while comparing.
const DIFF_PAGE: usize = 1_000;

/// What the replayed state is compared with.
pub(super) struct Baseline {
    active_version: String,
    /// The active version's state when the replay started, and the position it reflects.
    snapshot: Box<dyn DataSnapshot>,
    space: Arc<str>,
    position: u64,
    /// The active version itself, for a range its state does not cover.
    plugin: Option<(ProjectionPlugin, PluginInfo)>,
}

impl Baseline {
    /// The active version of projection `name`, its state now, and, when the range is not
    /// `1..=` its position, the version itself to replay.
    pub(super) async fn take(
        plugins: &Plugins,
        store: &dyn Store,
        name: &str,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<Self, StartError> {
        let active = plugins.projection(name, None).map_err(|e| match e {
            HandlerLookupError::Failed { .. } => StartError::Invalid(format!(
                "projection {name} has no active version to compare with: {e}"
            )),
            other => StartError::Invalid(other.to_string()),
        })?;
        let key = format!("{name}/{}", active.version);
        let snapshot = store
            .snapshot()
            .await
            .map_err(crate::plugins::VersionError::from)?;
        let position = read_checkpoint(&*snapshot, &key)
            .await
            .map_err(crate::plugins::VersionError::from)?;
        let whole = from.unwrap_or(1) == 1 && to.is_none_or(|to| to == position);
        let plugin = if whole {
            None
        } else {
            match plugins.load_for_replay(name, &active.version).await? {
                (PluginCalls::Projection(plugin), info) => Some((plugin, info)),
                _ => unreachable!("a projection's version is a projection"),
            }
        };
        Ok(Baseline {
            active_version: active.version.clone(),
            snapshot,
            space: state_space(&key).into(),
            position,
            plugin,
        })
    }
}

pub(super) fn run(
    job: &Job<'_>,
    runtime: &tokio::runtime::Handle,
    plugin: &ProjectionPlugin,
    info: &PluginInfo,
    baseline: Baseline,
    to: Option<u64>,
) -> Result<Value, Stop> {
    let replay = job.replay;
    let from = replay.from;
    let to = to.unwrap_or(baseline.position).min(job.store.head());
    let span = (to + 1).saturating_sub(from);
    let phases = if baseline.plugin.is_some() { 2 } else { 1 };
    replay.set_range(to, span * phases);
    let (base_snapshot, base_space, compared_with) = match &baseline.plugin {
        None => (
            baseline.snapshot,
            baseline.space.clone(),
            "the active version's state",
        ),
        Some((active, active_info)) => {
            let space: Arc<str> = format!("{}active", replay.scratch).into();
            build(job, runtime, active, active_info, &space, from, to)?;
            (
                wait(job.store.snapshot())?,
                space,
                "the active version replayed over the same range",
            )
        }
    };
    let space: Arc<str> = format!("{}candidate", replay.scratch).into();
    build(job, runtime, plugin, info, &space, from, to)?;
    let candidate_snapshot = wait(job.store.snapshot())?;
    let mut active = Cursor::new(&*base_snapshot, base_space);
    let mut candidate = Cursor::new(&*candidate_snapshot, space);
    let (mut same, mut added, mut removed, mut changed) = (0u64, 0u64, 0u64, 0u64);
    let mut differences = FirstDifferences::new(job.differences);
    loop {
        let order = match (active.peek()?, candidate.peek()?) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((a, _)), Some((c, _))) => a.cmp(c),
        };
        let (key, was, now) = match order {
            std::cmp::Ordering::Less => {
                let (key, was) = active.take();
                (key, Some(was), None)
            }
            std::cmp::Ordering::Greater => {
                let (key, now) = candidate.take();
                (key, None, Some(now))
            }
            std::cmp::Ordering::Equal => {
                let (key, was) = active.take();
                let (_, now) = candidate.take();
                (key, Some(was), Some(now))
            }
        };
        let change = match (&was, &now) {
            (Some(was), Some(now)) if was == now || text_value(was) == text_value(now) => {
                same += 1;
                continue;
            }
            (Some(_), Some(_)) => {
                changed += 1;
                "changed"
            }
            (Some(_), None) => {
                removed += 1;
                "removed"
            }
            (None, _) => {
                added += 1;
                "added"
            }
        };
        differences.offer(key.clone(), || {
            json!({
                "key": key,
                "change": change,
                "active": was.as_deref().map(text_value),
                "candidate": now.as_deref().map(text_value),
            })
        });
        if replay.cancelled.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
    }
    Ok(json!({
        "kind": "projection",
        "from": from,
        "to": to,
        "active_version": baseline.active_version,
        "compared_with": compared_with,
        "keys": same + added + removed + changed,
        "same": same,
        "different": added + removed + changed,
        "added": added,
        "removed": removed,
        "changed": changed,
        "differences": differences.into_values(),
    }))
}

/// Builds the state of `plugin` over `from..=to` in `space`, committing batch by batch.
fn build(
    job: &Job<'_>,
    runtime: &tokio::runtime::Handle,
    plugin: &ProjectionPlugin,
    info: &PluginInfo,
    space: &Arc<str>,
    from: u64,
    to: u64,
) -> Result<(), Stop> {
    let filter = LogFilter {
        categories: info.categories.clone(),
        event_types: info.event_types.clone(),
    };
    let source = Source {
        plugin,
        store: job.store,
        filter: &filter,
        space,
        known: None,
    };
    // As a runner does, the next batch is applied over the writes of the one being committed.
    type Commit = tokio::task::JoinHandle<Result<(), CommitError>>;
    let mut committing: Option<(Commit, Arc<Overlay>)> = None;
    let finish = |commit: Commit| -> Result<(), Stop> {
        runtime
            .block_on(commit)
            .map_err(|e| Stop::Failed(format!("a commit panicked: {e}")))?
            .map_err(|e| Stop::from(storage(e)))
    };
    let mut next = from;
    while next <= to {
        let prior = committing.as_ref().map(|(_, overlay)| overlay.clone());
        let step = source.apply_batch(next, to, prior, None)?;
        if let Some((commit, _)) = committing.take() {
            finish(commit)?;
        }
        if let Some((position, error)) = step.failure {
            return Err(Stop::Failed(format!(
                "{} fails at position {position}: {error}",
                info.name
            )));
        }
        if !step.writes.is_empty() {
            // Sent now, so that it commits while the next batch is applied.
            let store = job.shared_store.clone();
            let commit = runtime.spawn(async move { store.write_data(step.writes, None).await });
            committing = Some((commit, step.overlay));
        }
        if step.covered < next {
            break;
        }
        if !job.replay.advance(step.covered + 1 - next, step.covered) {
            // What was sent lands before the scratch state is deleted.
            if let Some((commit, _)) = committing {
                finish(commit)?;
            }
            return Err(Stop::Cancelled);
        }
        next = step.covered + 1;
    }
    if let Some((commit, _)) = committing {
        finish(commit)?;
    }
    Ok(())
}

/// Walks one data space in key order, a page at a time.
struct Cursor<'s> {
    snapshot: &'s dyn DataSnapshot,
    space: Arc<str>,
    page: VecDeque<(String, Vec<u8>)>,
    after: Option<String>,
    ended: bool,
}

impl<'s> Cursor<'s> {
    fn new(snapshot: &'s dyn DataSnapshot, space: Arc<str>) -> Self {
        Cursor {
            snapshot,
            space,
            page: VecDeque::new(),
            after: None,
            ended: false,
        }
    }

    fn peek(&mut self) -> Result<Option<&(String, Vec<u8>)>, Stop> {
        if self.page.is_empty() && !self.ended {
            let page = wait(
                self.snapshot
                    .scan(&self.space, "", self.after.as_deref(), DIFF_PAGE),
            )?;
            self.ended = page.len() < DIFF_PAGE;
            self.after = page.last().map(|(key, _)| key.clone());
            self.page.extend(page);
        }
        Ok(self.page.front())
    }

    /// The entry [`Cursor::peek`] showed.
    fn take(&mut self) -> (String, Vec<u8>) {
        self.page.pop_front().expect("peeked first")
    }
}

/// A stored value as JSON to compare and show.
fn text_value(bytes: &[u8]) -> Value {
    json_value(&String::from_utf8_lossy(bytes))
}

//! Dry-run replays: a stored version of a plugin run over a range of history with no side
//! effects, and a report of how its output differs from what was recorded.
//!
//! - A handler decides every recorded command of the range again, on the stream as it was when
//!   the command was decided, and is compared with the recorded outcome ([`handler`]).
//! - A projection builds its state over the range in a scratch space, which is compared key by
//!   key with the active version's state at the same position ([`projection`]).
//! - A policy reacts to the range's events over a scratch state, and the commands it would send
//!   are compared with the commands recorded for each event ([`policy`]).
//!
//! A replay runs on a blocking thread of its own, shows its progress while it runs, can be
//! cancelled, and is kept in memory: a restart forgets it.
//!
//! Architecture Invariant: a replay writes only under its scratch prefix `replay/<id>/` of the
//! data table, and deletes it when it ends, however it ends; the host deletes what a crash left
//! there when it starts. It calls no handler for real, appends nothing, and moves no
//! checkpoint.

mod handler;
mod policy;
mod projection;

use crate::wait::wait;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::plugins::{Plugins, VersionError};
use evhost_runtime::{PluginCalls, PluginKind};
use evhost_store::{StorageError, Store, now_rfc3339};

/// The data spaces of every replay's scratch state start with this.
const SCRATCH: &str = "replay/";
/// Replays running at once, at most: each keeps a core busy.
const MAX_RUNNING: usize = 2;
/// Finished replays kept for `GET /replays/{id}`, at most; the oldest go first.
const MAX_KEPT: usize = 100;
/// Differences a report shows in full: by default, and at most.
pub const DEFAULT_DIFFERENCES: usize = 20;
pub const MAX_DIFFERENCES: usize = 1_000;
/// How long a cancellation waits for the replay to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// What a replay is asked to do.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub version: String,
    /// The first position of the range; 1 when unset.
    pub from: Option<u64>,
    /// The last position of the range; when unset, the head (for a projection: the position
    /// of its active version's state).
    pub to: Option<u64>,
    /// How many differences the report shows in full.
    pub differences: usize,
}

/// Why a replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error("{0}")]
    Invalid(String),
    #[error("{MAX_RUNNING} replays are running; wait for one to end or cancel one")]
    Busy,
}

/// The replays of this process.
pub struct Replays {
    plugins: Arc<Plugins>,
    store: Arc<dyn Store>,
    runs: Mutex<BTreeMap<String, Arc<Replay>>>,
}

/// How a replay ended, or that it has not.
#[derive(Debug, Clone)]
enum Outcome {
    Running,
    Done(Value),
    Failed(String),
    Cancelled,
}

/// One replay, its progress and, once it has ended, its report.
pub struct Replay {
    id: String,
    plugin: String,
    kind: PluginKind,
    version: String,
    from: u64,
    started: Instant,
    started_at: String,
    /// The last position of the range, once known.
    to: AtomicU64,
    /// The position reached.
    position: AtomicU64,
    /// Units of work done (commands for a handler, positions for the others), and in all.
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
    outcome: Mutex<(Outcome, Option<String>)>,
    /// Where its scratch state lives.
    scratch: String,
}

impl Replay {
    /// Counts `units` more done, up to `position`; answers false once the replay is
    /// cancelled, when the worker must stop.
    fn advance(&self, units: u64, position: u64) -> bool {
        self.done.fetch_add(units, Ordering::Relaxed);
        self.position.fetch_max(position, Ordering::Relaxed);
        !self.cancelled.load(Ordering::Relaxed)
    }

    fn set_range(&self, to: u64, total: u64) {
        self.to.store(to, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    fn outcome(&self) -> std::sync::MutexGuard<'_, (Outcome, Option<String>)> {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_running(&self) -> bool {
        matches!(self.outcome().0, Outcome::Running)
    }

    /// The replay as `GET /replays/{id}` shows it.
    pub fn to_json(&self) -> Value {
        let (outcome, finished_at) = self.outcome().clone();
        let (status, report, error) = match outcome {
            Outcome::Running => ("running", Value::Null, Value::Null),
            Outcome::Done(report) => ("done", report, Value::Null),
            Outcome::Failed(error) => ("failed", Value::Null, error.into()),
            Outcome::Cancelled => ("cancelled", Value::Null, Value::Null),
        };
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let percent = match (status, total) {
            ("done", _) => 100.0,
            (_, 0) => 0.0,
            _ => (done as f64 * 100.0 / total as f64).min(100.0),
        };
        let seconds = self.started.elapsed().as_secs_f64();
        let per_second = if seconds > 0.0 {
            done as f64 / seconds
        } else {
            0.0
        };
        json!({
            "id": self.id,
            "plugin": self.plugin,
            "kind": self.kind,
            "version": self.version,
            "status": status,
            "started_at": self.started_at,
            "finished_at": finished_at,
            "from": self.from,
            "progress": {
                "position": self.position.load(Ordering::Relaxed),
                "to": self.to.load(Ordering::Relaxed),
                "percent": (percent * 10.0).round() / 10.0,
                "events_per_sec": per_second.round(),
                "done": done,
                "total": total,
                "unit": if self.kind == PluginKind::Handler { "commands" } else { "events" },
            },
            "error": error,
            "report": report,
        })
    }
}

/// What a replay worker gets: the store, its replay, the plugin it runs and what it compares
/// with.
struct Job<'a> {
    store: &'a dyn Store,
    /// The same store, for the commits a replay sends off while it goes on.
    shared_store: &'a Arc<dyn Store>,
    replay: &'a Replay,
    differences: usize,
}

/// How a worker stopped without a report.
enum Stop {
    Cancelled,
    Failed(String),
}

impl From<StorageError> for Stop {
    fn from(error: StorageError) -> Self {
        Stop::Failed(error.to_string())
    }
}

impl Replays {
    /// The replays of a host whose store may hold the scratch state of replays a crash cut off:
    /// it is deleted now. Blocks on I/O.
    pub async fn new(plugins: Arc<Plugins>, store: Arc<dyn Store>) -> Result<Self, StorageError> {
        let left = store.delete_data(SCRATCH).await?;
        if left > 0 {
            tracing::info!("deleted {left} entries of scratch state left by replays");
        }
        Ok(Replays {
            plugins,
            store,
            runs: Mutex::new(BTreeMap::new()),
        })
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Replay>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a replay of version `request.version` of plugin `name`. Loading the version blocks
    /// for a while (from the compiled cache, or compiling).
    pub async fn start(
        &self,
        name: &str,
        request: ReplayRequest,
    ) -> Result<Arc<Replay>, StartError> {
        if let (Some(from), Some(to)) = (request.from, request.to)
            && from > to
        {
            return Err(StartError::Invalid(format!(
                "the range is empty: from {from} is after to {to}"
            )));
        }
        if request.from == Some(0) {
            return Err(StartError::Invalid("positions start at 1".into()));
        }
        if self.runs().values().filter(|r| r.is_running()).count() >= MAX_RUNNING {
            return Err(StartError::Busy);
        }
        let (calls, info) = self.plugins.load_for_replay(name, &request.version).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let replay = Arc::new(Replay {
            scratch: format!("{SCRATCH}{id}/"),
            id: id.clone(),
            plugin: name.to_owned(),
            kind: info.kind,
            version: request.version.clone(),
            from: request.from.unwrap_or(1),
            started: Instant::now(),
            started_at: now_rfc3339(),
            to: AtomicU64::new(0),
            position: AtomicU64::new(0),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            outcome: Mutex::new((Outcome::Running, None)),
        });
        // Whatever a projection compares with is taken now, before the replay starts.
        let baseline = match &calls {
            PluginCalls::Projection(_) => Some(
                projection::Baseline::take(
                    &self.plugins,
                    self.store.as_ref(),
                    name,
                    request.from,
                    request.to,
                )
                .await?,
            ),
            _ => None,
        };
        {
            let mut runs = self.runs();
            while runs.len() >= MAX_KEPT {
                let oldest = runs
                    .iter()
                    .find(|(_, r)| !r.is_running())
                    .map(|(id, _)| id.clone());
                match oldest {
                    Some(id) => runs.remove(&id),
                    None => break,
                };
            }
            runs.insert(id, replay.clone());
        }
        tracing::info!(
            "replay {}: {} {name} version {} from position {}",
            replay.id,
            info.kind,
            request.version,
            replay.from
        );
        let store = self.store.clone();
        let worker = replay.clone();
        let runtime = tokio::runtime::Handle::current();
        let span = tracing::info_span!(
            "replay",
            replay = %replay.id,
            plugin = name,
            version = %request.version,
        );
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let job = Job {
                store: store.as_ref(),
                shared_store: &store,
                replay: &worker,
                differences: request.differences,
            };
            let to = request.to;
            let ended = match calls {
                PluginCalls::Handler(plugin) => handler::run(&job, &plugin, to),
                PluginCalls::Projection(plugin) => projection::run(
                    &job,
                    &runtime,
                    &plugin,
                    &info,
                    baseline.expect("a projection's baseline is taken"),
                    to,
                ),
                PluginCalls::Policy(plugin) => policy::run(&job, &runtime, &plugin, &info, to),
            };
            // The scratch state goes, however the replay ended.
            if let Err(error) = wait(store.delete_data(&worker.scratch)) {
                tracing::error!("replay {}: its scratch state stays: {error}", worker.id);
            }
            let outcome = match ended {
                Ok(report) => Outcome::Done(report),
                Err(Stop::Cancelled) => Outcome::Cancelled,
                Err(Stop::Failed(error)) => Outcome::Failed(error),
            };
            tracing::info!(
                "replay {} ended: {}",
                worker.id,
                match &outcome {
                    Outcome::Failed(error) => format!("failed: {error}"),
                    other => format!("{other:?}").to_lowercase(),
                }
                .chars()
                .take(200)
                .collect::<String>()
            );
            *worker.outcome() = (outcome, Some(now_rfc3339()));
        });
        Ok(replay)
    }

    /// A replay of this process, running or ended.
    pub fn get(&self, id: &str) -> Option<Arc<Replay>> {
        self.runs().get(id).cloned()
    }

    /// Every replay of this process, oldest first.
    pub fn list(&self) -> Vec<Arc<Replay>> {
        self.runs().values().cloned().collect()
    }

    /// Cancels a running replay and waits a while for it to stop; a replay that has ended
    /// stays as it ended.
    pub async fn cancel(&self, id: &str) -> Option<Arc<Replay>> {
        let replay = self.get(id)?;
        replay.cancelled.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + CANCEL_WAIT;
        while replay.is_running() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Some(replay)
    }
}

/// The first differences of a report, in the order of their sort keys, at most `limit` of them.
struct FirstDifferences<K: Ord> {
    limit: usize,
    kept: BTreeMap<K, Value>,
}

impl<K: Ord> FirstDifferences<K> {
    fn new(limit: usize) -> Self {
        FirstDifferences {
            limit,
            kept: BTreeMap::new(),
        }
    }

    /// Keeps the difference `describe` makes, if it is among the first `limit`.
    fn offer(&mut self, key: K, describe: impl FnOnce() -> Value) {
        if self.limit == 0 {
            return;
        }
        if self.kept.len() >= self.limit {
            match self.kept.last_key_value() {
                Some((last, _)) if key < *last => {
                    self.kept.pop_last();
                }
                _ => return,
            }
        }
        self.kept.insert(key, describe());
    }

    fn into_values(self) -> Vec<Value> {
        self.kept.into_values().collect()
    }
}

/// A JSON text as a value to compare, so that the order of an object's fields does not count
/// as a difference; text that is not JSON stays a string.
fn json_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

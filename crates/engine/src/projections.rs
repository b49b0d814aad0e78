//! Projection runners: each active projection version folds the log into its own key-value state,
//! exactly once per event, and serves reads of that state.
//!
//! A runner reads the events its projection subscribes to (categories and event types from
//! `describe`) in batches from its checkpoint on, has the plugin `apply` each batch with the
//! state behind the `state` import, and commits the batch's writes and the new checkpoint in one
//! store transaction: after a crash, the state is exactly that of the checkpoint. Caught up, it
//! sleeps on the store's head watch and wakes at the next commit, so a new event reaches it
//! within milliseconds. A batch that fails is applied again one event at a time to find the event
//! at fault; the events before it are committed, that event is retried with backoff, and then the
//! projection pauses at it until an operator resumes it or skips the event.
//!
//! Architecture Invariant: a projection's state and its checkpoint change in the same
//! transaction; the position a runner reports as processed is durable (or is past events its
//! subscription does not match, which change nothing).
//! Architecture Invariant: this module knows nothing of HTTP or wasmtime.

pub mod known;
pub mod state;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument;

use evhost_runtime::{LogEvent, PluginFailure, PluginInfo, ProjectionPlugin};
use evhost_store::{
    CommitError, DataSnapshot, DataWrite, Fence, LogFilter, RecordView, StorageError, Store,
    now_rfc3339,
};
use known::KnownState;
use state::{BatchState, Overlay, StateBudget};

use crate::placement::{Placed, Placement, Tenure};
use crate::wait::wait;

/// Most events one `apply` call receives.
const BATCH_EVENTS: usize = 8_192;
/// Most bytes of records one `apply` call receives (at least one event).
const BATCH_BYTES: usize = 8 << 20;
/// Attempts at a failing event before the projection pauses at it.
const MAX_ATTEMPTS: u32 = 5;
/// The wait before the second attempt; it doubles with each attempt after.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between attempts after a storage error.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often a runner standing by reads the running node's checkpoint while that is behind
/// the head.
pub const STANDBY_RECHECK: Duration = Duration::from_millis(100);

/// The data space of checkpoints: `name/version` → the last position processed (a policy's key
/// is its name).
pub const CHECKPOINTS: &str = "checkpoints";
/// The data space of pauses: `name/version` → [`Pause`] while the version is paused (a policy's
/// key is its name).
pub const PAUSES: &str = "pauses";
/// The data space of state sizes: `name/version` → the bytes of keys and values its state
/// holds (8 bytes, little-endian), committed with every batch that changes the state.
pub const STATE_SIZES: &str = "state-sizes";

/// Why and where a projection stopped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pause {
    /// The event that failed, when a failure paused the projection (none for an operator's pause).
    pub position: Option<u64>,
    pub error: Option<String>,
    pub attempts: u32,
    pub since: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
    Stop,
}

#[derive(Debug, Default)]
struct Status {
    catching_up: bool,
    paused: Option<Pause>,
    /// The last failure, while the runner retries.
    error: Option<String>,
}

/// What an operator asked of a paused projection cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no event is parked at position {0}")]
    NotParked(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A read waited for a position the projection did not reach in time.
#[derive(Debug, thiserror::Error)]
#[error("the projection has processed position {reached}, not yet {wanted}")]
pub struct NotCaughtUp {
    pub wanted: u64,
    pub reached: u64,
}

/// One active projection version and the task that runs it.
pub struct ProjectionRunner {
    pub name: String,
    pub version: String,
    plugin: ProjectionPlugin,
    store: Arc<dyn Store>,
    filter: LogFilter,
    /// The data space of this version's state.
    space: Arc<str>,
    /// This version's key in [`CHECKPOINTS`] and [`PAUSES`].
    key: String,
    /// The last position processed: committed, or past events the subscription skips.
    processed: watch::Sender<u64>,
    /// The bytes of keys and values the committed state holds.
    state_bytes: std::sync::atomic::AtomicU64,
    control: watch::Sender<Control>,
    status: Mutex<Status>,
    /// Set once the runner's task has ended: nothing it writes is in flight any more.
    finished: watch::Sender<bool>,
    /// The lease that fences this runner's commits: a runner started after it (here, or on
    /// another node) takes it over, and this one's commits are refused from then on.
    lease: String,
    /// Whether this node runs the version now, and under which token.
    tenure: Tenure,
    placement: Arc<Placement>,
    /// What this node knows of the committed state while it holds the lease; `None` while it
    /// knows nothing (standing by, or after a commit whose outcome is unknown).
    known: Mutex<Option<Arc<KnownState>>>,
}

#[async_trait::async_trait]
impl Placed for ProjectionRunner {
    fn lease(&self) -> &str {
        &self.lease
    }

    fn tenure(&self) -> &Tenure {
        &self.tenure
    }

    async fn follow_controls(&self) -> Result<(), StorageError> {
        let snapshot = self.store.snapshot().await?;
        let stored = snapshot
            .get(PAUSES, &self.key)
            .await?
            .and_then(|bytes| serde_json::from_slice::<Pause>(&bytes).ok());
        let paused = self.status().paused.is_some();
        match stored {
            Some(pause) if !paused => {
                tracing::info!("projection {}: paused on another node", self.name);
                self.status().paused = Some(pause);
                self.control.send_replace(Control::Pause);
            }
            None if paused => {
                tracing::info!("projection {}: resumed on another node", self.name);
                {
                    let mut status = self.status();
                    status.paused = None;
                    status.error = None;
                }
                self.control.send_replace(Control::Run);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The outcome of one batch.
pub struct Step {
    /// The state writes of the events applied (and, for a runner, their checkpoint).
    pub writes: Vec<DataWrite>,
    /// Whether any event of the batch matched the subscription.
    pub matched: bool,
    /// The last position this batch covers: the checkpoint to commit.
    pub covered: u64,
    /// The event that failed, and why.
    pub failure: Option<(u64, String)>,
    /// The state writes, for the batch applied while these commit.
    pub overlay: Arc<Overlay>,
    /// The state's size once these writes are committed, when it is kept to a budget.
    pub state_bytes: Option<u64>,
}

/// A batch handed to the writer, and what the next batch must see of it.
struct Committing {
    commit: tokio::task::JoinHandle<Result<(), CommitError>>,
    covered: u64,
    overlay: Arc<Overlay>,
    state_bytes: Option<u64>,
}

impl ProjectionRunner {
    /// Starts running `plugin` from its checkpoint (position 1 for a new version).
    pub async fn start(
        plugin: ProjectionPlugin,
        info: PluginInfo,
        version: &str,
        store: Arc<dyn Store>,
        placement: Arc<Placement>,
    ) -> Result<Arc<Self>, StorageError> {
        let key = format!("{}/{version}", info.name);
        let lease = format!("projection/{key}");
        let snapshot = store.snapshot().await?;
        let checkpoint = read_checkpoint(&*snapshot, &key).await?;
        let state_bytes = read_state_bytes(&*snapshot, &key).await?;
        let paused = snapshot
            .get(PAUSES, &key)
            .await?
            .and_then(|bytes| serde_json::from_slice::<Pause>(&bytes).ok());
        let control = if paused.is_some() {
            Control::Pause
        } else {
            Control::Run
        };
        let runner = Arc::new(ProjectionRunner {
            name: info.name.clone(),
            version: version.to_owned(),
            filter: LogFilter {
                categories: info.categories.clone(),
                event_types: info.event_types.clone(),
            },
            space: state_space(&key).into(),
            key,
            plugin,
            store,
            processed: watch::Sender::new(checkpoint),
            state_bytes: state_bytes.into(),
            control: watch::Sender::new(control),
            status: Mutex::new(Status {
                catching_up: true,
                paused,
                error: None,
            }),
            finished: watch::Sender::new(false),
            lease,
            tenure: watch::Sender::new(None),
            placement: placement.clone(),
            known: Mutex::new(None),
        });
        tracing::info!(
            "projection {} version {version} follows the log from position {}",
            info.name,
            checkpoint + 1
        );
        tokio::spawn(runner.clone().run());
        placement.place(runner.clone()).await?;
        Ok(runner)
    }

    /// Stops the runner after the batch in progress.
    pub fn stop(&self) {
        self.control.send_replace(Control::Stop);
    }

    /// Stops the runner and waits until the batch in progress is committed or dropped, so that
    /// nothing more of this version is written.
    pub async fn stop_and_wait(&self) {
        self.stop();
        let mut finished = self.finished.subscribe();
        let _ = finished.wait_for(|finished| *finished).await;
        self.placement.remove(&self.lease).await;
    }

    /// The fence of this runner's commits, while this node runs the version.
    fn fence(&self) -> Result<Fence, StorageError> {
        match *self.tenure.borrow() {
            Some(token) => Ok(Fence {
                lease: self.lease.clone(),
                token,
            }),
            None => Err(StorageError::Unavailable(format!(
                "projection {} version {} runs on another node now",
                self.name, self.version
            ))),
        }
    }

    /// Whether it is paused, by an operator or at a failing event.
    pub fn is_paused(&self) -> bool {
        self.status().paused.is_some()
    }

    /// Follows the last position processed.
    pub fn watch_position(&self) -> watch::Receiver<u64> {
        self.processed.subscribe()
    }

    pub fn limits(&self) -> evhost_runtime::PluginLimits {
        self.plugin.limits()
    }

    /// Applies new limits to the calls this runner makes from now on.
    pub fn set_limits(&self, limits: evhost_runtime::PluginLimits) {
        self.plugin.set_limits(limits);
    }

    /// The last position processed.
    pub fn position(&self) -> u64 {
        *self.processed.borrow()
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `running`, `catching_up`, `paused` or `standby` (another node runs it), and the error
    /// to show, for listings.
    pub fn state(&self) -> (&'static str, Option<String>) {
        let status = self.status();
        match &status.paused {
            Some(pause) => ("paused", pause.error.clone()),
            None if self.tenure.borrow().is_none() => ("standby", None),
            None if status.catching_up => ("catching_up", status.error.clone()),
            None => ("running", status.error.clone()),
        }
    }

    /// The events parked: the one the projection is paused at, if a failure paused it.
    pub fn parked(&self) -> Vec<Pause> {
        self.status()
            .paused
            .iter()
            .filter(|pause| pause.position.is_some())
            .cloned()
            .collect()
    }

    /// Pauses the projection after the batch in progress, until [`ProjectionRunner::resume`].
    pub async fn pause(&self) -> Result<(), StorageError> {
        let pause = Pause {
            position: None,
            error: None,
            attempts: 0,
            since: now_rfc3339(),
        };
        if self.status().paused.is_some() {
            return Ok(());
        }
        self.save_pause(Some(&pause)).await?;
        self.status().paused = Some(pause);
        self.control.send_replace(Control::Pause);
        Ok(())
    }

    /// Resumes a paused projection; a failed event is tried again.
    pub async fn resume(&self) -> Result<(), StorageError> {
        self.save_pause(None).await?;
        {
            let mut status = self.status();
            status.paused = None;
            status.error = None;
        }
        self.control.send_replace(Control::Run);
        Ok(())
    }

    /// Skips the event the projection is paused at, and resumes after it.
    pub async fn skip(&self, position: u64) -> Result<(), ControlError> {
        let parked = self.status().paused.as_ref().and_then(|p| p.position);
        if parked != Some(position) {
            return Err(ControlError::NotParked(position));
        }
        let mut writes = vec![self.checkpoint_write(position)];
        writes.push(DataWrite {
            space: PAUSES.into(),
            key: self.key.clone(),
            value: None,
        });
        self.store
            .write_data(writes, Some(self.fence()?))
            .await
            .map_err(storage)?;
        tracing::warn!(
            "projection {}: the event at position {position} was skipped by an operator",
            self.name
        );
        self.processed.send_replace(position);
        {
            let mut status = self.status();
            status.paused = None;
            status.error = None;
        }
        self.control.send_replace(Control::Run);
        Ok(())
    }

    /// Stores a pause (or its end). Not fenced: an operator may pause or resume a version from
    /// any node, and the node running it takes the change at its next tick.
    async fn save_pause(&self, pause: Option<&Pause>) -> Result<(), StorageError> {
        let value = pause.map(|p| serde_json::to_vec(p).expect("a pause serializes"));
        self.store
            .write_data(
                vec![DataWrite {
                    space: PAUSES.into(),
                    key: self.key.clone(),
                    value,
                }],
                None,
            )
            .await
            .map_err(storage)
    }

    /// Waits until the projection has processed `position`, at most `timeout`; answers the
    /// position processed.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<u64, NotCaughtUp> {
        let mut processed = self.processed.subscribe();
        let reached = tokio::time::timeout(timeout, processed.wait_for(|p| *p >= position)).await;
        match reached {
            Ok(Ok(reached)) => Ok(*reached),
            _ => Err(NotCaughtUp {
                wanted: position,
                reached: self.position(),
            }),
        }
    }

    /// A read view of the state, with the position it reflects at least.
    pub async fn reader(&self) -> Result<(StateReader, u64), StorageError> {
        // Read the position first: every commit up to it is then in the snapshot.
        let position = self.position();
        let snapshot = self.store.snapshot().await?;
        let reader = StateReader {
            space: self.space.clone(),
            snapshot,
        };
        Ok((reader, position))
    }

    /// The threads to run [`ProjectionRunner::query`] on from async code.
    pub fn threads(&self) -> Arc<evhost_runtime::CallThreads> {
        self.plugin.threads()
    }

    /// Runs the plugin's `query` over a read-only view of the state. Blocks on the plugin: run
    /// it on the plugin threads.
    pub fn query(
        &self,
        reader: StateReader,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Result<String, String>, PluginFailure> {
        let state = Arc::new(BatchState::read_only(reader.space, reader.snapshot));
        self.plugin.query(path, params, state)
    }

    async fn run(self: Arc<Self>) {
        self.clone().follow().await;
        self.finished.send_replace(true);
    }

    /// Follows the log until told to stop.
    async fn follow(self: Arc<Self>) {
        let mut head = self.store.watch_head();
        let mut control = self.control.subscribe();
        let mut tenure = self.tenure.subscribe();
        // The token the runner last worked under: a new one means another node may have moved
        // the checkpoint meanwhile.
        let mut working_under = None;
        let mut attempts = 0u32;
        // The batch whose commit is under way while the next one is applied.
        let mut committing: Option<Committing> = None;
        loop {
            let Some(token) = *tenure.borrow_and_update() else {
                if let Some(batch) = committing.take() {
                    self.finish(batch, &mut attempts, &mut control).await;
                }
                working_under = None;
                if !self.stand_by(&mut tenure, &mut head, &mut control).await {
                    return;
                }
                continue;
            };
            if working_under != Some(token) {
                if let Some(batch) = committing.take() {
                    self.finish(batch, &mut attempts, &mut control).await;
                }
                if let Err(error) = self.reload().await {
                    self.storage_failed(&error, &mut attempts, &mut control)
                        .await;
                    continue;
                }
                working_under = Some(token);
            }
            // Every batch commits under the token it was applied under: one applied before the
            // lease moved is refused rather than written over the new holder's work.
            let fence = Fence {
                lease: self.lease.clone(),
                token,
            };
            let command = *control.borrow_and_update();
            if command != Control::Run
                && let Some(batch) = committing.take()
            {
                self.finish(batch, &mut attempts, &mut control).await;
            }
            match command {
                Control::Stop => return,
                Control::Pause => {
                    attempts = 0;
                    if control.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Control::Run => {}
            }
            let from = committing
                .as_ref()
                .map_or_else(|| self.position(), |batch| batch.covered)
                + 1;
            head.borrow_and_update();
            if from > self.store.head() {
                if let Some(batch) = committing.take() {
                    self.finish(batch, &mut attempts, &mut control).await;
                    continue;
                }
                self.status().catching_up = false;
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return },
                    changed = control.changed() => if changed.is_err() { return },
                    changed = tenure.changed() => if changed.is_err() { return },
                }
                continue;
            }
            let runner = self.clone();
            let prior = committing.as_ref().map(|batch| batch.overlay.clone());
            // The state's size as the batch before leaves it, committed or not.
            let state_bytes = committing
                .as_ref()
                .and_then(|batch| batch.state_bytes)
                .unwrap_or_else(|| self.state_bytes());
            // The batch runs on the plugin threads; a panic in it is this batch's failure.
            let span = tracing::info_span!(
                "projection_batch",
                projection = %self.name,
                version = %self.version,
                from,
            );
            let step = self
                .plugin
                .threads()
                .run(move || {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        runner.step(from, prior, state_bytes)
                    }))
                })
                .instrument(span)
                .await;
            // The batch before this one must be durable before this one is sent: if it failed,
            // this one was applied over writes that never happened, and is dropped.
            if let Some(batch) = committing.take()
                && !self.finish(batch, &mut attempts, &mut control).await
            {
                continue;
            }
            let step = match step {
                Ok(Ok(step)) => step,
                Ok(Err(error)) => {
                    self.storage_failed(&error, &mut attempts, &mut control)
                        .await;
                    continue;
                }
                Err(panic) => {
                    let panic = panic_message(&*panic);
                    tracing::error!("projection {}: a batch panicked: {panic}", self.name);
                    self.storage_failed(&StorageError::Failed(panic), &mut attempts, &mut control)
                        .await;
                    continue;
                }
            };
            match step.failure {
                None if !step.matched => {
                    // Nothing matched: the position moves without a commit.
                    self.processed.send_replace(step.covered);
                    self.succeeded(step.covered, &mut attempts);
                }
                None => {
                    // Sent now, so that it commits while the next batch is applied.
                    let store = self.store.clone();
                    committing = Some(Committing {
                        commit: tokio::spawn(async move {
                            store.write_data(step.writes, Some(fence)).await
                        }),
                        covered: step.covered,
                        overlay: step.overlay,
                        state_bytes: step.state_bytes,
                    });
                }
                Some((position, error)) => {
                    if !step.writes.is_empty() {
                        let fence = Some(fence);
                        if let Err(error) = self.store.write_data(step.writes, fence).await {
                            self.commit_failed(error, &mut attempts, &mut control).await;
                            continue;
                        }
                        if let Some(known) = self.known() {
                            known.committed(&step.overlay);
                        }
                        self.set_state_bytes(step.state_bytes);
                    }
                    self.processed.send_replace(step.covered);
                    attempts += 1;
                    self.event_failed(position, error, attempts, &mut control)
                        .await;
                }
            }
        }
    }

    /// Waits while another node runs the version, following its checkpoint from the store so
    /// that reads waiting for a position are answered here too; answers false when told to stop.
    async fn stand_by(
        &self,
        tenure: &mut watch::Receiver<Option<u64>>,
        head: &mut watch::Receiver<u64>,
        control: &mut watch::Receiver<Control>,
    ) -> bool {
        self.status().catching_up = false;
        loop {
            if *control.borrow_and_update() == Control::Stop {
                return false;
            }
            if tenure.borrow_and_update().is_some() {
                return true;
            }
            // The running node commits its checkpoint after the head moves: while it is behind
            // the head, look again every little while.
            let behind = self.position() < self.store.head();
            let recheck = if behind {
                STANDBY_RECHECK
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                changed = tenure.changed() => if changed.is_err() { return false },
                changed = control.changed() => if changed.is_err() { return false },
                changed = head.changed() => if changed.is_err() { return false },
                _ = tokio::time::sleep(recheck) => {}
            }
            if let Err(error) = self.follow_checkpoint().await {
                tracing::warn!("projection {}: {error}", self.name);
            }
        }
    }

    /// Takes the checkpoint the running node committed, and past it the events its
    /// subscription does not match (which the running node passes without a commit).
    async fn follow_checkpoint(&self) -> Result<(), StorageError> {
        let snapshot = self.store.snapshot().await?;
        let checkpoint = read_checkpoint(&*snapshot, &self.key).await?;
        drop(snapshot);
        let next = self.store.read_log(checkpoint + 1, 1, &self.filter).await?;
        let covered = match next.events.first() {
            Some(unprocessed) => unprocessed.position - 1,
            None => next.head.max(checkpoint),
        };
        self.processed.send_if_modified(|processed| {
            let moved = covered > *processed;
            *processed = (*processed).max(covered);
            moved
        });
        Ok(())
    }

    /// Reads what another node may have changed while this one stood by: the checkpoint, the
    /// state's size and a pause.
    async fn reload(&self) -> Result<(), StorageError> {
        let snapshot = self.store.snapshot().await?;
        let checkpoint = read_checkpoint(&*snapshot, &self.key).await?;
        let state_bytes = read_state_bytes(&*snapshot, &self.key).await?;
        let paused = snapshot
            .get(PAUSES, &self.key)
            .await?
            .and_then(|bytes| serde_json::from_slice::<Pause>(&bytes).ok());
        // Under a new token this runner is the state's only writer from now on.
        let empty = snapshot.scan(&self.space, "", None, 1).await?.is_empty();
        self.set_known(Some(Arc::new(KnownState::new(empty))));
        self.processed.send_replace(checkpoint);
        self.set_state_bytes(Some(state_bytes));
        let pausing = paused.is_some();
        self.status().paused = paused;
        if *self.control.borrow() != Control::Stop {
            self.control.send_replace(if pausing {
                Control::Pause
            } else {
                Control::Run
            });
        }
        Ok(())
    }

    /// Waits for a batch's commit; answers whether it is durable.
    async fn finish(
        &self,
        batch: Committing,
        attempts: &mut u32,
        control: &mut watch::Receiver<Control>,
    ) -> bool {
        let committed = batch.commit.await.unwrap_or_else(|panic| {
            Err(StorageError::Failed(format!("a commit panicked: {panic}")).into())
        });
        match committed {
            Ok(()) => {
                if let Some(known) = self.known() {
                    known.committed(&batch.overlay);
                }
                self.set_state_bytes(batch.state_bytes);
                self.processed.send_replace(batch.covered);
                self.succeeded(batch.covered, attempts);
                true
            }
            Err(error) => {
                self.commit_failed(error, attempts, control).await;
                false
            }
        }
    }

    /// A commit of this runner failed: it lost its lease and stops, or it retries.
    async fn commit_failed(
        &self,
        error: CommitError,
        attempts: &mut u32,
        control: &mut watch::Receiver<Control>,
    ) {
        // The commit may have happened or not: what this runner knew may be out of date.
        self.set_known(None);
        if let CommitError::Fenced { .. } = error {
            tracing::warn!(
                "projection {} version {}: {error}; another runner took over, this one stands by",
                self.name,
                self.version
            );
            self.placement.lost(&self.lease);
            return;
        }
        self.storage_failed(&storage(error), attempts, control)
            .await;
    }

    fn succeeded(&self, covered: u64, attempts: &mut u32) {
        *attempts = 0;
        let mut status = self.status();
        status.error = None;
        status.catching_up = covered < self.store.head();
    }

    /// Waits before the next attempt after a storage error; those are retried without end.
    async fn storage_failed(
        &self,
        error: &StorageError,
        attempts: &mut u32,
        control: &mut watch::Receiver<Control>,
    ) {
        *attempts += 1;
        tracing::error!("projection {}: {error}; retrying", self.name);
        self.status().error = Some(error.to_string());
        let wait = backoff(*attempts, MAX_BACKOFF);
        let _ = tokio::time::timeout(wait, control.changed()).await;
    }

    /// Retries a failing event after a backoff, or pauses at it after the last attempt.
    async fn event_failed(
        &self,
        position: u64,
        error: String,
        attempts: u32,
        control: &mut watch::Receiver<Control>,
    ) {
        tracing::warn!(
            "projection {} failed at position {position} (attempt {attempts} of {MAX_ATTEMPTS}): {error}",
            self.name
        );
        if attempts < MAX_ATTEMPTS {
            self.status().error = Some(format!("at position {position}: {error}"));
            let wait = backoff(attempts, MAX_BACKOFF);
            let _ = tokio::time::timeout(wait, control.changed()).await;
            return;
        }
        let pause = Pause {
            position: Some(position),
            error: Some(error),
            attempts,
            since: now_rfc3339(),
        };
        // A pause that cannot be saved still holds in this process; after a restart the event
        // fails again and pauses again.
        if let Err(error) = self.save_pause(Some(&pause)).await {
            tracing::error!(
                "projection {}: the pause cannot be saved: {error}",
                self.name
            );
        }
        tracing::error!(
            "projection {} paused at position {position} after {attempts} attempts",
            self.name
        );
        self.status().paused = Some(pause);
        self.control.send_replace(Control::Pause);
    }

    /// Reads and applies the batch that starts at `from`, over the writes of the batch still
    /// committing (`prior`), and adds the checkpoint to its writes. Blocks on the store and the
    /// plugin.
    fn step(
        &self,
        from: u64,
        prior: Option<Arc<Overlay>>,
        state_bytes: u64,
    ) -> Result<Step, StorageError> {
        let source = Source {
            plugin: &self.plugin,
            store: self.store.as_ref(),
            filter: &self.filter,
            space: &self.space,
            known: self.known(),
        };
        let budget = StateBudget {
            bytes: state_bytes,
            max_bytes: self.plugin.limits().state_mib << 20,
        };
        let mut step = source.apply_batch(from, u64::MAX, prior, Some(budget))?;
        if let Some(bytes) = step.state_bytes.filter(|&bytes| bytes != state_bytes) {
            step.writes.push(DataWrite {
                space: STATE_SIZES.into(),
                key: self.key.clone(),
                value: Some(bytes.to_le_bytes().to_vec()),
            });
        }
        if !step.writes.is_empty() || (step.failure.is_none() && step.matched) {
            step.writes.push(self.checkpoint_write(step.covered));
        }
        Ok(step)
    }

    fn known(&self) -> Option<Arc<KnownState>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_known(&self, known: Option<Arc<KnownState>>) {
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = known;
    }

    /// The bytes of keys and values this version's committed state holds.
    pub fn state_bytes(&self) -> u64 {
        self.state_bytes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_state_bytes(&self, bytes: Option<u64>) {
        if let Some(bytes) = bytes {
            self.state_bytes
                .store(bytes, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn checkpoint_write(&self, position: u64) -> DataWrite {
        checkpoint_write(self.key.clone(), position)
    }
}

impl Drop for ProjectionRunner {
    fn drop(&mut self) {
        self.control.send_replace(Control::Stop);
    }
}

/// What a batch is applied with: a projection's plugin, the log it follows, and the data space
/// its state lives in (a version's own, or a replay's scratch space).
pub struct Source<'a> {
    pub plugin: &'a ProjectionPlugin,
    pub store: &'a dyn Store,
    pub filter: &'a LogFilter,
    pub space: &'a Arc<str>,
    /// What the only writer of `space` knows of it, if this is that writer.
    pub known: Option<Arc<KnownState>>,
}

impl Source<'_> {
    /// Reads the batch of the log that starts at `from` and ends at `until` at the latest, and
    /// applies it over the state with the writes of the batch still committing (`prior`). A
    /// failing batch is applied again one event at a time, to keep the writes of the events
    /// before the one that fails. Blocks on the store and the plugin.
    pub fn apply_batch(
        &self,
        from: u64,
        until: u64,
        prior: Option<Arc<Overlay>>,
        budget: Option<StateBudget>,
    ) -> Result<Step, StorageError> {
        let page = wait(self.store.read_log(from, BATCH_EVENTS, self.filter))?;
        let mut covered = match page.next {
            Some(next) => next - 1,
            None => page.head.max(from - 1),
        };
        let mut events_in = page.events;
        if covered > until {
            events_in.retain(|event| event.position <= until);
            covered = until;
        }
        // A batch also ends at a size the plugin's memory holds comfortably.
        let mut bytes = 0;
        if let Some(cut) = events_in.iter().position(|event| {
            bytes += event.json.len();
            bytes > BATCH_BYTES
        }) {
            events_in.truncate(cut.max(1));
            covered = events_in.last().map_or(covered, |event| event.position);
        }
        if events_in.is_empty() {
            return Ok(Step {
                writes: Vec::new(),
                matched: false,
                covered,
                failure: None,
                overlay: Arc::default(),
                state_bytes: None,
            });
        }
        let views = events_in
            .iter()
            .map(|event| {
                RecordView::parse(&event.json).map_err(|e| StorageError::Corrupt {
                    position: event.position,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let events: Vec<LogEvent<'_>> = views.iter().map(log_event).collect();
        let state = Arc::new(
            BatchState::writable(self.space.clone(), wait(self.store.snapshot())?, prior)
                .with_budget(budget)
                .with_known(self.known.clone()),
        );
        let (covered, failure) = match self.apply(&events, &state) {
            Ok(()) => (covered, None),
            Err(error) if events.len() == 1 => (
                from.max(events[0].position) - 1,
                Some((events[0].position, error)),
            ),
            Err(_) => match self.apply_one_by_one(&events, &state) {
                None => (covered, None),
                // The batch filled up: it ends before this event, which starts the next one.
                Some((position, _)) if state.ended_full() => (position - 1, None),
                Some((position, error)) => (position - 1, Some((position, error))),
            },
        };
        let state = Arc::into_inner(state).expect("the plugin returns the state after its call");
        let state_bytes = state.bytes_after();
        let (writes, overlay) = state.into_writes();
        Ok(Step {
            writes,
            matched: true,
            covered,
            failure,
            overlay,
            state_bytes,
        })
    }

    /// Applies events one at a time, keeping each one's writes, up to the first that fails:
    /// its position and error.
    fn apply_one_by_one(
        &self,
        events: &[LogEvent<'_>],
        state: &Arc<BatchState>,
    ) -> Option<(u64, String)> {
        for event in events {
            if let Err(error) = self.apply(std::slice::from_ref(event), state) {
                return Some((event.position, error));
            }
        }
        None
    }

    fn apply(&self, events: &[LogEvent<'_>], state: &Arc<BatchState>) -> Result<(), String> {
        state.call(
            "apply returned an error",
            |state| self.plugin.apply(events, state),
            Ok,
        )
    }
}

/// A snapshot of one projection version's state, for reads.
pub struct StateReader {
    space: Arc<str>,
    snapshot: Box<dyn DataSnapshot>,
}

impl StateReader {
    /// The JSON value stored under `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.snapshot.get(&self.space, key).await
    }

    /// Entries whose keys start with `prefix`, after `after`, at most `limit`. The caller
    /// bounds `limit`: a listing asks for one more than its page to learn whether a next page
    /// exists, so a cap here (such as a plugin's scan cap) would hide every page after the first.
    pub async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.snapshot.scan(&self.space, prefix, after, limit).await
    }
}

/// Deletes the state of version `version` of projection `name`, with its checkpoint and
/// pause; answers how many state entries there were. Its runner must be stopped.
pub async fn delete_state(
    store: &dyn Store,
    name: &str,
    version: &str,
) -> Result<u64, StorageError> {
    let key = format!("{name}/{version}");
    let entries = store.delete_data(&state_space(&key)).await?;
    let forget = |space: &str| DataWrite {
        space: space.into(),
        key: key.clone(),
        value: None,
    };
    store
        .write_data(
            vec![forget(CHECKPOINTS), forget(PAUSES), forget(STATE_SIZES)],
            None,
        )
        .await
        .map_err(storage)?;
    Ok(entries)
}

/// A runner's commit that failed, as a storage error: what its callers report (a fenced
/// commit is the runner's concern, not theirs).
pub fn storage(error: CommitError) -> StorageError {
    match error {
        CommitError::Storage(error) => error,
        other => StorageError::Failed(other.to_string()),
    }
}

/// The data space of the state of the projection version `key` (`name/version`).
pub fn state_space(key: &str) -> String {
    format!("projection/{key}")
}

/// The write that stores `position` as the checkpoint under `key`.
pub fn checkpoint_write(key: String, position: u64) -> DataWrite {
    DataWrite {
        space: CHECKPOINTS.into(),
        key,
        value: Some(position.to_le_bytes().to_vec()),
    }
}

/// The wait before attempt `attempts + 1`: [`FIRST_BACKOFF`], doubling with each attempt, at
/// most `max`.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(max)
}

/// The checkpoint stored under `key`, or 0.
/// The bytes of keys and values the state of version `key` holds: as recorded with its last
/// batch, or, for a state kept before sizes were recorded, counted once now.
async fn read_state_bytes(snapshot: &dyn DataSnapshot, key: &str) -> Result<u64, StorageError> {
    if let Some(bytes) = snapshot
        .get(STATE_SIZES, key)
        .await?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
    {
        return Ok(u64::from_le_bytes(bytes));
    }
    let space = state_space(key);
    let (mut total, mut after) = (0u64, None::<String>);
    loop {
        let page = snapshot.scan(&space, "", after.as_deref(), 1000).await?;
        total += page
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>();
        match page.last() {
            Some((last, _)) if page.len() == 1000 => after = Some(last.clone()),
            _ => return Ok(total),
        }
    }
}

pub async fn read_checkpoint(snapshot: &dyn DataSnapshot, key: &str) -> Result<u64, StorageError> {
    let stored = snapshot.get(CHECKPOINTS, key).await?;
    Ok(stored
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_le_bytes))
}

/// What a panic said, for the log.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// The record's fields as the plugin receives them.
pub fn log_event<'a>(view: &'a RecordView<'a>) -> LogEvent<'a> {
    LogEvent {
        position: view.position,
        stream: &view.stream,
        version: view.version,
        id: &view.id,
        event_type: &view.event_type,
        data: view.data.get(),
        metadata: view.metadata.get(),
        recorded_at: &view.recorded_at,
    }
}

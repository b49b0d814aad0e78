//! Policy runners: each active policy reacts to the events it subscribes to with commands and
//! timers, and each command is executed once however often the host crashes.
//!
//! The runner reads events from the policy's checkpoint as a projection's runner does and calls
//! `react` once per event. The state writes, the commands (into the policy's outbox) and the
//! timers a batch of reactions asks for are committed in one transaction with the checkpoint. A
//! dispatcher then delivers each outbox command to its handler under an id derived from the
//! policy, the cause and the action's index, so a crash between delivery and bookkeeping
//! delivers it again and the handler answers from its record instead of deciding twice. A
//! rejected command goes back to the policy's `on-rejected`; a due timer to its `on-timer`; the
//! actions those return are committed with the outbox entry's or the timer's removal. An event
//! whose reaction keeps failing is parked after a few attempts, and the policy goes on.
//!
//! Policies keep one state across versions (a new version continues from the checkpoint; history
//! is never re-executed with side effects).
//!
//! Architecture Invariant: a policy's state, outbox, timers and checkpoint change in one
//! transaction per step; an outbox entry is removed only once its command has an outcome.
//! Architecture Invariant: this module knows nothing of HTTP or wasmtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::delivery::{CommandRequest, CommandSink, Delivered};
use crate::metadata::{causation_depth, correlation_id as correlation_of};
use crate::placement::{Placed, Placement, Tenure};
use crate::projections::state::BatchState;
use crate::projections::{
    PAUSES, STANDBY_RECHECK, checkpoint_write, log_event, read_checkpoint, storage,
};
use evhost_runtime::{CommandInput, LogEvent, PolicyAction, PolicyPlugin, content_hash};
use evhost_store::{
    CommitError, DataSnapshot, DataWrite, Fence, LogFilter, RecordView, StorageError, Store,
    check_json_depth, now_rfc3339, validate_event_type, validate_stream_name,
};

/// Most events one step reacts to before it commits.
const BATCH_EVENTS: usize = 256;
/// Attempts at an event's reaction before it is parked.
const MAX_ATTEMPTS: u32 = 4;
/// The longest wait between attempts (the first is 100 ms, doubling with each attempt after).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Outbox entries one dispatcher pass reads.
const OUTBOX_PAGE: usize = 100;
/// The longest chain of causes a policy extends: an event that this many policy commands led
/// to (its metadata's `causation_depth`) is parked rather than reacted to, so that a policy
/// commanding a handler whose events it reacts to cannot make events without end.
pub const MAX_CAUSATION_DEPTH: u64 = 64;
/// Most commands, and most timers set or cancelled, one call into a policy may ask for.
pub const MAX_COMMANDS_PER_CALL: usize = 1_000;
pub const MAX_TIMERS_PER_CALL: usize = 1_000;
/// Largest data of one command a policy sends, and largest payload of one timer, in bytes:
/// what a client's command may carry.
pub const MAX_ACTION_BYTES: usize = 1 << 20;
/// Most bytes of command data and timer payloads one call may ask for in all.
pub const MAX_ACTIONS_BYTES_PER_CALL: usize = 16 << 20;

/// A command waiting in a policy's outbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct OutboxEntry {
    handler: String,
    stream: String,
    command_type: String,
    /// JSON text.
    data: String,
    /// JSON object text: correlation and causation ids.
    metadata: String,
}

/// A timer a policy set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Timer {
    due_ms: u64,
    payload: String,
    /// The correlation id of what set it, for the commands it leads to.
    correlation_id: String,
    /// The causation depth of what set it.
    #[serde(default)]
    causation_depth: u64,
}

/// An event whose reaction failed every attempt, kept for an operator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Parked {
    pub position: u64,
    pub stream: String,
    pub event_type: String,
    pub error: String,
    pub attempts: u32,
    pub parked_at: String,
}

/// The writes of one step, and what they change in memory once committed.
#[derive(Default)]
struct StepWrites {
    writes: Vec<DataWrite>,
    /// Timers set (`Some`) or cancelled (`None`), in order.
    timers: Vec<(String, Option<Timer>)>,
    commands: usize,
}

/// Why a reaction cannot be used.
type Failure = String;

/// What precedes a policy's own error in the reason a reaction failed.
const REFUSAL: &str = "the policy returned an error";

/// One active policy and the tasks that run it.
pub struct PolicyRunner {
    pub name: String,
    plugin: PolicyPlugin,
    store: Arc<dyn Store>,
    commands: watch::Receiver<Option<Weak<dyn CommandSink>>>,
    filter: LogFilter,
    /// The data spaces of this policy.
    state_space: Arc<str>,
    outbox_space: Arc<str>,
    timers_space: Arc<str>,
    parked_space: Arc<str>,
    processed: watch::Sender<u64>,
    /// One call into the policy at a time: reactions, timers and rejections share its state.
    turn: tokio::sync::Mutex<()>,
    timers: Mutex<BTreeMap<String, Timer>>,
    /// Wakes the dispatcher: the outbox or the timers changed.
    wake: Notify,
    paused: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
    error: Mutex<Option<String>>,
    /// The lease that fences this runner's commits: a runner started after it (here, or on
    /// another node) takes it over, and this one's commits are refused from then on.
    lease: String,
    /// Whether this node runs the policy now, and under which token.
    tenure: Tenure,
    placement: Arc<Placement>,
}

#[async_trait::async_trait]
impl Placed for PolicyRunner {
    fn lease(&self) -> &str {
        &self.lease
    }

    fn tenure(&self) -> &Tenure {
        &self.tenure
    }

    async fn follow_controls(&self) -> Result<(), StorageError> {
        let snapshot = self.store.snapshot().await?;
        let paused = snapshot.get(PAUSES, &self.name).await?.is_some();
        self.paused.send_if_modified(|current| {
            let changed = *current != paused;
            if changed {
                let what = if paused { "paused" } else { "resumed" };
                tracing::info!("policy {}: {what} on another node", self.name);
            }
            *current = paused;
            changed
        });
        Ok(())
    }
}

impl PolicyRunner {
    /// Starts the runner and the dispatcher of `plugin`, from the policy's checkpoint.
    pub async fn start(
        plugin: PolicyPlugin,
        name: &str,
        version: &str,
        filter: LogFilter,
        store: Arc<dyn Store>,
        commands: watch::Receiver<Option<Weak<dyn CommandSink>>>,
        placement: Arc<Placement>,
    ) -> Result<Arc<Self>, StorageError> {
        let lease = format!("policy/{name}");
        let snapshot = store.snapshot().await?;
        let checkpoint = read_checkpoint(&*snapshot, name).await?;
        let timers_space: Arc<str> = format!("timers/{name}").into();
        let timers = scan_all(&*snapshot, &timers_space)
            .await?
            .into_iter()
            .filter_map(|(key, value)| Some((key, serde_json::from_slice::<Timer>(&value).ok()?)))
            .collect();
        let paused = snapshot.get(PAUSES, name).await?.is_some();
        let runner = Arc::new(PolicyRunner {
            name: name.to_owned(),
            plugin,
            store,
            commands,
            filter,
            state_space: format!("policy/{name}").into(),
            outbox_space: format!("outbox/{name}").into(),
            timers_space,
            parked_space: format!("parked/{name}").into(),
            processed: watch::Sender::new(checkpoint),
            turn: tokio::sync::Mutex::new(()),
            timers: Mutex::new(timers),
            wake: Notify::new(),
            paused: watch::Sender::new(paused),
            stopped: watch::Sender::new(false),
            error: Mutex::new(None),
            lease,
            tenure: watch::Sender::new(None),
            placement: placement.clone(),
        });
        tracing::info!(
            "policy {name} version {version} follows the log from position {}",
            checkpoint + 1
        );
        tokio::spawn(runner.clone().react_loop());
        tokio::spawn(runner.clone().dispatch_loop());
        placement.place(runner.clone()).await?;
        Ok(runner)
    }

    /// Stops both tasks after the step in progress.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
        self.wake.notify_one();
    }

    /// Stops both tasks and waits for the step in progress to end.
    pub async fn stop_and_wait(&self) {
        self.stop();
        drop(self.turn.lock().await);
        self.placement.remove(&self.lease).await;
    }

    /// Reads what another node may have changed while this one stood by: the checkpoint, the
    /// timers and a pause.
    async fn reload(&self) -> Result<(), StorageError> {
        let _turn = self.turn.lock().await;
        let snapshot = self.store.snapshot().await?;
        let checkpoint = read_checkpoint(&*snapshot, &self.name).await?;
        let timers = scan_all(&*snapshot, &self.timers_space)
            .await?
            .into_iter()
            .filter_map(|(key, value)| Some((key, serde_json::from_slice::<Timer>(&value).ok()?)))
            .collect();
        let paused = snapshot.get(PAUSES, &self.name).await?.is_some();
        self.processed.send_replace(checkpoint);
        *self.timers.lock().unwrap_or_else(|p| p.into_inner()) = timers;
        self.paused.send_replace(paused);
        self.wake.notify_one();
        Ok(())
    }

    /// Takes the checkpoint the running node committed.
    async fn follow_checkpoint(&self) -> Result<(), StorageError> {
        let snapshot = self.store.snapshot().await?;
        let checkpoint = read_checkpoint(&*snapshot, &self.name).await?;
        self.processed.send_if_modified(|processed| {
            let moved = checkpoint > *processed;
            *processed = (*processed).max(checkpoint);
            moved
        });
        Ok(())
    }

    pub fn limits(&self) -> evhost_runtime::PluginLimits {
        self.plugin.limits()
    }

    /// Applies new limits to the calls this runner makes from now on.
    pub fn set_limits(&self, limits: evhost_runtime::PluginLimits) {
        self.plugin.set_limits(limits);
    }

    pub fn position(&self) -> u64 {
        *self.processed.borrow()
    }

    /// `running`, `catching_up`, `paused` or `standby` (another node runs it), and the last
    /// error, for listings.
    pub fn state(&self, head: u64) -> (&'static str, Option<String>) {
        let error = self.error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let status = if *self.paused.borrow() {
            "paused"
        } else if self.tenure.borrow().is_none() {
            "standby"
        } else if self.position() + (BATCH_EVENTS as u64) < head {
            "catching_up"
        } else {
            "running"
        };
        (status, error)
    }

    fn set_error(&self, error: Option<String>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Pauses reactions (commands already in the outbox are still delivered). Not fenced: an
    /// operator may pause or resume a policy from any node, and the node running it takes the
    /// change at its next tick.
    pub async fn pause(&self) -> Result<(), StorageError> {
        self.store
            .write_data(
                vec![write(PAUSES, self.name.clone(), Some(b"{}".to_vec()))],
                None,
            )
            .await
            .map_err(storage)?;
        self.paused.send_replace(true);
        Ok(())
    }

    pub async fn resume(&self) -> Result<(), StorageError> {
        self.store
            .write_data(vec![write(PAUSES, self.name.clone(), None)], None)
            .await
            .map_err(storage)?;
        self.paused.send_replace(false);
        Ok(())
    }

    /// The events parked, by position.
    pub async fn parked(&self) -> Result<Vec<Parked>, StorageError> {
        let snapshot = self.store.snapshot().await?;
        Ok(scan_all(&*snapshot, &self.parked_space)
            .await?
            .into_iter()
            .filter_map(|(_, value)| serde_json::from_slice::<Parked>(&value).ok())
            .collect())
    }

    /// Forgets a parked event.
    pub async fn skip(&self, position: u64) -> Result<bool, StorageError> {
        let key = parked_key(position);
        if !self.is_parked(&key).await? {
            return Ok(false);
        }
        self.write(vec![write(&self.parked_space, key, None)])
            .await?;
        tracing::warn!(
            "policy {}: parked event {position} skipped by an operator",
            self.name
        );
        Ok(true)
    }

    /// Reacts to a parked event again; on success its actions are committed and it leaves the
    /// parked list. Answers the error when it fails again (it stays parked).
    pub async fn retry(self: &Arc<Self>, position: u64) -> Result<Option<String>, RetryError> {
        let key = parked_key(position);
        if !self.is_parked(&key).await? {
            return Err(RetryError::NotParked(position));
        }
        let page = self
            .store
            .read_log(position, 1, &LogFilter::default())
            .await?;
        let record = page
            .events
            .into_iter()
            .next()
            .ok_or(RetryError::NotParked(position))?;
        RecordView::parse(&record.json).map_err(|e| StorageError::Corrupt {
            position,
            reason: e.to_string(),
        })?;
        let _turn = self.turn.lock().await;
        let state = self.new_state().await?;
        let call_state = state.clone();
        let (outcome, mut step) = self
            .on_threads(move |runner| {
                let view = RecordView::parse(&record.json).expect("parsed before");
                let event = log_event(&view);
                let mut step = StepWrites::default();
                let outcome = call_state.call(
                    REFUSAL,
                    |state| runner.plugin.react(&event, state),
                    |actions| runner.take_actions(&mut step, actions, &Cause::Event(&event)),
                );
                (outcome, step)
            })
            .await;
        match outcome {
            Ok(()) => {
                step.writes.push(write(&self.parked_space, key, None));
                self.commit(state, step).await?;
                Ok(None)
            }
            Err(error) => Ok(Some(error)),
        }
    }

    /// Runs `work` (calls into the policy, and what goes with them) on the plugin threads.
    async fn on_threads<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&PolicyRunner) -> T + Send + 'static,
    ) -> T {
        let runner = self.clone();
        self.plugin.threads().run(move || work(&runner)).await
    }

    async fn is_parked(&self, key: &str) -> Result<bool, StorageError> {
        let snapshot = self.store.snapshot().await?;
        Ok(snapshot.get(&self.parked_space, key).await?.is_some())
    }

    async fn new_state(&self) -> Result<Arc<BatchState>, StorageError> {
        Ok(Arc::new(BatchState::writable(
            self.state_space.clone(),
            self.store.snapshot().await?,
            None,
        )))
    }

    /// Commits `writes` under this runner's lease; a runner that lost its lease stands by.
    async fn write(&self, writes: Vec<DataWrite>) -> Result<(), StorageError> {
        self.write_under(writes, None).await
    }

    /// Commits `writes` under `token`, or the token this node runs the policy under now.
    async fn write_under(
        &self,
        writes: Vec<DataWrite>,
        token: Option<u64>,
    ) -> Result<(), StorageError> {
        let Some(token) = token.or(*self.tenure.borrow()) else {
            return Err(StorageError::Unavailable(format!(
                "policy {} runs on another node now",
                self.name
            )));
        };
        let fence = Fence {
            lease: self.lease.clone(),
            token,
        };
        match self.store.write_data(writes, Some(fence)).await {
            Ok(()) => Ok(()),
            Err(error @ CommitError::Fenced { .. }) => {
                tracing::warn!(
                    "policy {}: {error}; another runner took over, this one stands by",
                    self.name
                );
                self.placement.lost(&self.lease);
                Err(storage(error))
            }
            Err(error) => Err(storage(error)),
        }
    }

    /// Turns actions into outbox and timer writes; an action that breaks a rule fails them all.
    fn take_actions(
        &self,
        step: &mut StepWrites,
        actions: Vec<PolicyAction>,
        cause: &Cause<'_>,
    ) -> Result<(), Failure> {
        check_action_limits(&actions)?;
        // What the cause says is the same for every action: read out of its metadata once.
        let (correlation_id, causation_id, depth) =
            (cause.correlation_id(), cause.causation_id(), cause.depth());
        let mut writes = Vec::new();
        let mut timers = Vec::new();
        for (index, action) in actions.into_iter().enumerate() {
            match action {
                PolicyAction::Send {
                    handler,
                    stream,
                    command_type,
                    data,
                } => {
                    validate_stream_name(&stream).map_err(|e| format!("action {index}: {e}"))?;
                    validate_event_type(&command_type)
                        .map_err(|e| format!("action {index}: command {e}"))?;
                    serde_json::from_str::<serde::de::IgnoredAny>(&data).map_err(|e| {
                        format!("action {index}: the command's data is not JSON: {e}")
                    })?;
                    check_json_depth("the command's data", &data)
                        .map_err(|e| format!("action {index}: {e}"))?;
                    let data = evhost_store::minify_json(&data).into_owned();
                    let entry = OutboxEntry {
                        handler,
                        stream,
                        command_type,
                        data,
                        metadata: serde_json::json!({
                            "correlation_id": correlation_id,
                            "causation_id": causation_id,
                            "causation_depth": depth + 1,
                            "policy": self.name,
                        })
                        .to_string(),
                    };
                    let id = cause.command_id(&self.name, index);
                    let value = serde_json::to_vec(&entry).expect("an outbox entry serializes");
                    writes.push(write(&self.outbox_space, id, Some(value)));
                }
                PolicyAction::Schedule {
                    key,
                    due_ms,
                    payload,
                } => {
                    if key.is_empty() || key.len() > 1024 {
                        return Err(format!("action {index}: a timer key is 1 to 1024 bytes"));
                    }
                    let timer = Timer {
                        due_ms,
                        payload,
                        correlation_id: correlation_id.clone(),
                        causation_depth: depth,
                    };
                    let value = serde_json::to_vec(&timer).expect("a timer serializes");
                    writes.push(write(&self.timers_space, key.clone(), Some(value)));
                    timers.push((key, Some(timer)));
                }
                PolicyAction::CancelTimer(key) => {
                    writes.push(write(&self.timers_space, key.clone(), None));
                    timers.push((key, None));
                }
            }
        }
        step.commands += writes.len() - timers.len();
        step.writes.extend(writes);
        step.timers.extend(timers);
        Ok(())
    }

    /// The write that parks the event of `view`, failed `attempts` times for `error`.
    fn park_write(&self, view: &RecordView<'_>, error: String, attempts: u32) -> DataWrite {
        self.parked_write(Parked {
            position: view.position,
            stream: view.stream.to_string(),
            event_type: view.event_type.to_string(),
            error,
            attempts,
            parked_at: now_rfc3339(),
        })
    }

    fn parked_write(&self, parked: Parked) -> DataWrite {
        let value = serde_json::to_vec(&parked).expect("a parked event serializes");
        write(&self.parked_space, parked_key(parked.position), Some(value))
    }

    /// Commits a step's state writes with its other writes, then applies its timers in memory
    /// and wakes the dispatcher.
    async fn commit(&self, state: Arc<BatchState>, step: StepWrites) -> Result<(), StorageError> {
        self.commit_under(state, step, None).await
    }

    /// [`PolicyRunner::commit`] under `token` (see [`PolicyRunner::write_under`]).
    async fn commit_under(
        &self,
        state: Arc<BatchState>,
        step: StepWrites,
        token: Option<u64>,
    ) -> Result<(), StorageError> {
        let state = Arc::into_inner(state).expect("no call holds the state after it returns");
        let (mut writes, _) = state.into_writes();
        writes.extend(step.writes);
        self.write_under(writes, token).await?;
        {
            let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
            for (key, timer) in step.timers {
                match timer {
                    Some(timer) => timers.insert(key, timer),
                    None => timers.remove(&key),
                };
            }
        }
        crate::faults::crash_point("policy-after-outbox");
        self.wake.notify_one();
        Ok(())
    }

    async fn react_loop(self: Arc<Self>) {
        let mut head = self.store.watch_head();
        let mut paused = self.paused.subscribe();
        let mut stopped = self.stopped.subscribe();
        let mut tenure = self.tenure.subscribe();
        // The token the runner last worked under: a new one means another node may have moved
        // the checkpoint meanwhile.
        let mut working_under = None;
        let mut attempts = 0u32;
        loop {
            if *stopped.borrow() {
                return;
            }
            let Some(token) = *tenure.borrow_and_update() else {
                working_under = None;
                // Another node runs the policy: follow its checkpoint for reads and listings,
                // looking again every little while when it is behind the head.
                let behind = self.position() < self.store.head();
                let recheck = if behind {
                    STANDBY_RECHECK
                } else {
                    Duration::from_secs(3600)
                };
                tokio::select! {
                    _ = tenure.changed() => {}
                    _ = stopped.changed() => {}
                    changed = head.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(recheck) => {}
                }
                if let Err(error) = self.follow_checkpoint().await {
                    tracing::warn!("policy {}: {error}", self.name);
                }
                continue;
            };
            if working_under != Some(token) {
                if let Err(error) = self.reload().await {
                    attempts += 1;
                    tracing::error!("policy {}: {error}; retrying", self.name);
                    let _ = tokio::time::timeout(backoff(attempts), stopped.changed()).await;
                    continue;
                }
                working_under = Some(token);
            }
            if *paused.borrow_and_update() {
                tokio::select! {
                    _ = paused.changed() => {}
                    _ = stopped.changed() => {}
                }
                continue;
            }
            let from = self.position() + 1;
            head.borrow_and_update();
            if from > self.store.head() {
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return },
                    _ = paused.changed() => {}
                    _ = stopped.changed() => {}
                    _ = tenure.changed() => {}
                }
                continue;
            }
            let span = tracing::info_span!("policy_step", policy = %self.name, from);
            match self
                .react_step(from, attempts, token)
                .instrument(span)
                .await
            {
                Ok(None) => {
                    attempts = 0;
                    self.set_error(None);
                }
                Ok(Some((position, error))) => {
                    attempts += 1;
                    tracing::warn!(
                        "policy {} failed at position {position} (attempt {attempts} of {MAX_ATTEMPTS}): {error}",
                        self.name
                    );
                    self.set_error(Some(format!("at position {position}: {error}")));
                    let wait = backoff(attempts);
                    let _ = tokio::time::timeout(wait, stopped.changed()).await;
                }
                Err(error) => {
                    attempts += 1;
                    tracing::error!("policy {}: {error}; retrying", self.name);
                    self.set_error(Some(error.to_string()));
                    let _ = tokio::time::timeout(backoff(attempts), stopped.changed()).await;
                }
            }
        }
    }

    /// Reacts to the events from `from` on, up to the first that fails, and commits. An event
    /// that has failed `attempts` times before and fails again is parked instead. Answers the
    /// failing event, if one failed and was not parked.
    async fn react_step(
        self: &Arc<Self>,
        from: u64,
        attempts: u32,
        token: u64,
    ) -> Result<Option<(u64, String)>, StorageError> {
        let page = self
            .store
            .read_log(from, BATCH_EVENTS, &self.filter)
            .await?;
        let covered = match page.next {
            Some(next) => next - 1,
            None => page.head.max(from - 1),
        };
        let _turn = self.turn.lock().await;
        let state = self.new_state().await?;
        let call_state = state.clone();
        let events = page.events;
        let (events, mut step, mut failure) = self
            .on_threads(move |runner| {
                let mut step = StepWrites::default();
                let mut failure = None;
                for record in &events {
                    let view = match RecordView::parse(&record.json) {
                        Ok(view) => view,
                        Err(e) => {
                            failure = Some((record.position, format!("the record is corrupt: {e}")));
                            break;
                        }
                    };
                    let event = log_event(&view);
                    let depth = causation_depth(event.metadata);
                    if depth >= MAX_CAUSATION_DEPTH {
                        let reason = format!(
                            "the event ends a chain of {depth} policy commands, the limit; reacting \
                             to it would make the chain longer (a policy commanding a handler whose \
                             events it reacts to?)"
                        );
                        tracing::error!(
                            "policy {} parked the event at position {}: {reason}",
                            runner.name,
                            record.position
                        );
                        let parked = runner.park_write(&view, reason, 0);
                        step.writes.push(parked);
                        continue;
                    }
                    let reacted = call_state.call(
                        REFUSAL,
                        |state| runner.plugin.react(&event, state),
                        |actions| runner.take_actions(&mut step, actions, &Cause::Event(&event)),
                    );
                    if let Err(error) = reacted {
                        failure = Some((record.position, error));
                        break;
                    }
                }
                (events, step, failure)
            })
            .await;
        let mut reached = covered;
        // A step whose state writes filled it ends before the event that found no room; that
        // event starts the next step, which is no failure of it.
        if failure.is_some() && state.ended_full() {
            reached = failure.take().map_or(reached, |(position, _)| position - 1);
        }
        if let Some((position, error)) = &failure {
            reached = position - 1;
            if attempts + 1 >= MAX_ATTEMPTS {
                let event = events.iter().find(|e| e.position == *position);
                let view = event.and_then(|e| RecordView::parse(&e.json).ok());
                tracing::error!(
                    "policy {} parked the event at position {position} after {} attempts: {error}",
                    self.name,
                    attempts + 1
                );
                let parked = match &view {
                    Some(view) => self.park_write(view, error.clone(), attempts + 1),
                    None => self.parked_write(Parked {
                        position: *position,
                        stream: String::new(),
                        event_type: String::new(),
                        error: error.clone(),
                        attempts: attempts + 1,
                        parked_at: now_rfc3339(),
                    }),
                };
                step.writes.push(parked);
                reached = *position;
                failure = None;
            }
        }
        step.writes
            .push(checkpoint_write(self.name.clone(), reached));
        // Under the token the step began with: a step begun before the lease moved is refused.
        self.commit_under(state, step, Some(token)).await?;
        self.processed.send_replace(reached);
        Ok(failure)
    }

    async fn dispatch_loop(self: Arc<Self>) {
        let mut stopped = self.stopped.subscribe();
        let mut commands_ready = self.commands.clone();
        let commands = tokio::select! {
            ready = commands_ready.wait_for(|c| c.is_some()) => match ready {
                Ok(commands) => commands.clone().expect("waited for it"),
                Err(_) => return,
            },
            _ = stopped.wait_for(|s| *s) => return,
        };
        let mut attempts = 0u32;
        let mut tenure = self.tenure.subscribe();
        loop {
            if *stopped.borrow() {
                return;
            }
            // Only the node that runs the policy delivers its outbox and fires its timers.
            if tenure.borrow_and_update().is_none() {
                tokio::select! {
                    _ = tenure.changed() => {}
                    _ = stopped.changed() => {}
                }
                continue;
            }
            let Some(commands) = commands.upgrade() else {
                return;
            };
            let progress = match self.dispatch_outbox(commands.as_ref()).await {
                Ok(delivered) => self.fire_timers().await.map(|fired| delivered + fired),
                Err(error) => Err(error),
            };
            drop(commands);
            match progress {
                Ok(0) => {
                    attempts = 0;
                    // Nothing to do: sleep until woken, or until the next timer is due.
                    let wait = self.next_timer_in().unwrap_or(Duration::from_secs(3600));
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopped.changed() => {}
                        _ = tenure.changed() => {}
                    }
                }
                Ok(_) => attempts = 0,
                Err(error) => {
                    attempts += 1;
                    tracing::warn!("policy {}: delivery failed: {error}; retrying", self.name);
                    self.set_error(Some(format!("delivery: {error}")));
                    let _ = tokio::time::timeout(backoff(attempts), stopped.changed()).await;
                }
            }
        }
    }

    /// Delivers what the outbox holds, in order; answers how many were delivered.
    async fn dispatch_outbox(
        self: &Arc<Self>,
        commands: &dyn CommandSink,
    ) -> Result<usize, String> {
        let snapshot = self.store.snapshot().await.map_err(|e| e.to_string())?;
        let page = snapshot
            .scan(&self.outbox_space, "", None, OUTBOX_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        drop(snapshot);
        let mut delivered = 0;
        for (id, value) in page {
            let entry: OutboxEntry = serde_json::from_slice(&value)
                .map_err(|e| format!("outbox entry {id} is corrupt: {e}"))?;
            let request = CommandRequest {
                id: Some(id.clone()),
                stream: entry.stream.clone(),
                command_type: entry.command_type.clone(),
                data: entry.data.clone(),
                metadata: entry.metadata.clone(),
            };
            let span =
                tracing::info_span!("policy_delivery", policy = %self.name, command_id = %id);
            let outcome = commands
                .deliver(&entry.handler, request)
                .instrument(span)
                .await;
            crate::faults::crash_point("policy-after-dispatch");
            match outcome {
                Ok(Delivered::Applied) => {
                    self.write(vec![write(&self.outbox_space, id, None)])
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(Delivered::Rejected(reason)) => {
                    self.rejected(&id, &entry, &reason).await?;
                }
                Err(error) => return Err(format!("command {id} to {}: {error}", entry.handler)),
            }
            delivered += 1;
        }
        Ok(delivered)
    }

    /// Hands a rejected command to `on-rejected`, and commits its actions with the outbox
    /// entry's removal. A policy that fails to compensate has the rejection logged and dropped
    /// after the last attempt, so that one command cannot stop all delivery.
    async fn rejected(
        self: &Arc<Self>,
        id: &str,
        entry: &OutboxEntry,
        reason: &str,
    ) -> Result<(), String> {
        for attempt in 1..=MAX_ATTEMPTS {
            let _turn = self.turn.lock().await;
            let state = self.new_state().await.map_err(|e| e.to_string())?;
            let call_state = state.clone();
            let (id_owned, entry_owned, reason_owned) =
                (id.to_owned(), entry.clone(), reason.to_owned());
            let (outcome, mut step) = self
                .on_threads(move |runner| {
                    let (id, entry) = (id_owned.as_str(), &entry_owned);
                    let input = CommandInput {
                        id,
                        stream: &entry.stream,
                        command_type: &entry.command_type,
                        data: &entry.data,
                        metadata: &entry.metadata,
                    };
                    let correlation =
                        correlation_of(&entry.metadata).unwrap_or_else(|| id.to_owned());
                    let cause = Cause::Rejected {
                        id,
                        correlation: &correlation,
                        metadata: &entry.metadata,
                    };
                    let mut step = StepWrites::default();
                    let outcome = call_state.call(
                        REFUSAL,
                        |state| runner.plugin.on_rejected(&input, &reason_owned, state),
                        |actions| runner.take_actions(&mut step, actions, &cause),
                    );
                    (outcome, step)
                })
                .await;
            match outcome {
                Ok(()) => {
                    step.writes
                        .push(write(&self.outbox_space, id.to_owned(), None));
                    return self.commit(state, step).await.map_err(|e| e.to_string());
                }
                Err(error) if attempt == MAX_ATTEMPTS => {
                    tracing::error!(
                        "policy {}: on-rejected failed for command {id} after {attempt} attempts, \
                         the rejection is dropped: {error}",
                        self.name
                    );
                    return self
                        .write(vec![write(&self.outbox_space, id.to_owned(), None)])
                        .await
                        .map_err(|e| e.to_string());
                }
                Err(_) => {
                    drop(_turn);
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Ok(())
    }

    /// How long until the next timer is due.
    fn next_timer_in(&self) -> Option<Duration> {
        let timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        let due = timers.values().map(|t| t.due_ms).min()?;
        Some(Duration::from_millis(due.saturating_sub(now_ms())))
    }

    /// Fires the timers that are due: `on-timer`, then its actions committed with the timer's
    /// removal. Answers how many fired.
    async fn fire_timers(self: &Arc<Self>) -> Result<usize, String> {
        let due: Vec<(String, Timer)> = {
            let now = now_ms();
            let timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
            timers
                .iter()
                .filter(|(_, t)| t.due_ms <= now)
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect()
        };
        let mut fired = 0;
        for (key, timer) in due {
            let _turn = self.turn.lock().await;
            // A reaction may have moved or cancelled it since.
            let current = self
                .timers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            if current.as_ref() != Some(&timer) {
                continue;
            }
            let state = self.new_state().await.map_err(|e| e.to_string())?;
            let mut step = StepWrites::default();
            // The timer is removed before the actions apply, so that one it sets again stays.
            step.writes
                .push(write(&self.timers_space, key.clone(), None));
            step.timers.push((key.clone(), None));
            let call_state = state.clone();
            let (call_key, call_timer) = (key.clone(), timer.clone());
            let (outcome, step) = self
                .on_threads(move |runner| {
                    let cause = Cause::Timer {
                        key: &call_key,
                        timer: &call_timer,
                    };
                    let outcome = call_state.call(
                        REFUSAL,
                        |state| {
                            runner
                                .plugin
                                .on_timer(&call_key, &call_timer.payload, state)
                        },
                        |actions| runner.take_actions(&mut step, actions, &cause),
                    );
                    (outcome, step)
                })
                .await;
            // A timer whose call fails is not retried forever: it is dropped, with the error in
            // the log; the failed call left no writes and no actions, only the removal.
            if let Err(error) = outcome {
                tracing::error!(
                    "policy {}: timer {key:?} failed and is dropped: {error}",
                    self.name
                );
            }
            self.commit(state, step).await.map_err(|e| e.to_string())?;
            fired += 1;
        }
        Ok(fired)
    }
}

impl Drop for PolicyRunner {
    fn drop(&mut self) {
        self.stopped.send_replace(true);
    }
}

/// What a policy reacted to: it names the commands that reaction sends.
enum Cause<'a> {
    Event(&'a LogEvent<'a>),
    Timer {
        key: &'a str,
        timer: &'a Timer,
    },
    Rejected {
        id: &'a str,
        correlation: &'a str,
        /// The rejected command's metadata.
        metadata: &'a str,
    },
}

impl Cause<'_> {
    /// The id of the `index`th command sent: the same every time this cause is reacted to.
    fn command_id(&self, policy: &str, index: usize) -> String {
        match self {
            Cause::Event(event) => {
                format!("{}{index:04}", event_command_prefix(policy, event.position))
            }
            Cause::Timer { key, timer } => {
                format!(
                    "{}{index:04}",
                    timer_command_prefix(policy, key, timer.due_ms)
                )
            }
            Cause::Rejected { id, .. } => {
                format!("{policy}/rejected/{}/{index:04}", short_hash(id))
            }
        }
    }

    fn correlation_id(&self) -> String {
        match self {
            Cause::Event(event) => {
                correlation_of(event.metadata).unwrap_or_else(|| event.id.to_owned())
            }
            Cause::Timer { timer, .. } => timer.correlation_id.clone(),
            Cause::Rejected { correlation, .. } => (*correlation).to_owned(),
        }
    }

    /// How many policy commands led to this cause.
    fn depth(&self) -> u64 {
        match self {
            Cause::Event(event) => causation_depth(event.metadata),
            Cause::Timer { timer, .. } => timer.causation_depth,
            Cause::Rejected { metadata, .. } => causation_depth(metadata),
        }
    }

    fn causation_id(&self) -> String {
        match self {
            Cause::Event(event) => event.id.to_owned(),
            Cause::Timer { key, .. } => format!("timer:{key}"),
            Cause::Rejected { id, .. } => (*id).to_owned(),
        }
    }
}

/// Why a parked event cannot be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no event is parked at position {0}")]
    NotParked(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Checks what one call asks for against the limits per call, before anything of it is built.
fn check_action_limits(actions: &[PolicyAction]) -> Result<(), Failure> {
    let (mut commands, mut timers, mut bytes) = (0, 0, 0);
    for (index, action) in actions.iter().enumerate() {
        let size = match action {
            PolicyAction::Send { data, .. } => {
                commands += 1;
                data.len()
            }
            PolicyAction::Schedule { payload, .. } => {
                timers += 1;
                payload.len()
            }
            PolicyAction::CancelTimer(_) => {
                timers += 1;
                0
            }
        };
        if size > MAX_ACTION_BYTES {
            return Err(format!(
                "action {index} carries {size} bytes; the limit is {MAX_ACTION_BYTES}"
            ));
        }
        bytes += size;
    }
    if commands > MAX_COMMANDS_PER_CALL {
        return Err(format!(
            "the policy asked for {commands} commands in one call; the limit is {MAX_COMMANDS_PER_CALL}"
        ));
    }
    if timers > MAX_TIMERS_PER_CALL {
        return Err(format!(
            "the policy set or cancelled {timers} timers in one call; the limit is {MAX_TIMERS_PER_CALL}"
        ));
    }
    if bytes > MAX_ACTIONS_BYTES_PER_CALL {
        return Err(format!(
            "the policy's actions carry {bytes} bytes in one call; the limit is {MAX_ACTIONS_BYTES_PER_CALL}"
        ));
    }
    Ok(())
}

fn write(space: &str, key: String, value: Option<Vec<u8>>) -> DataWrite {
    DataWrite {
        space: space.into(),
        key,
        value,
    }
}

/// Every entry of a data space, in key order.
async fn scan_all(
    snapshot: &dyn DataSnapshot,
    space: &str,
) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        let after = entries.last().map(|(key, _)| key.as_str());
        let page = snapshot.scan(space, "", after, 1000).await?;
        if page.is_empty() {
            return Ok(entries);
        }
        entries.extend(page);
    }
}

fn parked_key(position: u64) -> String {
    format!("{position:020}")
}

/// The first 16 hex digits of the SHA-256 of `text`.
fn short_hash(text: &str) -> String {
    content_hash(text.as_bytes())[..16].to_owned()
}

fn backoff(attempts: u32) -> Duration {
    crate::projections::backoff(attempts, MAX_BACKOFF)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The prefix of the ids of the commands policy `policy` sent reacting to the event at
/// `position`.
pub fn event_command_prefix(policy: &str, position: u64) -> String {
    format!("{policy}/{position:020}/")
}

/// The prefix of the ids of the commands policy `policy` sent when its timer `key`, due at
/// `due_ms`, fired.
pub fn timer_command_prefix(policy: &str, key: &str, due_ms: u64) -> String {
    format!("{policy}/timer/{}/{due_ms}/", short_hash(key))
}

//! The reference backend: the whole contract over ordered maps in memory, behind one lock. It is
//! as simple as the rules allow, so that the conformance suite can compare every other backend's
//! answers with its own; the engine's tests run on it too. Nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::claims::{Holder, LeaseClaim, LocalClaims, NodeInfo, NodeSeen};
use crate::rules::{self, AppendContext, Decision, IdEntry};
use crate::{
    AppendLimits, AppendOutcome, Catalog, CommandLog, Commit, CommitError, Commits, Committed,
    Coordination, DataSnapshot, Direction, EventLog, Lifecycle, LogFilter, LogPage, PAGE_BYTES,
    PluginData, RecordedEvent, StorageError, StoreStats, StoredCommand, StreamPage, category_of,
    log_next, now_rfc3339, stream_next, stream_window, take_page,
};

/// Plugin data: (space, key) → value. Shared with the snapshots taken of it; a write copies it
/// only while a snapshot still holds the old one.
type Data = Arc<BTreeMap<(String, String), Vec<u8>>>;

/// An event as the reference keeps it: its record, and what filters and idempotency need.
struct Event {
    record: RecordedEvent,
    category: String,
    event_type: String,
}

#[derive(Default)]
struct State {
    /// The log; position p is at index p - 1.
    events: Vec<Event>,
    /// Each stream's positions, by version - 1.
    streams: BTreeMap<String, Vec<u64>>,
    ids: BTreeMap<String, IdEntry>,
    commands: BTreeMap<String, StoredCommand>,
    tallies: BTreeMap<String, u64>,
    plugins: BTreeMap<String, Vec<u8>>,
    blobs: BTreeMap<String, Vec<u8>>,
    data: Data,
    leases: BTreeMap<String, u64>,
    stats: StoreStats,
}

/// The in-memory [`crate::Store`].
pub struct MemoryStore {
    state: Mutex<State>,
    head: watch::Sender<u64>,
    closed: AtomicBool,
    id_tag: u32,
    append_limits: AppendLimits,
    page_bytes: usize,
    claims: LocalClaims,
    catalog: watch::Sender<u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(AppendLimits::default(), PAGE_BYTES)
    }
}

impl MemoryStore {
    pub fn new(append_limits: AppendLimits, page_bytes: usize) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            head: watch::Sender::new(0),
            closed: AtomicBool::new(false),
            id_tag: uuid::Uuid::new_v4().as_u128() as u32,
            append_limits,
            page_bytes: page_bytes.max(1),
            claims: LocalClaims::default(),
            catalog: watch::Sender::new(0),
        }
    }

    /// Hands out the next token of `lease`.
    fn next_token(&self, lease: &str) -> Result<u64, StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let mut state = self.state();
        let token = state.leases.entry(lease.to_owned()).or_default();
        *token += 1;
        Ok(*token)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn records(
        &self,
        state: &State,
        positions: impl IntoIterator<Item = u64>,
    ) -> Vec<RecordedEvent> {
        take_page(
            positions
                .into_iter()
                .map(|p| state.events[(p - 1) as usize].record.clone()),
            self.page_bytes,
        )
    }
}

/// The rules' view of the reference's state.
struct Context<'s> {
    state: &'s State,
    id_tag: u32,
}

impl AppendContext for Context<'_> {
    fn head(&self) -> u64 {
        self.state.events.len() as u64
    }

    fn id_tag(&self) -> u32 {
        self.id_tag
    }

    fn stream_version(&mut self, stream: &str) -> Result<u64, StorageError> {
        Ok(self.state.streams.get(stream).map_or(0, |s| s.len() as u64))
    }

    fn indexed_id(&mut self, id: &str) -> Result<Option<IdEntry>, StorageError> {
        Ok(self.state.ids.get(id).copied())
    }

    fn record(&mut self, position: u64) -> Result<Vec<u8>, StorageError> {
        Ok(self.state.events[(position - 1) as usize]
            .record
            .json
            .clone())
    }

    fn command(&mut self, id: &str) -> Result<Option<StoredCommand>, StorageError> {
        Ok(self.state.commands.get(id).cloned())
    }
}

#[async_trait]
impl Commits for MemoryStore {
    async fn commit(&self, commit: Commit) -> Result<Committed, CommitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed.into());
        }
        if let Some(request) = &commit.append {
            self.append_limits.check(&request.events)?;
        }
        let started = Instant::now();
        let mut state = self.state();
        if let Some(fence) = &commit.fence {
            fence.check(state.leases.get(&fence.lease).copied().unwrap_or(0))?;
        }
        let mut committed = Committed::default();
        if let Some(request) = &commit.append {
            let mut context = Context {
                state: &state,
                id_tag: self.id_tag,
            };
            match rules::decide(&mut context, request)? {
                Decision::Refuse(error) => return Err(error),
                Decision::AlreadyWritten(result) => {
                    committed.append = Some(AppendOutcome::AlreadyWritten(result));
                }
                Decision::Write(plan) => {
                    let mut records = Vec::new();
                    let ends = rules::render(request, &plan, &now_rfc3339(), &mut records);
                    let category = category_of(&request.stream).to_owned();
                    let mut start = 0;
                    for (offset, (event, end)) in request.events.iter().zip(ends).enumerate() {
                        let position = plan.result.first_position + offset as u64;
                        let record = RecordedEvent {
                            position,
                            json: records[start..end].to_vec(),
                        };
                        start = end;
                        if commit.want_records {
                            committed.records.push(record.clone());
                        }
                        state.events.push(Event {
                            record,
                            category: category.clone(),
                            event_type: event.event_type.clone(),
                        });
                        if plan.indexed[offset] {
                            state
                                .ids
                                .insert(plan.ids[offset].clone(), plan.id_entry(offset));
                        }
                        state
                            .streams
                            .entry(request.stream.clone())
                            .or_default()
                            .push(position);
                    }
                    if let Some(command) = &request.command {
                        let entry = plan.command_entry(&command.record);
                        state.commands.insert(command.id.clone(), entry);
                        *state.tallies.entry(command.tally.clone()).or_default() += 1;
                    }
                    committed.append = Some(AppendOutcome::Written(plan.result));
                    state.stats.committed_appends += 1;
                }
            }
        }
        if !commit.data.is_empty() {
            let data = Arc::make_mut(&mut state.data);
            for write in commit.data {
                let key = (write.space.to_string(), write.key);
                match write.value {
                    Some(value) => data.insert(key, value),
                    None => data.remove(&key),
                };
            }
        }
        state.stats.commits += 1;
        state.stats.commit_seconds += started.elapsed().as_secs_f64();
        let head = state.events.len() as u64;
        drop(state);
        // Commits that raced publish their heads in any order: the head only moves forward.
        self.head.send_if_modified(|h| {
            let moved = head > *h;
            *h = (*h).max(head);
            moved
        });
        Ok(committed)
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        limit: usize,
        direction: Direction,
    ) -> Result<Option<StreamPage>, StorageError> {
        let state = self.state();
        let Some(positions) = state.streams.get(stream) else {
            return Ok(None);
        };
        let version = positions.len() as u64;
        let window = stream_window(version, from, limit, direction);
        let mut wanted: Vec<u64> = if window.0 <= window.1 {
            positions[(window.0 - 1) as usize..window.1 as usize].to_vec()
        } else {
            Vec::new()
        };
        if direction == Direction::Backward {
            wanted.reverse();
        }
        let count = wanted.len() as u64;
        let events = self.records(&state, wanted);
        let next = stream_next(direction, window, version, events.len() as u64, count);
        Ok(Some(StreamPage {
            version,
            events,
            next,
        }))
    }

    async fn read_log(
        &self,
        from: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, StorageError> {
        let state = self.state();
        let head = state.events.len() as u64;
        let matches = |event: &Event| {
            (filter.categories.is_empty() || filter.categories.contains(&event.category))
                && (filter.event_types.is_empty() || filter.event_types.contains(&event.event_type))
        };
        let positions: Vec<u64> = (from.max(1)..=head)
            .filter(|p| matches(&state.events[(p - 1) as usize]))
            .take(limit)
            .collect();
        let wanted = positions.len();
        let events = self.records(&state, positions);
        let next = log_next(&events, wanted, limit, head);
        Ok(LogPage { events, next, head })
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
}

/// The entries of `map` whose keys start with `prefix` and come after `after`, up to `limit`.
fn scan<V: Clone>(
    map: &BTreeMap<String, V>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<(String, V)> {
    let start = match after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    map.range::<str, _>((start, Bound::Unbounded))
        .take_while(|(key, _)| key.starts_with(prefix))
        .take(limit)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

#[async_trait]
impl CommandLog for MemoryStore {
    async fn read_command(&self, id: &str) -> Result<Option<StoredCommand>, StorageError> {
        Ok(self.state().commands.get(id).cloned())
    }

    async fn scan_commands(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredCommand)>, StorageError> {
        Ok(scan(&self.state().commands, prefix, after, limit))
    }

    async fn command_tallies(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        Ok(scan(&self.state().tallies, prefix, None, usize::MAX))
    }
}

#[async_trait]
impl Catalog for MemoryStore {
    async fn plugin_records(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        Ok(scan(&self.state().plugins, "", None, usize::MAX))
    }

    async fn save_plugin(
        &self,
        name: &str,
        record: Vec<u8>,
        blobs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let mut state = self.state();
        state.plugins.insert(name.to_owned(), record);
        state.blobs.extend(blobs);
        drop(state);
        self.catalog.send_modify(|changes| *changes += 1);
        Ok(())
    }

    async fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.state().blobs.get(key).cloned())
    }

    async fn save_blob(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.state().blobs.insert(key.to_owned(), bytes);
        Ok(())
    }

    async fn delete_blobs(&self, prefix: &str) -> Result<u64, StorageError> {
        let mut state = self.state();
        let before = state.blobs.len();
        state.blobs.retain(|key, _| !key.starts_with(prefix));
        Ok((before - state.blobs.len()) as u64)
    }

    fn watch_catalog(&self) -> watch::Receiver<u64> {
        self.catalog.subscribe()
    }
}

/// The plugin data as one commit left it.
struct MemorySnapshot {
    data: Data,
}

#[async_trait]
impl DataSnapshot for MemorySnapshot {
    async fn get(&self, space: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.data.get(&(space.to_owned(), key.to_owned())).cloned())
    }

    async fn scan(
        &self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded((space.to_owned(), after.to_owned())),
            _ => Bound::Included((space.to_owned(), prefix.to_owned())),
        };
        Ok(self
            .data
            .range((start, Bound::Unbounded))
            .take_while(|((s, key), _)| s == space && key.starts_with(prefix))
            .take(limit)
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect())
    }
}

#[async_trait]
impl PluginData for MemoryStore {
    async fn snapshot(&self) -> Result<Box<dyn DataSnapshot>, StorageError> {
        Ok(Box::new(MemorySnapshot {
            data: self.state().data.clone(),
        }))
    }

    async fn delete_data(&self, space_prefix: &str) -> Result<u64, StorageError> {
        let mut state = self.state();
        let data = Arc::make_mut(&mut state.data);
        let before = data.len();
        data.retain(|(space, _), _| !space.starts_with(space_prefix));
        Ok((before - data.len()) as u64)
    }

    async fn take_lease(&self, lease: &str) -> Result<u64, StorageError> {
        self.claims.forget(lease).await;
        self.next_token(lease)
    }
}

#[async_trait]
impl Coordination for MemoryStore {
    async fn claim_lease(
        &self,
        lease: &str,
        holder: &Holder,
        ttl: std::time::Duration,
    ) -> Result<Option<u64>, StorageError> {
        self.claims
            .claim(lease, holder, ttl, || async { self.next_token(lease) })
            .await
    }

    async fn release_lease(&self, lease: &str, holder: &Holder) -> Result<(), StorageError> {
        self.claims.release(lease, holder).await;
        Ok(())
    }

    async fn lease_claims(&self) -> Result<Vec<LeaseClaim>, StorageError> {
        Ok(self.claims.claims().await)
    }

    async fn heartbeat(
        &self,
        node: &NodeInfo,
        ttl: std::time::Duration,
    ) -> Result<Vec<NodeSeen>, StorageError> {
        Ok(self.claims.heartbeat(node, ttl))
    }
}

#[async_trait]
impl Lifecycle for MemoryStore {
    fn stats(&self) -> StoreStats {
        self.state().stats
    }

    fn accepts_writes(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    async fn report(&self) -> Result<serde_json::Value, StorageError> {
        Ok(serde_json::json!({"engine": "memory"}))
    }
}

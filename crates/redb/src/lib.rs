//! The embedded backend: every event, index and plugin datum in one redb file, written by one
//! writer thread that commits concurrent commits together (group commit).
//!
//! Every write travels over a channel to the writer, which owns every write transaction. It
//! takes every commit waiting, applies them one after another in a single write transaction
//! (each one's checks, made by the store contract's append rules, see the writes of those before
//! it), commits once with an fsync, and only then answers each. A commit whose checks fail writes
//! nothing and fails alone; the others of its group commit. A storage error fails the whole
//! group, since nothing of that transaction reaches the disk. The catalog's writes, deletions
//! and leases are the writer's too, each in a transaction of its own. Readers use redb's
//! snapshots and never wait for the writer; reads that may be long run on tokio's blocking
//! threads, a snapshot's point reads where they are asked.
//!
//! The tables, keys and encodings are described in `docs/storage.md`.

mod rows;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{
    AccessGuard, CursorError, Database, Key, ReadableDatabase, ReadableTable, Table,
    TableDefinition, Value, WriteTransaction,
};
use tokio::sync::{oneshot, watch};

use evhost_store::claims::{Holder, LeaseClaim, LocalClaims, NodeInfo, NodeSeen};
use evhost_store::rules::{self, AppendContext, AppendPlan, Decision, IdEntry};
use evhost_store::{
    AppendLimits, AppendOutcome, AppendRequest, AppendResult, Catalog, CommandLog, Commit,
    CommitError, Commits, Committed, Coordination, DataSnapshot, Direction, EventLog, Lifecycle,
    LogFilter, LogPage, PAGE_BYTES, PluginData, RecordedEvent, StorageError, StoreStats,
    StoredCommand, StreamPage, category_of, log_next, now_rfc3339, stream_next, stream_window,
};

use crate::rows::{
    SECTION_TAIL_MAX, STREAM_TAIL_MAX, SectionRow, StreamRow, decode_chunk, decode_entries,
    encode_chunk, encode_entries,
};

/// The log and its position indexes, in one ordered tree so that a commit touches one table root
/// for all of them. A key is (section | id, n), the section in the top byte of the first element:
///
/// - (`EVENTS`, position) → the event's canonical JSON record;
/// - (`STREAM` | stream id, first version of a chunk) → the positions of that chunk's versions,
///   8 bytes little-endian each (a stream's newest positions wait in its [`StreamRow`]);
/// - (`CATEGORY` | category id, first position of a chunk) → (position, type id) entries of the
///   category's events, so a category read can filter by type without loading events;
/// - (`TYPE` | type id, first position of a chunk) → (position, 0) entries of the type's events.
///
/// The newest entries of each stream, category and type wait in its row in `rows`.
const LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log");

const EVENTS: u64 = 0;
const STREAM: u64 = 1 << 56;
const CATEGORY: u64 = 2 << 56;
const TYPE: u64 = 3 << 56;
/// Stream, category and type ids stay below the section byte.
const MAX_INTERNED_ID: u64 = (1 << 56) - 1;
/// stream name → its [`StreamRow`]; `\u{1}` + category name and `\u{2}` + event type → its
/// [`SectionRow`]. No stream name starts with a control character, so the keys never meet.
const ROWS: TableDefinition<&str, &[u8]> = TableDefinition::new("rows");
/// event id → (position, first position of the append that wrote it, events in that append).
const EVENT_IDS: TableDefinition<&str, (u64, u64, u32)> = TableDefinition::new("event_ids");
/// Counters and the format version, by name.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Recorded commands by id: the last position their append wrote (or the head when it wrote
/// nothing), how many events it wrote, and the record the append carried.
const COMMANDS: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("commands");
/// Plugin records by plugin name, opaque to the store.
const PLUGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugins");
/// Blobs by key (uploaded files, compiled artifacts), opaque to the store.
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// The data plugins keep beside the log: (space, key) → value, opaque to the store.
const DATA: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("data");
/// Leases by name → the last token handed out (see [`evhost_store::Fence`]). Added after the
/// first release of the format; opening an older file creates it empty.
const LEASES: TableDefinition<&str, u64> = TableDefinition::new("leases");

const META_FORMAT: &str = "format_version";
const META_NEXT_STREAM_ID: &str = "next_stream_id";
const META_NEXT_CATEGORY_ID: &str = "next_category_id";
const META_NEXT_TYPE_ID: &str = "next_type_id";
/// The tag in the ids this store generates (see [`GeneratedId`]), chosen when the file is made.
const META_ID_TAG: &str = "id_tag";
/// The prefix of the command tallies' names in [`META`].
const META_TALLY: &str = "command_tally/";

/// The on-disk format this build writes and reads.
const FORMAT_VERSION: u64 = 1;

/// The file inside the data directory.
const DATABASE_FILE: &str = "events.redb";

/// Reads of at most this many events (or entries) are small enough to make where they are
/// asked.
const SMALL_READ: usize = 100;

/// A group stops taking commits past either bound, so one commit stays short.
const MAX_GROUP_EVENTS: usize = 50_000;
const MAX_GROUP_BYTES: usize = 64 << 20;

/// The kinds of section rows, by the key prefix of their row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SectionKind {
    Category,
    Type,
}

impl SectionKind {
    fn row_key(self, name: &str) -> String {
        match self {
            SectionKind::Category => format!("\u{1}{name}"),
            SectionKind::Type => format!("\u{2}{name}"),
        }
    }

    /// The section of the log holding this kind's chunks.
    fn log_section(self, id: u64) -> u64 {
        match self {
            SectionKind::Category => CATEGORY | id,
            SectionKind::Type => TYPE | id,
        }
    }
}

/// How the embedded store is set up.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb's page cache, in bytes: the main term of the process's resident memory.
    pub cache_bytes: usize,
    /// How long a commit group may wait for more appends when recent groups were larger.
    pub group_wait: Duration,
    /// The most one append may carry.
    pub append_limits: AppendLimits,
    /// A page of events read ends once its records hold this many bytes (it always holds at
    /// least one event), so that no read holds or sends more than this at once.
    pub page_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
            group_wait: Duration::from_micros(250),
            append_limits: AppendLimits::default(),
            page_bytes: PAGE_BYTES,
        }
    }
}

/// Creates `dir` and its missing ancestors; answers the directories it created, outermost first.
fn create_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path.to_path_buf());
        at = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    missing.reverse();
    Ok(missing)
}

/// The directories whose entries must be made durable after opening a store in `data_dir`:
/// neither redb nor the file system makes a new file's name durable with its contents, so a new
/// database file needs its directory synced, and each directory created for it its parent (a
/// power cut could otherwise lose the whole store, though its commits were fsync'd).
fn dirs_to_sync(data_dir: &Path, new_file: bool, created: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = created
        .iter()
        .filter_map(|dir| dir.parent())
        .map(|parent| {
            if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            }
        })
        .collect();
    if new_file || !created.is_empty() {
        dirs.push(data_dir.to_path_buf());
    }
    dirs.dedup();
    dirs
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn engine<E: std::fmt::Display>(error: E) -> StorageError {
    StorageError::Failed(error.to_string())
}

/// A commit waiting for the writer.
struct CommitJob {
    commit: Commit,
    reply: oneshot::Sender<Result<Committed, CommitError>>,
}

/// A write of the catalog or the plugin data's administration, in a transaction of its own.
enum Chore {
    SavePlugin {
        name: String,
        record: Vec<u8>,
        blobs: Vec<(String, Vec<u8>)>,
    },
    SaveBlob {
        key: String,
        bytes: Vec<u8>,
    },
    DeleteBlobs {
        prefix: String,
    },
    DeleteData {
        space_prefix: String,
    },
    TakeLease {
        lease: String,
    },
}

/// A chore waiting for the writer; it answers a count (entries removed, a lease's token) or 0.
struct ChoreJob {
    chore: Chore,
    reply: oneshot::Sender<Result<u64, StorageError>>,
}

enum WriterMessage {
    Commit(CommitJob),
    Chore(ChoreJob),
    Close,
    /// Makes the writer fail as a bug would, for tests of what the store does then.
    #[cfg(test)]
    Fail,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    committed_appends: AtomicU64,
    commit_nanos: AtomicU64,
}

/// The redb-backed [`evhost_store::Store`].
pub struct RedbStore {
    reader: Arc<Reader>,
    jobs: mpsc::Sender<WriterMessage>,
    writer: Mutex<Option<JoinHandle<()>>>,
    head: watch::Receiver<u64>,
    counters: Arc<Counters>,
    append_limits: AppendLimits,
    /// Claims need not outlive the process: only one process opens the file.
    claims: LocalClaims,
    catalog: watch::Sender<u64>,
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir`. Blocks on I/O: call it where blocking is
    /// allowed (at start, or on a blocking thread).
    pub fn open(data_dir: &Path, options: &StoreOptions) -> Result<Self, StorageError> {
        let created = create_dirs(data_dir).map_err(|e| {
            StorageError::Failed(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let new_file = !path.exists();
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(&path)
            .map_err(|e| StorageError::Failed(format!("cannot open {}: {e}", path.display())))?;
        for dir in dirs_to_sync(data_dir, new_file, &created) {
            sync_dir(&dir).map_err(|e| {
                StorageError::Failed(format!("cannot sync directory {}: {e}", dir.display()))
            })?;
        }
        let db = Arc::new(db);
        let state = WriterState::load(&db)?;
        let (head_tx, head_rx) = watch::channel(state.head);
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let mut writer = Writer {
            db: db.clone(),
            group_wait: options.group_wait,
            state,
            head: head_tx,
            counters: counters.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("evhost-writer".into())
            .spawn(move || writer.run(jobs_rx))
            .map_err(engine)?;
        Ok(RedbStore {
            reader: Arc::new(Reader {
                db: RwLock::new(Some(db)),
                page_bytes: options.page_bytes.max(1),
            }),
            jobs: jobs_tx,
            writer: Mutex::new(Some(handle)),
            head: head_rx,
            counters,
            append_limits: options.append_limits,
            claims: LocalClaims::default(),
            catalog: watch::Sender::new(0),
        })
    }

    /// Runs a read: a large one asked for by an async task on a blocking thread, so that no
    /// async worker waits on the disk for long; a small one (a point lookup, a page of at most
    /// [`SMALL_READ`] events) where it is asked, since it takes less than handing it to another
    /// thread costs; and any read asked for outside a task (from a thread that may block, such
    /// as the plugin threads) where it is asked.
    async fn read<T: Send + 'static>(
        &self,
        small: bool,
        read: impl FnOnce(&Reader) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        if small || tokio::task::try_id().is_none() {
            return read(&self.reader);
        }
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || read(&reader))
            .await
            .map_err(|e| StorageError::Failed(format!("a read failed: {e}")))?
    }

    /// Hands a chore to the writer and waits for its answer.
    async fn chore(&self, chore: Chore) -> Result<u64, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(WriterMessage::Chore(ChoreJob { chore, reply }))
            .map_err(|_| StorageError::Closed)?;
        // A dropped reply means the writer stopped before answering.
        answer.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Stops the writer, waits for it, and lets go of the database; blocks.
    fn stop_writer(&self) {
        let _ = self.jobs.send(WriterMessage::Close);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        self.reader.release();
    }
}

#[async_trait]
impl Commits for RedbStore {
    /// Refuses a commit past the limits here, on the caller's task, before the writer sees it.
    async fn commit(&self, commit: Commit) -> Result<Committed, CommitError> {
        if let Some(request) = &commit.append {
            self.append_limits.check(&request.events)?;
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(WriterMessage::Commit(CommitJob { commit, reply }))
            .map_err(|_| StorageError::Closed)?;
        // A dropped reply means the writer stopped before answering: nothing was acknowledged.
        answer.await.unwrap_or(Err(StorageError::Closed.into()))
    }
}

#[async_trait]
impl EventLog for RedbStore {
    async fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        limit: usize,
        direction: Direction,
    ) -> Result<Option<StreamPage>, StorageError> {
        let stream = stream.to_owned();
        self.read(limit <= SMALL_READ, move |reader| {
            reader.read_stream(&stream, from, limit, direction)
        })
        .await
    }

    async fn read_log(
        &self,
        from: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, StorageError> {
        let filter = filter.clone();
        self.read(limit <= SMALL_READ, move |reader| {
            reader.read_log(from, limit, &filter)
        })
        .await
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }
}

#[async_trait]
impl CommandLog for RedbStore {
    async fn read_command(&self, id: &str) -> Result<Option<StoredCommand>, StorageError> {
        let id = id.to_owned();
        self.read(true, move |reader| reader.read_command(&id))
            .await
    }

    async fn scan_commands(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredCommand)>, StorageError> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        self.read(limit <= SMALL_READ, move |reader| {
            reader.scan_commands(&prefix, after.as_deref(), limit)
        })
        .await
    }

    async fn command_tallies(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let prefix = prefix.to_owned();
        self.read(false, move |reader| reader.command_tallies(&prefix))
            .await
    }
}

#[async_trait]
impl Catalog for RedbStore {
    async fn plugin_records(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.read(false, Reader::plugin_records).await
    }

    async fn save_plugin(
        &self,
        name: &str,
        record: Vec<u8>,
        blobs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let name = name.to_owned();
        self.chore(Chore::SavePlugin {
            name,
            record,
            blobs,
        })
        .await?;
        self.catalog.send_modify(|changes| *changes += 1);
        Ok(())
    }

    async fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let key = key.to_owned();
        self.read(false, move |reader| reader.blob(&key)).await
    }

    async fn save_blob(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let key = key.to_owned();
        self.chore(Chore::SaveBlob { key, bytes }).await.map(drop)
    }

    async fn delete_blobs(&self, prefix: &str) -> Result<u64, StorageError> {
        let prefix = prefix.to_owned();
        self.chore(Chore::DeleteBlobs { prefix }).await
    }

    fn watch_catalog(&self) -> watch::Receiver<u64> {
        self.catalog.subscribe()
    }
}

#[async_trait]
impl PluginData for RedbStore {
    /// Taken where it is asked: beginning a read transaction does not touch the disk.
    async fn snapshot(&self) -> Result<Box<dyn DataSnapshot>, StorageError> {
        let txn = self.reader.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(DATA).map_err(engine)?;
        Ok(Box::new(RedbDataSnapshot { table }))
    }

    async fn delete_data(&self, space_prefix: &str) -> Result<u64, StorageError> {
        let space_prefix = space_prefix.to_owned();
        self.chore(Chore::DeleteData { space_prefix }).await
    }

    async fn take_lease(&self, lease: &str) -> Result<u64, StorageError> {
        let lease = lease.to_owned();
        self.claims.forget(&lease).await;
        self.chore(Chore::TakeLease { lease }).await
    }
}

#[async_trait]
impl Coordination for RedbStore {
    async fn claim_lease(
        &self,
        lease: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<u64>, StorageError> {
        self.claims
            .claim(lease, holder, ttl, || {
                self.chore(Chore::TakeLease {
                    lease: lease.to_owned(),
                })
            })
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
        ttl: Duration,
    ) -> Result<Vec<NodeSeen>, StorageError> {
        Ok(self.claims.heartbeat(node, ttl))
    }
}

#[async_trait]
impl Lifecycle for RedbStore {
    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            committed_appends: self.counters.committed_appends.load(Ordering::Relaxed),
            commit_seconds: self.counters.commit_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    fn accepts_writes(&self) -> bool {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.as_ref().is_some_and(|handle| !handle.is_finished())
    }

    /// Waits, on a blocking thread, for the writer to finish the commits in flight.
    async fn close(&self) {
        let _ = self.jobs.send(WriterMessage::Close);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        self.reader.release();
    }

    async fn report(&self) -> Result<serde_json::Value, StorageError> {
        Ok(serde_json::json!({"engine": "redb"}))
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

/// The reads of the store, each in a read transaction of its own; they block on I/O.
struct Reader {
    /// The database, until the store is closed: closing lets go of the file, so that it can be
    /// opened again (snapshots still alive keep it open until they are dropped).
    db: RwLock<Option<Arc<Database>>>,
    /// A page of events ends once its records hold this many bytes.
    page_bytes: usize,
}

impl Reader {
    fn db(&self) -> Result<Arc<Database>, StorageError> {
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        db.clone().ok_or(StorageError::Closed)
    }

    fn release(&self) {
        self.db.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The records at `positions`, in the order given, up to the first that brings the records
    /// read to the page's byte bound. Runs of consecutive ascending positions, which a filter
    /// that matches most of the log yields, are read with one range scan each rather than one
    /// lookup per event.
    fn read_events(
        &self,
        log: &impl ReadableTable<(u64, u64), &'static [u8]>,
        positions: impl IntoIterator<Item = u64>,
    ) -> Result<Vec<RecordedEvent>, StorageError> {
        let missing = |position| StorageError::Corrupt {
            position,
            reason: "an index points at a missing event".into(),
        };
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut positions = positions.into_iter().peekable();
        while let Some(first) = positions.next() {
            let mut last = first;
            while positions.peek() == Some(&(last + 1)) {
                last += 1;
                positions.next();
            }
            let before = events.len();
            for entry in log
                .range((EVENTS, first)..=(EVENTS, last))
                .map_err(engine)?
            {
                let (key, record) = entry.map_err(engine)?;
                bytes += record.value().len();
                events.push(RecordedEvent {
                    position: key.value().1,
                    json: record.value().to_vec(),
                });
                if bytes >= self.page_bytes {
                    return Ok(events);
                }
            }
            if events.len() - before != (last - first + 1) as usize {
                return Err(missing(first));
            }
        }
        Ok(events)
    }

    fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        limit: usize,
        direction: Direction,
    ) -> Result<Option<StreamPage>, StorageError> {
        let txn = self.db()?.begin_read().map_err(engine)?;
        let rows = txn.open_table(ROWS).map_err(engine)?;
        let Some(row) = rows.get(stream).map_err(engine)? else {
            return Ok(None);
        };
        let row = StreamRow::decode(row.value())?;
        let version = row.version;
        let window = stream_window(version, from, limit, direction);
        let log = txn.open_table(LOG).map_err(engine)?;
        let mut positions = if window.0 <= window.1 {
            stream_positions(&log, &row, window.0, window.1)?
        } else {
            Vec::new()
        };
        if direction == Direction::Backward {
            positions.reverse();
        }
        let wanted = positions.len() as u64;
        // Backward, the positions are in descending order already: the byte bound falls on the
        // newest events, which is where a backward page starts.
        let events = self.read_events(&log, positions)?;
        let next = stream_next(direction, window, version, events.len() as u64, wanted);
        Ok(Some(StreamPage {
            version,
            events,
            next,
        }))
    }

    fn read_log(
        &self,
        from: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, StorageError> {
        let txn = self.db()?.begin_read().map_err(engine)?;
        let log = txn.open_table(LOG).map_err(engine)?;
        let head = last_position(&log)?;
        let from = from.max(1);
        let positions: Vec<u64> = if filter.is_empty() {
            // The log is gapless: its positions are the range itself.
            (from..=head).take(limit).collect()
        } else {
            filtered_positions(&txn, &log, from, limit, filter)?
        };
        let wanted = positions.len();
        let events = self.read_events(&log, positions)?;
        let next = log_next(&events, wanted, limit, head);
        Ok(LogPage { events, next, head })
    }

    fn read_command(&self, id: &str) -> Result<Option<StoredCommand>, StorageError> {
        let txn = self.db()?.begin_read().map_err(engine)?;
        let commands = txn.open_table(COMMANDS).map_err(engine)?;
        let stored = commands.get(id).map_err(engine)?;
        Ok(stored.map(|entry| {
            let (position, event_count, record) = entry.value();
            StoredCommand {
                record: record.to_vec(),
                position,
                event_count,
            }
        }))
    }

    fn scan_commands(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredCommand)>, StorageError> {
        let txn = self.db()?.begin_read().map_err(engine)?;
        let commands = txn.open_table(COMMANDS).map_err(engine)?;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut found = Vec::new();
        for entry in commands
            .range::<&str>((start, Bound::Unbounded))
            .map_err(engine)?
        {
            let (id, stored) = entry.map_err(engine)?;
            if found.len() >= limit || !id.value().starts_with(prefix) {
                break;
            }
            let (position, event_count, record) = stored.value();
            let command = StoredCommand {
                record: record.to_vec(),
                position,
                event_count,
            };
            found.push((id.value().to_owned(), command));
        }
        Ok(found)
    }

    fn command_tallies(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let txn = self.db()?.begin_read().map_err(engine)?;
        let meta = txn.open_table(META).map_err(engine)?;
        let start = format!("{META_TALLY}{prefix}");
        let mut tallies = Vec::new();
        for entry in meta.range::<&str>(start.as_str()..).map_err(engine)? {
            let (name, count) = entry.map_err(engine)?;
            match name.value().strip_prefix(META_TALLY) {
                Some(tally) if tally.starts_with(prefix) => {
                    tallies.push((tally.to_owned(), count.value()));
                }
                _ => break,
            }
        }
        Ok(tallies)
    }

    fn plugin_records(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let txn = self.db()?.begin_read().map_err(engine)?;
        let plugins = txn.open_table(PLUGINS).map_err(engine)?;
        plugins
            .iter()
            .map_err(engine)?
            .map(|entry| {
                let (name, record) = entry.map_err(engine)?;
                Ok((name.value().to_owned(), record.value().to_vec()))
            })
            .collect()
    }

    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db()?.begin_read().map_err(engine)?;
        let blobs = txn.open_table(BLOBS).map_err(engine)?;
        let blob = blobs.get(key).map_err(engine)?;
        Ok(blob.map(|bytes| bytes.value().to_vec()))
    }
}

/// Plugin data as of one read transaction. Its reads are point lookups and short scans, made
/// where they are asked (a plugin's state reads, from the threads that run plugins).
struct RedbDataSnapshot {
    table: redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
}

#[async_trait]
impl DataSnapshot for RedbDataSnapshot {
    async fn get(&self, space: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.table.get((space, key)).map_err(engine)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    async fn scan(
        &self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded((space, after)),
            _ => Bound::Included((space, prefix)),
        };
        let mut entries = Vec::new();
        for entry in self
            .table
            .range::<(&str, &str)>((start, Bound::Unbounded))
            .map_err(engine)?
        {
            if entries.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(engine)?;
            let (entry_space, entry_key) = key.value();
            if entry_space != space || !entry_key.starts_with(prefix) {
                break;
            }
            entries.push((entry_key.to_owned(), value.value().to_vec()));
        }
        Ok(entries)
    }
}

/// Adds one to the command tally `tally`.
fn count_command(meta: &mut Table<'_, &'static str, u64>, tally: &str) -> Result<(), StorageError> {
    let name = format!("{META_TALLY}{tally}");
    let count = meta
        .get(name.as_str())
        .map_err(engine)?
        .map_or(0, |g| g.value());
    meta.insert(name.as_str(), count + 1).map_err(engine)?;
    Ok(())
}

/// The positions, in order, of at most `limit` events from `from` on that match `filter`.
fn filtered_positions(
    txn: &redb::ReadTransaction,
    log: &impl ReadableTable<(u64, u64), &'static [u8]>,
    from: u64,
    limit: usize,
    filter: &LogFilter,
) -> Result<Vec<u64>, StorageError> {
    let rows = txn.open_table(ROWS).map_err(engine)?;
    let resolve = |kind: SectionKind, names: &[String]| -> Result<Vec<SectionRow>, StorageError> {
        let mut found = Vec::new();
        for name in names {
            if let Some(row) = rows.get(kind.row_key(name).as_str()).map_err(engine)? {
                found.push(SectionRow::decode(row.value())?);
            }
        }
        found.sort_unstable_by_key(|row| row.id);
        found.dedup_by_key(|row| row.id);
        Ok(found)
    };
    let categories = resolve(SectionKind::Category, &filter.categories)?;
    let types = resolve(SectionKind::Type, &filter.event_types)?;
    // A filter naming only unknown values matches nothing.
    if (!filter.categories.is_empty() && categories.is_empty())
        || (!filter.event_types.is_empty() && types.is_empty())
    {
        return Ok(Vec::new());
    }
    // Scan categories when given (their entries carry the type, so a type filter on top costs
    // no lookups), types otherwise.
    let type_ids: Vec<u64> = types.iter().map(|row| row.id).collect();
    let (kind, sections, check_type) = if categories.is_empty() {
        (SectionKind::Type, types, false)
    } else {
        (SectionKind::Category, categories, !type_ids.is_empty())
    };
    let mut positions = Vec::new();
    for row in &sections {
        let wanted = |&(position, value): &(u64, u64)| {
            position >= from && (!check_type || type_ids.binary_search(&value).is_ok())
        };
        positions.extend(section_positions(log, kind, row, from, limit, wanted)?);
    }
    // Each section is in position order and the sections are disjoint (an event has one
    // category and one type), so sorting their union gives the log's order.
    positions.sort_unstable();
    positions.truncate(limit);
    Ok(positions)
}

/// At most `limit` positions of a category's or type's entries that are `wanted`, in order,
/// from the chunk that holds `from` on and then from the row's tail.
fn section_positions(
    log: &impl ReadableTable<(u64, u64), &'static [u8]>,
    kind: SectionKind,
    row: &SectionRow,
    from: u64,
    limit: usize,
    wanted: impl Fn(&(u64, u64)) -> bool,
) -> Result<Vec<u64>, StorageError> {
    let mut positions = Vec::new();
    for chunk in chunks_from(log, kind.log_section(row.id), from, u64::MAX)? {
        let (_, entries) = chunk?;
        for entry in decode_entries(entries.value())?
            .iter()
            .filter(|e| wanted(e))
        {
            positions.push(entry.0);
            if positions.len() == limit {
                return Ok(positions);
            }
        }
    }
    for entry in row.tail.iter().filter(|e| wanted(e)) {
        positions.push(entry.0);
        if positions.len() == limit {
            break;
        }
    }
    Ok(positions)
}

/// A chunk of a log section: the key it starts at, and its encoded entries.
type Chunk<'t> = (u64, AccessGuard<'t, &'static [u8]>);

/// The chunks of a log section that hold keys from `start` to `end`: the one that starts at or
/// before `start` (chunks are keyed by their first key), then those that start after it, up to
/// `end`; each with the key it starts at.
fn chunks_from<'t>(
    log: &'t impl ReadableTable<(u64, u64), &'static [u8]>,
    section: u64,
    start: u64,
    end: u64,
) -> Result<impl Iterator<Item = Result<Chunk<'t>, StorageError>> + 't, StorageError> {
    let first = log
        .range((section, 0)..=(section, start))
        .map_err(engine)?
        .next_back()
        .transpose()
        .map_err(engine)?;
    let later = log
        .range((section, start.saturating_add(1))..=(section, end))
        .map_err(engine)?;
    Ok(first.into_iter().map(Ok).chain(later).map(|entry| {
        let (key, value) = entry.map_err(engine)?;
        Ok((key.value().1, value))
    }))
}

/// The positions of versions `low..=high` of a stream (all of which exist), in version order:
/// from the chunks in the log up to the row's chunked version, then from the row's tail.
fn stream_positions(
    log: &impl ReadableTable<(u64, u64), &'static [u8]>,
    row: &StreamRow,
    low: u64,
    high: u64,
) -> Result<Vec<u64>, StorageError> {
    let section = STREAM | row.id;
    let chunked = row.chunked_through();
    let mut positions = Vec::with_capacity((high - low + 1) as usize);
    if low <= chunked {
        let last = high.min(chunked);
        for chunk in chunks_from(log, section, low, last)? {
            let (first_version, value) = chunk?;
            for (version, position) in (first_version..).zip(decode_chunk(value.value())?) {
                if version > last {
                    break;
                }
                if version >= low {
                    positions.push(position);
                }
            }
        }
    }
    let tail_start = low.max(chunked + 1);
    for version in tail_start..=high {
        positions.push(row.tail[(version - chunked - 1) as usize]);
    }
    if positions.len() as u64 != high - low + 1 {
        return Err(StorageError::Failed(format!(
            "stream id {} should hold versions {low}..={high} but {} positions were found",
            row.id,
            positions.len()
        )));
    }
    Ok(positions)
}

/// The last position of the log in this snapshot, 0 when it is empty.
fn last_position(log: &impl ReadableTable<(u64, u64), &'static [u8]>) -> Result<u64, StorageError> {
    let last = log
        .range((EVENTS, 0)..=(EVENTS, u64::MAX))
        .map_err(engine)?
        .next_back()
        .transpose()
        .map_err(engine)?;
    Ok(last.map_or(0, |(key, _)| key.value().1))
}

/// What the writer knows between transactions.
struct WriterState {
    id_tag: u32,
    head: u64,
    next_stream_id: u64,
    next_category_id: u64,
    next_type_id: u64,
}

impl WriterState {
    fn counters(&self) -> [u64; 4] {
        [
            self.head,
            self.next_stream_id,
            self.next_category_id,
            self.next_type_id,
        ]
    }

    /// Returns to the counters before a failed transaction.
    fn restore_counters(&mut self, [head, stream, category, event_type]: [u64; 4]) {
        (
            self.head,
            self.next_stream_id,
            self.next_category_id,
            self.next_type_id,
        ) = (head, stream, category, event_type);
    }

    /// Creates the tables if the file is new, checks the format, and reads the counters.
    fn load(db: &Database) -> Result<Self, StorageError> {
        let txn = db.begin_write().map_err(engine)?;
        let state = {
            let mut meta = txn.open_table(META).map_err(engine)?;
            let format = meta.get(META_FORMAT).map_err(engine)?.map(|g| g.value());
            match format {
                None => {
                    meta.insert(META_FORMAT, FORMAT_VERSION).map_err(engine)?;
                }
                Some(FORMAT_VERSION) => {}
                Some(other) => {
                    return Err(StorageError::Failed(format!(
                        "the data file has format version {other}; this build reads version {FORMAT_VERSION}"
                    )));
                }
            }
            let stored_tag = meta.get(META_ID_TAG).map_err(engine)?.map(|g| g.value());
            let id_tag = match stored_tag {
                Some(tag) => tag as u32,
                None => {
                    let tag = u64::from(uuid::Uuid::new_v4().as_u128() as u32);
                    meta.insert(META_ID_TAG, tag).map_err(engine)?;
                    tag as u32
                }
            };
            let counter = |name: &str| -> Result<u64, StorageError> {
                Ok(meta.get(name).map_err(engine)?.map_or(1, |g| g.value()))
            };
            let (next_stream_id, next_category_id, next_type_id) = (
                counter(META_NEXT_STREAM_ID)?,
                counter(META_NEXT_CATEGORY_ID)?,
                counter(META_NEXT_TYPE_ID)?,
            );
            let head = last_position(&txn.open_table(LOG).map_err(engine)?)?;
            // Create the remaining tables so readers never meet a missing one.
            txn.open_table(ROWS).map_err(engine)?;
            txn.open_table(EVENT_IDS).map_err(engine)?;
            txn.open_table(COMMANDS).map_err(engine)?;
            txn.open_table(PLUGINS).map_err(engine)?;
            txn.open_table(BLOBS).map_err(engine)?;
            txn.open_table(DATA).map_err(engine)?;
            txn.open_table(LEASES).map_err(engine)?;
            WriterState {
                id_tag,
                head,
                next_stream_id,
                next_category_id,
                next_type_id,
            }
        };
        txn.commit().map_err(engine)?;
        Ok(state)
    }
}

/// The tables a write transaction touches, opened once per group.
struct WriteTables<'txn> {
    log: Table<'txn, (u64, u64), &'static [u8]>,
    rows: Table<'txn, &'static str, &'static [u8]>,
    event_ids: Table<'txn, &'static str, (u64, u64, u32)>,
    meta: Table<'txn, &'static str, u64>,
    commands: Table<'txn, &'static str, (u64, u64, &'static [u8])>,
    data: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    leases: Table<'txn, &'static str, u64>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StorageError> {
        Ok(WriteTables {
            log: txn.open_table(LOG).map_err(engine)?,
            rows: txn.open_table(ROWS).map_err(engine)?,
            event_ids: txn.open_table(EVENT_IDS).map_err(engine)?,
            meta: txn.open_table(META).map_err(engine)?,
            commands: txn.open_table(COMMANDS).map_err(engine)?,
            data: txn.open_table(DATA).map_err(engine)?,
            leases: txn.open_table(LEASES).map_err(engine)?,
        })
    }
}

/// The single writer: owns every write transaction.
struct Writer {
    db: Arc<Database>,
    /// The longest a group waits for the writers of the previous group to come back.
    group_wait: Duration,
    state: WriterState,
    head: watch::Sender<u64>,
    counters: Arc<Counters>,
}

impl Writer {
    fn run(&mut self, jobs: mpsc::Receiver<WriterMessage>) {
        let mut closing = false;
        // How many appends the last group carried: the writers that are likely to be back soon.
        let mut last_appends = 0;
        while !closing {
            let Ok(first) = jobs.recv() else { return };
            let gather_until = Instant::now() + self.group_wait;
            let mut group = Vec::new();
            let mut appends = 0;
            let mut chore = None;
            let (mut entries, mut bytes) = (0usize, 0usize);
            let mut message = Some(first);
            while let Some(next) = message.take() {
                match next {
                    WriterMessage::Close => closing = true,
                    #[cfg(test)]
                    WriterMessage::Fail => panic!("the writer failed on purpose"),
                    WriterMessage::Commit(job) => {
                        let (e, b) = job.commit.weight();
                        (entries, bytes) = (entries + e, bytes + b);
                        appends += usize::from(job.commit.append.is_some());
                        group.push(job);
                    }
                    // A chore runs after the group gathered before it, in order.
                    WriterMessage::Chore(job) => chore = Some(job),
                }
                if closing
                    || chore.is_some()
                    || entries >= MAX_GROUP_EVENTS
                    || bytes >= MAX_GROUP_BYTES
                {
                    break;
                }
                message = match jobs.try_recv() {
                    Ok(message) => Some(message),
                    // The writers answered by the last commit are still sending their next
                    // appends: waiting a moment for them makes this group as large as the last,
                    // which costs one short wait instead of a whole extra commit.
                    Err(mpsc::TryRecvError::Empty) if appends < last_appends => {
                        let left = gather_until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            None
                        } else {
                            jobs.recv_timeout(left).ok()
                        }
                    }
                    Err(_) => None,
                };
            }
            last_appends = appends;
            if !group.is_empty() {
                self.commit_group(group);
            }
            if let Some(job) = chore {
                let _ = job.reply.send(self.run_chore(job.chore));
            }
        }
        // Requests that raced with the close are refused rather than left waiting.
        while let Ok(message) = jobs.try_recv() {
            match message {
                WriterMessage::Commit(job) => {
                    let _ = job.reply.send(Err(StorageError::Closed.into()));
                }
                WriterMessage::Chore(job) => {
                    let _ = job.reply.send(Err(StorageError::Closed));
                }
                _ => {}
            }
        }
    }

    /// Runs a chore in a transaction of its own.
    fn run_chore(&mut self, chore: Chore) -> Result<u64, StorageError> {
        let txn = self.db.begin_write().map_err(engine)?;
        let answer = match chore {
            Chore::SavePlugin {
                name,
                record,
                blobs,
            } => {
                txn.open_table(PLUGINS)
                    .map_err(engine)?
                    .insert(name.as_str(), record.as_slice())
                    .map_err(engine)?;
                let mut stored = txn.open_table(BLOBS).map_err(engine)?;
                for (key, bytes) in &blobs {
                    stored
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(engine)?;
                }
                0
            }
            Chore::SaveBlob { key, bytes } => {
                txn.open_table(BLOBS)
                    .map_err(engine)?
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(engine)?;
                0
            }
            Chore::DeleteBlobs { prefix } => {
                let end = format!("{prefix}\u{10FFFF}");
                let mut blobs = txn.open_table(BLOBS).map_err(engine)?;
                let mut removed = 0;
                for entry in blobs
                    .extract_from_if::<&str, _>(prefix.as_str()..end.as_str(), |_, _| true)
                    .map_err(engine)?
                {
                    entry.map_err(engine)?;
                    removed += 1;
                }
                removed
            }
            Chore::DeleteData { space_prefix } => {
                // Spaces sort by name, so the spaces under a prefix are one range of the table;
                // no space name holds the last code point, so the range ends past every one.
                let end = format!("{space_prefix}\u{10FFFF}");
                let mut data = txn.open_table(DATA).map_err(engine)?;
                let range = (space_prefix.as_str(), "")..(end.as_str(), "");
                let mut removed = 0;
                for entry in data
                    .extract_from_if::<(&str, &str), _>(range, |_, _| true)
                    .map_err(engine)?
                {
                    entry.map_err(engine)?;
                    removed += 1;
                }
                removed
            }
            Chore::TakeLease { lease } => {
                let mut leases = txn.open_table(LEASES).map_err(engine)?;
                let token = leases
                    .get(lease.as_str())
                    .map_err(engine)?
                    .map_or(0, |t| t.value())
                    + 1;
                leases.insert(lease.as_str(), token).map_err(engine)?;
                token
            }
        };
        txn.commit().map_err(engine)?;
        Ok(answer)
    }

    fn commit_group(&mut self, group: Vec<CommitJob>) {
        let started = Instant::now();
        let counters_before = self.state.counters();
        match self.write_group(&group) {
            Ok(results) => {
                let elapsed = started.elapsed().as_nanos() as u64;
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .commit_nanos
                    .fetch_add(elapsed, Ordering::Relaxed);
                let written = results
                    .iter()
                    .filter(|r| {
                        matches!(
                            r,
                            Ok(Committed {
                                append: Some(AppendOutcome::Written(_)),
                                ..
                            })
                        )
                    })
                    .count();
                self.counters
                    .committed_appends
                    .fetch_add(written as u64, Ordering::Relaxed);
                self.head.send_replace(self.state.head);
                for (job, result) in group.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(error) => {
                tracing::error!(
                    "commit group of {} commits failed, nothing written: {error}",
                    group.len()
                );
                // The ids the failed transaction assigned were never stored: hand them out again.
                self.state.restore_counters(counters_before);
                for job in group {
                    let _ = job
                        .reply
                        .send(Err(StorageError::Failed(error.to_string()).into()));
                }
            }
        }
    }

    /// Applies every commit of the group in one transaction and commits it durably. The outer
    /// error dooms the group; an inner one refuses its commit alone, which then wrote nothing.
    fn write_group(
        &mut self,
        group: &[CommitJob],
    ) -> Result<Vec<Result<Committed, CommitError>>, StorageError> {
        let txn = self.db.begin_write().map_err(engine)?;
        let recorded_at = now_rfc3339();
        let mut results = Vec::with_capacity(group.len());
        {
            let mut tables = WriteTables::open(&txn)?;
            let ids_before = self.state.counters()[1..].to_vec();
            let mut writes = GroupWrites::new(self.state.head + 1);
            for job in group {
                results.push(self.apply(&mut tables, &mut writes, &job.commit, &recorded_at)?);
            }
            writes.write(&mut tables)?;
            if self.state.counters()[1..] != ids_before[..] {
                tables
                    .meta
                    .insert(META_NEXT_STREAM_ID, self.state.next_stream_id)
                    .map_err(engine)?;
                tables
                    .meta
                    .insert(META_NEXT_CATEGORY_ID, self.state.next_category_id)
                    .map_err(engine)?;
                tables
                    .meta
                    .insert(META_NEXT_TYPE_ID, self.state.next_type_id)
                    .map_err(engine)?;
            }
        }
        txn.commit().map_err(engine)?;
        Ok(results)
    }

    /// Checks one commit against the state the group has written so far and writes it if it
    /// passes: its fence, then its append (by the contract's rules), then its data.
    fn apply(
        &mut self,
        tables: &mut WriteTables<'_>,
        writes: &mut GroupWrites,
        commit: &Commit,
        recorded_at: &str,
    ) -> Result<Result<Committed, CommitError>, StorageError> {
        if let Some(fence) = &commit.fence {
            let current = tables
                .leases
                .get(fence.lease.as_str())
                .map_err(engine)?
                .map_or(0, |t| t.value());
            if let Err(fenced) = fence.check(current) {
                return Ok(Err(fenced));
            }
        }
        let mut committed = Committed::default();
        if let Some(request) = &commit.append {
            let decision = rules::decide(
                &mut GroupContext {
                    tables,
                    writes,
                    head: self.state.head,
                    id_tag: self.state.id_tag,
                },
                request,
            )?;
            match decision {
                Decision::Refuse(error) => return Ok(Err(error)),
                Decision::AlreadyWritten(result) => {
                    committed.append = Some(AppendOutcome::AlreadyWritten(result));
                }
                Decision::Write(plan) => {
                    self.write_append(tables, writes, request, &plan, recorded_at)?;
                    if commit.want_records {
                        committed.records = writes.records_of(&plan.result);
                    }
                    committed.append = Some(AppendOutcome::Written(plan.result));
                }
            }
        }
        for write in &commit.data {
            let key = (&*write.space, write.key.as_str());
            match &write.value {
                Some(value) => tables.data.insert(key, value.as_slice()).map(drop),
                None => tables.data.remove(key).map(drop),
            }
            .map_err(engine)?;
        }
        Ok(Ok(committed))
    }

    /// Makes sure the group holds the row of a category or type, loading it or assigning a new
    /// id; returns the id.
    fn load_section(
        &mut self,
        tables: &WriteTables<'_>,
        writes: &mut GroupWrites,
        kind: SectionKind,
        key: &str,
    ) -> Result<u64, StorageError> {
        if let Some((_, row)) = writes.sections.get(key) {
            return Ok(row.id);
        }
        let stored = tables.rows.get(key).map_err(engine)?;
        let row = match stored {
            Some(row) => SectionRow::decode(row.value())?,
            None => {
                let next_id = match kind {
                    SectionKind::Category => &mut self.state.next_category_id,
                    SectionKind::Type => &mut self.state.next_type_id,
                };
                if *next_id > MAX_INTERNED_ID {
                    return Err(StorageError::Failed(format!(
                        "no ids left for {key:?}: {MAX_INTERNED_ID} names of its kind exist"
                    )));
                }
                *next_id += 1;
                SectionRow {
                    id: *next_id - 1,
                    tail: Vec::new(),
                }
            }
        };
        let id = row.id;
        writes.sections.insert(key.to_owned(), (kind, row));
        Ok(id)
    }

    /// Writes an admitted append as its plan says: the records, the stream's row, the category
    /// and type entries, the ids to index, the command record and its tally.
    fn write_append(
        &mut self,
        tables: &mut WriteTables<'_>,
        writes: &mut GroupWrites,
        request: &AppendRequest,
        plan: &AppendPlan,
        recorded_at: &str,
    ) -> Result<(), StorageError> {
        if plan.event_count() > 0 {
            let existing = match tables.rows.get(request.stream.as_str()).map_err(engine)? {
                Some(row) => Some(StreamRow::decode(row.value())?),
                None => None,
            };
            let mut row = match existing {
                Some(row) => row,
                None if self.state.next_stream_id > MAX_INTERNED_ID => {
                    return Err(StorageError::Failed("no stream ids left".into()));
                }
                None => {
                    self.state.next_stream_id += 1;
                    StreamRow::new(self.state.next_stream_id - 1)
                }
            };
            let category_key = SectionKind::Category.row_key(category_of(&request.stream));
            self.load_section(tables, writes, SectionKind::Category, &category_key)?;
            let ends = rules::render(request, plan, recorded_at, &mut writes.records);
            writes.record_ends.extend(ends);
            for (offset, event) in request.events.iter().enumerate() {
                let position = plan.result.first_position + offset as u64;
                if plan.indexed[offset] {
                    writes
                        .ids
                        .insert(plan.ids[offset].clone(), plan.id_entry(offset));
                }
                let type_key = SectionKind::Type.row_key(&event.event_type);
                let type_id = self.load_section(tables, writes, SectionKind::Type, &type_key)?;
                row.tail.push(position);
                writes.section_entry(&category_key, (position, type_id));
                writes.section_entry(&type_key, (position, 0));
            }
            row.version = plan.stream_version;
            if row.tail.len() >= STREAM_TAIL_MAX {
                let first_version = row.chunked_through() + 1;
                writes
                    .chunks
                    .push(((STREAM | row.id, first_version), encode_chunk(&row.tail)));
                row.tail.clear();
            }
            tables
                .rows
                .insert(request.stream.as_str(), row.encode().as_slice())
                .map_err(engine)?;
            self.state.head = plan.result.last_position;
        }
        if let Some(command) = &request.command {
            let entry = plan.command_entry(&command.record);
            tables
                .commands
                .insert(
                    command.id.as_str(),
                    (entry.position, entry.event_count, command.record.as_slice()),
                )
                .map_err(engine)?;
            count_command(&mut tables.meta, &command.tally)?;
        }
        Ok(())
    }
}

/// The append rules' view of a group's transaction: the committed tables under the group's
/// writes so far.
struct GroupContext<'a, 'txn> {
    tables: &'a WriteTables<'txn>,
    writes: &'a GroupWrites,
    head: u64,
    id_tag: u32,
}

impl AppendContext for GroupContext<'_, '_> {
    fn head(&self) -> u64 {
        self.head
    }

    fn id_tag(&self) -> u32 {
        self.id_tag
    }

    fn stream_version(&mut self, stream: &str) -> Result<u64, StorageError> {
        match self.tables.rows.get(stream).map_err(engine)? {
            Some(row) => Ok(StreamRow::decode(row.value())?.version),
            None => Ok(0),
        }
    }

    fn indexed_id(&mut self, id: &str) -> Result<Option<IdEntry>, StorageError> {
        if let Some(entry) = self.writes.ids.get(id) {
            return Ok(Some(*entry));
        }
        let stored = self.tables.event_ids.get(id).map_err(engine)?;
        Ok(stored.map(|entry| {
            let (position, first_position, count) = entry.value();
            IdEntry {
                position,
                first_position,
                count,
            }
        }))
    }

    fn record(&mut self, position: u64) -> Result<Vec<u8>, StorageError> {
        if let Some(record) = self.writes.record(position) {
            return Ok(record.to_vec());
        }
        let record = self
            .tables
            .log
            .get((EVENTS, position))
            .map_err(engine)?
            .ok_or_else(|| StorageError::Corrupt {
                position,
                reason: "an id points at a missing event".into(),
            })?;
        Ok(record.value().to_vec())
    }

    fn command(&mut self, id: &str) -> Result<Option<StoredCommand>, StorageError> {
        let stored = self.tables.commands.get(id).map_err(engine)?;
        Ok(stored.map(|entry| {
            let (position, event_count, record) = entry.value();
            StoredCommand {
                record: record.to_vec(),
                position,
                event_count,
            }
        }))
    }
}

/// What a commit group writes to the log and the id index, held until the group's requests
/// have all been checked and then inserted in key order. Sorted runs go into the trees through
/// cursors, which fill leaves completely; one insert at a time would rebuild a leaf per entry
/// and leave half-empty leaves behind an appending key.
struct GroupWrites {
    /// The position of the first record; the group's positions are contiguous.
    first_position: u64,
    /// The records, one after another; `record_ends[i]` is where record `i` ends.
    records: Vec<u8>,
    record_ends: Vec<usize>,
    /// The rows of the categories and types the group touched, by row key, with their new
    /// entries; written back once, when the group is done.
    sections: HashMap<String, (SectionKind, SectionRow)>,
    /// Stream, category and type chunks for the `log` table.
    chunks: Vec<((u64, u64), Vec<u8>)>,
    /// New `event_ids` entries (ids clients chose, and the rare generated id that cannot
    /// encode its position); later requests of the group look here before the table.
    ids: HashMap<String, IdEntry>,
}

impl GroupWrites {
    fn new(first_position: u64) -> Self {
        GroupWrites {
            first_position,
            records: Vec::new(),
            record_ends: Vec::new(),
            sections: HashMap::new(),
            chunks: Vec::new(),
            ids: HashMap::new(),
        }
    }

    fn record_range(&self, index: usize) -> std::ops::Range<usize> {
        let start = if index == 0 {
            0
        } else {
            self.record_ends[index - 1]
        };
        start..self.record_ends[index]
    }

    /// Copies of the records an append of this group wrote, in position order.
    fn records_of(&self, result: &AppendResult) -> Vec<RecordedEvent> {
        (result.first_position..=result.last_position)
            .filter_map(|position| {
                self.record(position).map(|json| RecordedEvent {
                    position,
                    json: json.to_vec(),
                })
            })
            .collect()
    }

    /// The record at `position` if this group wrote it.
    fn record(&self, position: u64) -> Option<&[u8]> {
        let index = usize::try_from(position.checked_sub(self.first_position)?).ok()?;
        (index < self.record_ends.len()).then(|| &self.records[self.record_range(index)])
    }

    fn section_entry(&mut self, key: &str, entry: (u64, u64)) {
        let (_, row) = self
            .sections
            .get_mut(key)
            .expect("the group loaded this row");
        row.tail.push(entry);
    }

    fn write(mut self, tables: &mut WriteTables<'_>) -> Result<(), StorageError> {
        let first = self.first_position;
        insert_runs(
            &mut tables.log,
            (0..self.record_ends.len()).map(|i| {
                (
                    (EVENTS, first + i as u64),
                    &self.records[self.record_range(i)],
                )
            }),
        )?;
        for (key, (kind, row)) in &mut self.sections {
            if row.tail.len() >= SECTION_TAIL_MAX {
                let first_position = row.tail[0].0;
                let section = kind.log_section(row.id);
                self.chunks
                    .push(((section, first_position), encode_entries(&row.tail)));
                row.tail.clear();
            }
            tables
                .rows
                .insert(key.as_str(), row.encode().as_slice())
                .map_err(engine)?;
        }
        self.chunks.sort_unstable_by_key(|(key, _)| *key);
        insert_runs(
            &mut tables.log,
            self.chunks
                .iter()
                .map(|(key, positions)| (*key, positions.as_slice())),
        )?;
        let mut ids: Vec<_> = self.ids.iter().collect();
        ids.sort_unstable_by(|a, b| a.0.cmp(b.0));
        insert_runs(
            &mut tables.event_ids,
            ids.into_iter()
                .map(|(id, e)| (id.as_str(), (e.position, e.first_position, e.count))),
        )
    }
}

/// Inserts new entries, sorted by key, through cursors: each run of keys that falls into one
/// gap of the tree is appended there in one go.
fn insert_runs<'e, K: Key + 'static, V: Value + 'static>(
    table: &mut Table<'_, K, V>,
    entries: impl IntoIterator<Item = (K::SelfType<'e>, V::SelfType<'e>)>,
) -> Result<(), StorageError> {
    let mut entries = entries.into_iter().peekable();
    while let Some((first_key, _)) = entries.peek() {
        let mut cursor = table
            .lower_bound_mut(Bound::Included(first_key))
            .map_err(engine)?;
        let mut inserted = 0usize;
        while let Some((key, value)) = entries.peek() {
            match cursor.insert_before(key, value) {
                Ok(()) => {
                    entries.next();
                    inserted += 1;
                }
                // The key belongs in another gap: reopen the cursor there.
                Err(CursorError::UnorderedKey) if inserted > 0 => break,
                Err(CursorError::UnorderedKey) => {
                    return Err(StorageError::Failed(
                        "an entry to insert is already stored".into(),
                    ));
                }
                Err(CursorError::Storage(error)) => return Err(engine(error)),
                Err(other) => return Err(engine(other)),
            }
        }
        cursor.close().map_err(engine)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_store::conformance::{Backend, StoreConfig};
    use evhost_store::{CommandEntry, DataWrite, ExpectedVersion, ProposedEvent, Store};

    /// The embedded backend, opened in the suite's directory with the suite's bounds.
    struct Redb;

    #[async_trait]
    impl Backend for Redb {
        async fn open(
            &self,
            dir: &Path,
            config: StoreConfig,
        ) -> Result<Arc<dyn Store>, StorageError> {
            let options = StoreOptions {
                append_limits: config.append_limits,
                page_bytes: config.page_bytes,
                ..StoreOptions::default()
            };
            let dir = dir.to_path_buf();
            let store = tokio::task::spawn_blocking(move || RedbStore::open(&dir, &options))
                .await
                .expect("opening")?;
            Ok(Arc::new(store))
        }

        fn persistent(&self) -> bool {
            true
        }
    }

    evhost_store::conformance_tests!(Redb);

    /// Only the writer thread writes: every write transaction is begun in the writer's code
    /// (or when the file is opened, before the writer starts).
    #[test]
    fn only_the_writer_begins_write_transactions() {
        let source = include_str!("lib.rs");
        let writer = source.find("\nimpl Writer {").expect("the writer");
        let writer_end = source
            .find("\nstruct GroupContext")
            .expect("the writer's end");
        let load = source.find("    fn load(db: &Database)").expect("the load");
        let needle = ["begin", "_write()"].concat();
        for (at, _) in source.match_indices(&needle) {
            let in_writer = (writer..writer_end).contains(&at);
            let in_load = (load..load + 400).contains(&at);
            let in_tests = at > source.find("#[cfg(test)]\nmod tests").expect("the tests");
            assert!(
                in_writer || in_load || in_tests,
                "a write transaction is begun outside the writer, at byte {at}"
            );
        }
    }

    #[test]
    fn a_new_store_syncs_its_directory_and_the_parents_of_the_directories_made_for_it() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("a/b");
        let created = create_dirs(&data).unwrap();
        assert_eq!(created, [root.path().join("a"), data.clone()]);
        assert_eq!(
            dirs_to_sync(&data, true, &created),
            [
                root.path().to_path_buf(),
                root.path().join("a"),
                data.clone()
            ]
        );
        // Opening the same store again makes no new entry: nothing needs syncing.
        let again = create_dirs(&data).unwrap();
        assert!(again.is_empty());
        assert!(dirs_to_sync(&data, false, &again).is_empty());
        // A new file in a directory that was there: that directory only.
        assert_eq!(
            dirs_to_sync(&data, true, &again),
            std::slice::from_ref(&data)
        );
        assert_eq!(
            dirs_to_sync(Path::new("rel"), true, &[PathBuf::from("rel")]),
            [PathBuf::from("."), PathBuf::from("rel")]
        );
        let store = RedbStore::open(&data, &StoreOptions::default()).unwrap();
        drop(store);
        assert!(data.join(DATABASE_FILE).exists());
    }

    fn event(n: usize) -> ProposedEvent {
        typed_event(n, "T")
    }

    fn typed_event(n: usize, event_type: &str) -> ProposedEvent {
        ProposedEvent {
            id: None,
            event_type: event_type.into(),
            data: n.to_string(),
            metadata: "{}".into(),
        }
    }

    /// Stream reads across chunk boundaries: every window, both directions, agrees with the
    /// positions the appends reported, before and after a reopen.
    #[tokio::test]
    async fn stream_windows_cross_chunks_and_tails() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = vec![0u64]; // expected[v] = position of version v
        {
            let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
            // Batch sizes around the tail limit, interleaved with another stream.
            for (round, size) in [1, 30, 1, 1, 5, 33, 64, 2, 100, 31, 1]
                .into_iter()
                .enumerate()
            {
                let append = |stream: &str, size: usize| AppendRequest {
                    stream: stream.into(),
                    expected_version: ExpectedVersion::Any,
                    events: (0..size).map(event).collect(),
                    command: None,
                };
                store
                    .append(append("other-1", round % 3 + 1))
                    .await
                    .unwrap();
                let outcome = store.append(append("s-1", size)).await.unwrap();
                let AppendOutcome::Written(result) = outcome else {
                    panic!("{outcome:?}")
                };
                expected.extend(result.first_position..=result.last_position);
            }
            check_windows(&store, &expected).await;
            store.close().await;
        }
        let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
        check_windows(&store, &expected).await;
    }

    async fn check_windows(store: &RedbStore, expected: &[u64]) {
        let version = expected.len() as u64 - 1;
        for from in 0..=version + 2 {
            for limit in [1, 2, 31, 32, 33, 1000] {
                for direction in [Direction::Forward, Direction::Backward] {
                    let page = store
                        .read_stream("s-1", Some(from), limit, direction)
                        .await
                        .unwrap()
                        .unwrap();
                    let got: Vec<u64> = page.events.iter().map(|e| e.position).collect();
                    let versions: Vec<u64> = match direction {
                        Direction::Forward => (from.max(1)..=version).take(limit).collect(),
                        Direction::Backward => (1..=from.min(version)).rev().take(limit).collect(),
                    };
                    let want: Vec<u64> = versions.iter().map(|&v| expected[v as usize]).collect();
                    assert_eq!(got, want, "from {from} limit {limit} {direction:?}");
                    assert_eq!(page.version, version);
                }
            }
        }
    }

    /// Filtered reads of the global log across category and type chunks and row tails agree
    /// with a scan of everything, for every filter, start and page size, before and after a
    /// reopen.
    #[tokio::test]
    async fn filtered_reads_cross_chunks_and_tails() {
        let dir = tempfile::tempdir().unwrap();
        let types = ["A", "B", "C"];
        let mut log: Vec<(String, String)> = vec![(String::new(), String::new())]; // by position
        {
            let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
            for round in 0..40usize {
                let stream = format!("{}-{}", ["red", "green", "blue"][round % 3], round % 5);
                let size = [1, 7, 30, 2, 64][round % 5];
                let request = AppendRequest {
                    stream: stream.clone(),
                    expected_version: ExpectedVersion::Any,
                    events: (0..size)
                        .map(|n| typed_event(n, types[(round + n) % 3]))
                        .collect(),
                    command: None,
                };
                store.append(request.clone()).await.unwrap();
                for event in &request.events {
                    log.push((category_of(&stream).to_owned(), event.event_type.clone()));
                }
            }
            check_filters(&store, &log).await;
            store.close().await;
        }
        let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
        check_filters(&store, &log).await;
    }

    async fn check_filters(store: &RedbStore, log: &[(String, String)]) {
        let head = log.len() as u64 - 1;
        let filters = [
            (vec!["red"], vec![]),
            (vec![], vec!["B"]),
            (vec!["green", "blue"], vec!["A", "C"]),
            (vec!["red", "nope"], vec!["C"]),
            (vec!["nope"], vec![]),
        ];
        for (categories, event_types) in filters {
            let filter = LogFilter {
                categories: categories.iter().map(|c| c.to_string()).collect(),
                event_types: event_types.iter().map(|t| t.to_string()).collect(),
            };
            for from in (0..=head + 1).step_by(37).chain([1, 255, 256, 257, head]) {
                for limit in [1, 50, 300, 10_000] {
                    let page = store.read_log(from, limit, &filter).await.unwrap();
                    let got: Vec<u64> = page.events.iter().map(|e| e.position).collect();
                    let want: Vec<u64> = (from.max(1)..=head)
                        .filter(|&p| {
                            let (category, event_type) = &log[p as usize];
                            (categories.is_empty() || categories.contains(&category.as_str()))
                                && (event_types.is_empty()
                                    || event_types.contains(&event_type.as_str()))
                        })
                        .take(limit)
                        .collect();
                    assert_eq!(got, want, "{filter:?} from {from} limit {limit}");
                }
            }
        }
    }

    /// A file written by a later format is refused with a message that says so, and left as
    /// it was.
    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(RedbStore::open(dir.path(), &StoreOptions::default()).unwrap());
        {
            let db = Database::create(dir.path().join(DATABASE_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_FORMAT, FORMAT_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let error = RedbStore::open(dir.path(), &StoreOptions::default())
            .err()
            .unwrap();
        assert!(error.to_string().contains("format version 2"), "{error}");
    }

    /// A writer that fails (a bug, a panic in the engine) leaves a store that says so and
    /// refuses appends, instead of one that accepts them and never answers.
    #[tokio::test]
    async fn a_failed_writer_is_reported_and_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
        assert!(store.accepts_writes());
        store.jobs.send(WriterMessage::Fail).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.accepts_writes() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!store.accepts_writes());
        let request = AppendRequest {
            stream: "s-1".into(),
            expected_version: ExpectedVersion::Any,
            events: vec![event(0)],
            command: None,
        };
        let refused = store.append(request).await;
        assert!(
            matches!(refused, Err(CommitError::Storage(StorageError::Closed))),
            "{refused:?}"
        );
    }

    /// A command's append carries its record in the same transaction, answers with the records
    /// it wrote, and a second append with the same command id writes nothing.
    #[tokio::test]
    async fn command_appends_return_their_records_and_are_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let command = |events: Vec<ProposedEvent>| AppendRequest {
            stream: "visit-1".into(),
            expected_version: ExpectedVersion::Any,
            events,
            command: Some(CommandEntry {
                id: "c-1".into(),
                record: br#"{"outcome":"applied"}"#.to_vec(),
                tally: "h/v1".into(),
            }),
        };
        let (outcome, records) = store
            .append_returning_records(command(vec![event(0), event(1)]))
            .await
            .unwrap();
        let AppendOutcome::Written(result) = outcome else {
            panic!("{outcome:?}")
        };
        let stored = store
            .read_log(1, 10, &LogFilter::default())
            .await
            .unwrap()
            .events;
        assert_eq!(records.len(), 2);
        for (returned, stored) in records.iter().zip(&stored) {
            assert_eq!(returned.position, stored.position);
            assert_eq!(returned.json, stored.json);
        }
        let recorded = store.read_command("c-1").await.unwrap().unwrap();
        assert_eq!(recorded.position, result.last_position);
        assert_eq!(recorded.event_count, 2);
        assert_eq!(recorded.record, br#"{"outcome":"applied"}"#);

        let again = store
            .append_returning_records(command(vec![event(2)]))
            .await;
        assert!(
            matches!(&again, Err(CommitError::CommandRecorded(c)) if *c == recorded),
            "{again:?}"
        );
        assert_eq!(store.head(), 2, "the repeated command wrote nothing");
        assert_eq!(
            store.command_tallies("h/").await.unwrap(),
            [("h/v1".to_owned(), 1)],
            "the repeat is not counted"
        );
        let scanned = store.scan_commands("c-", None, 10).await.unwrap();
        assert_eq!(scanned, [("c-1".to_owned(), recorded)]);
        assert!(
            store
                .scan_commands("c-", Some("c-1"), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.scan_commands("d", None, 10).await.unwrap().is_empty());
    }

    /// Deleting the spaces under a prefix removes their entries only, durably.
    #[tokio::test]
    async fn deleting_data_removes_the_spaces_under_a_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let write = |space: &str, key: &str| DataWrite {
            space: space.into(),
            key: key.into(),
            value: Some(b"1".to_vec()),
        };
        store
            .write_data(
                vec![
                    write("replay/1", "a"),
                    write("replay/1/base", "b"),
                    write("replay/10", "c"),
                    write("replay/", "d"),
                    write("projection/p/v", "e"),
                    write("replay/2", "f"),
                ],
                None,
            )
            .await
            .unwrap();
        assert_eq!(store.delete_data("replay/1").await.unwrap(), 3);
        store.close().await;
        drop(store);
        let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let snapshot = store.snapshot().await.unwrap();
        for (space, key, kept) in [
            ("replay/1", "a", false),
            ("replay/1/base", "b", false),
            ("replay/10", "c", false),
            ("replay/", "d", true),
            ("projection/p/v", "e", true),
            ("replay/2", "f", true),
        ] {
            assert_eq!(
                snapshot.get(space, key).await.unwrap().is_some(),
                kept,
                "{space} {key}"
            );
        }
    }
}

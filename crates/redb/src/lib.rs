//! The embedded backend: every event and index in one redb file, written by one writer thread
//! that commits concurrent appends together (group commit).
//!
//! Appends travel over a channel to the writer. It takes every request waiting, applies them one
//! after another in a single write transaction (each one's checks see the writes of those before
//! it), commits once with an fsync, and only then answers each. A request whose checks fail writes
//! nothing and fails alone; the others of its group commit. A storage error fails the whole group,
//! since nothing of that transaction reaches the disk. Readers use redb's snapshots and never wait
//! for the writer.
//!
//! The tables, keys and encodings are described in `docs/storage.md`.

mod rows;

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{
    AccessGuard, CursorError, Database, Key, ReadableDatabase, ReadableTable, Table,
    TableDefinition, Value, WriteTransaction,
};
use tokio::sync::{oneshot, watch};

use evhost_store::clock::now_rfc3339;
use evhost_store::event_id::GeneratedId;
use evhost_store::names::{category_of, validate_event_id, validate_event_type, validate_stream_name};
use evhost_store::record::{EventView, json_string, render_record};
use crate::rows::{
    SECTION_TAIL_MAX, STREAM_TAIL_MAX, SectionRow, StreamRow, decode_chunk, decode_entries,
    encode_chunk, encode_entries,
};
use evhost_store::{
    AppendError, AppendFuture, AppendLimits, AppendOutcome, AppendRecordsFuture, AppendRequest,
    AppendResult, DataFuture, DataSnapshot, DataWrite, Direction, EventStore, LogFilter, LogPage,
    RecordedEvent, StorageError, StoreStats, StoredCommand, StreamPage,
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

/// A group stops taking requests past either bound, so one commit stays short.
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

/// The default of [`StoreOptions::page_bytes`].
pub const PAGE_BYTES: usize = 8 << 20;

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
    StorageError::Engine(error.to_string())
}

struct Job {
    request: AppendRequest,
    /// Whether the reply carries the records the append wrote.
    want_records: bool,
    reply: oneshot::Sender<Reply>,
}

/// What the writer answers an append: its outcome, with the records it wrote if they were asked
/// for (and empty otherwise).
type Reply = Result<(AppendOutcome, Vec<RecordedEvent>), AppendError>;

/// A batch of plugin data writes waiting for the writer.
struct DataJob {
    writes: Vec<DataWrite>,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

enum WriterMessage {
    Append(Job),
    Data(DataJob),
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

/// The redb-backed [`EventStore`].
pub struct RedbStore {
    db: Arc<Database>,
    jobs: mpsc::Sender<WriterMessage>,
    writer: Mutex<Option<JoinHandle<()>>>,
    head: watch::Receiver<u64>,
    counters: Arc<Counters>,
    append_limits: AppendLimits,
    page_bytes: usize,
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &Path, options: &StoreOptions) -> Result<Self, StorageError> {
        let created = create_dirs(data_dir).map_err(|e| {
            StorageError::Engine(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let new_file = !path.exists();
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(&path)
            .map_err(|e| StorageError::Engine(format!("cannot open {}: {e}", path.display())))?;
        for dir in dirs_to_sync(data_dir, new_file, &created) {
            sync_dir(&dir).map_err(|e| {
                StorageError::Engine(format!("cannot sync directory {}: {e}", dir.display()))
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
            db,
            jobs: jobs_tx,
            writer: Mutex::new(Some(handle)),
            head: head_rx,
            counters,
            append_limits: options.append_limits,
            page_bytes: options.page_bytes.max(1),
        })
    }

    /// Hands an append to the writer; the future resolves once its group is durable. An append
    /// past the limits is refused here, on the caller's thread, before the writer sees it.
    fn send_append(&self, request: AppendRequest, want_records: bool) -> AppendRecordsFuture {
        if let Err(error) = self.append_limits.check(&request.events) {
            return Box::pin(async move { Err(error) });
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.jobs.send(WriterMessage::Append(Job {
            request,
            want_records,
            reply,
        }));
        Box::pin(async move {
            if sent.is_err() {
                return Err(StorageError::Closed.into());
            }
            // A dropped reply means the writer stopped before answering: nothing was acknowledged.
            answer.await.unwrap_or(Err(StorageError::Closed.into()))
        })
    }

    /// The records at `positions`, in the order given, up to the first that brings the records
    /// read to `max_bytes`. Runs of consecutive ascending positions, which a filter that matches
    /// most of the log yields, are read with one range scan each rather than one lookup per event.
    fn read_events(
        log: &impl ReadableTable<(u64, u64), &'static [u8]>,
        positions: impl IntoIterator<Item = u64>,
        max_bytes: usize,
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
                if bytes >= max_bytes {
                    return Ok(events);
                }
            }
            if events.len() - before != (last - first + 1) as usize {
                return Err(missing(first));
            }
        }
        Ok(events)
    }
}

impl EventStore for RedbStore {
    fn append(&self, request: AppendRequest) -> AppendFuture {
        let answer = self.send_append(request, false);
        Box::pin(async move { answer.await.map(|(outcome, _)| outcome) })
    }

    fn append_returning_records(&self, request: AppendRequest) -> AppendRecordsFuture {
        self.send_append(request, true)
    }

    fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        limit: usize,
        direction: Direction,
    ) -> Result<Option<StreamPage>, StorageError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let rows = txn.open_table(ROWS).map_err(engine)?;
        let Some(row) = rows.get(stream).map_err(engine)? else {
            return Ok(None);
        };
        let row = StreamRow::decode(row.value())?;
        let version = row.version;
        let limit = limit.max(1) as u64;
        // The window of versions this page covers, lowest first.
        let window = match direction {
            Direction::Forward => {
                let start = from.unwrap_or(1).max(1);
                (start, version.min(start.saturating_add(limit - 1)))
            }
            Direction::Backward => {
                let start = from.unwrap_or(version).min(version);
                (start.saturating_sub(limit - 1).max(1), start)
            }
        };
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
        let events = Self::read_events(&log, positions, self.page_bytes)?;
        // Versions are contiguous in the window, so the page's length says where it stopped.
        let read = events.len() as u64;
        let next = match direction {
            Direction::Forward if read > 0 && read < wanted => Some(window.0 + read),
            Direction::Forward if read > 0 && window.1 < version => Some(window.1 + 1),
            Direction::Backward if read > 0 && read < wanted => Some(window.1 - read),
            Direction::Backward if read > 0 && window.0 > 1 => Some(window.0 - 1),
            _ => None,
        };
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
        let txn = self.db.begin_read().map_err(engine)?;
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
        let events = Self::read_events(&log, positions, self.page_bytes)?;
        // A page ends at `limit` events or where the byte bound cut it; more may follow either way.
        let next = match events.last() {
            Some(last)
                if last.position < head && (events.len() == limit || events.len() < wanted) =>
            {
                Some(last.position + 1)
            }
            _ => None,
        };
        Ok(LogPage { events, next, head })
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn read_command(&self, id: &str) -> Result<Option<StoredCommand>, StorageError> {
        let txn = self.db.begin_read().map_err(engine)?;
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
        let txn = self.db.begin_read().map_err(engine)?;
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
        let txn = self.db.begin_read().map_err(engine)?;
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
        let txn = self.db.begin_read().map_err(engine)?;
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

    fn save_plugin(
        &self,
        name: &str,
        record: &[u8],
        blobs: &[(&str, &[u8])],
    ) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(engine)?;
        {
            let mut plugins = txn.open_table(PLUGINS).map_err(engine)?;
            plugins.insert(name, record).map_err(engine)?;
            let mut stored = txn.open_table(BLOBS).map_err(engine)?;
            for (key, bytes) in blobs {
                stored.insert(*key, *bytes).map_err(engine)?;
            }
        }
        txn.commit().map_err(engine)
    }

    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let blobs = txn.open_table(BLOBS).map_err(engine)?;
        let blob = blobs.get(key).map_err(engine)?;
        Ok(blob.map(|bytes| bytes.value().to_vec()))
    }

    fn save_blob(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(engine)?;
        txn.open_table(BLOBS)
            .map_err(engine)?
            .insert(key, bytes)
            .map_err(engine)?;
        txn.commit().map_err(engine)
    }

    fn write_data(&self, writes: Vec<DataWrite>) -> DataFuture {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .jobs
            .send(WriterMessage::Data(DataJob { writes, reply }));
        Box::pin(async move {
            if sent.is_err() {
                return Err(StorageError::Closed);
            }
            answer.await.unwrap_or(Err(StorageError::Closed))
        })
    }

    fn delete_blobs(&self, prefix: &str) -> Result<u64, StorageError> {
        let end = format!("{prefix}\u{10FFFF}");
        let txn = self.db.begin_write().map_err(engine)?;
        let mut removed = 0;
        {
            let mut blobs = txn.open_table(BLOBS).map_err(engine)?;
            for entry in blobs
                .extract_from_if::<&str, _>(prefix..end.as_str(), |_, _| true)
                .map_err(engine)?
            {
                entry.map_err(engine)?;
                removed += 1;
            }
        }
        txn.commit().map_err(engine)?;
        Ok(removed)
    }

    fn delete_data(&self, space_prefix: &str) -> Result<u64, StorageError> {
        // Spaces sort by name, so the spaces under a prefix are one range of the table; no
        // space name holds the last code point, so the range ends past every one of them.
        let end = format!("{space_prefix}\u{10FFFF}");
        let txn = self.db.begin_write().map_err(engine)?;
        let mut removed = 0;
        {
            let mut data = txn.open_table(DATA).map_err(engine)?;
            let range = (space_prefix, "")..(end.as_str(), "");
            for entry in data
                .extract_from_if::<(&str, &str), _>(range, |_, _| true)
                .map_err(engine)?
            {
                entry.map_err(engine)?;
                removed += 1;
            }
        }
        txn.commit().map_err(engine)?;
        Ok(removed)
    }

    fn data_snapshot(&self) -> Result<Box<dyn DataSnapshot>, StorageError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(DATA).map_err(engine)?;
        Ok(Box::new(RedbDataSnapshot { table }))
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

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

    fn close(&self) {
        let _ = self.jobs.send(WriterMessage::Close);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Plugin data as of one read transaction.
struct RedbDataSnapshot {
    table: redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
}

impl DataSnapshot for RedbDataSnapshot {
    fn get(&self, space: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.table.get((space, key)).map_err(engine)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(
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
        return Err(StorageError::Engine(format!(
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
                    return Err(StorageError::Engine(format!(
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
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StorageError> {
        Ok(WriteTables {
            log: txn.open_table(LOG).map_err(engine)?,
            rows: txn.open_table(ROWS).map_err(engine)?,
            event_ids: txn.open_table(EVENT_IDS).map_err(engine)?,
            meta: txn.open_table(META).map_err(engine)?,
            commands: txn.open_table(COMMANDS).map_err(engine)?,
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
        let mut last_group = 0;
        while !closing {
            let Ok(first) = jobs.recv() else { return };
            let gather_until = Instant::now() + self.group_wait;
            let mut group = Vec::new();
            let mut data = Vec::new();
            let (mut events, mut bytes) = (0usize, 0usize);
            let mut message = Some(first);
            while let Some(next) = message.take() {
                match next {
                    WriterMessage::Close => closing = true,
                    #[cfg(test)]
                    WriterMessage::Fail => panic!("the writer failed on purpose"),
                    WriterMessage::Append(job) => {
                        events += job.request.events.len();
                        bytes += job
                            .request
                            .events
                            .iter()
                            .map(|e| e.data.len() + e.metadata.len())
                            .sum::<usize>();
                        group.push(job);
                    }
                    WriterMessage::Data(job) => {
                        events += job.writes.len();
                        bytes += job
                            .writes
                            .iter()
                            .map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len))
                            .sum::<usize>();
                        data.push(job);
                    }
                }
                if closing || events >= MAX_GROUP_EVENTS || bytes >= MAX_GROUP_BYTES {
                    break;
                }
                message = match jobs.try_recv() {
                    Ok(message) => Some(message),
                    // The writers answered by the last commit are still sending their next
                    // appends: waiting a moment for them makes this group as large as the last,
                    // which costs one short wait instead of a whole extra commit.
                    Err(mpsc::TryRecvError::Empty) if group.len() < last_group => {
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
            last_group = group.len();
            if !group.is_empty() || !data.is_empty() {
                self.commit_group(group, data);
            }
        }
        // Requests that raced with the close are refused rather than left waiting.
        while let Ok(message) = jobs.try_recv() {
            match message {
                WriterMessage::Append(job) => {
                    let _ = job.reply.send(Err(StorageError::Closed.into()));
                }
                WriterMessage::Data(job) => {
                    let _ = job.reply.send(Err(StorageError::Closed));
                }
                _ => {}
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Job>, data: Vec<DataJob>) {
        let started = Instant::now();
        let counters_before = self.state.counters();
        let outcome = self.write_group(&group, &data);
        match outcome {
            Ok(results) => {
                let elapsed = started.elapsed().as_nanos() as u64;
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .commit_nanos
                    .fetch_add(elapsed, Ordering::Relaxed);
                let written = results
                    .iter()
                    .filter(|r| matches!(r, Ok((AppendOutcome::Written(_), _))))
                    .count();
                self.counters
                    .committed_appends
                    .fetch_add(written as u64, Ordering::Relaxed);
                self.head.send_replace(self.state.head);
                for (job, result) in group.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
                for job in data {
                    let _ = job.reply.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(
                    "append group of {} requests failed, nothing written: {error}",
                    group.len()
                );
                // The ids the failed transaction assigned were never stored: hand them out again.
                self.state.restore_counters(counters_before);
                for job in group {
                    let _ = job
                        .reply
                        .send(Err(StorageError::Engine(error.to_string()).into()));
                }
                for job in data {
                    let _ = job.reply.send(Err(StorageError::Engine(error.to_string())));
                }
            }
        }
    }

    /// Applies every request of the group in one transaction and commits it durably.
    fn write_group(&mut self, group: &[Job], data: &[DataJob]) -> Result<Vec<Reply>, StorageError> {
        let txn = self.db.begin_write().map_err(engine)?;
        let recorded_at = now_rfc3339();
        let mut results = Vec::with_capacity(group.len());
        {
            let mut tables = WriteTables::open(&txn)?;
            let ids_before = self.state.counters()[1..].to_vec();
            let mut writes = GroupWrites::new(self.state.head + 1);
            for job in group {
                let outcome = self.apply(&mut tables, &mut writes, &job.request, &recorded_at)?;
                let records = match &outcome {
                    Ok(AppendOutcome::Written(result)) if job.want_records => {
                        writes.records_of(result)
                    }
                    _ => Vec::new(),
                };
                results.push(outcome.map(|outcome| (outcome, records)));
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
            if !data.is_empty() {
                let mut table = txn.open_table(DATA).map_err(engine)?;
                for write in data.iter().flat_map(|job| &job.writes) {
                    let key = (&*write.space, write.key.as_str());
                    match &write.value {
                        Some(value) => table.insert(key, value.as_slice()).map(drop),
                        None => table.remove(key).map(drop),
                    }
                    .map_err(engine)?;
                }
            }
        }
        txn.commit().map_err(engine)?;
        Ok(results)
    }

    /// Makes sure the group holds the row of a category or type, loading it or assigning a new
    /// id; returns the id.
    fn load_section(
        &mut self,
        tables: &WriteTables<'_>,
        writes: &mut GroupWrites<'_>,
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
                    return Err(StorageError::Engine(format!(
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

    /// Checks one request against the state the group has written so far and writes it if it
    /// passes. The outer error is a storage failure that dooms the group; the inner one refuses
    /// this request only, and then nothing of it has been written.
    fn apply<'g>(
        &mut self,
        tables: &mut WriteTables<'_>,
        writes: &mut GroupWrites<'g>,
        request: &'g AppendRequest,
        recorded_at: &str,
    ) -> Result<Result<AppendOutcome, AppendError>, StorageError> {
        if let Err(reason) = check_request(request) {
            return Ok(Err(AppendError::Invalid(reason)));
        }
        if let Some(command) = &request.command {
            if let Some(stored) = tables.commands.get(command.id.as_str()).map_err(engine)? {
                let (position, event_count, record) = stored.value();
                return Ok(Err(AppendError::CommandRecorded(StoredCommand {
                    record: record.to_vec(),
                    position,
                    event_count,
                })));
            }
            if request.events.is_empty() {
                let head = self.state.head;
                tables
                    .commands
                    .insert(command.id.as_str(), (head, 0, command.record.as_slice()))
                    .map_err(engine)?;
                count_command(&mut tables.meta, &command.tally)?;
                return Ok(Ok(AppendOutcome::Written(AppendResult {
                    first_version: 0,
                    last_version: 0,
                    first_position: head + 1,
                    last_position: head,
                })));
            }
        }
        match find_earlier_append(tables, writes, request, self.state.id_tag, self.state.head)? {
            EarlierAppend::None => {}
            EarlierAppend::Reserved(id) => {
                return Ok(Err(AppendError::Invalid(format!(
                    "event id {id:?} has the form of the ids this store generates, but no such \
                     event is stored; choose another id or leave it out"
                ))));
            }
            EarlierAppend::Same(result) => return Ok(Ok(AppendOutcome::AlreadyWritten(result))),
            EarlierAppend::Conflict { id, why } => {
                return Ok(Err(AppendError::DuplicateEventId { id, why }));
            }
        }
        let existing = match tables.rows.get(request.stream.as_str()).map_err(engine)? {
            Some(row) => Some(StreamRow::decode(row.value())?),
            None => None,
        };
        let actual = existing.as_ref().map_or(0, |row| row.version);
        if !request.expected_version.admits(actual) {
            return Ok(Err(AppendError::WrongExpectedVersion {
                expected: request.expected_version,
                actual,
            }));
        }
        let mut row = match existing {
            Some(row) => row,
            None if self.state.next_stream_id > MAX_INTERNED_ID => {
                return Err(StorageError::Engine("no stream ids left".into()));
            }
            None => {
                self.state.next_stream_id += 1;
                StreamRow::new(self.state.next_stream_id - 1)
            }
        };
        let category_key = SectionKind::Category.row_key(category_of(&request.stream));
        self.load_section(tables, writes, SectionKind::Category, &category_key)?;
        let stream_json = json_string(&request.stream);
        let count = request.events.len() as u64;
        let first_position = self.state.head + 1;
        for (offset, event) in request.events.iter().enumerate() {
            let (position, version) = (first_position + offset as u64, actual + 1 + offset as u64);
            let entry = (position, first_position, count as u32);
            let id: Cow<'_, str> = match &event.id {
                Some(id) => {
                    writes.index_id(Cow::Borrowed(id), entry);
                    Cow::Borrowed(id)
                }
                None => {
                    let at = GeneratedId {
                        position,
                        offset: offset as u32,
                        count: count as u32,
                    };
                    match at.encode(self.state.id_tag) {
                        Some(generated) => Cow::Owned(generated),
                        // An id that cannot encode its position goes into the index instead.
                        None => {
                            let random = uuid::Uuid::new_v4().to_string();
                            writes.index_id(Cow::Owned(random.clone()), entry);
                            Cow::Owned(random)
                        }
                    }
                }
            };
            render_record(
                &mut writes.records,
                position,
                &stream_json,
                version,
                &id,
                event,
                recorded_at,
            );
            let type_key = SectionKind::Type.row_key(&event.event_type);
            let type_id = self.load_section(tables, writes, SectionKind::Type, &type_key)?;
            writes.record_ends.push(writes.records.len());
            row.tail.push(position);
            writes.section_entry(&category_key, (position, type_id));
            writes.section_entry(&type_key, (position, 0));
        }
        row.version += count;
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
        self.state.head += count;
        if let Some(command) = &request.command {
            tables
                .commands
                .insert(
                    command.id.as_str(),
                    (self.state.head, count, command.record.as_slice()),
                )
                .map_err(engine)?;
            count_command(&mut tables.meta, &command.tally)?;
        }
        Ok(Ok(AppendOutcome::Written(AppendResult {
            first_version: actual + 1,
            last_version: actual + count,
            first_position,
            last_position: first_position + count - 1,
        })))
    }
}

/// What a commit group writes to the log and the id index, held until the group's requests
/// have all been checked and then inserted in key order. Sorted runs go into the trees through
/// cursors, which fill leaves completely; one insert at a time would rebuild a leaf per entry
/// and leave half-empty leaves behind an appending key.
struct GroupWrites<'g> {
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
    ids: HashMap<Cow<'g, str>, (u64, u64, u32)>,
}

impl<'g> GroupWrites<'g> {
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

    fn index_id(&mut self, id: Cow<'g, str>, entry: (u64, u64, u32)) {
        self.ids.insert(id, entry);
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
            ids.into_iter().map(|(id, entry)| (id.as_ref(), *entry)),
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
                    return Err(StorageError::Engine(
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

/// The last line of defence: the API validates first, but nothing breaks the store's rules.
fn check_request(request: &AppendRequest) -> Result<(), String> {
    validate_stream_name(&request.stream)?;
    if request.events.is_empty() && request.command.is_none() {
        return Err("an append needs at least one event".into());
    }
    if request.events.len() > u32::MAX as usize {
        return Err("too many events in one append".into());
    }
    let mut ids = std::collections::HashSet::new();
    for event in &request.events {
        validate_event_type(&event.event_type)?;
        let Some(id) = &event.id else { continue };
        validate_event_id(id)?;
        if request.events.len() > 1 && !ids.insert(id.as_str()) {
            return Err(format!("event id {id:?} appears twice in one append"));
        }
    }
    Ok(())
}

enum EarlierAppend {
    /// No event id of the request is stored.
    None,
    /// The request repeats one earlier append exactly: its numbers.
    Same(AppendResult),
    /// Some id is stored, but the request is not a repeat of the append that stored it.
    Conflict { id: String, why: &'static str },
    /// A client chose an id of the form this store generates that it has not generated.
    Reserved(String),
}

/// What the store knows of one client-chosen event id.
enum IdLookup {
    /// Stored: (position, first position of its append, events in that append).
    Stored((u64, u64, u32)),
    Absent,
    /// Has the form of a generated id of this store, but names no stored event.
    Reserved,
}

/// Looks an id up in the group's new entries, the index, and, for ids of the generated form,
/// at the position it names.
fn find_id(
    tables: &WriteTables<'_>,
    writes: &GroupWrites<'_>,
    id: &str,
    id_tag: u32,
    head: u64,
) -> Result<IdLookup, StorageError> {
    if let Some(entry) = writes.ids.get(id) {
        return Ok(IdLookup::Stored(*entry));
    }
    if let Some(entry) = tables.event_ids.get(id).map_err(engine)? {
        return Ok(IdLookup::Stored(entry.value()));
    }
    let Some(generated) = GeneratedId::decode(id, id_tag) else {
        return Ok(IdLookup::Absent);
    };
    if generated.position <= head {
        let record = record_at(tables, writes, generated.position)?;
        let view = parse_record(&record, generated.position)?;
        if view.id == id {
            let entry = (
                generated.position,
                generated.first_position(),
                generated.count,
            );
            return Ok(IdLookup::Stored(entry));
        }
    }
    Ok(IdLookup::Reserved)
}

/// The record at `position`, written by this group or stored before it.
fn record_at(
    tables: &WriteTables<'_>,
    writes: &GroupWrites<'_>,
    position: u64,
) -> Result<Vec<u8>, StorageError> {
    if let Some(record) = writes.record(position) {
        return Ok(record.to_vec());
    }
    let record = tables
        .log
        .get((EVENTS, position))
        .map_err(engine)?
        .ok_or_else(|| StorageError::Corrupt {
            position,
            reason: "an id points at a missing event".into(),
        })?;
    Ok(record.value().to_vec())
}

fn parse_record(record: &[u8], position: u64) -> Result<EventView<'_>, StorageError> {
    EventView::parse(record).map_err(|e| StorageError::Corrupt {
        position,
        reason: e.to_string(),
    })
}

/// Decides whether a request is a retry of an append already stored; done before the expected
/// version is checked, so the retry of a successful append succeeds.
fn find_earlier_append(
    tables: &WriteTables<'_>,
    writes: &GroupWrites<'_>,
    request: &AppendRequest,
    id_tag: u32,
    head: u64,
) -> Result<EarlierAppend, StorageError> {
    if request.events.iter().all(|e| e.id.is_none()) {
        // Ids the store is about to generate are new by construction.
        return Ok(EarlierAppend::None);
    }
    let mut stored = Vec::with_capacity(request.events.len());
    for event in &request.events {
        let found = match &event.id {
            None => None,
            Some(id) => match find_id(tables, writes, id, id_tag, head)? {
                IdLookup::Stored(entry) => Some(entry),
                IdLookup::Absent => None,
                IdLookup::Reserved => return Ok(EarlierAppend::Reserved(id.clone())),
            },
        };
        stored.push(found);
    }
    let Some(first_found) = request
        .events
        .iter()
        .zip(&stored)
        .find(|(_, s)| s.is_some())
    else {
        return Ok(EarlierAppend::None);
    };
    let conflict = |why| {
        Ok(EarlierAppend::Conflict {
            id: first_found.0.id.clone().unwrap_or_default(),
            why,
        })
    };
    if stored.iter().any(Option::is_none) {
        return conflict("by another append; only some ids of this request are stored");
    }
    let (_, first_position, count) = stored[0].expect("all found");
    let one_append = count as usize == request.events.len()
        && stored.iter().enumerate().all(|(i, s)| {
            let (position, first, _) = s.expect("all found");
            first == first_position && position == first_position + i as u64
        });
    if !one_append {
        return conflict("by another append with other events");
    }
    let mut versions = (0, 0);
    for (i, event) in request.events.iter().enumerate() {
        let position = first_position + i as u64;
        let record = record_at(tables, writes, position)?;
        let view = parse_record(&record, position)?;
        if view.stream != request.stream {
            return conflict("in another stream");
        }
        if view.event_type != event.event_type || view.data.get() != event.data {
            return conflict("with another type or data");
        }
        if i == 0 {
            versions.0 = view.version;
        }
        versions.1 = view.version;
    }
    Ok(EarlierAppend::Same(AppendResult {
        first_version: versions.0,
        last_version: versions.1,
        first_position,
        last_position: first_position + count as u64 - 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_store::names::category_of;
    use evhost_store::{CommandEntry, ExpectedVersion, ProposedEvent};

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
        store.close();
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
    #[test]
    fn stream_windows_cross_chunks_and_tails() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
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
                runtime
                    .block_on(store.append(append("other-1", round % 3 + 1)))
                    .unwrap();
                let outcome = runtime.block_on(store.append(append("s-1", size))).unwrap();
                let AppendOutcome::Written(result) = outcome else {
                    panic!("{outcome:?}")
                };
                expected.extend(result.first_position..=result.last_position);
            }
            check_windows(&store, &expected);
            store.close();
        }
        let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
        check_windows(&store, &expected);
    }

    fn check_windows(store: &RedbStore, expected: &[u64]) {
        let version = expected.len() as u64 - 1;
        for from in 0..=version + 2 {
            for limit in [1, 2, 31, 32, 33, 1000] {
                for direction in [Direction::Forward, Direction::Backward] {
                    let page = store
                        .read_stream("s-1", Some(from), limit, direction)
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
    #[test]
    fn filtered_reads_cross_chunks_and_tails() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
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
                runtime.block_on(store.append(request.clone())).unwrap();
                for event in &request.events {
                    log.push((category_of(&stream).to_owned(), event.event_type.clone()));
                }
            }
            check_filters(&store, &log);
            store.close();
        }
        let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
        check_filters(&store, &log);
    }

    fn check_filters(store: &RedbStore, log: &[(String, String)]) {
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
                    let page = store.read_log(from, limit, &filter).unwrap();
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
        RedbStore::open(dir.path(), &StoreOptions::default())
            .unwrap()
            .close();
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
    #[test]
    fn a_failed_writer_is_reported_and_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
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
        let refused = runtime.block_on(store.append(request));
        assert!(
            matches!(refused, Err(AppendError::Storage(StorageError::Closed))),
            "{refused:?}"
        );
    }

    /// A command's append carries its record in the same transaction, answers with the records
    /// it wrote, and a second append with the same command id writes nothing.
    #[test]
    fn command_appends_return_their_records_and_are_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
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
        let (outcome, records) = runtime
            .block_on(store.append_returning_records(command(vec![event(0), event(1)])))
            .unwrap();
        let AppendOutcome::Written(result) = outcome else {
            panic!("{outcome:?}")
        };
        let stored = store.read_log(1, 10, &LogFilter::default()).unwrap().events;
        assert_eq!(records.len(), 2);
        for (returned, stored) in records.iter().zip(&stored) {
            assert_eq!(returned.position, stored.position);
            assert_eq!(returned.json, stored.json);
        }
        let recorded = store.read_command("c-1").unwrap().unwrap();
        assert_eq!(recorded.position, result.last_position);
        assert_eq!(recorded.event_count, 2);
        assert_eq!(recorded.record, br#"{"outcome":"applied"}"#);

        let again = runtime.block_on(store.append_returning_records(command(vec![event(2)])));
        assert!(
            matches!(&again, Err(AppendError::CommandRecorded(c)) if *c == recorded),
            "{again:?}"
        );
        assert_eq!(store.head(), 2, "the repeated command wrote nothing");
        assert_eq!(
            store.command_tallies("h/").unwrap(),
            [("h/v1".to_owned(), 1)],
            "the repeat is not counted"
        );
        let scanned = store.scan_commands("c-", None, 10).unwrap();
        assert_eq!(scanned, [("c-1".to_owned(), recorded)]);
        assert!(
            store
                .scan_commands("c-", Some("c-1"), 10)
                .unwrap()
                .is_empty()
        );
        assert!(store.scan_commands("d", None, 10).unwrap().is_empty());
    }

    /// Deleting the spaces under a prefix removes their entries only, durably.
    #[test]
    fn deleting_data_removes_the_spaces_under_a_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let write = |space: &str, key: &str| DataWrite {
            space: space.into(),
            key: key.into(),
            value: Some(b"1".to_vec()),
        };
        runtime
            .block_on(store.write_data(vec![
                write("replay/1", "a"),
                write("replay/1/base", "b"),
                write("replay/10", "c"),
                write("replay/", "d"),
                write("projection/p/v", "e"),
                write("replay/2", "f"),
            ]))
            .unwrap();
        assert_eq!(store.delete_data("replay/1").unwrap(), 3);
        store.close();
        drop(store);
        let store = RedbStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let snapshot = store.data_snapshot().unwrap();
        for (space, key, kept) in [
            ("replay/1", "a", false),
            ("replay/1/base", "b", false),
            ("replay/10", "c", false),
            ("replay/", "d", true),
            ("projection/p/v", "e", true),
            ("replay/2", "f", true),
        ] {
            assert_eq!(
                snapshot.get(space, key).unwrap().is_some(),
                kept,
                "{space} {key}"
            );
        }
    }
}

//! The conformance suite: the checks every backend passes, run by implementing [`Backend`]
//! (one constructor) and invoking [`conformance_tests!`](crate::conformance_tests).
//!
//! The heart of it is a model-based, randomised run: seeded operations of every kind (appends
//! with every kind of expected version, idempotent retries and duplicates, command records,
//! reads of streams and of the filtered log with paging, plugin data with prefixes and scans,
//! snapshots, leases and fenced commits, catalog writes, reopening where the backend persists)
//! go to the backend under test and to the in-memory reference ([`crate::memory`]), and every
//! answer must be the same. Around it, checks of what a sequence cannot show: racing writers,
//! snapshots that keep their point, fencing, commits that are all or nothing, generated ids.
//!
//! `EVHOST_CONFORMANCE_OPS` sets the operations of the randomised run (3 000 by default; use
//! 100 000 or more for a long run) and `EVHOST_CONFORMANCE_SEED` its seed (random by default);
//! a failure prints the seed that reproduces it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::memory::MemoryStore;
use crate::{
    AppendLimits, AppendOutcome, AppendRequest, CommandEntry, Commit, CommitError, Committed,
    DataWrite, Direction, ExpectedVersion, Fence, LogFilter, LogPage, ProposedEvent, RecordedEvent,
    StorageError, Store, StreamPage, event_id::GeneratedId,
};

/// How the suite opens a store: the same for the backend under test and the reference.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    pub append_limits: AppendLimits,
    /// The byte bound of a page of events.
    pub page_bytes: usize,
}

impl Default for StoreConfig {
    /// Small bounds, so that the suite meets them: pages end by bytes after a few events, and
    /// appends past a few events or a few kilobytes are too large.
    fn default() -> Self {
        StoreConfig {
            append_limits: AppendLimits {
                max_events: 6,
                max_event_bytes: 600,
                max_append_bytes: 2_000,
            },
            page_bytes: 1_500,
        }
    }
}

/// A backend under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Opens the store kept in `dir` (an empty directory the first time; the suite gives every
    /// check a fresh one). A backend that keeps nothing on disk may ignore it.
    async fn open(&self, dir: &Path, config: StoreConfig) -> Result<Arc<dyn Store>, StorageError>;

    /// Whether a store closed and opened again in the same directory holds what it held.
    fn persistent(&self) -> bool;
}

/// The reference as a backend: the suite run on it checks the suite itself.
pub struct Reference;

#[async_trait]
impl Backend for Reference {
    async fn open(&self, _: &Path, config: StoreConfig) -> Result<Arc<dyn Store>, StorageError> {
        Ok(Arc::new(MemoryStore::new(
            config.append_limits,
            config.page_bytes,
        )))
    }

    fn persistent(&self) -> bool {
        false
    }
}

/// Expands to one `#[tokio::test]` per check of the suite, each on a fresh store from
/// `$backend` (an expression of a type implementing [`Backend`]).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@tests $backend;
            randomised_operations_answer_as_the_reference,
            racing_writers_never_share_a_version,
            racing_retries_write_once,
            fenced_commits_are_refused_after_the_lease_moves,
            a_commit_is_all_or_nothing,
            a_snapshot_keeps_its_point,
            generated_ids_are_recognised_and_reserved,
            the_head_is_watched_and_closing_refuses_writes,
            claims_give_a_lease_to_one_node_at_a_time,
            reopening_keeps_everything);
    };
    (@tests $backend:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::conformance::$check(&$backend).await;
            }
        )*
    };
}

/// A fresh directory for one check; removed when dropped.
struct Place {
    dir: std::path::PathBuf,
}

impl Place {
    fn new() -> Place {
        let dir = std::env::temp_dir().join(format!(
            "evhost-conformance-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Place { dir }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn open(backend: &dyn Backend, place: &Place) -> Arc<dyn Store> {
    backend
        .open(&place.dir, StoreConfig::default())
        .await
        .expect("the backend opens a store")
}

fn event(event_type: &str, data: &str, id: Option<String>) -> ProposedEvent {
    ProposedEvent {
        id,
        event_type: event_type.to_owned(),
        data: data.to_owned(),
        metadata: "{}".to_owned(),
    }
}

fn append(stream: &str, expected: ExpectedVersion, events: Vec<ProposedEvent>) -> AppendRequest {
    AppendRequest {
        stream: stream.to_owned(),
        expected_version: expected,
        events,
        command: None,
    }
}

fn write(space: &str, key: &str, value: Option<&str>) -> DataWrite {
    DataWrite {
        space: space.into(),
        key: key.to_owned(),
        value: value.map(|v| v.as_bytes().to_vec()),
    }
}

/// Prints the seed of a randomised run that panics.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "conformance: the randomised run failed with EVHOST_CONFORMANCE_SEED={}",
                self.0
            );
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The randomised run.

/// A record without what legitimately differs between two stores: when it was recorded, and
/// the id a store generated (which carries the store's own tag).
fn normal_record(record: &RecordedEvent, generated: &BTreeSet<u64>) -> String {
    let mut value: serde_json::Value =
        serde_json::from_slice(&record.json).expect("a record is JSON");
    let object = value.as_object_mut().expect("a record is an object");
    assert!(
        object
            .remove("recorded_at")
            .is_some_and(|at| at.is_string()),
        "a record carries recorded_at"
    );
    if generated.contains(&record.position) {
        object.insert("id".into(), "<generated>".into());
    }
    format!("{}:{}", record.position, value)
}

fn normal_records(records: &[RecordedEvent], generated: &BTreeSet<u64>) -> Vec<String> {
    records
        .iter()
        .map(|r| normal_record(r, generated))
        .collect()
}

fn normal_stream(page: Option<StreamPage>, generated: &BTreeSet<u64>) -> String {
    match page {
        None => "no stream".into(),
        Some(page) => format!(
            "version {} next {:?} {:?}",
            page.version,
            page.next,
            normal_records(&page.events, generated)
        ),
    }
}

fn normal_log(page: LogPage, generated: &BTreeSet<u64>) -> String {
    format!(
        "head {} next {:?} {:?}",
        page.head,
        page.next,
        normal_records(&page.events, generated)
    )
}

fn normal_commit(result: &Result<Committed, CommitError>, generated: &BTreeSet<u64>) -> String {
    match result {
        Ok(committed) => format!(
            "ok {:?} {:?}",
            committed.append,
            normal_records(&committed.records, generated)
        ),
        Err(error) => format!("refused {:?}: {error}", error.kind()),
    }
}

fn normal_storage<T: std::fmt::Debug>(result: Result<T, StorageError>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(error) => format!("failed {:?}: {error}", error.kind()),
    }
}

/// The generator's memory of what it sent, to send retries, duplicates and conflicts.
#[derive(Default)]
struct History {
    /// Appends that carried client-chosen ids, as sent.
    appends: Vec<AppendRequest>,
    command_ids: Vec<String>,
    /// Positions whose ids the stores generated.
    generated: BTreeSet<u64>,
    /// The lease tokens handed out, by lease.
    tokens: BTreeMap<String, Vec<u64>>,
}

const STREAMS: [&str; 6] = [
    "visit-1", "visit-2", "visit-3", "order-1", "order-2", "audit",
];
const TYPES: [&str; 3] = ["Opened", "Noted", "Closed"];
const SPACES: [&str; 4] = ["state/a", "state/b", "checkpoint", "outbox/a"];
const KEYS: [&str; 5] = ["k", "k/1", "k/2", "m", "m/1"];

fn pick<'a, T: ?Sized>(rng: &mut StdRng, items: &'a [&'a T]) -> &'a T {
    items[rng.random_range(0..items.len())]
}

fn random_data(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        // Now and then an event large enough to meet the limits and the page bound.
        0 => format!("{{\"pad\":\"{}\"}}", "x".repeat(rng.random_range(200..700))),
        1 => "[1,[2,[3]]]".into(),
        _ => format!("{{\"n\":{}}}", rng.random_range(0..1000)),
    }
}

fn random_expected(rng: &mut StdRng) -> ExpectedVersion {
    match rng.random_range(0..6) {
        0 | 1 => ExpectedVersion::Any,
        2 => ExpectedVersion::NoStream,
        3 => ExpectedVersion::Exists,
        _ => ExpectedVersion::Exact(rng.random_range(0..8)),
    }
}

fn random_append(rng: &mut StdRng, history: &mut History) -> AppendRequest {
    // A retry of an earlier append with ids, exactly or changed.
    if !history.appends.is_empty() && rng.random_bool(0.25) {
        let mut request = history.appends[rng.random_range(0..history.appends.len())].clone();
        match rng.random_range(0..6) {
            0 => request.stream = pick(rng, &STREAMS).to_owned(),
            1 => request.events[0].data = random_data(rng),
            2 => request.events[0].event_type = pick(rng, &TYPES).to_owned(),
            3 => request.events.truncate(1),
            4 => request.events.push(event(pick(rng, &TYPES), "{}", None)),
            _ => {}
        }
        request.expected_version = random_expected(rng);
        request.command = None;
        return request;
    }
    let count = match rng.random_range(0..10) {
        0 => 0,
        1 => rng.random_range(4..9),
        _ => rng.random_range(1..4),
    };
    let with_ids = rng.random_bool(0.4);
    let events = (0..count)
        .map(|_| {
            let id = (with_ids && rng.random_bool(0.9)).then(|| uuid::Uuid::new_v4().to_string());
            event(pick(rng, &TYPES), &random_data(rng), id)
        })
        .collect();
    let mut request = append(pick(rng, &STREAMS), random_expected(rng), events);
    if request.events.is_empty() || rng.random_bool(0.2) {
        let id = if !history.command_ids.is_empty() && rng.random_bool(0.3) {
            history.command_ids[rng.random_range(0..history.command_ids.len())].clone()
        } else {
            let id = format!("cmd-{}", uuid::Uuid::new_v4().simple());
            history.command_ids.push(id.clone());
            id
        };
        request.command = Some(CommandEntry {
            id,
            record: format!("{{\"n\":{}}}", rng.random_range(0..100)).into_bytes(),
            tally: format!("handler/v{}", rng.random_range(0..3)),
        });
    }
    if rng.random_bool(0.02) {
        request.stream = "not a stream name".into();
    }
    if request.events.iter().any(|e| e.id.is_some()) {
        history.appends.push(request.clone());
    }
    request
}

fn random_writes(rng: &mut StdRng) -> Vec<DataWrite> {
    (0..rng.random_range(1..5))
        .map(|_| {
            let value = rng
                .random_bool(0.8)
                .then(|| format!("v{}", rng.random_range(0..100)));
            write(pick(rng, &SPACES), pick(rng, &KEYS), value.as_deref())
        })
        .collect()
}

fn random_filter(rng: &mut StdRng) -> LogFilter {
    let mut filter = LogFilter::default();
    if rng.random_bool(0.4) {
        let categories = ["visit", "order", "audit", "nothing"];
        filter.categories = (0..rng.random_range(1..3))
            .map(|_| pick(rng, &categories).to_owned())
            .collect();
    }
    if rng.random_bool(0.4) {
        filter.event_types = (0..rng.random_range(1..3))
            .map(|_| pick(rng, &TYPES).to_owned())
            .collect();
    }
    filter
}

/// Both stores of the randomised run, and the comparison of their answers.
struct Pair {
    tested: Arc<dyn Store>,
    reference: Arc<dyn Store>,
    step: usize,
    op: String,
}

impl Pair {
    fn same(&self, what: &str, tested: String, reference: String) {
        assert_eq!(
            tested, reference,
            "operation {} ({}) answered differently: {what}: the backend (left) and the \
             reference (right)",
            self.step, self.op
        );
    }
}

/// Remembers where an answered append generated ids.
fn note_generated(
    history: &mut History,
    request: Option<&AppendRequest>,
    result: &Result<Committed, CommitError>,
) {
    if let (
        Some(request),
        Ok(Committed {
            append: Some(AppendOutcome::Written(r)),
            ..
        }),
    ) = (request, result)
    {
        for (offset, event) in request.events.iter().enumerate() {
            if event.id.is_none() {
                history.generated.insert(r.first_position + offset as u64);
            }
        }
    }
}

pub async fn randomised_operations_answer_as_the_reference(backend: &dyn Backend) {
    let seed = env_number("EVHOST_CONFORMANCE_SEED").unwrap_or_else(|| rand::rng().random());
    let ops = env_number("EVHOST_CONFORMANCE_OPS").unwrap_or(3_000) as usize;
    let _guard = SeedGuard(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let place = Place::new();
    let mut pair = Pair {
        tested: open(backend, &place).await,
        reference: Reference
            .open(&place.dir, StoreConfig::default())
            .await
            .expect("the reference opens"),
        step: 0,
        op: String::new(),
    };
    let mut history = History::default();
    let mut snapshots = Vec::new();
    for step in 0..ops {
        pair.step = step;
        let choice = rng.random_range(0..100);
        match choice {
            0..=34 => {
                let mut commit = Commit {
                    append: Some(random_append(&mut rng, &mut history)),
                    want_records: rng.random_bool(0.5),
                    ..Commit::default()
                };
                if rng.random_bool(0.15) {
                    commit.data = random_writes(&mut rng);
                }
                pair.op = format!("commit {commit:?}");
                let tested = pair.tested.commit(commit.clone()).await;
                let reference = pair.reference.commit(commit.clone()).await;
                note_generated(&mut history, commit.append.as_ref(), &reference);
                pair.same(
                    "commit",
                    normal_commit(&tested, &history.generated),
                    normal_commit(&reference, &history.generated),
                );
            }
            35..=44 => {
                let mut commit = Commit {
                    data: random_writes(&mut rng),
                    ..Commit::default()
                };
                if rng.random_bool(0.3) {
                    let lease = pick(&mut rng, &["runner/a", "runner/b"]).to_owned();
                    let tokens = history.tokens.get(&lease).cloned().unwrap_or_default();
                    let token = if tokens.is_empty() || rng.random_bool(0.2) {
                        rng.random_range(0..3)
                    } else {
                        tokens[rng.random_range(0..tokens.len())]
                    };
                    commit.fence = Some(Fence { lease, token });
                }
                pair.op = format!("commit {commit:?}");
                let tested = pair.tested.commit(commit.clone()).await;
                let reference = pair.reference.commit(commit).await;
                pair.same(
                    "data commit",
                    normal_commit(&tested, &history.generated),
                    normal_commit(&reference, &history.generated),
                );
            }
            45..=47 => {
                let lease = pick(&mut rng, &["runner/a", "runner/b"]).to_owned();
                pair.op = format!("take lease {lease}");
                let tested = pair.tested.take_lease(&lease).await;
                let reference = pair.reference.take_lease(&lease).await;
                if let Ok(token) = &reference {
                    history.tokens.entry(lease).or_default().push(*token);
                }
                pair.same("lease", normal_storage(tested), normal_storage(reference));
            }
            48..=59 => {
                let stream = pick(&mut rng, &STREAMS);
                let from = rng.random_bool(0.7).then(|| rng.random_range(0..12));
                let limit = rng.random_range(1..6);
                let direction = if rng.random_bool(0.5) {
                    Direction::Forward
                } else {
                    Direction::Backward
                };
                pair.op = format!("read {stream} from {from:?} limit {limit} {direction:?}");
                let tested = pair
                    .tested
                    .read_stream(stream, from, limit, direction)
                    .await;
                let reference = pair
                    .reference
                    .read_stream(stream, from, limit, direction)
                    .await;
                let generated = &history.generated;
                pair.same(
                    "stream page",
                    normal_storage(tested.map(|p| normal_stream(p, generated))),
                    normal_storage(reference.map(|p| normal_stream(p, generated))),
                );
            }
            60..=71 => {
                let from = rng.random_range(0..pair.reference.head() + 3);
                let limit = rng.random_range(1..8);
                let filter = random_filter(&mut rng);
                pair.op = format!("read log from {from} limit {limit} {filter:?}");
                let tested = pair.tested.read_log(from, limit, &filter).await;
                let reference = pair.reference.read_log(from, limit, &filter).await;
                let generated = &history.generated;
                pair.same(
                    "log page",
                    normal_storage(tested.map(|p| normal_log(p, generated))),
                    normal_storage(reference.map(|p| normal_log(p, generated))),
                );
            }
            72..=76 => {
                pair.op = "commands".into();
                let id = if history.command_ids.is_empty() || rng.random_bool(0.2) {
                    "cmd-none".to_owned()
                } else {
                    history.command_ids[rng.random_range(0..history.command_ids.len())].clone()
                };
                pair.same(
                    "read command",
                    normal_storage(pair.tested.read_command(&id).await),
                    normal_storage(pair.reference.read_command(&id).await),
                );
                let after = history
                    .command_ids
                    .get(rng.random_range(0..history.command_ids.len().max(1)));
                let after = after.filter(|_| rng.random_bool(0.5)).map(String::as_str);
                let limit = rng.random_range(1..5);
                pair.same(
                    "scan commands",
                    normal_storage(pair.tested.scan_commands("cmd-", after, limit).await),
                    normal_storage(pair.reference.scan_commands("cmd-", after, limit).await),
                );
                let prefix = pick(&mut rng, &["", "handler/", "handler/v1", "other"]);
                pair.same(
                    "tallies",
                    normal_storage(pair.tested.command_tallies(prefix).await),
                    normal_storage(pair.reference.command_tallies(prefix).await),
                );
            }
            77..=84 => {
                pair.op = "snapshot".into();
                if snapshots.len() < 3 && rng.random_bool(0.5) {
                    let tested = pair.tested.snapshot().await.expect("a snapshot");
                    let reference = pair.reference.snapshot().await.expect("a snapshot");
                    snapshots.push((tested, reference));
                }
                let fresh;
                let (tested, reference) = if !snapshots.is_empty() && rng.random_bool(0.5) {
                    let (t, r) = &snapshots[rng.random_range(0..snapshots.len())];
                    (t.as_ref(), r.as_ref())
                } else {
                    fresh = (
                        pair.tested.snapshot().await.expect("a snapshot"),
                        pair.reference.snapshot().await.expect("a snapshot"),
                    );
                    (fresh.0.as_ref(), fresh.1.as_ref())
                };
                let space = pick(&mut rng, &SPACES);
                let key = pick(&mut rng, &KEYS);
                pair.same(
                    "snapshot get",
                    normal_storage(tested.get(space, key).await),
                    normal_storage(reference.get(space, key).await),
                );
                let prefix = pick(&mut rng, &["", "k", "k/", "m/", "z"]);
                let after = rng.random_bool(0.3).then(|| pick(&mut rng, &KEYS));
                let limit = rng.random_range(1..5);
                pair.same(
                    "snapshot scan",
                    normal_storage(tested.scan(space, prefix, after, limit).await),
                    normal_storage(reference.scan(space, prefix, after, limit).await),
                );
                if rng.random_bool(0.2) {
                    snapshots.clear();
                }
            }
            85..=86 => {
                let prefix = pick(&mut rng, &["state/", "state/a", "checkpoint", "nothing"]);
                pair.op = format!("delete data {prefix}");
                pair.same(
                    "delete data",
                    normal_storage(pair.tested.delete_data(prefix).await),
                    normal_storage(pair.reference.delete_data(prefix).await),
                );
            }
            87..=94 => {
                pair.op = "catalog".into();
                let name = pick(&mut rng, &["visit", "visits", "survey"]);
                match rng.random_range(0..4) {
                    0 => {
                        let record = format!("{{\"v\":{}}}", rng.random_range(0..10)).into_bytes();
                        let blob = (format!("{name}/{}", rng.random_range(0..3)), vec![7; 10]);
                        let tested = pair
                            .tested
                            .save_plugin(name, record.clone(), vec![blob.clone()])
                            .await;
                        let reference = pair.reference.save_plugin(name, record, vec![blob]).await;
                        pair.same(
                            "save plugin",
                            normal_storage(tested),
                            normal_storage(reference),
                        );
                    }
                    1 => {
                        let key = format!("{name}/{}", rng.random_range(0..3));
                        let bytes = vec![rng.random_range(0..255u8); 5];
                        let tested = pair.tested.save_blob(&key, bytes.clone()).await;
                        let reference = pair.reference.save_blob(&key, bytes).await;
                        pair.same(
                            "save blob",
                            normal_storage(tested),
                            normal_storage(reference),
                        );
                    }
                    2 => {
                        let prefix = format!("{name}/");
                        let tested = pair.tested.delete_blobs(&prefix).await;
                        let reference = pair.reference.delete_blobs(&prefix).await;
                        pair.same(
                            "delete blobs",
                            normal_storage(tested),
                            normal_storage(reference),
                        );
                    }
                    _ => {
                        let key = format!("{name}/{}", rng.random_range(0..3));
                        pair.same(
                            "blob",
                            normal_storage(pair.tested.blob(&key).await),
                            normal_storage(pair.reference.blob(&key).await),
                        );
                        pair.same(
                            "plugin records",
                            normal_storage(pair.tested.plugin_records().await),
                            normal_storage(pair.reference.plugin_records().await),
                        );
                    }
                }
            }
            _ => {
                pair.op = "head".into();
                pair.same(
                    "head",
                    pair.tested.head().to_string(),
                    pair.reference.head().to_string(),
                );
                if backend.persistent() && rng.random_bool(0.1) {
                    pair.op = "reopen".into();
                    snapshots.clear();
                    pair.tested.close().await;
                    pair.tested = open(backend, &place).await;
                    pair.same(
                        "head after reopening",
                        pair.tested.head().to_string(),
                        pair.reference.head().to_string(),
                    );
                }
            }
        }
    }
    // Last, the whole log, page by page.
    pair.op = "the whole log".into();
    let tested_log = normal_records(&whole_log(pair.tested.as_ref()).await, &history.generated);
    let reference_log = normal_records(
        &whole_log(pair.reference.as_ref()).await,
        &history.generated,
    );
    pair.same(
        "whole log",
        format!("{tested_log:?}"),
        format!("{reference_log:?}"),
    );
    pair.tested.close().await;
}

/// The whole log, read page by page.
async fn whole_log(store: &dyn Store) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let page = store
            .read_log(from, 100, &LogFilter::default())
            .await
            .expect("a page of the log");
        events.extend(page.events);
        match page.next {
            Some(next) => from = next,
            None => return events,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks of what a sequence of operations cannot show.

pub async fn racing_writers_never_share_a_version(backend: &dyn Backend) {
    let place = Place::new();
    let store = open(backend, &place).await;
    const WRITERS: usize = 8;
    const ROUNDS: u64 = 25;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for version in 0..ROUNDS {
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                let data = format!("{{\"writer\":{writer}}}");
                let request = append("race-1", expected, vec![event("Raced", &data, None)]);
                match store.append(request).await {
                    Ok(AppendOutcome::Written(result)) => won.push(result.last_version),
                    Ok(other) => panic!("an append without ids answered {other:?}"),
                    Err(CommitError::WrongExpectedVersion { .. }) => {}
                    Err(other) => panic!("a racing append failed: {other}"),
                }
                // Every writer waits for the stream to reach this round before the next.
                while store
                    .read_stream("race-1", None, 1, Direction::Backward)
                    .await
                    .expect("a read")
                    .map_or(0, |page| page.version)
                    <= version
                {
                    tokio::task::yield_now().await;
                }
            }
            won
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.extend(task.await.expect("a writer"));
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=ROUNDS).collect::<Vec<_>>(),
        "each version was won by exactly one writer"
    );
    let positions: Vec<u64> = whole_log(store.as_ref())
        .await
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(
        positions,
        (1..=ROUNDS).collect::<Vec<_>>(),
        "the log is gapless"
    );
    assert_eq!(store.head(), ROUNDS);
    store.close().await;
}

pub async fn racing_retries_write_once(backend: &dyn Backend) {
    let place = Place::new();
    let store = open(backend, &place).await;
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let request = append(
        "retry-1",
        ExpectedVersion::NoStream,
        ids.iter()
            .map(|id| event("Sent", "{\"a\":1}", Some(id.clone())))
            .collect(),
    );
    let command = |n: u32| AppendRequest {
        command: Some(CommandEntry {
            id: "cmd-raced".into(),
            record: format!("{{\"attempt\":{n}}}").into_bytes(),
            tally: "raced".into(),
        }),
        ..append(
            "retry-2",
            ExpectedVersion::Any,
            vec![event("Done", "{}", None)],
        )
    };
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        let request = request.clone();
        let command = command(n);
        tasks.push(tokio::spawn(async move {
            (store.append(request).await, store.append(command).await)
        }));
    }
    let (mut written, mut recorded) = (0, 0);
    for task in tasks {
        let (retry, command) = task.await.expect("a task");
        match retry {
            Ok(AppendOutcome::Written(_)) => written += 1,
            Ok(AppendOutcome::AlreadyWritten(_)) => {}
            Err(error) => panic!("a retry of an identical append failed: {error}"),
        }
        match command {
            Ok(AppendOutcome::Written(_)) => recorded += 1,
            Err(CommitError::CommandRecorded(_)) => {}
            other => panic!("a racing command append answered {other:?}"),
        }
    }
    assert_eq!(
        written, 1,
        "one of the identical appends wrote, the others were retries"
    );
    assert_eq!(
        recorded, 1,
        "one command append was recorded, the others refused"
    );
    let stream = store
        .read_stream("retry-1", None, 10, Direction::Forward)
        .await
        .expect("a read")
        .expect("the stream exists");
    assert_eq!(stream.version, 3, "the retried append was written once");
    let tallies = store.command_tallies("raced").await.expect("tallies");
    assert_eq!(tallies, vec![("raced".to_owned(), 1)]);
    assert_eq!(store.head(), 4);
    store.close().await;
}

pub async fn fenced_commits_are_refused_after_the_lease_moves(backend: &dyn Backend) {
    let place = Place::new();
    let store = open(backend, &place).await;
    let first = store
        .take_lease("projection/visits")
        .await
        .expect("a lease");
    let fence = |token| {
        Some(Fence {
            lease: "projection/visits".into(),
            token,
        })
    };
    store
        .write_data(vec![write("state", "a", Some("1"))], fence(first))
        .await
        .expect("the holder commits");
    let second = store
        .take_lease("projection/visits")
        .await
        .expect("a lease");
    assert!(
        second > first,
        "a lease taken again hands out a greater token"
    );
    let refused = store
        .commit(Commit {
            append: Some(append(
                "fenced-1",
                ExpectedVersion::Any,
                vec![event("E", "{}", None)],
            )),
            data: vec![write("state", "a", Some("stale"))],
            fence: fence(first),
            want_records: false,
        })
        .await;
    match refused {
        Err(error @ CommitError::Fenced { .. }) => {
            assert_eq!(error.kind(), crate::ErrorKind::Conflict);
        }
        other => panic!("a commit under an old token answered {other:?}"),
    }
    store
        .write_data(vec![write("state", "a", Some("2"))], fence(second))
        .await
        .expect("the new holder commits");
    let snapshot = store.snapshot().await.expect("a snapshot");
    assert_eq!(
        snapshot.get("state", "a").await.unwrap(),
        Some(b"2".to_vec())
    );
    assert_eq!(store.head(), 0, "the fenced append wrote nothing");
    let other = store.take_lease("policy/other").await.expect("a lease");
    store
        .write_data(
            vec![write("state", "b", Some("1"))],
            Some(Fence {
                lease: "policy/other".into(),
                token: other,
            }),
        )
        .await
        .expect("leases are independent");
    store.close().await;
    if backend.persistent() {
        let store = open(backend, &place).await;
        let third = store
            .take_lease("projection/visits")
            .await
            .expect("a lease");
        assert!(third > second, "tokens keep growing across a reopening");
        store.close().await;
    }
}

pub async fn a_commit_is_all_or_nothing(backend: &dyn Backend) {
    let place = Place::new();
    let store = open(backend, &place).await;
    store
        .append(append(
            "all-1",
            ExpectedVersion::NoStream,
            vec![event("E", "{}", None)],
        ))
        .await
        .expect("an append");
    // A refused append takes its data writes with it.
    let refused = store
        .commit(Commit {
            append: Some(append(
                "all-1",
                ExpectedVersion::NoStream,
                vec![event("E", "{}", None)],
            )),
            data: vec![write("state", "x", Some("1"))],
            ..Commit::default()
        })
        .await;
    assert!(matches!(
        refused,
        Err(CommitError::WrongExpectedVersion { actual: 1, .. })
    ));
    // So does one past the limits.
    let big = "x".repeat(StoreConfig::default().append_limits.max_event_bytes);
    let too_large = store
        .commit(Commit {
            append: Some(append(
                "all-2",
                ExpectedVersion::Any,
                vec![event("E", &format!("\"{big}\""), None)],
            )),
            data: vec![write("state", "y", Some("1"))],
            ..Commit::default()
        })
        .await;
    match too_large {
        Err(error @ CommitError::TooLarge(_)) => {
            assert_eq!(error.kind(), crate::ErrorKind::Refused)
        }
        other => panic!("an event past the limit answered {other:?}"),
    }
    let snapshot = store.snapshot().await.expect("a snapshot");
    assert_eq!(snapshot.get("state", "x").await.unwrap(), None);
    assert_eq!(snapshot.get("state", "y").await.unwrap(), None);
    // An admitted append and its data commit together, in the order given.
    let committed = store
        .commit(Commit {
            append: Some(append(
                "all-1",
                ExpectedVersion::Exact(1),
                vec![event("E", "{}", None)],
            )),
            data: vec![
                write("state", "x", Some("1")),
                write("state", "x", Some("2")),
            ],
            want_records: true,
            ..Commit::default()
        })
        .await
        .expect("a commit");
    assert_eq!(committed.records.len(), 1);
    assert_eq!(committed.records[0].position, 2);
    let snapshot = store.snapshot().await.expect("a snapshot");
    assert_eq!(
        snapshot.get("state", "x").await.unwrap(),
        Some(b"2".to_vec())
    );
    assert_eq!(store.head(), 2);
    store.close().await;
}

pub async fn a_snapshot_keeps_its_point(backend: &dyn Backend) {
    let place = Place::new();
    let store = open(backend, &place).await;
    store
        .write_data(
            vec![
                write("state", "a", Some("1")),
                write("state", "b", Some("1")),
            ],
            None,
        )
        .await
        .expect("a write");
    let before = store.snapshot().await.expect("a snapshot");
    store
        .write_data(
            vec![
                write("state", "a", Some("2")),
                write("state", "b", None),
                write("state", "c", Some("2")),
            ],
            None,
        )
        .await
        .expect("a write");
    let deleted = store.delete_data("state").await.expect("a delete");
    assert_eq!(deleted, 2);
    assert_eq!(before.get("state", "a").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        before.scan("state", "", None, 10).await.unwrap(),
        vec![
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"1".to_vec())
        ],
        "a snapshot sees neither the later writes nor the deletion"
    );
    let after = store.snapshot().await.expect("a snapshot");
    assert_eq!(after.scan("state", "", None, 10).await.unwrap(), vec![]);
    drop(before);
    store.close().await;
}

pub async fn generated_ids_are_recognised_and_reserved(backend: &dyn Backend) {
    let place = Place::new();
    let store = open(backend, &place).await;
    let request = append(
        "gen-1",
        ExpectedVersion::NoStream,
        vec![event("E", "{\"a\":1}", None), event("E", "{\"a\":2}", None)],
    );
    let (_, records) = store
        .append_returning_records(request)
        .await
        .expect("an append");
    let ids: Vec<String> = records
        .iter()
        .map(|r| {
            let view = crate::EventView::parse(&r.json).expect("a record");
            view.id.to_string()
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    // The same events with the ids the store gave them are a retry.
    let retry = append(
        "gen-1",
        ExpectedVersion::NoStream,
        vec![
            event("E", "{\"a\":1}", Some(ids[0].clone())),
            event("E", "{\"a\":2}", Some(ids[1].clone())),
        ],
    );
    match store.append(retry).await {
        Ok(AppendOutcome::AlreadyWritten(result)) => assert_eq!(result.last_position, 2),
        other => panic!("a retry with generated ids answered {other:?}"),
    }
    // An id of the generated form that names no stored event can never be chosen.
    let tag = GeneratedId::tag_of(&ids[0]).expect("a generated id");
    let unstored = GeneratedId {
        position: 1_000,
        offset: 0,
        count: 1,
    }
    .encode(tag)
    .expect("an id");
    match store
        .append(append(
            "gen-2",
            ExpectedVersion::Any,
            vec![event("E", "{}", Some(unstored))],
        ))
        .await
    {
        Err(error @ CommitError::Invalid(_)) => assert_eq!(error.kind(), crate::ErrorKind::Refused),
        other => panic!("an unstored id of the generated form answered {other:?}"),
    }
    let with_other_data = append(
        "gen-2",
        ExpectedVersion::Any,
        vec![event("E", "{\"a\":3}", Some(ids[0].clone()))],
    );
    match store.append(with_other_data).await {
        Err(CommitError::DuplicateEventId { .. }) => {}
        other => panic!("a generated id reused for another event answered {other:?}"),
    }
    assert_eq!(store.head(), 2);
    store.close().await;
}

pub async fn the_head_is_watched_and_closing_refuses_writes(backend: &dyn Backend) {
    let place = Place::new();
    let store = open(backend, &place).await;
    let mut head = store.watch_head();
    assert_eq!(*head.borrow_and_update(), 0);
    let writer = store.clone();
    let task = tokio::spawn(async move {
        writer
            .append(append(
                "watch-1",
                ExpectedVersion::Any,
                vec![event("E", "{}", None)],
            ))
            .await
    });
    head.wait_for(|h| *h >= 1).await.expect("the head moves");
    task.await.expect("a task").expect("an append");
    assert!(store.accepts_writes());
    store.close().await;
    assert!(!store.accepts_writes());
    match store
        .append(append(
            "watch-1",
            ExpectedVersion::Any,
            vec![event("E", "{}", None)],
        ))
        .await
    {
        Err(CommitError::Storage(StorageError::Closed)) => {}
        other => panic!("an append after closing answered {other:?}"),
    }
}

pub async fn claims_give_a_lease_to_one_node_at_a_time(backend: &dyn Backend) {
    use crate::claims::{Holder, NodeInfo};
    use std::time::Duration;
    let place = Place::new();
    let store = open(backend, &place).await;
    let holder = |node: &str, incarnation: &str| Holder {
        node: node.to_owned(),
        incarnation: incarnation.to_owned(),
    };
    let (a, b) = (holder("node-a", "1"), holder("node-b", "1"));
    let long = Duration::from_secs(60);
    let fenced = |token: u64| Commit {
        data: vec![write("state", "k", Some("v"))],
        fence: Some(Fence {
            lease: "claimed".into(),
            token,
        }),
        ..Commit::default()
    };
    let first = store.claim_lease("claimed", &a, long).await.unwrap();
    let first = first.expect("a free lease is granted");
    assert_eq!(store.claim_lease("claimed", &b, long).await.unwrap(), None);
    assert_eq!(
        store.claim_lease("claimed", &a, long).await.unwrap(),
        Some(first),
        "renewing keeps the token"
    );
    store
        .commit(fenced(first))
        .await
        .expect("the holder commits");
    let claims = store.lease_claims().await.unwrap();
    let claim = claims
        .iter()
        .find(|c| c.lease == "claimed")
        .expect("listed");
    assert_eq!(claim.holder.as_ref(), Some(&a));
    assert!(
        claim.expires_in_ms > 0 && claim.since.is_some(),
        "{claim:?}"
    );

    store.release_lease("claimed", &b).await.unwrap();
    assert_eq!(
        store.claim_lease("claimed", &b, long).await.unwrap(),
        None,
        "not b's to end"
    );
    store.release_lease("claimed", &a).await.unwrap();
    let second = store.claim_lease("claimed", &b, long).await.unwrap();
    let second = second.expect("a released lease is granted");
    assert!(second > first);
    match store.commit(fenced(first)).await {
        Err(CommitError::Fenced { .. }) => {}
        other => panic!("the old holder's commit answered {other:?}"),
    }
    // A restarted node (a new incarnation) takes its lease back at once, under a new token.
    let b_again = holder("node-b", "2");
    let third = store.claim_lease("claimed", &b_again, long).await.unwrap();
    assert!(third.expect("its own node's lease") > second);
    // An expired claim is granted to another node.
    let short = store
        .claim_lease("brief", &a, Duration::from_millis(1))
        .await
        .unwrap()
        .expect("granted");
    let taken = loop {
        if let Some(token) = store.claim_lease("brief", &b, long).await.unwrap() {
            break token;
        }
        tokio::task::yield_now().await;
    };
    assert!(taken > short);
    // Taking a lease outright ends its claim: the holder claims it anew, under a newer token.
    let outright = store.take_lease("brief").await.unwrap();
    let reclaimed = store.claim_lease("brief", &b, long).await.unwrap();
    assert!(reclaimed.expect("granted again") > outright);

    let node = |name: &str| NodeInfo {
        node: name.to_owned(),
        incarnation: "1".into(),
        address: format!("http://{name}"),
        version: "test".into(),
        started_at: crate::now_rfc3339(),
    };
    let (node_a, node_b) = (node("node-a"), node("node-b"));
    store.heartbeat(&node_a, long).await.unwrap();
    let seen = store.heartbeat(&node_b, long).await.unwrap();
    let names: Vec<&str> = seen.iter().map(|n| n.info.node.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"]);
    assert_eq!(seen[1].info, node_b);
    store.close().await;
}

pub async fn reopening_keeps_everything(backend: &dyn Backend) {
    if !backend.persistent() {
        return;
    }
    let place = Place::new();
    let store = open(backend, &place).await;
    let ids = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()].map(|id| Some(id.to_string()));
    let request = append(
        "keep-1",
        ExpectedVersion::NoStream,
        vec![
            event("E", "{}", ids[0].clone()),
            event("F", "[1]", ids[1].clone()),
        ],
    );
    store.append(request.clone()).await.expect("an append");
    store
        .append(AppendRequest {
            command: Some(CommandEntry {
                id: "cmd-kept".into(),
                record: b"{}".to_vec(),
                tally: "kept/v1".into(),
            }),
            ..append("keep-2", ExpectedVersion::Any, vec![event("E", "{}", None)])
        })
        .await
        .expect("a command append");
    store
        .write_data(vec![write("state", "k", Some("v"))], None)
        .await
        .expect("a write");
    store
        .save_plugin("p", b"{}".to_vec(), vec![("p/wasm".into(), vec![1, 2])])
        .await
        .expect("a plugin");
    let log_before = whole_log(store.as_ref()).await;
    store.close().await;
    let store = open(backend, &place).await;
    assert_eq!(store.head(), 3);
    let log_after = whole_log(store.as_ref()).await;
    let jsons = |log: &[RecordedEvent]| log.iter().map(|e| e.json.clone()).collect::<Vec<_>>();
    assert_eq!(
        jsons(&log_before),
        jsons(&log_after),
        "the log is the same, byte for byte"
    );
    match store.append(request).await {
        Ok(AppendOutcome::AlreadyWritten(_)) => {}
        other => panic!("a retry after reopening answered {other:?}"),
    }
    assert!(store.read_command("cmd-kept").await.unwrap().is_some());
    assert_eq!(
        store.command_tallies("kept/").await.unwrap(),
        vec![("kept/v1".to_owned(), 1)]
    );
    let snapshot = store.snapshot().await.expect("a snapshot");
    assert_eq!(
        snapshot.get("state", "k").await.unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(store.blob("p/wasm").await.unwrap(), Some(vec![1, 2]));
    assert_eq!(store.plugin_records().await.unwrap().len(), 1);
    let written = store
        .append(append(
            "keep-1",
            ExpectedVersion::Exact(2),
            vec![event("G", "{}", None)],
        ))
        .await
        .expect("an append after reopening");
    match written {
        AppendOutcome::Written(result) => assert_eq!(result.first_position, 4),
        other => panic!("{other:?}"),
    }
    store.close().await;
}

#[cfg(test)]
mod tests {
    crate::conformance_tests!(super::Reference);
}

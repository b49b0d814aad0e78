//! The traits a storage backend implements, one per concern, and the unit of commit they share.
//!
//! Every operation is async: a backend on a network does its I/O without holding a thread, and
//! the embedded one hands its blocking work to threads of its own. `docs/storage.md` states the
//! rules each method keeps; the conformance suite ([`crate::conformance`]) checks them.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::claims::{Holder, LeaseClaim, NodeInfo, NodeSeen};
use crate::{
    AppendOutcome, AppendRequest, CommitError, Direction, LogFilter, LogPage, RecordedEvent,
    StorageError, StoredCommand, StreamPage,
};

/// A change to the data plugins keep beside the log (projection and policy state, checkpoints,
/// outboxes, timers): a key of a space set to a value, or removed. The store keeps spaces, keys
/// and values opaque; the plugin runners give them meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataWrite {
    pub space: Arc<str>,
    pub key: String,
    /// The new value, or `None` to remove the key.
    pub value: Option<Vec<u8>>,
}

/// A lease's token a commit must still hold: the commit is refused ([`CommitError::Fenced`])
/// when the lease has been taken again since the token was handed out, so a runner that lost
/// its lease (to another node, or to its own successor) cannot overwrite what the new holder
/// wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub token: u64,
}

impl Fence {
    /// Whether a commit under this fence may go on, the lease's last token being `current`
    /// (0 when none was handed out): refused with [`CommitError::Fenced`] unless they are equal.
    pub fn check(&self, current: u64) -> Result<(), CommitError> {
        if current == self.token {
            return Ok(());
        }
        Err(CommitError::Fenced {
            lease: self.lease.clone(),
            token: self.token,
            current,
        })
    }
}

/// One atomic unit of commit: an append, data writes, or both, under an optional fence. All of
/// it becomes durable together, or none of it: a refused append or a failed fence writes no
/// data either.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub append: Option<AppendRequest>,
    /// Applied in order, after the append.
    pub data: Vec<DataWrite>,
    pub fence: Option<Fence>,
    /// Whether the answer carries the records the append wrote.
    pub want_records: bool,
}

impl Commit {
    /// What the commit weighs against the bounds of a commit group: (events and data writes,
    /// bytes of event data, metadata, keys and values).
    pub fn weight(&self) -> (usize, usize) {
        let events = self.append.as_ref().map_or(&[][..], |a| &a.events[..]);
        let bytes = events
            .iter()
            .map(|e| e.data.len() + e.metadata.len())
            .chain(
                self.data
                    .iter()
                    .map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len)),
            )
            .sum();
        (events.len() + self.data.len(), bytes)
    }
}

/// What a durable commit did.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// The append's outcome, when the commit carried one.
    pub append: Option<AppendOutcome>,
    /// The records the append wrote, when asked for and it wrote any.
    pub records: Vec<RecordedEvent>,
}

/// Counters a backend keeps about its own work, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreStats {
    pub commits: u64,
    pub committed_appends: u64,
    pub commit_seconds: f64,
}

/// Writing: the one way anything changes in the store.
#[async_trait]
pub trait Commits: Send + Sync {
    /// Commits `commit` atomically; answers once it is durable, or refused.
    async fn commit(&self, commit: Commit) -> Result<Committed, CommitError>;

    /// Appends: a commit of an append alone.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, CommitError> {
        let committed = self
            .commit(Commit {
                append: Some(request),
                ..Commit::default()
            })
            .await?;
        Ok(committed
            .append
            .expect("a commit with an append answers its outcome"))
    }

    /// Appends, and answers with the records written (none when the append had been written
    /// before), sparing the caller a read.
    async fn append_returning_records(
        &self,
        request: AppendRequest,
    ) -> Result<(AppendOutcome, Vec<RecordedEvent>), CommitError> {
        let committed = self
            .commit(Commit {
                append: Some(request),
                want_records: true,
                ..Commit::default()
            })
            .await?;
        let outcome = committed
            .append
            .expect("a commit with an append answers its outcome");
        Ok((outcome, committed.records))
    }

    /// Writes plugin data: a commit of `writes` alone, under `fence` if given.
    async fn write_data(
        &self,
        writes: Vec<DataWrite>,
        fence: Option<Fence>,
    ) -> Result<(), CommitError> {
        self.commit(Commit {
            data: writes,
            fence,
            ..Commit::default()
        })
        .await
        .map(drop)
    }
}

/// Reading the log: streams, the global log, and its head.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Up to `limit` events of one stream from version `from` (`None`: the start in that
    /// direction). `Ok(None)` when the stream does not exist.
    async fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        limit: usize,
        direction: Direction,
    ) -> Result<Option<StreamPage>, StorageError>;

    /// Up to `limit` events of the global log from position `from` on that match `filter`, in
    /// position order.
    async fn read_log(
        &self,
        from: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, StorageError>;

    /// The last durable position (0 when empty).
    fn head(&self) -> u64;

    /// Follows the head: the receiver sees every new durable head, without polling.
    fn watch_head(&self) -> watch::Receiver<u64>;
}

/// The record of commands, written with their events by [`Commits::commit`].
#[async_trait]
pub trait CommandLog: Send + Sync {
    /// The record of a command, if its id is recorded.
    async fn read_command(&self, id: &str) -> Result<Option<StoredCommand>, StorageError>;

    /// Up to `limit` recorded commands whose ids start with `prefix` and come after `after`,
    /// in id order.
    async fn scan_commands(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredCommand)>, StorageError>;

    /// The tallies of recorded commands whose names start with `prefix`, by name.
    async fn command_tallies(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError>;
}

/// The catalog of deployed plugins: their records and blobs (uploads, compiled artifacts),
/// opaque to the store.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// The records of every plugin, by name.
    async fn plugin_records(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError>;

    /// Durably stores a plugin's record together with new blobs, in one transaction.
    async fn save_plugin(
        &self,
        name: &str,
        record: Vec<u8>,
        blobs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StorageError>;

    /// A blob by key.
    async fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Durably stores a blob under `key`, replacing what was there.
    async fn save_blob(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError>;

    /// Durably removes the blobs whose keys start with `prefix`; answers how many there were.
    async fn delete_blobs(&self, prefix: &str) -> Result<u64, StorageError>;

    /// Follows changes of the plugin records: the receiver sees a new value after every
    /// [`Catalog::save_plugin`], this process's or (where nodes share the store) another
    /// node's, without polling.
    fn watch_catalog(&self) -> watch::Receiver<u64>;
}

/// A consistent, read-only view of the plugin data at one moment: every later write is
/// invisible to it.
#[async_trait]
pub trait DataSnapshot: Send + Sync {
    /// The value of `key` in `space`.
    async fn get(&self, space: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Up to `limit` entries of `space` whose keys start with `prefix` and come after `after`,
    /// in key order.
    async fn scan(
        &self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
}

/// The data plugins keep beside the log, and the leases that fence their writers.
#[async_trait]
pub trait PluginData: Send + Sync {
    /// A snapshot of the plugin data, as of the last durable commit.
    async fn snapshot(&self) -> Result<Box<dyn DataSnapshot>, StorageError>;

    /// Durably removes every entry of the spaces whose names start with `prefix`; answers how
    /// many entries were removed.
    async fn delete_data(&self, space_prefix: &str) -> Result<u64, StorageError>;

    /// Takes the lease `lease`: durably hands out a token greater than any handed out for it
    /// before, so that commits fenced with an older token are refused from now on.
    async fn take_lease(&self, lease: &str) -> Result<u64, StorageError>;
}

/// Leases claimed for a while, and the nodes that claim them: how the nodes sharing a store agree
/// which one runs each projection and policy version ([`crate::claims`] states the rules).
#[async_trait]
pub trait Coordination: Send + Sync {
    /// Claims `lease` for `holder` for `ttl` (by the store's clock): granted when it is free, its
    /// claim has expired, or the claim is the holder's node's; renewed, with the same token, when
    /// it is the holder's own. Answers the token to fence commits with, or `None` while another
    /// node's claim is live. A grant to a new holder hands out a new token, as
    /// [`PluginData::take_lease`] does.
    async fn claim_lease(
        &self,
        lease: &str,
        holder: &Holder,
        ttl: std::time::Duration,
    ) -> Result<Option<u64>, StorageError>;

    /// Ends `holder`'s claim on `lease` at once, if it holds it (the token stays).
    async fn release_lease(&self, lease: &str, holder: &Holder) -> Result<(), StorageError>;

    /// Every claimed lease, by name.
    async fn lease_claims(&self) -> Result<Vec<LeaseClaim>, StorageError>;

    /// Records that `node` is alive now; answers every node heard of within `ttl`, this one
    /// included, by node name.
    async fn heartbeat(
        &self,
        node: &NodeInfo,
        ttl: std::time::Duration,
    ) -> Result<Vec<NodeSeen>, StorageError>;
}

/// The store's life: whether it takes writes, its counters, and its end.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Work counters for metrics.
    fn stats(&self) -> StoreStats;

    /// Whether commits can still be made durable: false once the store has been closed or its
    /// writer has failed.
    fn accepts_writes(&self) -> bool;

    /// Stops taking writes, finishes the ones in flight and closes cleanly.
    async fn close(&self);

    /// What the storage engine says of itself, for operators: its name and, for a database, its
    /// role and replication as far as it reports them.
    async fn report(&self) -> Result<serde_json::Value, StorageError>;
}

/// A whole backend: every concern of the contract.
pub trait Store:
    Commits + EventLog + CommandLog + Catalog + PluginData + Coordination + Lifecycle + 'static
{
}

impl<T> Store for T where
    T: Commits + EventLog + CommandLog + Catalog + PluginData + Coordination + Lifecycle + 'static
{
}

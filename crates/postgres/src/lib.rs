//! The PostgreSQL backend of evhost: the store contract on one PostgreSQL database, which
//! several evhost nodes share.
//!
//! Each node keeps a writer task ([`writer`]) that commits in groups, one transaction per group
//! locking the one `head` row, so positions are gapless and in commit order across nodes; a
//! follower task ([`follow`]) that hears every node's commits over LISTEN/NOTIFY and moves the
//! head it watches; and a pool of connections for reads, snapshots (each a REPEATABLE READ
//! transaction held open while the snapshot lives), the catalog and leases. The connection
//! string may name several hosts with `target_session_attrs=read-write`, so that after a
//! failover every connection finds the new primary by itself; writes wait for it (up to
//! [`PgOptions::retry_for`]) rather than failing.
//!
//! Architecture Invariant: every append is decided by the contract's rules
//! ([`evhost_store::rules::decide`]) inside the transaction that writes it, with the head row
//! locked; an append is answered only after PostgreSQL answered its COMMIT, or, when that answer
//! was lost, after the group's marker row said whether it is durable.
//! Architecture Invariant: a fenced commit checks its lease's token inside its own transaction,
//! holding the lease row (FOR SHARE), so a lease taken again refuses it or waits for it.

mod error;
mod follow;
mod schema;
#[cfg(any(test, feature = "test-server"))]
pub mod test_server;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::{StreamExt, pin_mut};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use evhost_store::claims::{Holder, LeaseClaim, NodeInfo, NodeSeen};
use evhost_store::{
    AppendLimits, Catalog, CommandLog, Commit, CommitError, Commits, Committed, Coordination,
    DataSnapshot, Direction, EventLog, Lifecycle, LogFilter, LogPage, PAGE_BYTES, PluginData,
    RecordedEvent, StorageError, StoreStats, StoredCommand, StreamPage, log_next, stream_next,
    stream_window,
};

pub use schema::SCHEMA_VERSION;

use error::{database, pool};
use writer::{Job, Message, Writer};

/// How to reach the database and what the store allows.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A libpq connection string or URL (`postgres://user@host1,host2/db?target_session_attrs=read-write`).
    pub url: String,
    /// The PostgreSQL schema that holds the store's tables; several stores may share a database
    /// under different schemas.
    pub schema: String,
    /// The most one append may carry.
    pub append_limits: AppendLimits,
    /// A page of events read ends once its records hold this many bytes.
    pub page_bytes: usize,
    /// Connections the node keeps for reads, snapshots and the catalog (the writer and the
    /// follower have one each besides).
    pub pool_size: usize,
    /// How long a write waits for PostgreSQL to come back (a restart, a failover) before it is
    /// answered as unavailable.
    pub retry_for: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            schema: "evhost".into(),
            append_limits: AppendLimits::default(),
            page_bytes: PAGE_BYTES,
            pool_size: 16,
            retry_for: Duration::from_secs(30),
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub commits: AtomicU64,
    pub committed_appends: AtomicU64,
    pub commit_nanos: AtomicU64,
}

/// What the store's tasks share.
pub(crate) struct Shared {
    pub config: tokio_postgres::Config,
    pub head: watch::Sender<u64>,
    closed: watch::Sender<bool>,
    pub counters: Counters,
    pub id_tag: u32,
    pub options: PgOptions,
    /// The channel the store's commits are announced on.
    pub channel: String,
    /// The channel changes of plugin records are announced on, and how many were heard of.
    pub catalog_channel: String,
    pub catalog: watch::Sender<u64>,
}

impl Shared {
    /// A connection of its own (not from the pool), driven by a task of its own.
    pub async fn connect(&self) -> Result<Client, StorageError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(database)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!("a PostgreSQL connection ended: {error}");
            }
        });
        Ok(client)
    }

    /// Moves the head forward to `head` (never back: a notification may arrive after the
    /// writer already moved it further).
    pub fn advance_head(&self, head: u64) {
        self.head.send_if_modified(|current| {
            if head > *current {
                *current = head;
                true
            } else {
                false
            }
        });
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    pub fn closed_watch(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

/// The PostgreSQL [`evhost_store::Store`].
pub struct PgStore {
    shared: Arc<Shared>,
    pool: Pool,
    writer: mpsc::UnboundedSender<Message>,
}

/// Whether `schema` is a name the store can use unquoted and unescaped: lowercase letters,
/// digits and underscores, not starting with a digit, at most 48 bytes (the channel name adds
/// to it and PostgreSQL's identifiers end at 63).
fn check_schema(schema: &str) -> Result<(), StorageError> {
    let valid = !schema.is_empty()
        && schema.len() <= 48
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StorageError::Failed(format!(
            "the schema name {schema:?} must be 1 to 48 lowercase letters, digits and underscores, \
             not starting with a digit"
        )))
    }
}

/// The connection settings: the URL's, with the store's schema first on the search path, and
/// timeouts that notice a dead or cut-off server in seconds rather than hours, unless the URL
/// chose its own.
fn connection_config(options: &PgOptions) -> Result<tokio_postgres::Config, StorageError> {
    let mut config: tokio_postgres::Config = options.url.parse().map_err(|e| {
        StorageError::Failed(format!(
            "the PostgreSQL connection string is not valid: {e}"
        ))
    })?;
    // Bitmap scans are off: a log that grows faster than autovacuum analyzes it leaves the
    // planner sure that a range of positions holds a few rows, and a bitmap scan of a range
    // then sorts every event up to the head to return one page. Every query here has an index
    // that answers it in order. The sorts that remain merge a page per category in memory.
    let search_path = format!(
        "-c search_path={} -c enable_bitmapscan=off -c work_mem=16MB",
        options.schema
    );
    let server_options = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {search_path}"),
        _ => search_path,
    };
    config.options(server_options);
    if config.get_application_name().is_none() {
        config.application_name("evhost");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    // The URL left keepalives at libpq's two hours: probe an idle connection after 5 s.
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(5));
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(Duration::from_secs(2));
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(3);
        }
    }
    // Data sent and not acknowledged for this long (a server cut off mid-answer) breaks the
    // connection, so that a write finds the new primary instead of waiting forever.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(15));
    }
    Ok(config)
}

impl PgStore {
    /// Connects, creates or migrates the schema, and starts the node's writer and follower.
    /// Waits up to [`PgOptions::retry_for`] for the database to answer.
    pub async fn open(options: PgOptions) -> Result<Self, StorageError> {
        check_schema(&options.schema)?;
        let config = connection_config(&options)?;
        let deadline = tokio::time::Instant::now() + options.retry_for;
        let mut backoff = Duration::from_millis(50);
        let (id_tag, head) = loop {
            match Self::prepare(&config, &options.schema).await {
                Ok(prepared) => break prepared,
                Err(StorageError::Unavailable(error))
                    if tokio::time::Instant::now() + backoff < deadline =>
                {
                    tracing::warn!("waiting for PostgreSQL: {error}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(error) => return Err(error),
            }
        };
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.retry_for))
            .build()
            .map_err(|e| StorageError::Failed(format!("the connection pool: {e}")))?;
        let shared = Arc::new(Shared {
            config,
            head: watch::Sender::new(head),
            closed: watch::Sender::new(false),
            counters: Counters::default(),
            id_tag,
            channel: format!("{}.head", options.schema),
            catalog_channel: format!("{}.catalog", options.schema),
            catalog: watch::Sender::new(0),
            options,
        });
        let (writer, messages) = mpsc::unbounded_channel();
        tokio::spawn(Writer::new(shared.clone()).run(messages));
        tokio::spawn(follow::follow_head(shared.clone()));
        Ok(PgStore {
            shared,
            pool,
            writer,
        })
    }

    /// Migrates the schema and reads the id tag and the head.
    async fn prepare(
        config: &tokio_postgres::Config,
        schema: &str,
    ) -> Result<(u32, u64), StorageError> {
        let (mut client, connection) = config.connect(NoTls).await.map_err(database)?;
        let driver = tokio::spawn(connection);
        let prepared = async {
            let id_tag = schema::migrate(&mut client, schema).await?;
            let head: i64 = client
                .query_one("SELECT position FROM head WHERE id = 1", &[])
                .await
                .map_err(database)?
                .get(0);
            Ok((id_tag, head as u64))
        }
        .await;
        drop(client);
        let _ = driver.await;
        prepared
    }

    async fn client(&self) -> Result<Object, StorageError> {
        if self.shared.is_closed() {
            return Err(StorageError::Closed);
        }
        self.pool.get().await.map_err(pool)
    }

    /// Deletes the rows of `table` whose text `column` starts with `prefix`; answers how many.
    async fn delete_prefixed(
        &self,
        table: &str,
        column: &str,
        prefix: &str,
    ) -> Result<u64, StorageError> {
        if !storable(prefix) {
            return Ok(0);
        }
        let range = text_range(prefix, None);
        let sql = format!("DELETE FROM {table} WHERE {}", range.condition(column, 1));
        let client = self.client().await?;
        client
            .execute(&sql, &range.params())
            .await
            .map_err(database)
    }

    /// The rows of `sql` as recorded events, in order, until their records hold the page's
    /// bytes; and whether more rows followed.
    async fn page(
        &self,
        client: &Object,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(Vec<RecordedEvent>, bool), StorageError> {
        let statement = client.prepare_cached(sql).await.map_err(database)?;
        let rows = client
            .query_raw(&statement, params.iter().copied())
            .await
            .map_err(database)?;
        pin_mut!(rows);
        let mut events = Vec::new();
        let mut bytes = 0;
        while let Some(row) = rows.next().await {
            let row = row.map_err(database)?;
            if bytes >= self.shared.options.page_bytes {
                return Ok((events, true));
            }
            let json: Vec<u8> = row.get(1);
            bytes += json.len();
            events.push(RecordedEvent {
                position: row.get::<_, i64>(0) as u64,
                json,
            });
        }
        Ok((events, false))
    }
}

/// The names, sorted, each once.
fn distinct(names: &[String]) -> Vec<&str> {
    let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The query of a page of the log from $1 to $2, at most $3 events, of the categories $4 and
/// the event types $5 (either empty for all). Each is answered by an index in position order: a
/// single category or type by its index directly; several by a page of each, merged.
fn log_query(categories: &[&str], types: &[&str]) -> &'static str {
    match (categories.len(), types.len()) {
        (0, 0) => {
            "SELECT position, record FROM events
             WHERE position BETWEEN $1 AND $2 AND cardinality($4::text[]) = 0
               AND cardinality($5::text[]) = 0
             ORDER BY position LIMIT $3"
        }
        (1, _) => {
            "SELECT position, record FROM events
             WHERE category = ($4::text[])[1] AND position BETWEEN $1 AND $2
               AND (cardinality($5::text[]) = 0 OR event_type = ANY($5))
             ORDER BY position LIMIT $3"
        }
        (0, 1) => {
            "SELECT position, record FROM events
             WHERE event_type = ($5::text[])[1] AND position BETWEEN $1 AND $2
               AND cardinality($4::text[]) = 0
             ORDER BY position LIMIT $3"
        }
        (0, _) => {
            "SELECT e.position, e.record FROM unnest($5::text[]) AS t(name)
             CROSS JOIN LATERAL (
                 SELECT position, record FROM events
                 WHERE event_type = t.name AND position BETWEEN $1 AND $2
                   AND cardinality($4::text[]) = 0
                 ORDER BY position LIMIT $3
             ) e
             ORDER BY e.position LIMIT $3"
        }
        _ => {
            "SELECT e.position, e.record FROM unnest($4::text[]) AS c(name)
             CROSS JOIN LATERAL (
                 SELECT position, record FROM events
                 WHERE category = c.name AND position BETWEEN $1 AND $2
                   AND (cardinality($5::text[]) = 0 OR event_type = ANY($5))
                 ORDER BY position LIMIT $3
             ) e
             ORDER BY e.position LIMIT $3"
        }
    }
}

/// Text PostgreSQL cannot hold (a NUL) names nothing that is stored.
fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// The smallest string above every string that starts with `prefix` (in code point order, which
/// is the byte order of UTF-8 and of the "C" collation), or `None` when there is none.
fn text_after_prefix(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The smallest byte string above every one that starts with `prefix`, or `None`.
fn bytes_after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = prefix.to_vec();
    while let Some(last) = bytes.pop() {
        if last < u8::MAX {
            bytes.push(last + 1);
            return Some(bytes);
        }
    }
    None
}

/// The keys of a scan: from the prefix (or after `after`, when that is within or past the
/// prefix's keys) to the end of the prefix's keys, as a condition on `column` whose parameters
/// start at `$first`.
struct KeyRange<K> {
    low: K,
    low_inclusive: bool,
    high: Option<K>,
}

impl<K> KeyRange<K> {
    fn condition(&self, column: &str, first: usize) -> String {
        let low = if self.low_inclusive { ">=" } else { ">" };
        match self.high {
            Some(_) => format!("{column} {low} ${first} AND {column} < ${}", first + 1),
            None => format!("{column} {low} ${first}"),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)>
    where
        K: ToSql + Sync,
    {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.low];
        if let Some(high) = &self.high {
            params.push(high);
        }
        params
    }
}

fn text_range(prefix: &str, after: Option<&str>) -> KeyRange<String> {
    let (low, low_inclusive) = match after {
        Some(after) if after >= prefix => (after.to_owned(), false),
        _ => (prefix.to_owned(), true),
    };
    KeyRange {
        low,
        low_inclusive,
        high: text_after_prefix(prefix),
    }
}

fn bytes_range(prefix: &str, after: Option<&str>) -> KeyRange<Vec<u8>> {
    let (low, low_inclusive) = match after {
        Some(after) if after >= prefix => (after.as_bytes().to_vec(), false),
        _ => (prefix.as_bytes().to_vec(), true),
    };
    KeyRange {
        low,
        low_inclusive,
        high: bytes_after_prefix(prefix.as_bytes()),
    }
}

/// A text column read back as the UTF-8 string it was written from.
fn utf8(bytes: Vec<u8>) -> Result<String, StorageError> {
    String::from_utf8(bytes).map_err(|e| StorageError::Failed(format!("a stored key: {e}")))
}

/// A row limit for SQL (PostgreSQL's LIMIT is a bigint).
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl Commits for PgStore {
    async fn commit(&self, commit: Commit) -> Result<Committed, CommitError> {
        if self.shared.is_closed() {
            return Err(StorageError::Closed.into());
        }
        if let Some(request) = &commit.append {
            self.shared.options.append_limits.check(&request.events)?;
        }
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Message::Commit(Job { commit, reply }))
            .map_err(|_| StorageError::Closed)?;
        answer.await.map_err(|_| StorageError::Closed)?
    }
}

#[async_trait]
impl EventLog for PgStore {
    async fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        limit: usize,
        direction: Direction,
    ) -> Result<Option<StreamPage>, StorageError> {
        if !storable(stream) {
            return Ok(None);
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT version FROM streams WHERE stream = $1")
            .await
            .map_err(database)?;
        let Some(row) = client
            .query_opt(&statement, &[&stream])
            .await
            .map_err(database)?
        else {
            return Ok(None);
        };
        let version = row.get::<_, i64>(0) as u64;
        let window = stream_window(version, from, limit, direction);
        let (events, wanted) = if window.0 <= window.1 {
            let sql = match direction {
                Direction::Forward => {
                    "SELECT position, record FROM events
                     WHERE stream = $1 AND version BETWEEN $2 AND $3 ORDER BY version"
                }
                Direction::Backward => {
                    "SELECT position, record FROM events
                     WHERE stream = $1 AND version BETWEEN $2 AND $3 ORDER BY version DESC"
                }
            };
            let (low, high) = (window.0 as i64, window.1 as i64);
            let (events, _) = self.page(&client, sql, &[&stream, &low, &high]).await?;
            (events, window.1 + 1 - window.0)
        } else {
            (Vec::new(), 0)
        };
        let next = stream_next(direction, window, version, events.len() as u64, wanted);
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
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT position FROM head WHERE id = 1")
            .await
            .map_err(database)?;
        let head = client
            .query_one(&statement, &[])
            .await
            .map_err(database)?
            .get::<_, i64>(0) as u64;
        // The follower may not have heard of the newest commits yet: the page's head is news.
        self.shared.advance_head(head);
        let from = from.max(1);
        if limit == 0 || from > head {
            return Ok(LogPage {
                events: Vec::new(),
                next: None,
                head,
            });
        }
        // Each name once: a page per category is merged, and a category named twice would give
        // its events twice.
        let (categories, types) = (distinct(&filter.categories), distinct(&filter.event_types));
        let limit_param = sql_limit(limit);
        // Positions are gapless, so without a filter the page is exactly the positions from
        // `from` on; with one, it is anywhere up to the head.
        let until = if categories.is_empty() && types.is_empty() {
            head.min(from.saturating_add(limit_param as u64 - 1))
        } else {
            head
        };
        let (from_param, until_param) = (from as i64, until as i64);
        let params: Vec<&(dyn ToSql + Sync)> =
            vec![&from_param, &until_param, &limit_param, &categories, &types];
        let (events, more) = self
            .page(&client, log_query(&categories, &types), &params)
            .await?;
        let wanted = events.len() + usize::from(more);
        let next = log_next(&events, wanted, limit, head);
        Ok(LogPage { events, next, head })
    }

    fn head(&self) -> u64 {
        *self.shared.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }
}

#[async_trait]
impl CommandLog for PgStore {
    async fn read_command(&self, id: &str) -> Result<Option<StoredCommand>, StorageError> {
        if !storable(id) {
            return Ok(None);
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT record, position, event_count FROM commands WHERE id = $1")
            .await
            .map_err(database)?;
        Ok(client
            .query_opt(&statement, &[&id])
            .await
            .map_err(database)?
            .map(|row| StoredCommand {
                record: row.get(0),
                position: row.get::<_, i64>(1) as u64,
                event_count: row.get::<_, i64>(2) as u64,
            }))
    }

    async fn scan_commands(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredCommand)>, StorageError> {
        if !storable(prefix) || !after.is_none_or(storable) {
            return Ok(Vec::new());
        }
        let range = text_range(prefix, after);
        let limit = sql_limit(limit);
        let mut params = range.params();
        params.push(&limit);
        let sql = format!(
            "SELECT id, record, position, event_count FROM commands WHERE {} ORDER BY id LIMIT ${}",
            range.condition("id", 1),
            params.len()
        );
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(database)?;
        Ok(client
            .query(&statement, &params)
            .await
            .map_err(database)?
            .into_iter()
            .map(|row| {
                (
                    row.get(0),
                    StoredCommand {
                        record: row.get(1),
                        position: row.get::<_, i64>(2) as u64,
                        event_count: row.get::<_, i64>(3) as u64,
                    },
                )
            })
            .collect())
    }

    async fn command_tallies(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        if !storable(prefix) {
            return Ok(Vec::new());
        }
        let range = text_range(prefix, None);
        let params = range.params();
        let sql = format!(
            "SELECT name, count FROM tallies WHERE {} ORDER BY name",
            range.condition("name", 1)
        );
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(database)?;
        Ok(client
            .query(&statement, &params)
            .await
            .map_err(database)?
            .into_iter()
            .map(|row| (row.get(0), row.get::<_, i64>(1) as u64))
            .collect())
    }
}

#[async_trait]
impl Catalog for PgStore {
    async fn plugin_records(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let client = self.client().await?;
        Ok(client
            .query("SELECT name, record FROM plugins ORDER BY name", &[])
            .await
            .map_err(database)?
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    async fn save_plugin(
        &self,
        name: &str,
        record: Vec<u8>,
        blobs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(database)?;
        txn.execute(
            "INSERT INTO plugins (name, record) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
            &[&name, &record],
        )
        .await
        .map_err(database)?;
        for (key, bytes) in &blobs {
            txn.execute(UPSERT_BLOB, &[key, bytes])
                .await
                .map_err(database)?;
        }
        // Every node (this one included) hears of it once it commits.
        txn.execute(
            "SELECT pg_notify($1, $2)",
            &[&self.shared.catalog_channel, &name],
        )
        .await
        .map_err(database)?;
        txn.commit().await.map_err(database)?;
        self.shared.catalog.send_modify(|changes| *changes += 1);
        Ok(())
    }

    async fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if !storable(key) {
            return Ok(None);
        }
        let client = self.client().await?;
        Ok(client
            .query_opt("SELECT bytes FROM blobs WHERE key = $1", &[&key])
            .await
            .map_err(database)?
            .map(|row| row.get(0)))
    }

    async fn save_blob(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute(UPSERT_BLOB, &[&key, &bytes])
            .await
            .map_err(database)
            .map(drop)
    }

    fn watch_catalog(&self) -> watch::Receiver<u64> {
        self.shared.catalog.subscribe()
    }

    async fn delete_blobs(&self, prefix: &str) -> Result<u64, StorageError> {
        self.delete_prefixed("blobs", "key", prefix).await
    }
}

const UPSERT_BLOB: &str = "INSERT INTO blobs (key, bytes) VALUES ($1, $2)
     ON CONFLICT (key) DO UPDATE SET bytes = EXCLUDED.bytes";

/// The plugin data as of one moment: a REPEATABLE READ transaction on a pooled connection,
/// ended (rolled back) when the snapshot is dropped.
struct PgSnapshot {
    client: Option<Object>,
}

impl PgSnapshot {
    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a live snapshot holds its connection")
    }
}

impl Drop for PgSnapshot {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        // The connection goes back to the pool only once its transaction has ended; without a
        // runtime to end it on, it is closed instead.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

#[async_trait]
impl DataSnapshot for PgSnapshot {
    async fn get(&self, space: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if !storable(space) {
            return Ok(None);
        }
        let client = self.client();
        let statement = client
            .prepare_cached("SELECT value FROM data WHERE space = $1 AND key = $2")
            .await
            .map_err(database)?;
        Ok(client
            .query_opt(&statement, &[&space, &key.as_bytes()])
            .await
            .map_err(database)?
            .map(|row| row.get(0)))
    }

    async fn scan(
        &self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        if !storable(space) {
            return Ok(Vec::new());
        }
        let range = bytes_range(prefix, after);
        let limit = sql_limit(limit);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&space];
        params.extend(range.params());
        params.push(&limit);
        let sql = format!(
            "SELECT key, value FROM data WHERE space = $1 AND {} ORDER BY key LIMIT ${}",
            range.condition("key", 2),
            params.len()
        );
        let client = self.client();
        let statement = client.prepare_cached(&sql).await.map_err(database)?;
        client
            .query(&statement, &params)
            .await
            .map_err(database)?
            .into_iter()
            .map(|row| Ok((utf8(row.get(0))?, row.get(1))))
            .collect()
    }
}

#[async_trait]
impl PluginData for PgStore {
    async fn snapshot(&self) -> Result<Box<dyn DataSnapshot>, StorageError> {
        let client = self.client().await?;
        // The snapshot is taken by the transaction's first query, so one is run at once.
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1")
            .await
            .map_err(database)?;
        Ok(Box::new(PgSnapshot {
            client: Some(client),
        }))
    }

    async fn delete_data(&self, space_prefix: &str) -> Result<u64, StorageError> {
        self.delete_prefixed("data", "space", space_prefix).await
    }

    async fn take_lease(&self, lease: &str) -> Result<u64, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO leases (name, token) VALUES ($1, 1)
                 ON CONFLICT (name) DO UPDATE SET token = leases.token + 1,
                     node = NULL, incarnation = NULL, since = NULL, expires_at = NULL
                 RETURNING token",
                &[&lease],
            )
            .await
            .map_err(database)?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

/// Milliseconds in `ttl` as an SQL parameter.
fn ttl_param(ttl: Duration) -> f64 {
    evhost_store::claims::ttl_ms(ttl) as f64
}

#[async_trait]
impl Coordination for PgStore {
    async fn claim_lease(
        &self,
        lease: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<u64>, StorageError> {
        // The rules of `evhost_store::claims::decide_claim`, by the database's clock: renewed
        // for the same holder, granted (a new token) when free, expired or the same node's.
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO leases AS l (name, token, node, incarnation, since, expires_at)
                 VALUES ($1, 1, $2, $3, now(), now() + $4 * interval '1 millisecond')
                 ON CONFLICT (name) DO UPDATE SET
                     token = CASE WHEN l.node = EXCLUDED.node
                                   AND l.incarnation = EXCLUDED.incarnation
                                   AND l.expires_at > now()
                              THEN l.token ELSE l.token + 1 END,
                     since = CASE WHEN l.node = EXCLUDED.node
                                   AND l.incarnation = EXCLUDED.incarnation
                                   AND l.expires_at > now()
                              THEN l.since ELSE now() END,
                     node = EXCLUDED.node,
                     incarnation = EXCLUDED.incarnation,
                     expires_at = EXCLUDED.expires_at
                 WHERE l.node IS NULL OR l.expires_at IS NULL OR l.expires_at <= now()
                    OR l.node = EXCLUDED.node
                 RETURNING token",
            )
            .await
            .map_err(database)?;
        let rows = client
            .query(
                &statement,
                &[&lease, &holder.node, &holder.incarnation, &ttl_param(ttl)],
            )
            .await
            .map_err(database)?;
        Ok(rows.first().map(|row| row.get::<_, i64>(0) as u64))
    }

    async fn release_lease(&self, lease: &str, holder: &Holder) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE leases SET expires_at = now()
                 WHERE name = $1 AND node = $2 AND incarnation = $3",
                &[&lease, &holder.node, &holder.incarnation],
            )
            .await
            .map_err(database)
            .map(drop)
    }

    async fn lease_claims(&self) -> Result<Vec<LeaseClaim>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, token, node, incarnation,
                        to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        greatest(0, extract(epoch FROM expires_at - now()) * 1000)::float8
                 FROM leases WHERE node IS NOT NULL ORDER BY name",
                &[],
            )
            .await
            .map_err(database)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let expires_in_ms = row.get::<_, Option<f64>>(5).unwrap_or(0.0) as u64;
                let live = expires_in_ms > 0;
                LeaseClaim {
                    lease: row.get(0),
                    token: row.get::<_, i64>(1) as u64,
                    holder: live.then(|| Holder {
                        node: row.get(2),
                        incarnation: row.get(3),
                    }),
                    since: if live { row.get(4) } else { None },
                    expires_in_ms,
                }
            })
            .collect())
    }

    async fn heartbeat(
        &self,
        node: &NodeInfo,
        ttl: Duration,
    ) -> Result<Vec<NodeSeen>, StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO nodes (node, incarnation, address, version, started_at, heartbeat_at)
                 VALUES ($1, $2, $3, $4, $5, now())
                 ON CONFLICT (node) DO UPDATE SET incarnation = EXCLUDED.incarnation,
                     address = EXCLUDED.address, version = EXCLUDED.version,
                     started_at = EXCLUDED.started_at, heartbeat_at = now()",
                &[
                    &node.node,
                    &node.incarnation,
                    &node.address,
                    &node.version,
                    &node.started_at,
                ],
            )
            .await
            .map_err(database)?;
        let rows = client
            .query(
                "SELECT node, incarnation, address, version, started_at,
                        (extract(epoch FROM now() - heartbeat_at) * 1000)::float8
                 FROM nodes WHERE heartbeat_at > now() - $1 * interval '1 millisecond'
                 ORDER BY node",
                &[&ttl_param(ttl)],
            )
            .await
            .map_err(database)?;
        Ok(rows
            .into_iter()
            .map(|row| NodeSeen {
                info: NodeInfo {
                    node: row.get(0),
                    incarnation: row.get(1),
                    address: row.get(2),
                    version: row.get(3),
                    started_at: row.get(4),
                },
                heartbeat_ms_ago: row.get::<_, f64>(5).max(0.0) as u64,
            })
            .collect())
    }
}

#[async_trait]
impl Lifecycle for PgStore {
    fn stats(&self) -> StoreStats {
        let counters = &self.shared.counters;
        StoreStats {
            commits: counters.commits.load(Ordering::Relaxed),
            committed_appends: counters.committed_appends.load(Ordering::Relaxed),
            commit_seconds: counters.commit_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    fn accepts_writes(&self) -> bool {
        !self.shared.is_closed()
    }

    async fn close(&self) {
        if self.shared.is_closed() {
            return;
        }
        let (done, closed) = oneshot::channel();
        if self.writer.send(Message::Close(done)).is_ok() {
            let _ = closed.await;
        }
        self.shared.closed.send_replace(true);
        self.pool.close();
    }

    async fn report(&self) -> Result<serde_json::Value, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), pg_is_in_recovery(),
                        current_setting('synchronous_standby_names'),
                        current_setting('synchronous_commit'),
                        coalesce((SELECT json_agg(json_build_object(
                            'application_name', application_name,
                            'client_addr', client_addr::text,
                            'state', state,
                            'sync_state', sync_state,
                            'replay_lag_ms', extract(epoch FROM replay_lag) * 1000))::text
                          FROM pg_stat_replication), '[]')",
                &[],
            )
            .await
            .map_err(database)?;
        let standbys: serde_json::Value =
            serde_json::from_str(row.get::<_, &str>(4)).unwrap_or_default();
        Ok(serde_json::json!({
            "engine": "postgresql",
            "server_version": row.get::<_, String>(0),
            "role": if row.get::<_, bool>(1) { "standby" } else { "primary" },
            "schema": self.shared.options.schema,
            "synchronous_standby_names": row.get::<_, String>(2),
            "synchronous_commit": row.get::<_, String>(3),
            "standbys": standbys,
        }))
    }
}

#[cfg(test)]
mod tests;

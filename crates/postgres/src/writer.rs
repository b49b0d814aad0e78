//! The node's writer: one task with one connection of its own, which commits every commit sent
//! to it in groups — each group one PostgreSQL transaction, so that concurrent appends share one
//! commit (and one wait for the synchronous standby).
//!
//! A group that appends first locks the one row of `head`: every node's appending groups queue
//! there, so positions are handed out in commit order and a reader never sees a position before
//! the ones below it. With the lock held it reads ahead what the contract's rules will ask (the
//! streams' versions, the stored ids and commands, the records a retry is compared with), decides
//! each commit with [`rules::decide`] in memory, and writes the admitted ones with one statement
//! per table. Each group also writes a marker row: when the answer to its COMMIT is lost, the
//! writer finds out from the marker whether the group is durable, and answers accordingly,
//! rather than reporting a failure that in fact succeeded. No timeout or cancel ever touches a
//! group's COMMIT (a cancelled wait for synchronous replication leaves it committed locally).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Statement};

use evhost_store::event_id::GeneratedId;
use evhost_store::rules::{self, AppendContext, Decision, IdEntry};
use evhost_store::{
    AppendOutcome, Commit, CommitError, Committed, RecordedEvent, StorageError, StoredCommand,
    category_of, now_rfc3339,
};

use crate::Shared;
use crate::error::{database, describe, is_transient};

/// The most events (and data writes) one group carries, and the most bytes.
const MAX_GROUP_ENTRIES: usize = 50_000;
const MAX_GROUP_BYTES: usize = 64 << 20;

/// The longest a group waits for the writers the group before it answered; a transaction with
/// a synchronous standby costs milliseconds, so a wait this short that fills the group pays.
const GROUP_WAIT: Duration = Duration::from_micros(500);

/// How long markers are kept: far longer than any writer keeps asking about its group.
const MARKER_LIFETIME: &str = "1 hour";
const MARKER_SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How long one question about a lost COMMIT may wait for the transaction it asks about.
const PROBE_TIMEOUT: &str = "5s";

pub(crate) struct Job {
    pub commit: Commit,
    pub reply: oneshot::Sender<Result<Committed, CommitError>>,
}

pub(crate) enum Message {
    Commit(Job),
    /// Finish the group under way, refuse what is queued, and stop.
    Close(oneshot::Sender<()>),
}

/// The statements the writer runs, prepared once per connection.
struct Statements {
    marker: Statement,
    lock_head: Statement,
    leases: Statement,
    versions: Statement,
    ids: Statement,
    commands: Statement,
    records: Statement,
    insert_events: Statement,
    upsert_streams: Statement,
    insert_ids: Statement,
    insert_commands: Statement,
    add_tallies: Statement,
    delete_data: Statement,
    upsert_data: Statement,
    set_head: Statement,
    notify: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Statements {
            marker: client
                .prepare("INSERT INTO commit_markers (marker) VALUES ($1)")
                .await?,
            lock_head: client
                .prepare("SELECT position FROM head WHERE id = 1 FOR UPDATE")
                .await?,
            // FOR SHARE: a lease taken while this group runs waits for the group to commit, and
            // a lease taken just before is seen, so no group writes under a token already gone.
            leases: client
                .prepare("SELECT name, token FROM leases WHERE name = ANY($1) FOR SHARE")
                .await?,
            versions: client
                .prepare("SELECT stream, version FROM streams WHERE stream = ANY($1)")
                .await?,
            ids: client
                .prepare(
                    "SELECT id, position, first_position, count FROM event_ids WHERE id = ANY($1)",
                )
                .await?,
            commands: client
                .prepare(
                    "SELECT id, record, position, event_count FROM commands WHERE id = ANY($1)",
                )
                .await?,
            records: client
                .prepare("SELECT position, record FROM events WHERE position = ANY($1)")
                .await?,
            insert_events: client
                .prepare(
                    "INSERT INTO events (position, stream, version, category, event_type, record)
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],
                                          $5::text[], $6::bytea[])",
                )
                .await?,
            upsert_streams: client
                .prepare(
                    "INSERT INTO streams (stream, version, last_position)
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
                     ON CONFLICT (stream) DO UPDATE
                     SET version = EXCLUDED.version, last_position = EXCLUDED.last_position",
                )
                .await?,
            insert_ids: client
                .prepare(
                    "INSERT INTO event_ids (id, position, first_position, count)
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::integer[])",
                )
                .await?,
            insert_commands: client
                .prepare(
                    "INSERT INTO commands (id, record, position, event_count)
                     SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bigint[])",
                )
                .await?,
            add_tallies: client
                .prepare(
                    "INSERT INTO tallies (name, count)
                     SELECT * FROM unnest($1::text[], $2::bigint[])
                     ON CONFLICT (name) DO UPDATE SET count = tallies.count + EXCLUDED.count",
                )
                .await?,
            delete_data: client
                .prepare(
                    "DELETE FROM data WHERE (space, key) IN
                     (SELECT * FROM unnest($1::text[], $2::bytea[]))",
                )
                .await?,
            upsert_data: client
                .prepare(
                    "INSERT INTO data (space, key, value)
                     SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])
                     ON CONFLICT (space, key) DO UPDATE SET value = EXCLUDED.value",
                )
                .await?,
            set_head: client
                .prepare("UPDATE head SET position = $1 WHERE id = 1")
                .await?,
            notify: client.prepare("SELECT pg_notify($1, $2)").await?,
        })
    }
}

struct Connection {
    client: Client,
    statements: Statements,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    connection: Option<Connection>,
    last_sweep: Instant,
}

/// How a group's transaction ended.
enum Attempt {
    Committed(GroupOutcome),
    /// The transaction did not commit: nothing of the group is stored.
    NotWritten(StorageError),
    /// COMMIT was sent and its answer lost.
    Unknown {
        marker: uuid::Uuid,
        outcome: GroupOutcome,
        error: String,
    },
}

/// What a group decided: each commit's answer and the head after the group.
struct GroupOutcome {
    answers: Vec<Result<Committed, CommitError>>,
    head: u64,
    written_appends: u64,
}

/// What a question about a lost COMMIT found out.
enum Probe {
    Durable,
    NotDurable,
}

impl Writer {
    pub fn new(shared: Arc<Shared>) -> Self {
        Writer {
            shared,
            connection: None,
            last_sweep: Instant::now(),
        }
    }

    pub async fn run(mut self, mut messages: mpsc::UnboundedReceiver<Message>) {
        let mut closing = None;
        // How many commits the last group carried: the writers likely to be back soon.
        let mut last_group = 0;
        while closing.is_none() {
            let Some(first) = messages.recv().await else {
                return;
            };
            let gather_until = tokio::time::Instant::now() + GROUP_WAIT;
            let mut group = Vec::new();
            let (mut entries, mut bytes) = (0usize, 0usize);
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Close(done) => closing = Some(done),
                    Message::Commit(job) => {
                        let (e, b) = job.commit.weight();
                        (entries, bytes) = (entries + e, bytes + b);
                        group.push(job);
                    }
                }
                if closing.is_some() || entries >= MAX_GROUP_ENTRIES || bytes >= MAX_GROUP_BYTES {
                    break;
                }
                next = match messages.try_recv() {
                    Ok(message) => Some(message),
                    // The writers the last group answered are still sending their next commits:
                    // waiting a moment for them makes this group as large as the last, which
                    // costs one short wait instead of a whole extra transaction (and its wait
                    // for the standby).
                    Err(mpsc::error::TryRecvError::Empty) if group.len() < last_group => {
                        tokio::time::timeout_at(gather_until, messages.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                    Err(_) => None,
                };
            }
            last_group = group.len();
            if !group.is_empty() {
                self.commit_group(group).await;
            }
        }
        messages.close();
        while let Ok(message) = messages.try_recv() {
            match message {
                Message::Commit(job) => {
                    let _ = job.reply.send(Err(StorageError::Closed.into()));
                }
                Message::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Commits a group, trying again while PostgreSQL is unavailable (a failover, a restart)
    /// for as long as the store's options allow, and answers every commit of it.
    async fn commit_group(&mut self, group: Vec<Job>) {
        let started = Instant::now();
        let deadline = started + self.shared.options.retry_for;
        let mut backoff = Duration::from_millis(20);
        let answers = loop {
            let (outcome, failure) = match self.attempt(&group).await {
                Attempt::Committed(outcome) => (Some(outcome), None),
                Attempt::NotWritten(error) => (None, Some(error)),
                Attempt::Unknown {
                    marker,
                    outcome,
                    error,
                } => {
                    tracing::warn!(
                        "the answer to a commit of {} commits was lost ({error}); asking the \
                         database whether it is durable",
                        group.len()
                    );
                    match self.resolve(marker, deadline).await {
                        Some(Probe::Durable) => (Some(outcome), None),
                        Some(Probe::NotDurable) => (
                            None,
                            Some(StorageError::Unavailable(format!(
                                "the commit was not durable: {error}"
                            ))),
                        ),
                        None => {
                            let error = format!(
                                "the answer to the commit was lost ({error}) and the database \
                                 could not be asked whether it is durable"
                            );
                            break group
                                .iter()
                                .map(|_| Err(StorageError::OutcomeUnknown(error.clone()).into()))
                                .collect();
                        }
                    }
                }
            };
            if let Some(outcome) = outcome {
                let counters = &self.shared.counters;
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .committed_appends
                    .fetch_add(outcome.written_appends, Ordering::Relaxed);
                counters
                    .commit_nanos
                    .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                self.shared.advance_head(outcome.head);
                break outcome.answers;
            }
            let error = failure.expect("an attempt that wrote nothing says why");
            let retry = matches!(error, StorageError::Unavailable(_))
                && !self.shared.is_closed()
                && Instant::now() + backoff < deadline;
            if !retry {
                tracing::error!(
                    "a commit of {} commits failed, nothing written: {error}",
                    group.len()
                );
                break group.iter().map(|_| Err(error.clone().into())).collect();
            }
            tracing::warn!("a commit waits for PostgreSQL: {error}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        };
        for (job, answer) in group.into_iter().zip(answers) {
            let _ = job.reply.send(answer);
        }
    }

    /// A connection of the writer's own, opened again when the last one failed.
    async fn connection(&mut self) -> Result<&mut Connection, StorageError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.client.is_closed())
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            let client = self.shared.connect().await?;
            let statements = Statements::prepare(&client).await.map_err(database)?;
            self.connection = Some(Connection { client, statements });
        }
        Ok(self.connection.as_mut().expect("connected"))
    }

    async fn attempt(&mut self, group: &[Job]) -> Attempt {
        if self.last_sweep.elapsed() >= MARKER_SWEEP_EVERY {
            self.sweep_markers().await;
        }
        let shared = self.shared.clone();
        let connection = match self.connection().await {
            Ok(connection) => connection,
            Err(error) => return Attempt::NotWritten(error),
        };
        let marker = uuid::Uuid::new_v4();
        let mut outcome = None;
        let result = transaction(connection, &shared, group, marker, &mut outcome).await;
        match result {
            Ok(()) => Attempt::Committed(outcome.expect("a committed group has an outcome")),
            Err(Failure::BeforeCommit(error)) => {
                if is_transient(&error) {
                    self.connection = None;
                }
                Attempt::NotWritten(database(error))
            }
            Err(Failure::AtCommit(error)) => {
                self.connection = None;
                Attempt::Unknown {
                    marker,
                    outcome: outcome.expect("a group sent to COMMIT has an outcome"),
                    error: describe(&error),
                }
            }
            Err(Failure::Store(error)) => Attempt::NotWritten(error),
        }
    }

    /// Finds out whether the group that wrote `marker` is durable, asking until `deadline`;
    /// `None` when the database could not be asked in time.
    async fn resolve(&mut self, marker: uuid::Uuid, deadline: Instant) -> Option<Probe> {
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.probe(marker).await {
                Ok(probe) => return Some(probe),
                Err(error) => {
                    self.connection = None;
                    if Instant::now() + backoff >= deadline {
                        tracing::error!("could not find out whether a commit is durable: {error}");
                        return None;
                    }
                    tracing::warn!("asking whether a commit is durable failed: {error}");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Inserts the marker itself: while the group's transaction is still open somewhere, the
    /// insert waits for it to end; if it committed, the marker is there; if not, the insert
    /// takes the marker, and the group can never commit afterwards.
    async fn probe(&mut self, marker: uuid::Uuid) -> Result<Probe, StorageError> {
        let client = &mut self.connection().await?.client;
        let txn = client.transaction().await.map_err(database)?;
        txn.batch_execute(&format!("SET LOCAL statement_timeout = '{PROBE_TIMEOUT}'"))
            .await
            .map_err(database)?;
        let inserted = txn
            .execute(
                "INSERT INTO commit_markers (marker) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&marker],
            )
            .await
            .map_err(database)?;
        txn.commit().await.map_err(database)?;
        Ok(if inserted == 0 {
            Probe::Durable
        } else {
            Probe::NotDurable
        })
    }

    async fn sweep_markers(&mut self) {
        self.last_sweep = Instant::now();
        let Ok(connection) = self.connection().await else {
            return;
        };
        let sweep = format!(
            "DELETE FROM commit_markers WHERE written_at < now() - interval '{MARKER_LIFETIME}'"
        );
        if let Err(error) = connection.client.execute(&sweep, &[]).await {
            tracing::warn!("removing old commit markers failed: {}", describe(&error));
        }
    }
}

/// Where a group's transaction failed.
enum Failure {
    /// Before COMMIT was sent: the transaction did not commit.
    BeforeCommit(tokio_postgres::Error),
    /// At COMMIT: whether it committed is unknown.
    AtCommit(tokio_postgres::Error),
    /// A stored record could not be read (nothing was committed).
    Store(StorageError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        Failure::BeforeCommit(error)
    }
}

/// Runs one group's transaction; `outcome` holds the group's answers once they are decided.
async fn transaction(
    connection: &mut Connection,
    shared: &Shared,
    group: &[Job],
    marker: uuid::Uuid,
    outcome: &mut Option<GroupOutcome>,
) -> Result<(), Failure> {
    let statements = &connection.statements;
    let txn = connection.client.transaction().await?;
    let appends: Vec<_> = group
        .iter()
        .filter_map(|job| job.commit.append.as_ref())
        .collect();
    let leases: Vec<&str> = group
        .iter()
        .filter_map(|job| job.commit.fence.as_ref().map(|f| f.lease.as_str()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (marked, head, tokens) = tokio::join!(
        async { txn.execute(&statements.marker, &[&marker]).await },
        async {
            if appends.is_empty() {
                return Ok::<_, tokio_postgres::Error>(None);
            }
            let row = txn.query_one(&statements.lock_head, &[]).await?;
            Ok(Some(row.get::<_, i64>(0) as u64))
        },
        async {
            if leases.is_empty() {
                return Ok(Vec::new());
            }
            txn.query(&statements.leases, &[&leases]).await
        },
    );
    marked?;
    let head = head?.unwrap_or_else(|| shared.head.borrow().to_owned());
    let tokens: HashMap<String, u64> = tokens?
        .into_iter()
        .map(|row| (row.get(0), row.get::<_, i64>(1) as u64))
        .collect();
    let mut context =
        GroupContext::read_ahead(&txn, statements, shared.id_tag, head, &appends).await?;
    let mut writes = GroupWrites::default();
    let recorded_at = now_rfc3339();
    let mut answers = Vec::with_capacity(group.len());
    let mut written_appends = 0;
    for job in group {
        let answer = apply(
            &job.commit,
            &tokens,
            &mut context,
            &mut writes,
            &recorded_at,
        )
        .map_err(Failure::Store)?;
        if matches!(
            answer,
            Ok(Committed {
                append: Some(AppendOutcome::Written(_)),
                ..
            })
        ) {
            written_appends += 1;
        }
        answers.push(answer);
    }
    writes
        .write(&txn, statements, shared, head, context.head)
        .await?;
    *outcome = Some(GroupOutcome {
        answers,
        head: context.head,
        written_appends,
    });
    txn.commit().await.map_err(Failure::AtCommit)
}

/// Decides one commit of the group against the group's context and collects what it writes:
/// its fence, then its append (by the contract's rules), then its data. The outer error dooms
/// the group; the inner one refuses this commit alone, which then writes nothing.
fn apply(
    commit: &Commit,
    tokens: &HashMap<String, u64>,
    context: &mut GroupContext,
    writes: &mut GroupWrites,
    recorded_at: &str,
) -> Result<Result<Committed, CommitError>, StorageError> {
    if let Some(fence) = &commit.fence
        && let Err(fenced) = fence.check(tokens.get(&fence.lease).copied().unwrap_or(0))
    {
        return Ok(Err(fenced));
    }
    let mut committed = Committed::default();
    if let Some(request) = &commit.append {
        match rules::decide(context, request)? {
            Decision::Refuse(error) => return Ok(Err(error)),
            Decision::AlreadyWritten(result) => {
                committed.append = Some(AppendOutcome::AlreadyWritten(result));
            }
            Decision::Write(plan) => {
                let mut records = Vec::new();
                let ends = rules::render(request, &plan, recorded_at, &mut records);
                let category = category_of(&request.stream);
                let mut start = 0;
                for (offset, (event, end)) in request.events.iter().zip(ends).enumerate() {
                    let position = plan.result.first_position + offset as u64;
                    let json = records[start..end].to_vec();
                    start = end;
                    if commit.want_records {
                        committed.records.push(RecordedEvent {
                            position,
                            json: json.clone(),
                        });
                    }
                    writes.events.position.push(position as i64);
                    writes.events.stream.push(request.stream.clone());
                    writes
                        .events
                        .version
                        .push((plan.result.first_version + offset as u64) as i64);
                    writes.events.category.push(category.to_owned());
                    writes.events.event_type.push(event.event_type.clone());
                    writes.events.record.push(json.clone());
                    context.records.insert(position, json);
                    if plan.indexed[offset] {
                        let entry = plan.id_entry(offset);
                        let id = plan.ids[offset].clone();
                        writes.ids.push((id.clone(), entry));
                        context.ids.insert(id, entry);
                    }
                }
                if !request.events.is_empty() {
                    writes.streams.insert(
                        request.stream.clone(),
                        (plan.stream_version, plan.result.last_position),
                    );
                    context
                        .versions
                        .insert(request.stream.clone(), plan.stream_version);
                    context.head = plan.result.last_position;
                }
                if let Some(command) = &request.command {
                    let entry = plan.command_entry(&command.record);
                    writes.commands.push((command.id.clone(), entry.clone()));
                    context.commands.insert(command.id.clone(), entry);
                    *writes.tallies.entry(command.tally.clone()).or_default() += 1;
                }
                committed.append = Some(AppendOutcome::Written(plan.result));
            }
        }
    }
    for write in &commit.data {
        writes.data.insert(
            (write.space.to_string(), write.key.clone()),
            write.value.clone(),
        );
    }
    Ok(Ok(committed))
}

/// What the rules may ask of the store while the group is decided: read ahead under the head's
/// lock, then updated with every admitted append of the group.
struct GroupContext {
    head: u64,
    id_tag: u32,
    versions: HashMap<String, u64>,
    ids: HashMap<String, IdEntry>,
    commands: HashMap<String, StoredCommand>,
    records: HashMap<u64, Vec<u8>>,
}

impl GroupContext {
    /// Reads what deciding `appends` can ask: every stream's version, every client-chosen id in
    /// the index, every command id, the records of ids of the generated form, and the records
    /// a retry would be compared with.
    async fn read_ahead(
        txn: &tokio_postgres::Transaction<'_>,
        statements: &Statements,
        id_tag: u32,
        head: u64,
        appends: &[&evhost_store::AppendRequest],
    ) -> Result<Self, tokio_postgres::Error> {
        let mut context = GroupContext {
            head,
            id_tag,
            versions: HashMap::new(),
            ids: HashMap::new(),
            commands: HashMap::new(),
            records: HashMap::new(),
        };
        if appends.is_empty() {
            return Ok(context);
        }
        let streams: Vec<&str> = unique(appends.iter().map(|a| a.stream.as_str()));
        let ids: Vec<&str> = unique(
            appends
                .iter()
                .flat_map(|a| a.events.iter().filter_map(|e| e.id.as_deref())),
        );
        let commands: Vec<&str> = unique(
            appends
                .iter()
                .filter_map(|a| a.command.as_ref().map(|c| c.id.as_str())),
        );
        let generated: Vec<i64> = ids
            .iter()
            .filter_map(|id| GeneratedId::decode(id, id_tag))
            .map(|g| g.position)
            .filter(|p| (1..=head).contains(p))
            .map(|p| p as i64)
            .collect();
        let (versions, indexed, recorded, records) = tokio::join!(
            async { txn.query(&statements.versions, &[&streams]).await },
            async {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                txn.query(&statements.ids, &[&ids]).await
            },
            async {
                if commands.is_empty() {
                    return Ok(Vec::new());
                }
                txn.query(&statements.commands, &[&commands]).await
            },
            async {
                if generated.is_empty() {
                    return Ok(Vec::new());
                }
                txn.query(&statements.records, &[&generated]).await
            },
        );
        for row in versions? {
            context
                .versions
                .insert(row.get(0), row.get::<_, i64>(1) as u64);
        }
        for row in recorded? {
            context.commands.insert(
                row.get(0),
                StoredCommand {
                    record: row.get(1),
                    position: row.get::<_, i64>(2) as u64,
                    event_count: row.get::<_, i64>(3) as u64,
                },
            );
        }
        for row in records? {
            context
                .records
                .insert(row.get::<_, i64>(0) as u64, row.get(1));
        }
        let mut wanted = Vec::new();
        for row in indexed? {
            let entry = IdEntry {
                position: row.get::<_, i64>(1) as u64,
                first_position: row.get::<_, i64>(2) as u64,
                count: row.get::<_, i32>(3) as u32,
            };
            if !context.records.contains_key(&entry.position) {
                wanted.push(entry.position as i64);
            }
            context.ids.insert(row.get(0), entry);
        }
        if !wanted.is_empty() {
            for row in txn.query(&statements.records, &[&wanted]).await? {
                context
                    .records
                    .insert(row.get::<_, i64>(0) as u64, row.get(1));
            }
        }
        Ok(context)
    }
}

fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    items.filter(|item| seen.insert(*item)).collect()
}

impl AppendContext for GroupContext {
    fn head(&self) -> u64 {
        self.head
    }

    fn id_tag(&self) -> u32 {
        self.id_tag
    }

    fn stream_version(&mut self, stream: &str) -> Result<u64, StorageError> {
        Ok(self.versions.get(stream).copied().unwrap_or(0))
    }

    fn indexed_id(&mut self, id: &str) -> Result<Option<IdEntry>, StorageError> {
        Ok(self.ids.get(id).copied())
    }

    fn record(&mut self, position: u64) -> Result<Vec<u8>, StorageError> {
        self.records
            .get(&position)
            .cloned()
            .ok_or_else(|| StorageError::Corrupt {
                position,
                reason: "the record was not read ahead of the decision (an id points past the \
                         log or the read-ahead missed it)"
                    .into(),
            })
    }

    fn command(&mut self, id: &str) -> Result<Option<StoredCommand>, StorageError> {
        Ok(self.commands.get(id).cloned())
    }
}

/// The columns of the events a group writes.
#[derive(Default)]
struct EventRows {
    position: Vec<i64>,
    stream: Vec<String>,
    version: Vec<i64>,
    category: Vec<String>,
    event_type: Vec<String>,
    record: Vec<Vec<u8>>,
}

/// Everything the admitted commits of a group write, gathered so that each table takes one
/// statement.
#[derive(Default)]
struct GroupWrites {
    events: EventRows,
    /// Each stream's version and last position after the group.
    streams: BTreeMap<String, (u64, u64)>,
    ids: Vec<(String, IdEntry)>,
    commands: Vec<(String, StoredCommand)>,
    tallies: BTreeMap<String, i64>,
    /// Each key's value after the group, or `None` when the group removes it.
    data: BTreeMap<(String, String), Option<Vec<u8>>>,
}

impl GroupWrites {
    async fn write(
        self,
        txn: &tokio_postgres::Transaction<'_>,
        statements: &Statements,
        shared: &Shared,
        head_before: u64,
        head_after: u64,
    ) -> Result<(), tokio_postgres::Error> {
        let events = self.events;
        let (stream_names, (stream_versions, stream_positions)): (Vec<&str>, (Vec<i64>, Vec<i64>)) =
            self.streams
                .iter()
                .map(|(s, (v, p))| (s.as_str(), (*v as i64, *p as i64)))
                .unzip();
        let id_names: Vec<&str> = self.ids.iter().map(|(id, _)| id.as_str()).collect();
        let id_positions: Vec<i64> = self.ids.iter().map(|(_, e)| e.position as i64).collect();
        let id_firsts: Vec<i64> = self
            .ids
            .iter()
            .map(|(_, e)| e.first_position as i64)
            .collect();
        let id_counts: Vec<i32> = self.ids.iter().map(|(_, e)| e.count as i32).collect();
        let command_ids: Vec<&str> = self.commands.iter().map(|(id, _)| id.as_str()).collect();
        let command_records: Vec<&[u8]> =
            self.commands.iter().map(|(_, c)| &c.record[..]).collect();
        let command_positions: Vec<i64> = self
            .commands
            .iter()
            .map(|(_, c)| c.position as i64)
            .collect();
        let command_counts: Vec<i64> = self
            .commands
            .iter()
            .map(|(_, c)| c.event_count as i64)
            .collect();
        let (tally_names, tally_counts): (Vec<&str>, Vec<i64>) =
            self.tallies.iter().map(|(n, c)| (n.as_str(), *c)).unzip();
        let (mut removed_spaces, mut removed_keys) = (Vec::new(), Vec::new());
        let (mut set_spaces, mut set_keys, mut set_values) = (Vec::new(), Vec::new(), Vec::new());
        for ((space, key), value) in &self.data {
            match value {
                None => {
                    removed_spaces.push(space.as_str());
                    removed_keys.push(key.as_bytes());
                }
                Some(value) => {
                    set_spaces.push(space.as_str());
                    set_keys.push(key.as_bytes());
                    set_values.push(&value[..]);
                }
            }
        }
        let head_text = head_after.to_string();
        let results = tokio::join!(
            when(!events.position.is_empty(), async {
                txn.execute(
                    &statements.insert_events,
                    &[
                        &events.position,
                        &events.stream,
                        &events.version,
                        &events.category,
                        &events.event_type,
                        &events.record,
                    ],
                )
                .await
            }),
            when(!stream_names.is_empty(), async {
                txn.execute(
                    &statements.upsert_streams,
                    &[&stream_names, &stream_versions, &stream_positions],
                )
                .await
            }),
            when(!id_names.is_empty(), async {
                txn.execute(
                    &statements.insert_ids,
                    &[&id_names, &id_positions, &id_firsts, &id_counts],
                )
                .await
            }),
            when(!command_ids.is_empty(), async {
                txn.execute(
                    &statements.insert_commands,
                    &[
                        &command_ids,
                        &command_records,
                        &command_positions,
                        &command_counts,
                    ],
                )
                .await
            }),
            when(!tally_names.is_empty(), async {
                txn.execute(&statements.add_tallies, &[&tally_names, &tally_counts])
                    .await
            }),
            when(!removed_keys.is_empty(), async {
                txn.execute(&statements.delete_data, &[&removed_spaces, &removed_keys])
                    .await
            }),
            when(!set_keys.is_empty(), async {
                txn.execute(
                    &statements.upsert_data,
                    &[&set_spaces, &set_keys, &set_values],
                )
                .await
            }),
            when(head_after != head_before, async {
                txn.execute(&statements.set_head, &[&(head_after as i64)])
                    .await
            }),
            when(head_after != head_before, async {
                txn.execute(&statements.notify, &[&shared.channel, &head_text])
                    .await
            }),
        );
        let (a, b, c, d, e, f, g, h, i) = results;
        for result in [a, b, c, d, e, f, g, h, i] {
            result?;
        }
        Ok(())
    }
}

/// Runs `statement` (a future, which does nothing until awaited) only when `needed`.
async fn when(
    needed: bool,
    statement: impl Future<Output = Result<u64, tokio_postgres::Error>>,
) -> Result<u64, tokio_postgres::Error> {
    if needed { statement.await } else { Ok(0) }
}

//! PostgreSQL as an event store, built the way one would build it for real: a table with
//! `unique(stream, version)` and a gapless global position taken from a one-row counter in the
//! same transaction. Taking the counter's row lock serialises writers until they commit, which
//! is what any gapless log must do; every append is one statement, so one round trip and one
//! durable commit.
//!
//! For comparison the position can instead come from a sequence, which lets commits share WAL
//! flushes but leaves gaps where an append fails, so readers of the log cannot tell a gap from a
//! transaction still in flight.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Statement};

use crate::workload::{Append, Client, READ_PAGE, System};

const SCHEMA: &str = "
    drop table if exists events, head;
    create table events (
        position bigint primary key,
        stream text not null,
        version bigint not null,
        id uuid not null unique,
        type text not null,
        data jsonb not null,
        metadata jsonb not null,
        recorded_at timestamptz not null default now(),
        unique (stream, version)
    );
    create table head (position bigint not null);
    insert into head values (0);
    drop sequence if exists positions;
    create sequence positions;
";

/// Appends $4 (event data) to stream $1 if it is at version $2; $3 is the number of events.
/// The version check sees the state before the counter's lock is taken; a writer that commits
/// the same version meanwhile makes this insert fail on `unique(stream, version)`, which rolls the
/// counter back with it, so the log stays gapless.
const APPEND: &str = "
    with claimed as (
        update head set position = position + $3
        where (select coalesce(max(version), 0) from events where stream = $1) = $2
        returning position
    )
    insert into events (position, stream, version, id, type, data, metadata)
    select claimed.position - $3 + e.i, $1, $2 + e.i, gen_random_uuid(), 'Bench', e.d::jsonb, '{}'
    from claimed, unnest($4::text[]) with ordinality as e(d, i)
";

/// The same append with the position from a sequence; $3 only checks the batch's size.
const APPEND_WITH_SEQUENCE: &str = "
    insert into events (position, stream, version, id, type, data, metadata)
    select nextval('positions'), $1, $2 + e.i, gen_random_uuid(), 'Bench', e.d::jsonb, '{}'
    from unnest($4::text[]) with ordinality as e(d, i)
    where (select coalesce(max(version), 0) from events where stream = $1) = $2
      and cardinality($4::text[]) = $3::bigint
";

/// Where an event's global position comes from.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Position {
    /// A one-row counter updated in the append's transaction: gapless, writers serialised.
    Counter,
    /// A sequence: writers commit together, but a failed append leaves a gap.
    Sequence,
}

impl Position {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Position::Counter => "gapless",
            Position::Sequence => "sequence",
        }
    }

    /// What the report says about this set-up.
    pub(crate) fn note(self) -> String {
        let position = match self {
            Position::Counter => {
                "a gapless position taken from a one-row counter in the same statement, so \
                 writers queue on the counter as a gapless log must"
            }
            Position::Sequence => {
                "**positions from a sequence, not gapless** (a failed append leaves a gap), so \
                 commits share WAL flushes"
            }
        };
        format!(
            "a throwaway cluster with fsync=on and synchronous_commit=on, otherwise default \
             settings; a table with unique(stream, version) and {position}; every append is one \
             statement, so one round trip and one durable commit; memory is PSS summed over the \
             postmaster and its backends."
        )
    }
}

const VERSION: &str = "select coalesce(max(version), 0) from events where stream = $1";

const READ: &str = "
    select position, stream, version, id, type, data, metadata, recorded_at
    from events where position >= $1 order by position limit $2
";

/// A PostgreSQL server reached with a libpq-style connection string.
pub(crate) struct Postgres {
    config: String,
    append: &'static str,
}

/// What the server says about itself, for the report.
pub(crate) struct ServerFacts {
    pub(crate) version: String,
    /// The postmaster's process id, read from its data directory if this user may.
    pub(crate) pid: Option<u32>,
}

impl Postgres {
    /// Connects, checks that commits are durable, and creates an empty schema.
    pub(crate) async fn setup(config: &str, position: Position) -> Result<(Self, ServerFacts)> {
        let client = connect(config).await?;
        let row = client
            .query_one(
                "select current_setting('server_version'), current_setting('fsync'),
                        current_setting('synchronous_commit'), current_setting('data_directory')",
                &[],
            )
            .await?;
        let (version, fsync, synchronous_commit, data): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if fsync != "on" || synchronous_commit != "on" {
            bail!(
                "the server is not durable: fsync={fsync}, synchronous_commit={synchronous_commit}"
            );
        }
        client.batch_execute(SCHEMA).await?;
        let pid = std::fs::read_to_string(Path::new(&data).join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok());
        let system = Self {
            config: config.to_owned(),
            append: match position {
                Position::Counter => APPEND,
                Position::Sequence => APPEND_WITH_SEQUENCE,
            },
        };
        Ok((system, ServerFacts { version, pid }))
    }
}

/// A client of the server at `config`, its connection driven by a task of its own.
pub(crate) async fn connect(config: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(config, NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL with {config:?}"))?;
    tokio::spawn(connection);
    Ok(client)
}

pub(crate) struct PostgresClient {
    client: tokio_postgres::Client,
    append: Statement,
    version: Statement,
}

impl System for Postgres {
    type Client = PostgresClient;

    async fn connect(&self) -> Result<PostgresClient> {
        let client = connect(&self.config).await?;
        let append = client.prepare(self.append).await?;
        let version = client.prepare(VERSION).await?;
        Ok(PostgresClient {
            client,
            append,
            version,
        })
    }

    /// Pages through the table by position, every column fetched; only the position is decoded,
    /// to know where the next page starts.
    async fn read_all(&self) -> Result<u64> {
        let client = connect(&self.config).await?;
        let read = client.prepare(READ).await?;
        let (mut from, mut total) = (1_i64, 0);
        let limit = READ_PAGE as i64;
        loop {
            let rows = client.query(&read, &[&from, &limit]).await?;
            let Some(last) = rows.last() else {
                return Ok(total);
            };
            total += rows.len() as u64;
            from = last.try_get::<_, i64>(0)? + 1;
        }
    }
}

impl Client for PostgresClient {
    async fn append(&mut self, stream: &str, expected: u64, events: &[String]) -> Result<Append> {
        let (expected, count) = (expected as i64, events.len() as i64);
        let result = self
            .client
            .execute(&self.append, &[&stream, &expected, &count, &events])
            .await;
        match result {
            Ok(0) => Ok(Append::Conflict),
            Ok(inserted) if inserted == count as u64 => Ok(Append::Done {
                version: (expected + count) as u64,
            }),
            Ok(inserted) => bail!("appended {inserted} of {count} events"),
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(Append::Conflict),
            Err(error) => Err(error.into()),
        }
    }

    async fn version(&mut self, stream: &str) -> Result<u64> {
        let row = self.client.query_one(&self.version, &[&stream]).await?;
        Ok(row.try_get::<_, i64>(0)? as u64)
    }
}

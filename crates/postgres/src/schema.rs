//! The tables of the store and their numbered migrations, applied when a node opens the store.
//!
//! Every node runs [`migrate`] at start, under an advisory lock, so that nodes starting together
//! migrate once; a node refuses a database whose schema is newer than the migrations it knows,
//! so an old node never writes into a layout it does not understand. Text columns are compared
//! in the "C" collation (byte order, which is code point order for UTF-8), the order the contract
//! gives scans by prefix on every backend, whatever the database's default collation.

use tokio_postgres::Client;

use evhost_store::StorageError;

use crate::error::database;

/// The migrations, in order: migration `n` (1-based) brings the schema from version `n - 1` to
/// `n`. A migration is never changed once released; a change of layout is a new migration.
const MIGRATIONS: &[&str] = &[
    // 1: the log, its indexes, the command log, the catalog and the plugin data.
    r#"
    CREATE TABLE meta (
        key text COLLATE "C" PRIMARY KEY,
        value text NOT NULL
    );
    -- The last position written: one row, locked by every transaction that appends, which is
    -- what makes positions gapless and commit order position order across nodes.
    CREATE TABLE head (
        id smallint PRIMARY KEY CHECK (id = 1),
        position bigint NOT NULL
    );
    INSERT INTO head (id, position) VALUES (1, 0);
    CREATE TABLE events (
        position bigint PRIMARY KEY,
        stream text COLLATE "C" NOT NULL,
        version bigint NOT NULL,
        category text COLLATE "C" NOT NULL,
        event_type text COLLATE "C" NOT NULL,
        record bytea NOT NULL
    );
    CREATE UNIQUE INDEX events_by_stream ON events (stream, version);
    CREATE INDEX events_by_category ON events (category, position);
    CREATE INDEX events_by_type ON events (event_type, position);
    CREATE TABLE streams (
        stream text COLLATE "C" PRIMARY KEY,
        version bigint NOT NULL,
        last_position bigint NOT NULL
    );
    -- Ids clients chose (and generated ids that could not encode their position).
    CREATE TABLE event_ids (
        id text COLLATE "C" PRIMARY KEY,
        position bigint NOT NULL,
        first_position bigint NOT NULL,
        count integer NOT NULL
    );
    CREATE TABLE commands (
        id text COLLATE "C" PRIMARY KEY,
        record bytea NOT NULL,
        position bigint NOT NULL,
        event_count bigint NOT NULL
    );
    CREATE TABLE tallies (
        name text COLLATE "C" PRIMARY KEY,
        count bigint NOT NULL
    );
    CREATE TABLE plugins (
        name text COLLATE "C" PRIMARY KEY,
        record bytea NOT NULL
    );
    CREATE TABLE blobs (
        key text COLLATE "C" PRIMARY KEY,
        bytes bytea NOT NULL
    );
    CREATE TABLE data (
        space text COLLATE "C" NOT NULL,
        -- Keys are any UTF-8 a plugin chose, NUL included, which text cannot hold.
        key bytea NOT NULL,
        value bytea NOT NULL,
        PRIMARY KEY (space, key)
    );
    CREATE TABLE leases (
        name text COLLATE "C" PRIMARY KEY,
        token bigint NOT NULL
    );
    -- One row per commit group, written inside it: a writer whose COMMIT went unanswered finds
    -- out from it whether the group is durable. Rows are removed once no writer can still ask.
    CREATE TABLE commit_markers (
        marker uuid PRIMARY KEY,
        written_at timestamptz NOT NULL DEFAULT now()
    );
    "#,
    // 2: claims on leases (who holds each, until when, by the database's clock) and the nodes.
    r#"
    ALTER TABLE leases
        ADD COLUMN node text COLLATE "C",
        ADD COLUMN incarnation text COLLATE "C",
        ADD COLUMN since timestamptz,
        ADD COLUMN expires_at timestamptz;
    CREATE TABLE nodes (
        node text COLLATE "C" PRIMARY KEY,
        incarnation text NOT NULL,
        address text NOT NULL,
        version text NOT NULL,
        started_at text NOT NULL,
        heartbeat_at timestamptz NOT NULL
    );
    "#,
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock nodes take while they migrate (any number: it only has to be the same on
/// every node and unlikely to be taken by anything else in the database).
const MIGRATION_LOCK: i64 = 0x6576_686f_7374;

/// Creates the store's schema `schema` if it is missing and applies the migrations it lacks, in
/// one transaction; answers the store's id tag. Refuses a schema newer than this build knows.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<u32, StorageError> {
    migrate_to(client, schema, SCHEMA_VERSION).await
}

/// [`migrate`], stopping at version `target` (what an older release left, for tests).
pub(crate) async fn migrate_to(
    client: &mut Client,
    schema: &str,
    target: i32,
) -> Result<u32, StorageError> {
    let txn = client.transaction().await.map_err(database)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(database)?;
    txn.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         SET LOCAL search_path TO \"{schema}\";
         CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);"
    ))
    .await
    .map_err(database)?;
    let current: i32 = match txn
        .query_opt("SELECT version FROM schema_version", &[])
        .await
        .map_err(database)?
    {
        Some(row) => row.get(0),
        None => {
            txn.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                .await
                .map_err(database)?;
            0
        }
    };
    if current > SCHEMA_VERSION {
        return Err(StorageError::Failed(format!(
            "the database's schema \"{schema}\" is at version {current}, newer than the \
             {SCHEMA_VERSION} this evhost knows: run a release of evhost at least as new as \
             the one that migrated it"
        )));
    }
    let wanted = MIGRATIONS.iter().take(target as usize);
    for (index, migration) in wanted.enumerate().skip(current as usize) {
        let version = index as i32 + 1;
        txn.batch_execute(migration)
            .await
            .map_err(|e| StorageError::Failed(format!("schema migration {version} failed: {e}")))?;
        if version == 1 {
            let tag = uuid::Uuid::new_v4().as_u128() as u32;
            txn.execute(
                "INSERT INTO meta (key, value) VALUES ('id_tag', $1)",
                &[&tag.to_string()],
            )
            .await
            .map_err(database)?;
        }
        txn.execute("UPDATE schema_version SET version = $1", &[&version])
            .await
            .map_err(database)?;
        tracing::info!("schema \"{schema}\" migrated to version {version}");
    }
    let tag: String = txn
        .query_one("SELECT value FROM meta WHERE key = 'id_tag'", &[])
        .await
        .map_err(database)?
        .get(0);
    txn.commit().await.map_err(database)?;
    tag.parse()
        .map_err(|_| StorageError::Failed(format!("the store's id tag {tag:?} is not a number")))
}

//! The conformance suite on PostgreSQL: every check on a schema of its own in one throwaway
//! server, reopened in the same schema where the check reopens its directory.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use evhost_store::conformance::{Backend, StoreConfig};
use evhost_store::{StorageError, Store};

use super::*;
use crate::test_server::TestServer;

/// The backend under test: the schema is named after the check's directory.
struct Postgres;

#[async_trait]
impl Backend for Postgres {
    async fn open(&self, dir: &Path, config: StoreConfig) -> Result<Arc<dyn Store>, StorageError> {
        let server = tokio::task::spawn_blocking(TestServer::shared)
            .await
            .expect("the test server");
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a directory name");
        let schema = format!(
            "c_{}",
            name.rsplit('-').next().expect("a suffix").to_lowercase()
        );
        let mut options = PgOptions::new(server.url("postgres"));
        options.schema = schema[..schema.len().min(48)].to_owned();
        options.append_limits = config.append_limits;
        options.page_bytes = config.page_bytes;
        options.pool_size = 4;
        Ok(Arc::new(PgStore::open(options).await?))
    }

    fn persistent(&self) -> bool {
        true
    }
}

evhost_store::conformance_tests!(Postgres);

#[test]
fn prefixes_end_where_their_keys_do() {
    assert_eq!(text_after_prefix("ab"), Some("ac".to_owned()));
    assert_eq!(text_after_prefix(""), None);
    assert_eq!(text_after_prefix("a\u{10FFFF}"), Some("b".to_owned()));
    assert_eq!(text_after_prefix("\u{D7FF}"), Some("\u{E000}".to_owned()));
    assert_eq!(bytes_after_prefix(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(bytes_after_prefix(b"\xff\xff"), None);
    for (prefix, key) in [
        ("ab", "ab\u{10FFFF}zz"),
        ("a\u{10FFFF}", "a\u{10FFFF}\u{10FFFF}"),
    ] {
        let end = text_after_prefix(prefix).unwrap();
        assert!(key.starts_with(prefix) && key < end.as_str());
    }
}

/// A store on `schema` of `server`, with the suite's bounds.
async fn open_on(server: &TestServer, schema: &str) -> PgStore {
    let mut options = PgOptions::new(server.url("postgres"));
    options.schema = schema.to_owned();
    options.pool_size = 4;
    PgStore::open(options).await.expect("a store")
}

fn fresh_schema() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

fn one_event(stream: &str, id: Option<String>) -> evhost_store::AppendRequest {
    evhost_store::AppendRequest {
        stream: stream.to_owned(),
        expected_version: evhost_store::ExpectedVersion::Any,
        events: vec![evhost_store::ProposedEvent {
            id,
            event_type: "Happened".into(),
            data: "{}".into(),
            metadata: "{}".into(),
        }],
        command: None,
    }
}

/// A client of the server's `postgres` database, for a test to inspect or steer the server.
async fn admin(server: &TestServer) -> Client {
    let (client, connection) = tokio_postgres::connect(&server.url("postgres"), NoTls)
        .await
        .expect("an admin connection");
    tokio::spawn(connection);
    client
}

/// Changes the server's configuration and reloads it.
async fn steer(admin: &Client, alter: &str) {
    admin.batch_execute(alter).await.unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_schema_share_one_gapless_log() {
    let server = tokio::task::spawn_blocking(TestServer::shared)
        .await
        .unwrap();
    let schema = fresh_schema();
    let nodes = [
        Arc::new(open_on(server, &schema).await),
        Arc::new(open_on(server, &schema).await),
    ];
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let node = nodes[writer % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for n in 0..25 {
                let id = format!("w{writer}-{n}");
                match node
                    .append(one_event(&format!("s-{}", n % 3), Some(id.clone())))
                    .await
                    .expect("an append")
                {
                    evhost_store::AppendOutcome::Written(result) => {
                        written.push((id, result.first_position))
                    }
                    other => panic!("a new append answered {other:?}"),
                }
            }
            written
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("a writer"));
    }
    let head = acknowledged.len() as u64;
    for node in &nodes {
        // Each node hears of the other's commits without reading.
        node.watch_head()
            .wait_for(|h| *h >= head)
            .await
            .expect("the head moves");
        let page = node
            .read_log(1, 1_000, &LogFilter::default())
            .await
            .expect("the log");
        let positions: Vec<u64> = page.events.iter().map(|e| e.position).collect();
        assert_eq!(positions, (1..=head).collect::<Vec<_>>(), "gapless");
        for (id, position) in &acknowledged {
            let view = evhost_store::EventView::parse(&page.events[*position as usize - 1].json)
                .expect("a record");
            assert_eq!(&view.id, id, "the event acknowledged at {position}");
        }
    }
    // A retry sent to the other node is recognised there.
    let (id, position) = acknowledged[0].clone();
    let first = nodes[1]
        .read_log(position, 1, &LogFilter::default())
        .await
        .unwrap();
    let stream = evhost_store::EventView::parse(&first.events[0].json)
        .unwrap()
        .stream
        .into_owned();
    match nodes[1].append(one_event(&stream, Some(id))).await {
        Ok(evhost_store::AppendOutcome::AlreadyWritten(result)) => {
            assert_eq!(result.first_position, position)
        }
        other => panic!("a retry on the other node answered {other:?}"),
    }
    let stats = nodes[0].stats();
    assert!(
        stats.commits < stats.committed_appends,
        "concurrent appends share commits: {stats:?}"
    );
    for node in &nodes {
        node.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_schema_newer_than_it_knows() {
    let server = tokio::task::spawn_blocking(TestServer::shared)
        .await
        .unwrap();
    let schema = fresh_schema();
    open_on(server, &schema).await.close().await;
    admin(server)
        .await
        .batch_execute(&format!(
            "UPDATE {schema}.schema_version SET version = {}",
            SCHEMA_VERSION + 1
        ))
        .await
        .unwrap();
    let mut options = PgOptions::new(server.url("postgres"));
    options.schema = schema;
    match PgStore::open(options).await {
        Err(StorageError::Failed(message)) => {
            assert!(message.contains("newer"), "{message}")
        }
        Ok(_) => panic!("a newer schema was opened"),
        Err(other) => panic!("a newer schema answered {other}"),
    }
}

/// The answer to COMMIT is lost while the commit waits for a synchronous standby (the server
/// ends the connection then, and the commit stays committed locally): the append is still
/// answered as written, because the writer asks the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_answered_by_what_the_database_holds() {
    let server = tokio::task::spawn_blocking(|| TestServer::start().expect("a server"))
        .await
        .unwrap();
    let store = Arc::new(open_on(&server, "lost").await);
    let admin = admin(&server).await;
    steer(
        &admin,
        "ALTER SYSTEM SET synchronous_standby_names = 'nobody'",
    )
    .await;
    let writer = store.clone();
    let append =
        tokio::spawn(async move { writer.append(one_event("lost-1", Some("e-1".into()))).await });
    // The commit waits for a standby that never comes.
    let pid: i32 = loop {
        let rows = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            break row.get(0);
        }
        tokio::task::yield_now().await;
    };
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    steer(&admin, "ALTER SYSTEM RESET synchronous_standby_names").await;
    match append.await.unwrap() {
        Ok(evhost_store::AppendOutcome::Written(result)) => assert_eq!(result.last_position, 1),
        other => panic!("the append whose answer was lost answered {other:?}"),
    }
    assert_eq!(store.head(), 1);
    let page = store.read_log(1, 10, &LogFilter::default()).await.unwrap();
    assert_eq!(page.events.len(), 1, "the event is stored once");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_an_older_release_left_is_migrated_and_keeps_its_data() {
    let server = tokio::task::spawn_blocking(TestServer::shared)
        .await
        .unwrap();
    let schema = fresh_schema();
    let mut options = PgOptions::new(server.url("postgres"));
    options.schema = schema.clone();
    let config = connection_config(&options).unwrap();
    let (mut client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    schema::migrate_to(&mut client, &schema, 1).await.unwrap();
    client
        .batch_execute("INSERT INTO leases (name, token) VALUES ('kept', 5)")
        .await
        .unwrap();
    let store = PgStore::open(options)
        .await
        .expect("the store opens and migrates");
    let version: i32 = client
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    let holder = evhost_store::claims::Holder {
        node: "n".into(),
        incarnation: "1".into(),
    };
    let token = store
        .claim_lease("kept", &holder, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(token, Some(6), "the lease's token is kept and grows");
    store.close().await;
}

/// A log that grew faster than autovacuum analyzes it leaves the planner thinking a range of
/// positions holds a few rows; a bitmap scan of the range then sorts every event up to the head
/// for each page (a catch-up became quadratic). Every page must come from an index in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_the_log_is_read_in_index_order_whatever_the_statistics() {
    let server = tokio::task::spawn_blocking(TestServer::shared)
        .await
        .unwrap();
    let store = open_on(server, &fresh_schema()).await;
    for n in 0..40 {
        let mut request = one_event(&format!("{}-{n}", ["a", "b"][n % 2]), None);
        request.events = (0..100).map(|_| request.events[0].clone()).collect();
        store.append(request).await.expect("an append");
    }
    let client = store.client().await.unwrap();
    let shapes: [(&[&str], &[&str]); 5] = [
        (&[], &[]),
        (&["a"], &[]),
        (&[], &["Happened"]),
        (&["a", "b"], &[]),
        (&[], &["Happened", "Other"]),
    ];
    for (categories, types) in shapes {
        let (categories, types) = (categories.to_vec(), types.to_vec());
        let explain = format!("EXPLAIN {}", log_query(&categories, &types));
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&1_i64, &4_000_i64, &100_i64, &categories, &types];
        let plan: Vec<String> = client
            .query(&explain, &params)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Bitmap"),
            "{categories:?} {types:?}:\n{plan}"
        );
        // Several names merge a page of each: the only sort is of those pages, above a limit.
        let merged = categories.len() > 1 || types.len() > 1;
        assert!(
            merged || !plan.contains("Sort"),
            "{categories:?} {types:?}:\n{plan}"
        );
    }
}

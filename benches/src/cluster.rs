//! The cluster benchmark (`--systems cluster`, a run of its own): evhost on PostgreSQL with one
//! node and with three against PostgreSQL alone doing the same appends (a gapless counter and a
//! sequence), on one PostgreSQL primary with a synchronous standby started by `benches/run.sh`;
//! evhost on its embedded redb beside them for reference. Per round, every system takes the
//! append workloads of [`crate::bench`]; the evhost set-ups take the visit commands of
//! [`crate::plugins`]; and the visits projection catches up with the same log on redb and on
//! PostgreSQL.
//!
//! Each evhost set-up starts on a schema of its own, dropped after it; the projection's log is
//! filled once per store and copied for every round (the redb file as a file, the PostgreSQL
//! schema table by table), so that every catch-up starts from the same log.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::evhost::{Evhost, EvhostNodes, Server};
use crate::http::Connection;
use crate::memory::Probe;
use crate::postgres::{Position, connect};
use crate::projections::{self, CatchUp};
use crate::report::{self, SystemKind, SystemRun, thousands};
use crate::workload::{Measurement, Settings};

/// Visits in the projection's log, four events each: long enough that a catch-up on redb takes
/// seconds, short enough that filling it on PostgreSQL does not take minutes.
pub(crate) const VISITS: usize = 100_000;
/// Concurrent clients filling the log: on PostgreSQL a commit waits for the standby, so the
/// fill's speed comes from how many appends share each commit.
const FILL_CLIENTS: usize = 64;
/// The nodes of the larger cluster.
const NODES: usize = 3;
/// The tables of evhost's schema that say who runs what; a copied log starts without them.
const CLUSTER_TABLES: [&str; 3] = ["nodes", "leases", "commit_markers"];

/// What the cluster benchmark needs.
pub(crate) struct Cluster<'a> {
    pub(crate) args: &'a crate::Args,
    pub(crate) binary: PathBuf,
    /// `postgres://…` for `evhost serve --store`.
    pub(crate) url: String,
    /// The same server as a libpq-style string, for PostgreSQL alone and for copying schemas.
    pub(crate) config: String,
    pub(crate) visit: Bytes,
    pub(crate) visits: Bytes,
    pub(crate) work: PathBuf,
    pub(crate) timeout: Duration,
}

/// One round's figures.
struct Round {
    runs: Vec<SystemRun>,
    /// Per evhost set-up, in [`SETUPS`] order.
    commands: Vec<Result<Measurement, String>>,
    /// On redb, then on PostgreSQL.
    catch_up: [Result<CatchUp, String>; 2],
}

/// Where an evhost set-up keeps its log.
#[derive(Clone, Copy)]
enum Setup {
    Redb,
    Postgres { nodes: usize },
}

const SETUPS: [Setup; 3] = [
    Setup::Postgres { nodes: 1 },
    Setup::Postgres { nodes: NODES },
    Setup::Redb,
];

impl Setup {
    fn name(self) -> String {
        match self {
            Setup::Redb => "redb, 1 node".to_owned(),
            Setup::Postgres { nodes: 1 } => "PostgreSQL, 1 node".to_owned(),
            Setup::Postgres { nodes } => format!("PostgreSQL, {nodes} nodes"),
        }
    }
}

/// Running evhost nodes, stopped when dropped (killed) or by [`Nodes::stop`].
struct Nodes {
    servers: Vec<Server>,
    schema: Option<String>,
}

impl Nodes {
    fn system(&self) -> Arc<EvhostNodes> {
        Arc::new(EvhostNodes::new(self.addrs()))
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|server| server.addr).collect()
    }

    fn first(&self) -> &Server {
        &self.servers[0]
    }

    async fn stop(self, timeout: Duration) {
        for server in self.servers {
            if let Err(error) = server.stop(timeout).await {
                eprintln!("cluster: {error:#}");
            }
        }
    }
}

impl Cluster<'_> {
    /// Runs the rounds and renders the report.
    pub(crate) async fn run(&self, settings: &Settings, rounds: usize) -> Result<String> {
        let standbys = synchronous_standbys(&self.config).await?;
        if standbys == 0 {
            bail!("the PostgreSQL server has no synchronous standby; benches/run.sh starts one");
        }
        let (redb_log, postgres_log) = self.fill_logs().await?;
        let mut all = Vec::new();
        for round in 0..rounds {
            eprintln!("cluster: round {} of {rounds}", round + 1);
            all.push(self.round(settings, round, &redb_log, &postgres_log).await);
        }
        let _ = drop_schema(&self.config, &postgres_log).await;
        Ok(self.render(all, settings, standbys))
    }

    /// Fills the projection's log once on redb and once on PostgreSQL.
    async fn fill_logs(&self) -> Result<(PathBuf, String)> {
        let events = VISITS * 4;
        let redb = projections::fill_store(
            &self.binary,
            &self.work,
            "cluster-visits",
            projections::appends_of(VISITS),
            events,
            self.timeout,
        )
        .await?;
        let schema = "bench_visits".to_owned();
        drop_schema(&self.config, &schema).await?;
        let nodes = self
            .start(Setup::Postgres { nodes: 1 }, Some(&schema), "fill")
            .await?;
        let started = Instant::now();
        let appends = projections::appends_of(VISITS);
        projections::append_all(nodes.first().addr, appends, FILL_CLIENTS).await?;
        eprintln!(
            "cluster: stored {events} events on PostgreSQL in {:.1} s with {FILL_CLIENTS} clients",
            started.elapsed().as_secs_f64()
        );
        nodes.stop(self.timeout).await;
        Ok((redb, schema))
    }

    async fn round(
        &self,
        settings: &Settings,
        round: usize,
        redb_log: &Path,
        postgres_log: &str,
    ) -> Round {
        let mut runs = Vec::new();
        for position in [Position::Counter, Position::Sequence] {
            runs.push(crate::bench_postgres(self.args, settings, position).await);
        }
        let mut commands = Vec::new();
        for setup in SETUPS {
            let schema = format!("bench_r{round}_{}", setup_key(setup));
            let (run, measured) = self.evhost(setup, &schema, settings).await;
            runs.push(run);
            commands.push(measured);
        }
        let catch_up = [
            self.catch_up_on_redb(redb_log).await,
            self.catch_up_on_postgres(postgres_log, round).await,
        ];
        for (store, catch_up) in ["redb", "PostgreSQL"].iter().zip(&catch_up) {
            match catch_up {
                Ok(c) => eprintln!(
                    "cluster: visits catch-up on {store}: {:.0} events/s",
                    c.rate()
                ),
                Err(error) => eprintln!("cluster: visits catch-up on {store}: failed: {error}"),
            }
        }
        Round {
            runs,
            commands,
            catch_up,
        }
    }

    /// Starts the nodes of `setup`, on `schema` for PostgreSQL; `name` tells their logs apart.
    async fn start(&self, setup: Setup, schema: Option<&str>, name: &str) -> Result<Nodes> {
        let mut servers = Vec::new();
        let count = match setup {
            Setup::Redb => 1,
            Setup::Postgres { nodes } => nodes,
        };
        for node in 0..count {
            let data = self.work.join(format!("{name}-{node}"));
            let _ = std::fs::remove_dir_all(&data);
            let extra = match (setup, schema) {
                (Setup::Postgres { .. }, Some(schema)) => vec![
                    "--store".to_owned(),
                    self.url.clone(),
                    "--store-schema".to_owned(),
                    schema.to_owned(),
                ],
                _ => Vec::new(),
            };
            let log = format!("evhost-{name}-{node}");
            servers.push(
                Server::start_named(&self.binary, &data, &self.work, self.timeout, &log, &extra)
                    .await?,
            );
        }
        Ok(Nodes {
            servers,
            schema: schema.map(str::to_owned),
        })
    }

    /// The append workloads and then the visit commands on a fresh `setup`.
    async fn evhost(
        &self,
        setup: Setup,
        schema: &str,
        settings: &Settings,
    ) -> (SystemRun, Result<Measurement, String>) {
        let name = setup.name();
        let schema = matches!(setup, Setup::Postgres { .. }).then_some(schema);
        if let Some(schema) = schema
            && let Err(error) = drop_schema(&self.config, schema).await
        {
            let error = format!("{error:#}");
            return (
                SystemRun::failed(
                    SystemKind::Evhost,
                    &format!("evhost, {name}"),
                    error.clone(),
                ),
                Err(error),
            );
        }
        let nodes = match self.start(setup, schema, setup_key(setup)).await {
            Ok(nodes) => nodes,
            Err(error) => {
                let error = format!("{error:#}");
                let label = format!("evhost, {name}");
                return (
                    SystemRun::failed(SystemKind::Evhost, &label, error.clone()),
                    Err(error),
                );
            }
        };
        let version = Evhost {
            addr: nodes.first().addr,
        }
        .health()
        .await
        .map(|(version, _)| version)
        .unwrap_or_default();
        let label = format!("evhost {version}, {name}");
        let system = nodes.system();
        let probe = Some(Probe::Process(nodes.first().pid));
        let workloads = crate::bench(&label, &system, settings, probe).await;
        let commands = self
            .commands(&nodes, settings)
            .await
            .map_err(|error| format!("{error:#}"));
        match &commands {
            Ok(m) => eprintln!(
                "{label} visit commands: {:.0} commands/s",
                m.latency.map_or(0, |l| l.requests) as f64 / m.elapsed.as_secs_f64()
            ),
            Err(error) => {
                eprintln!(
                    "{label} visit commands: failed: {error}; the first node's log ends:\n{}",
                    nodes.first().log_tail()
                );
            }
        }
        let high_water = crate::memory::high_water_mark(nodes.first().pid);
        let schema = nodes.schema.clone();
        nodes.stop(self.timeout).await;
        if let Some(schema) = schema {
            let _ = drop_schema(&self.config, &schema).await;
        }
        let note = match setup {
            Setup::Redb => crate::evhost::NOTE.to_owned(),
            Setup::Postgres { nodes } => format!(
                "{nodes} release server{} on one schema of the PostgreSQL server below, each \
                 with its default configuration; clients spread over the nodes in turn; memory \
                 is the first node's RSS.",
                if nodes == 1 { "" } else { "s" }
            ),
        };
        let run = SystemRun {
            label,
            kind: SystemKind::Evhost,
            note,
            outcome: Ok(workloads),
            memory: None,
            high_water,
        };
        (run, commands)
    }

    /// Deploys the visit handler on the first node, waits until every node has it, and runs the
    /// visits with clients spread over the nodes.
    async fn commands(&self, nodes: &Nodes, settings: &Settings) -> Result<Measurement> {
        let first = Evhost {
            addr: nodes.first().addr,
        };
        first.deploy(self.visit.clone()).await?;
        for addr in nodes.addrs() {
            wait_for_plugin(addr, "visit", self.timeout).await?;
        }
        crate::plugins::run_visits(&nodes.system(), settings).await
    }

    async fn catch_up_on_redb(&self, filled: &Path) -> Result<CatchUp, String> {
        let data = self.work.join("cluster-catch-up");
        let _ = std::fs::remove_dir_all(&data);
        let run = async {
            projections::copy_dir(filled, &data)?;
            let server = Server::start(&self.binary, &data, &self.work, self.timeout).await?;
            let catch_up = projections::catch_up(&server, &self.visits, VISITS as u64 * 4).await;
            server.stop(self.timeout).await?;
            Ok::<_, anyhow::Error>(catch_up)
        };
        let result = run.await.map_err(|error| format!("{error:#}"));
        let _ = std::fs::remove_dir_all(&data);
        result.and_then(|catch_up| catch_up)
    }

    async fn catch_up_on_postgres(&self, filled: &str, round: usize) -> Result<CatchUp, String> {
        let schema = format!("bench_r{round}_catch_up");
        let run = async {
            copy_schema(&self.config, filled, &schema).await?;
            let setup = Setup::Postgres { nodes: 1 };
            let nodes = self.start(setup, Some(&schema), "catch-up").await?;
            let catch_up =
                projections::catch_up(nodes.first(), &self.visits, VISITS as u64 * 4).await;
            if catch_up.is_err() {
                eprintln!(
                    "cluster: the node's log ends:\n{}",
                    nodes.first().log_tail()
                );
            }
            nodes.stop(self.timeout).await;
            Ok::<_, anyhow::Error>(catch_up)
        };
        let result = run.await.map_err(|error| format!("{error:#}"));
        let _ = drop_schema(&self.config, &schema).await;
        result.and_then(|catch_up| catch_up)
    }

    fn render(&self, rounds: Vec<Round>, settings: &Settings, standbys: i64) -> String {
        let mut out = String::new();
        let count = rounds.len();
        let mut runs = Vec::new();
        let mut commands: Vec<Vec<Measurement>> = SETUPS.iter().map(|_| Vec::new()).collect();
        let mut catch_ups: [Vec<CatchUp>; 2] = [Vec::new(), Vec::new()];
        let mut errors = Vec::new();
        for round in rounds {
            runs.push(round.runs);
            for (pool, measured) in commands.iter_mut().zip(round.commands) {
                match measured {
                    Ok(measured) => pool.push(measured),
                    Err(error) => errors.push(format!("visit commands: {error}")),
                }
            }
            for (pool, catch_up) in catch_ups.iter_mut().zip(round.catch_up) {
                match catch_up {
                    Ok(catch_up) => pool.push(catch_up),
                    Err(error) => errors.push(format!("visits catch-up: {error}")),
                }
            }
        }
        let runs = report::median_rounds(runs);
        let _ = writeln!(out, "# evhost on PostgreSQL: the cluster benchmark\n");
        let _ = writeln!(out, "- Date: {}", report::date());
        let _ = writeln!(out, "- Machine: {}", report::machine());
        let _ = writeln!(out, "- Command: `{}`", self.args.command);
        let _ = writeln!(
            out,
            "- Topology: one PostgreSQL primary with {standbys} synchronous standby (streaming \
             replication, `synchronous_standby_names = '*'`, so a commit returns once the standby \
             has flushed it), both on this machine on loopback; evhost nodes on the same \
             machine. The same primary serves PostgreSQL alone and every evhost set-up, one \
             after the other, each evhost set-up on a schema of its own."
        );
        let _ = writeln!(
            out,
            "- Load: {} s measured after {} s of warm-up per timed workload, in {count} rounds \
             (each figure is from the median round); {} single-event appenders, {} batch \
             appenders of {} events, {} racers; {} clients sending visit commands.\n",
            settings.measure.as_secs_f64(),
            settings.warmup.as_secs_f64(),
            settings.clients,
            settings.batch_clients,
            settings.batch_size,
            settings.racers,
            settings.clients,
        );
        // The ratios are evhost with one node on PostgreSQL against PostgreSQL alone.
        let reference = runs.iter().find(|run| run.kind == SystemKind::Evhost);
        let _ = writeln!(
            out,
            "| Workload | System | Events/s | p50 ms | p99 ms | max ms | Conflicts | Peak memory MiB | evhost (PostgreSQL, 1 node) ÷ system | Rounds, events/s |"
        );
        let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|---|");
        for kind in report::WORKLOADS {
            for run in &runs {
                let _ = writeln!(out, "{}", report::row(run, kind, reference, settings));
            }
        }
        let _ = writeln!(out, "\n## Visit commands\n");
        let _ = writeln!(
            out,
            "| evhost on | Commands/s | Events/s | p50 ms | p99 ms |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|");
        let command_rate =
            |m: &Measurement| m.latency.map_or(0, |l| l.requests) as f64 / m.elapsed.as_secs_f64();
        let mut command_medians = Vec::new();
        for (setup, pool) in SETUPS.iter().zip(&commands) {
            let median = report::median_by(pool.iter().collect(), |m| Some(command_rate(m)));
            command_medians.push(median.map(command_rate));
            match median {
                Some(m) => {
                    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
                    let latency = m
                        .latency
                        .map(|l| (ms(l.p50), ms(l.p99)))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} |",
                        setup.name(),
                        thousands(command_rate(m)),
                        thousands(m.rate()),
                        latency.0,
                        latency.1
                    );
                }
                None => {
                    let _ = writeln!(out, "| {} | failed | | | |", setup.name());
                }
            }
        }
        let _ = writeln!(out, "\n## The visits projection catching up\n");
        let _ = writeln!(
            out,
            "{VISITS} visits ({} events), filled once per store and copied for every round; \
             timed from the deploy's answer until the projection's position is the head.\n",
            VISITS * 4
        );
        let _ = writeln!(out, "| Store | Events/s | Seconds | Rounds, events/s |");
        let _ = writeln!(out, "|---|--:|--:|---|");
        let mut catch_up_medians = Vec::new();
        for (store, pool) in ["redb", "PostgreSQL"].iter().zip(&catch_ups) {
            let median = report::median_by(pool.iter().collect(), |c| Some(c.rate()));
            catch_up_medians.push(median.map(CatchUp::rate));
            let every: Vec<String> = pool.iter().map(|c| thousands(c.rate())).collect();
            match median {
                Some(c) => {
                    let _ = writeln!(
                        out,
                        "| {store} | {} | {:.2} | {} |",
                        thousands(c.rate()),
                        c.elapsed.as_secs_f64(),
                        every.join(" · ")
                    );
                }
                None => {
                    let _ = writeln!(out, "| {store} | failed | | |");
                }
            }
        }
        let rate = |label: &str, kind| {
            runs.iter()
                .find(|run| run.label.contains(label))
                .and_then(|run| run.measured(kind))
                .map(Measurement::rate)
        };
        let evhost_one = |kind| {
            runs.iter()
                .find(|run| run.kind == SystemKind::Evhost)
                .and_then(|run| run.measured(kind))
                .map(Measurement::rate)
        };
        let sequence = |kind| rate("sequence", kind);
        let mut targets = Vec::new();
        for (what, kind, at_least) in [
            (
                "single-event appends ≥ 2× PostgreSQL with a sequence",
                report::WorkloadKind::Append,
                2.0,
            ),
            (
                "100-event batches ≥ 1× PostgreSQL with a sequence",
                report::WorkloadKind::Batch,
                1.0,
            ),
            (
                "reading the log ≥ 1× PostgreSQL",
                report::WorkloadKind::Read,
                1.0,
            ),
        ] {
            targets.push((
                what.to_owned(),
                evhost_one(kind).zip(sequence(kind)).map(|(a, b)| a / b),
                at_least,
            ));
        }
        let catch_up_ratio = catch_up_medians[1]
            .zip(catch_up_medians[0])
            .map(|(pg, redb)| pg / redb);
        targets.push((
            "visits catch-up on PostgreSQL ≥ 50 % of redb's".to_owned(),
            catch_up_ratio,
            0.5,
        ));
        let _ = writeln!(out, "\n## Targets\n");
        let _ = writeln!(out, "| Target | Measured | Met |");
        let _ = writeln!(out, "|---|--:|---|");
        for (what, ratio, at_least) in targets {
            let (measured, met) = match ratio {
                Some(ratio) => (
                    format!("{ratio:.2}×"),
                    if ratio >= at_least { "yes" } else { "no" },
                ),
                None => ("failed".to_owned(), "—"),
            };
            let _ = writeln!(out, "| {what} | {measured} | {met} |");
        }
        let _ = writeln!(out, "\n## Set-ups\n");
        for run in &runs {
            let _ = writeln!(out, "- {}: {}", run.label, run.note);
        }
        if !errors.is_empty() {
            let _ = writeln!(out, "\n## Failures\n");
            for error in errors {
                let _ = writeln!(out, "- {error}");
            }
        }
        out
    }
}

fn setup_key(setup: Setup) -> &'static str {
    match setup {
        Setup::Redb => "redb",
        Setup::Postgres { nodes: 1 } => "one",
        Setup::Postgres { .. } => "three",
    }
}

/// Waits until the node at `addr` knows the plugin `name`: a deploy reaches the other nodes
/// when they hear of the catalog's change.
async fn wait_for_plugin(addr: SocketAddr, name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut http = Connection::open(addr).await?;
    loop {
        let (status, _) = http
            .send(Method::GET, &format!("/plugins/{name}"), None)
            .await?;
        if status == StatusCode::OK {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the node at {addr} did not learn of {name} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many synchronous standbys the server has.
async fn synchronous_standbys(config: &str) -> Result<i64> {
    let client = connect(config).await?;
    let row = client
        .query_one(
            "select count(*) from pg_stat_replication where sync_state in ('sync', 'quorum')",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

async fn drop_schema(config: &str, schema: &str) -> Result<()> {
    let client = connect(config).await?;
    client
        .batch_execute(&format!("drop schema if exists \"{schema}\" cascade"))
        .await?;
    Ok(())
}

/// Copies every table of schema `from` into a new schema `to`, with its indexes and its rows,
/// except the rows that say which nodes run what.
async fn copy_schema(config: &str, from: &str, to: &str) -> Result<()> {
    let client = connect(config).await?;
    let tables = client
        .query(
            "select table_name::text from information_schema.tables
             where table_schema = $1 and table_type = 'BASE TABLE'",
            &[&from],
        )
        .await?;
    if tables.is_empty() {
        bail!("schema {from} has no tables");
    }
    let mut sql = format!("drop schema if exists \"{to}\" cascade; create schema \"{to}\";");
    for row in tables {
        let table: String = row.get(0);
        let _ = write!(
            sql,
            "create table \"{to}\".\"{table}\" (like \"{from}\".\"{table}\" including all);"
        );
        if !CLUSTER_TABLES.contains(&table.as_str()) {
            let _ = write!(
                sql,
                "insert into \"{to}\".\"{table}\" select * from \"{from}\".\"{table}\";"
            );
        }
    }
    client.batch_execute(&sql).await?;
    Ok(())
}

//! `evhost-bench`: runs the same workloads against evhost, PostgreSQL and NATS JetStream in one
//! run and prints a Markdown table of the figures, with evhost's ratio to each of the others; and
//! the plugin benchmarks, the visit handler on evhost (see [`plugins`]), in their own section;
//! and the same projection in Rust, Python and JavaScript (see [`languages`]).
//!
//! evhost is started here, from the release binary next to this one; PostgreSQL and NATS are
//! started by `benches/run.sh`, which passes their addresses. A system that fails (to start or in
//! a workload) is reported as failed and the others still run.

mod cluster;
mod evhost;
mod http;
mod jetstream;
mod languages;
mod memory;
mod nats;
mod plugins;
mod postgres;
mod projections;
mod report;
mod stress;
mod versions;
mod workload;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use crate::evhost::{Evhost, Server};
use crate::jetstream::JetStream;
use crate::memory::{Probe, Sampler};
use crate::plugins::{PluginRound, Plugins};
use crate::postgres::{Position, Postgres};
use crate::report::{MemoryRun, SystemKind, SystemRun, WorkloadKind, WorkloadRun, workload_name};
use crate::workload::{Measurement, Settings, System};

/// Benchmarks evhost against PostgreSQL and NATS JetStream on the same workloads.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// One round, 3 s per timed workload.
    #[arg(long)]
    quick: bool,
    /// Rounds of every workload on every system; the report quotes each figure's median round
    /// (default 3, or 1 with --quick). A round runs all systems in turn, so a slow spell of a
    /// shared machine falls on one round rather than on one system.
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds each timed workload is measured (default 5, or 3 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Seconds of unmeasured load before each timed workload.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Clients appending single events, or sending visit commands, each to its own stream.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Clients appending batches, each to its own stream.
    #[arg(long, default_value_t = 4)]
    batch_clients: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Clients racing to append to one stream.
    #[arg(long, default_value_t = 8)]
    racers: usize,
    /// Fill a fresh evhost store with this many events, restart it, and report its memory at
    /// rest and under the single-append load (0 skips this).
    #[arg(long, default_value_t = 0)]
    memory_events: u64,
    /// The systems to benchmark; `plugins` is the visit handler on evhost: commands/s, `evolve`
    /// in WebAssembly against native, and loading; `projections` the visits projection: catch-up
    /// against native, memory, append to visible; `versions` dry-run replays of `visit-v2` and
    /// `visits-v2` and a blue/green switch of `visits`; `languages` the projection `stays` in
    /// Rust, Python and JavaScript: per event, compile and cached load, ten Python plugins'
    /// memory.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "evhost,postgres,nats,plugins,projections,versions,languages"
    )]
    systems: Vec<Kind>,
    /// The evhost binary (default: `evhost` next to this program).
    #[arg(long)]
    evhost: Option<PathBuf>,
    /// Another evhost binary (an earlier build, say) that the stress benchmark puts under the
    /// same loads in the same run, for a before-and-after comparison.
    #[arg(long)]
    stress_baseline: Option<PathBuf>,
    /// Another evhost binary (an earlier build, say) that takes the evhost, plugins and
    /// projections workloads too, in the same rounds, right after this build's: its rows read
    /// "(baseline)", and the evhost ÷ system column of its rows is this build's ratio to it.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Seconds each stress load is measured (default 10).
    #[arg(long, default_value_t = 10.0)]
    stress_seconds: f64,
    /// Report evhost as failed with this reason instead of running it (the bench script passes
    /// this when evhost does not build).
    #[arg(long)]
    evhost_error: Option<String>,
    /// The visit handler component (default: where `cargo build --release --target
    /// wasm32-wasip2 -p visit` puts it, `../wasm32-wasip2/release/visit.wasm` from this program).
    #[arg(long)]
    visit_wasm: Option<PathBuf>,
    /// The visits projection component (default: next to the visit handler's).
    #[arg(long)]
    visits_wasm: Option<PathBuf>,
    /// Report the plugin benchmarks as failed with this reason instead of running them (the bench
    /// script passes this when the component does not build).
    #[arg(long)]
    plugins_error: Option<String>,
    /// The projection `stays` in Rust (default: next to the visit handler's component).
    #[arg(long)]
    stays_wasm: Option<PathBuf>,
    /// `stays-py`, the same projection built by the Python SDK (default:
    /// `../bench-guests/stays-py.wasm` from this program, where the bench script builds it).
    #[arg(long)]
    stays_py_wasm: Option<PathBuf>,
    /// `stays-js`, the same projection built by the JavaScript SDK (default:
    /// `../bench-guests/stays-js.wasm` from this program).
    #[arg(long)]
    stays_js_wasm: Option<PathBuf>,
    /// A directory of ten copies of `stays-py` named `stays-py-1` … `stays-py-10`, built as
    /// `stays-py-<n>.wasm`, for the memory of ten Python plugins (default:
    /// `../bench-guests/ten` from this program).
    #[arg(long)]
    stays_py_copies: Option<PathBuf>,
    /// Visits in the log of the languages benchmark, two events each (default 35 000, about 5 s
    /// of catch-up for Python, or 5 000 with --quick).
    #[arg(long)]
    language_visits: Option<usize>,
    /// Report the languages benchmark as failed with this reason instead of running it (the
    /// bench script passes this when the Rust `stays` does not build).
    #[arg(long)]
    languages_error: Option<String>,
    /// PostgreSQL connection string, e.g. "host=127.0.0.1 port=5432 user=postgres".
    #[arg(long)]
    postgres: Option<String>,
    /// Where PostgreSQL's global positions come from, one run each: `counter` is gapless like
    /// evhost's log, `sequence` lets commits share flushes but leaves gaps.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "counter,sequence"
    )]
    postgres_positions: Vec<postgres::Position>,
    /// The same PostgreSQL server as a URL for `evhost serve --store`, e.g.
    /// "postgres://postgres@127.0.0.1:5432/postgres" (the cluster benchmark).
    #[arg(long)]
    postgres_url: Option<String>,
    /// NATS server address (JetStream enabled).
    #[arg(long)]
    nats: Option<SocketAddr>,
    /// Process id of the NATS server, to measure its memory.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// Directory for evhost's data and log (default: a new one under the system's temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Where to write the report, besides stdout.
    #[arg(long, default_value = "target/bench-report.md")]
    report: PathBuf,
    /// The command line to quote in the report.
    #[arg(long, default_value = "bash benches/run.sh")]
    command: String,
    /// Threads of the load generator; 1 keeps it on one core beside the server.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Seconds any single request, or a server start, may take.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Evhost,
    Postgres,
    Nats,
    Plugins,
    Projections,
    Versions,
    Languages,
    /// Not in the default set: the worst loads, and other clients' latency under each.
    Stress,
    /// Not in the default set: evhost on PostgreSQL with one node and three against
    /// PostgreSQL alone, all with a synchronous standby (`--postgres` and `--postgres-url`).
    Cluster,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = match args.client_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if args.client_threads > 1 {
        runtime.worker_threads(args.client_threads);
    }
    let result = runtime
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("evhost-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let measure = args.seconds.unwrap_or(if args.quick { 3.0 } else { 5.0 });
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let settings = Settings {
        warmup: Duration::from_secs_f64(args.warmup),
        measure: Duration::from_secs_f64(measure),
        op_timeout: Duration::from_secs_f64(args.timeout),
        clients: args.clients,
        batch_clients: args.batch_clients,
        batch_size: args.batch_size,
        racers: args.racers,
        events: Arc::new(workload::event_data(args.batch_size.max(1))),
    };
    let (work, temporary) = match &args.work_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("evhost-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // The component and the long stream are the same in every round: read and written once.
    let current = evhost_binary(&args);
    let plugins = args.systems.contains(&Kind::Plugins).then(|| {
        current
            .as_ref()
            .map_err(|error| anyhow::anyhow!("{error:#}"))
            .and_then(|binary| prepare_plugins(&args, binary, &work))
            .map_err(|error| format!("{error:#}"))
    });
    let projections = if args.systems.contains(&Kind::Projections) {
        Some(match &current {
            Ok(binary) => prepare_projections(&args, binary, &work)
                .await
                .map_err(|error| format!("{error:#}")),
            Err(error) => Err(format!("{error:#}")),
        })
    } else {
        None
    };
    // The baseline's own prepared plugins and projection, in a work directory of its own.
    let baseline_work = work.join("baseline");
    let baseline_plugins = match (&args.baseline, args.systems.contains(&Kind::Plugins)) {
        (Some(binary), true) => Some(
            prepare_plugins(&args, binary, &baseline_work).map_err(|error| format!("{error:#}")),
        ),
        _ => None,
    };
    let baseline_projections = match (&args.baseline, args.systems.contains(&Kind::Projections)) {
        (Some(binary), true) => Some(
            prepare_projections(&args, binary, &baseline_work)
                .await
                .map_err(|error| format!("{error:#}")),
        ),
        _ => None,
    };
    let mut baseline_plugin_rounds = Vec::new();
    let mut baseline_projection_rounds = Vec::new();
    let versions = if args.systems.contains(&Kind::Versions) {
        Some(
            prepare_versions(&args, &work)
                .await
                .map_err(|error| format!("{error:#}")),
        )
    } else {
        None
    };
    let languages = if args.systems.contains(&Kind::Languages) {
        Some(
            prepare_languages(&args, &work)
                .await
                .map_err(|error| format!("{error:#}")),
        )
    } else {
        None
    };
    // The stress and cluster benchmarks are runs of their own: their loads and set-ups would
    // spoil every other figure.
    if args.systems.contains(&Kind::Stress) || args.systems.contains(&Kind::Cluster) {
        let text = if args.systems.contains(&Kind::Stress) {
            run_stress(&args, &work).await?
        } else {
            run_cluster(&args, &settings, rounds, &work).await?
        };
        println!("{text}");
        if temporary {
            let _ = std::fs::remove_dir_all(&work);
        }
        std::fs::write(&args.report, text)
            .with_context(|| format!("writing {}", args.report.display()))?;
        eprintln!("report written to {}", args.report.display());
        return Ok(());
    }
    let mut language_rounds = Vec::new();
    let mut version_rounds = Vec::new();
    let mut all_rounds = Vec::new();
    let mut plugin_rounds = Vec::new();
    let mut projection_rounds = Vec::new();
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        let mut runs = Vec::new();
        for kind in &args.systems {
            match kind {
                // The memory workload fills a large store: once is enough.
                Kind::Evhost => {
                    runs.push(bench_evhost(&args, &settings, &work, round == 0).await);
                    if let Some(baseline) = &args.baseline {
                        runs.push(bench_baseline(&args, baseline, &settings, &work).await);
                    }
                }
                Kind::Postgres => {
                    for &position in &args.postgres_positions {
                        runs.push(bench_postgres(&args, &settings, position).await);
                    }
                }
                Kind::Nats => runs.push(bench_nats(&args, &settings).await),
                Kind::Plugins => {
                    plugin_rounds.push(match &plugins {
                        Some(Ok(plugins)) => plugins.round(&settings).await,
                        Some(Err(error)) => {
                            eprintln!("plugins: failed: {error}");
                            PluginRound::failed(error)
                        }
                        None => unreachable!("prepared when the systems include plugins"),
                    });
                    match &baseline_plugins {
                        Some(Ok(plugins)) => {
                            baseline_plugin_rounds.push(plugins.round(&settings).await)
                        }
                        Some(Err(error)) => baseline_plugin_rounds.push(PluginRound::failed(error)),
                        None => {}
                    }
                }
                Kind::Projections => {
                    projection_rounds.push(match &projections {
                        Some(Ok(projections)) => projections.round().await,
                        Some(Err(error)) => {
                            eprintln!("projections: failed: {error}");
                            projections::ProjectionRound::failed(error)
                        }
                        None => unreachable!("prepared when the systems include projections"),
                    });
                    match &baseline_projections {
                        Some(Ok(projections)) => {
                            baseline_projection_rounds.push(projections.round().await);
                        }
                        Some(Err(error)) => baseline_projection_rounds
                            .push(projections::ProjectionRound::failed(error)),
                        None => {}
                    }
                }
                Kind::Versions => version_rounds.push(match &versions {
                    Some(Ok(versions)) => versions.round().await,
                    Some(Err(error)) => {
                        eprintln!("versions: failed: {error}");
                        versions::VersionsRound::failed(error)
                    }
                    None => unreachable!("prepared when the systems include versions"),
                }),
                // Ten Python plugins take minutes to deploy: their memory is measured once.
                Kind::Languages => language_rounds.push(match &languages {
                    Some(Ok(languages)) => languages.round(round == 0).await,
                    Some(Err(error)) => {
                        eprintln!("languages: failed: {error}");
                        languages::LanguagesRound::failed(error)
                    }
                    None => unreachable!("prepared when the systems include languages"),
                }),
                Kind::Stress | Kind::Cluster => unreachable!("a benchmark that runs on its own"),
            }
        }
        all_rounds.push(runs);
    }
    let runs = report::median_rounds(all_rounds);
    if temporary {
        let _ = std::fs::remove_dir_all(&work);
    }
    let mut text = report::render(
        &runs,
        &plugin_rounds,
        &projection_rounds,
        &version_rounds,
        &language_rounds,
        &settings,
        &args.command,
    );
    if let Some(baseline) = &args.baseline {
        text.push_str(&report::render_baseline(
            baseline,
            &baseline_plugin_rounds,
            &baseline_projection_rounds,
            &settings,
        ));
    }
    println!("{text}");
    if let Some(dir) = args.report.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.report, text)
        .with_context(|| format!("writing {}", args.report.display()))?;
    eprintln!("report written to {}", args.report.display());
    Ok(())
}

/// The evhost binary: `--evhost`, or `evhost` next to this program.
fn evhost_binary(args: &Args) -> Result<PathBuf> {
    if let Some(error) = &args.evhost_error {
        anyhow::bail!("{error}");
    }
    match &args.evhost {
        Some(binary) => Ok(binary.clone()),
        None => Ok(std::env::current_exe()?.with_file_name("evhost")),
    }
}

/// A component: the file given, or `file` where `cargo build --release --target wasm32-wasip2`
/// puts it, seen from this program (target/release/evhost-bench → target/wasm32-wasip2/release/).
fn component(given: &Option<PathBuf>, file: &str) -> Result<PathBuf> {
    in_target(given, &format!("wasm32-wasip2/release/{file}"))
}

/// The path given, or `path` in the target directory this program was built in.
fn in_target(given: &Option<PathBuf>, path: &str) -> Result<PathBuf> {
    match given {
        Some(given) => Ok(given.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("this program is not in a target directory")?
            .join(path)),
    }
}

/// The evhost binary and the request timeout, for the plugin benchmarks, unless the bench script
/// said their components did not build.
fn plugin_setup(args: &Args) -> Result<(PathBuf, Duration)> {
    if let Some(error) = &args.plugins_error {
        anyhow::bail!("{error}");
    }
    Ok((evhost_binary(args)?, Duration::from_secs_f64(args.timeout)))
}

fn prepare_plugins(args: &Args, binary: &Path, work: &Path) -> Result<Plugins> {
    let (_, timeout) = plugin_setup(args)?;
    let visit = component(&args.visit_wasm, "visit.wasm")?;
    std::fs::create_dir_all(work)?;
    Plugins::prepare(binary.to_path_buf(), visit, work, timeout)
}

async fn prepare_projections(
    args: &Args,
    binary: &Path,
    work: &Path,
) -> Result<projections::Projections> {
    let (_, timeout) = plugin_setup(args)?;
    let visits = component(&args.visits_wasm, "visits.wasm")?;
    std::fs::create_dir_all(work)?;
    projections::Projections::prepare(binary.to_path_buf(), &visits, work, timeout).await
}

async fn prepare_versions(args: &Args, work: &Path) -> Result<versions::Versions> {
    let (binary, timeout) = plugin_setup(args)?;
    // The second versions sit beside the first.
    let visit = component(&args.visit_wasm, "visit.wasm")?;
    let components = versions::Components {
        visit_v2: visit.with_file_name("visit_v2.wasm"),
        visits: component(&args.visits_wasm, "visits.wasm")?,
        visits_v2: visit.with_file_name("visits_v2.wasm"),
        visit,
    };
    versions::Versions::prepare(binary, &components, work, timeout).await
}

async fn prepare_languages(args: &Args, work: &Path) -> Result<languages::Languages> {
    if let Some(error) = &args.languages_error {
        anyhow::bail!("{error}");
    }
    let binary = evhost_binary(args)?;
    let components = languages::Components {
        stays: [
            component(&args.stays_wasm, "stays.wasm")?,
            in_target(&args.stays_py_wasm, "bench-guests/stays-py.wasm")?,
            in_target(&args.stays_js_wasm, "bench-guests/stays-js.wasm")?,
        ],
        python_copies: in_target(&args.stays_py_copies, "bench-guests/ten")?,
    };
    let visits = args
        .language_visits
        .unwrap_or(if args.quick { 5_000 } else { 35_000 });
    let timeout = Duration::from_secs_f64(args.timeout);
    languages::Languages::prepare(binary, &components, visits, work, timeout).await
}

fn failed(kind: SystemKind, name: &str, error: &anyhow::Error) -> SystemRun {
    eprintln!("{name}: failed: {error:#}");
    SystemRun::failed(kind, name, format!("{error:#}"))
}

async fn bench_evhost(args: &Args, settings: &Settings, work: &Path, memory: bool) -> SystemRun {
    let run = async {
        let binary = evhost_binary(args)?;
        evhost_runs(args, &binary, "", settings, work, memory).await
    };
    match run.await {
        Ok(run) => run,
        Err(error) => failed(SystemKind::Evhost, "evhost", &error),
    }
}

/// The evhost workloads on the `--baseline` binary.
async fn bench_baseline(args: &Args, binary: &Path, settings: &Settings, work: &Path) -> SystemRun {
    match evhost_runs(args, binary, " (baseline)", settings, work, false).await {
        Ok(run) => run,
        Err(error) => failed(SystemKind::Evhost, "evhost (baseline)", &error),
    }
}

async fn evhost_runs(
    args: &Args,
    binary: &Path,
    label_suffix: &str,
    settings: &Settings,
    work: &Path,
    with_memory: bool,
) -> Result<SystemRun> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let data = work.join("evhost-data");
    let server = Server::start(binary, &data, work, timeout).await?;
    let system = Arc::new(Evhost { addr: server.addr });
    let (version, _) = system.health().await?;
    let label = format!("evhost {version}{label_suffix}");
    let workloads = bench(&label, &system, settings, Some(Probe::Process(server.pid))).await;
    if workloads.iter().any(|run| run.result.is_err()) {
        eprintln!("{label}: the server's log ends:\n{}", server.log_tail());
    }
    let high_water = memory::high_water_mark(server.pid);
    // The figures stand even if the server does not stop cleanly.
    if let Err(error) = server.stop(timeout).await {
        eprintln!("{label}: {error:#}");
    }
    let _ = std::fs::remove_dir_all(&data);
    let memory = match args.memory_events {
        0 => None,
        _ if !with_memory => None,
        events => Some(
            memory_run(binary, work, settings, events, timeout)
                .await
                .map_err(|error| {
                    eprintln!("{label}: memory workload failed: {error:#}");
                    format!("{error:#}")
                }),
        ),
    };
    Ok(SystemRun {
        label,
        kind: SystemKind::Evhost,
        note: evhost::NOTE.to_owned(),
        outcome: Ok(workloads),
        memory,
        high_water,
    })
}

/// Fills a fresh store with `events` events, restarts the server on it, and measures its memory
/// at rest and under the single-append load.
async fn memory_run(
    binary: &Path,
    work: &Path,
    settings: &Settings,
    events: u64,
    timeout: Duration,
) -> Result<MemoryRun> {
    const FILL_BATCH: usize = 1000;
    const FILL_CLIENTS: usize = 4;
    let data = work.join("evhost-memory");
    let server = Server::start(binary, &data, work, timeout).await?;
    let system = Arc::new(Evhost { addr: server.addr });
    eprintln!("evhost memory: storing {events} events in batches of {FILL_BATCH}");
    let batch = Arc::new(workload::event_data(FILL_BATCH));
    let fill = workload::fill(&system, settings, "fill", FILL_CLIENTS, &batch, events).await?;
    eprintln!(
        "evhost memory: stored {} events at {:.0} events/s; restarting",
        fill.appended,
        fill.rate()
    );
    server.stop(timeout).await?;
    // Opening 10 million events may take longer than an ordinary start.
    let server = Server::start(binary, &data, work, timeout * 10).await?;
    let system = Arc::new(Evhost { addr: server.addr });
    let (_, head) = system.health().await?;
    system.read_head(head).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_rest = Probe::Process(server.pid).resident();
    let sampler = Sampler::start(Probe::Process(server.pid));
    let load = workload::append_own(
        &system,
        settings,
        "memory-append",
        settings.clients,
        &settings.single_event(),
    )
    .await;
    let under_load = sampler.finish();
    if let Err(error) = server.stop(timeout).await {
        eprintln!("evhost memory: {error:#}");
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(MemoryRun {
        events: head,
        fill_rate: fill.rate(),
        at_rest,
        under_load,
        load: load?,
    })
}

async fn bench_postgres(args: &Args, settings: &Settings, position: Position) -> SystemRun {
    let setup = async {
        let config = args.postgres.as_deref();
        let config = config.context("no --postgres given")?;
        let (system, facts) = Postgres::setup(config, position).await?;
        // "15.18 (Debian 15.18-0+deb12u1)" → "15.18"
        let version = facts.version.split_whitespace().next().unwrap_or_default();
        let label = format!("PostgreSQL {version}, {}", position.name());
        Ok((system, label, facts.pid.map(Probe::Tree)))
    };
    let name = format!("PostgreSQL ({})", position.name());
    bench_service(
        SystemKind::Postgres,
        &name,
        position.note(),
        settings,
        setup,
    )
    .await
}

async fn bench_nats(args: &Args, settings: &Settings) -> SystemRun {
    let setup = async {
        let (system, version) = JetStream::setup(args.nats.context("no --nats given")?).await?;
        let label = format!("NATS JetStream {version}");
        Ok((system, label, args.nats_pid.map(Probe::Process)))
    };
    let note = jetstream::NOTE.to_owned();
    bench_service(SystemKind::Nats, "NATS JetStream", note, settings, setup).await
}

/// Benchmarks a server started by the bench script, once `setup` has reached it and returned
/// it with its label (name and version) and how to measure its memory; `name` stands for it if
/// it cannot be reached.
async fn bench_service<S: System>(
    kind: SystemKind,
    name: &str,
    note: String,
    settings: &Settings,
    setup: impl Future<Output = Result<(S, String, Option<Probe>)>>,
) -> SystemRun {
    match setup.await {
        Ok((system, label, probe)) => {
            let workloads = bench(&label, &Arc::new(system), settings, probe).await;
            SystemRun {
                label,
                kind,
                note,
                outcome: Ok(workloads),
                memory: None,
                high_water: None,
            }
        }
        Err(error) => failed(kind, name, &error),
    }
}

/// Runs every workload against one system, in order, the read last so that it reads what the
/// others appended.
async fn bench<S: System>(
    label: &str,
    system: &Arc<S>,
    settings: &Settings,
    probe: Option<Probe>,
) -> Vec<WorkloadRun> {
    let single = settings.single_event();
    let mut bench = Bench {
        label,
        settings,
        probe,
        runs: Vec::new(),
        appended: Some(0),
    };
    let name = workload_name(WorkloadKind::Append, settings);
    let append = workload::append_own(system, settings, &name, settings.clients, &single);
    bench.measure(WorkloadKind::Append, append).await;
    let name = workload_name(WorkloadKind::Batch, settings);
    let (clients, events) = (settings.batch_clients, &settings.events);
    let batch = workload::append_own(system, settings, &name, clients, events);
    bench.measure(WorkloadKind::Batch, batch).await;
    let name = workload_name(WorkloadKind::Race, settings);
    let race = workload::race(system, settings, &name);
    bench.measure(WorkloadKind::Race, race).await;
    let read = workload::read_all(system, settings, bench.appended);
    bench.measure(WorkloadKind::Read, read).await;
    bench.runs
}

/// The workloads run so far against one system.
struct Bench<'a> {
    label: &'a str,
    settings: &'a Settings,
    probe: Option<Probe>,
    runs: Vec<WorkloadRun>,
    /// Events stored so far, or `None` once a failed workload left it unknown.
    appended: Option<u64>,
}

impl Bench<'_> {
    async fn measure(
        &mut self,
        kind: WorkloadKind,
        workload: impl Future<Output = Result<Measurement>>,
    ) {
        let name = workload_name(kind, self.settings);
        let sampler = self.probe.map(Sampler::start);
        let result = workload.await;
        let peak_memory = sampler.and_then(Sampler::finish);
        match &result {
            Ok(measurement) => {
                self.appended = self.appended.map(|sum| sum + measurement.appended);
                eprintln!("{} {name}: {:.0} events/s", self.label, measurement.rate());
            }
            Err(error) => {
                self.appended = None;
                eprintln!("{} {name}: failed: {error:#}", self.label);
            }
        }
        let result = result.map_err(|error| format!("{error:#}"));
        let rates = result.iter().map(Measurement::rate).collect();
        self.runs.push(WorkloadRun {
            kind,
            result,
            peak_memory,
            rates,
        });
    }
}

/// The cluster benchmark: evhost on PostgreSQL against PostgreSQL alone.
async fn run_cluster(
    args: &Args,
    settings: &Settings,
    rounds: usize,
    work: &Path,
) -> Result<String> {
    let read = |path: PathBuf| -> Result<bytes::Bytes> {
        Ok(std::fs::read(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .into())
    };
    let cluster = cluster::Cluster {
        args,
        binary: evhost_binary(args)?,
        url: args
            .postgres_url
            .clone()
            .context("no --postgres-url given")?,
        config: args.postgres.clone().context("no --postgres given")?,
        visit: read(component(&args.visit_wasm, "visit.wasm")?)?,
        visits: read(component(&args.visits_wasm, "visits.wasm")?)?,
        work: work.to_path_buf(),
        timeout: Duration::from_secs_f64(args.timeout),
    };
    cluster.run(settings, rounds).await
}

/// The stress benchmark, on this build's evhost and on `--stress-baseline` if given.
async fn run_stress(args: &Args, work: &Path) -> Result<String> {
    let mut binaries = vec![("this build".to_owned(), evhost_binary(args)?)];
    if let Some(baseline) = &args.stress_baseline {
        binaries.push(("baseline".to_owned(), baseline.clone()));
    }
    let stress = stress::Stress {
        binaries,
        hostile: stress::read_component(&component(&None, "fixture_hostile.wasm")?)?,
        hostile_projection: stress::read_component(&component(
            &None,
            "fixture_hostile_projection.wasm",
        )?)?,
        work: work.to_path_buf(),
        seconds: args.stress_seconds,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    Ok(format!(
        "# evhost stress benchmark\n\nCommand: `{}`.\n{}",
        args.command,
        stress.run().await
    ))
}

//! The command line: `serve` runs the host; `append`, `read`, `tail`, `deploy`, `plugins`,
//! `command`, `replay`, `promote` and `rollback` talk to a running one.
//!
//! Architecture Invariant: this is the edge. It parses arguments and environment, wires the store
//! to the API, and turns errors into messages and exit codes (`anyhow` lives here only).

mod client;
mod cluster;
mod logging;
mod plugin_bench;
mod plugins;
mod serve;
mod versions;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "evhost",
    version,
    about = "An event store and WebAssembly plugin host in one binary"
)]
struct Cli {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Run the host: the event store and its HTTP API.
    Serve(ServeArgs),
    /// Append one event to a stream.
    Append(client::AppendArgs),
    /// Read a stream, or the global log when no stream is named.
    Read(client::ReadArgs),
    /// Follow the global log live (server-sent events), from a position on.
    Tail(client::TailArgs),
    /// Deploy a plugin component (a .wasm file): a handler takes over new commands at once, a
    /// projection's new version builds beside the active one and takes over once caught up.
    Deploy(plugins::DeployArgs),
    /// List the deployed plugins, or show one.
    Plugins(plugins::PluginsArgs),
    /// Send a command to a handler.
    Command(plugins::CommandArgs),
    /// Dry-run a version of a plugin over history, with a progress bar, and show what differs
    /// from what was recorded. Nothing is changed.
    Replay(versions::ReplayArgs),
    /// Make a version of a plugin active (its candidate, unless --version names another).
    Promote(versions::PromoteArgs),
    /// Return a plugin to its previous version.
    Rollback(versions::RollbackArgs),
    /// Show the nodes sharing the host's store, who runs which projection and policy, and the
    /// database's role and replication.
    Cluster(cluster::ClusterArgs),
    /// Measure a handler component locally: compile and cached-load times, and the cost of
    /// `evolve` per event over a file of events.
    PluginBench(plugin_bench::PluginBenchArgs),
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Directory holding the database file (and, with a PostgreSQL store, this node's compile
    /// cache); created if missing.
    #[arg(long, default_value = "./evhost-data")]
    data: PathBuf,
    /// Where events are kept: the embedded database file in --data (the default), or a
    /// PostgreSQL database several nodes share, given as a connection URL
    /// (`postgres://user@host1,host2/db?target_session_attrs=read-write` follows a failover).
    #[arg(long, env = "EVHOST_STORE", hide_env_values = true)]
    store: Option<String>,
    /// The PostgreSQL schema holding the store's tables.
    #[arg(long, env = "EVHOST_STORE_SCHEMA", default_value = "evhost")]
    store_schema: String,
    /// Connections to PostgreSQL this node keeps for reads and snapshots (the writer and the
    /// follower of the head have one each besides).
    #[arg(long, default_value_t = 16)]
    store_connections: usize,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    /// Token granting every operation.
    #[arg(long, env = "EVHOST_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Token granting reads, appends and commands.
    #[arg(long, env = "EVHOST_WRITE_TOKEN", hide_env_values = true)]
    write_token: Option<String>,
    /// Token granting reads.
    #[arg(long, env = "EVHOST_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
    /// Allow a non-loopback address without tokens (anyone who reaches it may write).
    #[arg(long)]
    insecure: bool,
    /// Memory for the database's page cache, in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mib: usize,
    /// Longest wait, in microseconds, for a commit group to fill up to the size of the last one.
    #[arg(long, env = "EVHOST_GROUP_COMMIT_WAIT_US", default_value_t = 250)]
    group_commit_wait_us: u64,
    /// Most client connections open at once; past it a connection is answered 503 and closed.
    /// Never more than the process's limit of open files allows.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// The longest a request body may take to arrive, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    body_timeout_ms: u64,
    /// The lowest rate, in bytes per second, at which a request body may arrive (on average,
    /// after its first 5 seconds).
    #[arg(long, default_value_t = 1024)]
    body_min_rate: u64,
    /// Requests (commands, queries) calling one plugin at once; default twice the cores.
    #[arg(long)]
    plugin_requests: Option<usize>,
    /// Requests calling any plugin at once; default four times the cores.
    #[arg(long)]
    plugin_requests_total: Option<usize>,
    /// The longest a request waits for its place to call a plugin before a 503, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    plugin_queue_ms: u64,
    /// A directory of compiled plugins to share with other hosts on this machine: a component
    /// compiled once is loaded from it by any host deployed the same bytes, whatever its data
    /// directory. Created if missing; it must be writable by this user alone.
    #[arg(long, env = "EVHOST_COMPILE_CACHE")]
    compile_cache: Option<PathBuf>,
    /// How the log on standard error is written: readable lines, or one JSON object per line.
    #[arg(long, env = "EVHOST_LOG_FORMAT", value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
}

/// Where a client subcommand finds the host.
#[derive(Args, Clone)]
pub(crate) struct Connection {
    /// The host's base URL.
    #[arg(long, env = "EVHOST_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Bearer token to present.
    #[arg(long, env = "EVHOST_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(match &cli.action {
        Action::Serve(args) => args.log_format,
        _ => logging::LogFormat::Text,
    });
    let result = match cli.action {
        Action::Serve(args) => serve::run(args),
        Action::Append(args) => client::append(args),
        Action::Read(args) => client::read(args),
        Action::Tail(args) => client::tail(args),
        Action::Deploy(args) => plugins::deploy(args),
        Action::Plugins(args) => plugins::list(args),
        Action::Command(args) => plugins::command(args),
        Action::Replay(args) => versions::replay(args),
        Action::Promote(args) => versions::promote(args),
        Action::Rollback(args) => versions::rollback(args),
        Action::Cluster(args) => cluster::show(args),
        Action::PluginBench(args) => plugin_bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("evhost: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! `evhost serve`: opens the store, binds the address, serves until SIGTERM or ctrl-c, then
//! finishes requests in flight and closes the database cleanly.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use anyhow::{Context, bail};

use super::ServeArgs;
use evhost_api::{self as api, App, Limits, Tokens};
use evhost_engine::placement::Placement;
use evhost_engine::plugins::{Admission, AdmissionLimits, Artifacts, Plugins};
use evhost_postgres::{PgOptions, PgStore};
use evhost_redb::{RedbStore, StoreOptions};
use evhost_runtime::{CompileCache, Runtime};
use evhost_store::Store;
use evhost_store::claims::NodeInfo;

pub(super) fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    let limits = limits(&args);
    let defaults = AdmissionLimits::default();
    let admission = AdmissionLimits {
        per_plugin: args.plugin_requests.unwrap_or(defaults.per_plugin).max(1),
        total: args.plugin_requests_total.unwrap_or(defaults.total).max(1),
        queue_wait: std::time::Duration::from_millis(args.plugin_queue_ms),
    };
    let tokens = Tokens::new(
        args.admin_token.take(),
        args.write_token.take(),
        args.read_token.take(),
    );
    let address = resolve(&args.listen)?;
    if !address.ip().is_loopback() && tokens.is_open() && !args.insecure {
        bail!(
            "refusing to listen on {address} without tokens: anyone who can reach it could append events. \
             Set --admin-token, --write-token and --read-token (or EVHOST_ADMIN_TOKEN, EVHOST_WRITE_TOKEN, \
             EVHOST_READ_TOKEN), listen on a loopback address, or pass --insecure"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // The composition root: the backend is chosen here, and nothing after this line knows
        // which one it is.
        let (store, artifacts, described) = open_store(&args, &limits).await?;
        let mut runtime = Runtime::new().map_err(anyhow::Error::msg)?;
        // A shared database is not trusted with compiled code: each node keeps its own cache.
        let compile_cache = match (&args.compile_cache, artifacts) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Artifacts::NotInStore) => Some(args.data.join("compile-cache")),
            (None, Artifacts::InStore) => None,
        };
        if let Some(dir) = &compile_cache {
            let cache = CompileCache::open(dir)
                .with_context(|| format!("opening the compile cache {}", dir.display()))?;
            runtime = runtime.with_compile_cache(cache);
        }
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let local = listener.local_addr()?;
        let node = NodeInfo {
            node: node_name(&args.data)?,
            incarnation: uuid::Uuid::new_v4().to_string(),
            address: format!("http://{local}"),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: evhost_store::now_rfc3339(),
        };
        tracing::info!("this node is {} ({})", node.node, node.incarnation);
        let placement = Placement::start(store.clone(), node);
        let mut plugins = Plugins::open(runtime, store.clone(), artifacts, placement)
            .await
            .context("loading the deployed plugins")?;
        plugins.admission = Admission::new(admission);
        let app = App::new(store.clone(), Arc::new(plugins), tokens, limits)
            .await
            .context("starting the API")?;
        // Installed before the address is announced: a SIGTERM sent as soon as a script sees
        // the line below stops the host cleanly rather than killing it.
        let shutdown = shutdown_signal().context("installing the signal handlers")?;
        tracing::info!(
            "serving {described} on http://{local} (head {})",
            store.head()
        );
        // The one line scripts wait for: the host accepts connections from now on.
        println!("evhost listening on http://{local}");
        std::io::stdout().flush()?;
        api::serve(listener, app, shutdown).await;
        store.close().await;
        tracing::info!("stopped cleanly at head {}", store.head());
        Ok(())
    })
}

/// This node's name: kept in `node-id` in the data directory, made on the first start, so that
/// a restarted node is the same node (and takes its work back at once).
fn node_name(data: &std::path::Path) -> anyhow::Result<String> {
    let path = data.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let name = format!("node-{}", uuid::Uuid::new_v4().simple());
    let partial = data.join("node-id.partial");
    std::fs::write(&partial, format!("{name}\n"))
        .and_then(|()| std::fs::rename(&partial, &path))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(name)
}

/// Opens the store the arguments choose; answers it, where compiled artifacts may be kept, and
/// what to call it in the log.
async fn open_store(
    args: &ServeArgs,
    limits: &Limits,
) -> anyhow::Result<(Arc<dyn Store>, Artifacts, String)> {
    match args.store.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let mut options = PgOptions::new(url);
            options.schema = args.store_schema.clone();
            options.append_limits = limits.append;
            options.pool_size = args.store_connections.max(1);
            let store = PgStore::open(options)
                .await
                .context("opening the PostgreSQL store")?;
            let name = format!("PostgreSQL schema {:?}", args.store_schema);
            Ok((Arc::new(store), Artifacts::NotInStore, name))
        }
        Some(other) => bail!(
            "--store {other:?} is not a PostgreSQL URL (postgres://…); leave it out to keep the \
             events in the database file in --data"
        ),
        None => {
            let options = StoreOptions {
                cache_bytes: args.cache_mib << 20,
                group_wait: std::time::Duration::from_micros(args.group_commit_wait_us),
                append_limits: limits.append,
                ..StoreOptions::default()
            };
            let data = args.data.clone();
            let redb = tokio::task::spawn_blocking(move || RedbStore::open(&data, &options))
                .await?
                .context("opening the store")?;
            Ok((
                Arc::new(redb),
                Artifacts::InStore,
                args.data.display().to_string(),
            ))
        }
    }
}

/// The API's limits from the command line, with the cap on connections kept within the open
/// files this process may have.
fn limits(args: &ServeArgs) -> Limits {
    let mut limits = Limits::default();
    let connection = &mut limits.connection;
    connection.body_timeout = std::time::Duration::from_millis(args.body_timeout_ms.max(1));
    connection.body_min_rate = args.body_min_rate;
    connection.max_connections = args.max_connections.max(1);
    if let Some(files) = api::raise_open_files_limit() {
        let room = files.saturating_sub(api::RESERVED_DESCRIPTORS).max(1) as usize;
        if room < connection.max_connections {
            tracing::warn!(
                "--max-connections {} is more than {files} open files allow; serving at most {room}",
                connection.max_connections
            );
            connection.max_connections = room;
        }
    }
    limits
}

fn resolve(listen: &str) -> anyhow::Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .with_context(|| format!("--listen {listen:?} is not an address like 127.0.0.1:7070"))?
        .next()
        .with_context(|| format!("--listen {listen:?} resolves to no address"))
}

/// Installs the handlers of SIGTERM and SIGINT (ctrl-c) now, and answers a future that
/// resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: finishing requests in flight");
    })
}

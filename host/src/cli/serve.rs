//! `evhost serve`: opens the store, binds the address, serves until SIGTERM or ctrl-c, then
//! finishes requests in flight and closes the database cleanly.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use anyhow::{Context, bail};

use super::ServeArgs;
use evhost_api::{self as api, App, Limits, Tokens};
use evhost_engine::plugins::{Admission, AdmissionLimits, Plugins};
use evhost_redb::{RedbStore, StoreOptions};
use evhost_runtime::{CompileCache, Runtime};
use evhost_store::Store;

pub(super) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let limits = limits(&args);
    let defaults = AdmissionLimits::default();
    let admission = AdmissionLimits {
        per_plugin: args.plugin_requests.unwrap_or(defaults.per_plugin).max(1),
        total: args.plugin_requests_total.unwrap_or(defaults.total).max(1),
        queue_wait: std::time::Duration::from_millis(args.plugin_queue_ms),
    };
    let tokens = Tokens::new(args.admin_token, args.write_token, args.read_token);
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
        let options = StoreOptions {
            cache_bytes: args.cache_mib << 20,
            group_wait: std::time::Duration::from_micros(args.group_commit_wait_us),
            append_limits: limits.append,
            ..StoreOptions::default()
        };
        // The composition root: the backend is chosen here, and nothing after this line knows
        // which one it is.
        let data = args.data.clone();
        let redb = tokio::task::spawn_blocking(move || RedbStore::open(&data, &options))
            .await?
            .context("opening the store")?;
        let store: Arc<dyn Store> = Arc::new(redb);
        let mut runtime = Runtime::new().map_err(anyhow::Error::msg)?;
        if let Some(dir) = &args.compile_cache {
            let cache = CompileCache::open(dir)
                .with_context(|| format!("opening the compile cache {}", dir.display()))?;
            runtime = runtime.with_compile_cache(cache);
        }
        let mut plugins = Plugins::open(runtime, store.clone())
            .await
            .context("loading the deployed plugins")?;
        plugins.admission = Admission::new(admission);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let local = listener.local_addr()?;
        let app = App::new(store.clone(), Arc::new(plugins), tokens, limits)
            .await
            .context("starting the API")?;
        // Installed before the address is announced: a SIGTERM sent as soon as a script sees
        // the line below stops the host cleanly rather than killing it.
        let shutdown = shutdown_signal().context("installing the signal handlers")?;
        tracing::info!(
            "serving {} on http://{local} (head {})",
            args.data.display(),
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

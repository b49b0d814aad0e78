//! The plugin runtime: wasmtime with the component model, running the components plugin authors
//! upload, each call inside a sandbox with a time budget and a memory cap.
//!
//! [`Runtime`] owns the engine (pooling allocator, epoch interruption driven by a ticker thread)
//! and the linker (WASI with an empty context, and the host interfaces of `evhost:plugin`).
//! [`Runtime::compile`] turns uploaded bytes into a validated, compiled [`Loaded`] plugin;
//! [`Runtime::load_compiled`] brings back one compiled earlier from its cached artifact. A
//! [`HandlerPlugin`], [`ProjectionPlugin`] or [`PolicyPlugin`] keeps the instances of one version
//! (`pool.rs`) and makes the calls of its world, reusing an instance until a call on it fails.
//!
//! Architecture Invariant: only this module names wasmtime types. It knows nothing of HTTP or of
//! how events are stored: what crosses its boundary is bytes, strings and plain records.

mod bindings;
mod compile_cache;
mod gate;
mod handler;
mod policy;
mod pool;
mod projection;
mod sandbox;
mod threads;
mod validate;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use compile_cache::CompileCache;
use gate::CallGate;
pub use handler::{CommandInput, EventInput, HandlerPlugin, NewEvent};
pub use policy::{PolicyAction, PolicyPlugin};
use pool::InstancePool;
pub use projection::{LogEvent, ProjectionPlugin};
use sandbox::PluginState;
pub use sandbox::StateAccess;
pub use threads::CallThreads;

/// How often the epoch advances: the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Ticks without a call in flight before the ticker sleeps: calls that come close together
/// (a loaded host) find it awake and need not wake it.
const TICKS_BEFORE_SLEEP: u32 = 50;
/// The largest memory cap a deploy may ask for: the size of a memory slot in the pool.
pub const MAX_MEMORY_MIB: u64 = 1024;
/// The longest time budget a deploy may ask for.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// The largest state a deploy may allow a projection version, in MiB (1 TiB).
pub const MAX_STATE_MIB: u64 = 1 << 20;
/// Component instances the pool holds at once, across all plugins.
const POOL_INSTANCES: u32 = 1000;

/// The limits of every call into one plugin version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginLimits {
    /// Linear memory a plugin instance may grow to, in MiB.
    pub memory_mib: u64,
    /// Time one call may run, in milliseconds.
    pub timeout_ms: u64,
    /// The most a projection version's state may hold (keys and values), in MiB. Versions
    /// deployed before this limit existed take the default.
    #[serde(default = "default_state_mib")]
    pub state_mib: u64,
}

fn default_state_mib() -> u64 {
    1024
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_mib: 128,
            timeout_ms: 1_000,
            state_mib: default_state_mib(),
        }
    }
}

impl PluginLimits {
    /// Checks the limits against what the runtime can enforce.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(format!(
                "memory_mib must be between 1 and {MAX_MEMORY_MIB}, got {}",
                self.memory_mib
            ));
        }
        if !(1..=MAX_STATE_MIB).contains(&self.state_mib) {
            return Err(format!(
                "state_mib must be between 1 and {MAX_STATE_MIB}, got {}",
                self.state_mib
            ));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(format!(
                "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {}",
                self.timeout_ms
            ));
        }
        Ok(())
    }
}

/// The three kinds of plugin, as a component describes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    Handler,
    Projection,
    Policy,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Handler => "handler",
            PluginKind::Projection => "projection",
            PluginKind::Policy => "policy",
        })
    }
}

/// What a plugin says about itself through `meta.describe`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub kind: PluginKind,
    /// The category a handler owns.
    pub category: Option<String>,
    pub categories: Vec<String>,
    pub event_types: Vec<String>,
    pub description: String,
}

/// Why uploaded bytes are not a plugin this host can run; the message is for the person who
/// uploaded them.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPlugin(pub String);

/// Why a call into a plugin failed. The plugin's instance is thrown away after any of these.
#[derive(Debug, thiserror::Error)]
pub enum PluginFailure {
    /// The call ran past its time budget.
    #[error("the plugin ran past its time budget of {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// The plugin tried to grow its memory past its cap.
    #[error("the plugin tried to grow its memory past its cap of {memory_mib} MiB")]
    MemoryCap { memory_mib: u64 },
    /// The plugin trapped (a panic, an unreachable, an out-of-bounds access, ...).
    #[error("the plugin trapped: {0}")]
    Trap(String),
    /// The plugin returned an error or an answer the host cannot use.
    #[error("{0}")]
    Returned(String),
    /// The runtime could not provide an instance (the pool is exhausted, say).
    #[error("no plugin instance could be created: {0}")]
    Instantiate(String),
}

/// A plugin version of any kind, ready for calls.
pub enum PluginCalls {
    Handler(HandlerPlugin),
    Projection(ProjectionPlugin),
    Policy(PolicyPlugin),
}

impl PluginCalls {
    /// The same plugin under another label (once `describe` has told its name).
    pub fn relabel(self, label: &str) -> Self {
        match self {
            PluginCalls::Handler(p) => PluginCalls::Handler(p.relabel(label)),
            PluginCalls::Projection(p) => PluginCalls::Projection(p.relabel(label)),
            PluginCalls::Policy(p) => PluginCalls::Policy(p.relabel(label)),
        }
    }
}

/// A plugin that passed validation, ready for calls.
pub struct Loaded {
    pub info: PluginInfo,
    pub plugin: PluginCalls,
    /// The compiled form, to cache, when this load compiled the component:
    /// [`Runtime::load_compiled`] takes it back without compiling.
    pub artifact: Option<Vec<u8>>,
}

/// The engine, the linker and the ticker that drives deadlines.
pub struct Runtime {
    engine: Engine,
    linker: Linker<PluginState>,
    compatibility: String,
    ticker: Arc<EpochTicker>,
    ticker_thread: Option<JoinHandle<()>>,
    /// Bounds the calls running at once, across every plugin.
    gate: Arc<CallGate>,
    /// Where async callers send plugin work.
    threads: Arc<CallThreads>,
    /// Where compiled components are shared with other hosts, if anywhere.
    compile_cache: Option<CompileCache>,
}

/// Advances the engine's epoch while plugin calls run, and sleeps (parked) while none does, so
/// that an idle host does not wake every tick.
pub struct EpochTicker {
    calls: AtomicUsize,
    /// Whether the ticker thread is asleep (or about to be) for want of calls.
    parked: AtomicBool,
    stopping: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

/// Counts one call in flight until dropped.
pub struct Ticking<'a>(&'a EpochTicker);

impl EpochTicker {
    pub fn call_started(&self) -> Ticking<'_> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // Waking the ticker is a system call; under load it never sleeps, so this is rare.
        if self.parked.load(Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Ticking(self)
    }

    fn run(&self, engine: &Engine) {
        let mut idle_ticks = 0;
        while !self.stopping.load(Ordering::SeqCst) {
            if self.calls.load(Ordering::SeqCst) > 0 {
                idle_ticks = 0;
            } else if idle_ticks < TICKS_BEFORE_SLEEP {
                idle_ticks += 1;
            } else {
                // A call that starts after `parked` is set sees it and unparks this thread; an
                // unpark that comes before the park makes the park return at once.
                self.parked.store(true, Ordering::SeqCst);
                if self.calls.load(Ordering::SeqCst) == 0 && !self.stopping.load(Ordering::SeqCst) {
                    std::thread::park();
                }
                self.parked.store(false, Ordering::SeqCst);
                idle_ticks = 0;
                continue;
            }
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
        }
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Runtime {
    pub fn new() -> Result<Self, String> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_memories(POOL_INSTANCES)
            // A component built by wit-component holds a few small core instances and tables
            // (shims, fix-ups) beside its main module.
            .total_core_instances(POOL_INSTANCES * 4)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size((MAX_MEMORY_MIB << 20) as usize);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| format!("cannot start wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| format!("cannot link WASI: {e}"))?;
        // The policy world imports every host interface (`types`, `log`, `state`); the other
        // worlds import a subset of them.
        bindings::policy::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| format!("cannot link the host interfaces: {e}"))?;
        let compatibility = compatibility_key(&engine);
        let ticker = Arc::new(EpochTicker {
            calls: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
        });
        let ticker_thread = {
            let (engine, ticker) = (engine.clone(), ticker.clone());
            std::thread::Builder::new()
                .name("evhost-epoch".into())
                .spawn(move || ticker.run(&engine))
                .map_err(|e| format!("cannot start the epoch ticker: {e}"))?
        };
        let _ = ticker.thread.set(ticker_thread.thread().clone());
        Ok(Runtime {
            engine,
            linker,
            compatibility,
            ticker,
            ticker_thread: Some(ticker_thread),
            gate: Arc::new(CallGate::new(CallGate::default_max())),
            threads: CallThreads::start()
                .map_err(|e| format!("cannot start the plugin threads: {e}"))?,
            compile_cache: None,
        })
    }

    /// Compiles through `cache`: a component it holds is loaded from there instead (see
    /// [`CompileCache`]).
    pub fn with_compile_cache(mut self, cache: CompileCache) -> Self {
        self.compile_cache = Some(cache);
        self
    }

    /// The threads plugin work runs on (see [`CallThreads`]).
    pub fn threads(&self) -> Arc<CallThreads> {
        self.threads.clone()
    }

    /// Names what a compiled artifact depends on (wasmtime's version, its settings and this
    /// machine's CPU features): an artifact cached under another key must be compiled again.
    pub fn compatibility_key(&self) -> &str {
        &self.compatibility
    }

    /// Validates and compiles uploaded bytes: a component, of a world this host knows, that
    /// imports nothing beyond what plugins are granted, and whose `describe` works and names the
    /// kind of its world. `label` tags the plugin's log lines.
    pub fn compile(
        &self,
        wasm: &[u8],
        label: &str,
        limits: PluginLimits,
    ) -> Result<Loaded, InvalidPlugin> {
        validate::check_header(wasm)?;
        let cached = self
            .compile_cache
            .as_ref()
            .map(|cache| cache.entry(wasm, &self.compatibility));
        // The same bytes compiled and passed these checks before: loading them from the shared
        // cache answers as compiling them again would.
        if let Some(artifact) = cached.as_ref().and_then(|entry| entry.get())
            && let Some(loaded) = self.load_compiled(&artifact, label, limits)
        {
            let mut loaded = loaded?;
            tracing::info!("plugin {label}: found in the compile cache");
            loaded.artifact = Some(artifact);
            return Ok(loaded);
        }
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| InvalidPlugin(format!("the component does not compile: {e:#}")))?;
        let mut loaded = self.prepare(&component, label, limits)?;
        let artifact = component
            .serialize()
            .map_err(|e| InvalidPlugin(format!("the compiled component cannot be saved: {e}")))?;
        if let Some(entry) = cached {
            entry.put(&artifact);
        }
        loaded.artifact = Some(artifact);
        Ok(loaded)
    }

    /// Loads a compiled artifact, as the store or the compile cache keeps them; `None` (after a
    /// warning) if this engine cannot load it, so that the caller compiles instead.
    pub fn load_compiled(
        &self,
        artifact: &[u8],
        label: &str,
        limits: PluginLimits,
    ) -> Option<Result<Loaded, InvalidPlugin>> {
        // SAFETY: artifacts are only ever stored by this host from `Component::serialize`, under
        // a key naming the engine's compatibility hash, in the store or in a compile cache that
        // only the host's user may write; wasmtime still checks its own header and version and
        // refuses what does not match.
        let loaded = unsafe { Component::deserialize(&self.engine, artifact) };
        match loaded {
            Ok(component) => Some(self.prepare(&component, label, limits)),
            Err(error) => {
                tracing::warn!(
                    "a cached artifact of plugin {label} does not load ({error}); compiling again"
                );
                None
            }
        }
    }

    fn prepare(
        &self,
        component: &Component,
        label: &str,
        limits: PluginLimits,
    ) -> Result<Loaded, InvalidPlugin> {
        let kind = validate::world_of(&self.engine, component)?;
        validate::check_imports(&self.engine, component, kind)?;
        let describe_failed = |e: PluginFailure| InvalidPlugin(format!("describe failed: {e}"));
        let (info, plugin) = match kind {
            PluginKind::Handler => {
                let pool = InstancePool::new(self, component, label, limits)?;
                let info = pool.describe().map_err(describe_failed)?;
                (info, PluginCalls::Handler(HandlerPlugin::new(pool)))
            }
            PluginKind::Projection => {
                let pool = InstancePool::new(self, component, label, limits)?;
                let info = pool.describe().map_err(describe_failed)?;
                (info, PluginCalls::Projection(ProjectionPlugin::new(pool)))
            }
            PluginKind::Policy => {
                let pool = InstancePool::new(self, component, label, limits)?;
                let info = pool.describe().map_err(describe_failed)?;
                (info, PluginCalls::Policy(PolicyPlugin::new(pool)))
            }
        };
        validate::check_info(&info, kind)?;
        Ok(Loaded {
            info,
            plugin,
            artifact: None,
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.ticker_thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The hex SHA-256 of the engine's compatibility hash input.
fn compatibility_key(engine: &Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            unreachable!("only the digest is read")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex(&hasher.0.finalize()[..16])
}

/// The hex SHA-256 of uploaded bytes: the version of a plugin.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

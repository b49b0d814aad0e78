//! What a plugin instance sees of the world: an empty WASI context (no files, sockets,
//! environment or arguments; a clock frozen at the epoch, and randomness seeded afresh at the
//! start of every call from that call's inputs ([`call_seed`]), so that what the sandbox gives
//! a call depends on the call alone, not on which instance runs it or what ran there before),
//! its output streams and log lines going to
//! the host's log under the plugin's label, and a cap on its linear memory. During a call of a
//! projection or policy, the `state` import reaches the [`StateAccess`] the caller lent for that
//! call, after the keys and values the plugin writes have been checked.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::Level;
use super::bindings::handler::evhost::plugin as handler_world;
use super::bindings::projection::evhost::plugin::state;

/// Most bytes of guest output kept for one log line; a longer line is cut.
const MAX_LINE_BYTES: usize = 8 << 10;
/// Table elements an instance may grow its tables to.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// The longest key a plugin may store.
pub const MAX_STATE_KEY_BYTES: usize = 1024;
/// The largest value a plugin may store.
pub const MAX_STATE_VALUE_BYTES: usize = 1 << 20;
/// Most entries one `scan` returns.
pub const MAX_SCAN_ENTRIES: u32 = 1000;

/// The key-value state a projection or policy version reads and writes during one call. The
/// runtime checks keys and values before they reach it; an error fails the plugin's call.
pub trait StateAccess: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<String>, String>;
    fn put(&self, key: String, value: String) -> Result<(), String>;
    fn delete(&self, key: String) -> Result<(), String>;
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, String>;
}

/// The data of one plugin instance's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// `name@version`, tagging everything the plugin writes to the log.
    label: Arc<str>,
    memory_cap: usize,
    /// Set when the plugin tried to grow its memory past the cap, so that the trap that follows
    /// is reported as what it is.
    pub memory_cap_hit: bool,
    /// What the `state` import reaches during the current call; none outside calls and for
    /// handlers.
    pub state: Option<Arc<dyn StateAccess>>,
    /// The generators behind `wasi:random`, reseeded at the start of each call.
    random: CallRandom,
    insecure_random: CallRandom,
    /// The current call's clock: what of its time is the plugin's own.
    pub budget: CallBudget,
}

/// A call's time budget. Time the call spends waiting for the store behind the `state` import (a
/// network round trip per read on a shared database) is not the plugin's, so it does not count,
/// up to [`STATE_WAIT_ALLOWANCE`] times the budget: past that, waiting counts too, so that no call
/// holds a plugin thread longer than that many budgets whatever it reads.
#[derive(Debug, Clone, Copy)]
pub struct CallBudget {
    started: Instant,
    limit: Duration,
    state_wait: Duration,
}

/// How many budgets' worth of waiting for the store a call may spend besides its own budget.
pub const STATE_WAIT_ALLOWANCE: u32 = 9;

impl CallBudget {
    pub fn start(limit: Duration) -> Self {
        CallBudget {
            started: Instant::now(),
            limit,
            state_wait: Duration::ZERO,
        }
    }

    /// What is left of the budget now, or `None` when it is spent.
    pub fn left(&self) -> Option<Duration> {
        let excused = self.state_wait.min(self.limit * STATE_WAIT_ALLOWANCE);
        let spent = self.started.elapsed().saturating_sub(excused);
        self.limit.checked_sub(spent).filter(|left| !left.is_zero())
    }

    /// Runs `read`, a call into the store, and excuses the time it takes.
    fn waiting<T>(&mut self, read: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = read();
        self.state_wait += started.elapsed();
        result
    }
}

impl PluginState {
    pub fn new(label: Arc<str>, memory_cap: usize) -> Self {
        let random = CallRandom::default();
        let insecure_random = CallRandom::default();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(LogStream::new(label.clone(), "stdout"))
            .stderr(LogStream::new(label.clone(), "stderr"))
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(random.clone())
            .insecure_random(insecure_random.clone())
            .insecure_random_seed(0)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        PluginState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            label,
            memory_cap,
            memory_cap_hit: false,
            state: None,
            budget: CallBudget::start(Duration::ZERO),
            random,
            insecure_random,
        }
    }

    /// Seeds the instance's randomness for the call about to start.
    pub fn seed(&mut self, seed: u64) {
        self.random.reseed(seed);
        self.insecure_random.reseed(seed ^ 0x7365_6564);
    }
}

/// A generator shared between an instance's WASI context and the host, which reseeds it per
/// call.
#[derive(Clone)]
struct CallRandom(Arc<Mutex<StdRng>>);

impl Default for CallRandom {
    fn default() -> Self {
        CallRandom(Arc::new(Mutex::new(StdRng::seed_from_u64(0))))
    }
}

impl CallRandom {
    fn reseed(&self, seed: u64) {
        *self.lock() = StdRng::seed_from_u64(seed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StdRng> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl rand::TryRng for CallRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(rand::Rng::next_u32(&mut *self.lock()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(rand::Rng::next_u64(&mut *self.lock()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand::Rng::fill_bytes(&mut *self.lock(), dst);
        Ok(())
    }
}

/// The seed of a call's randomness: a digest of what identifies its inputs (each part
/// length-prefixed, so that parts cannot run into each other). The same inputs give the same
/// randomness on any instance, in any host, in a replay.
pub fn call_seed(parts: &[&[u8]]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    let bytes = digest.finalize();
    u64::from_le_bytes(
        bytes[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

impl PluginState {
    /// The cap on this instance's linear memory, in bytes.
    pub fn memory_cap(&self) -> usize {
        self.memory_cap
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for PluginState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_cap_hit = true;
            return Err(wasmtime::Error::msg(format!(
                "memory would grow to {desired} bytes, past the cap of {} bytes",
                self.memory_cap
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl handler_world::types::Host for PluginState {}

impl PluginState {
    fn state(&self) -> wasmtime::Result<&Arc<dyn StateAccess>> {
        self.state
            .as_ref()
            .ok_or_else(|| wasmtime::Error::msg("state is not available outside a call"))
    }
}

/// A key the plugin may use, or why not.
fn check_key(key: &str) -> wasmtime::Result<()> {
    if key.is_empty() || key.len() > MAX_STATE_KEY_BYTES {
        return Err(wasmtime::Error::msg(format!(
            "state key of {} bytes; keys are 1 to {MAX_STATE_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

impl state::Host for PluginState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let state = self.state()?.clone();
        self.budget
            .waiting(|| state.get(&key))
            .map_err(wasmtime::Error::msg)
    }

    fn put(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        check_key(&key)?;
        if value.len() > MAX_STATE_VALUE_BYTES {
            return Err(wasmtime::Error::msg(format!(
                "state value of {} bytes under key {key:?}; values are at most {MAX_STATE_VALUE_BYTES} bytes",
                value.len()
            )));
        }
        if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(&value) {
            return Err(wasmtime::Error::msg(format!(
                "state value under key {key:?} is not JSON text: {error}"
            )));
        }
        evhost_store::check_json_depth(&format!("the state value under key {key:?}"), &value)
            .map_err(wasmtime::Error::msg)?;
        // A write may read the value it replaces (to keep the state's size).
        let state = self.state()?.clone();
        self.budget
            .waiting(|| state.put(key, value))
            .map_err(wasmtime::Error::msg)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        check_key(&key)?;
        let state = self.state()?.clone();
        self.budget
            .waiting(|| state.delete(key))
            .map_err(wasmtime::Error::msg)
    }

    fn scan(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        let limit = limit.min(MAX_SCAN_ENTRIES) as usize;
        let state = self.state()?.clone();
        self.budget
            .waiting(|| state.scan(&prefix, after.as_deref(), limit))
            .map_err(wasmtime::Error::msg)
    }
}

impl handler_world::log::Host for PluginState {
    fn write(&mut self, level: Level, message: String) {
        let label = &self.label;
        let message = cut(&message);
        match level {
            Level::Error => tracing::error!("plugin {label}: {message}"),
            Level::Warn => tracing::warn!("plugin {label}: {message}"),
            Level::Info => tracing::info!("plugin {label}: {message}"),
            Level::Debug | Level::Trace => tracing::debug!("plugin {label}: {message}"),
        }
    }
}

/// A prefix of `text` of at most [`MAX_LINE_BYTES`], cut at a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= MAX_LINE_BYTES {
        return text;
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A clock that always reads zero: plugins decide from their inputs, not from the time.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A guest's stdout or stderr: each line becomes a line of the host's log.
#[derive(Clone)]
struct LogStream {
    label: Arc<str>,
    name: &'static str,
    pending: Vec<u8>,
}

impl LogStream {
    fn new(label: Arc<str>, name: &'static str) -> Self {
        LogStream {
            label,
            name,
            pending: Vec::new(),
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = cut(text.trim_end_matches('\r'));
        tracing::info!("plugin {} {}: {text}", self.label, self.name);
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl LogStream {
    fn push(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut self.pending);
                self.emit(&line);
            } else if self.pending.len() < MAX_LINE_BYTES {
                self.pending.push(byte);
            }
        }
    }
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_the_store_is_excused_up_to_the_allowance() {
        let mut budget = CallBudget::start(Duration::from_secs(10));
        budget.waiting(|| std::thread::sleep(Duration::from_millis(80)));
        let left = budget
            .left()
            .expect("the wait for the store is not the call's");
        assert!(left > Duration::from_secs(9), "{left:?}");
        let mut budget = CallBudget::start(Duration::from_millis(5));
        budget.waiting(|| std::thread::sleep(Duration::from_millis(80)));
        assert!(
            budget.left().is_none(),
            "past {STATE_WAIT_ALLOWANCE} budgets, waiting counts too"
        );
    }
}

//! The instances of one plugin version, whatever its world: the pre-linked component, the idle
//! instances it reuses, and the one way every call runs (a deadline, the memory cap, the state a
//! call may use, and what a failure means).
//!
//! An instance serves one call at a time. A call takes an idle instance (or instantiates one
//! from the `InstancePre`), sets its deadline, calls, and gives the instance back, unless the
//! call failed: after a trap an instance's memory may be in any state, so it is dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Instance as ComponentInstance, InstancePre};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::bindings::{self, Kind};
use super::gate::CallGate;
use super::sandbox::{CallBudget, PluginState, StateAccess};
use super::threads::CallThreads;
use super::{
    EPOCH_TICK, EpochTicker, InvalidPlugin, PluginFailure, PluginInfo, PluginKind, PluginLimits,
    Runtime,
};

/// Idle instances kept per plugin version; more are made when calls overlap, and dropped after.
const MAX_IDLE_INSTANCES: usize = 32;

/// The exports of one world, bound on an instance.
pub(super) trait WorldExports: Sized + Send + 'static {
    /// The world's name, for messages.
    const WORLD: &'static str;

    /// Checks, before any instance exists, that the component exports what the world needs.
    fn check(pre: &InstancePre<PluginState>) -> wasmtime::Result<()>;

    /// Binds the exports of a new instance.
    fn bind(store: &mut Store<PluginState>, instance: &ComponentInstance)
    -> wasmtime::Result<Self>;

    /// Calls `meta.describe`.
    fn describe(&self, store: &mut Store<PluginState>) -> wasmtime::Result<bindings::PluginInfo>;
}

/// A live instance and its bound exports.
pub(super) struct Instance<W> {
    pub store: Store<PluginState>,
    pub exports: W,
}

/// One plugin version's instances.
pub(super) struct InstancePool<W> {
    engine: Engine,
    ticker: Arc<EpochTicker>,
    gate: Arc<CallGate>,
    threads: Arc<CallThreads>,
    pre: InstancePre<PluginState>,
    /// `name@version`, for the log.
    label: Arc<str>,
    /// Read at the start of each call and instantiation, so that new limits apply to the next
    /// call; a call in flight keeps the limits it started with.
    limits: Mutex<PluginLimits>,
    idle: Mutex<Vec<Instance<W>>>,
}

impl<W: WorldExports> InstancePool<W> {
    pub(super) fn new(
        runtime: &Runtime,
        component: &Component,
        label: &str,
        limits: PluginLimits,
    ) -> Result<Self, InvalidPlugin> {
        let pre = runtime
            .linker
            .instantiate_pre(component)
            .map_err(|e| InvalidPlugin(format!("the component cannot be linked: {e:#}")))?;
        W::check(&pre).map_err(|e| {
            InvalidPlugin(format!(
                "the component does not implement world {} of evhost:plugin@{}: {e:#}",
                W::WORLD,
                bindings::package_version()
            ))
        })?;
        Ok(InstancePool {
            engine: runtime.engine.clone(),
            ticker: runtime.ticker.clone(),
            gate: runtime.gate.clone(),
            threads: runtime.threads.clone(),
            pre,
            label: label.into(),
            limits: Mutex::new(limits),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The same pool under another label (once `describe` has told the plugin's name).
    /// Instances made under the old label are dropped, so that every log line carries the new one.
    pub(super) fn relabel(self, label: &str) -> Self {
        InstancePool {
            label: label.into(),
            idle: Mutex::new(Vec::new()),
            ..self
        }
    }

    /// The threads its calls are made on by async callers.
    pub(super) fn threads(&self) -> Arc<CallThreads> {
        self.threads.clone()
    }

    pub(super) fn limits(&self) -> PluginLimits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies new limits from the next call on. Idle instances were made under the old memory
    /// cap, so they are dropped.
    pub(super) fn set_limits(&self, limits: PluginLimits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
        self.idle
            .lock()
            .expect("the idle list is never poisoned")
            .clear();
    }

    /// Asks the plugin what it is.
    pub(super) fn describe(&self) -> Result<PluginInfo, PluginFailure> {
        let info = self.call(None, 0, |instance| {
            instance.exports.describe(&mut instance.store)
        })?;
        Ok(PluginInfo {
            name: info.name,
            kind: match info.kind {
                Kind::Handler => PluginKind::Handler,
                Kind::Projection => PluginKind::Projection,
                Kind::Policy => PluginKind::Policy,
            },
            category: info.category,
            categories: info.categories,
            event_types: info.event_types,
            description: info.description,
        })
    }

    /// Runs one call on an instance, within the limits, with `state` behind the `state`
    /// import for the length of the call and its randomness seeded with `seed`.
    pub(super) fn call<R>(
        &self,
        state: Option<Arc<dyn StateAccess>>,
        seed: u64,
        f: impl FnOnce(&mut Instance<W>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginFailure> {
        let _span = tracing::info_span!("plugin_call", plugin = &*self.label).entered();
        // A call's budget starts when it runs, not while it waits for its turn.
        let _running = self.gate.enter();
        // The epoch advances only while some call is in flight.
        let _ticking = self.ticker.call_started();
        let idle = self
            .idle
            .lock()
            .expect("the idle list is never poisoned")
            .pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        let limits = self.limits();
        // An idle instance made under another memory cap (the limits changed meanwhile) is
        // not reused.
        if instance.store.data().memory_cap() != memory_cap(limits) {
            instance = self.instantiate()?;
        }
        instance.store.set_epoch_deadline(deadline_ticks(limits));
        instance.store.data_mut().budget = CallBudget::start(budget(limits));
        instance.store.data_mut().state = state;
        instance.store.data_mut().seed(seed);
        let outcome = f(&mut instance);
        instance.store.data_mut().state = None;
        match outcome {
            Ok(result) => {
                let mut idle = self.idle.lock().expect("the idle list is never poisoned");
                if idle.len() < MAX_IDLE_INSTANCES {
                    idle.push(instance);
                }
                Ok(result)
            }
            Err(error) => Err(self.failure(error, &instance.store, limits)),
        }
    }

    fn instantiate(&self) -> Result<Instance<W>, PluginFailure> {
        let limits = self.limits();
        let mut store = Store::new(
            &self.engine,
            PluginState::new(self.label.clone(), memory_cap(limits)),
        );
        store.limiter(|state| state);
        // At the deadline, the time the call waited for the store is given back (see
        // `CallBudget`): the call goes on with what is left of its budget, or stops.
        store.epoch_deadline_callback(|context| match context.data().budget.left() {
            Some(left) => Ok(UpdateDeadline::Continue(ticks(left))),
            None => Err(Trap::Interrupt.into()),
        });
        // Instantiation runs guest code too (start functions), under the same budget as a call.
        store.set_epoch_deadline(deadline_ticks(limits));
        store.data_mut().budget = CallBudget::start(budget(limits));
        let instantiated = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| W::bind(&mut store, &instance));
        match instantiated {
            Ok(exports) => Ok(Instance { store, exports }),
            Err(error) => match self.failure(error, &store, limits) {
                PluginFailure::Trap(message) => Err(PluginFailure::Instantiate(message)),
                other => Err(other),
            },
        }
    }

    /// Says what went wrong in a failed call, and logs it under the plugin's label.
    fn failure(
        &self,
        error: wasmtime::Error,
        store: &Store<PluginState>,
        limits: PluginLimits,
    ) -> PluginFailure {
        let failure = if store.data().memory_cap_hit {
            PluginFailure::MemoryCap {
                memory_mib: limits.memory_mib,
            }
        } else if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            PluginFailure::Timeout {
                timeout_ms: limits.timeout_ms,
            }
        } else {
            PluginFailure::Trap(trap_message(&error))
        };
        tracing::warn!("plugin {}: {failure} ({error:?})", self.label);
        failure
    }
}

/// Epoch ticks in the time budget, rounded up, plus one for the tick in progress.
fn deadline_ticks(limits: PluginLimits) -> u64 {
    ticks(budget(limits))
}

/// Epoch ticks in `time`, rounded up, plus one for the tick in progress.
fn ticks(time: Duration) -> u64 {
    let tick = EPOCH_TICK.as_millis();
    (time.as_millis().div_ceil(tick) + 1) as u64
}

fn budget(limits: PluginLimits) -> Duration {
    Duration::from_millis(limits.timeout_ms)
}

/// The memory cap of an instance, in bytes.
fn memory_cap(limits: PluginLimits) -> usize {
    (limits.memory_mib << 20) as usize
}

/// What a failed call says: the trap's kind, with a hint where a panic's message is, or the
/// host's own reason (a state write that breaks a rule), without the wasm backtrace that wraps
/// either.
fn trap_message(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(Trap::UnreachableCodeReached) => format!(
            "{} (a panic or abort; the plugin's stderr is in the host log)",
            Trap::UnreachableCodeReached
        ),
        Some(trap) => trap.to_string(),
        None => {
            let cause = error.root_cause().to_string();
            cause.lines().next().unwrap_or("unknown trap").to_owned()
        }
    }
}

//! One version of a command handler, ready for calls: its pre-linked component and the idle
//! instances it reuses.
//!
//! An instance serves one call at a time. A call takes an idle instance (or instantiates one
//! from the `InstancePre`), sets its deadline, calls, and gives the instance back, unless the
//! call failed: after a trap an instance's memory may be in any state, so it is dropped.

use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, ComponentType, Func, Lower};
use wasmtime::{Engine, Store, Trap};

use super::bindings::{self, Handler, HandlerPre};
use super::sandbox::PluginState;
use super::{
    EPOCH_TICK, EpochTicker, InvalidPlugin, PluginFailure, PluginInfo, PluginKind, PluginLimits,
    Runtime,
};

/// Idle instances kept per handler version; more are made when calls overlap, and dropped after.
const MAX_IDLE_INSTANCES: usize = 32;

/// An event of the handler's stream as `evolve` receives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventInput<'a> {
    pub version: u64,
    pub event_type: &'a str,
    pub data: &'a str,
}

/// A command as `decide` receives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommandInput<'a> {
    pub id: &'a str,
    pub stream: &'a str,
    pub command_type: &'a str,
    pub data: &'a str,
    pub metadata: &'a str,
}

/// An event `decide` wants appended, as the plugin returned it (not yet validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewEvent {
    pub event_type: String,
    pub data: String,
    pub metadata: Option<String>,
}

struct Instance {
    store: Store<PluginState>,
    handler: Handler,
    /// `evolve`, called through [`StreamEventRef`] rather than the generated bindings.
    evolve: Func,
}

/// The parameters of `evolve`: the state, the batch's event types, its events.
type EvolveParams<'a> = (Option<&'a [u8]>, &'a [&'a str], &'a [StreamEventRef<'a>]);

/// The `stream-event` record, lowered straight from borrowed strings. The generated bindings
/// take owned strings, which would mean copying every event's type and data on the host before
/// wasmtime copies them into the plugin's memory; folding long streams is where that shows.
#[derive(ComponentType, Lower)]
#[component(record)]
struct StreamEventRef<'a> {
    version: u64,
    #[component(name = "type-index")]
    type_index: u32,
    data: &'a str,
}

/// A handler version with its instances.
pub(crate) struct HandlerPlugin {
    engine: Engine,
    ticker: Arc<EpochTicker>,
    pre: HandlerPre<PluginState>,
    /// `name@version`, for the log.
    label: Arc<str>,
    limits: PluginLimits,
    idle: Mutex<Vec<Instance>>,
}

impl HandlerPlugin {
    pub(super) fn new(
        runtime: &Runtime,
        component: &Component,
        label: &str,
        limits: PluginLimits,
    ) -> Result<Self, InvalidPlugin> {
        let instance_pre = runtime
            .linker
            .instantiate_pre(component)
            .map_err(|e| InvalidPlugin(format!("the component cannot be linked: {e:#}")))?;
        let pre = HandlerPre::new(instance_pre).map_err(|e| {
            InvalidPlugin(format!(
                "the component does not implement world handler of evhost:plugin@0.1.0: {e:#}"
            ))
        })?;
        Ok(HandlerPlugin {
            engine: runtime.engine.clone(),
            ticker: runtime.ticker.clone(),
            pre,
            label: label.into(),
            limits,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The same plugin under another label (once `describe` has told its name). Instances made
    /// under the old label are dropped, so that every log line carries the new one.
    pub(crate) fn relabel(self, label: &str) -> Self {
        HandlerPlugin {
            label: label.into(),
            idle: Mutex::new(Vec::new()),
            ..self
        }
    }

    pub(crate) fn limits(&self) -> PluginLimits {
        self.limits
    }

    /// Asks the plugin what it is.
    pub(crate) fn describe(&self) -> Result<PluginInfo, PluginFailure> {
        let info = self.call(|handler, store| handler.evhost_plugin_meta().call_describe(store))?;
        Ok(PluginInfo {
            name: info.name,
            kind: match info.kind {
                bindings::Kind::Handler => PluginKind::Handler,
                bindings::Kind::Projection => PluginKind::Projection,
                bindings::Kind::Policy => PluginKind::Policy,
            },
            category: info.category,
            categories: info.categories,
            event_types: info.event_types,
            description: info.description,
        })
    }

    /// Folds `events` into `state`.
    pub(crate) fn evolve(
        &self,
        state: Option<&[u8]>,
        events: &[EventInput<'_>],
    ) -> Result<Vec<u8>, PluginFailure> {
        // A batch holds a handful of types: a linear search interns them faster than a map.
        let mut types: Vec<&str> = Vec::new();
        let events: Vec<StreamEventRef<'_>> = events
            .iter()
            .map(|e| {
                let type_index = match types.iter().position(|t| *t == e.event_type) {
                    Some(index) => index,
                    None => {
                        types.push(e.event_type);
                        types.len() - 1
                    }
                };
                StreamEventRef {
                    version: e.version,
                    type_index: type_index as u32,
                    data: e.data,
                }
            })
            .collect();
        self.call_instance(|instance| {
            let evolve = instance
                .evolve
                .typed::<EvolveParams<'_>, (Result<Vec<u8>, String>,)>(&instance.store)?;
            let (result,) = evolve.call(&mut instance.store, (state, &types, &events))?;
            Ok(result)
        })?
        .map_err(|reason| PluginFailure::Returned(format!("evolve failed: {reason}")))
    }

    /// Decides a command: the events to append, or the plugin's reason to reject it.
    pub(crate) fn decide(
        &self,
        state: Option<&[u8]>,
        command: &CommandInput<'_>,
    ) -> Result<Result<Vec<NewEvent>, String>, PluginFailure> {
        let command = bindings::Command {
            id: command.id.to_owned(),
            stream_id: command.stream.to_owned(),
            command_type: command.command_type.to_owned(),
            data: command.data.to_owned(),
            metadata: command.metadata.to_owned(),
        };
        let decided = self.call(|handler, store| handler.call_decide(store, state, &command))?;
        Ok(decided.map(|events| {
            events
                .into_iter()
                .map(|e| NewEvent {
                    event_type: e.event_type,
                    data: e.data,
                    metadata: e.metadata,
                })
                .collect()
        }))
    }

    /// Runs one call through the generated bindings, within the limits.
    fn call<R>(
        &self,
        f: impl FnOnce(&Handler, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginFailure> {
        self.call_instance(|instance| f(&instance.handler, &mut instance.store))
    }

    /// Runs one call on an instance, within the limits.
    fn call_instance<R>(
        &self,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, PluginFailure> {
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
        instance.store.set_epoch_deadline(self.deadline_ticks());
        match f(&mut instance) {
            Ok(result) => {
                let mut idle = self.idle.lock().expect("the idle list is never poisoned");
                if idle.len() < MAX_IDLE_INSTANCES {
                    idle.push(instance);
                }
                Ok(result)
            }
            Err(error) => Err(self.failure(error, &instance.store)),
        }
    }

    fn instantiate(&self) -> Result<Instance, PluginFailure> {
        let memory_cap = (self.limits.memory_mib << 20) as usize;
        let mut store = Store::new(
            &self.engine,
            PluginState::new(self.label.clone(), memory_cap),
        );
        store.limiter(|state| state);
        // Instantiation runs guest code too (start functions), under the same budget as a call.
        store.set_epoch_deadline(self.deadline_ticks());
        let instantiated = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                let handler = Handler::new(&mut store, &instance)?;
                let evolve = instance
                    .get_func(&mut store, "evolve")
                    .ok_or_else(|| wasmtime::Error::msg("the component exports no evolve"))?;
                Ok((handler, evolve))
            });
        match instantiated {
            Ok((handler, evolve)) => Ok(Instance {
                store,
                handler,
                evolve,
            }),
            Err(error) => match self.failure(error, &store) {
                PluginFailure::Trap(message) => Err(PluginFailure::Instantiate(message)),
                other => Err(other),
            },
        }
    }

    /// Epoch ticks in the time budget, rounded up, plus one for the tick in progress.
    fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_millis() as u64;
        self.limits.timeout_ms.div_ceil(tick) + 1
    }

    /// Says what went wrong in a failed call, and logs it under the plugin's label.
    fn failure(&self, error: wasmtime::Error, store: &Store<PluginState>) -> PluginFailure {
        let failure = if store.data().memory_cap_hit {
            PluginFailure::MemoryCap {
                memory_mib: self.limits.memory_mib,
            }
        } else if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            PluginFailure::Timeout {
                timeout_ms: self.limits.timeout_ms,
            }
        } else {
            PluginFailure::Trap(trap_message(&error))
        };
        crate::log::warning!("plugin {}: {failure} ({error:?})", self.label);
        failure
    }
}

/// The first line of a trap's message, with a hint where the guest's own message is.
fn trap_message(error: &wasmtime::Error) -> String {
    let message = error.to_string();
    let first = message.lines().next().unwrap_or("unknown trap").to_owned();
    if matches!(
        error.downcast_ref::<Trap>(),
        Some(Trap::UnreachableCodeReached)
    ) {
        format!("{first} (a panic or abort; the plugin's stderr is in the host log)")
    } else {
        first
    }
}

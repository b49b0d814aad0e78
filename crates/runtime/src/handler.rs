//! One version of a command handler, ready for calls: `evolve` folds a stream's events into its
//! state, `decide` answers a command against it.

use wasmtime::Store;
use wasmtime::component::{ComponentType, Func, Instance as ComponentInstance, InstancePre, Lower};

use super::bindings::handler::{Handler, HandlerPre};
use super::bindings::{self};
use super::pool::{InstancePool, WorldExports};
use super::sandbox::{PluginState, call_seed};
use super::{PluginFailure, PluginInfo, PluginLimits};

/// An event of the handler's stream as `evolve` receives it.
#[derive(Debug, Clone, Copy)]
pub struct EventInput<'a> {
    pub version: u64,
    pub event_type: &'a str,
    pub data: &'a str,
}

/// A command as `decide` receives it.
#[derive(Debug, Clone, Copy)]
pub struct CommandInput<'a> {
    pub id: &'a str,
    pub stream: &'a str,
    pub command_type: &'a str,
    pub data: &'a str,
    pub metadata: &'a str,
}

impl CommandInput<'_> {
    pub(super) fn to_binding(self) -> bindings::Command {
        bindings::Command {
            id: self.id.to_owned(),
            stream_id: self.stream.to_owned(),
            command_type: self.command_type.to_owned(),
            data: self.data.to_owned(),
            metadata: self.metadata.to_owned(),
        }
    }
}

/// An event `decide` wants appended, as the plugin returned it (not yet validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_type: String,
    pub data: String,
    pub metadata: Option<String>,
}

/// The exports of the handler world, bound on an instance.
pub(super) struct HandlerExports {
    bindings: Handler,
    /// `evolve`, called through [`StreamEventRef`] rather than the generated bindings.
    evolve: Func,
}

impl WorldExports for HandlerExports {
    const WORLD: &'static str = "handler";

    fn check(pre: &InstancePre<PluginState>) -> wasmtime::Result<()> {
        HandlerPre::new(pre.clone()).map(drop)
    }

    fn bind(
        store: &mut Store<PluginState>,
        instance: &ComponentInstance,
    ) -> wasmtime::Result<Self> {
        let bindings = Handler::new(&mut *store, instance)?;
        let evolve = instance
            .get_func(&mut *store, "evolve")
            .ok_or_else(|| wasmtime::Error::msg("the component exports no evolve"))?;
        Ok(HandlerExports { bindings, evolve })
    }

    fn describe(&self, store: &mut Store<PluginState>) -> wasmtime::Result<bindings::PluginInfo> {
        self.bindings.evhost_plugin_meta().call_describe(store)
    }
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
pub struct HandlerPlugin {
    pool: InstancePool<HandlerExports>,
}

impl HandlerPlugin {
    pub(super) fn new(pool: InstancePool<HandlerExports>) -> Self {
        HandlerPlugin { pool }
    }

    /// The same plugin under another label (once `describe` has told its name).
    pub fn relabel(self, label: &str) -> Self {
        HandlerPlugin {
            pool: self.pool.relabel(label),
        }
    }

    /// The threads to make this plugin's calls on from async code.
    pub fn threads(&self) -> std::sync::Arc<super::CallThreads> {
        self.pool.threads()
    }

    pub fn limits(&self) -> PluginLimits {
        self.pool.limits()
    }

    /// Applies new limits from the next call on.
    pub fn set_limits(&self, limits: PluginLimits) {
        self.pool.set_limits(limits);
    }

    /// Asks the plugin what it is.
    pub fn describe(&self) -> Result<PluginInfo, PluginFailure> {
        self.pool.describe()
    }

    /// Folds `events` into `state`.
    pub fn evolve(
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
        // Folding a stream's events into a state: the first and last versions identify them.
        let seed = call_seed(&[
            b"evolve",
            &events.first().map_or(0, |e| e.version).to_le_bytes(),
            &events.last().map_or(0, |e| e.version).to_le_bytes(),
            state.unwrap_or_default(),
        ]);
        self.pool
            .call(None, seed, |instance| {
                let evolve = instance
                    .exports
                    .evolve
                    .typed::<EvolveParams<'_>, (Result<Vec<u8>, String>,)>(&instance.store)?;
                let (result,) = evolve.call(&mut instance.store, (state, &types, &events))?;
                Ok(result)
            })?
            .map_err(|reason| PluginFailure::Returned(format!("evolve failed: {reason}")))
    }

    /// Decides a command: the events to append, or the plugin's reason to reject it.
    pub fn decide(
        &self,
        state: Option<&[u8]>,
        command: &CommandInput<'_>,
    ) -> Result<Result<Vec<NewEvent>, String>, PluginFailure> {
        let seed = call_seed(&[
            b"decide",
            command.id.as_bytes(),
            command.stream.as_bytes(),
            command.command_type.as_bytes(),
            command.data.as_bytes(),
            state.unwrap_or_default(),
        ]);
        let command = command.to_binding();
        let decided = self.pool.call(None, seed, |instance| {
            (instance.exports.bindings).call_decide(&mut instance.store, state, &command)
        })?;
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
}

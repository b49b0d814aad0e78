//! One version of a projection, ready for calls: `apply` folds a batch of events into its state,
//! `query` answers a read with that state read-only.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{ComponentType, Func, Instance as ComponentInstance, InstancePre, Lower};

use super::bindings::{self, projection::Projection, projection::ProjectionPre};
use super::pool::{InstancePool, WorldExports};
use super::sandbox::{PluginState, StateAccess, call_seed};
use super::{PluginFailure, PluginLimits};

/// An event of the log as projections and policies receive it (the WIT `event` record), lowered
/// straight from the strings of its stored record.
#[derive(Debug, Clone, Copy, ComponentType, Lower)]
#[component(record)]
pub struct LogEvent<'a> {
    pub position: u64,
    #[component(name = "stream-id")]
    pub stream: &'a str,
    pub version: u64,
    pub id: &'a str,
    #[component(name = "event-type")]
    pub event_type: &'a str,
    pub data: &'a str,
    pub metadata: &'a str,
    #[component(name = "recorded-at")]
    pub recorded_at: &'a str,
}

/// The exports of the projection world, bound on an instance.
pub(super) struct ProjectionExports {
    bindings: Projection,
    /// `apply`, called through [`LogEvent`] rather than the generated bindings.
    apply: Func,
}

impl WorldExports for ProjectionExports {
    const WORLD: &'static str = "projection";

    fn check(pre: &InstancePre<PluginState>) -> wasmtime::Result<()> {
        ProjectionPre::new(pre.clone()).map(drop)
    }

    fn bind(
        store: &mut Store<PluginState>,
        instance: &ComponentInstance,
    ) -> wasmtime::Result<Self> {
        let bindings = Projection::new(&mut *store, instance)?;
        let apply = instance
            .get_func(&mut *store, "apply")
            .ok_or_else(|| wasmtime::Error::msg("the component exports no apply"))?;
        Ok(ProjectionExports { bindings, apply })
    }

    fn describe(&self, store: &mut Store<PluginState>) -> wasmtime::Result<bindings::PluginInfo> {
        self.bindings.evhost_plugin_meta().call_describe(store)
    }
}

/// A projection version with its instances.
pub struct ProjectionPlugin {
    pool: InstancePool<ProjectionExports>,
}

impl ProjectionPlugin {
    pub(super) fn new(pool: InstancePool<ProjectionExports>) -> Self {
        ProjectionPlugin { pool }
    }

    /// The same plugin under another label (once `describe` has told its name).
    pub fn relabel(self, label: &str) -> Self {
        ProjectionPlugin {
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

    /// Applies `events` with `state` behind the `state` import: `Ok(Err(reason))` when the
    /// plugin refused the batch.
    pub fn apply(
        &self,
        events: &[LogEvent<'_>],
        state: Arc<dyn StateAccess>,
    ) -> Result<Result<(), String>, PluginFailure> {
        let seed = call_seed(&[
            b"apply",
            &events.first().map_or(0, |e| e.position).to_le_bytes(),
            &events.last().map_or(0, |e| e.position).to_le_bytes(),
        ]);
        self.pool.call(Some(state), seed, |instance| {
            let apply = instance
                .exports
                .apply
                .typed::<(&[LogEvent<'_>],), (Result<(), String>,)>(&instance.store)?;
            let (result,) = apply.call(&mut instance.store, (events,))?;
            Ok(result)
        })
    }

    /// Answers a query at `path` with `params`: JSON text, or the plugin's reason to refuse.
    /// `state` must refuse writes.
    pub fn query(
        &self,
        path: &str,
        params: &[(String, String)],
        state: Arc<dyn StateAccess>,
    ) -> Result<Result<String, String>, PluginFailure> {
        let mut parts: Vec<&[u8]> = vec![b"query", path.as_bytes()];
        for (name, value) in params {
            parts.extend([name.as_bytes(), value.as_bytes()]);
        }
        self.pool.call(Some(state), call_seed(&parts), |instance| {
            (instance.exports.bindings).call_query(&mut instance.store, path, params)
        })
    }
}

//! One version of a policy, ready for calls: `react` to an event, `on-timer` when a timer is
//! due, `on-rejected` when a command it sent was rejected. Each answers with actions.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Func, Instance as ComponentInstance, InstancePre};

use super::bindings::{self, Action, policy::Policy, policy::PolicyPre};
use super::pool::{InstancePool, WorldExports};
use super::projection::LogEvent;
use super::sandbox::{PluginState, StateAccess, call_seed};
use super::{CommandInput, PluginFailure, PluginLimits};

/// What a policy asks the host to do (not yet validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    /// Send a command to a handler.
    Send {
        handler: String,
        stream: String,
        command_type: String,
        data: String,
    },
    /// Set (or move) the timer `key`.
    Schedule {
        key: String,
        due_ms: u64,
        payload: String,
    },
    /// Cancel the timer `key`.
    CancelTimer(String),
}

/// The exports of the policy world, bound on an instance.
pub(super) struct PolicyExports {
    bindings: Policy,
    /// `react`, called through [`LogEvent`] rather than the generated bindings.
    react: Func,
}

impl WorldExports for PolicyExports {
    const WORLD: &'static str = "policy";

    fn check(pre: &InstancePre<PluginState>) -> wasmtime::Result<()> {
        PolicyPre::new(pre.clone()).map(drop)
    }

    fn bind(
        store: &mut Store<PluginState>,
        instance: &ComponentInstance,
    ) -> wasmtime::Result<Self> {
        let bindings = Policy::new(&mut *store, instance)?;
        let react = instance
            .get_func(&mut *store, "react")
            .ok_or_else(|| wasmtime::Error::msg("the component exports no react"))?;
        Ok(PolicyExports { bindings, react })
    }

    fn describe(&self, store: &mut Store<PluginState>) -> wasmtime::Result<bindings::PluginInfo> {
        self.bindings.evhost_plugin_meta().call_describe(store)
    }
}

/// What a policy call answers: its actions, or the plugin's reason for failing.
pub type Reaction = Result<Vec<PolicyAction>, String>;

/// A policy version with its instances.
pub struct PolicyPlugin {
    pool: InstancePool<PolicyExports>,
}

impl PolicyPlugin {
    pub(super) fn new(pool: InstancePool<PolicyExports>) -> Self {
        PolicyPlugin { pool }
    }

    /// The same plugin under another label (once `describe` has told its name).
    pub fn relabel(self, label: &str) -> Self {
        PolicyPlugin {
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

    /// Reacts to one event.
    pub fn react(
        &self,
        event: &LogEvent<'_>,
        state: Arc<dyn StateAccess>,
    ) -> Result<Reaction, PluginFailure> {
        let seed = call_seed(&[b"react", &event.position.to_le_bytes()]);
        self.pool.call(Some(state), seed, |instance| {
            let react = instance
                .exports
                .react
                .typed::<(LogEvent<'_>,), (Result<Vec<Action>, String>,)>(&instance.store)?;
            let (result,) = react.call(&mut instance.store, (*event,))?;
            Ok(result.map(actions))
        })
    }

    /// Reacts to the timer `key`, now due.
    pub fn on_timer(
        &self,
        key: &str,
        payload: &str,
        state: Arc<dyn StateAccess>,
    ) -> Result<Reaction, PluginFailure> {
        let seed = call_seed(&[b"on-timer", key.as_bytes(), payload.as_bytes()]);
        self.pool.call(Some(state), seed, |instance| {
            let result =
                (instance.exports.bindings).call_on_timer(&mut instance.store, key, payload)?;
            Ok(result.map(actions))
        })
    }

    /// Reacts to the rejection of a command this policy sent.
    pub fn on_rejected(
        &self,
        command: &CommandInput<'_>,
        reason: &str,
        state: Arc<dyn StateAccess>,
    ) -> Result<Reaction, PluginFailure> {
        let seed = call_seed(&[b"on-rejected", command.id.as_bytes(), reason.as_bytes()]);
        let command = command.to_binding();
        self.pool.call(Some(state), seed, |instance| {
            let result = (instance.exports.bindings).call_on_rejected(
                &mut instance.store,
                &command,
                reason,
            )?;
            Ok(result.map(actions))
        })
    }
}

fn actions(actions: Vec<Action>) -> Vec<PolicyAction> {
    actions
        .into_iter()
        .map(|action| match action {
            Action::Send(send) => PolicyAction::Send {
                handler: send.handler,
                stream: send.stream_id,
                command_type: send.command_type,
                data: send.data,
            },
            Action::Schedule(timer) => PolicyAction::Schedule {
                key: timer.key,
                due_ms: timer.due_ms,
                payload: timer.payload,
            },
            Action::CancelTimer(key) => PolicyAction::CancelTimer(key),
        })
        .collect()
}

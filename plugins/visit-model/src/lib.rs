//! The hospital visit's model, shared by the versions of the command handler `visit`: the
//! commands, the events appended to `visit-<id>`, the state folded from them and the rules
//! ([`decide`]) as v1 has them.
//!
//! A visit opens with `CheckIn` (patient, complaint, triage level, room, attending physician,
//! tests to order), goes through room moves, test orders and results and notes, and closes with
//! `CheckOut`. The rules are in [`VisitCommand`]'s documentation and in `README.md`.
//!
//! [`VisitHandler`] is the handler over these types; a [`Version`] says how it decides, so each
//! version of the handler is a component crate of a few lines that names its version and exports
//! it (`plugins/visit`: v1, [`decide`] as it is; `plugins/visit-v2`: one rule more in front of
//! it). This crate exports no component: two crates exporting one would collide in the one that
//! links them.

mod command;
mod decide;
mod event;
mod state;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

#[cfg(test)]
mod tests;

use std::marker::PhantomData;

use evhost_sdk::{CommandContext, Handler, Rejection};

pub use command::{CheckIn, DEFAULT_HOSPITAL, VisitCommand};
pub use decide::decide;
pub use event::{Disposition, VisitEvent};
pub use state::{Stage, TestStatus, VisitState};

/// How a version of the handler `visit` decides: [`decide`], or rules of its own in front of it.
pub trait Version {
    /// Decides `command` against the visit's state.
    fn decide(state: &VisitState, command: VisitCommand) -> Result<Vec<VisitEvent>, Rejection>;
}

/// The handler `visit`, owning the category `visit`, deciding as the version `V` does. Every
/// version folds the same events into the same state, so a new version continues the streams
/// an older one wrote.
pub struct VisitHandler<V>(PhantomData<V>);

impl<V: Version> Handler for VisitHandler<V> {
    const NAME: &'static str = "visit";
    const CATEGORY: &'static str = "visit";
    const DESCRIPTION: &'static str =
        "Emergency-department visits: check-in, rooms, physicians, tests, notes, check-out";
    type State = VisitState;
    type Command = VisitCommand;
    type Event = VisitEvent;

    fn evolve(state: &mut VisitState, event: VisitEvent) {
        state.apply(event);
    }

    fn decide(
        state: &VisitState,
        command: VisitCommand,
        _context: &CommandContext,
    ) -> Result<Vec<VisitEvent>, Rejection> {
        V::decide(state, command)
    }
}

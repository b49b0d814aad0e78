//! The hospital visit, an example evhost plugin: the command handler `visit`, which owns the
//! streams `visit-<id>`, one per emergency-department visit.
//!
//! A visit opens with `CheckIn` (patient, complaint, triage level, room, attending physician,
//! tests to order), goes through room moves, test orders and results and notes, and closes with
//! `CheckOut`. The rules are in [`VisitCommand`]'s documentation and in `README.md`.
//!
//! The handler is plain Rust ([`VisitHandler`] implements [`evhost_sdk::Handler`]); built for
//! `wasm32-wasip2` this crate is the component `visit.wasm`. Benchmarks call it natively through
//! `evhost_sdk::__private::{evolve, decide}::<visit::VisitHandler>`.

mod command;
mod decide;
mod event;
mod state;

#[cfg(test)]
mod tests;

use evhost_sdk::{CommandContext, Handler, Rejection};

pub use command::{CheckIn, DEFAULT_HOSPITAL, VisitCommand};
pub use event::{Disposition, VisitEvent};
pub use state::{Stage, TestStatus, VisitState};

/// The handler `visit`, owning the category `visit`.
pub struct VisitHandler;

impl Handler for VisitHandler {
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
        decide::decide(state, command)
    }
}

evhost_sdk::export_handler!(VisitHandler);

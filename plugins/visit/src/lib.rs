//! The hospital visit, an example evhost plugin: the command handler `visit`, v1, which owns the
//! streams `visit-<id>`, one per emergency-department visit.
//!
//! The visit's commands, events, state and rules are the library `visit-model`, re-exported
//! here; this crate is v1's component: the model's [`decide`](visit_model::decide) as it is,
//! exported as `visit.wasm` when built for `wasm32-wasip2`. `plugins/visit-v2` is the same
//! handler with one rule more. Benchmarks call v1 natively through
//! `evhost_sdk::__private::{evolve, decide}::<visit::VisitHandler>`.

#[cfg(test)]
mod tests;

use evhost_sdk::Rejection;

pub use visit_model::{
    CheckIn, DEFAULT_HOSPITAL, Disposition, Stage, TestStatus, VisitCommand, VisitEvent, VisitState,
};

/// Version 1 of the handler `visit`: the model's rules, with its known bug (a checked-out
/// visit accepts another `CheckOut`; `visit-v2` rejects it).
pub enum V1 {}

impl visit_model::Version for V1 {
    fn decide(state: &VisitState, command: VisitCommand) -> Result<Vec<VisitEvent>, Rejection> {
        visit_model::decide(state, command)
    }
}

/// The handler `visit` as v1 decides, owning the category `visit`.
pub type VisitHandler = visit_model::VisitHandler<V1>;

evhost_sdk::export_handler!(VisitHandler);

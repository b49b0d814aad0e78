//! The hospital visit, version 2, an example evhost plugin: the command handler `visit` (the
//! same name and category as v1, `plugins/visit`, so it deploys as a new version of it), built as
//! `visit_v2.wasm`.
//!
//! v2 fixes v1's bug: v1 accepts a `CheckOut` of a visit that is already checked out and
//! appends `PatientCheckedOut` again; v2 rejects it with
//! `patient p-1001 is already checked out; the visit is closed`. Every other command it decides
//! as v1 does, by handing it to the model (`visit-model`) that v1 runs; the events and the state
//! are the model's too, so v2 continues the streams v1 wrote.

#[cfg(test)]
mod tests;

use evhost_sdk::{Rejection, reject};
use visit_model::{Stage, VisitCommand, VisitEvent, VisitState};

/// Version 2 of the handler `visit`: a checked-out visit refuses another check-out, and the
/// model decides the rest.
pub enum V2 {}

impl visit_model::Version for V2 {
    fn decide(state: &VisitState, command: VisitCommand) -> Result<Vec<VisitEvent>, Rejection> {
        if let (VisitCommand::CheckOut { .. }, Stage::CheckedOut) = (&command, state.stage) {
            reject!(
                "patient {} is already checked out; the visit is closed",
                state.patient_id
            );
        }
        visit_model::decide(state, command)
    }
}

/// The handler `visit` as v2 decides, owning the category `visit`.
pub type VisitHandler = visit_model::VisitHandler<V2>;

evhost_sdk::export_handler!(VisitHandler);

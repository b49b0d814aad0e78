//! The visits of the hospital, an example evhost plugin: the projection `visits`, v1, a read
//! model of every emergency-department visit that the handler `visit` records, and of who is in
//! which hospital now.
//!
//! The fold, the keys and the queries are the library `visits-model` (its documentation lists
//! them), re-exported here; this crate is v1's component, which keeps each visit as a [`Visit`],
//! exported as `visits.wasm` when built for `wasm32-wasip2`. `plugins/visits-v2` keeps the same
//! fields and adds one. Benchmarks fold v1 natively through
//! `evhost_sdk::testing::apply_json::<visits::Visits>`.

#[cfg(test)]
mod tests;

pub use visits_model::{Presence, Status, Test, Visit, VisitEvent, presence_key, visit_key};

/// The projection `visits` as v1 keeps it: each visit as a [`Visit`].
pub type Visits = visits_model::VisitsProjection<Visit>;

evhost_sdk::export_projection!(Visits);

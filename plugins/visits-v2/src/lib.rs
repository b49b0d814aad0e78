//! The visits of the hospital, version 2, an example evhost plugin: the projection `visits` (the
//! same name, subscription, keys and queries as v1, `plugins/visits`, so it deploys as a new
//! version of it), built as `visits_v2.wasm`.
//!
//! v2 keeps each visit under `visit/<visit id>` as a [`VisitWithStay`]: every field of v1's
//! [`Visit`], folded by the same code (`visits-model`), and `length_of_stay_seconds`, the whole
//! seconds from the check-in's `recorded-at` to the check-out's; `null` while the patient is in
//! the hospital. The hospital index and the queries are v1's; `visit?id=<visit id>` answers
//! with v2's record.

#[cfg(test)]
mod tests;

use evhost_sdk::Failure;
use evhost_sdk::time::millis_from_rfc3339;
use serde::{Deserialize, Serialize};
use visits_model::{Visit, VisitRecord};

/// A visit as v2 keeps it: v1's fields, as they are, and its length of stay.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitWithStay {
    #[serde(flatten)]
    pub visit: Visit,
    /// Whole seconds from check-in to check-out (the events' `recorded-at`); `None` (`null`)
    /// until the check-out, and for a visit whose check-in the log does not hold.
    pub length_of_stay_seconds: Option<u64>,
}

impl VisitRecord for VisitWithStay {
    const DESCRIPTION: &'static str = "Every visit with its patient, room, tests, status and \
        length of stay; who is in each hospital now";

    fn visit_mut(&mut self) -> &mut Visit {
        &mut self.visit
    }

    fn derive(&mut self) -> Result<(), Failure> {
        let (Some(checked_in_at), Some(checked_out_at)) =
            (&self.visit.checked_in_at, &self.visit.checked_out_at)
        else {
            self.length_of_stay_seconds = None;
            return Ok(());
        };
        let stay_ms = millis_from_rfc3339(checked_out_at)?
            .saturating_sub(millis_from_rfc3339(checked_in_at)?);
        self.length_of_stay_seconds = Some(stay_ms / 1000);
        Ok(())
    }
}

/// The projection `visits` as v2 keeps it: each visit as a [`VisitWithStay`].
pub type Visits = visits_model::VisitsProjection<VisitWithStay>;

evhost_sdk::export_projection!(Visits);

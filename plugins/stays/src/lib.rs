//! Lengths of stay, an example evhost plugin: the projection `stays`, the average length of stay
//! per hospital, from the visits that the handler `visit` records.
//!
//! The same projection is written in Python (`plugins/python/stays`, `stays-py`) and in
//! JavaScript (`plugins/js/stays`, `stays-js`); the three must keep equal state over the same
//! events, which the host's tests check. So what it keeps is stated exactly:
//!
//! - `PatientCheckedIn` on `visit-<id>`: `visit/<id>` = `{"hospital", "checked_in_ms"}` (the
//!   hospital is `main` if the event names none; the time is the event's `recorded-at`).
//! - `PatientCheckedOut` on `visit-<id>`: the stay is the check-out's time minus the check-in's,
//!   in milliseconds; `visit/<id>` is deleted and `hospital/<hospital>` = `{"hospital",
//!   "visits", "total_stay_ms", "average_stay_ms"}` counts it (the average rounded down). A
//!   check-out without a check-in seen changes nothing and logs a warning.
//! - Query `hospitals` → `{"hospitals": [...]}`, every hospital in name order; `hospital?name=<h>`
//!   → one hospital, or an error if no visit has ended there.

#[cfg(test)]
mod tests;

use evhost_sdk::{Envelope, Failure, Params, Projection, State, StateView, log};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The projection `stays`.
pub struct Stays;

/// The events it folds; it subscribes to no others.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum StayEvent {
    PatientCheckedIn {
        #[serde(default = "main_hospital")]
        hospital: String,
    },
    PatientCheckedOut,
}

fn main_hospital() -> String {
    "main".to_owned()
}

/// A visit that began and has not ended: `visit/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenVisit {
    pub hospital: String,
    pub checked_in_ms: u64,
}

/// The stays that ended at one hospital: `hospital/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HospitalStays {
    pub hospital: String,
    pub visits: u64,
    pub total_stay_ms: u64,
    pub average_stay_ms: u64,
}

impl HospitalStays {
    fn new(hospital: &str) -> Self {
        HospitalStays {
            hospital: hospital.to_owned(),
            visits: 0,
            total_stay_ms: 0,
            average_stay_ms: 0,
        }
    }

    fn count(&mut self, stay_ms: u64) {
        self.visits += 1;
        self.total_stay_ms += stay_ms;
        self.average_stay_ms = self.total_stay_ms / self.visits;
    }
}

fn visit_key(visit_id: &str) -> String {
    format!("visit/{visit_id}")
}

fn hospital_key(hospital: &str) -> String {
    format!("hospital/{hospital}")
}

impl Projection for Stays {
    const NAME: &'static str = "stays";
    const DESCRIPTION: &'static str = "Average length of stay per hospital";
    const CATEGORIES: &'static [&'static str] = &["visit"];
    const EVENT_TYPES: &'static [&'static str] = &["PatientCheckedIn", "PatientCheckedOut"];
    type Event = StayEvent;

    fn apply(state: &mut State<'_>, event: Envelope<'_, StayEvent>) -> Result<(), Failure> {
        let visit_id = event.entity_id();
        let at_ms = event.recorded_at_ms()?;
        match event.event() {
            StayEvent::PatientCheckedIn { hospital } => {
                let visit = OpenVisit {
                    hospital: hospital.clone(),
                    checked_in_ms: at_ms,
                };
                state.put(&visit_key(visit_id), visit);
            }
            StayEvent::PatientCheckedOut => {
                let Some(visit) = state.get::<OpenVisit>(&visit_key(visit_id))? else {
                    log::warn(&format!(
                        "visit {visit_id} checked out without a check-in seen"
                    ));
                    return Ok(());
                };
                let stay_ms = at_ms.saturating_sub(visit.checked_in_ms);
                state.delete(&visit_key(visit_id));
                let key = hospital_key(&visit.hospital);
                let mut stays = state
                    .get::<HospitalStays>(&key)?
                    .unwrap_or_else(|| HospitalStays::new(&visit.hospital));
                stays.count(stay_ms);
                state.put(&key, stays);
                log::info(&format!(
                    "visit {visit_id} at {} stayed {stay_ms} ms",
                    visit.hospital
                ));
            }
        }
        Ok(())
    }

    fn query(state: &StateView<'_>, path: &str, params: &Params<'_>) -> Result<Value, Failure> {
        match path {
            "hospitals" => {
                let hospitals: Vec<Value> = state
                    .scan::<Value>("hospital/", None, u32::MAX)?
                    .into_iter()
                    .map(|(_, stays)| stays)
                    .collect();
                Ok(json!({ "hospitals": hospitals }))
            }
            "hospital" => {
                let Some(name) = params.get("name") else {
                    return Err(Failure::new("query hospital needs the parameter name"));
                };
                state
                    .get::<Value>(&hospital_key(name))?
                    .ok_or_else(|| Failure::new(format!("no visit has ended at hospital {name}")))
            }
            _ => Err(Failure::new(format!(
                "unknown query {path}; expected one of hospital, hospitals"
            ))),
        }
    }
}

evhost_sdk::export_projection!(Stays);

//! The visits read model, shared by the versions of the projection `visits`: a read model of
//! every emergency-department visit that the handler `visit` records, and of who is in which
//! hospital now.
//!
//! Keys (values are JSON):
//!
//! - `visit/<visit id>` → the version's [`VisitRecord`]: in v1 a [`Visit`] (patient, hospital,
//!   room, physician, tests with their results, status (`in_hospital`, `checked_out`), the
//!   overdue flag, check-in and check-out times (the events' `recorded-at`) and the position of
//!   the last event applied); a later version keeps the same fields and adds its own. The visit
//!   id is the stream's name after `visit-` (`visit-1001` → `1001`).
//! - `hospital/<hospital>/present/<visit id>` → [`Presence`]: an index of the visits in a
//!   hospital now, written at check-in and removed at check-out, so that listing a hospital's
//!   patients is a prefix scan, not a scan of every visit.
//!
//! Queries: `in-hospital?hospital=<h>[&after=<visit id>][&limit=<n>]` (the patients in a
//! hospital now, in visit id order, at most `limit` (100, at most 1000) after `after`) and
//! `visit?id=<visit id>` (one visit's record, or `null`).
//!
//! [`VisitsProjection`] is the projection `visits` over a record type, so each version is a
//! component crate of a few lines that names its record and exports it (`plugins/visits`:
//! [`Visit`]; `plugins/visits-v2`: the visit and its length of stay). This crate exports no
//! component: two crates exporting one would collide in the one that links them.

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::marker::PhantomData;

use evhost_sdk::{Envelope, Failure, Params, Projection, State, StateView};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The projection `visits`, keeping each visit as an `R`: v1 keeps a [`Visit`].
pub struct VisitsProjection<R>(PhantomData<R>);

/// What a version of the projection keeps under `visit/<visit id>`: a [`Visit`], folded from
/// the events the same way in every version, and whatever fields the version derives from it.
/// A version that adds fields keeps the visit's own as they are (a reader of v1's fields sees
/// no change).
pub trait VisitRecord: Default + Clone + Serialize + DeserializeOwned + 'static {
    /// The projection's description for operators, with this record.
    const DESCRIPTION: &'static str;

    /// The visit the events are folded into.
    fn visit_mut(&mut self) -> &mut Visit;

    /// Brings the record's own fields up to date with its visit; called after each event
    /// applied to it.
    fn derive(&mut self) -> Result<(), Failure>;
}

/// v1's record: the visit alone.
impl VisitRecord for Visit {
    const DESCRIPTION: &'static str =
        "Every visit with its patient, room, tests and status; who is in each hospital now";

    fn visit_mut(&mut self) -> &mut Visit {
        self
    }

    fn derive(&mut self) -> Result<(), Failure> {
        Ok(())
    }
}

/// The events of the `visit` handler this projection reads, with the fields it reads.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum VisitEvent {
    PatientCheckedIn {
        patient_id: String,
        patient_name: String,
        #[serde(default = "main_hospital")]
        hospital: String,
    },
    RoomAssigned {
        room: String,
    },
    RoomReleased {
        room: String,
    },
    PhysicianAssigned {
        physician: String,
    },
    TestOrdered {
        test: String,
    },
    TestResultRecorded {
        test: String,
        result: String,
        #[serde(default)]
        abnormal: bool,
    },
    TestCancelled {
        test: String,
    },
    VisitOverdue,
    PatientCheckedOut {
        disposition: String,
    },
    /// Notes, and whatever the handler appends later: not part of this read model.
    #[serde(other)]
    Other,
}

fn main_hospital() -> String {
    "main".to_owned()
}

/// One visit, as `visit/<visit id>` holds it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    pub visit_id: String,
    pub patient_id: String,
    pub patient_name: String,
    pub hospital: String,
    pub room: Option<String>,
    pub physician: Option<String>,
    /// Every test ordered, by name.
    pub tests: BTreeMap<String, Test>,
    pub status: Status,
    pub overdue: bool,
    pub checked_in_at: Option<String>,
    pub checked_out_at: Option<String>,
    pub disposition: Option<String>,
    /// The position of the last event applied to this visit.
    pub last_position: u64,
}

/// Where a visit stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Seen events of the visit, but not its check-in (a log that starts mid-visit).
    #[default]
    Unknown,
    InHospital,
    CheckedOut,
}

/// A test of a visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Test {
    /// `ordered`, `resulted` or `cancelled`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abnormal: bool,
}

/// A visit in a hospital now, as `hospital/<h>/present/<visit id>` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub visit_id: String,
    pub patient_id: String,
    pub patient_name: String,
    pub room: Option<String>,
    pub checked_in_at: String,
}

/// The key of a visit.
pub fn visit_key(visit_id: &str) -> String {
    format!("visit/{visit_id}")
}

/// The key of a visit's entry in its hospital's index.
pub fn presence_key(hospital: &str, visit_id: &str) -> String {
    format!("hospital/{hospital}/present/{visit_id}")
}

/// Patients the `in-hospital` query lists unless told otherwise, and at most.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

impl<R: VisitRecord> Projection for VisitsProjection<R> {
    const NAME: &'static str = "visits";
    const DESCRIPTION: &'static str = R::DESCRIPTION;
    const CATEGORIES: &'static [&'static str] = &["visit"];
    const EVENT_TYPES: &'static [&'static str] = &[
        "PatientCheckedIn",
        "RoomAssigned",
        "RoomReleased",
        "PhysicianAssigned",
        "TestOrdered",
        "TestResultRecorded",
        "TestCancelled",
        "VisitOverdue",
        "PatientCheckedOut",
    ];
    type Event = VisitEvent;

    fn apply(state: &mut State<'_>, event: Envelope<'_, VisitEvent>) -> Result<(), Failure> {
        let visit_id = event.entity_id();
        let key = visit_key(visit_id);
        let position = event.position();
        let recorded_at = event.recorded_at();
        let mut presence_change = None;
        state.update(&key, |record: &mut R| {
            let visit = record.visit_mut();
            visit.visit_id = visit_id.to_owned();
            visit.last_position = position;
            match event.into_event() {
                VisitEvent::PatientCheckedIn {
                    patient_id,
                    patient_name,
                    hospital,
                } => {
                    visit.patient_id = patient_id;
                    visit.patient_name = patient_name;
                    visit.hospital = hospital;
                    visit.status = Status::InHospital;
                    visit.checked_in_at = Some(recorded_at.to_owned());
                    presence_change = Some(PresenceChange::Enter(visit.clone()));
                }
                VisitEvent::RoomAssigned { room } => {
                    visit.room = Some(room);
                    if visit.status == Status::InHospital {
                        presence_change = Some(PresenceChange::Move(visit.clone()));
                    }
                }
                VisitEvent::RoomReleased { room } => {
                    if visit.room.as_deref() == Some(room.as_str()) {
                        visit.room = None;
                    }
                }
                VisitEvent::PhysicianAssigned { physician } => visit.physician = Some(physician),
                VisitEvent::TestOrdered { test } => {
                    let ordered = Test {
                        status: "ordered".to_owned(),
                        result: None,
                        abnormal: false,
                    };
                    visit.tests.insert(test, ordered);
                }
                VisitEvent::TestResultRecorded {
                    test,
                    result,
                    abnormal,
                } => {
                    let resulted = Test {
                        status: "resulted".to_owned(),
                        result: Some(result),
                        abnormal,
                    };
                    visit.tests.insert(test, resulted);
                }
                VisitEvent::TestCancelled { test } => {
                    if let Some(test) = visit.tests.get_mut(&test) {
                        test.status = "cancelled".to_owned();
                    }
                }
                VisitEvent::VisitOverdue => visit.overdue = true,
                VisitEvent::PatientCheckedOut { disposition } => {
                    if visit.status == Status::InHospital {
                        presence_change = Some(PresenceChange::Leave(visit.hospital.clone()));
                    }
                    visit.status = Status::CheckedOut;
                    visit.checked_out_at = Some(recorded_at.to_owned());
                    visit.disposition = Some(disposition);
                }
                VisitEvent::Other => {}
            }
            record.derive()
        })??;
        match presence_change {
            None => {}
            Some(PresenceChange::Enter(visit) | PresenceChange::Move(visit)) => {
                let presence = Presence {
                    visit_id: visit.visit_id,
                    patient_id: visit.patient_id,
                    patient_name: visit.patient_name,
                    room: visit.room,
                    checked_in_at: visit.checked_in_at.unwrap_or_default(),
                };
                state.put(&presence_key(&visit.hospital, visit_id), presence);
            }
            Some(PresenceChange::Leave(hospital)) => {
                state.delete(&presence_key(&hospital, visit_id));
            }
        }
        Ok(())
    }

    fn query(state: &StateView<'_>, path: &str, params: &Params<'_>) -> Result<Value, Failure> {
        match path {
            "in-hospital" => {
                let hospital = params.required("hospital")?;
                let limit = params
                    .parse::<u32>("limit")?
                    .unwrap_or(DEFAULT_LIMIT)
                    .clamp(1, MAX_LIMIT);
                let prefix = presence_key(hospital, "");
                let after = params.get("after").map(|after| format!("{prefix}{after}"));
                let present = state.scan::<Presence>(&prefix, after.as_deref(), limit)?;
                let next = (present.len() == limit as usize)
                    .then(|| present.last().map(|(_, last)| last.visit_id.clone()))
                    .flatten();
                let patients: Vec<Presence> =
                    present.into_iter().map(|(_, presence)| presence).collect();
                Ok(json!({"hospital": hospital, "patients": patients, "next": next}))
            }
            "visit" => {
                let id = params.required("id")?;
                Ok(serde_json::to_value(state.get::<R>(&visit_key(id))?)?)
            }
            _ => Err(Failure::new(format!(
                "unknown query {path}; expected in-hospital or visit"
            ))),
        }
    }
}

/// How an event changes the hospital index.
enum PresenceChange {
    Enter(Visit),
    Move(Visit),
    Leave(String),
}

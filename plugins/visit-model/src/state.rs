//! What the handler remembers of a visit, folded from its events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::VisitEvent;

/// The state of one visit: just what `decide` needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitState {
    pub stage: Stage,
    /// The patient's id, once checked in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patient_id: String,
    /// The room the patient occupies now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The attending physician now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physician: Option<String>,
    /// Every test ordered in this visit, by name, with where it stands.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tests: BTreeMap<String, TestStatus>,
    /// Flagged as lasting longer than expected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overdue: bool,
}

/// Where a visit stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// No `PatientCheckedIn` yet.
    #[default]
    NotCheckedIn,
    /// In the department.
    CheckedIn,
    /// Gone; the visit is closed.
    CheckedOut,
}

/// Where an ordered test stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// Ordered, no result yet.
    Pending,
    /// Its result is recorded.
    Resulted,
    /// Cancelled at check-out.
    Cancelled,
}

impl VisitState {
    /// The tests still waiting for a result, in name order.
    pub fn pending_tests(&self) -> impl Iterator<Item = &str> {
        self.tests
            .iter()
            .filter(|(_, status)| **status == TestStatus::Pending)
            .map(|(test, _)| test.as_str())
    }

    /// Applies one event.
    pub(crate) fn apply(&mut self, event: VisitEvent) {
        match event {
            VisitEvent::PatientCheckedIn { patient_id, .. } => {
                self.stage = Stage::CheckedIn;
                self.patient_id = patient_id;
            }
            VisitEvent::RoomAssigned { room } => self.room = Some(room),
            VisitEvent::RoomReleased { room } => {
                if self.room.as_deref() == Some(room.as_str()) {
                    self.room = None;
                }
            }
            VisitEvent::PhysicianAssigned { physician } => self.physician = Some(physician),
            VisitEvent::TestOrdered { test } => {
                self.tests.insert(test, TestStatus::Pending);
            }
            VisitEvent::TestResultRecorded { test, .. } => {
                self.tests.insert(test, TestStatus::Resulted);
            }
            VisitEvent::TestCancelled { test } => {
                self.tests.insert(test, TestStatus::Cancelled);
            }
            VisitEvent::NoteAdded { .. } => {}
            VisitEvent::VisitOverdue => self.overdue = true,
            VisitEvent::PatientCheckedOut { .. } => self.stage = Stage::CheckedOut,
        }
    }
}

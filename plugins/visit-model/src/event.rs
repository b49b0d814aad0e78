//! The facts of a visit: what the handler appends to `visit-<id>`.

use serde::{Deserialize, Serialize};

/// An event of a visit. The variant's name is the event type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum VisitEvent {
    /// The visit began: the patient arrived and was triaged.
    PatientCheckedIn {
        patient_id: String,
        patient_name: String,
        complaint: String,
        /// 1 (resuscitation, most urgent) to 5 (non-urgent), as in the Emergency Severity Index.
        triage_level: u8,
        /// The hospital (site); `main` in events recorded before hospitals were named.
        #[serde(default = "crate::command::default_hospital")]
        hospital: String,
        /// How long the visit is expected to last, in seconds, if the check-in said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_stay_seconds: Option<u64>,
    },
    /// The patient now occupies `room`.
    RoomAssigned { room: String },
    /// The patient left `room` (moved to another one, or checked out).
    RoomReleased { room: String },
    /// `physician` is now the attending physician.
    PhysicianAssigned { physician: String },
    /// A test was ordered and is pending.
    TestOrdered { test: String },
    /// The result of a pending test.
    TestResultRecorded {
        test: String,
        result: String,
        abnormal: bool,
    },
    /// A pending test was cancelled (the patient checked out before its result).
    TestCancelled { test: String },
    /// A clinical note.
    NoteAdded { author: String, text: String },
    /// The visit has lasted longer than expected (flagged once).
    VisitOverdue,
    /// The visit ended.
    PatientCheckedOut {
        disposition: Disposition,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
    },
}

/// Where the patient went at check-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Sent home.
    Discharged,
    /// Admitted to a ward of this hospital.
    Admitted,
    /// Transferred to another facility.
    Transferred,
    /// Left before the visit was complete, against medical advice.
    LeftAgainstAdvice,
}

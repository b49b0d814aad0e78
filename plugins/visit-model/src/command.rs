//! What can be asked of a visit: the commands and the checks on their inputs alone.

use evhost_sdk::{Rejection, ensure};
use serde::Deserialize;

use crate::event::Disposition;

/// The lowest and highest triage levels (Emergency Severity Index).
const TRIAGE_LEVELS: std::ops::RangeInclusive<u8> = 1..=5;

/// A command to a visit. The variant's name is the command type.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum VisitCommand {
    /// Opens the visit with everything known at arrival: appends `PatientCheckedIn`,
    /// `RoomAssigned`, `PhysicianAssigned` (if a physician is given) and one `TestOrdered` per
    /// test, in that order and atomically.
    CheckIn(CheckIn),
    /// Moves the patient to another room: `RoomReleased` (the old room), `RoomAssigned`.
    AssignRoom { room: String },
    /// Makes `physician` the attending physician: `PhysicianAssigned`.
    AssignPhysician { physician: String },
    /// Orders a test: `TestOrdered`.
    OrderTest { test: String },
    /// Records the result of a pending test: `TestResultRecorded`.
    RecordTest {
        test: String,
        result: String,
        #[serde(default)]
        abnormal: bool,
    },
    /// Adds a clinical note: `NoteAdded`.
    AddNote { author: String, text: String },
    /// Flags the open visit as lasting longer than expected: `VisitOverdue`. Sent by the
    /// `visit-survey` policy when the check-in's expected stay has passed; rejected once the
    /// visit is closed, and when it is flagged already. Any data is accepted and ignored.
    FlagOverdue,
    /// Closes the visit: `TestCancelled` for each pending test (only if `cancel_pending_tests`;
    /// otherwise pending tests reject the command), `PatientCheckedOut`, `RoomReleased`.
    CheckOut {
        disposition: Disposition,
        #[serde(default)]
        summary: Option<String>,
        #[serde(default)]
        cancel_pending_tests: bool,
    },
}

/// The data of `CheckIn`: the visit as known at arrival.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    pub patient_id: String,
    pub patient_name: String,
    /// The reason for the visit, in the patient's words or the triage nurse's.
    pub complaint: String,
    /// 1 (most urgent) to 5.
    pub triage_level: u8,
    pub room: String,
    /// The attending physician, if one is assigned at arrival.
    #[serde(default)]
    pub physician: Option<String>,
    /// Tests to order at arrival, each once.
    #[serde(default)]
    pub tests: Vec<String>,
    /// The hospital (site) of the emergency department; `main` if not given.
    #[serde(default = "default_hospital")]
    pub hospital: String,
    /// How long the visit is expected to last, in seconds; none for the usual stay.
    #[serde(default)]
    pub expected_stay_seconds: Option<u64>,
}

/// The hospital of a check-in that names none.
pub const DEFAULT_HOSPITAL: &str = "main";

pub(crate) fn default_hospital() -> String {
    DEFAULT_HOSPITAL.to_owned()
}

impl CheckIn {
    /// Checks the inputs that need no state.
    pub(crate) fn validate(&self) -> Result<(), Rejection> {
        require("patient_id", &self.patient_id)?;
        require("patient_name", &self.patient_name)?;
        require("complaint", &self.complaint)?;
        require("room", &self.room)?;
        require("hospital", &self.hospital)?;
        ensure!(
            !self.hospital.contains('/'),
            "hospital {} contains '/'; expected a name without it",
            self.hospital
        );
        ensure!(
            self.expected_stay_seconds != Some(0),
            "expected_stay_seconds is 0; expected at least 1, or none"
        );
        ensure!(
            TRIAGE_LEVELS.contains(&self.triage_level),
            "triage_level is {}; expected {} (most urgent) to {}",
            self.triage_level,
            TRIAGE_LEVELS.start(),
            TRIAGE_LEVELS.end()
        );
        if let Some(physician) = &self.physician {
            require("physician", physician)?;
        }
        for (index, test) in self.tests.iter().enumerate() {
            require("test", test)?;
            ensure!(
                !self.tests[..index].contains(test),
                "test {test} is listed twice; expected each test once"
            );
        }
        Ok(())
    }
}

/// Rejects an empty (or blank) required text field.
pub(crate) fn require(field: &str, value: &str) -> Result<(), Rejection> {
    ensure!(
        !value.trim().is_empty(),
        "{field} is empty; expected a value"
    );
    Ok(())
}

//! Logs of visit events to test with (feature `fixtures`, and this crate's own tests), so that
//! the versions of the projection are fed the same events as the model.

use evhost_sdk::testing::EventRecord;
use serde_json::{Value, json};

/// A log of events of the handler `visit`, numbered from position 1, each recorded at
/// `EventRecord::new`'s time: position `n` is `n` seconds after 2026-01-01T00:00:00Z.
#[derive(Debug, Default)]
pub struct Log {
    pub records: Vec<EventRecord>,
}

impl Log {
    /// An empty log.
    pub fn new() -> Self {
        Log::default()
    }

    /// Appends an event of `event_type` with `data` to `stream`.
    pub fn add(&mut self, stream: &str, event_type: &str, data: Value) -> &mut Self {
        let position = self.records.len() as u64 + 1;
        self.records
            .push(EventRecord::new(position, stream, event_type, &data));
        self
    }

    /// Appends the check-in of `patient` (the patient's id is `p-<patient>`) to `visit-<visit>`,
    /// in `hospital` (none: as recorded before hospitals were named), and the room assigned.
    pub fn check_in(
        &mut self,
        visit: &str,
        patient: &str,
        hospital: Option<&str>,
        room: &str,
    ) -> &mut Self {
        let mut data = json!({
            "patient_id": format!("p-{patient}"), "patient_name": patient,
            "complaint": "chest pain", "triage_level": 2,
        });
        if let Some(hospital) = hospital {
            data["hospital"] = json!(hospital);
        }
        let stream = format!("visit-{visit}");
        self.add(&stream, "PatientCheckedIn", data).add(
            &stream,
            "RoomAssigned",
            json!({"room": room}),
        )
    }

    /// Appends the check-out of `visit-<visit>` with `disposition`.
    pub fn check_out(&mut self, visit: &str, disposition: &str) -> &mut Self {
        self.add(
            &format!("visit-{visit}"),
            "PatientCheckedOut",
            json!({ "disposition": disposition }),
        )
    }
}

use evhost_sdk::testing::{self, EventRecord, MemoryState};
use serde_json::{Value, json};

use super::{HospitalStays, Stays};

/// Check-ins at `north` and `main` (the latter naming no hospital), and check-outs; events are
/// recorded one second apart per position.
fn log() -> Vec<EventRecord> {
    vec![
        EventRecord::new(
            1,
            "visit-1",
            "PatientCheckedIn",
            &json!({"hospital": "north"}),
        ),
        EventRecord::new(
            2,
            "visit-2",
            "PatientCheckedIn",
            &json!({"patient_id": "p-2"}),
        ),
        EventRecord::new(
            3,
            "visit-3",
            "PatientCheckedIn",
            &json!({"hospital": "north"}),
        ),
        EventRecord::new(
            5,
            "visit-1",
            "PatientCheckedOut",
            &json!({"disposition": "admitted"}),
        ),
        EventRecord::new(10, "visit-3", "PatientCheckedOut", &json!({})),
        EventRecord::new(11, "visit-9", "PatientCheckedOut", &json!({})),
    ]
}

#[test]
fn averages_the_stays_that_ended_per_hospital() {
    let mut state = MemoryState::new();
    testing::apply::<Stays>(&mut state, &log()).unwrap();
    let north: HospitalStays = state.get_as("hospital/north").unwrap().unwrap();
    // Stays of 4 s and 7 s.
    assert_eq!(
        north,
        HospitalStays {
            hospital: "north".into(),
            visits: 2,
            total_stay_ms: 11_000,
            average_stay_ms: 5_500,
        }
    );
    assert_eq!(state.get("hospital/main"), None, "visit 2 has not ended");
    let open: Value = state.get_as("visit/2").unwrap().unwrap();
    assert_eq!(open["hospital"], "main");
    assert_eq!(state.get("visit/1"), None, "an ended visit is forgotten");
    assert_eq!(
        state.get("visit/9"),
        None,
        "a check-out without a check-in changes nothing"
    );
}

#[test]
fn queries_answer_every_hospital_or_one() {
    let mut state = MemoryState::new();
    testing::apply::<Stays>(&mut state, &log()).unwrap();
    let all = testing::query::<Stays>(&state, "hospitals", &[]).unwrap();
    assert_eq!(all["hospitals"].as_array().unwrap().len(), 1);
    let north = testing::query::<Stays>(&state, "hospital", &[("name", "north")]).unwrap();
    assert_eq!(north["average_stay_ms"], 5_500);
    let none = testing::query::<Stays>(&state, "hospital", &[("name", "south")]).unwrap_err();
    assert_eq!(none.to_string(), "no visit has ended at hospital south");
    let missing = testing::query::<Stays>(&state, "hospital", &[]).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "query hospital needs the parameter name"
    );
}

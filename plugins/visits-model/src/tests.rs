//! The read model folded from visits as the `visit` handler records them.

use evhost_sdk::testing::{self, MemoryState};
use serde_json::{Value, json};

use crate::fixtures::Log;
use crate::{Status, Visit, VisitsProjection};

/// The projection as v1 keeps it.
type Visits = VisitsProjection<Visit>;

fn visit(state: &MemoryState, id: &str) -> Visit {
    state.get_as(&format!("visit/{id}")).unwrap().unwrap()
}

fn in_hospital(state: &MemoryState, params: &[(&str, &str)]) -> Value {
    testing::query::<Visits>(state, "in-hospital", params).unwrap()
}

fn names(answer: &Value) -> Vec<&str> {
    answer["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|patient| patient["patient_name"].as_str().unwrap())
        .collect()
}

#[test]
fn a_visit_from_check_in_to_check_out() {
    let mut log = Log::new();
    log.check_in("1", "ana", Some("north"), "A-12")
        .add(
            "visit-1",
            "PhysicianAssigned",
            json!({"physician": "dr-okafor"}),
        )
        .add("visit-1", "TestOrdered", json!({"test": "ecg"}))
        .add("visit-1", "TestOrdered", json!({"test": "troponin"}))
        .add("visit-1", "NoteAdded", json!({"author": "x", "text": "y"}))
        .add(
            "visit-1",
            "TestResultRecorded",
            json!({"test": "ecg", "result": "ST elevation", "abnormal": true}),
        )
        .add("visit-1", "VisitOverdue", json!(null))
        .add("visit-1", "TestCancelled", json!({"test": "troponin"}))
        .check_out("1", "admitted")
        .add("visit-1", "RoomReleased", json!({"room": "A-12"}));
    let mut state = MemoryState::new();
    testing::apply::<Visits>(&mut state, &log.records).unwrap();
    let visit = visit(&state, "1");
    assert_eq!(visit.patient_id, "p-ana");
    assert_eq!(visit.hospital, "north");
    assert_eq!(visit.room, None);
    assert_eq!(visit.physician.as_deref(), Some("dr-okafor"));
    assert_eq!(visit.status, Status::CheckedOut);
    assert!(visit.overdue);
    assert_eq!(visit.tests["ecg"].result.as_deref(), Some("ST elevation"));
    assert!(visit.tests["ecg"].abnormal);
    assert_eq!(visit.tests["troponin"].status, "cancelled");
    assert_eq!(
        visit.checked_in_at.as_deref(),
        Some("2026-01-01T00:00:01.000000Z")
    );
    assert_eq!(
        visit.checked_out_at.as_deref(),
        Some("2026-01-01T00:00:10.000000Z")
    );
    assert_eq!(visit.disposition.as_deref(), Some("admitted"));
    assert_eq!(visit.last_position, 11);
    // Gone from the index; the visit stays.
    assert_eq!(
        names(&in_hospital(&state, &[("hospital", "north")])),
        Vec::<&str>::new()
    );
    assert_eq!(state.len(), 1);
}

#[test]
fn lists_who_is_in_a_hospital_now() {
    let mut log = Log::new();
    log.check_in("1", "ana", Some("north"), "A-1")
        .check_in("2", "bo", None, "B-1")
        .check_in("3", "cy", Some("north"), "A-2")
        .check_in("4", "di", Some("north"), "A-3")
        .add("visit-3", "RoomReleased", json!({"room": "A-2"}))
        .add("visit-3", "RoomAssigned", json!({"room": "A-9"}))
        .check_out("1", "discharged");
    let mut state = MemoryState::new();
    // In batches of three, as a host might deliver them.
    for batch in log.records.chunks(3) {
        testing::apply::<Visits>(&mut state, batch).unwrap();
    }
    let north = in_hospital(&state, &[("hospital", "north")]);
    assert_eq!(names(&north), ["cy", "di"]);
    assert_eq!(north["patients"][0]["room"], "A-9");
    assert_eq!(north["next"], Value::Null);
    // Check-ins without a hospital are in `main`.
    assert_eq!(names(&in_hospital(&state, &[("hospital", "main")])), ["bo"]);
    // Pages.
    let first = in_hospital(&state, &[("hospital", "north"), ("limit", "1")]);
    assert_eq!((names(&first), &first["next"]), (vec!["cy"], &json!("3")));
    let second = in_hospital(
        &state,
        &[("hospital", "north"), ("limit", "1"), ("after", "3")],
    );
    assert_eq!(names(&second), ["di"]);
    assert_eq!(
        testing::query::<Visits>(&state, "visit", &[("id", "2")]).unwrap()["hospital"],
        "main"
    );
    assert_eq!(
        testing::query::<Visits>(&state, "visit", &[("id", "9")]).unwrap(),
        Value::Null
    );
    let missing = testing::query::<Visits>(&state, "in-hospital", &[]).unwrap_err();
    assert_eq!(missing.message(), "parameter hospital is missing");
}

#[test]
fn one_batch_writes_each_key_once() {
    let mut log = Log::new();
    log.check_in("1", "ana", Some("north"), "A-1");
    for n in 0..50 {
        log.add("visit-1", "TestOrdered", json!({"test": format!("t{n}")}));
    }
    let mut state = MemoryState::new();
    testing::apply::<Visits>(&mut state, &log.records).unwrap();
    assert_eq!(state.write_count(), 2, "the visit and its index entry");
    assert_eq!(visit(&state, "1").tests.len(), 50);
}

#[test]
fn folds_the_hosts_json_records() {
    let records = [
        r#"{"position":1,"stream":"visit-7","version":1,"id":"e1","type":"PatientCheckedIn","data":{"patient_id":"p-1","patient_name":"Ana Lima","complaint":"x","triage_level":2},"metadata":{"correlation_id":"c"},"recorded_at":"2026-11-23T19:35:53.123456Z"}"#,
        r#"{"position":2,"stream":"visit-7","version":2,"id":"e2","type":"RoomAssigned","data":{"room":"A-12"},"metadata":{},"recorded_at":"2026-11-23T19:35:53.123457Z"}"#,
    ];
    let mut state = MemoryState::new();
    testing::apply_json::<Visits>(&mut state, &records).unwrap();
    let visit = visit(&state, "7");
    assert_eq!(visit.room.as_deref(), Some("A-12"));
    assert_eq!(
        visit.checked_in_at.as_deref(),
        Some("2026-11-23T19:35:53.123456Z")
    );
    assert_eq!(
        names(&in_hospital(&state, &[("hospital", "main")])),
        ["Ana Lima"]
    );
}

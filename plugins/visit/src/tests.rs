//! The component's wire form, through the SDK's entry points as the host calls them: JSON
//! commands and events, the state as bytes. The rules themselves are tested in `visit-model`.

use evhost_sdk::__private::{decide, evolve};
use evhost_sdk::Handler;

use crate::{Stage, VisitHandler, VisitState};

const CHECK_IN: &str = r#"{"patient_id": "p-1001", "patient_name": "Ana Lima",
    "complaint": "chest pain", "triage_level": 2, "room": "A-12",
    "physician": "dr-okafor", "tests": ["ecg", "troponin"]}"#;

fn decide_wire(
    state: Option<&[u8]>,
    command_type: &str,
    data: &str,
) -> Result<Vec<(String, String)>, String> {
    decide::<VisitHandler>(state, "command-1", "visit-1", command_type, data, "{}")
        .expect("no plugin failure")
}

/// `state` (none for a new stream) with `events`, as the wire returns them, folded in.
fn evolve_wire(state: Option<&[u8]>, events: &[(String, String)]) -> Vec<u8> {
    evolve::<VisitHandler>(state, events.iter().map(|(t, d)| (t.as_str(), d.as_str()))).unwrap()
}

#[test]
fn describes_itself_as_the_handler_visit() {
    assert_eq!(
        (VisitHandler::NAME, VisitHandler::CATEGORY),
        ("visit", "visit")
    );
}

#[test]
fn check_in_over_the_wire() {
    let events = decide_wire(None, "CheckIn", CHECK_IN).unwrap();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "PatientCheckedIn",
            "RoomAssigned",
            "PhysicianAssigned",
            "TestOrdered",
            "TestOrdered"
        ]
    );
    assert_eq!(
        events[0].1,
        r#"{"patient_id":"p-1001","patient_name":"Ana Lima","complaint":"chest pain","triage_level":2,"hospital":"main"}"#
    );
    let state = evolve_wire(None, &events);
    let check_out = r#"{"disposition": "discharged", "cancel_pending_tests": true}"#;
    let events = decide_wire(Some(&state), "CheckOut", check_out).unwrap();
    assert_eq!(events[2].1, r#"{"disposition":"discharged"}"#);
}

/// v1's known bug, as deployed: the component accepts a second `CheckOut` of a checked-out
/// visit and appends `PatientCheckedOut` again. `visit-v2` rejects it.
#[test]
fn the_component_accepts_a_repeated_check_out_the_bug_visit_v2_fixes() {
    let check_in = decide_wire(None, "CheckIn", CHECK_IN).unwrap();
    let state = evolve_wire(None, &check_in);
    let check_out = r#"{"disposition": "discharged", "cancel_pending_tests": true}"#;
    let first = decide_wire(Some(&state), "CheckOut", check_out).unwrap();
    let state = evolve_wire(Some(&state), &first);
    let again = decide_wire(Some(&state), "CheckOut", check_out).unwrap();
    assert_eq!(
        again,
        [(
            "PatientCheckedOut".to_owned(),
            r#"{"disposition":"discharged"}"#.to_owned()
        )]
    );
}

#[test]
fn malformed_commands_are_rejected_with_the_reason() {
    let reason = decide_wire(None, "CheckIn", r#"{"patient_id": "p-1"}"#).unwrap_err();
    assert!(
        reason.starts_with("CheckIn data does not match: missing field `patient_name`"),
        "{reason}"
    );
    let reason =
        decide_wire(None, "CheckIn", &CHECK_IN.replace("physician", "pyhsician")).unwrap_err();
    assert!(reason.contains("unknown field `pyhsician`"), "{reason}");
    let reason = decide_wire(None, "Discharge", "{}").unwrap_err();
    assert_eq!(
        reason,
        "unknown command type Discharge; expected one of CheckIn, AssignRoom, AssignPhysician, \
         OrderTest, RecordTest, AddNote, FlagOverdue, CheckOut"
    );
}

#[test]
fn check_ins_without_hospital_or_stay_keep_working() {
    // The payload callers sent before hospitals and expected stays existed.
    let events = decide_wire(None, "CheckIn", CHECK_IN).unwrap();
    let checked_in: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(checked_in["hospital"], "main");
    assert!(checked_in.get("expected_stay_seconds").is_none());
    // Events recorded before then fold as in the hospital `main`.
    let old = r#"{"patient_id":"p-1","patient_name":"Bo","complaint":"fever","triage_level":4}"#;
    let state = evolve::<VisitHandler>(None, [("PatientCheckedIn", old)]).unwrap();
    let state: VisitState = serde_json::from_slice(&state).unwrap();
    assert_eq!(state.stage, Stage::CheckedIn);
}

#[test]
fn check_ins_carry_hospital_and_expected_stay_over_the_wire() {
    let data = CHECK_IN.replacen(
        '{',
        r#"{"hospital": "north", "expected_stay_seconds": 5400, "#,
        1,
    );
    let events = decide_wire(None, "CheckIn", &data).unwrap();
    assert_eq!(
        events[0].1,
        r#"{"patient_id":"p-1001","patient_name":"Ana Lima","complaint":"chest pain","triage_level":2,"hospital":"north","expected_stay_seconds":5400}"#
    );
    let state = evolve_wire(None, &events);
    let flagged = decide_wire(Some(&state), "FlagOverdue", "null").unwrap();
    assert_eq!(flagged, [("VisitOverdue".to_owned(), "null".to_owned())]);
}

//! The visit's rules as given/when/then sequences, every rejection, and the wire form through
//! the SDK's entry points.

use evhost_sdk::__private::{decide, evolve};
use evhost_sdk::{CommandContext, Handler, Rejection};

use crate::{
    CheckIn, Disposition, Stage, TestStatus, VisitCommand, VisitEvent, VisitHandler, VisitState,
};

fn given(events: Vec<VisitEvent>) -> VisitState {
    evhost_sdk::replay::<VisitHandler>(events)
}

fn when(state: &VisitState, command: VisitCommand) -> Result<Vec<VisitEvent>, Rejection> {
    VisitHandler::decide(state, command, &CommandContext::new("command-1", "visit-1"))
}

fn rejected(state: &VisitState, command: VisitCommand) -> String {
    match when(state, command) {
        Ok(events) => panic!("expected a rejection, got {events:?}"),
        Err(rejection) => rejection.into_reason(),
    }
}

fn check_in() -> CheckIn {
    CheckIn {
        patient_id: "p-1001".into(),
        patient_name: "Ana Lima".into(),
        complaint: "chest pain".into(),
        triage_level: 2,
        room: "A-12".into(),
        physician: Some("dr-okafor".into()),
        tests: vec!["ecg".into(), "troponin".into()],
        hospital: "north".into(),
        expected_stay_seconds: Some(7200),
    }
}

/// The state after the standard check-in.
fn checked_in() -> VisitState {
    given(when(&VisitState::default(), VisitCommand::CheckIn(check_in())).unwrap())
}

/// The state after the standard check-in with results for both tests and a check-out.
fn checked_out() -> VisitState {
    let mut events = when(&VisitState::default(), VisitCommand::CheckIn(check_in())).unwrap();
    for test in ["ecg", "troponin"] {
        events.push(VisitEvent::TestResultRecorded {
            test: test.into(),
            result: "normal".into(),
            abnormal: false,
        });
    }
    events.push(VisitEvent::PatientCheckedOut {
        disposition: Disposition::Discharged,
        summary: None,
    });
    given(events)
}

/// One command of each type other than `CheckIn`, each valid on a fresh check-in.
fn every_command_but_check_in() -> Vec<VisitCommand> {
    vec![
        VisitCommand::AssignRoom { room: "B-3".into() },
        VisitCommand::AssignPhysician {
            physician: "dr-weiss".into(),
        },
        VisitCommand::OrderTest {
            test: "x-ray".into(),
        },
        VisitCommand::RecordTest {
            test: "ecg".into(),
            result: "sinus rhythm".into(),
            abnormal: false,
        },
        VisitCommand::AddNote {
            author: "nurse-li".into(),
            text: "pain 6/10".into(),
        },
        VisitCommand::FlagOverdue,
        VisitCommand::CheckOut {
            disposition: Disposition::Admitted,
            summary: None,
            cancel_pending_tests: true,
        },
    ]
}

#[test]
fn check_in_produces_the_whole_visit_in_order() {
    let events = when(&VisitState::default(), VisitCommand::CheckIn(check_in())).unwrap();
    assert_eq!(
        events,
        [
            VisitEvent::PatientCheckedIn {
                patient_id: "p-1001".into(),
                patient_name: "Ana Lima".into(),
                complaint: "chest pain".into(),
                triage_level: 2,
                hospital: "north".into(),
                expected_stay_seconds: Some(7200),
            },
            VisitEvent::RoomAssigned {
                room: "A-12".into()
            },
            VisitEvent::PhysicianAssigned {
                physician: "dr-okafor".into()
            },
            VisitEvent::TestOrdered { test: "ecg".into() },
            VisitEvent::TestOrdered {
                test: "troponin".into()
            },
        ]
    );
    let state = given(events);
    assert_eq!(state.stage, Stage::CheckedIn);
    assert_eq!(state.room.as_deref(), Some("A-12"));
    assert_eq!(
        state.pending_tests().collect::<Vec<_>>(),
        ["ecg", "troponin"]
    );
}

#[test]
fn check_in_without_physician_or_tests_produces_two_events() {
    let minimal = CheckIn {
        physician: None,
        tests: Vec::new(),
        ..check_in()
    };
    let events = when(&VisitState::default(), VisitCommand::CheckIn(minimal)).unwrap();
    assert_eq!(events.len(), 2);
    assert!(matches!(events[1], VisitEvent::RoomAssigned { .. }));
}

#[test]
fn every_command_is_accepted_after_check_in() {
    for command in every_command_but_check_in() {
        assert!(when(&checked_in(), command.clone()).is_ok(), "{command:?}");
    }
}

#[test]
fn a_whole_visit() {
    let mut state = checked_in();
    let mut step = |command| {
        let events = when(&state, command).unwrap();
        for event in events.clone() {
            VisitHandler::evolve(&mut state, event);
        }
        events
    };
    assert_eq!(
        step(VisitCommand::AssignRoom { room: "B-3".into() }),
        [
            VisitEvent::RoomReleased {
                room: "A-12".into()
            },
            VisitEvent::RoomAssigned { room: "B-3".into() },
        ]
    );
    step(VisitCommand::RecordTest {
        test: "ecg".into(),
        result: "ST elevation".into(),
        abnormal: true,
    });
    step(VisitCommand::RecordTest {
        test: "troponin".into(),
        result: "0.9 ng/mL".into(),
        abnormal: true,
    });
    step(VisitCommand::AddNote {
        author: "dr-okafor".into(),
        text: "STEMI; cath lab notified".into(),
    });
    assert_eq!(
        step(VisitCommand::CheckOut {
            disposition: Disposition::Admitted,
            summary: Some("admitted to cardiology".into()),
            cancel_pending_tests: false,
        }),
        [
            VisitEvent::PatientCheckedOut {
                disposition: Disposition::Admitted,
                summary: Some("admitted to cardiology".into()),
            },
            VisitEvent::RoomReleased { room: "B-3".into() },
        ]
    );
    assert_eq!(state.stage, Stage::CheckedOut);
    assert_eq!(state.room, None);
}

#[test]
fn a_test_can_be_ordered_again_after_its_result() {
    let state = given(vec![
        VisitEvent::PatientCheckedIn {
            patient_id: "p-1".into(),
            patient_name: "Bo".into(),
            complaint: "fever".into(),
            triage_level: 4,
            hospital: "main".into(),
            expected_stay_seconds: None,
        },
        VisitEvent::TestOrdered {
            test: "lactate".into(),
        },
        VisitEvent::TestResultRecorded {
            test: "lactate".into(),
            result: "3.1".into(),
            abnormal: true,
        },
    ]);
    let events = when(
        &state,
        VisitCommand::OrderTest {
            test: "lactate".into(),
        },
    )
    .unwrap();
    assert_eq!(
        given_more(state, events).tests["lactate"],
        TestStatus::Pending
    );
}

fn given_more(mut state: VisitState, events: Vec<VisitEvent>) -> VisitState {
    for event in events {
        VisitHandler::evolve(&mut state, event);
    }
    state
}

#[test]
fn checking_out_can_cancel_pending_tests_explicitly() {
    let events = when(
        &checked_in(),
        VisitCommand::CheckOut {
            disposition: Disposition::LeftAgainstAdvice,
            summary: Some("  ".into()),
            cancel_pending_tests: true,
        },
    )
    .unwrap();
    assert_eq!(
        events,
        [
            VisitEvent::TestCancelled { test: "ecg".into() },
            VisitEvent::TestCancelled {
                test: "troponin".into()
            },
            VisitEvent::PatientCheckedOut {
                disposition: Disposition::LeftAgainstAdvice,
                summary: None,
            },
            VisitEvent::RoomReleased {
                room: "A-12".into()
            },
        ]
    );
    let state = given_more(checked_in(), events);
    assert_eq!(state.tests["ecg"], TestStatus::Cancelled);
}

#[test]
fn rejects_checking_in_twice() {
    assert_eq!(
        rejected(&checked_in(), VisitCommand::CheckIn(check_in())),
        "patient p-1001 is already checked in"
    );
}

#[test]
fn rejects_checking_in_after_check_out() {
    assert_eq!(
        rejected(&checked_out(), VisitCommand::CheckIn(check_in())),
        "patient p-1001 is checked out; the visit is closed (start a new visit stream)"
    );
}

#[test]
fn rejects_every_command_before_check_in() {
    for command in every_command_but_check_in() {
        assert_eq!(
            rejected(&VisitState::default(), command),
            "patient is not checked in"
        );
    }
}

#[test]
fn rejects_every_command_after_check_out() {
    for command in every_command_but_check_in() {
        assert_eq!(
            rejected(&checked_out(), command),
            "patient p-1001 is checked out; the visit is closed"
        );
    }
}

#[test]
fn rejects_assigning_the_room_the_patient_is_in() {
    assert_eq!(
        rejected(
            &checked_in(),
            VisitCommand::AssignRoom {
                room: "A-12".into()
            }
        ),
        "patient is already in room A-12"
    );
}

#[test]
fn rejects_assigning_the_attending_physician_again() {
    assert_eq!(
        rejected(
            &checked_in(),
            VisitCommand::AssignPhysician {
                physician: "dr-okafor".into()
            }
        ),
        "physician dr-okafor is already attending"
    );
}

#[test]
fn rejects_ordering_a_pending_test_again() {
    assert_eq!(
        rejected(
            &checked_in(),
            VisitCommand::OrderTest { test: "ecg".into() }
        ),
        "test ecg is already ordered and pending"
    );
}

#[test]
fn rejects_recording_a_test_that_was_not_ordered() {
    let record = |test: &str| VisitCommand::RecordTest {
        test: test.into(),
        result: "normal".into(),
        abnormal: false,
    };
    assert_eq!(
        rejected(&checked_in(), record("mri")),
        "test mri was not ordered"
    );
    let resulted = given_more(checked_in(), when(&checked_in(), record("ecg")).unwrap());
    assert_eq!(
        rejected(&resulted, record("ecg")),
        "test ecg already has a result"
    );
    let cancelled = given_more(
        checked_in(),
        vec![VisitEvent::TestCancelled { test: "ecg".into() }],
    );
    assert_eq!(
        rejected(&cancelled, record("ecg")),
        "test ecg was cancelled"
    );
}

#[test]
fn rejects_checking_out_with_pending_tests() {
    let check_out = VisitCommand::CheckOut {
        disposition: Disposition::Discharged,
        summary: None,
        cancel_pending_tests: false,
    };
    assert_eq!(
        rejected(&checked_in(), check_out),
        "tests still pending: ecg, troponin; record their results, or check out with \
         \"cancel_pending_tests\": true"
    );
}

#[test]
fn rejects_invalid_check_in_data() {
    let cases: Vec<(CheckIn, &str)> = vec![
        (
            CheckIn {
                patient_id: " ".into(),
                ..check_in()
            },
            "patient_id is empty; expected a value",
        ),
        (
            CheckIn {
                patient_name: String::new(),
                ..check_in()
            },
            "patient_name is empty; expected a value",
        ),
        (
            CheckIn {
                complaint: String::new(),
                ..check_in()
            },
            "complaint is empty; expected a value",
        ),
        (
            CheckIn {
                room: String::new(),
                ..check_in()
            },
            "room is empty; expected a value",
        ),
        (
            CheckIn {
                triage_level: 0,
                ..check_in()
            },
            "triage_level is 0; expected 1 (most urgent) to 5",
        ),
        (
            CheckIn {
                triage_level: 6,
                ..check_in()
            },
            "triage_level is 6; expected 1 (most urgent) to 5",
        ),
        (
            CheckIn {
                physician: Some(String::new()),
                ..check_in()
            },
            "physician is empty; expected a value",
        ),
        (
            CheckIn {
                tests: vec!["ecg".into(), String::new()],
                ..check_in()
            },
            "test is empty; expected a value",
        ),
        (
            CheckIn {
                tests: vec!["ecg".into(), "cbc".into(), "ecg".into()],
                ..check_in()
            },
            "test ecg is listed twice; expected each test once",
        ),
        (
            CheckIn {
                hospital: " ".into(),
                ..check_in()
            },
            "hospital is empty; expected a value",
        ),
        (
            CheckIn {
                hospital: "north/east".into(),
                ..check_in()
            },
            "hospital north/east contains '/'; expected a name without it",
        ),
        (
            CheckIn {
                expected_stay_seconds: Some(0),
                ..check_in()
            },
            "expected_stay_seconds is 0; expected at least 1, or none",
        ),
    ];
    for (check_in, reason) in cases {
        assert_eq!(
            rejected(&VisitState::default(), VisitCommand::CheckIn(check_in)),
            reason
        );
    }
}

#[test]
fn rejects_empty_inputs_of_other_commands() {
    let state = checked_in();
    let cases = [
        (VisitCommand::AssignRoom { room: "".into() }, "room"),
        (
            VisitCommand::AssignPhysician {
                physician: "".into(),
            },
            "physician",
        ),
        (VisitCommand::OrderTest { test: "".into() }, "test"),
        (
            VisitCommand::RecordTest {
                test: "ecg".into(),
                result: "".into(),
                abnormal: false,
            },
            "result",
        ),
        (
            VisitCommand::AddNote {
                author: "".into(),
                text: "x".into(),
            },
            "author",
        ),
        (
            VisitCommand::AddNote {
                author: "x".into(),
                text: "".into(),
            },
            "text",
        ),
    ];
    for (command, field) in cases {
        assert_eq!(
            rejected(&state, command),
            format!("{field} is empty; expected a value")
        );
    }
}

// The wire form, as the host calls the component.

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
    let state =
        evolve::<VisitHandler>(None, events.iter().map(|(t, d)| (t.as_str(), d.as_str()))).unwrap();
    let check_out = r#"{"disposition": "discharged", "cancel_pending_tests": true}"#;
    let events = decide_wire(Some(&state), "CheckOut", check_out).unwrap();
    assert_eq!(events[2].1, r#"{"disposition":"discharged"}"#);
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
fn state_survives_the_wire_round_trip() {
    let state = checked_out();
    let bytes = serde_json::to_vec(&state).unwrap();
    let decoded: VisitState = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(decoded, state);
}

#[test]
fn an_open_visit_is_flagged_overdue_once() {
    let state = checked_in();
    let events = when(&state, VisitCommand::FlagOverdue).unwrap();
    assert_eq!(events, [VisitEvent::VisitOverdue]);
    let state = given(
        when(&VisitState::default(), VisitCommand::CheckIn(check_in()))
            .unwrap()
            .into_iter()
            .chain(events)
            .collect(),
    );
    assert!(state.overdue);
    assert_eq!(
        rejected(&state, VisitCommand::FlagOverdue),
        "the visit is already flagged as overdue"
    );
    assert_eq!(
        rejected(&checked_out(), VisitCommand::FlagOverdue),
        "patient p-1001 is checked out; the visit is closed"
    );
    assert_eq!(
        rejected(&VisitState::default(), VisitCommand::FlagOverdue),
        "patient is not checked in"
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
    let state =
        evolve::<VisitHandler>(None, events.iter().map(|(t, d)| (t.as_str(), d.as_str()))).unwrap();
    let flagged = decide_wire(Some(&state), "FlagOverdue", "null").unwrap();
    assert_eq!(flagged, [("VisitOverdue".to_owned(), "null".to_owned())]);
}

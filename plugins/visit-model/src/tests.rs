//! The visit's rules as given/when/then sequences, and every rejection.

use evhost_sdk::Rejection;

use crate::fixtures::{
    check_in, check_out, checked_in, checked_out, every_command_but_check_in, given, given_more,
};
use crate::{CheckIn, Disposition, Stage, TestStatus, VisitCommand, VisitEvent, VisitState};

fn when(state: &VisitState, command: VisitCommand) -> Result<Vec<VisitEvent>, Rejection> {
    crate::decide(state, command)
}

fn rejected(state: &VisitState, command: VisitCommand) -> String {
    match when(state, command) {
        Ok(events) => panic!("expected a rejection, got {events:?}"),
        Err(rejection) => rejection.into_reason(),
    }
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
            state.apply(event);
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
fn rejects_every_command_but_check_out_after_check_out() {
    for command in every_command_but_check_in()
        .into_iter()
        .filter(|command| !matches!(command, VisitCommand::CheckOut { .. }))
    {
        assert_eq!(
            rejected(&checked_out(), command),
            "patient p-1001 is checked out; the visit is closed"
        );
    }
}

/// The bug of v1 that `visit-v2` fixes: a second `CheckOut` of a checked-out visit is accepted
/// (the check-out's rule checks that the patient is checked in, not that they are still here)
/// and appends `PatientCheckedOut` again, so the visit ends twice.
#[test]
fn v1_accepts_a_repeated_check_out_the_bug_visit_v2_fixes() {
    let state = checked_in();
    let first = when(&state, check_out()).unwrap();
    let state = given_more(state, first);
    assert_eq!(state.stage, Stage::CheckedOut);
    assert_eq!(
        when(&state, check_out()).unwrap(),
        [VisitEvent::PatientCheckedOut {
            disposition: Disposition::Admitted,
            summary: None,
        }]
    );
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

#[test]
fn state_survives_the_json_round_trip() {
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
    let state = given_more(state, events);
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

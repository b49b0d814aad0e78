//! Visits to test with (feature `fixtures`, and this crate's own tests): the standard check-in,
//! the state after it and after a whole visit, and one command of each type. The unit tests of
//! the model and of each version of the handler start from these, so that the versions are
//! compared on the same visits.

use crate::{CheckIn, Disposition, VisitCommand, VisitEvent, VisitState, decide};

/// The state folded from `events`, from a new stream's.
pub fn given(events: impl IntoIterator<Item = VisitEvent>) -> VisitState {
    given_more(VisitState::default(), events)
}

/// `state` with `events` folded into it.
pub fn given_more(
    mut state: VisitState,
    events: impl IntoIterator<Item = VisitEvent>,
) -> VisitState {
    for event in events {
        state.apply(event);
    }
    state
}

/// The standard check-in: Ana Lima in room A-12 of the hospital `north`, with a physician and
/// the tests `ecg` and `troponin`.
pub fn check_in() -> CheckIn {
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

/// The events of the standard check-in.
pub fn check_in_events() -> Vec<VisitEvent> {
    decide(&VisitState::default(), VisitCommand::CheckIn(check_in()))
        .expect("the standard check-in is accepted")
}

/// The state after the standard check-in.
pub fn checked_in() -> VisitState {
    given(check_in_events())
}

/// The state after the standard check-in, results for both tests and a check-out (which
/// released the room).
pub fn checked_out() -> VisitState {
    let mut events = check_in_events();
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
    events.push(VisitEvent::RoomReleased {
        room: "A-12".into(),
    });
    given(events)
}

/// One command of each type other than `CheckIn`, each valid on a fresh check-in.
pub fn every_command_but_check_in() -> Vec<VisitCommand> {
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
        check_out(),
    ]
}

/// A check-out that cancels the tests still pending, so that it is accepted on an open visit.
pub fn check_out() -> VisitCommand {
    VisitCommand::CheckOut {
        disposition: Disposition::Admitted,
        summary: None,
        cancel_pending_tests: true,
    }
}

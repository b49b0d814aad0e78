//! v2 against v1: the repeated check-out is rejected, every other decision is v1's, and the
//! component reads the state v1 writes.

use evhost_sdk::__private::{decide, evolve};
use evhost_sdk::{CommandContext, Handler, Rejection};
use visit_model::fixtures::{
    check_in, check_out, checked_in, checked_out, every_command_but_check_in, given_more,
};
use visit_model::{Disposition, VisitCommand, VisitEvent, VisitState};

use crate::VisitHandler;

type V1 = visit::VisitHandler;

fn decided<H: Handler<State = VisitState, Command = VisitCommand, Event = VisitEvent>>(
    state: &VisitState,
    command: VisitCommand,
) -> Result<Vec<VisitEvent>, Rejection> {
    H::decide(state, command, &CommandContext::new("command-1", "visit-1"))
}

#[test]
fn describes_itself_as_v1_does() {
    assert_eq!(
        (VisitHandler::NAME, VisitHandler::CATEGORY),
        (V1::NAME, V1::CATEGORY)
    );
    assert_eq!(VisitHandler::NAME, "visit");
}

#[test]
fn rejects_checking_out_a_checked_out_visit() {
    let state = given_more(
        checked_in(),
        decided::<VisitHandler>(&checked_in(), check_out()).unwrap(),
    );
    for state in [state, checked_out()] {
        assert_eq!(
            decided::<VisitHandler>(&state, check_out())
                .unwrap_err()
                .reason(),
            "patient p-1001 is already checked out; the visit is closed"
        );
        // Where v1 appended the check-out again.
        assert!(decided::<V1>(&state, check_out()).is_ok());
    }
}

#[test]
fn decides_everything_else_as_v1_does() {
    let overdue = given_more(checked_in(), [VisitEvent::VisitOverdue]);
    let states = [VisitState::default(), checked_in(), overdue, checked_out()];
    let mut commands = every_command_but_check_in();
    commands.extend([
        VisitCommand::CheckIn(check_in()),
        // Rejected while tests are pending.
        VisitCommand::CheckOut {
            disposition: Disposition::Discharged,
            summary: Some("home".into()),
            cancel_pending_tests: false,
        },
        VisitCommand::AssignRoom {
            room: "A-12".into(),
        },
    ]);
    for state in &states {
        for command in &commands {
            let repeated_check_out =
                matches!(command, VisitCommand::CheckOut { .. }) && *state == checked_out();
            if repeated_check_out {
                continue;
            }
            assert_eq!(
                decided::<VisitHandler>(state, command.clone()),
                decided::<V1>(state, command.clone()),
                "{command:?} on {state:?}"
            );
        }
    }
}

#[test]
fn continues_a_visit_v1_wrote_over_the_wire() {
    let data = r#"{"patient_id": "p-1001", "patient_name": "Ana Lima", "complaint": "chest pain",
        "triage_level": 2, "room": "A-12", "tests": ["ecg"]}"#;
    let wire = |state: Option<&[u8]>, command_type: &str, data: &str| {
        decide::<V1>(state, "command-1", "visit-1", command_type, data, "{}").unwrap()
    };
    let fold = |state: Option<&[u8]>, events: &[(String, String)]| {
        evolve::<V1>(state, events.iter().map(|(t, d)| (t.as_str(), d.as_str()))).unwrap()
    };
    // v1 checks the patient in and out; v2 takes over the stream and its state.
    let checked_in = fold(None, &wire(None, "CheckIn", data).unwrap());
    let check_out = r#"{"disposition": "transferred", "cancel_pending_tests": true}"#;
    let checked_out = fold(
        Some(&checked_in),
        &wire(Some(&checked_in), "CheckOut", check_out).unwrap(),
    );
    let v2 = decide::<VisitHandler>(
        Some(&checked_out),
        "command-2",
        "visit-1",
        "CheckOut",
        check_out,
        "{}",
    );
    assert_eq!(
        v2.unwrap(),
        Err("patient p-1001 is already checked out; the visit is closed".to_owned())
    );
}

//! The rules of a visit: which events a command produces in a given state, or why it is
//! refused.

use evhost_sdk::{Rejection, ensure, reject};

use crate::command::{CheckIn, VisitCommand, require};
use crate::event::{Disposition, VisitEvent};
use crate::state::{Stage, TestStatus, VisitState};

/// Decides `command` against the visit's state: the rules of the handler `visit` as v1 has them.
pub fn decide(state: &VisitState, command: VisitCommand) -> Result<Vec<VisitEvent>, Rejection> {
    // Opening and closing the visit check its stage themselves; the rest needs it open.
    match command {
        VisitCommand::CheckIn(check_in) => return check_in_decision(state, check_in),
        VisitCommand::CheckOut {
            disposition,
            summary,
            cancel_pending_tests,
        } => return check_out(state, disposition, summary, cancel_pending_tests),
        _ => {}
    }
    match state.stage {
        Stage::NotCheckedIn => reject!("patient is not checked in"),
        Stage::CheckedOut => reject!(
            "patient {} is checked out; the visit is closed",
            state.patient_id
        ),
        Stage::CheckedIn => {}
    }
    match command {
        VisitCommand::CheckIn(_) | VisitCommand::CheckOut { .. } => unreachable!("decided above"),
        VisitCommand::AssignRoom { room } => assign_room(state, room),
        VisitCommand::AssignPhysician { physician } => {
            require("physician", &physician)?;
            if state.physician.as_deref() == Some(physician.as_str()) {
                reject!("physician {physician} is already attending");
            }
            Ok(vec![VisitEvent::PhysicianAssigned { physician }])
        }
        VisitCommand::OrderTest { test } => {
            require("test", &test)?;
            ensure!(
                state.tests.get(&test) != Some(&TestStatus::Pending),
                "test {test} is already ordered and pending"
            );
            Ok(vec![VisitEvent::TestOrdered { test }])
        }
        VisitCommand::RecordTest {
            test,
            result,
            abnormal,
        } => {
            require("result", &result)?;
            match state.tests.get(&test) {
                None => reject!("test {test} was not ordered"),
                Some(TestStatus::Resulted) => reject!("test {test} already has a result"),
                Some(TestStatus::Cancelled) => reject!("test {test} was cancelled"),
                Some(TestStatus::Pending) => Ok(vec![VisitEvent::TestResultRecorded {
                    test,
                    result,
                    abnormal,
                }]),
            }
        }
        VisitCommand::AddNote { author, text } => {
            require("author", &author)?;
            require("text", &text)?;
            Ok(vec![VisitEvent::NoteAdded { author, text }])
        }
        VisitCommand::FlagOverdue => {
            ensure!(!state.overdue, "the visit is already flagged as overdue");
            Ok(vec![VisitEvent::VisitOverdue])
        }
    }
}

fn check_in_decision(state: &VisitState, check_in: CheckIn) -> Result<Vec<VisitEvent>, Rejection> {
    match state.stage {
        Stage::NotCheckedIn => {}
        Stage::CheckedIn => reject!("patient {} is already checked in", state.patient_id),
        Stage::CheckedOut => reject!(
            "patient {} is checked out; the visit is closed (start a new visit stream)",
            state.patient_id
        ),
    }
    check_in.validate()?;
    let CheckIn {
        patient_id,
        patient_name,
        complaint,
        triage_level,
        room,
        physician,
        tests,
        hospital,
        expected_stay_seconds,
    } = check_in;
    let mut events = Vec::with_capacity(3 + tests.len());
    events.push(VisitEvent::PatientCheckedIn {
        patient_id,
        patient_name,
        complaint,
        triage_level,
        hospital,
        expected_stay_seconds,
    });
    events.push(VisitEvent::RoomAssigned { room });
    if let Some(physician) = physician {
        events.push(VisitEvent::PhysicianAssigned { physician });
    }
    events.extend(
        tests
            .into_iter()
            .map(|test| VisitEvent::TestOrdered { test }),
    );
    Ok(events)
}

fn assign_room(state: &VisitState, room: String) -> Result<Vec<VisitEvent>, Rejection> {
    require("room", &room)?;
    match &state.room {
        Some(current) if *current == room => reject!("patient is already in room {room}"),
        Some(current) => Ok(vec![
            VisitEvent::RoomReleased {
                room: current.clone(),
            },
            VisitEvent::RoomAssigned { room },
        ]),
        None => Ok(vec![VisitEvent::RoomAssigned { room }]),
    }
}

fn check_out(
    state: &VisitState,
    disposition: Disposition,
    summary: Option<String>,
    cancel_pending_tests: bool,
) -> Result<Vec<VisitEvent>, Rejection> {
    ensure!(
        state.stage != Stage::NotCheckedIn,
        "patient is not checked in"
    );
    let pending: Vec<&str> = state.pending_tests().collect();
    if !pending.is_empty() && !cancel_pending_tests {
        reject!(
            "tests still pending: {}; record their results, or check out with \
             \"cancel_pending_tests\": true",
            pending.join(", ")
        );
    }
    let mut events: Vec<VisitEvent> = pending
        .into_iter()
        .map(|test| VisitEvent::TestCancelled {
            test: test.to_owned(),
        })
        .collect();
    events.push(VisitEvent::PatientCheckedOut {
        disposition,
        summary: summary.filter(|summary| !summary.trim().is_empty()),
    });
    if let Some(room) = &state.room {
        events.push(VisitEvent::RoomReleased { room: room.clone() });
    }
    Ok(events)
}

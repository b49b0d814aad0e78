//! Follow-up of visits, an example evhost plugin: the policy `visit-survey`, which watches the
//! visits of the handler `visit`.
//!
//! - `PatientCheckedIn`: remembers the visit's patient (`visit/<visit id>`) and sets the timer
//!   `overdue/<visit id>` at the event's `recorded-at` plus the check-in's
//!   `expected_stay_seconds` (4 hours if it gives none).
//! - The timer fires: sends `FlagOverdue` to the handler `visit` on `visit-<visit id>`.
//! - `PatientCheckedOut`: sends `PrepareSurvey {visit_id, patient_id}` to the handler `survey`
//!   on `survey-<visit id>`, cancels the timer and forgets the visit.
//! - A rejected `FlagOverdue` (the visit closed, or was flagged, before the timer's command
//!   reached it) is expected and ignored; any other rejection is logged as a warning.

use evhost_sdk::{Action, Envelope, Failure, Policy, RejectedCommand, State, Timer, log};
use serde::{Deserialize, Serialize};

/// The policy `visit-survey`.
pub struct VisitSurvey;

/// How long a visit is expected to last when its check-in does not say: 4 hours.
pub const DEFAULT_EXPECTED_STAY_SECONDS: u64 = 4 * 3600;

/// The events of the `visit` handler this policy reacts to.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum VisitEvent {
    PatientCheckedIn {
        patient_id: String,
        #[serde(default)]
        expected_stay_seconds: Option<u64>,
    },
    PatientCheckedOut,
    #[serde(other)]
    Other,
}

/// The command it sends to the `visit` handler.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "data")]
pub enum VisitCommand {
    FlagOverdue,
}

/// The command it sends to the `survey` handler.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "data")]
pub enum SurveyCommand {
    PrepareSurvey {
        visit_id: String,
        patient_id: String,
    },
}

/// What it remembers of an open visit (`visit/<visit id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenVisit {
    pub patient_id: String,
}

/// The payload of an overdue timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overdue {
    pub visit_id: String,
}

/// The key of a visit's overdue timer.
pub fn overdue_timer(visit_id: &str) -> String {
    format!("overdue/{visit_id}")
}

impl Policy for VisitSurvey {
    const NAME: &'static str = "visit-survey";
    const DESCRIPTION: &'static str =
        "Flags visits that outlast their expected stay; prepares a survey when a visit ends";
    const CATEGORIES: &'static [&'static str] = &["visit"];
    const EVENT_TYPES: &'static [&'static str] = &["PatientCheckedIn", "PatientCheckedOut"];
    type Event = VisitEvent;

    fn react(
        state: &mut State<'_>,
        event: Envelope<'_, VisitEvent>,
    ) -> Result<Vec<Action>, Failure> {
        let visit_id = event.entity_id().to_owned();
        let visit_key = format!("visit/{visit_id}");
        let recorded_at_ms = event.recorded_at_ms()?;
        match event.into_event() {
            VisitEvent::PatientCheckedIn {
                patient_id,
                expected_stay_seconds,
            } => {
                state.put(&visit_key, OpenVisit { patient_id });
                let stay_ms = expected_stay_seconds.unwrap_or(DEFAULT_EXPECTED_STAY_SECONDS) * 1000;
                Ok(vec![Action::schedule(
                    overdue_timer(&visit_id),
                    recorded_at_ms + stay_ms,
                    &Overdue { visit_id },
                )?])
            }
            VisitEvent::PatientCheckedOut => {
                let Some(OpenVisit { patient_id }) = state.get::<OpenVisit>(&visit_key)? else {
                    log::warn(&format!(
                        "visit {visit_id} checked out without a check-in seen; no survey"
                    ));
                    return Ok(vec![Action::cancel_timer(overdue_timer(&visit_id))]);
                };
                state.delete(&visit_key);
                Ok(vec![
                    Action::send(
                        "survey",
                        format!("survey-{visit_id}"),
                        &SurveyCommand::PrepareSurvey {
                            visit_id: visit_id.clone(),
                            patient_id,
                        },
                    )?,
                    Action::cancel_timer(overdue_timer(&visit_id)),
                ])
            }
            VisitEvent::Other => Ok(Vec::new()),
        }
    }

    fn on_timer(_state: &mut State<'_>, timer: Timer<'_>) -> Result<Vec<Action>, Failure> {
        let Overdue { visit_id } = timer.payload()?;
        Ok(vec![Action::send(
            "visit",
            format!("visit-{visit_id}"),
            &VisitCommand::FlagOverdue,
        )?])
    }

    fn on_rejected(
        _state: &mut State<'_>,
        command: RejectedCommand<'_>,
        reason: &str,
    ) -> Result<Vec<Action>, Failure> {
        if command.command_type() == "FlagOverdue" {
            log::debug(&format!(
                "{} was not flagged overdue: {reason}",
                command.stream_id()
            ));
        } else {
            log::warn(&format!(
                "{} on {} was rejected: {reason}",
                command.command_type(),
                command.stream_id()
            ));
        }
        Ok(Vec::new())
    }
}

evhost_sdk::export_policy!(VisitSurvey);

#[cfg(test)]
mod tests {
    use evhost_sdk::testing::{self, EventRecord, MemoryState};
    use evhost_sdk::{Action, ScheduleTimer};
    use serde_json::json;

    use super::{SurveyCommand, VisitCommand, VisitSurvey};

    const CHECKED_IN_AT: &str = "2026-11-23T19:35:53.123456Z";
    const CHECKED_IN_MS: u64 = 1_795_462_553_123;

    fn checked_in(stay: Option<u64>) -> EventRecord {
        let mut data = json!({"patient_id": "p-1", "patient_name": "Ana", "complaint": "x", "triage_level": 2});
        if let Some(stay) = stay {
            data["expected_stay_seconds"] = json!(stay);
        }
        EventRecord::new(1, "visit-42", "PatientCheckedIn", &data).recorded_at(CHECKED_IN_AT)
    }

    fn only_timer(actions: &[Action]) -> &ScheduleTimer {
        match actions {
            [Action::Schedule(timer)] => timer,
            _ => panic!("expected one timer: {actions:?}"),
        }
    }

    #[test]
    fn check_in_sets_the_overdue_timer_at_the_expected_stay() {
        let mut state = MemoryState::new();
        let actions = testing::react::<VisitSurvey>(&mut state, &checked_in(Some(5400))).unwrap();
        let timer = only_timer(&actions);
        assert_eq!(timer.key, "overdue/42");
        assert_eq!(timer.due_ms, CHECKED_IN_MS + 5_400_000);
        let actions =
            testing::react::<VisitSurvey>(&mut MemoryState::new(), &checked_in(None)).unwrap();
        assert_eq!(only_timer(&actions).due_ms, CHECKED_IN_MS + 4 * 3600 * 1000);
    }

    #[test]
    fn the_timer_flags_the_visit_and_its_rejection_is_ignored() {
        let mut state = MemoryState::new();
        let actions = testing::react::<VisitSurvey>(&mut state, &checked_in(None)).unwrap();
        let fired = testing::fire::<VisitSurvey>(&mut state, only_timer(&actions)).unwrap();
        assert_eq!(
            fired,
            [Action::send("visit", "visit-42", &VisitCommand::FlagOverdue).unwrap()]
        );
        let Action::Send(flag) = &fired[0] else {
            unreachable!()
        };
        let reaction = testing::reject::<VisitSurvey>(
            &mut state,
            flag,
            "patient p-1 is checked out; the visit is closed",
        );
        assert_eq!(reaction.unwrap(), []);
    }

    #[test]
    fn check_out_prepares_the_survey_and_cancels_the_timer() {
        let mut state = MemoryState::new();
        testing::react::<VisitSurvey>(&mut state, &checked_in(None)).unwrap();
        let checked_out = EventRecord::new(
            9,
            "visit-42",
            "PatientCheckedOut",
            &json!({"disposition": "discharged"}),
        );
        let actions = testing::react::<VisitSurvey>(&mut state, &checked_out).unwrap();
        let prepare = SurveyCommand::PrepareSurvey {
            visit_id: "42".into(),
            patient_id: "p-1".into(),
        };
        assert_eq!(
            actions,
            [
                Action::send("survey", "survey-42", &prepare).unwrap(),
                Action::cancel_timer("overdue/42"),
            ]
        );
        assert!(state.is_empty(), "the visit is forgotten");
        let Action::Send(survey) = &actions[0] else {
            unreachable!()
        };
        assert_eq!(survey.data, r#"{"visit_id":"42","patient_id":"p-1"}"#);
        assert_eq!(
            testing::reject::<VisitSurvey>(&mut state, survey, "already prepared").unwrap(),
            []
        );
    }

    #[test]
    fn the_commands_fit_their_handlers() {
        use evhost_sdk::Handler;
        let prepare = SurveyCommand::PrepareSurvey {
            visit_id: "42".into(),
            patient_id: "p-1".into(),
        };
        let Action::Send(command) = Action::send("survey", "survey-42", &prepare).unwrap() else {
            unreachable!()
        };
        let decided = evhost_sdk::__private::decide::<survey::SurveyHandler>(
            None,
            "c",
            &command.stream_id,
            &command.command_type,
            &command.data,
            "{}",
        );
        assert_eq!(decided.unwrap().unwrap()[0].0, "SurveyPrepared");
        let Action::Send(flag) =
            Action::send("visit", "visit-42", &VisitCommand::FlagOverdue).unwrap()
        else {
            unreachable!()
        };
        let decided = evhost_sdk::__private::decide::<visit::VisitHandler>(
            None,
            "c",
            &flag.stream_id,
            &flag.command_type,
            &flag.data,
            "{}",
        );
        assert_eq!(
            decided.unwrap(),
            Err("patient is not checked in".to_owned())
        );
        assert_eq!(visit::VisitHandler::NAME, "visit");
    }
}

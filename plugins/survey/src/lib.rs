//! Patient surveys, an example evhost plugin: the command handler `survey`, which owns the
//! streams `survey-<visit id>`, one survey per visit. The policy `visit-survey` prepares one
//! when a visit ends; the patient's answer is submitted later.
//!
//! - `PrepareSurvey {visit_id, patient_id}` → `SurveyPrepared {visit_id, patient_id,
//!   questions}`; rejected if the survey is prepared already
//!   (`survey for visit 1001 is already prepared`).
//! - `SubmitSurvey {score, comment?}` (score 1 to 5) → `SurveySubmitted {score, comment?}`;
//!   rejected before the survey is prepared and once it is submitted.

use evhost_sdk::{CommandContext, Handler, Rejection, ensure, reject};
use serde::{Deserialize, Serialize};

/// The handler `survey`.
pub struct SurveyHandler;

/// The questions every survey asks.
pub const QUESTIONS: [&str; 3] = [
    "How well was your pain managed?",
    "How clearly was your care explained to you?",
    "How likely are you to recommend us?",
];

/// A command to a survey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SurveyCommand {
    /// Prepares the survey of a visit that ended.
    PrepareSurvey {
        visit_id: String,
        patient_id: String,
    },
    /// Records the patient's answer.
    SubmitSurvey {
        score: u8,
        #[serde(default)]
        comment: Option<String>,
    },
}

/// An event of a survey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SurveyEvent {
    SurveyPrepared {
        visit_id: String,
        patient_id: String,
        questions: Vec<String>,
    },
    SurveySubmitted {
        score: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
}

/// What the handler remembers of a survey.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyState {
    /// The visit, once prepared.
    pub visit_id: Option<String>,
    pub submitted: bool,
}

impl Handler for SurveyHandler {
    const NAME: &'static str = "survey";
    const CATEGORY: &'static str = "survey";
    const DESCRIPTION: &'static str = "Patient surveys after a visit: prepared, then submitted";
    type State = SurveyState;
    type Command = SurveyCommand;
    type Event = SurveyEvent;

    fn evolve(state: &mut SurveyState, event: SurveyEvent) {
        match event {
            SurveyEvent::SurveyPrepared { visit_id, .. } => state.visit_id = Some(visit_id),
            SurveyEvent::SurveySubmitted { .. } => state.submitted = true,
        }
    }

    fn decide(
        state: &SurveyState,
        command: SurveyCommand,
        _context: &CommandContext,
    ) -> Result<Vec<SurveyEvent>, Rejection> {
        match command {
            SurveyCommand::PrepareSurvey {
                visit_id,
                patient_id,
            } => {
                if let Some(prepared) = &state.visit_id {
                    reject!("survey for visit {prepared} is already prepared");
                }
                ensure!(
                    !visit_id.trim().is_empty(),
                    "visit_id is empty; expected a value"
                );
                ensure!(
                    !patient_id.trim().is_empty(),
                    "patient_id is empty; expected a value"
                );
                Ok(vec![SurveyEvent::SurveyPrepared {
                    visit_id,
                    patient_id,
                    questions: QUESTIONS.iter().map(|q| (*q).to_owned()).collect(),
                }])
            }
            SurveyCommand::SubmitSurvey { score, comment } => {
                ensure!(state.visit_id.is_some(), "the survey is not prepared");
                ensure!(!state.submitted, "the survey is already submitted");
                ensure!(
                    (1..=5).contains(&score),
                    "score is {score}; expected 1 to 5"
                );
                Ok(vec![SurveyEvent::SurveySubmitted { score, comment }])
            }
        }
    }
}

evhost_sdk::export_handler!(SurveyHandler);

#[cfg(test)]
mod tests {
    use evhost_sdk::{CommandContext, Handler, replay};

    use super::{SurveyCommand, SurveyEvent, SurveyHandler, SurveyState};

    fn decide(state: &SurveyState, command: SurveyCommand) -> Result<Vec<SurveyEvent>, String> {
        SurveyHandler::decide(state, command, &CommandContext::new("c", "survey-1"))
            .map_err(|rejection| rejection.into_reason())
    }

    fn prepare() -> SurveyCommand {
        SurveyCommand::PrepareSurvey {
            visit_id: "1".into(),
            patient_id: "p-1".into(),
        }
    }

    #[test]
    fn a_survey_is_prepared_once_then_submitted_once() {
        let prepared = decide(&SurveyState::default(), prepare()).unwrap();
        assert!(
            matches!(&prepared[0], SurveyEvent::SurveyPrepared { questions, .. } if questions.len() == 3)
        );
        let state = replay::<SurveyHandler>(prepared.clone());
        assert_eq!(
            decide(&state, prepare()).unwrap_err(),
            "survey for visit 1 is already prepared"
        );
        let submit = SurveyCommand::SubmitSurvey {
            score: 5,
            comment: None,
        };
        let submitted = decide(&state, submit.clone()).unwrap();
        let state = replay::<SurveyHandler>(prepared.into_iter().chain(submitted));
        assert_eq!(
            decide(&state, submit).unwrap_err(),
            "the survey is already submitted"
        );
    }

    #[test]
    fn rejects_what_does_not_fit() {
        let submit = SurveyCommand::SubmitSurvey {
            score: 9,
            comment: None,
        };
        assert_eq!(
            decide(&SurveyState::default(), submit.clone()).unwrap_err(),
            "the survey is not prepared"
        );
        let state = replay::<SurveyHandler>(decide(&SurveyState::default(), prepare()).unwrap());
        assert_eq!(
            decide(&state, submit).unwrap_err(),
            "score is 9; expected 1 to 5"
        );
        let blank = SurveyCommand::PrepareSurvey {
            visit_id: " ".into(),
            patient_id: "p".into(),
        };
        assert_eq!(
            decide(&SurveyState::default(), blank).unwrap_err(),
            "visit_id is empty; expected a value"
        );
    }
}

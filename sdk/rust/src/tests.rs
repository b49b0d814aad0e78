//! The wire-level paths (`__private::evolve`/`decide`) against small handlers: type matching,
//! unit variants, unknown types, rejections, state round trips and batching.

use serde::{Deserialize, Serialize};

use crate::__private::{decide, evolve};
use crate::{CommandContext, Handler, Rejection, ensure, reject};

/// A tally that ignores event types it does not know.
struct Tally;

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct TallyState {
    total: u64,
    label: Option<String>,
    resets: u32,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "data")]
enum TallyCommand {
    Add { by: u64 },
    Label(Option<String>),
    Reset,
    Refuse,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum TallyEvent {
    Added {
        by: u64,
        total: u64,
    },
    Labelled(Option<String>),
    Reset,
    #[serde(rename = "tally.Noted")]
    Noted {
        note: String,
    },
    #[serde(other)]
    Other,
}

impl Handler for Tally {
    const NAME: &'static str = "tally";
    const CATEGORY: &'static str = "tally";
    type State = TallyState;
    type Command = TallyCommand;
    type Event = TallyEvent;

    fn evolve(state: &mut TallyState, event: TallyEvent) {
        match event {
            TallyEvent::Added { total, .. } => state.total = total,
            TallyEvent::Labelled(label) => state.label = label,
            TallyEvent::Reset => {
                state.total = 0;
                state.resets += 1;
            }
            TallyEvent::Noted { .. } | TallyEvent::Other => {}
        }
    }

    fn decide(
        state: &TallyState,
        command: TallyCommand,
        context: &CommandContext,
    ) -> Result<Vec<TallyEvent>, Rejection> {
        match command {
            TallyCommand::Add { by } => {
                ensure!(by > 0, "by is 0; expected at least 1");
                let total = state.total + by;
                Ok(vec![
                    TallyEvent::Added { by, total },
                    TallyEvent::Noted {
                        note: format!("{} on {}", context.id(), context.entity_id()),
                    },
                ])
            }
            TallyCommand::Label(label) => Ok(vec![TallyEvent::Labelled(label)]),
            TallyCommand::Reset => Ok(vec![TallyEvent::Reset]),
            TallyCommand::Refuse => reject!("refused at total {}", state.total),
        }
    }
}

/// A handler whose event enum has no `#[serde(other)]` variant.
struct Strict;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum StrictEvent {
    Happened { count: u32 },
}

impl Handler for Strict {
    const NAME: &'static str = "strict";
    const CATEGORY: &'static str = "strict";
    type State = u32;
    type Command = StrictEvent;
    type Event = StrictEvent;

    fn evolve(state: &mut u32, event: StrictEvent) {
        let StrictEvent::Happened { count } = event;
        *state += count;
    }

    fn decide(
        _state: &u32,
        command: StrictEvent,
        _context: &CommandContext,
    ) -> Result<Vec<StrictEvent>, Rejection> {
        Ok(vec![command])
    }
}

/// A handler whose events are externally tagged (serde's default), which the SDK cannot use.
struct Untagged;

#[derive(Debug, Serialize, Deserialize)]
enum UntaggedEvent {
    Happened { count: u32 },
}

impl Handler for Untagged {
    const NAME: &'static str = "untagged";
    const CATEGORY: &'static str = "untagged";
    type State = ();
    type Command = StrictEvent;
    type Event = UntaggedEvent;

    fn evolve(_state: &mut (), _event: UntaggedEvent) {}

    fn decide(
        _state: &(),
        _command: StrictEvent,
        _context: &CommandContext,
    ) -> Result<Vec<UntaggedEvent>, Rejection> {
        Ok(vec![UntaggedEvent::Happened { count: 1 }])
    }
}

fn state_of(bytes: &[u8]) -> TallyState {
    serde_json::from_slice(bytes).expect("the state is JSON")
}

fn decide_tally(
    state: Option<&[u8]>,
    command_type: &str,
    data: &str,
) -> Result<Vec<(String, String)>, String> {
    decide::<Tally>(state, "cmd-1", "tally-7", command_type, data, "{}").expect("no plugin failure")
}

fn pairs(events: &[(String, String)]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|(event_type, data)| (event_type.as_str(), data.as_str()))
        .collect()
}

#[test]
fn events_are_matched_by_type_name() {
    let state = evolve::<Tally>(None, [("Added", r#"{"by": 2, "total": 5}"#)]).unwrap();
    assert_eq!(state_of(&state).total, 5);
}

#[test]
fn renamed_variants_use_their_serde_name() {
    let events = decide_tally(None, "Add", r#"{"by": 1}"#).unwrap();
    assert_eq!(events[1].0, "tally.Noted");
    assert_eq!(events[1].1, r#"{"note":"cmd-1 on 7"}"#);
    evolve::<Tally>(None, pairs(&events)).unwrap();
}

#[test]
fn produced_unit_variants_have_null_data() {
    let events = decide_tally(None, "Reset", "null").unwrap();
    assert_eq!(events, [("Reset".to_owned(), "null".to_owned())]);
}

#[test]
fn unit_variants_accept_any_data() {
    for data in ["null", "{}", r#"{"by": "ana"}"#, "[1, 2]", "7"] {
        let state = evolve::<Tally>(None, [("Reset", data)]).unwrap();
        assert_eq!(state_of(&state).resets, 1, "data {data}");
        assert_eq!(decide_tally(None, "Reset", data).unwrap().len(), 1);
    }
}

#[test]
fn a_newtype_option_variant_does_not_swallow_mismatched_data() {
    let state = evolve::<Tally>(None, [("Labelled", r#""north""#)]).unwrap();
    assert_eq!(state_of(&state).label.as_deref(), Some("north"));
    let state = evolve::<Tally>(None, [("Labelled", "null")]).unwrap();
    assert_eq!(state_of(&state).label, None);
    let error = evolve::<Tally>(None, [("Labelled", "42")]).unwrap_err();
    assert!(error.contains("does not match"), "{error}");
}

#[test]
fn unknown_event_types_fall_into_the_other_variant() {
    let state = evolve::<Tally>(
        None,
        [
            ("Added", r#"{"by": 3, "total": 3}"#),
            ("SomethingElse", r#"{"any": ["data"]}"#),
            ("Another", "null"),
        ],
    )
    .unwrap();
    assert_eq!(state_of(&state).total, 3);
}

#[test]
fn unknown_event_types_fail_without_an_other_variant() {
    let error =
        evolve::<Strict>(None, [("Happened", r#"{"count": 1}"#), ("Gone", "{}")]).unwrap_err();
    assert_eq!(
        error,
        "handler strict: event 1 of the batch has the unknown type Gone; expected one of \
         Happened (add a #[serde(other)] unit variant to ignore other types)"
    );
}

#[test]
fn mismatched_event_data_fails() {
    let error = evolve::<Strict>(None, [("Happened", r#"{"count": "one"}"#)]).unwrap_err();
    assert!(
        error.starts_with("handler strict: event 0 of the batch, of type Happened, does not match: invalid type: string \"one\", expected u32"),
        "{error}"
    );
    let error = evolve::<Strict>(None, [("Happened", "{}")]).unwrap_err();
    assert!(error.contains("missing field `count`"), "{error}");
}

#[test]
fn type_names_need_no_escaping() {
    let error = evolve::<Strict>(None, [(r#"Hap"pened"#, "{}")]).unwrap_err();
    assert!(error.contains(r#"unknown type Hap"pened"#), "{error}");
}

#[test]
fn unknown_command_types_are_rejected() {
    let reason = decide_tally(None, "Multiply", r#"{"by": 2}"#).unwrap_err();
    assert_eq!(
        reason,
        "unknown command type Multiply; expected one of Add, Label, Reset, Refuse"
    );
}

#[test]
fn mismatched_command_data_is_rejected() {
    let reason = decide_tally(None, "Add", r#"{"step": 2}"#).unwrap_err();
    assert!(
        reason.starts_with("Add data does not match: missing field `by`"),
        "{reason}"
    );
    let reason = decide_tally(None, "Add", "not json").unwrap_err();
    assert!(reason.starts_with("Add data does not match: "), "{reason}");
}

#[test]
fn rejections_carry_the_handlers_reason() {
    let state = evolve::<Tally>(None, [("Added", r#"{"by": 4, "total": 4}"#)]).unwrap();
    assert_eq!(
        decide_tally(Some(&state), "Refuse", "null"),
        Err("refused at total 4".to_owned())
    );
    assert_eq!(
        decide_tally(Some(&state), "Add", r#"{"by": 0}"#),
        Err("by is 0; expected at least 1".to_owned())
    );
}

#[test]
fn decided_events_fold_into_the_next_state() {
    let mut state: Option<Vec<u8>> = None;
    for expected in 1..=3 {
        let events = decide_tally(state.as_deref(), "Add", r#"{"by": 1}"#).unwrap();
        assert_eq!(events[0].1, format!(r#"{{"by":1,"total":{expected}}}"#));
        state = Some(evolve::<Tally>(state.as_deref(), pairs(&events)).unwrap());
    }
    assert_eq!(state_of(state.as_deref().unwrap()).total, 3);
}

#[test]
fn state_round_trips_and_batches_fold_like_single_events() {
    let events = [
        ("Added", r#"{"by": 2, "total": 2}"#),
        ("Labelled", r#""x""#),
        ("Reset", "null"),
        ("Added", r#"{"by": 5, "total": 5}"#),
        ("Unknown", "{}"),
    ];
    let at_once = evolve::<Tally>(None, events).unwrap();
    let mut one_by_one: Option<Vec<u8>> = None;
    for event in events {
        one_by_one = Some(evolve::<Tally>(one_by_one.as_deref(), [event]).unwrap());
    }
    assert_eq!(one_by_one.as_deref(), Some(at_once.as_slice()));
    assert_eq!(
        state_of(&at_once),
        TallyState {
            total: 5,
            label: Some("x".to_owned()),
            resets: 1
        }
    );
}

#[test]
fn an_empty_batch_from_no_state_gives_the_default_state() {
    let state = evolve::<Tally>(None, []).unwrap();
    assert_eq!(state_of(&state), TallyState::default());
}

#[test]
fn undecodable_state_is_a_plugin_failure() {
    let error = evolve::<Tally>(Some(b"\x00garbage"), []).unwrap_err();
    assert!(
        error.starts_with("handler tally: the stream's state (8 bytes) cannot be decoded"),
        "{error}"
    );
    let error = decide::<Tally>(Some(b"[]"), "c", "tally-1", "Reset", "null", "{}").unwrap_err();
    assert!(error.contains("cannot be decoded"), "{error}");
}

#[test]
fn events_that_are_not_adjacently_tagged_are_a_plugin_failure() {
    let error = decide::<Untagged>(None, "c", "untagged-1", "Happened", r#"{"count": 1}"#, "{}")
        .unwrap_err();
    assert!(
        error.contains(r#"#[serde(tag = "type", content = "data")]"#),
        "{error}"
    );
}

#[test]
fn event_types_outside_the_hosts_alphabet_are_a_plugin_failure() {
    #[derive(Serialize)]
    #[serde(tag = "type", content = "data")]
    enum Bad {
        #[serde(rename = "has space")]
        HasSpace,
    }
    let error = crate::codec::encode(&Bad::HasSpace).unwrap_err();
    assert!(error.contains("\"has space\""), "{error}");
}

#[test]
fn metadata_decodes_into_a_type_or_rejects() {
    #[derive(Debug, Deserialize)]
    struct Who {
        user: String,
    }
    let context =
        CommandContext::new("c", "visit-42").with_metadata(&serde_json::json!({"user": "ana"}));
    assert_eq!(context.metadata::<Who>().unwrap().user, "ana");
    assert_eq!(context.entity_id(), "42");
    let rejection = CommandContext::new("c", "visit")
        .metadata::<Who>()
        .unwrap_err();
    assert!(
        rejection
            .reason()
            .starts_with("command metadata does not match: missing field `user`"),
        "{rejection}"
    );
    assert_eq!(CommandContext::new("c", "visit").entity_id(), "");
}

#[test]
fn rejections_convert_from_strings() {
    let from_str: Rejection = "no".into();
    let from_string: Rejection = String::from("no").into();
    assert_eq!(from_str, from_string);
    assert_eq!(from_str.to_string(), "no");
    assert_eq!(Rejection::new("no").into_reason(), "no");
}

#[test]
fn replay_folds_typed_events() {
    let state = crate::replay::<Tally>([
        TallyEvent::Added { by: 1, total: 1 },
        TallyEvent::Reset,
        TallyEvent::Added { by: 2, total: 2 },
    ]);
    assert_eq!(state.total, 2);
    assert_eq!(state.resets, 1);
}

#[test]
fn names_and_categories_are_checked() {
    crate::__private::check_names("visit", "visit");
    crate::__private::check_names("hospital-visit-2", "Patient_Visit.v2");
    for (name, category) in [
        ("", "visit"),
        ("Visit", "visit"),
        ("2visit", "visit"),
        ("visit_x", "visit"),
        ("visit", "patient-visit"),
        ("visit", ""),
        ("visit", "vi\nsit"),
        ("visit", "vi\u{85}sit"),
    ] {
        let result = std::panic::catch_unwind(|| crate::__private::check_names(name, category));
        assert!(result.is_err(), "{name:?} / {category:?} should be refused");
    }
    let long = "a".repeat(65);
    assert!(std::panic::catch_unwind(|| crate::__private::check_names(&long, "visit")).is_err());
    let long = "a".repeat(129);
    assert!(std::panic::catch_unwind(|| crate::__private::check_names("visit", &long)).is_err());
    crate::__private::check_names("visit", &long[1..]);
}

/// A projection and a policy, run through the wire paths by the native harness.
mod subscribers {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use crate::testing::{self, EventRecord, MemoryState};
    use crate::{Action, Envelope, Failure, Params, Policy, Projection, State, StateView};

    struct Rooms;

    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum RoomEvent {
        Entered { room: String },
        Left { room: String },
    }

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Room {
        people: Vec<String>,
        since: Option<u64>,
        last_position: u64,
    }

    impl Projection for Rooms {
        const NAME: &'static str = "rooms";
        const CATEGORIES: &'static [&'static str] = &["person"];
        type Event = RoomEvent;

        fn apply(state: &mut State<'_>, event: Envelope<'_, RoomEvent>) -> Result<(), Failure> {
            let person = event.entity_id().to_owned();
            let position = event.position();
            let at = event.recorded_at_ms()?;
            match event.into_event() {
                RoomEvent::Entered { room } => state.update(&room, |r: &mut Room| {
                    r.people.push(person);
                    r.since.get_or_insert(at);
                    r.last_position = position;
                }),
                RoomEvent::Left { room } => state.alter(&room, |r: &mut Option<Room>| {
                    if let Some(entry) = r {
                        entry.people.retain(|p| *p != person);
                        entry.last_position = position;
                        if entry.people.is_empty() {
                            *r = None;
                        }
                    }
                }),
            }
        }

        fn query(
            state: &StateView<'_>,
            path: &str,
            params: &Params<'_>,
        ) -> Result<serde_json::Value, Failure> {
            let limit = params.parse::<u32>("limit")?.unwrap_or(10);
            Ok(json!(state.scan::<Room>(path, None, limit)?))
        }
    }

    #[test]
    fn batches_and_single_events_fold_alike() {
        let records = [
            EventRecord::new(1, "person-ana", "Entered", &json!({"room": "a"})),
            EventRecord::new(2, "person-bo", "Entered", &json!({"room": "a"})),
            EventRecord::new(3, "person-ana", "Left", &json!({"room": "a"})),
            EventRecord::new(4, "person-bo", "Left", &json!({"room": "a"})),
            EventRecord::new(5, "person-bo", "Entered", &json!({"room": "b"})),
        ];
        let mut at_once = MemoryState::new();
        testing::apply::<Rooms>(&mut at_once, &records).unwrap();
        let mut one_by_one = MemoryState::new();
        for record in &records {
            testing::apply::<Rooms>(&mut one_by_one, std::slice::from_ref(record)).unwrap();
        }
        assert_eq!(
            at_once.iter().collect::<Vec<_>>(),
            one_by_one.iter().collect::<Vec<_>>()
        );
        assert_eq!(at_once.write_count(), 2, "a deleted, b written");
        let json_records: Vec<String> = records.iter().map(EventRecord::to_json).collect();
        let mut from_json = MemoryState::new();
        testing::apply_json::<Rooms>(&mut from_json, &json_records).unwrap();
        assert_eq!(from_json, at_once);
        let answer = testing::query::<Rooms>(&at_once, "b", &[("limit", "5")]).unwrap();
        assert_eq!(answer[0][1]["people"], json!(["bo"]));
        assert_eq!(answer[0][1]["since"], json!(1_767_225_605_000_u64));
    }

    #[test]
    fn undecodable_events_fail_the_batch_and_name_the_position() {
        let mut state = MemoryState::new();
        let error = testing::apply::<Rooms>(
            &mut state,
            &[
                EventRecord::new(1, "person-ana", "Entered", &json!({"room": "a"})),
                EventRecord::new(2, "person-ana", "Danced", &json!({})),
            ],
        )
        .unwrap_err();
        assert!(
            error
                .message()
                .starts_with("rooms: the event at position 2 has the unknown type Danced; expected one of Entered, Left"),
            "{error}"
        );
        let error = testing::apply::<Rooms>(
            &mut state,
            &[EventRecord::new(
                3,
                "person-ana",
                "Entered",
                &json!({"hall": "a"}),
            )],
        )
        .unwrap_err();
        assert!(error.message().contains("missing field `room`"), "{error}");
        assert!(state.is_empty());
        let error = testing::apply_json::<Rooms>(&mut state, &["{}"]).unwrap_err();
        assert!(
            error
                .message()
                .starts_with("record 0 of the batch is not an event record"),
            "{error}"
        );
        let error = testing::query::<Rooms>(&state, "a", &[("limit", "many")]).unwrap_err();
        assert!(
            error.message().starts_with("parameter limit is \"many\""),
            "{error}"
        );
    }

    #[test]
    fn envelopes_carry_the_record() {
        struct Probe;
        impl Projection for Probe {
            const NAME: &'static str = "probe";
            type Event = serde::de::IgnoredAny;
            fn apply(
                state: &mut State<'_>,
                event: Envelope<'_, Self::Event>,
            ) -> Result<(), Failure> {
                state.put(
                    "probe",
                    json!({
                        "position": event.position(), "stream": event.stream(),
                        "category": event.category(), "entity": event.entity_id(),
                        "version": event.version(), "id": event.id(), "type": event.event_type(),
                        "data": event.data_json(), "at": event.recorded_at(),
                        "ms": event.recorded_at_ms()?, "correlation": event.correlation_id(),
                        "causation": event.causation_id(),
                    }),
                );
                Ok(())
            }
        }
        let mut state = MemoryState::new();
        let record = EventRecord::new(7, "visit-4-2", "Seen", &json!({"x": 1}))
            .version(3)
            .id("e-7")
            .recorded_at("2026-11-23T19:35:53.123456Z")
            .metadata(&json!({"correlation_id": "c-1", "causation-id": "cmd-9"}));
        testing::apply::<Probe>(&mut state, &[record]).unwrap();
        assert_eq!(
            state.get_as::<serde_json::Value>("probe").unwrap().unwrap(),
            json!({
                "position": 7, "stream": "visit-4-2", "category": "visit", "entity": "4-2",
                "version": 3, "id": "e-7", "type": "Seen", "data": r#"{"x":1}"#,
                "at": "2026-11-23T19:35:53.123456Z", "ms": 1_795_462_553_123_u64,
                "correlation": "c-1", "causation": "cmd-9",
            })
        );
    }

    struct Echo;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum EchoCommand {
        Say { text: String },
    }

    impl Policy for Echo {
        const NAME: &'static str = "echo";
        type Event = serde::de::IgnoredAny;

        fn react(
            state: &mut State<'_>,
            event: Envelope<'_, Self::Event>,
        ) -> Result<Vec<Action>, Failure> {
            state.update("reacted", |n: &mut u32| *n += 1)?;
            Ok(vec![
                Action::send(
                    "echo",
                    event.stream(),
                    &EchoCommand::Say {
                        text: event.event_type().into(),
                    },
                )?,
                Action::cancel_timer("t"),
            ])
        }

        fn on_rejected(
            state: &mut State<'_>,
            command: crate::RejectedCommand<'_>,
            reason: &str,
        ) -> Result<Vec<Action>, Failure> {
            let EchoCommand::Say { text } = command.decode()?;
            state.put("rejected", format!("{text}: {reason}"));
            Err(Failure::new("and then it failed"))
        }
    }

    #[test]
    fn policies_act_and_keep_writes_only_when_they_succeed() {
        let mut state = MemoryState::new();
        let actions = testing::react::<Echo>(
            &mut state,
            &EventRecord::new(1, "echo-1", "Hi", &json!(null)),
        )
        .unwrap();
        assert_eq!(actions[1], Action::CancelTimer("t".into()));
        let Action::Send(command) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(
            (command.command_type.as_str(), command.data.as_str()),
            ("Say", r#"{"text":"Hi"}"#)
        );
        let failure = testing::reject::<Echo>(&mut state, command, "no").unwrap_err();
        assert_eq!(failure.message(), "and then it failed");
        assert_eq!(state.get("rejected"), None);
        assert_eq!(state.get("reacted"), Some("1"));
        // The default on_timer takes no action.
        let timer = crate::ScheduleTimer {
            key: "t".into(),
            due_ms: 0,
            payload: "null".into(),
        };
        assert_eq!(testing::fire::<Echo>(&mut state, &timer).unwrap(), []);
    }

    #[test]
    fn subscriber_names_are_checked() {
        crate::__private::check_subscriber(
            "visits",
            &["visit", "patient"],
            &["PatientCheckedIn", "a.b:c-d_e"],
        );
        for (name, categories, types) in [
            ("Visits", &["visit"][..], &[][..]),
            ("visits", &["vi-sit"][..], &[][..]),
            ("visits", &[][..], &["Checked In"][..]),
            ("visits", &[][..], &[""][..]),
        ] {
            let result = std::panic::catch_unwind(|| {
                crate::__private::check_subscriber(name, categories, types)
            });
            assert!(result.is_err(), "{name:?} {categories:?} {types:?}");
        }
    }
}

//! Policies (process managers): react to events, timers and rejected commands with
//! [`Action`]s. [`Policy`] is what an author implements; [`react`], [`on_timer`] and
//! [`on_rejected`] are the wire-level paths that the component's exports and the native
//! harness ([`testing`](crate::testing)) both run.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, DecodeError};
use crate::envelope::WireEvent;
use crate::state::{Backend, State};
use crate::{Envelope, Failure};

/// A policy: reacts to the events it subscribes to, to its timers and to the rejections of the
/// commands it sent, with actions (commands to send, timers to set or cancel) and writes to its
/// key-value state.
///
/// The host feeds it the events of its [`CATEGORIES`](Policy::CATEGORIES) and
/// [`EVENT_TYPES`](Policy::EVENT_TYPES) in position order, one [`react`](Policy::react) call
/// each. The state writes and the actions of a call are committed together with the policy's
/// checkpoint, and each command is then delivered until it has an outcome; its id is derived
/// from what the policy reacted to, so it is executed at most once. A failure takes no action
/// and writes nothing: the host retries, then parks the event for an operator.
///
/// Time inside a plugin is frozen: take it from events ([`Envelope::recorded_at_ms`]) and carry
/// it in timer payloads. Export a policy with [`export_policy!`](crate::export_policy).
///
/// # Example
///
/// ```
/// use evhost_sdk::{Action, Envelope, Failure, Policy, RejectedCommand, State, Timer, log};
/// use evhost_sdk::testing::{self, EventRecord, MemoryState};
/// use serde::{Deserialize, Serialize};
///
/// /// Reminds members of books they keep for more than two weeks.
/// pub struct Reminders;
///
/// #[derive(Deserialize)]
/// #[serde(tag = "type", content = "data")]
/// pub enum BookEvent {
///     Lent { member: String },
///     Returned,
///     #[serde(other)]
///     Other,
/// }
///
/// /// A command of the `member` handler.
/// #[derive(Serialize)]
/// #[serde(tag = "type", content = "data")]
/// pub enum MemberCommand {
///     Remind { book: String },
/// }
///
/// #[derive(Serialize, Deserialize)]
/// struct Due { member: String }
///
/// const TWO_WEEKS_MS: u64 = 14 * 24 * 3600 * 1000;
///
/// impl Policy for Reminders {
///     const NAME: &'static str = "reminders";
///     const CATEGORIES: &'static [&'static str] = &["book"];
///     type Event = BookEvent;
///
///     fn react(state: &mut State<'_>, event: Envelope<'_, BookEvent>) -> Result<Vec<Action>, Failure> {
///         let timer = format!("due/{}", event.entity_id());
///         let due_ms = event.recorded_at_ms()? + TWO_WEEKS_MS;
///         state.update("lendings", |count: &mut u64| *count += 1)?;
///         match event.into_event() {
///             BookEvent::Lent { member } => Ok(vec![Action::schedule(timer, due_ms, &Due { member })?]),
///             BookEvent::Returned => Ok(vec![Action::cancel_timer(timer)]),
///             BookEvent::Other => Ok(Vec::new()),
///         }
///     }
///
///     fn on_timer(_state: &mut State<'_>, timer: Timer<'_>) -> Result<Vec<Action>, Failure> {
///         let Due { member } = timer.payload()?;
///         let book = timer.key().trim_start_matches("due/").to_owned();
///         Ok(vec![Action::send("member", format!("member-{member}"), &MemberCommand::Remind { book })?])
///     }
///
///     fn on_rejected(_state: &mut State<'_>, command: RejectedCommand<'_>, reason: &str) -> Result<Vec<Action>, Failure> {
///         log::warn(&format!("{} on {} was rejected: {reason}", command.command_type(), command.stream_id()));
///         Ok(Vec::new())
///     }
/// }
///
/// evhost_sdk::export_policy!(Reminders);
///
/// // Natively, through the same paths as the component's exports:
/// let mut state = MemoryState::new();
/// let lent = EventRecord::new(1, "book-7", "Lent", &serde_json::json!({"member": "ana"}))
///     .recorded_at("2026-11-01T10:00:00.000000Z");
/// let actions = testing::react::<Reminders>(&mut state, &lent)?;
/// let Action::Schedule(timer) = &actions[0] else { panic!("expected a timer") };
/// assert_eq!(timer.key, "due/7");
///
/// let actions = testing::fire::<Reminders>(&mut state, timer)?;
/// assert_eq!(actions, [Action::send("member", "member-ana", &MemberCommand::Remind { book: "7".into() })?]);
/// let Action::Send(reminder) = &actions[0] else { unreachable!() };
/// assert!(testing::reject::<Reminders>(&mut state, reminder, "member left").unwrap().is_empty());
/// assert_eq!(state.get("lendings"), Some("1"));
/// # Ok::<(), Failure>(())
/// ```
pub trait Policy {
    /// The plugin's name, unique in the host: 1 to 64 characters from `[a-z0-9-]`, starting with
    /// a letter. Checked at compile time by [`export_policy!`](crate::export_policy).
    const NAME: &'static str;

    /// One line for operators: what the policy is for.
    const DESCRIPTION: &'static str = "";

    /// The categories of streams whose events it receives; empty means every category.
    const CATEGORIES: &'static [&'static str] = &[];

    /// The event types it receives; empty means every type.
    const EVENT_TYPES: &'static [&'static str] = &[];

    /// The events, an enum tagged with `#[serde(tag = "type", content = "data")]` and matched by
    /// type name; give it a `#[serde(other)]` unit variant to accept types it does not name.
    type Event: DeserializeOwned;

    /// Reacts to one event: the actions to take, in order.
    fn react(
        state: &mut State<'_>,
        event: Envelope<'_, Self::Event>,
    ) -> Result<Vec<Action>, Failure>;

    /// Reacts to a timer of this policy that is due. It fires once, also when it fell due while
    /// the host was down. By default: no actions.
    fn on_timer(state: &mut State<'_>, timer: Timer<'_>) -> Result<Vec<Action>, Failure> {
        let _ = state;
        crate::log::warn(&format!(
            "policy {} has no on_timer; timer {} ignored",
            Self::NAME,
            timer.key()
        ));
        Ok(Vec::new())
    }

    /// Reacts to a command this policy sent that its handler rejected, to compensate. By
    /// default the rejection is logged as a warning and nothing else happens.
    fn on_rejected(
        state: &mut State<'_>,
        command: RejectedCommand<'_>,
        reason: &str,
    ) -> Result<Vec<Action>, Failure> {
        let _ = state;
        crate::log::warn(&format!(
            "policy {}: {} on {} was rejected: {reason}",
            Self::NAME,
            command.command_type(),
            command.stream_id()
        ));
        Ok(Vec::new())
    }
}

/// What a policy asks the host to do. Build one with [`Action::send`], [`Action::schedule`] or
/// [`Action::cancel_timer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a command to a handler.
    Send(SendCommand),
    /// Set (or move) a timer.
    Schedule(ScheduleTimer),
    /// Cancel the timer with this key, if it is set.
    CancelTimer(String),
}

/// A command a policy sends: its handler, stream, type and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendCommand {
    /// The handler's name (`visit`).
    pub handler: String,
    /// The stream the command is about (`visit-42`).
    pub stream_id: String,
    /// The command type (`FlagOverdue`).
    pub command_type: String,
    /// The command's data: JSON text.
    pub data: String,
}

/// A timer a policy sets: `on_timer` gets its key and payload once it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleTimer {
    /// The timer's key within the policy: setting a key again moves the timer.
    pub key: String,
    /// When it is due: milliseconds since the Unix epoch.
    pub due_ms: u64,
    /// The payload handed back to `on_timer`: JSON text.
    pub payload: String,
}

impl Action {
    /// Sends `command`, a variant of an enum tagged `#[serde(tag = "type", content = "data")]`
    /// like a handler's commands, to the handler `handler` about the stream `stream_id`: the
    /// variant's name is the command type, its fields the data.
    pub fn send<C: Serialize>(
        handler: impl Into<String>,
        stream_id: impl Into<String>,
        command: &C,
    ) -> Result<Action, Failure> {
        let (command_type, data) = codec::encode(command)
            .map_err(|error| Failure::new(format!("cannot encode a command: {error}")))?;
        Ok(Action::Send(SendCommand {
            handler: handler.into(),
            stream_id: stream_id.into(),
            command_type,
            data,
        }))
    }

    /// Sets the timer `key` to fire at `due_ms` (milliseconds since the Unix epoch) with
    /// `payload` (serialized to JSON); setting a key that is set moves it.
    pub fn schedule<T: Serialize>(
        key: impl Into<String>,
        due_ms: u64,
        payload: &T,
    ) -> Result<Action, Failure> {
        let key = key.into();
        let payload = serde_json::to_string(payload).map_err(|error| {
            Failure::new(format!("cannot encode the payload of timer {key}: {error}"))
        })?;
        Ok(Action::Schedule(ScheduleTimer {
            key,
            due_ms,
            payload,
        }))
    }

    /// Cancels the timer `key`, if it is set.
    pub fn cancel_timer(key: impl Into<String>) -> Action {
        Action::CancelTimer(key.into())
    }
}

/// A timer that is due, handed to [`Policy::on_timer`].
#[derive(Debug, Clone, Copy)]
pub struct Timer<'a> {
    key: &'a str,
    payload: &'a str,
}

impl<'a> Timer<'a> {
    /// A due timer with this key and payload (JSON text): for tests.
    pub fn new(key: &'a str, payload: &'a str) -> Self {
        Timer { key, payload }
    }

    /// The key it was set with.
    pub fn key(&self) -> &'a str {
        self.key
    }

    /// The payload it was set with, decoded into `T`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_str(self.payload).map_err(|error| {
            Failure::new(format!(
                "the payload of timer {} does not match: {error}",
                self.key
            ))
        })
    }

    /// The payload as JSON text.
    pub fn payload_json(&self) -> &'a str {
        self.payload
    }
}

/// A command this policy sent that its handler rejected, as it was delivered.
#[derive(Debug, Clone, Copy)]
pub struct RejectedCommand<'a> {
    id: &'a str,
    stream_id: &'a str,
    command_type: &'a str,
    data: &'a str,
    metadata: &'a str,
}

impl<'a> RejectedCommand<'a> {
    /// A rejected command from its parts (`data` and `metadata` as JSON text): for tests.
    pub fn new(
        id: &'a str,
        stream_id: &'a str,
        command_type: &'a str,
        data: &'a str,
        metadata: &'a str,
    ) -> Self {
        RejectedCommand {
            id,
            stream_id,
            command_type,
            data,
            metadata,
        }
    }

    /// The command's id (the host derives it from what the policy reacted to).
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The stream the command was about.
    pub fn stream_id(&self) -> &'a str {
        self.stream_id
    }

    /// The part of the stream's name after its category and the first `-`.
    pub fn entity_id(&self) -> &'a str {
        self.stream_id
            .split_once('-')
            .map_or("", |(_, entity)| entity)
    }

    /// The command type.
    pub fn command_type(&self) -> &'a str {
        self.command_type
    }

    /// The command's data as JSON text.
    pub fn data_json(&self) -> &'a str {
        self.data
    }

    /// The command's metadata as JSON text.
    pub fn metadata_json(&self) -> &'a str {
        self.metadata
    }

    /// The command decoded into `C`, an enum tagged `#[serde(tag = "type", content = "data")]`
    /// (the one the policy sent it as, with `Deserialize`): matched by type name, as events are.
    pub fn decode<C: DeserializeOwned>(&self) -> Result<C, Failure> {
        codec::decode(self.command_type, self.data).map_err(|error| {
            let why = match error {
                DecodeError::UnknownType { .. } => "is not one of the enum's",
                DecodeError::Mismatch(_) => "has data that does not match",
            };
            Failure::new(format!(
                "the rejected command {} of type {} {why}: {error}",
                self.id, self.command_type
            ))
        })
    }
}

/// Reacts to one event with the policy's state in `backend`; the writes reach the backend only
/// if the call ends well.
pub(crate) fn react<P: Policy>(
    backend: &mut dyn Backend,
    event: WireEvent<'_>,
) -> Result<Vec<Action>, String> {
    let envelope = event.decode::<P::Event>(P::NAME)?;
    run::<P>(backend, |state| P::react(state, envelope))
}

/// Reacts to the due timer `key` with its `payload`.
pub(crate) fn on_timer<P: Policy>(
    backend: &mut dyn Backend,
    key: &str,
    payload: &str,
) -> Result<Vec<Action>, String> {
    run::<P>(backend, |state| {
        P::on_timer(state, Timer::new(key, payload))
    })
}

/// Reacts to the rejection of `command` for `reason`.
pub(crate) fn on_rejected<P: Policy>(
    backend: &mut dyn Backend,
    command: RejectedCommand<'_>,
    reason: &str,
) -> Result<Vec<Action>, String> {
    run::<P>(backend, |state| P::on_rejected(state, command, reason))
}

fn run<P: Policy>(
    backend: &mut dyn Backend,
    call: impl FnOnce(&mut State<'_>) -> Result<Vec<Action>, Failure>,
) -> Result<Vec<Action>, String> {
    let mut state = State::new(backend);
    let actions = call(&mut state).map_err(Failure::into_message)?;
    state
        .commit()
        .map_err(|failure| format!("{}: {failure}", P::NAME))?;
    Ok(actions)
}

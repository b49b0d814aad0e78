//! Write evhost plugins in typed Rust and build them as WebAssembly components: command
//! handlers, projections and policies.
//!
//! - A **handler** (a *decider*, [`Handler`]) owns one category of streams (`visit` owns
//!   `visit-42`). For each command sent to one of its streams, the host folds the stream's events
//!   into a state with [`Handler::evolve`], then asks [`Handler::decide`] which events the command
//!   produces, or why it is rejected. Events and commands are Rust enums, the state is any serde
//!   type: the SDK turns them to and from the host's wire form (a type name plus JSON text), and
//!   keeps the state between calls as bytes the host caches.
//! - A **projection** ([`Projection`]) folds the events it subscribes to into a key-value read
//!   model, exactly once per event, and answers queries about it.
//! - A **policy** ([`Policy`]) reacts to events, to its timers and to the rejection of commands
//!   it sent, with [`Action`]s: commands to send, timers to set or cancel.
//!
//! Projections and policies keep typed values in the host's key-value [`State`], through a
//! cache that decodes a value once per batch of events and writes each changed key back once.
//! Everything but the WebAssembly glue compiles natively, so plugins are tested with
//! `cargo test` (see [`testing`]) and benchmarked without WebAssembly.
//!
//! # Example
//!
//! ```
//! use evhost_sdk::{CommandContext, Handler, Rejection, ensure, reject};
//! use serde::{Deserialize, Serialize};
//!
//! /// A library book, lent to one member at a time.
//! pub struct Book;
//!
//! #[derive(Default, Serialize, Deserialize)]
//! pub struct BookState {
//!     borrower: Option<String>,
//! }
//!
//! #[derive(Deserialize)]
//! #[serde(tag = "type", content = "data")]
//! pub enum BookCommand {
//!     Lend { member: String },
//!     Return,
//! }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! #[serde(tag = "type", content = "data")]
//! pub enum BookEvent {
//!     Lent { member: String },
//!     Returned,
//!     /// Any other event type on the stream: ignored.
//!     #[serde(other)]
//!     Other,
//! }
//!
//! impl Handler for Book {
//!     const NAME: &'static str = "book";
//!     const CATEGORY: &'static str = "book";
//!     const DESCRIPTION: &'static str = "Lends library books, one member at a time";
//!     type State = BookState;
//!     type Command = BookCommand;
//!     type Event = BookEvent;
//!
//!     fn evolve(state: &mut BookState, event: BookEvent) {
//!         match event {
//!             BookEvent::Lent { member } => state.borrower = Some(member),
//!             BookEvent::Returned => state.borrower = None,
//!             BookEvent::Other => {}
//!         }
//!     }
//!
//!     fn decide(
//!         state: &BookState,
//!         command: BookCommand,
//!         _context: &CommandContext,
//!     ) -> Result<Vec<BookEvent>, Rejection> {
//!         match command {
//!             BookCommand::Lend { member } => {
//!                 ensure!(!member.trim().is_empty(), "member is empty; expected a member id");
//!                 if let Some(borrower) = &state.borrower {
//!                     reject!("the book is lent to {borrower}");
//!                 }
//!                 Ok(vec![BookEvent::Lent { member }])
//!             }
//!             BookCommand::Return => {
//!                 ensure!(state.borrower.is_some(), "the book is not lent");
//!                 Ok(vec![BookEvent::Returned])
//!             }
//!         }
//!     }
//! }
//!
//! // The component's exports; natively this only checks NAME and CATEGORY at compile time.
//! evhost_sdk::export_handler!(Book);
//!
//! // Handlers are plain Rust: test them natively.
//! let context = CommandContext::new("command-1", "book-7");
//! let events = Book::decide(&BookState::default(), BookCommand::Lend { member: "ana".into() }, &context)?;
//! assert_eq!(events, [BookEvent::Lent { member: "ana".into() }]);
//!
//! let state = evhost_sdk::replay::<Book>(events);
//! let rejection = Book::decide(&state, BookCommand::Lend { member: "bo".into() }, &context);
//! assert_eq!(rejection, Err(Rejection::new("the book is lent to ana")));
//! # Ok::<(), Rejection>(())
//! ```
//!
//! # Building and deploying
//!
//! A plugin is a library crate of type `cdylib` (add `rlib` if other crates, such as benchmarks,
//! call its handler natively):
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! evhost-sdk = { path = "../evhost/sdk/rust" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! Install the target once with `rustup target add wasm32-wasip2`, then one command builds the
//! component (wit-bindgen and the Rust toolchain produce a component directly, no extra step):
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! It lands in `target/wasm32-wasip2/release/<crate_name>.wasm` (the crate's name with `-` turned
//! into `_`; in a workspace, under the workspace's `target/`). Deploy it to a running host with
//!
//! ```text
//! evhost deploy target/wasm32-wasip2/release/<crate_name>.wasm
//! ```
//!
//! # How commands and events are matched
//!
//! Commands and events are enums tagged adjacently with `type` and `data`
//! (`#[serde(tag = "type", content = "data")]`): the variant's name (or its `#[serde(rename)]`)
//! is the command or event type, its fields are the data. So the event
//! `PatientCheckedIn {"patient_id": "p-1"}` is the variant `PatientCheckedIn { patient_id }`.
//!
//! - A unit variant has the data `null` when the handler produces it, and accepts any data when
//!   it is decoded.
//! - An event whose type is not a variant of the enum is a plugin failure (the stream cannot be
//!   folded), unless the enum has a `#[serde(other)]` unit variant: such events decode into it,
//!   and an `evolve` that does nothing for it ignores them.
//! - A command whose type is not a variant is rejected ("unknown command type X; expected one
//!   of ..."), and so is a command whose data does not fit its variant ("CheckIn data does not
//!   match: missing field `room` ...").
//! - Event types must be 1 to 128 characters from `[A-Za-z0-9_.:-]`.
//!
//! # State
//!
//! The host keeps each stream's state between calls, as the bytes of the state serialized to
//! JSON; a stream without events starts from `State::default()`. The state is decoded once and
//! encoded once per batch of events, so keep it to what `decide` needs.
//!
//! # Projections and policies
//!
//! They are matched to events as handlers are (an event enum tagged with `type` and `data`),
//! subscribe with `CATEGORIES` and `EVENT_TYPES`, and are exported with
//! [`export_projection!`] and [`export_policy!`]. [`Projection`] and [`Policy`] have complete
//! examples; [`testing`] runs them natively. An [`Envelope`] carries each event with its
//! position, stream, version, id, metadata and time ([`Envelope::recorded_at_ms`] for timers);
//! [`time`] converts timestamps.
//!
//! A projection's or a policy's error is a [`Failure`]: the host retries, then pauses the
//! projection at the event (or parks the policy's event) for an operator.
//!
//! # Failures
//!
//! A rejection ([`Rejection`], [`reject!`], [`ensure!`]) is an expected outcome: nothing is
//! appended and the reason goes back to the caller. A panic in `evolve` or `decide`, or a state
//! that cannot be decoded, is a failure of the plugin: the host reports it as such and appends
//! nothing. Write log lines with [`log`].

mod codec;
mod context;
mod envelope;
mod failure;
#[cfg(target_arch = "wasm32")]
mod guest;
pub mod log;
mod policy;
mod projection;
mod rejection;
mod state;
pub mod testing;
pub mod time;
mod wire;

#[cfg(test)]
mod tests;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use context::CommandContext;
pub use envelope::{Envelope, Params};
pub use failure::Failure;
pub use policy::{Action, Policy, RejectedCommand, ScheduleTimer, SendCommand, Timer};
pub use projection::Projection;
pub use rejection::Rejection;
pub use state::{State, StateView};

/// A command handler (a decider): the events a command produces on a stream of its category,
/// given the state folded from the stream's events so far.
///
/// Export it from the plugin's crate with [`export_handler!`].
pub trait Handler {
    /// The plugin's name, unique in the host: 1 to 64 characters from `[a-z0-9-]`, starting with
    /// a letter. Checked at compile time by [`export_handler!`].
    const NAME: &'static str;

    /// The category of streams it owns: `visit` owns `visit-42`. 1 to 128 bytes without control
    /// characters or `-` (which ends the category in a stream's name). Checked at compile time by
    /// [`export_handler!`].
    const CATEGORY: &'static str;

    /// One line for operators: what the handler is for.
    const DESCRIPTION: &'static str = "";

    /// What `decide` needs to know about a stream, folded from its events; a stream without
    /// events has the default state.
    type State: Default + Serialize + DeserializeOwned;

    /// The commands, an enum tagged with `#[serde(tag = "type", content = "data")]`.
    type Command: DeserializeOwned;

    /// The events, an enum tagged with `#[serde(tag = "type", content = "data")]`; a variant's
    /// name is the event type.
    type Event: Serialize + DeserializeOwned;

    /// Applies one event to the state. It cannot fail: events are facts.
    fn evolve(state: &mut Self::State, event: Self::Event);

    /// Decides `command` against the stream's state: the events to append, in order and
    /// atomically (possibly none), or a rejection whose reason is shown to the caller.
    fn decide(
        state: &Self::State,
        command: Self::Command,
        context: &CommandContext,
    ) -> Result<Vec<Self::Event>, Rejection>;
}

/// The state that `events` fold into from the default state: for tests.
pub fn replay<H: Handler>(events: impl IntoIterator<Item = H::Event>) -> H::State {
    let mut state = H::State::default();
    for event in events {
        H::evolve(&mut state, event);
    }
    state
}

/// Makes the handler type the component's implementation of the `handler` world: `evolve`,
/// `decide` and `describe` (name, kind `handler`, category, description). Invoke it once, in
/// the plugin's crate.
///
/// Natively it only checks at compile time that the type is a [`Handler`] with a valid
/// [`NAME`](Handler::NAME) and [`CATEGORY`](Handler::CATEGORY).
///
/// An invalid name is a compile error:
///
/// ```compile_fail
/// # use evhost_sdk::{CommandContext, Handler, Rejection};
/// struct Shouting;
///
/// impl Handler for Shouting {
///     const NAME: &'static str = "SHOUTING";
///     const CATEGORY: &'static str = "shouting";
///     type State = ();
///     type Command = ();
///     type Event = ();
///     fn evolve(_: &mut (), _: ()) {}
///     fn decide(_: &(), _: (), _: &CommandContext) -> Result<Vec<()>, Rejection> {
///         Ok(Vec::new())
///     }
/// }
///
/// evhost_sdk::export_handler!(Shouting);
/// ```
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        const _: () = $crate::__private::check_names(
            <$handler as $crate::Handler>::NAME,
            <$handler as $crate::Handler>::CATEGORY,
        );

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type EvhostHandlerExports = $crate::__private::Adapter<$handler>;
            $crate::__private::bindings::handler::export!(
                EvhostHandlerExports with_types_in $crate::__private::bindings::handler
            );
        };
    };
}

/// Makes the projection type the component's implementation of the `projection` world:
/// `apply`, `query` and `describe` (name, kind `projection`, categories, event types,
/// description). Invoke it once, in the plugin's crate.
///
/// Natively it only checks at compile time that the type is a [`Projection`] with a valid
/// [`NAME`](Projection::NAME), [`CATEGORIES`](Projection::CATEGORIES) and
/// [`EVENT_TYPES`](Projection::EVENT_TYPES).
///
/// ```compile_fail
/// # use evhost_sdk::{Envelope, Failure, Projection, State};
/// struct Spaced;
///
/// impl Projection for Spaced {
///     const NAME: &'static str = "spaced";
///     const EVENT_TYPES: &'static [&'static str] = &["Checked In"];
///     type Event = serde::de::IgnoredAny;
///     fn apply(_: &mut State<'_>, _: Envelope<'_, Self::Event>) -> Result<(), Failure> {
///         Ok(())
///     }
/// }
///
/// evhost_sdk::export_projection!(Spaced);
/// ```
#[macro_export]
macro_rules! export_projection {
    ($projection:ty) => {
        const _: () = $crate::__private::check_subscriber(
            <$projection as $crate::Projection>::NAME,
            <$projection as $crate::Projection>::CATEGORIES,
            <$projection as $crate::Projection>::EVENT_TYPES,
        );

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type EvhostProjectionExports = $crate::__private::ProjectionAdapter<$projection>;
            $crate::__private::bindings::projection::export!(
                EvhostProjectionExports with_types_in $crate::__private::bindings::projection
            );
        };
    };
}

/// Makes the policy type the component's implementation of the `policy` world: `react`,
/// `on-timer`, `on-rejected` and `describe` (name, kind `policy`, categories, event types,
/// description). Invoke it once, in the plugin's crate.
///
/// Natively it only checks at compile time that the type is a [`Policy`] with a valid
/// [`NAME`](Policy::NAME), [`CATEGORIES`](Policy::CATEGORIES) and
/// [`EVENT_TYPES`](Policy::EVENT_TYPES).
///
/// ```compile_fail
/// # use evhost_sdk::{Action, Envelope, Failure, Policy, State};
/// struct Dashed;
///
/// impl Policy for Dashed {
///     const NAME: &'static str = "dashed";
///     const CATEGORIES: &'static [&'static str] = &["visit-42"];
///     type Event = serde::de::IgnoredAny;
///     fn react(_: &mut State<'_>, _: Envelope<'_, Self::Event>) -> Result<Vec<Action>, Failure> {
///         Ok(Vec::new())
///     }
/// }
///
/// evhost_sdk::export_policy!(Dashed);
/// ```
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = $crate::__private::check_subscriber(
            <$policy as $crate::Policy>::NAME,
            <$policy as $crate::Policy>::CATEGORIES,
            <$policy as $crate::Policy>::EVENT_TYPES,
        );

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type EvhostPolicyExports = $crate::__private::PolicyAdapter<$policy>;
            $crate::__private::bindings::policy::export!(
                EvhostPolicyExports with_types_in $crate::__private::bindings::policy
            );
        };
    };
}

/// What the wasm glue and the [`export_handler!`] macro use; also the way for native code
/// (benchmarks) to run a handler exactly as the host does (projections and policies: see
/// [`testing`]). Not a stable API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::guest::{Adapter, PolicyAdapter, ProjectionAdapter, bindings};
    pub use crate::wire::{check_names, check_subscriber, decide, evolve};
}

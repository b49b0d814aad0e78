//! Write evhost command handlers in typed Rust and build them as WebAssembly components.
//!
//! A handler (a *decider*) owns one category of streams (`visit` owns `visit-42`). For each
//! command sent to one of its streams, the host folds the stream's events into a state with
//! [`Handler::evolve`], then asks [`Handler::decide`] which events the command produces, or why
//! it is rejected. Events and commands are Rust enums, the state is any serde type: the SDK turns
//! them to and from the host's wire form (a type name plus JSON text), and keeps the state
//! between calls as bytes the host caches.
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
//! # Failures
//!
//! A rejection ([`Rejection`], [`reject!`], [`ensure!`]) is an expected outcome: nothing is
//! appended and the reason goes back to the caller. A panic in `evolve` or `decide`, or a state
//! that cannot be decoded, is a failure of the plugin: the host reports it as such and appends
//! nothing. Write log lines with [`log`].

mod codec;
mod context;
#[cfg(target_arch = "wasm32")]
mod guest;
pub mod log;
mod rejection;
mod wire;

#[cfg(test)]
mod tests;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use context::CommandContext;
pub use rejection::Rejection;

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
            $crate::__private::bindings::export!(
                EvhostHandlerExports with_types_in $crate::__private::bindings
            );
        };
    };
}

/// What the wasm glue and the [`export_handler!`] macro use; also the way for native code
/// (benchmarks) to run a handler exactly as the host does. Not a stable API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::guest::{Adapter, bindings};
    pub use crate::wire::{check_names, decide, evolve};
}

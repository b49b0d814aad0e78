//! Projections: read models folded from the log into the key-value state, and the queries that
//! read them. [`Projection`] is what an author implements; [`apply`] and [`query`] are the
//! wire-level paths that the component's exports and the native harness
//! ([`testing`](crate::testing)) both run.

use serde::de::DeserializeOwned;

use crate::envelope::WireEvent;
use crate::state::{Backend, State, StateView};
use crate::{Envelope, Failure, Params};

/// A projection: builds a read model from the events it subscribes to, exactly once per event,
/// and answers queries about it.
///
/// The host feeds it the events of its [`CATEGORIES`](Projection::CATEGORIES) and
/// [`EVENT_TYPES`](Projection::EVENT_TYPES), in position order, from the first on and then live,
/// in batches; the writes of a batch and the projection's checkpoint are committed together.
/// [`apply`](Projection::apply) is called once per event, with a [`State`] that keeps the values
/// it reads decoded for the whole batch (see [`State`]). Export it with
/// [`export_projection!`](crate::export_projection).
///
/// # Example
///
/// ```
/// use evhost_sdk::{Envelope, Failure, Params, Projection, State, StateView};
/// use evhost_sdk::testing::{EventRecord, MemoryState};
/// use serde::{Deserialize, Serialize};
///
/// /// Books currently lent, by member.
/// pub struct Loans;
///
/// #[derive(Deserialize)]
/// #[serde(tag = "type", content = "data")]
/// pub enum BookEvent {
///     Lent { member: String },
///     Returned { member: String },
///     #[serde(other)]
///     Other,
/// }
///
/// #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
/// pub struct Member { books: Vec<String>, since: Option<String> }
///
/// impl Projection for Loans {
///     const NAME: &'static str = "loans";
///     const DESCRIPTION: &'static str = "Books lent, by member";
///     const CATEGORIES: &'static [&'static str] = &["book"];
///     const EVENT_TYPES: &'static [&'static str] = &["Lent", "Returned"];
///     type Event = BookEvent;
///
///     fn apply(state: &mut State<'_>, event: Envelope<'_, BookEvent>) -> Result<(), Failure> {
///         let book = event.entity_id().to_owned();
///         let recorded_at = event.recorded_at().to_owned();
///         match event.into_event() {
///             BookEvent::Lent { member } => {
///                 state.update(&format!("member/{member}"), |m: &mut Member| {
///                     m.books.push(book);
///                     m.since.get_or_insert(recorded_at);
///                 })?;
///             }
///             BookEvent::Returned { member } => {
///                 state.alter(&format!("member/{member}"), |m: &mut Option<Member>| {
///                     if let Some(entry) = m {
///                         entry.books.retain(|b| *b != book);
///                         if entry.books.is_empty() {
///                             *m = None; // removes the key
///                         }
///                     }
///                 })?;
///             }
///             BookEvent::Other => {}
///         }
///         Ok(())
///     }
///
///     fn query(state: &StateView<'_>, path: &str, params: &Params<'_>) -> Result<serde_json::Value, Failure> {
///         match path {
///             "member" => {
///                 let member = params.required("id")?;
///                 let entry: Option<Member> = state.get(&format!("member/{member}"))?;
///                 Ok(serde_json::to_value(entry.unwrap_or_default())?)
///             }
///             "borrowers" => {
///                 let members = state.scan::<Member>("member/", None, 100)?;
///                 let ids: Vec<&str> = members.iter().map(|(key, _)| &key["member/".len()..]).collect();
///                 Ok(serde_json::json!(ids))
///             }
///             _ => Err(Failure::new(format!("unknown query {path}; expected member or borrowers"))),
///         }
///     }
/// }
///
/// evhost_sdk::export_projection!(Loans);
///
/// // Natively: events through the same path as the component's `apply`, in one batch.
/// let mut state = MemoryState::new();
/// evhost_sdk::testing::apply::<Loans>(&mut state, &[
///     EventRecord::new(1, "book-7", "Lent", &serde_json::json!({"member": "ana"})),
///     EventRecord::new(2, "book-9", "Lent", &serde_json::json!({"member": "ana"})),
///     EventRecord::new(3, "book-7", "Returned", &serde_json::json!({"member": "ana"})),
/// ])?;
/// let ana = evhost_sdk::testing::query::<Loans>(&state, "member", &[("id", "ana")])?;
/// assert_eq!(ana["books"], serde_json::json!(["9"]));
/// assert_eq!(state.len(), 1); // one key, written once for the whole batch
/// # Ok::<(), Failure>(())
/// ```
pub trait Projection {
    /// The plugin's name, unique in the host: 1 to 64 characters from `[a-z0-9-]`, starting with
    /// a letter. Checked at compile time by [`export_projection!`](crate::export_projection).
    const NAME: &'static str;

    /// One line for operators: what the projection is for.
    const DESCRIPTION: &'static str = "";

    /// The categories of streams whose events it receives (`visit` for `visit-42`); empty means
    /// every category.
    const CATEGORIES: &'static [&'static str] = &[];

    /// The event types it receives; empty means every type. Naming them spares the host from
    /// handing over events that the projection would ignore.
    const EVENT_TYPES: &'static [&'static str] = &[];

    /// The events, an enum tagged with `#[serde(tag = "type", content = "data")]` and matched by
    /// type name; give it a `#[serde(other)]` unit variant to accept types it does not name.
    type Event: DeserializeOwned;

    /// Applies one event to the state. A failure applies nothing of the batch; the host then
    /// finds the failing event, retries it with backoff and pauses the projection at it.
    fn apply(state: &mut State<'_>, event: Envelope<'_, Self::Event>) -> Result<(), Failure>;

    /// Answers `GET /projections/{name}/query/{path}?{params}` with JSON, or a failure shown to
    /// the caller (as a 400). The state is read-only here. By default there are no queries
    /// (the keys are still served one by one by the host).
    fn query(
        state: &StateView<'_>,
        path: &str,
        params: &Params<'_>,
    ) -> Result<serde_json::Value, Failure> {
        let _ = (state, params);
        Err(Failure::new(format!(
            "unknown query {path}; projection {} has no queries",
            Self::NAME
        )))
    }
}

/// Applies a batch of events to the state in `backend`, through the batch cache: each event
/// decoded into `P::Event` straight from its data, `P::apply` once per event, and the written
/// keys handed to the backend once at the end. `Err` (a failure of the projection, or an event
/// it cannot decode) writes nothing.
pub(crate) fn apply<'e, P: Projection>(
    backend: &mut dyn Backend,
    events: impl IntoIterator<Item = WireEvent<'e>>,
) -> Result<(), String> {
    let mut state = State::new(backend);
    for event in events {
        let envelope = event.decode::<P::Event>(P::NAME)?;
        P::apply(&mut state, envelope).map_err(Failure::into_message)?;
    }
    state
        .commit()
        .map_err(|failure| format!("{}: {failure}", P::NAME))
}

/// Answers a query: the JSON text of what `P::query` returns, or its failure's message.
pub(crate) fn query<P: Projection>(
    backend: &dyn Backend,
    path: &str,
    params: &[(String, String)],
) -> Result<String, String> {
    let state = StateView::new(backend);
    let answer = P::query(&state, path, &Params::new(params)).map_err(Failure::into_message)?;
    serde_json::to_string(&answer).map_err(|error| format!("{}: {error}", P::NAME))
}

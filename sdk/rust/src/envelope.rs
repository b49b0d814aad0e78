//! What a projection or a policy gets with each event: [`Envelope`], the typed event with where
//! and when it was recorded; and [`Params`], a query's parameters.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Failure;
use crate::codec::{self, DecodeError};

/// An event as the host hands it over, every field borrowed from the host's record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WireEvent<'a> {
    pub(crate) position: u64,
    pub(crate) stream: &'a str,
    pub(crate) version: u64,
    pub(crate) id: &'a str,
    pub(crate) event_type: &'a str,
    pub(crate) data: &'a str,
    pub(crate) metadata: &'a str,
    pub(crate) recorded_at: &'a str,
}

impl<'a> WireEvent<'a> {
    /// Decodes the event into the plugin's event enum, by its type name; `plugin` names the
    /// plugin in the failure.
    pub(crate) fn decode<E: DeserializeOwned>(
        self,
        plugin: &str,
    ) -> Result<Envelope<'a, E>, String> {
        let event =
            codec::decode::<E>(self.event_type, self.data).map_err(|error| match error {
                DecodeError::UnknownType { .. } => format!(
                    "{plugin}: the event at position {} has the unknown type {}; {error} (add a \
                 #[serde(other)] unit variant to ignore other types)",
                    self.position, self.event_type
                ),
                DecodeError::Mismatch(_) => format!(
                    "{plugin}: the event at position {}, of type {}, does not match: {error}",
                    self.position, self.event_type
                ),
            })?;
        Ok(Envelope {
            position: self.position,
            stream: self.stream,
            version: self.version,
            id: self.id,
            event_type: self.event_type,
            data: self.data,
            metadata: self.metadata,
            recorded_at: self.recorded_at,
            event,
        })
    }
}

/// A recorded event, typed: the event (a variant of the plugin's event enum) with its position,
/// stream, version, id, metadata and the time it was recorded.
#[derive(Debug, Clone)]
pub struct Envelope<'a, E> {
    position: u64,
    stream: &'a str,
    version: u64,
    id: &'a str,
    event_type: &'a str,
    data: &'a str,
    metadata: &'a str,
    recorded_at: &'a str,
    event: E,
}

impl<'a, E> Envelope<'a, E> {
    /// Position in the global log: 1-based, gapless, increasing.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The stream's name (`visit-42`).
    pub fn stream(&self) -> &'a str {
        self.stream
    }

    /// The stream's category: its name up to the first `-` (`visit` for `visit-42`).
    pub fn category(&self) -> &'a str {
        self.stream
            .split_once('-')
            .map_or(self.stream, |(category, _)| category)
    }

    /// The part of the stream's name after its category and the first `-` (`42` for
    /// `visit-42`); empty if the name has no `-`.
    pub fn entity_id(&self) -> &'a str {
        self.stream.split_once('-').map_or("", |(_, entity)| entity)
    }

    /// Version within the stream: 1-based and contiguous.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The event's id, unique in the store.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The event's type name, as recorded (also for events that decoded into a
    /// `#[serde(other)]` variant).
    pub fn event_type(&self) -> &'a str {
        self.event_type
    }

    /// The event's data as JSON text, as recorded (the typed event is [`event`](Envelope::event)).
    pub fn data_json(&self) -> &'a str {
        self.data
    }

    /// When the event was recorded: RFC 3339 in UTC with microseconds
    /// (`2026-11-23T19:35:53.123456Z`).
    pub fn recorded_at(&self) -> &'a str {
        self.recorded_at
    }

    /// When the event was recorded, in milliseconds since the Unix epoch.
    pub fn recorded_at_ms(&self) -> Result<u64, Failure> {
        crate::time::millis_from_rfc3339(self.recorded_at)
    }

    /// The event's metadata: a JSON object as text.
    pub fn metadata_json(&self) -> &'a str {
        self.metadata
    }

    /// The event's metadata decoded into `T`.
    pub fn metadata<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_str(self.metadata).map_err(|error| {
            Failure::new(format!(
                "the metadata of the event at position {} does not match: {error}",
                self.position
            ))
        })
    }

    /// The correlation id in the metadata (`correlation_id`, or `correlation-id`): the id
    /// shared by everything one request caused. Events appended by a command carry it.
    pub fn correlation_id(&self) -> Option<String> {
        self.causal_ids().correlation_id.map(Cow::into_owned)
    }

    /// The causation id in the metadata (`causation_id`, or `causation-id`): the id of what
    /// caused this event (the command, for events a command appended).
    pub fn causation_id(&self) -> Option<String> {
        self.causal_ids().causation_id.map(Cow::into_owned)
    }

    /// The typed event.
    pub fn event(&self) -> &E {
        &self.event
    }

    /// The typed event, taken out of the envelope.
    pub fn into_event(self) -> E {
        self.event
    }

    fn causal_ids(&self) -> CausalIds<'a> {
        serde_json::from_str(self.metadata).unwrap_or_default()
    }
}

/// The ids that tie events to what caused them, borrowed from the metadata's JSON.
#[derive(Default, Deserialize)]
struct CausalIds<'a> {
    #[serde(default, borrow, alias = "correlation-id")]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, alias = "causation-id")]
    causation_id: Option<Cow<'a, str>>,
}

/// A query's parameters: the request's query string, decoded, in order, without the host's own
/// (`min_position`, `timeout_ms`, `version`).
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Params<'a> {
    /// Parameters from name-value pairs.
    pub fn new(pairs: &'a [(String, String)]) -> Self {
        Params { pairs }
    }

    /// The first value of the parameter `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of the parameter `name`, or a failure saying it is missing.
    pub fn required(&self, name: &str) -> Result<&'a str, Failure> {
        self.get(name)
            .ok_or_else(|| Failure::new(format!("parameter {name} is missing")))
    }

    /// The first value of the parameter `name`, parsed (a number, say); `None` if absent.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>, Failure>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|value| {
                value.parse().map_err(|error| {
                    Failure::new(format!("parameter {name} is {value:?}: {error}"))
                })
            })
            .transpose()
    }

    /// Every parameter, in the request's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

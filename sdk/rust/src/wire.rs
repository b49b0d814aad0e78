//! The entry points at the wire level: state as bytes, events and commands as a type name plus
//! JSON text. The component's exports call these, and so can native code (benchmarks, tests) to
//! run a handler exactly as the host does, without WebAssembly.

use crate::codec::{self, DecodeError};
use crate::{CommandContext, Handler};

/// Folds a batch of events, each a type name and its data (JSON text), into the state `state`
/// (`None` before the stream's first event), and returns the new state.
///
/// The state is decoded once and encoded once per batch, whatever its length. An `Err` is a
/// plugin failure: the state or an event cannot be decoded.
pub fn evolve<'e, H: Handler>(
    state: Option<&[u8]>,
    events: impl IntoIterator<Item = (&'e str, &'e str)>,
) -> Result<Vec<u8>, String> {
    let mut state = load_state::<H>(state)?;
    for (index, (event_type, data)) in events.into_iter().enumerate() {
        let event = codec::decode::<H::Event>(event_type, data).map_err(|error| match error {
            DecodeError::UnknownType { .. } => format!(
                "handler {}: event {index} of the batch has the unknown type {event_type}; \
                 {error} (add a #[serde(other)] unit variant to ignore other types)",
                H::NAME
            ),
            DecodeError::Mismatch(_) => format!(
                "handler {}: event {index} of the batch, of type {event_type}, does not match: \
                 {error}",
                H::NAME
            ),
        })?;
        H::evolve(&mut state, event);
    }
    serde_json::to_vec(&state)
        .map_err(|error| format!("handler {}: cannot serialize the state: {error}", H::NAME))
}

/// Decides the command `command_type` with `data` (JSON text) and `metadata` (a JSON object as
/// text) against the state `state` (`None` for a stream without events).
///
/// `Ok(Ok(events))` are the events to append, each a type name and its data (JSON text);
/// `Ok(Err(reason))` is a rejection, including a command type the handler does not know or data
/// that does not match it; `Err` is a plugin failure: the state cannot be decoded, or an event
/// cannot be encoded.
pub fn decide<H: Handler>(
    state: Option<&[u8]>,
    command_id: &str,
    stream_id: &str,
    command_type: &str,
    data: &str,
    metadata: &str,
) -> Result<Result<Vec<(String, String)>, String>, String> {
    let state = load_state::<H>(state)?;
    let command = match codec::decode::<H::Command>(command_type, data) {
        Ok(command) => command,
        Err(error @ DecodeError::UnknownType { .. }) => {
            return Ok(Err(format!("unknown command type {command_type}; {error}")));
        }
        Err(error @ DecodeError::Mismatch(_)) => {
            return Ok(Err(format!("{command_type} data does not match: {error}")));
        }
    };
    let context = CommandContext::from_wire(command_id, stream_id, metadata);
    match H::decide(&state, command, &context) {
        Ok(events) => events
            .iter()
            .map(|event| {
                codec::encode(event).map_err(|error| {
                    format!("handler {}: cannot encode an event: {error}", H::NAME)
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Ok),
        Err(rejection) => Ok(Err(rejection.into_reason())),
    }
}

/// The state stored as `bytes`, or the default state for a stream without events.
fn load_state<H: Handler>(bytes: Option<&[u8]>) -> Result<H::State, String> {
    match bytes {
        None => Ok(H::State::default()),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|error| {
            format!(
                "handler {}: the stream's state ({} bytes) cannot be decoded: {error}",
                H::NAME,
                bytes.len()
            )
        }),
    }
}

/// Fails compilation (in a constant) unless the handler's name and category are valid: the name
/// 1 to 64 characters from `[a-z0-9-]` starting with a letter, the category 1 to 128 bytes
/// without `-` (which ends a category in a stream's name) or control characters, as the host
/// checks at deploy time.
pub const fn check_names(name: &str, category: &str) {
    if !is_valid_name(name.as_bytes()) {
        panic!("Handler::NAME must be 1 to 64 characters from [a-z0-9-], starting with a letter");
    }
    if !is_valid_category(category.as_bytes()) {
        panic!("Handler::CATEGORY must be 1 to 128 bytes without '-' or control characters");
    }
}

/// Fails compilation (in a constant) unless a projection's or a policy's name, categories and
/// event types are valid: the name as for a handler, each category as a handler's, each event
/// type 1 to 128 characters from `[A-Za-z0-9_.:-]`.
pub const fn check_subscriber(name: &str, categories: &[&str], event_types: &[&str]) {
    if !is_valid_name(name.as_bytes()) {
        panic!("NAME must be 1 to 64 characters from [a-z0-9-], starting with a letter");
    }
    let mut index = 0;
    while index < categories.len() {
        if !is_valid_category(categories[index].as_bytes()) {
            panic!("each of CATEGORIES must be 1 to 128 bytes without '-' or control characters");
        }
        index += 1;
    }
    let mut index = 0;
    while index < event_types.len() {
        if !is_valid_type_name(event_types[index].as_bytes()) {
            panic!("each of EVENT_TYPES must be 1 to 128 characters from [A-Za-z0-9_.:-]");
        }
        index += 1;
    }
}

const fn is_valid_type_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > 128 {
        return false;
    }
    let mut index = 0;
    while index < name.len() {
        let byte = name[index];
        if !(byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'-')) {
            return false;
        }
        index += 1;
    }
    true
}

const fn is_valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > 64 || !name[0].is_ascii_lowercase() {
        return false;
    }
    let mut index = 0;
    while index < name.len() {
        let byte = name[index];
        if !(byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-') {
            return false;
        }
        index += 1;
    }
    true
}

const fn is_valid_category(category: &[u8]) -> bool {
    if category.is_empty() || category.len() > 128 {
        return false;
    }
    let mut index = 0;
    while index < category.len() {
        let byte = category[index];
        // C0 controls and DEL, and the C1 controls U+0080..U+009F (0xC2 0x80..0x9F in UTF-8).
        let c1_control = byte == 0xC2
            && index + 1 < category.len()
            && category[index + 1] >= 0x80
            && category[index + 1] <= 0x9F;
        if byte == b'-' || byte.is_ascii_control() || c1_control {
            return false;
        }
        index += 1;
    }
    true
}

//! The rules for names the store keys on: stream names, event types, event ids, categories.
//!
//! The API checks these to answer 400 with a precise message; the store checks them again
//! before writing, so no path into the log can store a name the rest of the system cannot read.

/// Longest stream name, in bytes of UTF-8.
pub const MAX_STREAM_NAME_BYTES: usize = 256;
/// Longest event type, in characters (all ASCII).
pub const MAX_EVENT_TYPE_CHARS: usize = 128;
/// Longest event id, in bytes of UTF-8.
pub const MAX_EVENT_ID_BYTES: usize = 256;

/// A stream name is 1–256 bytes of UTF-8 without control characters.
pub fn validate_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("stream name is empty; expected 1 to 256 bytes".into());
    }
    if name.len() > MAX_STREAM_NAME_BYTES {
        return Err(format!(
            "stream name is {} bytes long; expected at most {MAX_STREAM_NAME_BYTES}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!("stream name contains the control character {c:?}"));
    }
    Ok(())
}

/// An event type is 1–128 characters from `[A-Za-z0-9_.:-]`.
pub fn validate_event_type(event_type: &str) -> Result<(), String> {
    if event_type.is_empty() {
        return Err(
            "event type is empty; expected 1 to 128 characters from [A-Za-z0-9_.:-]".into(),
        );
    }
    if event_type.len() > MAX_EVENT_TYPE_CHARS {
        return Err(format!(
            "event type is {} characters long; expected at most {MAX_EVENT_TYPE_CHARS}",
            event_type.chars().count()
        ));
    }
    if let Some(c) = event_type
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(format!(
            "event type {event_type:?} contains {c:?}; expected only characters from [A-Za-z0-9_.:-]"
        ));
    }
    Ok(())
}

/// An event id is 1–256 bytes of UTF-8 without control characters.
pub fn validate_event_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(
            "event id is empty; expected 1 to 256 bytes, or no id to have one generated".into(),
        );
    }
    if id.len() > MAX_EVENT_ID_BYTES {
        return Err(format!(
            "event id is {} bytes long; expected at most {MAX_EVENT_ID_BYTES}",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(format!("event id contains the control character {c:?}"));
    }
    Ok(())
}

/// The category of a stream: the part of its name before the first `-` (`visit-42` → `visit`);
/// a name without `-` is its own category.
pub fn category_of(stream: &str) -> &str {
    stream
        .split_once('-')
        .map_or(stream, |(category, _)| category)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_is_the_part_before_the_first_dash() {
        assert_eq!(category_of("visit-42"), "visit");
        assert_eq!(category_of("visit-42-b"), "visit");
        assert_eq!(category_of("visit"), "visit");
        assert_eq!(category_of("-x"), "");
    }

    #[test]
    fn stream_names_are_bounded_and_printable() {
        assert!(validate_stream_name("visit-42").is_ok());
        assert!(validate_stream_name("ünïcödé stream").is_ok());
        assert!(validate_stream_name(&"a".repeat(256)).is_ok());
        assert!(validate_stream_name(&"a".repeat(257)).is_err());
        assert!(validate_stream_name("").is_err());
        assert!(validate_stream_name("a\nb").is_err());
        assert!(validate_stream_name("a\u{7f}b").is_err());
    }

    #[test]
    fn event_types_use_a_small_alphabet() {
        assert!(validate_event_type("PatientCheckedIn").is_ok());
        assert!(validate_event_type("billing.invoice:v2_x-y").is_ok());
        assert!(validate_event_type(&"T".repeat(128)).is_ok());
        assert!(validate_event_type(&"T".repeat(129)).is_err());
        assert!(validate_event_type("").is_err());
        assert!(validate_event_type("has space").is_err());
        assert!(validate_event_type("é").is_err());
    }
}

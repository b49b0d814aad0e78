//! The canonical JSON record of an event: how the store keeps it and how the API serves it.
//!
//! A record is one line of JSON, `{"position","stream","version","id","type","data","metadata",
//! "recorded_at"}` in that order. It is rendered once, by the writer, when the event's position and
//! version are known; reads copy it out unchanged.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::ProposedEvent;

/// Appends the record of `event` at `position`/`version` to `out`.
pub fn render_record(
    out: &mut Vec<u8>,
    position: u64,
    stream_json: &str,
    version: u64,
    id: &str,
    event: &ProposedEvent,
    recorded_at: &str,
) {
    out.reserve(96 + stream_json.len() + id.len() + event.data.len() + event.metadata.len());
    out.extend_from_slice(b"{\"position\":");
    write_number(out, position);
    out.extend_from_slice(b",\"stream\":");
    out.extend_from_slice(stream_json.as_bytes());
    out.extend_from_slice(b",\"version\":");
    write_number(out, version);
    out.extend_from_slice(b",\"id\":");
    write_json_string(out, id);
    // Event types are restricted to [A-Za-z0-9_.:-], which never needs escaping.
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(event.event_type.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    out.extend_from_slice(event.data.as_bytes());
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(event.metadata.as_bytes());
    out.extend_from_slice(b",\"recorded_at\":\"");
    out.extend_from_slice(recorded_at.as_bytes());
    out.extend_from_slice(b"\"}");
}

/// `value` as a JSON string literal.
pub fn json_string(value: &str) -> String {
    serde_json::to_string(value).expect("a string always serializes")
}

fn write_json_string(out: &mut Vec<u8>, value: &str) {
    serde_json::to_writer(out, value).expect("writing to a Vec cannot fail");
}

fn write_number(out: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    write!(out, "{n}").expect("writing to a Vec cannot fail");
}

/// The fields of a stored record the host looks into, borrowed from its JSON.
#[derive(Debug, Deserialize)]
pub struct EventView<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub stream: Cow<'a, str>,
    pub version: u64,
    #[serde(rename = "type", borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

impl<'a> EventView<'a> {
    pub fn parse(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// Every field of a stored record, borrowed from its JSON: what projections and policies receive.
#[derive(Debug, Deserialize)]
pub struct RecordView<'a> {
    pub position: u64,
    #[serde(borrow)]
    pub stream: Cow<'a, str>,
    pub version: u64,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
    #[serde(borrow)]
    pub metadata: &'a RawValue,
    #[serde(borrow)]
    pub recorded_at: Cow<'a, str>,
}

impl<'a> RecordView<'a> {
    pub fn parse(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// Removes the insignificant whitespace of valid JSON text, so that it fits on one line (a
/// server-sent event's `data:` line) and takes no more room than it needs. Strings are kept
/// byte for byte. The input must already be valid JSON.
pub fn minify_json(json: &str) -> Cow<'_, str> {
    let bytes = json.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        return Cow::Borrowed(json);
    }
    let mut out = Vec::with_capacity(bytes.len());
    each_byte(bytes, |b, in_string| {
        if in_string || !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            out.push(b);
        }
    });
    // Only ASCII whitespace outside strings was removed, so the bytes are still UTF-8.
    Cow::Owned(String::from_utf8(out).expect("removing ASCII whitespace keeps UTF-8 valid"))
}

/// How deeply arrays and objects nest in valid JSON text: 0 for a scalar, 1 for `[1]` or
/// `{}`, 2 for `{"a":[1]}`. serde_json checks nesting only when it builds values; a raw value
/// it passes through may be nested without bound.
pub fn json_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    each_byte(json.as_bytes(), |b, in_string| match b {
        _ if in_string => {}
        b'[' | b'{' => {
            depth += 1;
            deepest = deepest.max(depth);
        }
        b']' | b'}' => depth = depth.saturating_sub(1),
        _ => {}
    });
    deepest
}

/// Calls `visit` with each byte of valid JSON text and whether it belongs to a string (its
/// quotes included).
fn each_byte(json: &[u8], mut visit: impl FnMut(u8, bool)) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            visit(b, true);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            in_string = b == b'"';
            visit(b, in_string);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth("\"[[[\""), 0);
        assert_eq!(json_depth("[]"), 1);
        assert_eq!(json_depth(r#"{"a":[1,{"b":"]\\"}],"c":{}}"#), 3);
        assert_eq!(json_depth(r#"["\"[",[[]]]"#), 3);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(json_depth(&deep), 200);
    }

    #[test]
    fn minify_keeps_strings_and_drops_layout() {
        let pretty = "{\n  \"a b\": [1, 2,\t3],\r\n  \"q\": \"x \\\" y \\\\\" , \"n\": null }";
        assert_eq!(
            minify_json(pretty),
            "{\"a b\":[1,2,3],\"q\":\"x \\\" y \\\\\",\"n\":null}"
        );
        assert!(matches!(minify_json("{\"a\":1}"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_rendered_record_parses_back() {
        let event = ProposedEvent {
            id: None,
            event_type: "Thing.Happened".into(),
            data: "{\"x\":[1,2]}".into(),
            metadata: "{}".into(),
        };
        let mut out = Vec::new();
        render_record(
            &mut out,
            7,
            &json_string("s-\u{e9}"),
            3,
            "id-\"1\"",
            &event,
            "2026-01-01T00:00:00.000000Z",
        );
        let view = EventView::parse(&out).unwrap();
        assert_eq!(view.id, "id-\"1\"");
        assert_eq!(view.stream, "s-\u{e9}");
        assert_eq!(view.version, 3);
        assert_eq!(view.event_type, "Thing.Happened");
        assert_eq!(view.data.get(), "{\"x\":[1,2]}");
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 8);
    }
}

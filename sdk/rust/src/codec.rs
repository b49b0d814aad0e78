//! The wire form of events and commands: a type name plus JSON text for the data. This module
//! turns that pair into the author's adjacently tagged enum and back.
//!
//! Decoding hands serde a two-key map, `type` → the type name and `data` → the data, parsed
//! straight from the JSON text, so no intermediate JSON is built and a type name needs no
//! escaping. The error type sees `unknown_variant`, which tells an unknown type apart from data
//! that does not match. Encoding serializes the enum once and splits the result with a borrowed
//! parse.

use std::fmt;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest type name the host accepts, in characters.
const MAX_TYPE_NAME_CHARS: usize = 128;

/// Why a type name and its data did not decode into the author's enum.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// The enum has no variant of that name, and no `#[serde(other)]` variant.
    UnknownType {
        /// The variants the enum has.
        expected: &'static [&'static str],
    },
    /// The enum has the variant, but the data does not fit it (or the enum is not adjacently
    /// tagged with `type` and `data`).
    Mismatch(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownType { expected } => {
                f.write_str("expected one of ")?;
                for (index, name) in expected.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(name)?;
                }
                Ok(())
            }
            DecodeError::Mismatch(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        DecodeError::Mismatch(message.to_string())
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        DecodeError::UnknownType { expected }
    }
}

/// Decodes the variant named `type_name` with `data` (JSON text) into `T`.
///
/// A unit variant ignores the data: an event `Closed {"by": "ana"}` decodes into a unit variant
/// `Closed`, and so does any event into a `#[serde(other)]` unit variant.
pub(crate) fn decode<T: DeserializeOwned>(type_name: &str, data: &str) -> Result<T, DecodeError> {
    let first = match T::deserialize(Tagged {
        type_name,
        data: Data::Json(data),
    }) {
        Ok(value) => return Ok(value),
        Err(error @ DecodeError::UnknownType { .. }) => return Err(error),
        Err(error @ DecodeError::Mismatch(_)) => error,
    };
    // The data did not fit. If the variant is a unit variant it takes no data at all, and the
    // probe below (which can only be read as "unit") succeeds; for any other variant it fails,
    // and the first error is the one that explains the mismatch.
    T::deserialize(Tagged {
        type_name,
        data: Data::UnitProbe,
    })
    .map_err(|_| first)
}

/// Serializes `value` (an adjacently tagged enum) into its type name and data (JSON text;
/// `null` for a unit variant).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<(String, String), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Split<'a> {
        #[serde(rename = "type")]
        type_name: &'a str,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }

    let json =
        serde_json::to_string(value).map_err(|error| format!("cannot serialize: {error}"))?;
    let split: Split<'_> = serde_json::from_str(&json).map_err(|_| {
        format!(
            "expected {{\"type\": ..., \"data\": ...}} from an enum marked \
             #[serde(tag = \"type\", content = \"data\")], found {json}"
        )
    })?;
    check_type_name(split.type_name)?;
    let data = split.data.map_or("null", RawValue::get);
    Ok((split.type_name.to_owned(), data.to_owned()))
}

/// Checks that `name` is a type name the host accepts: 1 to 128 characters from
/// `[A-Za-z0-9_.:-]`.
pub(crate) fn check_type_name(name: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    if name.is_empty() || name.len() > MAX_TYPE_NAME_CHARS || !name.chars().all(valid_char) {
        return Err(format!(
            "type name {name:?} is not 1 to {MAX_TYPE_NAME_CHARS} characters from [A-Za-z0-9_.:-]"
        ));
    }
    Ok(())
}

/// What the `data` key of a [`Tagged`] map holds.
#[derive(Clone, Copy)]
enum Data<'a> {
    /// The data as JSON text.
    Json(&'a str),
    /// Something only a unit variant accepts.
    UnitProbe,
}

/// A deserializer that presents a type name and its data as the map `{"type": .., "data": ..}`.
struct Tagged<'a> {
    type_name: &'a str,
    data: Data<'a>,
}

impl<'de> de::Deserializer<'de> for Tagged<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_map(TaggedAccess {
            tagged: self,
            next: Key::Type,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// The key a [`TaggedAccess`] yields next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Type,
    Data,
    End,
}

struct TaggedAccess<'a> {
    tagged: Tagged<'a>,
    next: Key,
}

impl<'de> MapAccess<'de> for TaggedAccess<'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        let key = match self.next {
            Key::Type => "type",
            Key::Data => "data",
            Key::End => return Ok(None),
        };
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        match self.next {
            Key::Type => {
                self.next = Key::Data;
                seed.deserialize(BorrowedStrDeserializer::new(self.tagged.type_name))
            }
            Key::Data => {
                self.next = Key::End;
                match self.tagged.data {
                    Data::Json(text) => {
                        let mut json = serde_json::Deserializer::from_str(text);
                        // The host takes data nested up to 128 levels, which serde_json's own
                        // limit (127) would refuse; the host's bound keeps the recursion short.
                        json.disable_recursion_limit();
                        let value = seed.deserialize(&mut json).map_err(mismatch)?;
                        json.end().map_err(mismatch)?;
                        Ok(value)
                    }
                    Data::UnitProbe => seed.deserialize(UnitProbe),
                }
            }
            Key::End => Err(DecodeError::Mismatch(
                "a value was read after the last key".to_owned(),
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(match self.next {
            Key::Type => 2,
            Key::Data => 1,
            Key::End => 0,
        })
    }
}

fn mismatch(error: serde_json::Error) -> DecodeError {
    DecodeError::Mismatch(error.to_string())
}

/// A value that only a unit variant's `deserialize_any` accepts: every typed request (an
/// `Option`, a struct, a number, ...) fails, so a newtype or struct variant never mistakes it
/// for missing data.
struct UnitProbe;

macro_rules! refuse {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DecodeError> {
                Err(UnitProbe::refusal())
            }
        )*
    };
}

impl UnitProbe {
    fn refusal() -> DecodeError {
        DecodeError::Mismatch("the variant is not a unit variant".to_owned())
    }
}

impl<'de> de::Deserializer<'de> for UnitProbe {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    refuse! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_option
        deserialize_unit deserialize_seq deserialize_map deserialize_identifier
        deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, DecodeError> {
        Err(UnitProbe::refusal())
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, DecodeError> {
        Err(UnitProbe::refusal())
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, DecodeError> {
        Err(UnitProbe::refusal())
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, DecodeError> {
        Err(UnitProbe::refusal())
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DecodeError> {
        Err(UnitProbe::refusal())
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DecodeError> {
        Err(UnitProbe::refusal())
    }
}

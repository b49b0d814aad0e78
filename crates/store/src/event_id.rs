//! Event ids the store generates: UUIDs (version 8) that carry where their event is, so that they
//! need no entry in the id index.
//!
//! A generated id holds the store's id tag (random, chosen when the file is created), the event's
//! position, its offset within its append and the number of events in that append. To learn
//! whether such an id is stored, the store reads the event at that position and compares ids; a
//! client-chosen id that looks like a generated one of this store but is not stored is refused,
//! so no later generated id can ever equal it. Ids of other stores (another tag) are ordinary
//! client ids.

use uuid::Uuid;

const POSITION_BITS: u32 = 48;
const COUNT_BITS: u32 = 14;

/// Where a generated id says its event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratedId {
    pub position: u64,
    /// The event's index within its append.
    pub offset: u32,
    /// How many events its append wrote.
    pub count: u32,
}

impl GeneratedId {
    /// The first position of the append that wrote the event.
    pub fn first_position(self) -> u64 {
        self.position - u64::from(self.offset)
    }

    /// The id for an event, or `None` when a number does not fit (positions from 2^48, appends
    /// of 16 384 events or more): such an event gets a random id kept in the index instead.
    pub fn encode(self, tag: u32) -> Option<String> {
        let fits = self.position < 1 << POSITION_BITS
            && self.count < 1 << COUNT_BITS
            && self.offset < self.count;
        fits.then(|| {
            let payload = (u128::from(tag) << (POSITION_BITS + 2 * COUNT_BITS))
                | (u128::from(self.position) << (2 * COUNT_BITS))
                | (u128::from(self.offset) << COUNT_BITS)
                | u128::from(self.count);
            Uuid::new_v8(spread(payload)).hyphenated().to_string()
        })
    }

    /// The tag of the store that generated `id`, if it has the form of a generated id.
    pub fn tag_of(id: &str) -> Option<u32> {
        let uuid = Uuid::try_parse(id).ok()?;
        if uuid.get_version_num() != 8 || uuid.get_variant() != uuid::Variant::RFC4122 {
            return None;
        }
        let tag = (gather(*uuid.as_bytes()) >> (POSITION_BITS + 2 * COUNT_BITS)) as u32;
        Self::decode(id, tag).map(|_| tag)
    }

    /// The event a generated id of the store tagged `tag` points at, if `id` is one.
    pub fn decode(id: &str, tag: u32) -> Option<Self> {
        let uuid = Uuid::try_parse(id).ok()?;
        if uuid.get_version_num() != 8 || uuid.get_variant() != uuid::Variant::RFC4122 {
            return None;
        }
        let payload = gather(*uuid.as_bytes());
        let field = |shift: u32, bits: u32| (payload >> shift) & ((1u128 << bits) - 1);
        let stored_tag = payload >> (POSITION_BITS + 2 * COUNT_BITS);
        let decoded = GeneratedId {
            position: field(2 * COUNT_BITS, POSITION_BITS) as u64,
            offset: field(COUNT_BITS, COUNT_BITS) as u32,
            count: field(0, COUNT_BITS) as u32,
        };
        // Only the exact text this store generates counts (lowercase, hyphenated).
        (stored_tag == u128::from(tag)
            && decoded.offset < decoded.count
            && decoded.encode(tag).as_deref() == Some(id))
        .then_some(decoded)
    }
}

/// Places 122 bits of payload around the UUID's version nibble (the high half of byte 6) and
/// variant bits (the top two bits of byte 8).
fn spread(payload: u128) -> [u8; 16] {
    let high = (payload >> 62) as u64; // 60 bits
    let low = (payload as u64) & ((1 << 62) - 1);
    let high = ((high >> 12) << 16) | (high & 0xfff);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&low.to_be_bytes());
    bytes
}

fn gather(bytes: [u8; 16]) -> u128 {
    let high = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let low = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes")) & ((1 << 62) - 1);
    let high = ((high >> 16) << 12) | (high & 0xfff);
    (u128::from(high) << 62) | u128::from(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip() {
        for (tag, id) in [
            (
                0xdead_beef,
                GeneratedId {
                    position: 1,
                    offset: 0,
                    count: 1,
                },
            ),
            (
                1,
                GeneratedId {
                    position: (1 << 48) - 1,
                    offset: 9_999,
                    count: 10_000,
                },
            ),
            (
                u32::MAX,
                GeneratedId {
                    position: 123_456_789,
                    offset: 3,
                    count: 16_383,
                },
            ),
        ] {
            let text = id.encode(tag).unwrap();
            assert_eq!(Uuid::try_parse(&text).unwrap().get_version_num(), 8);
            assert_eq!(GeneratedId::decode(&text, tag), Some(id), "{text}");
            assert_eq!(GeneratedId::decode(&text, tag ^ 1), None);
            assert_eq!(GeneratedId::decode(&text.to_uppercase(), tag), None);
            assert_eq!(id.first_position(), id.position - u64::from(id.offset));
        }
    }

    #[test]
    fn numbers_that_do_not_fit_get_no_generated_id() {
        assert_eq!(
            GeneratedId {
                position: 1 << 48,
                offset: 0,
                count: 1
            }
            .encode(7),
            None
        );
        assert_eq!(
            GeneratedId {
                position: 1,
                offset: 0,
                count: 1 << 14
            }
            .encode(7),
            None
        );
    }

    #[test]
    fn other_ids_are_not_generated_ones() {
        for id in [
            "e1",
            "",
            "0190c0de-0000-7000-8000-000000000000",
            &Uuid::new_v4().to_string(),
        ] {
            assert_eq!(GeneratedId::decode(id, 7), None, "{id}");
        }
    }
}

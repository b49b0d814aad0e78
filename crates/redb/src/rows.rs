//! Rows of the `rows` table: one per stream, category and event type, each holding its id and
//! its newest index entries that are not yet in a chunk of the log.
//!
//! Keeping the newest entries in the rows, and moving them into the log only in chunks, means
//! that a commit rewrites the few pages of `rows` (where the rows sit side by side) rather than
//! one index page of the log for every stream, category and type it touched.

use evhost_store::StorageError;

/// Once a stream's tail holds this many positions, they move into a chunk in the log.
pub const STREAM_TAIL_MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    pub id: u64,
    pub version: u64,
    /// Positions of versions `version - tail.len() + 1 ..= version`, in order.
    pub tail: Vec<u64>,
}

impl StreamRow {
    pub fn new(id: u64) -> Self {
        StreamRow {
            id,
            version: 0,
            tail: Vec::new(),
        }
    }

    /// The last version whose position is in a chunk of the log (0 when none is).
    pub fn chunked_through(&self) -> u64 {
        self.version - self.tail.len() as u64
    }

    /// `id`, `version` as 8 bytes little-endian each, then the tail as LEB128 varints, each the
    /// difference from the position before it (the first from 0).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 3 * self.tail.len());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        let mut previous = 0;
        for &position in &self.tail {
            write_varint(&mut out, position - previous);
            previous = position;
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let corrupt =
            |reason: &str| StorageError::Failed(format!("a stream row is corrupt: {reason}"));
        let (id, rest) = bytes
            .split_at_checked(8)
            .ok_or_else(|| corrupt("too short"))?;
        let (version, mut rest) = rest
            .split_at_checked(8)
            .ok_or_else(|| corrupt("too short"))?;
        let id = u64::from_le_bytes(id.try_into().expect("8 bytes"));
        let version = u64::from_le_bytes(version.try_into().expect("8 bytes"));
        let mut tail = Vec::new();
        let mut previous = 0u64;
        while !rest.is_empty() {
            let (delta, used) = read_varint(rest).ok_or_else(|| corrupt("bad varint"))?;
            previous = previous
                .checked_add(delta)
                .ok_or_else(|| corrupt("position overflow"))?;
            tail.push(previous);
            rest = &rest[used..];
        }
        if tail.len() as u64 > version {
            return Err(corrupt("more tail positions than versions"));
        }
        Ok(StreamRow { id, version, tail })
    }
}

/// Once a category's or a type's tail holds this many entries, they move into a chunk in the log.
pub const SECTION_TAIL_MAX: usize = 256;

/// The row of a category or an event type: its id and its newest (position, value) entries:
/// for a category the value is the event's type id, for a type it is 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionRow {
    pub id: u64,
    pub tail: Vec<(u64, u64)>,
}

impl SectionRow {
    /// `id` as 8 bytes little-endian, then the tail as [`encode_entries`] writes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.id.to_le_bytes().to_vec();
        out.extend(encode_entries(&self.tail));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let (id, rest) = bytes
            .split_at_checked(8)
            .ok_or_else(|| StorageError::Failed("a section row is corrupt: too short".into()))?;
        Ok(SectionRow {
            id: u64::from_le_bytes(id.try_into().expect("8 bytes")),
            tail: decode_entries(rest)?,
        })
    }
}

/// (position, value) entries in position order, as LEB128 varints: the position's difference
/// from the one before (the first from 0), then the value. The form of a section's chunks.
pub fn encode_entries(entries: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * entries.len());
    let mut previous = 0;
    for &(position, value) in entries {
        write_varint(&mut out, position - previous);
        write_varint(&mut out, value);
        previous = position;
    }
    out
}

pub fn decode_entries(mut bytes: &[u8]) -> Result<Vec<(u64, u64)>, StorageError> {
    let corrupt = || StorageError::Failed("a section's entries are corrupt".into());
    let mut entries = Vec::new();
    let mut previous = 0u64;
    while !bytes.is_empty() {
        let (delta, used) = read_varint(bytes).ok_or_else(corrupt)?;
        let (value, used_value) = read_varint(&bytes[used..]).ok_or_else(corrupt)?;
        previous = previous.checked_add(delta).ok_or_else(corrupt)?;
        entries.push((previous, value));
        bytes = &bytes[used + used_value..];
    }
    Ok(entries)
}

/// A chunk of a stream's positions, as stored in the log: 8 bytes little-endian each.
pub fn encode_chunk(positions: &[u64]) -> Vec<u8> {
    positions.iter().flat_map(|p| p.to_le_bytes()).collect()
}

pub fn decode_chunk(bytes: &[u8]) -> Result<impl Iterator<Item = u64> + '_, StorageError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
        return Err(StorageError::Failed(format!(
            "a stream chunk holds {} bytes, expected a positive multiple of 8",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))))
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        for row in [
            StreamRow::new(7),
            StreamRow {
                id: 1,
                version: 40,
                tail: vec![100, 101, 5000, 1 << 40],
            },
            StreamRow {
                id: u64::MAX >> 8,
                version: 3,
                tail: vec![u64::MAX - 1, u64::MAX],
            },
        ] {
            assert_eq!(StreamRow::decode(&row.encode()).unwrap(), row);
        }
    }

    #[test]
    fn corrupt_rows_are_refused() {
        assert!(StreamRow::decode(&[1, 2, 3]).is_err());
        let mut bytes = StreamRow {
            id: 1,
            version: 1,
            tail: vec![9],
        }
        .encode();
        bytes.push(0x80);
        assert!(StreamRow::decode(&bytes).is_err());
        let too_long = StreamRow {
            id: 1,
            version: 1,
            tail: vec![1, 2],
        }
        .encode();
        assert!(StreamRow::decode(&too_long).is_err());
    }

    #[test]
    fn section_rows_round_trip() {
        for row in [
            SectionRow {
                id: 3,
                tail: vec![],
            },
            SectionRow {
                id: 1 << 55,
                tail: vec![(1, 0), (2, 7), (1 << 40, u64::MAX)],
            },
        ] {
            assert_eq!(SectionRow::decode(&row.encode()).unwrap(), row);
        }
        assert!(SectionRow::decode(&[1, 2]).is_err());
        assert!(decode_entries(&[0x80]).is_err());
        assert!(decode_entries(&[5]).is_err());
    }

    #[test]
    fn chunks_round_trip() {
        let positions = [3u64, 9, 1 << 50];
        assert_eq!(
            decode_chunk(&encode_chunk(&positions))
                .unwrap()
                .collect::<Vec<_>>(),
            positions
        );
        assert!(decode_chunk(&[1, 2]).is_err());
    }
}

//! What a read of events answers: recorded events, pages of a stream and of the global log,
//! and the filter of a log read.

/// An event as recorded: its position and its canonical JSON record.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub position: u64,
    /// `{"position","stream","version","id","type","data","metadata","recorded_at"}` on one line.
    pub json: Vec<u8>,
}

/// Which way to read a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// A page of one stream.
#[derive(Debug)]
pub struct StreamPage {
    /// The stream's current version.
    pub version: u64,
    pub events: Vec<RecordedEvent>,
    /// The version to ask for next, or `None` when the page reached the end in its direction.
    pub next: Option<u64>,
}

/// Which events of the global log to return. Empty lists mean "all"; values within one list
/// are alternatives, and the two lists must both match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub categories: Vec<String>,
    pub event_types: Vec<String>,
}

impl LogFilter {
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty() && self.event_types.is_empty()
    }
}

/// A page of the global log.
#[derive(Debug)]
pub struct LogPage {
    pub events: Vec<RecordedEvent>,
    /// The position to ask for next, or `None` when the page reached the head.
    pub next: Option<u64>,
    /// The last position in the store when the page was read.
    pub head: u64,
}

/// The versions a page of a stream at `version` covers, lowest first (empty when the first is
/// past the second): from `from` (`None`: the start in that direction), at most `limit`.
pub fn stream_window(
    version: u64,
    from: Option<u64>,
    limit: usize,
    direction: Direction,
) -> (u64, u64) {
    let limit = limit.max(1) as u64;
    match direction {
        Direction::Forward => {
            let start = from.unwrap_or(1).max(1);
            (start, version.min(start.saturating_add(limit - 1)))
        }
        Direction::Backward => {
            let start = from.unwrap_or(version).min(version);
            (start.saturating_sub(limit - 1).max(1), start)
        }
    }
}

/// The version a stream page asks for next: `read` of the `wanted` events of `window` were
/// read (a page ends early at its byte bound), in a stream at `version`; `None` at the end.
pub fn stream_next(
    direction: Direction,
    window: (u64, u64),
    version: u64,
    read: u64,
    wanted: u64,
) -> Option<u64> {
    match direction {
        Direction::Forward if read > 0 && read < wanted => Some(window.0 + read),
        Direction::Forward if read > 0 && window.1 < version => Some(window.1 + 1),
        Direction::Backward if read > 0 && read < wanted => Some(window.1 - read),
        Direction::Backward if read > 0 && window.0 > 1 => Some(window.0 - 1),
        _ => None,
    }
}

/// The position a page of the log asks for next: the page holds `events` of the `wanted`
/// positions found (a page ends early at its byte bound), at most `limit`, in a log ending at
/// `head`; `None` at the head.
pub fn log_next(events: &[RecordedEvent], wanted: usize, limit: usize, head: u64) -> Option<u64> {
    match events.last() {
        Some(last) if last.position < head && (events.len() == limit || events.len() < wanted) => {
            Some(last.position + 1)
        }
        _ => None,
    }
}

/// Takes records, in order, up to and including the first that brings their bytes to
/// `max_bytes` (a page always holds at least one event).
pub fn take_page(
    records: impl IntoIterator<Item = RecordedEvent>,
    max_bytes: usize,
) -> Vec<RecordedEvent> {
    let mut page = Vec::new();
    let mut bytes = 0;
    for record in records {
        bytes += record.json.len();
        page.push(record);
        if bytes >= max_bytes {
            break;
        }
    }
    page
}

/// The default of the byte bound of a page of events: a read never holds or sends more than
/// this at once (plus one event).
pub const PAGE_BYTES: usize = 8 << 20;

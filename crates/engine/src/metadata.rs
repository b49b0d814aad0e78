//! What the host reads from event and command metadata: the correlation id and the causation
//! depth that commands, events and policies carry along.

use serde::Deserialize;

/// The `causation_depth` of an event's or a command's metadata: how many policy commands led to
/// it (0 when it says nothing).
pub fn causation_depth(metadata: &str) -> u64 {
    #[derive(Deserialize)]
    struct Depth {
        #[serde(default)]
        causation_depth: u64,
    }
    serde_json::from_str::<Depth>(metadata).map_or(0, |d| d.causation_depth)
}

/// The `correlation_id` of an event's or a command's metadata, if it names one.
pub fn correlation_id(metadata: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Correlation {
        correlation_id: Option<String>,
    }
    serde_json::from_str::<Correlation>(metadata)
        .ok()?
        .correlation_id
}

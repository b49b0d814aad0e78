//! The snapshot cache: the state a handler version folded for a stream, and the stream version
//! it folded to, so that a command on a long stream folds only the events after the snapshot.
//!
//! Keys name the plugin version, so a new version never sees state an older one produced. The
//! cache is bounded by the bytes of its states; when full, it drops entries picked at random
//! (sampled eviction, as caches under heavy churn do), which needs no bookkeeping per hit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bytes of state the cache holds at most.
const CAPACITY_BYTES: usize = 64 << 20;
/// Entries the cache holds at most, whatever their size.
const CAPACITY_ENTRIES: usize = 100_000;
/// What an entry costs beyond its state: key, bookkeeping.
const ENTRY_OVERHEAD: usize = 128;

/// A stream's state as of a version.
#[derive(Debug, Clone, Default)]
pub(super) struct Snapshot {
    /// The stream version the state folds in (0: no event yet).
    pub version: u64,
    /// The state `evolve` returned, or none before the first event.
    pub state: Option<Arc<Vec<u8>>>,
}

impl Snapshot {
    fn cost(&self, stream: &str) -> usize {
        ENTRY_OVERHEAD + stream.len() + self.state.as_ref().map_or(0, |s| s.len())
    }
}

#[derive(Default)]
pub(super) struct SnapshotCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By plugin version, then stream: two levels, so that a lookup by borrowed names builds
    /// no key.
    versions: HashMap<String, HashMap<String, Snapshot>>,
    /// Snapshots held, over all versions.
    count: usize,
    bytes: usize,
}

impl SnapshotCache {
    pub(super) fn get(&self, plugin_version: &str, stream: &str) -> Option<Snapshot> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.versions.get(plugin_version)?.get(stream).cloned()
    }

    /// Keeps `snapshot` unless the cache holds a newer one for the same key.
    pub(super) fn put(&self, plugin_version: &str, stream: &str, snapshot: Snapshot) {
        let cost = snapshot.cost(stream);
        if cost > CAPACITY_BYTES / 8 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        if !inner.versions.contains_key(plugin_version) {
            inner
                .versions
                .insert(plugin_version.to_owned(), HashMap::new());
        }
        let streams = inner
            .versions
            .get_mut(plugin_version)
            .expect("inserted above");
        match streams.get_mut(stream) {
            Some(existing) if existing.version >= snapshot.version => return,
            Some(existing) => {
                inner.bytes -= existing.cost(stream);
                *existing = snapshot;
            }
            None => {
                streams.insert(stream.to_owned(), snapshot);
                inner.count += 1;
            }
        }
        inner.bytes += cost;
        while inner.bytes > CAPACITY_BYTES || inner.count > CAPACITY_ENTRIES {
            inner.evict_some();
        }
    }
}

impl Inner {
    /// Drops about an eighth of the entries; a hash map's order is as good as random here.
    fn evict_some(&mut self) {
        let mut left = (self.count / 8).max(1);
        for streams in self.versions.values_mut() {
            let victims: Vec<String> = streams.keys().take(left).cloned().collect();
            for stream in victims {
                if let Some(snapshot) = streams.remove(&stream) {
                    self.bytes -= snapshot.cost(&stream);
                    self.count -= 1;
                    left -= 1;
                }
            }
            if left == 0 {
                break;
            }
        }
        self.versions.retain(|_, streams| !streams.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: u64, size: usize) -> Snapshot {
        Snapshot {
            version,
            state: Some(Arc::new(vec![7; size])),
        }
    }

    #[test]
    fn keeps_the_newest_snapshot_per_plugin_version() {
        let cache = SnapshotCache::default();
        cache.put("v1", "visit-1", snapshot(3, 10));
        cache.put("v1", "visit-1", snapshot(2, 10));
        assert_eq!(cache.get("v1", "visit-1").unwrap().version, 3);
        assert!(cache.get("v2", "visit-1").is_none());
        cache.put("v1", "visit-1", snapshot(5, 10));
        assert_eq!(cache.get("v1", "visit-1").unwrap().version, 5);
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let cache = SnapshotCache::default();
        for n in 0..2_000 {
            cache.put("v1", &format!("visit-{n}"), snapshot(1, 256 << 10));
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.bytes <= CAPACITY_BYTES);
        let counted: usize = inner
            .versions
            .values()
            .flatten()
            .map(|(stream, s)| s.cost(stream))
            .sum();
        assert_eq!(counted, inner.bytes);
        let held: usize = inner.versions.values().map(HashMap::len).sum();
        assert_eq!(held, inner.count);
    }
}

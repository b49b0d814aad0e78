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
    /// By plugin version, then stream.
    entries: HashMap<(Arc<str>, String), Snapshot>,
    bytes: usize,
}

impl SnapshotCache {
    pub(super) fn get(&self, plugin_version: &str, stream: &str) -> Option<Snapshot> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // The key borrows nothing, so a lookup builds one; cheaper than a two-level map's
        // second lookup for the common single-version case.
        inner
            .entries
            .get(&(Arc::from(plugin_version), stream.to_owned()))
            .cloned()
    }

    /// Keeps `snapshot` unless the cache holds a newer one for the same key.
    pub(super) fn put(&self, plugin_version: &str, stream: &str, snapshot: Snapshot) {
        let cost = snapshot.cost(stream);
        if cost > CAPACITY_BYTES / 8 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (Arc::from(plugin_version), stream.to_owned());
        if let Some(existing) = inner.entries.get(&key) {
            if existing.version >= snapshot.version {
                return;
            }
            let old = existing.cost(stream);
            inner.bytes -= old;
        }
        inner.bytes += cost;
        inner.entries.insert(key, snapshot);
        while inner.bytes > CAPACITY_BYTES || inner.entries.len() > CAPACITY_ENTRIES {
            inner.evict_some();
        }
    }
}

impl Inner {
    /// Drops about an eighth of the entries; a hash map's order is as good as random here.
    fn evict_some(&mut self) {
        let drop_count = (self.entries.len() / 8).max(1);
        let victims: Vec<_> = self.entries.keys().take(drop_count).cloned().collect();
        for key in victims {
            if let Some(snapshot) = self.entries.remove(&key) {
                self.bytes -= snapshot.cost(&key.1);
            }
        }
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
        let counted: usize = inner.entries.iter().map(|(k, s)| s.cost(&k.1)).sum();
        assert_eq!(counted, inner.bytes);
    }
}

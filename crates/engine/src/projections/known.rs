//! What a projection's runner knows of its committed state while it holds its lease.
//!
//! The holder of a version's lease is the only writer of that version's state, so what it read
//! from the store, and what it committed itself, stays true until its next commit (which it
//! learns of first) or until it loses the lease (when it forgets everything). Reads served from
//! here skip the store: on PostgreSQL each is a round trip, and a catch-up reads a key for
//! nearly every event.
//!
//! Two things are kept: recent values (read or committed), up to [`CACHE_BYTES`], in two
//! generations (a hit in the older one moves to the newer; when the newer fills, the older is
//! dropped); and, when the state was empty as the runner took the lease, the hash of every key
//! it has written since, up to [`MAX_KNOWN_KEYS`]: a key whose hash is not there cannot exist,
//! so a first read of a new key (most reads of a catch-up from position 1) needs no store either.
//! A hash shared by two keys only costs a read.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use super::state::Overlay;

/// Bytes of keys and values one runner keeps (both generations together).
pub const CACHE_BYTES: usize = 16 << 20;
/// Keys whose hashes one runner keeps, about 16 bytes each; past that it stops knowing which
/// keys exist.
pub const MAX_KNOWN_KEYS: usize = 4_000_000;

/// A runner's knowledge of its committed state, shared with the batches it applies.
pub struct KnownState {
    known: Mutex<Known>,
    hasher: RandomState,
}

#[derive(Default)]
struct Known {
    newer: HashMap<String, Option<String>>,
    older: HashMap<String, Option<String>>,
    newer_bytes: usize,
    /// The hashes of every key that may exist, when that is known.
    keys: Option<HashSet<u64>>,
}

/// What is known of a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Its committed value, or `None` for none.
    Known(Option<String>),
    /// Only the store can say.
    Unknown,
}

impl KnownState {
    /// Knowledge that starts with nothing; `empty` says the state held no entry when the
    /// runner took the lease.
    pub fn new(empty: bool) -> Self {
        let known = Known {
            keys: empty.then(HashSet::new),
            ..Known::default()
        };
        KnownState {
            known: Mutex::new(known),
            hasher: RandomState::new(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known of `key`'s committed value.
    pub fn lookup(&self, key: &str) -> Lookup {
        let mut known = self.known();
        if let Some(value) = known.newer.get(key) {
            return Lookup::Known(value.clone());
        }
        if let Some(value) = known.older.remove(key) {
            known.insert(key.to_owned(), value.clone());
            return Lookup::Known(value);
        }
        let hash = self.hasher.hash_one(key);
        match &known.keys {
            Some(keys) if !keys.contains(&hash) => Lookup::Known(None),
            _ => Lookup::Unknown,
        }
    }

    /// Keeps a value read from the store (committed, and so true until this runner commits).
    pub fn read(&self, key: &str, value: &Option<String>) {
        self.known().insert(key.to_owned(), value.clone());
    }

    /// Keeps the writes of a batch that is now durable.
    pub fn committed(&self, writes: &Overlay) {
        let mut known = self.known();
        for (key, value) in writes {
            let hash = self.hasher.hash_one(key.as_str());
            if let Some(keys) = &mut known.keys {
                // A removed key keeps its hash: another key may share it.
                keys.insert(hash);
                if keys.len() > MAX_KNOWN_KEYS {
                    known.keys = None;
                }
            }
            known.insert(key.clone(), value.clone());
        }
    }
}

impl Known {
    fn insert(&mut self, key: String, value: Option<String>) {
        self.older.remove(&key);
        if let Some(old) = self.newer.remove(&key) {
            self.newer_bytes -= entry_size(&key, &old);
        }
        let size = entry_size(&key, &value);
        // A value larger than a generation is read again each time rather than kept.
        if size > CACHE_BYTES / 2 {
            return;
        }
        if self.newer_bytes + size > CACHE_BYTES / 2 {
            self.older = std::mem::take(&mut self.newer);
            self.newer_bytes = 0;
        }
        self.newer_bytes += size;
        self.newer.insert(key, value);
    }
}

/// What an entry costs: its key and value and, roughly, the map's own bookkeeping.
fn entry_size(key: &str, value: &Option<String>) -> usize {
    key.len() + value.as_ref().map_or(0, String::len) + 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(entries: &[(&str, Option<&str>)]) -> Overlay {
        entries
            .iter()
            .map(|(key, value)| (key.to_string(), value.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn a_state_not_empty_at_the_start_knows_only_what_was_read_or_committed() {
        let known = KnownState::new(false);
        assert_eq!(known.lookup("a"), Lookup::Unknown);
        known.read("a", &Some("1".into()));
        known.read("b", &None);
        assert_eq!(known.lookup("a"), Lookup::Known(Some("1".into())));
        assert_eq!(known.lookup("b"), Lookup::Known(None));
        known.committed(&writes(&[("a", None), ("c", Some("3"))]));
        assert_eq!(known.lookup("a"), Lookup::Known(None));
        assert_eq!(known.lookup("c"), Lookup::Known(Some("3".into())));
        assert_eq!(known.lookup("d"), Lookup::Unknown);
    }

    #[test]
    fn a_state_empty_at_the_start_knows_that_keys_never_written_do_not_exist() {
        let known = KnownState::new(true);
        assert_eq!(known.lookup("never"), Lookup::Known(None));
        known.committed(&writes(&[("k", Some("v"))]));
        assert_eq!(known.lookup("k"), Lookup::Known(Some("v".into())));
        // Forgotten values of written keys are read again, never taken as absent.
        let big = "x".repeat(CACHE_BYTES / 4);
        for n in 0..8 {
            known.committed(&writes(&[(&format!("big-{n}"), Some(&big))]));
        }
        assert_eq!(known.lookup("k"), Lookup::Unknown);
        assert_eq!(known.lookup("still-never"), Lookup::Known(None));
    }

    #[test]
    fn the_values_kept_stay_within_their_bound() {
        let known = KnownState::new(false);
        let value = "v".repeat(1000);
        for n in 0..100_000 {
            known.read(&format!("key-{n}"), &Some(value.clone()));
        }
        let inner = known.known();
        let kept: usize = [&inner.newer, &inner.older]
            .iter()
            .flat_map(|map| map.iter())
            .map(|(key, value)| entry_size(key, value))
            .sum();
        assert!(kept <= CACHE_BYTES, "{kept} bytes kept");
        assert!(inner.newer.contains_key("key-99999"));
        // A hit in the older generation moves it to the newer.
        let old = inner.older.keys().next().cloned().unwrap();
        drop(inner);
        assert_eq!(known.lookup(&old), Lookup::Known(Some(value)));
        assert!(known.known().newer.contains_key(&old));
    }
}

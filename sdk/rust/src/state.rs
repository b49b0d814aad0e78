//! Typed access to the key-value state of a projection or a policy, and the batch cache behind
//! it.
//!
//! The host keeps a plugin's state as keys (UTF-8, 1 to 1024 bytes) and values (JSON text, at
//! most 1 MiB). [`State`] reads values into typed Rust values once and keeps them for the rest of
//! the call (a batch of events for a projection's `apply`, one event, timer or rejection for a
//! policy): the second event of a batch on a key finds the value already decoded, and every key
//! written in the call is encoded and written back once, when the call ends well. A call that
//! fails writes nothing. [`StateView`] is the read-only access a projection's queries get.
//!
//! The cache keeps each value as `Box<dyn Any>` holding an `Option<T>` (`None`: absent, or
//! deleted in this call), with the function that encodes it: a key read as one type and then as
//! another goes through its JSON once, so mixing types on a key costs but never misleads.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Failure;

/// Most entries the host returns from one `scan` call.
const HOST_SCAN_PAGE: u32 = 1000;

/// One write of a call, as it reaches the host: a value (JSON text) to store, or a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) value: Option<String>,
}

/// Where the state lives: the host's `state` import in a component, a
/// [`MemoryState`](crate::testing::MemoryState) natively.
pub(crate) trait Backend {
    /// The value stored under `key`.
    fn get(&self, key: &str) -> Option<String>;
    /// Entries whose keys start with `prefix`, in key order, after `after`, at most `limit`.
    fn scan(&self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<(String, String)>;
    /// Applies the writes of a call that ended well, all of them or (with an error) none.
    fn commit(&mut self, writes: Vec<Write>) -> Result<(), Failure>;
}

/// Encodes a cached value (an `Option<T>` behind `dyn Any`) as JSON text; `None` if absent.
type Encode = fn(&dyn Any) -> Result<Option<String>, Failure>;

/// JSON text written as it is, by [`State::put_raw`].
struct RawJson(String);

/// A key's value as this call knows it.
struct Slot {
    /// An `Option<T>` for the `T` it was last used as; `None` when absent.
    value: Box<dyn Any>,
    encode: Encode,
    present: bool,
    /// Written (or deleted) in this call.
    dirty: bool,
}

impl Slot {
    fn typed<T: Serialize + 'static>(value: Option<T>, dirty: bool) -> Slot {
        Slot {
            present: value.is_some(),
            value: Box::new(value),
            encode: encode_typed::<T>,
            dirty,
        }
    }

    fn raw(value: Option<String>, dirty: bool) -> Slot {
        Slot {
            present: value.is_some(),
            value: Box::new(value.map(RawJson)),
            encode: encode_raw,
            dirty,
        }
    }

    /// The value as a `T`: a clone if it is held as one, else decoded from its JSON.
    fn cloned<T: Serialize + DeserializeOwned + Clone + 'static>(
        &self,
        key: &str,
    ) -> Result<Option<T>, Failure> {
        match self.value.downcast_ref::<Option<T>>() {
            Some(value) => Ok(value.clone()),
            None => (self.encode)(&*self.value)?
                .map(|text| decode_value::<T>(key, &text))
                .transpose(),
        }
    }
}

fn encode_typed<T: Serialize + 'static>(value: &dyn Any) -> Result<Option<String>, Failure> {
    let value = value
        .downcast_ref::<Option<T>>()
        .expect("a slot's encoder matches its value");
    value
        .as_ref()
        .map(|value| {
            serde_json::to_string(value).map_err(|error| {
                Failure::new(format!(
                    "a {} cannot be serialized to JSON: {error}",
                    std::any::type_name::<T>()
                ))
            })
        })
        .transpose()
}

fn encode_raw(value: &dyn Any) -> Result<Option<String>, Failure> {
    let value = value
        .downcast_ref::<Option<RawJson>>()
        .expect("a slot's encoder matches its value");
    Ok(value.as_ref().map(|RawJson(text)| text.clone()))
}

fn decode_value<T: DeserializeOwned>(key: &str, text: &str) -> Result<T, Failure> {
    serde_json::from_str(text).map_err(|error| {
        Failure::new(format!(
            "state key {key:?} holds {} bytes that do not decode as a {}: {error}",
            text.len(),
            std::any::type_name::<T>()
        ))
    })
}

/// The state of a projection or a policy, read and written while it handles events: typed
/// values (any serde type, stored as JSON) under string keys.
///
/// Values read in a call stay decoded for the rest of it, and written values are encoded and
/// handed to the host once, when the call ends well; so a batch of a thousand events on one key
/// decodes and encodes that key's value once. Reads see the writes made before them in the same
/// call, [`scan`](State::scan) included. If the call fails, none of its writes are kept.
///
/// ```
/// # use evhost_sdk::testing::MemoryState;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
/// struct Tally { seen: u64 }
///
/// let mut memory = MemoryState::new();
/// memory.with_state(|state| {
///     state.update("tally/a", |tally: &mut Tally| tally.seen += 1)?;
///     state.update("tally/a", |tally: &mut Tally| tally.seen += 1)?;
///     state.put("tally/b", Tally { seen: 7 });
///     assert_eq!(state.get::<Tally>("tally/a")?, Some(Tally { seen: 2 }));
///     let all = state.scan::<Tally>("tally/", None, 10)?;
///     assert_eq!(all.len(), 2);
///     Ok(())
/// })?;
/// assert_eq!(memory.get("tally/a"), Some(r#"{"seen":2}"#));
/// # Ok::<(), evhost_sdk::Failure>(())
/// ```
pub struct State<'s> {
    backend: &'s mut dyn Backend,
    /// Keyed by hash: every access looks a key up, while only scans and the write-back need
    /// key order, and they sort what they take.
    cache: HashMap<String, Slot>,
}

impl<'s> State<'s> {
    pub(crate) fn new(backend: &'s mut dyn Backend) -> Self {
        State {
            backend,
            cache: HashMap::new(),
        }
    }

    /// The value under `key`, decoded as a `T`; `None` if the key is absent.
    ///
    /// A value that does not decode as a `T` is a failure that names the key.
    pub fn get<T>(&mut self, key: &str) -> Result<Option<T>, Failure>
    where
        T: Serialize + DeserializeOwned + Clone + 'static,
    {
        let slot = self.slot::<T>(key)?;
        Ok(value_mut::<T>(slot).clone())
    }

    /// The value under `key` as JSON text, as the host would store it now.
    pub fn get_raw(&mut self, key: &str) -> Result<Option<String>, Failure> {
        match self.cache.get(key) {
            Some(slot) => (slot.encode)(&*slot.value),
            None => Ok(self.backend.get(key)),
        }
    }

    /// Whether `key` holds a value.
    pub fn contains(&mut self, key: &str) -> bool {
        match self.cache.get(key) {
            Some(slot) => slot.present,
            None => {
                let value = self.backend.get(key);
                let present = value.is_some();
                self.cache.insert(key.to_owned(), Slot::raw(value, false));
                present
            }
        }
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn put<T: Serialize + 'static>(&mut self, key: &str, value: T) {
        self.set_slot(key, Slot::typed(Some(value), true));
    }

    /// Stores `json` under `key` as it is. It must be JSON text: the host refuses anything else,
    /// and the whole call fails. Prefer [`put`](State::put).
    pub fn put_raw(&mut self, key: &str, json: impl Into<String>) {
        self.set_slot(key, Slot::raw(Some(json.into()), true));
    }

    /// Removes `key`, if it holds a value.
    pub fn delete(&mut self, key: &str) {
        match self.cache.get_mut(key) {
            // Known to be absent since the call began: nothing to tell the host.
            Some(slot) if !slot.present && !slot.dirty => {}
            Some(slot) => *slot = Slot::raw(None, true),
            None => self.set_slot(key, Slot::raw(None, true)),
        }
    }

    /// Changes the value under `key` in place, starting from `T::default()` if the key is
    /// absent, and returns what `change` returns. The key is written back when the call ends.
    pub fn update<T, R>(
        &mut self,
        key: &str,
        change: impl FnOnce(&mut T) -> R,
    ) -> Result<R, Failure>
    where
        T: Default + Serialize + DeserializeOwned + 'static,
    {
        let slot = self.slot::<T>(key)?;
        slot.present = true;
        slot.dirty = true;
        Ok(change(value_mut::<T>(slot).get_or_insert_with(T::default)))
    }

    /// Changes the value under `key`, present (`Some`) or absent (`None`), and returns what
    /// `change` returns: leaving `Some` stores the value, leaving `None` removes the key.
    pub fn alter<T, R>(
        &mut self,
        key: &str,
        change: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, Failure>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        let slot = self.slot::<T>(key)?;
        let value = value_mut::<T>(slot);
        let was_present = value.is_some();
        let result = change(value);
        let present = value.is_some();
        slot.present = present;
        slot.dirty |= present || was_present;
        Ok(result)
    }

    /// Entries whose keys start with `prefix`, in key order, after the key `after` (if given),
    /// at most `limit` of them, with their values decoded as `T`. Writes of this call are seen.
    ///
    /// The host serves a scan in pages of up to 1000 entries; this asks for as many pages as it
    /// takes to return `limit` entries or reach the last one.
    pub fn scan<T>(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, T)>, Failure>
    where
        T: Serialize + DeserializeOwned + Clone + 'static,
    {
        let limit = limit as usize;
        let mut found = Vec::new();
        let mut cursor = after.map(str::to_owned);
        while found.len() < limit {
            let request = (limit - found.len()).min(HOST_SCAN_PAGE as usize) as u32;
            let page = self.backend.scan(prefix, cursor.as_deref(), request);
            let exhausted = page.len() < request as usize;
            // The page holds every stored key from the cursor up to its last key; the cache
            // overrides the stored values within that window.
            let upper = if exhausted {
                None
            } else {
                page.last().map(|(key, _)| key.clone())
            };
            let mut window = BTreeMap::new();
            for (key, text) in page {
                if !self.cache.contains_key(&key) {
                    let value = decode_value::<T>(&key, &text)?;
                    window.insert(key, value);
                }
            }
            let lower = match &cursor {
                Some(cursor) if cursor.as_str() >= prefix => Bound::Excluded(cursor.as_str()),
                _ => Bound::Included(prefix),
            };
            let in_window = |key: &str| {
                key.starts_with(prefix)
                    && match lower {
                        Bound::Excluded(lower) => key > lower,
                        Bound::Included(lower) => key >= lower,
                        Bound::Unbounded => true,
                    }
                    && upper.as_deref().is_none_or(|upper| key <= upper)
            };
            for (key, slot) in self.cache.iter().filter(|(key, _)| in_window(key)) {
                match slot.cloned::<T>(key)? {
                    Some(value) => {
                        window.insert(key.clone(), value);
                    }
                    // Removed in this call: the stored value no longer counts.
                    None => {
                        window.remove(key);
                    }
                }
            }
            found.extend(window);
            match upper {
                Some(upper) => cursor = Some(upper),
                None => break,
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    /// Hands the writes of the call to the backend: each key written at least once, once.
    pub(crate) fn commit(self) -> Result<(), Failure> {
        let mut dirty: Vec<(String, Slot)> =
            self.cache.into_iter().filter(|(_, s)| s.dirty).collect();
        dirty.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut writes = Vec::with_capacity(dirty.len());
        for (key, slot) in dirty {
            let value = (slot.encode)(&*slot.value)
                .map_err(|failure| Failure::new(format!("state key {key:?}: {failure}")))?;
            writes.push(Write { key, value });
        }
        if writes.is_empty() {
            return Ok(());
        }
        self.backend.commit(writes)
    }

    fn set_slot(&mut self, key: &str, slot: Slot) {
        match self.cache.get_mut(key) {
            Some(existing) => *existing = slot,
            None => {
                self.cache.insert(key.to_owned(), slot);
            }
        }
    }

    /// The cache's slot for `key`, loaded from the backend if needed, holding an `Option<T>`.
    fn slot<T>(&mut self, key: &str) -> Result<&mut Slot, Failure>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        if !self.cache.contains_key(key) {
            let value = match self.backend.get(key) {
                Some(text) => Some(decode_value::<T>(key, &text)?),
                None => None,
            };
            self.cache.insert(key.to_owned(), Slot::typed(value, false));
        }
        let slot = self.cache.get_mut(key).expect("inserted above");
        if !slot.value.is::<Option<T>>() {
            let value = (slot.encode)(&*slot.value)?
                .map(|text| decode_value::<T>(key, &text))
                .transpose()?;
            slot.value = Box::new(value);
            slot.encode = encode_typed::<T>;
        }
        Ok(slot)
    }
}

fn value_mut<T: 'static>(slot: &mut Slot) -> &mut Option<T> {
    slot.value
        .downcast_mut::<Option<T>>()
        .expect("the slot was made to hold this type")
}

/// The state of a projection as its queries see it: read-only.
pub struct StateView<'s> {
    backend: &'s dyn Backend,
}

impl<'s> StateView<'s> {
    pub(crate) fn new(backend: &'s dyn Backend) -> Self {
        StateView { backend }
    }

    /// The value under `key`, decoded as a `T`; `None` if the key is absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Failure> {
        self.backend
            .get(key)
            .map(|text| decode_value::<T>(key, &text))
            .transpose()
    }

    /// The value under `key` as JSON text.
    pub fn get_raw(&self, key: &str) -> Option<String> {
        self.backend.get(key)
    }

    /// Entries whose keys start with `prefix`, in key order, after the key `after` (if given),
    /// at most `limit` of them, with their values decoded as `T`; in as many host pages as it
    /// takes (up to 1000 entries each).
    pub fn scan<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, T)>, Failure> {
        self.scan_raw(prefix, after, limit)
            .into_iter()
            .map(|(key, text)| {
                let value = decode_value::<T>(&key, &text)?;
                Ok((key, value))
            })
            .collect()
    }

    /// Like [`scan`](StateView::scan), with the values as JSON text.
    pub fn scan_raw(&self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<(String, String)> {
        let limit = limit as usize;
        let mut found: Vec<(String, String)> = Vec::new();
        while found.len() < limit {
            let request = (limit - found.len()).min(HOST_SCAN_PAGE as usize) as u32;
            let cursor = found.last().map(|(key, _)| key.as_str()).or(after);
            let page = self.backend.scan(prefix, cursor, request);
            let exhausted = page.len() < request as usize;
            found.extend(page);
            if exhausted {
                break;
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use crate::testing::MemoryState;

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Visit {
        room: String,
        moves: u32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct RoomOnly {
        room: String,
    }

    fn seeded(keys: &[&str]) -> MemoryState {
        let mut memory = MemoryState::new();
        for key in keys {
            memory.insert(key, &Visit::default()).unwrap();
        }
        memory
    }

    #[test]
    fn each_written_key_is_written_once_per_call() {
        let mut memory = MemoryState::new();
        memory
            .with_state(|state| {
                for _ in 0..100 {
                    state.update("visit/1", |visit: &mut Visit| visit.moves += 1)?;
                    state.update("events", |n: &mut u64| *n += 1)?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(memory.write_count(), 2);
        assert_eq!(memory.get("visit/1"), Some(r#"{"room":"","moves":100}"#));
        assert_eq!(memory.get("events"), Some("100"));
    }

    #[test]
    fn reads_see_the_writes_of_the_call() {
        let mut memory = seeded(&["visit/1"]);
        memory
            .with_state(|state| {
                state.put(
                    "visit/2",
                    Visit {
                        room: "A".into(),
                        moves: 1,
                    },
                );
                assert_eq!(state.get::<Visit>("visit/2")?.unwrap().room, "A");
                state.delete("visit/1");
                assert_eq!(state.get::<Visit>("visit/1")?, None);
                assert!(!state.contains("visit/1"));
                assert_eq!(
                    state.get_raw("visit/2")?.as_deref(),
                    Some(r#"{"room":"A","moves":1}"#)
                );
                // Another type on the same key goes through the JSON.
                assert_eq!(
                    state.get::<RoomOnly>("visit/2")?,
                    Some(RoomOnly { room: "A".into() })
                );
                state.put_raw("raw", r#"{"room":"R","moves":3}"#);
                assert_eq!(state.get::<Visit>("raw")?.unwrap().moves, 3);
                Ok(())
            })
            .unwrap();
        assert_eq!(memory.get("visit/1"), None);
        assert_eq!(memory.get("raw"), Some(r#"{"room":"R","moves":3}"#));
    }

    #[test]
    fn alter_stores_or_removes() {
        let mut memory = seeded(&["a"]);
        memory
            .with_state(|state| {
                state.alter("a", |visit: &mut Option<Visit>| *visit = None)?;
                state.alter("b", |visit: &mut Option<Visit>| assert!(visit.is_none()))?;
                state.alter("c", |visit: &mut Option<Visit>| {
                    *visit = Some(Visit::default())
                })?;
                Ok(())
            })
            .unwrap();
        assert_eq!(memory.iter().map(|(key, _)| key).collect::<Vec<_>>(), ["c"]);
        // `b` was absent and stayed so: no write for it.
        assert_eq!(memory.write_count(), 1 + 2);
    }

    #[test]
    fn a_failed_call_writes_nothing() {
        let mut memory = seeded(&["a"]);
        let result = memory.with_state(|state| {
            state.put("b", 1);
            state.delete("a");
            Err::<(), _>(crate::Failure::new("no"))
        });
        assert!(result.is_err());
        assert_eq!(memory.iter().map(|(key, _)| key).collect::<Vec<_>>(), ["a"]);
        let result = memory.with_state(|state| {
            state.put("b", 1);
            state.put_raw("c", "not json");
            Ok(())
        });
        assert!(result.unwrap_err().message().contains("not JSON text"));
        assert_eq!(memory.get("b"), None);
    }

    #[test]
    fn values_that_do_not_decode_name_their_key() {
        let mut memory = MemoryState::new();
        memory.insert("n", &"text").unwrap();
        let failure = memory
            .with_state(|state| state.get::<u64>("n"))
            .unwrap_err();
        assert!(
            failure
                .message()
                .starts_with(r#"state key "n" holds 6 bytes"#),
            "{failure}"
        );
    }

    #[test]
    fn scan_merges_the_calls_writes_in_key_order() {
        let mut memory = seeded(&["p/1", "p/2", "p/3", "p/5", "q/1"]);
        memory
            .with_state(|state| {
                state.delete("p/2");
                state.put(
                    "p/4",
                    Visit {
                        room: "new".into(),
                        moves: 0,
                    },
                );
                state.update("p/5", |visit: &mut Visit| visit.moves = 5)?;
                state.put("p/0", Visit::default());
                let keys = |found: Vec<(String, Visit)>| {
                    found.into_iter().map(|(key, _)| key).collect::<Vec<_>>()
                };
                assert_eq!(
                    keys(state.scan("p/", None, 10)?),
                    ["p/0", "p/1", "p/3", "p/4", "p/5"]
                );
                assert_eq!(keys(state.scan("p/", Some("p/1"), 2)?), ["p/3", "p/4"]);
                assert_eq!(keys(state.scan("p/", Some("a"), 1)?), ["p/0"]);
                assert_eq!(
                    keys(state.scan("p/", Some("p/5"), 10)?),
                    Vec::<String>::new()
                );
                let all = state.scan::<Visit>("p/", None, 10)?;
                assert_eq!(all[4].1.moves, 5);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn scans_page_past_the_hosts_page_size() {
        let mut memory = MemoryState::new();
        memory
            .with_state(|state| {
                for index in 0..2500 {
                    state.put(&format!("k/{index:05}"), index);
                }
                Ok(())
            })
            .unwrap();
        memory
            .with_state(|state| {
                for index in (0..2500).step_by(2) {
                    state.delete(&format!("k/{index:05}"));
                }
                let found = state.scan::<u32>("k/", None, 1200)?;
                assert_eq!(found.len(), 1200);
                assert!(found.iter().all(|(_, value)| value % 2 == 1));
                assert_eq!(found[1199].1, 2399);
                assert_eq!(state.scan::<u32>("k/", None, 5000)?.len(), 1250);
                Ok(())
            })
            .unwrap();
        assert_eq!(memory.view().scan_raw("k/", None, 5000).len(), 1250);
        assert_eq!(
            memory
                .view()
                .scan::<u32>("k/", Some("k/02000"), 5000)
                .unwrap()
                .len(),
            250
        );
    }
}

//! The key-value state a projection or policy version sees during its calls: what is committed
//! (a store snapshot) under the writes of the batch in progress, under the writes of the call in
//! progress. A call that fails leaves none of its writes; a batch's writes leave as one list of
//! [`DataWrite`]s, committed with the checkpoint.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use evhost_runtime::{PluginFailure, StateAccess};
use evhost_store::{DataSnapshot, DataWrite};

use super::known::{KnownState, Lookup};
use crate::wait::wait;

/// Writes not yet committed: a value, or `None` for a removal.
pub type Overlay = BTreeMap<String, Option<String>>;

/// Most writes (puts and deletes) one batch of calls may make, and most bytes of keys and
/// values they may carry: what one transaction of plugin state may hold, so that no plugin can
/// make the host hold gigabytes or stall the writer for everyone while it commits.
pub const MAX_WRITES_PER_BATCH: usize = 100_000;
pub const MAX_WRITE_BYTES_PER_BATCH: usize = 64 << 20;

#[derive(Default)]
struct Layers {
    /// The writes of the calls of this batch that succeeded.
    batch: Overlay,
    /// The writes of the call in progress.
    call: Overlay,
    /// How many writes the calls of the batch made, and the bytes of their keys and values:
    /// those that succeeded, and those of the call in progress.
    batch_written: Written,
    call_written: Written,
    /// Set when a call failed because the batch was full: the writes of the calls before it
    /// left it no room, though the call alone might fit in a batch of its own.
    full: bool,
    /// How the state's size (keys and values) changes with the batch's and the call's writes.
    batch_growth: i64,
    call_growth: i64,
    /// The sizes of committed values already read in this batch (only while a budget is kept),
    /// so that a write after a read of the same key does not read it again.
    committed_sizes: std::collections::HashMap<String, Option<usize>>,
}

/// How large a version's state is before a batch, and how large it may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBudget {
    /// Bytes of keys and values, with the writes of the batch before (still committing).
    pub bytes: u64,
    pub max_bytes: u64,
}

#[derive(Default, Clone, Copy)]
struct Written {
    writes: usize,
    bytes: usize,
}

/// The state of one version during one batch of calls.
pub struct BatchState {
    space: Arc<str>,
    snapshot: Box<dyn DataSnapshot>,
    /// The writes of the batch before, still being committed when the snapshot was taken.
    prior: Option<Arc<Overlay>>,
    layers: Mutex<Layers>,
    read_only: bool,
    /// The size the state may grow to, when it is kept to one.
    budget: Option<StateBudget>,
    /// What the runner knows of the committed state, which answers reads before the snapshot.
    known: Option<Arc<KnownState>>,
}

impl BatchState {
    /// State for calls that write, over `snapshot` and the writes of the batch before
    /// (`prior`), which the snapshot may not show yet: the writes collect until
    /// [`BatchState::into_writes`].
    pub fn writable(
        space: Arc<str>,
        snapshot: Box<dyn DataSnapshot>,
        prior: Option<Arc<Overlay>>,
    ) -> Self {
        BatchState {
            space,
            snapshot,
            prior,
            layers: Mutex::default(),
            read_only: false,
            budget: None,
            known: None,
        }
    }

    /// The same state, kept within `budget`: a write that would grow it past its maximum
    /// fails the call.
    pub fn with_budget(mut self, budget: Option<StateBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// The same state, its committed values answered from what the runner knows first.
    pub fn with_known(mut self, known: Option<Arc<KnownState>>) -> Self {
        self.known = known;
        self
    }

    /// The state's size once the batch's writes are committed, when it is kept to a budget.
    pub fn bytes_after(&self) -> Option<u64> {
        let growth = self.layers().batch_growth;
        self.budget
            .map(|budget| budget.bytes.saturating_add_signed(growth))
    }

    /// State for queries: any write fails the call.
    pub fn read_only(space: Arc<str>, snapshot: Box<dyn DataSnapshot>) -> Self {
        BatchState {
            read_only: true,
            ..BatchState::writable(space, snapshot, None)
        }
    }

    fn layers(&self) -> std::sync::MutexGuard<'_, Layers> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one plugin call with this state behind its `state` import, and `accept` on its
    /// answer; the call's writes are kept only if both succeed, so an answer the host cannot
    /// use leaves no more behind than a trap. A plugin's own error comes back after `refusal`.
    pub fn call<T, U>(
        self: &Arc<Self>,
        refusal: &str,
        f: impl FnOnce(Arc<BatchState>) -> Result<Result<T, String>, PluginFailure>,
        accept: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<U, String> {
        let outcome = match f(self.clone()) {
            Ok(Ok(answer)) => accept(answer),
            Ok(Err(reason)) => Err(format!("{refusal}: {reason}")),
            Err(failure) => Err(failure.to_string()),
        };
        match &outcome {
            Ok(_) => self.call_succeeded(),
            Err(_) => self.call_failed(),
        }
        outcome
    }

    /// Keeps the writes of the call that just succeeded.
    fn call_succeeded(&self) {
        let mut layers = self.layers();
        layers.full = false;
        layers.batch_growth += std::mem::take(&mut layers.call_growth);
        let written = std::mem::take(&mut layers.call_written);
        layers.batch_written.writes += written.writes;
        layers.batch_written.bytes += written.bytes;
        let call = std::mem::take(&mut layers.call);
        // Most batches are one call: its writes become the batch's without being sorted again.
        if layers.batch.is_empty() {
            layers.batch = call;
        } else {
            layers.batch.extend(call);
        }
    }

    /// Whether the last call failed only because the calls before it in this batch had filled
    /// it: the batch should end before that call, which is tried again in a batch of its own.
    pub fn ended_full(&self) -> bool {
        self.layers().full
    }

    /// Forgets the writes of the call that just failed.
    fn call_failed(&self) {
        let mut layers = self.layers();
        layers.call.clear();
        layers.call_written = Written::default();
        layers.call_growth = 0;
    }

    /// The batch's writes, in key order, as the store takes them and as the next batch sees
    /// them while they commit.
    pub fn into_writes(self) -> (Vec<DataWrite>, Arc<Overlay>) {
        let layers = self.layers.into_inner().unwrap_or_else(|p| p.into_inner());
        let writes = layers
            .batch
            .iter()
            .map(|(key, value)| DataWrite {
                space: self.space.clone(),
                key: key.clone(),
                value: value.as_ref().map(|v| v.as_bytes().to_vec()),
            })
            .collect();
        (writes, Arc::new(layers.batch))
    }

    fn committed(&self, key: &str) -> Result<Option<String>, String> {
        if let Some(known) = &self.known
            && let Lookup::Known(value) = known.lookup(key)
        {
            return Ok(value);
        }
        let value = wait(self.snapshot.get(&self.space, key))
            .map_err(|e| format!("state cannot be read: {e}"))?;
        let value = value.map(utf8).transpose()?;
        if let Some(known) = &self.known {
            known.read(key, &value);
        }
        Ok(value)
    }

    fn write(&self, key: String, value: Option<String>) -> Result<(), String> {
        if self.read_only {
            return Err("the state is read-only during a query".into());
        }
        let mut guard = self.layers();
        let layers = &mut *guard;
        layers.call_written.writes += 1;
        layers.call_written.bytes += key.len() + value.as_ref().map_or(0, String::len);
        let (writes, bytes) = (
            layers.call_written.writes + layers.batch_written.writes,
            layers.call_written.bytes + layers.batch_written.bytes,
        );
        if writes > MAX_WRITES_PER_BATCH || bytes > MAX_WRITE_BYTES_PER_BATCH {
            layers.full = layers.batch_written.writes > 0;
        }
        if writes > MAX_WRITES_PER_BATCH {
            return Err(format!(
                "more than {MAX_WRITES_PER_BATCH} state writes in one batch; that is the limit"
            ));
        }
        if bytes > MAX_WRITE_BYTES_PER_BATCH {
            return Err(format!(
                "state writes of more than {MAX_WRITE_BYTES_PER_BATCH} bytes in one batch; that \
                 is the limit"
            ));
        }
        if let Some(budget) = self.budget {
            let entry = |len: Option<usize>| len.map_or(0, |len| (key.len() + len) as i64);
            let before = entry(self.visible_len(layers, &key)?);
            let growth = entry(value.as_ref().map(String::len)) - before;
            let after = budget
                .bytes
                .saturating_add_signed(layers.batch_growth + layers.call_growth + growth);
            if growth > 0 && after > budget.max_bytes {
                return Err(format!(
                    "the state would grow to {after} bytes, past its maximum of {} bytes \
                     (state_mib)",
                    budget.max_bytes
                ));
            }
            layers.call_growth += growth;
        }
        layers.call.insert(key, value);
        Ok(())
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| "a stored state value is not UTF-8".to_owned())
}

impl BatchState {
    /// The value a read of `key` sees now: the call's, the batch's, the batch before's, or the
    /// committed one (whose size is kept, while a budget is, for the write that may follow).
    fn visible(&self, layers: &mut Layers, key: &str) -> Result<Option<String>, String> {
        if let Some(value) = self.pending(layers, key) {
            return Ok(value.clone());
        }
        let value = self.committed(key)?;
        if self.budget.is_some() {
            let len = value.as_ref().map(String::len);
            layers.committed_sizes.insert(key.to_owned(), len);
        }
        Ok(value)
    }

    /// The size of the value a read of `key` sees now, without reading a committed value twice.
    fn visible_len(&self, layers: &mut Layers, key: &str) -> Result<Option<usize>, String> {
        if let Some(value) = self.pending(layers, key) {
            return Ok(value.as_ref().map(String::len));
        }
        if let Some(len) = layers.committed_sizes.get(key) {
            return Ok(*len);
        }
        Ok(self.visible(layers, key)?.map(|value| value.len()))
    }

    /// An uncommitted write of `key`: the call's, the batch's or the batch before's.
    fn pending<'a>(&'a self, layers: &'a Layers, key: &str) -> Option<&'a Option<String>> {
        let pending = layers.call.get(key).or_else(|| layers.batch.get(key));
        pending.or_else(|| self.prior.as_ref()?.get(key))
    }
}

impl StateAccess for BatchState {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        let mut layers = self.layers();
        self.visible(&mut layers, key)
    }

    fn put(&self, key: String, value: String) -> Result<(), String> {
        self.write(key, Some(value))
    }

    fn delete(&self, key: String) -> Result<(), String> {
        self.write(key, None)
    }

    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, String> {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        // The uncommitted writes in range: the call's over the batch's over the batch before.
        let mut pending = Overlay::new();
        {
            let layers = self.layers();
            let prior = self.prior.as_deref();
            for layer in prior.into_iter().chain([&layers.batch, &layers.call]) {
                let in_range = layer
                    .range::<str, _>((start, Bound::Unbounded))
                    .take_while(|(key, _)| key.starts_with(prefix));
                pending.extend(in_range.map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        // Each pending write can hide at most one committed entry, so this many committed
        // entries always leave `limit` after the removals.
        let wanted = limit + pending.len();
        let committed = wait(self.snapshot.scan(&self.space, prefix, after, wanted))
            .map_err(|e| format!("state cannot be read: {e}"))?;
        // When the committed entries were cut short, keys past the last one are unknown.
        let bound = (committed.len() == wanted)
            .then(|| committed.last().map(|(key, _)| key.clone()))
            .flatten();
        let mut merged = BTreeMap::new();
        for (key, value) in committed {
            merged.insert(key, Some(utf8(value)?));
        }
        for (key, value) in pending {
            if bound.as_ref().is_none_or(|bound| &key <= bound) {
                merged.insert(key, value);
            }
        }
        Ok(merged
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .take(limit)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_store::memory::MemoryStore;
    use evhost_store::{Commits, PluginData};

    fn put(state: &BatchState, key: &str, value: &str) {
        state.put(key.into(), value.into()).unwrap();
    }

    fn keys(entries: Vec<(String, String)>) -> Vec<String> {
        entries.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn reads_see_the_call_over_the_batch_over_the_store_and_failed_calls_vanish() {
        let store = MemoryStore::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let space: Arc<str> = "projection/test".into();
        let committed: Vec<DataWrite> = ["a/1", "a/2", "a/3", "a/4", "b/1"]
            .iter()
            .map(|key| DataWrite {
                space: space.clone(),
                key: (*key).into(),
                value: Some(b"0".to_vec()),
            })
            .collect();
        runtime.block_on(store.write_data(committed, None)).unwrap();
        // Another space with the same keys stays apart.
        runtime
            .block_on(store.write_data(
                vec![DataWrite {
                    space: "projection/other".into(),
                    key: "a/0".into(),
                    value: Some(b"9".to_vec()),
                }],
                None,
            ))
            .unwrap();

        let prior: Overlay = [
            ("b/2".to_owned(), Some("2".to_owned())),
            ("b/1".to_owned(), None),
        ]
        .into_iter()
        .collect();
        let state = BatchState::writable(
            space.clone(),
            runtime.block_on(store.snapshot()).unwrap(),
            Some(Arc::new(prior)),
        );
        put(&state, "a/2", "2");
        state.delete("a/3".into()).unwrap();
        put(&state, "a/25", "25");
        state.call_succeeded();
        put(&state, "a/4", "4");
        state.delete("a/1".into()).unwrap();
        assert_eq!(state.get("a/4").unwrap().as_deref(), Some("4"));
        assert_eq!(
            keys(state.scan("a/", None, 10).unwrap()),
            ["a/2", "a/25", "a/4"]
        );
        // The page is cut where the store's entries end, never skipping a committed key.
        assert_eq!(keys(state.scan("a/", None, 2).unwrap()), ["a/2", "a/25"]);
        assert_eq!(keys(state.scan("a/", Some("a/25"), 2).unwrap()), ["a/4"]);
        state.call_failed();
        assert_eq!(state.get("a/4").unwrap().as_deref(), Some("0"));
        assert_eq!(
            keys(state.scan("a/", None, 10).unwrap()),
            ["a/1", "a/2", "a/25", "a/4"]
        );
        // The batch before is seen over the store: b/1 removed, b/2 added.
        assert_eq!(keys(state.scan("b", None, 10).unwrap()), ["b/2"]);
        assert_eq!(state.get("b/1").unwrap(), None);

        let (writes, overlay) = state.into_writes();
        assert_eq!(overlay.len(), writes.len());
        let written: Vec<(&str, Option<&[u8]>)> = writes
            .iter()
            .map(|w| (w.key.as_str(), w.value.as_deref()))
            .collect();
        assert_eq!(
            written,
            [
                ("a/2", Some(&b"2"[..])),
                ("a/25", Some(&b"25"[..])),
                ("a/3", None)
            ]
        );
        runtime.block_on(store.write_data(writes, None)).unwrap();
        let snapshot = runtime.block_on(store.snapshot()).unwrap();
        assert_eq!(runtime.block_on(snapshot.get(&space, "a/3")).unwrap(), None);
        assert_eq!(
            runtime
                .block_on(snapshot.scan(&space, "a/", Some("a/2"), 10))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            runtime
                .block_on(snapshot.get("projection/other", "a/0"))
                .unwrap(),
            Some(b"9".to_vec())
        );

        // An answer the host refuses drops the call's writes, as a plugin's own error does.
        let state = Arc::new(BatchState::writable(
            space.clone(),
            runtime.block_on(store.snapshot()).unwrap(),
            None,
        ));
        let refused = state.call(
            "refused",
            |state| {
                put(&state, "a/9", "9");
                Ok(Ok(()))
            },
            |()| Err::<(), _>("unusable answer".to_owned()),
        );
        assert_eq!(refused, Err("unusable answer".to_owned()));
        assert_eq!(state.get("a/9").unwrap(), None);
        let own_error = state.call(
            "refused",
            |state| {
                put(&state, "a/9", "9");
                Ok(Err::<(), _>("no".to_owned()))
            },
            Ok,
        );
        assert_eq!(own_error, Err("refused: no".to_owned()));
        assert_eq!(state.get("a/9").unwrap(), None);
        state
            .call(
                "refused",
                |state| {
                    put(&state, "a/9", "9");
                    Ok(Ok(()))
                },
                Ok,
            )
            .unwrap();
        assert_eq!(state.get("a/9").unwrap().as_deref(), Some("9"));

        let read_only = BatchState::read_only(space, runtime.block_on(store.snapshot()).unwrap());
        assert!(read_only.put("x".into(), "1".into()).is_err());
        assert!(read_only.delete("a/1".into()).is_err());
    }
}

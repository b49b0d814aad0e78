//! One command at a time per stream, within this host.
//!
//! Commands on one stream all decide on the version they loaded; run side by side, all but one
//! of them would conflict and decide again, and under steady load the same ones can lose round
//! after round. Queueing them per stream lets each decide on the state the previous one left, so
//! conflicts come only from writers outside this host's commands (direct appends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub(super) struct StreamLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a stream's turn; dropping it lets the next command on the stream run.
pub(super) struct StreamTurn<'a> {
    locks: &'a StreamLocks,
    stream: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl StreamLocks {
    /// Waits for the turn of `stream`.
    pub(super) async fn turn(&self, stream: &str) -> StreamTurn<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(stream.to_owned()).or_default().clone()
        };
        StreamTurn {
            locks: self,
            stream: stream.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for StreamTurn<'_> {
    fn drop(&mut self) {
        let mut locks = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        self.guard = None;
        // Nobody else holds or waits for the lock when only the map refers to it: forget it, so
        // the map holds only streams with commands in flight.
        if locks
            .get(&self.stream)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_are_taken_one_at_a_time_and_forgotten_after() {
        let locks = Arc::new(StreamLocks::default());
        let first = locks.turn("visit-1").await;
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _turn = locks.turn("visit-1").await;
            })
        };
        let other = locks.turn("visit-2").await;
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "the second turn waits for the first"
        );
        drop(first);
        waiting.await.unwrap();
        drop(other);
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}

//! How many plugin calls run at once, whatever asks for them: past the bound a call waits for
//! one to end before it starts. Calls are CPU-bound; running more of them than the machine has
//! cores only makes each take longer (and the epoch ticker, which enforces every deadline, wait
//! for a core), so a call's time budget would no longer be the time it runs.
//!
//! Requests that want plugin calls are admitted before this, with a bounded wait
//! (`plugins::Admission`); what waits here is bounded by that and by the number of runners.

use std::sync::{Condvar, Mutex};

/// The bound on calls running at once.
pub struct CallGate {
    running: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// A call's place among the running ones, given back when dropped.
pub struct Running<'a>(&'a CallGate);

impl CallGate {
    pub fn new(max: usize) -> Self {
        CallGate {
            running: Mutex::new(0),
            freed: Condvar::new(),
            max: max.max(1),
        }
    }

    /// The default bound: two calls per core, so that a core is never idle while a call waits
    /// and the machine is never shared by more calls than that.
    pub fn default_max() -> usize {
        2 * std::thread::available_parallelism().map_or(2, usize::from)
    }

    /// Waits until fewer than the bound are running, and counts this call in.
    pub fn enter(&self) -> Running<'_> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= self.max {
            running = self.freed.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
        Running(self)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        *running -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn no_more_than_the_bound_run_at_once() {
        let gate = Arc::new(CallGate::new(3));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let (gate, now, most) = (gate.clone(), now.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _running = gate.enter();
                        let inside = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(inside, Ordering::SeqCst);
                        std::thread::yield_now();
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert_eq!(*gate.running.lock().unwrap(), 0);
    }
}

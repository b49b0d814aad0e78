//! Resident memory of the servers under test, read from `/proc` every 100 ms on a thread of its
//! own so that sampling never waits behind the load generator.
//!
//! One process (evhost, nats-server) is measured by its `VmRSS`. A server made of a process
//! tree (PostgreSQL: the postmaster and a backend per connection) is measured by the sum of
//! `Pss` over the tree, because the processes share their buffers and summed RSS would count
//! that memory once per backend.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(100);

/// What to measure.
#[derive(Clone, Copy)]
pub(crate) enum Probe {
    Process(u32),
    Tree(u32),
}

impl Probe {
    /// Bytes resident now, or `None` if the process is gone or unreadable.
    pub(crate) fn resident(self) -> Option<u64> {
        match self {
            Probe::Process(pid) => status_field(pid, "VmRSS:"),
            Probe::Tree(root) => {
                let pss = |pid: u32| {
                    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"));
                    kib_field(&rollup.ok()?, "Pss:")
                };
                // A backend may exit between listing and reading; only the root must be there.
                let mut total = pss(root)?;
                let mut pending = children(root);
                while let Some(pid) = pending.pop() {
                    total += pss(pid).unwrap_or(0);
                    pending.extend(children(pid));
                }
                Some(total)
            }
        }
    }
}

/// The process's peak resident memory since it started (`VmHWM`).
pub(crate) fn high_water_mark(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    kib_field(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        field,
    )
}

/// Finds `field` (a line such as `VmRSS:    1234 kB`) and returns it in bytes.
fn kib_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Samples a probe until finished, keeping the peak.
pub(crate) struct Sampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Option<u64>>,
}

impl Sampler {
    pub(crate) fn start(probe: Probe) -> Self {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut peak = probe.resident();
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                peak = peak.max(probe.resident());
            }
            peak.max(probe.resident())
        });
        Self { stop, thread }
    }

    /// Stops sampling and returns the peak in bytes, if the probe could be read at all.
    pub(crate) fn finish(self) -> Option<u64> {
        let _ = self.stop.send(());
        self.thread.join().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields_as_bytes() {
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(kib_field(status, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }

    #[test]
    fn measures_this_process_and_its_tree() {
        let pid = std::process::id();
        assert!(Probe::Process(pid).resident().unwrap() > 0);
        assert!(Probe::Tree(pid).resident().unwrap() > 0);
        assert!(Sampler::start(Probe::Process(pid)).finish().unwrap() > 0);
    }
}

//! The threads plugin work runs on, so that no async worker of the host ever waits for a plugin:
//! a request that needs a plugin call hands the call (with whatever blocking work goes with it)
//! to these threads and awaits its answer as a task, so appends, reads, followers and `/health`
//! keep their workers however long the plugins take.
//!
//! There are as many threads as calls may run at once ([`CallGate::default_max`]); work beyond
//! that waits in a queue, as a task. Each thread enters the tokio runtime it was made in, so the
//! work it runs may wait for the store's futures.
//!
//! Work goes to the thread that became idle last. A projection's batches follow one another, so
//! they keep running on one thread, whose caches and allocator heap are warm with the batch
//! before; handing each to the next idle thread in turn would spread the batches' buffers over
//! every thread's heap, where the allocator keeps them after they are freed.
//!
//! The threads run at a lower scheduling priority than the rest of the host (a nice value of
//! [`PLUGIN_NICENESS`] on Linux): when plugin calls keep every core busy, as a burst of calls
//! that each run to their time budget does, the async workers, the store's writer and `/health`
//! still get a core as soon as they have work, instead of waiting out a scheduler slice behind
//! the plugins. Plugins lose nothing when the host is idle.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex};

use super::gate::CallGate;

/// A piece of work; it calls the function it is given once its answer is ready, before handing
/// the answer over, so that its thread is idle again before the work that answer starts arrives.
type Job = Box<dyn FnOnce(&mut dyn FnMut()) + Send>;

/// How much lower than the host's the plugin threads' priority is, as a nice increment: at 10,
/// the scheduler gives a busy host thread about ten times the share of a busy plugin thread.
pub const PLUGIN_NICENESS: i32 = 10;

thread_local! {
    static ON_CALL_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The queue of plugin work and the threads that take from it.
pub struct CallThreads {
    queue: Mutex<Queue>,
    /// One per thread, each waited on by its thread alone, so that work can wake a chosen one.
    wake: Vec<Condvar>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// The threads waiting for work, the one that became idle last at the end.
    idle: Vec<usize>,
    stopping: bool,
}

impl CallThreads {
    /// Starts the threads: one per call that may run at once.
    pub fn start() -> std::io::Result<Arc<Self>> {
        Self::start_with(CallGate::default_max())
    }

    pub fn start_with(threads: usize) -> std::io::Result<Arc<Self>> {
        let threads = threads.max(1);
        // Every thread counts as idle from the start, the first at the top: a thread chosen for
        // work before it first waits finds the work when it starts.
        let idle = (0..threads).rev().collect();
        let pool = Arc::new(CallThreads {
            queue: Mutex::new(Queue {
                idle,
                ..Queue::default()
            }),
            wake: (0..threads).map(|_| Condvar::new()).collect(),
        });
        let runtime = tokio::runtime::Handle::try_current().ok();
        for n in 0..threads {
            let (pool, runtime) = (pool.clone(), runtime.clone());
            std::thread::Builder::new()
                .name(format!("evhost-plugin-{n}"))
                .spawn(move || {
                    let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
                    ON_CALL_THREAD.set(true);
                    lower_priority();
                    pool.work(n);
                })?;
        }
        Ok(pool)
    }

    /// Whether the current thread is one of these threads.
    pub fn on_call_thread() -> bool {
        ON_CALL_THREAD.get()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loop of thread `n`. An idle thread takes work only once the work has chosen it (taken
    /// it off the idle list); a thread that has just finished a job takes the next queued one
    /// at once. So nothing queued waits while a thread could run it, and a thread woken for no
    /// reason takes no work chosen for another.
    fn work(&self, n: usize) {
        loop {
            let job = {
                let mut queue = self.queue();
                loop {
                    if queue.stopping {
                        return;
                    }
                    if !queue.idle.contains(&n) {
                        if let Some(job) = queue.jobs.pop_front() {
                            break job;
                        }
                        // Chosen for work that a thread finishing its own took first.
                        queue.idle.push(n);
                    }
                    queue = self.wake[n].wait(queue).unwrap_or_else(|p| p.into_inner());
                }
            };
            job(&mut || {
                let mut queue = self.queue();
                // With work queued the thread stays busy and takes it.
                if queue.jobs.is_empty() {
                    queue.idle.push(n);
                }
            });
        }
    }

    /// Runs `job` on one of the threads and answers what it returns; a panic in it is raised
    /// here. Run from one of the threads already, it runs at once, in place.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> T {
        if Self::on_call_thread() {
            return job();
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        // The work runs in the caller's span: its log lines name the request, command or
        // batch it is for.
        let span = tracing::Span::current();
        let work: Job = Box::new(move |idle: &mut dyn FnMut()| {
            let answered = {
                let _entered = span.enter();
                catch_unwind(AssertUnwindSafe(job))
            };
            idle();
            let _ = answer.send(answered);
        });
        let chosen = {
            let mut queue = self.queue();
            queue.jobs.push_back(work);
            queue.idle.pop()
        };
        if let Some(n) = chosen {
            self.wake[n].notify_one();
        }
        match answered.await {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => panic!("the plugin threads stopped with work queued"),
        }
    }
}

/// Lowers the calling thread's scheduling priority by [`PLUGIN_NICENESS`]. On Linux a nice value
/// belongs to a thread, not to the whole process. Where the system refuses, the thread keeps
/// the host's priority: slower answers under load, nothing worse.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let lower = niceness() + PLUGIN_NICENESS;
        // SAFETY: `gettid` and `setpriority` only read their arguments.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, lower) }
            != 0
        {
            tracing::debug!(
                "plugin thread keeps the host's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The calling thread's nice value.
#[cfg(target_os = "linux")]
fn niceness() -> i32 {
    // SAFETY: `gettid` and `getpriority` only read their arguments.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

impl Drop for CallThreads {
    fn drop(&mut self) {
        self.queue().stopping = true;
        for wake in &self.wake {
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn work_runs_on_the_threads_and_panics_come_back() {
        let threads = CallThreads::start_with(2).unwrap();
        assert!(!CallThreads::on_call_thread());
        let on_thread = threads.run(CallThreads::on_call_thread).await;
        assert!(on_thread);
        let answers: Vec<usize> = futures_join((0..8).map(|n| threads.run(move || n * 2))).await;
        assert_eq!(answers, (0..8).map(|n| n * 2).collect::<Vec<_>>());
        let threads_again = threads.clone();
        let panicked = tokio::spawn(async move { threads_again.run(|| panic!("boom")).await })
            .await
            .unwrap_err();
        assert!(panicked.is_panic());
        // The threads survive a panic in the work they ran.
        assert_eq!(threads.run(|| 7).await, 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn work_that_follows_work_runs_on_the_same_thread() {
        let threads = CallThreads::start_with(4).unwrap();
        let name = || std::thread::current().name().map(str::to_owned);
        let first = threads.run(name).await;
        for _ in 0..50 {
            assert_eq!(threads.run(name).await, first);
        }
        // Work that overlaps still spreads over the threads: each of these waits for the other
        // two to start, so they finish only if they run at once.
        let started = Arc::new(std::sync::Barrier::new(3));
        let overlapping = (0..3).map(|_| {
            let (threads, started) = (threads.clone(), started.clone());
            tokio::spawn(async move {
                threads
                    .run(move || {
                        started.wait();
                        name()
                    })
                    .await
            })
        });
        let mut names = Vec::new();
        for handle in overlapping.collect::<Vec<_>>() {
            names.push(handle.await.unwrap());
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 3);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_threads_run_below_the_hosts_priority() {
        let threads = CallThreads::start_with(1).unwrap();
        let host = niceness();
        let plugin = threads.run(niceness).await;
        // At the weakest priority there is, nothing can go lower.
        assert_eq!(plugin, (host + PLUGIN_NICENESS).min(19));
    }

    async fn futures_join<F: std::future::Future>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output> {
        let mut answers = Vec::new();
        for future in futures {
            answers.push(future.await);
        }
        answers
    }
}

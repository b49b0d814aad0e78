//! The workloads, written once against the [`System`] and [`Client`] traits so that evhost,
//! PostgreSQL and NATS JetStream run exactly the same loops and differ only in how one append,
//! one version read and one full read of the log are spoken to them.
//!
//! Every client is a closed loop: it sends one request, waits for the answer, and sends the next.
//! Throughput is what the clients completed in the measured window; the warm-up before it is
//! appended (and counted for the final read) but not measured. The same loop machinery (the
//! deadline, the tallies, the percentiles) drives the visit commands of [`crate::plugins`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::task::JoinHandle;

/// What an append attempt came to.
pub(crate) enum Append {
    /// The events were stored; `version` is what the next append to the stream must expect.
    Done { version: u64 },
    /// The stream was not at the expected version: another writer got there first.
    Conflict,
}

/// One connection to a system, used by one client task at a time.
///
/// A "version" is whatever the system checks an append against: the stream's version for evhost
/// and PostgreSQL, the sequence of the subject's last message for JetStream. 0 means the stream
/// does not exist yet.
pub(crate) trait Client: Send + 'static {
    /// Appends `events` (one JSON document each) to `stream` if it is at version `expected`.
    fn append(
        &mut self,
        stream: &str,
        expected: u64,
        events: &[String],
    ) -> impl Future<Output = Result<Append>> + Send;

    /// The current version of `stream`, 0 if it does not exist.
    fn version(&mut self, stream: &str) -> impl Future<Output = Result<u64>> + Send;
}

/// A system under test, reachable and set up with an empty log.
pub(crate) trait System: Send + Sync + 'static {
    type Client: Client;

    /// Opens one more client connection.
    fn connect(&self) -> impl Future<Output = Result<Self::Client>> + Send;

    /// Reads the whole global log from its first event, in pages of [`READ_PAGE`] events, and
    /// returns how many events it held.
    fn read_all(&self) -> impl Future<Output = Result<u64>> + Send;
}

/// How many events one read of the global log asks for.
pub(crate) const READ_PAGE: u64 = 10_000;

/// The shape of a run, the same for every system.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    /// The longest any single request may take before the workload is declared failed.
    pub(crate) op_timeout: Duration,
    pub(crate) clients: usize,
    pub(crate) batch_clients: usize,
    pub(crate) batch_size: usize,
    pub(crate) racers: usize,
    /// The data of the events every append sends, `batch_size` of them; single appends use the
    /// first.
    pub(crate) events: Arc<Vec<String>>,
}

impl Settings {
    pub(crate) fn single_event(&self) -> Arc<Vec<String>> {
        Arc::new(self.events[..1].to_vec())
    }
}

/// Event data of about 100 bytes, as an application would store.
pub(crate) fn event_data(count: usize) -> Vec<String> {
    let payload = "x".repeat(80);
    (0..count)
        .map(|n| format!(r#"{{"n":{n},"payload":"{payload}"}}"#))
        .collect()
}

/// Latency percentiles of one workload.
#[derive(Clone, Copy)]
pub(crate) struct Latency {
    /// Requests answered in the measured window, one sample each.
    pub(crate) requests: u64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

impl Latency {
    fn of(mut micros: Vec<u32>) -> Option<Self> {
        micros.sort_unstable();
        let at = |q: f64| {
            let index = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
            Duration::from_micros(u64::from(micros[index]))
        };
        (!micros.is_empty()).then(|| Self {
            requests: micros.len() as u64,
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// What one workload measured.
pub(crate) struct Measurement {
    /// Events appended or read in the measured window.
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
    /// Per request (one append, a batch, or a read-then-append in the race).
    pub(crate) latency: Option<Latency>,
    /// Appends refused because another writer was first; only the race has any.
    pub(crate) conflicts: Option<u64>,
    /// Events stored by the workload, warm-up included.
    pub(crate) appended: u64,
}

impl Measurement {
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// What a client does in its loop.
#[derive(Clone)]
enum Job {
    /// Append to a stream only this client writes, tracking its version from the answers.
    Own { stream: String },
    /// Read the version of a stream every racer writes, then append expecting it.
    Race { stream: String },
}

/// When clients stop.
pub(crate) enum Until {
    /// Run for a warm-up and a measured window.
    Deadline { measure_from: Instant, end: Instant },
    /// Stop once this many more events have been claimed; everything is measured.
    Events(Arc<AtomicU64>),
}

impl Until {
    /// A warm-up from now, then the measured window.
    pub(crate) fn timed(settings: &Settings) -> Self {
        let measure_from = Instant::now() + settings.warmup;
        Until::Deadline {
            measure_from,
            end: measure_from + settings.measure,
        }
    }

    /// Whether a client may send another request of `events` events.
    pub(crate) fn claim(&self, events: u64) -> bool {
        match self {
            Until::Deadline { end, .. } => Instant::now() < *end,
            Until::Events(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(events)
                })
                .is_ok(),
        }
    }

    /// Whether a request sent at `started` counts.
    pub(crate) fn measures(&self, started: Instant) -> bool {
        match self {
            Until::Deadline { measure_from, .. } => started >= *measure_from,
            Until::Events(_) => true,
        }
    }
}

/// What one client did.
#[derive(Default)]
pub(crate) struct Tally {
    events: u64,
    appended: u64,
    conflicts: u64,
    micros: Vec<u32>,
}

impl Tally {
    /// Counts a request sent at `started` that stored `events` events, in the figures if it was
    /// `measured`.
    pub(crate) fn stored(&mut self, started: Instant, events: u64, measured: bool) {
        self.appended += events;
        if measured {
            self.events += events;
            let micros = started.elapsed().as_micros();
            self.micros.push(micros.try_into().unwrap_or(u32::MAX));
        }
    }
}

/// `clients` clients each append `events` at a time to their own stream `<prefix>-<client>`.
pub(crate) async fn append_own<S: System>(
    system: &Arc<S>,
    settings: &Settings,
    prefix: &str,
    clients: usize,
    events: &Arc<Vec<String>>,
) -> Result<Measurement> {
    run_timed(system, settings, own_streams(prefix, clients), events).await
}

/// `racers` clients append single events to one stream, each expecting the version it just read.
pub(crate) async fn race<S: System>(
    system: &Arc<S>,
    settings: &Settings,
    stream: &str,
) -> Result<Measurement> {
    let jobs = vec![
        Job::Race {
            stream: stream.to_owned()
        };
        settings.racers
    ];
    let mut measurement = run_timed(system, settings, jobs, &settings.single_event()).await?;
    measurement.conflicts.get_or_insert(0);
    Ok(measurement)
}

/// Stores `total` events as fast as `clients` clients can, in batches of `events`, to streams
/// named `<prefix>-<client>`; prints progress to stderr.
pub(crate) async fn fill<S: System>(
    system: &Arc<S>,
    settings: &Settings,
    prefix: &str,
    clients: usize,
    events: &Arc<Vec<String>>,
    total: u64,
) -> Result<Measurement> {
    let total = total.next_multiple_of(events.len() as u64);
    let left = Arc::new(AtomicU64::new(total));
    let progress = tokio::spawn({
        let left = left.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let done = total - left.load(Ordering::Relaxed);
                eprintln!("  filling: {done} of {total} events sent");
            }
        }
    });
    let jobs = own_streams(prefix, clients);
    let until = Arc::new(Until::Events(left));
    let started = Instant::now();
    let tallies = match connect_all(system, settings, clients).await {
        Ok(clients) => spawn_loops(clients, settings, jobs, events, until).await,
        Err(error) => Err(error),
    };
    progress.abort();
    Ok(merge(tallies?, started.elapsed(), false))
}

/// One client per stream, `<prefix>-<client>`.
fn own_streams(prefix: &str, clients: usize) -> Vec<Job> {
    (0..clients)
        .map(|client| Job::Own {
            stream: format!("{prefix}-{client}"),
        })
        .collect()
}

async fn run_timed<S: System>(
    system: &Arc<S>,
    settings: &Settings,
    jobs: Vec<Job>,
    events: &Arc<Vec<String>>,
) -> Result<Measurement> {
    // Connect every client before the clock starts, so that connection set-up is not measured.
    let clients = connect_all(system, settings, jobs.len()).await?;
    let until = Arc::new(Until::timed(settings));
    let is_race = matches!(jobs.first(), Some(Job::Race { .. }));
    let tallies = spawn_loops(clients, settings, jobs, events, until).await?;
    Ok(merge(tallies, settings.measure, is_race))
}

pub(crate) async fn connect_all<S: System>(
    system: &Arc<S>,
    settings: &Settings,
    count: usize,
) -> Result<Vec<S::Client>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let client = tokio::time::timeout(settings.op_timeout, system.connect())
            .await
            .with_context(|| format!("connecting took longer than {:?}", settings.op_timeout))?
            .context("connecting")?;
        clients.push(client);
    }
    Ok(clients)
}

async fn spawn_loops<C: Client>(
    clients: Vec<C>,
    settings: &Settings,
    jobs: Vec<Job>,
    events: &Arc<Vec<String>>,
    until: Arc<Until>,
) -> Result<Vec<Tally>> {
    let tasks = clients
        .into_iter()
        .zip(jobs)
        .map(|(client, job)| {
            tokio::spawn(client_loop(
                client,
                job,
                events.clone(),
                until.clone(),
                settings.op_timeout,
            ))
        })
        .collect();
    join_clients(tasks).await
}

/// Waits for every client's tally; the first failure stops the others and is the result.
pub(crate) async fn join_clients(mut tasks: Vec<JoinHandle<Result<Tally>>>) -> Result<Vec<Tally>> {
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in &mut tasks {
        match task
            .await
            .context("a client task panicked")
            .and_then(|tally| tally)
        {
            Ok(tally) => tallies.push(tally),
            Err(error) => {
                // Stop the other clients, or they would go on loading the next workload.
                tasks.iter().for_each(JoinHandle::abort);
                return Err(error);
            }
        }
    }
    Ok(tallies)
}

async fn client_loop<C: Client>(
    mut client: C,
    job: Job,
    events: Arc<Vec<String>>,
    until: Arc<Until>,
    op_timeout: Duration,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let count = events.len() as u64;
    let mut version = 0;
    while until.claim(count) {
        let started = Instant::now();
        let answer = tokio::time::timeout(op_timeout, async {
            if let Job::Race { stream } = &job {
                version = client.version(stream).await?;
            }
            let (Job::Own { stream } | Job::Race { stream }) = &job;
            client.append(stream, version, &events).await
        })
        .await
        .with_context(|| format!("no answer to an append within {op_timeout:?}"))??;
        let measured = until.measures(started);
        match (answer, &job) {
            (Append::Done { version: now }, _) => {
                version = now;
                tally.stored(started, count, measured);
            }
            (Append::Conflict, Job::Race { .. }) => tally.conflicts += u64::from(measured),
            (Append::Conflict, Job::Own { stream }) => {
                bail!(
                    "append to {stream}, which only this client writes, conflicted at version {version}"
                )
            }
        }
    }
    Ok(tally)
}

/// The figures of a workload from its clients' tallies.
pub(crate) fn merge(tallies: Vec<Tally>, elapsed: Duration, conflicts: bool) -> Measurement {
    let mut all = Tally::default();
    for tally in tallies {
        all.events += tally.events;
        all.appended += tally.appended;
        all.conflicts += tally.conflicts;
        all.micros.extend(tally.micros);
    }
    Measurement {
        events: all.events,
        elapsed,
        latency: Latency::of(all.micros),
        conflicts: conflicts.then_some(all.conflicts),
        appended: all.appended,
    }
}

/// Reads the whole log and checks that it holds the `expected` events the run appended, when
/// that is known.
pub(crate) async fn read_all<S: System>(
    system: &Arc<S>,
    settings: &Settings,
    expected: Option<u64>,
) -> Result<Measurement> {
    let started = Instant::now();
    // A whole read takes many requests; allow each of them the request timeout.
    let pages = expected.unwrap_or(10_000_000).div_ceil(READ_PAGE) + 1;
    let budget = settings.op_timeout * u32::try_from(pages).unwrap_or(u32::MAX);
    let events = tokio::time::timeout(budget, system.read_all())
        .await
        .with_context(|| format!("reading the log took longer than {budget:?}"))??;
    let elapsed = started.elapsed();
    if let Some(expected) = expected
        && events != expected
    {
        bail!("read {events} events from the log, but the run appended {expected}");
    }
    Ok(Measurement {
        events,
        elapsed,
        latency: None,
        conflicts: None,
        appended: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_ceiling_rank() {
        let latency = Latency::of((1..=100).rev().collect()).unwrap();
        assert_eq!(latency.requests, 100);
        assert_eq!(latency.p50, Duration::from_micros(50));
        assert_eq!(latency.p99, Duration::from_micros(99));
        assert_eq!(latency.max, Duration::from_micros(100));
    }

    #[test]
    fn event_data_is_about_a_hundred_bytes_of_json() {
        for data in event_data(3) {
            let value: serde_json::Value = serde_json::from_str(&data).unwrap();
            assert!(value["payload"].is_string());
            assert!((95..=110).contains(&data.len()), "{} bytes", data.len());
        }
    }
}

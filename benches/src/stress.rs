//! The stress benchmark: the worst loads a client or a plugin could put on a host, each for a
//! bounded time on a fresh server, while a prober measures what every other client sees: the
//! latency of a single-event append, a short stream read and `GET /health`, one after another
//! on keep-alive connections of their own. The target is a p99 of 50 ms or less for each of the
//! three under each load (20 ms under spinning commands, which run on the plugin threads).
//!
//! The loads:
//! - `stalled-bodies`: 300 connections that send the head of an append and ten bytes of its
//!   100-byte body, then nothing;
//! - `large-pages`: four clients reading `GET /events?limit=300` in a loop over a log of
//!   300 events of about 1 MB each;
//! - `spinning-commands`: 64 clients sending commands whose `decide` spins until its 2 000 ms
//!   budget (the hostile fixture's `Loop`);
//! - `state-flood`: a projection applying events of 90 000 state writes each, one appended
//!   every 100 ms (the hostile projection's `Flood`).
//!
//! With `--stress-baseline` a second binary (an earlier build, say) takes the same loads in the
//! same run, so the two are compared on one machine at one time.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::evhost::Server;
use crate::http::Connection;
use crate::projections::percentile;
use crate::versions::deploy;

/// The latency target of every probe under every load.
const TARGET: Duration = Duration::from_millis(50);
/// The tighter target under spinning commands: plugin calls run on threads of their own, so
/// appends and `/health` should not notice them.
const SPINNING_TARGET: Duration = Duration::from_millis(20);
/// The longest a probe waits for its answer; a probe that gets none counts as this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The loads, in the order they run.
const LOADS: [Load; 4] = [
    Load::StalledBodies,
    Load::LargePages,
    Load::SpinningCommands,
    Load::StateFlood,
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    StalledBodies,
    LargePages,
    SpinningCommands,
    StateFlood,
}

impl Load {
    /// The p99 every probe must keep under this load.
    fn target(self) -> Duration {
        match self {
            Load::SpinningCommands => SPINNING_TARGET,
            _ => TARGET,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Load::StalledBodies => "stalled-bodies (300)",
            Load::LargePages => "large-pages (4 × limit=300 of 1 MB events)",
            Load::SpinningCommands => "spinning-commands (64 × 2 s decide)",
            Load::StateFlood => "state-flood (90 000 writes per event)",
        }
    }
}

/// What the stress benchmark needs.
pub(crate) struct Stress {
    pub binaries: Vec<(String, PathBuf)>,
    pub hostile: Bytes,
    pub hostile_projection: Bytes,
    pub work: PathBuf,
    pub seconds: f64,
    pub timeout: Duration,
}

/// The latencies one probe saw under one load.
#[derive(Default)]
struct Probe {
    samples: Vec<Duration>,
    errors: usize,
}

/// One binary under one load: the three probes, or why the load could not run.
struct Outcome {
    binary: String,
    load: Load,
    probes: Result<[Probe; 3], String>,
}

const PROBES: [&str; 3] = ["append", "read", "health"];

impl Stress {
    /// Runs every load against every binary and renders the report.
    pub(crate) async fn run(&self) -> String {
        let mut outcomes = Vec::new();
        for load in LOADS {
            for (name, binary) in &self.binaries {
                eprintln!("stress: {} under {}", name, load.name());
                let probes = self
                    .one(binary, load)
                    .await
                    .map_err(|error| format!("{error:#}"));
                if let Err(error) = &probes {
                    eprintln!("stress: {name} under {}: failed: {error}", load.name());
                }
                outcomes.push(Outcome {
                    binary: name.clone(),
                    load,
                    probes,
                });
            }
        }
        render(&outcomes, self.seconds)
    }

    /// Starts a fresh server, prepares `load`, runs it and the prober for the measured time,
    /// and stops the server.
    async fn one(&self, binary: &Path, load: Load) -> Result<[Probe; 3]> {
        let work = self.work.join(format!(
            "stress-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        let data = work.join("data");
        std::fs::create_dir_all(&work)?;
        let server = Server::start(binary, &data, &work, self.timeout).await?;
        let addr = server.addr;
        let result = self.measure(addr, load).await;
        // A host flooded by a load may take its time to stop; it is killed past the timeout.
        let _ = server.stop(self.timeout).await;
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    async fn measure(&self, addr: SocketAddr, load: Load) -> Result<[Probe; 3]> {
        let mut http = Connection::open(addr).await?;
        // The stream the read probe reads, so that it is never a 404.
        let (status, body) = http
            .send(Method::POST, "/streams/probe-read", Some(append_body(10)))
            .await?;
        anyhow::ensure!(status == StatusCode::CREATED, "seeding: {status} {body:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = self.start_load(addr, load, &mut http, &stop).await?;
        // Let the load take hold before measuring.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let probes = probe(addr, Duration::from_secs_f64(self.seconds)).await;
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            task.abort();
        }
        Ok(probes)
    }

    /// Starts the load's clients; they run until `stop` is set or they are aborted.
    async fn start_load(
        &self,
        addr: SocketAddr,
        load: Load,
        http: &mut Connection,
        stop: &Arc<AtomicBool>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut tasks = Vec::new();
        match load {
            Load::StalledBodies => {
                let mut stalled = Vec::new();
                for _ in 0..300 {
                    let Ok(mut stream) = TcpStream::connect(addr).await else {
                        break;
                    };
                    let head = "POST /streams/s-1 HTTP/1.1\r\nhost: x\r\n\
                                content-type: application/json\r\ncontent-length: 100\r\n\r\n";
                    if stream.write_all(head.as_bytes()).await.is_err()
                        || stream.write_all(b"{\"events\":").await.is_err()
                    {
                        continue;
                    }
                    stalled.push(stream);
                }
                // Held open (as far as the host lets them be) until the load ends.
                let stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    drop(stalled);
                }));
            }
            Load::LargePages => {
                let event = json!({"type": "Big", "data": {"pad": "x".repeat(1_000_000)}});
                let body = json!({"events": vec![event; 15]}).to_string();
                for _ in 0..20 {
                    let (status, answer) = http
                        .send(Method::POST, "/streams/big-1", Some(body.clone()))
                        .await?;
                    anyhow::ensure!(
                        status == StatusCode::CREATED,
                        "filling: {status} {answer:?}"
                    );
                }
                for _ in 0..4 {
                    let stop = stop.clone();
                    tasks.push(tokio::spawn(async move {
                        let Ok(mut http) = Connection::open(addr).await else {
                            return;
                        };
                        while !stop.load(Ordering::SeqCst) {
                            if http
                                .send(Method::GET, "/events?limit=300", None)
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }));
                }
            }
            Load::SpinningCommands => {
                deploy(http, self.hostile.clone(), "?timeout_ms=2000").await?;
                for n in 0..64 {
                    let stop = stop.clone();
                    tasks.push(tokio::spawn(async move {
                        let Ok(mut http) = Connection::open(addr).await else {
                            return;
                        };
                        let body = json!({"stream": format!("hostile-{n}"), "type": "Loop",
                                          "data": null})
                        .to_string();
                        while !stop.load(Ordering::SeqCst) {
                            let sent = http
                                .send(
                                    Method::POST,
                                    "/handlers/hostile/commands",
                                    Some(body.clone()),
                                )
                                .await;
                            match sent {
                                // Told to come back: as a client following Retry-After would.
                                Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                                Ok(_) => {}
                                Err(_) => match Connection::open(addr).await {
                                    Ok(fresh) => http = fresh,
                                    Err(_) => return,
                                },
                            }
                        }
                    }));
                }
            }
            Load::StateFlood => {
                deploy(
                    http,
                    self.hostile_projection.clone(),
                    "?memory_mib=512&timeout_ms=60000",
                )
                .await?;
                let stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    let Ok(mut http) = Connection::open(addr).await else {
                        return;
                    };
                    let body = json!({"events": [{"type": "Flood",
                                                  "data": {"puts": 90_000, "bytes": 1}}]})
                    .to_string();
                    while !stop.load(Ordering::SeqCst) {
                        if http
                            .send(Method::POST, "/streams/hostile-1", Some(body.clone()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }));
            }
        }
        Ok(tasks)
    }
}

/// An append of `pad` bytes of data.
fn append_body(pad: usize) -> String {
    json!({"events": [{"type": "Probed", "data": {"pad": "p".repeat(pad)}}]}).to_string()
}

/// Runs the three probes one after another for `length`, each on its own connection (opened
/// again after a failure), and answers what each saw.
async fn probe(addr: SocketAddr, length: Duration) -> [Probe; 3] {
    let mut probes: [Probe; 3] = Default::default();
    let mut connections: [Option<Connection>; 3] = [None, None, None];
    let end = Instant::now() + length;
    let mut n = 0u64;
    while Instant::now() < end {
        for (index, probe) in probes.iter_mut().enumerate() {
            let (method, path, body) = match index {
                0 => (
                    Method::POST,
                    format!("/streams/probe-{}", n % 16),
                    Some(append_body(100)),
                ),
                1 => (Method::GET, "/streams/probe-read?limit=10".to_owned(), None),
                _ => (Method::GET, "/health".to_owned(), None),
            };
            let started = Instant::now();
            let answered = tokio::time::timeout(PROBE_TIMEOUT, async {
                if connections[index].is_none() {
                    connections[index] = Some(Connection::open(addr).await?);
                }
                let http = connections[index].as_mut().expect("opened above");
                http.send(method, &path, body).await
            })
            .await;
            let ok = matches!(&answered, Ok(Ok((status, _))) if status.is_success());
            if !ok {
                probe.errors += 1;
                connections[index] = None;
            }
            probe.samples.push(started.elapsed());
        }
        n += 1;
        // Probes at a client's pace, not a flood of their own.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for probe in &mut probes {
        probe.samples.sort();
    }
    probes
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn render(outcomes: &[Outcome], seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Stress: other clients' latency under the worst loads\n\n\
         Each load runs on a fresh server; a prober sends a single-event append, a 10-event \
         stream read and `GET /health` in turn for {seconds:.0} s. p50 / p99 / max in ms; errors \
         are probes without a 2xx answer within 5 s (counted as 5 s). Target: p99 ≤ 50 ms (≤ 20 ms \
         under spinning commands).\n"
    );
    let _ = writeln!(
        out,
        "| load | binary | append p50 / p99 / max | read p50 / p99 / max | health p50 / p99 / max | errors | p99 ≤ target |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for outcome in outcomes {
        match &outcome.probes {
            Ok(probes) => {
                let cell = |probe: &Probe| {
                    format!(
                        "{:.1} / {:.1} / {:.1}",
                        ms(percentile(&probe.samples, 0.5)),
                        ms(percentile(&probe.samples, 0.99)),
                        ms(probe.samples.last().copied().unwrap_or_default())
                    )
                };
                let errors: usize = probes.iter().map(|p| p.errors).sum();
                let met = probes
                    .iter()
                    .all(|p| percentile(&p.samples, 0.99) <= outcome.load.target());
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {errors} | {} |",
                    outcome.load.name(),
                    outcome.binary,
                    cell(&probes[0]),
                    cell(&probes[1]),
                    cell(&probes[2]),
                    if met { "yes" } else { "no" }
                );
            }
            Err(error) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | failed: {} | | | | no |",
                    outcome.load.name(),
                    outcome.binary,
                    error.lines().next().unwrap_or_default()
                );
            }
        }
    }
    let _ = writeln!(out, "\nProbes: {}.", PROBES.join(", "));
    out
}

/// Reads a component the bench script built.
pub(crate) fn read_component(path: &Path) -> Result<Bytes> {
    std::fs::read(path)
        .map(Bytes::from)
        .with_context(|| format!("reading {} (benches/run.sh builds it)", path.display()))
}

//! The `visits` projection (`plugins/visits`) on evhost: how fast a new projection catches up
//! with a long log, against the same fold compiled natively, how much memory the host holds
//! while it does, and how soon an append is visible in a read model.
//!
//! The log is filled once per run: [`VISITS`] hospital visits of four events each (check-in and
//! room, then, a thousand visits later, check-out and the room's release), written as two appends
//! per visit by concurrent clients into a server that is then stopped. Each round copies that
//! store, starts a fresh server on the copy, deploys the component and measures:
//! - catch-up: from the deploy's answer until the projection's position reaches the head, and the
//!   server's peak resident memory (`VmHWM`) at the end of it;
//! - native: the same records, read from the server, folded by the same projection code compiled
//!   natively (the SDK's native harness, in the host's batch size, into an in-memory map), timed
//!   fold only;
//! - append to visible: one client appends a check-in and reads its visit with `min_position`, one
//!   after the other: the time from sending the append until the read answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::value::RawValue;
use visit::VisitEvent;

use crate::evhost::Server;
use crate::http::Connection;
use crate::memory::high_water_mark;
use crate::report::median_by;

/// Visits in the log: four events each, one key each in the projection's state.
pub(crate) const VISITS: usize = 250_000;
/// Concurrent clients filling the log.
pub(crate) const FILL_CLIENTS: usize = 16;
/// How far check-outs trail check-ins, in visits: the log interleaves many open visits.
const OPEN_VISITS: usize = 1_000;
/// Events per native `apply` call: the host's batch (`BATCH_EVENTS` in host/src/projections.rs).
const NATIVE_BATCH: usize = 8_192;
/// Append-to-visible samples per round.
const LATENCY_SAMPLES: usize = 500;

/// One round's figures; each part succeeds or fails on its own.
pub(crate) struct ProjectionRound {
    pub(crate) catch_up: Result<CatchUp, String>,
    /// Native fold, events per second.
    pub(crate) native: Result<f64, String>,
    /// Append to visible, sorted.
    pub(crate) visible: Result<Vec<Duration>, String>,
}

impl ProjectionRound {
    /// A round that could not run, for the report.
    pub(crate) fn failed(error: &str) -> Self {
        ProjectionRound {
            catch_up: Err(error.to_owned()),
            native: Err(error.to_owned()),
            visible: Err(error.to_owned()),
        }
    }
}

pub(crate) struct CatchUp {
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
    pub(crate) peak_rss: Option<u64>,
}

impl CatchUp {
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// The filled store every round starts from.
pub(crate) struct Projections {
    binary: PathBuf,
    component: Bytes,
    work: PathBuf,
    filled: PathBuf,
    timeout: Duration,
}

impl Projections {
    /// Fills the store the rounds copy.
    pub(crate) async fn prepare(
        binary: PathBuf,
        component: &Path,
        work: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        let component =
            std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
        let filled =
            fill_store(&binary, work, "projections", appends(), VISITS * 4, timeout).await?;
        Ok(Projections {
            binary,
            component: component.into(),
            work: work.to_path_buf(),
            filled,
            timeout,
        })
    }

    pub(crate) async fn round(&self) -> ProjectionRound {
        match self.try_round().await {
            Ok(round) => round,
            Err(error) => {
                let error = format!("{error:#}");
                eprintln!("projections: failed: {error}");
                ProjectionRound {
                    catch_up: Err(error.clone()),
                    native: Err(error.clone()),
                    visible: Err(error),
                }
            }
        }
    }

    async fn try_round(&self) -> Result<ProjectionRound> {
        let data = self.work.join("projections-round");
        let _ = std::fs::remove_dir_all(&data);
        copy_dir(&self.filled, &data)?;
        let server = Server::start(&self.binary, &data, &self.work, self.timeout).await?;
        let catch_up = self.catch_up(&server).await;
        let visible = match &catch_up {
            Ok(_) => visible(server.addr).await.map_err(|e| format!("{e:#}")),
            Err(error) => Err(error.clone()),
        };
        let native = native(server.addr).await.map_err(|e| format!("{e:#}"));
        server.stop(self.timeout).await?;
        let _ = std::fs::remove_dir_all(&data);
        Ok(ProjectionRound {
            catch_up,
            native,
            visible,
        })
    }

    async fn catch_up(&self, server: &Server) -> Result<CatchUp, String> {
        catch_up(server, &self.component, VISITS as u64 * 4).await
    }
}

/// Deploys the visits projection `component` to `server` and times it from the deploy's answer
/// until its position reaches `head`, with the server's peak resident memory at the end.
pub(crate) async fn catch_up(
    server: &Server,
    component: &Bytes,
    head: u64,
) -> Result<CatchUp, String> {
    let run = async {
        let mut http = Connection::open(server.addr).await?;
        let started = Instant::now();
        let body = Some(("application/wasm", component.clone()));
        let (status, body) = http.send_body(Method::POST, "/plugins", body).await?;
        expect(status, &body)?;
        loop {
            let (status, body) = http.send(Method::GET, "/plugins/visits", None).await?;
            expect(status, &body)?;
            let listing: serde_json::Value = serde_json::from_slice(&body)?;
            if listing["status"] == "paused" {
                bail!("the projection paused: {}", listing["error"]);
            }
            if listing["position"].as_u64().is_some_and(|p| p >= head) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed();
        Ok::<_, anyhow::Error>(CatchUp {
            events: head,
            elapsed,
            peak_rss: high_water_mark(server.pid),
        })
    };
    run.await.map_err(|e| format!("{e:#}"))
}

/// The medians of the rounds' figures.
pub(crate) fn medians(
    rounds: &[ProjectionRound],
) -> (Option<&CatchUp>, Option<f64>, Option<(Duration, Duration)>) {
    let catch_up = median_by(
        rounds
            .iter()
            .filter_map(|r| r.catch_up.as_ref().ok())
            .collect(),
        |c| Some(c.rate()),
    );
    let native = median_by(
        rounds
            .iter()
            .filter_map(|r| r.native.as_ref().ok())
            .collect(),
        |n| Some(**n),
    )
    .copied();
    let visible = median_by(
        rounds
            .iter()
            .filter_map(|r| r.visible.as_ref().ok())
            .collect(),
        |v| Some(percentile(v, 0.99).as_secs_f64()),
    )
    .map(|v| (percentile(v, 0.5), percentile(v, 0.99)));
    (catch_up, native, visible)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// The two appends of visit `n`: check-in and room, then check-out and the room's release.
fn visit_appends(n: usize) -> [(String, String); 2] {
    let room = format!("R-{}", n % 400);
    let hospital = ["north", "south", "east", "west"][n % 4];
    let checked_in = VisitEvent::PatientCheckedIn {
        patient_id: format!("p-{n}"),
        patient_name: format!("Patient {n}"),
        complaint: "abdominal pain".into(),
        triage_level: (n % 5 + 1) as u8,
        hospital: hospital.into(),
        expected_stay_seconds: None,
    };
    let assigned = VisitEvent::RoomAssigned { room: room.clone() };
    let checked_out = VisitEvent::PatientCheckedOut {
        disposition: visit::Disposition::Discharged,
        summary: None,
    };
    let released = VisitEvent::RoomReleased { room };
    let body = |events: [&VisitEvent; 2]| {
        let events: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).expect("an event serializes"))
            .collect();
        serde_json::json!({ "events": events }).to_string()
    };
    let stream = format!("visit-{n}");
    [
        (stream.clone(), body([&checked_in, &assigned])),
        (stream, body([&checked_out, &released])),
    ]
}

/// Every append of the log, in the order clients take them.
fn appends() -> Vec<(String, String)> {
    appends_of(VISITS)
}

/// The appends of a log of `visits` visits, in the order clients take them.
pub(crate) fn appends_of(visits: usize) -> Vec<(String, String)> {
    interleave(visits, visit_appends)
}

/// The appends of `visits` visits, in the order clients take them: each visit's first append
/// (its check-in), and its second (its check-out) [`OPEN_VISITS`] visits later, so that the log
/// interleaves many open visits and a check-out is never written before its check-in.
pub(crate) fn interleave(
    visits: usize,
    appends_of: impl Fn(usize) -> [(String, String); 2],
) -> Vec<(String, String)> {
    let mut appends = Vec::with_capacity(visits * 2);
    for n in 0..visits + OPEN_VISITS {
        if n < visits {
            let [check_in, _] = appends_of(n);
            appends.push(check_in);
        }
        if n >= OPEN_VISITS {
            let [_, check_out] = appends_of(n - OPEN_VISITS);
            appends.push(check_out);
        }
    }
    appends
}

/// Makes the store that a benchmark's rounds copy, `<work>/<name>-filled`: a fresh server
/// appends `appends` (`events` events in all, for the line it prints) and stops.
pub(crate) async fn fill_store(
    binary: &Path,
    work: &Path,
    name: &str,
    appends: Vec<(String, String)>,
    events: usize,
    timeout: Duration,
) -> Result<PathBuf> {
    let filled = work.join(format!("{name}-filled"));
    let _ = std::fs::remove_dir_all(&filled);
    let server = Server::start(binary, &filled, work, timeout).await?;
    let started = Instant::now();
    append_all(server.addr, appends, FILL_CLIENTS).await?;
    eprintln!(
        "{name}: stored {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    server.stop(timeout).await?;
    Ok(filled)
}

/// Appends the whole log with concurrent clients.
pub(crate) async fn fill(addr: std::net::SocketAddr) -> Result<()> {
    append_all(addr, appends(), FILL_CLIENTS).await
}

/// Sends `appends` (stream, body) with `clients` concurrent clients, each taking the next one in
/// order; any answer but 201 is an error.
pub(crate) async fn append_all(
    addr: std::net::SocketAddr,
    appends: Vec<(String, String)>,
    clients: usize,
) -> Result<()> {
    let appends = Arc::new(appends);
    let next = Arc::new(AtomicUsize::new(0));
    let count = clients;
    let mut clients = Vec::new();
    for _ in 0..count {
        let (appends, next) = (appends.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let mut http = Connection::open(addr).await?;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((stream, body)) = appends.get(index) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let path = format!("/streams/{stream}");
                let (status, answer) = http.send(Method::POST, &path, Some(body.clone())).await?;
                if status != StatusCode::CREATED {
                    bail!(
                        "append {index} to {stream}: {status} {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
        }));
    }
    for client in clients {
        client.await??;
    }
    Ok(())
}

/// Reads the log and folds it with the projection compiled natively; answers events/s of the
/// fold alone.
async fn native(addr: std::net::SocketAddr) -> Result<f64> {
    #[derive(serde::Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
        next: Option<u64>,
    }
    let mut http = Connection::open(addr).await?;
    let mut state = evhost_sdk::testing::MemoryState::new();
    let mut folding = Duration::ZERO;
    let mut events = 0u64;
    let mut from = 1;
    loop {
        let path = format!("/events?from={from}&limit=10000&category=visit");
        let (status, body) = http.send(Method::GET, &path, None).await?;
        expect(status, &body)?;
        let page: Page<'_> = serde_json::from_slice(&body)?;
        let records: Vec<&[u8]> = page.events.iter().map(|r| r.get().as_bytes()).collect();
        let started = Instant::now();
        for batch in records.chunks(NATIVE_BATCH) {
            evhost_sdk::testing::apply_json::<visits::Visits>(&mut state, batch)
                .map_err(|e| anyhow::anyhow!("the native fold failed: {e}"))?;
        }
        folding += started.elapsed();
        events += records.len() as u64;
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    if state.len() < VISITS {
        bail!(
            "the native fold kept {} keys for {VISITS} visits",
            state.len()
        );
    }
    Ok(events as f64 / folding.as_secs_f64())
}

/// Appends check-ins one at a time and reads each visit with `min_position`: the time from
/// sending the append until the read answers, sorted.
async fn visible(addr: std::net::SocketAddr) -> Result<Vec<Duration>> {
    let mut http = Connection::open(addr).await?;
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for n in 0..LATENCY_SAMPLES {
        let visit = VISITS * 2 + n;
        let [(stream, body), _] = visit_appends(visit);
        let started = Instant::now();
        let (status, answer) = http
            .send(Method::POST, &format!("/streams/{stream}"), Some(body))
            .await?;
        if status != StatusCode::CREATED {
            bail!("append: {status} {}", String::from_utf8_lossy(&answer));
        }
        let appended: serde_json::Value = serde_json::from_slice(&answer)?;
        let position = appended["last_position"].as_u64().context("no position")?;
        let path = format!("/projections/visits/keys/visit/{visit}?min_position={position}");
        let (status, body) = http.send(Method::GET, &path, None).await?;
        expect(status, &body)?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(samples)
}

pub(crate) fn expect(status: StatusCode, body: &Bytes) -> Result<()> {
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(body));
    }
    Ok(())
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))
            .with_context(|| format!("copying {}", entry.path().display()))?;
    }
    Ok(())
}

/// The report's section on projections; nothing when they did not run.
pub(crate) fn write_section(out: &mut String, rounds: &[ProjectionRound]) {
    use std::fmt::Write;
    if rounds.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Plugins: the visits projection\n");
    let _ = writeln!(
        out,
        "The component `visits.wasm` (`plugins/visits`, built for wasm32-wasip2 in release) on the \
         release server, in {} rounds; each figure is from the median round. The log: {VISITS} \
         hospital visits of four events ({} events), each visit written as two appends (check-in \
         and room; check-out and release, {OPEN_VISITS} visits later) by {FILL_CLIENTS} clients, \
         then the server stopped; each round starts a fresh server on a copy of that store.\n",
        rounds.len(),
        VISITS * 4
    );
    let (catch_up, native, visible) = medians(rounds);
    let _ = writeln!(out, "| Measure | Value |");
    let _ = writeln!(out, "|---|--:|");
    match catch_up {
        Some(c) => {
            let _ = writeln!(
                out,
                "| catch-up, deploy to caught up (events/s) | {:.0} |",
                c.rate()
            );
            let _ = writeln!(
                out,
                "| catch-up time (s) | {:.2} |",
                c.elapsed.as_secs_f64()
            );
            let rss = c.peak_rss.map_or("n/a".to_owned(), |b| {
                format!("{:.0}", b as f64 / (1 << 20) as f64)
            });
            let _ = writeln!(out, "| server peak resident memory (MiB) | {rss} |");
        }
        None => {
            let _ = writeln!(out, "| catch-up | failed |");
        }
    }
    match native {
        Some(n) => {
            let _ = writeln!(
                out,
                "| native fold, same code and batches (events/s) | {n:.0} |"
            );
            if let Some(c) = catch_up {
                let _ = writeln!(
                    out,
                    "| WebAssembly catch-up ÷ native fold | {:.2} |",
                    c.rate() / n
                );
            }
        }
        None => {
            let _ = writeln!(out, "| native fold | failed |");
        }
    }
    match visible {
        Some((p50, p99)) => {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let _ = writeln!(out, "| append to visible, p50 (ms) | {:.2} |", ms(p50));
            let _ = writeln!(out, "| append to visible, p99 (ms) | {:.2} |", ms(p99));
        }
        None => {
            let _ = writeln!(out, "| append to visible | failed |");
        }
    }
    let _ = writeln!(
        out,
        "\n- Catch-up is timed from the deploy's answer (compiled, stored, runner started) until \
         `GET /plugins/visits` shows the head as its position: every event read from the store, \
         applied in WebAssembly and committed with the checkpoint. The native fold runs the same \
         projection code through the SDK's native harness over the same records in batches of \
         {NATIVE_BATCH}, into an in-memory map, timing the fold only (no storage, no reads).\n\
         - Append to visible: {LATENCY_SAMPLES} check-ins by one client, each timed from sending \
         the append until `GET /projections/visits/keys/visit/<id>?min_position=<its position>` \
         answers; this includes the append's own durable commit.\n"
    );
    let _ = writeln!(out, "| Target | Measured | Met |");
    let _ = writeln!(out, "|---|---|---|");
    let verdict = |met: Option<bool>| match met {
        Some(true) => "yes",
        Some(false) => "no",
        None => "—",
    };
    let rate = catch_up.map(CatchUp::rate);
    let _ = writeln!(
        out,
        "| catch-up of visits ≥ 500 000 events/s | {} | {} |",
        rate.map_or("failed".to_owned(), |r| format!("{r:.0} events/s")),
        verdict(rate.map(|r| r >= 500_000.0))
    );
    let ratio = rate.zip(native).map(|(wasm, native)| wasm / native);
    let _ = writeln!(
        out,
        "| WebAssembly ≥ ⅓ of native | {} | {} |",
        ratio.map_or("failed".to_owned(), |r| format!("{r:.2}")),
        verdict(ratio.map(|r| r >= 1.0 / 3.0))
    );
    let p99 = visible.map(|(_, p99)| p99.as_secs_f64() * 1e3);
    let _ = writeln!(
        out,
        "| append to visible p99 ≤ 10 ms | {} | {} |",
        p99.map_or("failed".to_owned(), |ms| format!("{ms:.2} ms")),
        verdict(p99.map(|ms| ms <= 10.0))
    );
    let rss = catch_up
        .and_then(|c| c.peak_rss)
        .map(|b| b as f64 / (1 << 20) as f64);
    let _ = writeln!(
        out,
        "| peak resident memory of the catch-up < 300 MiB | {} | {} |\n",
        rss.map_or("not measured".to_owned(), |mib| format!("{mib:.0} MiB")),
        verdict(rss.map(|mib| mib < 300.0))
    );
    for (n, round) in rounds.iter().enumerate() {
        let describe = |r: &Result<String, String>| match r {
            Ok(text) => text.clone(),
            Err(error) => format!("failed: {error}"),
        };
        let catch_up = describe(
            &round
                .catch_up
                .as_ref()
                .map(|c| format!("{:.0} events/s", c.rate()))
                .map_err(Clone::clone),
        );
        let native = describe(
            &round
                .native
                .as_ref()
                .map(|n| format!("{n:.0} events/s"))
                .map_err(Clone::clone),
        );
        let _ = writeln!(
            out,
            "- Round {}: catch-up {catch_up}; native {native}.",
            n + 1
        );
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_out_follows_its_check_in() {
        let appends = appends();
        assert_eq!(appends.len(), VISITS * 2);
        let first = appends.iter().position(|(s, _)| s == "visit-7").unwrap();
        let last = appends.iter().rposition(|(s, _)| s == "visit-7").unwrap();
        assert!(first < last);
        assert!(appends[first].1.contains("PatientCheckedIn"));
        assert!(appends[last].1.contains("PatientCheckedOut"));
    }

    #[test]
    fn the_section_states_each_target() {
        let round = ProjectionRound {
            catch_up: Ok(CatchUp {
                events: 1_000_000,
                elapsed: Duration::from_secs(10),
                peak_rss: Some(200 << 20),
            }),
            native: Ok(200_000.0),
            visible: Ok((1..=100).map(Duration::from_millis).collect()),
        };
        let mut text = String::new();
        write_section(&mut text, &[round]);
        assert!(
            text.contains("| catch-up of visits ≥ 500 000 events/s | 100000 events/s | no |"),
            "{text}"
        );
        assert!(
            text.contains("| WebAssembly ≥ ⅓ of native | 0.50 | yes |"),
            "{text}"
        );
        assert!(
            text.contains("| append to visible p99 ≤ 10 ms | 99.00 ms | no |"),
            "{text}"
        );
        assert!(
            text.contains("| peak resident memory of the catch-up < 300 MiB | 200 MiB | yes |"),
            "{text}"
        );
    }

    #[test]
    fn percentiles_pick_the_sample_at_or_above() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
    }
}

//! The visit handler (`plugins/visit`) on evhost: commands through the whole stack, and the cost
//! of folding a stream in WebAssembly against the same handler compiled natively.
//!
//! A round measures, in this order:
//! - commands/s: every client runs hospital visits, one after another, on streams of its own
//!   (check in with two tests, record both results, add a note, check out), against a fresh server
//!   in its default, durable configuration with the component just deployed;
//! - `evolve` per event: one long visit stream folded in batches of [`EVOLVE_BATCH`], the state
//!   carried from batch to batch as the host does, in WebAssembly by `evhost plugin-bench` with
//!   the host's own runtime, and natively here through the SDK's wire functions, half just before
//!   and half just after, so that the ratio compares measurements of the same moment;
//! - loading, from the same `evhost plugin-bench`: a deploy (validate and compile) against a
//!   restart (load the compiled artifact).
//!
//! Both `evolve` measurements run after the server has stopped, so neither shares the cores with
//! it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use visit::{VisitEvent, VisitHandler};

use crate::evhost::{Evhost, EvhostClient, Server};
use crate::report::median_by;
use crate::workload::{self, Measurement, Settings, System, Tally, Until};

/// The handler the component registers, and the category of its streams.
const HANDLER: &str = "visit";

/// Events per `evolve` call: what the host hands a handler at once when it folds a stream
/// (`EVOLVE_BATCH_EVENTS` in host/src/commands.rs).
pub(crate) const EVOLVE_BATCH: usize = 512;

/// Events of the stream the `evolve` benchmark folds: long enough that a pass takes many batches
/// and the per-call costs are spread as they are over a long stream.
pub(crate) const EVOLVE_EVENTS: usize = 100_000;

/// One visit, start to end, as each client repeats it: five commands appending ten events.
const VISIT: [(&str, &str); 5] = [
    (
        "CheckIn",
        r#"{"patient_id":"p-1","patient_name":"Ana Lima","complaint":"chest pain","triage_level":2,"room":"A-12","physician":"dr-okafor","tests":["ecg","troponin"]}"#,
    ),
    ("RecordTest", r#"{"test":"ecg","result":"normal"}"#),
    ("RecordTest", r#"{"test":"troponin","result":"0.01 ng/mL"}"#),
    (
        "AddNote",
        r#"{"author":"dr-okafor","text":"pain resolved; ecg and troponin normal; follow up with gp"}"#,
    ),
    ("CheckOut", r#"{"disposition":"discharged"}"#),
];

/// The long stream cycles over these, so that its state keeps the same size however long it is.
const TESTS: [&str; 5] = ["ecg", "troponin", "cbc", "chest-xray", "lactate"];
const ROOMS: [&str; 4] = ["A-12", "B-3", "C-7", "RESUS-1"];
const PHYSICIANS: [&str; 3] = ["dr-okafor", "dr-lindqvist", "dr-haddad"];

/// What `evhost plugin-bench --json` prints, on one line.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PluginBench {
    pub(crate) name: String,
    /// The component's content hash, as a deploy reports it.
    pub(crate) version: String,
    /// Validating and compiling the component: what a deploy costs.
    pub(crate) compile_ms: f64,
    /// Loading the compiled artifact: what a restart costs.
    pub(crate) cached_load_ms: f64,
    /// The first call on a fresh instance.
    pub(crate) instantiate_us: f64,
    /// Events in the file it folded.
    pub(crate) events: u64,
    pub(crate) batch: u64,
    pub(crate) evolve_ns_per_event: f64,
}

/// The visit commands of one round.
pub(crate) struct Commands {
    /// The server's name and version.
    pub(crate) server: String,
    /// `events` are the events the commands appended; each latency sample is one command.
    pub(crate) measurement: Measurement,
}

impl Commands {
    /// Commands answered per second in the measured window.
    pub(crate) fn rate(&self) -> f64 {
        let commands = self
            .measurement
            .latency
            .map_or(0, |latency| latency.requests);
        commands as f64 / self.measurement.elapsed.as_secs_f64()
    }
}

/// One round of the plugin benchmarks; each part succeeds or fails on its own.
pub(crate) struct PluginRound {
    pub(crate) commands: Result<Commands, String>,
    /// `evolve` compiled natively, in ns per event.
    pub(crate) native_ns: Result<f64, String>,
    /// `evolve` in WebAssembly, and the load times.
    pub(crate) wasm: Result<PluginBench, String>,
}

impl PluginRound {
    pub(crate) fn failed(error: &str) -> Self {
        Self {
            commands: Err(error.to_owned()),
            native_ns: Err(error.to_owned()),
            wasm: Err(error.to_owned()),
        }
    }
}

/// What every round shares: the server binary, the component, and the long stream, in memory
/// for the native fold and in a file for `evhost plugin-bench`.
pub(crate) struct Plugins {
    binary: PathBuf,
    component: PathBuf,
    wasm: Bytes,
    work: PathBuf,
    events_file: PathBuf,
    /// The long stream in the host's wire form: each event's type and its data as JSON text.
    events: Vec<(String, String)>,
    timeout: Duration,
}

impl Plugins {
    /// Reads the component and writes the long stream into `work`.
    pub(crate) fn prepare(
        binary: PathBuf,
        component: PathBuf,
        work: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        let wasm = std::fs::read(&component)
            .with_context(|| format!("reading the visit component {}", component.display()))?;
        let (lines, events) = wire_form(&long_visit(EVOLVE_EVENTS))?;
        let events_file = work.join("visit-events.jsonl");
        std::fs::write(&events_file, lines)
            .with_context(|| format!("writing {}", events_file.display()))?;
        Ok(Self {
            binary,
            component,
            wasm: wasm.into(),
            work: work.to_owned(),
            events_file,
            events,
            timeout,
        })
    }

    /// One round: the commands against a fresh server, then `evolve` natively and in
    /// WebAssembly, the server stopped.
    pub(crate) async fn round(&self, settings: &Settings) -> PluginRound {
        let commands = self.commands(settings).await;
        match &commands {
            Ok(commands) => eprintln!(
                "{} visit commands, {} clients: {:.0} commands/s, {:.0} events/s",
                commands.server,
                settings.clients,
                commands.rate(),
                commands.measurement.rate()
            ),
            Err(error) => eprintln!("visit commands: failed: {error:#}"),
        }
        // Native passes bracket the WebAssembly ones, half before and half after, so that a slow
        // spell of the shared machine weighs on both sides of the ratio alike. Nothing else runs
        // now, so the folds may hold this thread.
        let half = settings.measure / 2;
        let before = native_passes(&self.events, half);
        let wasm = self.wasm_evolve(settings.measure).await;
        let native_ns = before.and_then(|mut passes| {
            passes.extend(native_passes(&self.events, half)?);
            per_event(passes, self.events.len())
        });
        match (&native_ns, &wasm) {
            (Ok(native), Ok(wasm)) => eprintln!(
                "visit evolve: native {native:.0} ns/event, WebAssembly {:.0} ns/event ({:.2}×); \
                 compile {:.0} ms, cached load {:.1} ms",
                wasm.evolve_ns_per_event,
                wasm.evolve_ns_per_event / native,
                wasm.compile_ms,
                wasm.cached_load_ms
            ),
            (native, wasm) => {
                if let Err(error) = native {
                    eprintln!("visit evolve, native: failed: {error:#}");
                }
                if let Err(error) = wasm {
                    eprintln!("visit evolve, WebAssembly: failed: {error:#}");
                }
            }
        }
        let message = |error: anyhow::Error| format!("{error:#}");
        PluginRound {
            commands: commands.map_err(message),
            native_ns: native_ns.map_err(message),
            wasm: wasm.map_err(message),
        }
    }

    /// Starts a fresh server, deploys the component and runs the visits; the server is stopped
    /// and its data removed whatever happens.
    async fn commands(&self, settings: &Settings) -> Result<Commands> {
        let data = self.work.join("plugins-data");
        let server = Server::start(&self.binary, &data, &self.work, self.timeout).await?;
        let system = Arc::new(Evhost { addr: server.addr });
        let result = async {
            let (version, _) = system.health().await?;
            let deployed = system.deploy(self.wasm.clone()).await?;
            if deployed.name != HANDLER || deployed.kind != "handler" {
                bail!(
                    "{} deployed as the {} {:?}, expected the handler {HANDLER:?}",
                    self.component.display(),
                    deployed.kind,
                    deployed.name
                );
            }
            Ok(Commands {
                server: format!("evhost {version}"),
                measurement: run_visits(&system, settings).await?,
            })
        }
        .await;
        if result.is_err() {
            eprintln!(
                "visit commands: the server's log ends:\n{}",
                server.log_tail()
            );
        }
        // The figures stand even if the server does not stop cleanly.
        if let Err(error) = server.stop(self.timeout).await {
            eprintln!("visit commands: {error:#}");
        }
        let _ = std::fs::remove_dir_all(&data);
        result
    }

    /// Runs `evhost plugin-bench` on the component and the long stream.
    async fn wasm_evolve(&self, measure: Duration) -> Result<PluginBench> {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("plugin-bench")
            .arg(&self.component)
            .arg("--events")
            .arg(&self.events_file)
            .arg("--batch")
            .arg(EVOLVE_BATCH.to_string())
            .arg("--seconds")
            .arg(measure.as_secs_f64().to_string())
            .arg("--json")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // Compiling and loading come before the measured passes.
        let budget = measure + self.timeout;
        let output = tokio::time::timeout(budget, command.output())
            .await
            .with_context(|| format!("evhost plugin-bench took longer than {budget:?}"))?
            .with_context(|| format!("running {} plugin-bench", self.binary.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!(
                "evhost plugin-bench failed ({}): {}",
                output.status,
                stderr.trim()
            );
        }
        let bench = parse_plugin_bench(&String::from_utf8_lossy(&output.stdout))?;
        let expected = (self.events.len() as u64, EVOLVE_BATCH as u64);
        if (bench.events, bench.batch) != expected {
            bail!(
                "evhost plugin-bench folded {} events in batches of {}, expected {} in batches of {}",
                bench.events,
                bench.batch,
                expected.0,
                expected.1
            );
        }
        Ok(bench)
    }
}

/// Runs visits with `settings.clients` clients of `system`, each on streams of its own, for the
/// timed window: what the commands appended, one latency sample per command.
pub(crate) async fn run_visits<S: System<Client = EvhostClient>>(
    system: &Arc<S>,
    settings: &Settings,
) -> Result<Measurement> {
    let clients = workload::connect_all(system, settings, settings.clients).await?;
    let until = Arc::new(Until::timed(settings));
    let tasks = clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| {
            tokio::spawn(visits(client, index, until.clone(), settings.op_timeout))
        })
        .collect();
    let tallies = workload::join_clients(tasks).await?;
    Ok(workload::merge(tallies, settings.measure, false))
}

/// One client's loop: visit after visit on its own streams `visit-c<client>-<n>`, one command
/// at a time, until the deadline; any answer but 200 fails the run.
async fn visits(
    mut client: EvhostClient,
    index: usize,
    until: Arc<Until>,
    op_timeout: Duration,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut visit = 0_u64;
    loop {
        let stream = format!("{HANDLER}-c{index}-{visit}");
        for (command_type, data) in VISIT {
            if !until.claim(1) {
                return Ok(tally);
            }
            let started = Instant::now();
            let events = tokio::time::timeout(
                op_timeout,
                client.command(HANDLER, &stream, command_type, data),
            )
            .await
            .with_context(|| {
                format!("no answer to {command_type} on {stream} within {op_timeout:?}")
            })?
            .with_context(|| format!("{command_type} on {stream}"))?;
            tally.stored(started, events, until.measures(started));
        }
        visit += 1;
    }
}

/// A visit that never ends: checked in once, then the same cycle of room moves, physicians, test
/// orders, results and notes over and over, so that its state (one room, one physician, five
/// tests) stays the same size however many events it has.
fn long_visit(count: usize) -> Vec<VisitEvent> {
    let checked_in = VisitEvent::PatientCheckedIn {
        patient_id: "p-1".to_owned(),
        patient_name: "Ana Lima".to_owned(),
        complaint: "chest pain radiating to the left arm".to_owned(),
        triage_level: 2,
        hospital: visit::DEFAULT_HOSPITAL.to_owned(),
        expected_stay_seconds: None,
    };
    let cycles = (0..).flat_map(|cycle: usize| {
        let room = ROOMS[cycle % ROOMS.len()].to_owned();
        let test = TESTS[cycle % TESTS.len()].to_owned();
        let physician = PHYSICIANS[cycle % PHYSICIANS.len()];
        [
            VisitEvent::RoomAssigned { room: room.clone() },
            VisitEvent::PhysicianAssigned {
                physician: physician.to_owned(),
            },
            VisitEvent::TestOrdered { test: test.clone() },
            VisitEvent::TestResultRecorded {
                test,
                result: "within normal limits".to_owned(),
                abnormal: cycle.is_multiple_of(7),
            },
            VisitEvent::NoteAdded {
                author: physician.to_owned(),
                text: format!("reviewed results, round {cycle}; patient comfortable"),
            },
            VisitEvent::RoomReleased { room },
        ]
    });
    std::iter::once(checked_in)
        .chain(cycles)
        .take(count)
        .collect()
}

/// The events as `evhost plugin-bench` reads them (one `{"type", "data"}` object per line) and
/// in the wire form the SDK folds (type, data as JSON text), both from the same serialization.
fn wire_form(events: &[VisitEvent]) -> Result<(String, Vec<(String, String)>)> {
    #[derive(Deserialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        event_type: String,
        #[serde(borrow)]
        data: &'a RawValue,
    }
    let mut lines = String::new();
    let mut wire = Vec::with_capacity(events.len());
    for event in events {
        let line = serde_json::to_string(event)?;
        let parsed: Line<'_> = serde_json::from_str(&line)?;
        wire.push((parsed.event_type, parsed.data.get().to_owned()));
        lines.push_str(&line);
        lines.push('\n');
    }
    Ok((lines, wire))
}

/// `evolve` natively over the whole stream, pass after pass for `measure`: each pass's time.
fn native_passes(events: &[(String, String)], measure: Duration) -> Result<Vec<Duration>> {
    let mut passes = Vec::new();
    let until = Instant::now() + measure;
    while passes.is_empty() || Instant::now() < until {
        let started = Instant::now();
        std::hint::black_box(fold(events)?);
        passes.push(started.elapsed());
    }
    Ok(passes)
}

/// The median pass over a stream of `events` events, in ns per event, as `evhost plugin-bench`
/// reports it.
fn per_event(passes: Vec<Duration>, events: usize) -> Result<f64> {
    let pass = median_by(passes, |pass| Some(pass.as_secs_f64())).context("no pass")?;
    Ok(pass.as_nanos() as f64 / events as f64)
}

/// Folds `events` from no state in batches of [`EVOLVE_BATCH`], carrying the state (its bytes)
/// from batch to batch as the host does, and returns the last state.
fn fold(events: &[(String, String)]) -> Result<Vec<u8>> {
    let mut state: Option<Vec<u8>> = None;
    for batch in events.chunks(EVOLVE_BATCH) {
        let batch = batch.iter().map(|(t, d)| (t.as_str(), d.as_str()));
        let next = evhost_sdk::__private::evolve::<VisitHandler>(state.as_deref(), batch)
            .map_err(anyhow::Error::msg)?;
        state = Some(next);
    }
    state.context("no events to fold")
}

/// The JSON line `evhost plugin-bench --json` prints last.
fn parse_plugin_bench(stdout: &str) -> Result<PluginBench> {
    let line = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .context("evhost plugin-bench printed nothing")?;
    serde_json::from_str(line)
        .with_context(|| format!("evhost plugin-bench printed {line:?}, expected its JSON line"))
}

#[cfg(test)]
mod tests {
    use visit::{Stage, VisitState};

    use super::*;

    #[test]
    fn a_visit_is_five_commands_the_handler_accepts_appending_ten_events() {
        let mut state: Option<Vec<u8>> = None;
        let mut appended = Vec::new();
        for (index, (command_type, data)) in VISIT.into_iter().enumerate() {
            let decided = evhost_sdk::__private::decide::<VisitHandler>(
                state.as_deref(),
                &format!("command-{index}"),
                "visit-c0-0",
                command_type,
                data,
                "{}",
            );
            let events = decided.unwrap().unwrap_or_else(|reason| {
                panic!("{command_type} was rejected: {reason}");
            });
            appended.push(events.len());
            let wire = events.iter().map(|(t, d)| (t.as_str(), d.as_str()));
            state = Some(
                evhost_sdk::__private::evolve::<VisitHandler>(state.as_deref(), wire).unwrap(),
            );
        }
        assert_eq!(appended, [5, 1, 1, 1, 2]);
        let state: VisitState = serde_json::from_slice(&state.unwrap()).unwrap();
        assert_eq!(state.stage, Stage::CheckedOut);
    }

    #[test]
    fn the_long_visit_folds_into_a_state_of_bounded_size() {
        let (lines, wire) = wire_form(&long_visit(5_000)).unwrap();
        assert_eq!(wire.len(), 5_000);
        assert_eq!(lines.lines().count(), 5_000);
        assert_eq!(wire[0].0, "PatientCheckedIn");
        let first: serde_json::Value = serde_json::from_str(lines.lines().nth(1).unwrap()).unwrap();
        assert_eq!(first["type"], "RoomAssigned");
        assert_eq!(first["data"]["room"], "A-12");
        assert_eq!(wire[1].1, r#"{"room":"A-12"}"#);
        let short = fold(&wire[..600]).unwrap();
        let long = fold(&wire).unwrap();
        let state: VisitState = serde_json::from_slice(&long).unwrap();
        assert_eq!(state.stage, Stage::CheckedIn);
        assert_eq!(state.tests.len(), TESTS.len());
        assert_eq!(state.pending_tests().count(), 0);
        assert!(long.len() <= short.len() + 16, "the state grew: {long:?}");
    }

    #[test]
    fn the_median_pass_is_divided_by_the_events() {
        let passes = [3, 1, 2].map(Duration::from_micros).to_vec();
        assert_eq!(per_event(passes, 1000).unwrap(), 2.0);
        assert!(per_event(Vec::new(), 1000).is_err());
    }

    #[test]
    fn reads_the_plugin_bench_line() {
        let stdout = "compiling\n{\"name\":\"visit\",\"version\":\"ab12\",\"compile_ms\":812.5,\
            \"cached_load_ms\":3.25,\"instantiate_us\":41.0,\"events\":100000,\"batch\":512,\
            \"evolve_ns_per_event\":612.75}\n\n";
        let bench = parse_plugin_bench(stdout).unwrap();
        assert_eq!(
            (bench.name.as_str(), bench.version.as_str()),
            ("visit", "ab12")
        );
        assert_eq!((bench.events, bench.batch), (100_000, 512));
        assert_eq!(bench.compile_ms, 812.5);
        assert_eq!(bench.cached_load_ms, 3.25);
        assert_eq!(bench.evolve_ns_per_event, 612.75);
        assert!(parse_plugin_bench("").is_err());
        let no_events = stdout.replace("612.75", "null");
        assert!(parse_plugin_bench(&no_events).is_err());
    }
}

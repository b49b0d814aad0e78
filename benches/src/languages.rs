//! The projection `stays` written in three languages on evhost: Rust (`plugins/stays`), Python
//! (`plugins/python/stays`, `stays-py`) and JavaScript (`plugins/js/stays`, `stays-js`), each
//! built by its own SDK: what it costs per event, to compile at a deploy and to load at a
//! restart, and what ten Python plugins hold in memory.
//!
//! The log is filled once per run: `visits` hospital visits of two events (check-in, then, a
//! thousand visits later, check-out), appended straight to the log by concurrent clients into a
//! server that is then stopped. Each round starts a fresh server on a copy of that store and:
//! - deploys each language's projection in turn and times it from the deploy's answer until its
//!   position reaches the head; the three `hospitals` answers must then be equal, or every
//!   language fails the round;
//! - restarts the server, which loads the three from their compiled artifacts; the compile time
//!   at the deploy and the load time at the restart are the host's own, from its log lines.
//!
//! Memory, in the first round only (ten deploys of a large component take minutes): a fresh
//! server with ten distinct Python plugins (copies of `stays-py` named `stays-py-1` to
//! `stays-py-10`), deployed and each applying a few visits; its resident memory (`VmRSS`), and
//! again after a restart, when all ten load from their compiled artifacts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::evhost::Server;
use crate::http::Connection;
use crate::memory::Probe;
use crate::projections::{copy_dir, expect, fill_store, interleave};
use crate::report::{MIB, median, thousands};
use crate::versions::{deploy, head, wait};

/// The Python plugins of the memory figure.
const COPIES: usize = 10;
/// Visits appended to the memory figure's server, before and after its restart, so that every
/// plugin instantiates and applies.
const MEMORY_VISITS: usize = 5;
/// What every deploy asks for: a call's time budget that no batch of the slowest language comes
/// near, so that the figures measure the language, not a timed-out batch applied again event by
/// event.
const DEPLOY_QUERY: &str = "?timeout_ms=60000";
/// The hospitals the visits go to; a visit whose hospital is `None` names none (`main`).
const HOSPITALS: [Option<&str>; 5] = [
    Some("north"),
    Some("south"),
    Some("east"),
    Some("west"),
    None,
];

/// The three languages, in the order a round deploys them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Language {
    Rust,
    Python,
    JavaScript,
}

impl Language {
    pub(crate) const ALL: [Language; 3] = [Language::Rust, Language::Python, Language::JavaScript];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::JavaScript => "JavaScript",
        }
    }

    /// The name its projection deploys as.
    pub(crate) fn plugin(self) -> &'static str {
        match self {
            Language::Rust => "stays",
            Language::Python => "stays-py",
            Language::JavaScript => "stays-js",
        }
    }
}

/// The components a run uses, by file.
pub(crate) struct Components {
    /// `stays`, `stays-py` and `stays-js`, in [`Language::ALL`]'s order.
    pub(crate) stays: [PathBuf; 3],
    /// A directory of `stays-py-1.wasm` … `stays-py-10.wasm`.
    pub(crate) python_copies: PathBuf,
}

/// One language's figures in one round.
pub(crate) struct LanguageRun {
    /// The component's size in bytes.
    pub(crate) size: u64,
    /// Validating and compiling at the deploy, as the host logged it.
    pub(crate) compile: Duration,
    /// Loading the compiled artifact at a restart, as the host logged it.
    pub(crate) cached_load: Duration,
    /// Events the projection applied: the whole log.
    pub(crate) events: u64,
    /// From the deploy's answer until its position reached the head.
    pub(crate) catch_up: Duration,
}

impl LanguageRun {
    pub(crate) fn micros_per_event(&self) -> f64 {
        self.catch_up.as_secs_f64() * 1e6 / self.events as f64
    }

    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.catch_up.as_secs_f64()
    }
}

/// The server with ten Python plugins.
pub(crate) struct TenPlugins {
    /// Resident memory of the fresh server before the deploys.
    pub(crate) alone: Option<u64>,
    /// After the ten deploys, each plugin having applied [`MEMORY_VISITS`] visits.
    pub(crate) deployed: Option<u64>,
    /// After a restart and as many visits more.
    pub(crate) restarted: Option<u64>,
    /// The ten compilations at their deploys, in all.
    pub(crate) compiles: Duration,
    /// The ten loads from their compiled artifacts at the restart, in all.
    pub(crate) cached_loads: Duration,
}

impl TenPlugins {
    /// The higher of the two readings with all ten loaded.
    fn peak(&self) -> Option<u64> {
        self.deployed.max(self.restarted)
    }
}

/// One round's figures; each language succeeds or fails on its own.
pub(crate) struct LanguagesRound {
    /// In [`Language::ALL`]'s order.
    pub(crate) languages: [Result<LanguageRun, String>; 3],
    /// Measured in the first round only.
    pub(crate) memory: Option<Result<TenPlugins, String>>,
}

impl LanguagesRound {
    pub(crate) fn failed(error: &str) -> Self {
        LanguagesRound {
            languages: Language::ALL.map(|_| Err(error.to_owned())),
            memory: None,
        }
    }
}

/// How the host's log line names a version's load: `plugin <name>@<12 hex>: <how> in <ms> ms`.
const COMPILED: &str = "compiled";
const FROM_ARTIFACT: &str = "loaded from its compiled artifact";

/// The filled store every round starts from, and the components.
pub(crate) struct Languages {
    binary: PathBuf,
    /// Each language's component, or why it cannot be read (its build failed).
    components: [Result<Bytes, String>; 3],
    python_copies: PathBuf,
    visits: usize,
    work: PathBuf,
    filled: PathBuf,
    timeout: Duration,
}

/// A projection deployed and caught up with the log.
struct CaughtUp {
    version: String,
    compile: Duration,
    catch_up: Duration,
    /// Its answer to the query `hospitals`.
    hospitals: Value,
}

impl Languages {
    /// Reads the components and fills the store the rounds copy with `visits` visits.
    pub(crate) async fn prepare(
        binary: PathBuf,
        components: &Components,
        visits: usize,
        work: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        let read = |path: &PathBuf| {
            read_component(path)
                .map(Bytes::from)
                .map_err(|e| format!("{e:#}"))
        };
        let appends = interleave(visits, stay_appends);
        let filled = fill_store(&binary, work, "languages", appends, visits * 2, timeout).await?;
        Ok(Languages {
            binary,
            components: components.stays.each_ref().map(read),
            python_copies: components.python_copies.clone(),
            visits,
            work: work.to_path_buf(),
            filled,
            timeout,
        })
    }

    /// One round: every language's catch-up and loads; with `memory`, the ten Python plugins too.
    pub(crate) async fn round(&self, memory: bool) -> LanguagesRound {
        let languages = match self.per_event().await {
            Ok(languages) => languages,
            Err(error) => {
                let error = format!("{error:#}");
                eprintln!("languages: failed: {error}");
                Language::ALL.map(|_| Err(error.clone()))
            }
        };
        let memory = if memory {
            let memory = self.ten_python().await.map_err(|e| format!("{e:#}"));
            match &memory {
                Ok(ten) => eprintln!(
                    "languages: ten Python plugins: {} MiB resident after their deploys, {} MiB \
                     after a restart (their cached loads {:.0} ms in all)",
                    mib(ten.deployed),
                    mib(ten.restarted),
                    ten.cached_loads.as_secs_f64() * 1e3
                ),
                Err(error) => eprintln!("languages: ten Python plugins: failed: {error}"),
            }
            Some(memory)
        } else {
            None
        };
        LanguagesRound { languages, memory }
    }

    /// Deploys each language's projection on a fresh server over a copy of the log, one after
    /// the other, then restarts the server to see them load from their compiled artifacts.
    async fn per_event(&self) -> Result<[Result<LanguageRun, String>; 3]> {
        let data = self.work.join("languages-round");
        let _ = std::fs::remove_dir_all(&data);
        copy_dir(&self.filled, &data)?;
        let server = Server::start(&self.binary, &data, &self.work, self.timeout).await?;
        let mut http = Connection::open(server.addr).await?;
        let head = head(&mut http).await?;
        let mut caught_up = Vec::new();
        for (language, component) in Language::ALL.into_iter().zip(&self.components) {
            let result = match component {
                Ok(wasm) => self
                    .catch_up(&server, &mut http, language, wasm.clone(), head)
                    .await
                    .map_err(|e| format!("{e:#}")),
                Err(error) => Err(error.clone()),
            };
            match &result {
                Ok(done) => eprintln!(
                    "languages: {} `{}` compiled in {:.0} ms; caught up with {head} events in \
                     {:.2} s, {:.1} µs per event",
                    language.name(),
                    language.plugin(),
                    done.compile.as_secs_f64() * 1e3,
                    done.catch_up.as_secs_f64(),
                    done.catch_up.as_secs_f64() * 1e6 / head as f64
                ),
                Err(error) => eprintln!("languages: {}: failed: {error}", language.name()),
            }
            caught_up.push(result);
        }
        if let Err(error) = self.same_answers(&caught_up) {
            eprintln!("languages: {error}");
            for result in &mut caught_up {
                if result.is_ok() {
                    *result = Err(error.clone());
                }
            }
        }
        server.stop(self.timeout).await?;
        // The restart loads every version from the compiled artifact its deploy stored.
        let server = Server::start(&self.binary, &data, &self.work, self.timeout).await?;
        let mut runs = Vec::new();
        for ((language, result), component) in Language::ALL
            .into_iter()
            .zip(caught_up)
            .zip(&self.components)
        {
            let run = match (result, component) {
                (Ok(done), Ok(wasm)) => {
                    let loaded = logged_load(&server, &done.version, self.timeout).await;
                    loaded
                        .map(|cached_load| {
                            eprintln!(
                                "languages: {} `{}` loaded from its compiled artifact in {:.1} ms",
                                language.name(),
                                language.plugin(),
                                cached_load.as_secs_f64() * 1e3
                            );
                            LanguageRun {
                                size: wasm.len() as u64,
                                compile: done.compile,
                                cached_load,
                                events: head,
                                catch_up: done.catch_up,
                            }
                        })
                        .map_err(|e| format!("{e:#}"))
                }
                (Err(error), _) => Err(error),
                (_, Err(error)) => Err(error.clone()),
            };
            runs.push(run);
        }
        server.stop(self.timeout).await?;
        let _ = std::fs::remove_dir_all(&data);
        Ok(runs
            .try_into()
            .unwrap_or_else(|_| unreachable!("one run per language")))
    }

    /// Deploys `wasm` and waits until its projection has applied the whole log.
    async fn catch_up(
        &self,
        server: &Server,
        http: &mut Connection,
        language: Language,
        wasm: Bytes,
        head: u64,
    ) -> Result<CaughtUp> {
        let name = language.plugin();
        let version = deploy(http, wasm, DEPLOY_QUERY).await?;
        let started = Instant::now();
        wait(http, name, self.timeout, |plugin| {
            plugin["position"].as_u64() >= Some(head)
        })
        .await?;
        let catch_up = started.elapsed();
        let compile = load_time(&server.log(), &version, COMPILED)
            .context("the host logged no compile time for the deploy")?;
        let path = format!("/projections/{name}/query/hospitals");
        let (status, body) = http.send(Method::GET, &path, None).await?;
        expect(status, &body)?;
        Ok(CaughtUp {
            version,
            compile,
            catch_up,
            hospitals: serde_json::from_slice(&body)?,
        })
    }

    /// The languages that caught up must answer `hospitals` alike, and count every visit.
    fn same_answers(&self, caught_up: &[Result<CaughtUp, String>]) -> Result<(), String> {
        let mut answers = Language::ALL
            .into_iter()
            .zip(caught_up)
            .filter_map(|(language, result)| Some((language, &result.as_ref().ok()?.hospitals)));
        let Some((first, answer)) = answers.next() else {
            return Ok(());
        };
        let counted: u64 = answer["hospitals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|hospital| hospital["visits"].as_u64())
            .sum();
        if counted != self.visits as u64 {
            return Err(format!(
                "{} `hospitals` counts {counted} ended visits, not {}: {answer}",
                first.name(),
                self.visits
            ));
        }
        for (other, theirs) in answers {
            if theirs != answer {
                return Err(format!(
                    "the `hospitals` answers differ: {} {answer}; {} {theirs}",
                    first.name(),
                    other.name()
                ));
            }
        }
        Ok(())
    }

    /// A fresh server with the ten Python plugins: its memory after their deploys, and after a
    /// restart.
    async fn ten_python(&self) -> Result<TenPlugins> {
        let data = self.work.join("languages-memory");
        let _ = std::fs::remove_dir_all(&data);
        let server = Server::start(&self.binary, &data, &self.work, self.timeout).await?;
        let alone = Probe::Process(server.pid).resident();
        let mut http = Connection::open(server.addr).await?;
        let mut versions = Vec::new();
        let mut compiles = Duration::ZERO;
        for n in 1..=COPIES {
            let wasm = read_component(&self.python_copies.join(format!("stays-py-{n}.wasm")))?;
            let version = deploy(&mut http, wasm.into(), DEPLOY_QUERY).await?;
            compiles += load_time(&server.log(), &version, COMPILED)
                .with_context(|| format!("the host logged no compile time for stays-py-{n}"))?;
            versions.push(version);
        }
        apply_visits(&mut http, 0, self.timeout).await?;
        // As the memory of a large store is read: once what the catch-ups held is released.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let deployed = Probe::Process(server.pid).resident();
        server.stop(self.timeout).await?;
        let server = Server::start(&self.binary, &data, &self.work, self.timeout).await?;
        let mut cached_loads = Duration::ZERO;
        for version in &versions {
            cached_loads += logged_load(&server, version, self.timeout).await?;
        }
        let mut http = Connection::open(server.addr).await?;
        apply_visits(&mut http, MEMORY_VISITS, self.timeout).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let restarted = Probe::Process(server.pid).resident();
        server.stop(self.timeout).await?;
        let _ = std::fs::remove_dir_all(&data);
        Ok(TenPlugins {
            alone,
            deployed,
            restarted,
            compiles,
            cached_loads,
        })
    }
}

fn read_component(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "reading {} (benches/run.sh builds it: did its build fail?)",
            path.display()
        )
    })
}

/// Appends [`MEMORY_VISITS`] visits from `first` on, and waits until each of the ten Python
/// plugins has applied them.
async fn apply_visits(http: &mut Connection, first: usize, timeout: Duration) -> Result<()> {
    for n in first..first + MEMORY_VISITS {
        for (stream, body) in stay_appends(n) {
            let path = format!("/streams/{stream}");
            let (status, answer) = http.send(Method::POST, &path, Some(body)).await?;
            if status != StatusCode::CREATED {
                bail!(
                    "append to {stream}: {status} {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
    }
    let head = head(http).await?;
    for n in 1..=COPIES {
        wait(http, &format!("stays-py-{n}"), timeout, |plugin| {
            plugin["position"].as_u64() >= Some(head)
        })
        .await?;
    }
    Ok(())
}

/// The time the host logged for loading `version` as `how` (`compiled`, or `loaded from its
/// compiled artifact`), from its last such line.
fn load_time(log: &str, version: &str, how: &str) -> Option<Duration> {
    // The host labels a version `<name>@<its first 12 hex digits>`; at a deploy the name is
    // not known yet (`upload@…`), so only the digits are matched.
    let needle = format!("@{}: {how} in ", &version[..version.len().min(12)]);
    log.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once(&needle)?;
        let ms: f64 = rest.strip_suffix(" ms")?.trim().parse().ok()?;
        Some(Duration::from_secs_f64(ms / 1e3))
    })
}

/// Waits for the restarted `server` to log that it loaded `version` from its compiled artifact,
/// and answers how long that took.
async fn logged_load(server: &Server, version: &str, timeout: Duration) -> Result<Duration> {
    let deadline = Instant::now() + timeout;
    loop {
        let log = server.log();
        if let Some(loaded) = load_time(&log, version, FROM_ARTIFACT) {
            return Ok(loaded);
        }
        if load_time(&log, version, COMPILED).is_some() {
            bail!("the restart compiled {version} again instead of loading its compiled artifact");
        }
        if Instant::now() > deadline {
            bail!(
                "the restarted server did not log loading {version} within {timeout:?}; its log \
                 ends:\n{}",
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The two appends of visit `n`: its check-in, and its check-out. One visit in five names no
/// hospital, so the projections' default (`main`) counts too.
fn stay_appends(n: usize) -> [(String, String); 2] {
    let mut check_in = json!({
        "patient_id": format!("p-{n}"),
        "patient_name": format!("Patient {n}"),
        "complaint": "abdominal pain",
        "triage_level": n % 5 + 1,
    });
    if let Some(hospital) = HOSPITALS[n % HOSPITALS.len()] {
        check_in["hospital"] = json!(hospital);
    }
    let check_out = json!({"disposition": "discharged"});
    let body = |event_type: &str, data: Value| {
        json!({"events": [{"type": event_type, "data": data}]}).to_string()
    };
    let stream = format!("visit-{n}");
    [
        (stream.clone(), body("PatientCheckedIn", check_in)),
        (stream, body("PatientCheckedOut", check_out)),
    ]
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".to_owned(), |b| format!("{:.0}", b as f64 / MIB))
}

/// One figure of one language in every round, `None` where it failed.
fn per_round(
    rounds: &[LanguagesRound],
    language: Language,
    figure: impl Fn(&LanguageRun) -> f64,
) -> Vec<Option<f64>> {
    let index = Language::ALL
        .iter()
        .position(|l| *l == language)
        .unwrap_or(0);
    rounds
        .iter()
        .map(|round| round.languages[index].as_ref().ok().map(&figure))
        .collect()
}

/// A language's µs per event over Rust's, in each round.
fn ratios_to_rust(rounds: &[LanguagesRound], language: Language) -> Vec<Option<f64>> {
    let ours = per_round(rounds, language, LanguageRun::micros_per_event);
    let rust = per_round(rounds, Language::Rust, LanguageRun::micros_per_event);
    ours.iter()
        .zip(&rust)
        .map(|(ours, rust)| Some(ours.as_ref()? / rust.as_ref()?))
        .collect()
}

/// The report's section on the three languages; nothing when they did not run.
pub(crate) fn write_section(out: &mut String, rounds: &[LanguagesRound]) {
    use std::fmt::Write;
    if rounds.is_empty() {
        return;
    }
    let events = rounds
        .iter()
        .flat_map(|round| round.languages.iter().flatten())
        .map(|run| run.events)
        .next();
    let _ = writeln!(
        out,
        "## Plugins in three languages: the projection `stays`\n"
    );
    let _ = writeln!(
        out,
        "The same projection, the average length of stay per hospital, in Rust (`plugins/stays`, \
         built for wasm32-wasip2 in release), Python (`plugins/python/stays`, built by \
         `python -m evhost build`) and JavaScript (`plugins/js/stays`, built by `evhost-js \
         build`), on the release server, in {} rounds; each figure is the median of its rounds \
         and a ratio is taken within each round. The log: {} events, visits of two (check-in, \
         and a thousand visits later check-out) appended straight to the store by \
         {} clients, then the server stopped; each round starts a fresh server on a copy of that \
         store and deploys the three projections one after the other.\n",
        rounds.len(),
        events.map_or_else(|| "?".to_owned(), |events| thousands(events as f64)),
        crate::projections::FILL_CLIENTS,
    );
    let _ = writeln!(
        out,
        "| Language | Plugin | Component, MB | Compile at deploy, ms | Cached load, ms | µs per \
         event | Events/s | Per event ÷ Rust | Rounds, µs per event |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|---|");
    for language in Language::ALL {
        let figure = |pick: fn(&LanguageRun) -> f64, format: fn(f64) -> String| {
            median(&per_round(rounds, language, pick)).map_or_else(|| "failed".to_owned(), format)
        };
        let ratio = median(&ratios_to_rust(rounds, language))
            .map_or_else(|| "failed".to_owned(), |ratio| format!("{ratio:.1}×"));
        let each: Vec<String> = per_round(rounds, language, LanguageRun::micros_per_event)
            .iter()
            .map(|us| us.map_or_else(|| "failed".to_owned(), |us| format!("{us:.1}")))
            .collect();
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} | {} | {ratio} | {} |",
            language.name(),
            language.plugin(),
            figure(|run| run.size as f64 / 1e6, |mb| format!("{mb:.2}")),
            figure(
                |run| run.compile.as_secs_f64() * 1e3,
                |ms| format!("{ms:.0}")
            ),
            figure(
                |run| run.cached_load.as_secs_f64() * 1e3,
                |ms| format!("{ms:.1}")
            ),
            figure(LanguageRun::micros_per_event, |us| format!("{us:.1}")),
            figure(LanguageRun::rate, thousands),
            each.join(" · "),
        );
    }
    let memory = rounds.iter().find_map(|round| round.memory.as_ref());
    let _ = writeln!(
        out,
        "\n- Per event: from the deploy's answer (compiled, stored, runner started) until \
         `GET /plugins/<name>` shows the head as its position, over the events: reading each \
         batch from the store, the call into the component that applies it, and the commit of \
         its writes with the checkpoint (each check-out also logs a line, in all three). Every \
         deploy asks for `timeout_ms=60000`, so that no batch runs past a call's budget. After the three caught up, their `hospitals` answers \
         must be equal and count every visit, or the round fails.\n\
         - Compile at deploy and cached load: the host's own times, from its log lines \
         (`compiled in`, at the deploy; `loaded from its compiled artifact in`, when the \
         server restarts on the same store).\n\
         - Memory, measured once: a fresh server, ten distinct Python plugins deployed (copies \
         of `stays-py` named `stays-py-1` to `stays-py-10`), {MEMORY_VISITS} visits appended so \
         that each instantiates and applies them, then the server's resident memory (`VmRSS`) a \
         second later; then the same after a restart, with {MEMORY_VISITS} visits more.\n"
    );
    match memory {
        Some(Ok(ten)) => {
            let _ = writeln!(
                out,
                "Ten Python plugins: the server's resident memory {} MiB after their deploys \
                 (compiled in {:.1} s in all; {} MiB before them), {} MiB after a restart, \
                 where the ten loaded from their compiled artifacts in {:.0} ms in all.\n",
                mib(ten.deployed),
                ten.compiles.as_secs_f64(),
                mib(ten.alone),
                mib(ten.restarted),
                ten.cached_loads.as_secs_f64() * 1e3,
            );
        }
        Some(Err(error)) => {
            let _ = writeln!(out, "Ten Python plugins: failed: {error}\n");
        }
        None => {
            let _ = writeln!(out, "Ten Python plugins: not measured.\n");
        }
    }
    let _ = writeln!(out, "| Target | Measured | Met |");
    let _ = writeln!(out, "|---|---|---|");
    let verdict = |met: Option<bool>| match met {
        Some(true) => "yes",
        Some(false) => "no",
        None => "—",
    };
    let python_size = median(&per_round(rounds, Language::Python, |run| run.size as f64));
    let python_load = median(&per_round(rounds, Language::Python, |run| {
        run.cached_load.as_secs_f64() * 1e3
    }));
    let _ = writeln!(
        out,
        "| cached load of the Python component ({} MB) < 200 ms | {} | {} |",
        python_size.map_or_else(|| "?".to_owned(), |bytes| format!("{:.1}", bytes / 1e6)),
        python_load.map_or_else(|| "failed".to_owned(), |ms| format!("{ms:.1} ms")),
        verdict(python_load.map(|ms| ms < 200.0))
    );
    let peak = memory
        .and_then(|ten| ten.as_ref().ok())
        .and_then(TenPlugins::peak);
    let _ = writeln!(
        out,
        "| ten Python plugins < 1 GiB resident | {} | {} |\n",
        peak.map_or_else(
            || "failed".to_owned(),
            |bytes| format!("{:.0} MiB", bytes as f64 / MIB)
        ),
        verdict(peak.map(|bytes| (bytes as f64) < 1024.0 * MIB))
    );
    for (n, round) in rounds.iter().enumerate() {
        for (language, result) in Language::ALL.into_iter().zip(&round.languages) {
            if let Err(error) = result {
                let _ = writeln!(out, "- Round {}, {}: {error}", n + 1, language.name());
            }
        }
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_load_times_from_the_hosts_log() {
        let version = "0123456789abcdef0123";
        let log = "2026-01-01T00:00:00Z INFO  plugin upload@0123456789ab: compiled in 7012.5 ms\n\
                   2026-01-01T00:00:01Z INFO  plugin stays-py@0123456789ab: visit 1 at north \
                   stayed 3 ms\n\
                   2026-01-01T00:00:02Z INFO  plugin stays-py@0123456789ab: loaded from its \
                   compiled artifact in 41.2 ms";
        assert_eq!(
            load_time(log, version, COMPILED),
            Some(Duration::from_secs_f64(7.0125))
        );
        assert_eq!(
            load_time(log, version, FROM_ARTIFACT),
            Some(Duration::from_secs_f64(0.0412))
        );
        assert_eq!(load_time(log, "ffffffffffffffff", COMPILED), None);
    }

    #[test]
    fn every_visit_is_checked_in_then_out_on_its_stream() {
        let [(stream, check_in), (same, check_out)] = stay_appends(4);
        assert_eq!((stream.as_str(), same.as_str()), ("visit-4", "visit-4"));
        let check_in: Value = serde_json::from_str(&check_in).unwrap();
        assert_eq!(check_in["events"][0]["type"], "PatientCheckedIn");
        // The fifth hospital is none: the projections' default.
        assert!(check_in["events"][0]["data"].get("hospital").is_none());
        let check_out: Value = serde_json::from_str(&check_out).unwrap();
        assert_eq!(check_out["events"][0]["type"], "PatientCheckedOut");
        let [(_, north), _] = stay_appends(5);
        assert!(north.contains(r#""hospital":"north""#), "{north}");
    }

    fn run(micros_per_event: u64, cached_load_ms: u64) -> Result<LanguageRun, String> {
        Ok(LanguageRun {
            size: 18_000_000,
            compile: Duration::from_secs(7),
            cached_load: Duration::from_millis(cached_load_ms),
            events: 20_000,
            catch_up: Duration::from_micros(micros_per_event * 20_000),
        })
    }

    #[test]
    fn the_section_has_a_row_per_language_and_states_each_target() {
        let round = LanguagesRound {
            languages: [
                run(5, 2),
                run(250, 150),
                Err("reading stays-js.wasm".to_owned()),
            ],
            memory: Some(Ok(TenPlugins {
                alone: Some(20 << 20),
                deployed: Some(900 << 20),
                restarted: Some(1200 << 20),
                compiles: Duration::from_secs(70),
                cached_loads: Duration::from_millis(800),
            })),
        };
        let mut text = String::new();
        write_section(&mut text, &[round]);
        assert!(
            text.contains(
                "| Python | `stays-py` | 18.00 | 7000 | 150.0 | 250.0 | 4 000 | 50.0× | 250.0 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| JavaScript | `stays-js` | failed |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| cached load of the Python component (18.0 MB) < 200 ms | 150.0 ms | yes |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| ten Python plugins < 1 GiB resident | 1200 MiB | no |"),
            "{text}"
        );
        assert!(
            text.contains("- Round 1, JavaScript: reading stays-js.wasm"),
            "{text}"
        );
    }
}

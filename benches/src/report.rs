//! The report: one Markdown table of every system and workload with evhost's ratio to each other
//! system, the targets checked against the figures, the machine, and what makes the
//! systems differ beyond their code (durability, atomicity).

use std::fmt::Write;

use crate::plugins::{self, Commands, PluginBench, PluginRound};
use crate::workload::{Latency, Measurement, Settings};

pub(crate) const MIB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SystemKind {
    Evhost,
    Postgres,
    Nats,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkloadKind {
    Append,
    Batch,
    Race,
    Read,
}

pub(crate) const WORKLOADS: [WorkloadKind; 4] = [
    WorkloadKind::Append,
    WorkloadKind::Batch,
    WorkloadKind::Race,
    WorkloadKind::Read,
];

pub(crate) struct WorkloadRun {
    pub(crate) kind: WorkloadKind,
    pub(crate) result: Result<Measurement, String>,
    /// Peak resident memory of the server while the workload ran, in bytes.
    pub(crate) peak_memory: Option<u64>,
    /// Events/s of every round that measured this workload, in round order.
    pub(crate) rates: Vec<f64>,
}

/// One report from several rounds of the same systems: per system and workload, the round with
/// the median events/s (its latency and memory with it), and every round's rate beside it.
/// Memory of a large store comes from the round that measured it; the peak over the run is the
/// highest of all rounds.
pub(crate) fn median_rounds(rounds: Vec<Vec<SystemRun>>) -> Vec<SystemRun> {
    let mut rounds = rounds.into_iter();
    let Some(mut combined) = rounds.next() else {
        return Vec::new();
    };
    // Per system, per workload: that workload's run in every round that ran it.
    let mut pools: Vec<Vec<Vec<WorkloadRun>>> = combined
        .iter_mut()
        .map(|system| match &mut system.outcome {
            Ok(workloads) => std::mem::take(workloads)
                .into_iter()
                .map(|run| vec![run])
                .collect(),
            Err(_) => Vec::new(),
        })
        .collect();
    for round in rounds {
        for ((system, pool), run) in combined.iter_mut().zip(&mut pools).zip(round) {
            system.high_water = system.high_water.max(run.high_water);
            if system.memory.is_none() {
                system.memory = run.memory;
            }
            let Ok(workloads) = run.outcome else { continue };
            if pool.is_empty() {
                *pool = workloads.into_iter().map(|run| vec![run]).collect();
                system.outcome = Ok(Vec::new());
            } else {
                for (runs, workload) in pool.iter_mut().zip(workloads) {
                    runs.push(workload);
                }
            }
        }
    }
    for (system, pool) in combined.iter_mut().zip(pools) {
        if !pool.is_empty() {
            system.outcome = Ok(pool.into_iter().map(median_run).collect());
        }
    }
    combined
}

/// The run with the median events/s among those that measured, with every round's rate.
fn median_run(runs: Vec<WorkloadRun>) -> WorkloadRun {
    let rates: Vec<f64> = runs.iter().flat_map(|run| run.rates.clone()).collect();
    let rate = |run: &WorkloadRun| run.result.as_ref().ok().map(Measurement::rate);
    let mut median = median_by(runs, rate).expect("a workload ran in at least one round");
    median.rates = rates;
    median
}

/// The item with the median `key` (the upper one of an even count) among those that have one;
/// items without a key (failed rounds) are the answer only if none has one. `None` if empty.
pub(crate) fn median_by<T>(mut items: Vec<T>, key: impl Fn(&T) -> Option<f64>) -> Option<T> {
    let sort_key = |item: &T| key(item).unwrap_or(f64::NEG_INFINITY);
    items.sort_by(|a, b| sort_key(a).total_cmp(&sort_key(b)));
    let measured = items.iter().filter(|item| key(item).is_some()).count();
    // Items without a key sort first; the median is taken among the others.
    let index = (items.len() - measured) + measured / 2;
    let last = items.len().checked_sub(1)?;
    Some(items.swap_remove(index.min(last)))
}

/// evhost's memory with a large store: at rest after a restart, and under the append load.
pub(crate) struct MemoryRun {
    pub(crate) events: u64,
    pub(crate) fill_rate: f64,
    pub(crate) at_rest: Option<u64>,
    pub(crate) under_load: Option<u64>,
    pub(crate) load: Measurement,
}

pub(crate) struct SystemRun {
    pub(crate) label: String,
    pub(crate) kind: SystemKind,
    /// How the system was set up, as far as it matters for comparing the figures.
    pub(crate) note: String,
    /// The workloads, or why the system could not be set up.
    pub(crate) outcome: Result<Vec<WorkloadRun>, String>,
    pub(crate) memory: Option<Result<MemoryRun, String>>,
    /// The server's peak resident memory over the whole run (`VmHWM`), in bytes.
    pub(crate) high_water: Option<u64>,
}

impl SystemRun {
    pub(crate) fn failed(kind: SystemKind, label: &str, error: String) -> Self {
        Self {
            label: label.to_owned(),
            kind,
            note: String::new(),
            outcome: Err(error),
            memory: None,
            high_water: None,
        }
    }

    fn workload(&self, kind: WorkloadKind) -> Option<&WorkloadRun> {
        self.outcome
            .as_ref()
            .ok()?
            .iter()
            .find(|run| run.kind == kind)
    }

    pub(crate) fn measured(&self, kind: WorkloadKind) -> Option<&Measurement> {
        self.workload(kind)?.result.as_ref().ok()
    }
}

pub(crate) fn render(
    runs: &[SystemRun],
    plugins: &[PluginRound],
    projections: &[crate::projections::ProjectionRound],
    versions: &[crate::versions::VersionsRound],
    languages: &[crate::languages::LanguagesRound],
    settings: &Settings,
    command: &str,
) -> String {
    let mut out = String::new();
    let evhost = runs.iter().find(|run| run.kind == SystemKind::Evhost);
    let _ = writeln!(out, "# evhost benchmarks\n");
    let _ = writeln!(out, "- Date: {}", date());
    let _ = writeln!(out, "- Machine: {}", machine());
    let _ = writeln!(out, "- Command: `{command}`");
    if !runs.is_empty() {
        let _ = writeln!(
            out,
            "- Load: {} s measured after {} s of warm-up per timed workload, in {} rounds \
             (each figure is from the median round; every round's rate is in the last column); \
             {} single-event appenders, {} batch appenders of {} events, {} racers; events of \
             about {} bytes of JSON; the load generator runs on the same cores, one thread, one \
             keep-alive connection per client, each client waiting for its answer before the \
             next request.",
            settings.measure.as_secs_f64(),
            settings.warmup.as_secs_f64(),
            rounds_of(runs),
            settings.clients,
            settings.batch_clients,
            settings.batch_size,
            settings.racers,
            settings.events[0].len(),
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| Workload | System | Events/s | p50 ms | p99 ms | max ms | Conflicts | Peak memory MiB | evhost ÷ system | Rounds, events/s |"
        );
        let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|---|");
        for kind in WORKLOADS {
            for run in runs {
                let _ = writeln!(out, "{}", row(run, kind, evhost, settings));
            }
        }
    }
    let _ = writeln!(out);
    write_memory(&mut out, runs);
    write_plugins(&mut out, plugins, settings);
    crate::projections::write_section(&mut out, projections);
    crate::versions::write_section(&mut out, versions);
    crate::languages::write_section(&mut out, languages);
    write_targets(&mut out, runs, plugins);
    write_notes(&mut out, runs, plugins, settings);
    out
}

/// The plugin and projection figures of the `--baseline` binary, measured in the same rounds.
pub(crate) fn render_baseline(
    binary: &std::path::Path,
    plugins: &[PluginRound],
    projections: &[crate::projections::ProjectionRound],
    settings: &Settings,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n# The baseline: {}\n\nThe same plugin and projection workloads on the baseline \
         binary, each right after this build's in the same round.\n",
        binary.display()
    );
    write_plugins(&mut out, plugins, settings);
    crate::projections::write_section(&mut out, projections);
    out
}

pub(crate) fn row(
    run: &SystemRun,
    kind: WorkloadKind,
    evhost: Option<&SystemRun>,
    settings: &Settings,
) -> String {
    let (system, name) = (&run.label, workload_name(kind, settings));
    let Some(workload) = run.workload(kind) else {
        return format!("| {name} | {system} | failed | | | | | | | |");
    };
    let measurement = match &workload.result {
        Ok(measurement) => measurement,
        Err(_) => return format!("| {name} | {system} | failed | | | | | | | |"),
    };
    let ms = |pick: fn(&Latency) -> std::time::Duration| {
        measurement
            .latency
            .map(|latency| format!("{:.2}", pick(&latency).as_secs_f64() * 1000.0))
            .unwrap_or_default()
    };
    let conflicts = measurement
        .conflicts
        .map(|conflicts| conflicts.to_string())
        .unwrap_or_default();
    let ratio = match evhost.and_then(|evhost| evhost.measured(kind)) {
        Some(ours) if run.kind != SystemKind::Evhost => {
            format!("{:.2}×", ours.rate() / measurement.rate())
        }
        _ => String::new(),
    };
    let rounds: Vec<String> = workload.rates.iter().map(|&rate| thousands(rate)).collect();
    format!(
        "| {name} | {system} | {} | {} | {} | {} | {conflicts} | {} | {ratio} | {} |",
        thousands(measurement.rate()),
        ms(|latency| latency.p50),
        ms(|latency| latency.p99),
        ms(|latency| latency.max),
        mib(workload.peak_memory),
        rounds.join(" · "),
    )
}

/// How many rounds the report combines: the most rates any workload has.
fn rounds_of(runs: &[SystemRun]) -> usize {
    runs.iter()
        .filter_map(|run| run.outcome.as_ref().ok())
        .flatten()
        .map(|workload| workload.rates.len())
        .max()
        .unwrap_or(1)
}

/// The workload's name, with its number of clients or events: `append-32`, `batch-100`.
pub(crate) fn workload_name(kind: WorkloadKind, settings: &Settings) -> String {
    match kind {
        WorkloadKind::Append => format!("append-{}", settings.clients),
        WorkloadKind::Batch => format!("batch-{}", settings.batch_size),
        WorkloadKind::Race => format!("race-{}", settings.racers),
        WorkloadKind::Read => "read-all".to_owned(),
    }
}

fn write_memory(out: &mut String, runs: &[SystemRun]) {
    for run in runs {
        if let Some(peak) = run.high_water {
            let _ = writeln!(
                out,
                "{}: peak resident memory over the whole run (VmHWM) {} MiB.\n",
                run.label,
                mib(Some(peak))
            );
        }
        match &run.memory {
            Some(Ok(memory)) => {
                let _ = writeln!(
                    out,
                    "{} with {} events stored (written at {} events/s in batches of 1000, then \
                     the server restarted): resident memory at rest {} MiB; peak under the \
                     single-append load {} MiB, at {} events/s (p99 {:.2} ms).\n",
                    run.label,
                    thousands(memory.events as f64),
                    thousands(memory.fill_rate),
                    mib(memory.at_rest),
                    mib(memory.under_load),
                    thousands(memory.load.rate()),
                    memory
                        .load
                        .latency
                        .map_or(f64::NAN, |latency| latency.p99.as_secs_f64() * 1000.0),
                );
            }
            Some(Err(error)) => {
                let _ = writeln!(out, "{}: the memory workload failed: {error}\n", run.label);
            }
            None => {}
        }
    }
}

fn write_targets(out: &mut String, runs: &[SystemRun], plugins: &[PluginRound]) {
    let evhost = runs.iter().find(|run| run.kind == SystemKind::Evhost);
    // The first PostgreSQL run, gapless by default, as the target means.
    let postgres = runs.iter().find(|run| run.kind == SystemKind::Postgres);
    let ours = |kind| evhost.and_then(|run| run.measured(kind));
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| Target | Measured | Met |");
    let _ = writeln!(out, "|---|---|---|");
    // A figure, and whether it meets the target (`None`: it cannot tell).
    let mut target = |what: &str, measured: Option<(String, Option<bool>)>| {
        let (figure, met) = measured.unwrap_or_else(|| ("not measured".to_owned(), None));
        let met = match met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "—",
        };
        let _ = writeln!(out, "| {what} | {figure} | {met} |");
    };
    let append = ours(WorkloadKind::Append);
    let theirs = postgres.and_then(|run| run.measured(WorkloadKind::Append));
    target(
        "single-event appends ≥ 30 000 events/s and ≥ 2× PostgreSQL",
        append.map(|ours| match theirs {
            Some(theirs) => {
                let ratio = ours.rate() / theirs.rate();
                let label = postgres.map_or("", |run| run.label.as_str());
                let figure = format!("{} events/s, {ratio:.2}× {label}", thousands(ours.rate()));
                (figure, Some(ours.rate() >= 30_000.0 && ratio >= 2.0))
            }
            None => {
                let figure = format!(
                    "{} events/s, PostgreSQL not measured",
                    thousands(ours.rate())
                );
                (figure, None)
            }
        }),
    );
    let at_least = |measured: Option<&Measurement>, floor: f64| {
        measured.map(|m| {
            (
                format!("{} events/s", thousands(m.rate())),
                Some(m.rate() >= floor),
            )
        })
    };
    target(
        "batched appends ≥ 300 000 events/s",
        at_least(ours(WorkloadKind::Batch), 300_000.0),
    );
    target(
        "reading the global log ≥ 500 000 events/s",
        at_least(ours(WorkloadKind::Read), 500_000.0),
    );
    target(
        "p99 of a single append at 32 clients ≤ 5 ms",
        append.and_then(|m| m.latency).map(|latency| {
            let p99 = latency.p99.as_secs_f64() * 1000.0;
            (format!("{p99:.2} ms"), Some(p99 <= 5.0))
        }),
    );
    let memory = evhost.and_then(|run| run.memory.as_ref()?.as_ref().ok());
    // Only a store of the target's size can meet it.
    let below = |bytes: Option<u64>, limit: f64, events: u64| {
        let bytes = bytes? as f64 / MIB;
        let figure = format!("{bytes:.0} MiB with {} events", thousands(events as f64));
        Some((figure, (events >= 10_000_000).then_some(bytes < limit)))
    };
    target(
        "resident memory with 10 million events at rest < 150 MiB",
        memory.and_then(|m| below(m.at_rest, 150.0, m.events)),
    );
    target(
        "resident memory with 10 million events under the append load < 300 MiB",
        memory.and_then(|m| below(m.under_load, 300.0, m.events)),
    );
    let commands = median(&per_round(plugins, |round| {
        round.commands.as_ref().ok().map(Commands::rate)
    }));
    target(
        "visit handler ≥ 10 000 commands/s from 32 clients, durable",
        commands.map(|rate| {
            let figure = format!("{} commands/s", thousands(rate));
            (figure, Some(rate >= 10_000.0))
        }),
    );
    target(
        "evolve in WebAssembly ≤ 3× native, per event, batched",
        median(&per_round(plugins, evolve_ratio))
            .map(|ratio| (format!("{ratio:.2}×"), Some(ratio <= 3.0))),
    );
    let _ = writeln!(out);
}

/// The plugin benchmarks' section: every figure the median of its rounds, each round beside it.
fn write_plugins(out: &mut String, rounds: &[PluginRound], settings: &Settings) {
    if rounds.is_empty() {
        return;
    }
    let component = rounds
        .iter()
        .find_map(|round| round.wasm.as_ref().ok())
        .map_or_else(
            || "visit".to_owned(),
            |bench| format!("{} {}", bench.name, bench.version),
        );
    let server = rounds
        .iter()
        .find_map(|round| Some(round.commands.as_ref().ok()?.server.as_str()))
        .unwrap_or("evhost");
    let (measure, warmup) = (
        settings.measure.as_secs_f64(),
        settings.warmup.as_secs_f64(),
    );
    let _ = writeln!(out, "## Plugins: the visit handler\n");
    let _ = writeln!(
        out,
        "The component {component} (`plugins/visit`, built for wasm32-wasip2 in release) on \
         {server}, in {} rounds. Each figure is the median of its rounds, every round's value in \
         the last column; a ratio is taken within each round, from two measurements made back to \
         back.\n",
        rounds.len()
    );
    let _ = writeln!(
        out,
        "- Commands: {} clients, one keep-alive connection each, run visits one after another on \
         streams of their own (`visit-c<client>-<n>`): `CheckIn` with a room, a physician and two \
         tests, `RecordTest` twice, `AddNote`, `CheckOut`; 5 commands appending 10 events, each \
         answered 200 or the run fails. {measure} s measured after {warmup} s of warm-up, against \
         the release server in its default, durable configuration on a fresh data directory, \
         the component deployed with `POST /plugins`. Latency is per command.",
        settings.clients
    );
    let _ = writeln!(
        out,
        "- `evolve`: one visit stream of {} events (a check-in, then room moves, physicians, test \
         orders and results, notes over and over; its state stays the same size), folded from no \
         state in batches of {} with the state carried from batch to batch, as the host folds a \
         stream; the median pass of {measure} s of passes. WebAssembly: `evhost plugin-bench` \
         with the host's own runtime, which includes handing the events to the component and \
         the state back. Native: the handler compiled into evhost-bench, through the SDK's wire \
         functions (`evhost_sdk::__private::evolve`), half its passes just before the \
         WebAssembly ones and half just after. Both run with no server up.",
        thousands(plugins::EVOLVE_EVENTS as f64),
        plugins::EVOLVE_BATCH,
    );
    let _ = writeln!(
        out,
        "- Loading, from the same `evhost plugin-bench`: a deploy validates and compiles the \
         component; a restart loads the compiled artifact instead; then the first call on a \
         fresh instance.\n"
    );
    let _ = writeln!(out, "| Figure | Median | Rounds |");
    let _ = writeln!(out, "|---|--:|---|");
    let commands = |pick: fn(&Commands) -> f64| {
        per_round(rounds, move |round| round.commands.as_ref().ok().map(pick))
    };
    let wasm = |pick: fn(&PluginBench) -> f64| {
        per_round(rounds, move |round| round.wasm.as_ref().ok().map(pick))
    };
    // A latency percentile of the commands, in milliseconds.
    let latency_ms = |pick: fn(&Latency) -> std::time::Duration| {
        per_round(rounds, move |round| {
            let latency = round.commands.as_ref().ok()?.measurement.latency.as_ref()?;
            Some(pick(latency).as_secs_f64() * 1000.0)
        })
    };
    let rows: [FigureRow; 11] = [
        ("commands/s", commands(Commands::rate), thousands),
        (
            "events/s appended by the commands",
            commands(|c| c.measurement.rate()),
            thousands,
        ),
        ("command latency p50, ms", latency_ms(|l| l.p50), |ms| {
            format!("{ms:.2}")
        }),
        ("command latency p99, ms", latency_ms(|l| l.p99), |ms| {
            format!("{ms:.2}")
        }),
        (
            "`evolve` native, ns per event",
            per_round(rounds, |round| round.native_ns.as_ref().ok().copied()),
            |ns| format!("{ns:.0}"),
        ),
        (
            "`evolve` WebAssembly, ns per event",
            wasm(|bench| bench.evolve_ns_per_event),
            |ns| format!("{ns:.0}"),
        ),
        (
            "`evolve` WebAssembly ÷ native",
            per_round(rounds, evolve_ratio),
            |ratio| format!("{ratio:.2}×"),
        ),
        (
            "deploy: validate and compile, ms",
            wasm(|bench| bench.compile_ms),
            |ms| format!("{ms:.0}"),
        ),
        (
            "restart: load the compiled artifact, ms",
            wasm(|bench| bench.cached_load_ms),
            |ms| format!("{ms:.1}"),
        ),
        (
            "deploy ÷ restart",
            wasm(|bench| bench.compile_ms / bench.cached_load_ms),
            |ratio| format!("{ratio:.0}×"),
        ),
        (
            "first call on a fresh instance, µs",
            wasm(|bench| bench.instantiate_us),
            |us| format!("{us:.0}"),
        ),
    ];
    for (name, values, format) in rows {
        let median = median(&values).map_or_else(|| "failed".to_owned(), format);
        let each: Vec<String> = values
            .iter()
            .map(|value| value.map_or_else(|| "failed".to_owned(), format))
            .collect();
        let _ = writeln!(out, "| {name} | {median} | {} |", each.join(" · "));
    }
    let _ = writeln!(out);
}

/// A row of the plugin figures: its name, its value in every round, and how to print a value.
type FigureRow = (&'static str, Vec<Option<f64>>, fn(f64) -> String);

/// One figure of every plugin round, `None` where that part of the round failed.
fn per_round(
    rounds: &[PluginRound],
    figure: impl Fn(&PluginRound) -> Option<f64>,
) -> Vec<Option<f64>> {
    rounds.iter().map(figure).collect()
}

/// `evolve` in WebAssembly over native, both of the same round.
fn evolve_ratio(round: &PluginRound) -> Option<f64> {
    let native = round.native_ns.as_ref().ok()?;
    Some(round.wasm.as_ref().ok()?.evolve_ns_per_event / native)
}

/// The median of the figures that were measured.
pub(crate) fn median(values: &[Option<f64>]) -> Option<f64> {
    median_by(values.iter().flatten().copied().collect(), |value| {
        Some(*value)
    })
}

fn write_notes(out: &mut String, runs: &[SystemRun], plugins: &[PluginRound], settings: &Settings) {
    // Only what there is to say: a run of the plugins alone, all well, has no notes.
    let mut notes = String::new();
    if !runs.is_empty() {
        let _ = writeln!(
            notes,
            "- evhost ÷ system: evhost's events/s over the system's in the same workload and \
             run; for race-8, successful appends only. Latency is per request: one append, one \
             batch, or a race's read and append."
        );
    }
    for run in runs.iter().filter(|run| run.outcome.is_ok()) {
        let _ = writeln!(notes, "- {}: {}", run.label, run.note);
    }
    for run in runs {
        if let Err(error) = &run.outcome {
            let _ = writeln!(notes, "- {} failed to start: {error}", run.label);
        }
        for workload in run.outcome.iter().flatten() {
            if let Err(error) = &workload.result {
                let name = workload_name(workload.kind, settings);
                let _ = writeln!(notes, "- {} {name} failed: {error}", run.label);
            }
        }
    }
    for (index, round) in plugins.iter().enumerate() {
        let round_number = index + 1;
        let errors = [
            ("the visit commands", round.commands.as_ref().err()),
            ("native `evolve`", round.native_ns.as_ref().err()),
            ("`evhost plugin-bench`", round.wasm.as_ref().err()),
        ];
        let failed: Vec<_> = errors
            .iter()
            .filter_map(|(part, error)| Some((part, (*error)?)))
            .collect();
        // A round that could not start fails every part for the same reason: say it once.
        let same = |(_, error): &(_, &String)| Some(*error) == errors[0].1;
        if failed.len() == errors.len() && failed.iter().all(same) {
            let error = failed[0].1;
            let _ = writeln!(
                notes,
                "- the plugin benchmarks failed in round {round_number}: {error}"
            );
            continue;
        }
        for (part, error) in failed {
            let _ = writeln!(notes, "- {part} failed in round {round_number}: {error}");
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "## Notes\n");
        out.push_str(&notes);
    }
}

pub(crate) fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|date| date.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let meminfo = read("/proc/meminfo");
    let memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|kib| kib.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB", kib / 1024.0 / 1024.0)
        });
    let kernel = read("/proc/sys/kernel/osrelease");
    format!("{cores} cores, {cpu}{memory}, Linux {}", kernel.trim())
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(String::new, |bytes| format!("{:.0}", bytes as f64 / MIB))
}

/// A rate rounded to a whole number, thousands separated by spaces.
pub(crate) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: Option<u64>) -> WorkloadRun {
        let result = match rate {
            Some(events) => Ok(Measurement {
                events,
                elapsed: std::time::Duration::from_secs(1),
                latency: None,
                conflicts: None,
                appended: events,
            }),
            None => Err("failed".to_owned()),
        };
        let rates = result.iter().map(Measurement::rate).collect();
        WorkloadRun {
            kind: WorkloadKind::Append,
            result,
            peak_memory: None,
            rates,
        }
    }

    #[test]
    fn the_median_round_is_quoted_with_every_rate() {
        let median = median_run(vec![run(Some(20)), run(Some(10)), run(Some(5))]);
        assert_eq!(median.result.unwrap().events, 10);
        assert_eq!(median.rates, [20.0, 10.0, 5.0]);
        let median = median_run(vec![run(None), run(Some(7)), run(Some(9))]);
        assert_eq!(median.result.unwrap().events, 9);
        assert!(median_run(vec![run(None)]).result.is_err());
    }

    #[test]
    fn the_median_skips_what_failed() {
        let key = |value: &Option<f64>| *value;
        assert_eq!(median_by(Vec::new(), key), None);
        let values = vec![Some(3.0), None, Some(1.0), Some(2.0)];
        assert_eq!(median_by(values, key), Some(Some(2.0)));
        assert_eq!(median_by(vec![None], key), Some(None));
        assert_eq!(median(&[None, Some(4.0), Some(6.0)]), Some(6.0));
        assert_eq!(median(&[None]), None);
    }

    #[test]
    fn plugin_figures_have_their_section_and_targets() {
        let bench = PluginBench {
            name: "visit".to_owned(),
            version: "ab12".to_owned(),
            compile_ms: 800.0,
            cached_load_ms: 4.0,
            instantiate_us: 40.0,
            events: 100_000,
            batch: 512,
            evolve_ns_per_event: 600.0,
        };
        let rounds = [PluginRound {
            commands: Err("refused".to_owned()),
            native_ns: Ok(300.0),
            wasm: Ok(bench),
        }];
        let settings = Settings {
            warmup: std::time::Duration::from_secs(1),
            measure: std::time::Duration::from_secs(3),
            op_timeout: std::time::Duration::from_secs(60),
            clients: 32,
            batch_clients: 4,
            batch_size: 100,
            racers: 8,
            events: std::sync::Arc::new(crate::workload::event_data(100)),
        };
        let text = render(
            &[],
            &rounds,
            &[],
            &[],
            &[],
            &settings,
            "bash benches/run.sh --systems plugins",
        );
        assert!(text.contains("## Plugins: the visit handler"), "{text}");
        assert!(
            text.contains("| `evolve` WebAssembly ÷ native | 2.00× | 2.00× |"),
            "{text}"
        );
        assert!(
            text.contains("| deploy ÷ restart | 200× | 200× |"),
            "{text}"
        );
        assert!(text.contains("| commands/s | failed | failed |"), "{text}");
        assert!(
            text.contains(
                "| evolve in WebAssembly ≤ 3× native, per event, batched | 2.00× | yes |"
            )
        );
        assert!(
            text.contains("the visit commands failed in round 1: refused"),
            "{text}"
        );
        assert!(!text.contains("| Workload | System |"), "{text}");
    }

    #[test]
    fn separates_thousands() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(13_500.0), "13 500");
        assert_eq!(thousands(1_234_567.0), "1 234 567");
    }
}

//! `evhost plugin-bench`: measures a handler component with the host's own runtime, without a
//! server: what a deploy costs (validation and compilation), what a restart costs (loading the
//! compiled artifact), the first call on a fresh instance, and the cost of `evolve` per event
//! when events come in batches, as commands fold streams.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::value::RawValue;

use evhost_runtime::{EventInput, PluginCalls, PluginLimits, Runtime};

/// Loads of the compiled artifact timed; the median is reported.
const LOAD_SAMPLES: usize = 5;

#[derive(Args)]
pub(crate) struct PluginBenchArgs {
    /// The handler component to measure.
    file: PathBuf,
    /// Events to fold, one JSON object per line: `{"type": "...", "data": {...}}`. Without it,
    /// only loading is measured.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Events per `evolve` call.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// How long to fold the events over and over; the median pass is reported.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Print one line of JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
struct EventLine<'a> {
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

pub(super) fn run(args: PluginBenchArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let runtime = Runtime::new().map_err(anyhow::Error::msg)?;
    let limits = PluginLimits::default();

    let started = Instant::now();
    let compiled = runtime
        .compile(&wasm, "bench", limits)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let compile = started.elapsed();
    let artifact = compiled
        .artifact
        .clone()
        .context("a compile yields an artifact")?;

    let mut loads = Vec::with_capacity(LOAD_SAMPLES);
    let mut first_calls = Vec::with_capacity(LOAD_SAMPLES);
    let mut loaded = None;
    for _ in 0..LOAD_SAMPLES {
        let started = Instant::now();
        let plugin = runtime
            .load_compiled(&artifact, "bench", limits)
            .context("the artifact just compiled does not load")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        loads.push(started.elapsed());
        // Loading checks the plugin with `describe`, leaving that instance idle for reuse; a
        // relabelled plugin has no idle instance, so its first call pays an instantiation.
        let PluginCalls::Handler(handler) = plugin.plugin.relabel("bench") else {
            anyhow::bail!(
                "{} is a {}; plugin-bench measures handlers",
                plugin.info.name,
                plugin.info.kind
            );
        };
        let started = Instant::now();
        handler.describe().map_err(|e| anyhow::anyhow!("{e}"))?;
        first_calls.push(started.elapsed());
        loaded = Some((plugin.info, handler));
    }
    let (info, handler) = loaded.expect("at least one load");

    let mut evolve_ns = None;
    let mut event_count = 0;
    if let Some(path) = &args.events {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let lines: Vec<EventLine<'_>> = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .enumerate()
            .map(|(n, line)| {
                serde_json::from_str(line).with_context(|| {
                    format!("line {} of {} is not an event", n + 1, path.display())
                })
            })
            .collect::<anyhow::Result<_>>()?;
        event_count = lines.len();
        let events: Vec<EventInput<'_>> = lines
            .iter()
            .enumerate()
            .map(|(index, line)| EventInput {
                version: index as u64 + 1,
                event_type: &line.event_type,
                data: line.data.get(),
            })
            .collect();
        if events.is_empty() {
            bail!("{} holds no events", path.display());
        }
        let mut passes = Vec::new();
        let until = Instant::now() + Duration::from_secs_f64(args.seconds.max(0.0));
        while passes.is_empty() || Instant::now() < until {
            let started = Instant::now();
            let mut state: Option<Vec<u8>> = None;
            for batch in events.chunks(args.batch) {
                state = Some(
                    handler
                        .evolve(state.as_deref(), batch)
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                );
            }
            passes.push(started.elapsed());
        }
        evolve_ns = Some(median(&mut passes).as_nanos() as f64 / events.len() as f64);
    }

    let compile_ms = compile.as_secs_f64() * 1e3;
    let cached_load_ms = median(&mut loads).as_secs_f64() * 1e3;
    let instantiate_us = median(&mut first_calls).as_secs_f64() * 1e6;
    let version = evhost_runtime::content_hash(&wasm);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "name": info.name,
                "version": version,
                "compile_ms": compile_ms,
                "cached_load_ms": cached_load_ms,
                "instantiate_us": instantiate_us,
                "events": event_count,
                "batch": args.batch,
                "evolve_ns_per_event": evolve_ns,
            })
        );
        return Ok(());
    }
    println!("{} {} ({} bytes)", info.kind, info.name, wasm.len());
    println!("  deploy (validate + compile): {compile_ms:>10.1} ms");
    println!("  restart (cached artifact):   {cached_load_ms:>10.1} ms");
    println!("  first call, fresh instance:  {instantiate_us:>10.1} µs");
    if let Some(ns) = evolve_ns {
        println!(
            "  evolve, batches of {}:       {ns:>10.1} ns per event ({event_count} events)",
            args.batch
        );
    }
    Ok(())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

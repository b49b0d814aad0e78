//! Counters for `/metrics`, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use evhost_engine::commands::CommandCounters;
use evhost_engine::plugins::LoadCounters;
use evhost_store::StoreStats;

/// What the API counts; the store counts its own work in [`StoreStats`].
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    appends: AtomicU64,
    events_appended: AtomicU64,
    idempotent_appends: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    followers: AtomicI64,
}

impl Metrics {
    pub fn request(&self, route: &'static str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route, status))
            .or_default() += 1;
    }

    pub fn error(&self, code: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    pub fn appended(&self, events: u64) {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.events_appended.fetch_add(events, Ordering::Relaxed);
    }

    pub fn idempotent_append(&self) {
        self.idempotent_appends.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a live follower until the guard is dropped.
    pub fn follower(&self) -> FollowerGuard<'_> {
        self.followers.fetch_add(1, Ordering::Relaxed);
        FollowerGuard(self)
    }

    pub fn render(&self, store: StoreStats, head: u64) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            "evhost_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
        );
        let mut lines = String::new();
        for ((route, status), count) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                lines,
                "evhost_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str(&lines);
        let counter = |out: &mut String, name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        counter(
            &mut out,
            "evhost_appends_total",
            "counter",
            "Appends acknowledged as written.",
            load(&self.appends),
        );
        counter(
            &mut out,
            "evhost_events_appended_total",
            "counter",
            "Events written by acknowledged appends.",
            load(&self.events_appended),
        );
        counter(
            &mut out,
            "evhost_idempotent_appends_total",
            "counter",
            "Retried appends answered with the original result.",
            load(&self.idempotent_appends),
        );
        counter(
            &mut out,
            "evhost_commits_total",
            "counter",
            "Durable write transactions (each holds a group of appends).",
            store.commits.to_string(),
        );
        counter(
            &mut out,
            "evhost_committed_appends_total",
            "counter",
            "Appends written by those transactions.",
            store.committed_appends.to_string(),
        );
        counter(
            &mut out,
            "evhost_commit_seconds_total",
            "counter",
            "Time spent writing and syncing transactions.",
            format!("{:.6}", store.commit_seconds),
        );
        counter(
            &mut out,
            "evhost_head_position",
            "gauge",
            "The last durable global position.",
            head.to_string(),
        );
        counter(
            &mut out,
            "evhost_followers",
            "gauge",
            "Open server-sent event followers.",
            self.followers.load(Ordering::Relaxed).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP evhost_errors_total Error responses, by code.\n# TYPE evhost_errors_total counter"
        );
        for (code, count) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "evhost_errors_total{{code=\"{code}\"}} {count}");
        }
        out
    }
}

/// Appends the counters of plugin loading and of commands.
/// What `/metrics` shows of one projection or policy.
struct RunnerGauges<'a> {
    name: &'a str,
    kind: &'a str,
    position: u64,
    lag: u64,
    paused: bool,
    standby: bool,
}

/// Gauges of the projections and policies in `listing` (as `GET /plugins` shows them): the
/// position each has processed, its lag behind the head, and whether it is paused. Plugin names
/// are `[a-z0-9-]`, so they need no escaping as label values.
pub fn render_runners(out: &mut String, listing: &[serde_json::Value]) {
    let runners: Vec<RunnerGauges<'_>> = listing
        .iter()
        .filter_map(|plugin| {
            Some(RunnerGauges {
                name: plugin["name"].as_str()?,
                kind: plugin["kind"].as_str()?,
                position: plugin["position"].as_u64()?,
                lag: plugin["lag"].as_u64()?,
                paused: plugin["status"] == "paused",
                standby: plugin["status"] == "standby",
            })
        })
        .collect();
    type Gauge = fn(&RunnerGauges<'_>) -> u64;
    let families: [(&str, &str, Gauge); 4] = [
        (
            "evhost_plugin_position",
            "The last log position a projection or policy has processed.",
            |r| r.position,
        ),
        (
            "evhost_plugin_lag",
            "How many positions a projection or policy is behind the head.",
            |r| r.lag,
        ),
        (
            "evhost_plugin_paused",
            "1 while a projection or policy is paused.",
            |r| u64::from(r.paused),
        ),
        (
            "evhost_plugin_standby",
            "1 while another node sharing the store runs a projection or policy.",
            |r| u64::from(r.standby),
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for runner in &runners {
            let _ = writeln!(
                out,
                "{name}{{plugin=\"{}\",kind=\"{}\"}} {}",
                runner.name,
                runner.kind,
                value(runner)
            );
        }
    }
}

pub fn render_plugins(out: &mut String, loads: &LoadCounters, commands: &CommandCounters) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut family = |name: &str, help: &str, values: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, value) in values {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "evhost_plugin_compilations_total",
        "Plugin components compiled (deploys, and loads whose cached artifact did not fit).",
        &[("", load(&loads.compilations))],
    );
    family(
        "evhost_plugin_cache_loads_total",
        "Plugin components loaded from their cached compiled artifact.",
        &[("", load(&loads.cache_loads))],
    );
    family(
        "evhost_commands_total",
        "Commands answered, by outcome (replayed: a repeated id answered from its record).",
        &[
            ("{outcome=\"applied\"}", load(&commands.applied)),
            ("{outcome=\"rejected\"}", load(&commands.rejected)),
            ("{outcome=\"failed\"}", load(&commands.failed)),
            ("{outcome=\"replayed\"}", load(&commands.replayed)),
        ],
    );
    family(
        "evhost_command_conflicts_total",
        "Command appends that met a concurrent write and were decided again.",
        &[("", load(&commands.conflicts))],
    );
    family(
        "evhost_plugin_calls_total",
        "Calls into handler plugins, by export.",
        &[
            ("{export=\"evolve\"}", load(&commands.evolve_calls)),
            ("{export=\"decide\"}", load(&commands.decide_calls)),
        ],
    );
}

pub struct FollowerGuard<'a>(&'a Metrics);

impl Drop for FollowerGuard<'_> {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

//! Versions on evhost: dry-run replays and blue/green switches, over the hospital plugins.
//!
//! The store is filled once per run: the visits projection's log of a million events (the same
//! as the projections benchmark fills), then [`VISITS`] more visits driven through the `visit`
//! handler, four commands each plus a repeated check-out for every tenth (the bug `visit-v2`
//! fixes): [`COMMANDS`] recorded commands. Then `visits` is deployed and caught up, `visits-v2`
//! and `visit-v2` are uploaded as manual candidates, and the server is stopped. Each round
//! starts a fresh server on a copy of that store and measures:
//! - handler replay: `visit-v2` over every recorded command, from the request until the report
//!   is done (commands/s), and checks it finds exactly the repeated check-outs;
//! - projection replay: `visits-v2` over the whole log, state built in scratch space and compared
//!   key by key with the active version's (events/s);
//! - switch: `visits-v2` deleted and deployed again with automatic promotion: the rebuild from
//!   position 1 while the active version serves, and the time from caught up to active.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::evhost::Server;
use crate::http::Connection;
use crate::projections::{copy_dir, expect, fill};
use crate::report::median_by;

/// Visits driven through the handler.
const VISITS: usize = 25_000;
/// Every this many visits, one is checked out twice.
const REPEAT_EVERY: usize = 10;
/// Commands recorded: four per visit, and the repeated check-outs.
const COMMANDS: usize = VISITS * 4 + VISITS / REPEAT_EVERY;
/// Concurrent clients sending the commands.
const CLIENTS: usize = 16;

/// The three components a round uses, by file.
pub(crate) struct Components {
    pub(crate) visit: PathBuf,
    pub(crate) visit_v2: PathBuf,
    pub(crate) visits: PathBuf,
    pub(crate) visits_v2: PathBuf,
}

/// One round's figures; each part succeeds or fails on its own.
pub(crate) struct VersionsRound {
    pub(crate) handler_replay: Result<Replayed, String>,
    pub(crate) projection_replay: Result<Replayed, String>,
    pub(crate) switch: Result<Switched, String>,
}

pub(crate) struct Replayed {
    /// Commands (handler) or positions (projection) replayed.
    pub(crate) units: u64,
    pub(crate) elapsed: Duration,
    /// What the report found different.
    pub(crate) different: u64,
}

impl Replayed {
    pub(crate) fn rate(&self) -> f64 {
        self.units as f64 / self.elapsed.as_secs_f64()
    }
}

pub(crate) struct Switched {
    /// From the deploy's answer until the candidate had caught up and taken over.
    pub(crate) rebuild: Duration,
    pub(crate) events: u64,
    /// From the moment the candidate caught up until it served reads, as the host measured it.
    pub(crate) caught_up_to_active: Duration,
}

/// The filled store every round starts from.
pub(crate) struct Versions {
    binary: PathBuf,
    visits_v2: Bytes,
    work: PathBuf,
    filled: PathBuf,
    timeout: Duration,
    versions: [String; 2],
}

impl Versions {
    pub(crate) async fn prepare(
        binary: PathBuf,
        components: &Components,
        work: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        let read = |path: &Path| -> Result<Bytes> {
            Ok(std::fs::read(path)
                .with_context(|| format!("reading {}", path.display()))?
                .into())
        };
        let filled = work.join("versions-filled");
        let _ = std::fs::remove_dir_all(&filled);
        let server = Server::start(&binary, &filled, work, timeout).await?;
        let started = Instant::now();
        fill(server.addr).await?;
        let mut http = Connection::open(server.addr).await?;
        deploy(&mut http, read(&components.visit)?, "").await?;
        drive(server.addr).await?;
        eprintln!(
            "versions: stored the log and {COMMANDS} commands in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        deploy(&mut http, read(&components.visits)?, "").await?;
        let visits_v2 = read(&components.visits_v2)?;
        let projection = deploy(&mut http, visits_v2.clone(), "?promote=manual").await?;
        let handler = deploy(&mut http, read(&components.visit_v2)?, "?promote=manual").await?;
        let head = head(&mut http).await?;
        wait(&mut http, "visits", timeout, |p| {
            p["position"].as_u64() >= Some(head)
                && p["candidate"]["position"].as_u64() >= Some(head)
        })
        .await?;
        server.stop(timeout).await?;
        Ok(Versions {
            binary,
            visits_v2,
            work: work.to_path_buf(),
            filled,
            timeout,
            versions: [handler, projection],
        })
    }

    pub(crate) async fn round(&self) -> VersionsRound {
        match self.try_round().await {
            Ok(round) => round,
            Err(error) => {
                let error = format!("{error:#}");
                eprintln!("versions: failed: {error}");
                VersionsRound::failed(&error)
            }
        }
    }

    async fn try_round(&self) -> Result<VersionsRound> {
        let data = self.work.join("versions-round");
        let _ = std::fs::remove_dir_all(&data);
        copy_dir(&self.filled, &data)?;
        let server = Server::start(&self.binary, &data, &self.work, self.timeout).await?;
        let mut http = Connection::open(server.addr).await?;
        let [handler, projection] = &self.versions;
        let handler_replay = replay(&mut http, "visit", handler, self.timeout)
            .await
            .and_then(|replayed| {
                let wanted = (VISITS / REPEAT_EVERY) as u64;
                if replayed.different != wanted {
                    bail!(
                        "the replay found {} differences, not {wanted}",
                        replayed.different
                    );
                }
                Ok(replayed)
            })
            .map_err(|e| format!("{e:#}"));
        let projection_replay = replay(&mut http, "visits", projection, self.timeout)
            .await
            .map_err(|e| format!("{e:#}"));
        let switch = self
            .switch(&mut http, projection)
            .await
            .map_err(|e| format!("{e:#}"));
        server.stop(self.timeout).await?;
        let _ = std::fs::remove_dir_all(&data);
        Ok(VersionsRound {
            handler_replay,
            projection_replay,
            switch,
        })
    }

    /// Deletes the candidate `version` of visits and deploys it again for automatic promotion.
    async fn switch(&self, http: &mut Connection, version: &str) -> Result<Switched> {
        let path = format!("/plugins/visits/versions/{version}");
        let (status, body) = http.send(Method::DELETE, &path, None).await?;
        expect(status, &body)?;
        let events = head(http).await?;
        let started = Instant::now();
        deploy(http, self.visits_v2.clone(), "").await?;
        let switched = wait(http, "visits", self.timeout, |p| {
            p["active_version"] == version
        })
        .await?;
        let rebuild = started.elapsed();
        let micros = switched["last_switch"]["caught_up_to_active_us"]
            .as_u64()
            .context("the switch was not automatic")?;
        Ok(Switched {
            rebuild,
            events,
            caught_up_to_active: Duration::from_micros(micros),
        })
    }
}

impl VersionsRound {
    pub(crate) fn failed(error: &str) -> Self {
        VersionsRound {
            handler_replay: Err(error.to_owned()),
            projection_replay: Err(error.to_owned()),
            switch: Err(error.to_owned()),
        }
    }
}

/// Deploys `wasm` with `query`; answers its version.
pub(crate) async fn deploy(http: &mut Connection, wasm: Bytes, query: &str) -> Result<String> {
    let path = format!("/plugins{query}");
    let body = Some(("application/wasm", wasm));
    let (status, body) = http.send_body(Method::POST, &path, body).await?;
    expect(status, &body)?;
    let deployed: Value = serde_json::from_slice(&body)?;
    Ok(deployed["version"]
        .as_str()
        .context("no version")?
        .to_owned())
}

/// The log's head, from `GET /health`.
pub(crate) async fn head(http: &mut Connection) -> Result<u64> {
    let (status, body) = http.send(Method::GET, "/health", None).await?;
    expect(status, &body)?;
    let health: Value = serde_json::from_slice(&body)?;
    health["head"].as_u64().context("no head")
}

/// Polls `GET /plugins/{name}` until `done` accepts it; a plugin whose active version paused or
/// failed will not get there.
pub(crate) async fn wait(
    http: &mut Connection,
    name: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + timeout.max(Duration::from_secs(600));
    loop {
        let (status, body) = http
            .send(Method::GET, &format!("/plugins/{name}"), None)
            .await?;
        expect(status, &body)?;
        let plugin: Value = serde_json::from_slice(&body)?;
        if done(&plugin) {
            return Ok(plugin);
        }
        if plugin["status"] == "paused" || plugin["status"] == "failed" {
            bail!("{name} is {}: {}", plugin["status"], plugin["error"]);
        }
        if Instant::now() > deadline {
            bail!("{name} did not get there: {plugin}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs a replay of `version` of `name` to its end.
async fn replay(
    http: &mut Connection,
    name: &str,
    version: &str,
    timeout: Duration,
) -> Result<Replayed> {
    let started = Instant::now();
    let body = json!({"version": version, "differences": 0}).to_string();
    let path = format!("/plugins/{name}/replays");
    let (status, answer) = http.send(Method::POST, &path, Some(body)).await?;
    if status != StatusCode::ACCEPTED {
        bail!("{status} {}", String::from_utf8_lossy(&answer));
    }
    let id = serde_json::from_slice::<Value>(&answer)?["id"]
        .as_str()
        .context("no id")?
        .to_owned();
    let deadline = Instant::now() + timeout.max(Duration::from_secs(600));
    loop {
        let (status, body) = http
            .send(Method::GET, &format!("/replays/{id}"), None)
            .await?;
        expect(status, &body)?;
        let replay: Value = serde_json::from_slice(&body)?;
        match replay["status"].as_str() {
            Some("running") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Some("done") => {
                return Ok(Replayed {
                    units: replay["progress"]["total"].as_u64().unwrap_or(0),
                    elapsed: started.elapsed(),
                    different: replay["report"]["different"].as_u64().unwrap_or(0),
                });
            }
            _ => bail!("the replay did not finish: {replay}"),
        }
    }
}

/// Sends every visit's commands through the handler with concurrent clients, each client
/// taking whole visits so that a visit's commands come in order.
async fn drive(addr: std::net::SocketAddr) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let next = next.clone();
        clients.push(tokio::spawn(async move {
            let mut http = Connection::open(addr).await?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= VISITS {
                    return Ok::<_, anyhow::Error>(());
                }
                for (command, data) in commands(n) {
                    let body =
                        json!({"stream": format!("visit-b{n}"), "type": command, "data": data});
                    let path = "/handlers/visit/commands";
                    let (status, answer) = http
                        .send(Method::POST, path, Some(body.to_string()))
                        .await?;
                    if status != StatusCode::OK {
                        bail!(
                            "{command} of visit {n}: {status} {}",
                            String::from_utf8_lossy(&answer)
                        );
                    }
                }
            }
        }));
    }
    for client in clients {
        client.await??;
    }
    Ok(())
}

/// The commands of visit `n`, in order.
fn commands(n: usize) -> Vec<(&'static str, Value)> {
    let hospital = ["north", "south"][n % 2];
    let mut commands = vec![
        (
            "CheckIn",
            json!({"patient_id": format!("b-{n}"), "patient_name": format!("Patient b{n}"),
                   "complaint": "fever", "triage_level": n % 5 + 1, "room": format!("B-{}", n % 300),
                   "hospital": hospital}),
        ),
        (
            "AddNote",
            json!({"author": "nurse", "text": "vitals taken"}),
        ),
        ("AssignRoom", json!({"room": format!("W-{}", n % 500)})),
        ("CheckOut", json!({"disposition": "discharged"})),
    ];
    if n.is_multiple_of(REPEAT_EVERY) {
        commands.push(("CheckOut", json!({"disposition": "discharged"})));
    }
    commands
}

/// The medians of the rounds' figures.
fn medians(rounds: &[VersionsRound]) -> (Option<&Replayed>, Option<&Replayed>, Option<&Switched>) {
    let ok = |pick: fn(&VersionsRound) -> Option<&Replayed>| {
        median_by(rounds.iter().filter_map(pick).collect(), |r| Some(r.rate()))
    };
    let switch = median_by(
        rounds
            .iter()
            .filter_map(|r| r.switch.as_ref().ok())
            .collect(),
        |s| Some(s.caught_up_to_active.as_secs_f64()),
    );
    (
        ok(|r| r.handler_replay.as_ref().ok()),
        ok(|r| r.projection_replay.as_ref().ok()),
        switch,
    )
}

/// The report's section on versions; nothing when they did not run.
pub(crate) fn write_section(out: &mut String, rounds: &[VersionsRound]) {
    use std::fmt::Write;
    if rounds.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Versions: replays and blue/green switches\n");
    let _ = writeln!(
        out,
        "The hospital components (`visit`, `visit-v2`, `visits`, `visits-v2`, release builds) on \
         the release server, in {} rounds; each figure is from the median round. The store: the \
         visits log of the projections benchmark, then {VISITS} visits driven through the \
         `visit` handler by {CLIENTS} clients ({COMMANDS} recorded commands, one visit in \
         {REPEAT_EVERY} checked out twice); `visits` active, `visits-v2` and `visit-v2` \
         uploaded as manual candidates. Each round starts a fresh server on a copy.\n",
        rounds.len()
    );
    let (handler, projection, switch) = medians(rounds);
    let _ = writeln!(out, "| Measure | Value |");
    let _ = writeln!(out, "|---|--:|");
    match handler {
        Some(h) => {
            let _ = writeln!(
                out,
                "| handler replay, `visit-v2` over {} commands (commands/s) | {:.0} |",
                h.units,
                h.rate()
            );
            let _ = writeln!(
                out,
                "| handler replay time (s); commands found changed | {:.2}; {} |",
                h.elapsed.as_secs_f64(),
                h.different
            );
        }
        None => {
            let _ = writeln!(out, "| handler replay | failed |");
        }
    }
    match projection {
        Some(p) => {
            let _ = writeln!(
                out,
                "| projection replay, `visits-v2` over {} events, compared key by key (events/s) | {:.0} |",
                p.units,
                p.rate()
            );
            let _ = writeln!(
                out,
                "| projection replay time (s); keys found different | {:.2}; {} |",
                p.elapsed.as_secs_f64(),
                p.different
            );
        }
        None => {
            let _ = writeln!(out, "| projection replay | failed |");
        }
    }
    match switch {
        Some(s) => {
            let _ = writeln!(
                out,
                "| blue/green rebuild of `visits-v2` over {} events, deploy to active (s) | {:.2} |",
                s.events,
                s.rebuild.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "| caught up to active (ms) | {:.2} |",
                s.caught_up_to_active.as_secs_f64() * 1e3
            );
        }
        None => {
            let _ = writeln!(out, "| blue/green switch | failed |");
        }
    }
    let each = |figure: &dyn Fn(&VersionsRound) -> Option<String>| -> String {
        let figures: Vec<String> = rounds
            .iter()
            .map(|r| figure(r).unwrap_or_else(|| "failed".into()))
            .collect();
        figures.join(" · ")
    };
    let _ = writeln!(
        out,
        "\nEvery round: handler replay {} commands/s; projection replay {} events/s; rebuild {} s; \
         caught up to active {} ms.",
        each(&|r| r
            .handler_replay
            .as_ref()
            .ok()
            .map(|h| format!("{:.0}", h.rate()))),
        each(&|r| r
            .projection_replay
            .as_ref()
            .ok()
            .map(|p| format!("{:.0}", p.rate()))),
        each(&|r| r
            .switch
            .as_ref()
            .ok()
            .map(|s| format!("{:.2}", s.rebuild.as_secs_f64()))),
        each(&|r| {
            r.switch
                .as_ref()
                .ok()
                .map(|s| format!("{:.2}", s.caught_up_to_active.as_secs_f64() * 1e3))
        }),
    );
    for (i, round) in rounds.iter().enumerate() {
        for error in [
            round.handler_replay.as_ref().err(),
            round.projection_replay.as_ref().err(),
            round.switch.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = writeln!(out, "\nRound {}: {error}", i + 1);
        }
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenth_visit_is_checked_out_twice() {
        let total: usize = (0..VISITS).map(|n| commands(n).len()).sum();
        assert_eq!(total, COMMANDS);
        assert_eq!(commands(0).last().unwrap().0, "CheckOut");
        assert_eq!(commands(10).len(), 5);
        assert_eq!(commands(11).len(), 4);
    }
}

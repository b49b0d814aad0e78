//! The version subcommands: `replay` runs a dry-run replay with a live progress bar and prints
//! what differs, `promote` and `rollback` switch a plugin's active version.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::Connection;
use super::client::{encode, send};

/// How long one request may take; a replay itself runs as long as it needs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a running replay is asked for its progress.
const POLL: Duration = Duration::from_millis(200);
/// Characters of a value shown in a difference before it is cut.
const SHOWN_CHARS: usize = 160;

#[derive(Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    connection: Connection,
    /// The plugin to replay.
    name: String,
    /// The version to run: its hash, or a prefix of it naming one uploaded version.
    #[arg(long)]
    version: String,
    /// The first position of the range (default 1).
    #[arg(long)]
    from: Option<u64>,
    /// The last position of the range (default: the head, or a projection's position).
    #[arg(long)]
    to: Option<u64>,
    /// How many differences to show in full.
    #[arg(long, default_value_t = 20)]
    differences: usize,
    /// Print the finished replay as the host's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct PromoteArgs {
    #[command(flatten)]
    connection: Connection,
    /// The plugin whose version to switch.
    name: String,
    /// The version to make active (hash or prefix); the candidate when not given.
    #[arg(long)]
    version: Option<String>,
}

#[derive(Args)]
pub(crate) struct RollbackArgs {
    #[command(flatten)]
    connection: Connection,
    /// The plugin to return to its previous version.
    name: String,
}

pub(super) fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let client = args.connection.client(Some(REQUEST_TIMEOUT))?;
    let version = resolve(&args.connection, &client, &args.name, &args.version)?;
    let mut body = json!({"version": version, "differences": args.differences});
    if let Some(from) = args.from {
        body["from"] = from.into();
    }
    if let Some(to) = args.to {
        body["to"] = to.into();
    }
    let path = format!("/plugins/{}/replays", encode(&args.name));
    let (_, started) = send(
        args.connection
            .request(&client, reqwest::Method::POST, &path)
            .json(&body),
    )?;
    let id = started["id"].as_str().context("the host named no replay")?;
    let bar = std::io::stderr().is_terminal();
    let replay = loop {
        let (_, replay) = send(args.connection.request(
            &client,
            reqwest::Method::GET,
            &format!("/replays/{}", encode(id)),
        ))?;
        if bar {
            eprint!("\r{}", progress_bar(&replay["progress"]));
        }
        if replay["status"] != "running" {
            break replay;
        }
        std::thread::sleep(POLL);
    };
    if bar {
        eprintln!();
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{replay}")?;
        return Ok(());
    }
    match replay["status"].as_str() {
        Some("done") => summary(&mut out, &replay)?,
        Some("cancelled") => bail!("replay {id} was cancelled"),
        _ => bail!(
            "replay {id} failed: {}",
            replay["error"].as_str().unwrap_or("no reason given")
        ),
    }
    Ok(())
}

pub(super) fn promote(args: PromoteArgs) -> anyhow::Result<()> {
    let client = args.connection.client(Some(REQUEST_TIMEOUT))?;
    let body = match &args.version {
        Some(version) => {
            json!({"version": resolve(&args.connection, &client, &args.name, version)?})
        }
        None => json!({}),
    };
    switch(&args.connection, &client, &args.name, "promote", &body)
}

pub(super) fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let client = args.connection.client(Some(REQUEST_TIMEOUT))?;
    switch(
        &args.connection,
        &client,
        &args.name,
        "rollback",
        &json!({}),
    )
}

fn switch(
    connection: &Connection,
    client: &reqwest::blocking::Client,
    name: &str,
    action: &str,
    body: &Value,
) -> anyhow::Result<()> {
    let path = format!("/plugins/{}/{action}", encode(name));
    let (_, answer) = send(
        connection
            .request(client, reqwest::Method::POST, &path)
            .json(body),
    )?;
    let active = short(answer["active_version"].as_str().unwrap_or("?"));
    if answer["switched"] == true {
        println!(
            "{name}: version {active} is active (was {}; a rollback returns to it)",
            short(answer["previous_version"].as_str().unwrap_or("none"))
        );
    } else {
        println!("{name}: version {active} was active already");
    }
    Ok(())
}

/// The full hash of the one uploaded version of `name` that starts with `prefix`.
fn resolve(
    connection: &Connection,
    client: &reqwest::blocking::Client,
    name: &str,
    prefix: &str,
) -> anyhow::Result<String> {
    let path = format!("/plugins/{}", encode(name));
    let (_, plugin) = send(connection.request(client, reqwest::Method::GET, &path))?;
    let matching: Vec<&str> = plugin["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["version"].as_str())
        .filter(|v| v.starts_with(prefix))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!("plugin {name} has no version starting with {prefix:?}"),
        _ => bail!(
            "{prefix:?} names {} versions of {name}; give more of the hash",
            matching.len()
        ),
    }
}

/// `[########............] 41.0%  position 410000/1000000  180000 events/s`.
fn progress_bar(progress: &Value) -> String {
    const WIDTH: usize = 30;
    let percent = progress["percent"].as_f64().unwrap_or(0.0);
    let filled = ((percent / 100.0) * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {percent:5.1}%  position {}/{}  {} {}/s   ",
        "#".repeat(filled.min(WIDTH)),
        ".".repeat(WIDTH - filled.min(WIDTH)),
        progress["position"],
        progress["to"],
        progress["events_per_sec"],
        progress["unit"].as_str().unwrap_or("events"),
    )
}

/// What a finished replay found, for a person.
fn summary(out: &mut impl Write, replay: &Value) -> anyhow::Result<()> {
    let report = &replay["report"];
    let kind = report["kind"].as_str().unwrap_or("?");
    let (unit, counts): (&str, Vec<&str>) = match kind {
        "handler" => (
            "commands",
            vec![
                "same",
                "other_events",
                "other_reason",
                "now_rejected",
                "now_accepted",
                "failed",
            ],
        ),
        "projection" => ("keys", vec!["same", "added", "removed", "changed"]),
        _ => (
            "events",
            vec!["timers_fired", "same", "different", "failed"],
        ),
    };
    let total = &report[unit];
    writeln!(
        out,
        "replay of {kind} {} version {} over positions {}..={}: {total} {unit}, {} differ",
        replay["plugin"].as_str().unwrap_or("?"),
        short(replay["version"].as_str().unwrap_or("?")),
        report["from"],
        report["to"],
        report["different"],
    )?;
    if let Some(compared) = report["compared_with"].as_str() {
        writeln!(out, "  compared with {compared}")?;
    }
    let source = if kind == "handler" {
        &report["outcomes"]
    } else {
        report
    };
    for count in counts {
        writeln!(out, "  {count:<14}{}", source[count])?;
    }
    let differences = report["differences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if differences.is_empty() {
        return Ok(());
    }
    writeln!(out, "first differences:")?;
    for difference in &differences {
        let line = match kind {
            "handler" => format!(
                "command {} (position {}, {} {}): {} → {}",
                difference["command_id"].as_str().unwrap_or("?"),
                difference["position"],
                difference["stream"].as_str().unwrap_or("?"),
                difference["type"].as_str().unwrap_or("?"),
                outcome(&difference["recorded"]),
                outcome(&difference["candidate"]),
            ),
            "projection" => format!(
                "key {} {}: {} → {}",
                difference["key"].as_str().unwrap_or("?"),
                difference["change"].as_str().unwrap_or("?"),
                cut(&difference["active"]),
                cut(&difference["candidate"]),
            ),
            _ => format!(
                "position {} ({} {}): recorded {} → {}",
                difference["position"],
                difference["stream"].as_str().unwrap_or("?"),
                difference["event_type"].as_str().unwrap_or("?"),
                cut(&difference["recorded"]["commands"]),
                match difference["candidate"]["error"].as_str() {
                    Some(error) => format!("failed: {error}"),
                    None => cut(&difference["candidate"]["commands"]),
                },
            ),
        };
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

/// A handler's outcome in a few words: the event types, or the rejection's reason.
fn outcome(outcome: &Value) -> String {
    match outcome["outcome"].as_str() {
        Some("applied") => {
            let types: Vec<&str> = outcome["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["type"].as_str())
                .collect();
            format!("applied [{}]", types.join(", "))
        }
        Some("rejected") => format!("rejected: {}", outcome["reason"].as_str().unwrap_or("")),
        _ => format!("failed: {}", outcome["error"].as_str().unwrap_or("")),
    }
}

/// A JSON value on one line, cut to [`SHOWN_CHARS`].
fn cut(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// The first 12 hex digits of a version: enough to tell versions apart on screen.
pub(super) fn short(version: &str) -> &str {
    &version[..version.len().min(12)]
}

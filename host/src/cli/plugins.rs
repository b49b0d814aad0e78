//! The plugin subcommands: `deploy` uploads a component, `plugins` lists what is deployed, and
//! `command` sends a command to a handler.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::Connection;
use super::client::{describe, encode, send};
use super::versions::short;

/// How long a deploy may take: compiling a large component takes seconds on a small machine.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    connection: Connection,
    /// The component to deploy (built for wasm32-wasip2).
    file: PathBuf,
    /// The memory cap of each call, in MiB (default 128).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// The time budget of each call, in milliseconds (default 1000).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// `auto` (default): the upload takes over by itself (a projection once caught up);
    /// `manual`: it waits as the candidate until `evhost promote`.
    #[arg(long, value_parser = ["auto", "manual"])]
    promote: Option<String>,
    /// Print the host's JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct PluginsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Show this plugin in full, with its versions.
    name: Option<String>,
    /// Print the host's JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct CommandArgs {
    #[command(flatten)]
    connection: Connection,
    /// The handler to send the command to.
    handler: String,
    /// The stream the command is about (in the handler's category).
    stream: String,
    /// The command type.
    command_type: String,
    /// The command's data, as JSON.
    #[arg(default_value = "{}")]
    data: String,
    /// The command id; sending the same id again returns the recorded outcome.
    #[arg(long)]
    id: Option<String>,
    /// The command's metadata, as a JSON object (`correlation_id` is passed on to the events).
    #[arg(long)]
    metadata: Option<String>,
    /// Print the host's JSON answer.
    #[arg(long)]
    json: bool,
}

pub(super) fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut pairs = Vec::new();
    if let Some(memory) = args.memory_mib {
        pairs.push(format!("memory_mib={memory}"));
    }
    if let Some(timeout) = args.timeout_ms {
        pairs.push(format!("timeout_ms={timeout}"));
    }
    if let Some(promote) = &args.promote {
        pairs.push(format!("promote={promote}"));
    }
    let path = if pairs.is_empty() {
        "/plugins".to_owned()
    } else {
        format!("/plugins?{}", pairs.join("&"))
    };
    let client = args.connection.client(Some(DEPLOY_TIMEOUT))?;
    let (status, answer) = send(
        args.connection
            .request(&client, reqwest::Method::POST, &path)
            .header("content-type", "application/wasm")
            .body(wasm),
    )?;
    if args.json {
        println!("{answer}");
    } else {
        let what = match (status, answer["status"].as_str()) {
            (201, Some("candidate")) => "deployed as the candidate",
            (201, _) => "deployed, active",
            (_, Some("candidate")) => "uploaded before; the candidate",
            _ => "uploaded before; active",
        };
        println!(
            "{} {}: {what}, version {}",
            answer["kind"].as_str().unwrap_or("plugin"),
            answer["name"].as_str().unwrap_or("?"),
            answer["version"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

pub(super) fn list(args: PluginsArgs) -> anyhow::Result<()> {
    let path = match &args.name {
        Some(name) => format!("/plugins/{}", encode(name)),
        None => "/plugins".to_owned(),
    };
    let client = args.connection.client(Some(COMMAND_TIMEOUT))?;
    let (_, answer) = send(
        args.connection
            .request(&client, reqwest::Method::GET, &path),
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{answer}")?;
        return Ok(());
    }
    let plugins = match &answer {
        Value::Array(plugins) => plugins.clone(),
        one => vec![one.clone()],
    };
    if plugins.is_empty() {
        writeln!(out, "no plugins deployed")?;
    }
    for plugin in &plugins {
        // Projections and policies follow the log: where they are, and how far behind.
        let progress = match (plugin["position"].as_u64(), plugin["lag"].as_u64()) {
            (Some(position), Some(lag)) => format!("  position {position}, lag {lag}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<24} {:<10} {:<11} {}{progress}",
            plugin["name"].as_str().unwrap_or("?"),
            plugin["kind"].as_str().unwrap_or("?"),
            plugin["status"].as_str().unwrap_or("?"),
            short(plugin["active_version"].as_str().unwrap_or("-")),
        )?;
        if let Some(error) = plugin["error"].as_str() {
            writeln!(out, "    error: {error}")?;
        }
        let candidate = &plugin["candidate"];
        if let Some(version) = candidate["version"].as_str() {
            let progress = match (candidate["position"].as_u64(), candidate["lag"].as_u64()) {
                (Some(position), Some(lag)) => format!(", position {position}, lag {lag}"),
                _ => String::new(),
            };
            writeln!(
                out,
                "    candidate {} ({} promotion{progress})",
                short(version),
                candidate["promote"].as_str().unwrap_or("?"),
            )?;
        }
        for version in plugin["versions"].as_array().into_iter().flatten() {
            let commands = match version["commands"].as_u64() {
                Some(commands) => format!(", {commands} commands decided"),
                None => String::new(),
            };
            let position = match version["position"].as_u64() {
                Some(position) => format!(", position {position}"),
                None => String::new(),
            };
            writeln!(
                out,
                "    {}  {:<9}  {} bytes, uploaded {}{position}{commands}",
                short(version["version"].as_str().unwrap_or("?")),
                version["state"].as_str().unwrap_or("?"),
                version["size_bytes"],
                version["uploaded_at"].as_str().unwrap_or("?"),
            )?;
        }
    }
    Ok(())
}

pub(super) fn command(args: CommandArgs) -> anyhow::Result<()> {
    let data: Value = serde_json::from_str(&args.data).context("the command data is not JSON")?;
    let mut body = serde_json::json!({
        "stream": args.stream,
        "type": args.command_type,
        "data": data,
    });
    if let Some(metadata) = &args.metadata {
        body["metadata"] = serde_json::from_str(metadata).context("--metadata is not JSON")?;
    }
    if let Some(id) = &args.id {
        body["id"] = id.clone().into();
    }
    let client = args.connection.client(Some(COMMAND_TIMEOUT))?;
    let path = format!("/handlers/{}/commands", encode(&args.handler));
    let (_, answer) = send(
        args.connection
            .request(&client, reqwest::Method::POST, &path)
            .json(&body),
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{answer}")?;
        return Ok(());
    }
    let events = answer["events"].as_array().cloned().unwrap_or_default();
    writeln!(
        out,
        "command {}: {} event{}, position {}",
        answer["command_id"].as_str().unwrap_or("?"),
        events.len(),
        if events.len() == 1 { "" } else { "s" },
        answer["position"]
    )?;
    for event in &events {
        writeln!(out, "{}", describe(event))?;
    }
    Ok(())
}

//! `evhost cluster`: the nodes sharing a host's store, who runs what, and the database's role.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::Connection;
use super::client::send;

#[derive(Args)]
pub(crate) struct ClusterArgs {
    #[command(flatten)]
    connection: Connection,
    /// Print the host's JSON answer.
    #[arg(long)]
    json: bool,
}

pub(super) fn show(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.connection.client(Some(Duration::from_secs(30)))?;
    let (_, answer) = send(
        args.connection
            .request(&client, reqwest::Method::GET, "/cluster"),
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{answer}")?;
        return Ok(());
    }
    let text = |value: &Value| value.as_str().unwrap_or("-").to_owned();
    let this = text(&answer["node"]["node"]);
    writeln!(out, "nodes (head {}):", answer["head"])?;
    for node in answer["nodes"].as_array().into_iter().flatten() {
        let name = text(&node["node"]);
        writeln!(
            out,
            "  {name:<38} {:<28} {:<8} heard {} ms ago{}",
            text(&node["address"]),
            text(&node["version"]),
            node["heartbeat_ms_ago"],
            if name == this { "  (this node)" } else { "" },
        )?;
    }
    writeln!(out, "leases:")?;
    for lease in answer["leases"].as_array().into_iter().flatten() {
        let holder = match lease["holder"]["node"].as_str() {
            Some(node) => format!("{node} since {}", text(&lease["since"])),
            None => "free".to_owned(),
        };
        let progress = match (lease["position"].as_u64(), lease["lag"].as_u64()) {
            (Some(position), Some(lag)) => format!("  position {position}, lag {lag}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "  {:<60} token {:<4} {holder}{progress}",
            text(&lease["lease"]),
            lease["token"],
        )?;
    }
    let database = &answer["database"];
    write!(out, "database: {}", text(&database["engine"]))?;
    if let Some(role) = database["role"].as_str() {
        write!(
            out,
            " {} ({}), schema {}, synchronous standbys {:?}",
            role,
            text(&database["server_version"]),
            text(&database["schema"]),
            text(&database["synchronous_standby_names"]),
        )?;
        for standby in database["standbys"].as_array().into_iter().flatten() {
            write!(
                out,
                "\n  standby {} {} {}",
                text(&standby["application_name"]),
                text(&standby["state"]),
                text(&standby["sync_state"]),
            )?;
        }
    }
    writeln!(out)?;
    Ok(())
}

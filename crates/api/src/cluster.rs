//! `GET /cluster`: the nodes sharing this node's store, who runs which projection version and
//! policy (their leases, with position and lag), and what the database says of its role and
//! replication.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::error::ApiError;
use super::query::Query;
use super::{App, Body, json_response};
use evhost_store::claims::{Holder, NodeInfo};

pub(super) async fn show(
    app: &App,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    Query::parse(request.uri().query(), &[])?;
    let placement = app.plugins.placement();
    let nodes: Vec<Value> = placement
        .nodes()
        .iter()
        .map(|seen| {
            let mut node = node_json(&seen.info);
            node["heartbeat_ms_ago"] = seen.heartbeat_ms_ago.into();
            node
        })
        .collect();
    let head = app.store.head();
    let plugins = app.plugins.list();
    let leases: Vec<Value> = app
        .store
        .lease_claims()
        .await?
        .into_iter()
        .map(|claim| {
            let mut lease = json!({
                "lease": claim.lease,
                "token": claim.token,
                "holder": claim.holder.as_ref().map(holder_json),
                "since": claim.since,
                "expires_in_ms": claim.expires_in_ms,
            });
            if let Some(progress) = progress(&plugins, &claim.lease, head) {
                lease["position"] = progress.0.into();
                lease["lag"] = progress.1.into();
            }
            lease
        })
        .collect();
    let database = app.store.report().await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "node": node_json(placement.node()),
            "head": head,
            "nodes": nodes,
            "leases": leases,
            "database": database,
        }),
    ))
}

fn node_json(node: &NodeInfo) -> Value {
    json!({
        "node": node.node,
        "incarnation": node.incarnation,
        "address": node.address,
        "version": node.version,
        "started_at": node.started_at,
    })
}

fn holder_json(holder: &Holder) -> Value {
    json!({"node": holder.node, "incarnation": holder.incarnation})
}

/// The position and lag of the runner a lease fences, when it is a plugin's active version:
/// `projection/{name}/{version}` or `policy/{name}`.
fn progress(plugins: &[Value], lease: &str, head: u64) -> Option<(u64, u64)> {
    let (name, version) = match lease.split_once('/')? {
        ("projection", rest) => {
            let (name, version) = rest.split_once('/')?;
            (name, Some(version))
        }
        ("policy", name) => (name, None),
        _ => return None,
    };
    let plugin = plugins.iter().find(|p| p["name"] == name)?;
    if version.is_some_and(|v| plugin["active_version"] != v) {
        return None;
    }
    let position = plugin["position"].as_u64()?;
    Some((position, head.saturating_sub(position)))
}

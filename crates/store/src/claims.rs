//! Leases claimed for a while, and the nodes that claim them: how the nodes sharing a store agree
//! which one runs each projection and policy version.
//!
//! A claim names its holder (a node, and this run of it) and lasts a time to live, measured by the
//! store's clock (the database's, where nodes share one), so that nodes' clocks need not agree.
//! A lease is granted to a holder when it is free, when its claim has expired, or when the claim
//! is its own node's (a restarted node takes its work back at once). A grant to another holder
//! hands out a new token, so the commits the old holder still sends are fenced off; a holder
//! renewing its own claim keeps its token.

use std::time::Duration;

/// Who claims a lease: a node, and the run of it (a new one at every start).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    pub node: String,
    pub incarnation: String,
}

/// A lease as the store holds it, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseClaim {
    pub lease: String,
    /// The last token handed out.
    pub token: u64,
    /// The holder of the live claim, if there is one.
    pub holder: Option<Holder>,
    /// Since when the holder has held it (RFC 3339).
    pub since: Option<String>,
    /// How long the claim still lasts, in milliseconds.
    pub expires_in_ms: u64,
}

/// A node that announced itself, for operators and for sharing the work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: String,
    pub incarnation: String,
    /// Where its API listens.
    pub address: String,
    /// The evhost version it runs.
    pub version: String,
    /// When this run of it started (RFC 3339).
    pub started_at: String,
}

/// A node and how long ago it was last heard of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    pub info: NodeInfo,
    pub heartbeat_ms_ago: u64,
}

/// A lease's claim as a backend keeps it: the holder and when the claim ends, by the store's
/// clock in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClaim {
    pub holder: Holder,
    pub expires_at_ms: u64,
    pub since_ms: u64,
}

/// What a claim does, decided the same way by every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Another holder's claim is live: nothing changes.
    Refused,
    /// The holder renews its own claim: same token, later end.
    Renewed,
    /// A new holder takes the lease: the token grows by one.
    Granted,
}

/// Decides a claim by `holder` at `now_ms` against the lease's current claim.
pub fn decide_claim(current: Option<&StoredClaim>, holder: &Holder, now_ms: u64) -> ClaimDecision {
    match current {
        Some(claim) if claim.holder == *holder && claim.expires_at_ms > now_ms => {
            ClaimDecision::Renewed
        }
        Some(claim) if claim.expires_at_ms > now_ms && claim.holder.node != holder.node => {
            ClaimDecision::Refused
        }
        _ => ClaimDecision::Granted,
    }
}

/// Milliseconds in `ttl`, at least one.
pub fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// Milliseconds since the Unix epoch by this machine's clock: the store's clock for a backend
/// that only one process opens.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Claims and nodes kept in the memory of the one process that opens a store (the reference, the
/// embedded file): the claims need not outlive the process, since its next run is a new
/// incarnation of the same node, which takes every lease back at once; the tokens do, and the
/// backend keeps them durably through [`LocalClaims::claim`]'s `take`.
#[derive(Default)]
pub struct LocalClaims {
    claims: tokio::sync::Mutex<std::collections::BTreeMap<String, (StoredClaim, u64)>>,
    nodes: std::sync::Mutex<std::collections::BTreeMap<String, (NodeInfo, u64)>>,
}

impl LocalClaims {
    /// Decides a claim; a grant takes a new token with `take` (the backend's durable
    /// `take_lease`) while no other claim of the lease can be decided.
    pub async fn claim<F, Fut>(
        &self,
        lease: &str,
        holder: &Holder,
        ttl: Duration,
        take: F,
    ) -> Result<Option<u64>, crate::StorageError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<u64, crate::StorageError>>,
    {
        let mut claims = self.claims.lock().await;
        let now = now_ms();
        let until = now + ttl_ms(ttl);
        match decide_claim(claims.get(lease).map(|(claim, _)| claim), holder, now) {
            ClaimDecision::Refused => Ok(None),
            ClaimDecision::Renewed => {
                let (claim, token) = claims.get_mut(lease).expect("a renewed claim exists");
                claim.expires_at_ms = until;
                Ok(Some(*token))
            }
            ClaimDecision::Granted => {
                let token = take().await?;
                let claim = StoredClaim {
                    holder: holder.clone(),
                    expires_at_ms: until,
                    since_ms: now,
                };
                claims.insert(lease.to_owned(), (claim, token));
                Ok(Some(token))
            }
        }
    }

    /// Ends any claim on `lease`: its token was taken outright ([`crate::PluginData::take_lease`]),
    /// so its holder must claim it again, and gets a newer token.
    pub async fn forget(&self, lease: &str) {
        self.claims.lock().await.remove(lease);
    }

    /// Ends `holder`'s claim on `lease`, if it holds it.
    pub async fn release(&self, lease: &str, holder: &Holder) {
        let mut claims = self.claims.lock().await;
        if let Some((claim, _)) = claims.get_mut(lease)
            && claim.holder == *holder
        {
            claim.expires_at_ms = 0;
        }
    }

    /// Every lease claimed in this process's life.
    pub async fn claims(&self) -> Vec<LeaseClaim> {
        let now = now_ms();
        self.claims
            .lock()
            .await
            .iter()
            .map(|(lease, (claim, token))| {
                let live = claim.expires_at_ms > now;
                LeaseClaim {
                    lease: lease.clone(),
                    token: *token,
                    holder: live.then(|| claim.holder.clone()),
                    since: live
                        .then(|| crate::clock::format_rfc3339_micros(claim.since_ms as i64 * 1000)),
                    expires_in_ms: claim.expires_at_ms.saturating_sub(now),
                }
            })
            .collect()
    }

    /// Records that `node` is alive; answers the nodes heard of within `ttl`.
    pub fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Vec<NodeSeen> {
        let now = now_ms();
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.insert(node.node.clone(), (node.clone(), now));
        nodes
            .values()
            .filter(|(_, at)| now.saturating_sub(*at) < ttl_ms(ttl))
            .map(|(info, at)| NodeSeen {
                info: info.clone(),
                heartbeat_ms_ago: now.saturating_sub(*at),
            })
            .collect()
    }
}

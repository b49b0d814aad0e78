//! Which node runs each projection version and each policy: the runner of a unit works only
//! while this node holds the unit's lease, claimed in the store for a few seconds at a time and
//! renewed every second.
//!
//! Every runner is placed here when it starts. The node claims its lease at once (so one node
//! alone runs everything from the start) and then renews it on every tick; a unit whose lease
//! another node holds stands by, following its checkpoint from the store, until the claim of
//! that node expires (it died, hung or was cut off). The work is spread by rendezvous hashing:
//! every node computes the same preferred node for each unit among the nodes heard of for a
//! few ticks; a node holding a unit preferred elsewhere hands it over (stops, releases it), and
//! the preferred node claims it at its next tick; a unit left free because its preferred node
//! does not claim it is claimed by another after two ticks. The token
//! a claim hands out fences every commit of the runner, so a node that wakes up after losing
//! its lease cannot write over the new holder's work: its commits are refused and its runner
//! stands by again.
//!
//! Architecture Invariant: a runner commits only under the token of a claim this node was
//! granted; a runner whose commit is fenced, or whose claim cannot be renewed within its time to
//! live, stops working and stands by.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use evhost_store::claims::{Holder, NodeInfo, NodeSeen};
use evhost_store::{StorageError, Store};

/// How long a claim lasts: a unit whose node died or hung moves within about this long plus a
/// tick.
pub const CLAIM_TTL: Duration = Duration::from_secs(3);
/// How often claims are renewed (and expired ones taken over).
pub const TICK: Duration = Duration::from_secs(1);

/// A runner's standing: the token it works under, or `None` while it stands by.
pub type Tenure = watch::Sender<Option<u64>>;

/// A unit of work placed on the nodes: a runner with a lease.
#[async_trait::async_trait]
pub trait Placed: Send + Sync {
    /// The lease its commits are fenced with.
    fn lease(&self) -> &str;
    /// Where it learns whether it works, and under which token.
    fn tenure(&self) -> &Tenure;
    /// Takes what an operator changed on another node (a pause, a resume), at every tick.
    async fn follow_controls(&self) -> Result<(), StorageError>;
}

/// This node's share of the work.
pub struct Placement {
    store: Arc<dyn Store>,
    node: NodeInfo,
    holder: Holder,
    units: Mutex<BTreeMap<String, Unit>>,
    /// The nodes last heard of, for operators.
    nodes: watch::Sender<Vec<NodeSeen>>,
    /// How many ticks in a row each node has been heard of.
    seen_ticks: Mutex<BTreeMap<String, u32>>,
}

struct Unit {
    placed: Weak<dyn Placed>,
    /// When a claim of it was last granted or renewed.
    renewed: Option<Instant>,
    /// Ticks in a row it was seen free while another node is preferred for it.
    free_ticks: u32,
}

/// Ticks a unit stays free, while the node preferred for it does not claim it (it may not have
/// loaded the plugin), before another node claims it.
const FREE_TICKS_BEFORE_CLAIMING: u32 = 2;
/// Ticks a node must have been heard of before units are handed over to it: long enough for it
/// to have loaded the plugins it runs.
const TICKS_BEFORE_HANDING_OVER: u32 = 3;

/// The node preferred for `lease` among `nodes`: the one with the highest hash of the pair
/// (rendezvous hashing), so that every node reaches the same answer and a node joining or
/// leaving moves only its own share of the units.
fn preferred<'a>(lease: &str, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes.into_iter().max_by_key(|node| {
        // FNV-1a: stable across processes and releases, which the choice must be.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in lease.bytes().chain([0]).chain(node.bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash
    })
}

impl Placement {
    /// Places this node's units on `store` under `node`, and starts the tick that renews them.
    pub fn start(store: Arc<dyn Store>, node: NodeInfo) -> Arc<Self> {
        let holder = Holder {
            node: node.node.clone(),
            incarnation: node.incarnation.clone(),
        };
        let placement = Arc::new(Placement {
            store,
            node,
            holder,
            units: Mutex::new(BTreeMap::new()),
            nodes: watch::Sender::new(Vec::new()),
            seen_ticks: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(Self::tick(Arc::downgrade(&placement)));
        placement
    }

    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The nodes heard of at the last tick.
    pub fn nodes(&self) -> Vec<NodeSeen> {
        self.nodes.borrow().clone()
    }

    fn units(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Unit>> {
        self.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Places a runner that just started: its lease is claimed anew at once (a runner that
    /// replaces another on this node gets a new token, which fences its predecessor).
    pub async fn place(&self, placed: Arc<dyn Placed>) -> Result<(), StorageError> {
        let lease = placed.lease().to_owned();
        self.store.release_lease(&lease, &self.holder).await?;
        self.units().insert(
            lease.clone(),
            Unit {
                placed: Arc::downgrade(&placed),
                renewed: None,
                free_ticks: 0,
            },
        );
        self.claim(&lease, &placed).await;
        Ok(())
    }

    /// Takes a runner that ended off this node, and lets its lease go for another to claim.
    pub async fn remove(&self, lease: &str) {
        self.units().remove(lease);
        if let Err(error) = self.store.release_lease(lease, &self.holder).await {
            tracing::warn!("releasing the lease {lease}: {error}");
        }
    }

    /// Tells a runner whose commit was fenced that it no longer holds its lease.
    pub fn lost(&self, lease: &str) {
        if let Some(unit) = self.units().get_mut(lease) {
            unit.renewed = None;
            if let Some(placed) = unit.placed.upgrade() {
                placed.tenure().send_replace(None);
            }
        }
    }

    /// Claims (or renews) one unit's lease and tells its runner what came of it.
    async fn claim(&self, lease: &str, placed: &Arc<dyn Placed>) {
        let claimed = self.store.claim_lease(lease, &self.holder, CLAIM_TTL).await;
        let mut units = self.units();
        let Some(unit) = units.get_mut(lease) else {
            return;
        };
        match claimed {
            Ok(Some(token)) => {
                unit.renewed = Some(Instant::now());
                placed.tenure().send_if_modified(|current| {
                    let changed = *current != Some(token);
                    if changed {
                        tracing::info!("this node runs {lease} (token {token})");
                    }
                    *current = Some(token);
                    changed
                });
            }
            Ok(None) => {
                unit.renewed = None;
                placed.tenure().send_if_modified(|current| {
                    let held = current.is_some();
                    if held {
                        tracing::warn!("{lease} is held by another node; standing by");
                    }
                    *current = None;
                    held
                });
            }
            // Without a renewal this node cannot know it still holds the lease once the claim
            // could have expired: stand by then (fencing guards the commits until then).
            Err(error) => {
                let expired = unit
                    .renewed
                    .is_none_or(|at| at.elapsed() + TICK >= CLAIM_TTL);
                tracing::warn!("claiming {lease}: {error}");
                if expired {
                    unit.renewed = None;
                    placed.tenure().send_replace(None);
                }
            }
        }
    }

    /// Hands a unit this node holds to the node preferred for it: stops working on it and lets
    /// its lease go, for that node to claim at its next tick.
    async fn hand_over(&self, lease: &str, placed: &Arc<dyn Placed>, to: &str) {
        tracing::info!("handing {lease} over to node {to}");
        if let Some(unit) = self.units().get_mut(lease) {
            unit.renewed = None;
        }
        placed.tenure().send_replace(None);
        if let Err(error) = self.store.release_lease(lease, &self.holder).await {
            tracing::warn!("releasing the lease {lease}: {error}");
        }
    }

    /// Decides, for one unit, what this node does with it at this tick.
    async fn place_at_tick(
        &self,
        lease: &str,
        placed: &Arc<dyn Placed>,
        holder: Option<&Holder>,
        settled: &[&str],
    ) {
        let me = self.holder.node.as_str();
        let preferred = preferred(lease, settled.iter().copied()).unwrap_or(me);
        match holder {
            Some(holder) if *holder == self.holder && preferred != me => {
                self.hand_over(lease, placed, preferred).await;
            }
            // This node's, or this node's before it restarted: keep it (or take it back).
            Some(holder) if holder.node == me => self.claim(lease, placed).await,
            Some(_) => {
                if let Some(unit) = self.units().get_mut(lease) {
                    unit.free_ticks = 0;
                }
                placed.tenure().send_replace(None);
            }
            None => {
                let waited = {
                    let mut units = self.units();
                    let Some(unit) = units.get_mut(lease) else {
                        return;
                    };
                    unit.free_ticks += 1;
                    unit.free_ticks > FREE_TICKS_BEFORE_CLAIMING
                };
                if preferred == me || waited {
                    self.claim(lease, placed).await;
                }
            }
        }
    }

    async fn tick(placement: Weak<Placement>) {
        loop {
            let Some(this) = placement.upgrade() else {
                return;
            };
            // The nodes heard of long enough to take units over.
            let settled: Vec<String> = match this.store.heartbeat(&this.node, CLAIM_TTL).await {
                Ok(nodes) => {
                    let mut seen = this.seen_ticks.lock().unwrap_or_else(|p| p.into_inner());
                    seen.retain(|node, _| nodes.iter().any(|n| &n.info.node == node));
                    for node in &nodes {
                        *seen.entry(node.info.node.clone()).or_default() += 1;
                    }
                    this.nodes.send_replace(nodes);
                    seen.iter()
                        .filter(|(_, ticks)| **ticks >= TICKS_BEFORE_HANDING_OVER)
                        .map(|(node, _)| node.clone())
                        .collect()
                }
                Err(error) => {
                    tracing::warn!("announcing this node: {error}");
                    Vec::new()
                }
            };
            let mut settled: Vec<&str> = settled.iter().map(String::as_str).collect();
            if !settled.contains(&this.holder.node.as_str()) {
                settled.push(&this.holder.node);
            }
            let holders: Option<BTreeMap<String, Option<Holder>>> =
                match this.store.lease_claims().await {
                    Ok(claims) => Some(claims.into_iter().map(|c| (c.lease, c.holder)).collect()),
                    Err(error) => {
                        tracing::warn!("reading the leases: {error}");
                        None
                    }
                };
            let units: Vec<(String, Arc<dyn Placed>)> = this
                .units()
                .iter()
                .filter_map(|(lease, unit)| Some((lease.clone(), unit.placed.upgrade()?)))
                .collect();
            for (lease, placed) in units {
                match &holders {
                    Some(holders) => {
                        let holder = holders.get(&lease).and_then(Option::as_ref);
                        this.place_at_tick(&lease, &placed, holder, &settled).await;
                    }
                    // Without the listing, keep what this node holds.
                    None => this.claim(&lease, &placed).await,
                }
                if let Err(error) = placed.follow_controls().await {
                    tracing::warn!("{lease}: reading its controls: {error}");
                }
            }
            drop(this);
            tokio::time::sleep(TICK).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::preferred;

    #[test]
    fn a_node_joining_takes_only_its_own_share() {
        let leases: Vec<String> = (0..300).map(|n| format!("projection/p{n}/v1")).collect();
        let before: Vec<&str> = leases
            .iter()
            .map(|l| preferred(l, ["a", "b"]).unwrap())
            .collect();
        let after: Vec<&str> = leases
            .iter()
            .map(|l| preferred(l, ["a", "b", "c"]).unwrap())
            .collect();
        for (old, new) in before.iter().zip(&after) {
            assert!(
                old == new || *new == "c",
                "a unit moved from {old} to {new}"
            );
        }
        let to_c = after.iter().filter(|n| **n == "c").count();
        assert!(
            (50..150).contains(&to_c),
            "{to_c} of 300 moved to the new node"
        );
        let on_a = before.iter().filter(|n| **n == "a").count();
        assert!((100..200).contains(&on_a), "{on_a} of 300 on a");
    }
}

//! Which node runs each projection version and each policy: the runner of a unit works only
//! while this node holds the unit's lease, claimed in the store for a few seconds at a time and
//! renewed every second.
//!
//! Every runner is placed here when it starts. The node claims its lease at once (so one node
//! alone runs everything from the start) and then on every tick; a unit whose lease another
//! node holds stands by, following its checkpoint from the store, until the claim of that node
//! expires (it died, hung or was cut off), when this node's next claim takes it over. The token
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
}

struct Unit {
    placed: Weak<dyn Placed>,
    /// When a claim of it was last granted or renewed.
    renewed: Option<Instant>,
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
        });
        tokio::spawn(Self::tick(Arc::downgrade(&placement)));
        placement
    }

    /// One node alone on a store nobody else opens: the embedded file's and the tests'.
    pub fn alone(store: Arc<dyn Store>) -> Arc<Self> {
        Self::start(
            store,
            NodeInfo {
                node: "local".into(),
                incarnation: uuid::Uuid::new_v4().to_string(),
                address: String::new(),
                version: env!("CARGO_PKG_VERSION").into(),
                started_at: evhost_store::now_rfc3339(),
            },
        )
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

    async fn tick(placement: Weak<Placement>) {
        loop {
            let Some(this) = placement.upgrade() else {
                return;
            };
            match this.store.heartbeat(&this.node, CLAIM_TTL).await {
                Ok(nodes) => {
                    this.nodes.send_replace(nodes);
                }
                Err(error) => tracing::warn!("announcing this node: {error}"),
            }
            let units: Vec<(String, Arc<dyn Placed>)> = this
                .units()
                .iter()
                .filter_map(|(lease, unit)| Some((lease.clone(), unit.placed.upgrade()?)))
                .collect();
            for (lease, placed) in units {
                this.claim(&lease, &placed).await;
                if let Err(error) = placed.follow_controls().await {
                    tracing::warn!("{lease}: reading its controls: {error}");
                }
            }
            drop(this);
            tokio::time::sleep(TICK).await;
        }
    }
}

//! What the cluster can run now — ready, connected nodes with their
//! languages and slots — and each tenant's own limits, read from the store
//! at most once a second or after a node or tenant event.

use crate::{error::Result, quotas::Limits, sessions::Sessions, store::Store};
use berth_proto::domain::{NodeName, NodeState};
use std::{collections::HashMap, time::Duration};
use tokio::sync::broadcast;

/// A ready node: its name, the languages it runs, its slots.
pub type ReadyNode = (NodeName, Vec<String>, usize);

/// What the cluster can run now, and each tenant's own limits.
#[derive(Clone)]
pub struct Capacity {
    pub nodes: Vec<ReadyNode>,
    pub limits: HashMap<String, Limits>,
}

impl Capacity {
    pub fn slots(&self) -> usize {
        self.nodes.iter().map(|(_, _, slots)| slots).sum()
    }
}

/// What [`CapacityCache::read`] last read, and whether it still holds.
pub struct CapacityCache {
    read: Capacity,
    read_at: Option<tokio::time::Instant>,
    events: broadcast::Receiver<crate::db::entities::events::Model>,
}

/// Longest a reading serves without a node or tenant event (another
/// control plane on the same database may have changed one).
const CAPACITY_MAX_AGE: Duration = Duration::from_secs(1);

impl CapacityCache {
    pub fn new(events: broadcast::Receiver<crate::db::entities::events::Model>) -> Self {
        Self {
            read: Capacity {
                nodes: Vec::new(),
                limits: HashMap::new(),
            },
            read_at: None,
            events,
        }
    }

    /// Nodes that can run executions now (ready, connected, with the
    /// languages they report and how many slots they have), and tenants'
    /// own limits. The reading is kept until a node or tenant event (or
    /// [`CAPACITY_MAX_AGE`]); connections are checked each time.
    pub async fn read(&mut self, store: &Store, sessions: &Sessions) -> Result<Capacity> {
        let cache = self;
        let mut stale = cache
            .read_at
            .is_none_or(|at| at.elapsed() >= CAPACITY_MAX_AGE);
        loop {
            match cache.events.try_recv() {
                Ok(event) => {
                    stale |= event.kind.starts_with("node.") || event.kind.starts_with("tenant.")
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => stale = true,
                Err(_) => break,
            }
        }
        if stale {
            let read_at = tokio::time::Instant::now();
            cache.read.nodes = store
                .list_nodes(Some(NodeState::Ready))
                .await?
                .into_iter()
                .map(|n| {
                    let languages = n
                        .runtimes
                        .iter()
                        .filter(|r| r.available)
                        .map(|r| r.name.clone())
                        .collect();
                    let slots = (n.cpu_millis as usize / 1000).max(1);
                    (n.name, languages, slots)
                })
                .collect();
            cache.read.limits = store.tenant_limits().await?;
            cache.read_at = Some(read_at);
        }
        let mut read = cache.read.clone();
        read.nodes
            .retain(|(name, _, _)| sessions.is_connected(name));
        Ok(read)
    }
}

//! Live agent streams, by node name. At most one per node: a new session
//! replaces the old one, whose outbound stream then ends.

use berth_proto::{domain::NodeName, pb};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};
use tokio::sync::mpsc;
use tonic::Status;

pub type Outbound = mpsc::Sender<Result<pb::ControlMessage, Status>>;

#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<NodeName, (u64, Outbound)>>>,
    next_id: Arc<AtomicU64>,
}

impl Sessions {
    /// Makes `tx` the node's session; returns its id for [`Sessions::detach`].
    pub fn attach(&self, node: NodeName, tx: Outbound) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let replaced = self.lock().insert(node.clone(), (id, tx));
        if replaced.is_some() {
            tracing::info!(node = %node, "agent session replaced by a newer one");
        }
        id
    }

    /// Ends session `id` of `node`, unless a newer one took its place.
    pub fn detach(&self, node: &NodeName, id: u64) {
        let mut sessions = self.lock();
        if sessions
            .get(node)
            .is_some_and(|(current, _)| *current == id)
        {
            sessions.remove(node);
        }
    }

    pub fn is_connected(&self, node: &NodeName) -> bool {
        self.lock().get(node).is_some_and(|(_, tx)| !tx.is_closed())
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Sends to the node's session; false when it has none or it is gone.
    pub async fn send(&self, node: &NodeName, message: pb::ControlMessage) -> bool {
        let tx = self.lock().get(node).map(|(_, tx)| tx.clone());
        match tx {
            Some(tx) => tx.send(Ok(message)).await.is_ok(),
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeName, (u64, Outbound)>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

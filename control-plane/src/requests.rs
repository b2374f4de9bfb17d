//! Questions to agents over their sessions (logs, stats, cleanup) and the
//! routing of their replies back to whoever asked.

use crate::sessions::Sessions;
use berth_proto::{
    domain::NodeName,
    pb::{self, control_message::Message as Down},
};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};
use tokio::sync::mpsc;

/// Open requests by id: the node asked, and where its replies go.
type Open = HashMap<u64, (NodeName, mpsc::Sender<pb::AgentReply>)>;

#[derive(Clone, Default)]
pub struct Requests {
    next: Arc<AtomicU64>,
    pending: Arc<Mutex<Open>>,
}

/// An open request to one node; cancelled there when dropped.
pub struct Pending {
    pub id: u64,
    pub node: NodeName,
    pub replies: mpsc::Receiver<pb::AgentReply>,
    requests: Requests,
    sessions: Sessions,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let removed = self.requests.lock().remove(&self.id).is_some();
        if removed {
            let (sessions, node, id) = (self.sessions.clone(), self.node.clone(), self.id);
            tokio::spawn(async move {
                let cancel = pb::ControlMessage {
                    message: Some(Down::CancelRequest(pb::CancelRequest { request_id: id })),
                };
                sessions.send(&node, cancel).await;
            });
        }
    }
}

impl Requests {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (NodeName, mpsc::Sender<pb::AgentReply>)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `kind` to `node`; `None` when the node has no session.
    pub async fn ask(
        &self,
        sessions: &Sessions,
        node: &NodeName,
        kind: pb::agent_request::Kind,
    ) -> Option<Pending> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, replies) = mpsc::channel(256);
        self.lock().insert(id, (node.clone(), tx));
        let pending = Pending {
            id,
            node: node.clone(),
            replies,
            requests: self.clone(),
            sessions: sessions.clone(),
        };
        let request = pb::AgentRequest {
            request_id: id,
            kind: Some(kind),
        };
        if sessions
            .send(
                node,
                pb::ControlMessage {
                    message: Some(Down::Request(request)),
                },
            )
            .await
        {
            Some(pending)
        } else {
            None
        }
    }

    /// Routes a reply from `node`; replies to unknown requests, and to
    /// requests sent to another node, are dropped.
    pub async fn deliver(&self, node: &NodeName, reply: pb::AgentReply) {
        let tx = match self.lock().get(&reply.request_id) {
            Some((asked, tx)) if asked == node => Some(tx.clone()),
            Some(_) => {
                tracing::warn!(%node, request = reply.request_id, "a node replied to a request sent to another node; ignored");
                None
            }
            None => None,
        };
        if let Some(tx) = tx {
            let _ = tx.send(reply).await;
        }
    }
}

//! The node registry: who registered, with what, and whether it is alive.

use super::{events::NewEvent, Store};
use crate::{
    db::entities::nodes,
    error::{Error, Result},
    store::events,
};
use berth_proto::{
    domain::{NodeName, NodeState},
    pb,
};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use std::collections::{BTreeMap, HashMap};

/// What an agent says about its node when it registers.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: NodeName,
    pub address: String,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub runtimes: Vec<pb::RuntimeInfo>,
    pub labels: HashMap<String, String>,
    pub agent_version: String,
}

/// A node as stored, with typed fields.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub name: NodeName,
    pub state: NodeState,
    pub drained: bool,
    pub address: String,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub runtimes: Vec<pb::RuntimeInfo>,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// The node's container firewall as its agent last said: `None` before
    /// it said (since it registered), `Some("")` while in place, else why not.
    pub firewall_problem: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRuntime {
    name: String,
    available: bool,
    version: String,
    #[serde(default)]
    detail: String,
}

impl TryFrom<nodes::Model> for NodeRecord {
    type Error = Error;
    fn try_from(m: nodes::Model) -> Result<Self> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            Error::Corrupt(format!("node {}: {what}: {e}", m.name))
        };
        let runtimes: Vec<StoredRuntime> =
            serde_json::from_str(&m.runtimes).map_err(|e| corrupt("runtimes", &e))?;
        Ok(Self {
            name: NodeName::parse("name", &m.name).map_err(|e| corrupt("name", &e))?,
            state: m.state.parse().map_err(|e| corrupt("state", &e))?,
            drained: m.drained,
            address: m.address.clone(),
            cpu_millis: u32::try_from(m.cpu_millis).map_err(|e| corrupt("cpu", &e))?,
            memory_bytes: u64::try_from(m.memory_bytes).map_err(|e| corrupt("memory", &e))?,
            runtimes: runtimes
                .into_iter()
                .map(|r| pb::RuntimeInfo {
                    name: r.name,
                    available: r.available,
                    version: r.version,
                    detail: r.detail,
                })
                .collect(),
            labels: serde_json::from_str(&m.labels).map_err(|e| corrupt("labels", &e))?,
            agent_version: m.agent_version.clone(),
            registered_at: m.registered_at,
            last_heartbeat_at: m.last_heartbeat_at,
            firewall_problem: m.firewall_problem.clone(),
        })
    }
}

impl NodeRecord {
    /// The public view; `connected` comes from the live session registry.
    pub fn to_proto(&self, connected: bool) -> pb::Node {
        pb::Node {
            name: self.name.to_string(),
            state: self.state.into(),
            address: self.address.clone(),
            capacity: Some(pb::Capacity {
                cpu_millis: self.cpu_millis,
                memory_bytes: self.memory_bytes,
            }),
            runtimes: self.runtimes.clone(),
            labels: self.labels.clone().into_iter().collect(),
            agent_version: self.agent_version.clone(),
            registered_at: Some(timestamp(self.registered_at)),
            last_heartbeat_at: Some(timestamp(self.last_heartbeat_at)),
            drained: self.drained,
            connected,
            firewall: match self.firewall_problem.as_deref() {
                None => "unknown".to_owned(),
                Some("") => "ok".to_owned(),
                Some(problem) => format!("missing: {problem}"),
            },
        }
    }
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

fn runtimes_json(runtimes: &[pb::RuntimeInfo]) -> String {
    let stored: Vec<StoredRuntime> = runtimes
        .iter()
        .map(|r| StoredRuntime {
            name: r.name.clone(),
            available: r.available,
            version: r.version.clone(),
            detail: r.detail.clone(),
        })
        .collect();
    serde_json::to_string(&stored).expect("runtimes serialize")
}

fn labels_json(labels: &HashMap<String, String>) -> String {
    let sorted: BTreeMap<_, _> = labels.iter().collect();
    serde_json::to_string(&sorted).expect("labels serialize")
}

impl Store {
    /// Records a (re)registration: the node is alive again, `ready` unless
    /// an admin drained it. Returns the node and the state it had before.
    pub async fn register_node(
        &self,
        reg: Registration,
    ) -> Result<(NodeRecord, Option<NodeState>)> {
        let now = Utc::now();
        let txn = self.db().begin().await?;
        let existing = nodes::Entity::find_by_id(reg.name.as_str())
            .one(&txn)
            .await?;
        let previous = existing
            .as_ref()
            .map(|m| m.state.parse::<NodeState>())
            .transpose()
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let drained = existing.as_ref().is_some_and(|m| m.drained);
        let state = NodeState::alive(drained);
        let model = match existing {
            Some(model) => {
                let mut active = model.into_active_model();
                active.state = Set(state.as_str().to_owned());
                active.address = Set(reg.address.clone());
                active.cpu_millis = Set(i64::from(reg.cpu_millis));
                active.memory_bytes = Set(reg.memory_bytes as i64);
                active.runtimes = Set(runtimes_json(&reg.runtimes));
                active.labels = Set(labels_json(&reg.labels));
                active.agent_version = Set(reg.agent_version.clone());
                // A new agent process: it says anew.
                active.firewall_problem = Set(None);
                active.last_heartbeat_at = Set(now);
                active.updated_at = Set(now);
                active.update(&txn).await?
            }
            None => {
                nodes::ActiveModel {
                    name: Set(reg.name.to_string()),
                    state: Set(state.as_str().to_owned()),
                    drained: Set(false),
                    address: Set(reg.address.clone()),
                    cpu_millis: Set(i64::from(reg.cpu_millis)),
                    memory_bytes: Set(reg.memory_bytes as i64),
                    runtimes: Set(runtimes_json(&reg.runtimes)),
                    labels: Set(labels_json(&reg.labels)),
                    agent_version: Set(reg.agent_version.clone()),
                    registered_at: Set(now),
                    last_heartbeat_at: Set(now),
                    updated_at: Set(now),
                    firewall_problem: Set(None),
                }
                .insert(&txn)
                .await?
            }
        };
        let message = match previous {
            None => format!("registered from {}", reg.address),
            Some(prev) => format!("reconnected from {} (was {prev})", reg.address),
        };
        let kind = if previous.is_none() {
            "node.registered"
        } else {
            "node.reconnected"
        };
        let event = events::append(&txn, NewEvent::node(kind, reg.name.as_str(), message)).await?;
        txn.commit().await?;
        self.publish([event]);
        Ok((NodeRecord::try_from(model)?, previous))
    }

    /// Records a heartbeat and what it says of the node's container
    /// firewall (`firewall_problem`, empty while in place); a node that had
    /// been marked down is alive again.
    pub async fn heartbeat(&self, name: &NodeName, firewall_problem: &str) -> Result<NodeState> {
        let now = Utc::now();
        let txn = self.db().begin().await?;
        let model = nodes::Entity::find_by_id(name.as_str())
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("node {name} is not registered")))?;
        let state: NodeState = model
            .state
            .parse()
            .map_err(|e| Error::Corrupt(format!("{e}")))?;
        let next = if state == NodeState::Down {
            NodeState::alive(model.drained)
        } else {
            state
        };
        let said = model.firewall_problem.clone();
        let mut active = model.into_active_model();
        active.last_heartbeat_at = Set(now);
        let mut published = Vec::new();
        if said.as_deref() != Some(firewall_problem) {
            active.firewall_problem = Set(Some(firewall_problem.to_owned()));
            let event = match (said.as_deref(), firewall_problem) {
                (_, "") if said.as_deref().is_some_and(|p| !p.is_empty()) => Some(NewEvent::node(
                    "node.firewall_restored",
                    name.as_str(),
                    "container firewall in place again",
                )),
                (_, "") => None,
                (_, problem) => Some(NewEvent::node(
                    "node.firewall_missing",
                    name.as_str(),
                    format!("container firewall missing: {problem}"),
                )),
            };
            if let Some(event) = event {
                published.push(events::append(&txn, event).await?);
            }
        }
        if next != state {
            active.state = Set(next.as_str().to_owned());
            active.updated_at = Set(now);
            let event = NewEvent::node("node.ready", name.as_str(), "heartbeating again");
            published.push(events::append(&txn, event).await?);
        }
        active.update(&txn).await?;
        txn.commit().await?;
        self.publish(published);
        Ok(next)
    }

    /// Marks every live node whose last heartbeat is older than `cutoff` as
    /// `down`. Returns the nodes it marked.
    pub async fn expire_nodes(&self, cutoff: DateTime<Utc>) -> Result<Vec<NodeName>> {
        let stale = nodes::Entity::find()
            .filter(nodes::Column::State.ne(NodeState::Down.as_str()))
            .filter(nodes::Column::LastHeartbeatAt.lt(cutoff))
            .all(self.db())
            .await?;
        let mut marked = Vec::new();
        for model in stale {
            let now = Utc::now();
            let txn = self.db().begin().await?;
            // Re-checked inside the transaction: a heartbeat may have landed meanwhile.
            let updated = nodes::Entity::update_many()
                .col_expr(nodes::Column::State, NodeState::Down.as_str().into())
                .col_expr(nodes::Column::UpdatedAt, now.into())
                .filter(nodes::Column::Name.eq(model.name.as_str()))
                .filter(nodes::Column::State.ne(NodeState::Down.as_str()))
                .filter(nodes::Column::LastHeartbeatAt.lt(cutoff))
                .exec(&txn)
                .await?;
            if updated.rows_affected == 0 {
                continue;
            }
            let message = format!(
                "no heartbeat since {}",
                model.last_heartbeat_at.to_rfc3339()
            );
            let event =
                events::append(&txn, NewEvent::node("node.down", &model.name, message)).await?;
            txn.commit().await?;
            self.publish([event]);
            marked.push(
                NodeName::parse("name", &model.name).map_err(|e| Error::Corrupt(e.to_string()))?,
            );
        }
        Ok(marked)
    }

    /// Sets or clears an admin's drain. A down node stays down.
    pub async fn set_drained(&self, name: &NodeName, drained: bool) -> Result<NodeRecord> {
        let now = Utc::now();
        let txn = self.db().begin().await?;
        let model = nodes::Entity::find_by_id(name.as_str())
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("node {name} not found")))?;
        let state: NodeState = model
            .state
            .parse()
            .map_err(|e| Error::Corrupt(format!("{e}")))?;
        let changed = model.drained != drained;
        let mut active = model.into_active_model();
        active.drained = Set(drained);
        if state != NodeState::Down {
            active.state = Set(NodeState::alive(drained).as_str().to_owned());
        }
        active.updated_at = Set(now);
        let model = active.update(&txn).await?;
        let mut published = Vec::new();
        if changed {
            let kind = if drained {
                "node.drained"
            } else {
                "node.undrained"
            };
            published
                .push(events::append(&txn, NewEvent::node(kind, name.as_str(), "by admin")).await?);
        }
        txn.commit().await?;
        self.publish(published);
        NodeRecord::try_from(model)
    }

    pub async fn get_node(&self, name: &NodeName) -> Result<NodeRecord> {
        nodes::Entity::find_by_id(name.as_str())
            .one(self.db())
            .await?
            .ok_or_else(|| Error::NotFound(format!("node {name} not found")))?
            .try_into()
    }

    /// All nodes, or those in `state`, by name.
    pub async fn list_nodes(&self, state: Option<NodeState>) -> Result<Vec<NodeRecord>> {
        let mut query = nodes::Entity::find().order_by_asc(nodes::Column::Name);
        if let Some(state) = state {
            query = query.filter(nodes::Column::State.eq(state.as_str()));
        }
        query
            .all(self.db())
            .await?
            .into_iter()
            .map(NodeRecord::try_from)
            .collect()
    }
}

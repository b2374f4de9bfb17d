//! Instances: where each copy of an app runs, what its node says of it.

use super::{
    events::{self, NewEvent},
    nodes::timestamp,
    Store,
};
use crate::{
    db::entities::{apps, instances},
    error::{Error, Result},
};
use berth_proto::{
    domain::{DesiredInstanceState, InstanceState, NodeState},
    pb,
};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub id: String,
    pub app_id: String,
    pub build_id: Option<String>,
    pub node_name: Option<String>,
    pub desired: DesiredInstanceState,
    pub state: InstanceState,
    pub container_id: String,
    pub host_port: u16,
    pub restarts: u32,
    pub error: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<instances::Model> for InstanceRecord {
    type Error = Error;
    fn try_from(m: instances::Model) -> Result<Self> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            Error::Corrupt(format!("instance {}: {what}: {e}", m.id))
        };
        Ok(Self {
            desired: m
                .desired_state
                .parse()
                .map_err(|e| corrupt("desired state", &e))?,
            state: m.state.parse().map_err(|e| corrupt("state", &e))?,
            host_port: u16::try_from(m.host_port).map_err(|e| corrupt("host port", &e))?,
            restarts: u32::try_from(m.restarts).map_err(|e| corrupt("restarts", &e))?,
            id: m.id,
            app_id: m.app_id,
            build_id: m.build_id,
            node_name: m.node_name,
            container_id: m.container_id,
            error: m.error,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}

impl InstanceRecord {
    /// The public view; `address` is the node's advertised address.
    pub fn to_proto(&self, address: &str) -> pb::Instance {
        pb::Instance {
            id: self.id.clone(),
            app_id: self.app_id.clone(),
            node_name: self.node_name.clone().unwrap_or_default(),
            address: address.to_owned(),
            host_port: u32::from(self.host_port),
            container_id: self.container_id.clone(),
            state: self.state.into(),
            desired_state: self.desired.into(),
            restarts: self.restarts,
            error: self.error.clone(),
            updated_at: Some(timestamp(self.updated_at)),
        }
    }
}

fn event_kind(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Pending => "instance.pending",
        InstanceState::Starting => "instance.starting",
        InstanceState::Running => "instance.running",
        InstanceState::Exited => "instance.exited",
        InstanceState::Failed => "instance.failed",
        InstanceState::Lost => "instance.lost",
        InstanceState::Stopped => "instance.stopped",
    }
}

async fn instance_event(
    conn: &impl sea_orm::ConnectionTrait,
    instance: &InstanceRecord,
    message: String,
) -> Result<crate::db::entities::events::Model> {
    let app = apps::Entity::find_by_id(&instance.app_id).one(conn).await?;
    let (hostname, tenant) = match app {
        Some(app) => (app.app_hostname, Some(app.tenant)),
        None => (None, None),
    };
    events::append(
        conn,
        NewEvent {
            kind: event_kind(instance.state),
            subject_id: instance.id.clone(),
            node_name: instance.node_name.clone(),
            app_id: Some(instance.app_id.clone()),
            app_hostname: hostname,
            message,
            tenant,
        },
    )
    .await
}

impl Store {
    /// A new `pending` instance of `app_id`, on `node` when one was found
    /// (`reason` says why not otherwise).
    pub async fn create_instance(
        &self,
        app_id: &str,
        build_id: &str,
        node: Option<&str>,
        reason: &str,
    ) -> Result<InstanceRecord> {
        let now = Utc::now();
        let txn = self.db().begin().await?;
        let model = instances::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            app_id: Set(app_id.to_owned()),
            build_id: Set(Some(build_id.to_owned())),
            node_name: Set(node.map(str::to_owned)),
            desired_state: Set(DesiredInstanceState::Running.as_str().to_owned()),
            state: Set(InstanceState::Pending.as_str().to_owned()),
            container_id: Set(String::new()),
            host_port: Set(0),
            restarts: Set(0),
            error: Set(reason.to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let instance = InstanceRecord::try_from(model)?;
        let message = match node {
            Some(node) => format!("placed on {node}"),
            None => format!("not placed: {reason}"),
        };
        let event = instance_event(&txn, &instance, message).await?;
        txn.commit().await?;
        self.publish([event]);
        Ok(instance)
    }

    /// Places a pending instance that had no node.
    pub async fn place_instance(&self, id: &str, node: &str) -> Result<()> {
        instances::Entity::update_many()
            .col_expr(instances::Column::NodeName, Some(node.to_owned()).into())
            .col_expr(instances::Column::Error, String::new().into())
            .col_expr(instances::Column::UpdatedAt, Utc::now().into())
            .filter(instances::Column::Id.eq(id))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Updates why a pending instance has no node.
    pub async fn set_instance_reason(&self, id: &str, reason: &str) -> Result<()> {
        instances::Entity::update_many()
            .col_expr(instances::Column::Error, reason.to_owned().into())
            .filter(instances::Column::Id.eq(id))
            .filter(instances::Column::Error.ne(reason))
            .exec(self.db())
            .await?;
        Ok(())
    }

    pub async fn delete_instance(&self, id: &str) -> Result<()> {
        instances::Entity::delete_by_id(id).exec(self.db()).await?;
        Ok(())
    }

    /// Every instance, oldest first.
    pub async fn all_instances(&self) -> Result<Vec<InstanceRecord>> {
        instances::Entity::find()
            .order_by_asc(instances::Column::CreatedAt)
            .order_by_asc(instances::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(InstanceRecord::try_from)
            .collect()
    }

    pub async fn app_instances(&self, app_id: &str) -> Result<Vec<InstanceRecord>> {
        instances::Entity::find()
            .filter(instances::Column::AppId.eq(app_id))
            .order_by_asc(instances::Column::CreatedAt)
            .order_by_asc(instances::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(InstanceRecord::try_from)
            .collect()
    }

    /// Applies what a node reports of its instances. Reports for instances
    /// that are not on that node are ignored: a node speaks only for itself.
    pub async fn apply_instance_report(
        &self,
        node: &str,
        statuses: &[pb::InstanceStatus],
    ) -> Result<usize> {
        let mut changed = 0;
        for status in statuses {
            let Ok(reported) = InstanceState::try_from(status.state) else {
                continue;
            };
            let txn = self.db().begin().await?;
            let Some(model) = instances::Entity::find_by_id(&status.instance_id)
                .one(&txn)
                .await?
            else {
                continue;
            };
            if model.node_name.as_deref() != Some(node) {
                continue;
            }
            let current: InstanceState = model
                .state
                .parse()
                .map_err(|e| Error::Corrupt(format!("{e}")))?;
            let host_port = i32::try_from(status.host_port).unwrap_or(0);
            let restarts = i32::try_from(status.restarts).unwrap_or(i32::MAX);
            let error: String = status.error.chars().take(4096).collect();
            let moves = current != reported && current.can_become(reported);
            if !moves
                && model.container_id == status.container_id
                && model.host_port == host_port
                && model.restarts == restarts
                && model.error == error
            {
                continue;
            }
            let mut active = model.into_active_model();
            if moves {
                active.state = Set(reported.as_str().to_owned());
            }
            active.container_id = Set(status.container_id.chars().take(64).collect());
            active.host_port = Set(host_port);
            active.restarts = Set(restarts);
            active.error = Set(error.clone());
            active.updated_at = Set(Utc::now());
            let instance = InstanceRecord::try_from(active.update(&txn).await?)?;
            let mut published = Vec::new();
            if moves {
                let message = if error.is_empty() {
                    format!("on {node}")
                } else {
                    error
                };
                published.push(instance_event(&txn, &instance, message).await?);
            }
            txn.commit().await?;
            self.publish(published);
            changed += 1;
        }
        Ok(changed)
    }

    /// Instances on nodes that are down become `lost`.
    pub async fn lose_instances_on_down_nodes(&self) -> Result<Vec<InstanceRecord>> {
        let down: Vec<String> = self
            .list_nodes(Some(NodeState::Down))
            .await?
            .into_iter()
            .map(|n| n.name.to_string())
            .collect();
        if down.is_empty() {
            return Ok(Vec::new());
        }
        let active = [
            InstanceState::Pending,
            InstanceState::Starting,
            InstanceState::Running,
        ]
        .map(|s| s.as_str().to_owned());
        let models = instances::Entity::find()
            .filter(instances::Column::NodeName.is_in(down))
            .filter(instances::Column::State.is_in(active))
            .all(self.db())
            .await?;
        let mut lost = Vec::new();
        for model in models {
            let txn = self.db().begin().await?;
            let node = model.node_name.clone().unwrap_or_default();
            let mut active = model.into_active_model();
            active.state = Set(InstanceState::Lost.as_str().to_owned());
            active.updated_at = Set(Utc::now());
            let instance = InstanceRecord::try_from(active.update(&txn).await?)?;
            let event = instance_event(&txn, &instance, format!("node {node} is down")).await?;
            txn.commit().await?;
            self.publish([event]);
            lost.push(instance);
        }
        Ok(lost)
    }
}

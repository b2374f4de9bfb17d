//! The route table the gateways hold: apps with their ready instances, and
//! the live API keys (hashes only).

use super::Store;
use crate::{db::entities::apps, error::Result};
use berth_proto::{
    domain::{DesiredInstanceState, InstanceState, NodeState},
    pb,
};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use std::collections::{BTreeMap, HashMap};

/// Everything a gateway routes by, keyed by app id and key id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTable {
    pub apps: BTreeMap<String, pb::AppRoute>,
    pub keys: BTreeMap<String, pb::GatewayKey>,
}

impl RouteTable {
    /// What a gateway holding `old` needs to hold `self`.
    pub fn diff(&self, old: &RouteTable) -> pb::RouteUpdate {
        fn changed<V: PartialEq + Clone>(
            new: &BTreeMap<String, V>,
            old: &BTreeMap<String, V>,
        ) -> (Vec<V>, Vec<String>) {
            let upserts = new
                .iter()
                .filter(|(id, v)| old.get(*id) != Some(*v))
                .map(|(_, v)| v.clone())
                .collect();
            let removed = old
                .keys()
                .filter(|id| !new.contains_key(*id))
                .cloned()
                .collect();
            (upserts, removed)
        }
        let (apps, removed_apps) = changed(&self.apps, &old.apps);
        let (keys, removed_keys) = changed(&self.keys, &old.keys);
        pb::RouteUpdate {
            snapshot: false,
            apps,
            removed_apps,
            keys,
            removed_keys,
        }
    }

    /// The whole table as one update.
    pub fn snapshot(&self) -> pb::RouteUpdate {
        pb::RouteUpdate {
            snapshot: true,
            ..self.diff(&RouteTable::default())
        }
    }
}

impl Store {
    /// Reads the route table as it stands.
    pub async fn route_table(&self) -> Result<RouteTable> {
        let nodes: HashMap<String, String> = self
            .list_nodes(None)
            .await?
            .into_iter()
            .filter(|n| n.state != NodeState::Down)
            .map(|n| (n.name.to_string(), n.address))
            .collect();
        let mut backends: HashMap<String, Vec<pb::Backend>> = HashMap::new();
        for instance in self.all_instances().await? {
            if instance.state != InstanceState::Running
                || instance.desired != DesiredInstanceState::Running
                || instance.host_port == 0
            {
                continue;
            }
            let Some(node) = instance.node_name.as_deref() else {
                continue;
            };
            let Some(address) = nodes.get(node) else {
                continue;
            };
            backends
                .entry(instance.app_id.clone())
                .or_default()
                .push(pb::Backend {
                    instance_id: instance.id.clone(),
                    node_name: node.to_owned(),
                    address: address.clone(),
                    host_port: u32::from(instance.host_port),
                });
        }
        let mut table = RouteTable::default();
        for app in self.list_apps(None).await? {
            let mut app_backends = backends.remove(&app.id).unwrap_or_default();
            app_backends.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
            table.apps.insert(
                app.id.clone(),
                pb::AppRoute {
                    app_id: app.id.clone(),
                    tenant: app.spec.tenant.clone(),
                    name: app.spec.name.clone(),
                    app_hostname: app.spec.app_hostname.clone().unwrap_or_default(),
                    state: pb::AppState::from(app.state) as i32,
                    min_instances: app.spec.min_instances,
                    request_timeout_ms: app.spec.request_timeout_ms,
                    max_body_bytes: app.spec.max_body_bytes,
                    backends: app_backends,
                    stopped: app.stopped,
                },
            );
        }
        for key in self.list_keys(None).await? {
            if key.revoked_at.is_some() {
                continue;
            }
            table.keys.insert(
                key.id.clone(),
                pb::GatewayKey {
                    id: key.id,
                    tenant: key.tenant,
                    prefix: key.prefix,
                    key_hash: key.key_hash,
                    admin: key.role == berth_proto::domain::KeyRole::Admin,
                    role: berth_proto::pb::KeyRole::from(key.role).into(),
                    rate_per_second: key.rate_per_second,
                    burst: key.burst,
                },
            );
        }
        Ok(table)
    }

    /// Records that these apps served traffic at `at` (scale to zero keeps
    /// them up while they do).
    pub async fn touch_apps(&self, app_ids: &[String], at: DateTime<Utc>) -> Result<()> {
        if app_ids.is_empty() {
            return Ok(());
        }
        apps::Entity::update_many()
            .set(apps::ActiveModel {
                last_request_at: Set(Some(at)),
                ..Default::default()
            })
            .filter(apps::Column::Id.is_in(app_ids.iter().cloned()))
            .exec(self.db())
            .await?;
        Ok(())
    }
}

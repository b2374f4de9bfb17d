//! Tenants: made with their first key (or by their certificate), and their
//! own limits.

use super::{events, events::NewEvent, Store};
use crate::{
    db::entities::tenants,
    error::{Error, Result},
    quotas::Limits,
};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub limits: Limits,
}

fn limit(value: Option<i32>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok())
}

impl From<tenants::Model> for TenantRecord {
    fn from(m: tenants::Model) -> Self {
        Self {
            name: m.name,
            created_at: m.created_at,
            limits: Limits {
                max_running_executions: limit(m.max_running_executions),
                max_queued_executions: limit(m.max_queued_executions),
                max_running_builds: limit(m.max_running_builds),
            },
        }
    }
}

/// `change`: `None` keeps `current`, `Some(0)` clears it, else sets it.
fn changed(current: Option<i32>, change: Option<u32>) -> Option<i32> {
    match change {
        None => current,
        Some(0) => None,
        Some(n) => Some(n as i32),
    }
}

impl Store {
    /// Tenants by name (only `only`, when given).
    pub async fn list_tenants(&self, only: Option<&str>) -> Result<Vec<TenantRecord>> {
        let mut query = tenants::Entity::find().order_by_asc(tenants::Column::Name);
        if let Some(name) = only {
            query = query.filter(tenants::Column::Name.eq(name));
        }
        Ok(query
            .all(self.db())
            .await?
            .into_iter()
            .map(TenantRecord::from)
            .collect())
    }

    /// Every tenant's own limits, by name (tenants with none set left out).
    pub async fn tenant_limits(&self) -> Result<HashMap<String, Limits>> {
        Ok(self
            .list_tenants(None)
            .await?
            .into_iter()
            .filter(|t| t.limits != Limits::default())
            .map(|t| (t.name, t.limits))
            .collect())
    }

    /// Changes a tenant's limits: a field `None` is kept, `Some(0)` goes
    /// back to the default, else it is set.
    pub async fn set_tenant_limits(&self, name: &str, change: &Limits) -> Result<TenantRecord> {
        let txn = self.db().begin().await?;
        let model = tenants::Entity::find_by_id(name)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant {name:?} not found")))?;
        let mut active: tenants::ActiveModel = model.clone().into();
        active.max_running_executions = Set(changed(
            model.max_running_executions,
            change.max_running_executions,
        ));
        active.max_queued_executions = Set(changed(
            model.max_queued_executions,
            change.max_queued_executions,
        ));
        active.max_running_builds =
            Set(changed(model.max_running_builds, change.max_running_builds));
        let record = TenantRecord::from(active.update(&txn).await?);
        let event = events::append(
            &txn,
            NewEvent {
                kind: "tenant.limits_set",
                subject_id: record.name.clone(),
                message: record.limits.to_string(),
                tenant: Some(record.name.clone()),
                ..NewEvent::default()
            },
        )
        .await?;
        txn.commit().await?;
        self.publish([event]);
        Ok(record)
    }
}

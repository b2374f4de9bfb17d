//! The event log: append-only, ordered by sequence number.

use super::Store;
use crate::{db::entities::events, error::Result};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, NotSet, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

/// An event about to be appended.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub kind: &'static str,
    pub subject_id: String,
    pub node_name: Option<String>,
    pub app_id: Option<String>,
    pub app_hostname: Option<String>,
    pub message: String,
    /// The tenant whose thing it is about; none for the cluster's own
    /// (nodes), which only admins see.
    pub tenant: Option<String>,
}

impl NewEvent {
    pub fn node(kind: &'static str, node: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            subject_id: node.to_owned(),
            node_name: Some(node.to_owned()),
            message: message.into(),
            ..Self::default()
        }
    }
}

/// Appends `event` within the caller's transaction.
pub async fn append(conn: &impl ConnectionTrait, event: NewEvent) -> Result<events::Model> {
    let model = events::ActiveModel {
        sequence: NotSet,
        kind: Set(event.kind.to_owned()),
        app_id: Set(event.app_id),
        app_hostname: Set(event.app_hostname),
        node_name: Set(event.node_name),
        subject_id: Set(event.subject_id),
        message: Set(event.message),
        at: Set(Utc::now()),
        tenant: Set(event.tenant),
    };
    Ok(model.insert(conn).await?)
}

/// Which events a reader wants (and may see): every field set must match.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventFilter<'a> {
    pub app_id: Option<&'a str>,
    pub node_name: Option<&'a str>,
    /// A tenant's reader sees only that tenant's events.
    pub tenant: Option<&'a str>,
}

impl EventFilter<'_> {
    /// Whether `event` passes, for events that arrive live; the same rule
    /// as [`Store::events_after`]'s query.
    pub fn matches(&self, event: &events::Model) -> bool {
        fn agrees(want: Option<&str>, have: &Option<String>) -> bool {
            want.is_none_or(|w| have.as_deref() == Some(w))
        }
        agrees(self.app_id, &event.app_id)
            && agrees(self.node_name, &event.node_name)
            && agrees(self.tenant, &event.tenant)
    }
}

/// Most events one read returns.
pub const PAGE: u64 = 500;

impl Store {
    /// Events after `after_sequence`, oldest first, at most [`PAGE`].
    pub async fn events_after(
        &self,
        after_sequence: i64,
        filter: EventFilter<'_>,
    ) -> Result<Vec<events::Model>> {
        let mut query = events::Entity::find()
            .filter(events::Column::Sequence.gt(after_sequence))
            .order_by_asc(events::Column::Sequence)
            .limit(PAGE);
        if let Some(app_id) = filter.app_id {
            query = query.filter(events::Column::AppId.eq(app_id));
        }
        if let Some(tenant) = filter.tenant {
            query = query.filter(events::Column::Tenant.eq(tenant));
        }
        if let Some(node) = filter.node_name {
            query = query.filter(events::Column::NodeName.eq(node));
        }
        Ok(query.all(self.db()).await?)
    }
}

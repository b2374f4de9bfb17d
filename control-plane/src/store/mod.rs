//! Persistence of the cluster's state through sea-orm. Every change that
//! matters to users also appends an event, in the same transaction.

pub mod apps;
pub mod builds;
pub mod events;
pub mod executions;
pub mod instances;
pub mod keys;
pub mod nodes;
pub mod routes;
pub mod tenants;

use crate::db::entities::events as event_entity;
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast;

/// The database plus a broadcast of events as they are committed.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    events: broadcast::Sender<event_entity::Model>,
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self { db, events }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Events committed from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<event_entity::Model> {
        self.events.subscribe()
    }

    /// Announces events once their transaction has committed.
    fn publish(&self, committed: impl IntoIterator<Item = event_entity::Model>) {
        for event in committed {
            // No subscriber is not an error.
            let _ = self.events.send(event);
        }
    }
}

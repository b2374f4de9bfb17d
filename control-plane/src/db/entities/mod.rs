//! sea-orm entities, one per table created in `migrations/`.
//! States are stored as their lowercase names; `crate::store` maps them to
//! the typed enums of `berth_proto::domain`.

pub mod api_keys;
pub mod apps;
pub mod builds;
pub mod events;
pub mod executions;
pub mod instances;
pub mod nodes;
pub mod tenants;

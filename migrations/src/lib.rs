//! Berth's database schema as sea-orm migrations, applied by the control
//! plane at start-up on SQLite and PostgreSQL alike.
//!
//! One file per migration, named by date; never edit one that has shipped,
//! add a new one.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261123_000002_deployments;
mod m20261123_000003_gateway;
mod m20261205_000004_node_firewall;
mod m20261205_000005_tenant_roles;
mod m20261205_000006_tenant_limits;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261123_000002_deployments::Migration),
            Box::new(m20261123_000003_gateway::Migration),
            Box::new(m20261205_000004_node_firewall::Migration),
            Box::new(m20261205_000005_tenant_roles::Migration),
            Box::new(m20261205_000006_tenant_limits::Migration),
        ]
    }
}

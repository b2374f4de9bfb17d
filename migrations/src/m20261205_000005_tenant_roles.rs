//! Tenants manage their own things: an API key's role (`admin`, `deployer`,
//! `invoker`; older keys keep what their admin flag meant), and the tenant
//! an event belongs to (none for the cluster's own, such as a node's), so a
//! tenant's event stream can be filtered.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Role,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Tenant,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(
                        ColumnDef::new(ApiKeys::Role)
                            .text()
                            .not_null()
                            .default("invoker"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Events::Table)
                    .add_column(ColumnDef::new(Events::Tenant).text().null())
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared("UPDATE api_keys SET role = 'admin' WHERE admin")
            .await?;
        db.execute_unprepared(
            "UPDATE events SET tenant = (SELECT apps.tenant FROM apps WHERE apps.id = events.app_id) \
             WHERE app_id IS NOT NULL",
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_tenant_sequence")
                    .table(Events::Table)
                    .col(Events::Tenant)
                    .col(Alias::new("sequence"))
                    .to_owned(),
            )
            .await
    }
}

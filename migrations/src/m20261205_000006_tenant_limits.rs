//! A tenant's own limits, where an admin set them (none: the cluster's
//! defaults): executions running at once and waiting, builds at once.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    MaxRunningExecutions,
    MaxQueuedExecutions,
    MaxRunningBuilds,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            Tenants::MaxRunningExecutions,
            Tenants::MaxQueuedExecutions,
            Tenants::MaxRunningBuilds,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tenants::Table)
                        .add_column(ColumnDef::new(column).integer().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

//! What a node says of its container firewall: why it is not in place,
//! or nothing while it is (and before the node first said).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    FirewallProblem,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Nodes::Table)
                    .add_column(text_null(Nodes::FirewallProblem))
                    .to_owned(),
            )
            .await
    }
}

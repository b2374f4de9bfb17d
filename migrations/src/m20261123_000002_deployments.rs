//! Deployments: which node builds a build, how big its context is, whether
//! it was served from cache, and whether an app is stopped on purpose.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Builds {
    Table,
    NodeName,
    ContextBytes,
    Cached,
}

#[derive(DeriveIden)]
enum Apps {
    Table,
    Stopped,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        let columns = [
            (
                Builds::Table.into_iden(),
                string_len_null(Builds::NodeName, 253),
            ),
            (
                Builds::Table.into_iden(),
                big_integer(Builds::ContextBytes).default(0).to_owned(),
            ),
            (
                Builds::Table.into_iden(),
                boolean(Builds::Cached).default(false).to_owned(),
            ),
            (
                Apps::Table.into_iden(),
                boolean(Apps::Stopped).default(false).to_owned(),
            ),
        ];
        for (table, mut column) in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

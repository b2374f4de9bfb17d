//! The gateway: per-app request timeout and body limit, and what scale to
//! zero needs (idle timeout, last request seen).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Apps {
    Table,
    RequestTimeoutMs,
    MaxBodyBytes,
    IdleTimeoutS,
    LastRequestAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        let columns = [
            integer(Apps::RequestTimeoutMs).default(30_000).to_owned(),
            big_integer(Apps::MaxBodyBytes)
                .default(100i64 << 20)
                .to_owned(),
            integer(Apps::IdleTimeoutS).default(300).to_owned(),
            timestamp_with_time_zone_null(Apps::LastRequestAt),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Apps::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

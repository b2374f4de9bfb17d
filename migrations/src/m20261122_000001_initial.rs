//! The first schema: tenants, API keys, nodes, apps, builds, instances,
//! executions and the event log.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Tenant,
    Name,
    Prefix,
    KeyHash,
    Admin,
    RatePerSecond,
    Burst,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Name,
    State,
    Drained,
    Address,
    CpuMillis,
    MemoryBytes,
    Runtimes,
    Labels,
    AgentVersion,
    RegisteredAt,
    LastHeartbeatAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Apps {
    Table,
    Id,
    Tenant,
    Name,
    Runtime,
    AppHostname,
    ContainerPort,
    CpuMillis,
    MemoryBytes,
    MinInstances,
    MaxInstances,
    Env,
    Entry,
    Command,
    State,
    StatusMessage,
    CurrentBuildId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Builds {
    Table,
    Id,
    AppId,
    State,
    Digest,
    ImageTag,
    Logs,
    Error,
    CreatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Instances {
    Table,
    Id,
    AppId,
    BuildId,
    NodeName,
    DesiredState,
    State,
    ContainerId,
    HostPort,
    Restarts,
    Error,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    Tenant,
    Language,
    State,
    NodeName,
    TimeoutMs,
    MemoryBytes,
    Stdout,
    Stderr,
    StdoutTruncated,
    StderrTruncated,
    ExitCode,
    Signal,
    WallTimeMs,
    CpuTimeMs,
    PeakMemoryBytes,
    Error,
    CreatedAt,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Sequence,
    Kind,
    AppId,
    AppHostname,
    NodeName,
    SubjectId,
    Message,
    At,
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(on_delete)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(string_len(Tenants::Name, 63).primary_key())
                    .col(timestamp_with_time_zone(Tenants::CreatedAt))
                    .to_owned(),
            )
            .await?;
        let seed_default = Query::insert()
            .into_table(Tenants::Table)
            .columns([Tenants::Name, Tenants::CreatedAt])
            .values_panic(["default".into(), Expr::current_timestamp()])
            .to_owned();
        manager.exec_stmt(seed_default).await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(string_len(ApiKeys::Id, 36).primary_key())
                    .col(string_len(ApiKeys::Tenant, 63))
                    .col(string_len(ApiKeys::Name, 63))
                    .col(string_len(ApiKeys::Prefix, 16))
                    .col(string_len_uniq(ApiKeys::KeyHash, 128))
                    .col(boolean(ApiKeys::Admin))
                    .col(double(ApiKeys::RatePerSecond))
                    .col(integer(ApiKeys::Burst))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .foreign_key(&mut fk(
                        "fk_api_keys_tenant",
                        (ApiKeys::Table, ApiKeys::Tenant),
                        (Tenants::Table, Tenants::Name),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Nodes::Table)
                    .col(string_len(Nodes::Name, 253).primary_key())
                    .col(string_len(Nodes::State, 16))
                    .col(boolean(Nodes::Drained))
                    .col(string_len(Nodes::Address, 255))
                    .col(big_integer(Nodes::CpuMillis))
                    .col(big_integer(Nodes::MemoryBytes))
                    .col(text(Nodes::Runtimes))
                    .col(text(Nodes::Labels))
                    .col(string_len(Nodes::AgentVersion, 64))
                    .col(timestamp_with_time_zone(Nodes::RegisteredAt))
                    .col(timestamp_with_time_zone(Nodes::LastHeartbeatAt))
                    .col(timestamp_with_time_zone(Nodes::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Apps::Table)
                    .col(string_len(Apps::Id, 36).primary_key())
                    .col(string_len(Apps::Tenant, 63))
                    .col(string_len(Apps::Name, 63))
                    .col(string_len(Apps::Runtime, 16))
                    .col(string_len_null(Apps::AppHostname, 253).unique_key())
                    .col(integer(Apps::ContainerPort))
                    .col(big_integer(Apps::CpuMillis))
                    .col(big_integer(Apps::MemoryBytes))
                    .col(integer(Apps::MinInstances))
                    .col(integer(Apps::MaxInstances))
                    .col(text(Apps::Env))
                    .col(text(Apps::Entry))
                    .col(text(Apps::Command))
                    .col(string_len(Apps::State, 16))
                    .col(text(Apps::StatusMessage))
                    .col(string_len_null(Apps::CurrentBuildId, 36))
                    .col(timestamp_with_time_zone(Apps::CreatedAt))
                    .col(timestamp_with_time_zone(Apps::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_apps_tenant",
                        (Apps::Table, Apps::Tenant),
                        (Tenants::Table, Tenants::Name),
                        ForeignKeyAction::Restrict,
                    ))
                    .index(
                        Index::create()
                            .name("ux_apps_tenant_name")
                            .col(Apps::Tenant)
                            .col(Apps::Name)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Builds::Table)
                    .col(string_len(Builds::Id, 36).primary_key())
                    .col(string_len(Builds::AppId, 36))
                    .col(string_len(Builds::State, 16))
                    .col(string_len(Builds::Digest, 64))
                    .col(string_len(Builds::ImageTag, 255))
                    .col(text(Builds::Logs))
                    .col(text(Builds::Error))
                    .col(timestamp_with_time_zone(Builds::CreatedAt))
                    .col(timestamp_with_time_zone_null(Builds::FinishedAt))
                    .foreign_key(&mut fk(
                        "fk_builds_app",
                        (Builds::Table, Builds::AppId),
                        (Apps::Table, Apps::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Instances::Table)
                    .col(string_len(Instances::Id, 36).primary_key())
                    .col(string_len(Instances::AppId, 36))
                    .col(string_len_null(Instances::BuildId, 36))
                    .col(string_len_null(Instances::NodeName, 253))
                    .col(string_len(Instances::DesiredState, 16))
                    .col(string_len(Instances::State, 16))
                    .col(string_len(Instances::ContainerId, 64))
                    .col(integer(Instances::HostPort))
                    .col(integer(Instances::Restarts))
                    .col(text(Instances::Error))
                    .col(timestamp_with_time_zone(Instances::CreatedAt))
                    .col(timestamp_with_time_zone(Instances::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_instances_app",
                        (Instances::Table, Instances::AppId),
                        (Apps::Table, Apps::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_instances_node",
                        (Instances::Table, Instances::NodeName),
                        (Nodes::Table, Nodes::Name),
                        ForeignKeyAction::SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_instances_node")
                    .table(Instances::Table)
                    .col(Instances::NodeName)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Executions::Table)
                    .col(string_len(Executions::Id, 36).primary_key())
                    .col(string_len(Executions::Tenant, 63))
                    .col(string_len(Executions::Language, 16))
                    .col(string_len(Executions::State, 16))
                    .col(string_len_null(Executions::NodeName, 253))
                    .col(integer(Executions::TimeoutMs))
                    .col(big_integer(Executions::MemoryBytes))
                    .col(blob(Executions::Stdout))
                    .col(blob(Executions::Stderr))
                    .col(boolean(Executions::StdoutTruncated))
                    .col(boolean(Executions::StderrTruncated))
                    .col(integer_null(Executions::ExitCode))
                    .col(integer_null(Executions::Signal))
                    .col(integer(Executions::WallTimeMs))
                    .col(integer(Executions::CpuTimeMs))
                    .col(big_integer(Executions::PeakMemoryBytes))
                    .col(text(Executions::Error))
                    .col(timestamp_with_time_zone(Executions::CreatedAt))
                    .col(timestamp_with_time_zone_null(Executions::StartedAt))
                    .col(timestamp_with_time_zone_null(Executions::FinishedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(big_pk_auto(Events::Sequence))
                    .col(string_len(Events::Kind, 64))
                    .col(string_len_null(Events::AppId, 36))
                    .col(string_len_null(Events::AppHostname, 253))
                    .col(string_len_null(Events::NodeName, 253))
                    .col(string_len(Events::SubjectId, 253))
                    .col(text(Events::Message))
                    .col(timestamp_with_time_zone(Events::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_events_app")
                    .table(Events::Table)
                    .col(Events::AppId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Events::Table.into_iden(),
            Executions::Table.into_iden(),
            Instances::Table.into_iden(),
            Builds::Table.into_iden(),
            Apps::Table.into_iden(),
            Nodes::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "nodes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// `NodeState` name.
    pub state: String,
    pub drained: bool,
    pub address: String,
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    /// JSON array of `RuntimeInfo`.
    #[sea_orm(column_type = "Text")]
    pub runtimes: String,
    /// JSON object of labels.
    #[sea_orm(column_type = "Text")]
    pub labels: String,
    pub agent_version: String,
    pub registered_at: ChronoDateTimeUtc,
    pub last_heartbeat_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
    /// Why the node's container firewall is not in place, as it last said
    /// (`None` while it is, and before it first said).
    #[sea_orm(column_type = "Text", nullable)]
    pub firewall_problem: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

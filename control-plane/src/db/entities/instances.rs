use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "instances")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub app_id: String,
    pub build_id: Option<String>,
    pub node_name: Option<String>,
    /// `DesiredInstanceState` name.
    pub desired_state: String,
    /// `InstanceState` name.
    pub state: String,
    pub container_id: String,
    pub host_port: i32,
    pub restarts: i32,
    #[sea_orm(column_type = "Text")]
    pub error: String,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "apps")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub runtime: String,
    pub app_hostname: Option<String>,
    pub container_port: i32,
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub min_instances: i32,
    pub max_instances: i32,
    /// JSON object of environment variables.
    #[sea_orm(column_type = "Text")]
    pub env: String,
    #[sea_orm(column_type = "Text")]
    pub entry: String,
    /// JSON array of the command override.
    #[sea_orm(column_type = "Text")]
    pub command: String,
    /// `AppState` name.
    pub state: String,
    #[sea_orm(column_type = "Text")]
    pub status_message: String,
    pub current_build_id: Option<String>,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
    /// Stopped by its owner: no instance should run.
    pub stopped: bool,
    pub request_timeout_ms: i32,
    pub max_body_bytes: i64,
    pub idle_timeout_s: i32,
    /// Last time the gateway saw traffic for the app (scale to zero).
    pub last_request_at: Option<ChronoDateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

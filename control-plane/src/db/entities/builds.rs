use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "builds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub app_id: String,
    /// `BuildState` name.
    pub state: String,
    pub digest: String,
    pub image_tag: String,
    #[sea_orm(column_type = "Text")]
    pub logs: String,
    #[sea_orm(column_type = "Text")]
    pub error: String,
    pub created_at: ChronoDateTimeUtc,
    pub finished_at: Option<ChronoDateTimeUtc>,
    /// Node building it, while it builds.
    pub node_name: Option<String>,
    pub context_bytes: i64,
    /// The node had the image: nothing was built.
    pub cached: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

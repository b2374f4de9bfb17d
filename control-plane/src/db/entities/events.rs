use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub sequence: i64,
    pub kind: String,
    pub app_id: Option<String>,
    pub app_hostname: Option<String>,
    pub node_name: Option<String>,
    pub subject_id: String,
    #[sea_orm(column_type = "Text")]
    pub message: String,
    pub at: ChronoDateTimeUtc,
    pub tenant: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

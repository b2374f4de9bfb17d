//! Builds: the record of each image build and its output (the newest
//! part kept); made and ended with their app in [`super::apps`].

use super::{nodes::timestamp, Store};
use crate::{
    db::entities::builds,
    error::{Error, Result},
};
use berth_proto::{domain::BuildState, pb};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};

/// Newest build output kept per build.
pub const BUILD_LOG_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct BuildRecord {
    pub id: String,
    pub app_id: String,
    pub state: BuildState,
    pub digest: String,
    pub image_tag: String,
    pub logs: String,
    pub error: String,
    pub node_name: Option<String>,
    pub context_bytes: u64,
    pub cached: bool,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A build about to be recorded.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub id: String,
    pub digest: String,
    pub image_tag: String,
    pub context_bytes: u64,
}

impl TryFrom<builds::Model> for BuildRecord {
    type Error = Error;
    fn try_from(m: builds::Model) -> Result<Self> {
        Ok(Self {
            state: m
                .state
                .parse()
                .map_err(|e| Error::corrupt("build state", e))?,
            context_bytes: u64::try_from(m.context_bytes)
                .map_err(|e| Error::corrupt("context bytes", e))?,
            id: m.id,
            app_id: m.app_id,
            digest: m.digest,
            image_tag: m.image_tag,
            logs: m.logs,
            error: m.error,
            node_name: m.node_name,
            cached: m.cached,
            created_at: m.created_at,
            finished_at: m.finished_at,
        })
    }
}

impl BuildRecord {
    pub fn to_proto(&self) -> pb::Build {
        pb::Build {
            id: self.id.clone(),
            app_id: self.app_id.clone(),
            state: self.state.into(),
            image_tag: self.image_tag.clone(),
            error: self.error.clone(),
            created_at: Some(timestamp(self.created_at)),
            finished_at: self.finished_at.map(timestamp),
            cached: self.cached,
            context_bytes: self.context_bytes,
        }
    }
}

pub(super) fn build_model(
    app_id: &str,
    build: &NewBuild,
    now: DateTime<Utc>,
) -> builds::ActiveModel {
    builds::ActiveModel {
        id: Set(build.id.clone()),
        app_id: Set(app_id.to_owned()),
        state: Set(BuildState::Building.as_str().to_owned()),
        digest: Set(build.digest.clone()),
        image_tag: Set(build.image_tag.clone()),
        logs: Set(String::new()),
        error: Set(String::new()),
        created_at: Set(now),
        finished_at: Set(None),
        node_name: Set(None),
        context_bytes: Set(build.context_bytes as i64),
        cached: Set(false),
    }
}

impl Store {
    pub async fn get_build(&self, id: &str) -> Result<BuildRecord> {
        builds::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .ok_or_else(|| Error::NotFound(format!("build {id} not found")))?
            .try_into()
    }

    /// Builds not finished yet.
    pub async fn unfinished_builds(&self) -> Result<Vec<BuildRecord>> {
        builds::Entity::find()
            .filter(builds::Column::State.eq(BuildState::Building.as_str()))
            .order_by_asc(builds::Column::CreatedAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(BuildRecord::try_from)
            .collect()
    }

    /// Notes which node builds `build_id` (or none).
    pub async fn assign_build(&self, build_id: &str, node: Option<&str>) -> Result<()> {
        builds::Entity::update_many()
            .col_expr(builds::Column::NodeName, node.map(str::to_owned).into())
            .filter(builds::Column::Id.eq(build_id))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Appends output, keeping the newest [`BUILD_LOG_LIMIT`] bytes.
    pub async fn append_build_logs(&self, build_id: &str, text: &str) -> Result<()> {
        let Some(model) = builds::Entity::find_by_id(build_id).one(self.db()).await? else {
            return Ok(());
        };
        let mut logs = model.logs.clone();
        logs.push_str(text);
        let mut active = model.into_active_model();
        active.logs = Set(keep_newest(logs, BUILD_LOG_LIMIT));
        active.update(self.db()).await?;
        Ok(())
    }
}

/// The last `limit` bytes of `text`, cut at a character boundary.
pub fn keep_newest(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn build_logs_keep_the_newest_bytes() {
        assert_eq!(super::keep_newest("abcdef".into(), 3), "def");
        assert_eq!(super::keep_newest("ab".into(), 3), "ab");
        assert_eq!(super::keep_newest("aé".into(), 2), "é");
    }
}

//! Apps: created with their first build, redeployed, scaled, stopped,
//! deleted; a build's end moves its app on ([`super::builds`] holds the
//! build records).

use super::builds::{build_model, BuildRecord, NewBuild};
use super::{
    events::{self, NewEvent},
    nodes::timestamp,
    Store,
};
use crate::{
    db::entities::{apps, builds},
    error::{is_unique_violation, Error, Result},
};
use berth_proto::{
    domain::{AppSpec, AppState, BuildState, Runtime},
    pb,
};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct AppRecord {
    pub id: String,
    pub spec: AppSpec,
    pub state: AppState,
    pub status_message: String,
    pub current_build_id: Option<String>,
    pub stopped: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Last traffic the gateways reported (scale to zero).
    pub last_request_at: Option<DateTime<Utc>>,
}

impl AppRecord {
    /// How many instances the app wants now: none when stopped; its minimum,
    /// or one while a scale-to-zero app has seen traffic within its idle timeout.
    pub fn wanted_instances(&self, now: DateTime<Utc>) -> usize {
        if self.stopped {
            return 0;
        }
        let idle = chrono::Duration::seconds(i64::from(self.spec.idle_timeout_s));
        let busy = self.last_request_at.is_some_and(|at| now - at < idle);
        (self.spec.min_instances as usize).max(usize::from(busy))
    }
}

impl TryFrom<apps::Model> for AppRecord {
    type Error = Error;
    fn try_from(m: apps::Model) -> Result<Self> {
        let env: BTreeMap<String, String> =
            serde_json::from_str(&m.env).map_err(|e| Error::corrupt("app env", e))?;
        let command: Vec<String> =
            serde_json::from_str(&m.command).map_err(|e| Error::corrupt("app command", e))?;
        let runtime: Runtime = m
            .runtime
            .parse()
            .map_err(|e| Error::corrupt("app runtime", e))?;
        Ok(Self {
            spec: AppSpec {
                name: m.name,
                tenant: m.tenant,
                runtime,
                app_hostname: m.app_hostname,
                container_port: u16::try_from(m.container_port)
                    .map_err(|e| Error::corrupt("container port", e))?,
                cpu_millis: u32::try_from(m.cpu_millis).map_err(|e| Error::corrupt("cpu", e))?,
                memory_bytes: u64::try_from(m.memory_bytes)
                    .map_err(|e| Error::corrupt("memory", e))?,
                min_instances: u32::try_from(m.min_instances)
                    .map_err(|e| Error::corrupt("min instances", e))?,
                max_instances: u32::try_from(m.max_instances)
                    .map_err(|e| Error::corrupt("max instances", e))?,
                env,
                entry: m.entry,
                command,
                request_timeout_ms: u32::try_from(m.request_timeout_ms)
                    .map_err(|e| Error::corrupt("request timeout", e))?,
                max_body_bytes: u64::try_from(m.max_body_bytes)
                    .map_err(|e| Error::corrupt("max body bytes", e))?,
                idle_timeout_s: u32::try_from(m.idle_timeout_s)
                    .map_err(|e| Error::corrupt("idle timeout", e))?,
            },
            id: m.id,
            state: m
                .state
                .parse()
                .map_err(|e| Error::corrupt("app state", e))?,
            status_message: m.status_message,
            current_build_id: m.current_build_id,
            stopped: m.stopped,
            last_request_at: m.last_request_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}

impl AppRecord {
    /// The public view; instances are added by the caller.
    pub fn to_proto(&self, instances: Vec<pb::Instance>) -> pb::App {
        pb::App {
            id: self.id.clone(),
            settings: Some(self.spec.to_proto()),
            state: self.state.into(),
            current_build_id: self.current_build_id.clone().unwrap_or_default(),
            instances,
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            status_message: self.status_message.clone(),
        }
    }
}

fn app_event(
    kind: &'static str,
    app: &AppRecord,
    subject: &str,
    message: impl Into<String>,
) -> NewEvent {
    NewEvent {
        kind,
        subject_id: subject.to_owned(),
        node_name: None,
        app_id: Some(app.id.clone()),
        app_hostname: app.spec.app_hostname.clone(),
        message: message.into(),
        tenant: Some(app.spec.tenant.clone()),
    }
}

/// Records a build. When a build of the same image already succeeded, the
/// new one is ready at once (`cached`): an unchanged context is not built
/// again. Returns the build and its events.
async fn insert_build(
    txn: &impl ConnectionTrait,
    app: &AppRecord,
    build: &NewBuild,
    now: DateTime<Utc>,
) -> Result<(BuildRecord, Vec<crate::db::entities::events::Model>)> {
    let built = builds::Entity::find()
        .filter(builds::Column::ImageTag.eq(build.image_tag.clone()))
        .filter(builds::Column::State.eq(BuildState::Ready.as_str()))
        .one(txn)
        .await?;
    let mut model = build_model(&app.id, build, now);
    if built.is_some() {
        model.state = Set(BuildState::Ready.as_str().to_owned());
        model.cached = Set(true);
        model.finished_at = Set(Some(now));
    }
    let record = BuildRecord::try_from(model.insert(txn).await?)?;
    let mut published = vec![
        events::append(
            txn,
            app_event("build.started", app, &record.id, record.image_tag.clone()),
        )
        .await?,
    ];
    if record.cached {
        let message = format!("{} (image cached, nothing built)", record.image_tag);
        published.push(
            events::append(txn, app_event("build.succeeded", app, &record.id, message)).await?,
        );
        let mut active = apps::Entity::find_by_id(&app.id)
            .one(txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("app {} not found", app.id)))?
            .into_active_model();
        active.state = Set(AppState::Deploying.as_str().to_owned());
        active.update(txn).await?;
    }
    Ok((record, published))
}

fn conflict(err: sea_orm::DbErr, spec: &AppSpec) -> Error {
    if is_unique_violation(&err) {
        Error::AlreadyExists(match &spec.app_hostname {
            Some(host) => format!(
                "an app named {:?} already exists in tenant {:?}, or another app has the hostname {host:?}",
                spec.name, spec.tenant
            ),
            None => format!("an app named {:?} already exists in tenant {:?}", spec.name, spec.tenant),
        })
    } else {
        Error::Db(err)
    }
}

async fn check_tenant(conn: &impl ConnectionTrait, tenant: &str) -> Result<()> {
    use crate::db::entities::tenants;
    if tenants::Entity::find_by_id(tenant)
        .one(conn)
        .await?
        .is_none()
    {
        return Err(Error::NotFound(format!("tenant {tenant:?} not found")));
    }
    Ok(())
}

fn spec_columns(active: &mut apps::ActiveModel, spec: &AppSpec) {
    active.tenant = Set(spec.tenant.clone());
    active.name = Set(spec.name.clone());
    active.runtime = Set(spec.runtime.as_str().to_owned());
    active.app_hostname = Set(spec.app_hostname.clone());
    active.container_port = Set(i32::from(spec.container_port));
    active.cpu_millis = Set(i64::from(spec.cpu_millis));
    active.memory_bytes = Set(spec.memory_bytes as i64);
    active.min_instances = Set(spec.min_instances as i32);
    active.max_instances = Set(spec.max_instances as i32);
    active.env = Set(serde_json::to_string(&spec.env).expect("env serializes"));
    active.entry = Set(spec.entry.clone());
    active.command = Set(serde_json::to_string(&spec.command).expect("command serializes"));
    active.request_timeout_ms = Set(spec.request_timeout_ms as i32);
    active.max_body_bytes = Set(spec.max_body_bytes as i64);
    active.idle_timeout_s = Set(spec.idle_timeout_s as i32);
}

impl Store {
    /// Records a new app and its first build, both `building`.
    pub async fn create_app(
        &self,
        id: &str,
        spec: &AppSpec,
        build: &NewBuild,
    ) -> Result<(AppRecord, BuildRecord)> {
        let now = Utc::now();
        let txn = self.db().begin().await?;
        check_tenant(&txn, &spec.tenant).await?;
        let mut active = apps::ActiveModel {
            id: Set(id.to_owned()),
            state: Set(AppState::Building.as_str().to_owned()),
            status_message: Set(String::new()),
            current_build_id: Set(Some(build.id.clone())),
            created_at: Set(now),
            updated_at: Set(now),
            stopped: Set(false),
            ..Default::default()
        };
        spec_columns(&mut active, spec);
        let app = AppRecord::try_from(active.insert(&txn).await.map_err(|e| conflict(e, spec))?)?;
        let created = events::append(
            &txn,
            app_event(
                "app.created",
                &app,
                &app.id,
                format!("{} app {}", spec.runtime, spec.name),
            ),
        )
        .await?;
        let (build, mut published) = insert_build(&txn, &app, build, now).await?;
        published.insert(0, created);
        txn.commit().await?;
        self.publish(published);
        Ok((app, build))
    }

    /// Records new settings and a new build for an existing app.
    pub async fn redeploy_app(
        &self,
        id: &str,
        spec: &AppSpec,
        build: &NewBuild,
    ) -> Result<(AppRecord, BuildRecord)> {
        let now = Utc::now();
        let txn = self.db().begin().await?;
        let model = apps::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("app {id} not found")))?;
        if model.tenant != spec.tenant
            || model.name != spec.name
            || model.runtime != spec.runtime.as_str()
        {
            return Err(Error::FailedPrecondition(
                "an app's name, tenant and runtime stay as created; create a new app to change them".into(),
            ));
        }
        let mut active = model.into_active_model();
        spec_columns(&mut active, spec);
        active.state = Set(AppState::Building.as_str().to_owned());
        active.status_message = Set(String::new());
        active.current_build_id = Set(Some(build.id.clone()));
        active.updated_at = Set(now);
        let app = AppRecord::try_from(active.update(&txn).await.map_err(|e| conflict(e, spec))?)?;
        let (build, published) = insert_build(&txn, &app, build, now).await?;
        txn.commit().await?;
        self.publish(published);
        Ok((app, build))
    }

    pub async fn get_app(&self, id: &str) -> Result<AppRecord> {
        apps::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .ok_or_else(|| Error::NotFound(format!("app {id} not found")))?
            .try_into()
    }

    /// All apps, or a tenant's, oldest first.
    pub async fn list_apps(&self, tenant: Option<&str>) -> Result<Vec<AppRecord>> {
        let mut query = apps::Entity::find()
            .order_by_asc(apps::Column::CreatedAt)
            .order_by_asc(apps::Column::Id);
        if let Some(tenant) = tenant {
            query = query.filter(apps::Column::Tenant.eq(tenant));
        }
        query
            .all(self.db())
            .await?
            .into_iter()
            .map(AppRecord::try_from)
            .collect()
    }

    /// Marks an app stopped (no instance should run) or started again.
    /// Sets how many instances the app keeps (its `min_instances`), removing
    /// `remove` (instances of this app) at once.
    pub async fn scale_app(
        &self,
        id: &str,
        instances: u32,
        remove: &[String],
    ) -> Result<AppRecord> {
        use crate::db::entities::instances as instance_entity;
        let txn = self.db().begin().await?;
        let model = apps::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("app {id} not found")))?;
        let max = u32::try_from(model.max_instances).unwrap_or(0);
        if instances > max {
            return Err(Error::InvalidArgument(berth_proto::FieldError::new(
                "instances",
                format!("{instances} is more than max_instances ({max})"),
            )));
        }
        for instance_id in remove {
            let found = instance_entity::Entity::find_by_id(instance_id.as_str())
                .one(&txn)
                .await?
                .filter(|i| i.app_id == id)
                .ok_or_else(|| {
                    Error::NotFound(format!("instance {instance_id} of app {id} not found"))
                })?;
            instance_entity::Entity::delete_by_id(found.id)
                .exec(&txn)
                .await?;
        }
        let before = model.min_instances;
        let mut active = model.into_active_model();
        active.min_instances = Set(instances as i32);
        active.updated_at = Set(Utc::now());
        let app = AppRecord::try_from(active.update(&txn).await?)?;
        let event = events::append(
            &txn,
            app_event(
                "app.scaled",
                &app,
                &app.id,
                format!("{before} → {instances} instances"),
            ),
        )
        .await?;
        txn.commit().await?;
        self.publish([event]);
        Ok(app)
    }

    pub async fn set_app_stopped(&self, id: &str, stopped: bool) -> Result<AppRecord> {
        let txn = self.db().begin().await?;
        let model = apps::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("app {id} not found")))?;
        let changed = model.stopped != stopped;
        let mut active = model.into_active_model();
        active.stopped = Set(stopped);
        if stopped {
            active.state = Set(AppState::Stopped.as_str().to_owned());
            active.status_message = Set(String::new());
        }
        active.updated_at = Set(Utc::now());
        let app = AppRecord::try_from(active.update(&txn).await?)?;
        let mut published = Vec::new();
        if changed {
            let kind = if stopped {
                "app.stopped"
            } else {
                "app.started"
            };
            published
                .push(events::append(&txn, app_event(kind, &app, &app.id, "by request")).await?);
        }
        txn.commit().await?;
        self.publish(published);
        Ok(app)
    }

    /// Deletes an app with its builds and instances.
    pub async fn delete_app(&self, id: &str) -> Result<AppRecord> {
        let txn = self.db().begin().await?;
        let app: AppRecord = apps::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("app {id} not found")))?
            .try_into()?;
        apps::Entity::delete_by_id(id).exec(&txn).await?;
        let event = events::append(
            &txn,
            app_event("app.deleted", &app, &app.id, app.spec.name.clone()),
        )
        .await?;
        txn.commit().await?;
        self.publish([event]);
        Ok(app)
    }

    /// Sets the derived state and the reason shown with it; no event when unchanged.
    pub async fn set_app_status(&self, id: &str, state: AppState, message: &str) -> Result<()> {
        let Some(model) = apps::Entity::find_by_id(id).one(self.db()).await? else {
            return Ok(());
        };
        if model.state == state.as_str() && model.status_message == message {
            return Ok(());
        }
        let txn = self.db().begin().await?;
        let previous = model.state.clone();
        let mut active = model.into_active_model();
        active.state = Set(state.as_str().to_owned());
        active.status_message = Set(message.to_owned());
        active.updated_at = Set(Utc::now());
        let app = AppRecord::try_from(active.update(&txn).await?)?;
        let mut published = Vec::new();
        if previous != state.as_str() {
            let kind = match state {
                AppState::Running => "app.running",
                AppState::Failed => "app.failed",
                _ => "app.state",
            };
            let message = if message.is_empty() {
                state.to_string()
            } else {
                format!("{state}: {message}")
            };
            published.push(events::append(&txn, app_event(kind, &app, &app.id, message)).await?);
        }
        txn.commit().await?;
        self.publish(published);
        Ok(())
    }

    /// Records a build's end; moves its app on when it is the current build.
    pub async fn finish_build(
        &self,
        build_id: &str,
        state: BuildState,
        error: &str,
        cached: bool,
    ) -> Result<Option<BuildRecord>> {
        let txn = self.db().begin().await?;
        let Some(model) = builds::Entity::find_by_id(build_id).one(&txn).await? else {
            return Ok(None);
        };
        if model.state != BuildState::Building.as_str() {
            return Ok(Some(model.try_into()?));
        }
        let mut active = model.into_active_model();
        active.state = Set(state.as_str().to_owned());
        active.error = Set(error.chars().take(4096).collect());
        active.cached = Set(cached);
        active.finished_at = Set(Some(Utc::now()));
        active.node_name = Set(None);
        let build = BuildRecord::try_from(active.update(&txn).await?)?;
        let app: AppRecord = apps::Entity::find_by_id(&build.app_id)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("app {} not found", build.app_id)))?
            .try_into()?;
        let (kind, message) = match state {
            BuildState::Ready if cached => (
                "build.succeeded",
                format!("{} (image cached, nothing built)", build.image_tag),
            ),
            BuildState::Ready => ("build.succeeded", build.image_tag.clone()),
            _ => ("build.failed", error.chars().take(512).collect()),
        };
        let event = events::append(&txn, app_event(kind, &app, &build.id, message)).await?;
        if app.current_build_id.as_deref() == Some(build_id) && state == BuildState::BuildFailed {
            let mut active = apps::Entity::find_by_id(&app.id)
                .one(&txn)
                .await?
                .expect("read above")
                .into_active_model();
            active.state = Set(AppState::BuildFailed.as_str().to_owned());
            active.status_message = Set(error.chars().take(512).collect());
            active.update(&txn).await?;
        }
        txn.commit().await?;
        self.publish([event]);
        Ok(Some(build))
    }
}

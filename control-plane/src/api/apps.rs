//! `berth.v1.AppService`: deployments — every tenant's for admins, a
//! tenant's own for its deployers ([`Scope`]).

use super::upload::{self, Upload};
use crate::{
    builds::{context, BuildContext, BuildLogs, ContextStore},
    config::Config,
    error::Error,
    requests::{Pending, Requests},
    scheduler::Scheduler,
    scope::Scope,
    sessions::Sessions,
    store::{apps::AppRecord, builds::NewBuild, Store},
};
use berth_proto::{
    domain::{check_source_files, AppSpec, NodeName, Runtime},
    pb::{self, app_service_server::AppService},
};
use futures::Stream;
use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub struct AppApi {
    pub store: Store,
    pub sessions: Sessions,
    pub requests: Requests,
    pub scheduler: Arc<Scheduler>,
    pub contexts: ContextStore,
    pub logs: BuildLogs,
    pub config: Arc<Config>,
}

pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(super) fn uuid_arg(field: &str, value: &str) -> Result<String, Status> {
    uuid::Uuid::parse_str(value)
        .map(|id| id.to_string())
        .map_err(|_| Status::invalid_argument(format!("{field}: {value:?} is not an id (a UUID)")))
}

impl AppApi {
    fn staging(&self) -> Result<tempfile::TempDir, Status> {
        let dir = self.config.data_dir.join("staging");
        std::fs::create_dir_all(&dir)
            .and_then(|_| tempfile::tempdir_in(&dir))
            .map_err(|e| Error::Corrupt(format!("staging dir: {e}")).into())
    }

    /// Reads an upload into a fresh staging dir (removed when dropped).
    async fn receive<T: upload::UploadMessage>(
        &self,
        request: Request<Streaming<T>>,
    ) -> Result<(tempfile::TempDir, Upload<T::Header>), Status> {
        let mut stream = request.into_inner();
        let staging = self.staging()?;
        let archive = staging.path().join("archive");
        let upload = upload::read(&mut stream, &archive, self.config.max_archive_bytes).await?;
        Ok((staging, upload))
    }

    fn archive_limits(&self) -> berth_archive::Limits {
        berth_archive::Limits {
            max_unpacked_bytes: self.config.max_unpacked_bytes,
            ..Default::default()
        }
    }

    /// The build context of an upload: generated for runtime apps, the
    /// checked archive for Dockerfile apps.
    async fn context_for(
        &self,
        spec: &AppSpec,
        files: &[pb::SourceFile],
        upload_bytes: u64,
        staging: &tempfile::TempDir,
    ) -> Result<BuildContext, Status> {
        match spec.runtime {
            Runtime::Dockerfile => {
                if !files.is_empty() {
                    return Err(Status::invalid_argument(
                        "files: a dockerfile app is uploaded as an archive, not files",
                    ));
                }
                if upload_bytes == 0 {
                    return Err(Status::invalid_argument(
                        "archive_chunk: a dockerfile app needs its archive (zip or tar.gz)",
                    ));
                }
                upload::dockerfile_context(
                    staging.path().join("archive"),
                    staging.path().to_owned(),
                    self.archive_limits(),
                    spec.tenant.clone(),
                )
                .await
            }
            runtime => {
                if upload_bytes > 0 {
                    return Err(Status::invalid_argument(
                        "archive_chunk: only dockerfile apps take an archive; send files",
                    ));
                }
                check_source_files(files, &spec.entry)?;
                let base = self
                    .config
                    .runtime_images
                    .get(runtime.as_str())
                    .ok_or_else(|| {
                        Status::failed_precondition(format!(
                            "no base image is configured for {runtime}"
                        ))
                    })?;
                context::for_runtime(spec, files, base)
                    .map_err(|e| Status::invalid_argument(e.to_string()))
            }
        }
    }

    async fn save_context(
        &self,
        build_id: &str,
        context: &BuildContext,
        spec: &AppSpec,
    ) -> Result<NewBuild, Status> {
        self.contexts
            .write(build_id, &context.tar)
            .await
            .map_err(|e| Error::Corrupt(format!("storing the build context: {e}")))?;
        Ok(NewBuild {
            id: build_id.to_owned(),
            digest: context.digest.clone(),
            image_tag: context.image_tag(spec),
            context_bytes: context.tar.len() as u64,
        })
    }

    /// Asks each node that runs `app_id` (or only `instance_id`) about its instances there.
    async fn ask_nodes(
        &self,
        app_id: &str,
        instance_id: &str,
        kind: impl Fn(Vec<String>) -> pb::agent_request::Kind,
    ) -> Result<Vec<Pending>, Status> {
        self.store.get_app(app_id).await?;
        let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
        for instance in self.store.app_instances(app_id).await? {
            if !instance_id.is_empty() && instance.id != instance_id {
                continue;
            }
            if let Some(node) = instance.node_name {
                by_node.entry(node).or_default().push(instance.id);
            }
        }
        if !instance_id.is_empty() && by_node.is_empty() {
            return Err(Status::not_found(format!(
                "instance {instance_id} of app {app_id} is not placed on any node"
            )));
        }
        let mut pendings = Vec::new();
        for (node, instance_ids) in by_node {
            let node = NodeName::parse("node", &node).map_err(|e| Error::Corrupt(e.to_string()))?;
            match self
                .requests
                .ask(&self.sessions, &node, kind(instance_ids))
                .await
            {
                Some(pending) => pendings.push(pending),
                None => return Err(Status::unavailable(format!("node {node} is not connected"))),
            }
        }
        Ok(pendings)
    }

    /// App `id`, when the caller's scope sees it.
    async fn visible_app(&self, scope: &Scope, id: &str) -> Result<AppRecord, Status> {
        let app = self.store.get_app(id).await?;
        scope.check(&app.spec.tenant, &format!("app {id}"))?;
        Ok(app)
    }

    /// The scope of `request` and the app it names, when the scope sees it.
    async fn scoped_app<T>(
        &self,
        request: &Request<T>,
        id: &str,
    ) -> Result<(Scope, AppRecord), Status> {
        let scope = Scope::of(request, &self.store).await?;
        let id = uuid_arg("app_id", id)?;
        let app = self.visible_app(&scope, &id).await?;
        Ok((scope, app))
    }

    async fn app_view(&self, app: &AppRecord) -> Result<pb::App, Status> {
        let nodes: HashMap<String, String> = self
            .store
            .list_nodes(None)
            .await?
            .into_iter()
            .map(|n| (n.name.to_string(), n.address))
            .collect();
        let instances = self.store.app_instances(&app.id).await?;
        let views = instances
            .iter()
            .map(|i| {
                i.to_proto(
                    i.node_name
                        .as_ref()
                        .and_then(|n| nodes.get(n))
                        .map_or("", String::as_str),
                )
            })
            .collect();
        Ok(app.to_proto(views))
    }
}

#[tonic::async_trait]
impl AppService for AppApi {
    async fn create_app(
        &self,
        request: Request<Streaming<pb::CreateAppRequest>>,
    ) -> Result<Response<pb::App>, Status> {
        let scope = Scope::of(&request, &self.store).await?;
        let (
            staging,
            Upload {
                header,
                archive_bytes,
            },
        ) = self.receive(request).await?;
        let mut settings = header
            .settings
            .ok_or_else(|| Status::invalid_argument("settings: required"))?;
        settings.tenant = scope.tenant_for_new(&settings.tenant)?;
        if let Scope::Tenant(own) = &scope {
            self.store.ensure_tenant(own).await?;
        }
        let spec = AppSpec::from_proto(&settings)?;
        let context = self
            .context_for(&spec, &header.files, archive_bytes, &staging)
            .await?;
        let (app_id, build_id) = (
            uuid::Uuid::new_v4().to_string(),
            uuid::Uuid::new_v4().to_string(),
        );
        let build = self.save_context(&build_id, &context, &spec).await?;
        let (app, _) = match self.store.create_app(&app_id, &spec, &build).await {
            Ok(created) => created,
            Err(err) => {
                self.contexts.remove(&build_id).await;
                return Err(err.into());
            }
        };
        tracing::info!(app = %app.id, name = %spec.name, runtime = %spec.runtime, image = %build.image_tag, "app created");
        self.scheduler.kick();
        Ok(Response::new(self.app_view(&app).await?))
    }

    async fn update_app(
        &self,
        request: Request<Streaming<pb::UpdateAppRequest>>,
    ) -> Result<Response<pb::App>, Status> {
        let scope = Scope::of(&request, &self.store).await?;
        let (
            staging,
            Upload {
                header,
                archive_bytes,
            },
        ) = self.receive(request).await?;
        let app_id = uuid_arg("app_id", &header.app_id)?;
        let current = self.visible_app(&scope, &app_id).await?;
        let spec = match header.settings {
            Some(mut settings) => {
                if settings.tenant.is_empty() {
                    settings.tenant = current.spec.tenant.clone();
                }
                settings.tenant = scope.tenant_for_new(&settings.tenant)?;
                AppSpec::from_proto(&settings)?
            }
            None => current.spec.clone(),
        };
        let build_id = uuid::Uuid::new_v4().to_string();
        let build = if header.reuse_code {
            if !header.files.is_empty() || archive_bytes > 0 {
                return Err(Status::invalid_argument(
                    "reuse_code: send no files or archive with it",
                ));
            }
            let previous_id = current
                .current_build_id
                .clone()
                .ok_or_else(|| Status::failed_precondition("the app has no build to reuse"))?;
            let previous = self.store.get_build(&previous_id).await?;
            let bytes = self
                .contexts
                .copy(&previous_id, &build_id)
                .await
                .map_err(|e| Error::Corrupt(format!("copying the build context: {e}")))?;
            NewBuild {
                id: build_id.clone(),
                digest: previous.digest,
                image_tag: previous.image_tag,
                context_bytes: bytes,
            }
        } else {
            let context = self
                .context_for(&spec, &header.files, archive_bytes, &staging)
                .await?;
            self.save_context(&build_id, &context, &spec).await?
        };
        let (app, _) = match self.store.redeploy_app(&app_id, &spec, &build).await {
            Ok(done) => done,
            Err(err) => {
                self.contexts.remove(&build_id).await;
                return Err(err.into());
            }
        };
        tracing::info!(app = %app.id, image = %build.image_tag, "app redeployed");
        self.scheduler.kick();
        Ok(Response::new(self.app_view(&app).await?))
    }

    async fn start_app(&self, request: Request<pb::AppRef>) -> Result<Response<pb::App>, Status> {
        let (_, app) = self.scoped_app(&request, &request.get_ref().app_id).await?;
        let app = self.store.set_app_stopped(&app.id, false).await?;
        self.scheduler.kick();
        Ok(Response::new(self.app_view(&app).await?))
    }

    async fn stop_app(&self, request: Request<pb::AppRef>) -> Result<Response<pb::App>, Status> {
        let (_, app) = self.scoped_app(&request, &request.get_ref().app_id).await?;
        let app = self.store.set_app_stopped(&app.id, true).await?;
        self.scheduler.kick();
        Ok(Response::new(self.app_view(&app).await?))
    }

    async fn scale_app(
        &self,
        request: Request<pb::ScaleAppRequest>,
    ) -> Result<Response<pb::App>, Status> {
        let (_, app) = self.scoped_app(&request, &request.get_ref().app_id).await?;
        let (r, id) = (request.get_ref(), app.id);
        if r.remove_instance_ids.len() > berth_proto::domain::MAX_INSTANCES as usize {
            return Err(Status::invalid_argument("remove_instance_ids: too many"));
        }
        let app = self
            .store
            .scale_app(&id, r.instances, &r.remove_instance_ids)
            .await?;
        tracing::info!(app = %app.id, instances = r.instances, "app scaled");
        self.scheduler.kick();
        Ok(Response::new(self.app_view(&app).await?))
    }

    async fn delete_app(
        &self,
        request: Request<pb::AppRef>,
    ) -> Result<Response<pb::DeleteAppResponse>, Status> {
        let (_, app) = self.scoped_app(&request, &request.get_ref().app_id).await?;
        let app = self.store.delete_app(&app.id).await?;
        tracing::info!(app = %app.id, name = %app.spec.name, "app deleted");
        self.scheduler.kick();
        Ok(Response::new(pb::DeleteAppResponse {}))
    }

    async fn get_app(&self, request: Request<pb::AppRef>) -> Result<Response<pb::App>, Status> {
        let (_, app) = self.scoped_app(&request, &request.get_ref().app_id).await?;
        Ok(Response::new(self.app_view(&app).await?))
    }

    async fn stream_app_logs(
        &self,
        request: Request<pb::StreamAppLogsRequest>,
    ) -> Result<Response<BoxStream<pb::LogLine>>, Status> {
        let (_, app) = self.scoped_app(&request, &request.get_ref().app_id).await?;
        let (request, id) = (request.into_inner(), app.id);
        let tail = if request.tail == 0 {
            100
        } else {
            request.tail.min(10_000)
        };
        let pendings = self
            .ask_nodes(&id, &request.instance_id, |instance_ids| {
                pb::agent_request::Kind::Logs(pb::LogsRequest {
                    instance_ids,
                    tail,
                    follow: request.follow,
                })
            })
            .await?;
        let (tx, rx) = mpsc::channel(256);
        for mut pending in pendings {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        reply = pending.replies.recv() => match reply.and_then(|r| r.kind) {
                            Some(pb::agent_reply::Kind::Log(line)) => {
                                if tx.send(Ok(line)).await.is_err() {
                                    return;
                                }
                            }
                            Some(pb::agent_reply::Kind::Error(error)) => {
                                let _ = tx.send(Err(Status::unavailable(format!("node {}: {error}", pending.node)))).await;
                                return;
                            }
                            Some(pb::agent_reply::Kind::Done(_)) | None => return,
                            Some(_) => {}
                        },
                    }
                }
            });
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_app_stats(
        &self,
        request: Request<pb::AppRef>,
    ) -> Result<Response<pb::AppStats>, Status> {
        let (_, app) = self.scoped_app(&request, &request.get_ref().app_id).await?;
        let id = app.id;
        let pendings = self
            .ask_nodes(&id, "", |instance_ids| {
                pb::agent_request::Kind::Stats(pb::StatsRequest { instance_ids })
            })
            .await?;
        let mut instances = Vec::new();
        for mut pending in pendings {
            let node = pending.node.clone();
            let collected =
                tokio::time::timeout(Duration::from_secs(15), collect(&mut pending.replies)).await;
            for reply in collected.map_err(|_| {
                Status::deadline_exceeded(format!("node {node} did not answer within 15 s"))
            })? {
                match reply {
                    pb::agent_reply::Kind::Stats(stats) => instances.push(stats),
                    pb::agent_reply::Kind::Error(error) => {
                        return Err(Status::unavailable(format!("node {node}: {error}")))
                    }
                    _ => {}
                }
            }
        }
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(Response::new(pb::AppStats { instances }))
    }

    async fn cleanup(
        &self,
        request: Request<pb::CleanupRequest>,
    ) -> Result<Response<pb::CleanupResponse>, Status> {
        Scope::of(&request, &self.store).await?.require_cluster()?;
        let mut response = pb::CleanupResponse::default();
        let mut keep_images = Vec::new();
        for app in self.store.list_apps(None).await? {
            if let Some(build_id) = &app.current_build_id {
                if let Ok(build) = self.store.get_build(build_id).await {
                    keep_images.push(build.image_tag);
                }
            }
        }
        for node in self.store.list_nodes(None).await? {
            let kind = pb::agent_request::Kind::Cleanup(pb::CleanupRequest {
                keep_images: keep_images.clone(),
            });
            let Some(mut pending) = self.requests.ask(&self.sessions, &node.name, kind).await
            else {
                continue;
            };
            let collected =
                tokio::time::timeout(Duration::from_secs(120), collect(&mut pending.replies)).await;
            let replies = collected.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "node {} did not finish cleaning within 120 s",
                    node.name
                ))
            })?;
            for reply in replies {
                match reply {
                    pb::agent_reply::Kind::Cleanup(done) => {
                        response.removed_containers.extend(done.removed_containers);
                        response.removed_images.extend(done.removed_images);
                        response.removed_code.extend(done.removed_code);
                    }
                    pb::agent_reply::Kind::Error(error) => {
                        return Err(Status::unavailable(format!("node {}: {error}", node.name)))
                    }
                    _ => {}
                }
            }
        }
        tracing::info!(
            containers = response.removed_containers.len(),
            images = response.removed_images.len(),
            "cleanup done"
        );
        Ok(Response::new(response))
    }

    async fn list_apps(
        &self,
        request: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        let scope = Scope::of(&request, &self.store).await?;
        let tenant = scope.tenant_filter(&request.get_ref().tenant)?;
        let mut apps = Vec::new();
        for app in self.store.list_apps(tenant.as_deref()).await? {
            apps.push(self.app_view(&app).await?);
        }
        Ok(Response::new(pb::ListAppsResponse { apps }))
    }
}

/// Replies to one request until the node says it is done.
async fn collect(replies: &mut mpsc::Receiver<pb::AgentReply>) -> Vec<pb::agent_reply::Kind> {
    let mut out = Vec::new();
    while let Some(reply) = replies.recv().await {
        match reply.kind {
            Some(pb::agent_reply::Kind::Done(_)) | None => break,
            Some(kind) => out.push(kind),
        }
    }
    out
}

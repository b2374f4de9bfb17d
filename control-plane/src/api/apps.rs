//! `berth.v1.AppService` and `berth.v1.BuildService`: deployments.

use super::upload::{self, Upload};
use crate::{
    builds::{context, BuildContext, BuildLogs, ContextStore},
    config::Config,
    error::Error,
    scheduler::Scheduler,
    store::{
        apps::{AppRecord, NewBuild},
        Store,
    },
};
use berth_proto::{
    domain::{check_source_files, AppSpec, BuildState, Runtime},
    pb::{self, app_service_server::AppService, build_service_server::BuildService},
};
use futures::Stream;
use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub struct AppApi {
    pub store: Store,
    pub scheduler: Arc<Scheduler>,
    pub contexts: ContextStore,
    pub logs: BuildLogs,
    pub config: Arc<Config>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn uuid_arg(field: &str, value: &str) -> Result<String, Status> {
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
        let mut stream = request.into_inner();
        let staging = self.staging()?;
        let Upload {
            header,
            archive_bytes,
        } = upload::read(
            &mut stream,
            &staging.path().join("archive"),
            self.config.max_archive_bytes,
        )
        .await?;
        let settings = header
            .settings
            .ok_or_else(|| Status::invalid_argument("settings: required"))?;
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
        let mut stream = request.into_inner();
        let staging = self.staging()?;
        let Upload {
            header,
            archive_bytes,
        } = upload::read(
            &mut stream,
            &staging.path().join("archive"),
            self.config.max_archive_bytes,
        )
        .await?;
        let app_id = uuid_arg("app_id", &header.app_id)?;
        let current = self.store.get_app(&app_id).await?;
        let spec = match &header.settings {
            Some(settings) => AppSpec::from_proto(settings)?,
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
        let id = uuid_arg("app_id", &request.get_ref().app_id)?;
        let app = self.store.set_app_stopped(&id, false).await?;
        self.scheduler.kick();
        Ok(Response::new(self.app_view(&app).await?))
    }

    async fn stop_app(&self, request: Request<pb::AppRef>) -> Result<Response<pb::App>, Status> {
        let id = uuid_arg("app_id", &request.get_ref().app_id)?;
        let app = self.store.set_app_stopped(&id, true).await?;
        self.scheduler.kick();
        Ok(Response::new(self.app_view(&app).await?))
    }

    async fn delete_app(
        &self,
        request: Request<pb::AppRef>,
    ) -> Result<Response<pb::DeleteAppResponse>, Status> {
        let id = uuid_arg("app_id", &request.get_ref().app_id)?;
        let app = self.store.delete_app(&id).await?;
        tracing::info!(app = %app.id, name = %app.spec.name, "app deleted");
        self.scheduler.kick();
        Ok(Response::new(pb::DeleteAppResponse {}))
    }

    async fn get_app(&self, request: Request<pb::AppRef>) -> Result<Response<pb::App>, Status> {
        let id = uuid_arg("app_id", &request.get_ref().app_id)?;
        let app = self.store.get_app(&id).await?;
        Ok(Response::new(self.app_view(&app).await?))
    }

    async fn list_apps(
        &self,
        request: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        let tenant = Some(request.get_ref().tenant.as_str()).filter(|t| !t.is_empty());
        let mut apps = Vec::new();
        for app in self.store.list_apps(tenant).await? {
            apps.push(self.app_view(&app).await?);
        }
        Ok(Response::new(pb::ListAppsResponse { apps }))
    }
}

pub struct BuildApi {
    pub store: Store,
    pub logs: BuildLogs,
}

#[tonic::async_trait]
impl BuildService for BuildApi {
    async fn get_build(
        &self,
        request: Request<pb::GetBuildRequest>,
    ) -> Result<Response<pb::Build>, Status> {
        let id = uuid_arg("build_id", &request.get_ref().build_id)?;
        Ok(Response::new(self.store.get_build(&id).await?.to_proto()))
    }

    async fn stream_build_logs(
        &self,
        request: Request<pb::StreamBuildLogsRequest>,
    ) -> Result<Response<BoxStream<pb::BuildLogChunk>>, Status> {
        let request = request.into_inner();
        let id = uuid_arg("build_id", &request.build_id)?;
        // Follow first, then read what is stored, so nothing falls in between.
        let mut live = request.follow.then(|| self.logs.follow(&id));
        let build = self.store.get_build(&id).await?;
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut sent = build.logs.len();
            if !build.logs.is_empty()
                && tx
                    .send(Ok(pb::BuildLogChunk {
                        data: build.logs.into_bytes(),
                    }))
                    .await
                    .is_err()
            {
                return;
            }
            if build.state.is_final() {
                return;
            }
            let Some(live) = live.as_mut() else { return };
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    received = live.recv() => match received {
                        Ok(text) => {
                            sent += text.len();
                            if tx.send(Ok(pb::BuildLogChunk { data: text.as_bytes().to_vec() })).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    // The build may end without a word more: look now and then.
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {
                        match store.get_build(&id).await {
                            Ok(build) if build.state != BuildState::Building => {
                                // Whatever came after the last chunk we sent.
                                if build.logs.len() > sent {
                                    let tail = build.logs.as_bytes()[sent.min(build.logs.len())..].to_vec();
                                    let _ = tx.send(Ok(pb::BuildLogChunk { data: tail })).await;
                                }
                                return;
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

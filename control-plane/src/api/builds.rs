//! `berth.v1.BuildService`: builds and their output, for whoever sees the
//! build's app ([`Scope`]).

use super::apps::{uuid_arg, BoxStream};
use crate::{
    builds::BuildLogs,
    scope::Scope,
    store::{builds::BuildRecord, Store},
};
use berth_proto::{
    domain::BuildState,
    pb::{self, build_service_server::BuildService},
};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

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
        let build = self
            .visible_build(&request, &request.get_ref().build_id)
            .await?;
        Ok(Response::new(build.to_proto()))
    }

    async fn stream_build_logs(
        &self,
        request: Request<pb::StreamBuildLogsRequest>,
    ) -> Result<Response<BoxStream<pb::BuildLogChunk>>, Status> {
        let id = self
            .visible_build(&request, &request.get_ref().build_id)
            .await?
            .id;
        let request = request.into_inner();
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

impl BuildApi {
    /// Build `id`, when the caller's scope sees its app (a build of a
    /// deleted app is the cluster's only).
    async fn visible_build<T>(
        &self,
        request: &Request<T>,
        id: &str,
    ) -> Result<BuildRecord, Status> {
        let scope = Scope::of(request, &self.store).await?;
        let id = uuid_arg("build_id", id)?;
        let build = self.store.get_build(&id).await?;
        if scope.tenant().is_some() {
            let owner = match self.store.get_app(&build.app_id).await {
                Ok(app) => app.spec.tenant,
                Err(crate::error::Error::NotFound(_)) => String::new(),
                Err(other) => return Err(other.into()),
            };
            scope.check(&owner, &format!("build {id}"))?;
        }
        Ok(build)
    }
}

//! Helpers for tests that deploy apps on the real Docker engine.

use super::*;
use berth_proto::pb::{self, app_service_client::AppServiceClient};
use std::time::Duration;
use tonic::transport::Channel;

/// Builds install packages from PyPI: give them time.
pub const BUILD_WAIT: Duration = Duration::from_secs(300);

pub async fn base_image() {
    let docker = berth_node_agent::docker::connect()
        .await
        .expect("the Docker engine is reachable");
    use berth_node_agent::docker::base_images;
    base_images::ensure(&docker, &base_images::PYTHON, &Default::default())
        .await
        .expect("the python base image");
}

pub fn python_app(name: &str, code: &str, requirements: Option<&str>) -> pb::CreateAppRequest {
    let mut files = vec![pb::SourceFile {
        path: "main.py".into(),
        content: code.as_bytes().to_vec(),
    }];
    if let Some(requirements) = requirements {
        files.push(pb::SourceFile {
            path: "requirements.txt".into(),
            content: requirements.as_bytes().to_vec(),
        });
    }
    pb::CreateAppRequest {
        part: Some(pb::create_app_request::Part::Header(pb::CreateAppHeader {
            settings: Some(pb::AppSettings {
                name: name.into(),
                runtime: pb::Runtime::Python as i32,
                memory_bytes: 128 << 20,
                cpu_millis: 500,
                env: [("GREETING".to_owned(), "hello".to_owned())].into(),
                ..Default::default()
            }),
            files,
        })),
    }
}

/// Waits until the app is running with `count` running instances; a failed
/// build or app ends the wait with its message.
pub async fn wait_running(apps: &mut AppServiceClient<Channel>, id: &str, count: usize) -> pb::App {
    wait_within(
        BUILD_WAIT,
        &format!("app {id} running with {count} instance(s)"),
        || {
            let mut apps = apps.clone();
            let id = id.to_owned();
            async move {
                let app = apps
                    .get_app(pb::AppRef { app_id: id })
                    .await
                    .ok()?
                    .into_inner();
                if app.state == pb::AppState::BuildFailed as i32
                    || app.state == pb::AppState::Failed as i32
                {
                    panic!("app {} failed: {}", app.id, app.status_message);
                }
                let running = app
                    .instances
                    .iter()
                    .filter(|i| i.state == pb::InstanceState::Running as i32)
                    .count();
                (app.state == pb::AppState::Running as i32
                    && running == count
                    && app.instances.len() == count)
                    .then_some(app)
            }
        },
    )
    .await
}

/// A cluster with one agent and an admin channel, ready for apps.
pub async fn cluster_with_node(
    node: &str,
) -> (Cluster, ControlPlane, berth_node_agent::Agent, Channel) {
    berth_common::telemetry::init();
    base_image().await;
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let agent = cluster.agent(&cp, node);
    let mut admin = cluster.admin(&cp).await;
    wait_node_state(&mut admin, node, pb::NodeState::Ready).await;
    let channel = cluster.client(&cp, "admin").await;
    (cluster, cp, agent, channel)
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A tar.gz of `(path, text)` files.
pub fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for (path, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, body.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Containers of `app_id` on the local engine, running or not.
pub async fn app_containers(docker: &bollard::Docker, app_id: &str) -> Vec<String> {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("berth.app={app_id}")],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Deletes an app and waits until its containers are gone.
pub async fn delete_and_wait(apps: &mut AppServiceClient<Channel>, app_id: &str) {
    apps.delete_app(pb::AppRef {
        app_id: app_id.to_owned(),
    })
    .await
    .unwrap();
    let docker = berth_node_agent::docker::connect().await.unwrap();
    wait_containers_gone(&docker, app_id).await;
}

/// Waits until no container of `app_id` is left on the local engine.
pub async fn wait_containers_gone(docker: &bollard::Docker, app_id: &str) {
    wait_for(&format!("the containers of app {app_id} to go"), || {
        let docker = docker.clone();
        let app_id = app_id.to_owned();
        async move {
            app_containers(&docker, &app_id)
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
}

/// A Dockerfile app: its settings, then its archive in small chunks.
pub fn dockerfile_app(name: &str, archive: Vec<u8>) -> Vec<pb::CreateAppRequest> {
    let mut messages = vec![pb::CreateAppRequest {
        part: Some(pb::create_app_request::Part::Header(pb::CreateAppHeader {
            settings: Some(pb::AppSettings {
                name: name.into(),
                runtime: pb::Runtime::Dockerfile as i32,
                memory_bytes: 128 << 20,
                ..Default::default()
            }),
            files: Vec::new(),
        })),
    }];
    // Small chunks, as a client streaming a big archive would send.
    for chunk in archive.chunks(100) {
        messages.push(pb::CreateAppRequest {
            part: Some(pb::create_app_request::Part::ArchiveChunk(chunk.to_vec())),
        });
    }
    messages
}

/// Waits until a ready node offers python executions.
pub async fn wait_python(channel: &Channel) {
    let executions =
        berth_proto::pb::execution_service_client::ExecutionServiceClient::new(channel.clone());
    wait_for("the node to offer python", || {
        let mut executions = executions.clone();
        async move {
            let info = executions
                .get_execution_info(pb::GetExecutionInfoRequest {})
                .await
                .ok()?
                .into_inner();
            info.languages
                .iter()
                .any(|l| l.language == pb::Language::Python as i32)
                .then_some(())
        }
    })
    .await;
}

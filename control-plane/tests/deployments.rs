//! Deployments end to end against the real Docker engine: a control plane,
//! an agent, apps built and run, redeployed, stopped, started, deleted.

mod support;

use berth_proto::pb::{
    self, app_service_client::AppServiceClient, build_service_client::BuildServiceClient,
};
use std::time::Duration;

/// Builds install packages from PyPI: give them time.
const BUILD_WAIT: Duration = Duration::from_secs(300);
use support::*;
use tonic::transport::Channel;

async fn base_image() {
    let docker = berth_node_agent::docker::connect()
        .await
        .expect("the Docker engine is reachable");
    use berth_node_agent::docker::base_images;
    base_images::ensure(&docker, &base_images::PYTHON, &Default::default())
        .await
        .expect("the python base image");
}

fn python_app(name: &str, code: &str, requirements: Option<&str>) -> pb::CreateAppRequest {
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

const FLASK_APP: &str = r#"
import os
from flask import Flask
app = Flask(__name__)

@app.get("/")
def index():
    return {"greeting": os.environ["GREETING"], "version": 1}
"#;

async fn http_get(address: &str, port: u32, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((address, port as u16))
        .await
        .ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// Waits until the app is running with `count` running instances.
async fn wait_running(apps: &mut AppServiceClient<Channel>, id: &str, count: usize) -> pb::App {
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

async fn build(builds: &mut BuildServiceClient<Channel>, id: &str) -> pb::Build {
    builds
        .get_build(pb::GetBuildRequest {
            build_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_app_is_built_run_redeployed_stopped_and_deleted() {
    berth_common::telemetry::init();
    base_image().await;
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let name = format!("flask-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let agent = cluster.agent(&cp, "node-d1");
    let mut admin = cluster.admin(&cp).await;
    wait_node_state(&mut admin, "node-d1", pb::NodeState::Ready).await;
    let channel = cluster.client(&cp, "admin").await;
    let mut apps = AppServiceClient::new(channel.clone());
    let mut builds = BuildServiceClient::new(channel.clone());

    let created = apps
        .create_app(tokio_stream::iter(vec![python_app(
            &name,
            FLASK_APP,
            Some("flask\n"),
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.state, pb::AppState::Building as i32);
    let app = wait_running(&mut apps, &created.id, 1).await;
    let first_build = build(&mut builds, &app.current_build_id).await;
    assert_eq!(first_build.state, pb::BuildState::Ready as i32);
    assert!(
        first_build
            .image_tag
            .starts_with(&format!("berth-app-default-{name}:")),
        "{}",
        first_build.image_tag
    );
    let instance = &app.instances[0];
    assert_eq!(instance.node_name, "node-d1");
    assert!(!instance.container_id.is_empty());
    let response = http_get(&instance.address, instance.host_port, "/")
        .await
        .unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "{response}"
    );
    assert!(
        response.contains(r#""greeting":"hello""#) && response.contains(r#""version":1"#),
        "{response}"
    );

    // The build output was kept.
    let mut logs = builds
        .stream_build_logs(pb::StreamBuildLogsRequest {
            build_id: first_build.id.clone(),
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut text = Vec::new();
    while let Some(chunk) = logs.message().await.unwrap() {
        text.extend(chunk.data);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("pip install") || text.contains("flask") || text.contains("Flask"),
        "{text}"
    );

    // Redeploy with changed code: the new code answers.
    let update = pb::UpdateAppRequest {
        part: Some(pb::update_app_request::Part::Header(pb::UpdateAppHeader {
            app_id: app.id.clone(),
            settings: None,
            files: vec![
                pb::SourceFile {
                    path: "main.py".into(),
                    content: FLASK_APP
                        .replace("\"version\": 1", "\"version\": 2")
                        .into_bytes(),
                },
                pb::SourceFile {
                    path: "requirements.txt".into(),
                    content: b"flask\n".to_vec(),
                },
            ],
            reuse_code: false,
        })),
    };
    let updated = apps
        .update_app(tokio_stream::iter(vec![update]))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(updated.current_build_id, app.current_build_id);
    let app = wait_for("the new code to answer", || {
        let mut apps = apps.clone();
        let id = app.id.clone();
        async move {
            let app = wait_running(&mut apps, &id, 1).await;
            let instance = app.instances[0].clone();
            let body = http_get(&instance.address, instance.host_port, "/").await?;
            body.contains(r#""version":2"#).then_some(app)
        }
    })
    .await;
    let second_build = build(&mut builds, &app.current_build_id).await;
    assert!(
        second_build.cached,
        "same dependencies: the image is reused"
    );
    assert_eq!(second_build.image_tag, first_build.image_tag);

    // An unchanged redeploy builds nothing either.
    let again = pb::UpdateAppRequest {
        part: Some(pb::update_app_request::Part::Header(pb::UpdateAppHeader {
            app_id: app.id.clone(),
            reuse_code: true,
            ..Default::default()
        })),
    };
    let redeployed = apps
        .update_app(tokio_stream::iter(vec![again]))
        .await
        .unwrap()
        .into_inner();
    let app = wait_for("the unchanged redeploy to run", || {
        let mut apps = apps.clone();
        let (id, build_id) = (app.id.clone(), redeployed.current_build_id.clone());
        async move {
            let app = wait_running(&mut apps, &id, 1).await;
            (app.instances.iter().all(|i| !i.container_id.is_empty())
                && app.current_build_id == build_id)
                .then_some(app)
        }
    })
    .await;
    assert!(build(&mut builds, &app.current_build_id).await.cached);

    // Stop: the API shows no instance and Docker runs none of the app's containers.
    let docker = berth_node_agent::docker::connect().await.unwrap();
    let stopped = apps
        .stop_app(pb::AppRef {
            app_id: app.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, pb::AppState::Stopped as i32);
    let app_id = app.id.clone();
    wait_for("the app's containers to go", || {
        let docker = docker.clone();
        let app_id = app_id.clone();
        async move {
            app_containers(&docker, &app_id)
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
    let got = apps
        .get_app(pb::AppRef {
            app_id: app.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.instances.is_empty(), "{:?}", got.instances);

    // Start again, then delete: nothing of it is left in Docker.
    apps.start_app(pb::AppRef {
        app_id: app.id.clone(),
    })
    .await
    .unwrap();
    let app = wait_running(&mut apps, &app.id, 1).await;
    assert_eq!(app_containers(&docker, &app.id).await.len(), 1);
    apps.delete_app(pb::AppRef {
        app_id: app.id.clone(),
    })
    .await
    .unwrap();
    let status = apps
        .get_app(pb::AppRef {
            app_id: app.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    wait_for("the deleted app's containers to go", || {
        let docker = docker.clone();
        let app_id = app_id.clone();
        async move {
            app_containers(&docker, &app_id)
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;

    kill_agent(agent).await;
    cp.stop().await;
    let _ = Duration::ZERO;
}

/// Containers of an app, running or not, as Docker sees them.
async fn app_containers(docker: &bollard::Docker, app_id: &str) -> Vec<String> {
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

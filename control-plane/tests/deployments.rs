//! Deployments end to end against the real Docker engine: a control plane,
//! an agent, apps built and run, redeployed, stopped, started, deleted.

mod support;

use berth_proto::pb::{
    self, app_service_client::AppServiceClient, build_service_client::BuildServiceClient,
};
use std::time::Duration;

use support::{apps::*, *};
use tonic::transport::Channel;

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

/// A build's output, whole (following it until the build ends when `follow`).
async fn build_log_text(
    builds: &mut BuildServiceClient<Channel>,
    build_id: impl Into<String>,
    follow: bool,
) -> String {
    let request = pb::StreamBuildLogsRequest {
        build_id: build_id.into(),
        follow,
    };
    let mut logs = builds
        .stream_build_logs(request)
        .await
        .unwrap()
        .into_inner();
    let mut text = Vec::new();
    while let Some(chunk) = logs.message().await.unwrap() {
        text.extend(chunk.data);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Waits until the app is in `state`.
async fn wait_state(
    apps: &mut AppServiceClient<Channel>,
    id: &str,
    state: pb::AppState,
) -> pb::App {
    wait_within(BUILD_WAIT, &format!("app {id} to be {state:?}"), || {
        let mut apps = apps.clone();
        let id = id.to_owned();
        async move {
            let app = apps
                .get_app(pb::AppRef { app_id: id })
                .await
                .ok()?
                .into_inner();
            (app.state == state as i32).then_some(app)
        }
    })
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
            .starts_with(&format!("apps.berth.invalid/default/{name}:")),
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
    let text = build_log_text(&mut builds, first_build.id.clone(), false).await;
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
    wait_containers_gone(&docker, &app_id).await;
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
    wait_containers_gone(&docker, &app_id).await;

    kill_agent(agent).await;
    cp.stop().await;
    let _ = Duration::ZERO;
}

/// A stdlib-only app: builds in a moment, answers on $PORT.
const PLAIN_APP: &str = r#"
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hog":
            hog = bytearray(1 << 30)
        body = b"plain\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

async fn inspect(docker: &bollard::Docker, id: &str) -> bollard::models::ContainerInspectResponse {
    docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_adopts_running_containers_and_drift_is_repaired() {
    let (cluster, cp, agent, channel) = cluster_with_node("node-d2").await;
    let mut apps = AppServiceClient::new(channel.clone());
    let created = apps
        .create_app(tokio_stream::iter(vec![python_app(
            &unique("plain"),
            PLAIN_APP,
            None,
        )]))
        .await
        .unwrap()
        .into_inner();
    let app = wait_running(&mut apps, &created.id, 1).await;
    let docker = berth_node_agent::docker::connect().await.unwrap();
    let before = inspect(&docker, &app.instances[0].container_id).await;

    // What `docker inspect` shows of an instance.
    let host = before.host_config.clone().unwrap();
    assert_eq!(host.memory, Some(128 << 20));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(
        host.restart_policy.unwrap().name,
        Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED)
    );
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges:true".to_owned()])
    );
    assert_eq!(
        host.network_mode.as_deref(),
        Some(berth_node_agent::docker::network::current().as_str())
    );
    let mounts = before.mounts.clone().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.destination.as_deref() == Some("/app/code") && m.rw == Some(false)),
        "{mounts:?}"
    );

    // The agent dies and comes back: the same container keeps running.
    kill_agent(agent).await;
    let agent = cluster.agent(&cp, "node-d2");
    wait_for("the agent to be back", || {
        let connected = agent.status.borrow().connected;
        async move { connected.then_some(()) }
    })
    .await;
    let app = wait_running(&mut apps, &app.id, 1).await;
    let after = inspect(&docker, &app.instances[0].container_id).await;
    assert_eq!(after.id, before.id, "same container");
    assert_eq!(
        after.state.as_ref().unwrap().started_at,
        before.state.as_ref().unwrap().started_at,
        "not restarted"
    );
    assert_eq!(after.restart_count, before.restart_count);

    // A container removed behind the agent's back is made again.
    berth_node_agent::docker::containers::remove(&docker, before.id.as_deref().unwrap())
        .await
        .unwrap();
    let old = before.id.clone().unwrap();
    let app = wait_within(BUILD_WAIT, "a new container", || {
        let mut apps = apps.clone();
        let (id, old) = (app.id.clone(), old.clone());
        async move {
            let app = apps
                .get_app(pb::AppRef { app_id: id })
                .await
                .ok()?
                .into_inner();
            let instance = app.instances.first()?;
            (instance.state == pb::InstanceState::Running as i32
                && !instance.container_id.is_empty()
                && instance.container_id != old)
                .then_some(app)
        }
    })
    .await;
    let instance = &app.instances[0];
    assert_eq!(
        http_get(&instance.address, instance.host_port, "/")
            .await
            .unwrap()
            .lines()
            .last(),
        Some("plain")
    );

    delete_and_wait(&mut apps, &app.id).await;
    kill_agent(agent).await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_oom_killed_restarted_and_counted() {
    let (_cluster, cp, agent, channel) = cluster_with_node("node-d3").await;
    let mut apps = AppServiceClient::new(channel.clone());
    let mut request = python_app(&unique("hog"), PLAIN_APP, None);
    if let Some(pb::create_app_request::Part::Header(header)) = &mut request.part {
        header.settings.as_mut().unwrap().memory_bytes = 48 << 20;
    }
    let created = apps
        .create_app(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let app = wait_running(&mut apps, &created.id, 1).await;
    let instance = app.instances[0].clone();
    // The request dies with the process.
    let _ = http_get(&instance.address, instance.host_port, "/hog").await;
    let docker = berth_node_agent::docker::connect().await.unwrap();
    let app = wait_within(BUILD_WAIT, "the restart to show", || {
        let mut apps = apps.clone();
        let id = app.id.clone();
        async move {
            let app = apps
                .get_app(pb::AppRef { app_id: id })
                .await
                .ok()?
                .into_inner();
            let instance = app.instances.first()?;
            (instance.restarts >= 1 && instance.state == pb::InstanceState::Running as i32)
                .then_some(app)
        }
    })
    .await;
    let inspected = inspect(&docker, &app.instances[0].container_id).await;
    assert!(inspected.restart_count.unwrap_or(0) >= 1);
    assert_eq!(
        inspected.id.as_deref(),
        Some(instance.container_id.as_str()),
        "Docker restarted the same container"
    );
    delete_and_wait(&mut apps, &app.id).await;
    kill_agent(agent).await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_requirement_fails_the_build_with_the_error_in_its_logs() {
    let (_cluster, cp, agent, channel) = cluster_with_node("node-d4").await;
    let mut apps = AppServiceClient::new(channel.clone());
    let mut builds = BuildServiceClient::new(channel.clone());
    let request = python_app(
        &unique("badreq"),
        PLAIN_APP,
        Some("berth-no-such-package-anywhere==9.9.9\n"),
    );
    let created = apps
        .create_app(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let app = wait_state(&mut apps, &created.id, pb::AppState::BuildFailed).await;
    let failed = build(&mut builds, &app.current_build_id).await;
    assert_eq!(failed.state, pb::BuildState::BuildFailed as i32);
    assert!(failed.error.contains("non-zero code"), "{}", failed.error);
    let text = build_log_text(&mut builds, failed.id.clone(), true).await;
    assert!(text.contains("berth-no-such-package-anywhere"), "{text}");
    assert!(app.instances.is_empty(), "nothing runs a failed build");
    kill_agent(agent).await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_archive_is_built_and_served_and_a_hostile_one_is_refused() {
    let (_cluster, cp, agent, channel) = cluster_with_node("node-d5").await;
    let mut apps = AppServiceClient::new(channel.clone());
    let archive = tar_gz(&[
        ("Dockerfile", "FROM berth/python:3.11-bookworm\nCOPY server.py /srv/server.py\nCMD [\"python3\", \"/srv/server.py\"]\n"),
        ("server.py", &PLAIN_APP.replace("plain", "from-dockerfile")),
    ]);
    let created = apps
        .create_app(tokio_stream::iter(dockerfile_app(&unique("df"), archive)))
        .await
        .unwrap()
        .into_inner();
    let app = wait_running(&mut apps, &created.id, 1).await;
    let instance = &app.instances[0];
    let body = http_get(&instance.address, instance.host_port, "/")
        .await
        .unwrap();
    assert!(body.ends_with("from-dockerfile\n"), "{body}");

    // Climbing out of the archive is refused with the entry named, and no app is made.
    let mut evil = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.as_gnu_mut().unwrap().name[..11].copy_from_slice(b"../evil.txt");
    header.set_cksum();
    evil.append(&header, &b"evil"[..]).unwrap();
    let name = unique("evil");
    let status = apps
        .create_app(tokio_stream::iter(dockerfile_app(
            &name,
            evil.into_inner().unwrap(),
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("../evil.txt"),
        "{}",
        status.message()
    );
    let all = apps
        .list_apps(pb::ListAppsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert!(all
        .iter()
        .all(|a| a.settings.as_ref().unwrap().name != name));

    // No Dockerfile at the root.
    let status = apps
        .create_app(tokio_stream::iter(dockerfile_app(
            &unique("nodf"),
            tar_gz(&[("app.py", "x")]),
        )))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("no Dockerfile"),
        "{}",
        status.message()
    );

    // Another tenant's Dockerfile may not build on this app's image, by
    // any of its names; nothing of it is kept.
    let image = pb::build_service_client::BuildServiceClient::new(channel.clone())
        .get_build(pb::GetBuildRequest {
            build_id: app.current_build_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .image_tag;
    assert!(image.starts_with("apps.berth.invalid/default/"), "{image}");
    support::web::create_key(
        &mut pb::api_key_service_client::ApiKeyServiceClient::new(channel.clone()),
        "other",
        false,
    )
    .await;
    for from in [image.clone(), format!("docker.io/{image}")] {
        let mut messages = dockerfile_app(
            &unique("steal"),
            tar_gz(&[("Dockerfile", &format!("FROM {from}\nCMD [\"true\"]\n"))]),
        );
        if let Some(pb::create_app_request::Part::Header(header)) = &mut messages[0].part {
            header.settings.as_mut().unwrap().tenant = "other".into();
        }
        let status = apps
            .create_app(tokio_stream::iter(messages))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("not one of this tenant's images"),
            "{}",
            status.message()
        );
    }
    let others = apps
        .list_apps(pb::ListAppsRequest {
            tenant: "other".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert!(others.is_empty(), "{others:?}");

    delete_and_wait(&mut apps, &app.id).await;
    kill_agent(agent).await;
    cp.stop().await;
}

#[tokio::test]
async fn bad_app_settings_are_refused_before_anything_is_stored() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let mut apps = AppServiceClient::new(cluster.client(&cp, "admin").await);
    let mut request = python_app("Bad Name", PLAIN_APP, None);
    let status = apps
        .create_app(tokio_stream::iter(vec![request.clone()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("name:"),
        "{}",
        status.message()
    );
    if let Some(pb::create_app_request::Part::Header(header)) = &mut request.part {
        let settings = header.settings.as_mut().unwrap();
        settings.name = "ok".into();
        settings.min_instances = Some(5);
        settings.max_instances = Some(2);
    }
    let status = apps
        .create_app(tokio_stream::iter(vec![request.clone()]))
        .await
        .unwrap_err();
    assert!(
        status.message().starts_with("min_instances:"),
        "{}",
        status.message()
    );
    // A tenant that does not exist.
    if let Some(pb::create_app_request::Part::Header(header)) = &mut request.part {
        let settings = header.settings.as_mut().unwrap();
        settings.min_instances = None;
        settings.max_instances = None;
        settings.tenant = "nobody".into();
    }
    let status = apps
        .create_app(tokio_stream::iter(vec![request]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(apps
        .list_apps(pb::ListAppsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .apps
        .is_empty());
    // Names are unique per tenant.
    let first = python_app("twice", PLAIN_APP, None);
    apps.create_app(tokio_stream::iter(vec![first.clone()]))
        .await
        .unwrap();
    let status = apps
        .create_app(tokio_stream::iter(vec![first]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    cp.stop().await;
}

fn node_app(name: &str, code: &str, package_json: &str) -> pb::CreateAppRequest {
    pb::CreateAppRequest {
        part: Some(pb::create_app_request::Part::Header(pb::CreateAppHeader {
            settings: Some(pb::AppSettings {
                name: name.into(),
                runtime: pb::Runtime::Node as i32,
                memory_bytes: 128 << 20,
                ..Default::default()
            }),
            files: vec![
                pb::SourceFile {
                    path: "index.js".into(),
                    content: code.as_bytes().to_vec(),
                },
                pb::SourceFile {
                    path: "package.json".into(),
                    content: package_json.as_bytes().to_vec(),
                },
            ],
        })),
    }
}

const EXPRESS_APP: &str = r#"
const express = require('express');
const app = express();
app.get('/', (req, res) => res.json({ runtime: 'node', express: require('express/package.json').version }));
module.exports = app;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_express_app_runs_and_a_missing_dependency_fails_its_build() {
    {
        let docker = berth_node_agent::docker::connect().await.unwrap();
        use berth_node_agent::docker::base_images;
        base_images::ensure(&docker, &base_images::NODE, &Default::default())
            .await
            .expect("the node base image");
    }
    let (_cluster, cp, agent, channel) = cluster_with_node("node-d6").await;
    let mut apps = AppServiceClient::new(channel.clone());
    let mut builds = BuildServiceClient::new(channel.clone());
    let package = r#"{"name": "hello", "dependencies": {"express": "^4.17.0"}}"#;
    let created = apps
        .create_app(tokio_stream::iter(vec![node_app(
            &unique("express"),
            EXPRESS_APP,
            package,
        )]))
        .await
        .unwrap()
        .into_inner();
    let app = wait_running(&mut apps, &created.id, 1).await;
    let instance = &app.instances[0];
    let body = http_get(&instance.address, instance.host_port, "/")
        .await
        .unwrap();
    assert!(
        body.contains(r#""runtime":"node""#) && body.contains(r#""express":"4."#),
        "{body}"
    );

    let missing = r#"{"dependencies": {"left-pad": "^1.3.0"}}"#;
    let created = apps
        .create_app(tokio_stream::iter(vec![node_app(
            &unique("leftpad"),
            EXPRESS_APP,
            missing,
        )]))
        .await
        .unwrap()
        .into_inner();
    let failed = wait_state(&mut apps, &created.id, pb::AppState::BuildFailed).await;
    let build = build(&mut builds, &failed.current_build_id).await;
    let text = build_log_text(&mut builds, build.id, false).await;
    assert!(
        text.contains(r#"dependency "left-pad@^1.3.0" is not available"#),
        "{text}"
    );

    delete_and_wait(&mut apps, &app.id).await;
    kill_agent(agent).await;
    cp.stop().await;
}

/// Deletes an app and waits until Docker has none of its containers left.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_stats_and_cleanup_reach_the_containers() {
    let (_cluster, cp, agent, channel) = cluster_with_node("node-d7").await;
    let mut apps = AppServiceClient::new(channel.clone());
    let mut builds = BuildServiceClient::new(channel.clone());
    let created = apps
        .create_app(tokio_stream::iter(vec![python_app(
            &unique("logs"),
            PLAIN_APP,
            None,
        )]))
        .await
        .unwrap()
        .into_inner();
    let app = wait_running(&mut apps, &created.id, 1).await;
    let instance = app.instances[0].clone();
    http_get(&instance.address, instance.host_port, "/first")
        .await
        .unwrap();

    // The tail holds the request the app logged (http.server logs to stderr).
    let tail = wait_for("the request in the logs", || {
        let mut apps = apps.clone();
        let id = app.id.clone();
        async move {
            let request = pb::StreamAppLogsRequest {
                app_id: id,
                instance_id: String::new(),
                tail: 50,
                follow: false,
            };
            let mut stream = apps.stream_app_logs(request).await.ok()?.into_inner();
            let mut lines = Vec::new();
            while let Some(line) = stream.message().await.ok()? {
                lines.push(line);
            }
            lines
                .iter()
                .any(|l| String::from_utf8_lossy(&l.line).contains("GET /first"))
                .then_some(lines)
        }
    })
    .await;
    assert!(tail
        .iter()
        .all(|l| l.instance_id == instance.id && l.timestamp.is_some()));
    assert!(tail.iter().any(|l| l.stream == "stderr"));

    // Following shows what happens next.
    let request = pb::StreamAppLogsRequest {
        app_id: app.id.clone(),
        instance_id: instance.id.clone(),
        tail: 1,
        follow: true,
    };
    let mut follow = apps.stream_app_logs(request).await.unwrap().into_inner();
    http_get(&instance.address, instance.host_port, "/second")
        .await
        .unwrap();
    let seen = tokio::time::timeout(WAIT, async {
        while let Some(line) = follow.message().await.unwrap() {
            if String::from_utf8_lossy(&line.line).contains("GET /second") {
                return true;
            }
        }
        false
    })
    .await
    .expect("the followed line arrives");
    assert!(seen);
    drop(follow);

    let stats = apps
        .get_app_stats(pb::AppRef {
            app_id: app.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.instances.len(), 1);
    let stat = &stats.instances[0];
    assert_eq!(stat.instance_id, instance.id);
    assert!(stat.memory_mb > 1.0 && stat.memory_mb < 128.0, "{stat:?}");
    assert!(
        stat.memory_percent > 0.0 && stat.memory_percent < 100.0,
        "{stat:?}"
    );
    assert!(stat.cpu_percent >= 0.0);

    // Deleting the app leaves its image; cleanup removes it.
    let image = build(&mut builds, &app.current_build_id).await.image_tag;
    delete_and_wait(&mut apps, &app.id).await;
    let docker = berth_node_agent::docker::connect().await.unwrap();
    assert!(
        berth_node_agent::docker::build::image_exists(&docker, &image)
            .await
            .unwrap()
    );
    let cleaned = apps
        .cleanup(pb::CleanupRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(cleaned.removed_images.contains(&image), "{cleaned:?}");
    assert!(
        cleaned.removed_code.contains(&app.current_build_id),
        "{cleaned:?}"
    );
    assert!(!_cluster
        .data
        .path()
        .join("agents/node-d7/code")
        .join(&app.current_build_id)
        .exists());
    assert!(
        !berth_node_agent::docker::build::image_exists(&docker, &image)
            .await
            .unwrap()
    );

    kill_agent(agent).await;
    cp.stop().await;
}

const GO_APP: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"

	"github.com/gorilla/mux"
)

func main() {
	r := mux.NewRouter()
	r.HandleFunc("/hello/{name}", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "hello %s from go\n", mux.Vars(req)["name"])
	})
	http.ListenAndServe(":"+os.Getenv("PORT"), r)
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_app_with_a_module_dependency_is_built_and_served() {
    {
        let docker = berth_node_agent::docker::connect().await.unwrap();
        use berth_node_agent::docker::base_images;
        base_images::ensure(&docker, &base_images::GO, &Default::default())
            .await
            .expect("the go base image");
    }
    let (_cluster, cp, agent, channel) = cluster_with_node("node-d8").await;
    let mut apps = AppServiceClient::new(channel.clone());
    let go_mod = "module example.com/hello\n\ngo 1.21\n\nrequire github.com/gorilla/mux v1.8.1\n";
    let request = pb::CreateAppRequest {
        part: Some(pb::create_app_request::Part::Header(pb::CreateAppHeader {
            settings: Some(pb::AppSettings {
                name: unique("gomux"),
                runtime: pb::Runtime::Go as i32,
                memory_bytes: 64 << 20,
                ..Default::default()
            }),
            files: vec![
                pb::SourceFile {
                    path: "main.go".into(),
                    content: GO_APP.as_bytes().to_vec(),
                },
                pb::SourceFile {
                    path: "go.mod".into(),
                    content: go_mod.as_bytes().to_vec(),
                },
            ],
        })),
    };
    let created = apps
        .create_app(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let app = wait_running(&mut apps, &created.id, 1).await;
    let instance = &app.instances[0];
    let body = http_get(&instance.address, instance.host_port, "/hello/berth")
        .await
        .unwrap();
    assert!(body.ends_with("hello berth from go\n"), "{body}");
    delete_and_wait(&mut apps, &app.id).await;
    kill_agent(agent).await;
    cp.stop().await;
}

#[test]
fn the_default_runtime_images_are_the_ones_berth_makes() {
    use berth_node_agent::docker::base_images;
    for (runtime, image) in berth_control_plane::config::DEFAULT_RUNTIME_IMAGES {
        let made = base_images::by_runtime(runtime)
            .unwrap_or_else(|| panic!("no base image for {runtime}"));
        assert_eq!(made.image, *image, "{runtime}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_crashes_at_start_fails_with_its_last_output() {
    let (_cluster, cp, agent, channel) = cluster_with_node("node-d9").await;
    let mut apps = AppServiceClient::new(channel.clone());
    let code = "import sys\nprint('starting up', flush=True)\nsys.exit('boom at start')\n";
    let created = apps
        .create_app(tokio_stream::iter(vec![python_app(
            &unique("crash"),
            code,
            None,
        )]))
        .await
        .unwrap()
        .into_inner();
    let app = wait_state(&mut apps, &created.id, pb::AppState::Failed).await;
    assert!(
        app.status_message.contains("boom at start"),
        "{}",
        app.status_message
    );
    let instance = &app.instances[0];
    assert_eq!(instance.state, pb::InstanceState::Failed as i32);
    assert!(instance.error.contains("exit"), "{}", instance.error);
    delete_and_wait(&mut apps, &app.id).await;
    kill_agent(agent).await;
    cp.stop().await;
}

//! The HTTP shapes of the systems Berth replaces, so that their clients
//! work unchanged: the executor (`/deploy`, `/stop`, `/status`, `/health`),
//! the Docker deployer's admin API (`/admin/…`) and the orchestrator's
//! images and containers (`/api/images`, `/api/containers`). An app is the
//! seeds' "API" and "image"; an instance is their "container".

use super::{
    forms::{upload, Target},
    json, not_found, rpc,
    v1::{app_ref, apps, get_app},
    Call,
};
use crate::{body::ProxyBody, error::ApiError};
use berth_proto::{
    domain::{AppState, BuildState, InstanceState},
    pb,
};
use http::{Method, Response, StatusCode};
use serde_json::{json as j, Value};
use std::time::Duration;

type Answer = Result<Response<ProxyBody>, ApiError>;

/// Longest `/deploy` and `…/start` wait for a running instance to report.
const START_WAIT: Duration = Duration::from_secs(120);

pub fn is_seed_path(path: &str) -> bool {
    path == "/deploy"
        || path == "/health"
        || path.starts_with("/stop/")
        || path.starts_with("/status/")
        || path == "/admin"
        || path.starts_with("/admin/")
        || path == "/api/images"
        || path.starts_with("/api/images/")
        || path == "/api/containers"
        || path.starts_with("/api/containers/")
}

pub async fn route(call: Call) -> Answer {
    let segments: Vec<String> = call.segments.clone();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (call.method.clone(), segments.as_slice()) {
        // Seed 000: the executor.
        (Method::POST, ["deploy"]) => deploy(call).await,
        (Method::POST, ["stop", id]) => {
            rpc(apps(&call).stop_app(app_ref(id))).await?;
            ok(j!({ "status": "success", "message": "API stopped successfully" }))
        }
        (Method::GET, ["status", id]) => {
            let app = get_app(&call, id).await?;
            ok(j!({
                "api_id": app.id,
                "status": seed_status(&app),
                "container_id": first_container(&app),
            }))
        }
        // Seed 001: the deployer's admin API.
        (Method::GET, ["admin", "deployments"]) => deployments(&call).await,
        (Method::GET, ["admin", "deployment", id]) => deployment_health(&call, id).await,
        (Method::POST, ["admin", "deployment", id, "stop"]) => {
            rpc(apps(&call).stop_app(app_ref(id))).await?;
            ok(j!({ "success": true, "message": format!("API {id} stopped") }))
        }
        (Method::POST, ["admin", "deployment", id, "start"]) => {
            rpc(apps(&call).start_app(app_ref(id))).await?;
            let app = wait_running(&call, id).await?;
            ok(
                j!({ "success": true, "message": format!("API {id} deployed"), "port": first_port(&app) }),
            )
        }
        (Method::POST, ["admin", "reload", id]) => {
            let app_id = id.to_string();
            upload(call, Target::Update { app_id }).await?;
            ok(j!({ "success": true, "message": format!("API {id} redeployed") }))
        }
        (Method::POST, ["admin", "cleanup"]) => {
            rpc(apps(&call).cleanup(pb::CleanupRequest::default())).await?;
            let listed = rpc(apps(&call).list_apps(pb::ListAppsRequest::default())).await?;
            let remaining = listed.apps.iter().filter(|a| running(a) > 0).count();
            ok(
                j!({ "success": true, "message": "Cleanup completed", "remaining_deployments": remaining }),
            )
        }
        // Seed 003: the orchestrator's images and containers.
        (Method::POST, ["api", "images"]) => {
            let app = upload(call, Target::Create).await?;
            Ok(json(StatusCode::CREATED, &image(&app, None, "")))
        }
        (Method::GET, ["api", "images"]) => {
            let listed = rpc(apps(&call).list_apps(pb::ListAppsRequest::default())).await?;
            let images: Vec<Value> = listed.apps.iter().map(|a| image(a, None, "")).collect();
            ok(Value::Array(images))
        }
        (Method::GET, ["api", "images", "with-containers"]) => {
            let listed = rpc(apps(&call).list_apps(pb::ListAppsRequest::default())).await?;
            let images: Vec<Value> = listed
                .apps
                .iter()
                .map(|a| {
                    let mut v = image(a, None, "");
                    v["container_count"] = j!(a.instances.len());
                    v["running_count"] = j!(running(a));
                    v["containers"] = containers(a);
                    v
                })
                .collect();
            ok(Value::Array(images))
        }
        (Method::GET, ["api", "images", id]) => {
            let app = get_app(&call, id).await?;
            let (build, logs) = build_and_logs(&call, &app).await?;
            ok(image(&app, build.as_ref(), &logs))
        }
        (Method::GET, ["api", "images", id, "build-logs"]) => {
            let app = get_app(&call, id).await?;
            let (build, logs) = build_and_logs(&call, &app).await?;
            ok(
                j!({ "image_id": app.id, "status": image_status(&app, build.as_ref()), "build_logs": logs }),
            )
        }
        (Method::GET, ["api", "images", id, "containers"]) => {
            let app = get_app(&call, id).await?;
            ok(containers(&app))
        }
        (Method::DELETE, ["api", "images", id]) => {
            rpc(apps(&call).delete_app(app_ref(id))).await?;
            ok(j!({ "success": true, "message": format!("image {id} deleted") }))
        }
        (Method::POST, ["api", "containers", image_id]) => create_containers(call, image_id).await,
        (Method::GET, ["api", "containers"]) => {
            let listed = rpc(apps(&call).list_apps(pb::ListAppsRequest::default())).await?;
            let all: Vec<Value> = listed
                .apps
                .iter()
                .flat_map(|a| a.instances.iter().map(move |i| container(a, i)))
                .collect();
            ok(Value::Array(all))
        }
        (Method::GET, ["api", "containers", id]) => {
            let (app, instance) = find_container(&call, id).await?;
            ok(container(&app, &instance))
        }
        (Method::POST, ["api", "containers", id, "start"]) => {
            let (app, _) = find_container(&call, id).await?;
            let app = rpc(apps(&call).start_app(app_ref(&app.id))).await?;
            ok(
                j!({ "success": true, "message": format!("containers of image {} starting", app.id) }),
            )
        }
        (Method::POST, ["api", "containers", id, "stop"]) => {
            let (app, _) = find_container(&call, id).await?;
            rpc(apps(&call).stop_app(app_ref(&app.id))).await?;
            ok(
                j!({ "success": true, "message": format!("containers of image {} stopped", app.id) }),
            )
        }
        (Method::DELETE, ["api", "containers", id]) => {
            let (app, instance) = find_container(&call, id).await?;
            let settings = app.settings.clone().unwrap_or_default();
            let min = settings.min_instances.unwrap_or(1).saturating_sub(1);
            scale(&call, &app, min, vec![instance.id]).await?;
            ok(
                j!({ "success": true, "message": format!("image {} scaled to {min} container(s)", app.id) }),
            )
        }
        _ => Err(not_found(&call)),
    }
}

fn ok(value: Value) -> Answer {
    Ok(json(StatusCode::OK, &value))
}

fn running(app: &pb::App) -> usize {
    app.instances
        .iter()
        .filter(|i| i.state == pb::InstanceState::Running as i32)
        .count()
}

fn first_running(app: &pb::App) -> Option<&pb::Instance> {
    app.instances
        .iter()
        .find(|i| i.state == pb::InstanceState::Running as i32)
}

fn first_container(app: &pb::App) -> String {
    first_running(app)
        .or(app.instances.first())
        .map(|i| i.container_id.clone())
        .unwrap_or_default()
}

fn first_port(app: &pb::App) -> u32 {
    first_running(app).map_or(0, |i| i.host_port)
}

/// The executor's words: `running`, `stopped`, `building`, `failed`, `deploying`.
fn seed_status(app: &pb::App) -> String {
    AppState::try_from(app.state).map_or("unknown".to_owned(), |s| match s {
        AppState::BuildFailed | AppState::Failed => "failed".to_owned(),
        other => other.to_string(),
    })
}

/// Waits until the app has a running instance (or cannot get one).
async fn wait_running(call: &Call, id: &str) -> Result<pb::App, ApiError> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        let app = get_app(call, id).await?;
        if running(&app) > 0 {
            return Ok(app);
        }
        if matches!(
            AppState::try_from(app.state),
            Ok(AppState::BuildFailed | AppState::Failed)
        ) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "deploy_failed",
                app.status_message,
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                format!(
                    "app {id} has no running instance after {START_WAIT:?}: {}",
                    app.status_message
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[derive(serde::Deserialize)]
struct DeployBody {
    api_id: String,
}

async fn deploy(mut call: Call) -> Answer {
    let body: DeployBody = call.json().await?;
    rpc(apps(&call).start_app(app_ref(&body.api_id))).await?;
    let app = wait_running(&call, &body.api_id).await?;
    ok(j!({
        "status": "success",
        "container_id": first_container(&app),
        "message": "API deployed successfully",
    }))
}

async fn deployments(call: &Call) -> Answer {
    let listed = rpc(apps(call).list_apps(pb::ListAppsRequest::default())).await?;
    let mut map = serde_json::Map::new();
    for app in &listed.apps {
        let image = match app.current_build_id.as_str() {
            "" => String::new(),
            build_id => rpc(pb::build_service_client::BuildServiceClient::new(
                call.channel.clone(),
            )
            .get_build(pb::GetBuildRequest {
                build_id: build_id.to_owned(),
            }))
            .await
            .map(|b| b.image_tag)
            .unwrap_or_default(),
        };
        map.insert(
            app.id.clone(),
            j!({ "port": first_port(app), "status": seed_status(app), "image": image }),
        );
    }
    ok(j!({ "success": true, "deployments": map }))
}

async fn deployment_health(call: &Call, id: &str) -> Answer {
    let app = get_app(call, id).await?;
    let stats = rpc(apps(call).get_app_stats(app_ref(id))).await?;
    let (cpu, mem_mb, mem_pct) = stats.instances.iter().fold((0.0, 0.0, 0.0), |acc, s| {
        (
            acc.0 + s.cpu_percent,
            acc.1 + s.memory_mb,
            acc.2 + s.memory_percent,
        )
    });
    let n = stats.instances.len().max(1) as f64;
    ok(j!({
        "success": true,
        "api_id": app.id,
        "health": {
            "status": seed_status(&app),
            "cpu_percent": round2(cpu),
            "memory_usage_mb": round2(mem_mb),
            "memory_percent": round2(mem_pct / n),
            "port": first_port(&app),
        }
    }))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The orchestrator's image status: `building`, `ready`, `build_failed`.
fn image_status(app: &pb::App, build: Option<&pb::Build>) -> String {
    match build.map(|b| BuildState::try_from(b.state)) {
        Some(Ok(state)) => state.to_string(),
        _ => match AppState::try_from(app.state) {
            Ok(AppState::Building) => "building".into(),
            Ok(AppState::BuildFailed) => "build_failed".into(),
            _ => "ready".into(),
        },
    }
}

fn image(app: &pb::App, build: Option<&pb::Build>, logs: &str) -> Value {
    let s = app.settings.clone().unwrap_or_default();
    let tag = build
        .and_then(|b| b.image_tag.rsplit_once(':').map(|(_, t)| t.to_owned()))
        .unwrap_or_default();
    j!({
        "id": app.id,
        "name": s.name,
        "tag": tag,
        "tenant": s.tenant,
        "app_hostname": s.app_hostname,
        "container_port": s.container_port,
        "min_instances": s.min_instances.unwrap_or(0),
        "max_instances": s.max_instances.unwrap_or(0),
        "cpu_limit": f64::from(s.cpu_millis) / 1000.0,
        "memory_limit": format!("{}m", s.memory_bytes >> 20),
        "status": image_status(app, build),
        "build_logs": logs,
        "build_id": app.current_build_id,
        "created_at": berth_proto::views::time(app.created_at),
        "updated_at": berth_proto::views::time(app.updated_at),
    })
}

async fn build_and_logs(
    call: &Call,
    app: &pb::App,
) -> Result<(Option<pb::Build>, String), ApiError> {
    if app.current_build_id.is_empty() {
        return Ok((None, String::new()));
    }
    let mut builds = pb::build_service_client::BuildServiceClient::new(call.channel.clone());
    let build = rpc(builds.get_build(pb::GetBuildRequest {
        build_id: app.current_build_id.clone(),
    }))
    .await?;
    let mut stream = rpc(builds.stream_build_logs(pb::StreamBuildLogsRequest {
        build_id: app.current_build_id.clone(),
        follow: false,
    }))
    .await?;
    let mut logs = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(super::grpc_error)? {
        logs.extend_from_slice(&chunk.data);
    }
    Ok((Some(build), String::from_utf8_lossy(&logs).into_owned()))
}

fn container(app: &pb::App, i: &pb::Instance) -> Value {
    let state = InstanceState::try_from(i.state).map_or("unknown".to_owned(), |s| s.to_string());
    j!({
        "id": i.id,
        "image_id": app.id,
        "container_id": i.container_id,
        "name": format!("berth-{}-{}", app.id, i.id.chars().take(8).collect::<String>()),
        "status": state,
        "node": i.node_name,
        "host": i.address,
        "port": i.host_port,
        "container_port": app.settings.as_ref().map_or(0, |s| s.container_port),
        "app_hostname": app.settings.as_ref().map_or("", |s| s.app_hostname.as_str()),
        "restarts": i.restarts,
        "error": i.error,
    })
}

fn containers(app: &pb::App) -> Value {
    Value::Array(app.instances.iter().map(|i| container(app, i)).collect())
}

async fn find_container(call: &Call, id: &str) -> Result<(pb::App, pb::Instance), ApiError> {
    let listed = rpc(apps(call).list_apps(pb::ListAppsRequest::default())).await?;
    for app in listed.apps {
        if let Some(instance) = app
            .instances
            .iter()
            .find(|i| {
                i.id == id
                    || (!i.container_id.is_empty()
                        && i.container_id.starts_with(id)
                        && id.len() >= 12)
            })
            .cloned()
        {
            return Ok((app, instance));
        }
    }
    Err(ApiError::not_found(format!("no container {id:?}")))
}

/// Sets the app's instance count, removing `remove` first.
async fn scale(
    call: &Call,
    app: &pb::App,
    count: u32,
    remove: Vec<String>,
) -> Result<pb::App, ApiError> {
    let max = app
        .settings
        .as_ref()
        .and_then(|s| s.max_instances)
        .unwrap_or(1);
    if count > max {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "max_instances",
            format!("image {} allows at most {max} containers", app.id),
        ));
    }
    rpc(apps(call).scale_app(pb::ScaleAppRequest {
        app_id: app.id.clone(),
        instances: count,
        remove_instance_ids: remove,
    }))
    .await
}

#[derive(serde::Deserialize, Default)]
struct CreateContainers {
    #[serde(default)]
    count: Option<u32>,
}

async fn create_containers(mut call: Call, image_id: &str) -> Answer {
    let app = get_app(&call, image_id).await?;
    let body: CreateContainers = call.json().await?;
    let add = body.count.unwrap_or(1).max(1);
    let now = app
        .settings
        .as_ref()
        .and_then(|s| s.min_instances)
        .unwrap_or(0)
        .max(app.instances.len() as u32);
    let app = scale(&call, &app, now + add, Vec::new()).await?;
    Ok(json(StatusCode::CREATED, &containers(&app)))
}

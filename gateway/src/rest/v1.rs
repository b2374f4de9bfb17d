//! `/v1/…`: apps, builds, instances, nodes, keys and events as JSON.

use super::{
    forms::{upload, Target},
    json, lines, not_found, rpc, Call, Channel,
};
use crate::{body::BoxError, body::ProxyBody, error::ApiError};
use berth_proto::{
    domain::KeyRole,
    pb::{
        self, api_key_service_client::ApiKeyServiceClient, app_service_client::AppServiceClient,
        build_service_client::BuildServiceClient, event_service_client::EventServiceClient,
        node_service_client::NodeServiceClient, tenant_service_client::TenantServiceClient,
    },
    views::{
        AppView, BuildView, EventView, InstanceStatsView, InstanceView, KeyView, LogLineView,
        NodeView, TenantView,
    },
};
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Response, StatusCode};
use serde::Deserialize;

type Answer = Result<Response<ProxyBody>, ApiError>;

pub async fn route(call: Call) -> Answer {
    let segments: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    match (call.method.clone(), &segments[1..]) {
        (Method::GET, ["apps"]) => list_apps(&call).await,
        (Method::POST, ["apps"]) => {
            let app = upload(call, Target::Create).await?;
            Ok(json(StatusCode::CREATED, &AppView::from(app)))
        }
        (Method::GET, ["apps", id]) => {
            let app = get_app(&call, id).await?;
            Ok(json(StatusCode::OK, &AppView::from(app)))
        }
        (Method::DELETE, ["apps", id]) => {
            rpc(apps(&call).delete_app(app_ref(id))).await?;
            Ok(json(StatusCode::OK, &serde_json::json!({ "deleted": id })))
        }
        (Method::POST, ["apps", id, "start"]) => {
            let app = rpc(apps(&call).start_app(app_ref(id))).await?;
            Ok(json(StatusCode::OK, &AppView::from(app)))
        }
        (Method::POST, ["apps", id, "stop"]) => {
            let app = rpc(apps(&call).stop_app(app_ref(id))).await?;
            Ok(json(StatusCode::OK, &AppView::from(app)))
        }
        (Method::POST, ["apps", id, "redeploy"]) => {
            let app_id = id.to_string();
            let app = upload(call, Target::Update { app_id }).await?;
            Ok(json(StatusCode::OK, &AppView::from(app)))
        }
        (Method::POST, ["apps", id, "scale"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Scale {
                instances: u32,
                #[serde(default)]
                remove_instance_ids: Vec<String>,
            }
            let app_id = id.to_string();
            let mut call = call;
            let scale: Scale = call.json().await?;
            let app = rpc(apps(&call).scale_app(pb::ScaleAppRequest {
                app_id,
                instances: scale.instances,
                remove_instance_ids: scale.remove_instance_ids,
            }))
            .await?;
            Ok(json(StatusCode::OK, &AppView::from(app)))
        }
        (Method::GET, ["apps", id, "instances"]) => {
            let app = get_app(&call, id).await?;
            let instances: Vec<InstanceView> =
                app.instances.into_iter().map(InstanceView::from).collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "instances": instances }),
            ))
        }
        (Method::GET, ["apps", id, "stats"]) => {
            let stats = rpc(apps(&call).get_app_stats(app_ref(id))).await?;
            let instances: Vec<InstanceStatsView> = stats
                .instances
                .iter()
                .map(InstanceStatsView::from)
                .collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "instances": instances }),
            ))
        }
        (Method::GET, ["apps", id, "logs"]) => app_logs(&call, id).await,
        (Method::GET, ["builds", id]) => {
            let build = rpc(builds(&call).get_build(pb::GetBuildRequest {
                build_id: id.to_string(),
            }))
            .await?;
            Ok(json(StatusCode::OK, &BuildView::from(build)))
        }
        (Method::GET, ["builds", id, "logs"]) => build_logs(&call, id).await,
        (Method::GET, ["nodes"]) => {
            let listed = rpc(nodes(&call).list_nodes(pb::ListNodesRequest::default())).await?;
            let views: Vec<NodeView> = listed.nodes.into_iter().map(NodeView::from).collect();
            Ok(json(StatusCode::OK, &serde_json::json!({ "nodes": views })))
        }
        (Method::GET, ["nodes", name]) => {
            let node = rpc(nodes(&call).get_node(pb::GetNodeRequest {
                name: name.to_string(),
            }))
            .await?;
            Ok(json(StatusCode::OK, &NodeView::from(node)))
        }
        (Method::POST, ["nodes", name, "drain"]) => {
            let node = rpc(nodes(&call).drain_node(pb::DrainNodeRequest {
                name: name.to_string(),
            }))
            .await?;
            Ok(json(StatusCode::OK, &NodeView::from(node)))
        }
        (Method::POST, ["nodes", name, "undrain"]) => {
            let node = rpc(nodes(&call).undrain_node(pb::UndrainNodeRequest {
                name: name.to_string(),
            }))
            .await?;
            Ok(json(StatusCode::OK, &NodeView::from(node)))
        }
        (Method::GET, ["keys"]) => {
            let tenant = call.query("tenant").unwrap_or("").to_owned();
            let listed = rpc(keys(&call).list_api_keys(pb::ListApiKeysRequest { tenant })).await?;
            let views: Vec<KeyView> = listed.api_keys.into_iter().map(KeyView::from).collect();
            Ok(json(StatusCode::OK, &serde_json::json!({ "keys": views })))
        }
        (Method::POST, ["keys"]) => create_key(call).await,
        (Method::DELETE, ["keys", id]) => {
            let key =
                rpc(keys(&call).revoke_api_key(pb::RevokeApiKeyRequest { id: id.to_string() }))
                    .await?;
            Ok(json(StatusCode::OK, &KeyView::from(key)))
        }
        (Method::GET, ["events"]) => events(&call).await,
        (Method::GET, ["tenants"]) => {
            let listed = rpc(tenants(&call).list_tenants(pb::ListTenantsRequest {})).await?;
            let views: Vec<TenantView> = listed.tenants.into_iter().map(TenantView::from).collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "tenants": views }),
            ))
        }
        (Method::PUT, ["tenants", name, "limits"]) => {
            let name = name.to_string();
            set_tenant_limits(call, name).await
        }
        (Method::POST, ["cleanup"]) => {
            let done = rpc(apps(&call).cleanup(pb::CleanupRequest::default())).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "removed_containers": done.removed_containers,
                    "removed_images": done.removed_images,
                    "removed_code": done.removed_code,
                }),
            ))
        }
        _ => Err(not_found(&call)),
    }
}

pub fn apps(call: &Call) -> AppServiceClient<Channel> {
    AppServiceClient::new(call.channel.clone())
}

fn builds(call: &Call) -> BuildServiceClient<Channel> {
    BuildServiceClient::new(call.channel.clone())
}

fn nodes(call: &Call) -> NodeServiceClient<Channel> {
    NodeServiceClient::new(call.channel.clone())
}

fn tenants(call: &Call) -> TenantServiceClient<Channel> {
    TenantServiceClient::new(call.channel.clone())
}

fn keys(call: &Call) -> ApiKeyServiceClient<Channel> {
    ApiKeyServiceClient::new(call.channel.clone())
}

pub fn app_ref(id: &str) -> pb::AppRef {
    pb::AppRef {
        app_id: id.to_owned(),
    }
}

pub async fn get_app(call: &Call, id: &str) -> Result<pb::App, ApiError> {
    rpc(apps(call).get_app(app_ref(id))).await
}

async fn list_apps(call: &Call) -> Answer {
    let tenant = call.query("tenant").unwrap_or("").to_owned();
    let listed = rpc(apps(call).list_apps(pb::ListAppsRequest { tenant })).await?;
    let views: Vec<AppView> = listed.apps.into_iter().map(AppView::from).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "apps": views })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    name: String,
    /// Kept for older clients: an admin key when `role` is not given.
    #[serde(default)]
    admin: bool,
    /// `admin`, `deployer` or `invoker` (default: `invoker`, or `admin`
    /// with `admin: true`).
    role: Option<String>,
    #[serde(default)]
    rate_per_second: f64,
    #[serde(default)]
    burst: u32,
}

async fn create_key(mut call: Call) -> Answer {
    let new: NewKey = call.json().await?;
    let role = match new.role.as_deref() {
        None => pb::KeyRole::Unspecified,
        Some(role) => pb::KeyRole::from(role.parse::<KeyRole>().map_err(|_| {
            ApiError::bad_request(format!("role: {role:?} is not admin, deployer or invoker"))
        })?),
    };
    let created = rpc(keys(&call).create_api_key(pb::CreateApiKeyRequest {
        tenant: new.tenant,
        name: new.name,
        admin: new.admin,
        role: role.into(),
        rate_per_second: new.rate_per_second,
        burst: new.burst,
    }))
    .await?;
    let mut view = KeyView::from(created.api_key.unwrap_or_default());
    view.key = Some(created.key);
    Ok(json(StatusCode::CREATED, &view))
}

/// A tenant's limits to change: a field left out is kept, 0 returns it to
/// the cluster's default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsChange {
    max_running_executions: Option<u32>,
    max_queued_executions: Option<u32>,
    max_running_builds: Option<u32>,
}

async fn set_tenant_limits(mut call: Call, name: String) -> Answer {
    let change: LimitsChange = call.json().await?;
    let tenant = rpc(
        tenants(&call).set_tenant_limits(pb::SetTenantLimitsRequest {
            name,
            limits: Some(pb::TenantLimits {
                max_running_executions: change.max_running_executions,
                max_queued_executions: change.max_queued_executions,
                max_running_builds: change.max_running_builds,
            }),
        }),
    )
    .await?;
    Ok(json(StatusCode::OK, &TenantView::from(tenant)))
}

/// Server-streamed gRPC items as NDJSON lines.
fn ndjson<T, V, S>(stream: S, view: fn(T) -> V) -> Response<ProxyBody>
where
    S: futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static,
    T: 'static,
    V: serde::Serialize + 'static,
{
    lines(
        "application/x-ndjson",
        stream.map(move |item| match item {
            Ok(item) => {
                let mut line = serde_json::to_vec(&view(item)).expect("views serialize");
                line.push(b'\n');
                Ok(Bytes::from(line))
            }
            Err(status) => Err(Box::new(status) as BoxError),
        }),
    )
}

async fn app_logs(call: &Call, id: &str) -> Answer {
    let tail = match call.query("tail") {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::bad_request(format!("tail: {t:?} is not a number")))?,
        None => 100,
    };
    let stream = rpc(apps(call).stream_app_logs(pb::StreamAppLogsRequest {
        app_id: id.to_owned(),
        instance_id: call.query("instance").unwrap_or("").to_owned(),
        tail,
        follow: call.query_flag("follow"),
    }))
    .await?;
    Ok(ndjson(stream, LogLineView::from))
}

async fn build_logs(call: &Call, id: &str) -> Answer {
    let stream = rpc(builds(call).stream_build_logs(pb::StreamBuildLogsRequest {
        build_id: id.to_owned(),
        follow: call.query_flag("follow"),
    }))
    .await?;
    Ok(lines(
        "text/plain; charset=utf-8",
        stream.map(|chunk| {
            chunk
                .map(|c| Bytes::from(c.data))
                .map_err(|s| Box::new(s) as BoxError)
        }),
    ))
}

async fn events(call: &Call) -> Answer {
    let after = match call.query("after") {
        Some(a) => a
            .parse()
            .map_err(|_| ApiError::bad_request(format!("after: {a:?} is not a sequence number")))?,
        None => 0,
    };
    let stream = rpc(EventServiceClient::new(call.channel.clone()).watch_events(
        pb::WatchEventsRequest {
            after_sequence: after,
            follow: call.query_flag("follow"),
            app_id: call.query("app_id").unwrap_or("").to_owned(),
        },
    ))
    .await?;
    Ok(ndjson(stream, EventView::from))
}

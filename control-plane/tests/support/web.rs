//! Talking HTTP to a gateway linked to a test control plane.

use super::*;
use berth_pki::Role;
use berth_proto::pb::{self, api_key_service_client::ApiKeyServiceClient};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::{net::SocketAddr, time::Duration};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn http_client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

pub async fn call(
    client: &Client,
    req: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let response = tokio::time::timeout(Duration::from_secs(90), client.request(req))
        .await
        .expect("the gateway answers in time")
        .expect("the gateway answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    (status, headers, value)
}

pub fn get(url: &str, key: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::get(url);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    req.body(Full::default()).unwrap()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A gateway linked to `cp` with its own gateway certificate.
pub async fn start_gateway(
    cluster: &Cluster,
    cp: &ControlPlane,
) -> (SocketAddr, CancellationToken) {
    let (addr, _, shutdown) = start_gateway_with_metrics(cluster, cp).await;
    (addr, shutdown)
}

/// [`start_gateway`], with the address of the gateway's `/metrics` too.
pub async fn start_gateway_with_metrics(
    cluster: &Cluster,
    cp: &ControlPlane,
) -> (SocketAddr, SocketAddr, CancellationToken) {
    let files = cluster.pki.issue(Role::Gateway, "gateway");
    let mut config =
        berth_gateway::Config::new(cp.url(), files, berth_gateway::LimitArgs::default());
    config.traffic_report_every = Duration::from_millis(500);
    let config = config.validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let listeners = berth_gateway::Listeners {
        users: listener,
        metrics,
    };
    tokio::spawn(berth_gateway::run(config, listeners, shutdown.clone()));
    let client = http_client();
    wait_for("the gateway to receive its routes", || {
        let client = client.clone();
        async move {
            let (status, _, _) = call(&client, get(&format!("http://{addr}/healthz"), None)).await;
            (status == StatusCode::OK).then_some(())
        }
    })
    .await;
    (addr, metrics_addr, shutdown)
}

/// An admin key (`admin`) or an invoker key of `tenant`.
pub async fn create_key(
    keys: &mut ApiKeyServiceClient<Channel>,
    tenant: &str,
    admin: bool,
) -> pb::CreateApiKeyResponse {
    let role = if admin {
        pb::KeyRole::Admin
    } else {
        pb::KeyRole::Invoker
    };
    create_key_with_role(keys, tenant, role).await
}

pub async fn create_key_with_role(
    keys: &mut ApiKeyServiceClient<Channel>,
    tenant: &str,
    role: pb::KeyRole,
) -> pb::CreateApiKeyResponse {
    keys.create_api_key(pb::CreateApiKeyRequest {
        tenant: tenant.into(),
        name: format!("{tenant} test key"),
        admin: false,
        role: role.into(),
        rate_per_second: 1000.0,
        burst: 1000,
    })
    .await
    .unwrap()
    .into_inner()
}

/// Polls until `check` sees the wanted status for `req`.
pub async fn wait_status(
    client: &Client,
    what: &str,
    make: impl Fn() -> Request<Full<Bytes>>,
    want: StatusCode,
) -> serde_json::Value {
    wait_for(what, || {
        let req = make();
        let client = client.clone();
        async move {
            let (status, _, body) = call(&client, req).await;
            (status == want).then_some(body)
        }
    })
    .await
}

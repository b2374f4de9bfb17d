//! Every refusal of the mTLS and role checks, against a real server.

mod support;

use berth_pki::{CertificateAuthority, LeafRequest, Role, TlsMaterial};
use berth_proto::pb::{self, node_service_client::NodeServiceClient};
use support::*;
use time::{Duration as TimeDuration, OffsetDateTime};
use tonic::{transport::Certificate, transport::ClientTlsConfig, Code};

async fn list_nodes_with(url: &str, tls: ClientTlsConfig) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    NodeServiceClient::new(channel)
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

fn tls_with(ca_pem: &str, cert: Option<(&str, &str)>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    match cert {
        Some((cert, key)) => config.identity(tonic::transport::Identity::from_pem(cert, key)),
        None => config,
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let err = list_nodes_with(&cp.url(), tls_with(&cluster.pki.ca.cert_pem, None))
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");
    // The same client with the admin certificate gets through.
    let admin = cluster.pki.material("admin");
    list_nodes_with(
        &cp.url(),
        tls_with(&admin.ca_pem, Some((&admin.cert_pem, &admin.key_pem))),
    )
    .await
    .unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let other = CertificateAuthority::generate("someone else").unwrap();
    let leaf = other
        .issue(&LeafRequest::new(Role::Admin, "admin", 1))
        .unwrap();
    let err = list_nodes_with(
        &cp.url(),
        tls_with(
            &cluster.pki.ca.cert_pem,
            Some((&leaf.cert_pem, &leaf.key_pem)),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");
    cp.stop().await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let now = OffsetDateTime::now_utc();
    let mut request = LeafRequest::new(Role::Admin, "old-admin", 1);
    request.not_before = now - TimeDuration::days(30);
    request.not_after = now - TimeDuration::days(1);
    let expired = cluster
        .pki
        .issue_request(request, "old-admin")
        .load()
        .unwrap();
    let err = list_nodes_with(
        &cp.url(),
        tls_with(&expired.ca_pem, Some((&expired.cert_pem, &expired.key_pem))),
    )
    .await
    .unwrap_err();
    assert!(err.contains("CertificateExpired"), "{err}");
    cp.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_our_ca_refuses_the_server() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let other = CertificateAuthority::generate("someone else").unwrap();
    let admin = cluster.pki.material("admin");
    let err = list_nodes_with(
        &cp.url(),
        tls_with(&other.cert_pem, Some((&admin.cert_pem, &admin.key_pem))),
    )
    .await
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    cp.stop().await;
}

#[tokio::test]
async fn plaintext_grpc_is_refused() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let url = format!("http://127.0.0.1:{}", cp.addr.port());
    let result = async {
        let channel = tonic::transport::Endpoint::from_shared(url)?
            .connect()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(
            NodeServiceClient::new(channel)
                .list_nodes(pb::ListNodesRequest::default())
                .await?,
        )
    }
    .await;
    assert!(result.is_err(), "a plaintext call went through");
    cp.stop().await;
}

#[tokio::test]
async fn an_agent_certificate_cannot_call_admin_rpcs() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    cluster.pki.issue(Role::Agent, "node-a");
    let mut as_agent = NodeServiceClient::new(cluster.client(&cp, "node-a").await);
    let status = as_agent
        .drain_node(pb::DrainNodeRequest {
            name: "node-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("agent/node-a"),
        "{}",
        status.message()
    );
    let status = as_agent
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Nor may a gateway speak for a node, though it may list them.
    cluster.pki.issue(Role::Gateway, "gateway");
    let mut as_gateway = NodeServiceClient::new(cluster.client(&cp, "gateway").await);
    as_gateway
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap();
    let status = refused_session(
        cluster.client(&cp, "gateway").await,
        valid_register("gateway"),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    cp.stop().await;
}

#[tokio::test]
async fn a_gateway_drains_nodes_only_for_an_admin_key() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let mut keys =
        pb::api_key_service_client::ApiKeyServiceClient::new(cluster.client(&cp, "admin").await);
    let tenant_key = support::web::create_key(&mut keys, "acme", false).await.key;
    let admin_key = support::web::create_key(&mut keys, "ops", true).await.key;
    cluster.pki.issue(Role::Gateway, "gateway");
    let mut as_gateway = NodeServiceClient::new(cluster.client(&cp, "gateway").await);
    let drain = |key: Option<&str>| {
        let mut request = tonic::Request::new(pb::DrainNodeRequest {
            name: "node-x".into(),
        });
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert("x-berth-key", key.parse().unwrap());
        }
        request
    };
    // The gateway's certificate alone, or with a tenant's key: refused.
    for key in [None, Some(tenant_key.as_str()), Some("berth_not_a_key")] {
        let status = as_gateway.drain_node(drain(key)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{key:?}: {status:?}");
    }
    // With an admin's key the call gets through (to a node that is not there).
    let status = as_gateway
        .drain_node(drain(Some(&admin_key)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    cp.stop().await;
}

#[tokio::test]
async fn an_agent_cannot_register_as_another_node() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    cluster.pki.issue(Role::Agent, "node-a");
    let status = refused_session(
        cluster.client(&cp, "node-a").await,
        valid_register("node-b"),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("node-b"), "{}", status.message());
    let mut admin = cluster.admin(&cp).await;
    let nodes = admin
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert!(nodes.is_empty(), "nothing registered: {nodes:?}");

    // An admin certificate is no agent at all.
    let status = refused_session(cluster.client(&cp, "admin").await, valid_register("admin")).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    cp.stop().await;
}

#[test]
fn material_is_what_the_harness_issued() {
    let pki = Pki::new();
    let admin: TlsMaterial = pki.material("admin");
    assert_eq!(admin.identity().unwrap().role, Role::Admin);
}

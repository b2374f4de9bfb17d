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

    // Nor may a gateway speak for a node, or list them without passing on
    // an admin's key.
    cluster.pki.issue(Role::Gateway, "gateway");
    let mut as_gateway = NodeServiceClient::new(cluster.client(&cp, "gateway").await);
    let status = as_gateway
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
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
    // The gateway's certificate alone, or with a tenant's key: refused; an
    // unknown key is no one.
    for (key, code) in [
        (None, Code::PermissionDenied),
        (Some(tenant_key.as_str()), Code::PermissionDenied),
        (Some("berth_not_a_key"), Code::Unauthenticated),
    ] {
        let status = as_gateway.drain_node(drain(key)).await.unwrap_err();
        assert_eq!(status.code(), code, "{key:?}: {status:?}");
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

/// An agent's session that stays open: what it sends and what it is sent.
struct Session {
    up: tokio::sync::mpsc::Sender<pb::AgentMessage>,
    down: tonic::Streaming<pb::ControlMessage>,
}

async fn session(cluster: &Cluster, cp: &ControlPlane, register: pb::Register) -> Session {
    let (up, rx) = tokio::sync::mpsc::channel(16);
    let name = register.node_name.clone();
    up.send(pb::AgentMessage {
        message: Some(pb::agent_message::Message::Register(register)),
    })
    .await
    .unwrap();
    let mut client =
        pb::agent_service_client::AgentServiceClient::new(cluster.client(cp, &name).await);
    let down = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Session { up, down }
}

impl Session {
    async fn send(&self, message: pb::agent_message::Message) {
        self.up
            .send(pb::AgentMessage {
                message: Some(message),
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_agent_speaks_only_for_its_own_node() {
    use pb::agent_message::Message as Up;
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    cluster.pki.issue(Role::Agent, "node-a");
    cluster.pki.issue(Role::Agent, "node-b");
    let mut register = valid_register("node-a");
    register.runtimes = vec![pb::RuntimeInfo {
        name: "python".into(),
        available: true,
        version: "3".into(),
        detail: String::new(),
    }];
    let mut a = session(&cluster, &cp, register).await;
    let b = session(&cluster, &cp, valid_register("node-b")).await;

    let admin = cluster.client(&cp, "admin").await;
    let mut executions = pb::execution_service_client::ExecutionServiceClient::new(admin);
    let submitted = executions
        .submit_execution(pb::ExecuteRequest {
            language: pb::Language::Python as i32,
            code: "print(1)".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // It is placed on node-a, the one that runs python.
    let placed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let message = a.down.message().await.unwrap().expect("node-a's stream");
            if let Some(pb::control_message::Message::Execute(request)) = message.message {
                return request;
            }
        }
    })
    .await
    .expect("the execution reaches node-a");
    assert_eq!(placed.execution_id, submitted.id);

    // node-b answers for it, then says something whose effect shows it was
    // read (messages of one stream are handled in order).
    let forged = pb::ExecutionResult {
        execution_id: submitted.id.clone(),
        state: pb::ExecutionState::Succeeded as i32,
        stdout: b"forged".to_vec(),
        ..Default::default()
    };
    b.send(Up::ExecutionResult(forged.clone())).await;
    b.send(Up::Heartbeat(pb::Heartbeat {
        firewall_problem: "marker".into(),
        ..Default::default()
    }))
    .await;
    let nodes = cluster.admin(&cp).await;
    wait_for("node-b's heartbeat after its forged result", || {
        let mut nodes = nodes.clone();
        async move {
            let node = nodes
                .get_node(pb::GetNodeRequest {
                    name: "node-b".into(),
                })
                .await
                .ok()?
                .into_inner();
            (node.firewall == "missing: marker").then_some(())
        }
    })
    .await;
    let record = executions
        .get_execution(pb::GetExecutionRequest {
            execution_id: submitted.id.clone(),
            tenant: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        record.state,
        pb::ExecutionState::Running as i32,
        "node-b's result was taken: {record:?}"
    );
    assert!(record.stdout.is_empty());

    // Nor does it read another node's build context.
    let mut as_b =
        pb::agent_service_client::AgentServiceClient::new(cluster.client(&cp, "node-b").await);
    let status = as_b
        .fetch_build_context(pb::FetchBuildContextRequest {
            build_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // node-a's own result is taken.
    a.send(Up::ExecutionResult(pb::ExecutionResult {
        stdout: b"1\n".to_vec(),
        ..forged
    }))
    .await;
    wait_for("node-a's result", || {
        let mut executions = executions.clone();
        let id = submitted.id.clone();
        async move {
            let e = executions
                .get_execution(pb::GetExecutionRequest {
                    execution_id: id,
                    tenant: String::new(),
                })
                .await
                .ok()?
                .into_inner();
            (e.state == pb::ExecutionState::Succeeded as i32).then_some(e)
        }
    })
    .await;
    cp.stop().await;
}

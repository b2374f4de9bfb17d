//! Standard gRPC tooling works (health, reflection) and Prometheus metrics
//! count nodes by state and RPCs by method and code.

mod support;

use berth_proto::pb;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics_are_served() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;

    let channel = cluster.client(&cp, "admin").await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "berth.v1.NodeService", "berth.v1.AgentService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.status(), ServingStatus::Serving, "{service}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "berth.v1.NodeService",
        "berth.v1.AgentService",
        "berth.v1.AppService",
        "berth.v1.ExecutionService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut admin = cluster.admin(&cp).await;
    let agent = cluster.agent(&cp, "node-m");
    wait_node_state(&mut admin, "node-m", pb::NodeState::Ready).await;
    let _ = admin
        .get_node(pb::GetNodeRequest { name: "Bad".into() })
        .await
        .unwrap_err();
    let metrics = wait_for("node gauges", || async {
        let text = scrape(cp.metrics_addr).await;
        text.contains("berth_nodes{state=\"ready\"} 1")
            .then_some(text)
    })
    .await;
    assert!(
        metrics.contains("berth_nodes{state=\"down\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_grpc_requests_total{method=\"/berth.v1.NodeService/GetNode\",code=\"InvalidArgument\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("method=\"/berth.v1.NodeService/ListNodes\",code=\"Ok\""),
        "{metrics}"
    );
    assert!(metrics.contains("berth_agent_sessions 1"), "{metrics}");
    kill_agent(agent).await;
    cp.stop().await;
}

//! Bad input gets `InvalidArgument` naming the field, and nothing is written.

mod support;

use berth_pki::Role;
use berth_proto::pb::{self, node_service_client::NodeServiceClient};
use support::*;
use tonic::Code;

fn assert_invalid(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(field),
        "message {:?} should name {field}",
        status.message()
    );
}

#[tokio::test]
async fn node_names_that_are_empty_too_long_or_not_dns_safe_are_refused() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let mut admin = cluster.admin(&cp).await;
    let long = "a".repeat(300);
    for (name, says) in [
        ("", "must not be empty"),
        (long.as_str(), "the limit is 253"),
        ("Node_1", "lowercase"),
        ("-x", "'-'"),
    ] {
        let status = admin
            .get_node(pb::GetNodeRequest { name: name.into() })
            .await
            .unwrap_err();
        assert_invalid(&status, "name");
        assert!(
            status.message().contains(says),
            "{:?} should say {says:?}",
            status.message()
        );
        let status = admin
            .drain_node(pb::DrainNodeRequest { name: name.into() })
            .await
            .unwrap_err();
        assert_invalid(&status, "name");
    }
    let status = admin
        .get_node(pb::GetNodeRequest {
            name: "nowhere".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    cp.stop().await;
}

#[tokio::test]
async fn unknown_enum_values_are_refused() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let mut admin = cluster.admin(&cp).await;
    let status = admin
        .list_nodes(pb::ListNodesRequest { state: 42 })
        .await
        .unwrap_err();
    assert_invalid(&status, "state");
    assert!(status.message().contains("42"));
    cp.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let mut cluster = Cluster::new(Backend::Sqlite);
    cluster.ttl = std::time::Duration::from_secs(5);
    let cp = {
        // A small limit keeps the test quick; the default is 4 MiB.
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let config = berth_control_plane::Config {
            max_message_bytes: 64 * 1024,
            ..cluster.config()
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(berth_control_plane::run(
            config.validate().unwrap(),
            grpc,
            metrics,
            shutdown.clone(),
        ));
        ControlPlane {
            addr,
            metrics_addr,
            shutdown,
            task,
        }
    };
    let mut admin = wait_for("the control plane", || {
        let cluster = &cluster;
        let url = cp.url();
        async move {
            let channel = cluster
                .pki
                .material("admin")
                .endpoint(&url)
                .ok()?
                .connect()
                .await
                .ok()?;
            Some(NodeServiceClient::new(channel))
        }
    })
    .await;
    let status = admin
        .get_node(pb::GetNodeRequest {
            name: "a".repeat(100 * 1024),
        })
        .await
        .unwrap_err();
    assert_invalid(&status, "request");
    assert!(
        status.message().contains("the limit is 65536"),
        "{}",
        status.message()
    );
    // A normal request on the same server still works.
    admin
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn bad_registrations_are_refused_and_nothing_is_written() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    cluster.pki.issue(Role::Agent, "node-a");
    let good = valid_register("node-a");
    let huge_label: std::collections::HashMap<_, _> =
        [("zone".to_owned(), "x".repeat(1000))].into();
    let bad_label: std::collections::HashMap<_, _> =
        [("bad key!".to_owned(), "x".to_owned())].into();
    let cases = [
        (
            pb::Register {
                node_name: String::new(),
                ..good.clone()
            },
            "register.node_name",
        ),
        (
            pb::Register {
                address: String::new(),
                ..good.clone()
            },
            "register.address",
        ),
        (
            pb::Register {
                address: "a b".into(),
                ..good.clone()
            },
            "register.address",
        ),
        (
            pb::Register {
                capacity: None,
                ..good.clone()
            },
            "register.capacity",
        ),
        (
            pb::Register {
                labels: huge_label,
                ..good.clone()
            },
            "register.labels[\"zone\"]",
        ),
        (
            pb::Register {
                labels: bad_label,
                ..good.clone()
            },
            "register.labels[\"bad key!\"]",
        ),
        (
            pb::Register {
                runtimes: vec![pb::RuntimeInfo {
                    name: "Not OK".into(),
                    ..Default::default()
                }],
                ..good.clone()
            },
            "register.runtimes[0].name",
        ),
        (
            pb::Register {
                agent_version: "v".repeat(100),
                ..good.clone()
            },
            "register.agent_version",
        ),
    ];
    for (bad, field) in cases {
        let status = refused_session(cluster.client(&cp, "node-a").await, bad).await;
        assert_invalid(&status, field);
    }
    let mut admin = cluster.admin(&cp).await;
    let nodes = admin
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert!(nodes.is_empty(), "no half-registered node: {nodes:?}");
    cp.stop().await;
}

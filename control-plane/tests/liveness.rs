//! Control plane and two agents over real mTLS: registration, heartbeats,
//! a node going down after the TTL and coming back.

mod support;

use berth_proto::pb;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_register_one_dies_and_comes_back() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let mut admin = cluster.admin(&cp).await;

    let a = cluster.agent(&cp, "node-a");
    let b = cluster.agent(&cp, "node-b");
    wait_node_state(&mut admin, "node-a", pb::NodeState::Ready).await;
    wait_node_state(&mut admin, "node-b", pb::NodeState::Ready).await;

    let nodes = admin
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["node-a", "node-b"]
    );
    for node in &nodes {
        assert_eq!(node.address, "127.0.0.1");
        assert!(node.connected);
        let capacity = node.capacity.unwrap();
        assert!(
            capacity.cpu_millis >= 1000 && capacity.memory_bytes > 0,
            "{capacity:?}"
        );
        assert!(
            node.runtimes.iter().any(|r| r.name == "docker"),
            "{:?}",
            node.runtimes
        );
        assert_eq!(node.labels.get("zone").map(String::as_str), Some("test"));
    }

    // Heartbeats move last_heartbeat_at forward.
    let first = node_heartbeat(&mut admin, "node-a").await;
    wait_for("a newer heartbeat", || {
        let mut admin = admin.clone();
        async move { (node_heartbeat(&mut admin, "node-a").await > first).then_some(()) }
    })
    .await;

    kill_agent(b).await;
    wait_node_state(&mut admin, "node-b", pb::NodeState::Down).await;
    assert_eq!(
        node_state(&mut admin, "node-a").await,
        Some(pb::NodeState::Ready),
        "the live node stays ready"
    );

    let b = cluster.agent(&cp, "node-b");
    wait_node_state(&mut admin, "node-b", pb::NodeState::Ready).await;

    // Draining survives the node going down and coming back.
    let drained = admin
        .drain_node(pb::DrainNodeRequest {
            name: "node-b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(drained.state(), pb::NodeState::Draining);
    assert!(drained.drained);
    kill_agent(b).await;
    wait_node_state(&mut admin, "node-b", pb::NodeState::Down).await;
    let b = cluster.agent(&cp, "node-b");
    wait_node_state(&mut admin, "node-b", pb::NodeState::Draining).await;
    let undrained = admin
        .undrain_node(pb::UndrainNodeRequest {
            name: "node-b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(undrained.state(), pb::NodeState::Ready);

    // The filter returns only nodes in the state asked for.
    let ready = admin
        .list_nodes(pb::ListNodesRequest {
            state: pb::NodeState::Ready as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(ready.len(), 2);
    let down = admin
        .list_nodes(pb::ListNodesRequest {
            state: pb::NodeState::Down as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert!(down.is_empty());

    kill_agent(a).await;
    kill_agent(b).await;
    cp.stop().await;
}

async fn node_heartbeat(
    admin: &mut pb::node_service_client::NodeServiceClient<tonic::transport::Channel>,
    name: &str,
) -> (i64, i32) {
    let node = admin
        .get_node(pb::GetNodeRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner();
    let at = node.last_heartbeat_at.unwrap();
    (at.seconds, at.nanos)
}

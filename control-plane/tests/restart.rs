//! A control plane restarted on the same data: agents reconnect by
//! themselves, nodes and their history are kept. Run on SQLite and PostgreSQL.

mod support;

use berth_proto::pb::{self, event_service_client::EventServiceClient};
use support::*;

async fn history(cluster: &Cluster, cp: &ControlPlane, node: &str) -> Vec<String> {
    let mut events = EventServiceClient::new(cluster.client(cp, "admin").await);
    let mut stream = events
        .watch_events(pb::WatchEventsRequest {
            after_sequence: 0,
            follow: false,
            app_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        if event.node_name == node {
            kinds.push(event.kind);
        }
    }
    kinds
}

async fn restart_keeps_nodes_and_history(backend: Backend) {
    let cluster = Cluster::new(backend);
    let cp = cluster.start().await;
    let addr = cp.addr;
    let mut admin = cluster.admin(&cp).await;
    let a = cluster.agent(&cp, "node-a");
    let b = cluster.agent(&cp, "node-b");
    wait_node_state(&mut admin, "node-a", pb::NodeState::Ready).await;
    wait_node_state(&mut admin, "node-b", pb::NodeState::Ready).await;
    admin
        .drain_node(pb::DrainNodeRequest {
            name: "node-b".into(),
        })
        .await
        .unwrap();
    let before = admin
        .get_node(pb::GetNodeRequest {
            name: "node-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let history_before = history(&cluster, &cp, "node-a").await;
    assert_eq!(history_before, ["node.registered"]);
    cp.stop().await;

    // The agents notice and keep retrying; a new control plane on the same
    // address and data takes them back without anyone touching them.
    let cp = cluster.start_on(addr).await;
    let mut admin = cluster.admin(&cp).await;
    wait_node_state(&mut admin, "node-a", pb::NodeState::Ready).await;
    wait_node_state(&mut admin, "node-b", pb::NodeState::Draining).await;
    // The stored state may still say ready: wait for the agent's new session.
    let after = wait_for("node-a to reconnect", || {
        let mut admin = admin.clone();
        async move {
            let node = admin
                .get_node(pb::GetNodeRequest {
                    name: "node-a".into(),
                })
                .await
                .ok()?
                .into_inner();
            (node.connected && node.state == pb::NodeState::Ready as i32).then_some(node)
        }
    })
    .await;
    assert_eq!(
        after.registered_at, before.registered_at,
        "registration time kept"
    );
    wait_for("both agents to have registered twice", || {
        let (a, b) = (a.status.borrow().sessions, b.status.borrow().sessions);
        async move { (a >= 2 && b >= 2).then_some(()) }
    })
    .await;

    let history_after = history(&cluster, &cp, "node-a").await;
    assert_eq!(
        history_after[0], "node.registered",
        "old history kept: {history_after:?}"
    );
    assert!(
        history_after.iter().any(|k| k == "node.reconnected"),
        "{history_after:?}"
    );
    let b_history = history(&cluster, &cp, "node-b").await;
    assert!(
        b_history.iter().any(|k| k == "node.drained"),
        "{b_history:?}"
    );

    kill_agent(a).await;
    kill_agent(b).await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_nodes_and_history_on_sqlite() {
    restart_keeps_nodes_and_history(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_nodes_and_history_on_postgres() {
    restart_keeps_nodes_and_history(Backend::postgres().await).await;
}

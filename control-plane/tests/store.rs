//! The persistence suite, run on SQLite and on PostgreSQL: the node registry
//! and the event log through the store, against a real database.

mod support;

use berth_control_plane::{
    db,
    store::{nodes::Registration, Store},
};
use berth_proto::domain::{NodeName, NodeState};
use chrono::Utc;
use support::Backend;

async fn open(backend: &Backend, dir: &std::path::Path) -> Store {
    Store::new(db::connect(backend.url().as_deref(), dir).await.unwrap())
}

fn registration(name: &str) -> Registration {
    Registration {
        name: NodeName::parse("name", name).unwrap(),
        address: "10.0.0.1".into(),
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        runtimes: vec![berth_proto::pb::RuntimeInfo {
            name: "docker".into(),
            available: true,
            version: "28".into(),
            detail: String::new(),
        }],
        labels: [("zone".to_owned(), "a".to_owned())].into(),
        agent_version: "0.1.0".into(),
    }
}

async fn node_registry_round_trip(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&backend, dir.path()).await;
    let name = NodeName::parse("name", "node-1").unwrap();

    let (node, previous) = store.register_node(registration("node-1")).await.unwrap();
    assert_eq!(previous, None);
    assert_eq!(node.state, NodeState::Ready);
    assert_eq!(node.memory_bytes, 8 << 30);
    assert_eq!(node.runtimes[0].name, "docker");
    assert_eq!(node.labels.get("zone").map(String::as_str), Some("a"));

    // Nothing is stale yet; a cutoff in the future expires it.
    assert!(store
        .expire_nodes(Utc::now() - chrono::Duration::seconds(60))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .expire_nodes(Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        std::slice::from_ref(&name)
    );
    assert_eq!(store.get_node(&name).await.unwrap().state, NodeState::Down);
    assert!(
        store
            .expire_nodes(Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap()
            .is_empty(),
        "down once"
    );

    // Drained while down: stays down, comes back draining.
    assert_eq!(
        store.set_drained(&name, true).await.unwrap().state,
        NodeState::Down
    );
    assert_eq!(store.heartbeat(&name).await.unwrap(), NodeState::Draining);
    let (node, previous) = store.register_node(registration("node-1")).await.unwrap();
    assert_eq!(previous, Some(NodeState::Draining));
    assert_eq!(node.state, NodeState::Draining);
    assert_eq!(
        store.set_drained(&name, false).await.unwrap().state,
        NodeState::Ready
    );

    store.register_node(registration("node-0")).await.unwrap();
    let names: Vec<_> = store
        .list_nodes(None)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name.to_string())
        .collect();
    assert_eq!(names, ["node-0", "node-1"]);
    assert_eq!(
        store.list_nodes(Some(NodeState::Down)).await.unwrap().len(),
        0
    );

    let kinds: Vec<_> = store
        .events_after(0, None, Some("node-1"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "node.registered",
            "node.down",
            "node.drained",
            "node.ready",
            "node.reconnected",
            "node.undrained"
        ]
    );
    let all = store.events_after(0, None, None).await.unwrap();
    assert!(
        all.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "ordered by sequence"
    );
    let after = store
        .events_after(all[2].sequence, None, None)
        .await
        .unwrap();
    assert_eq!(after.len(), all.len() - 3);

    // A second open of the same database applies no migration twice and sees the same data.
    drop(store);
    let again = open(&backend, dir.path()).await;
    assert_eq!(again.list_nodes(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn node_registry_round_trip_on_sqlite() {
    node_registry_round_trip(Backend::Sqlite).await;
}

#[tokio::test]
async fn node_registry_round_trip_on_postgres() {
    node_registry_round_trip(Backend::postgres().await).await;
}

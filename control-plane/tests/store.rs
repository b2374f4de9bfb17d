//! The persistence suite, run on SQLite and on PostgreSQL: the node registry
//! and the event log through the store, against a real database.

mod support;

use berth_control_plane::{
    db,
    store::{events::EventFilter, nodes::Registration, Store},
};
use berth_proto::domain::{NodeName, NodeState};
use chrono::{Timelike, Utc};
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
    assert_eq!(
        store.heartbeat(&name, "").await.unwrap(),
        NodeState::Draining
    );
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
        .events_after(
            0,
            EventFilter {
                node_name: Some("node-1"),
                ..Default::default()
            },
        )
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
    let all = store.events_after(0, EventFilter::default()).await.unwrap();
    assert!(
        all.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "ordered by sequence"
    );
    let after = store
        .events_after(all[2].sequence, EventFilter::default())
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

/// A node's container firewall is what its agent last said, unknown again
/// after it registers anew; changes to and from missing are events.
async fn a_nodes_firewall_is_what_it_last_said(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&backend, dir.path()).await;
    let name = NodeName::parse("name", "node-1").unwrap();
    let firewall = |store: &Store| {
        let store = store.clone();
        let name = name.clone();
        async move {
            store
                .get_node(&name)
                .await
                .unwrap()
                .to_proto(false)
                .firewall
        }
    };
    store.register_node(registration("node-1")).await.unwrap();
    assert_eq!(firewall(&store).await, "unknown");
    store.heartbeat(&name, "").await.unwrap();
    assert_eq!(firewall(&store).await, "ok");
    store.heartbeat(&name, "iptables: not found").await.unwrap();
    store.heartbeat(&name, "iptables: not found").await.unwrap();
    assert_eq!(firewall(&store).await, "missing: iptables: not found");
    store.heartbeat(&name, "").await.unwrap();
    assert_eq!(firewall(&store).await, "ok");
    store.register_node(registration("node-1")).await.unwrap();
    assert_eq!(firewall(&store).await, "unknown");
    let kinds: Vec<_> = store
        .events_after(
            0,
            EventFilter {
                node_name: Some("node-1"),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "node.registered",
            "node.firewall_missing",
            "node.firewall_restored",
            "node.reconnected"
        ]
    );
}

#[tokio::test]
async fn a_nodes_firewall_is_what_it_last_said_on_sqlite() {
    a_nodes_firewall_is_what_it_last_said(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_nodes_firewall_is_what_it_last_said_on_postgres() {
    a_nodes_firewall_is_what_it_last_said(Backend::postgres().await).await;
}

/// Every entity writes and reads back a full row: the entities and the
/// migrations agree on every column, on both databases.
async fn entities_match_the_schema(backend: Backend) {
    use berth_control_plane::db::entities::*;
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel};

    let dir = tempfile::tempdir().unwrap();
    let db = db::connect(backend.url().as_deref(), dir.path())
        .await
        .unwrap();
    let now = Utc::now().with_nanosecond(123_000_000).unwrap();

    let tenant = tenants::Entity::find_by_id("default")
        .one(&db)
        .await
        .unwrap();
    assert!(tenant.is_some(), "the default tenant exists from the start");

    let node = nodes::Model {
        name: "node-1".into(),
        state: "ready".into(),
        drained: false,
        address: "10.0.0.1".into(),
        cpu_millis: 2000,
        memory_bytes: 1 << 33,
        runtimes: "[]".into(),
        labels: "{}".into(),
        agent_version: "0.1.0".into(),
        registered_at: now,
        last_heartbeat_at: now,
        updated_at: now,
        firewall_problem: Some("iptables: not found".into()),
    };
    let key = api_keys::Model {
        id: "k1".into(),
        tenant: "default".into(),
        name: "ci".into(),
        prefix: "bk_12345".into(),
        key_hash: "hash".into(),
        admin: false,
        role: "deployer".into(),
        rate_per_second: 12.5,
        burst: 20,
        created_at: now,
        revoked_at: None,
    };
    let app = apps::Model {
        id: "a1".into(),
        tenant: "default".into(),
        name: "hello".into(),
        runtime: "python".into(),
        app_hostname: Some("hello.example".into()),
        container_port: 8080,
        cpu_millis: 1000,
        memory_bytes: 512 << 20,
        min_instances: 1,
        max_instances: 3,
        env: "{}".into(),
        entry: "main.py".into(),
        command: "[]".into(),
        state: "building".into(),
        status_message: String::new(),
        current_build_id: Some("b1".into()),
        created_at: now,
        updated_at: now,
        stopped: false,
        request_timeout_ms: 5_000,
        max_body_bytes: 1 << 20,
        idle_timeout_s: 60,
        last_request_at: Some(now),
    };
    let build = builds::Model {
        id: "b1".into(),
        app_id: "a1".into(),
        state: "building".into(),
        digest: "0123456789ab".into(),
        image_tag: "berth-app-default-hello:0123456789ab".into(),
        logs: "step 1/3".into(),
        error: String::new(),
        created_at: now,
        finished_at: None,
        node_name: Some("node-1".into()),
        context_bytes: 4096,
        cached: false,
    };
    let instance = instances::Model {
        id: "i1".into(),
        app_id: "a1".into(),
        build_id: Some("b1".into()),
        node_name: Some("node-1".into()),
        desired_state: "running".into(),
        state: "pending".into(),
        container_id: String::new(),
        host_port: 0,
        restarts: 0,
        error: String::new(),
        created_at: now,
        updated_at: now,
    };
    let execution = executions::Model {
        id: "e1".into(),
        tenant: "default".into(),
        language: "python".into(),
        state: "succeeded".into(),
        node_name: Some("node-1".into()),
        timeout_ms: 30_000,
        memory_bytes: 128 << 20,
        stdout: b"hello\n\x00\xff".to_vec(),
        stderr: Vec::new(),
        stdout_truncated: false,
        stderr_truncated: true,
        exit_code: Some(0),
        signal: None,
        wall_time_ms: 12,
        cpu_time_ms: 10,
        peak_memory_bytes: 9 << 20,
        error: String::new(),
        created_at: now,
        started_at: Some(now),
        finished_at: Some(now),
    };

    assert_eq!(
        node.clone().into_active_model().insert(&db).await.unwrap(),
        node
    );
    assert_eq!(
        key.clone().into_active_model().insert(&db).await.unwrap(),
        key
    );
    assert_eq!(
        app.clone().into_active_model().insert(&db).await.unwrap(),
        app
    );
    assert_eq!(
        build.clone().into_active_model().insert(&db).await.unwrap(),
        build
    );
    assert_eq!(
        instance
            .clone()
            .into_active_model()
            .insert(&db)
            .await
            .unwrap(),
        instance
    );
    assert_eq!(
        execution
            .clone()
            .into_active_model()
            .insert(&db)
            .await
            .unwrap(),
        execution
    );
    assert_eq!(
        executions::Entity::find_by_id("e1").one(&db).await.unwrap(),
        Some(execution)
    );

    // Deleting an app takes its builds and instances with it.
    apps::Entity::delete_by_id("a1").exec(&db).await.unwrap();
    assert!(builds::Entity::find_by_id("b1")
        .one(&db)
        .await
        .unwrap()
        .is_none());
    assert!(instances::Entity::find_by_id("i1")
        .one(&db)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn entities_match_the_schema_on_sqlite() {
    entities_match_the_schema(Backend::Sqlite).await;
}

#[tokio::test]
async fn entities_match_the_schema_on_postgres() {
    entities_match_the_schema(Backend::postgres().await).await;
}

/// An execution queued, started and finished through the store: the end is
/// recorded once, with every field of the result, and a second end (a late
/// cancel, a lost node) leaves it as it was.
async fn an_execution_ends_once(backend: Backend) {
    use berth_control_plane::store::executions::NewExecution;
    use berth_proto::{domain::ExecutionState, pb};
    let dir = tempfile::tempdir().unwrap();
    let store = open(&backend, dir.path()).await;
    let id = uuid::Uuid::new_v4().to_string();
    store
        .insert_execution(NewExecution {
            id: &id,
            tenant: "default",
            language: "python",
            timeout_ms: 1000,
            memory_bytes: 64 << 20,
            state: ExecutionState::Queued,
            error: "",
        })
        .await
        .unwrap();
    store.start_execution(&id, "node-1").await.unwrap();
    let result = pb::ExecutionResult {
        execution_id: id.clone(),
        stdout: b"out\n".to_vec(),
        stderr: vec![0xff, 0x00, b'e'],
        stdout_truncated: true,
        exit_code: 3,
        wall_time_ms: 12,
        cpu_time_ms: 7,
        peak_memory_bytes: 5 << 20,
        ..Default::default()
    };
    let done = store
        .finish_execution(&id, ExecutionState::Failed, Some(&result), "exit 3")
        .await
        .unwrap();
    let read = store.get_execution(&id).await.unwrap();
    assert_eq!(done, read, "the returned row is the stored one");
    assert_eq!(read.state, "failed");
    assert_eq!(read.node_name.as_deref(), Some("node-1"));
    assert_eq!(read.stdout, b"out\n");
    assert_eq!(read.stderr, vec![0xff, 0x00, b'e']);
    assert!(read.stdout_truncated && !read.stderr_truncated);
    assert_eq!((read.exit_code, read.signal), (Some(3), None));
    assert_eq!(
        (read.wall_time_ms, read.cpu_time_ms, read.peak_memory_bytes),
        (12, 7, 5 << 20)
    );
    assert_eq!(read.error, "exit 3");
    assert!(read.started_at.is_some() && read.finished_at.is_some());

    let again = store
        .finish_execution(&id, ExecutionState::Cancelled, None, "too late")
        .await
        .unwrap();
    assert_eq!(again, read, "a finished execution stays as it ended");
    assert!(store
        .finish_execution("no-such-execution", ExecutionState::Failed, None, "")
        .await
        .is_err());
}

#[tokio::test]
async fn an_execution_ends_once_on_sqlite() {
    an_execution_ends_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_execution_ends_once_on_postgres() {
    an_execution_ends_once(Backend::postgres().await).await;
}

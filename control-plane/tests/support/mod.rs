//! Test harness: a real CA and certificates in a temp dir, a real control
//! plane on 127.0.0.1:0 over mTLS, real agents, and the database backends.
#![allow(dead_code)]

pub mod apps;
pub mod web;

use berth_control_plane::Config;
use berth_pki::{CertificateAuthority, LeafRequest, Role, TlsFiles, TlsMaterial};
use berth_proto::pb::{self, node_service_client::NodeServiceClient};
use sea_orm::{ConnectionTrait, Database};
use std::{future::Future, net::SocketAddr, time::Duration};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How long any wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_within(WAIT, what, check).await
}

/// [`wait_for`] with its own limit (builds take longer).
pub async fn wait_within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CA and leaf certificates in a temp dir.
pub struct Pki {
    pub dir: TempDir,
    pub ca: CertificateAuthority,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("berth test CA").unwrap();
        ca.save(dir.path()).unwrap();
        let pki = Self { dir, ca };
        pki.issue_request(
            LeafRequest::new(Role::ControlPlane, "control-plane", 1)
                .with_sans(["localhost".into(), "127.0.0.1".into()]),
            "control-plane",
        );
        pki.issue(Role::Admin, "admin");
        pki
    }

    /// Issues a certificate for `role`/`name`, saved as `{name}.pem`.
    pub fn issue(&self, role: Role, name: &str) -> TlsFiles {
        self.issue_request(LeafRequest::new(role, name, 1), name)
    }

    pub fn issue_request(&self, request: LeafRequest, stem: &str) -> TlsFiles {
        self.ca
            .issue(&request)
            .unwrap()
            .save(self.dir.path(), stem)
            .unwrap();
        TlsFiles::in_dir(self.dir.path(), stem)
    }

    pub fn files(&self, stem: &str) -> TlsFiles {
        TlsFiles::in_dir(self.dir.path(), stem)
    }

    pub fn material(&self, stem: &str) -> TlsMaterial {
        self.files(stem).load().unwrap()
    }
}

/// Where the control plane keeps its state in a test.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// A fresh database on the PostgreSQL server of `BERTH_TEST_DATABASE_URL`.
    Postgres(String),
}

impl Backend {
    pub async fn postgres() -> Self {
        let admin = std::env::var("BERTH_TEST_DATABASE_URL").expect(
            "BERTH_TEST_DATABASE_URL is not set: run the tests with scripts/test.sh, \
             which starts PostgreSQL and sets it",
        );
        let name = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
        let db = Database::connect(&admin)
            .await
            .expect("connecting to PostgreSQL");
        db.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        db.close().await.unwrap();
        let base = admin.rsplit_once('/').expect("URL has a database").0;
        Backend::Postgres(format!("{base}/{name}"))
    }

    pub fn url(&self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres(url) => Some(url.clone()),
        }
    }
}

/// A running control plane.
pub struct ControlPlane {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), berth_control_plane::ServeError>>,
}

pub struct Cluster {
    pub pki: Pki,
    pub data: TempDir,
    pub backend: Backend,
    pub ttl: Duration,
    pub heartbeat: Duration,
}

impl Cluster {
    pub fn new(backend: Backend) -> Self {
        Self {
            pki: Pki::new(),
            data: tempfile::tempdir().unwrap(),
            backend,
            ttl: Duration::from_millis(1500),
            heartbeat: Duration::from_millis(200),
        }
    }

    pub fn config(&self) -> Config {
        Config {
            database_url: self.backend.url(),
            tls: self.pki.files("control-plane"),
            node_ttl: self.ttl,
            heartbeat_interval: self.heartbeat,
            ..Config::for_data_dir(self.data.path().to_owned())
        }
    }

    /// Starts a control plane on fresh ports.
    pub async fn start(&self) -> ControlPlane {
        self.start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts a control plane on `addr` (to come back where agents look for it).
    pub async fn start_on(&self, addr: SocketAddr) -> ControlPlane {
        let grpc = bind_retrying(addr).await;
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, metrics_addr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let config = self.config().validate().unwrap();
        let task = tokio::spawn(berth_control_plane::run(
            config,
            grpc,
            metrics,
            shutdown.clone(),
        ));
        let cp = ControlPlane {
            addr,
            metrics_addr,
            shutdown,
            task,
        };
        // Ready once it answers over mTLS.
        let admin = self.pki.material("admin");
        let url = cp.url();
        wait_for("the control plane to answer", || {
            let admin = admin.clone();
            let url = url.clone();
            async move {
                let channel = admin.endpoint(&url).ok()?.connect().await.ok()?;
                NodeServiceClient::new(channel)
                    .list_nodes(pb::ListNodesRequest::default())
                    .await
                    .ok()
            }
        })
        .await;
        cp
    }

    /// An agent for node `name` with its own certificate.
    pub fn agent(&self, cp: &ControlPlane, name: &str) -> berth_node_agent::Agent {
        let files = if self.pki.files(name).cert.exists() {
            self.pki.files(name)
        } else {
            self.pki.issue(Role::Agent, name)
        };
        let mut config = berth_node_agent::Config::new(cp.url(), files);
        config.work_dir = self.data.path().join("agents").join(name);
        config.reconnect_min = Duration::from_millis(50);
        config.reconnect_max = Duration::from_millis(500);
        config.labels.insert("zone".into(), "test".into());
        // The sandbox helper cargo built for the workspace (target/debug).
        let helper = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("berth-sandbox")))
            .filter(|p| p.is_file());
        config.sandbox_helper = helper.map(|p| (p, Vec::new()));
        let shutdown = CancellationToken::new();
        berth_node_agent::start(config.validate().unwrap(), shutdown).unwrap()
    }

    pub async fn client(&self, cp: &ControlPlane, stem: &str) -> Channel {
        self.pki
            .material(stem)
            .endpoint(&cp.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn admin(&self, cp: &ControlPlane) -> NodeServiceClient<Channel> {
        NodeServiceClient::new(self.client(cp, "admin").await)
    }
}

/// The listener of a restarted control plane may need a moment until the
/// old socket is gone.
async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) if tokio::time::Instant::now() < deadline => {
                eprintln!("bind {addr}: {err}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("bind {addr}: {err}"),
        }
    }
}

impl ControlPlane {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Graceful stop; the run must end cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("control plane stops in time")
            .unwrap()
            .expect("control plane ends without error");
    }
}

/// Stops an agent, as if its process were killed.
pub async fn kill_agent(agent: berth_node_agent::Agent) {
    agent.stop.cancel();
    agent.task.abort();
    let _ = agent.task.await;
}

/// The node's state as the admin API reports it.
pub async fn node_state(
    admin: &mut NodeServiceClient<Channel>,
    name: &str,
) -> Option<pb::NodeState> {
    let node = admin
        .get_node(pb::GetNodeRequest { name: name.into() })
        .await
        .ok()?
        .into_inner();
    pb::NodeState::try_from(node.state).ok()
}

/// Waits until node `name` is in `state`.
pub async fn wait_node_state(
    admin: &mut NodeServiceClient<Channel>,
    name: &str,
    state: pb::NodeState,
) {
    wait_for(&format!("node {name} to be {state:?}"), || {
        let mut admin = admin.clone();
        async move { (node_state(&mut admin, name).await == Some(state)).then_some(()) }
    })
    .await
}

/// Opens an agent session whose first message is `register`, expecting the
/// control plane to refuse it; returns the refusal.
pub async fn refused_session(channel: Channel, register: pb::Register) -> tonic::Status {
    let first = pb::AgentMessage {
        message: Some(pb::agent_message::Message::Register(register)),
    };
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
    match client.session(tokio_stream::iter(vec![first])).await {
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("the session must be refused"),
        Err(status) => status,
    }
}

/// A registration that passes validation, for `name`.
pub fn valid_register(name: &str) -> pb::Register {
    pb::Register {
        node_name: name.into(),
        address: "127.0.0.1".into(),
        capacity: Some(pb::Capacity {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
        }),
        ..Default::default()
    }
}

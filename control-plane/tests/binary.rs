//! The `berth-control-plane` binary as systemd runs it: configured by flags
//! and `BERTH_…` environment, an agent registering with it, SIGTERM → exit 0.

mod support;

use berth_proto::pb;
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_binary_serves_agents_and_stops_on_sigterm() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-control-plane"))
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .env("BERTH_TLS_CA", pki.files("control-plane").ca)
        .env("BERTH_TLS_CERT", pki.files("control-plane").cert)
        .env("BERTH_TLS_KEY", pki.files("control-plane").key)
        .env("BERTH_NODE_TTL", "3s")
        .env("BERTH_HEARTBEAT_INTERVAL", "200ms")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary prints where it listens once bound.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let grpc = line
        .strip_prefix("berth-control-plane listening: grpc ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port: u16 = grpc.rsplit(':').next().unwrap().parse().unwrap();

    let url = format!("https://127.0.0.1:{port}");
    let admin = pki.material("admin");
    let mut nodes = wait_for("the control plane binary", || {
        let (admin, url) = (admin.clone(), url.clone());
        async move {
            let channel = admin.endpoint(&url).ok()?.connect().await.ok()?;
            Some(pb::node_service_client::NodeServiceClient::new(channel))
        }
    })
    .await;

    let files = pki.issue(berth_pki::Role::Agent, "node-bin");
    let agent = berth_node_agent::start(
        berth_node_agent::Config::new(url.clone(), files)
            .validate()
            .unwrap(),
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    wait_node_state(&mut nodes, "node-bin", pb::NodeState::Ready).await;
    assert!(
        data.path().join("berth.db").exists(),
        "SQLite in the data dir"
    );

    kill_agent(agent).await;
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the control plane did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
}

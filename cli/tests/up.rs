//! `berth up` and the client commands as a user runs them: real processes,
//! real sockets, the certificates `berth up` made.

use serde_json::Value;
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(60);

fn berth(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("running berth")
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "berth up did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills `berth up` if a test fails half-way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = url.strip_prefix("http://")?.split('/').next()?;
    let path = &url["http://".len() + addr.len()..];
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn berth_up_serves_one_ready_node_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--data-dir")
        .arg(&data)
        .args([
            "up",
            "--grpc-addr",
            "127.0.0.1:0",
            "--gateway-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--gateway-metrics-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--node-name",
            "test-node",
            "--label",
            "zone=z1",
            "--no-bootstrap",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);

    let nodes: Vec<Value> = wait_for("one ready node", || {
        let out = berth(&data, &["nodes", "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        let nodes: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        (nodes.len() == 1 && nodes[0]["state"] == "ready").then_some(nodes)
    });
    let node = &nodes[0];
    assert_eq!(node["name"], "test-node");
    assert_eq!(node["address"], "127.0.0.1");
    assert_eq!(node["labels"]["zone"], "z1");
    assert!(node["cpu_millis"].as_u64().unwrap() >= 1000);
    assert!(node["memory_bytes"].as_u64().unwrap() > 0);
    assert!(node["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "docker"));

    // The dev certificates are where the docs say.
    for file in ["ca.pem", "admin.pem", "admin-key.pem"] {
        assert!(data.join("certs").join(file).exists(), "{file}");
    }

    // The table lists the same node.
    let table = berth(&data, &["nodes"]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("NAME") && text.contains("test-node") && text.contains("ready"),
        "{text}"
    );

    // Drain and undrain through the CLI.
    let drained = berth(&data, &["nodes", "drain", "test-node", "-o", "json"]);
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let drained: Value = serde_json::from_slice(&drained.stdout).unwrap();
    assert_eq!(drained["state"], "draining");
    let undrained: Value = serde_json::from_slice(
        &berth(&data, &["nodes", "undrain", "test-node", "-o", "json"]).stdout,
    )
    .unwrap();
    assert_eq!(undrained["state"], "ready");

    // A missing node is a clear error and a failing exit.
    let missing = berth(&data, &["nodes", "get", "nowhere"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("NotFound"),
        "{:?}",
        missing
    );

    // The gateway and the metrics endpoint answer.
    let endpoints: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("endpoints.json")).unwrap())
            .unwrap();
    let health = http_get(&format!(
        "{}/healthz",
        endpoints["gateway"].as_str().unwrap()
    ))
    .unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = http_get(&format!(
        "{}/metrics",
        endpoints["metrics"].as_str().unwrap()
    ))
    .unwrap();
    assert!(metrics.contains("berth_grpc_requests_total"), "{metrics}");

    let pid = guard.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_exit(&mut guard.0);
    assert_eq!(status.code(), Some(0), "berth up exits 0 on SIGTERM");
    assert!(
        !data.join("endpoints.json").exists(),
        "endpoints file removed on exit"
    );
}

#[test]
fn certs_init_and_issue_make_certificates_with_identities() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("pki");
    let certs_arg = certs.to_str().unwrap();
    let run = |args: &[&str]| berth(dir.path(), args);

    assert!(run(&["certs", "init", "--dir", certs_arg]).status.success());
    let again = run(&["certs", "init", "--dir", certs_arg]);
    assert!(!again.status.success(), "init never overwrites a CA");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let issued = run(&[
        "certs", "issue", "--dir", certs_arg, "--role", "agent", "--name", "node-9", "--san",
        "10.1.2.3",
    ]);
    assert!(issued.status.success(), "{issued:?}");
    let pem = std::fs::read_to_string(certs.join("node-9.pem")).unwrap();
    let identity = berth_pki::Identity::from_pem(&pem).unwrap();
    assert_eq!(
        identity,
        berth_pki::Identity::new(berth_pki::Role::Agent, "node-9")
    );
    let key = std::fs::metadata(certs.join("node-9-key.pem")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );

    let bad_role = run(&[
        "certs", "issue", "--dir", certs_arg, "--role", "root", "--name", "x",
    ]);
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("unknown role"));
    let bad_name = run(&[
        "certs", "issue", "--dir", certs_arg, "--role", "agent", "--name", "Bad_Name",
    ]);
    assert!(!bad_name.status.success());
    assert!(String::from_utf8_lossy(&bad_name.stderr).contains("name"));
}

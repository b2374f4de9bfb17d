//! The `berth-gateway` binary as its own process: static routes, and the
//! memory a 1 GiB upload costs it.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use std::{process::Stdio, time::Duration};
use support::*;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on a free port with `routes` (JSON) as its static routes.
async fn start_binary(
    routes: serde_json::Value,
) -> (Child, std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.json");
    std::fs::write(&file, routes.to_string()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_berth-gateway"))
        .arg("--gateway-addr")
        .arg(addr.to_string())
        .args(["--gateway-metrics-addr", "127.0.0.1:0"])
        .arg("--static-routes")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child = Child(child);
    let client = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let req = Request::get(format!("http://{addr}/healthz"))
            .body(body(Bytes::new()))
            .unwrap();
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), client.request(req)).await {
            if r.status() == StatusCode::OK {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway binary did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr, dir)
}

#[tokio::test]
async fn a_one_gib_upload_streams_through_the_gateway_process_in_bounded_memory() {
    const TOTAL: u64 = 1 << 30;
    const CHUNK: usize = 256 << 10;
    let up = upstream().await;
    let (child, addr, _dir) = start_binary(serde_json::json!({
        // The app's time limit as long as the client's: a debug build on a
        // busy machine may take more than the default 30 s for the GiB.
        "apps": [{ "id": "big", "tenant": TENANT, "backends": [up.addr.to_string()], "max_body_bytes": 2u64 << 30, "request_timeout_ms": 600_000 }],
        "keys": [{ "id": "k1", "tenant": TENANT, "key": KEY, "rate_per_second": 1000, "burst": 1000 }],
    }))
    .await;
    let pid = child.0.id();
    let client = client();
    // Warm up: connections, pools, the allocator.
    let (status, _, _) = get(&client, &format!("http://{addr}/run/big/echo"), Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    let before = proc_status_bytes(pid, "VmRSS");

    // The body is generated as it is sent: nothing holds the whole GiB.
    let (mut tx, rx) = futures::channel::mpsc::channel::<
        Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(4);
    let producer = tokio::spawn(async move {
        use futures::SinkExt;
        let mut pattern = Pattern::new(99);
        let mut sent = 0u64;
        while sent < TOTAL {
            let mut chunk = vec![0u8; CHUNK];
            pattern.fill(&mut chunk);
            sent += CHUNK as u64;
            if tx
                .send(Ok(http_body::Frame::data(Bytes::from(chunk))))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let req = Request::post(format!("http://{addr}/run/big/pattern?seed=99"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "multipart/form-data; boundary=x")
        .body(http_body_util::BodyExt::boxed(
            http_body_util::StreamBody::new(rx),
        ))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(600), client.request(req))
        .await
        .expect("a GiB goes through in time")
        .unwrap();
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    producer.await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let seen = json(&bytes);
    assert_eq!(seen["len"], TOTAL);
    assert_eq!(
        seen["matches"], true,
        "every byte arrived as sent, in order"
    );
    let peak = proc_status_bytes(pid, "VmHWM");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "gateway RSS: {} KiB before, peak {} KiB during a 1 GiB upload (+{} KiB)",
        before >> 10,
        peak >> 10,
        growth >> 10
    );
    assert!(
        growth < 64 << 20,
        "the gateway grew by {} MiB",
        growth >> 20
    );
}

#[tokio::test]
async fn static_routes_are_checked_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.json");
    std::fs::write(
        &file,
        r#"{"apps":[{"id":"a","backends":["not an address"]}]}"#,
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_berth-gateway"))
        .args(["--gateway-addr", "127.0.0.1:0", "--static-routes"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("routes.json"), "{stderr}");
}

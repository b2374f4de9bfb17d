//! Test harness: real upstream HTTP servers on loopback, a real gateway on
//! 127.0.0.1:0 with a route table the test sets, and raw-socket helpers.
#![allow(dead_code)]

use berth_gateway::{routes::Routes, Config, LimitArgs};
use berth_pki::TlsFiles;
use berth_proto::pb;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

pub const TENANT: &str = "acme";
pub const KEY: &str = "berth_acme0001aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const OTHER_KEY: &str = "berth_other001bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
pub const ADMIN_KEY: &str = "berth_admin001cccccccccccccccccccccccccccccc";

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Deterministic bytes: the same seed gives the same stream on both sides,
/// however the stream is cut into chunks.
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed | 1,
            word: [0; 8],
            used: 8,
        }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            if self.used == 8 {
                // xorshift64
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.word = self.state.to_le_bytes();
                self.used = 0;
            }
            *byte = self.word[self.used];
            self.used += 1;
        }
    }
}

/// An upstream app: what it saw, and switches to make it misbehave.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub shutdown: CancellationToken,
}

/// Serves:
/// - `/echo…`: JSON of method, path, query, headers, body length and SHA-256;
/// - `/pattern?seed=S`: compares the body with [`Pattern`] `S` as it streams
///   in, answering `{"len": …, "matches": …}`;
/// - `/sleep?ms=N`: answers after N ms;
/// - `/ws`: switches protocols and echoes bytes.
pub async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let (h, stop) = (hits.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted.unwrap(),
            };
            let hits = h.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    async move { Ok::<_, Infallible>(app(req, addr).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::select! {
                    _ = conn => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Upstream {
        addr,
        hits,
        shutdown,
    }
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

async fn app(mut req: Request<Incoming>, me: SocketAddr) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if path == "/ws" {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::default())
            .unwrap();
    }
    if path == "/sleep" {
        let ms: u64 = query_param(&req, "ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Response::new(Full::from("slept"));
    }
    if path == "/pattern" {
        let seed: u64 = query_param(&req, "seed")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut pattern = Pattern::new(seed);
        let mut body = req.into_body();
        let (mut len, mut matches) = (0u64, true);
        let mut expected = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                matches = false;
                break;
            };
            if let Some(data) = frame.data_ref() {
                expected.resize(data.len(), 0);
                pattern.fill(&mut expected);
                matches &= expected[..] == data[..];
                len += data.len() as u64;
            }
        }
        let reply = serde_json::json!({ "len": len, "matches": matches });
        return Response::new(Full::from(reply.to_string()));
    }
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let body = match body {
        Ok(body) => body,
        Err(_) => {
            return Response::builder()
                .status(400)
                .body(Full::default())
                .unwrap()
        }
    };
    let reply = serde_json::json!({
        "upstream": me.to_string(),
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "len": body.len(),
        "sha256": sha256_hex(&body),
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("keep-alive", "timeout=5")
        .header("x-app", "yes")
        .body(Full::from(reply.to_string()))
        .unwrap()
}

/// An upstream that reads each request head (and a `Content-Length` body)
/// and writes the bytes `answer` gives for its path; `then_close` ends the
/// connection after that answer.
pub async fn scripted(answer: fn(&str) -> (Vec<u8>, bool)) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some((head, body_len)) = read_head(&mut stream, &mut buf).await else {
                        return;
                    };
                    while buf.len() < body_len {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..body_len);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (bytes, then_close) = answer(&path);
                    if stream.write_all(&bytes).await.is_err() || then_close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Reads up to the end of a head; returns it and its `Content-Length`,
/// leaving what follows in `buf`.
pub async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, usize)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            return Some((head, length));
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Reads one answer with a `Content-Length` body: its head and body.
pub async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let (head, length) = read_head(stream, buf).await.expect("an answer");
    while buf.len() < length {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("the body in time")
            .unwrap();
        assert!(n > 0, "the body was cut short after {head}");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..length).collect();
    (head, body)
}

/// A port nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A server that accepts, reads the request head, and hangs up without an
/// answer while `broken`; a normal echo otherwise.
pub struct Flaky {
    pub addr: SocketAddr,
    pub broken: Arc<AtomicBool>,
    pub accepted: Arc<AtomicUsize>,
}

pub async fn flaky() -> Flaky {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let broken = Arc::new(AtomicBool::new(true));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (b, a) = (broken.clone(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            if b.load(Ordering::SeqCst) {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    drop(stream);
                });
            } else {
                tokio::spawn(async move {
                    let service =
                        service_fn(
                            move |req| async move { Ok::<_, Infallible>(app(req, addr).await) },
                        );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    });
    Flaky {
        addr,
        broken,
        accepted,
    }
}

pub fn backend(id: &str, addr: SocketAddr) -> pb::Backend {
    pb::Backend {
        instance_id: id.into(),
        node_name: "node-1".into(),
        address: addr.ip().to_string(),
        host_port: u32::from(addr.port()),
    }
}

pub fn app_route(id: &str, tenant: &str, backends: Vec<pb::Backend>) -> pb::AppRoute {
    pb::AppRoute {
        app_id: id.into(),
        tenant: tenant.into(),
        name: id.into(),
        app_hostname: format!("{id}.apps.test"),
        state: pb::AppState::Running as i32,
        min_instances: 1,
        request_timeout_ms: 30_000,
        max_body_bytes: 100 << 20,
        backends,
        stopped: false,
    }
}

pub fn key(
    id: &str,
    key: &str,
    tenant: &str,
    admin: bool,
    rate: f64,
    burst: u32,
) -> pb::GatewayKey {
    pb::GatewayKey {
        id: id.into(),
        tenant: tenant.into(),
        prefix: key[..berth_proto::domain::API_KEY_SHOWN_LEN].into(),
        key_hash: sha256_hex(key.as_bytes()),
        // The admin flag alone, as an older control plane sends it.
        admin,
        role: pb::KeyRole::Unspecified.into(),
        rate_per_second: rate,
        burst,
    }
}

/// The usual keys: one for `acme`, one for `other`, one admin.
pub fn keys() -> Vec<pb::GatewayKey> {
    vec![
        key("k-acme", KEY, TENANT, false, 1000.0, 1000),
        key("k-other", OTHER_KEY, "other", false, 1000.0, 1000),
        key("k-admin", ADMIN_KEY, "ops", true, 1000.0, 1000),
    ]
}

/// A gateway serving a test-set route table.
pub struct Gateway {
    pub addr: SocketAddr,
    /// Where the gateway's `/metrics` is served.
    pub metrics_addr: SocketAddr,
    pub routes: Routes,
    pub shutdown: CancellationToken,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set(&self, apps: Vec<pb::AppRoute>, keys: Vec<pb::GatewayKey>) {
        self.routes.apply(&pb::RouteUpdate {
            snapshot: true,
            apps,
            keys,
            ..Default::default()
        });
    }
}

pub fn limits() -> LimitArgs {
    LimitArgs {
        header_read_timeout: Duration::from_millis(500),
        max_header_bytes: 8 * 1024,
        eject_for: Duration::from_secs(30),
        breaker_failures: 3,
        ..LimitArgs::default()
    }
}

pub async fn gateway_with(limits: LimitArgs) -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files = TlsFiles::in_dir(std::path::Path::new("/nonexistent"), "gateway");
    let config = Config::new("https://127.0.0.1:1", files, limits)
        .validate()
        .unwrap();
    let routes = Routes::default();
    let shutdown = CancellationToken::new();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let listeners = berth_gateway::Listeners {
        users: listener,
        metrics,
    };
    tokio::spawn(berth_gateway::serve(
        config,
        listeners,
        routes.clone(),
        None,
        shutdown.clone(),
    ));
    Gateway {
        addr,
        metrics_addr,
        routes,
        shutdown,
    }
}

pub async fn gateway() -> Gateway {
    gateway_with(limits()).await
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub fn body(
    bytes: impl Into<Bytes>,
) -> http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// Sends `req`, returning status, headers and the whole body.
pub async fn send(
    client: &Client,
    req: Request<
        http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>,
    >,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("the gateway answers in time")
        .expect("the gateway answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

pub async fn get(
    client: &Client,
    url: &str,
    key: Option<&str>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::get(url);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    send(client, req.body(body(Bytes::new())).unwrap()).await
}

pub fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The `error.code` of a JSON error body.
pub fn error_code(bytes: &[u8]) -> String {
    json(bytes)["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {}", String::from_utf8_lossy(bytes)))
        .to_owned()
}

/// Writes raw bytes to the gateway and reads what comes back until the
/// connection closes or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`).
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib * 1024
}

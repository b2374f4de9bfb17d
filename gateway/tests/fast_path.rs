//! The HTTP/1.1 fast path against real sockets: answers of every framing
//! pass through whole, one connection moves to hyper midway, pipelined
//! requests are answered in order, a kept upstream connection the app
//! closed is replaced before a request is lost on it, and client
//! connections share the idle upstream ones.

mod support;

use berth_gateway::LimitArgs;
use http::{Request, StatusCode};
use std::{net::SocketAddr, sync::atomic::Ordering, time::Duration};
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn framed(path: &str) -> (Vec<u8>, bool) {
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\n\r\n5\r\nhello\r\n6;note=x\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
            false,
        ),
        "/until-close" => (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it, to the end".to_vec(),
            true,
        ),
        "/interim" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/nothing" => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false),
        "/sized" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsized".to_vec(),
            false,
        ),
        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(), false),
    }
}

#[tokio::test]
async fn answers_of_every_framing_pass_through_whole() {
    let (addr, _) = scripted(framed).await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", addr)])],
        keys(),
    );
    let client = client();
    for _ in 0..2 {
        let (status, headers, bytes) = get(&client, &gw.url("/run/app1/chunked"), Some(KEY)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&bytes[..], b"hello world");
        assert!(headers.get("x-secret").is_none(), "{headers:?}");
        assert!(headers.contains_key("x-request-id"));

        let (status, _, bytes) = get(&client, &gw.url("/run/app1/interim"), Some(KEY)).await;
        assert_eq!((status, &bytes[..]), (StatusCode::OK, &b"ok"[..]));

        let (status, _, bytes) = get(&client, &gw.url("/run/app1/nothing"), Some(KEY)).await;
        assert_eq!((status, bytes.len()), (StatusCode::NO_CONTENT, 0));

        let (status, headers, bytes) =
            get(&client, &gw.url("/run/app1/until-close"), Some(KEY)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&bytes[..], b"all of it, to the end");
        assert_eq!(headers["connection"], "close");

        let head = Request::head(gw.url("/run/app1/sized"))
            .header("authorization", format!("Bearer {KEY}"))
            .body(body(bytes::Bytes::new()))
            .unwrap();
        let (status, headers, bytes) = send(&client, head).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-length"], "5");
        assert!(bytes.is_empty());
    }
}

#[tokio::test]
async fn one_connection_moves_from_the_fast_path_to_hyper_midway() {
    let up = upstream().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
        keys(),
    );
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = Vec::new();

    // An ordinary request, then one with a chunked body (hyper's), then the
    // gateway's own path, then an ordinary one again: all on one connection.
    let plain = format!(
        "POST /run/app1/echo?n=1 HTTP/1.1\r\nHost: gw\r\n{auth}Content-Length: 3\r\n\r\nabc"
    );
    stream.write_all(plain.as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = json(&body);
    assert_eq!(
        (seen["body"].as_str(), seen["query"].as_str()),
        (Some("abc"), Some("n=1"))
    );

    let chunked = format!("POST /run/app1/echo?n=2 HTTP/1.1\r\nHost: gw\r\n{auth}Transfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n");
    stream.write_all(chunked.as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(json(&body)["body"], "wxyz");

    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_answer(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(json(&body)["status"], "ok");

    let last =
        format!("GET /run/app1/echo?n=3 HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(last.as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(json(&body)["query"], "n=3");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        rest.is_empty() && buf.is_empty(),
        "nothing after the last answer"
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = upstream().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
        keys(),
    );
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let mut all = String::new();
    for n in 1..=3 {
        let close = if n == 3 { "Connection: close\r\n" } else { "" };
        all.push_str(&format!(
            "POST /run/app1/echo?n={n} HTTP/1.1\r\nHost: gw\r\n{auth}{close}Content-Length: 1\r\n\r\n{n}"
        ));
    }
    // An unknown key in the middle of a pipeline is answered in its place.
    all.insert_str(
        0,
        "GET /run/app1/echo HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer berth_nobody\r\n\r\n",
    );
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(all.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let (head, body) = read_answer(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert_eq!(json(&body)["error"]["code"], "invalid_key");
    for n in 1..=3 {
        let (head, body) = read_answer(&mut stream, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let seen = json(&body);
        assert_eq!(seen["query"], format!("n={n}"));
        assert_eq!(seen["body"], n.to_string());
    }
}

fn once_then_close(_: &str) -> (Vec<u8>, bool) {
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        true,
    )
}

#[tokio::test]
async fn a_kept_upstream_connection_the_app_closed_is_replaced() {
    // An app that says nothing about closing, and closes after each answer.
    let (addr, accepted) = scripted(once_then_close).await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", addr)])],
        keys(),
    );
    let client = client();
    let (status, _, bytes) = get(&client, &gw.url("/run/app1/a"), Some(KEY)).await;
    assert_eq!((status, &bytes[..]), (StatusCode::OK, &b"ok"[..]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A POST may not be sent twice: it must not go out on the dead one.
    for _ in 0..3 {
        let post = Request::post(gw.url("/run/app1/b"))
            .header("authorization", format!("Bearer {KEY}"))
            .body(body("once"))
            .unwrap();
        let (status, _, bytes) = send(&client, post).await;
        assert_eq!(
            (status, &bytes[..]),
            (StatusCode::OK, &b"ok"[..]),
            "{bytes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

fn sized(_: &str) -> (Vec<u8>, bool) {
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        false,
    )
}

/// One request on `stream` and its answer (`200`, `ok`).
async fn ask(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let request =
        format!("GET /run/app1/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, body) = read_answer(stream, buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
}

/// A gateway on one thread (one pool of idle upstream connections) with
/// `app1` on one instance at `addr`.
async fn one_thread_gateway(addr: SocketAddr) -> Gateway {
    let gw = gateway_with(LimitArgs {
        threads: 1,
        ..limits()
    })
    .await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", addr)])],
        keys(),
    );
    gw
}

#[tokio::test]
async fn client_connections_share_idle_upstream_connections() {
    let (addr, accepted) = scripted(sized).await;
    let gw = one_thread_gateway(addr).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push((TcpStream::connect(gw.addr).await.unwrap(), Vec::new()));
    }
    // One request at a time, over every client connection in turn: the
    // one upstream connection is reused throughout.
    for round in 0..5 {
        for (stream, buf) in clients.iter_mut() {
            ask(stream, buf).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "round {round}");
    }
    // All eight at once need up to eight, and never more: the idle ones
    // serve every later burst.
    let burst = |clients: Vec<(TcpStream, Vec<u8>)>| async move {
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|(mut stream, mut buf)| {
                tokio::spawn(async move {
                    ask(&mut stream, &mut buf).await;
                    (stream, buf)
                })
            })
            .collect();
        let mut back = Vec::new();
        for task in tasks {
            back.push(task.await.unwrap());
        }
        back
    };
    let mut clients = clients;
    for round in 0..5 {
        clients = burst(clients).await;
        let opened = accepted.load(Ordering::SeqCst);
        assert!(opened <= 8, "burst {round}: {opened} upstream connections");
    }
}

#[tokio::test]
async fn a_connection_the_app_closed_is_not_handed_to_another_client() {
    // The app closes after each answer without saying so: the connection
    // client A's request went over is dead when client B's request comes.
    let (addr, accepted) = scripted(once_then_close).await;
    let gw = one_thread_gateway(addr).await;
    let mut a = (TcpStream::connect(gw.addr).await.unwrap(), Vec::new());
    let mut b = (TcpStream::connect(gw.addr).await.unwrap(), Vec::new());
    for n in 1..=6 {
        let (stream, buf) = if n % 2 == 1 { &mut a } else { &mut b };
        let post = format!(
            "POST /run/app1/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 4\r\n\r\nonce"
        );
        stream.write_all(post.as_bytes()).await.unwrap();
        let (head, body) = read_answer(stream, buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "request {n}: {head}");
        assert_eq!(body, b"ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 6);
}

//! Framing rules against an attacker, over both HTTP/1 paths (the fast
//! path and hyper): a `Connection` token never unframes a request body into
//! a second request the gateway did not authorise, and an app's answer that
//! breaks its own framing ends the client's connection instead of desyncing
//! it or reaching the next client.

mod support;

use berth_gateway::LimitArgs;
use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// The two HTTP/1 paths: a plain target stays on the fast path; a `|` in
/// the query is one the fast path leaves to hyper.
const PATHS: [(&str, &str); 2] = [("fast path", "?n=1"), ("hyper", "?n=|")];

/// The body an attacker hopes the app reads as a request of its own.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";

#[tokio::test]
async fn connection_tokens_never_unframe_a_request_body() {
    for connection in [
        "content-length",
        "Content-Length, keep-alive",
        "host, CONTENT-LENGTH",
    ] {
        for (via, query) in PATHS {
            let up = upstream().await;
            let gw = gateway().await;
            gw.set(
                vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
                keys(),
            );
            let mut stream = TcpStream::connect(gw.addr).await.unwrap();
            let mut buf = Vec::new();
            let attack = format!(
                "POST /run/app1/echo{query} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            );
            stream.write_all(attack.as_bytes()).await.unwrap();
            let (head, body) = read_answer(&mut stream, &mut buf).await;
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "{via}, {connection}: {head}"
            );
            let seen = json(&body);
            assert_eq!(seen["method"], "POST", "{via}, {connection}");
            assert_eq!(
                seen["body"], SMUGGLED,
                "{via}, {connection}: the body arrives as a body"
            );
            assert_eq!(seen["headers"]["host"], "gw", "{via}, {connection}");
            // The connection is still in step: the next request is answered
            // as itself.
            let next = format!(
                "GET /run/app1/echo?next=1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n\r\n"
            );
            stream.write_all(next.as_bytes()).await.unwrap();
            let (head, body) = read_answer(&mut stream, &mut buf).await;
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "{via}, {connection}: {head}"
            );
            assert_eq!(json(&body)["query"], "next=1", "{via}, {connection}");
            assert_eq!(
                up.hits.load(Ordering::SeqCst),
                2,
                "{via}, {connection}: the app saw exactly the two requests sent"
            );
        }
    }
}

/// The answers of an app that breaks its framing, by path.
fn breaking(target: &str) -> (Vec<u8>, bool) {
    match target.split('?').next().unwrap_or_default() {
        // Asks the gateway to drop its length: the client must still get one.
        "/unframed" => (
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        // A chunk that runs past its size, then a forged answer.
        "/overrun" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        // A size line with no digit (an extension alone), then a forged
        // answer.
        "/no-digits" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n;x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged".to_vec(),
            false,
        ),
        // A size line ended by a bare LF.
        "/bare-lf" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        _ => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsane".to_vec(),
            false,
        ),
    }
}

#[tokio::test]
async fn an_app_cannot_unframe_its_answer() {
    let (addr, _) = scripted(breaking).await;
    for (via, query) in PATHS {
        let gw = gateway().await;
        gw.set(
            vec![app_route("app1", TENANT, vec![backend("i1", addr)])],
            keys(),
        );
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        let mut buf = Vec::new();
        for path in ["/unframed", "/sane"] {
            let request = format!(
                "GET /run/app1{path}{query} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let (head, body) = read_answer(&mut stream, &mut buf).await;
            assert!(
                head.to_ascii_lowercase().contains("content-length:"),
                "{via}: {head}"
            );
            let want: &[u8] = if path == "/sane" { b"sane" } else { b"ok" };
            assert_eq!(body, want, "{via}, {path}: {head}");
        }
    }
}

#[tokio::test]
async fn a_chunked_answer_that_breaks_its_framing_ends_the_client_connection() {
    let (addr, _) = scripted(breaking).await;
    for path in ["/overrun", "/bare-lf", "/no-digits"] {
        for (via, query) in PATHS {
            let gw = gateway().await;
            gw.set(
                vec![app_route("app1", TENANT, vec![backend("i1", addr)])],
                keys(),
            );
            let mut stream = TcpStream::connect(gw.addr).await.unwrap();
            let request = format!(
                "GET /run/app1{path}{query} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
                .await
                .unwrap_or_else(|_| panic!("{via}, {path}: the connection was not ended"));
            // A reset is an end too; either way no forged answer came.
            let _ = read;
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains("forged"), "{via}, {path}: {text}");
            assert!(
                !text.ends_with("0\r\n\r\n"),
                "{via}, {path}: the broken body was passed on whole: {text}"
            );
        }
    }
}

#[tokio::test]
async fn bytes_an_app_sends_after_its_answer_never_reach_the_next_client() {
    // An app that answers with a length of 2, then, once the gateway has had
    // time to relay and keep the connection, writes a forged second answer.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let forged_sent = Arc::new(Notify::new());
    let sent = forged_sent.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut first = true;
                while read_head(&mut stream, &mut buf).await.is_some() {
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                    if first {
                        first = false;
                        let forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged";
                        // Not together with the answer: after it.
                        tokio::task::yield_now().await;
                        let _ = stream.write_all(forged).await;
                        sent.notify_one();
                    }
                }
            });
        }
    });
    for (via, query) in PATHS {
        let gw = gateway_with(LimitArgs {
            threads: 1,
            ..limits()
        })
        .await;
        gw.set(
            vec![app_route("app1", TENANT, vec![backend("i1", addr)])],
            keys(),
        );
        let request = format!(
            "GET /run/app1/x{query} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n\r\n"
        );
        let mut a = TcpStream::connect(gw.addr).await.unwrap();
        let mut buf = Vec::new();
        a.write_all(request.as_bytes()).await.unwrap();
        let (_, body) = read_answer(&mut a, &mut buf).await;
        assert_eq!(body, b"ok", "{via}");
        tokio::time::timeout(Duration::from_secs(10), forged_sent.notified())
            .await
            .expect("the app wrote its forged answer");
        for n in 0..3 {
            let mut b = TcpStream::connect(gw.addr).await.unwrap();
            let mut buf = Vec::new();
            b.write_all(request.as_bytes()).await.unwrap();
            let (head, body) = read_answer(&mut b, &mut buf).await;
            assert_eq!(body, b"ok", "{via}, client {n}: {head}");
        }
    }
}

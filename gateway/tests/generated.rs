//! Generated requests against both HTTP/1 paths (the fast path and hyper):
//! every hop-by-hop name, `Connection` lists naming framing fields,
//! duplicated and oddly cased framing fields, chunk extensions, obs-fold
//! and bare LF, each request pipelined with a second one behind it. Whatever
//! the gateway makes of a request, the app sees exactly the requests the
//! client sent and the gateway authorised, and the client one answer per
//! request: a request is served as sent, or refused and the connection
//! closed — never split into two, never merged with the next.
//!
//! The generator is seeded, so a failure names the seed that shows it.

mod support;

use std::sync::atomic::Ordering;
use support::*;
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// Cases per path.
const CASES: u64 = 120;

/// A body an attacker hopes the app reads as a request of its own.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

const HOP_BY_HOP: [&str; 6] = [
    "Keep-Alive: timeout=5",
    "Proxy-Connection: keep-alive",
    "TE: trailers",
    "Trailer: X-After",
    "Upgrade: h2c",
    "Proxy-Authorization: Basic eDp5",
];

const TOKENS: [&str; 9] = [
    "keep-alive",
    "content-length",
    "Content-Length",
    "transfer-encoding",
    "host",
    "te",
    "x-extra",
    "authorization",
    "proxy-connection",
];

/// How a generated request is framed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// `Content-Length` of the body.
    Length,
    /// Chunked, with random chunk sizes and extensions.
    Chunked,
    /// Both: ambiguous, may be refused or served as chunked.
    Both,
    /// Two different lengths: must be refused.
    Conflicting,
    /// The same length twice: may be refused or served.
    Repeated,
}

/// What the gateway must do with a request.
#[derive(Debug, PartialEq)]
enum Must {
    Serve,
    Refuse,
    /// Either, as long as it is whole.
    ServeOrRefuse,
}

struct Case {
    wire: Vec<u8>,
    method: &'static str,
    body: Vec<u8>,
    /// The client asked to close after it.
    closes: bool,
    /// The gateway may close after answering (RFC 9112 6.1: a request
    /// with both `Transfer-Encoding` and `Content-Length`).
    may_close: bool,
    must: Must,
    what: String,
}

fn cased(rng: &mut fastrand::Rng, name: &str) -> String {
    name.chars()
        .map(|c| {
            if rng.bool() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn generate(rng: &mut fastrand::Rng, query: &str) -> Case {
    let method = ["POST", "PUT", "PATCH"][rng.usize(..3)];
    let body: Vec<u8> = match rng.usize(..4) {
        0 => Vec::new(),
        1 => SMUGGLED.as_bytes().to_vec(),
        2 => b"hello".to_vec(),
        _ => (0..rng.usize(..80))
            .map(|_| rng.alphanumeric() as u8)
            .collect(),
    };
    let framing = match rng.usize(..10) {
        0..=3 => Framing::Length,
        4..=6 => Framing::Chunked,
        7 => Framing::Both,
        8 => Framing::Conflicting,
        _ => Framing::Repeated,
    };
    let mut lines = vec![
        format!("{method} /run/app1/echo{query} HTTP/1.1"),
        "Host: gw".to_owned(),
        format!("Authorization: Bearer {KEY}"),
    ];
    let mut must = Must::Serve;
    let length =
        |rng: &mut fastrand::Rng, n: usize| format!("{}: {n}", cased(rng, "content-length"));
    match framing {
        Framing::Length => lines.push(length(rng, body.len())),
        Framing::Chunked => lines.push(format!(
            "{}: {}",
            cased(rng, "transfer-encoding"),
            cased(rng, "chunked")
        )),
        Framing::Both => {
            let n = if rng.bool() {
                body.len()
            } else {
                body.len() + 3
            };
            lines.push(length(rng, n));
            lines.push(format!("Transfer-Encoding: {}", cased(rng, "chunked")));
            must = Must::ServeOrRefuse;
        }
        Framing::Conflicting => {
            lines.push(length(rng, body.len()));
            let other = body.len() + 1 + rng.usize(..5);
            lines.push(length(rng, other));
            must = Must::Refuse;
        }
        Framing::Repeated => {
            lines.push(length(rng, body.len()));
            lines.push(length(rng, body.len()));
            must = Must::ServeOrRefuse;
        }
    }
    let mut closes = false;
    if rng.bool() {
        let mut tokens: Vec<&str> = TOKENS.iter().copied().filter(|_| rng.bool()).collect();
        if rng.usize(..8) == 0 {
            tokens.push("close");
            closes = true;
        }
        if !tokens.is_empty() {
            lines.push(format!(
                "{}: {}",
                cased(rng, "connection"),
                tokens.join(", ")
            ));
        }
    }
    for header in HOP_BY_HOP {
        if rng.usize(..3) == 0 {
            lines.push(header.to_owned());
        }
    }
    lines.push("X-Forwarded-For: 6.6.6.6".to_owned());
    // Malformed heads: refused, or (bare LF, which a recipient may read as
    // a line end) served whole.
    let mut terminators = vec!["\r\n"; lines.len()];
    match rng.usize(..16) {
        0 => {
            lines.push("X-Folded: a".to_owned());
            lines.push(" b".to_owned());
            terminators.extend(["\r\n", "\r\n"]);
            must = Must::Refuse;
        }
        1 => {
            let at = 1 + rng.usize(..lines.len() - 1);
            terminators[at] = "\n";
            if must == Must::Serve {
                must = Must::ServeOrRefuse;
            }
        }
        _ => {}
    }
    let mut wire = Vec::new();
    for (line, end) in lines.iter().zip(&terminators) {
        wire.extend_from_slice(line.as_bytes());
        wire.extend_from_slice(end.as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    match framing {
        Framing::Chunked | Framing::Both => {
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = 1 + rng.usize(..rest.len());
                let size = if rng.bool() {
                    format!("{n:x}")
                } else {
                    format!("{n:X}")
                };
                let ext = if rng.usize(..3) == 0 {
                    ";ext=\"v\""
                } else {
                    ""
                };
                wire.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            wire.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::Length | Framing::Repeated => wire.extend_from_slice(&body),
        Framing::Conflicting => wire.extend_from_slice(&body),
    }
    Case {
        may_close: framing == Framing::Both,
        what: format!(
            "{framing:?} {}",
            String::from_utf8_lossy(&wire[..wire.len().min(600)])
        ),
        wire,
        method,
        body,
        closes,
        must,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_reach_the_app_whole_or_not_at_all() {
    let up = upstream().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
        keys(),
    );
    let (mut served, mut refused) = (0, 0);
    for (via, query) in [("fast path", "?n=1"), ("hyper", "?n=|")] {
        for seed in 0..CASES {
            let mut rng = fastrand::Rng::with_seed(seed);
            let case = generate(&mut rng, query);
            let label = format!("{via}, seed {seed}: {}", case.what);
            let before = up.hits.load(Ordering::SeqCst);
            let mut stream = TcpStream::connect(gw.addr).await.unwrap();
            // The case and a request behind it, in one write.
            let mut wire = case.wire.clone();
            wire.extend_from_slice(
                format!(
                    "GET /run/app1/echo?sentinel={seed} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n\r\n"
                )
                .as_bytes(),
            );
            stream.write_all(&wire).await.unwrap();
            let mut buf = Vec::new();
            let first = read_head(&mut stream, &mut buf).await;
            let status = first.as_ref().map(|(head, _)| head[9..12].to_owned());
            match status.as_deref() {
                Some("200") => {
                    assert_ne!(case.must, Must::Refuse, "served: {label}");
                    let (_, length) = first.unwrap();
                    let body = read_body(&mut stream, &mut buf, length).await;
                    let seen = json(&body);
                    assert_eq!(seen["method"], case.method, "{label}");
                    assert_eq!(seen["path"], "/echo", "{label}");
                    assert_eq!(
                        seen["body"].as_str().unwrap().as_bytes(),
                        &case.body[..],
                        "the body as sent: {label}"
                    );
                    assert_eq!(
                        seen["headers"]["x-forwarded-for"], "127.0.0.1",
                        "the gateway's own X-Forwarded-For: {label}"
                    );
                    let next = read_head(&mut stream, &mut buf).await;
                    if case.closes || (case.may_close && next.is_none()) {
                        assert!(next.is_none(), "answered after Connection: close: {label}");
                        assert_eq!(up.hits.load(Ordering::SeqCst), before + 1, "{label}");
                    } else {
                        let (head, length) = next
                            .unwrap_or_else(|| panic!("no answer to the request behind: {label}"));
                        assert!(head.starts_with("HTTP/1.1 200"), "{head}: {label}");
                        let seen = json(&read_body(&mut stream, &mut buf, length).await);
                        assert_eq!(seen["query"], format!("sentinel={seed}"), "{label}");
                        assert_eq!(up.hits.load(Ordering::SeqCst), before + 2, "{label}");
                    }
                    served += 1;
                }
                // Refused (or dropped): the app saw nothing of it, and the
                // connection is over — nothing behind it is read as a request.
                Some("400") | None => {
                    assert_ne!(case.must, Must::Serve, "refused ({status:?}): {label}");
                    assert!(
                        read_head(&mut stream, &mut buf).await.is_none(),
                        "the connection went on after a refusal: {label}"
                    );
                    assert_eq!(up.hits.load(Ordering::SeqCst), before, "{label}");
                    refused += 1;
                }
                other => panic!("answered {other:?}: {label}"),
            }
        }
    }
    // The generator covers both outcomes.
    assert!(
        served > CASES && refused > 10,
        "served {served}, refused {refused}"
    );
}

async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, length: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    while buf.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the body was cut short");
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..length).collect()
}

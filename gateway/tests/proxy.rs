//! The gateway's request path against real upstream servers on loopback:
//! routing, keys, limits, streaming, balancing, retries, breakers, and the
//! hostile HTTP a public proxy meets.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use std::{sync::atomic::Ordering, time::Duration};
use support::*;

#[tokio::test]
async fn json_round_trips_by_path_and_by_host() {
    let up = upstream().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
        keys(),
    );
    let client = client();
    let payload = r#"{"name":"berth","list":[1,2,3],"nested":{"ü":"✓"}}"#;
    let req = Request::post(gw.url("/run/app1/items/7?x=1&y=%20"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("x-request-id", "req-42")
        .body(body(payload))
        .unwrap();
    let (status, headers, bytes) = send(&client, req).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let seen = json(&bytes);
    assert_eq!(seen["method"], "POST");
    assert_eq!(
        seen["path"], "/items/7",
        "the /run/{{id}} prefix is removed"
    );
    assert_eq!(seen["query"], "x=1&y=%20");
    assert_eq!(seen["body"], payload);
    assert_eq!(seen["headers"]["content-type"], "application/json");
    assert_eq!(seen["headers"]["x-request-id"], "req-42");
    assert!(
        seen["headers"].get("authorization").is_none(),
        "the Berth key never reaches the app"
    );
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-request-id"], "req-42");
    assert_eq!(headers["x-app"], "yes");
    assert!(
        !headers.contains_key("keep-alive"),
        "hop-by-hop response fields are dropped"
    );

    // The same app by its hostname: the path goes untouched, and the app's
    // own Authorization passes when the key travels in X-Berth-Key.
    let req = Request::get(format!("http://{}/run/literal?q=1", gw.addr))
        .header("host", "APP1.apps.test:8080")
        .header("x-berth-key", KEY)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(body(Bytes::new()))
        .unwrap();
    let (status, headers, bytes) = send(&client, req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&bytes);
    assert_eq!(seen["path"], "/run/literal");
    assert_eq!(seen["headers"]["authorization"], "Basic dXNlcjpwYXNz");
    assert!(seen["headers"].get("x-berth-key").is_none());
    assert_eq!(seen["headers"]["x-forwarded-host"], "APP1.apps.test:8080");
    let generated = headers["x-request-id"].to_str().unwrap();
    assert_eq!(
        seen["headers"]["x-request-id"], generated,
        "a generated id reaches the app too"
    );
    assert_eq!(generated.len(), 36);
}

#[tokio::test]
async fn multipart_with_several_files_arrives_byte_for_byte() {
    let up = upstream().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
        keys(),
    );
    let boundary = "----berthBoundary7MA4YWxkTrZu0gW";
    let mut files = Vec::new();
    for (i, size) in [0usize, 1, 70_000, 3 << 20].into_iter().enumerate() {
        let mut data = vec![0u8; size];
        Pattern::new(i as u64 + 10).fill(&mut data);
        files.push(data);
    }
    let mut multipart = Vec::new();
    for (name, value) in [("title", "a report"), ("unicode", "naïve ✓")] {
        multipart.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    for (i, data) in files.iter().enumerate() {
        multipart.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file{i}\"; filename=\"f{i}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        multipart.extend_from_slice(data);
        multipart.extend_from_slice(b"\r\n");
    }
    multipart.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let sent_hash = sha256_hex(&multipart);
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let req = Request::post(gw.url("/run/app1/upload"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", &content_type)
        .body(body(multipart.clone()))
        .unwrap();
    let (status, _, bytes) = send(&client(), req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&bytes);
    assert_eq!(seen["len"], multipart.len());
    assert_eq!(
        seen["sha256"], sent_hash,
        "the app received exactly the bytes sent"
    );
    assert_eq!(seen["headers"]["content-type"], content_type.as_str());
}

#[tokio::test]
async fn keys_decide_who_reaches_what() {
    let up = upstream().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
        keys(),
    );
    let client = client();
    let url = gw.url("/run/app1/echo");

    let (status, headers, bytes) = get(&client, &url, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&bytes), "missing_key");
    assert_eq!(headers["content-type"], "application/json");
    let (status, _, bytes) = get(
        &client,
        &url,
        Some("berth_acme0001aaaaaaaaaaaaaaaaaaaaaaaaaaaaab"),
    )
    .await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_key"),
        "same prefix, wrong key"
    );
    let (status, _, bytes) = get(&client, &url, Some("nonsense")).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_key")
    );
    let (status, _, bytes) = get(&client, &url, Some(OTHER_KEY)).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "another tenant's key"
    );
    let (status, _, _) = get(&client, &url, Some(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::OK, "an admin key reaches every tenant");
    let (status, _, _) = get(&client, &url, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        2,
        "refused requests never reach the app"
    );

    // Revoked: the key leaves the table.
    gw.routes.apply(&berth_proto::pb::RouteUpdate {
        removed_keys: vec!["k-acme".into()],
        ..Default::default()
    });
    let (status, _, bytes) = get(&client, &url, Some(KEY)).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_key")
    );

    let (status, _, bytes) = get(&client, &gw.url("/run/nope/x"), Some(ADMIN_KEY)).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, _, bytes) = get(&client, &gw.url("/elsewhere"), Some(ADMIN_KEY)).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

#[tokio::test]
async fn a_spent_rate_limit_answers_429_with_retry_after() {
    let up = upstream().await;
    let gw = gateway().await;
    let slow_key = key("k-slow", KEY, TENANT, false, 0.5, 3);
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
        vec![slow_key],
    );
    let client = client();
    let url = gw.url("/run/app1/echo");
    for _ in 0..3 {
        assert_eq!(get(&client, &url, Some(KEY)).await.0, StatusCode::OK);
    }
    let (status, headers, bytes) = get(&client, &url, Some(KEY)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&bytes), "rate_limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=2).contains(&retry),
        "one token per two seconds: retry after {retry}s"
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
    // Metrics name apps and tenants: they are not on the users' port.
    let (status, _, bytes) = get(&client, &gw.url("/metrics"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&bytes), "not_found");
    let (_, _, metrics) = get(
        &client,
        &format!("http://{}/metrics", gw.metrics_addr),
        None,
    )
    .await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(r#"berth_gateway_rate_limited_total{tenant="acme"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"berth_gateway_requests_total{app="app1",class="4xx"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"berth_gateway_requests_total{app="app1",class="2xx"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_gateway_request_duration_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_dead_instance_is_ejected_and_traffic_goes_on() {
    let (a, b) = (upstream().await, upstream().await);
    let dead = dead_addr().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route(
            "app1",
            TENANT,
            vec![
                backend("i-a", a.addr),
                backend("i-dead", dead),
                backend("i-b", b.addr),
            ],
        )],
        keys(),
    );
    let client = client();
    // POSTs too: a refused connection means not a byte was sent.
    for i in 0..30 {
        let req = Request::post(gw.url("/run/app1/echo"))
            .header("authorization", format!("Bearer {KEY}"))
            .body(body(format!("request {i}")))
            .unwrap();
        let (status, _, bytes) = send(&client, req).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(json(&bytes)["body"], format!("request {i}"));
    }
    let table = gw.routes.current();
    let app = &table.apps["app1"];
    let dead_backend = app
        .backends
        .iter()
        .find(|b| b.instance_id == "i-dead")
        .unwrap();
    assert_eq!(
        dead_backend.breaker_state(),
        "open",
        "the dead instance is ejected"
    );
    let (ha, hb) = (a.hits.load(Ordering::SeqCst), b.hits.load(Ordering::SeqCst));
    assert_eq!(ha + hb, 30);
    assert!(
        ha >= 5 && hb >= 5,
        "both live instances share the load: {ha} / {hb}"
    );
    let (_, _, metrics) = get(
        &client,
        &format!("http://{}/metrics", gw.metrics_addr),
        None,
    )
    .await;
    assert!(String::from_utf8_lossy(&metrics)
        .contains(r#"berth_gateway_upstream_errors_total{app="app1",kind="connect"} 1"#));

    // With every instance gone: 503 with a reason.
    gw.set(vec![app_route("app1", TENANT, vec![])], keys());
    let (status, _, bytes) = get(&client, &gw.url("/run/app1/echo"), Some(KEY)).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no_instance")
    );
}

#[tokio::test]
async fn only_safe_requests_are_retried_after_the_app_hung_up() {
    let good = upstream().await;
    let flaky = flaky().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route(
            "app1",
            TENANT,
            vec![backend("i-flaky", flaky.addr), backend("i-good", good.addr)],
        )],
        keys(),
    );
    // Make the good instance look busy so that the flaky one is always tried first.
    let table = gw.routes.current();
    let by_id = |id: &str| {
        table.apps["app1"]
            .backends
            .iter()
            .find(|b| b.instance_id == id)
            .unwrap()
            .clone()
    };
    let (flaky_backend, good_backend) = (by_id("i-flaky"), by_id("i-good"));
    good_backend.in_flight.store(100, Ordering::Relaxed);
    let client = client();
    let post = |text: &'static str| {
        Request::post(gw.url("/run/app1/echo"))
            .header("authorization", format!("Bearer {KEY}"))
            .body(body(text))
            .unwrap()
    };

    // A POST whose body reached an instance that then hung up is not sent again.
    let (status, _, bytes) = send(&client, post("charge the card once")).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::BAD_GATEWAY, "upstream_failed")
    );
    assert_eq!(
        good.hits.load(Ordering::SeqCst),
        0,
        "the POST was not repeated elsewhere"
    );
    // A GET is: it may be repeated.
    let (status, _, bytes) = get(&client, &gw.url("/run/app1/echo"), Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&bytes)["upstream"], good.addr.to_string());
    assert_eq!(good.hits.load(Ordering::SeqCst), 1);
    // The third hang-up in a row opens the flaky instance's breaker...
    let (status, _, _) = send(&client, post("again")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(flaky_backend.breaker_state(), "open");
    // ...and traffic, POSTs included, goes to the good one.
    let accepted = flaky.accepted.load(Ordering::SeqCst);
    let (status, _, bytes) = send(&client, post("now it works")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&bytes)["body"], "now it works");
    assert_eq!(flaky.accepted.load(Ordering::SeqCst), accepted);
}

#[tokio::test]
async fn the_breaker_opens_then_half_opens_and_closes() {
    let flaky = flaky().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", flaky.addr)])],
        keys(),
    );
    let client = client();
    let url = gw.url("/run/app1/echo");
    for _ in 0..3 {
        let (status, _, _) = get(&client, &url, Some(KEY)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    let backend = gw.routes.current().apps["app1"].backends[0].clone();
    assert_eq!(backend.breaker_state(), "open");
    let accepted = flaky.accepted.load(Ordering::SeqCst);
    let (status, _, bytes) = get(&client, &url, Some(KEY)).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no_healthy_instance")
    );
    assert_eq!(
        flaky.accepted.load(Ordering::SeqCst),
        accepted,
        "an open breaker sends nothing"
    );

    // The instance recovers; after the cool-down one probe goes through and closes the breaker.
    flaky.broken.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) = get(&client, &url, Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(backend.breaker_state(), "closed");
}

#[tokio::test]
async fn slow_apps_time_out_with_504_and_big_bodies_get_413() {
    let up = upstream().await;
    let gw = gateway().await;
    let mut route = app_route("app1", TENANT, vec![backend("i1", up.addr)]);
    route.request_timeout_ms = 300;
    route.max_body_bytes = 1000;
    gw.set(vec![route], keys());
    let client = client();
    let (status, _, bytes) = get(&client, &gw.url("/run/app1/sleep?ms=2000"), Some(KEY)).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
    );
    let (status, _, _) = get(&client, &gw.url("/run/app1/sleep?ms=10"), Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);

    // Declared too big: refused before anything is read or sent.
    let req = Request::post(gw.url("/run/app1/echo"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(body(vec![b'x'; 1001]))
        .unwrap();
    let (status, _, bytes) = send(&client, req).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    // Chunked with no length: cut off at the limit.
    let (tx, rx) = futures::channel::mpsc::channel::<
        Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(4);
    tokio::spawn(async move {
        use futures::SinkExt;
        let mut tx = tx;
        for _ in 0..4 {
            if tx
                .send(Ok(http_body::Frame::data(Bytes::from(vec![b'y'; 400]))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let req = Request::post(gw.url("/run/app1/echo"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(http_body_util::BodyExt::boxed(
            http_body_util::StreamBody::new(rx),
        ))
        .unwrap();
    let (status, _, bytes) = send(&client, req).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    let exact = Request::post(gw.url("/run/app1/echo"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(body(vec![b'z'; 1000]))
        .unwrap();
    assert_eq!(
        send(&client, exact).await.0,
        StatusCode::OK,
        "exactly the limit is fine"
    );
}

#[tokio::test]
async fn hostile_requests_are_refused_or_made_harmless() {
    let (one, two) = (upstream().await, upstream().await);
    let gw = gateway().await;
    gw.set(
        vec![
            app_route("app1", TENANT, vec![backend("i1", one.addr)]),
            app_route("app2", TENANT, vec![backend("i2", two.addr)]),
        ],
        keys(),
    );
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let wait = Duration::from_secs(3);

    // Request smuggling: Content-Length and Transfer-Encoding together.
    let smuggle = format!(
        "POST /run/app1/echo HTTP/1.1\r\nHost: gw\r\n{auth}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /run/app2/echo HTTP/1.1\r\nHost: gw\r\n{auth}\r\n"
    );
    let reply = raw(gw.addr, smuggle.as_bytes(), wait).await;
    // RFC 9112 §6.3: either refused, or framed by Transfer-Encoding alone
    // and the connection closed after the answer, so that nothing after the
    // chunked body is read as another request.
    let lower = reply.to_ascii_lowercase();
    assert!(
        lower.starts_with("http/1.1 400")
            || (lower.starts_with("http/1.1 200") && lower.contains("connection: close")),
        "CL+TE: {reply}"
    );
    if lower.starts_with("http/1.1 200") {
        let seen = json(&reply.as_bytes()[reply.find("\r\n\r\n").unwrap() + 4..]);
        assert_eq!(seen["len"], 0, "the chunked framing won");
        assert!(seen["headers"].get("content-length").is_none());
    }
    assert_eq!(
        reply.matches("HTTP/1.1").count(),
        1,
        "one answer only: {reply}"
    );
    assert_eq!(
        two.hits.load(Ordering::SeqCst),
        0,
        "nothing was smuggled to app2"
    );

    // Two different Content-Lengths.
    let dup = format!("POST /run/app1/echo HTTP/1.1\r\nHost: gw\r\n{auth}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd");
    let reply = raw(gw.addr, dup.as_bytes(), wait).await;
    assert!(
        reply.starts_with("HTTP/1.1 400"),
        "duplicate Content-Length is refused: {reply}"
    );
    assert_eq!(
        one.hits.load(Ordering::SeqCst),
        1,
        "only the chunked request above reached app1"
    );

    // Connection naming Authorization cannot strip the key before it is
    // checked, nor the forwarded fields the gateway sets.
    let named = format!("GET /run/app1/echo HTTP/1.1\r\nHost: gw\r\n{auth}Connection: Authorization, X-Forwarded-For, close\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n");
    let reply = raw(gw.addr, named.as_bytes(), wait).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = &reply[reply.find("\r\n\r\n").unwrap() + 4..];
    let seen = json(body.as_bytes());
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(seen["headers"].get("authorization").is_none());
    let unauth =
        "GET /run/app1/echo HTTP/1.1\r\nHost: gw\r\nConnection: Authorization, close\r\n\r\n";
    let reply = raw(gw.addr, unauth.as_bytes(), wait).await;
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");

    // Oversized headers: 431 (JSON from the gateway below hyper's own buffer limit).
    let big = format!(
        "GET /run/app1/echo HTTP/1.1\r\nHost: gw\r\n{auth}X-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(9000)
    );
    let reply = raw(gw.addr, big.as_bytes(), wait).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    let huge = format!(
        "GET /run/app1/echo HTTP/1.1\r\nHost: gw\r\n{auth}X-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let reply = raw(gw.addr, huge.as_bytes(), wait).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    // Path tricks stay within the app, or are refused.
    let client = client();
    for path in [
        "/run/app1/../app2/echo",
        "/run/app1/%2e%2e/app2/echo",
        "/run/app1/%2E%2e/%2e%2E/run/app2/echo",
        "/run/app1/./echo",
    ] {
        let (status, _, bytes) = get(&client, &gw.url(path), Some(KEY)).await;
        assert_eq!(
            (status, error_code(&bytes).as_str()),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{path}"
        );
    }
    for path in [
        "/run/%2e%2e/app2/echo",
        "/run//app2/echo",
        "/run/app1%2f..%2fapp2/echo",
    ] {
        let (status, _, _) = get(&client, &gw.url(path), Some(KEY)).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "{path}: {status}"
        );
    }
    let (status, _, bytes) = get(&client, &gw.url("/run/app1//app2/echo"), Some(KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json(&bytes)["upstream"],
        one.addr.to_string(),
        "a double slash stays in app1"
    );
    assert_eq!(two.hits.load(Ordering::SeqCst), 0, "no trick reached app2");
}

#[tokio::test]
async fn slowloris_connections_are_closed() {
    let gw = gateway().await;
    gw.set(vec![], keys());
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    // Dribble a header byte at a time, never finishing the head.
    let started = std::time::Instant::now();
    let mut closed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "the connection outlived the header read timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn upgrades_pass_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
        keys(),
    );
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let handshake = format!(
        "GET /run/app1/ws HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for message in ["hello", "through the gateway"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, message.as_bytes());
    }
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let up = upstream().await;
    let gw = gateway().await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
        keys(),
    );
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = Request::post(gw.url("/run/app1/echo"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(body("over h2c"))
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let seen = json(&bytes);
    assert_eq!(seen["body"], "over h2c");
    assert!(seen["headers"]["host"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn health_says_whether_routes_arrived() {
    let gw = gateway().await;
    let client = client();
    let (status, _, bytes) = get(&client, &gw.url("/healthz"), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&bytes)["routes_synced"], false);
    gw.set(vec![], vec![]);
    let (status, _, bytes) = get(&client, &gw.url("/healthz"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&bytes)["status"], "ok");
}

#[tokio::test]
async fn tls_clients_are_served_over_http1_and_h2() {
    use berth_pki::{CertificateAuthority, LeafRequest, Role};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("gateway test CA").unwrap();
    ca.save(dir.path()).unwrap();
    ca.issue(
        &LeafRequest::new(Role::Gateway, "gateway", 1)
            .with_sans(["127.0.0.1".to_owned(), "localhost".to_owned()]),
    )
    .unwrap()
    .save(dir.path(), "https")
    .unwrap();
    let up = upstream().await;
    let gw = gateway_with(berth_gateway::LimitArgs {
        https_cert: Some(dir.path().join("https.pem")),
        https_key: Some(dir.path().join("https-key.pem")),
        ..limits()
    })
    .await;
    gw.set(
        vec![app_route("app1", TENANT, vec![backend("i1", up.addr)])],
        keys(),
    );

    let ca_pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&ca_pem) {
        roots.add(cert).unwrap();
    }
    for (alpn, want) in [
        (&b"h2"[..], http::Version::HTTP_2),
        (&b"http/1.1"[..], http::Version::HTTP_11),
    ] {
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .expect("a TLS handshake with the gateway's certificate");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let req = Request::get(format!(
            "https://127.0.0.1:{}/run/app1/echo",
            gw.addr.port()
        ))
        .header("authorization", format!("Bearer {KEY}"))
        .header("host", format!("127.0.0.1:{}", gw.addr.port()))
        .body(body(Bytes::new()))
        .unwrap();
        let response = if want == http::Version::HTTP_2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (mut parts, body) = req.into_parts();
            parts.uri = "/run/app1/echo".parse().unwrap();
            sender
                .send_request(Request::from_parts(parts, body))
                .await
                .unwrap()
        };
        assert_eq!(response.version(), want);
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(json(&bytes)["headers"]["x-forwarded-proto"], "https");
    }
}

/// Certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn open_executions_refuse_a_bad_key_and_limit_anonymous_callers() {
    let gw = gateway_with(berth_gateway::LimitArgs {
        open_executions: true,
        open_executions_rate: 0.01,
        open_executions_burst: 2,
        ..limits()
    })
    .await;
    gw.set(vec![], keys());
    let client = client();
    let url = gw.url("/v1/executions/00000000-0000-0000-0000-000000000000");
    // A key that is presented must be valid: no quiet fall back to anonymous.
    let (status, _, bytes) = get(
        &client,
        &url,
        Some("berth_revoked0000000000000000000000000000"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&bytes), "invalid_key");
    // Without a key: admitted (on to the control plane, not connected
    // here) until the anonymous callers' own bucket is spent.
    for _ in 0..2 {
        let (status, _, bytes) = get(&client, &url, None).await;
        assert_eq!(
            (status, error_code(&bytes)),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "control_plane_unreachable".into()
            )
        );
    }
    let (status, headers, bytes) = get(&client, &url, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&bytes), "rate_limited");
    assert!(headers.contains_key("retry-after"));
    // A valid key has its own bucket, untouched.
    let (status, _, bytes) = get(&client, &url, Some(KEY)).await;
    assert_eq!(error_code(&bytes), "control_plane_unreachable", "{status}");
}

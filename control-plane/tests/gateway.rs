//! The gateway end to end: keys made over gRPC, routes streamed from the
//! control plane, and traffic to apps deployed on the real Docker engine,
//! including scale from zero.

mod support;

use berth_proto::pb::{
    self, api_key_service_client::ApiKeyServiceClient, app_service_client::AppServiceClient,
    event_service_client::EventServiceClient,
};
use http::{Request, StatusCode};
use http_body_util::Full;
use std::collections::HashSet;
use support::{apps::*, web::*, *};

/// Answers every GET and POST with what it received.
const ECHO_APP: &str = r#"
import hashlib, http.server, json, os
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        reply = json.dumps({
            "method": self.command,
            "path": self.path,
            "len": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_type": self.headers.get("Content-Type"),
            "forwarded_for": self.headers.get("X-Forwarded-For"),
            "authorization": self.headers.get("Authorization"),
            "request_id": self.headers.get("X-Request-Id"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    do_GET = answer
    do_POST = answer
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

fn echo_app(name: &str, tenant: &str, hostname: &str, min_instances: u32) -> pb::CreateAppRequest {
    let mut request = python_app(name, ECHO_APP, None);
    if let Some(pb::create_app_request::Part::Header(header)) = request.part.as_mut() {
        let settings = header.settings.as_mut().unwrap();
        settings.tenant = tenant.into();
        settings.app_hostname = hostname.into();
        settings.min_instances = Some(min_instances);
        settings.idle_timeout_s = Some(3);
    }
    request
}

#[tokio::test]
async fn keys_and_routes_reach_the_gateway_and_a_deployed_app_answers_through_it() {
    let (cluster, cp, _agent, channel) = cluster_with_node("gw-node").await;
    let mut keys = ApiKeyServiceClient::new(channel.clone());
    let mut apps = AppServiceClient::new(channel.clone());

    // Keys: made once, listed without the key, bad input refused.
    let acme = create_key(&mut keys, "acme", false).await;
    let other = create_key(&mut keys, "default", false).await;
    let admin = create_key(&mut keys, "ops", true).await;
    let acme_meta = acme.api_key.clone().unwrap();
    assert!(acme.key.starts_with("berth_") && acme.key.len() > 40);
    assert!(acme.key.starts_with(&acme_meta.prefix));
    let listed = keys
        .list_api_keys(pb::ListApiKeysRequest {
            tenant: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, acme_meta.id);
    assert!(
        !format!("{listed:?}").contains(&acme.key),
        "a listed key never shows the key"
    );
    for (tenant, rate) in [("Not A Tenant", 1.0), ("acme", -1.0), ("acme", f64::NAN)] {
        let status = keys
            .create_api_key(pb::CreateApiKeyRequest {
                tenant: tenant.into(),
                rate_per_second: rate,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{tenant} {rate}: {status:?}"
        );
    }
    let status = keys
        .revoke_api_key(pb::RevokeApiKeyRequest {
            id: "no-such-key".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // An app in tenant acme (made with its first key).
    let name = unique("echo");
    let hostname = format!("{name}.apps.test");
    let created = apps
        .create_app(tokio_stream::iter([echo_app(&name, "acme", &hostname, 1)]))
        .await
        .unwrap()
        .into_inner();
    wait_running(&mut apps, &created.id, 1).await;

    let (gateway, gateway_metrics, gateway_stop) = start_gateway_with_metrics(&cluster, &cp).await;
    let client = http_client();
    let run = |path: &str| format!("http://{gateway}/run/{}{path}", created.id);

    // JSON and multipart reach the app byte for byte.
    let payload = br#"{"order": 17, "items": ["a", "b"], "note": "\u00fc"}"#.to_vec();
    let req = Request::post(run("/orders?x=1"))
        .header("authorization", format!("Bearer {}", acme.key))
        .header("content-type", "application/json")
        .body(Full::from(payload.clone()))
        .unwrap();
    let (status, headers, seen) = call(&client, req).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/orders?x=1");
    assert_eq!(seen["sha256"], sha256_hex(&payload));
    assert_eq!(
        seen["authorization"],
        serde_json::Value::Null,
        "the key stays at the gateway"
    );
    assert_eq!(seen["forwarded_for"], "127.0.0.1");
    assert_eq!(
        seen["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );

    let boundary = "berth-e2e-boundary";
    let mut multipart = Vec::new();
    for i in 0..3 {
        let data: Vec<u8> = (0..(100_000 * (i + 1)))
            .map(|n| (n * 31 + i) as u8)
            .collect();
        multipart.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file{i}\"; filename=\"f{i}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        multipart.extend_from_slice(&data);
        multipart.extend_from_slice(b"\r\n");
    }
    multipart.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nthree files\r\n--{boundary}--\r\n").as_bytes());
    let req = Request::post(run("/upload"))
        .header("x-berth-key", &acme.key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Full::from(multipart.clone()))
        .unwrap();
    let (status, _, seen) = call(&client, req).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["len"], multipart.len());
    assert_eq!(seen["sha256"], sha256_hex(&multipart));
    assert_eq!(
        seen["content_type"],
        format!("multipart/form-data; boundary={boundary}")
    );

    // By hostname.
    let req = Request::get(format!("http://{gateway}/by-host"))
        .header("host", &hostname)
        .header("authorization", format!("Bearer {}", admin.key))
        .body(Full::default())
        .unwrap();
    let (status, _, seen) = call(&client, req).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["path"], "/by-host");

    // Who may call.
    let (status, _, body) = call(&client, get(&run("/"), Some(&other.key))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, _, body) = call(&client, get(&run("/"), None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_key"))
    );
    keys.revoke_api_key(pb::RevokeApiKeyRequest {
        id: acme_meta.id.clone(),
    })
    .await
    .unwrap();
    let key = acme.key.clone();
    let body = wait_status(
        &client,
        "the revoked key to be refused",
        || get(&run("/"), Some(&key)),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(body["error"]["code"], "invalid_key");

    // A stopped app is unavailable, with the reason.
    apps.stop_app(pb::AppRef {
        app_id: created.id.clone(),
    })
    .await
    .unwrap();
    let admin_key = admin.key.clone();
    let body = wait_status(
        &client,
        "the stopped app to be unavailable",
        || get(&run("/"), Some(&admin_key)),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(body["error"]["code"], "app_stopped");

    let (_, _, metrics) = call(
        &client,
        get(&format!("http://{gateway_metrics}/metrics"), None),
    )
    .await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    delete_and_wait(&mut apps, &created.id).await;
    let ok_count = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                r#"berth_gateway_requests_total{{app="{}",class="2xx"}} "#,
                created.id
            ))
        })
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no 2xx count for the app in {metrics}"));
    assert!(ok_count >= 3, "{metrics}");
    assert!(
        metrics.contains("berth_gateway_request_duration_seconds_count"),
        "{metrics}"
    );
    gateway_stop.cancel();
    cp.stop().await;
}

#[tokio::test]
async fn scale_from_zero_starts_one_instance_for_twenty_first_requests_and_idles_back() {
    let (cluster, cp, _agent, channel) = cluster_with_node("zero-node").await;
    let mut keys = ApiKeyServiceClient::new(channel.clone());
    let mut apps = AppServiceClient::new(channel.clone());
    let key = create_key(&mut keys, "default", false).await.key;
    let name = unique("sleepy");
    let created = apps
        .create_app(tokio_stream::iter([echo_app(&name, "default", "", 0)]))
        .await
        .unwrap()
        .into_inner();
    // Built, then nothing runs.
    wait_within(BUILD_WAIT, "the app to be built and scaled to zero", || {
        let mut apps = apps.clone();
        let id = created.id.clone();
        async move {
            let app = apps
                .get_app(pb::AppRef { app_id: id })
                .await
                .ok()?
                .into_inner();
            assert_ne!(
                app.state,
                pb::AppState::BuildFailed as i32,
                "{}",
                app.status_message
            );
            (app.state == pb::AppState::Running as i32 && app.instances.is_empty()).then_some(())
        }
    })
    .await;

    let (gateway, _stop) = start_gateway(&cluster, &cp).await;
    let client = http_client();
    let url = format!("http://{gateway}/run/{}/hello", created.id);
    let first =
        futures::future::join_all((0..20).map(|_| call(&client, get(&url, Some(&key))))).await;
    for (status, _, body) in &first {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["path"], "/hello");
    }
    let app = apps
        .get_app(pb::AppRef {
            app_id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        app.instances.len(),
        1,
        "one start for twenty first requests"
    );
    let mut events = EventServiceClient::new(channel.clone())
        .watch_events(pb::WatchEventsRequest {
            after_sequence: 0,
            follow: false,
            app_id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut instances_seen = HashSet::new();
    while let Some(event) = events.message().await.unwrap() {
        if event.kind.starts_with("instance.") {
            instances_seen.insert(event.subject_id);
        }
    }
    assert_eq!(
        instances_seen.len(),
        1,
        "exactly one instance was ever made"
    );

    // Idle for longer than its idle timeout (3 s): back to zero.
    wait_for("the idle app to scale back to zero", || {
        let mut apps = apps.clone();
        let id = created.id.clone();
        async move {
            let app = apps
                .get_app(pb::AppRef { app_id: id })
                .await
                .ok()?
                .into_inner();
            app.instances.is_empty().then_some(())
        }
    })
    .await;
    // And the next request wakes it again. (A request that races the
    // scale-down itself, before the gateway's routes drop the stopped
    // instance, can meet a port Docker still publishes and get a 502:
    // draining instances before stopping them is not built yet.)
    let mut answer = call(&client, get(&url, Some(&key))).await;
    for _ in 0..3 {
        if answer.0 != StatusCode::BAD_GATEWAY {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        answer = call(&client, get(&url, Some(&key))).await;
    }
    let (status, _, body) = answer;
    assert_eq!(status, StatusCode::OK, "{body}");
    delete_and_wait(&mut apps, &created.id).await;
    cp.stop().await;
}

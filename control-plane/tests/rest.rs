//! The gateway's management HTTP API against a real control plane and the
//! real Docker engine: `/v1` and the seeds' endpoints, with their shapes.

mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use std::net::SocketAddr;
use support::{apps::*, web::*, *};

/// Prints a line at start, then serves every path with its name.
const HELLO_APP: &str = r#"
import http.server, os
print("hello app starting", flush=True)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

const DOCKERFILE: &str = "FROM berth/python:3.11-bookworm\nCOPY server.py /srv/server.py\nCMD [\"python3\", \"/srv/server.py\"]\n";

/// A multipart/form-data body: text fields, then files `(field, filename, bytes)`.
fn multipart(fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "berthRestBoundary0123";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    for (name, file_name, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

struct Api {
    client: Client,
    base: SocketAddr,
    key: String,
    /// Stops the gateway when cancelled.
    stop: tokio_util::sync::CancellationToken,
}

impl Api {
    fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.key));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.body(Full::from(body)).unwrap()
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (ct, bytes) = match body {
            Some(v) => (Some("application/json"), v.to_string().into_bytes()),
            None => (None, Vec::new()),
        };
        let (status, _, value) = call(&self.client, self.request(method, path, ct, bytes)).await;
        (status, value)
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.send(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    async fn form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &[u8])],
    ) -> (StatusCode, Value) {
        let (ct, body) = multipart(fields, files);
        let (status, _, value) = call(
            &self.client,
            self.request(Method::POST, path, Some(&ct), body),
        )
        .await;
        (status, value)
    }

    /// Text of a streamed answer (NDJSON or plain).
    async fn text(&self, path: &str) -> String {
        let (status, _, value) = call(
            &self.client,
            self.request(Method::GET, path, None, Vec::new()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}: {value}");
        match value {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    /// Polls `GET path` until `done` holds for the JSON.
    async fn wait(&self, what: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_within(BUILD_WAIT, what, || async {
            let (status, value) = self.send(Method::GET, path, None).await;
            (status == StatusCode::OK && done(&value)).then_some(value)
        })
        .await
    }
}

async fn setup(
    node: &str,
) -> (
    Cluster,
    ControlPlane,
    berth_node_agent::Agent,
    Api,
    String,
    tonic::transport::Channel,
) {
    let (cluster, cp, agent, channel) = cluster_with_node(node).await;
    let mut keys =
        berth_proto::pb::api_key_service_client::ApiKeyServiceClient::new(channel.clone());
    let admin = create_key(&mut keys, "ops", true).await.key;
    let tenant_key = create_key(&mut keys, "default", false).await.key;
    let (gateway, stop) = start_gateway(&cluster, &cp).await;
    let api = Api {
        client: http_client(),
        base: gateway,
        key: admin,
        stop,
    };
    (cluster, cp, agent, api, tenant_key, channel)
}

fn running(app: &Value) -> bool {
    app["state"] == "running"
        && app["instances"]
            .as_array()
            .is_some_and(|i| !i.is_empty() && i.iter().all(|i| i["state"] == "running"))
}

#[tokio::test]
async fn rest_v1_manages_apps_builds_keys_nodes_and_events() {
    let (_cluster, cp, _agent, api, tenant_key, channel) = setup("rest-node").await;

    // The document, and who may call.
    let (status, _, doc) = call(
        &api.client,
        get(&format!("http://{}/v1/openapi.json", api.base), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let (status, _, body) = call(
        &api.client,
        get(&format!("http://{}/v1/apps", api.base), None),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_key"))
    );
    let (status, _, body) = call(
        &api.client,
        get(&format!("http://{}/v1/apps", api.base), Some(&tenant_key)),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("deployer_required"))
    );

    // Keys.
    let (status, made) = api
        .send(
            Method::POST,
            "/v1/keys",
            Some(serde_json::json!({"tenant": "acme", "rate_per_second": 5, "burst": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert!(made["key"].as_str().unwrap().starts_with("berth_"));
    let listed = api.ok(Method::GET, "/v1/keys?tenant=acme", None).await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert!(
        listed["keys"][0].get("key").is_none(),
        "listing never shows a key"
    );
    let revoked = api
        .ok(
            Method::DELETE,
            &format!("/v1/keys/{}", made["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert!(revoked["revoked_at"].is_string());
    let (status, body) = api
        .send(
            Method::POST,
            "/v1/keys",
            Some(serde_json::json!({"rate_per_second": -1})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_argument")),
        "{body}"
    );

    // Nodes.
    let nodes = api.ok(Method::GET, "/v1/nodes", None).await;
    assert_eq!(nodes["nodes"][0]["name"], "rest-node");
    assert_eq!(nodes["nodes"][0]["state"], "ready");
    let drained = api
        .ok(Method::POST, "/v1/nodes/rest-node/drain", None)
        .await;
    assert_eq!(drained["state"], "draining");
    let back = api
        .ok(Method::POST, "/v1/nodes/rest-node/undrain", None)
        .await;
    assert_eq!(back["state"], "ready");
    let (status, body) = api.send(Method::GET, "/v1/nodes/no-such-node", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Bad settings: refused with the field, nothing made.
    let before = api.ok(Method::GET, "/v1/apps", None).await["apps"]
        .as_array()
        .unwrap()
        .len();
    let (status, body) = api
        .send(
            Method::POST,
            "/v1/apps",
            Some(serde_json::json!({"name": "Not A Name", "files": []})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("name"),
        "{body}"
    );
    let after = api.ok(Method::GET, "/v1/apps", None).await["apps"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);

    // A Python app as multipart with its code file.
    let name = unique("rest");
    let (status, app) = api
        .form(
            "/v1/apps",
            &[
                ("name", &name),
                ("runtime", "python"),
                ("memory_limit", "128m"),
                ("cpu_limit", "0.5"),
            ],
            &[("code", "main.py", HELLO_APP.as_bytes())],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    let id = app["id"].as_str().unwrap().to_owned();
    assert_eq!(app["memory_bytes"], 128u64 << 20);
    assert_eq!(app["cpu_millis"], 500);
    let app = api
        .wait("the REST app to run", &format!("/v1/apps/{id}"), running)
        .await;
    let build_id = app["current_build_id"].as_str().unwrap().to_owned();
    let build = api
        .ok(Method::GET, &format!("/v1/builds/{build_id}"), None)
        .await;
    assert_eq!(build["state"], "ready");
    let build_logs = api.text(&format!("/v1/builds/{build_id}/logs")).await;
    assert!(!build_logs.is_empty());
    let instances = api
        .ok(Method::GET, &format!("/v1/apps/{id}/instances"), None)
        .await;
    assert_eq!(instances["instances"][0]["state"], "running");
    let stats = api
        .ok(Method::GET, &format!("/v1/apps/{id}/stats"), None)
        .await;
    assert_eq!(stats["instances"].as_array().unwrap().len(), 1);
    let logs = api.text(&format!("/v1/apps/{id}/logs?tail=20")).await;
    assert!(logs.contains("hello app starting"), "{logs}");
    let events = api.text(&format!("/v1/events?app_id={id}")).await;
    let kinds: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        kinds.contains(&"app.created".to_owned()) && kinds.contains(&"instance.running".to_owned()),
        "{kinds:?}"
    );

    // Redeploy with nothing: the same code again, no rebuild needed.
    let redeployed = api
        .ok(Method::POST, &format!("/v1/apps/{id}/redeploy"), None)
        .await;
    assert_eq!(redeployed["id"], id.as_str());
    let stopped = api
        .ok(Method::POST, &format!("/v1/apps/{id}/stop"), None)
        .await;
    assert_eq!(stopped["state"], "stopped");
    api.ok(Method::POST, &format!("/v1/apps/{id}/start"), None)
        .await;
    api.wait(
        "the restarted app to run",
        &format!("/v1/apps/{id}"),
        running,
    )
    .await;

    // A Dockerfile archive streamed as multipart, and a hostile one refused.
    let archive = tar_gz(&[
        ("Dockerfile", DOCKERFILE),
        ("server.py", &HELLO_APP.replace("\"hello \"", "\"docker \"")),
    ]);
    let docker_name = unique("restdocker");
    let (status, app) = api
        .form(
            "/v1/apps",
            &[("name", &docker_name), ("memory_limit", "128m")],
            &[("archive", "app.tar.gz", &archive)],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    assert_eq!(app["runtime"], "dockerfile");
    let docker_id = app["id"].as_str().unwrap().to_owned();
    api.wait(
        "the Dockerfile app to run",
        &format!("/v1/apps/{docker_id}"),
        running,
    )
    .await;
    let mut evil = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.as_gnu_mut().unwrap().name[..11].copy_from_slice(b"../evil.txt");
    header.set_cksum();
    evil.append(&header, &b"evil"[..]).unwrap();
    let evil = evil.into_inner().unwrap();
    let (status, body) = api
        .form(
            "/v1/apps",
            &[("name", &unique("evil"))],
            &[("archive", "evil.tar", &evil)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("../evil.txt"),
        "{body}"
    );

    // Delete: gone.
    api.ok(Method::DELETE, &format!("/v1/apps/{docker_id}"), None)
        .await;
    let (status, _) = api
        .send(Method::GET, &format!("/v1/apps/{docker_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let cleanup = api.ok(Method::POST, "/v1/cleanup", None).await;
    assert!(cleanup["removed_containers"].is_array());
    let mut apps = berth_proto::pb::app_service_client::AppServiceClient::new(channel);
    delete_and_wait(&mut apps, &id).await;
    assert!(app_containers(
        &berth_node_agent::docker::connect().await.unwrap(),
        &docker_id
    )
    .await
    .is_empty());
    let (status, body) = api.send(Method::GET, "/v1/nothing-here", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    api.stop.cancel();
    cp.stop().await;
}

#[tokio::test]
async fn seed_endpoints_answer_in_the_seeds_shapes() {
    let (_cluster, cp, _agent, api, tenant_key, _channel) = setup("seed-node").await;

    // Seed 003: an image from a multipart upload with the orchestrator's fields.
    let archive = tar_gz(&[("Dockerfile", DOCKERFILE), ("server.py", HELLO_APP)]);
    let name = unique("seedimg");
    let hostname = format!("{name}.apps.test");
    let (status, image) = api
        .form(
            "/api/images",
            &[
                ("name", &name),
                ("tag", "v1"),
                ("app_hostname", &hostname),
                ("container_port", "8080"),
                ("min_instances", "1"),
                ("max_instances", "2"),
                ("cpu_limit", "0.5"),
                ("memory_limit", "128m"),
            ],
            &[("file", "app.tar.gz", &archive)],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{image}");
    for field in [
        "id",
        "name",
        "app_hostname",
        "container_port",
        "min_instances",
        "max_instances",
        "cpu_limit",
        "memory_limit",
        "status",
        "build_logs",
    ] {
        assert!(image.get(field).is_some(), "image lacks {field}: {image}");
    }
    assert_eq!(image["status"], "building");
    assert_eq!(image["memory_limit"], "128m");
    assert_eq!(image["cpu_limit"], 0.5);
    let id = image["id"].as_str().unwrap().to_owned();
    let ready = api
        .wait("the image to be ready", &format!("/api/images/{id}"), |v| {
            v["status"] == "ready"
        })
        .await;
    assert!(!ready["build_logs"].as_str().unwrap().is_empty());
    let logs = api
        .ok(Method::GET, &format!("/api/images/{id}/build-logs"), None)
        .await;
    assert_eq!(logs["image_id"], id.as_str());
    assert_eq!(logs["status"], "ready");
    let all = api.ok(Method::GET, "/api/images", None).await;
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == id.as_str()));
    let containers = api
        .wait(
            "the image's container to run",
            &format!("/api/images/{id}/containers"),
            |v| {
                v.as_array()
                    .is_some_and(|c| c.len() == 1 && c[0]["status"] == "running")
            },
        )
        .await;
    let container_id = containers[0]["id"].as_str().unwrap().to_owned();
    let with = api
        .ok(Method::GET, "/api/images/with-containers", None)
        .await;
    let mine = with
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["container_count"], 1);
    // One more container is allowed (max 2), a third is not.
    let (status, more) = api
        .send(Method::POST, &format!("/api/containers/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{more}");
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/api/containers/{id}"),
            Some(serde_json::json!({"count": 5})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("max_instances")),
        "{body}"
    );
    api.wait(
        "two containers",
        &format!("/api/images/{id}/containers"),
        |v| {
            v.as_array()
                .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["status"] == "running"))
        },
    )
    .await;
    let one = api
        .ok(
            Method::GET,
            &format!("/api/containers/{container_id}"),
            None,
        )
        .await;
    assert_eq!(one["image_id"], id.as_str());
    assert!(one["port"].as_u64().unwrap() > 0);
    let listed = api.ok(Method::GET, "/api/containers/", None).await;
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == container_id.as_str()));
    let removed = api
        .ok(
            Method::DELETE,
            &format!("/api/containers/{container_id}"),
            None,
        )
        .await;
    assert_eq!(removed["success"], true);
    api.wait(
        "back to one container",
        &format!("/api/images/{id}/containers"),
        |v| v.as_array().is_some_and(|c| c.len() == 1),
    )
    .await;

    // Seed 000: the executor's shapes.
    let health = api.ok(Method::GET, "/health", None).await;
    assert_eq!(
        health,
        serde_json::json!({"status": "healthy", "service": "executor"})
    );
    let stopped = api.ok(Method::POST, &format!("/stop/{id}"), None).await;
    assert_eq!(
        stopped,
        serde_json::json!({"status": "success", "message": "API stopped successfully"})
    );
    let status = api.ok(Method::GET, &format!("/status/{id}"), None).await;
    assert_eq!(status["api_id"], id.as_str());
    assert_eq!(status["status"], "stopped");
    let deployed = api
        .ok(
            Method::POST,
            "/deploy",
            Some(serde_json::json!({"api_id": id})),
        )
        .await;
    assert_eq!(deployed["status"], "success");
    assert_eq!(deployed["message"], "API deployed successfully");
    assert!(
        !deployed["container_id"].as_str().unwrap().is_empty(),
        "{deployed}"
    );
    let status = api.ok(Method::GET, &format!("/status/{id}"), None).await;
    assert_eq!(status["status"], "running");
    assert_eq!(status["container_id"], deployed["container_id"]);

    // Seed 001: the admin API, admin keys only.
    let (code, _, body) = call(
        &api.client,
        get(
            &format!("http://{}/admin/deployments", api.base),
            Some(&tenant_key),
        ),
    )
    .await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("deployer_required"))
    );
    let deployments = api.ok(Method::GET, "/admin/deployments", None).await;
    assert_eq!(deployments["success"], true);
    let entry = &deployments["deployments"][id.as_str()];
    assert_eq!(entry["status"], "running");
    assert!(entry["port"].as_u64().unwrap() > 0);
    assert!(
        entry["image"]
            .as_str()
            .unwrap()
            .starts_with("apps.berth.invalid/"),
        "{entry}"
    );
    let health = api
        .ok(Method::GET, &format!("/admin/deployment/{id}"), None)
        .await;
    assert_eq!(health["success"], true);
    assert_eq!(health["api_id"], id.as_str());
    for field in [
        "status",
        "cpu_percent",
        "memory_usage_mb",
        "memory_percent",
        "port",
    ] {
        assert!(
            health["health"].get(field).is_some(),
            "health lacks {field}: {health}"
        );
    }
    let stop = api
        .ok(Method::POST, &format!("/admin/deployment/{id}/stop"), None)
        .await;
    assert_eq!(
        stop,
        serde_json::json!({"success": true, "message": format!("API {id} stopped")})
    );
    let start = api
        .ok(Method::POST, &format!("/admin/deployment/{id}/start"), None)
        .await;
    assert_eq!(start["success"], true);
    assert_eq!(start["message"], format!("API {id} deployed"));
    assert!(start["port"].as_u64().unwrap() > 0);
    let reload = api
        .ok(Method::POST, &format!("/admin/reload/{id}"), None)
        .await;
    assert_eq!(
        reload,
        serde_json::json!({"success": true, "message": format!("API {id} redeployed")})
    );
    let cleanup = api.ok(Method::POST, "/admin/cleanup", None).await;
    assert_eq!(cleanup["success"], true);
    assert_eq!(cleanup["message"], "Cleanup completed");
    assert!(cleanup["remaining_deployments"].is_u64());

    // And the image goes.
    let deleted = api
        .ok(Method::DELETE, &format!("/api/images/{id}"), None)
        .await;
    assert_eq!(deleted["success"], true);
    let (code, _) = api
        .send(Method::GET, &format!("/api/images/{id}"), None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let docker = berth_node_agent::docker::connect().await.unwrap();
    wait_containers_gone(&docker, &id).await;
    api.stop.cancel();
    cp.stop().await;
}

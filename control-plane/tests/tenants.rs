//! A tenant manages its own apps, builds, keys, events and executions —
//! through the gateway with a deployer key, and over gRPC with a tenant
//! certificate — and sees nothing of another tenant's; admins keep the
//! cluster-wide view. Real control plane, real gateway, real mTLS.

mod support;

use berth_pki::Role;
use berth_proto::pb::{
    self, api_key_service_client::ApiKeyServiceClient, app_service_client::AppServiceClient,
    build_service_client::BuildServiceClient, event_service_client::EventServiceClient,
    execution_service_client::ExecutionServiceClient, node_service_client::NodeServiceClient,
};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use std::net::SocketAddr;
use support::{web::*, *};
use tonic::Code;

/// One caller of the gateway's HTTP API.
struct As<'a> {
    client: &'a Client,
    gateway: SocketAddr,
    key: &'a str,
}

impl As<'_> {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.gateway))
            .header("authorization", format!("Bearer {}", self.key));
        let bytes = match body {
            Some(body) => {
                req = req.header("content-type", "application/json");
                body.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let (status, _, value) = call(self.client, req.body(Full::from(bytes)).unwrap()).await;
        (status, value)
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.send(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    /// The error code of a refused call, checking its status.
    async fn refused(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let (status, value) = self.send(method.clone(), path, body).await;
        assert!(
            !status.is_success(),
            "{method} {path} should be refused: {value}"
        );
        (
            status,
            value["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    }

    /// Waits until the gateway knows the key (it arrives over the route watch).
    async fn known(&self) {
        wait_for("the gateway to know the key", || async {
            let (status, _) = self
                .send(Method::GET, "/v1/executions/not-an-id", None)
                .await;
            (status != StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
    }
}

fn app_json(name: &str) -> Value {
    json!({
        "name": name,
        "runtime": "python",
        "files": [{"path": "main.py", "content": "print('hi')\n"}],
    })
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {list}"))
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_deployer_key_manages_its_tenant_and_sees_nothing_of_another() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let mut keys = ApiKeyServiceClient::new(cluster.client(&cp, "admin").await);
    let admin_key = create_key(&mut keys, "ops", true).await.key;
    let acme_key = create_key_with_role(&mut keys, "acme", pb::KeyRole::Deployer).await;
    let globex_key = create_key_with_role(&mut keys, "globex", pb::KeyRole::Deployer).await;
    let invoker_key = create_key(&mut keys, "acme", false).await.key;
    let (gateway, stop) = start_gateway(&cluster, &cp).await;
    let client = http_client();
    let who = |key| As {
        client: &client,
        gateway,
        key,
    };
    let (admin, acme, globex, invoker) = (
        who(&admin_key),
        who(&acme_key.key),
        who(&globex_key.key),
        who(&invoker_key),
    );
    for caller in [&admin, &acme, &globex, &invoker] {
        caller.known().await;
    }

    // Each deployer makes an app in its own tenant, without naming it.
    let mine = acme
        .ok(Method::POST, "/v1/apps", Some(app_json("shop")))
        .await;
    assert_eq!(mine["tenant"], "acme", "{mine}");
    let theirs = globex
        .ok(Method::POST, "/v1/apps", Some(app_json("shop")))
        .await;
    assert_eq!(theirs["tenant"], "globex", "{theirs}");
    let (mine_id, theirs_id) = (
        mine["id"].as_str().unwrap().to_owned(),
        theirs["id"].as_str().unwrap().to_owned(),
    );
    let theirs_build = theirs["current_build_id"].as_str().unwrap().to_owned();
    // Naming another tenant is refused, and makes nothing.
    let mut elsewhere = app_json("intruder");
    elsewhere["tenant"] = json!("globex");
    assert_eq!(
        acme.refused(Method::POST, "/v1/apps", Some(elsewhere))
            .await,
        (StatusCode::FORBIDDEN, "permission_denied".to_owned())
    );

    // Lists hold only the tenant's own; the admin sees both.
    let listed = acme.ok(Method::GET, "/v1/apps", None).await;
    assert_eq!(ids(&listed, "apps"), vec![mine_id.clone()]);
    assert_eq!(
        acme.refused(Method::GET, "/v1/apps?tenant=globex", None)
            .await,
        (StatusCode::FORBIDDEN, "permission_denied".to_owned())
    );
    let all = admin.ok(Method::GET, "/v1/apps", None).await;
    let all = ids(&all, "apps");
    assert!(
        all.contains(&mine_id) && all.contains(&theirs_id),
        "{all:?}"
    );
    let seed_images = acme.ok(Method::GET, "/api/images", None).await;
    let seen: Vec<&str> = seed_images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, vec![mine_id.as_str()], "seed 003's list");

    // Another tenant's app, build and key answer 404 to every verb, and
    // stay as they were.
    for (method, path, body) in [
        (Method::GET, format!("/v1/apps/{theirs_id}"), None),
        (Method::POST, format!("/v1/apps/{theirs_id}/stop"), None),
        (
            Method::POST,
            format!("/v1/apps/{theirs_id}/scale"),
            Some(json!({"instances": 3})),
        ),
        (Method::DELETE, format!("/v1/apps/{theirs_id}"), None),
        (Method::GET, format!("/v1/apps/{theirs_id}/logs"), None),
        (Method::GET, format!("/v1/builds/{theirs_build}"), None),
        (Method::GET, format!("/v1/builds/{theirs_build}/logs"), None),
        (Method::GET, format!("/api/images/{theirs_id}"), None),
        (
            Method::DELETE,
            format!("/v1/keys/{}", globex_key.api_key.as_ref().unwrap().id),
            None,
        ),
    ] {
        assert_eq!(
            acme.refused(method.clone(), &path, body).await,
            (StatusCode::NOT_FOUND, "not_found".to_owned()),
            "{method} {path}"
        );
    }
    let still = admin
        .ok(Method::GET, &format!("/v1/apps/{theirs_id}"), None)
        .await;
    assert_eq!(
        (still["state"].as_str(), still["min_instances"].as_u64()),
        (Some("building"), Some(1)),
        "{still}"
    );
    globex.known().await;

    // Keys: the tenant's own only; never an admin key, never another
    // tenant's, never above the default rate.
    let made = acme
        .ok(
            Method::POST,
            "/v1/keys",
            Some(json!({"role": "invoker", "name": "ci"})),
        )
        .await;
    assert_eq!(
        (made["tenant"].as_str(), made["role"].as_str()),
        (Some("acme"), Some("invoker"))
    );
    for body in [
        json!({"role": "admin"}),
        json!({"tenant": "globex"}),
        json!({"rate_per_second": 100000}),
    ] {
        assert_eq!(
            acme.refused(Method::POST, "/v1/keys", Some(body.clone()))
                .await
                .1,
            "permission_denied",
            "{body}"
        );
    }
    let listed = acme.ok(Method::GET, "/v1/keys", None).await;
    let tenants: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["tenant"].as_str().unwrap())
        .collect();
    assert!(
        !tenants.is_empty() && tenants.iter().all(|t| *t == "acme"),
        "{listed}"
    );

    // Events: the tenant's own (its app and keys), none of the other's,
    // none of the cluster's.
    let (status, events) = acme.send(Method::GET, "/v1/events", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = events
        .as_str()
        .map(str::to_owned)
        .unwrap_or(events.to_string());
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|e| e["app_id"] == mine_id.as_str()),
        "the tenant's own app events: {text}"
    );
    assert!(
        !text.contains(&theirs_id) && !text.contains("globex"),
        "nothing of the other tenant: {text}"
    );
    let admin_events = admin
        .send(Method::GET, "/v1/events", None)
        .await
        .1
        .to_string();
    assert!(admin_events.contains(&theirs_id), "admins see every tenant");

    // The cluster's own things are for admins.
    for (method, path) in [
        (Method::GET, "/v1/nodes"),
        (Method::POST, "/v1/cleanup"),
        (Method::POST, "/admin/cleanup"),
    ] {
        assert_eq!(
            acme.refused(method.clone(), path, None).await,
            (StatusCode::FORBIDDEN, "permission_denied".to_owned()),
            "{method} {path}"
        );
    }
    // Tenants: a deployer sees its own and sets nothing; an admin sets
    // shares, and a field left out is kept.
    let listed = acme.ok(Method::GET, "/v1/tenants", None).await;
    let names: Vec<&str> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme"], "{listed}");
    let limits = json!({"max_running_builds": 3});
    assert_eq!(
        acme.refused(Method::PUT, "/v1/tenants/acme/limits", Some(limits.clone()))
            .await,
        (StatusCode::FORBIDDEN, "permission_denied".to_owned())
    );
    let set = admin
        .ok(Method::PUT, "/v1/tenants/acme/limits", Some(limits))
        .await;
    assert_eq!(set["limits"]["max_running_builds"], 3, "{set}");
    assert_eq!(set["limits"]["max_queued_executions"], Value::Null, "{set}");
    assert_eq!(set["effective"]["max_queued_executions"], 64, "{set}");
    let again = admin
        .ok(
            Method::PUT,
            "/v1/tenants/acme/limits",
            Some(json!({"max_queued_executions": 5})),
        )
        .await;
    assert_eq!(
        (
            &again["limits"]["max_running_builds"],
            &again["limits"]["max_queued_executions"]
        ),
        (&json!(3), &json!(5)),
        "{again}"
    );
    assert_eq!(
        admin
            .refused(
                Method::PUT,
                "/v1/tenants/acme/limits",
                Some(json!({"max_running_builds": 100000}))
            )
            .await,
        (StatusCode::BAD_REQUEST, "invalid_argument".to_owned())
    );

    // The tenant of callers without a key is no one's.
    assert_eq!(
        admin
            .refused(
                Method::POST,
                "/v1/keys",
                Some(json!({"tenant": "anonymous"}))
            )
            .await,
        (StatusCode::BAD_REQUEST, "invalid_argument".to_owned())
    );

    // An invoker key runs code and calls apps, but manages nothing.
    assert_eq!(
        invoker.refused(Method::GET, "/v1/apps", None).await,
        (StatusCode::FORBIDDEN, "deployer_required".to_owned())
    );

    // The deployer stops and deletes its own app.
    acme.ok(Method::POST, &format!("/v1/apps/{mine_id}/stop"), None)
        .await;
    acme.ok(Method::DELETE, &format!("/v1/apps/{mine_id}"), None)
        .await;
    admin
        .ok(Method::GET, &format!("/v1/apps/{theirs_id}"), None)
        .await;
    stop.cancel();
    cp.stop().await;
}

#[tokio::test]
async fn a_tenant_certificate_manages_its_tenant_over_grpc() {
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let admin = cluster.client(&cp, "admin").await;
    cluster.pki.issue(Role::Tenant, "acme");
    let acme = cluster.client(&cp, "acme").await;

    let create = |channel: tonic::transport::Channel, tenant: &str| {
        let mut request = support::apps::python_app("api", "print('hi')\n", None);
        if let Some(pb::create_app_request::Part::Header(header)) = &mut request.part {
            header.settings.as_mut().unwrap().tenant = tenant.into();
        }
        async move {
            AppServiceClient::new(channel)
                .create_app(tokio_stream::iter([request]))
                .await
        }
    };
    let mine = create(acme.clone(), "").await.unwrap().into_inner();
    assert_eq!(mine.settings.as_ref().unwrap().tenant, "acme");
    // Tenant globex exists once it has a key; acme by its certificate.
    create_key(
        &mut ApiKeyServiceClient::new(admin.clone()),
        "globex",
        false,
    )
    .await;
    let theirs = create(admin.clone(), "globex").await.unwrap().into_inner();
    let status = create(acme.clone(), "globex").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let mut apps = AppServiceClient::new(acme.clone());
    let listed = apps
        .list_apps(pb::ListAppsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert_eq!(
        listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        vec![mine.id.as_str()]
    );
    let status = apps
        .get_app(pb::AppRef {
            app_id: theirs.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = apps
        .delete_app(pb::AppRef {
            app_id: theirs.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = BuildServiceClient::new(acme.clone())
        .get_build(pb::GetBuildRequest {
            build_id: theirs.current_build_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Events: only the tenant's.
    let mut stream = EventServiceClient::new(acme.clone())
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        seen.push(event);
    }
    assert!(seen.iter().any(|e| e.app_id == mine.id), "{seen:?}");
    assert!(seen.iter().all(|e| e.app_id == mine.id), "{seen:?}");

    // Keys: its own tenant's only.
    let mut keys = ApiKeyServiceClient::new(acme.clone());
    let status = keys
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::KeyRole::Admin.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let made = keys
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::KeyRole::Deployer.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.api_key.unwrap().tenant, "acme");

    // Executions: its own tenant only.
    let status = ExecutionServiceClient::new(acme.clone())
        .submit_execution(pb::ExecuteRequest {
            tenant: "globex".into(),
            language: pb::Language::Python.into(),
            code: "print(1)".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Nodes and cleanup are the cluster's.
    let status = NodeServiceClient::new(acme.clone())
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = apps
        .cleanup(pb::CleanupRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // And the admin still sees both.
    let all = AppServiceClient::new(admin)
        .list_apps(pb::ListAppsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert_eq!(all.len(), 2);
    cp.stop().await;
}

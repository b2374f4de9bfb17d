//! Code executions end to end: the control plane's ExecutionService, a real
//! agent running real sandboxes, and the gateway's HTTP shapes.

mod support;

use berth_proto::pb::{self, execution_service_client::ExecutionServiceClient};
use http::{Request, StatusCode};
use http_body_util::Full;
use std::time::Duration;
use support::{apps::wait_python, web::*, *};
use tonic::transport::Channel;

async fn cluster_with_sandbox(
    node: &str,
) -> (Cluster, ControlPlane, berth_node_agent::Agent, Channel) {
    berth_common::telemetry::init();
    let cluster = Cluster::new(Backend::Sqlite);
    let cp = cluster.start().await;
    let agent = cluster.agent(&cp, node);
    let channel = cluster.client(&cp, "admin").await;
    // Ready, with its languages reported.
    wait_python(&channel).await;
    (cluster, cp, agent, channel)
}

fn request(language: pb::Language, code: &str) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        tenant: String::new(),
        language: language as i32,
        code: code.into(),
        stdin: Vec::new(),
        timeout_ms: 10_000,
        memory_bytes: 0,
    }
}

fn state(e: &pb::Execution) -> pb::ExecutionState {
    pb::ExecutionState::try_from(e.state).unwrap()
}

/// Waits until execution `id` is in `wanted`, and returns it.
async fn wait_state(
    executions: &ExecutionServiceClient<Channel>,
    id: &str,
    wanted: pb::ExecutionState,
) -> pb::Execution {
    wait_for(&format!("execution {id} to be {wanted:?}"), || {
        let mut executions = executions.clone();
        let id = id.to_owned();
        async move {
            let e = executions
                .get_execution(pb::GetExecutionRequest {
                    execution_id: id,
                    tenant: String::new(),
                })
                .await
                .ok()?
                .into_inner();
            (state(&e) == wanted).then_some(e)
        }
    })
    .await
}

#[tokio::test]
async fn executions_run_through_grpc_and_http() {
    let (cluster, cp, _agent, channel) = cluster_with_sandbox("exec-node").await;
    let mut executions = ExecutionServiceClient::new(channel.clone());

    let mut hello = request(
        pb::Language::Python,
        "import sys\nprint('hello', sys.stdin.read())",
    );
    hello.stdin = b"world".to_vec();
    let done = executions.execute(hello).await.unwrap().into_inner();
    assert_eq!(state(&done), pb::ExecutionState::Succeeded, "{done:?}");
    assert_eq!(String::from_utf8_lossy(&done.stdout), "hello world\n");
    assert_eq!(done.node_name, "exec-node");
    assert!(done.wall_time_ms > 0 && done.finished_at.is_some());
    let again = executions
        .get_execution(pb::GetExecutionRequest {
            execution_id: done.id.clone(),
            tenant: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.stdout, done.stdout, "the result is stored");

    // Limits: rejected with the limit named, nothing run.
    let big = request(pb::Language::Python, &"#".repeat(50 * 1024 + 1));
    let rejected = executions.execute(big).await.unwrap().into_inner();
    assert_eq!(state(&rejected), pb::ExecutionState::Rejected);
    assert!(rejected.error.contains("51201 bytes"), "{}", rejected.error);
    let mut slow = request(pb::Language::Python, "print(1)");
    slow.timeout_ms = 61_000;
    let rejected = executions.execute(slow).await.unwrap().into_inner();
    assert_eq!(state(&rejected), pb::ExecutionState::Rejected);
    assert!(rejected.error.contains("61000 ms"), "{}", rejected.error);
    let mut unknown = request(pb::Language::Python, "print(1)");
    unknown.language = 99;
    let rejected = executions.execute(unknown).await.unwrap().into_inner();
    assert_eq!(state(&rejected), pb::ExecutionState::Rejected);
    assert!(rejected.error.contains("language"), "{}", rejected.error);

    // A compiled language, and a failure with its exit code.
    let cpp = executions
        .execute(request(
            pb::Language::Cpp,
            "#include <cstdio>\nint main(){puts(\"compiled\"); return 0;}",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&cpp.stdout),
        "compiled\n",
        "{cpp:?}"
    );
    let failed = executions
        .execute(request(pb::Language::Javascript, "process.exit(7)"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (state(&failed), failed.exit_code),
        (pb::ExecutionState::Failed, 7)
    );

    // Submitted, then cancelled while it runs.
    let long = executions
        .submit_execution(request(pb::Language::Python, "import time\ntime.sleep(30)"))
        .await
        .unwrap()
        .into_inner();
    wait_state(&executions, &long.id, pb::ExecutionState::Running).await;
    let started = std::time::Instant::now();
    let cancelled = executions
        .cancel_execution(pb::CancelExecutionRequest {
            execution_id: long.id.clone(),
            tenant: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&cancelled),
        pb::ExecutionState::Cancelled,
        "{cancelled:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // Validation: errors with line and column, per language.
    let checked = executions
        .validate_code(pb::ValidateCodeRequest {
            language: pb::Language::Python as i32,
            code: "x = 1\nif x\n    print(x)\n".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!checked.valid);
    assert_eq!(checked.errors[0].line, 2, "{checked:?}");
    for (language, good, bad, line) in [
        (pb::Language::Javascript, "console.log(1)", "let x = ;", 1),
        (
            pb::Language::Cpp,
            "int main(){return 0;}",
            "int main(){\nreturn x;}",
            2,
        ),
        (
            pb::Language::Typescript,
            "const a: number = 1;",
            "const a: number = 'x';",
            1,
        ),
        (
            pb::Language::Java,
            "public class Main { public static void main(String[] a){} }",
            "public class Main { int x = }",
            1,
        ),
        (
            pb::Language::Go,
            "package main\nfunc main() {}\n",
            "package main\nfunc main( {}\n",
            2,
        ),
        (
            pb::Language::Rust,
            "fn main() {}",
            "fn main() { let x: u32 = \"a\"; }",
            1,
        ),
    ] {
        let ok = executions
            .validate_code(pb::ValidateCodeRequest {
                language: language as i32,
                code: good.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(ok.valid, "{language:?}: {ok:?}");
        let not = executions
            .validate_code(pb::ValidateCodeRequest {
                language: language as i32,
                code: bad.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!not.valid, "{language:?}");
        assert_eq!(not.errors[0].line, line, "{language:?}: {not:?}");
        assert!(not.errors[0].column > 0, "{language:?}: {not:?}");
    }

    // Over HTTP: seed 002's shapes, with a key.
    let mut keys = pb::api_key_service_client::ApiKeyServiceClient::new(channel.clone());
    let key = create_key(&mut keys, "default", false).await.key;
    let other_key = create_key(&mut keys, "other", false).await.key;
    let admin_key = create_key(&mut keys, "ops", true).await.key;
    let (gateway, _stop) = start_gateway(&cluster, &cp).await;
    let client = http_client();
    let post = |path: &str, body: serde_json::Value, key: Option<&str>| {
        let mut req = Request::post(format!("http://{gateway}{path}"))
            .header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        req.body(Full::from(body.to_string())).unwrap()
    };
    let (status, _, body) = call(
        &client,
        post(
            "/execute",
            serde_json::json!({"code": "print(input().upper())", "inputData": "seed two", "timeout": 5}),
            Some(&key),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["output"], "SEED TWO\n");
    assert_eq!(body["error"], "");
    assert_eq!(body["status"], "success");
    assert!(body["executionTime"].as_f64().unwrap() > 0.0);
    let (status, _, body) = call(
        &client,
        post(
            "/execute",
            serde_json::json!({"code": "raise ValueError('boom')"}),
            Some(&key),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "error");
    assert!(
        body["error"].as_str().unwrap().contains("ValueError: boom"),
        "{body}"
    );
    let (status, _, body) = call(
        &client,
        post("/execute", serde_json::json!({"code": "print(1)"}), None),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_key"))
    );
    // A language there is not: rejected, naming it.
    let (status, _, body) = call(
        &client,
        post(
            "/execute",
            serde_json::json!({"code": "print(1)", "language": "cobol"}),
            Some(&key),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "rejected");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"cobol\" is unknown"),
        "{body}"
    );
    let (status, _, body) = call(
        &client,
        post(
            "/v1/executions",
            serde_json::json!({"language": "cobol", "code": "print(1)"}),
            Some(&key),
        ),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unknown_language")),
        "{body}"
    );
    let (status, _, body) = call(
        &client,
        post(
            "/validate",
            serde_json::json!({"code": "def f(:\n  pass"}),
            Some(&key),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["isValid"], false);
    assert_eq!(body["errors"][0]["line"], 1);
    assert!(body["warnings"].is_array());
    let (_, _, body) = call(
        &client,
        post(
            "/validate",
            serde_json::json!({"code": "print(1)"}),
            Some(&key),
        ),
    )
    .await;
    assert_eq!(body["isValid"], true, "{body}");
    let (status, _, info) = call(&client, get(&format!("http://{gateway}/info"), Some(&key))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        info["languages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["language"] == "python"),
        "{info}"
    );
    assert_eq!(info["limits"]["maxTimeout"], 60.0);
    let (status, _, body) = call(
        &client,
        post(
            "/v1/executions",
            serde_json::json!({"language": "javascript", "code": "console.log(6*7)"}),
            Some(&key),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "succeeded");
    assert_eq!(body["stdout"], "42\n");
    assert_eq!(body["tenant"], "default");
    // The OpenAPI document describes what the endpoint answers, field by field.
    let (status, _, doc) = call(
        &client,
        get(&format!("http://{gateway}/v1/openapi.json"), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/v1/executions"]["post"].is_object(), "{doc}");
    assert!(doc["paths"]["/v1/executions/{id}/cancel"]["post"].is_object());
    let documented = &doc["components"]["schemas"]["Execution"]["properties"];
    for field in body.as_object().unwrap().keys() {
        assert!(
            documented[field].is_object(),
            "{field} is not in the document"
        );
    }
    let id = body["id"].as_str().unwrap();
    let (status, _, body) = call(
        &client,
        get(&format!("http://{gateway}/v1/executions/{id}"), Some(&key)),
    )
    .await;
    assert_eq!(
        (status, body["stdout"].as_str()),
        (StatusCode::OK, Some("42\n"))
    );
    // Another tenant neither sees nor cancels it: as if there were none.
    let (status, _, body) = call(
        &client,
        get(
            &format!("http://{gateway}/v1/executions/{id}"),
            Some(&other_key),
        ),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{body}"
    );
    let (status, _, body) = call(
        &client,
        post(
            &format!("/v1/executions/{id}/cancel"),
            serde_json::json!({}),
            Some(&other_key),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // An admin sees every tenant's.
    let (status, _, body) = call(
        &client,
        get(
            &format!("http://{gateway}/v1/executions/{id}"),
            Some(&admin_key),
        ),
    )
    .await;
    assert_eq!(
        (status, body["tenant"].as_str()),
        (StatusCode::OK, Some("default"))
    );
    cp.stop().await;
}

#[tokio::test]
async fn a_node_lost_mid_run_fails_its_executions() {
    let (_cluster, cp, agent, channel) = cluster_with_sandbox("doomed-node").await;
    let mut executions = ExecutionServiceClient::new(channel.clone());
    let long = executions
        .submit_execution(request(pb::Language::Python, "import time\ntime.sleep(20)"))
        .await
        .unwrap()
        .into_inner();
    wait_state(&executions, &long.id, pb::ExecutionState::Running).await;
    kill_agent(agent).await;
    let failed = wait_state(&executions, &long.id, pb::ExecutionState::Failed).await;
    assert!(
        failed.error.contains("doomed-node") && failed.error.contains("lost"),
        "{}",
        failed.error
    );
    cp.stop().await;
}

/// The dispatcher keeps its list of ready nodes between runs: a drain takes
/// the node out of it at once (no run reaches a drained node), an undrain
/// puts it back.
#[tokio::test]
async fn a_drained_node_gets_no_runs_at_once() {
    let (cluster, cp, _agent, channel) = cluster_with_sandbox("drained-node").await;
    let mut executions = ExecutionServiceClient::new(channel.clone());
    let hello = || request(pb::Language::Python, "print('hi')");
    // A run first: the dispatcher has listed the node.
    let ran = executions.execute(hello()).await.unwrap().into_inner();
    assert_eq!(state(&ran), pb::ExecutionState::Succeeded, "{ran:?}");

    let mut nodes = cluster.admin(&cp).await;
    nodes
        .drain_node(pb::DrainNodeRequest {
            name: "drained-node".into(),
        })
        .await
        .unwrap();
    let refused = executions.execute(hello()).await.unwrap().into_inner();
    assert_eq!(state(&refused), pb::ExecutionState::Rejected, "{refused:?}");
    assert!(
        refused.error.contains("no ready node runs python"),
        "{}",
        refused.error
    );

    nodes
        .undrain_node(pb::UndrainNodeRequest {
            name: "drained-node".into(),
        })
        .await
        .unwrap();
    let again = executions.execute(hello()).await.unwrap().into_inner();
    assert_eq!(state(&again), pb::ExecutionState::Succeeded, "{again:?}");
    assert_eq!(again.stdout, b"hi\n");
    cp.stop().await;
}

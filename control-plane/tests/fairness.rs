//! Fair shares between tenants: one that floods Berth with executions or
//! builds waits on its own work, and another tenant's work still starts.
//! Real control plane, real agent, real sandboxes and Docker builds.

mod support;

use berth_proto::pb::{
    self, app_service_client::AppServiceClient, build_service_client::BuildServiceClient,
    execution_service_client::ExecutionServiceClient, tenant_service_client::TenantServiceClient,
};
use support::{apps::*, web::*, *};
use tonic::transport::Channel;

fn sleeper(tenant: &str) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        tenant: tenant.into(),
        language: pb::Language::Python.into(),
        // As long as a run may take: cancelled at the end, never timed out
        // however slowly this machine goes.
        code: "import time\ntime.sleep(60)".into(),
        timeout_ms: 60_000,
        ..Default::default()
    }
}

fn state(e: &pb::Execution) -> pb::ExecutionState {
    pb::ExecutionState::try_from(e.state).unwrap()
}

async fn states(
    executions: &mut ExecutionServiceClient<Channel>,
    ids: &[String],
) -> Vec<pb::ExecutionState> {
    let mut out = Vec::new();
    for id in ids {
        let e = executions
            .get_execution(pb::GetExecutionRequest {
                execution_id: id.clone(),
                tenant: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        out.push(state(&e));
    }
    out
}

async fn set_limits(channel: &Channel, tenant: &str, limits: pb::TenantLimits) -> pb::Tenant {
    TenantServiceClient::new(channel.clone())
        .set_tenant_limits(pb::SetTenantLimitsRequest {
            name: tenant.into(),
            limits: Some(limits),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_waits_on_its_own_executions() {
    let (_cluster, cp, _agent, admin) = cluster_with_node("fair-node").await;
    let mut keys = pb::api_key_service_client::ApiKeyServiceClient::new(admin.clone());
    create_key(&mut keys, "flood", false).await;
    create_key(&mut keys, "calm", false).await;
    let mut executions = ExecutionServiceClient::new(admin.clone());
    wait_python(&admin).await;
    // One run at a time and eight waiting for the flooding tenant; the
    // node has a slot per core.
    let flood = set_limits(
        &admin,
        "flood",
        pb::TenantLimits {
            max_running_executions: Some(1),
            max_queued_executions: Some(8),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(flood.effective.unwrap().max_queued_executions, Some(8));

    // One run takes the tenant's one slot…
    let first = executions
        .submit_execution(sleeper("flood"))
        .await
        .unwrap()
        .into_inner();
    wait_for("the first run to start", || {
        let mut executions = executions.clone();
        let id = first.id.clone();
        async move {
            let now = states(&mut executions, &[id]).await;
            (now[0] == pb::ExecutionState::Running).then_some(())
        }
    })
    .await;
    // …and eight more wait behind it.
    let mut ids = vec![first.id];
    for _ in 0..8 {
        let e = executions
            .submit_execution(sleeper("flood"))
            .await
            .unwrap()
            .into_inner();
        ids.push(e.id);
    }
    // The tenant's line is full: refused, for this tenant only.
    let refused = executions
        .submit_execution(sleeper("flood"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("flood") && refused.message().contains('8'),
        "{}",
        refused.message()
    );
    // The other tenant's run starts at once and finishes.
    let mut calm = sleeper("calm");
    calm.code = "print('calm')".into();
    let done = executions.execute(calm).await.unwrap().into_inner();
    assert_eq!(state(&done), pb::ExecutionState::Succeeded, "{done:?}");
    assert_eq!(String::from_utf8_lossy(&done.stdout).trim(), "calm");
    // Meanwhile the flood ran within its share: one running, eight waiting.
    let now = states(&mut executions, &ids).await;
    let running = now
        .iter()
        .filter(|s| **s == pb::ExecutionState::Running)
        .count();
    let queued = now
        .iter()
        .filter(|s| **s == pb::ExecutionState::Queued)
        .count();
    assert_eq!((running, queued), (1, 8), "{now:?}");

    for id in ids {
        executions
            .cancel_execution(pb::CancelExecutionRequest {
                execution_id: id,
                tenant: String::new(),
            })
            .await
            .unwrap();
    }
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_builds_beyond_its_share_wait_their_turn() {
    let (_cluster, cp, agent, admin) = cluster_with_node("fair-builds").await;
    create_key(
        &mut pb::api_key_service_client::ApiKeyServiceClient::new(admin.clone()),
        "builder",
        false,
    )
    .await;
    set_limits(
        &admin,
        "builder",
        pb::TenantLimits {
            max_running_builds: Some(1),
            ..Default::default()
        },
    )
    .await;
    let mut apps = AppServiceClient::new(admin.clone());
    // A build that takes a while, then another of the same tenant.
    let slow = tar_gz(&[(
        "Dockerfile",
        "FROM berth/python:3.11-bookworm\nRUN sleep 15\nCMD [\"python3\", \"-m\", \"http.server\", \"8080\"]\n",
    )]);
    let fast = tar_gz(&[(
        "Dockerfile",
        "FROM berth/python:3.11-bookworm\nCMD [\"python3\", \"-m\", \"http.server\", \"8080\"]\n",
    )]);
    let mut made = Vec::new();
    for archive in [slow, fast] {
        let mut messages = dockerfile_app(&unique("fair"), archive);
        if let Some(pb::create_app_request::Part::Header(header)) = &mut messages[0].part {
            header.settings.as_mut().unwrap().tenant = "builder".into();
        }
        made.push(
            apps.create_app(tokio_stream::iter(messages))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    // The second waits for the first, saying why.
    let waiting = wait_for("the second build to wait its turn", || {
        let mut apps = apps.clone();
        let id = made[1].id.clone();
        async move {
            let app = apps
                .get_app(pb::AppRef { app_id: id })
                .await
                .ok()?
                .into_inner();
            app.status_message
                .contains("waiting: tenant builder")
                .then_some(app)
        }
    })
    .await;
    assert!(
        waiting.status_message.contains("its share is 1"),
        "{}",
        waiting.status_message
    );
    // Then both are built.
    let mut builds = BuildServiceClient::new(admin.clone());
    for app in &made {
        wait_within(BUILD_WAIT, "each build to be ready", || {
            let mut builds = builds.clone();
            let id = app.current_build_id.clone();
            async move {
                let build = builds
                    .get_build(pb::GetBuildRequest { build_id: id })
                    .await
                    .ok()?
                    .into_inner();
                (build.state == pb::BuildState::Ready as i32).then_some(())
            }
        })
        .await;
    }
    let _ = &mut builds;
    for app in made {
        delete_and_wait(&mut apps, &app.id).await;
    }
    kill_agent(agent).await;
    cp.stop().await;
}

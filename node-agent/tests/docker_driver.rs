//! The Docker driver against the real engine: builds, hardened containers,
//! readiness, adoption by label, removal.

mod support;

use berth_node_agent::docker::{self, base_images, build, containers, readiness};
use std::{collections::HashMap, time::Duration};
use support::tar_of;

const WAIT: Duration = Duration::from_secs(60);

async fn engine() -> bollard::Docker {
    let docker = docker::connect()
        .await
        .expect("the Docker engine is reachable");
    let outcome = base_images::ensure(&docker, &base_images::PYTHON, &Default::default())
        .await
        .unwrap();
    eprintln!("python base image: {outcome:?}");
    docker
}

const APP: &str = r#"
import http.server, os, json
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "uid": os.getuid(), "six": __import__("six").__version__}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

static NO_LABELS: std::sync::LazyLock<HashMap<String, String>> =
    std::sync::LazyLock::new(HashMap::new);

/// A build of tenant `default` with no labels.
fn spec<'a>(
    tag: &'a str,
    context: bytes::Bytes,
    timeout: std::time::Duration,
    limits: &'a berth_node_agent::config::BuildArgs,
) -> build::BuildSpec<'a> {
    build::BuildSpec {
        tag,
        context,
        labels: &NO_LABELS,
        timeout,
        limits,
        tenant: "default",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_runs_hardened_and_adopts_a_python_app() {
    let docker = engine().await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let tag = format!("berth-test-driver:{}", &suffix[..12]);
    let context = tar_of(&[(
        "Dockerfile",
        "FROM berth/python:3.11-bookworm\nRUN pip install --no-cache-dir six==1.16.0\n",
    )]);
    let mut log = String::new();
    build::build_image(
        &docker,
        spec(&tag, context, WAIT * 5, &Default::default()),
        |line| log.push_str(line),
    )
    .await
    .unwrap_or_else(|e| panic!("build failed: {e}\n{log}"));
    assert!(build::image_exists(&docker, &tag).await.unwrap());
    assert!(log.contains("six"), "{log}");

    let code = tempfile::tempdir().unwrap();
    std::fs::write(code.path().join("main.py"), APP).unwrap();
    // The container runs as nobody: the code must be readable by it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(code.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let plan = containers::ContainerPlan {
        node: format!("test-{}", &suffix[..8]),
        tenant: "default".into(),
        app_id: format!("app{}", &suffix[..12]),
        app_name: "driver".into(),
        instance_id: suffix.clone(),
        image: tag.clone(),
        code_dir: Some(code.path().to_owned()),
        container_port: 8080,
        publish_ip: "127.0.0.1".into(),
        cpu_millis: 500,
        memory_bytes: 256 << 20,
        env: HashMap::from([("GREETING".to_owned(), "hi".to_owned())]),
        command: vec!["python3".into(), "/app/code/main.py".into()],
        locked_down: true,
    };
    let id = containers::create_and_start(&docker, &plan).await.unwrap();
    let observed = containers::inspect(&docker, &id).await.unwrap().unwrap();
    let port = observed.host_port.expect("a published port");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !readiness::answers_http("127.0.0.1", port).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = http_get(port, "/hello?x=1").await;
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.contains(r#""path": "/hello?x=1""#), "{response}");
    assert!(
        response.contains(r#""uid": 65534"#),
        "runs as nobody: {response}"
    );
    assert!(response.contains(r#""six": "1.16.0""#), "{response}");

    // What `docker inspect` shows.
    let inspected = docker
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    assert_eq!(
        inspected.name.as_deref(),
        Some(format!("/{}", plan.container_name()).as_str())
    );
    assert!(plan.container_name().starts_with("berth-driver-"));
    let host = inspected.host_config.unwrap();
    assert_eq!(host.memory, Some(256 << 20));
    assert_eq!(host.memory_swap, Some(256 << 20));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(containers::PIDS_LIMIT));
    assert_eq!(
        host.restart_policy.unwrap().name,
        Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED)
    );
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges:true".to_owned()])
    );
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(
        host.network_mode.as_deref(),
        Some(plan.network_name().as_str())
    );
    let mounts = inspected.mounts.unwrap();
    let code_mount = mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/app/code"))
        .unwrap();
    assert_eq!(code_mount.rw, Some(false));
    let env = inspected.config.unwrap().env.unwrap();
    assert!(
        env.contains(&"PORT=8080".to_owned()) && env.contains(&"GREETING=hi".to_owned()),
        "{env:?}"
    );

    // Found again by label, as after an agent restart: same container.
    let managed = containers::list_managed(&docker, &plan.node).await.unwrap();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].container_id, id);
    assert_eq!(managed[0].instance_id, plan.instance_id);
    assert_eq!(managed[0].started_at, observed.started_at);

    // No traffic between containers: another app's container cannot reach
    // this one's port, which the host reaches at the same address.
    let address = inspected_address(&docker, &id).await;
    let direct = tokio::net::TcpStream::connect((address.as_str(), 8080)).await;
    assert!(
        direct.is_ok(),
        "the host reaches {address}:8080: {direct:?}"
    );
    let other = containers::ContainerPlan {
        app_id: format!("other{}", &suffix[..12]),
        app_name: "driver-other".into(),
        instance_id: uuid::Uuid::new_v4().simple().to_string(),
        code_dir: None,
        command: vec![
            "python3".into(),
            "-c".into(),
            format!(
                "import socket, time\n\
                 try:\n    socket.create_connection(('{address}', 8080), timeout=3); print('REACHED', flush=True)\n\
                 except OSError as e:\n    print('blocked', e, flush=True)\n\
                 time.sleep(60)\n"
            ),
        ],
        ..plan.clone()
    };
    let other_id = containers::create_and_start(&docker, &other).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let said = loop {
        let logs = containers::logs_tail(&docker, &other_id, 5).await;
        if logs.contains("blocked") || logs.contains("REACHED") {
            break logs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other container said nothing: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    containers::remove(&docker, &other_id).await.unwrap();
    assert!(
        said.contains("blocked"),
        "another app reached this one: {said}"
    );

    containers::remove(&docker, &id).await.unwrap();
    assert!(containers::inspect(&docker, &id).await.unwrap().is_none());
    assert!(containers::list_managed(&docker, &plan.node)
        .await
        .unwrap()
        .is_empty());
    docker
        .remove_image(
            &tag,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
        .unwrap();
}

/// The container's address on the apps' network.
async fn inspected_address(docker: &bollard::Docker, id: &str) -> String {
    let inspected = docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    inspected
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.get(&docker::network::current()).cloned())
        .and_then(|e| e.ip_address)
        .filter(|ip| !ip.is_empty())
        .expect("an address on the apps' network")
}

#[tokio::test]
async fn a_failing_build_reports_the_error_and_its_output() {
    let docker = engine().await;
    let context = tar_of(&[(
        "Dockerfile",
        "FROM berth/python:3.11-bookworm\nRUN echo about-to-fail && exit 3\n",
    )]);
    let mut log = String::new();
    let err = build::build_image(
        &docker,
        spec("berth-test-fail:x", context, WAIT, &Default::default()),
        |line| log.push_str(line),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, build::BuildError::Failed(_)), "{err:?}");
    assert!(
        err.to_string().contains("returned a non-zero code: 3"),
        "{err}"
    );
    assert!(log.contains("about-to-fail"), "{log}");

    let bad = tar_of(&[(
        "Dockerfile",
        "FROM berth/python:3.11-bookworm\nNOT_AN_INSTRUCTION x\n",
    )]);
    let err = build::build_image(
        &docker,
        spec("berth-test-fail:y", bad, WAIT, &Default::default()),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, build::BuildError::Failed(_)), "{err:?}");
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("unknown instruction"),
        "{err}"
    );
}

/// A build step gets the node's build limits and the builds' own network:
/// over its memory it is killed, and its gateway is that network's.
#[tokio::test]
async fn a_build_step_is_held_to_its_limits_and_network() {
    let docker = engine().await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let dockerfile = format!(
        "FROM berth/python:3.11-bookworm\n\
         RUN echo {suffix} && python3 -c \"import socket,struct; rows=[l.split() for l in open('/proc/net/route')][1:]; g=[r for r in rows if r[1]=='00000000'][0][2]; print('GATEWAY', socket.inet_ntoa(struct.pack('<L', int(g, 16))))\"\n\
         RUN echo {suffix} && python3 -c \"b = b'x' * (400 << 20); print('ALLOCATED', len(b))\"\n"
    );
    let limits = berth_node_agent::config::BuildArgs {
        build_memory_mib: 128,
        build_cpus: 0.5,
    };
    let mut log = String::new();
    let tag = format!("berth-test-limits:{}", &suffix[..12]);
    let err = build::build_image(
        &docker,
        spec(
            &tag,
            tar_of(&[("Dockerfile", &dockerfile)]),
            WAIT * 3,
            &limits,
        ),
        |line| log.push_str(line),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, build::BuildError::Failed(_)),
        "{err:?}\n{log}"
    );
    // The step was killed, not refused: it ran as far as its memory went.
    assert!(log.contains("returned a non-zero code: 137"), "{log}");
    assert!(
        !log.contains("ALLOCATED 419430400"),
        "400 MiB fit in 128: {log}"
    );
    let network = docker
        .inspect_network(
            berth_node_agent::docker::network::BUILD_NETWORK,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    let gateway = network
        .ipam
        .and_then(|ipam| ipam.config)
        .and_then(|configs| configs.into_iter().find_map(|c| c.gateway))
        .expect("the builds' network has a gateway");
    assert!(
        log.contains(&format!("GATEWAY {gateway}")),
        "the step ran on {}: {log}",
        berth_node_agent::docker::network::BUILD_NETWORK
    );
}

/// The engine resolves what a Dockerfile names: an image built for another
/// tenant is refused under any name, and so is a parent whose `ONBUILD`
/// triggers would run in this build.
#[tokio::test]
async fn a_build_uses_no_image_of_another_tenant_and_runs_no_foreign_triggers() {
    let docker = engine().await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let owned = format!("berth-test-owned:{}", &suffix[..12]);
    let labels = HashMap::from([(build::LABEL_TENANT.to_owned(), "acme".to_owned())]);
    let limits = Default::default();
    let secret = tar_of(&[(
        "Dockerfile",
        &format!("FROM berth/python:3.11-bookworm\nRUN echo {suffix} > /secret\n"),
    )]);
    build::build_image(
        &docker,
        build::BuildSpec {
            tag: &owned,
            context: secret,
            labels: &labels,
            timeout: WAIT * 3,
            limits: &limits,
            tenant: "acme",
        },
        |_| {},
    )
    .await
    .unwrap();
    let thief = |from: &str| {
        tar_of(&[(
            "Dockerfile",
            &format!("FROM berth/python:3.11-bookworm\nCOPY --from={from} /secret /loot\nRUN cat /loot\n"),
        )])
    };
    let mut log = String::new();
    let err = build::build_image(
        &docker,
        build::BuildSpec {
            tag: &format!("berth-test-thief:{}", &suffix[..12]),
            context: thief(&owned),
            labels: &NO_LABELS,
            timeout: WAIT * 3,
            limits: &limits,
            tenant: "globex",
        },
        |line| log.push_str(line),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("not one of this tenant's images"),
        "{err}"
    );
    assert!(!log.contains(&suffix), "the secret leaked: {log}");
    // The owner builds on it.
    let heir = format!("berth-test-heir:{}", &suffix[..12]);
    build::build_image(
        &docker,
        build::BuildSpec {
            tag: &heir,
            context: thief(&owned),
            labels: &labels,
            timeout: WAIT * 3,
            limits: &limits,
            tenant: "acme",
        },
        |_| {},
    )
    .await
    .unwrap();

    // A parent whose trigger would copy acme's image into the child, and
    // that claims to be globex's own (a label anyone can write): its
    // trigger is checked like the Dockerfile, and refused before it runs.
    let triggered = format!("berth-test-trigger:{}", &suffix[..12]);
    let claims = HashMap::from([(build::LABEL_TENANT.to_owned(), "globex".to_owned())]);
    build::build_image(
        &docker,
        build::BuildSpec {
            tag: &triggered,
            context: tar_of(&[(
                "Dockerfile",
                &format!("FROM berth/python:3.11-bookworm\nONBUILD COPY --from={owned} /secret /loot\nONBUILD RUN cat /loot\n"),
            )]),
            labels: &claims,
            timeout: WAIT * 3,
            limits: &limits,
            tenant: "acme",
        },
        |_| {},
    )
    .await
    .unwrap();
    let mut log = String::new();
    let err = build::build_image(
        &docker,
        build::BuildSpec {
            tag: &format!("berth-test-child:{}", &suffix[..12]),
            context: tar_of(&[("Dockerfile", &format!("FROM {triggered}\n"))]),
            labels: &NO_LABELS,
            timeout: WAIT * 3,
            limits: &limits,
            tenant: "globex",
        },
        |line| log.push_str(line),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("not one of this tenant's images"),
        "{err}"
    );
    assert!(!log.contains(&suffix), "the trigger ran: {log}");
    for tag in [heir, owned, triggered] {
        let _ = docker
            .remove_image(
                &tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
}

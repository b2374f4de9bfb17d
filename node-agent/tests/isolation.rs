//! What an app or build container of one tenant can reach, with the host's
//! container firewall in place, against the real engine and real rules:
//! not another tenant's app at the node's address and published port (the
//! address a non-loopback one, as on a real node), not another container
//! directly, not a service of the host. A flushed rule comes back on the
//! next check, and a firewall that cannot be written says why.

use berth_node_agent::docker::{
    self, base_images, build, containers,
    firewall::{Checked, Firewall, FirewallPolicy},
    network, readiness,
};
use std::{collections::HashMap, net::Ipv4Addr, time::Duration};
use support::tar_of;

mod support;

const WAIT: Duration = Duration::from_secs(60);

/// The host's global IPv4 addresses by interface (`ip -o -4 addr`).
fn host_addresses() -> Vec<(String, Ipv4Addr)> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let interface = words.nth(1)?.to_owned();
            let address = words.nth(1)?.split('/').next()?.parse().ok()?;
            Some((interface, address))
        })
        .collect()
}

/// A python program that tries each `(name, host, port)` and prints
/// `name blocked` or `name REACHED`, then `probed`.
fn probe(targets: &[(String, String, u16)]) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|(name, host, port)| format!("({name:?}, {host:?}, {port})"))
        .collect();
    format!(
        "import socket\n\
         for name, host, port in [{}]:\n\
         \x20   try:\n\
         \x20       socket.create_connection((host, port), timeout=3).close(); print(name, 'REACHED', flush=True)\n\
         \x20   except OSError as e:\n\
         \x20       print(name, 'blocked', e, flush=True)\n\
         print('probed', flush=True)\n",
        list.join(", ")
    )
}

/// Every target named in `said` was blocked.
fn all_blocked(said: &str, targets: &[(String, String, u16)], who: &str) {
    for (name, host, port) in targets {
        let line = said
            .lines()
            .find(|l| l.contains(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{who} said nothing of {name}: {said}"));
        assert!(
            line.contains("blocked"),
            "{who} reached {name} ({host}:{port}): {said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_reach_no_other_app_and_nothing_of_the_host() {
    let docker = docker::connect().await.expect("the Docker engine");
    base_images::ensure(&docker, &base_images::PYTHON, &Default::default())
        .await
        .unwrap();
    let firewall = Firewall::new(FirewallPolicy::default(), "iptables");
    // As the agent does before a build: the builds' network first, so the
    // rules cover its bridge.
    network::ensure_build_network(&docker).await.unwrap();
    assert!(
        network::enforce_firewall(&docker, &firewall).await,
        "the firewall is written: {:?}",
        firewall.problem()
    );
    assert_eq!(firewall.problem(), None);
    // As the agent does once the firewall holds.
    network::choose_default_bridge().await;

    let addresses = host_addresses();
    let bridge_address = addresses
        .iter()
        .find(|(i, _)| i == "docker0")
        .map(|(_, a)| *a)
        .expect("the default bridge's address on the host");
    // The app of tenant A, published on a node address that is not loopback.
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let app = containers::ContainerPlan {
        node: format!("iso-{}", &suffix[..8]),
        tenant: "tenant-a".into(),
        app_id: format!("a{}", &suffix[..12]),
        app_name: "iso-a".into(),
        instance_id: suffix.clone(),
        image: base_images::PYTHON.image.to_owned(),
        code_dir: None,
        container_port: 8080,
        publish_ip: bridge_address.to_string(),
        cpu_millis: 500,
        memory_bytes: 128 << 20,
        env: HashMap::new(),
        command: vec![
            "python3".into(),
            "-m".into(),
            "http.server".into(),
            "8080".into(),
        ],
        locked_down: true,
    };
    let app_id = containers::create_and_start(&docker, &app).await.unwrap();
    let observed = containers::inspect(&docker, &app_id)
        .await
        .unwrap()
        .unwrap();
    let port = observed.host_port.expect("a published port");
    let node = bridge_address.to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !readiness::answers_http(&node, port).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app never answered the host"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app_address = docker
        .inspect_container(
            &app_id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap()
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.get(&network::current()).cloned())
        .and_then(|e| e.ip_address)
        .expect("the app's address on its bridge");
    // A service of the host, on every address (as SSH or the control plane).
    let service = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let service_port = service.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move {
        let mut count = 0;
        while let Ok(Ok(_)) = tokio::time::timeout(WAIT * 3, service.accept()).await {
            count += 1;
        }
        count
    });
    // The host itself reaches it (the rules are about containers alone).
    tokio::net::TcpStream::connect((bridge_address, service_port))
        .await
        .expect("the host reaches its own service");

    let mut targets = vec![
        ("published-port".to_owned(), node.clone(), port),
        ("other-container".to_owned(), app_address.clone(), 8080),
        (
            "host-service-on-bridge".to_owned(),
            node.clone(),
            service_port,
        ),
    ];
    for (interface, address) in addresses.iter().filter(|(i, _)| i != "docker0") {
        targets.push((
            format!("host-service-on-{interface}"),
            address.to_string(),
            service_port,
        ));
    }

    // From a container of tenant B.
    let other = containers::ContainerPlan {
        tenant: "tenant-b".into(),
        app_id: format!("b{}", &suffix[..12]),
        app_name: "iso-b".into(),
        instance_id: uuid::Uuid::new_v4().simple().to_string(),
        publish_ip: "127.0.0.1".into(),
        command: vec![
            "python3".into(),
            "-c".into(),
            format!("{}import time\ntime.sleep(120)\n", probe(&targets)),
        ],
        ..app.clone()
    };
    let other_id = containers::create_and_start(&docker, &other).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let said = loop {
        let logs = containers::logs_tail(&docker, &other_id, 20).await;
        if logs.contains("probed") {
            break logs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe said nothing: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    containers::remove(&docker, &other_id).await.unwrap();
    all_blocked(&said, &targets, "another tenant's container");

    // From a build step.
    let dockerfile = format!(
        "FROM {}\nCOPY probe.py /probe.py\nRUN python3 /probe.py\n",
        base_images::PYTHON.image
    );
    // Unique, so that no cached step stands in for the run.
    let script = format!("# {suffix}\n{}", probe(&targets));
    let tag = format!("berth-test-iso:{}", &suffix[..12]);
    let mut log = String::new();
    let labels = HashMap::new();
    build::build_image(
        &docker,
        build::BuildSpec {
            tag: &tag,
            context: tar_of(&[("Dockerfile", &dockerfile), ("probe.py", &script)]),
            labels: &labels,
            timeout: WAIT * 3,
            limits: &Default::default(),
            tenant: "tenant-b",
        },
        |line| log.push_str(line),
    )
    .await
    .unwrap_or_else(|e| panic!("the build failed: {e}\n{log}"));
    let _ = docker
        .remove_image(
            &tag,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
    all_blocked(&log, &targets, "a build step");

    containers::remove(&docker, &app_id).await.unwrap();
    accepted.abort();

    // A flushed rule comes back on the next check, and holds after.
    let bridges = network::bridges(&docker).await.unwrap();
    let iptables = |args: &[&str]| {
        std::process::Command::new("iptables")
            .args(args)
            .status()
            .unwrap()
            .success()
    };
    assert!(iptables(&["-w", "5", "-D", "INPUT", "-j", "BERTH-INPUT"]));
    assert_eq!(firewall.ensure(&bridges).await.unwrap(), Checked::Restored);
    assert!(iptables(&["-w", "5", "-C", "INPUT", "-j", "BERTH-INPUT"]));
    assert_eq!(firewall.ensure(&bridges).await.unwrap(), Checked::Held);
    assert!(iptables(&["-w", "5", "-F", "BERTH-FORWARD"]));
    assert_eq!(firewall.ensure(&bridges).await.unwrap(), Checked::Restored);
    assert_eq!(firewall.ensure(&bridges).await.unwrap(), Checked::Held);
    // Traffic within a bridge passes the rules only while the kernel's
    // bridge hooks are on: turned off, they are back on the next check.
    let hook = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    std::fs::write(hook, "0").unwrap();
    assert_eq!(firewall.ensure(&bridges).await.unwrap(), Checked::Restored);
    assert_eq!(std::fs::read_to_string(hook).unwrap().trim(), "1");
    assert_eq!(firewall.ensure(&bridges).await.unwrap(), Checked::Held);
}

#[tokio::test]
async fn a_firewall_that_cannot_be_written_says_why() {
    let firewall = Firewall::new(FirewallPolicy::default(), "iptables-berth-missing");
    assert!(firewall.ensure(&["docker0".to_owned()]).await.is_err());
    let problem = firewall.problem().expect("a problem");
    assert!(problem.contains("iptables-berth-missing"), "{problem}");
}

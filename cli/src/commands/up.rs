//! `berth up`: the control plane, one node agent and the gateway in this
//! process, with SQLite and dev certificates in the data dir.

use crate::client::{Endpoints, ENDPOINTS_FILE};
use anyhow::Context;
use berth_pki::{CertificateAuthority, LeafRequest, Role, TlsFiles};
use clap::Args;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};
use tokio::net::TcpListener;

#[derive(Args)]
pub struct UpArgs {
    /// gRPC API address (mTLS).
    #[arg(long, env = "BERTH_GRPC_ADDR", default_value = "127.0.0.1:7443")]
    grpc_addr: SocketAddr,
    /// Gateway address (users' HTTP traffic).
    #[arg(long, env = "BERTH_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    gateway_addr: SocketAddr,
    /// Control plane Prometheus metrics address.
    #[arg(long, env = "BERTH_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,
    /// Gateway Prometheus metrics address (never the users' address).
    #[arg(
        long,
        env = "BERTH_GATEWAY_METRICS_ADDR",
        default_value = "127.0.0.1:9465"
    )]
    gateway_metrics_addr: SocketAddr,
    /// PostgreSQL URL; SQLite in the data dir when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// This host's node name [default: from the host name].
    #[arg(long, env = "BERTH_NODE_NAME")]
    node_name: Option<String>,
    /// Address at which this node's published ports are reachable.
    #[arg(long, env = "BERTH_ADVERTISE_ADDRESS", default_value = "127.0.0.1")]
    advertise_address: String,
    /// Node labels, `key=value`, repeatable or comma-separated.
    #[arg(long = "label", env = "BERTH_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// A node with no heartbeat for this long is marked down.
    #[arg(long, env = "BERTH_NODE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    node_ttl: std::time::Duration,
    /// Do not make missing runtime base images (see `berth images bootstrap`).
    #[arg(long, env = "BERTH_NO_BOOTSTRAP")]
    no_bootstrap: bool,
    #[command(flatten)]
    gateway: berth_gateway::LimitArgs,
    #[command(flatten)]
    firewall: berth_node_agent::config::FirewallArgs,
    #[command(flatten)]
    builds: berth_node_agent::config::BuildArgs,
}

/// A lowercase DNS label made from the host name.
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let first = host
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let cleaned: String = first
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let cleaned = cleaned.trim_matches('-').to_owned();
    if cleaned.is_empty() {
        "node-1".to_owned()
    } else {
        cleaned
    }
}

/// Makes the CA and every certificate this host needs, keeping what exists.
fn ensure_certs(dir: &Path, node_name: &str, grpc_addr: SocketAddr) -> anyhow::Result<()> {
    let ca = if dir.join("ca.pem").exists() {
        CertificateAuthority::load(dir)?
    } else {
        let ca = CertificateAuthority::generate("Berth dev CA")?;
        ca.save(dir)?;
        println!("made a dev CA in {}", dir.display());
        ca
    };
    let mut server_sans = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !grpc_addr.ip().is_unspecified() && !grpc_addr.ip().is_loopback() {
        server_sans.push(grpc_addr.ip().to_string());
    }
    let leaves = [
        (
            LeafRequest::new(Role::ControlPlane, "control-plane", 365).with_sans(server_sans),
            "control-plane",
        ),
        (LeafRequest::new(Role::Gateway, "gateway", 365), "gateway"),
        (LeafRequest::new(Role::Admin, "admin", 365), "admin"),
        (LeafRequest::new(Role::Agent, node_name, 365), "agent"),
    ];
    for (request, stem) in leaves {
        if !dir.join(format!("{stem}.pem")).exists() {
            ca.issue(&request)?.save(dir, stem)?;
        }
    }
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} address {addr}"))
}

/// The address clients on this host dial for a listener bound to `addr`.
fn local_url(scheme: &str, addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    format!("{scheme}://{host}:{}", addr.port())
}

/// Makes missing runtime base images in the background, so that the first
/// deployment of each runtime finds its image.
async fn bootstrap_base_images(shutdown: tokio_util::sync::CancellationToken) {
    use berth_node_agent::docker::{self, base_images};
    let Ok(engine) = docker::connect().await else {
        return;
    };
    let options = base_images::BootstrapOptions::default();
    for base in base_images::ALL {
        if shutdown.is_cancelled() {
            return;
        }
        let made = tokio::select! {
            _ = shutdown.cancelled() => return,
            made = base_images::ensure(&engine, base, &options) => made,
        };
        match made {
            Ok(base_images::Outcome::Made) => println!("  base image {} made", base.image),
            Ok(base_images::Outcome::AlreadyPresent) => {}
            Err(err) => eprintln!("  base image {} could not be made: {err}", base.image),
        }
    }
}

pub async fn run(data_dir: &Path, args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let certs: PathBuf = data_dir.join("certs");
    std::fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
    let agent_files = TlsFiles::in_dir(&certs, "agent");
    let node_name = match (&args.node_name, agent_files.cert.exists()) {
        (Some(name), _) => name.clone(),
        // The node keeps the name its certificate was made with.
        (None, true) => agent_files.load()?.identity()?.name,
        (None, false) => default_node_name(),
    };
    ensure_certs(&certs, &node_name, args.grpc_addr)?;
    let agent_identity = agent_files.load()?.identity()?;
    anyhow::ensure!(
        agent_identity.name == node_name,
        "the agent certificate in {} is for node {:?}, not {node_name:?}; remove agent*.pem to make a new one",
        certs.display(),
        agent_identity.name
    );

    let grpc = bind(args.grpc_addr, "gRPC").await?;
    let gateway = bind(args.gateway_addr, "gateway").await?;
    let metrics = bind(args.metrics_addr, "metrics").await?;
    let gateway_metrics = bind(args.gateway_metrics_addr, "gateway metrics").await?;
    let endpoints = Endpoints {
        grpc: local_url("https", grpc.local_addr()?),
        gateway: local_url("http", gateway.local_addr()?),
        metrics: local_url("http", metrics.local_addr()?),
        gateway_metrics: local_url("http", gateway_metrics.local_addr()?),
    };

    let mut cp_config = berth_control_plane::Config::for_data_dir(data_dir.to_owned());
    cp_config.database_url = args.database_url;
    cp_config.node_ttl = args.node_ttl;
    cp_config.heartbeat_interval = (args.node_ttl / 3).min(std::time::Duration::from_secs(5));
    let cp_config = cp_config.validate()?;
    let mut agent_config = berth_node_agent::Config::new(endpoints.grpc.clone(), agent_files);
    agent_config.work_dir = data_dir.join("agent");
    agent_config.advertise_address = args.advertise_address;
    agent_config.labels = berth_node_agent::config::parse_labels(&args.labels)?;
    agent_config.firewall = args.firewall;
    agent_config.builds = args.builds;
    // This very program is the sandbox helper: one binary to install.
    agent_config.sandbox_helper = std::env::current_exe()
        .ok()
        .map(|exe| (exe, vec![crate::SANDBOX_HELPER_ARG.to_owned()]));
    let agent_config = agent_config.validate()?;

    let shutdown = berth_common::shutdown::on_signal();
    let mut control_plane = tokio::spawn(berth_control_plane::run(
        cp_config,
        grpc,
        metrics,
        shutdown.clone(),
    ));
    let agent = berth_node_agent::start(agent_config, shutdown.clone())?;
    let gateway_config = berth_gateway::Config::new(
        endpoints.grpc.clone(),
        TlsFiles::in_dir(&certs, "gateway"),
        args.gateway,
    )
    .validate()?;
    let gateway_task = tokio::spawn(berth_gateway::run(
        gateway_config,
        berth_gateway::Listeners {
            users: gateway,
            metrics: gateway_metrics,
        },
        shutdown.clone(),
    ));
    if !args.no_bootstrap {
        tokio::spawn(bootstrap_base_images(shutdown.clone()));
    }

    let endpoints_path = data_dir.join(ENDPOINTS_FILE);
    std::fs::write(&endpoints_path, serde_json::to_string_pretty(&endpoints)?)
        .with_context(|| format!("writing {}", endpoints_path.display()))?;
    println!("berth is up (data in {})", data_dir.display());
    println!(
        "  control plane gRPC  {}  (mTLS; admin certificate in {})",
        endpoints.grpc,
        certs.display()
    );
    println!("  gateway             {}", endpoints.gateway);
    println!("  metrics             {}/metrics", endpoints.metrics);
    println!(
        "  gateway metrics     {}/metrics",
        endpoints.gateway_metrics
    );
    println!("  node                {node_name}");
    println!("stop with Ctrl-C");

    // Either the control plane stops by itself (an error) or a signal stops everything.
    let outcome = tokio::select! {
        outcome = &mut control_plane => outcome,
        _ = shutdown.cancelled() => (&mut control_plane).await,
    };
    shutdown.cancel();
    let result = match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(anyhow::Error::new(err).context("control plane failed")),
        Err(err) => Err(anyhow::anyhow!("control plane task: {err}")),
    };
    let _ = agent.task.await;
    if let Ok(Err(err)) = gateway_task.await {
        eprintln!("gateway failed: {err:#}");
    }
    let _ = std::fs::remove_file(&endpoints_path);
    println!("berth stopped");
    result
}

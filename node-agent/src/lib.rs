//! Berth's node agent. It dials out to the control plane over mTLS, says
//! what its host offers, heartbeats, and converges local Docker and
//! sandboxes toward the desired state it is sent.
//!
//! - [`config`]: flags and the validated [`Config`].
//! - [`docker`]: the Docker driver (base images, builds, containers).
//! - [`driver`]: the desired set converged onto Docker; builds; reports.
//! - [`host`]: capacity and runtimes found on this host.
//! - [`sandbox`]: code executions in language sandboxes.
//! - [`session`]: the stream to the control plane, with reconnects.

pub mod config;
pub mod docker;
pub mod driver;
pub mod host;
pub mod sandbox;
pub mod session;

pub use config::{AgentArgs, Config};
pub use session::LinkStatus;

use berth_pki::Role;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("TLS: {0}")]
    Pki(#[from] berth_pki::PkiError),
    #[error("the certificate is for {0}; a node agent needs an agent certificate")]
    WrongRole(berth_pki::Identity),
    #[error("work dir {path}: {source}")]
    WorkDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A started agent: its node name and a view of its link.
pub struct Agent {
    pub node_name: String,
    pub status: watch::Receiver<LinkStatus>,
    pub task: tokio::task::JoinHandle<()>,
    /// Cancelled to stop every task of this agent (a child of the shutdown token).
    pub stop: CancellationToken,
}

/// Starts the agent; it runs until `shutdown` is cancelled.
pub fn start(config: Config, shutdown: CancellationToken) -> Result<Agent, AgentError> {
    let shutdown = shutdown.child_token();
    let stop = shutdown.clone();
    let tls = config.tls.load()?;
    let identity = tls.identity()?;
    if identity.role != Role::Agent {
        return Err(AgentError::WrongRole(identity));
    }
    let (status_tx, status) = watch::channel(LinkStatus::default());
    let node_name = identity.name.clone();
    let code_dir = config.work_dir.join("code");
    let code_dir = std::fs::create_dir_all(&code_dir)
        .and_then(|_| code_dir.canonicalize())
        .map_err(|source| AgentError::WorkDir {
            path: code_dir.clone(),
            source,
        })?;
    let (outbox, outbox_rx) = tokio::sync::mpsc::channel(1024);
    let links = driver::Links {
        desired: watch::channel(None).0,
        report: watch::channel(Default::default()).0,
        channel: watch::channel(None).0,
        outbox,
    };
    let firewall = std::sync::Arc::new(docker::firewall::Firewall::new(
        config.firewall.policy(),
        config.firewall.iptables.clone(),
    ));
    let driver_config = driver::DriverConfig {
        node: node_name.clone(),
        publish_ip: config.advertise_address.clone(),
        code_dir,
        firewall: firewall.clone(),
        builds: config.builds,
    };
    let executor = match &config.sandbox_helper {
        Some((helper, args)) => {
            let mut sandbox_config =
                sandbox::SandboxConfig::new(helper.clone(), config.work_dir.join("sandbox"));
            sandbox_config.helper_args = args.clone();
            match sandbox::Sandbox::new(sandbox_config) {
                Ok(sandbox) => Some(driver::executions::Executor::new(
                    std::sync::Arc::new(sandbox),
                    links.clone(),
                )),
                Err(err) => {
                    tracing::warn!(error = %err, "no sandbox: this node runs no executions");
                    None
                }
            }
        }
        None => {
            tracing::warn!("no sandbox helper (berth-sandbox) found: this node runs no executions");
            None
        }
    };
    let task = tokio::spawn(async move {
        let (builder, answerer) = match docker::connect().await {
            Ok(engine) => {
                // Before any container is adopted or started: the rules that
                // keep containers from the host and each other.
                if docker::network::enforce_firewall(&engine, &firewall).await {
                    docker::network::choose_default_bridge().await;
                }
                let answerer =
                    driver::answers::Answerer::new(engine.clone(), &driver_config, links.clone());
                let builder = driver::builds::Builder::new(
                    engine.clone(),
                    driver_config.clone(),
                    links.clone(),
                );
                let reconciler = driver::reconcile::Reconciler::new(
                    engine,
                    driver_config,
                    links.clone(),
                    builder.clone(),
                );
                tokio::spawn(reconciler.run(shutdown.clone()));
                (Some(builder), Some(answerer))
            }
            Err(err) => {
                tracing::warn!(error = %err, "no Docker engine: this node runs no deployments");
                firewall.no_containers();
                (None, None)
            }
        };
        let session = session::Session {
            config,
            tls,
            node_name: identity.name,
            status: status_tx,
            links,
            builder,
            answerer,
            executor,
            firewall,
        };
        session.run(outbox_rx, shutdown).await
    });
    Ok(Agent {
        node_name,
        status,
        task,
        stop,
    })
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    let agent = start(config, shutdown)?;
    tracing::info!(node = %agent.node_name, "node agent started");
    let _ = agent.task.await;
    tracing::info!("node agent stopped");
    Ok(())
}

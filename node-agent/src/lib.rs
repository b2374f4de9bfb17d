//! Berth's node agent. It dials out to the control plane over mTLS, says
//! what its host offers, heartbeats, and converges local Docker and
//! sandboxes toward the desired state it is sent.
//!
//! - [`config`]: flags and the validated [`Config`].
//! - [`docker`]: the Docker driver (base images, builds, containers).
//! - [`host`]: capacity and runtimes found on this host.
//! - [`session`]: the stream to the control plane, with reconnects.

pub mod config;
pub mod docker;
pub mod host;
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
}

/// A started agent: its node name and a view of its link.
pub struct Agent {
    pub node_name: String,
    pub status: watch::Receiver<LinkStatus>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the agent; it runs until `shutdown` is cancelled.
pub fn start(config: Config, shutdown: CancellationToken) -> Result<Agent, AgentError> {
    let tls = config.tls.load()?;
    let identity = tls.identity()?;
    if identity.role != Role::Agent {
        return Err(AgentError::WrongRole(identity));
    }
    let (status_tx, status) = watch::channel(LinkStatus::default());
    let node_name = identity.name.clone();
    let task = tokio::spawn(session::run(
        config,
        tls,
        identity.name,
        status_tx,
        shutdown,
    ));
    Ok(Agent {
        node_name,
        status,
        task,
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

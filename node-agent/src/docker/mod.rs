//! The Docker driver: everything the agent does through the Docker Engine
//! API (bollard, with the API version negotiated with the engine).
//!
//! - [`base_images`]: runtime base images made from Debian packages
//!   (debootstrap + import), for hosts that reach no image registry.
//! - [`build`]: image builds from a checked context, with output and a time limit.
//! - [`containers`]: instance containers: create (limits, hardening, own
//!   network, published port), inspect, find by label, stop, remove.

pub mod base_images;
pub mod build;
pub mod containers;
pub mod readiness;

use bollard::Docker;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("Docker engine: {0}")]
    Engine(#[from] bollard::errors::Error),
    #[error("Docker engine did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

/// Connects to the local engine (DOCKER_HOST or the default socket) and
/// negotiates the API version, so older engines work.
pub async fn connect() -> Result<Docker, DockerError> {
    let timeout = Duration::from_secs(10);
    let docker = Docker::connect_with_local_defaults()?;
    tokio::time::timeout(timeout, docker.negotiate_version())
        .await
        .map_err(|_| DockerError::Timeout(timeout))?
        .map_err(DockerError::from)
}

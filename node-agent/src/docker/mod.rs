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
pub mod firewall;
pub mod network;
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

impl DockerError {
    /// A failure that may pass by itself: the engine unreachable for a
    /// moment, a dropped connection, a timeout, a 5xx answer. Refusals of
    /// the request itself (4xx) are not.
    pub fn is_transient(&self) -> bool {
        use bollard::errors::Error as E;
        match self {
            DockerError::Timeout(_) => true,
            DockerError::Engine(err) => match err {
                E::DockerResponseServerError { status_code, .. } => *status_code >= 500,
                E::IOError { .. }
                | E::HyperResponseError { .. }
                | E::HyperLegacyError { .. }
                | E::RequestTimeoutError => true,
                _ => false,
            },
            DockerError::Io { .. } | DockerError::Failed(_) => false,
        }
    }
}

/// Delays between attempts at a call that failed transiently: 3 retries,
/// from 200 ms, doubling, jittered.
pub fn retry_delays() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(3)
        .with_jitter()
        .build()
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

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::errors::Error as E;

    #[test]
    fn engine_hiccups_are_transient_and_refusals_are_not() {
        let server = |status_code| {
            DockerError::Engine(E::DockerResponseServerError {
                status_code,
                message: "x".into(),
            })
        };
        assert!(server(500).is_transient());
        assert!(server(503).is_transient());
        assert!(!server(404).is_transient());
        assert!(!server(409).is_transient());
        assert!(DockerError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(DockerError::Engine(E::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionReset)
        })
        .is_transient());
        assert!(!DockerError::Failed("bad".into()).is_transient());
        let delays: Vec<Duration> = retry_delays().collect();
        assert_eq!(delays.len(), 3, "three retries");
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(200)));
    }
}

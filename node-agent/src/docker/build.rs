//! Image builds from a checked build context (a tar with the Dockerfile at
//! its root), with the output streamed to the caller and a time limit.

use super::DockerError;
use bollard::{errors::Error as EngineError, query_parameters::BuildImageOptionsBuilder, Docker};
use futures::StreamExt;
use std::{collections::HashMap, time::Duration};

/// Why a build did not produce an image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile or a step in it failed: the user's problem, with the message.
    #[error("{0}")]
    Failed(String),
    #[error("the build took longer than {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Engine(#[from] DockerError),
}

/// Whether the engine has `image`.
pub async fn image_exists(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(EngineError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Builds `context_tar` as `tag`, labelled with `labels`, each step within
/// `limits` on the builds' own network. Every line of output goes to
/// `output` as it arrives.
pub async fn build_image(
    docker: &Docker,
    tag: &str,
    context_tar: bytes::Bytes,
    labels: &HashMap<String, String>,
    timeout: Duration,
    limits: &crate::config::BuildArgs,
    mut output: impl FnMut(&str),
) -> Result<(), BuildError> {
    let memory = i32::try_from(u64::from(limits.build_memory_mib) << 20).unwrap_or(i32::MAX);
    const PERIOD: i32 = 100_000;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(labels)
        .memory(memory)
        // Swap included: no more than the memory itself.
        .memswap(memory)
        .cpuperiod(PERIOD)
        .cpuquota((limits.build_cpus * f64::from(PERIOD)).round() as i32)
        .networkmode(super::network::BUILD_NETWORK)
        .build();
    super::network::ensure_build_network(docker).await?;
    let run = async {
        let mut stream = docker.build_image(options, None, Some(bollard::body_full(context_tar)));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                        output(text);
                    }
                    if let Some(message) = info.error_detail.and_then(|d| d.message) {
                        output(&format!("{message}\n"));
                        return Err(BuildError::Failed(message));
                    }
                }
                Err(EngineError::DockerStreamError { error }) => {
                    output(&format!("{error}\n"));
                    return Err(BuildError::Failed(error));
                }
                // The engine refuses the context itself (e.g. a bad Dockerfile path).
                Err(EngineError::DockerResponseServerError {
                    status_code,
                    message,
                }) if status_code < 500 => {
                    output(&format!("{message}\n"));
                    return Err(BuildError::Failed(message));
                }
                Err(err) => return Err(BuildError::Engine(err.into())),
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| BuildError::Timeout(timeout))?
}

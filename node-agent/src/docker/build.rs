//! Image builds from a checked build context (a tar with the Dockerfile at
//! its root): the images it names checked, each step confined, the output
//! streamed to the caller, all within a time limit.

use super::DockerError;
use berth_proto::domain::dockerfile;
use bollard::{
    errors::Error as EngineError,
    query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder},
    Docker,
};
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

/// The label naming the tenant an app image was built for.
pub const LABEL_TENANT: &str = "berth.tenant";
/// The label naming the app an image was built for.
pub const LABEL_APP: &str = "berth.app";

/// What to build, and for whom.
pub struct BuildSpec<'a> {
    pub tag: &'a str,
    /// A tar with the Dockerfile at its root.
    pub context: bytes::Bytes,
    pub labels: &'a HashMap<String, String>,
    /// For the whole build, images fetched included.
    pub timeout: Duration,
    pub limits: &'a crate::config::BuildArgs,
    /// Whose image it is: no image of another tenant may be built on.
    pub tenant: &'a str,
}

/// Builds `spec.context` as `spec.tag`, after checking every image its
/// Dockerfile names ([`check_images`]); each step within `spec.limits` on
/// the builds' own network. Every line of output goes to `output` as it
/// arrives.
pub async fn build_image(
    docker: &Docker,
    spec: BuildSpec<'_>,
    mut output: impl FnMut(&str),
) -> Result<(), BuildError> {
    let timeout = spec.timeout;
    tokio::time::timeout(timeout, async {
        check_images(docker, &spec, &mut output).await?;
        run_build(docker, &spec, &mut output).await
    })
    .await
    .map_err(|_| BuildError::Timeout(timeout))?
}

/// The Dockerfile at the root of a build context.
fn dockerfile_of(context: &[u8]) -> Result<String, BuildError> {
    let mut archive = tar::Archive::new(context);
    let entries = archive
        .entries()
        .map_err(|e| BuildError::Failed(format!("reading the build context: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| BuildError::Failed(format!("reading the build context: {e}")))?;
        let path = entry.path().map(|p| p.into_owned()).unwrap_or_default();
        if path.as_os_str() == "Dockerfile" || path.as_os_str() == "./Dockerfile" {
            if entry.size() > dockerfile::MAX_DOCKERFILE_BYTES as u64 {
                return Err(BuildError::Failed(
                    dockerfile::DockerfileError::TooLarge.to_string(),
                ));
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text)
                .map_err(|e| BuildError::Failed(format!("reading the Dockerfile: {e}")))?;
            return Ok(text);
        }
    }
    Err(BuildError::Failed(
        "the build context has no Dockerfile".into(),
    ))
}

/// Resolves every image the Dockerfile names on this engine (fetching it
/// when missing) and refuses one built for another tenant, whatever name
/// reached it, and an older app image that does not say its tenant. A
/// parent's `ONBUILD` triggers run in this build: every image they name is
/// checked the same way.
pub async fn check_images(
    docker: &Docker,
    spec: &BuildSpec<'_>,
    output: &mut impl FnMut(&str),
) -> Result<(), BuildError> {
    let text = dockerfile_of(&spec.context)?;
    let mut pending =
        dockerfile::image_references(&text).map_err(|e| BuildError::Failed(e.to_string()))?;
    // Triggers can name images whose own triggers do not run: a bound on
    // the work all the same.
    let mut checked = 0;
    while let Some(dockerfile::ImageReference {
        line,
        reference,
        parent,
    }) = pending.pop()
    {
        checked += 1;
        let refused = |why: &str| {
            BuildError::Failed(format!("Dockerfile line {line}: image {reference:?} {why}"))
        };
        if checked > 64 {
            return Err(refused("is one image too many to check (at most 64)"));
        }
        if !dockerfile::may_use(&reference, spec.tenant) {
            return Err(refused("is not one of this tenant's images"));
        }
        let image = match docker.inspect_image(&reference).await {
            Ok(image) => image,
            Err(EngineError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                fetch(docker, &reference, output).await?;
                docker
                    .inspect_image(&reference)
                    .await
                    .map_err(|e| refused(&format!("cannot be read: {e}")))?
            }
            Err(err) => return Err(BuildError::Engine(err.into())),
        };
        let config = image.config.unwrap_or_default();
        let labels = config.labels.unwrap_or_default();
        let owner = labels.get(LABEL_TENANT);
        if owner.is_some_and(|owner| owner != spec.tenant)
            || (owner.is_none() && labels.contains_key(LABEL_APP))
        {
            tracing::warn!(%reference, tenant = %spec.tenant, "a build named another tenant's image");
            return Err(refused("is not one of this tenant's images"));
        }
        if !parent {
            continue;
        }
        for trigger in config.on_build.unwrap_or_default() {
            let named = dockerfile::image_references(&trigger).map_err(|e| {
                refused(&format!(
                    "has an ONBUILD trigger ({trigger}) that cannot run here: {e}"
                ))
            })?;
            pending.extend(named.into_iter().map(|r| dockerfile::ImageReference {
                line,
                parent: false,
                ..r
            }));
        }
    }
    Ok(())
}

/// Pulls `reference` from its registry.
async fn fetch(
    docker: &Docker,
    reference: &str,
    output: &mut impl FnMut(&str),
) -> Result<(), BuildError> {
    output(&format!("fetching {reference}\n"));
    // Without a tag the engine would fetch every tag of the repository.
    let name = reference.rsplit('/').next().unwrap_or(reference);
    let reference = if reference.contains('@') || name.contains(':') {
        reference.to_owned()
    } else {
        format!("{reference}:latest")
    };
    let options = CreateImageOptionsBuilder::default()
        .from_image(&reference)
        .build();
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    return Err(BuildError::Failed(format!(
                        "fetching {reference}: {message}"
                    )));
                }
            }
            Err(EngineError::DockerResponseServerError {
                status_code,
                message,
            }) if status_code < 500 => {
                return Err(BuildError::Failed(format!(
                    "fetching {reference}: {message}"
                )));
            }
            Err(EngineError::DockerStreamError { error }) => {
                return Err(BuildError::Failed(format!("fetching {reference}: {error}")));
            }
            Err(err) => return Err(BuildError::Engine(err.into())),
        }
    }
    Ok(())
}

async fn run_build(
    docker: &Docker,
    spec: &BuildSpec<'_>,
    output: &mut impl FnMut(&str),
) -> Result<(), BuildError> {
    let limits = spec.limits;
    let memory = i32::try_from(u64::from(limits.build_memory_mib) << 20).unwrap_or(i32::MAX);
    const PERIOD: i32 = 100_000;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(spec.tag)
        .rm(true)
        .forcerm(true)
        .labels(spec.labels)
        .memory(memory)
        // Swap included: no more than the memory itself.
        .memswap(memory)
        .cpuperiod(PERIOD)
        .cpuquota((limits.build_cpus * f64::from(PERIOD)).round() as i32)
        .networkmode(super::network::BUILD_NETWORK)
        .build();
    super::network::ensure_build_network(docker).await?;
    let context_tar = spec.context.clone();
    {
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
    }
}

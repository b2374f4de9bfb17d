//! Images and code for this node: builds the control plane asks for, and
//! the image and code an instance needs before it can start.

use super::{code, DriverConfig, Links};
use crate::docker::build::{self, BuildError};
use berth_proto::{
    domain::{BuildState, Runtime},
    pb::{self, agent_message::Message as Up, agent_service_client::AgentServiceClient},
};
use bollard::Docker;
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Largest build context accepted from the control plane.
const MAX_CONTEXT_BYTES: u64 = 2 << 30;
/// Default build time limit when the request names none.
const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// How long to wait for a session to fetch a context through.
const CHANNEL_WAIT: Duration = Duration::from_secs(30);
/// Output is sent in batches of about this size, or this often.
const OUTPUT_BATCH: usize = 4096;
const OUTPUT_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct Builder {
    docker: Docker,
    config: DriverConfig,
    links: Links,
    /// One build per image at a time on this node.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Builder {
    pub fn new(docker: Docker, config: DriverConfig, links: Links) -> Self {
        Self {
            docker,
            config,
            links,
            locks: Arc::default(),
        }
    }

    fn lock_for(&self, image: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(image.to_owned())
            .or_default()
            .clone()
    }

    /// The build context of `build_id`, from the control plane.
    pub async fn fetch_context(&self, build_id: &str) -> Result<Vec<u8>, String> {
        let mut channel_rx = self.links.channel.subscribe();
        let channel = tokio::time::timeout(CHANNEL_WAIT, channel_rx.wait_for(Option::is_some))
            .await
            .map_err(|_| {
                "no session to the control plane to fetch the build context through".to_owned()
            })?
            .map_err(|_| "the agent is stopping".to_owned())?
            .clone()
            .expect("waited for Some");
        let mut stream = AgentServiceClient::new(channel)
            .fetch_build_context(pb::FetchBuildContextRequest {
                build_id: build_id.to_owned(),
            })
            .await
            .map_err(|s| format!("fetching the build context: {}", s.message()))?
            .into_inner();
        let mut tar = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| format!("fetching the build context: {}", s.message()))?
        {
            tar.extend_from_slice(&chunk.data);
            if tar.len() as u64 > MAX_CONTEXT_BYTES {
                return Err(format!(
                    "the build context is more than {MAX_CONTEXT_BYTES} bytes"
                ));
            }
        }
        Ok(tar)
    }

    fn send(&self, message: Up) {
        // Best effort: a full outbox (no session for a long while) drops it;
        // the control plane re-dispatches builds whose node went away.
        let _ = self.links.outbox.try_send(pb::AgentMessage {
            message: Some(message),
        });
    }

    /// Runs a build the control plane asked for, reporting output and result.
    pub async fn handle_request(&self, request: pb::BuildRequest) {
        let build_id = request.build_id.clone();
        // Instances follow a build: make sure their network is there meanwhile.
        let docker = self.docker.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::docker::network::ensure(&docker).await {
                tracing::warn!(error = %err, "making the apps' network failed");
            }
        });
        let timeout = match request.timeout_seconds {
            0 => DEFAULT_BUILD_TIMEOUT,
            s => Duration::from_secs(u64::from(s)),
        };
        let outcome = self
            .build(
                &build_id,
                &request.image_tag,
                &request.app_id,
                &request.tenant,
                timeout,
                true,
            )
            .await;
        let (state, error, cached) = match outcome {
            Ok(cached) => (BuildState::Ready, String::new(), cached),
            Err(error) => (BuildState::BuildFailed, error, false),
        };
        tracing::info!(build = %build_id, %state, cached, "build done");
        if state == BuildState::Ready {
            // Instances of this build come next: have their code ready.
            if let Ok(runtime) = Runtime::try_from(request.runtime) {
                let (builder, build_id) = (self.clone(), build_id.clone());
                tokio::spawn(async move {
                    if let Err(error) = builder.unpack_code(&build_id, runtime).await {
                        tracing::debug!(build = %build_id, %error, "code not unpacked ahead");
                    }
                });
            }
        }
        self.send(Up::BuildResult(pb::BuildResult {
            build_id,
            state: state.into(),
            image_tag: request.image_tag,
            error,
            cached,
        }));
    }

    /// Makes sure `image` exists, building it from `build_id`'s context if
    /// not. Returns whether it was there already.
    async fn build(
        &self,
        build_id: &str,
        image: &str,
        app_id: &str,
        tenant: &str,
        timeout: Duration,
        report: bool,
    ) -> Result<bool, String> {
        let lock = self.lock_for(image);
        let _guard = lock.lock().await;
        let mut delays = crate::docker::retry_delays();
        let exists = loop {
            match build::image_exists(&self.docker, image).await {
                Err(err) if err.is_transient() => match delays.next() {
                    Some(delay) => {
                        tracing::warn!(%err, retry_in = ?delay, "Docker failed transiently; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => break Err(err.to_string()),
                },
                other => break other.map_err(|e| e.to_string()),
            }
        }?;
        if exists {
            if report {
                self.send(Up::BuildOutput(pb::BuildOutput {
                    build_id: build_id.to_owned(),
                    chunk: format!("image {image} is already on this node; nothing to build\n")
                        .into_bytes(),
                }));
            }
            return Ok(true);
        }
        // A build step runs a tenant's commands: on its own network, and
        // not without the rules that keep it from the host and from other
        // containers.
        crate::docker::network::ensure_build_network(&self.docker)
            .await
            .map_err(|e| format!("making the builds' network: {e}"))?;
        if !crate::docker::network::enforce_firewall(&self.docker, &self.config.firewall).await {
            return Err(format!(
                "this node's container firewall is not in place ({}); builds wait until it is",
                self.config.firewall.problem().unwrap_or_default()
            ));
        }
        let context = self.fetch_context(build_id).await?;
        let labels = HashMap::from([
            ("berth.managed".to_owned(), "true".to_owned()),
            (build::LABEL_APP.to_owned(), app_id.to_owned()),
            (build::LABEL_TENANT.to_owned(), tenant.to_owned()),
            ("berth.build".to_owned(), build_id.to_owned()),
            // Cleanup on a shared engine removes only this node's images.
            ("berth.node".to_owned(), self.config.node.clone()),
        ]);
        let mut batch = String::new();
        let mut last = Instant::now();
        let context: bytes::Bytes = context.into();
        let mut delays = crate::docker::retry_delays();
        let result = loop {
            let spec = build::BuildSpec {
                tag: image,
                context: context.clone(),
                labels: &labels,
                timeout,
                limits: &self.config.builds,
                tenant,
            };
            let result = build::build_image(&self.docker, spec, |text| {
                if !report {
                    return;
                }
                batch.push_str(text);
                if batch.len() >= OUTPUT_BATCH || last.elapsed() >= OUTPUT_EVERY {
                    self.send(Up::BuildOutput(pb::BuildOutput {
                        build_id: build_id.to_owned(),
                        chunk: std::mem::take(&mut batch).into_bytes(),
                    }));
                    last = Instant::now();
                }
            })
            .await;
            // The engine failed, not the Dockerfile: try again after a pause.
            match (&result, delays.next()) {
                (Err(BuildError::Engine(err)), Some(delay)) if err.is_transient() => {
                    if report {
                        batch.push_str(&format!(
                            "Docker failed transiently ({err}); building again in {delay:?}\n"
                        ));
                    }
                    tokio::time::sleep(delay).await;
                }
                _ => break result,
            }
        };
        if report && !batch.is_empty() {
            self.send(Up::BuildOutput(pb::BuildOutput {
                build_id: build_id.to_owned(),
                chunk: batch.into_bytes(),
            }));
        }
        match result {
            Ok(()) => Ok(false),
            Err(BuildError::Failed(message)) => Err(message),
            Err(err) => Err(err.to_string()),
        }
    }

    /// The image and code an instance needs, made ready on this node.
    /// Returns the code folder to mount.
    pub async fn prepare(&self, spec: &pb::InstanceSpec) -> Result<PathBuf, String> {
        let runtime = Runtime::try_from(spec.runtime)
            .map_err(|_| format!("unknown runtime {}", spec.runtime))?;
        let code_dir = self.code_dir(&spec.build_id)?;
        self.build(
            &spec.build_id,
            &spec.image,
            &spec.app_id,
            &spec.tenant,
            DEFAULT_BUILD_TIMEOUT,
            false,
        )
        .await?;
        self.unpack_code(&spec.build_id, runtime).await?;
        Ok(code_dir)
    }

    /// Unpacks a build's code unless this node has it already. One at a
    /// time per build, so a prefetch and an instance start do not race.
    pub async fn unpack_code(&self, build_id: &str, runtime: Runtime) -> Result<PathBuf, String> {
        let code_dir = self.code_dir(build_id)?;
        let lock = self.lock_for(&format!("code:{build_id}"));
        let _guard = lock.lock().await;
        if !code_dir.exists() {
            let context = self.fetch_context(build_id).await?;
            let dest = code_dir.clone();
            tokio::task::spawn_blocking(move || {
                code::unpack(&context, &dest, runtime == Runtime::Dockerfile)
            })
            .await
            .map_err(|e| format!("unpacking code: {e}"))?
            .map_err(|e| format!("unpacking code: {e}"))?;
        }
        Ok(code_dir)
    }

    fn code_dir(&self, build_id: &str) -> Result<PathBuf, String> {
        let id =
            uuid_like(build_id).ok_or_else(|| format!("build id {build_id:?} is not a UUID"))?;
        Ok(self.config.code_dir.join(id))
    }
}

/// Build ids are UUIDs; anything else never becomes a path.
fn uuid_like(value: &str) -> Option<&str> {
    let ok = value.len() == 36 && value.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    ok.then_some(value)
}

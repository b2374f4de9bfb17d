//! `berth.v1.AgentService`: the one stream each node agent keeps open.

use crate::{
    auth::caller,
    builds::{BuildLogs, ContextStore},
    metrics::Metrics,
    requests::Requests,
    scheduler::Scheduler,
    sessions::Sessions,
    store::{nodes::Registration, Store},
};
use berth_pki::Identity;
use berth_proto::{
    domain::{validate_labels, BuildState, NodeName},
    pb::{
        self, agent_message::Message as Up, agent_service_server::AgentService,
        control_message::Message as Down,
    },
    FieldError,
};
use futures::{Stream, StreamExt};
use std::{pin::Pin, sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// How long an agent has to send `Register` after opening its stream.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RUNTIMES: usize = 32;

pub struct AgentApi {
    pub store: Store,
    pub sessions: Sessions,
    pub metrics: Metrics,
    pub heartbeat_interval: Duration,
    pub node_ttl: Duration,
    pub shutdown: CancellationToken,
    pub scheduler: Arc<Scheduler>,
    pub logs: BuildLogs,
    pub contexts: ContextStore,
    pub requests: Requests,
    pub executions: Arc<crate::executions::Executions>,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::BuildContextChunk, Status>> + Send>>;

type ControlStream = Pin<Box<dyn Stream<Item = Result<pb::ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<ControlStream>, Status> {
        let identity = caller(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no register message within 10 s"))??
            .ok_or_else(|| Status::invalid_argument("stream ended before register"))?;
        let Some(Up::Register(register)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message must be register",
            ));
        };
        let registration = validate_register(register, &identity)?;
        let name = registration.name.clone();
        let (node, previous) = self.store.register_node(registration).await?;
        tracing::info!(node = %name, address = %node.address, ?previous, "agent registered");

        let (tx, rx) = mpsc::channel(64);
        let registered = pb::Registered {
            node_name: name.to_string(),
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u32,
            node_ttl_ms: self.node_ttl.as_millis() as u32,
        };
        tx.send(Ok(pb::ControlMessage {
            message: Some(Down::Registered(registered)),
        }))
        .await
        .map_err(|_| Status::unavailable("session closed"))?;
        let session_id = self.sessions.attach(name.clone(), tx);
        self.metrics
            .agent_sessions
            .set(self.sessions.count() as i64);
        // Its desired set follows from the scheduler.
        self.scheduler.node_connected(&name);

        let handler = Handler {
            store: self.store.clone(),
            scheduler: self.scheduler.clone(),
            logs: self.logs.clone(),
            requests: self.requests.clone(),
            executions: self.executions.clone(),
        };
        let executions = self.executions.clone();
        let sessions = self.sessions.clone();
        let metrics = self.metrics.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = handler.read(&name, inbound) => {}
            }
            sessions.detach(&name, session_id);
            if !sessions.is_connected(&name) {
                // Whatever ran on it is lost with the session.
                executions.node_lost(name.as_str()).await;
            }
            metrics.agent_sessions.set(sessions.count() as i64);
            tracing::info!(node = %name, "agent session ended");
        });

        let outbound = ReceiverStream::new(rx).take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn fetch_build_context(
        &self,
        request: Request<pb::FetchBuildContextRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let build_id = &request.get_ref().build_id;
        let identity = crate::auth::caller(&request)?;
        if !needs_context(&self.store, build_id, &identity.name).await {
            tracing::warn!(node = %identity.name, build = %build_id, "a node asked for the context of a build neither placed on it nor of an app with an instance there");
            return Err(Status::permission_denied(format!(
                "build {build_id} is not placed on node {}, nor is an instance of its app",
                identity.name
            )));
        }
        let chunks = self
            .contexts
            .read_chunks(build_id)
            .await
            .map_err(|e| Status::internal(format!("reading the build context: {e}")))?
            .ok_or_else(|| Status::not_found(format!("build {build_id} has no context here")))?;
        let stream = ReceiverStream::new(chunks).map(|chunk| {
            chunk
                .map(|data| pb::BuildContextChunk { data })
                .map_err(|e| Status::internal(format!("reading the build context: {e}")))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// What handles an agent's messages after it registered.
struct Handler {
    store: Store,
    scheduler: Arc<Scheduler>,
    logs: BuildLogs,
    requests: Requests,
    executions: Arc<crate::executions::Executions>,
}

impl Handler {
    /// Handles what an agent sends after registering, until its stream ends.
    async fn read(&self, name: &NodeName, mut inbound: Streaming<pb::AgentMessage>) {
        let store = &self.store;
        // Builds found placed on this node, so that each output chunk is
        // not another read (bounded: a node runs few builds at once).
        let mut owned: Vec<String> = Vec::new();
        loop {
            let message = match inbound.message().await {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(status) => {
                    tracing::info!(node = %name, %status, "agent stream failed");
                    return;
                }
            };
            match message.message {
                Some(Up::Heartbeat(beat)) => {
                    let problem = bounded(&beat.firewall_problem, MAX_PROBLEM_CHARS);
                    if let Err(err) = store.heartbeat(name, problem).await {
                        tracing::warn!(node = %name, error = %err, "recording heartbeat failed");
                    }
                }
                Some(Up::StateReport(report)) => {
                    tracing::debug!(node = %name, instances = report.instances.len(), "state report");
                    match store
                        .apply_instance_report(name.as_str(), &report.instances)
                        .await
                    {
                        Ok(0) => {}
                        Ok(_) => self.scheduler.kick(),
                        Err(err) => {
                            tracing::warn!(node = %name, error = %err, "applying a state report failed")
                        }
                    }
                }
                Some(Up::Reply(reply)) => self.requests.deliver(name, reply).await,
                Some(Up::BuildOutput(output)) => {
                    if !self.owns_build(&mut owned, name, &output.build_id).await {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&output.chunk);
                    if let Err(err) = self.logs.append(store, &output.build_id, &text).await {
                        tracing::warn!(build = %output.build_id, error = %err, "storing build output failed");
                    }
                }
                Some(Up::BuildResult(result)) => {
                    if !self.owns_build(&mut owned, name, &result.build_id).await {
                        continue;
                    }
                    let state =
                        BuildState::try_from(result.state).unwrap_or(BuildState::BuildFailed);
                    let state = if state == BuildState::Building {
                        BuildState::BuildFailed
                    } else {
                        state
                    };
                    tracing::info!(node = %name, build = %result.build_id, %state, cached = result.cached, "build finished");
                    if let Err(err) = store
                        .finish_build(&result.build_id, state, &result.error, result.cached)
                        .await
                    {
                        tracing::warn!(build = %result.build_id, error = %err, "recording a build result failed");
                    }
                    self.logs.finish(&result.build_id);
                    self.scheduler.kick();
                }
                Some(Up::ExecutionResult(result)) => {
                    self.executions.complete(name.as_str(), result).await;
                }
                Some(Up::Register(_)) => {
                    tracing::warn!(node = %name, "agent registered twice on one stream; ignored");
                }
                None => {}
            }
        }
    }
}

impl Handler {
    /// Whether the build is placed on node `name`; a warning when not (the
    /// agent's message is then ignored and the build stays as it was).
    async fn owns_build(&self, owned: &mut Vec<String>, name: &NodeName, build_id: &str) -> bool {
        if owned.iter().any(|b| b == build_id) {
            return true;
        }
        if !build_on(&self.store, build_id, name.as_str()).await {
            tracing::warn!(node = %name, build = %build_id, "a node spoke for a build not placed on it; ignored");
            return false;
        }
        if owned.len() >= 64 {
            owned.remove(0);
        }
        owned.push(build_id.to_owned());
        true
    }
}

/// Whether the build `build_id` is placed on the node `node`.
async fn build_on(store: &Store, build_id: &str, node: &str) -> bool {
    store
        .get_build(build_id)
        .await
        .is_ok_and(|b| b.node_name.as_deref() == Some(node))
}

/// Whether the node `node` may read the context of `build_id`: the build is
/// placed on it, or an instance of the build's app is (its code is
/// unpacked from the context).
async fn needs_context(store: &Store, build_id: &str, node: &str) -> bool {
    let Ok(build) = store.get_build(build_id).await else {
        return false;
    };
    if build.node_name.as_deref() == Some(node) {
        return true;
    }
    store
        .app_instances(&build.app_id)
        .await
        .is_ok_and(|all| all.iter().any(|i| i.node_name.as_deref() == Some(node)))
}

/// Checks a `Register` against the caller's certificate and the limits.
fn validate_register(register: pb::Register, identity: &Identity) -> Result<Registration, Status> {
    let name = NodeName::parse("register.node_name", &register.node_name)?;
    if name.as_str() != identity.name {
        return Err(Status::permission_denied(format!(
            "this certificate is for node {:?}; it cannot register as {:?}",
            identity.name,
            name.as_str()
        )));
    }
    let address = register.address.trim();
    if address.is_empty() || address.len() > 255 || address.contains(char::is_whitespace) {
        return Err(FieldError::new(
            "register.address",
            "must be a host name or IP address of 1–255 characters",
        )
        .into());
    }
    let capacity = register
        .capacity
        .ok_or_else(|| FieldError::new("register.capacity", "is required"))?;
    if register.runtimes.len() > MAX_RUNTIMES {
        return Err(FieldError::new(
            "register.runtimes",
            format!(
                "has {} entries; the limit is {MAX_RUNTIMES}",
                register.runtimes.len()
            ),
        )
        .into());
    }
    for (i, runtime) in register.runtimes.iter().enumerate() {
        let field = format!("register.runtimes[{i}]");
        let name_ok = !runtime.name.is_empty()
            && runtime.name.len() <= 32
            && runtime
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err(
                FieldError::new(format!("{field}.name"), "must be 1–32 of a-z, 0-9, '-'").into(),
            );
        }
        if runtime.version.len() > 128 || runtime.detail.len() > 512 {
            return Err(
                FieldError::new(field, "version is limited to 128 bytes, detail to 512").into(),
            );
        }
    }
    validate_labels("register.labels", &register.labels)?;
    if register.agent_version.len() > 64 {
        return Err(FieldError::new("register.agent_version", "is limited to 64 bytes").into());
    }
    Ok(Registration {
        name,
        address: address.to_owned(),
        cpu_millis: capacity.cpu_millis,
        memory_bytes: capacity.memory_bytes,
        runtimes: register.runtimes,
        labels: register.labels,
        agent_version: register.agent_version,
    })
}

/// The longest firewall problem kept from a heartbeat.
const MAX_PROBLEM_CHARS: usize = 1024;

/// `text` cut to at most `chars` characters.
fn bounded(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

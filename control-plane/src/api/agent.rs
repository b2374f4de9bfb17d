//! `berth.v1.AgentService`: the one stream each node agent keeps open.

use crate::{
    auth::caller, metrics::Metrics, sessions::Sessions, store::nodes::Registration, store::Store,
};
use berth_pki::Identity;
use berth_proto::{
    domain::{validate_labels, NodeName},
    pb::{
        self, agent_message::Message as Up, agent_service_server::AgentService,
        control_message::Message as Down,
    },
    FieldError,
};
use futures::{Stream, StreamExt};
use std::{pin::Pin, time::Duration};
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
}

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
        // Nothing is scheduled onto nodes yet: the desired set is empty.
        let desired = pb::DesiredState {
            generation: 1,
            instances: Vec::new(),
        };
        for message in [Down::Registered(registered), Down::DesiredState(desired)] {
            tx.send(Ok(pb::ControlMessage {
                message: Some(message),
            }))
            .await
            .map_err(|_| Status::unavailable("session closed"))?;
        }
        let session_id = self.sessions.attach(name.clone(), tx);
        self.metrics
            .agent_sessions
            .set(self.sessions.count() as i64);

        let store = self.store.clone();
        let sessions = self.sessions.clone();
        let metrics = self.metrics.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = read_agent(&store, &name, inbound) => {}
            }
            sessions.detach(&name, session_id);
            metrics.agent_sessions.set(sessions.count() as i64);
            tracing::info!(node = %name, "agent session ended");
        });

        let outbound = ReceiverStream::new(rx).take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// Handles what an agent sends after registering, until its stream ends.
async fn read_agent(store: &Store, name: &NodeName, mut inbound: Streaming<pb::AgentMessage>) {
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
            Some(Up::Heartbeat(_)) => {
                if let Err(err) = store.heartbeat(name).await {
                    tracing::warn!(node = %name, error = %err, "recording heartbeat failed");
                }
            }
            Some(Up::StateReport(report)) => {
                tracing::debug!(node = %name, instances = report.instances.len(), "state report");
            }
            Some(Up::Register(_)) => {
                tracing::warn!(node = %name, "agent registered twice on one stream; ignored");
            }
            Some(other) => {
                tracing::debug!(node = %name, message = ?std::mem::discriminant(&other), "not handled yet");
            }
            None => {}
        }
    }
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

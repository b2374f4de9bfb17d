//! The agent's one stream to the control plane: register, heartbeat, take
//! the desired state, report the actual state; reconnect with jittered
//! exponential backoff whenever the stream ends.

use crate::{
    config::Config,
    driver::{builds::Builder, Links},
    host,
};
use backon::BackoffBuilder;
use berth_pki::TlsMaterial;
use berth_proto::pb::{
    self, agent_message::Message as Up, agent_service_client::AgentServiceClient,
    control_message::Message as Down,
};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const REGISTERED_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("control plane refused the session: {0}")]
    Refused(tonic::Status),
    #[error("stream failed: {0}")]
    Stream(tonic::Status),
    #[error("control plane closed the stream")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
}

impl SessionError {
    /// A refusal that will not change by retrying (bad certificate, wrong name).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SessionError::Refused(status)
            if matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::InvalidArgument | tonic::Code::Unauthenticated))
    }
}

/// What the agent knows of its link, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    pub connected: bool,
    /// Sessions successfully registered since start.
    pub sessions: u64,
    pub last_error: Option<String>,
}

/// Everything a session needs, kept across reconnects.
pub struct Session {
    pub config: Config,
    pub tls: TlsMaterial,
    pub node_name: String,
    pub status: watch::Sender<LinkStatus>,
    pub links: Links,
    pub builder: Option<Builder>,
    pub answerer: Option<crate::driver::answers::Answerer>,
    pub executor: Option<crate::driver::executions::Executor>,
    /// What the heartbeat says of the container firewall.
    pub firewall: std::sync::Arc<crate::docker::firewall::Firewall>,
}

impl Session {
    /// Keeps a session open until `shutdown`, reconnecting with backoff.
    pub async fn run(
        self,
        mut outbox: mpsc::Receiver<pb::AgentMessage>,
        shutdown: CancellationToken,
    ) {
        let config = &self.config;
        let backoff_builder = backon::ExponentialBuilder::default()
            .with_min_delay(config.reconnect_min)
            .with_max_delay(config.reconnect_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        let mut backoff = backoff_builder.build();
        let mut runtimes = RuntimeCache(None, self.executor.is_some());
        loop {
            let registered = std::sync::atomic::AtomicBool::new(false);
            let result = self
                .once(&mut runtimes, &registered, &mut outbox, &shutdown)
                .await;
            self.status.send_modify(|s| s.connected = false);
            self.links.channel.send_replace(None);
            if shutdown.is_cancelled() {
                return;
            }
            if registered.load(std::sync::atomic::Ordering::Relaxed) {
                // The link worked: start the backoff over.
                backoff = backoff_builder.build();
            }
            let error = match result {
                Ok(()) => SessionError::Closed,
                Err(err) => err,
            };
            let delay = backoff.next().unwrap_or(config.reconnect_max);
            if error.is_permanent() {
                tracing::error!(%error, "control plane refused this agent; retrying in case it changes");
            } else {
                tracing::warn!(%error, retry_in = ?delay, "agent session ended");
            }
            self.status
                .send_modify(|s| s.last_error = Some(error.to_string()));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

async fn connect(config: &Config, tls: &TlsMaterial) -> Result<Channel, SessionError> {
    let err = |source| SessionError::Connect {
        endpoint: config.control_plane.clone(),
        source,
    };
    tls.endpoint(&config.control_plane)
        .map_err(err)?
        .connect()
        .await
        .map_err(err)
}

/// Probing toolchains takes a moment; a reconnect within this reuses the last probe.
const RUNTIME_PROBE_MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct RuntimeCache(Option<(tokio::time::Instant, Vec<pb::RuntimeInfo>)>, bool);

impl RuntimeCache {
    async fn get(&mut self) -> Vec<pb::RuntimeInfo> {
        match &self.0 {
            Some((at, runtimes)) if at.elapsed() < RUNTIME_PROBE_MAX_AGE => runtimes.clone(),
            _ => {
                let runtimes = host::runtimes(self.1).await;
                self.0 = Some((tokio::time::Instant::now(), runtimes.clone()));
                runtimes
            }
        }
    }
}

impl Session {
    async fn once(
        &self,
        runtimes: &mut RuntimeCache,
        registered: &std::sync::atomic::AtomicBool,
        outbox: &mut mpsc::Receiver<pb::AgentMessage>,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let (config, tls, node_name, status) =
            (&self.config, &self.tls, &self.node_name, &self.status);
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            channel = connect(config, tls) => channel?,
        };
        let mut client = AgentServiceClient::new(channel.clone());
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
        let register = pb::Register {
            node_name: node_name.to_owned(),
            address: config.advertise_address.clone(),
            capacity: Some(host::capacity()),
            runtimes: runtimes.get().await,
            labels: config.labels.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        send(&tx, Up::Register(register)).await?;
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .map_err(SessionError::Refused)?
            .into_inner();

        let first = tokio::time::timeout(REGISTERED_TIMEOUT, inbound.message())
            .await
            .map_err(|_| SessionError::Protocol("no answer to register within 10 s".into()))?
            .map_err(SessionError::Refused)?
            .ok_or(SessionError::Closed)?;
        let Some(Down::Registered(accepted)) = first.message else {
            return Err(SessionError::Protocol(
                "expected registered as the first message".into(),
            ));
        };
        registered.store(true, std::sync::atomic::Ordering::Relaxed);
        status.send_modify(|s| {
            s.connected = true;
            s.sessions += 1;
            s.last_error = None;
        });
        let interval =
            Duration::from_millis(u64::from(accepted.heartbeat_interval_ms)).max(MIN_HEARTBEAT);
        tracing::info!(node = %accepted.node_name, heartbeat = ?interval, "registered with the control plane");

        self.links.channel.send_replace(Some(channel));
        let mut reports = self.links.report.subscribe();
        // What actually runs, as soon as the session is up.
        let current = reports.borrow_and_update().clone();
        send(&tx, Up::StateReport(current)).await?;

        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sequence = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = heartbeat.tick() => {
                    sequence += 1;
                    let running_executions = self.executor.as_ref().map_or(0, |e| e.running() as u32);
                    let firewall_problem = self.firewall.problem().unwrap_or_default();
                    send(&tx, Up::Heartbeat(pb::Heartbeat { sequence, running_executions, firewall_problem, ..Default::default() })).await?;
                }
                Ok(()) = reports.changed() => {
                    let report = reports.borrow_and_update().clone();
                    send(&tx, Up::StateReport(report)).await?;
                }
                Some(message) = outbox.recv() => {
                    tx.send(message).await.map_err(|_| SessionError::Closed)?;
                }
                message = inbound.message() => {
                    match message.map_err(SessionError::Stream)? {
                        None => return Err(SessionError::Closed),
                        Some(pb::ControlMessage { message: Some(Down::DesiredState(desired)) }) => {
                            tracing::debug!(generation = desired.generation, instances = desired.instances.len(), "desired state");
                            self.links.desired.send_if_modified(|current| {
                                let newer = current.as_ref().is_none_or(|c| c.generation < desired.generation);
                                if newer {
                                    *current = Some(desired);
                                }
                                newer
                            });
                        }
                        Some(pb::ControlMessage { message: Some(Down::Build(request)) }) => match &self.builder {
                            Some(builder) => {
                                tracing::info!(build = %request.build_id, image = %request.image_tag, "build requested");
                                let builder = builder.clone();
                                tokio::spawn(async move { builder.handle_request(request).await });
                            }
                            None => {
                                let result = pb::BuildResult {
                                    build_id: request.build_id,
                                    state: berth_proto::domain::BuildState::BuildFailed.into(),
                                    image_tag: request.image_tag,
                                    error: "this node has no Docker engine".into(),
                                    cached: false,
                                };
                                send(&tx, Up::BuildResult(result)).await?;
                            }
                        },
                        Some(pb::ControlMessage { message: Some(Down::Request(request)) }) => match &self.answerer {
                        Some(answerer) => {
                            let answerer = answerer.clone();
                            tokio::spawn(async move { answerer.answer(request).await });
                        }
                        None => {
                            let error = pb::AgentReply {
                                request_id: request.request_id,
                                kind: Some(pb::agent_reply::Kind::Error("this node has no Docker engine".into())),
                            };
                            send(&tx, Up::Reply(error)).await?;
                        }
                    },
                    Some(pb::ControlMessage { message: Some(Down::Execute(request)) }) => match &self.executor {
                        Some(executor) => {
                            tracing::info!(execution = %request.execution_id, language = request.language, "execution requested");
                            executor.start(request);
                        }
                        None => {
                            let outcome = crate::sandbox::Outcome::failed("this node has no working sandbox".into());
                            let result = crate::driver::executions::result(request.execution_id, outcome);
                            send(&tx, Up::ExecutionResult(result)).await?;
                        }
                    },
                    Some(pb::ControlMessage { message: Some(Down::CancelExecution(cancel)) }) => {
                        if let Some(executor) = &self.executor {
                            executor.cancel(&cancel.execution_id);
                        }
                    }
                    Some(pb::ControlMessage { message: Some(Down::CancelRequest(cancel)) }) => {
                        if let Some(answerer) = &self.answerer {
                            answerer.cancel(cancel.request_id);
                        }
                    }
                    Some(other) => tracing::debug!(?other, "control message not handled yet"),
                    }
                }
            }
        }
    }
}

async fn send(tx: &mpsc::Sender<pb::AgentMessage>, message: Up) -> Result<(), SessionError> {
    tx.send(pb::AgentMessage {
        message: Some(message),
    })
    .await
    .map_err(|_| SessionError::Closed)
}

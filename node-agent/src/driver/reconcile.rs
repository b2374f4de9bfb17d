//! Converges local Docker to the desired set: starts what is missing,
//! follows each container to `running` (its port answers HTTP) or
//! `failed`, removes what is no longer wanted, and reports the lot.

use super::{builds::Builder, DriverConfig, Links};
use crate::docker::{
    containers::{self, ContainerPlan, ContainerStatus, Observed},
    readiness,
};
use berth_proto::{
    domain::{InstanceState, Runtime},
    pb,
};
use bollard::Docker;
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

/// How long a new container has to answer HTTP on its port.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the whole set is checked when nothing else wakes the loop.
const PERIOD: Duration = Duration::from_secs(2);
/// Wait before trying again to start an instance that could not start.
const RETRY_AFTER: Duration = Duration::from_secs(15);
const PROBE_EVERY: Duration = Duration::from_millis(25);

#[derive(Default)]
struct Tracking {
    /// Containers that answered HTTP since they (re)started: id → StartedAt.
    ready: HashMap<String, String>,
    /// Containers being probed now.
    probing: HashSet<String>,
    /// Why an instance could not start, and when.
    failures: HashMap<String, (String, Instant)>,
    /// When a container was first seen not ready.
    since: HashMap<String, Instant>,
}

pub struct Reconciler {
    docker: Docker,
    config: DriverConfig,
    links: Links,
    builder: Builder,
    wake: Arc<Notify>,
    tracking: Arc<Mutex<Tracking>>,
}

impl Reconciler {
    pub fn new(docker: Docker, config: DriverConfig, links: Links, builder: Builder) -> Self {
        Self {
            docker,
            config,
            links,
            builder,
            wake: Arc::new(Notify::new()),
            tracking: Arc::default(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut desired = self.links.desired.subscribe();
        loop {
            // Every pass: a flushed firewall gets its rules back.
            crate::docker::network::enforce_firewall(&self.docker, &self.config.firewall).await;
            let current = desired.borrow_and_update().clone();
            if let Some(current) = current {
                if let Err(err) = self.pass(&current).await {
                    tracing::warn!(error = %err, "reconcile pass failed; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = desired.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(PERIOD) => {}
            }
        }
    }

    fn track(&self) -> std::sync::MutexGuard<'_, Tracking> {
        self.tracking.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn pass(&self, desired: &pb::DesiredState) -> Result<(), crate::docker::DockerError> {
        let actual = containers::list_managed(&self.docker, &self.config.node).await?;
        let mut by_instance: HashMap<&str, &Observed> = HashMap::new();
        for observed in &actual {
            by_instance.insert(observed.instance_id.as_str(), observed);
        }
        let wanted: HashSet<&str> = desired
            .instances
            .iter()
            .map(|s| s.instance_id.as_str())
            .collect();
        for observed in actual
            .iter()
            .filter(|o| !wanted.contains(o.instance_id.as_str()))
        {
            tracing::info!(container = %observed.container_id, instance = %observed.instance_id, "removing a container no longer wanted");
            containers::remove(&self.docker, &observed.container_id).await?;
            self.track().ready.remove(&observed.container_id);
        }

        let mut statuses = Vec::with_capacity(desired.instances.len());
        for spec in &desired.instances {
            let status = match by_instance.get(spec.instance_id.as_str()) {
                Some(observed) => self.observe(spec, observed).await,
                None => self.start(spec).await,
            };
            statuses.push(status);
        }
        let report = pb::StateReport {
            generation: desired.generation,
            instances: statuses,
        };
        self.links.report.send_if_modified(|current| {
            let changed = *current != report;
            if changed {
                *current = report;
            }
            changed
        });
        Ok(())
    }

    fn status(
        spec: &pb::InstanceSpec,
        state: InstanceState,
        observed: Option<&Observed>,
        error: String,
    ) -> pb::InstanceStatus {
        pb::InstanceStatus {
            instance_id: spec.instance_id.clone(),
            state: state.into(),
            container_id: observed.map(|o| o.container_id.clone()).unwrap_or_default(),
            host_port: observed.and_then(|o| o.host_port).map_or(0, u32::from),
            restarts: observed.map_or(0, |o| o.restarts),
            error,
        }
    }

    /// Starts an instance that has no container.
    async fn start(&self, spec: &pb::InstanceSpec) -> pb::InstanceStatus {
        if let Some((error, at)) = self.track().failures.get(&spec.instance_id).cloned() {
            if at.elapsed() < RETRY_AFTER {
                return Self::status(spec, InstanceState::Failed, None, error);
            }
        }
        match self.create(spec).await {
            Ok(id) => {
                self.track().failures.remove(&spec.instance_id);
                let observed = containers::inspect(&self.docker, &id).await.ok().flatten();
                if let Some(observed) = &observed {
                    self.probe(observed);
                }
                Self::status(
                    spec,
                    InstanceState::Starting,
                    observed.as_ref(),
                    String::new(),
                )
            }
            Err(error) => {
                tracing::warn!(instance = %spec.instance_id, %error, "instance could not start");
                self.track()
                    .failures
                    .insert(spec.instance_id.clone(), (error.clone(), Instant::now()));
                Self::status(spec, InstanceState::Failed, None, error)
            }
        }
    }

    async fn create(&self, spec: &pb::InstanceSpec) -> Result<String, String> {
        let phase = std::time::Instant::now();
        let code_dir = self.builder.prepare(spec).await?;
        tracing::debug!(took = ?phase.elapsed(), instance = %spec.instance_id, "code ready");
        let runtime = Runtime::try_from(spec.runtime).map_err(|_| "unknown runtime".to_owned())?;
        let plan = ContainerPlan {
            node: self.config.node.clone(),
            tenant: spec.tenant.clone(),
            app_id: spec.app_id.clone(),
            app_name: spec.app_name.clone(),
            instance_id: spec.instance_id.clone(),
            image: spec.image.clone(),
            code_dir: Some(code_dir),
            container_port: u16::try_from(spec.container_port)
                .map_err(|_| "bad container port".to_owned())?,
            publish_ip: self.config.publish_ip.clone(),
            cpu_millis: spec.cpu_millis,
            memory_bytes: spec.memory_bytes,
            env: spec.env.clone(),
            command: spec.command.clone(),
            locked_down: runtime != Runtime::Dockerfile,
        };
        containers::create_and_start(&self.docker, &plan)
            .await
            .map_err(|e| e.to_string())
    }

    /// Follows a container until it answers HTTP, then wakes the loop.
    fn probe(&self, observed: &Observed) {
        let Some(port) = observed.host_port else {
            return;
        };
        let id = observed.container_id.clone();
        if !self.track().probing.insert(id.clone()) {
            return;
        }
        let (host, started_at) = (self.config.publish_ip.clone(), observed.started_at.clone());
        let (tracking, wake) = (self.tracking.clone(), self.wake.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + READINESS_TIMEOUT;
            let mut ready = false;
            while Instant::now() < deadline {
                if readiness::answers_http(&host, port).await {
                    ready = true;
                    break;
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
            let mut tracking = tracking.lock().unwrap_or_else(|p| p.into_inner());
            tracking.probing.remove(&id);
            if ready {
                tracking.ready.insert(id, started_at);
            }
            drop(tracking);
            wake.notify_one();
        });
    }

    /// The state of an instance whose container exists.
    async fn observe(&self, spec: &pb::InstanceSpec, observed: &Observed) -> pb::InstanceStatus {
        let id = &observed.container_id;
        match observed.status {
            ContainerStatus::Running => {
                let ready = self.track().ready.get(id) == Some(&observed.started_at);
                if ready {
                    self.track().since.remove(id);
                    return Self::status(
                        spec,
                        InstanceState::Running,
                        Some(observed),
                        String::new(),
                    );
                }
                let since = *self
                    .track()
                    .since
                    .entry(id.clone())
                    .or_insert_with(Instant::now);
                if since.elapsed() > READINESS_TIMEOUT {
                    let logs = containers::logs_tail(&self.docker, id, 20).await;
                    self.probe(observed);
                    let error = format!(
                        "did not answer HTTP on port {} within {}s; last output:\n{logs}",
                        spec.container_port,
                        READINESS_TIMEOUT.as_secs()
                    );
                    return Self::status(spec, InstanceState::Failed, Some(observed), error);
                }
                self.probe(observed);
                Self::status(spec, InstanceState::Starting, Some(observed), String::new())
            }
            ContainerStatus::Restarting if observed.restarts > 0 && !observed.oom_killed => {
                // Docker keeps restarting it: it exits as soon as it starts.
                self.track().ready.remove(id);
                let logs = containers::logs_tail(&self.docker, id, 20).await;
                let error = format!(
                    "keeps exiting (restarted {} times, last exit code {}); last output:\n{logs}",
                    observed.restarts,
                    observed.exit_code.unwrap_or(-1)
                );
                Self::status(spec, InstanceState::Failed, Some(observed), error)
            }
            ContainerStatus::Created | ContainerStatus::Restarting => {
                self.track().ready.remove(id);
                Self::status(spec, InstanceState::Starting, Some(observed), String::new())
            }
            ContainerStatus::Exited | ContainerStatus::Dead | ContainerStatus::Other => {
                self.track().ready.remove(id);
                let logs = containers::logs_tail(&self.docker, id, 20).await;
                let why = if observed.oom_killed {
                    format!(
                        "killed for using more than its {} MiB of memory",
                        spec.memory_bytes >> 20
                    )
                } else {
                    format!("exited with code {}", observed.exit_code.unwrap_or(-1))
                };
                Self::status(
                    spec,
                    InstanceState::Failed,
                    Some(observed),
                    format!("{why}; last output:\n{logs}"),
                )
            }
        }
    }
}

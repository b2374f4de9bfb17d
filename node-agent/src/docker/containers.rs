//! Instance containers: how one is made from its spec (limits, hardening,
//! the apps' network, a published port), read back, found again by label
//! after an agent restart, and removed.

use super::{network, DockerError};
use bollard::{
    errors::Error as EngineError,
    models::{
        ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig, Mount,
        MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
        RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    },
    Docker,
};
use std::{collections::HashMap, path::PathBuf};

pub const LABEL_MANAGED: &str = "berth.managed";
pub const LABEL_NODE: &str = "berth.node";
pub const LABEL_APP: &str = "berth.app";
pub const LABEL_INSTANCE: &str = "berth.instance";
pub const LABEL_TENANT: &str = "berth.tenant";

/// Processes one container may run.
pub const PIDS_LIMIT: i64 = 512;

/// Everything needed to create one instance's container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    pub node: String,
    pub tenant: String,
    pub app_id: String,
    pub app_name: String,
    pub instance_id: String,
    pub image: String,
    /// Host directory with the app's code, mounted read-only at `/app/code`.
    pub code_dir: Option<PathBuf>,
    pub container_port: u16,
    /// Host address the port is published on (the node's advertised address).
    pub publish_ip: String,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub env: HashMap<String, String>,
    pub command: Vec<String>,
    /// Run as an unprivileged user with a read-only root filesystem
    /// (runtime apps; images from users' Dockerfiles keep their own user).
    pub locked_down: bool,
}

impl ContainerPlan {
    /// `berth-{app}-{instance8}`.
    pub fn container_name(&self) -> String {
        let short: String = self
            .instance_id
            .chars()
            .filter(|c| *c != '-')
            .take(8)
            .collect();
        format!("berth-{}-{short}", self.app_name)
    }

    /// The network the container joins ([`network::current`]).
    pub fn network_name(&self) -> String {
        network::current()
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_NODE.to_owned(), self.node.clone()),
            (LABEL_APP.to_owned(), self.app_id.clone()),
            (LABEL_INSTANCE.to_owned(), self.instance_id.clone()),
            (LABEL_TENANT.to_owned(), self.tenant.clone()),
        ])
    }

    fn body(&self) -> ContainerCreateBody {
        let port_key = format!("{}/tcp", self.container_port);
        let mut env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("PORT={}", self.container_port));
        env.sort();
        let mounts = self.code_dir.as_ref().map(|dir| {
            vec![Mount {
                target: Some("/app/code".into()),
                source: Some(dir.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            }]
        });
        let host_config = HostConfig {
            memory: Some(self.memory_bytes as i64),
            // No swap beyond the memory limit.
            memory_swap: Some(self.memory_bytes as i64),
            nano_cpus: Some(i64::from(self.cpu_millis) * 1_000_000),
            pids_limit: Some(PIDS_LIMIT),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            cap_drop: Some(vec!["ALL".into()]),
            readonly_rootfs: Some(self.locked_down),
            tmpfs: self.locked_down.then(|| {
                HashMap::from([("/tmp".to_owned(), "rw,nosuid,nodev,size=64m".to_owned())])
            }),
            mounts,
            network_mode: Some(self.network_name()),
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(self.publish_ip.clone()),
                    host_port: Some(String::new()),
                }]),
            )])),
            log_config: Some(bollard::models::HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), "10m".to_owned()),
                    ("max-file".to_owned(), "3".to_owned()),
                ])),
            }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            env: Some(env),
            cmd: (!self.command.is_empty()).then(|| self.command.clone()),
            labels: Some(self.labels()),
            exposed_ports: Some(vec![port_key]),
            user: self.locked_down.then(|| "65534:65534".to_owned()),
            working_dir: self.code_dir.as_ref().map(|_| "/app/code".to_owned()),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// Creates and starts the container; returns its id.
pub async fn create_and_start(
    docker: &Docker,
    plan: &ContainerPlan,
) -> Result<String, DockerError> {
    let phase = std::time::Instant::now();
    network::ensure(docker).await?;
    let name = plan.container_name();
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = match docker.create_container(Some(options), plan.body()).await {
        Ok(created) => created,
        // The network went away (removed by hand): make it again, once.
        Err(EngineError::DockerResponseServerError {
            status_code: 404,
            message,
        }) if message.contains("network") => {
            network::forget();
            network::ensure(docker).await?;
            docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                    plan.body(),
                )
                .await?
        }
        // A container of that name is left from an earlier try: replace it.
        Err(EngineError::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            remove(docker, &name).await?;
            docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                    plan.body(),
                )
                .await?
        }
        Err(err) => return Err(err.into()),
    };
    tracing::debug!(took = ?phase.elapsed(), instance = %plan.instance_id, "container created");
    if let Err(err) = docker
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
    {
        let _ = remove(docker, &created.id).await;
        return Err(err.into());
    }
    tracing::debug!(took = ?phase.elapsed(), instance = %plan.instance_id, "container started");
    Ok(created.id)
}

/// Stops a container (10 s grace, then SIGKILL).
pub async fn stop(docker: &Docker, id: &str) -> Result<(), DockerError> {
    match docker
        .stop_container(
            id,
            Some(StopContainerOptionsBuilder::default().t(10).build()),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(EngineError::DockerResponseServerError {
            status_code: 304 | 404,
            ..
        }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Removes a container, running or not; absent, or being removed by
/// someone else already (409), is fine.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    match docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(EngineError::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// What an instance's container looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub container_id: String,
    pub instance_id: String,
    pub app_id: String,
    pub status: ContainerStatus,
    pub host_port: Option<u16>,
    pub restarts: u32,
    pub oom_killed: bool,
    pub exit_code: Option<i64>,
    pub started_at: String,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    Created,
    Running,
    Restarting,
    Exited,
    Dead,
    Other,
}

/// Reads one container; `None` when it is gone.
pub async fn inspect(docker: &Docker, id: &str) -> Result<Option<Observed>, DockerError> {
    match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(response) => Ok(observed(response)),
        Err(EngineError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

fn observed(response: ContainerInspectResponse) -> Option<Observed> {
    let labels = response.config.as_ref()?.labels.clone().unwrap_or_default();
    let state = response.state.clone().unwrap_or_default();
    let status = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerStatus::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerStatus::Running,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerStatus::Restarting,
        Some(ContainerStateStatusEnum::EXITED) => ContainerStatus::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerStatus::Dead,
        _ => ContainerStatus::Other,
    };
    let host_port = response
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
        .and_then(|ports| {
            ports
                .values()
                .flatten()
                .flatten()
                .find_map(|b| b.host_port.as_deref()?.parse().ok())
        });
    Some(Observed {
        container_id: response.id.clone()?,
        instance_id: labels.get(LABEL_INSTANCE)?.clone(),
        app_id: labels.get(LABEL_APP).cloned().unwrap_or_default(),
        status,
        host_port,
        restarts: response.restart_count.unwrap_or(0).max(0) as u32,
        oom_killed: state.oom_killed.unwrap_or(false),
        exit_code: state.exit_code,
        started_at: state.started_at.unwrap_or_default(),
        error: state.error.unwrap_or_default(),
    })
}

/// Every container this node manages, found by label (running or not).
pub async fn list_managed(docker: &Docker, node: &str) -> Result<Vec<Observed>, DockerError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_NODE}={node}"),
        ],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let mut found = Vec::new();
    for summary in docker.list_containers(Some(options)).await? {
        let Some(id) = summary.id else { continue };
        if let Some(observed) = inspect(docker, &id).await? {
            found.push(observed);
        }
    }
    Ok(found)
}

/// The last `lines` lines a container wrote (stdout and stderr), for errors.
pub async fn logs_tail(docker: &Docker, id: &str, lines: usize) -> String {
    use futures::StreamExt;
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut stream = docker.logs(id, Some(options));
    let mut out = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        if out.len() > 16 * 1024 {
            break;
        }
    }
    out.trim_end().to_owned()
}

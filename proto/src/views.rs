//! The JSON shape of API objects, one for every client: the CLI's `-o json`
//! and the gateway's REST API print these.

use crate::{
    domain::{AppState, BuildState, ExecutionState, InstanceState, Language, NodeState, Runtime},
    pb,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// A protobuf timestamp as a UTC time.
pub fn time(ts: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

fn name_of<T: std::fmt::Display, E>(value: Result<T, E>) -> String {
    value.map_or("unknown".to_owned(), |v| v.to_string())
}

#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub runtime: String,
    pub state: String,
    pub status_message: String,
    pub app_hostname: String,
    pub container_port: u32,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub min_instances: u32,
    pub max_instances: u32,
    pub request_timeout_ms: u32,
    pub max_body_bytes: u64,
    pub idle_timeout_s: u32,
    pub env: BTreeMap<String, String>,
    pub current_build_id: String,
    pub instances: Vec<InstanceView>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub node: String,
    pub state: String,
    pub address: String,
    pub host_port: u32,
    pub container_id: String,
    pub restarts: u32,
    pub error: String,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<pb::Instance> for InstanceView {
    fn from(i: pb::Instance) -> Self {
        Self {
            state: name_of(InstanceState::try_from(i.state)),
            id: i.id,
            node: i.node_name,
            address: i.address,
            host_port: i.host_port,
            container_id: i.container_id,
            restarts: i.restarts,
            error: i.error,
            updated_at: time(i.updated_at),
        }
    }
}

impl From<pb::App> for AppView {
    fn from(app: pb::App) -> Self {
        let settings = app.settings.unwrap_or_default();
        Self {
            id: app.id,
            runtime: name_of(Runtime::try_from(settings.runtime)),
            name: settings.name,
            tenant: settings.tenant,
            state: name_of(AppState::try_from(app.state)),
            status_message: app.status_message,
            app_hostname: settings.app_hostname,
            container_port: settings.container_port,
            cpu_millis: settings.cpu_millis,
            memory_bytes: settings.memory_bytes,
            min_instances: settings.min_instances.unwrap_or_default(),
            max_instances: settings.max_instances.unwrap_or_default(),
            request_timeout_ms: settings.request_timeout_ms.unwrap_or_default(),
            max_body_bytes: settings.max_body_bytes.unwrap_or_default(),
            idle_timeout_s: settings.idle_timeout_s.unwrap_or_default(),
            env: settings.env.into_iter().collect(),
            current_build_id: app.current_build_id,
            instances: app.instances.into_iter().map(InstanceView::from).collect(),
            created_at: time(app.created_at),
            updated_at: time(app.updated_at),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildView {
    pub id: String,
    pub app_id: String,
    pub state: String,
    pub image_tag: String,
    pub error: String,
    pub cached: bool,
    pub context_bytes: u64,
    pub created_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<pb::Build> for BuildView {
    fn from(b: pb::Build) -> Self {
        Self {
            state: name_of(BuildState::try_from(b.state)),
            id: b.id,
            app_id: b.app_id,
            image_tag: b.image_tag,
            error: b.error,
            cached: b.cached,
            context_bytes: b.context_bytes,
            created_at: time(b.created_at),
            finished_at: time(b.finished_at),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub name: String,
    pub state: String,
    pub address: String,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub runtimes: Vec<RuntimeView>,
    pub labels: BTreeMap<String, String>,
    pub drained: bool,
    pub connected: bool,
    /// The container firewall: `ok`, `missing: …`, or `unknown`.
    pub firewall: String,
    pub agent_version: String,
    pub registered_at: Option<DateTime<Utc>>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeView {
    pub name: String,
    pub available: bool,
    pub version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl From<pb::Node> for NodeView {
    fn from(node: pb::Node) -> Self {
        let capacity = node.capacity.unwrap_or_default();
        Self {
            state: name_of(NodeState::try_from(node.state)),
            address: node.address,
            cpu_millis: capacity.cpu_millis,
            memory_bytes: capacity.memory_bytes,
            runtimes: node
                .runtimes
                .into_iter()
                .map(|r| RuntimeView {
                    name: r.name,
                    available: r.available,
                    version: r.version,
                    detail: r.detail,
                })
                .collect(),
            labels: node.labels.into_iter().collect(),
            drained: node.drained,
            firewall: node.firewall,
            connected: node.connected,
            agent_version: node.agent_version,
            registered_at: time(node.registered_at),
            last_heartbeat_at: time(node.last_heartbeat_at),
            name: node.name,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub prefix: String,
    /// `admin`, `deployer` or `invoker`.
    pub role: String,
    pub admin: bool,
    pub rate_per_second: f64,
    pub burst: u32,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key itself: only in the answer that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl From<pb::ApiKey> for KeyView {
    fn from(k: pb::ApiKey) -> Self {
        Self {
            id: k.id,
            tenant: k.tenant,
            name: k.name,
            prefix: k.prefix,
            role: crate::domain::KeyRole::from_wire(k.role, k.admin)
                .map_or_else(|_| "unknown".to_owned(), |r| r.as_str().to_owned()),
            admin: k.admin,
            rate_per_second: k.rate_per_second,
            burst: k.burst,
            created_at: time(k.created_at),
            revoked_at: time(k.revoked_at),
            key: None,
        }
    }
}

/// A tenant's limits: `null` follows the cluster's default.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantLimitsView {
    pub max_running_executions: Option<u32>,
    pub max_queued_executions: Option<u32>,
    pub max_running_builds: Option<u32>,
}

impl From<Option<pb::TenantLimits>> for TenantLimitsView {
    fn from(l: Option<pb::TenantLimits>) -> Self {
        let l = l.unwrap_or_default();
        Self {
            max_running_executions: l.max_running_executions,
            max_queued_executions: l.max_queued_executions,
            max_running_builds: l.max_running_builds,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
    /// What an admin set for the tenant.
    pub limits: TenantLimitsView,
    /// What holds now.
    pub effective: TenantLimitsView,
}

impl From<pb::Tenant> for TenantView {
    fn from(t: pb::Tenant) -> Self {
        Self {
            name: t.name,
            created_at: time(t.created_at),
            limits: t.limits.into(),
            effective: t.effective.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub sequence: u64,
    pub kind: String,
    pub app_id: String,
    pub app_hostname: String,
    pub node: String,
    pub subject_id: String,
    pub message: String,
    pub at: Option<DateTime<Utc>>,
}

impl From<pb::Event> for EventView {
    fn from(e: pb::Event) -> Self {
        Self {
            sequence: e.sequence,
            kind: e.kind,
            app_id: e.app_id,
            app_hostname: e.app_hostname,
            node: e.node_name,
            subject_id: e.subject_id,
            message: e.message,
            at: time(e.at),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatsView {
    pub instance_id: String,
    pub cpu_percent: f64,
    pub memory_mb: f64,
    pub memory_percent: f64,
}

impl From<&pb::InstanceStats> for InstanceStatsView {
    fn from(s: &pb::InstanceStats) -> Self {
        Self {
            instance_id: s.instance_id.clone(),
            cpu_percent: s.cpu_percent,
            memory_mb: s.memory_mb,
            memory_percent: s.memory_percent,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLineView {
    pub instance_id: String,
    pub stream: String,
    pub timestamp: Option<DateTime<Utc>>,
    pub line: String,
}

impl From<pb::LogLine> for LogLineView {
    fn from(l: pb::LogLine) -> Self {
        Self {
            instance_id: l.instance_id,
            stream: l.stream,
            timestamp: time(l.timestamp),
            line: String::from_utf8_lossy(&l.line).into_owned(),
        }
    }
}

/// An execution and its result.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionView {
    pub id: String,
    pub tenant: String,
    pub language: String,
    pub state: String,
    pub node: String,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub exit_code: i32,
    pub signal: i32,
    pub wall_time_ms: u32,
    pub cpu_time_ms: u32,
    pub peak_memory_bytes: u64,
    pub error: String,
    pub created_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&pb::Execution> for ExecutionView {
    fn from(e: &pb::Execution) -> Self {
        Self {
            id: e.id.clone(),
            tenant: e.tenant.clone(),
            language: name_of(
                pb::Language::try_from(e.language)
                    .map_err(|_| ())
                    .and_then(|l| Language::try_from(l).map_err(|_| ())),
            ),
            state: name_of(
                pb::ExecutionState::try_from(e.state)
                    .map_err(|_| ())
                    .and_then(|s| ExecutionState::try_from(s).map_err(|_| ())),
            ),
            node: e.node_name.clone(),
            stdout: String::from_utf8_lossy(&e.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&e.stderr).into_owned(),
            stdout_truncated: e.stdout_truncated,
            stderr_truncated: e.stderr_truncated,
            exit_code: e.exit_code,
            signal: e.signal,
            wall_time_ms: e.wall_time_ms,
            cpu_time_ms: e.cpu_time_ms,
            peak_memory_bytes: e.peak_memory_bytes,
            error: e.error.clone(),
            created_at: time(e.created_at),
            finished_at: time(e.finished_at),
        }
    }
}

//! The control plane's configuration: clap flags with `BERTH_…` env
//! fallbacks, validated once into [`Config`].

use crate::quotas::{Defaults, MAX_LIMIT};
use berth_pki::{TlsArgs, TlsFiles};
use clap::Args;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Flags of `berth-control-plane`.
#[derive(Debug, Clone, Args)]
pub struct ControlPlaneArgs {
    /// Address of the gRPC API (mTLS only).
    #[arg(long, env = "BERTH_GRPC_ADDR", default_value = "127.0.0.1:7443")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint (plain HTTP).
    #[arg(long, env = "BERTH_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Data directory: the SQLite database, and `certs/` unless the TLS flags say otherwise.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = ".berth")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (`postgres://user:pass@host/db`); SQLite in the data dir when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// A node with no heartbeat for this long is marked down.
    #[arg(long, env = "BERTH_NODE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub node_ttl: Duration,
    /// How often agents are asked to heartbeat.
    #[arg(long, env = "BERTH_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "BERTH_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Base image of a runtime, `runtime=image` (repeatable); the defaults are
    /// the images `berth images bootstrap` makes.
    #[arg(
        long = "runtime-image",
        env = "BERTH_RUNTIME_IMAGES",
        value_delimiter = ','
    )]
    pub runtime_images: Vec<String>,
    /// Longest an image build may take.
    #[arg(long, env = "BERTH_BUILD_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub build_timeout: Duration,
    /// Largest uploaded archive (compressed), in bytes.
    #[arg(long, env = "BERTH_MAX_ARCHIVE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_archive_bytes: u64,
    /// Largest unpacked archive, in bytes.
    #[arg(long, env = "BERTH_MAX_UNPACKED_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_unpacked_bytes: u64,
    #[command(flatten)]
    pub tenants: TenantArgs,
}

/// Each tenant's fair share, where an admin set none of its own
/// (`berth tenants set`).
#[derive(Debug, Clone, Args)]
pub struct TenantArgs {
    /// Executions one tenant may run at once [default: half of the
    /// cluster's execution slots, at least one].
    #[arg(long, env = "BERTH_TENANT_MAX_RUNNING_EXECUTIONS")]
    pub tenant_max_running_executions: Option<u32>,
    /// Executions one tenant may have waiting; more are refused.
    #[arg(long, env = "BERTH_TENANT_MAX_QUEUED_EXECUTIONS", default_value_t = 64)]
    pub tenant_max_queued_executions: u32,
    /// Image builds one tenant may run at once; more wait their turn.
    #[arg(long, env = "BERTH_TENANT_MAX_RUNNING_BUILDS", default_value_t = 2)]
    pub tenant_max_running_builds: u32,
}

impl TenantArgs {
    pub fn defaults(&self) -> Defaults {
        Defaults {
            max_running_executions: self.tenant_max_running_executions,
            max_queued_executions: self.tenant_max_queued_executions,
            max_running_builds: self.tenant_max_running_builds,
        }
    }
}

/// The runtime base images used when no flag names one.
pub const DEFAULT_RUNTIME_IMAGES: &[(&str, &str)] = &[
    ("python", "berth/python:3.11-bookworm"),
    ("node", "berth/node:18-bookworm"),
    ("go", "berth/go:1.23-bookworm"),
];

/// Validated configuration of the control plane.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub tls: TlsFiles,
    pub node_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub max_message_bytes: usize,
    /// Runtime name → base image.
    pub runtime_images: std::collections::BTreeMap<String, String>,
    pub build_timeout: Duration,
    pub max_archive_bytes: u64,
    pub max_unpacked_bytes: u64,
    /// Each tenant's share where it has none of its own.
    pub tenant_defaults: Defaults,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults for a data dir whose `certs/` holds `ca.pem` and `control-plane.pem`.
    pub fn for_data_dir(data_dir: PathBuf) -> Self {
        Self {
            tls: TlsFiles::in_dir(&data_dir.join("certs"), "control-plane"),
            data_dir,
            database_url: None,
            node_ttl: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(5),
            max_message_bytes: 4 * 1024 * 1024,
            runtime_images: DEFAULT_RUNTIME_IMAGES
                .iter()
                .map(|(r, i)| (r.to_string(), i.to_string()))
                .collect(),
            build_timeout: Duration::from_secs(600),
            max_archive_bytes: 256 << 20,
            max_unpacked_bytes: 1 << 30,
            tenant_defaults: Defaults::default(),
        }
    }

    pub fn validate(self) -> Result<Self, ConfigError> {
        let d = self.tenant_defaults;
        for (flag, value) in [
            (
                "--tenant-max-running-executions",
                d.max_running_executions.unwrap_or(1),
            ),
            ("--tenant-max-queued-executions", d.max_queued_executions),
            ("--tenant-max-running-builds", d.max_running_builds),
        ] {
            if !(1..=MAX_LIMIT).contains(&value) {
                return Err(ConfigError(format!(
                    "{flag} {value} is outside 1..={MAX_LIMIT}"
                )));
            }
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.node_ttl {
            return Err(ConfigError(format!(
                "the heartbeat interval ({:?}) must be above zero and below the node TTL ({:?})",
                self.heartbeat_interval, self.node_ttl
            )));
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError(
                "max message size must be at least 1024 bytes".into(),
            ));
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
            {
                return Err(ConfigError(
                    "database URL must start with postgres://, postgresql:// or sqlite:".into(),
                ));
            }
        }
        Ok(self)
    }
}

impl ControlPlaneArgs {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let tls = self.tls.files(&self.data_dir, "control-plane");
        let defaults = Config::for_data_dir(self.data_dir);
        let mut runtime_images = defaults.runtime_images.clone();
        for pair in &self.runtime_images {
            let (runtime, image) = pair
                .split_once('=')
                .filter(|(r, i)| !r.is_empty() && !i.is_empty())
                .ok_or_else(|| {
                    ConfigError(format!("--runtime-image {pair:?} is not runtime=image"))
                })?;
            if !runtime_images.contains_key(runtime) {
                return Err(ConfigError(format!(
                    "--runtime-image: unknown runtime {runtime:?} (python, node, go)"
                )));
            }
            runtime_images.insert(runtime.to_owned(), image.to_owned());
        }
        Config {
            runtime_images,
            build_timeout: self.build_timeout,
            max_archive_bytes: self.max_archive_bytes,
            max_unpacked_bytes: self.max_unpacked_bytes,
            tenant_defaults: self.tenants.defaults(),
            tls,
            database_url: self.database_url,
            node_ttl: self.node_ttl,
            heartbeat_interval: self.heartbeat_interval,
            max_message_bytes: self.max_message_bytes,
            ..defaults
        }
        .validate()
    }
}

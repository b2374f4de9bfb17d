//! The agent's configuration: clap flags with `BERTH_…` env fallbacks,
//! validated once into [`Config`].

use crate::docker::firewall::{FirewallPolicy, HostPort, Network};
use berth_pki::{TlsArgs, TlsFiles};
use clap::Args;
use std::{collections::HashMap, path::PathBuf, time::Duration};

/// Flags of `berth-node-agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Control plane gRPC endpoint.
    #[arg(
        long,
        env = "BERTH_CONTROL_PLANE",
        default_value = "https://127.0.0.1:7443"
    )]
    pub control_plane: String,
    /// Data directory; `certs/` in it holds the defaults for the TLS flags.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = ".berth")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Address at which this node's published ports are reachable.
    #[arg(long, env = "BERTH_ADVERTISE_ADDRESS", default_value = "127.0.0.1")]
    pub advertise_address: String,
    /// Node labels, `key=value`, repeatable or comma-separated.
    #[arg(long = "label", env = "BERTH_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Longest wait between reconnection attempts (jittered exponential backoff).
    #[arg(long, env = "BERTH_RECONNECT_MAX", default_value = "10s", value_parser = humantime::parse_duration)]
    pub reconnect_max: Duration,
    /// The sandbox helper binary [default: `berth-sandbox` next to this program].
    #[arg(long, env = "BERTH_SANDBOX_HELPER")]
    pub sandbox_helper: Option<PathBuf>,
    #[command(flatten)]
    pub firewall: FirewallArgs,
    #[command(flatten)]
    pub builds: BuildArgs,
}

/// What one image build step may use; shared by `berth-node-agent` and
/// `berth up`. Builds also have a time limit (the control plane's
/// `--build-timeout`) and their own network (`docker::network`).
#[derive(Debug, Clone, Copy, Args)]
pub struct BuildArgs {
    /// Memory of a build step, in MiB, swap included (at most 2047: what
    /// Docker's build API takes).
    #[arg(long, env = "BERTH_BUILD_MEMORY_MIB", default_value_t = 1536)]
    pub build_memory_mib: u32,
    /// CPUs of a build step.
    #[arg(long, env = "BERTH_BUILD_CPUS", default_value_t = 1.0)]
    pub build_cpus: f64,
}

impl Default for BuildArgs {
    fn default() -> Self {
        Self {
            build_memory_mib: 1536,
            build_cpus: 1.0,
        }
    }
}

/// What app and build containers may reach of the host and beyond (see
/// `docker::firewall`); shared by `berth-node-agent` and `berth up`.
#[derive(Debug, Clone, Args)]
pub struct FirewallArgs {
    /// Host ports containers may connect to, `tcp/PORT` or `udp/PORT`; every other port of the host is refused to them.
    #[arg(
        long = "container-host-allow",
        env = "BERTH_CONTAINER_HOST_ALLOW",
        value_delimiter = ','
    )]
    pub host_allow: Vec<HostPort>,
    /// Let containers reach link-local addresses (169.254.0.0/16, fe80::/10), such as a cloud's metadata service.
    #[arg(long, env = "BERTH_CONTAINER_ALLOW_LINK_LOCAL")]
    pub container_allow_link_local: bool,
    /// Networks no container may reach, `ADDRESS[/PREFIX]` (the cluster's other nodes, the control plane).
    #[arg(
        long = "container-deny",
        env = "BERTH_CONTAINER_DENY",
        value_delimiter = ','
    )]
    pub deny: Vec<Network>,
    /// The iptables command that writes the rules (`iptables-legacy` where Docker uses the legacy tables); ip6tables is named after it.
    #[arg(long, env = "BERTH_IPTABLES", default_value = "iptables")]
    pub iptables: String,
}

impl Default for FirewallArgs {
    fn default() -> Self {
        Self {
            host_allow: Vec::new(),
            container_allow_link_local: false,
            deny: Vec::new(),
            iptables: "iptables".into(),
        }
    }
}

impl FirewallArgs {
    pub fn policy(&self) -> FirewallPolicy {
        FirewallPolicy {
            host_allow: self.host_allow.clone(),
            allow_link_local: self.container_allow_link_local,
            deny: self.deny.clone(),
            resolvers: crate::docker::firewall::host_resolvers(),
        }
    }
}

/// Validated configuration of the agent.
#[derive(Debug, Clone)]
pub struct Config {
    pub control_plane: String,
    /// Where the agent keeps its files (unpacked app code).
    pub work_dir: PathBuf,
    pub tls: TlsFiles,
    pub advertise_address: String,
    pub labels: HashMap<String, String>,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// The sandbox helper and the arguments before its spec file; no
    /// executions on this node when unset.
    pub sandbox_helper: Option<(PathBuf, Vec<String>)>,
    /// What containers may reach, and the iptables command.
    pub firewall: FirewallArgs,
    /// What one build step may use.
    pub builds: BuildArgs,
}

/// `berth-sandbox` next to the running program, when it is there.
pub fn default_sandbox_helper() -> Option<(PathBuf, Vec<String>)> {
    let exe = std::env::current_exe().ok()?;
    let helper = exe.parent()?.join("berth-sandbox");
    helper.is_file().then_some((helper, Vec::new()))
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    pub fn new(control_plane: impl Into<String>, tls: TlsFiles) -> Self {
        Self {
            control_plane: control_plane.into(),
            work_dir: PathBuf::from(".berth/agent"),
            tls,
            advertise_address: "127.0.0.1".into(),
            labels: HashMap::new(),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            sandbox_helper: default_sandbox_helper(),
            firewall: FirewallArgs::default(),
            builds: BuildArgs::default(),
        }
    }

    pub fn validate(self) -> Result<Self, ConfigError> {
        if !self.control_plane.starts_with("https://") {
            return Err(ConfigError(format!(
                "control plane endpoint {:?} must be https:// (plaintext gRPC is refused)",
                self.control_plane
            )));
        }
        if self.advertise_address.trim().is_empty() {
            return Err(ConfigError("advertise address must not be empty".into()));
        }
        berth_proto::domain::validate_labels("label", &self.labels)
            .map_err(|e| ConfigError(e.to_string()))?;
        if !(64..=2047).contains(&self.builds.build_memory_mib) {
            return Err(ConfigError(format!(
                "--build-memory-mib {} is outside 64..=2047",
                self.builds.build_memory_mib
            )));
        }
        if !(self.builds.build_cpus >= 0.1 && self.builds.build_cpus <= 256.0) {
            return Err(ConfigError(format!(
                "--build-cpus {} is outside 0.1..=256",
                self.builds.build_cpus
            )));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return Err(ConfigError(
                "reconnect backoff must be above zero and min ≤ max".into(),
            ));
        }
        Ok(self)
    }
}

/// Parses `key=value` labels.
pub fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>, ConfigError> {
    labels
        .iter()
        .filter(|l| !l.is_empty())
        .map(|label| {
            label
                .split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| ConfigError(format!("label {label:?} is not key=value")))
        })
        .collect()
}

impl AgentArgs {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let tls = self.tls.files(&self.data_dir, "agent");
        Config {
            work_dir: self.data_dir.join("agent"),
            advertise_address: self.advertise_address,
            labels: parse_labels(&self.labels)?,
            reconnect_max: self.reconnect_max,
            sandbox_helper: self
                .sandbox_helper
                .map(|p| (p, Vec::new()))
                .or_else(default_sandbox_helper),
            firewall: self.firewall,
            builds: self.builds,
            ..Config::new(self.control_plane, tls)
        }
        .validate()
    }
}

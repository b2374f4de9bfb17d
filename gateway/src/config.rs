//! The gateway's configuration: clap flags with `BERTH_…` env fallbacks,
//! validated once into [`Config`].

use berth_pki::{TlsArgs, TlsFiles};
use clap::Args;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Flags of `berth-gateway`.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Address users' HTTP traffic arrives on.
    #[arg(long, env = "BERTH_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub gateway_addr: SocketAddr,
    /// Address of the gateway's Prometheus `/metrics` (plain HTTP; never the users' address).
    #[arg(
        long,
        env = "BERTH_GATEWAY_METRICS_ADDR",
        default_value = "127.0.0.1:9465"
    )]
    pub gateway_metrics_addr: SocketAddr,
    /// Control plane gRPC endpoint (routes and keys come from it).
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
    /// Route by this JSON file instead of the control plane (see the README).
    #[arg(long, env = "BERTH_GATEWAY_STATIC_ROUTES")]
    pub static_routes: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Limits and timeouts of the gateway, shared by `berth-gateway` and `berth up`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Serve users over TLS with this certificate chain (PEM); plaintext HTTP/1.1 and h2c when unset.
    #[arg(long, env = "BERTH_GATEWAY_TLS_CERT", requires = "https_key")]
    pub https_cert: Option<PathBuf>,
    /// Private key of --https-cert (PEM).
    #[arg(long, env = "BERTH_GATEWAY_TLS_KEY", requires = "https_cert")]
    pub https_key: Option<PathBuf>,
    /// Most client connections open at once; more wait to be accepted.
    #[arg(long, env = "BERTH_GATEWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Largest request head (request line and headers) accepted; 431 beyond.
    #[arg(long, env = "BERTH_GATEWAY_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// A client must send a whole request head within this long (slowloris).
    #[arg(long, env = "BERTH_GATEWAY_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// An idle HTTP/2 connection is pinged and closed if the ping is not answered within this long.
    #[arg(long, env = "BERTH_GATEWAY_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Longest a request waits for a scale-to-zero app to start; 503 beyond.
    #[arg(long, env = "BERTH_GATEWAY_WAKE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub wake_timeout: Duration,
    /// How long an instance that refused a connection gets no traffic.
    #[arg(long, env = "BERTH_GATEWAY_EJECT_FOR", default_value = "10s", value_parser = humantime::parse_duration)]
    pub eject_for: Duration,
    /// Failures in a row that open an instance's circuit breaker.
    #[arg(long, env = "BERTH_GATEWAY_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// Threads serving traffic, each with its own event loop; 0 = one per core.
    #[arg(
        long = "gateway-threads",
        env = "BERTH_GATEWAY_THREADS",
        default_value_t = 0
    )]
    pub threads: usize,
    /// Let anyone run code through `/execute` and `/v1/executions`, without an API key.
    #[arg(long, env = "BERTH_GATEWAY_OPEN_EXECUTIONS")]
    pub open_executions: bool,
    /// Requests per second all callers without a key share, with --open-executions.
    #[arg(
        long,
        env = "BERTH_GATEWAY_OPEN_EXECUTIONS_RATE",
        default_value_t = 10.0
    )]
    pub open_executions_rate: f64,
    /// Burst of --open-executions-rate.
    #[arg(
        long,
        env = "BERTH_GATEWAY_OPEN_EXECUTIONS_BURST",
        default_value_t = 20
    )]
    pub open_executions_burst: u32,
}

impl Default for LimitArgs {
    fn default() -> Self {
        Self {
            https_cert: None,
            https_key: None,
            max_connections: 10_000,
            max_header_bytes: 32 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            wake_timeout: Duration::from_secs(60),
            eject_for: Duration::from_secs(10),
            breaker_failures: 5,
            threads: 0,
            open_executions: false,
            open_executions_rate: 10.0,
            open_executions_burst: 20,
        }
    }
}

/// Validated configuration of the gateway.
#[derive(Debug, Clone)]
pub struct Config {
    pub control_plane: String,
    /// mTLS files for the link to the control plane (a gateway certificate).
    pub tls: TlsFiles,
    pub https: Option<(PathBuf, PathBuf)>,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub wake_timeout: Duration,
    pub eject_for: Duration,
    pub breaker_failures: u32,
    /// Serving threads; 0 = one per core.
    pub threads: usize,
    pub open_executions: bool,
    pub open_executions_rate: f64,
    pub open_executions_burst: u32,
    /// How often apps that served traffic are reported (scale to zero).
    pub traffic_report_every: Duration,
    /// Longest wait between reconnections to the control plane.
    pub reconnect_max: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid gateway configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    pub fn new(control_plane: impl Into<String>, tls: TlsFiles, limits: LimitArgs) -> Self {
        Self {
            control_plane: control_plane.into(),
            tls,
            https: limits.https_cert.zip(limits.https_key),
            max_connections: limits.max_connections,
            max_header_bytes: limits.max_header_bytes,
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            wake_timeout: limits.wake_timeout,
            eject_for: limits.eject_for,
            breaker_failures: limits.breaker_failures,
            threads: limits.threads,
            open_executions: limits.open_executions,
            open_executions_rate: limits.open_executions_rate,
            open_executions_burst: limits.open_executions_burst,
            traffic_report_every: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(5),
        }
    }

    pub fn validate(self) -> Result<Self, ConfigError> {
        if !self.control_plane.starts_with("https://") {
            return Err(ConfigError(format!(
                "control plane endpoint {:?} must be https:// (plaintext gRPC is refused)",
                self.control_plane
            )));
        }
        if self.max_connections == 0 {
            return Err(ConfigError("max connections must be at least 1".into()));
        }
        if !(1024..=1 << 20).contains(&self.max_header_bytes) {
            return Err(ConfigError(
                "max header bytes must be between 1 KiB and 1 MiB".into(),
            ));
        }
        for (name, value) in [
            ("header read timeout", self.header_read_timeout),
            ("idle timeout", self.idle_timeout),
            ("wake timeout", self.wake_timeout),
            ("eject duration", self.eject_for),
        ] {
            if value.is_zero() {
                return Err(ConfigError(format!("{name} must be above zero")));
            }
        }
        if !(self.open_executions_rate.is_finite() && self.open_executions_rate > 0.0)
            || self.open_executions_burst == 0
        {
            return Err(ConfigError(
                "the open executions' rate and burst must be above zero".into(),
            ));
        }
        if self.breaker_failures == 0 {
            return Err(ConfigError("breaker failures must be at least 1".into()));
        }
        Ok(self)
    }
}

impl GatewayArgs {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let tls = self.tls.files(&self.data_dir, "gateway");
        Config::new(self.control_plane, tls, self.limits).validate()
    }
}

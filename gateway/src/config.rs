//! The gateway's configuration: clap flags with `BERTH_…` env fallbacks.

use clap::Args;
use std::net::SocketAddr;

/// Flags of `berth-gateway`.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Address users' HTTP traffic arrives on.
    #[arg(long, env = "BERTH_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub gateway_addr: SocketAddr,
}

/// Validated configuration of the gateway.
#[derive(Debug, Clone, Default)]
pub struct Config {}

impl GatewayArgs {
    pub fn into_config(self) -> Config {
        Config {}
    }
}

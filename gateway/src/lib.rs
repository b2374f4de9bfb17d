//! Berth's HTTP gateway. For now it serves its health (`/healthz`) and
//! Prometheus metrics (`/metrics`); routing users' traffic to their apps,
//! API keys and rate limits come with the gateway issue.
//!
//! - [`config`]: flags and the validated [`Config`].

pub mod config;

pub use config::{Config, GatewayArgs};

use berth_common::metrics_http;
use prometheus_client::{metrics::gauge::Gauge, registry::Registry};
use std::sync::Arc;
use tokio::{net::TcpListener, sync::RwLock};
use tokio_util::sync::CancellationToken;

/// Serves the gateway on `listener` until `shutdown` is cancelled.
pub async fn run(_config: Config, listener: TcpListener, shutdown: CancellationToken) {
    let mut registry = Registry::default();
    let up = Gauge::<i64>::default();
    up.set(1);
    registry.register("berth_gateway_up", "Whether the gateway is serving", up);
    let registry = Arc::new(RwLock::new(registry));
    tracing::info!(addr = ?listener.local_addr().ok(), "gateway serving");
    metrics_http::serve(listener, registry, shutdown).await;
    tracing::info!("gateway stopped");
}

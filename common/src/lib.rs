//! Pieces every Berth service shares.
//!
//! - [`telemetry`]: `tracing` set-up honouring `RUST_LOG`.
//! - [`shutdown`]: Ctrl-C / SIGTERM turned into a cancellation token.
//! - [`metrics_http`]: a small HTTP server for Prometheus `/metrics`.

pub mod metrics_http;
pub mod shutdown;
pub mod telemetry;

//! Berth's control plane: the `berth.v1` gRPC API over mTLS, the node
//! registry, and (in later issues) the scheduler and reconciler.
//!
//! - [`config`]: flags and the validated [`Config`].
//! - [`server`]: [`run`] wires the database, background loops and gRPC server.
//! - [`builds`]: build contexts (generated or from checked archives), their storage and live output.
//! - [`auth`]: identity from client certificates and per-method role checks (a tower layer).
//! - [`scope`]: whose things a management call may see — the cluster or one tenant.
//! - [`quotas`]: each tenant's fair share — executions running and waiting, builds.
//! - [`limits`]: oversized requests reported as `InvalidArgument`.
//! - [`metrics`]: Prometheus metrics and the per-RPC counting layer.
//! - [`api`]: one file per gRPC service.
//! - [`requests`]: questions to agents (logs, stats, cleanup) and their replies.
//! - [`scheduler`]: instances onto nodes, builds onto builders, desired sets to agents.
//! - [`sessions`]: the live agent streams.
//! - [`store`]: persistence through sea-orm, with the event log.
//! - [`db`]: connection, migrations and entities.

pub mod api;
pub mod auth;
pub mod builds;
pub mod config;
pub mod db;
pub mod error;
pub mod executions;
pub mod limits;
pub mod metrics;
pub mod quotas;
pub mod requests;
pub mod scheduler;
pub mod scope;
pub mod server;
pub mod sessions;
pub mod store;

pub use config::{Config, ControlPlaneArgs};
pub use server::{run, ServeError};

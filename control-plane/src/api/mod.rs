//! gRPC service implementations, one file per service.

pub mod agent;
pub mod apps;
pub mod builds;
pub mod events;
pub mod keys;
pub mod nodes;
pub mod routes;
pub mod tenants;
pub mod upload;

//! gRPC service implementations, one file per service.

pub mod agent;
pub mod apps;
pub mod events;
pub mod nodes;
pub mod upload;

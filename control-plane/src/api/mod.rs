//! gRPC service implementations, one file per service.

pub mod agent;
pub mod events;
pub mod nodes;

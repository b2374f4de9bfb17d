//! The `berth.v1` wire contract and the domain types it maps to.
//!
//! - [`pb`]: prost messages and tonic clients/servers generated at build time
//!   from `berth/v1/*.proto` (protox, so no `protoc` is needed).
//! - [`domain`]: validated identifiers (`NodeName`, …) and typed states
//!   (`NodeState`, `InstanceState`, …), each mapped once to its proto enum and
//!   once to the string stored in the database.
//! - [`error`]: the one error code type, mapped to both gRPC and HTTP.

pub mod domain;
pub mod error;
pub mod views;

/// Generated `berth.v1` code.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("berth.v1");
}

/// Encoded `FileDescriptorSet` of `berth.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/berth_v1_descriptor.bin"));

pub use error::{ErrorCode, FieldError};

//! Builds: what the control plane makes of an upload before any node sees
//! it. Runtime apps get a generated Dockerfile and launcher; Dockerfile
//! apps are their checked archive. Either way the result is one
//! deterministic tar and the digest that names its image.
//!
//! - [`context`]: the tar and its digest (a user's Dockerfile checked with
//!   `berth_proto::domain::dockerfile`); [`runtimes`]: the generated files;
//!   [`storage`]: contexts on disk; [`logs`]: build output as it arrives.

pub mod context;
pub mod logs;
pub mod runtimes;
pub mod storage;

pub use context::{BuildContext, ContextError};
pub use logs::BuildLogs;
pub use storage::ContextStore;

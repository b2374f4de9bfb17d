//! Builds: what the control plane makes of an upload before any node sees
//! it. Runtime apps get a generated Dockerfile and launcher; Dockerfile
//! apps are their checked archive. Either way the result is one
//! deterministic tar and the digest that names its image.

pub mod context;
pub mod logs;
pub mod runtimes;
pub mod storage;

pub use context::{BuildContext, ContextError};
pub use logs::BuildLogs;
pub use storage::ContextStore;

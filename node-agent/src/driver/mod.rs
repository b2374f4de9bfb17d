//! What the agent runs: the desired set from the control plane converged
//! onto local Docker, builds asked for by the control plane, and the
//! reports that go back. Independent of the session: containers keep
//! running while the agent reconnects.
//!
//! - [`reconcile`]: desired instances → containers, and their states.
//! - [`builds`]: build requests, and the images and code instances need.
//! - [`answers`]: logs, stats and cleanup for the control plane.
//! - [`code`]: unpacking an app's code from its build context.

pub mod answers;
pub mod builds;
pub mod code;
pub mod executions;
pub mod reconcile;

use berth_proto::pb;
use std::path::PathBuf;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

/// Messages for the control plane, sent whenever a session is up.
pub type Outbox = mpsc::Sender<pb::AgentMessage>;

/// Handles shared by the session and the driver.
#[derive(Clone)]
pub struct Links {
    /// The latest desired set; `None` until the control plane sent one, and
    /// nothing is removed before that.
    pub desired: watch::Sender<Option<pb::DesiredState>>,
    /// The latest report of actual state.
    pub report: watch::Sender<pb::StateReport>,
    /// A channel to the control plane while a session is up.
    pub channel: watch::Sender<Option<Channel>>,
    pub outbox: Outbox,
}

/// Where the driver keeps its files.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub node: String,
    pub publish_ip: String,
    /// Unpacked code of builds, one folder each.
    pub code_dir: PathBuf,
    /// The host's container firewall, checked on every pass and before builds.
    pub firewall: std::sync::Arc<crate::docker::firewall::Firewall>,
    /// What one build step may use.
    pub builds: crate::config::BuildArgs,
}

//! Domain types shared by every Berth part: validated names and typed states.

#[macro_use]
mod macros;
mod apps;
pub mod diagnostics;
pub mod dockerfile;
mod keys;
mod names;
mod states;

pub use apps::{
    check_source_files, check_source_path, AppSpec, Language, Runtime,
    DEFAULT_EXECUTION_MEMORY_BYTES, MAX_INSTANCES,
};
pub use keys::KeyRole;
pub use names::{
    check_dns_label_value, validate_labels, NodeName, MAX_LABELS, MAX_LABEL_VALUE_LEN,
};
pub use states::{
    AppState, BuildState, DesiredInstanceState, ExecutionState, InstanceState, NodeState,
    UnknownState,
};

use crate::FieldError;

/// Reads a proto enum field, refusing numbers the contract does not define.
pub fn proto_enum<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E, FieldError> {
    E::try_from(value).map_err(|_| FieldError::new(field, format!("unknown enum value {value}")))
}

/// The tenant of callers without a key, where the gateway lets them run
/// code (`--open-executions`); reserved: no key, certificate or app
/// belongs to it.
pub const ANONYMOUS_TENANT: &str = "anonymous";

/// Every API key starts with this, so that leaked keys are easy to scan for.
pub const API_KEY_PREFIX: &str = "berth_";
/// Characters of an API key kept in the clear to tell keys apart (`berth_` + 8).
pub const API_KEY_SHOWN_LEN: usize = API_KEY_PREFIX.len() + 8;

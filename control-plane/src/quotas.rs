//! Fair shares: how much of the cluster one tenant may take at once —
//! executions running and waiting, image builds — from the tenant's own
//! limits where an admin set them, else the cluster's defaults (flags).

use berth_proto::pb;

/// Highest value a limit may be set to.
pub const MAX_LIMIT: u32 = 10_000;

/// A tenant's own limits; `None` follows the cluster's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_running_executions: Option<u32>,
    pub max_queued_executions: Option<u32>,
    pub max_running_builds: Option<u32>,
}

impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<u32>| v.map_or("default".to_owned(), |n| n.to_string());
        write!(
            f,
            "running executions {}, waiting executions {}, running builds {}",
            show(self.max_running_executions),
            show(self.max_queued_executions),
            show(self.max_running_builds)
        )
    }
}

impl Limits {
    pub fn to_proto(self) -> pb::TenantLimits {
        pb::TenantLimits {
            max_running_executions: self.max_running_executions,
            max_queued_executions: self.max_queued_executions,
            max_running_builds: self.max_running_builds,
        }
    }
}

/// The cluster's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// `None`: half of the cluster's execution slots, at least one — so
    /// that one tenant never holds every slot.
    pub max_running_executions: Option<u32>,
    pub max_queued_executions: u32,
    pub max_running_builds: u32,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            max_running_executions: None,
            max_queued_executions: 64,
            max_running_builds: 2,
        }
    }
}

impl Defaults {
    /// Executions `own`'s tenant may run at once, on a cluster of `slots`.
    pub fn running_executions(&self, own: &Limits, slots: usize) -> usize {
        own.max_running_executions
            .or(self.max_running_executions)
            .map_or((slots / 2).max(1), |n| n as usize)
    }

    pub fn queued_executions(&self, own: &Limits) -> usize {
        own.max_queued_executions
            .unwrap_or(self.max_queued_executions) as usize
    }

    pub fn running_builds(&self, own: &Limits) -> usize {
        own.max_running_builds.unwrap_or(self.max_running_builds) as usize
    }

    /// What holds for `own`'s tenant on a cluster of `slots`.
    pub fn effective(&self, own: &Limits, slots: usize) -> Limits {
        Limits {
            max_running_executions: Some(self.running_executions(own, slots) as u32),
            max_queued_executions: Some(self.queued_executions(own) as u32),
            max_running_builds: Some(self.running_builds(own) as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_half_the_slots_unless_told_otherwise() {
        let defaults = Defaults::default();
        let none = Limits::default();
        assert_eq!(defaults.running_executions(&none, 2), 1);
        assert_eq!(defaults.running_executions(&none, 1), 1);
        assert_eq!(defaults.running_executions(&none, 16), 8);
        let own = Limits {
            max_running_executions: Some(5),
            ..Limits::default()
        };
        assert_eq!(defaults.running_executions(&own, 2), 5);
        assert_eq!(defaults.queued_executions(&none), 64);
        assert_eq!(defaults.running_builds(&none), 2);
    }
}

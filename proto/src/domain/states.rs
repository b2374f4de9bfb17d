//! Typed lifecycle states. Each is mapped here, once, to its proto enum and to
//! the lowercase string the database stores; nothing else compares strings.

/// A stored state string that is not one of the enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state {value:?}")]
pub struct UnknownState {
    pub kind: &'static str,
    pub value: String,
}

wire_enum!(
    /// `ready | draining | down`.
    NodeState, "node", NodeState { Ready => "ready", Draining => "draining", Down => "down" }
);

impl NodeState {
    /// The state of a node that is heartbeating, given whether an admin drained it.
    pub fn alive(drained: bool) -> Self {
        if drained {
            NodeState::Draining
        } else {
            NodeState::Ready
        }
    }

    /// Whether new work may be placed on the node.
    pub fn accepts_work(self) -> bool {
        self == NodeState::Ready
    }
}

wire_enum!(
    /// `building → ready | build_failed`.
    BuildState, "build", BuildState { Building => "building", Ready => "ready", BuildFailed => "build_failed" }
);

impl BuildState {
    pub fn is_final(self) -> bool {
        self != BuildState::Building
    }
}

wire_enum!(
    /// `pending → starting → running → (exited | failed | lost)`, plus `stopped`.
    InstanceState, "instance", InstanceState {
        Pending => "pending",
        Starting => "starting",
        Running => "running",
        Exited => "exited",
        Failed => "failed",
        Lost => "lost",
        Stopped => "stopped",
    }
);

impl InstanceState {
    /// Whether the instance is (or is about to be) holding resources on its node.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            InstanceState::Pending | InstanceState::Starting | InstanceState::Running
        )
    }

    /// Whether an agent report may move an instance from `self` to `next`.
    /// A `lost` instance is only revived by a report that it runs again.
    pub fn can_become(self, next: InstanceState) -> bool {
        use InstanceState::*;
        match (self, next) {
            (a, b) if a == b => true,
            (Pending, _) => true,
            (Starting, Running | Exited | Failed | Stopped | Lost) => true,
            (Running, Exited | Failed | Stopped | Lost | Starting) => true,
            (Exited | Failed | Lost | Stopped, Starting | Running) => true,
            (Exited | Failed | Lost, Stopped) => true,
            _ => false,
        }
    }

    pub fn can_stop(self) -> bool {
        self != InstanceState::Stopped
    }
}

wire_enum!(
    /// What the control plane wants of an instance.
    DesiredInstanceState, "desired instance", DesiredInstanceState { Running => "running", Stopped => "stopped" }
);

wire_enum!(
    /// `queued → running → succeeded | failed | timeout | memory_exceeded | cancelled | rejected`.
    ExecutionState, "execution", ExecutionState {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Timeout => "timeout",
        MemoryExceeded => "memory_exceeded",
        Cancelled => "cancelled",
        Rejected => "rejected",
    }
);

impl ExecutionState {
    pub fn is_final(self) -> bool {
        !matches!(self, ExecutionState::Queued | ExecutionState::Running)
    }

    pub fn can_cancel(self) -> bool {
        !self.is_final()
    }
}

wire_enum!(
    /// Whole-app state, derived from its builds and instances.
    AppState, "app", AppState {
        Building => "building",
        BuildFailed => "build_failed",
        Deploying => "deploying",
        Running => "running",
        Stopped => "stopped",
        Failed => "failed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fmt, str::FromStr};

    #[test]
    fn every_state_round_trips_through_its_string_and_proto() {
        fn check<S>(all: &[S])
        where
            S: Copy + PartialEq + fmt::Debug + FromStr + Into<i32> + TryFrom<i32> + fmt::Display,
            <S as FromStr>::Err: fmt::Debug,
            <S as TryFrom<i32>>::Error: fmt::Debug,
        {
            for &state in all {
                assert_eq!(state.to_string().parse::<S>().unwrap(), state);
                let n: i32 = state.into();
                assert_ne!(n, 0, "{state:?} maps to unspecified");
                assert_eq!(S::try_from(n).unwrap(), state);
            }
            assert!(S::try_from(0).is_err());
            assert!(S::try_from(999).is_err());
            assert!("nonsense".parse::<S>().is_err());
        }
        check(NodeState::ALL);
        check(BuildState::ALL);
        check(InstanceState::ALL);
        check(DesiredInstanceState::ALL);
        check(ExecutionState::ALL);
        check(AppState::ALL);
    }

    #[test]
    fn stopped_instances_do_not_jump_to_exited() {
        assert!(InstanceState::Pending.can_become(InstanceState::Running));
        assert!(InstanceState::Running.can_become(InstanceState::Lost));
        assert!(InstanceState::Lost.can_become(InstanceState::Running));
        assert!(!InstanceState::Stopped.can_become(InstanceState::Exited));
        assert!(!InstanceState::Stopped.can_stop());
    }

    #[test]
    fn drained_nodes_take_no_work() {
        assert_eq!(NodeState::alive(true), NodeState::Draining);
        assert!(NodeState::alive(false).accepts_work());
        assert!(!NodeState::Down.accepts_work());
    }
}

//! The kernel's bridge netfilter hooks, without which traffic within a
//! bridge passes no iptables rule.

use super::FirewallError;

/// The kernel switches that send traffic within a bridge (one container to
/// another on the same bridge) through iptables; without them no rule here
/// (nor Docker's own) sees it.
const BRIDGE_HOOKS: [&str; 2] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];

/// Turns the bridge hooks on (as Docker does); whether one was off.
pub(super) fn bridge_hooks_on() -> Result<bool, FirewallError> {
    let mut was_off = false;
    for path in BRIDGE_HOOKS {
        let failed = |reason: String| FirewallError::BridgeHooks {
            path: path.to_owned(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(value) if value.trim() == "1" => {}
            Ok(_) => {
                tracing::warn!(%path, "bridge netfilter hook was off; turning it on");
                std::fs::write(path, "1").map_err(|e| failed(e.to_string()))?;
                was_off = true;
            }
            Err(e) => return Err(failed(format!("{e} (is the br_netfilter module loaded?)"))),
        }
    }
    Ok(was_off)
}

//! The host firewall that keeps app and build containers to themselves.
//!
//! A container reaches nothing of the host's and nothing of another
//! container's except through the gateway: not another container on its
//! bridge, not a published port at any of the node's addresses (docker's
//! userland proxy answers those on the host's own `INPUT`), not the host's
//! services (control plane, agent, gateway, SSH, the Docker API), and not
//! link-local metadata addresses — unless the operator allows a host port or
//! link-local traffic ([`FirewallPolicy`]). Two chains of the `filter`
//! table, for IPv4 and IPv6 alike, hold the rules:
//!
//! - `BERTH-INPUT`, first in `INPUT`: from a container bridge, only
//!   answers to connections the host opened, the allowed host ports (and
//!   ICMPv6, which neighbour discovery needs); the rest is rejected.
//! - `BERTH-FORWARD`, first in `DOCKER-USER` (in `FORWARD` where Docker
//!   made no such chain): nothing from one container bridge to another (or
//!   the same), to link-local addresses, or to the denied networks.
//!
//! Rules are matched on the bridge a packet came in on, which a container
//! cannot forge (it can forge a source address where it has `NET_RAW`).
//! [`Firewall::ensure`] writes both chains whole with `iptables-restore
//! --noflush` (atomic per table), puts the jumps first, and remembers the
//! rules as the kernel lists them; each later call reads them back once per
//! family (`iptables-save`) and writes them again on any difference — a
//! flushed firewall or a rebooted host gets them back on the next pass.
//!
//! `policy` holds what an operator lets containers reach; `hooks` turns on
//! the kernel's bridge hooks, without which no rule sees traffic within a
//! bridge.

mod hooks;
mod policy;

pub use policy::{host_resolvers, resolvers_of, FirewallPolicy, HostPort, Network};

use hooks::bridge_hooks_on;
use policy::is_link_local;
use std::{fmt, process::Stdio, sync::Mutex, time::Duration};
use tokio::io::AsyncWriteExt;

const INPUT_CHAIN: &str = "BERTH-INPUT";
const FORWARD_CHAIN: &str = "BERTH-FORWARD";
/// The longest one `iptables` command may take (it waits up to 5 s for the
/// table's lock itself).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} did not finish within {COMMAND_TIMEOUT:?}")]
    Timeout { command: String },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("the {family} rules read back differ from those written: {detail}")]
    NotApplied { family: Family, detail: String },
    #[error("traffic within a bridge bypasses the rules: {path}: {reason}")]
    BridgeHooks { path: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// What one [`Firewall::ensure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The rules were in place.
    Held,
    /// They were missing or changed and are written again.
    Restored,
}

#[derive(Debug)]
struct Learned {
    written: Vec<String>,
    listed: Vec<String>,
}

/// The firewall of this host's container bridges.
#[derive(Debug)]
pub struct Firewall {
    policy: FirewallPolicy,
    /// `iptables` (or `iptables-legacy`, …): the IPv6, save and restore
    /// commands are named after it.
    command: String,
    /// The rules last written and as the kernel then listed them, per
    /// family; one writer at a time.
    learned: tokio::sync::Mutex<[Option<Learned>; 2]>,
    /// Why the rules are not in place; `None` while they are.
    problem: Mutex<Option<String>>,
}

impl Firewall {
    pub fn new(policy: FirewallPolicy, command: impl Into<String>) -> Self {
        Self {
            policy,
            command: command.into(),
            learned: tokio::sync::Mutex::default(),
            problem: Mutex::new(Some("not checked yet".into())),
        }
    }

    /// Says there is no Docker engine, so no container to keep in.
    pub fn no_containers(&self) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) =
            Some("no Docker engine on this node: no containers to confine".into());
    }

    /// Why the rules are not in place, or `None` while they are.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks the rules for the container `bridges` (interface names) and
    /// writes them again when they are not as last written.
    pub async fn ensure(&self, bridges: &[String]) -> Result<Checked, FirewallError> {
        let result = self.ensure_families(bridges).await;
        let problem = result.as_ref().err().map(ToString::to_string);
        let mut slot = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        match (&*slot, &problem) {
            (Some(_), None) => tracing::info!("container firewall in place"),
            (_, Some(why)) if slot.as_deref() != Some(why) => {
                tracing::error!(problem = %why, "container firewall missing: containers may reach the host and each other")
            }
            _ => {}
        }
        *slot = problem;
        result
    }

    async fn ensure_families(&self, bridges: &[String]) -> Result<Checked, FirewallError> {
        let mut learned = self.learned.lock().await;
        let mut checked = if bridge_hooks_on()? {
            Checked::Restored
        } else {
            Checked::Held
        };
        // A host without IPv6 has no IPv6 traffic to filter (and often no
        // ip6tables that works).
        let families = if std::path::Path::new("/proc/net/if_inet6").exists() {
            &[Family::V4, Family::V6][..]
        } else {
            &[Family::V4][..]
        };
        for (family, slot) in families.iter().copied().zip(learned.iter_mut()) {
            let saved = self.run(family, "save", &["-t", "filter"], None).await?;
            let ours = Ours::read(&saved);
            let rules = self.rules(family, bridges);
            let holds = slot
                .as_ref()
                .is_some_and(|l| l.written == rules && l.listed == ours.lines);
            if holds && ours.jumps_first() {
                continue;
            }
            if slot.as_ref().is_some_and(|l| l.written == rules) {
                tracing::warn!(%family, "container firewall rules changed or missing; writing them again");
            }
            checked = Checked::Restored;
            self.write(family, &rules, &ours).await?;
            let again = Ours::read(&self.run(family, "save", &["-t", "filter"], None).await?);
            let written = again.lines.iter().filter(|l| !is_jump(l)).count();
            if written != rules.len() || !again.jumps_first() {
                *slot = None;
                return Err(FirewallError::NotApplied {
                    family,
                    detail: format!(
                        "{written} of {} rules, jumps first: {}",
                        rules.len(),
                        again.jumps_first()
                    ),
                });
            }
            *slot = Some(Learned {
                written: rules,
                listed: again.lines,
            });
        }
        Ok(checked)
    }

    /// The rules of both chains for `family`, as `-A` lines.
    fn rules(&self, family: Family, bridges: &[String]) -> Vec<String> {
        let mut rules = Vec::new();
        let v6 = family == Family::V6;
        for bridge in bridges {
            if v6 {
                rules.push(format!(
                    "-A {INPUT_CHAIN} -i {bridge} -p ipv6-icmp -j RETURN"
                ));
            }
            rules.push(format!(
                "-A {INPUT_CHAIN} -i {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
            ));
            for allowed in &self.policy.host_allow {
                let protocol = if allowed.udp { "udp" } else { "tcp" };
                rules.push(format!(
                    "-A {INPUT_CHAIN} -i {bridge} -p {protocol} -m {protocol} --dport {} -j RETURN",
                    allowed.port
                ));
            }
            let reject = if v6 {
                "icmp6-adm-prohibited"
            } else {
                "icmp-admin-prohibited"
            };
            rules.push(format!(
                "-A {INPUT_CHAIN} -i {bridge} -j REJECT --reject-with {reject}"
            ));
        }
        // Answers to connections opened from outside (a gateway on another
        // node reaching a published port) go out through the bridge too.
        rules.push(format!(
            "-A {FORWARD_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
        ));
        for bridge in bridges {
            for other in bridges {
                rules.push(format!("-A {FORWARD_CHAIN} -i {bridge} -o {other} -j DROP"));
            }
            // The operator's denials first: nothing below opens them.
            for denied in self
                .policy
                .deny
                .iter()
                .filter(|n| n.address.is_ipv6() == v6)
            {
                rules.push(format!(
                    "-A {FORWARD_CHAIN} -i {bridge} -d {denied} -j DROP"
                ));
            }
            if !self.policy.allow_link_local {
                // A link-local resolver (a cloud's) answers names; the rest
                // of link-local (its metadata service) stays out of reach.
                for resolver in self
                    .policy
                    .resolvers
                    .iter()
                    .filter(|r| r.is_ipv6() == v6 && is_link_local(r))
                {
                    for protocol in ["udp", "tcp"] {
                        rules.push(format!(
                            "-A {FORWARD_CHAIN} -i {bridge} -d {resolver} -p {protocol} -m {protocol} --dport 53 -j RETURN"
                        ));
                    }
                }
                let link_local = if v6 { "fe80::/10" } else { "169.254.0.0/16" };
                rules.push(format!(
                    "-A {FORWARD_CHAIN} -i {bridge} -d {link_local} -j DROP"
                ));
            }
        }
        rules
    }

    /// Writes both chains whole (one transaction), then puts the jumps to
    /// them first in their parent chains.
    async fn write(
        &self,
        family: Family,
        rules: &[String],
        current: &Ours,
    ) -> Result<(), FirewallError> {
        let mut text = format!("*filter\n:{INPUT_CHAIN} - [0:0]\n:{FORWARD_CHAIN} - [0:0]\n");
        for rule in rules {
            text.push_str(rule);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        self.run(family, "restore", &["--noflush", "-w", "5"], Some(&text))
            .await?;
        for (parent, chain, first) in [
            ("INPUT", INPUT_CHAIN, current.input_first),
            (current.forward_parent, FORWARD_CHAIN, current.forward_first),
        ] {
            if first {
                continue;
            }
            // The jump first, then any other copy of it removed (by its
            // place, counted from the end so earlier places hold).
            self.run(
                family,
                "",
                &["-w", "5", "-I", parent, "1", "-j", chain],
                None,
            )
            .await?;
            let listed = self
                .run(family, "", &["-w", "5", "-S", parent], None)
                .await?;
            let places: Vec<usize> = listed
                .lines()
                .filter(|l| l.starts_with("-A "))
                .enumerate()
                .filter(|(_, l)| *l == format!("-A {parent} -j {chain}"))
                .map(|(i, _)| i + 1)
                .skip(1)
                .collect();
            for place in places.into_iter().rev() {
                let place = place.to_string();
                self.run(family, "", &["-w", "5", "-D", parent, &place], None)
                    .await?;
            }
        }
        Ok(())
    }

    /// Runs `iptables` (or `ip6tables`), its `-save` or its `-restore`
    /// (`tool`), with `input` on its standard input; its output.
    async fn run(
        &self,
        family: Family,
        tool: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, FirewallError> {
        let base = match family {
            Family::V4 => self.command.clone(),
            Family::V6 => self.command.replacen("iptables", "ip6tables", 1),
        };
        let program = if tool.is_empty() {
            base
        } else {
            format!("{base}-{tool}")
        };
        let command = format!("{program} {}", args.join(" "));
        let spawn = |source| FirewallError::Spawn {
            command: command.clone(),
            source,
        };
        let mut child = tokio::process::Command::new(&program)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn)?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).await.map_err(spawn)?;
        }
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| FirewallError::Timeout {
                command: command.clone(),
            })?
            .map_err(spawn)?;
        if !output.status.success() {
            return Err(FirewallError::Failed {
                command,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn is_jump(line: &str) -> bool {
    line.ends_with(&format!("-j {INPUT_CHAIN}")) || line.ends_with(&format!("-j {FORWARD_CHAIN}"))
}

/// Berth's part of a saved `filter` table.
struct Ours {
    /// The rules of both chains and the jumps to them, in the table's order.
    lines: Vec<String>,
    /// `DOCKER-USER` where Docker made it, else `FORWARD`.
    forward_parent: &'static str,
    input_first: bool,
    forward_first: bool,
}

impl Ours {
    fn read(saved: &str) -> Self {
        let forward_parent = if saved.lines().any(|l| l.starts_with(":DOCKER-USER ")) {
            "DOCKER-USER"
        } else {
            "FORWARD"
        };
        let first_of = |parent: &str| {
            let prefix = format!("-A {parent} ");
            saved
                .lines()
                .find(|l| l.starts_with(&prefix))
                .map(str::to_owned)
        };
        let input_first = first_of("INPUT") == Some(format!("-A INPUT -j {INPUT_CHAIN}"));
        let forward_first =
            first_of(forward_parent) == Some(format!("-A {forward_parent} -j {FORWARD_CHAIN}"));
        let lines = saved
            .lines()
            .filter(|l| {
                l.starts_with(&format!("-A {INPUT_CHAIN} "))
                    || l.starts_with(&format!("-A {FORWARD_CHAIN} "))
                    || (l.starts_with("-A ") && is_jump(l))
            })
            .map(str::to_owned)
            .collect();
        Self {
            lines,
            forward_parent,
            input_first,
            forward_first,
        }
    }

    fn jumps_first(&self) -> bool {
        self.input_first && self.forward_first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bridge_is_closed_to_the_host_and_to_every_bridge() {
        let policy = FirewallPolicy {
            host_allow: vec!["udp/53".parse().unwrap()],
            allow_link_local: false,
            deny: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            resolvers: resolvers_of(
                "# cloud\nnameserver 169.254.169.254\nnameserver 10.0.0.2\nsearch x\n",
            ),
        };
        let firewall = Firewall::new(policy, "iptables");
        let bridges = ["docker0".to_owned(), "br-1".to_owned()];
        let v4 = firewall.rules(Family::V4, &bridges);
        for rule in [
            "-A BERTH-INPUT -i br-1 -p udp -m udp --dport 53 -j RETURN",
            "-A BERTH-INPUT -i docker0 -j REJECT --reject-with icmp-admin-prohibited",
            "-A BERTH-FORWARD -i docker0 -o br-1 -j DROP",
            "-A BERTH-FORWARD -i br-1 -o br-1 -j DROP",
            "-A BERTH-FORWARD -i br-1 -d 169.254.0.0/16 -j DROP",
            "-A BERTH-FORWARD -i docker0 -d 10.0.0.0/8 -j DROP",
        ] {
            assert!(v4.iter().any(|r| r == rule), "{rule} in {v4:#?}");
        }
        assert!(!v4.iter().any(|r| r.contains("fd00::")), "{v4:#?}");
        // The host's link-local resolver answers names, before the drop.
        let dns = v4
            .iter()
            .position(|r| r == "-A BERTH-FORWARD -i br-1 -d 169.254.169.254 -p udp -m udp --dport 53 -j RETURN")
            .expect("the resolver's rule");
        let drop = v4
            .iter()
            .position(|r| r == "-A BERTH-FORWARD -i br-1 -d 169.254.0.0/16 -j DROP")
            .unwrap();
        assert!(dns < drop, "{v4:#?}");
        // A resolver inside a denied network stays denied: no rule opens it.
        assert!(!v4.iter().any(|r| r.contains("10.0.0.2")), "{v4:#?}");
        // Each bridge's INPUT ends in a reject, after what it allows.
        let last_input = v4
            .iter()
            .rposition(|r| r.contains("-i br-1") && r.contains(INPUT_CHAIN));
        assert!(v4[last_input.unwrap()].contains("REJECT"));
        let v6 = firewall.rules(Family::V6, &bridges);
        assert!(v6
            .iter()
            .any(|r| r == "-A BERTH-FORWARD -i br-1 -d fd00::/8 -j DROP"));
        assert!(v6.iter().any(|r| r.ends_with("-p ipv6-icmp -j RETURN")));
        assert!(v6
            .iter()
            .any(|r| r.ends_with("--reject-with icmp6-adm-prohibited")));
    }

    #[test]
    fn the_saved_table_says_whether_the_jumps_come_first() {
        let saved = "*filter\n:INPUT ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n:BERTH-INPUT - [0:0]\n\
                     -A INPUT -j BERTH-INPUT\n-A INPUT -p tcp -j ACCEPT\n\
                     -A DOCKER-USER -j ACCEPT\n-A DOCKER-USER -j BERTH-FORWARD\n\
                     -A BERTH-INPUT -i docker0 -j REJECT --reject-with icmp-admin-prohibited\nCOMMIT\n";
        let ours = Ours::read(saved);
        assert_eq!(ours.forward_parent, "DOCKER-USER");
        assert!(ours.input_first);
        assert!(!ours.forward_first, "an ACCEPT before the jump");
        assert_eq!(ours.lines.len(), 3, "{:?}", ours.lines);
    }
}

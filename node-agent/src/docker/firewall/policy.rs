//! What an operator lets containers reach: host ports, link-local
//! addresses, denied networks, and the host's own name servers.

use std::{fmt, net::IpAddr, str::FromStr};

/// A host port containers may reach, `tcp/53` or `udp/53`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort {
    pub udp: bool,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not PROTOCOL/PORT (tcp/53, udp/53)");
        let (protocol, port) = text.trim().split_once('/').ok_or_else(bad)?;
        let udp = match protocol.to_ascii_lowercase().as_str() {
            "tcp" => false,
            "udp" => true,
            _ => return Err(bad()),
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(bad)?;
        Ok(Self { udp, port })
    }
}

/// A network no container may reach: `ADDRESS/PREFIX` (or one address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub(super) address: IpAddr,
    prefix: u8,
}

impl FromStr for Network {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an address or ADDRESS/PREFIX");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let most = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= most)
                .ok_or_else(bad)?,
            None => most,
        };
        Ok(Self { address, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// What an operator lets containers reach.
#[derive(Debug, Clone, Default)]
pub struct FirewallPolicy {
    /// Ports of the host containers may connect to.
    pub host_allow: Vec<HostPort>,
    /// Let containers reach link-local addresses (cloud metadata).
    pub allow_link_local: bool,
    /// Networks no container may reach (other nodes, the control plane).
    pub deny: Vec<Network>,
    /// The name servers containers are given (the host's): reachable on
    /// port 53 even where they are link-local, as a cloud's resolver is.
    pub resolvers: Vec<IpAddr>,
}

/// The name servers Docker gives containers: the host's, from
/// systemd-resolved's upstream list where `/etc/resolv.conf` names only its
/// local stub (as Docker reads them).
pub fn host_resolvers() -> Vec<IpAddr> {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|text| resolvers_of(&text))
            .unwrap_or_default()
    };
    let listed = read("/etc/resolv.conf");
    if listed.iter().all(IpAddr::is_loopback) {
        read("/run/systemd/resolve/resolv.conf")
    } else {
        listed
    }
}

pub(super) fn is_link_local(address: &IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The name servers of the host's `resolv.conf` text.
pub fn resolvers_of(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_refuse_nonsense() {
        assert_eq!(
            "udp/53".parse::<HostPort>(),
            Ok(HostPort {
                udp: true,
                port: 53
            })
        );
        for bad in ["53", "sctp/1", "tcp/0", "tcp/70000", "tcp/"] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
        assert_eq!(
            "10.0.0.0/8".parse::<Network>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "fd00::1".parse::<Network>().unwrap().to_string(),
            "fd00::1/128"
        );
        for bad in ["10.0.0.0/33", "fd00::/129", "host.example", "10.0.0.0/x"] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }
}

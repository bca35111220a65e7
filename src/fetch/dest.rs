//! Where a chart fetch may go: the destination check of the fetch proxy.
//!
//! A tenant chooses the URLs in `Chart.yaml` (and kustomize's `helmCharts` `repo:`), so a
//! fetch must not become a way to reach what the pod can reach. The check runs on the
//! addresses the proxy itself resolved and then connects to (no second lookup, so DNS
//! rebinding gains nothing):
//!
//! - always refused: link-local (169.254.0.0/16, fe80::/10, where most clouds' metadata
//!   service lives), AWS's IPv6 metadata address fd00:ec2::254, Alibaba's 100.100.100.200,
//!   the unspecified and broadcast addresses, and metadata host names, whatever the operator
//!   allows;
//! - refused unless the operator allows them: loopback (the pod's loopback holds the
//!   repo-server's own ports and often a Vault agent);
//! - refused when the operator denies them (`--chart-fetch-deny`); every other address is
//!   allowed (in-cluster chart repositories are common);
//! - only the operator's ports (`--chart-fetch-ports`, default 443 and 80).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names of cloud metadata services, refused before any lookup.
const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
    "metadata.platformequinix.com",
];

/// An IP network (`10.0.0.0/8`, `fd00::/8`; a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an IP network (expected ADDRESS/PREFIX, e.g. 10.0.0.0/8)")]
pub struct BadCidr(pub String);

impl std::str::FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCidr(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.parse::<IpAddr>().map_err(|_| bad())?,
                Some(p.parse::<u8>().map_err(|_| bad())?),
            ),
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as the IPv4 address they reach.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Why a destination was refused (shown in the render's error; never a response body).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Denied {
    #[error("{host} is a cloud metadata host name (always refused)")]
    MetadataHost { host: String },
    #[error("{host} ({ip}) is link-local or a cloud metadata address (always refused)")]
    LinkLocal { host: String, ip: IpAddr },
    #[error("{host} ({ip}) is not a routable address (always refused)")]
    Unroutable { host: String, ip: IpAddr },
    #[error("{host} ({ip}) is a loopback address (refused unless --chart-fetch-allow lists it)")]
    Loopback { host: String, ip: IpAddr },
    #[error("{host} ({ip}) is in a network the operator denies (--chart-fetch-deny {net})")]
    OperatorDenied { host: String, ip: IpAddr, net: Cidr },
    #[error("port {port} of {host} is not allowed (--chart-fetch-ports {allowed})")]
    Port {
        host: String,
        port: u16,
        allowed: String,
    },
    #[error("{host} did not resolve to any address")]
    NoAddress { host: String },
}

/// The operator's destination rules.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub ports: Vec<u16>,
    /// Networks refused (besides the always-refused ones).
    pub deny: Vec<Cidr>,
    /// Networks allowed although refused by default (loopback); never link-local/metadata.
    pub allow: Vec<Cidr>,
}

impl Rules {
    /// Refuses metadata host names and ports the operator did not allow, before any lookup.
    pub fn check_name(&self, host: &str, port: u16) -> Result<(), Denied> {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if METADATA_HOSTS.contains(&name.as_str()) {
            return Err(Denied::MetadataHost {
                host: host.to_owned(),
            });
        }
        if !self.ports.contains(&port) {
            return Err(Denied::Port {
                host: host.to_owned(),
                port,
                allowed: self
                    .ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        Ok(())
    }

    /// Checks one address `host` resolved to.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Denied> {
        let ip = canonical(ip);
        let host = host.to_owned();
        if always_refused(ip) {
            return Err(Denied::LinkLocal { host, ip });
        }
        if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return Err(Denied::Unroutable { host, ip });
        }
        if let Some(net) = self.deny.iter().find(|n| n.contains(ip)) {
            return Err(Denied::OperatorDenied {
                host,
                ip,
                net: *net,
            });
        }
        if ip.is_loopback() && !self.allow.iter().any(|n| n.contains(ip)) {
            return Err(Denied::Loopback { host, ip });
        }
        Ok(())
    }

    /// Every address must pass (a name that resolves to a public and a metadata address is
    /// refused as a whole); the first is the one to connect to.
    pub fn check_resolved(&self, host: &str, ips: &[IpAddr]) -> Result<IpAddr, Denied> {
        for ip in ips {
            self.check_ip(host, *ip)?;
        }
        ips.first().copied().ok_or_else(|| Denied::NoAddress {
            host: host.to_owned(),
        })
    }
}

/// Link-local and cloud metadata addresses: never a chart repository.
fn always_refused(ip: IpAddr) -> bool {
    const EC2_V6_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    // Alibaba Cloud's metadata service is not link-local.
    const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4 == ALIBABA_METADATA,
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6 == EC2_V6_METADATA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn rules() -> Rules {
        Rules {
            ports: vec![443, 80],
            deny: vec!["10.0.0.0/8".parse().expect("cidr")],
            allow: vec![],
        }
    }

    #[test]
    fn link_local_and_metadata_are_always_refused() {
        // Even an operator who allows everything cannot open these.
        let mut r = rules();
        r.allow = vec![
            "0.0.0.0/0".parse().expect("v4"),
            "::/0".parse().expect("v6"),
        ];
        for addr in [
            "169.254.169.254",
            "169.254.0.1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "100.100.100.200",
        ] {
            let err = r.check_ip("h", ip(addr)).expect_err(addr);
            assert!(matches!(err, Denied::LinkLocal { .. }), "{addr}: {err}");
        }
        for host in [
            "metadata.google.internal",
            "METADATA.google.internal.",
            "metadata",
            "instance-data.ec2.internal",
        ] {
            let err = r.check_name(host, 80).expect_err(host);
            assert!(matches!(err, Denied::MetadataHost { .. }), "{host}: {err}");
        }
        for addr in ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1"] {
            assert!(r.check_ip("h", ip(addr)).is_err(), "{addr}");
        }
        // One bad address among good ones refuses the name.
        let err = r
            .check_resolved("h", &[ip("93.184.215.14"), ip("169.254.169.254")])
            .expect_err("mixed");
        assert!(matches!(err, Denied::LinkLocal { .. }));
    }

    #[test]
    fn loopback_only_when_allowed_and_operator_denials_hold() {
        let r = rules();
        for addr in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let err = r.check_ip("charts.test", ip(addr)).expect_err(addr);
            assert!(matches!(err, Denied::Loopback { .. }), "{addr}: {err}");
        }
        let mut allowed = rules();
        allowed.allow = vec!["127.0.0.0/8".parse().expect("cidr")];
        assert_eq!(
            allowed.check_resolved("charts.test", &[ip("127.0.0.1")]),
            Ok(ip("127.0.0.1"))
        );
        let err = r.check_ip("in", ip("10.1.2.3")).expect_err("denied");
        assert_eq!(
            err.to_string(),
            "in (10.1.2.3) is in a network the operator denies (--chart-fetch-deny 10.0.0.0/8)"
        );
        assert!(r.check_ip("pub", ip("192.168.1.1")).is_ok());
        assert!(r.check_ip("pub", ip("2001:db8::1")).is_ok());
        assert!(r.check_name("pub", 443).is_ok());
        let err = r.check_name("pub", 22).expect_err("port");
        assert_eq!(
            err.to_string(),
            "port 22 of pub is not allowed (--chart-fetch-ports 443,80)"
        );
        assert!(matches!(
            r.check_resolved("x", &[]),
            Err(Denied::NoAddress { .. })
        ));
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "fd00::/8".parse().expect("v6");
        assert!(c.contains(ip("fd12::1")) && !c.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::2")));
        let one: Cidr = "192.0.2.7".parse().expect("host");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        for bad in ["10.0.0.0/33", "x/8", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}

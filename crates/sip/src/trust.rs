//! Who may start things on our lines. A browser's line is reachable only through the
//! PBX it registered at: out-of-dialog requests (a new INVITE above all) are taken from
//! the registrar, the outbound proxy and the operator's trusted sources, and refused
//! (403) from anyone else, so that nobody can ring a browser with a forged caller ID by
//! sending an INVITE straight to the gateway.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// One trusted source: an address, a network (`10.0.0.0/8`), or one address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedSource {
    network: IpAddr,
    prefix: u8,
    port: Option<u16>,
}

impl TrustedSource {
    /// Exactly this address and port.
    pub fn exact(addr: SocketAddr) -> TrustedSource {
        TrustedSource {
            network: addr.ip(),
            prefix: max_prefix(addr.ip()),
            port: Some(addr.port()),
        }
    }

    pub fn contains(&self, addr: SocketAddr) -> bool {
        if self.port.is_some_and(|p| p != addr.port()) {
            return false;
        }
        match (self.network, canonical(addr.ip())) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack socket's view of IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// Why a trusted source could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSource(pub String);

impl fmt::Display for BadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an address, address:port or network (10.0.0.1, 10.0.0.1:5060, 10.0.0.0/8)",
            self.0
        )
    }
}

impl FromStr for TrustedSource {
    type Err = BadSource;

    fn from_str(s: &str) -> Result<TrustedSource, BadSource> {
        let bad = || BadSource(s.to_owned());
        let text = s.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(TrustedSource::exact(SocketAddr::new(
                canonical(addr.ip()),
                addr.port(),
            )));
        }
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        let ip = canonical(ip.parse::<IpAddr>().map_err(|_| bad())?);
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max_prefix(ip))
                .ok_or_else(bad)?,
            None => max_prefix(ip),
        };
        Ok(TrustedSource {
            network: ip,
            prefix,
            port: None,
        })
    }
}

impl fmt::Display for TrustedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.network) {
            (Some(port), ip) => write!(f, "{}", SocketAddr::new(ip, port)),
            (None, ip) if self.prefix == max_prefix(ip) => write!(f, "{ip}"),
            (None, ip) => write!(f, "{ip}/{}", self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_networks_and_ports() {
        let host: TrustedSource = "10.0.0.5".parse().unwrap();
        assert!(host.contains(at("10.0.0.5:5060")));
        assert!(host.contains(at("10.0.0.5:40000")), "any port");
        assert!(!host.contains(at("10.0.0.6:5060")));

        let exact: TrustedSource = "10.0.0.5:5060".parse().unwrap();
        assert!(exact.contains(at("10.0.0.5:5060")));
        assert!(!exact.contains(at("10.0.0.5:5061")));

        let net: TrustedSource = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(at("10.1.200.3:5060")));
        assert!(!net.contains(at("10.2.0.1:5060")));

        let all: TrustedSource = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(at("192.0.2.1:1")));
        assert!(!all.contains(at("[2001:db8::1]:1")), "families do not mix");

        let v6: TrustedSource = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(at("[2001:db8:1::7]:5060")));
        assert!(!v6.contains(at("[2001:db9::1]:5060")));
        let v6_exact: TrustedSource = "[2001:db8::1]:5060".parse().unwrap();
        assert!(v6_exact.contains(at("[2001:db8::1]:5060")));
    }

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4() {
        let host: TrustedSource = "192.0.2.7".parse().unwrap();
        assert!(host.contains(at("[::ffff:192.0.2.7]:5060")));
    }

    #[test]
    fn nonsense_is_refused_and_names_itself() {
        for bad in [
            "",
            "pbx.example.com",
            "10.0.0.0/33",
            "10.0.0.1/x",
            "::1/129",
            "10.0.0.1:99999",
        ] {
            let e = bad.parse::<TrustedSource>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn displays_as_written() {
        for s in [
            "10.0.0.5",
            "10.0.0.5:5060",
            "10.1.0.0/16",
            "2001:db8::/32",
            "[::1]:5060",
        ] {
            assert_eq!(s.parse::<TrustedSource>().unwrap().to_string(), s);
        }
    }
}

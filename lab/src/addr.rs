//! MAC addresses and the test address ranges the lab may use.
//!
//! Lab traffic must never look like real traffic: IPv4 addresses come from 198.18.0.0/15
//! (RFC 2544 benchmarking) and IPv6 from 2001:2::/48 (RFC 5180 benchmarking). Every address the
//! harness configures or puts into generated frames is checked against these ranges.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use anyhow::{bail, Context, Result};

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Mac> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts
                .next()
                .with_context(|| format!("MAC address {s:?}: too few octets"))?;
            if part.is_empty() || part.len() > 2 {
                bail!("MAC address {s:?}: bad octet {part:?}");
            }
            *byte = u8::from_str_radix(part, 16)
                .with_context(|| format!("MAC address {s:?}: bad octet {part:?}"))?;
        }
        if parts.next().is_some() {
            bail!("MAC address {s:?}: too many octets");
        }
        Ok(Mac(out))
    }
}

/// True for 198.18.0.0/15.
pub fn is_test_ipv4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 198 && (o[1] & 0xfe) == 18
}

/// True for 2001:2::/48.
pub fn is_test_ipv6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0
}

/// True when `a` lies in one of the lab's test ranges.
pub fn is_test_addr(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => is_test_ipv4(v4),
        IpAddr::V6(v6) => is_test_ipv6(v6),
    }
}

/// Errors unless `a` lies in a test range; `what` names the address in the message.
pub fn require_test_addr(a: IpAddr, what: &str) -> Result<()> {
    if !is_test_addr(a) {
        bail!("{what} {a} is outside the lab's test ranges 198.18.0.0/15 and 2001:2::/48");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m: Mac = "02:1a:b0:00:00:0f".parse().unwrap();
        assert_eq!(m, Mac([2, 0x1a, 0xb0, 0, 0, 0xf]));
        assert_eq!(m.to_string(), "02:1a:b0:00:00:0f");
        assert!("02:1a:b0:00:00".parse::<Mac>().is_err());
        assert!("02:1a:b0:00:00:0f:00".parse::<Mac>().is_err());
        assert!("02:1a:b0:00:00:xx".parse::<Mac>().is_err());
        assert!("02:1a:b0:00:00:100".parse::<Mac>().is_err());
    }

    #[test]
    fn test_ranges() {
        assert!(is_test_addr("198.18.0.1".parse().unwrap()));
        assert!(is_test_addr("198.19.255.255".parse().unwrap()));
        assert!(!is_test_addr("198.20.0.1".parse().unwrap()));
        assert!(!is_test_addr("10.0.0.1".parse().unwrap()));
        assert!(is_test_addr("2001:2::1".parse().unwrap()));
        assert!(is_test_addr("2001:2:0:ffff::1".parse().unwrap()));
        assert!(!is_test_addr("2001:2:1::1".parse().unwrap()));
        assert!(!is_test_addr("2001:db8::1".parse().unwrap()));
        assert!(require_test_addr("192.168.1.1".parse().unwrap(), "address").is_err());
    }
}

//! Facts about network devices read from sysfs (`/sys/class/net/IF`), for setup code.
#![forbid(unsafe_code)]

use std::io;

/// The MAC address of `ifname`. `NotFound` names the device when it does not exist.
pub fn mac_address(ifname: &str) -> io::Result<[u8; 6]> {
    let path = format!("/sys/class/net/{ifname}/address");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("netdev {ifname} not found"),
            )
        } else {
            io::Error::new(e.kind(), format!("{path}: {e}"))
        }
    })?;
    parse_mac(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: not a MAC address: {}", text.trim()),
        )
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_macs() {
        assert_eq!(
            parse_mac("02:1a:b0:00:00:0f"),
            Some([2, 0x1a, 0xb0, 0, 0, 0xf])
        );
        for bad in [
            "",
            "02:1a:b0:00:00",
            "02:1a:b0:00:00:0f:00",
            "02:1a:b0:00:00:zz",
            "002:1a:b0:00:00:0f",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn loopback_has_a_mac_and_missing_devices_are_named() {
        assert_eq!(mac_address("lo").expect("lo"), [0; 6]);
        let e = mac_address("nosuchdev0").expect_err("missing");
        assert!(e.to_string().contains("netdev nosuchdev0 not found"), "{e}");
    }
}

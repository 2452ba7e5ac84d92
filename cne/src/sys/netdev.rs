//! Facts about network devices, for setup code: index, MAC address and number of RX queues; and
//! [`LinkWatch`], which tells a running NF when an interface it serves went down or away.
//!
//! The index comes from `if_nametoindex`, which answers for this process's network namespace; the
//! rest is read from sysfs (`/sys/class/net/IF`).

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::wire::MacAddr;

/// Where sysfs lists the network devices.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

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

/// Parses `aa:bb:cc:dd:ee:ff` with the rules of [`MacAddr`]'s `FromStr`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    text.parse::<MacAddr>().ok().map(<[u8; 6]>::from)
}

/// The interface index of `ifname` in this network namespace (`if_nametoindex`), or `None` when no
/// such device exists.
pub fn ifindex(ifname: &str) -> Option<u32> {
    let name = CString::new(ifname).ok()?;
    // SAFETY: `name` is a NUL-terminated string valid for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// `struct ethtool_channels` of `<linux/ethtool.h>`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// `struct ifreq` with its union as the `ifr_data` pointer.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// Number of RX queues of `ifname`: `ETHTOOL_GCHANNELS` (answers for this process's network
/// namespace), else the `rx-*` entries of `/sys/class/net/<if>/queues`. `None` when neither works.
pub fn rx_queues(ifname: &str) -> Option<u32> {
    ethtool_rx_queues(ifname).or_else(|| {
        rx_queue_count(ifname)
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
    })
}

fn ethtool_rx_queues(ifname: &str) -> Option<u32> {
    // SAFETY: plain socket creation; `cvt_fd` owns the new descriptor.
    let sock = super::cvt_fd(unsafe {
        libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })
    .ok()?;
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let mut ifr = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: std::ptr::from_mut(&mut ch).cast(),
        _pad: [0; 16],
    };
    let n = ifname.len().min(libc::IFNAMSIZ - 1);
    ifr.name[..n].copy_from_slice(&ifname.as_bytes()[..n]);
    // SAFETY: SIOCETHTOOL reads the ifreq (name + pointer to `ch`) and writes `ch`; both outlive
    // the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut ifr) };
    super::cvt(rc).ok()?;
    let rx = ch.rx_count.saturating_add(ch.combined_count);
    (rx > 0).then_some(rx)
}

/// Number of RX queues of `netdev` as sysfs lists them: the `rx-<n>` entries of
/// `/sys/class/net/<netdev>/queues`.
pub fn rx_queue_count(netdev: &str) -> io::Result<usize> {
    rx_queue_count_in(Path::new(SYS_CLASS_NET), netdev)
}

/// [`rx_queue_count`] under another `sys/class/net` directory (a pod's view, a test fixture).
pub fn rx_queue_count_in(sys_class_net: &Path, netdev: &str) -> io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(sys_class_net.join(netdev).join("queues"))? {
        let name = entry?.file_name();
        if name
            .to_str()
            .and_then(|s| s.strip_prefix("rx-"))
            .is_some_and(|n| n.parse::<u32>().is_ok())
        {
            count += 1;
        }
    }
    Ok(count)
}

/// Whether `ifname` is administratively up (`flags` has IFF_UP) and has a carrier (`carrier` is 1;
/// reading it fails while the device is down), from sysfs: `Err` names what is missing, `None` when the
/// device is gone. (The `operstate` file is not used: read through a sysfs that `ip netns exec`
/// mounted, it reported `down` for a veth that netlink showed up.)
fn link_up(ifname: &str) -> Option<Result<(), &'static str>> {
    let read = |file: &str| std::fs::read_to_string(format!("/sys/class/net/{ifname}/{file}"));
    let flags = read("flags").ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
    if flags & 1 == 0 {
        return Some(Err("administratively down"));
    }
    Some(match read("carrier") {
        Ok(c) if c.trim() == "1" => Ok(()),
        _ => Err("without carrier"),
    })
}

/// What [`LinkWatch::check`] found for one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Present with its original index and operationally up.
    Up,
    /// Present with its original index, not up (why: administratively down, no carrier).
    Down(&'static str),
    /// No device of that name.
    Gone,
    /// A device of that name exists with another index: the one the sockets were bound to is gone.
    Replaced,
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkState::Up => f.write_str("up"),
            LinkState::Down(why) => write!(f, "down ({why})"),
            LinkState::Gone => f.write_str("gone"),
            LinkState::Replaced => f.write_str("replaced by another device of the same name"),
        }
    }
}

/// An interface that stayed away longer than the watch allows, or came back as another device.
#[derive(Debug, thiserror::Error)]
#[error("netdev {ifname} is {state} ({since:.1?}); the sockets bound to it cannot serve again: exiting so that a supervisor restarts the NF")]
pub struct LinkLost {
    /// The interface.
    pub ifname: String,
    /// What it is now ([`LinkState::Gone`] or [`LinkState::Replaced`]).
    pub state: LinkState,
    /// For how long it has been so.
    pub since: Duration,
}

#[derive(Debug)]
struct Watched {
    ifname: String,
    ifindex: u32,
    state: LinkState,
    since: Instant,
}

/// Watches the interfaces a running NF serves (a few sysfs reads per check: call it from a control
/// loop, a few times per second, never from a worker).
///
/// An AF_XDP socket is bound to an interface index. When the interface is deleted its sockets never
/// receive again, even if a device of the same name comes back (it has a new index), so the only
/// recovery is a restart: [`LinkWatch::check`] fails once an interface has been gone for longer than
/// `grace`, or at once when it came back as another device. A link that is merely down keeps its
/// sockets and serves again when it comes up: that is reported (for readiness), never an error.
/// Transitions are logged: loss and replacement as errors, down and up as warnings and notices.
#[derive(Debug)]
pub struct LinkWatch {
    links: Vec<Watched>,
    grace: Duration,
}

impl LinkWatch {
    /// Starts watching `ifnames` (duplicates are watched once) as they are now. Fails with
    /// `NotFound` naming a device that does not exist.
    pub fn new<'a>(
        ifnames: impl IntoIterator<Item = &'a str>,
        grace: Duration,
    ) -> io::Result<Self> {
        let now = Instant::now();
        let mut links: Vec<Watched> = Vec::new();
        for name in ifnames {
            if links.iter().any(|w| w.ifname == name) {
                continue;
            }
            let ifindex = ifindex(name).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("netdev {name} not found"))
            })?;
            links.push(Watched {
                ifname: name.to_owned(),
                ifindex,
                state: LinkState::Up,
                since: now,
            });
        }
        let mut watch = Self { links, grace };
        for w in &mut watch.links {
            w.state = Self::read(&w.ifname, w.ifindex);
        }
        Ok(watch)
    }

    fn read(ifname: &str, index: u32) -> LinkState {
        match ifindex(ifname) {
            None => LinkState::Gone,
            Some(i) if i != index => LinkState::Replaced,
            Some(_) => match link_up(ifname) {
                // Deleted between the reads.
                None => LinkState::Gone,
                Some(Ok(())) => LinkState::Up,
                Some(Err(why)) => LinkState::Down(why),
            },
        }
    }

    /// Reads every interface's state again, logs what changed, and fails when one has been gone
    /// longer than the grace period or was replaced.
    pub fn check(&mut self, now: Instant) -> Result<(), LinkLost> {
        for w in &mut self.links {
            let state = Self::read(&w.ifname, w.ifindex);
            if state != w.state {
                match &state {
                    LinkState::Up => log::info!("netdev {} is up again", w.ifname),
                    LinkState::Down(_) => log::warn!("netdev {} is {state}", w.ifname),
                    LinkState::Gone | LinkState::Replaced => log::error!(
                        "netdev {} is {state}: not ready; exiting unless it is back within {:?}",
                        w.ifname,
                        self.grace
                    ),
                }
                w.state = state;
                w.since = now;
            }
            let since = now.saturating_duration_since(w.since);
            let lost = match w.state {
                LinkState::Gone => since >= self.grace,
                LinkState::Replaced => true,
                _ => false,
            };
            if lost {
                return Err(LinkLost {
                    ifname: w.ifname.clone(),
                    state: w.state.clone(),
                    since,
                });
            }
        }
        Ok(())
    }

    /// The interfaces that are not up at the last check, with their state, for readiness reports.
    pub fn problems(&self) -> Vec<String> {
        self.links
            .iter()
            .filter(|w| w.state != LinkState::Up)
            .map(|w| format!("netdev {} is {}", w.ifname, w.state))
            .collect()
    }
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

    #[test]
    fn loopback_has_an_index_and_queues() {
        assert_eq!(ifindex("lo"), Some(1));
        assert_eq!(ifindex("nosuchdev0"), None);
        assert_eq!(ifindex("lo\0"), None);
        let sysfs = rx_queue_count("lo").expect("lo queues");
        assert!(sysfs >= 1);
        assert!(rx_queues("lo").is_some_and(|n| n >= 1));
        assert!(rx_queues("nosuchdev0").is_none());
    }

    #[test]
    fn link_watch_sees_loopback_up_and_missing_devices_fail_at_start() {
        let mut w = LinkWatch::new(["lo", "lo"], Duration::from_secs(1)).expect("lo");
        assert_eq!(w.links.len(), 1);
        w.check(Instant::now()).expect("lo stays");
        assert!(w.problems().is_empty(), "{:?}", w.problems());
        let e = LinkWatch::new(["nosuchdev0"], Duration::from_secs(1)).expect_err("missing");
        assert!(e.to_string().contains("netdev nosuchdev0 not found"), "{e}");
    }

    #[test]
    fn a_gone_device_fails_after_the_grace_and_a_replaced_one_at_once() {
        let t0 = Instant::now();
        let mut w = LinkWatch::new(["lo"], Duration::from_secs(10)).expect("lo");
        // Pretend the watched device was another one: "lo" now has a different index.
        w.links[0].ifindex += 1000;
        let e = w.check(t0).expect_err("replaced");
        assert_eq!(e.state, LinkState::Replaced);
        assert!(e.to_string().contains("netdev lo is replaced"), "{e}");

        w.links[0].ifname = "nosuchdev0".into();
        w.check(t0).expect("gone, inside the grace");
        assert_eq!(w.problems(), ["netdev nosuchdev0 is gone"]);
        w.check(t0 + Duration::from_secs(5))
            .expect("still inside the grace");
        let e = w
            .check(t0 + Duration::from_secs(11))
            .expect_err("grace over");
        assert_eq!((e.state, e.since.as_secs()), (LinkState::Gone, 11));
    }
}

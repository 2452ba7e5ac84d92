//! Probes that take the clients' path: the kernel's own TCP or UDP socket talks to the VIP, and its
//! packets leave the way the data plane sends a client's: GRE-encapsulated to the backend (which proves
//! the backend's decapsulation and its VIP binding, not only that its address answers) or, in L2 DSR
//! mode, unchanged to the backend's MAC (which proves the backend holds the VIP).
//!
//! How: at start, while the process still has CAP_NET_ADMIN, nf-maglev creates a TUN device (`nfmhc*`)
//! that only this process holds (it vanishes with the process) and a policy rule per family,
//! `fwmark` [`MARK`] `lookup` [`TABLE`], whose table sends everything into that device. Probe sockets
//! carry the mark (`SO_MARK`, which CAP_NET_RAW allows on Linux 5.17 and later), so the kernel writes
//! their packets into the TUN; [`DataPath::pump`] (a task on the checker's runtime) reads them, finds the backend by the socket's local
//! port (each probe registers its port before it connects), builds the frame exactly as the data plane
//! would (same GRE header and MACs) and sends it out of the lport's interface on a transmit-only packet
//! socket. The answers come back from the VIP straight to this host's address, as to any DSR client, and
//! reach the socket through the kernel (they are not VIP traffic, so the XDP filter passes them).
//!
//! Limits: with `--claim-all` (or a device plugin's program) every frame of the queues goes to the data
//! plane, so answers to probes never reach the kernel on those queues; use `probe_path: "backend"` then,
//! over another interface.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cne::afpacket::Sender;
use cne::sys::route::MarkRoute;
use cne::sys::tun::{AsyncTun, Tun};

use crate::config::Mac;
use crate::control::BackendState;
use crate::health::probe::PortRegistry;
use crate::tunnel::GreOuter;

/// The firewall mark of probe sockets ("NML" and 1).
pub const MARK: u32 = 0x4e4d_4c01;
/// The routing table the mark selects.
pub const TABLE: u32 = 0x004e_4d4c;
/// Priority of the policy rules (before the main table's 32766).
pub const PRIORITY: u32 = 1000;
/// Name pattern of the TUN device.
pub const TUN_NAME: &str = "nfmhc%d";
/// MTU of the TUN device: probes are small, and GRE adds at most 44 bytes to a 1500-byte link.
pub const TUN_MTU: u32 = 1400;

/// `(IPv6, protocol, local port)` of a probe socket.
type PortKey = (bool, u8, u16);

/// How long a finished probe's port keeps its route (see [`PortRegistry::unregister`]).
const LINGER: Duration = Duration::from_secs(5);

/// How a probe's packets reach the backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Via {
    /// GRE from `local` to the backend's address, in a frame to `mac` (the backend's or the next hop's).
    Gre {
        /// Backend address (outer destination).
        backend: IpAddr,
        /// Outer source.
        local: IpAddr,
        /// Destination MAC.
        mac: Mac,
    },
    /// Unchanged, in a frame to the backend's MAC (L2 DSR).
    L2 {
        /// The backend's MAC.
        mac: Mac,
    },
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Gre { backend, mac, .. } => write!(f, "through GRE to {backend} (MAC {mac})"),
            Via::L2 { mac } => write!(f, "at MAC {mac} (l2dsr)"),
        }
    }
}

/// Counters of the data path.
#[derive(Debug, Default)]
pub struct PathStats {
    /// Probe packets sent on.
    pub sent: AtomicU64,
    /// Packets read from the TUN that no probe registered (the kernel's own router solicitations, say)
    /// or that could not be sent.
    pub dropped: AtomicU64,
}

/// The TUN device, its policy rules and the packet socket. See the module docs.
#[derive(Debug)]
pub struct DataPath {
    /// The device until [`DataPath::pump`] takes it.
    tun: Mutex<Option<Tun>>,
    tun_name: String,
    _route: MarkRoute,
    sender: Sender,
    ifname: String,
    src_mac: [u8; 6],
    /// Registered ports: where their packets go, and for a finished probe until when (its last
    /// packets, a reset, are still read after the probe ends).
    ports: Mutex<HashMap<PortKey, (Via, Option<Instant>)>>,
    /// Counters.
    pub stats: PathStats,
}

impl DataPath {
    /// Sets the path up for probes sent out of `ifname`. Needs CAP_NET_ADMIN (TUN device, rules) and
    /// CAP_NET_RAW (packet socket).
    pub fn open(ifname: &str) -> Result<DataPath> {
        let tun = Tun::create(TUN_NAME).context("creating the probes' TUN device")?;
        tun.set_up(TUN_MTU)
            .with_context(|| format!("bringing {} up", tun.name()))?;
        let route = MarkRoute::install(MARK, TABLE, PRIORITY, tun.ifindex())
            .context("routing marked probe packets into the TUN device")?;
        let sender =
            Sender::open(ifname).with_context(|| format!("opening a packet socket on {ifname}"))?;
        let src_mac = cne::sys::netdev::mac_address(ifname)
            .with_context(|| format!("reading the MAC address of {ifname}"))?;
        Ok(DataPath {
            tun_name: tun.name().to_owned(),
            tun: Mutex::new(Some(tun)),
            _route: route,
            sender,
            ifname: ifname.to_owned(),
            src_mac,
            ports: Mutex::new(HashMap::new()),
            stats: PathStats::default(),
        })
    }

    /// The TUN device's name.
    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// The interface probes leave by.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Reads the probes' packets from the TUN and sends them on, until the device fails. A task on
    /// the checker's runtime: the packets a probe's socket writes into the TUN are read in the same
    /// thread's next turn of the loop, without waking another one.
    pub async fn pump(&self) -> io::Result<()> {
        let tun = AsyncTun::new(self.tun.lock().ok().and_then(|mut t| t.take()).ok_or_else(
            || {
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the probes' TUN device is already served",
                )
            },
        )?)?;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = tun.read(&mut buf).await?;
            self.forward(&buf[..n]);
        }
    }

    fn forward(&self, packet: &[u8]) {
        let sent = self
            .frame(packet)
            .is_some_and(|f| self.sender.send(&f).is_ok());
        let counter = if sent {
            &self.stats.sent
        } else {
            &self.stats.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The frame that carries `packet` (an IP packet the kernel wrote into the TUN) to its backend.
    fn frame(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let (v6, proto, port) = source_port(packet)?;
        let via = self.ports.lock().ok()?.get(&(v6, proto, port))?.0.clone();
        match via {
            Via::Gre {
                backend,
                local,
                mac,
            } => {
                let (v4, v6) = match local {
                    IpAddr::V4(a) => (Some(a), None),
                    IpAddr::V6(a) => (None, Some(a)),
                };
                let b = BackendState {
                    id: 0,
                    name: String::new(),
                    addr: backend,
                    mac,
                    weight: 0,
                    healthy: true,
                    gre: GreOuter::new(backend, v4, v6),
                };
                crate::dataplane::gre_frame(&b, self.src_mac, packet)
            }
            Via::L2 { mac } => {
                let mut f = Vec::with_capacity(14 + packet.len());
                f.extend_from_slice(&mac.0);
                f.extend_from_slice(&self.src_mac);
                f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
                f.extend_from_slice(packet);
                Some(f)
            }
        }
    }
}

impl PortRegistry for DataPath {
    fn register(&self, v6: bool, proto: u8, port: u16, via: &Via) {
        if let Ok(mut p) = self.ports.lock() {
            // Finished probes' ports are swept when the map has grown, not on every probe.
            if p.len() >= p.capacity() {
                let now = Instant::now();
                p.retain(|_, (_, until)| until.is_none_or(|t| t > now));
            }
            p.insert((v6, proto, port), (via.clone(), None));
        }
    }

    fn unregister(&self, v6: bool, proto: u8, port: u16) {
        // Kept a little longer: the socket's last packets (the reset that closes it) are written into
        // the TUN as it closes and read after the probe has ended; they must reach the backend too.
        if let Ok(mut p) = self.ports.lock() {
            if let Some(e) = p.get_mut(&(v6, proto, port)) {
                e.1 = Some(Instant::now() + LINGER);
            }
        }
    }
}

/// `(IPv6, protocol, source port)` of a TCP or UDP packet without IPv6 extension headers; `None` for
/// anything else (the kernel's own router solicitations, say).
fn source_port(p: &[u8]) -> Option<(bool, u8, u16)> {
    let (v6, proto, l4) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            (false, *p.get(9)?, ihl)
        }
        6 => (true, *p.get(6)?, 40),
        _ => return None,
    };
    if proto != 6 && proto != 17 {
        return None;
    }
    let port = u16::from_be_bytes([*p.get(l4)?, *p.get(l4 + 1)?]);
    Some((v6, proto, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ports_of_tcp_and_udp_only() {
        let mut v4 = vec![0u8; 40];
        v4[0] = 0x45;
        v4[9] = 6;
        v4[20..22].copy_from_slice(&4321u16.to_be_bytes());
        assert_eq!(source_port(&v4), Some((false, 6, 4321)));
        let mut v6 = vec![0u8; 60];
        v6[0] = 0x60;
        v6[6] = 17;
        v6[40..42].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(source_port(&v6), Some((true, 17, 53)));
        v6[6] = 58;
        assert_eq!(source_port(&v6), None, "ICMPv6");
        assert_eq!(source_port(&[0x45]), None, "short");
    }
}

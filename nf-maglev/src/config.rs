//! The `maglev` section of the JSON-C configuration: typed serde structs, then semantic validation.
//!
//! Parsing (`#[serde(deny_unknown_fields)]`, so a misspelt key is an error, not a silently ignored setting)
//! yields a [`MaglevSection`]. [`MaglevSection::validate`] then checks what serde cannot: prime table size,
//! unique names and VIPs, address families, MAC addresses, and reports *every* problem with the key path it
//! concerns (`maglev.vips[0].backends[1].name`), so one run of the validator fixes a whole file. The result,
//! [`Validated`], is what the control plane builds state from: it cannot hold an inconsistent setting.
//! [`from_config`] does both on a loaded `cne::config::Config`, with file and line in every message.

use crate::announce::AnnounceSection;
use crate::health::check::{self, Check, CheckSection, HealthSection};
pub use crate::maglev::MAX_WEIGHT;
use crate::maglev::{is_prime, DEFAULT_TABLE_SIZE, MAX_BACKENDS, MAX_TABLE_SIZE};
use cne::config::{Config, ConfigError};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Name of the configuration section this module reads.
pub const SECTION: &str = "maglev";
/// Default connection-table entries per worker.
pub const DEFAULT_CONNTRACK_SIZE: u32 = 1 << 18;
/// Most connection-table entries per worker (73 bytes each: 4.6 GiB).
pub const MAX_CONNTRACK_SIZE: u32 = 1 << 26;
/// Default idle timeout of an open TCP connection, seconds (the IPVS default).
pub const DEFAULT_TCP_TIMEOUT_S: u32 = 900;
/// Default idle timeout of a UDP flow, seconds.
pub const DEFAULT_UDP_TIMEOUT_S: u32 = 60;
/// Default idle timeout of a TCP connection after FIN or RST, seconds.
pub const DEFAULT_TCP_FIN_TIMEOUT_S: u32 = 30;
/// Default new connections a worker records per second before it stops inserting (Katran's default).
pub const DEFAULT_MAX_NEW_CONNS_PER_SEC: u32 = 125_000;
/// Default MTU of the link towards the backends: the largest IP packet (outer header included) sent.
pub const DEFAULT_MTU: u16 = 1500;
/// Smallest MTU accepted: IPv6's minimum link MTU.
pub const MIN_MTU: u16 = 1280;
/// Largest MTU accepted (jumbo frames; AF_XDP frames of 4 KiB cannot carry more than about 3.8 KB anyway).
pub const MAX_MTU: u16 = 9216;
/// Default backend weight.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Longest name of a VIP or backend (names label metrics and are hashed into the table).
pub const MAX_NAME_LEN: usize = 128;

/// A MAC address: cne's type, with the one syntax of the project (`02:00:00:00:00:01`).
pub use cne::wire::MacAddr as Mac;

/// Transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// How packets reach a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// GRE encapsulation (RFC 2784) in an outer IPv4 or IPv6 header of the backend's family: backends may sit
    /// in any subnet, and decapsulate before their stack sees the VIP packet.
    Gre,
    /// Layer-2 direct server return: only the destination MAC changes, so the backend must be on the same L2
    /// segment and own the VIP on a local interface (the LVS "DR" way).
    L2dsr,
}

/// Where the per-packet work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPath {
    /// Every claimed packet goes to the AF_XDP workers (the default).
    #[default]
    AfXdp,
    /// The kernel's XDP program forwards the common case (TCP and UDP to a VIP, decided by the same
    /// tables and connection rules) with `XDP_TX`; the AF_XDP workers get the rest: fragments, ICMP
    /// errors, ARP and neighbour discovery, packets too big for the tunnel, IPv6 extension headers,
    /// connections from past tables.
    Xdp,
}

/// A VIP port: a number, or `0` / `"all"` for every port of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Port(pub u16);

impl Port {
    /// Every port.
    pub const ALL: Port = Port(0);
    /// Whether this is the every-port wildcard.
    pub fn is_all(self) -> bool {
        self.0 == 0
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number 0-65535 or \"all\" (0 and \"all\" mean every port)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                if v == "all" {
                    Ok(Port::ALL)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(PortVisitor)
    }
}

/// The `maglev` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaglevSection {
    /// Slots per VIP table; a prime (default 65537). Keep it above 100 x the backends of a VIP for <= 1%
    /// imbalance.
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// Seed of the backend-name and flow hashes. Instances that must agree (ECMP in front of several load
    /// balancers) need the same seed; a secret seed keeps clients from aiming floods at one backend.
    #[serde(default)]
    pub hash_seed: u64,
    /// Where the per-packet work runs: `"af_xdp"` (default) or `"xdp"`.
    #[serde(default)]
    pub data_path: DataPath,
    /// Connection table of each worker.
    #[serde(default)]
    pub conntrack: ConntrackSection,
    /// Limit on new connection-table entries.
    #[serde(default)]
    pub flood_guard: FloodGuardSection,
    /// Outer source addresses for GRE, at most one IPv4 and one IPv6.
    #[serde(default)]
    pub local_addrs: Vec<IpAddr>,
    /// Largest IP packet sent towards backends, outer header included (default 1500).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Whether every frame of the queue reaches the data plane (the default XDP program redirects all), so it
    /// answers ARP requests and IPv6 neighbour solicitations for the VIPs itself (default true).
    #[serde(default = "default_true")]
    pub claim_all: bool,
    /// Next-hop MAC for GRE packets to backends without their own `mac`.
    #[serde(default)]
    pub gateway_mac: Option<Mac>,
    /// Where to keep the VIPs' past Maglev tables across restarts (a small JSON file, replaced atomically on
    /// every change, e.g. `/run/nf-maglev/generations.json`); none by default. A restarted instance reads it
    /// and keeps serving connections that began under an earlier table by that table.
    #[serde(default)]
    pub generations_file: Option<std::path::PathBuf>,
    /// Health checking: fail-open, where probes go, flap damping (the checks themselves are per VIP).
    #[serde(default)]
    pub health: HealthSection,
    /// Announce the VIPs this instance is ready to serve on a device a routing daemon exports.
    #[serde(default)]
    pub announce: Option<AnnounceSection>,
    /// The virtual services.
    #[serde(default)]
    pub vips: Vec<VipSection>,
}

/// `maglev.conntrack`: the per-worker connection table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackSection {
    /// Entries per worker (rounded up to a multiple of 7; 73 bytes each).
    #[serde(default = "default_conntrack_size")]
    pub size: u32,
    /// Idle timeout of an open TCP connection, seconds.
    #[serde(default = "default_tcp_timeout")]
    pub tcp_timeout_s: u32,
    /// Idle timeout of a UDP flow, seconds.
    #[serde(default = "default_udp_timeout")]
    pub udp_timeout_s: u32,
    /// Idle timeout after a FIN or RST, seconds.
    #[serde(default = "default_tcp_fin_timeout")]
    pub tcp_fin_timeout_s: u32,
}

impl Default for ConntrackSection {
    fn default() -> Self {
        Self {
            size: DEFAULT_CONNTRACK_SIZE,
            tcp_timeout_s: DEFAULT_TCP_TIMEOUT_S,
            udp_timeout_s: DEFAULT_UDP_TIMEOUT_S,
            tcp_fin_timeout_s: DEFAULT_TCP_FIN_TIMEOUT_S,
        }
    }
}

/// `maglev.flood_guard`: Katran's guard against connection floods filling the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloodGuardSection {
    /// New connections a worker records per second; above it, new flows are still forwarded by the Maglev
    /// table but not recorded. 0 means no limit.
    #[serde(default = "default_max_new_conns")]
    pub max_new_conns_per_sec: u32,
}

impl Default for FloodGuardSection {
    fn default() -> Self {
        Self {
            max_new_conns_per_sec: DEFAULT_MAX_NEW_CONNS_PER_SEC,
        }
    }
}

/// One entry of `maglev.vips`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipSection {
    /// Name used by operations and metrics; default `addr:port/proto` (`[v6]:port/proto`, port `*` for all).
    #[serde(default)]
    pub name: Option<String>,
    /// The virtual address clients connect to.
    pub addr: IpAddr,
    /// `"tcp"` or `"udp"`.
    pub proto: Proto,
    /// Port, or `0` / `"all"` for every port.
    pub port: Port,
    /// `"gre"` or `"l2dsr"`.
    pub mode: Mode,
    /// Health check of every backend (default for TCP VIPs with a port: TCP connect on that port).
    #[serde(default)]
    pub check: Option<CheckSection>,
    /// The backend pool.
    #[serde(default)]
    pub backends: Vec<BackendSection>,
}

/// One entry of `maglev.vips[].backends`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// Unique within the VIP; it alone decides the backend's slots, so renaming moves its traffic.
    pub name: String,
    /// The backend's address (GRE outer destination; in l2dsr mode only checked for the VIP's family).
    pub addr: IpAddr,
    /// Relative share of new connections (default 1); 0 drains: existing connections stay, new ones go
    /// elsewhere.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// l2dsr: the backend's MAC (required). gre: the next hop's MAC (default `gateway_mac`).
    #[serde(default)]
    pub mac: Option<Mac>,
    /// This backend's check, merged over the VIP's (a `type` replaces it).
    #[serde(default)]
    pub check: Option<CheckSection>,
}

fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}
fn default_mtu() -> u16 {
    DEFAULT_MTU
}
fn default_true() -> bool {
    true
}
fn default_conntrack_size() -> u32 {
    DEFAULT_CONNTRACK_SIZE
}
fn default_tcp_timeout() -> u32 {
    DEFAULT_TCP_TIMEOUT_S
}
fn default_udp_timeout() -> u32 {
    DEFAULT_UDP_TIMEOUT_S
}
fn default_tcp_fin_timeout() -> u32 {
    DEFAULT_TCP_FIN_TIMEOUT_S
}
fn default_max_new_conns() -> u32 {
    DEFAULT_MAX_NEW_CONNS_PER_SEC
}
fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// Validation problems: `(key path, message)` pairs, e.g. `("maglev.vips[0].port", "...")`.
pub type Issues = Vec<(String, String)>;

/// Reads and validates the `maglev` section of a loaded configuration. Every problem comes back as a
/// [`ConfigError`] naming the file, the line and the key path (`maglev.vips[0].backends[1].name`).
pub fn from_config(config: &Config) -> Result<Validated, Vec<ConfigError>> {
    let section: MaglevSection = match config.section(SECTION) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(vec![
                config.error_at(SECTION, "the configuration has no maglev section")
            ])
        }
        Err(e) => return Err(vec![e]),
    };
    section.validate().map_err(|issues| {
        issues
            .iter()
            .map(|(path, msg)| config.error_at(path, msg))
            .collect()
    })
}

/// Formats validation problems one per line, `path: message`.
pub fn format_issues(issues: &[(String, String)]) -> String {
    issues
        .iter()
        .map(|(p, m)| format!("{p}: {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A configuration that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// Slots per VIP table (prime).
    pub table_size: u32,
    /// Hash seed.
    pub hash_seed: u64,
    /// Where the per-packet work runs.
    pub data_path: DataPath,
    /// Connection-table settings.
    pub conntrack: ConntrackSection,
    /// New connections recorded per second per worker; 0 = no limit.
    pub max_new_conns_per_sec: u32,
    /// GRE outer source for IPv4 backends.
    pub local_v4: Option<Ipv4Addr>,
    /// GRE outer source for IPv6 backends.
    pub local_v6: Option<Ipv6Addr>,
    /// Largest IP packet sent.
    pub mtu: u16,
    /// Whether to answer ARP / neighbour solicitations for VIPs.
    pub claim_all: bool,
    /// Default next-hop MAC for GRE backends added later without their own.
    pub gateway_mac: Option<Mac>,
    /// File that keeps past Maglev tables across restarts.
    pub generations_file: Option<std::path::PathBuf>,
    /// Health-check settings.
    pub health: HealthSection,
    /// VIP announcement.
    pub announce: Option<AnnounceSection>,
    /// The VIPs, in configuration order.
    pub vips: Vec<Vip>,
}

/// A validated VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// Unique name (given or derived).
    pub name: String,
    /// Virtual address.
    pub addr: IpAddr,
    /// Protocol.
    pub proto: Proto,
    /// Port; [`Port::ALL`] for every port.
    pub port: Port,
    /// Forwarding mode.
    pub mode: Mode,
    /// The `check` as written.
    pub check: Option<CheckSection>,
    /// Backends, in configuration order, names unique.
    pub backends: Vec<Backend>,
}

/// A validated backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Unique name within the VIP.
    pub name: String,
    /// Address (GRE outer destination).
    pub addr: IpAddr,
    /// Weight, `0..=MAX_WEIGHT`.
    pub weight: u32,
    /// Destination MAC of frames to it (its own in l2dsr, the next hop's in gre).
    pub mac: Mac,
    /// Its own `check` as written.
    pub check_section: Option<CheckSection>,
    /// The check it gets (the VIP's merged with its own); `None`: not checked.
    pub check: Option<Check>,
}

/// The default VIP name: `198.18.100.1:80/tcp`, `[2001:2::100]:80/tcp`, port `*` for all ports.
pub fn default_vip_name(addr: IpAddr, proto: Proto, port: Port) -> String {
    let port = if port.is_all() {
        "*".to_owned()
    } else {
        port.0.to_string()
    };
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}/{proto}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{proto}"),
    }
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Whether an address can never be a unicast endpoint.
fn not_unicast(a: IpAddr) -> bool {
    a.is_unspecified()
        || a.is_multicast()
        || a.is_loopback()
        || matches!(a, IpAddr::V4(v4) if v4.is_broadcast())
        || matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

fn check_name(issues: &mut Issues, path: String, name: &str) {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(|c| c.is_control()) {
        issues.push((
            path,
            format!("name {name:?} must be 1-{MAX_NAME_LEN} printable characters"),
        ));
    }
}

impl MaglevSection {
    /// Checks everything serde cannot and resolves defaults (VIP names, next-hop MACs). On failure returns
    /// every problem found with its key path, in file order.
    pub fn validate(&self) -> Result<Validated, Issues> {
        let mut issues = Issues::new();
        let mut err = |path: String, msg: String| issues.push((path, msg));
        let p = SECTION;

        if !(2..=MAX_TABLE_SIZE).contains(&self.table_size) || !is_prime(self.table_size) {
            err(
                format!("{p}.table_size"),
                format!(
                    "{} is not a prime between 2 and {MAX_TABLE_SIZE} (use 65537 or 655373)",
                    self.table_size
                ),
            );
        }
        let ct = &self.conntrack;
        if !(8..=MAX_CONNTRACK_SIZE).contains(&ct.size) {
            err(
                format!("{p}.conntrack.size"),
                format!("{} is outside 8..={MAX_CONNTRACK_SIZE}", ct.size),
            );
        }
        for (key, v) in [
            ("tcp_timeout_s", ct.tcp_timeout_s),
            ("udp_timeout_s", ct.udp_timeout_s),
            ("tcp_fin_timeout_s", ct.tcp_fin_timeout_s),
        ] {
            if v == 0 {
                err(
                    format!("{p}.conntrack.{key}"),
                    "must be at least 1 second".into(),
                );
            }
        }
        if ct.tcp_fin_timeout_s > ct.tcp_timeout_s {
            err(
                format!("{p}.conntrack.tcp_fin_timeout_s"),
                format!(
                    "{} exceeds tcp_timeout_s ({})",
                    ct.tcp_fin_timeout_s, ct.tcp_timeout_s
                ),
            );
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            err(
                format!("{p}.mtu"),
                format!("{} is outside {MIN_MTU}..={MAX_MTU}", self.mtu),
            );
        }
        if let Some(m) = self.gateway_mac {
            if m.is_multicast() || m.is_zero() {
                err(
                    format!("{p}.gateway_mac"),
                    format!("{m} is not a unicast MAC"),
                );
            }
        }

        let (mut local_v4, mut local_v6) = (None, None);
        for (i, &a) in self.local_addrs.iter().enumerate() {
            let path = format!("{p}.local_addrs[{i}]");
            if not_unicast(a) {
                err(path, format!("{a} is not a unicast address"));
                continue;
            }
            let taken = match a {
                IpAddr::V4(v4) => local_v4.replace(v4).is_some(),
                IpAddr::V6(v6) => local_v6.replace(v6).is_some(),
            };
            if taken {
                err(
                    path,
                    format!(
                        "a second {} address; GRE needs one source per family",
                        family(a)
                    ),
                );
            }
        }

        let mut vips = Vec::with_capacity(self.vips.len());
        let mut vip_names: HashMap<String, usize> = HashMap::new();
        let mut vip_keys: HashMap<(IpAddr, Proto, Port), usize> = HashMap::new();
        for (vi, v) in self.vips.iter().enumerate() {
            let vp = format!("{p}.vips[{vi}]");
            let name = v
                .name
                .clone()
                .unwrap_or_else(|| default_vip_name(v.addr, v.proto, v.port));
            check_name(&mut issues, format!("{vp}.name"), &name);
            let mut err = |path: String, msg: String| issues.push((path, msg));
            if let Some(prev) = vip_names.insert(name.clone(), vi) {
                err(
                    format!("{vp}.name"),
                    format!("VIP name {name:?} is also used by {p}.vips[{prev}]"),
                );
            }
            if let Some(prev) = vip_keys.insert((v.addr, v.proto, v.port), vi) {
                err(
                    vp.clone(),
                    format!(
                        "duplicate VIP {name}: same address, protocol and port as {p}.vips[{prev}]"
                    ),
                );
            }
            if not_unicast(v.addr) {
                err(
                    format!("{vp}.addr"),
                    format!("{} is not a unicast address", v.addr),
                );
            }
            if v.backends.len() > MAX_BACKENDS {
                err(
                    format!("{vp}.backends"),
                    format!("{} backends exceed {MAX_BACKENDS}", v.backends.len()),
                );
            }
            let mut names: HashMap<&str, usize> = HashMap::new();
            let mut addrs: HashMap<IpAddr, usize> = HashMap::new();
            let mut backends = Vec::with_capacity(v.backends.len());
            for (bi, b) in v.backends.iter().enumerate() {
                let bp = format!("{vp}.backends[{bi}]");
                check_name(&mut issues, format!("{bp}.name"), &b.name);
                let mut err = |path: String, msg: String| issues.push((path, msg));
                if let Some(prev) = names.insert(&b.name, bi) {
                    err(
                        format!("{bp}.name"),
                        format!(
                            "duplicate backend name {:?} (also {vp}.backends[{prev}])",
                            b.name
                        ),
                    );
                }
                if let Some(prev) = addrs.insert(b.addr, bi) {
                    err(
                        format!("{bp}.addr"),
                        format!(
                            "{} is also {vp}.backends[{prev}]; use its weight instead",
                            b.addr
                        ),
                    );
                }
                if not_unicast(b.addr) {
                    err(
                        format!("{bp}.addr"),
                        format!("{} is not a unicast address", b.addr),
                    );
                }
                if b.weight > MAX_WEIGHT {
                    err(
                        format!("{bp}.weight"),
                        format!("{} exceeds {MAX_WEIGHT}", b.weight),
                    );
                }
                if let Some(m) = b.mac {
                    if m.is_multicast() || m.is_zero() {
                        err(format!("{bp}.mac"), format!("{m} is not a unicast MAC"));
                    }
                }
                let mac = match v.mode {
                    Mode::L2dsr => {
                        if b.addr.is_ipv4() != v.addr.is_ipv4() {
                            err(
                                format!("{bp}.addr"),
                                format!(
                                    "{} backend {} for {} VIP {}: l2dsr forwards the packet unchanged, so the \
                                     families must match (use mode \"gre\" to mix)",
                                    family(b.addr),
                                    b.addr,
                                    family(v.addr),
                                    v.addr
                                ),
                            );
                        }
                        b.mac.or_else(|| {
                            err(
                                format!("{bp}.mac"),
                                "l2dsr needs the backend's MAC address".into(),
                            );
                            None
                        })
                    }
                    Mode::Gre => {
                        let have_local = match b.addr {
                            IpAddr::V4(_) => local_v4.is_some(),
                            IpAddr::V6(_) => local_v6.is_some(),
                        };
                        if !have_local {
                            err(
                                format!("{bp}.addr"),
                                format!(
                                    "{} backend {} needs an {} address in {p}.local_addrs as GRE outer source",
                                    family(b.addr),
                                    b.addr,
                                    family(b.addr)
                                ),
                            );
                        }
                        b.mac.or(self.gateway_mac).or_else(|| {
                            err(
                                format!("{bp}.mac"),
                                format!("no next-hop MAC: set mac here or {p}.gateway_mac"),
                            );
                            None
                        })
                    }
                };
                let check_path = if b.check.is_some() {
                    format!("{bp}.check")
                } else {
                    format!("{vp}.check")
                };
                let check = check::resolve(
                    v.check.as_ref(),
                    b.check.as_ref(),
                    v.proto,
                    v.port,
                    &check_path,
                    &mut issues,
                );
                backends.push(Backend {
                    name: b.name.clone(),
                    addr: b.addr,
                    weight: b.weight,
                    mac: mac.unwrap_or_default(),
                    check_section: b.check.clone(),
                    check,
                });
            }
            vips.push(Vip {
                name,
                addr: v.addr,
                proto: v.proto,
                port: v.port,
                mode: v.mode,
                check: v.check.clone(),
                backends,
            });
        }
        self.health.issues(&format!("{p}.health"), &mut issues);
        if let Some(a) = &self.announce {
            a.issues(&format!("{p}.announce"), &mut issues);
        }

        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Validated {
            table_size: self.table_size,
            hash_seed: self.hash_seed,
            data_path: self.data_path,
            conntrack: self.conntrack,
            max_new_conns_per_sec: self.flood_guard.max_new_conns_per_sec,
            local_v4,
            local_v6,
            mtu: self.mtu,
            claim_all: self.claim_all,
            gateway_mac: self.gateway_mac,
            generations_file: self.generations_file.clone(),
            health: self.health.clone(),
            announce: self.announce.clone(),
            vips,
        })
    }
}

impl Validated {
    /// Converts back to the section form (e.g. to apply an operation and validate the result again).
    pub fn to_section(&self) -> MaglevSection {
        MaglevSection {
            table_size: self.table_size,
            hash_seed: self.hash_seed,
            data_path: self.data_path,
            conntrack: self.conntrack,
            flood_guard: FloodGuardSection {
                max_new_conns_per_sec: self.max_new_conns_per_sec,
            },
            local_addrs: self
                .local_v4
                .map(IpAddr::V4)
                .into_iter()
                .chain(self.local_v6.map(IpAddr::V6))
                .collect(),
            mtu: self.mtu,
            claim_all: self.claim_all,
            gateway_mac: self.gateway_mac,
            generations_file: self.generations_file.clone(),
            health: self.health.clone(),
            announce: self.announce.clone(),
            vips: self
                .vips
                .iter()
                .map(|v| VipSection {
                    name: Some(v.name.clone()),
                    addr: v.addr,
                    proto: v.proto,
                    port: v.port,
                    mode: v.mode,
                    check: v.check.clone(),
                    backends: v
                        .backends
                        .iter()
                        .map(|b| BackendSection {
                            name: b.name.clone(),
                            addr: b.addr,
                            weight: b.weight,
                            mac: Some(b.mac),
                            check: b.check_section.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(json: &str) -> Result<MaglevSection, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn paths(issues: &Issues) -> Vec<&str> {
        issues.iter().map(|(p, _)| p.as_str()).collect()
    }

    const MINIMAL: &str = r#"{
        "local_addrs": ["198.18.0.1"],
        "gateway_mac": "02:00:00:00:00:fe",
        "vips": [{ "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre",
                   "backends": [{ "name": "a", "addr": "198.18.1.1" }] }]
    }"#;

    #[test]
    fn shipped_file_parses_and_validates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../jsonc/maglev.jsonc");
        let config = Config::load(path).expect("jsonc/maglev.jsonc loads as a CNDP configuration");
        assert_eq!(config.lports().len(), 2);
        let v = from_config(&config).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(v.vips.len(), 2);
        assert_eq!(
            (v.vips[0].name.as_str(), v.vips[0].mode),
            ("web4", Mode::Gre)
        );
        assert_eq!(
            v.vips[0].backends[0].mac.to_string(),
            "02:00:00:00:00:fe",
            "gateway MAC fills in"
        );
        assert_eq!(v.vips[0].backends[2].mac.to_string(), "02:00:00:00:01:03");
        assert_eq!(
            v.vips[1].addr,
            "2001:2::100".parse::<IpAddr>().expect("addr")
        );
        assert_eq!(v.local_v6, Some("2001:2::1".parse().expect("addr")));
    }

    #[test]
    fn errors_from_a_file_name_file_line_and_key() {
        let text = "{\n\"maglev\": {\n  \"table_size\": 65536,\n  \"vips\": [ { \"addr\": \"198.18.100.1\",\n    \"proto\": \"tcp\", \"port\": 80, \"mode\": \"l2dsr\",\n    \"backends\": [ { \"name\": \"a\", \"addr\": \"198.18.1.1\" } ] } ]\n}\n}\n";
        let config = Config::parse(text, "lb.jsonc").expect("valid JSON-C");
        let errors: Vec<String> = from_config(&config)
            .expect_err("invalid")
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("lb.jsonc:3: maglev.table_size: 65536 is not a prime"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("lb.jsonc:6: maglev.vips[0].backends[0].mac"),
            "{errors:?}"
        );
        let typo =
            Config::parse("{ \"maglev\": { \"mtu\": \"big\" } }", "t.jsonc").expect("valid JSON-C");
        let e = from_config(&typo).expect_err("wrong type")[0].to_string();
        assert!(
            e.contains("maglev.mtu") && e.contains("invalid type"),
            "{e}"
        );
        let none = Config::parse("{}", "t.jsonc").expect("valid JSON-C");
        assert!(from_config(&none).expect_err("no section")[0]
            .to_string()
            .contains("no maglev section"));
    }

    #[test]
    fn defaults_fill_in() {
        let v = section(MINIMAL).expect("parses").validate().expect("valid");
        assert_eq!(v.table_size, DEFAULT_TABLE_SIZE);
        assert_eq!(v.conntrack, ConntrackSection::default());
        assert_eq!(v.max_new_conns_per_sec, DEFAULT_MAX_NEW_CONNS_PER_SEC);
        assert_eq!((v.mtu, v.claim_all, v.hash_seed), (DEFAULT_MTU, true, 0));
        assert_eq!(v.vips[0].name, "198.18.100.1:80/tcp");
        assert_eq!(v.vips[0].backends[0].weight, DEFAULT_WEIGHT);
    }

    #[test]
    fn ports_and_names() {
        let s = section(
            r#"{ "vips": [
            { "addr": "2001:2::100", "proto": "udp", "port": "all", "mode": "l2dsr" },
            { "addr": "198.18.100.1", "proto": "tcp", "port": 0, "mode": "l2dsr" } ] }"#,
        )
        .expect("parses");
        let v = s.validate().expect("valid");
        assert_eq!(v.vips[0].name, "[2001:2::100]:*/udp");
        assert!(v.vips[0].port.is_all() && v.vips[1].port.is_all());
        for bad in [r#""any""#, "65536", "-1", "1.5"] {
            let text = format!(
                r#"{{ "vips": [{{ "addr": "198.18.100.1", "proto": "tcp", "port": {bad}, "mode": "gre" }}] }}"#
            );
            let e = section(&text).expect_err(bad).to_string();
            assert!(
                e.contains("port number 0-65535 or \"all\"") || e.contains("invalid type"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = section(r#"{ "tabel_size": 7 }"#)
            .expect_err("typo")
            .to_string();
        assert!(e.contains("unknown field `tabel_size`"), "{e}");
        let e = section(r#"{ "conntrack": { "size": 8, "tcp_timeout": 5 } }"#)
            .expect_err("typo")
            .to_string();
        assert!(e.contains("unknown field `tcp_timeout`"), "{e}");
        let e = section(
            r#"{ "vips": [{ "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre",
            "backends": [{ "name": "a", "addr": "198.18.1.1", "wieght": 2 }] }] }"#,
        )
        .expect_err("typo")
        .to_string();
        assert!(e.contains("unknown field `wieght`"), "{e}");
        let e = section(r#"{ "vips": [{ "addr": "198.18.100.1", "proto": "sctp", "port": 80, "mode": "gre" }] }"#)
            .expect_err("proto")
            .to_string();
        assert!(e.contains("unknown variant `sctp`"), "{e}");
        let e = section(r#"{ "gateway_mac": "02:00:00:00:00" }"#)
            .expect_err("mac")
            .to_string();
        assert!(e.contains("is not a MAC address"), "{e}");
    }

    #[test]
    fn semantic_errors_name_their_key_paths() {
        let s = section(r#"{
            "table_size": 65536,
            "mtu": 100,
            "local_addrs": ["198.18.0.1", "198.18.0.2"],
            "conntrack": { "tcp_timeout_s": 10, "tcp_fin_timeout_s": 20, "udp_timeout_s": 0 },
            "vips": [
              { "name": "v", "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "l2dsr",
                "backends": [
                  { "name": "a", "addr": "2001:2:1::1", "mac": "02:00:00:00:00:01" },
                  { "name": "a", "addr": "198.18.1.2", "mac": "02:00:00:00:00:02" },
                  { "name": "c", "addr": "198.18.1.2" } ] },
              { "name": "v", "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre",
                "backends": [
                  { "name": "x", "addr": "2001:2:1::9" },
                  { "name": "y", "addr": "198.18.1.9", "mac": "01:00:5e:00:00:01", "weight": 2000000 } ] }
            ] }"#)
        .expect("parses");
        let issues = s.validate().expect_err("invalid");
        let p = paths(&issues);
        let want = [
            "maglev.table_size",
            "maglev.conntrack.udp_timeout_s",
            "maglev.conntrack.tcp_fin_timeout_s",
            "maglev.mtu",
            "maglev.local_addrs[1]",
            "maglev.vips[0].backends[0].addr", // family mismatch in l2dsr
            "maglev.vips[0].backends[1].name", // duplicate name
            "maglev.vips[0].backends[2].addr", // duplicate address
            "maglev.vips[0].backends[2].mac",  // l2dsr without MAC
            "maglev.vips[1].name",             // duplicate VIP name
            "maglev.vips[1]",                  // duplicate VIP
            "maglev.vips[1].backends[0].addr", // no IPv6 local address
            "maglev.vips[1].backends[0].mac",  // no MAC, no gateway
            "maglev.vips[1].backends[1].weight",
            "maglev.vips[1].backends[1].mac", // multicast MAC
        ];
        for w in want {
            assert!(
                p.contains(&w),
                "missing {w} in:\n{}",
                format_issues(&issues)
            );
        }
        assert_eq!(
            p.len(),
            want.len(),
            "unexpected issues:\n{}",
            format_issues(&issues)
        );
        let msg = &issues
            .iter()
            .find(|(p, _)| p == "maglev.vips[0].backends[0].addr")
            .expect("present")
            .1;
        assert!(
            msg.contains("IPv6 backend 2001:2:1::1 for IPv4 VIP"),
            "{msg}"
        );
        let msg = &issues
            .iter()
            .find(|(p, _)| p == "maglev.table_size")
            .expect("present")
            .1;
        assert!(msg.contains("not a prime"), "{msg}");
    }

    #[test]
    fn gre_mixes_families_with_both_local_addresses() {
        let s = section(r#"{ "local_addrs": ["198.18.0.1", "2001:2::1"], "gateway_mac": "02:00:00:00:00:fe",
            "vips": [{ "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre", "backends": [
                { "name": "a", "addr": "198.18.1.1" }, { "name": "b", "addr": "2001:2:1::1", "weight": 0 } ] }] }"#)
        .expect("parses");
        let v = s.validate().expect("valid");
        assert_eq!(v.vips[0].backends[1].weight, 0);
        // Round trip through the section form keeps everything.
        assert_eq!(v.to_section().validate().expect("valid"), v);
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            "02:00:00:00:00:0A".parse::<Mac>(),
            Ok(Mac([2, 0, 0, 0, 0, 10]))
        );
        assert_eq!(
            "02-00-00-00-00-0a".parse::<Mac>(),
            Ok(Mac([2, 0, 0, 0, 0, 10]))
        );
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "2:0:0:0:0:1",
            "zz:00:00:00:00:00",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        assert!(Mac([1, 0, 0x5e, 0, 0, 1]).is_multicast() && Mac::default().is_zero());
    }
}

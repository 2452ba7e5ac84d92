//! The XDP program in front of the AF_XDP sockets: load, attach, configure, detach.
//!
//! [`XdpProgram`] loads the embedded `xsk_filter` BPF object (compiled from `bpf/xsk_filter.bpf.c` at build
//! time) with libbpf and attaches it to one interface. The program redirects to the AF_XDP socket bound at
//! the packet's receive queue (`xsks_map[rx_queue_index]`) only the traffic the network function claims,
//! and passes everything else to the kernel, so ARP, SSH and the host stack keep working on the same port.
//! What is claimed is configured at run time through maps: [`XdpProgram::set_claim_all`], port and
//! protocol [`Rule`]s, and per-address [`AddrFlags`] (all traffic, neighbour discovery, fragments).
//!
//! Invariants:
//! - Never replace someone else's program silently: an interface that already runs an XDP program is
//!   refused unless `force` is given, and the error names the program.
//! - Never leave a program behind, whatever ends the process: programs are attached through an XDP
//!   `bpf_link` (`bpf_link_create` with `BPF_XDP`), not through netlink. The link is a file descriptor of
//!   this process; the kernel detaches the program when its last descriptor closes, which happens on
//!   `Drop`, on an orderly exit, and also on SIGKILL, an OOM kill or an abort. A restart with the same
//!   command line therefore finds the interface free and needs no `--force`. A program attached by
//!   someone else (through netlink, or through a link of another process) is still refused without
//!   `force`; with it, a netlink-attached program is detached and a foreign link is detached with
//!   `BPF_LINK_DETACH` before ours is attached (the interface passes traffic to the kernel for that
//!   moment: a link cannot atomically replace another attachment).
//! - Claims change as one transaction: the rules map holds two generations (the key's `gen` byte) and
//!   the `cfg` map names the active one. [`XdpProgram::stage_rules`] writes the new claims under the
//!   inactive generation (packets do not see them), [`XdpProgram::switch_rules`] flips the active
//!   generation with one array write, and [`XdpProgram::clear_inactive_rules`] deletes the old one. A
//!   stage that fails removes what it wrote, so a failed update leaves the claims packets see, and the
//!   room for the next update, as they were. Each generation holds at most [`RULE_CAPACITY`] entries;
//!   more is refused before anything is written ([`XdpError::TooManyRules`]).
//! - Native mode is never downgraded silently: asking for [`XdpMode::Native`] on an interface whose driver
//!   has no XDP support fails with [`XdpError::NativeUnsupported`] instead of falling back to SKB mode,
//!   because the AF_XDP sockets must then be bound in copy mode too and the operator should choose that
//!   (`skb_mode: true`) knowingly.
//!
//! Loading and attaching go through `bpf::program`: after loading, the program and map file
//! descriptors are duplicated and the libbpf object is closed, so the handles are plain
//! [`OwnedFd`](std::os::fd::OwnedFd)s, the types are `Send + Sync` without any `unsafe impl`, and every
//! map operation is one `bpf(2)` call on the control path, never per packet.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::ops::{BitOr, BitOrAssign};
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::bpf::program::{self, Aligned, Attachment, Map};

/// The compiled `xsk_filter` program (`bpf/xsk_filter.bpf.c`).
pub(crate) static XSK_FILTER_OBJ: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/xsk_filter.o")));

/// Stats map indices, as in `bpf/xsk_filter.bpf.c`.
const STAT_CLAIMED: u32 = 0;
const STAT_PASSED: u32 = 1;
const STAT_REDIRECT_FAILED: u32 = 2;

/// Value stored for a port or protocol rule (the program only tests presence).
const RULE_PRESENT: u32 = 1;

/// Rule-map entries one set of claims may use: port and protocol rules plus per-address entries
/// (`RULES_MAX` of `bpf/xsk_filter.bpf.c`; the map holds two generations of this size).
pub const RULE_CAPACITY: usize = 4096;

/// The value of the filter's `cfg` map, as the C `struct filter_cfg`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FilterCfg {
    /// Non-zero: claim every packet.
    claim_all: u32,
    /// The generation of rules packets see (0 or 1).
    active: u32,
}

/// How the program is attached to the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// In the driver, before any socket buffer is allocated (`XDP_FLAGS_DRV_MODE`). Needs driver support
    /// (veth has it).
    Native,
    /// Generic XDP on socket buffers (`XDP_FLAGS_SKB_MODE`): works on every interface, slower, copy-mode
    /// AF_XDP only.
    Skb,
}

impl XdpMode {
    /// The mode bit of the `XDP_FLAGS_*` flags.
    pub(crate) fn flags(self) -> u32 {
        match self {
            XdpMode::Native => cne_sys::XDP_FLAGS_DRV_MODE,
            XdpMode::Skb => cne_sys::XDP_FLAGS_SKB_MODE,
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        })
    }
}

/// Errors of loading, attaching and configuring XDP programs.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// No interface of that name in this network namespace.
    #[error("netdev {ifname} not found")]
    NetdevNotFound {
        /// The interface name asked for.
        ifname: String,
    },
    /// The interface already runs an XDP program that is not ours.
    #[error(
        "{ifname} already has XDP program id {id} ({name}) attached; refusing to replace it without --force"
    )]
    AlreadyAttached {
        /// The interface.
        ifname: String,
        /// Kernel id of the program found.
        id: u32,
        /// Its name (`?` when it could not be read).
        name: String,
    },
    /// Native mode asked for on an interface whose driver cannot run XDP programs.
    #[error("netdev {ifname} does not support native XDP; use skb mode (skb_mode: true)")]
    NativeUnsupported {
        /// The interface.
        ifname: String,
    },
    /// A libbpf or `bpf(2)` call failed (the cause is the error's source).
    #[error("{call} on {target} failed")]
    Bpf {
        /// The failing call.
        call: &'static str,
        /// What it was called on (object, program, map or interface).
        target: String,
        /// The error the kernel or libbpf reported.
        #[source]
        source: io::Error,
    },
    /// A BPF map does not have the key or value size this crate was built for.
    #[error("BPF map {map}: key/value size {found:?}, expected {expected:?}")]
    MapLayout {
        /// The map.
        map: &'static str,
        /// Key and value size of the loaded map.
        found: (u32, u32),
        /// Key and value size this crate uses.
        expected: (u32, u32),
    },
    /// More claims than one generation of the rule map holds; nothing was written.
    #[error(
        "the claims need {count} XDP rule-map entries, more than the filter's limit of {limit} \
         (one per VIP protocol/port rule plus one per VIP address)"
    )]
    TooManyRules {
        /// Entries the claims need.
        count: usize,
        /// Entries one generation holds.
        limit: usize,
    },
    /// `--force` could not remove the `bpf_link` through which another process holds its program.
    #[error(
        "{ifname}: XDP program id {id} ({name}) is held by {link} of another process and --force could \
         not detach it; stop that process (or detach the link: `bpftool link detach id ID`)"
    )]
    ForeignLink {
        /// The interface.
        ifname: String,
        /// Kernel id of the program.
        id: u32,
        /// Its name.
        name: String,
        /// The link: `bpf_link id N`, or `a bpf_link` when it could not be listed.
        link: String,
        /// Why `BPF_LINK_DETACH` failed.
        #[source]
        source: io::Error,
    },
    /// A rule that cannot be expressed.
    #[error("invalid rule {rule}: {reason}")]
    InvalidRule {
        /// The rule.
        rule: Rule,
        /// Why it is refused.
        reason: &'static str,
    },
}

impl XdpError {
    pub(crate) fn bpf(call: &'static str, target: impl Into<String>, source: io::Error) -> Self {
        XdpError::Bpf {
            call,
            target: target.into(),
            source,
        }
    }
}

/// Traffic the filter claims for the AF_XDP socket: packets to `addr`, optionally only of one protocol,
/// optionally only to one destination port of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Destination address (IPv4 or IPv6).
    pub addr: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...); `None` claims all traffic to `addr`.
    pub proto: Option<u8>,
    /// Destination port (TCP, UDP, SCTP, UDP-Lite, DCCP); `None` claims all ports of `proto`.
    pub port: Option<u16>,
}

impl Rule {
    /// All traffic to `addr` (sets [`AddrFlags::OWN_ALL`] on it).
    pub fn address(addr: IpAddr) -> Self {
        Rule {
            addr,
            proto: None,
            port: None,
        }
    }

    /// All traffic of protocol `proto` to `addr`.
    pub fn proto(addr: IpAddr, proto: u8) -> Self {
        Rule {
            addr,
            proto: Some(proto),
            port: None,
        }
    }

    /// Traffic of protocol `proto` to destination port `port` of `addr`.
    pub fn port(addr: IpAddr, proto: u8, port: u16) -> Self {
        Rule {
            addr,
            proto: Some(proto),
            port: Some(port),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        match self.proto {
            Some(p) => write!(f, " proto {p}")?,
            None => f.write_str(" any proto")?,
        }
        match self.port {
            Some(p) => write!(f, " port {p}"),
            None => f.write_str(" any port"),
        }
    }
}

/// Whether the transport header of `proto` starts with source and destination ports.
fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

/// Per-address claims of the filter (the value of the `(addr, 0, 0)` entry of the rules map).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AddrFlags(u32);

impl AddrFlags {
    /// No per-address claims.
    pub const NONE: AddrFlags = AddrFlags(0);
    /// All traffic to the address, including its neighbour discovery (implies [`AddrFlags::NEIGH`]).
    pub const OWN_ALL: AddrFlags = AddrFlags(1 << 0);
    /// ARP requests/replies whose target IP is the address; ICMPv6 neighbour solicitations whose target
    /// is the address and neighbour advertisements sent to it.
    pub const NEIGH: AddrFlags = AddrFlags(1 << 1);
    /// IP fragments to the address (IPv4 with MF or a non-zero offset, IPv6 with a Fragment header):
    /// non-first fragments carry no ports, so all fragments of a datagram are claimed together.
    pub const FRAGS: AddrFlags = AddrFlags(1 << 2);
    /// ICMP errors to the address (ICMPv4 destination unreachable, time exceeded, parameter problem;
    /// ICMPv6 types 1-4), which quote a packet the address sent: a load balancer delivers them to the
    /// backend of the quoted flow. Echo requests and other ICMP are not claimed by this flag.
    pub const ICMP_ERRORS: AddrFlags = AddrFlags(1 << 3);
    const ALL: u32 = 0b1111;

    /// The raw bits, as the BPF program sees them.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// Flags from raw bits; unknown bits are dropped.
    pub fn from_bits_truncate(bits: u32) -> Self {
        AddrFlags(bits & Self::ALL)
    }
    /// Whether all flags of `other` are set.
    pub fn contains(self, other: AddrFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for AddrFlags {
    type Output = AddrFlags;
    fn bitor(self, rhs: AddrFlags) -> AddrFlags {
        AddrFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for AddrFlags {
    fn bitor_assign(&mut self, rhs: AddrFlags) {
        self.0 |= rhs.0;
    }
}

/// Counters of the filter program, summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterStats {
    /// Packets a claim matched (including those whose redirect failed).
    pub claimed: u64,
    /// Packets nothing claimed, passed to the kernel.
    pub passed: u64,
    /// Claimed packets with no socket at their queue: passed to the kernel instead.
    pub redirect_failed: u64,
}

/// Key of the filter's `rules` map and the decap program's `decap_addrs` map, laid out like the C
/// `struct addr_key { __u32 addr[4]; __u8 proto; __u8 gen; __u16 port; }`: the address as 16 bytes in
/// network order (IPv4 as `::ffff:a.b.c.d`), the generation of the claims (always 0 in the decap map,
/// whose C struct calls it `pad`), the port in network order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct RuleKey {
    addr: [u8; 16],
    proto: u8,
    gen: u8,
    port: [u8; 2],
}

impl RuleKey {
    pub(crate) fn new(addr: IpAddr, proto: u8, port: u16) -> Self {
        let addr = match addr {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        RuleKey {
            addr,
            proto,
            gen: 0,
            port: port.to_be_bytes(),
        }
    }

    /// The same key in generation `gen`.
    pub(crate) fn in_gen(self, gen: u8) -> Self {
        RuleKey { gen, ..self }
    }

    /// The generation the key belongs to.
    pub(crate) fn gen(&self) -> u8 {
        self.gen
    }

    /// The per-address entry of `addr`.
    pub(crate) fn address(addr: IpAddr) -> Self {
        Self::new(addr, 0, 0)
    }
}

/// The `xsk_filter` XDP program attached to one interface, with its maps. See the module docs.
///
/// Dropping it detaches the program (if it is still the one attached).
#[derive(Debug)]
pub struct XdpProgram {
    // Declared first: dropped (detached) before the map descriptors close.
    attachment: Attachment,
    xsks_map: Map<u32, u32>,
    cfg: Map<u32, FilterCfg>,
    rules: Map<RuleKey, u32>,
    stats: Map<u32, u64>,
}

impl XdpProgram {
    /// Loads the filter and attaches it to `ifname` in `mode`. It starts claiming nothing; configure it
    /// with [`set_claim_all`](Self::set_claim_all), [`add_rule`](Self::add_rule) and
    /// [`own_address`](Self::own_address), and insert the sockets into
    /// [`xsks_map_fd`](Self::xsks_map_fd).
    ///
    /// Errors: [`XdpError::NetdevNotFound`]; [`XdpError::AlreadyAttached`] when the interface runs an XDP
    /// program and `force` is false (with `force` it is replaced); [`XdpError::NativeUnsupported`];
    /// [`XdpError::Bpf`] when loading or attaching fails (libbpf prints the verifier log to stderr).
    pub fn attach(ifname: &str, mode: XdpMode, force: bool) -> Result<Self, XdpError> {
        let index = program::ifindex(ifname)?;
        Attachment::refuse_foreign(ifname, index, force)?;
        let loaded = program::load_object(
            &XSK_FILTER_OBJ.0,
            c"xsk_filter",
            c"xsk_filter",
            &[c"xsks_map", c"cfg", c"rules", c"stats"],
            &[],
        )?;
        let mut maps = loaded.maps.into_iter();
        let mut next = |name: &'static str| {
            maps.next().ok_or_else(|| {
                XdpError::bpf(
                    "bpf_object__find_map_by_name",
                    name,
                    io::Error::from_raw_os_error(libc::ENOENT),
                )
            })
        };
        let xsks_map = Map::checked("xsks_map", next("xsks_map")?)?;
        let cfg = Map::checked("cfg", next("cfg")?)?;
        let rules = Map::checked("rules", next("rules")?)?;
        let stats = Map::checked("stats", next("stats")?)?;
        let attachment = Attachment::attach(ifname, index, mode, force, loaded.prog)?;
        log::info!(
            "{ifname}: attached XDP program xsk_filter id {} in {mode} mode",
            attachment.prog_id()
        );
        Ok(XdpProgram {
            attachment,
            xsks_map,
            cfg,
            rules,
            stats,
        })
    }

    /// Puts `front`, an XDP program that hands what it does not handle on to this filter by tail call (see
    /// [`crate::bpf::fast::FastProgram::set_fallback`]), in front of the filter: the interface runs
    /// `front` from now on. The switch is one link update, so no packet meets neither program; dropping
    /// the filter still detaches whatever the link runs.
    pub fn set_front(&self, front: BorrowedFd<'_>) -> Result<(), XdpError> {
        self.attachment.run_instead(front)
    }

    /// Makes the interface run the filter itself again (undoes [`set_front`](Self::set_front)).
    pub fn clear_front(&self) -> Result<(), XdpError> {
        self.attachment.run_instead(self.attachment.prog())
    }

    /// The XSKMAP: an AF_XDP socket bound to queue `q` goes at index `q`.
    pub fn xsks_map_fd(&self) -> BorrowedFd<'_> {
        self.xsks_map.fd()
    }

    /// Puts the AF_XDP socket `xsk` (bound to `queue` of this interface) into the XSKMAP: claimed packets
    /// received on `queue` go to it from now on. The map holds its own reference to the socket until
    /// [`remove_socket`](Self::remove_socket) or until the program is dropped.
    pub fn insert_socket(&self, queue: u32, xsk: BorrowedFd<'_>) -> Result<(), XdpError> {
        let fd = u32::try_from(xsk.as_raw_fd()).map_err(|_| {
            XdpError::bpf(
                "bpf_map_update_elem",
                "xsks_map",
                io::Error::from_raw_os_error(libc::EBADF),
            )
        })?;
        self.xsks_map.update(&queue, &fd)
    }

    /// Removes the socket at `queue` from the XSKMAP (claimed packets on that queue then fall back to
    /// the kernel); `false` when there was none.
    pub fn remove_socket(&self, queue: u32) -> Result<bool, XdpError> {
        self.xsks_map.delete(&queue)
    }

    /// Entries of the XSKMAP: sockets can serve receive queues `0..xsks_map_entries()`.
    pub fn xsks_map_entries(&self) -> u32 {
        self.xsks_map.max_entries
    }

    /// The interface the program is attached to.
    pub fn ifname(&self) -> &str {
        self.attachment.ifname()
    }

    /// The attach mode.
    pub fn mode(&self) -> XdpMode {
        self.attachment.mode()
    }

    /// The kernel id of the program (as `ip link` and `bpftool` show it).
    pub fn prog_id(&self) -> u32 {
        self.attachment.prog_id()
    }

    /// Claims all traffic (like libxdp's default program) or only what the rules claim.
    pub fn set_claim_all(&self, on: bool) -> Result<(), XdpError> {
        let mut c = self.filter_cfg()?;
        c.claim_all = u32::from(on);
        self.cfg.update(&0u32, &c)
    }

    fn filter_cfg(&self) -> Result<FilterCfg, XdpError> {
        Ok(self.cfg.lookup(&0u32)?.unwrap_or_default())
    }

    /// The generation of rules packets see.
    fn active_gen(&self) -> Result<u8, XdpError> {
        Ok(u8::from(self.filter_cfg()?.active & 1 == 1))
    }

    fn validate(rule: &Rule) -> Result<(), XdpError> {
        let invalid = |reason| {
            Err(XdpError::InvalidRule {
                rule: *rule,
                reason,
            })
        };
        match (rule.proto, rule.port) {
            (None, Some(_)) => invalid("a port needs a protocol"),
            (Some(0), _) => invalid("protocol 0 is reserved for the per-address entry"),
            (Some(_), Some(0)) => {
                invalid("port 0 is not a port; leave the port out to claim all ports")
            }
            (Some(p), Some(_)) if !has_ports(p) => invalid("this protocol has no ports"),
            _ => Ok(()),
        }
    }

    fn rule_key(rule: &Rule, gen: u8) -> Option<RuleKey> {
        rule.proto
            .map(|p| RuleKey::new(rule.addr, p, rule.port.unwrap_or(0)).in_gen(gen))
    }

    /// Claims the traffic `rule` describes (in the claims packets see now). A rule without protocol
    /// sets [`AddrFlags::OWN_ALL`] on the address, keeping its other flags.
    pub fn add_rule(&self, rule: &Rule) -> Result<(), XdpError> {
        Self::validate(rule)?;
        match Self::rule_key(rule, self.active_gen()?) {
            Some(key) => self.rules.update(&key, &RULE_PRESENT),
            None => self.own_address(rule.addr, AddrFlags::OWN_ALL),
        }
    }

    /// Stops claiming what `rule` describes; `false` when it was not claimed.
    pub fn remove_rule(&self, rule: &Rule) -> Result<bool, XdpError> {
        Self::validate(rule)?;
        match Self::rule_key(rule, self.active_gen()?) {
            Some(key) => self.rules.delete(&key),
            None => {
                let flags = self.address_flags(rule.addr)?;
                if !flags.contains(AddrFlags::OWN_ALL) {
                    return Ok(false);
                }
                self.set_address_flags(rule.addr, AddrFlags(flags.0 & !AddrFlags::OWN_ALL.0))?;
                Ok(true)
            }
        }
    }

    /// Adds `flags` to the per-address entry of `addr` (flags already set stay set).
    pub fn own_address(&self, addr: IpAddr, flags: AddrFlags) -> Result<(), XdpError> {
        let current = self.address_flags(addr)?;
        self.set_address_flags(addr, current | flags)
    }

    /// Removes the per-address entry of `addr` (its port and protocol rules stay); `false` if absent.
    pub fn disown_address(&self, addr: IpAddr) -> Result<bool, XdpError> {
        let key = RuleKey::address(addr).in_gen(self.active_gen()?);
        self.rules.delete(&key)
    }

    /// The flags of the per-address entry of `addr` ([`AddrFlags::NONE`] when absent).
    pub fn address_flags(&self, addr: IpAddr) -> Result<AddrFlags, XdpError> {
        let key = RuleKey::address(addr).in_gen(self.active_gen()?);
        Ok(self
            .rules
            .lookup(&key)?
            .map_or(AddrFlags::NONE, AddrFlags::from_bits_truncate))
    }

    fn set_address_flags(&self, addr: IpAddr, flags: AddrFlags) -> Result<(), XdpError> {
        let key = RuleKey::address(addr).in_gen(self.active_gen()?);
        if flags.is_empty() {
            self.rules.delete(&key).map(drop)
        } else {
            self.rules.update(&key, &flags.bits())
        }
    }

    /// Deletes every entry of generation `gen`.
    fn clear_gen(&self, gen: u8) -> Result<(), XdpError> {
        self.rules.delete_where(|k| k.gen == gen)
    }

    /// Removes every rule and per-address entry (of both generations).
    pub fn clear_rules(&self) -> Result<(), XdpError> {
        self.rules.delete_where(|_| true)
    }

    /// The rule-map entries (generation 0) that `rules` plus `addresses` make: one per port or protocol
    /// rule, one per address with flags (a rule without protocol adds [`AddrFlags::OWN_ALL`] to its
    /// address), duplicates merged.
    fn entries(
        rules: &[Rule],
        addresses: &[(IpAddr, AddrFlags)],
    ) -> Result<Vec<(RuleKey, u32)>, XdpError> {
        let mut wanted: Vec<(RuleKey, u32)> = Vec::with_capacity(rules.len() + addresses.len());
        let mut seen: HashSet<RuleKey> = HashSet::with_capacity(rules.len());
        let mut addr_flags: Vec<(IpAddr, AddrFlags)> = addresses.to_vec();
        for rule in rules {
            Self::validate(rule)?;
            match Self::rule_key(rule, 0) {
                Some(key) => {
                    if seen.insert(key) {
                        wanted.push((key, RULE_PRESENT));
                    }
                }
                None => addr_flags.push((rule.addr, AddrFlags::OWN_ALL)),
            }
        }
        let mut merged: Vec<(RuleKey, AddrFlags)> = Vec::new();
        let mut at: std::collections::HashMap<RuleKey, usize> = std::collections::HashMap::new();
        for (addr, flags) in addr_flags {
            let key = RuleKey::address(addr);
            match at.get(&key) {
                Some(&i) => merged[i].1 |= flags,
                None => {
                    at.insert(key, merged.len());
                    merged.push((key, flags));
                }
            }
        }
        wanted.extend(
            merged
                .into_iter()
                .filter(|(_, f)| !f.is_empty())
                .map(|(k, f)| (k, f.bits())),
        );
        Ok(wanted)
    }

    /// The rule-map entries `rules` plus `addresses` need (what is checked against
    /// [`RULE_CAPACITY`]); errors for invalid rules.
    pub fn entries_needed(
        rules: &[Rule],
        addresses: &[(IpAddr, AddrFlags)],
    ) -> Result<usize, XdpError> {
        Ok(Self::entries(rules, addresses)?.len())
    }

    /// Entries one set of claims may use on this program (half the rule map).
    pub fn rule_capacity(&self) -> usize {
        usize::try_from(self.rules.max_entries / 2).unwrap_or(usize::MAX)
    }

    /// Writes `rules` plus `addresses` as the inactive generation of claims, which packets do not see
    /// until [`switch_rules`](Self::switch_rules). Whatever the inactive generation held before (the
    /// claims before the last switch, or an abandoned stage) is deleted first.
    ///
    /// Errors: [`XdpError::TooManyRules`] when the claims need more than
    /// [`rule_capacity`](Self::rule_capacity) entries (checked before anything is written);
    /// [`XdpError::InvalidRule`]; [`XdpError::Bpf`] when a map write fails, after deleting what this
    /// call wrote: on every error the claims packets see are untouched and the inactive generation is
    /// empty, so a failure never takes room from the next attempt.
    pub fn stage_rules(
        &self,
        rules: &[Rule],
        addresses: &[(IpAddr, AddrFlags)],
    ) -> Result<(), XdpError> {
        let wanted = Self::entries(rules, addresses)?;
        let limit = self.rule_capacity();
        if wanted.len() > limit {
            return Err(XdpError::TooManyRules {
                count: wanted.len(),
                limit,
            });
        }
        let inactive = 1 - self.active_gen()?;
        self.clear_gen(inactive)?;
        let written = wanted
            .iter()
            .try_for_each(|(key, value)| self.rules.update(&key.in_gen(inactive), value));
        if let Err(e) = written {
            if let Err(clear) = self.clear_gen(inactive) {
                log::warn!(
                    "{}: removing a failed stage of XDP claims: {}",
                    self.ifname(),
                    crate::error_chain(&clear)
                );
            }
            return Err(e);
        }
        Ok(())
    }

    /// Makes the staged claims the ones packets see, with one write of the `cfg` map; the previous
    /// claims become the inactive generation (a second switch brings them back) until
    /// [`clear_inactive_rules`](Self::clear_inactive_rules) or the next stage deletes them.
    pub fn switch_rules(&self) -> Result<(), XdpError> {
        let mut c = self.filter_cfg()?;
        c.active = u32::from(c.active & 1 == 0);
        self.cfg.update(&0u32, &c)
    }

    /// Deletes the inactive generation of claims (the previous ones after a switch).
    pub fn clear_inactive_rules(&self) -> Result<(), XdpError> {
        self.clear_gen(1 - self.active_gen()?)
    }

    /// Makes the claims exactly `rules` plus `addresses`, as one transaction: stage, switch, clear the
    /// old generation. On an error before the switch, the claims packets see are unchanged.
    pub fn replace_rules(
        &self,
        rules: &[Rule],
        addresses: &[(IpAddr, AddrFlags)],
    ) -> Result<(), XdpError> {
        self.stage_rules(rules, addresses)?;
        self.switch_rules()?;
        self.clear_inactive_rules()
    }

    /// The number of rule-map entries packets see (port/protocol rules plus per-address entries).
    pub fn rule_count(&self) -> Result<usize, XdpError> {
        let gen = self.active_gen()?;
        Ok(self.rules.keys()?.iter().filter(|k| k.gen == gen).count())
    }

    /// The number of entries in the inactive generation (staged, or the previous claims).
    pub fn inactive_rule_count(&self) -> Result<usize, XdpError> {
        let gen = 1 - self.active_gen()?;
        Ok(self.rules.keys()?.iter().filter(|k| k.gen == gen).count())
    }

    /// The counters, summed over all CPUs.
    pub fn stats(&self) -> Result<FilterStats, XdpError> {
        Ok(FilterStats {
            claimed: self.stats.percpu_sum(STAT_CLAIMED)?,
            passed: self.stats.percpu_sum(STAT_PASSED)?,
            redirect_failed: self.stats.percpu_sum(STAT_REDIRECT_FAILED)?,
        })
    }

    /// The attached program's descriptor (for a program that hands frames to it by tail call).
    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.attachment.prog()
    }

    /// Runs the program once on `frame` (`BPF_PROG_RUN`, no socket involved): the XDP verdict and the
    /// frame as the program left it. For tests of the filter logic.
    #[doc(hidden)]
    pub fn test_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), XdpError> {
        self.attachment.test_run(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn rule_key_layout_matches_the_c_struct() {
        assert_eq!(size_of::<RuleKey>(), 20);
        let k = RuleKey::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 17, 53);
        let bytes: [u8; 20] = {
            let mut b = [0u8; 20];
            b[..16].copy_from_slice(&k.addr);
            b[16] = k.proto;
            b[17] = k.gen;
            b[18..].copy_from_slice(&k.port);
            b
        };
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1, 17, 0, 0, 53]
        );
        let v6 = RuleKey::address(IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1)));
        assert_eq!(&v6.addr[..4], &[0x20, 0x01, 0, 2]);
        assert_eq!((v6.proto, v6.port), (0, [0, 0]));
    }

    #[test]
    fn invalid_rules_are_refused() {
        let addr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let bad = [
            Rule {
                addr,
                proto: None,
                port: Some(80),
            },
            Rule {
                addr,
                proto: Some(0),
                port: None,
            },
            Rule {
                addr,
                proto: Some(6),
                port: Some(0),
            },
            Rule {
                addr,
                proto: Some(1),
                port: Some(7),
            },
        ];
        for rule in bad {
            let err = XdpProgram::validate(&rule).expect_err("must be refused");
            assert!(err.to_string().contains("invalid rule"), "{err}");
        }
        for rule in [
            Rule {
                addr,
                proto: None,
                port: None,
            },
            Rule {
                addr,
                proto: Some(1),
                port: None,
            },
            Rule {
                addr,
                proto: Some(132),
                port: Some(38412),
            },
        ] {
            XdpProgram::validate(&rule).expect("valid");
        }
    }

    #[test]
    fn addr_flags_combine() {
        let f = AddrFlags::NEIGH | AddrFlags::FRAGS;
        assert!(f.contains(AddrFlags::NEIGH));
        assert!(!f.contains(AddrFlags::OWN_ALL));
        assert_eq!(AddrFlags::from_bits_truncate(0xff).bits(), 0b1111);
        assert!(AddrFlags::NONE.is_empty());
    }

    #[test]
    fn missing_netdev_is_named() {
        let err =
            XdpProgram::attach("cne-no-such-if", XdpMode::Skb, false).expect_err("no such netdev");
        assert_eq!(err.to_string(), "netdev cne-no-such-if not found");
    }

    #[test]
    fn embedded_object_is_an_elf_file() {
        assert_eq!(&XSK_FILTER_OBJ.0[..4], b"\x7fELF");
    }

    #[test]
    fn handles_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<XdpProgram>();
        send_sync::<crate::bpf::decap::DecapProgram>();
        send_sync::<crate::afpacket::AfPacket>();
    }

    #[test]
    fn rule_constructors_and_display() {
        let a = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(
            Rule::port(a, 6, 80).to_string(),
            "198.18.0.1 proto 6 port 80"
        );
        assert_eq!(Rule::proto(a, 1).to_string(), "198.18.0.1 proto 1 any port");
        assert_eq!(
            Rule::address(a).to_string(),
            "198.18.0.1 any proto any port"
        );
    }
}

//! The kernel fast path of the Maglev load balancer: `bpf/maglev_fast.bpf.c`, loaded, its maps written
//! through typed accessors, and run on frames with `BPF_PROG_RUN`.
//!
//! The program makes nf-maglev's decision for the common case (a TCP or UDP packet to a VIP, not a
//! fragment, IPv4 without options or IPv6 without extension headers) in XDP: flow hash,
//! connection map (LRU), Maglev table, GRE encapsulation or L2 direct server return, `XDP_TX`. Everything else is
//! handed on unchanged (see the C file's header for where to). This module knows nothing of VIPs as the
//! load balancer configures them: it stores what it is given, in the layout the C program reads.
//!
//! Invariants: the VIP and backend maps and the table array hold two generations; the `cfg` map's
//! `active` field names the one packets see. A writer fills the inactive generation
//! ([`FastProgram::set_vip`], [`FastProgram::set_backends`], [`FastProgram::set_table`] into the
//! generation's own part of the table array), switches with one array write ([`FastProgram::set_cfg`])
//! and then removes the old generation ([`FastProgram::clear_generation`]), so that packets always see one
//! complete state. Every map's key and value sizes are checked against the types here at load time.
//!
//! Each CPU's flow cache in the program holds decisions of one state epoch (`cfg.active`, whose low
//! bit is the generation: [`FastProgram::set_cfg`] advances it on every write) and one count of
//! connection-map changes (the program counts the entries it replaces; [`FastProgram::record_conns`]
//! and [`FastProgram::clear_conns`] count theirs after writing), so no decision outlives what it was
//! made from.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::bpf::filter::{RuleKey, XdpError};
use crate::bpf::program::{self, Aligned, Map, MapSize};

/// The compiled `maglev_fast` program (`bpf/maglev_fast.bpf.c`).
static MAGLEV_FAST_OBJ: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/maglev_fast.o")));

/// Counters of the C program (`STAT_MAX`).
const STATS: usize = 15;

/// VIP entries per generation (`VIPS_MAX` of the C program).
pub const VIP_CAPACITY: usize = 1024;
/// Backend entries per generation in the hash map that holds backends with ids at or above
/// [`FastLimits::backend_slots`] (`BACKENDS_MAX` of the C program).
pub const BACKEND_CAPACITY: usize = 16384;

/// `VIP_HAS_TABLE`, `VIP_HAS_PAST` and `BACKEND_NEW_CONNS` of the C program.
const VIP_HAS_TABLE: u8 = 1 << 0;
const VIP_HAS_PAST: u8 = 1 << 1;
const BACKEND_NEW_CONNS: u8 = 1 << 0;
/// `BACKEND_PRESENT`: an entry of the backend array that is a backend.
const BACKEND_PRESENT: u8 = 1 << 1;

/// The program's configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastCfg {
    /// Seed of the flow hash (nf-maglev's `hash_seed`).
    pub seed: u64,
    /// The generation packets see (0 or 1). [`FastProgram::set_cfg`] writes it as the low bit of an
    /// epoch that every write advances (the program's flow cache holds decisions of one epoch only).
    pub active: u32,
    /// Largest IP packet sent to a backend: a GRE packet that would be longer is handed on.
    pub mtu: u16,
    /// The port's MAC address, source of every frame sent.
    pub mac: [u8; 6],
    /// Idle timeout of a TCP connection, seconds.
    pub tcp_timeout: u32,
    /// Idle timeout of a TCP connection after a FIN or RST, seconds.
    pub tcp_fin_timeout: u32,
    /// Idle timeout of a UDP flow, seconds.
    pub udp_timeout: u32,
    /// Connections each CPU records per second at most (the flood guard); 0: no limit.
    pub max_new_per_sec: u32,
}

/// The C program's `struct fast_cfg`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CfgValue {
    seed: u64,
    active: u32,
    mtu: u16,
    mac: [u8; 6],
    tcp_timeout: u32,
    tcp_fin_timeout: u32,
    udp_timeout: u32,
    max_new_per_sec: u32,
    backend_slots: u32,
}

impl From<&FastCfg> for CfgValue {
    fn from(c: &FastCfg) -> Self {
        CfgValue {
            seed: c.seed,
            active: c.active,
            mtu: c.mtu,
            mac: c.mac,
            tcp_timeout: c.tcp_timeout,
            tcp_fin_timeout: c.tcp_fin_timeout,
            udp_timeout: c.udp_timeout,
            max_new_per_sec: c.max_new_per_sec,
            backend_slots: 0,
        }
    }
}

/// How the program forwards a VIP's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastMode {
    /// GRE encapsulation (RFC 2784) in the backend's outer header.
    Gre,
    /// L2 direct server return: only the MAC addresses change.
    L2Dsr,
}

/// One VIP as the program sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastVip {
    /// Index of the first entry of the VIP's Maglev table in the table array.
    pub table_base: u32,
    /// Slots of the table (0: no table, packets are handed on).
    pub table_size: u32,
    /// The VIP's id: recorded with each connection, whose backend counts only for the same VIP.
    pub id: u32,
    /// Forwarding mode.
    pub mode: FastMode,
    /// Whether user space keeps past tables for the VIP: TCP packets other than a SYN that miss the
    /// connection map are then handed on.
    pub has_past: bool,
}

/// The C program's `struct vip_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct VipInfo {
    base: u32,
    size: u32,
    id: u32,
    mode: u8,
    flags: u8,
    pad: u16,
}

/// The outer IP header of GRE packets to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastOuter {
    /// No outer header of the backend's family: GRE packets to it are handed on.
    None,
    /// IPv4 template (total length and checksum are written per packet) and the ones-complement sum of
    /// its 16-bit words other than total length and checksum, unfolded.
    V4 {
        /// The header template.
        header: [u8; 20],
        /// The sum of its fixed words.
        sum: u32,
    },
    /// IPv6 template (first word and payload length are written per packet).
    V6 {
        /// The header template.
        header: [u8; 40],
    },
}

/// One backend as the program sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastBackend {
    /// Destination MAC of frames to it.
    pub mac: [u8; 6],
    /// Whether it takes new connections (weight above zero and healthy, or its VIP fails open).
    pub new_conns: bool,
    /// Its GRE outer header.
    pub outer: FastOuter,
}

/// The C program's `struct backend`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BackendValue {
    sum: u32,
    mac: [u8; 6],
    flags: u8,
    outer: u8,
    hdr: [u8; 40],
}

impl Default for BackendValue {
    fn default() -> Self {
        BackendValue {
            sum: 0,
            mac: [0; 6],
            flags: 0,
            outer: 0,
            hdr: [0; 40],
        }
    }
}

/// The C program's `struct backend_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct BackendKey {
    id: u32,
    gen: u32,
}

/// The C program's `struct conn_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ConnKey {
    src: [u8; 16],
    dst: [u8; 16],
    /// Source and destination port, network order.
    ports: [u8; 4],
    proto: u8,
    pad: [u8; 3],
}

/// The C program's `struct conn_val`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ConnValue {
    backend: u32,
    vip: u32,
    expires: u32,
    closing: u8,
    pad: [u8; 3],
}

/// A connection for the program's connection map: the flow and where its packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastConn {
    /// Client address, 16 bytes (IPv4 as `::ffff:a.b.c.d`).
    pub src: [u8; 16],
    /// VIP address, likewise.
    pub dst: [u8; 16],
    /// Client port.
    pub sport: u16,
    /// VIP port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Id of the backend.
    pub backend: u32,
    /// Id of the VIP the backend id belongs to.
    pub vip: u32,
    /// Whether a FIN or RST was seen (the short timeout applies).
    pub closing: bool,
    /// Idle timeout from now, seconds.
    pub timeout: u32,
}

/// The C program's `struct traffic`, and traffic of one VIP or backend summed over all CPUs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastTraffic {
    /// Packets forwarded.
    pub packets: u64,
    /// Their bytes, as received.
    pub bytes: u64,
    /// Connections given a backend by the Maglev table.
    pub new_conns: u64,
}

/// The ids below `bound` grouped into runs of ids at most [`ID_RUN_GAP`] apart, as `(first id, last id,
/// positions in ids)`: a run is read in one batch (the ids between its members come along), so the
/// usual dense ids take a call or two, and when a long run with churn has left the live ids sparse
/// among many retired ones, little is copied for nothing.
fn id_runs(ids: &[u32], bound: u32) -> Vec<(u32, u32, Vec<usize>)> {
    let mut order: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] < bound).collect();
    order.sort_unstable_by_key(|&i| ids[i]);
    let mut runs: Vec<(u32, u32, Vec<usize>)> = Vec::new();
    for i in order {
        match runs.last_mut() {
            Some((_, last, members)) if ids[i] - *last <= ID_RUN_GAP => {
                *last = ids[i];
                members.push(i);
            }
            _ => runs.push((ids[i], ids[i], vec![i])),
        }
    }
    runs
}

/// See [`id_runs`].
const ID_RUN_GAP: u32 = 64;

/// Ids at or above these have no traffic counters (`VIP_IDS_MAX`, `BACKEND_IDS_MAX` of the C program).
pub const VIP_IDS_COUNTED: u32 = 4096;
/// See [`VIP_IDS_COUNTED`].
pub const BACKEND_IDS_COUNTED: u32 = 65536;

/// The program's clock: seconds of `CLOCK_MONOTONIC` (`bpf_ktime_get_coarse_ns`), computed as the
/// program computes them (see [`secs_of_ns`]).
pub fn clock_secs() -> u32 {
    secs_of_ns(program::monotonic_coarse_ns())
}

/// Nanoseconds to seconds as the program converts them, without a division: `(ns >> 20) * 4503600 >>
/// 32`, within 8e-8 of `ns / 10^9`.
pub fn secs_of_ns(ns: u64) -> u32 {
    // The shift leaves at most 32 bits: the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    let secs = (((ns >> 20).wrapping_mul(4_503_600)) >> 32) as u32;
    secs
}

/// Sizes chosen when the program is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastLimits {
    /// Entries of the table array, both generations together (e.g. 2 x VIPs x table size).
    pub table_entries: u32,
    /// Entries of the connection map.
    pub conns: u32,
    /// Backend ids per generation kept in an array (a lookup without a hash); backends with higher ids
    /// are kept in a hash map of [`BACKEND_CAPACITY`] entries per generation.
    pub backend_slots: u32,
}

/// Counters of the program, summed over all CPUs. The `handed_*` fields count frames handed on, by
/// reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastStats {
    /// Frames forwarded with `XDP_TX`.
    pub forwarded: u64,
    /// Their bytes, as received.
    pub forwarded_bytes: u64,
    /// Not the common case (parse): VLAN stacks, options, extension headers, fragments, ICMP, ARP, ...
    pub handed_not_fast: u64,
    /// To no VIP.
    pub handed_no_vip: u64,
    /// To a VIP without a table.
    pub handed_no_table: u64,
    /// TCP other than a SYN, unknown to the connection map, to a VIP with past tables.
    pub handed_past: u64,
    /// A table slot naming a backend the program does not know.
    pub handed_no_backend: u64,
    /// GRE to a backend without an outer header.
    pub handed_no_outer: u64,
    /// Too big for the tunnel.
    pub handed_too_big: u64,
    /// A head or tail adjustment failed (dropped).
    pub adjust_failed: u64,
    /// Packets whose backend came from the connection map.
    pub conn_hits: u64,
    /// Connections recorded.
    pub conn_new: u64,
    /// Entries found past their idle timeout.
    pub conn_expired: u64,
    /// New flows not recorded because of the flood guard.
    pub conn_limited: u64,
    /// Connection hits decided by a CPU's flow cache, without the VIP and connection lookups (part of
    /// `conn_hits`), counted once the frame is sent: a cached flow's packet handed on (too big for the
    /// tunnel) counts under its reason only.
    pub cache_hits: u64,
}

/// An XDP action, as a program returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAction {
    /// `XDP_ABORTED`.
    Aborted,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_PASS`.
    Pass,
    /// `XDP_TX`.
    Tx,
    /// `XDP_REDIRECT`.
    Redirect,
    /// Anything else.
    Unknown(u32),
}

impl From<u32> for XdpAction {
    fn from(v: u32) -> Self {
        match v {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            n => XdpAction::Unknown(n),
        }
    }
}

/// What [`FastProgram::test_run`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastRun {
    /// The program's verdict.
    pub action: XdpAction,
    /// The frame as the program left it.
    pub output: Vec<u8>,
    /// Mean time per run in nanoseconds, as the kernel measured it.
    pub ns_per_run: u32,
}

/// The loaded (not attached) `maglev_fast` program and its maps.
#[derive(Debug)]
pub struct FastProgram {
    prog: OwnedFd,
    xsks_map: Map<u32, u32>,
    fallback: Map<u32, u32>,
    cfg: Map<u32, CfgValue>,
    vips: Map<RuleKey, VipInfo>,
    backend_slots: Map<u32, BackendValue>,
    backends: Map<BackendKey, BackendValue>,
    /// Entries of `backend_slots` per generation.
    slots: u32,
    tables: Map<u32, u32>,
    conns: Map<ConnKey, ConnValue>,
    vip_traffic: Map<u32, FastTraffic>,
    backend_traffic: Map<u32, FastTraffic>,
    stats: Map<u32, [u64; STATS]>,
    /// `user_changes`: advanced after every write to the connection map, so that no CPU's flow cache keeps a
    /// decision made from the entries before it.
    changes: Map<u32, u32>,
    user_changes: std::sync::Mutex<u32>,
}

impl FastProgram {
    /// Loads the program with the given map sizes. Needs `CAP_BPF` (root); errors name the failing call.
    pub fn load(limits: FastLimits) -> Result<Self, XdpError> {
        let slots = limits.backend_slots.clamp(1, u32::MAX / 2);
        let loaded = program::load_object(
            &MAGLEV_FAST_OBJ.0,
            c"maglev_fast",
            c"maglev_fast",
            &[
                c"xsks_map",
                c"fallback",
                c".data.cfg",
                c"vips",
                c"backend_slots",
                c"backends",
                c"tables",
                c"conns",
                c"vip_traffic",
                c"backend_traffic",
                c"stats",
                c".data.user_changes",
            ],
            &[
                (c"tables", MapSize::Entries(limits.table_entries.max(1))),
                (c"conns", MapSize::Entries(limits.conns.max(1))),
                (c"backend_slots", MapSize::Entries(slots.saturating_mul(2))),
                // The compiled-in size is one CPU's part.
                (c"flow_cache", MapSize::PerCpu),
            ],
        )?;
        let mut maps = loaded.maps.into_iter();
        let mut next = |name: &'static str| {
            maps.next().ok_or_else(|| XdpError::Bpf {
                call: "bpf_object__find_map_by_name",
                target: name.to_string(),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            })
        };
        Ok(FastProgram {
            xsks_map: Map::checked("xsks_map", next("xsks_map")?)?,
            fallback: Map::checked("fallback", next("fallback")?)?,
            cfg: Map::checked("cfg", next("cfg")?)?,
            vips: Map::checked("vips", next("vips")?)?,
            backend_slots: Map::checked("backend_slots", next("backend_slots")?)?,
            slots,
            backends: Map::checked("backends", next("backends")?)?,
            tables: Map::checked("tables", next("tables")?)?,
            conns: Map::checked("conns", next("conns")?)?,
            vip_traffic: Map::checked("vip_traffic", next("vip_traffic")?)?,
            backend_traffic: Map::checked("backend_traffic", next("backend_traffic")?)?,
            stats: Map::checked("stats", next("stats")?)?,
            changes: Map::checked("user_changes", next("user_changes")?)?,
            user_changes: std::sync::Mutex::new(0),
            prog: loaded.prog,
        })
    }

    /// Hands every frame the fast path does not forward to `prog` (an XDP program, typically the
    /// `xsk_filter` of [`crate::bpf::filter::XdpProgram::prog_fd`]) by tail call, instead of to this
    /// program's own socket map.
    pub fn set_fallback(&self, prog: BorrowedFd<'_>) -> Result<(), XdpError> {
        let fd = u32::try_from(prog.as_raw_fd()).map_err(|_| {
            XdpError::bpf(
                "bpf_map_update_elem",
                "fallback",
                io::Error::from_raw_os_error(libc::EBADF),
            )
        })?;
        self.fallback.update(&0, &fd)
    }

    /// Stops handing frames to a fallback program.
    pub fn clear_fallback(&self) -> Result<(), XdpError> {
        self.fallback.delete(&0).map(drop)
    }

    /// Binds the AF_XDP socket `xsk` to receive queue `queue`: without a fallback program, VIP frames the
    /// fast path does not forward go there.
    pub fn set_socket(&self, queue: u32, xsk: BorrowedFd<'_>) -> Result<(), XdpError> {
        let fd = u32::try_from(xsk.as_raw_fd()).map_err(|_| {
            XdpError::bpf(
                "bpf_map_update_elem",
                "xsks_map",
                io::Error::from_raw_os_error(libc::EBADF),
            )
        })?;
        self.xsks_map.update(&queue, &fd)
    }

    /// The generation packets see now (0 or 1).
    pub fn active_generation(&self) -> Result<u8, XdpError> {
        Ok(u8::from(
            self.cfg.lookup(&0)?.unwrap_or_default().active & 1 == 1,
        ))
    }

    /// Writes the configuration: one array write, so a change of `active` switches every packet to the
    /// other generation at once. The epoch written advances by one or two to the next one of generation
    /// `cfg.active`: decisions the program cached before no longer hold.
    pub fn set_cfg(&self, cfg: &FastCfg) -> Result<(), XdpError> {
        let now = self.cfg.lookup(&0)?.unwrap_or_default().active;
        let mut epoch = now.wrapping_add(1);
        if epoch & 1 != cfg.active & 1 {
            epoch = epoch.wrapping_add(1);
        }
        let value = CfgValue {
            backend_slots: self.slots,
            active: epoch,
            ..CfgValue::from(cfg)
        };
        self.cfg.update(&0, &value)
    }

    /// Advances `user_changes` after a write to the connection map (the program reads the counter before
    /// the map, so what it caches from older entries carries the older count).
    fn conns_changed(&self) -> Result<(), XdpError> {
        let mut n = self
            .user_changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *n = n.wrapping_add(1);
        self.changes.update(&0, &*n)
    }

    /// Writes the VIP `(addr, proto, port)` (`port` 0: all ports) of generation `gen`.
    pub fn set_vip(
        &self,
        addr: IpAddr,
        proto: u8,
        port: u16,
        gen: u8,
        vip: &FastVip,
    ) -> Result<(), XdpError> {
        let mut flags = 0;
        if vip.table_size > 0 {
            flags |= VIP_HAS_TABLE;
        }
        if vip.has_past {
            flags |= VIP_HAS_PAST;
        }
        let info = VipInfo {
            base: vip.table_base,
            size: vip.table_size,
            id: vip.id,
            mode: match vip.mode {
                FastMode::Gre => 0,
                FastMode::L2Dsr => 1,
            },
            flags,
            pad: 0,
        };
        self.vips
            .update(&RuleKey::new(addr, proto, port).in_gen(gen & 1), &info)
    }

    /// Makes `backends` (by id) the backends of generation `gen`: the generation's part of the backend
    /// array is rewritten whole (ids not listed are no backend), ids beyond it go to the hash map, which
    /// [`FastProgram::clear_generation`] must have emptied for `gen` before.
    pub fn set_backends(&self, gen: u8, backends: &[(u32, FastBackend)]) -> Result<(), XdpError> {
        let slots = self.slots as usize;
        let mut values = vec![BackendValue::default(); slots];
        for (id, backend) in backends {
            let mut v = BackendValue {
                mac: backend.mac,
                flags: BACKEND_PRESENT
                    | if backend.new_conns {
                        BACKEND_NEW_CONNS
                    } else {
                        0
                    },
                ..BackendValue::default()
            };
            match backend.outer {
                FastOuter::None => {}
                FastOuter::V4 { header, sum } => {
                    v.outer = 4;
                    v.sum = sum;
                    v.hdr[..20].copy_from_slice(&header);
                }
                FastOuter::V6 { header } => {
                    v.outer = 6;
                    v.hdr = header;
                }
            }
            match values.get_mut(*id as usize) {
                Some(slot) => *slot = v,
                None => self.backends.update(
                    &BackendKey {
                        id: *id,
                        gen: u32::from(gen & 1),
                    },
                    &v,
                )?,
            }
        }
        self.write_backend_half(gen, &values)
    }

    /// Writes the part of the backend array of generation `gen`.
    fn write_backend_half(&self, gen: u8, values: &[BackendValue]) -> Result<(), XdpError> {
        let base = u32::from(gen & 1) * self.slots;
        let keys: Vec<u32> = (base..).take(values.len()).collect();
        self.backend_slots.update_batch(&keys, values)
    }

    /// Entries of the table array.
    pub fn table_capacity(&self) -> u32 {
        self.tables.max_entries
    }

    /// Writes `slots` (backend ids) into the table array from index `base` on. Fails before writing
    /// anything when they do not fit.
    pub fn set_table(&self, base: u32, slots: &[u32]) -> Result<(), XdpError> {
        let fits = u32::try_from(slots.len())
            .ok()
            .and_then(|n| base.checked_add(n))
            .is_some_and(|end| end <= self.tables.max_entries);
        if !fits {
            return Err(XdpError::bpf(
                "bpf_map_update_elem",
                "tables",
                io::Error::from_raw_os_error(libc::E2BIG),
            ));
        }
        let keys: Vec<u32> = (base..).take(slots.len()).collect();
        self.tables.update_batch(&keys, slots)
    }

    /// Deletes every VIP and backend entry of generation `gen` (after a switch away from it).
    pub fn clear_generation(&self, gen: u8) -> Result<(), XdpError> {
        self.vips.delete_where(|k| k.gen() == gen & 1)?;
        self.backends
            .delete_where(|k| k.gen == u32::from(gen & 1))?;
        self.write_backend_half(gen, &vec![BackendValue::default(); self.slots as usize])
    }

    /// Records `conns` in the connection map, so that the next packets of those flows go where user
    /// space decided (connections it forwarded from a past Maglev table, which the program does not
    /// keep). Replaces what the program recorded for the same flow.
    pub fn record_conns(&self, conns: &[FastConn]) -> Result<(), XdpError> {
        let now = clock_secs();
        let (keys, values): (Vec<ConnKey>, Vec<ConnValue>) = conns
            .iter()
            .map(|c| {
                let mut ports = [0u8; 4];
                ports[..2].copy_from_slice(&c.sport.to_be_bytes());
                ports[2..].copy_from_slice(&c.dport.to_be_bytes());
                (
                    ConnKey {
                        src: c.src,
                        dst: c.dst,
                        ports,
                        proto: c.proto,
                        pad: [0; 3],
                    },
                    ConnValue {
                        backend: c.backend,
                        vip: c.vip,
                        expires: now.saturating_add(c.timeout).max(1),
                        closing: u8::from(c.closing),
                        pad: [0; 3],
                    },
                )
            })
            .unzip();
        let written = self.conns.update_batch(&keys, &values);
        self.conns_changed()?;
        written
    }

    /// The connection map's live entry for a flow: `(backend id, VIP id)`.
    pub fn conn(&self, c: &FastConn) -> Result<Option<(u32, u32)>, XdpError> {
        let mut ports = [0u8; 4];
        ports[..2].copy_from_slice(&c.sport.to_be_bytes());
        ports[2..].copy_from_slice(&c.dport.to_be_bytes());
        let key = ConnKey {
            src: c.src,
            dst: c.dst,
            ports,
            proto: c.proto,
            pad: [0; 3],
        };
        let now = clock_secs();
        Ok(self
            .conns
            .lookup(&key)?
            .filter(|v| v.expires != 0 && now <= v.expires)
            .map(|v| (v.backend, v.vip)))
    }

    /// Traffic the program forwarded for each VIP of `ids`, summed over all CPUs, in the order of `ids`
    /// (zero for ids at or above [`VIP_IDS_COUNTED`], which are not counted). Ids near each other are
    /// read in one batch.
    pub fn vip_traffic(&self, ids: &[u32]) -> Result<Vec<FastTraffic>, XdpError> {
        Self::traffic(&self.vip_traffic, ids)
    }

    /// Traffic the program forwarded to each backend of `ids`, summed over all CPUs, in the order of
    /// `ids` (zero for ids at or above [`BACKEND_IDS_COUNTED`], which are not counted).
    pub fn backend_traffic(&self, ids: &[u32]) -> Result<Vec<FastTraffic>, XdpError> {
        Self::traffic(&self.backend_traffic, ids)
    }

    /// Reads the counters of `ids` in runs of nearby ids ([`id_runs`]), one batch read each.
    fn traffic(map: &Map<u32, FastTraffic>, ids: &[u32]) -> Result<Vec<FastTraffic>, XdpError> {
        let cpus = program::possible_cpus()?;
        let mut out = vec![FastTraffic::default(); ids.len()];
        for (first, last, members) in id_runs(ids, map.max_entries) {
            let values = map.percpu_array_read(first, last - first + 1)?;
            for i in members {
                let at = (ids[i] - first) as usize * cpus;
                if let Some(per_cpu) = values.get(at..at + cpus) {
                    out[i] = per_cpu
                        .iter()
                        .fold(FastTraffic::default(), |a, t| FastTraffic {
                            packets: a.packets.wrapping_add(t.packets),
                            bytes: a.bytes.wrapping_add(t.bytes),
                            new_conns: a.new_conns.wrapping_add(t.new_conns),
                        });
                }
            }
        }
        Ok(out)
    }

    /// The program's descriptor (to attach it, e.g. with
    /// [`crate::bpf::filter::XdpProgram::set_front`]).
    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Forgets every recorded connection.
    pub fn clear_conns(&self) -> Result<(), XdpError> {
        let cleared = self.conns.delete_where(|_| true);
        self.conns_changed()?;
        cleared
    }

    /// The counters, summed over all CPUs.
    pub fn stats(&self) -> Result<FastStats, XdpError> {
        let mut sum = [0u64; STATS];
        for cpu in self.stats.percpu_lookup(&0)?.unwrap_or_default() {
            for (a, b) in sum.iter_mut().zip(cpu) {
                *a = a.wrapping_add(b);
            }
        }
        Ok(FastStats {
            forwarded: sum[0],
            forwarded_bytes: sum[1],
            handed_not_fast: sum[2],
            handed_no_vip: sum[3],
            handed_no_table: sum[4],
            handed_past: sum[5],
            handed_no_backend: sum[6],
            handed_no_outer: sum[7],
            handed_too_big: sum[8],
            adjust_failed: sum[9],
            conn_hits: sum[10].wrapping_add(sum[14]),
            conn_new: sum[11],
            conn_expired: sum[12],
            conn_limited: sum[13],
            cache_hits: sum[14],
        })
    }

    /// Runs the program `repeat` times (at least once) on `frame` with `BPF_PROG_RUN`, without any
    /// interface: the verdict and output of the last run and the mean time per run. Maps are live, so
    /// runs after the first see the connections the first recorded. With no fallback program and no
    /// AF_XDP socket, a frame handed on comes back with [`XdpAction::Pass`].
    ///
    /// The kernel does not restore the frame between repetitions: each run sees the frame the previous
    /// one left (a GRE packet after the first encapsulation, which the program then hands on). For the
    /// cost of forwarding, run once per frame and average, or use live frames.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<FastRun, XdpError> {
        let run = program::test_run(self.prog.as_fd(), frame, repeat, "maglev_fast")?;
        Ok(FastRun {
            action: XdpAction::from(run.retval),
            output: run.output,
            ns_per_run: run.duration_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_object_is_an_elf_file() {
        assert_eq!(&MAGLEV_FAST_OBJ.0[..4], b"\x7fELF");
    }

    #[test]
    fn counters_are_read_in_runs_of_nearby_ids() {
        assert!(id_runs(&[], 10).is_empty());
        let ids = [70, 3, 0, 200, 3, 1000, 134, 65_536];
        assert_eq!(
            id_runs(&ids, 65_536),
            [
                (0, 3, vec![2, 1, 4]),
                (70, 134, vec![0, 6]),
                (200, 200, vec![3]),
                (1000, 1000, vec![5]),
            ],
            "runs split past 64 apart, an id repeated is read twice, the id past the bound is left out"
        );
    }

    #[test]
    fn value_layouts_match_the_c_structs() {
        assert_eq!(std::mem::size_of::<CfgValue>(), 40);
        assert_eq!(std::mem::size_of::<ConnValue>(), 16);
        assert_eq!(std::mem::size_of::<FastTraffic>(), 24);
        assert_eq!(std::mem::size_of::<VipInfo>(), 16);
        assert_eq!(std::mem::size_of::<BackendValue>(), 52);
        assert_eq!(std::mem::size_of::<BackendKey>(), 8);
        assert_eq!(std::mem::size_of::<ConnKey>(), 40);
        assert_eq!(std::mem::size_of::<RuleKey>(), 20);
    }

    /// A frame the fast path does not take reaches the fallback program by tail call.
    #[test]
    #[ignore = "needs root"]
    fn frames_not_forwarded_reach_the_fallback_program() {
        lab::require_root();
        let fast = FastProgram::load(FastLimits {
            table_entries: 16,
            conns: 16,
            backend_slots: 16,
        })
        .expect("loads");
        let filter = program::load_object(
            &crate::bpf::filter::XSK_FILTER_OBJ.0,
            c"xsk_filter",
            c"xsk_filter",
            &[c"cfg", c"stats"],
            &[],
        )
        .expect("loads xsk_filter");
        let cfg: Map<u32, [u32; 2]> =
            Map::checked("cfg", filter.maps[0].try_clone().expect("dup")).expect("cfg");
        let stats: Map<u32, u64> =
            Map::checked("stats", filter.maps[1].try_clone().expect("dup")).expect("stats");
        // claim_all: the filter claims every frame (and, with no socket, passes it to the kernel).
        cfg.update(&0, &[1, 0]).expect("claim_all");
        let mut frame = [0u8; 42];
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(
            fast.test_run(&frame, 1).expect("runs").action,
            XdpAction::Pass
        );
        assert_eq!(stats.percpu_sum(0).expect("claimed"), 0, "no fallback yet");
        fast.set_fallback(filter.prog.as_fd())
            .expect("sets the fallback");
        let run = fast.test_run(&frame, 1).expect("runs");
        assert_eq!((run.action, &run.output[..]), (XdpAction::Pass, &frame[..]));
        assert_eq!(
            stats.percpu_sum(0).expect("claimed"),
            1,
            "the filter saw it"
        );
        assert_eq!(fast.stats().expect("stats").handed_not_fast, 2);
        fast.clear_fallback().expect("clears");
        fast.test_run(&frame, 1).expect("runs");
        assert_eq!(stats.percpu_sum(0).expect("claimed"), 1);
        assert_eq!(fast.stats().expect("stats").handed_not_fast, 3);
    }

    #[test]
    fn seconds_without_division_measure_timeouts_exactly_enough() {
        let year = 31_536_000_000_000_000u64;
        for ns in [
            0,
            999_999_999,
            1_000_000_000,
            86_400_000_000_000,
            year,
            10 * year,
        ] {
            // Against ns / 10^9: the shift truncates up to 1 ms, the rounded-up factor gains 8e-8.
            let exact = ns / 1_000_000_000;
            let got = u64::from(secs_of_ns(ns));
            assert!(
                got + 1 >= exact && got <= exact + 1 + exact / 10_000_000,
                "{ns} ns -> {got} s"
            );
            // What matters is a difference: a 900 s idle timeout lasts 900 s to the second, as the
            // workers' whole-second clock gives it.
            let later = u64::from(secs_of_ns(ns + 900_000_000_000));
            assert!(
                (899..=901).contains(&(later - got)),
                "{ns}: {later} - {got}"
            );
        }
    }

    #[test]
    fn actions_from_numbers() {
        assert_eq!(XdpAction::from(3), XdpAction::Tx);
        assert_eq!(XdpAction::from(2), XdpAction::Pass);
        assert_eq!(XdpAction::from(9), XdpAction::Unknown(9));
    }
}

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
//! After loading, the program and map file descriptors are duplicated and the libbpf object is closed:
//! the handles are plain [`OwnedFd`]s, so the types are `Send + Sync` without any `unsafe impl`, and every
//! map operation is one `bpf(2)` call on the control path, never per packet.

use std::collections::HashSet;
use std::ffi::{c_int, c_void, CStr};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::net::IpAddr;
use std::ops::{BitOr, BitOrAssign};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::sys::{parse_ret, parse_ret_fd};
use cne_sys as sys;

/// A BPF object file embedded in the binary, aligned for libelf.
#[repr(C, align(8))]
pub(crate) struct Aligned<B: ?Sized>(pub(crate) B);

/// The compiled `xsk_filter` program (`bpf/xsk_filter.bpf.c`).
static XSK_FILTER_OBJ: &Aligned<[u8]> =
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
    fn flags(self) -> u32 {
        match self {
            XdpMode::Native => sys::XDP_FLAGS_DRV_MODE,
            XdpMode::Skb => sys::XDP_FLAGS_SKB_MODE,
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
    fn bpf(call: &'static str, target: impl Into<String>, source: io::Error) -> Self {
        XdpError::Bpf {
            call,
            target: target.into(),
            source,
        }
    }
}

/// `size_of::<T>()` as the `u32` the BPF ABI uses (all sizes here are a few hundred bytes at most).
fn size_u32<T>() -> u32 {
    u32::try_from(size_of::<T>()).unwrap_or(u32::MAX)
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
/// `struct rule_key { __u32 addr[4]; __u8 proto; __u8 gen; __u16 port; }`: the address as 16 bytes in
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
    fn in_gen(self, gen: u8) -> Self {
        RuleKey { gen, ..self }
    }

    /// The per-address entry of `addr`.
    pub(crate) fn address(addr: IpAddr) -> Self {
        Self::new(addr, 0, 0)
    }
}

/// A BPF map of the loaded object whose key and value sizes were checked to be those of `K` and `V`
/// (plain-data types without padding: integers and byte arrays), so every call that hands the kernel a
/// `&K` or `&V` stays within those objects.
#[derive(Debug)]
pub(crate) struct Map<K, V> {
    name: &'static str,
    fd: OwnedFd,
    max_entries: u32,
    /// Per-CPU maps read one `V` per possible CPU: only [`Map::percpu_sum`] may read them.
    percpu: bool,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K: Copy + Default, V: Copy + Default> Map<K, V> {
    /// Takes a map descriptor after checking its key and value sizes against `K` and `V`.
    pub(crate) fn checked(name: &'static str, fd: OwnedFd) -> Result<Self, XdpError> {
        let mut info = sys::bpf_map_info::default();
        let mut len = size_u32::<sys::bpf_map_info>();
        // SAFETY: `info` is a writable bpf_map_info of `len` bytes; the kernel writes at most `len` bytes.
        let rc = unsafe {
            sys::bpf_obj_get_info_by_fd(
                fd.as_raw_fd(),
                std::ptr::from_mut(&mut info).cast::<c_void>(),
                &mut len,
            )
        };
        parse_ret(rc).map_err(|e| XdpError::bpf("bpf_obj_get_info_by_fd", name, e))?;
        let expected = (size_u32::<K>(), size_u32::<V>());
        let found = (info.key_size, info.value_size);
        if found != expected {
            return Err(XdpError::MapLayout {
                map: name,
                found,
                expected,
            });
        }
        Ok(Map {
            name,
            fd,
            max_entries: info.max_entries,
            percpu: matches!(
                info.type_,
                sys::BPF_MAP_TYPE_PERCPU_HASH
                    | sys::BPF_MAP_TYPE_PERCPU_ARRAY
                    | sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
                    | sys::BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE
            ),
            _kv: PhantomData,
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Writes `key -> value`.
    pub(crate) fn update(&self, key: &K, value: &V) -> Result<(), XdpError> {
        // SAFETY: key and value point to live objects of the map's key and value size (checked in
        // Map::checked).
        let rc = unsafe {
            sys::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                std::ptr::from_ref(key).cast::<c_void>(),
                std::ptr::from_ref(value).cast::<c_void>(),
                u64::from(sys::BPF_ANY),
            )
        };
        parse_ret(rc)
            .map(drop)
            .map_err(|e| XdpError::bpf("bpf_map_update_elem", self.name, e))
    }

    /// Reads the value at `key`; `None` when absent.
    pub(crate) fn lookup(&self, key: &K) -> Result<Option<V>, XdpError> {
        if self.percpu {
            return Err(XdpError::bpf(
                "bpf_map_lookup_elem",
                self.name,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let mut value = V::default();
        // SAFETY: key points to a live object of the key size, value to a writable one of the value size
        // (the map is not per-CPU, so the kernel writes exactly one value).
        let rc = unsafe {
            sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                std::ptr::from_ref(key).cast::<c_void>(),
                std::ptr::from_mut(&mut value).cast::<c_void>(),
            )
        };
        match parse_ret(rc) {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(XdpError::bpf("bpf_map_lookup_elem", self.name, e)),
        }
    }

    /// Deletes `key`; `false` when it was absent.
    pub(crate) fn delete(&self, key: &K) -> Result<bool, XdpError> {
        // SAFETY: key points to a live object of the map's key size.
        let rc = unsafe {
            sys::bpf_map_delete_elem(
                self.fd.as_raw_fd(),
                std::ptr::from_ref(key).cast::<c_void>(),
            )
        };
        match parse_ret(rc) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(XdpError::bpf("bpf_map_delete_elem", self.name, e)),
        }
    }

    /// All keys of a hash map (control path: allocates).
    pub(crate) fn keys(&self) -> Result<Vec<K>, XdpError> {
        let mut keys = Vec::new();
        let mut prev: Option<K> = None;
        loop {
            let mut next = K::default();
            let prev_ptr = prev
                .as_ref()
                .map_or(std::ptr::null(), |k| std::ptr::from_ref(k).cast::<c_void>());
            // SAFETY: prev_ptr is null (first key) or points to a live key; next is a writable key.
            let rc = unsafe {
                sys::bpf_map_get_next_key(
                    self.fd.as_raw_fd(),
                    prev_ptr,
                    std::ptr::from_mut(&mut next).cast::<c_void>(),
                )
            };
            match parse_ret(rc) {
                Ok(_) => {
                    keys.push(next);
                    prev = Some(next);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
                Err(e) => return Err(XdpError::bpf("bpf_map_get_next_key", self.name, e)),
            }
        }
    }
}

impl Map<u32, u64> {
    /// Sum over all possible CPUs of the `u64` at `index` of a per-CPU array.
    pub(crate) fn percpu_sum(&self, index: u32) -> Result<u64, XdpError> {
        if !self.percpu {
            return Err(XdpError::bpf(
                "bpf_map_lookup_elem",
                self.name,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        // SAFETY: libbpf_num_possible_cpus takes no arguments; it reads and caches a sysfs file.
        let ncpus = unsafe { sys::libbpf_num_possible_cpus() };
        let ncpus = parse_ret(ncpus).map_err(|e| {
            XdpError::bpf(
                "libbpf_num_possible_cpus",
                "/sys/devices/system/cpu/possible",
                e,
            )
        })?;
        // A u64 per-CPU value occupies exactly 8 bytes per CPU (values are rounded up to 8).
        let mut values = vec![0u64; usize::try_from(ncpus).unwrap_or(1).max(1)];
        // SAFETY: index is a live u32 key; values holds one 8-byte value per possible CPU, which is what
        // the kernel writes for a per-CPU map with 8-byte values (checked at load).
        let rc = unsafe {
            sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                std::ptr::from_ref(&index).cast::<c_void>(),
                values.as_mut_ptr().cast::<c_void>(),
            )
        };
        parse_ret(rc).map_err(|e| XdpError::bpf("bpf_map_lookup_elem", self.name, e))?;
        Ok(values.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
    }
}

/// A libbpf `*_opts` struct in zeroed memory.
///
/// libbpf's `OPTS_VALID` refuses (EINVAL) an opts struct whose bytes past the last field it knows are
/// not zero, trailing padding included. Rust leaves padding undefined in struct literals and in typed
/// copies (even of a `MaybeUninit`), so the struct lives in an array of `u64` (which has no padding, so
/// every move copies every byte) and is only ever written field by field through
/// [`LibbpfOpts::get_mut`].
struct LibbpfOpts<T> {
    buf: [u64; 16],
    _opts: PhantomData<T>,
}

impl<T> LibbpfOpts<T> {
    /// Zeroed opts with `sz` set to the size of `T`.
    ///
    /// # Safety
    /// All-zero bytes must be a valid `T`, and `T` must start with libbpf's `size_t sz` field.
    unsafe fn new() -> Self {
        const { assert!(size_of::<T>() <= 16 * 8 && std::mem::align_of::<T>() <= 8) };
        let mut buf = [0u64; 16];
        buf[0] = size_of::<T>() as u64;
        LibbpfOpts {
            buf,
            _opts: PhantomData,
        }
    }

    /// The struct, for field writes (never assign it whole: that would make its padding undefined).
    fn get_mut(&mut self) -> &mut T {
        // SAFETY: buf is 8-aligned and at least size_of::<T>() bytes (asserted in new); it holds a valid
        // T (zeroes, a valid T by new's contract, then field writes through this reference only).
        unsafe { &mut *self.buf.as_mut_ptr().cast::<T>() }
    }

    fn as_ptr(&self) -> *const T {
        self.buf.as_ptr().cast::<T>()
    }

    fn as_mut_ptr(&mut self) -> *mut T {
        self.buf.as_mut_ptr().cast::<T>()
    }
}

/// Closes a libbpf object on every path out of [`load_object`].
struct ObjectGuard(*mut sys::bpf_object);

impl Drop for ObjectGuard {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful bpf_object__open_mem and is closed exactly once.
        unsafe { sys::bpf_object__close(self.0) };
    }
}

/// Duplicates a descriptor owned by libbpf so that it outlives the object.
fn dup_fd(fd: c_int, call: &'static str, target: &str) -> Result<OwnedFd, XdpError> {
    let fd = parse_ret(fd).map_err(|e| XdpError::bpf(call, target, e))?;
    // SAFETY: fd is a descriptor libbpf holds open until bpf_object__close, which happens after this.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .map_err(|e| XdpError::bpf("fcntl(F_DUPFD_CLOEXEC)", target, e))
}

/// A loaded (not yet attached) program and its maps, in the order asked for.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) prog: OwnedFd,
    pub(crate) maps: Vec<OwnedFd>,
}

/// Opens and loads an embedded BPF object, returning its program and the named maps.
pub(crate) fn load_object(
    obj: &'static [u8],
    obj_name: &'static CStr,
    prog_name: &'static CStr,
    map_names: &[&'static CStr],
) -> Result<Loaded, XdpError> {
    let target = obj_name.to_string_lossy();
    // SAFETY: bpf_object_open_opts holds integers, a bool, a bitfield and pointers (all-zero is valid)
    // and starts with `size_t sz`.
    let mut opts = unsafe { LibbpfOpts::<sys::bpf_object_open_opts>::new() };
    opts.get_mut().object_name = obj_name.as_ptr();
    // SAFETY: obj is a 'static ELF image (libbpf may keep pointing into it while the object lives);
    // opts and the name it points to are valid for the call.
    let raw = unsafe {
        sys::bpf_object__open_mem(obj.as_ptr().cast::<c_void>(), obj.len(), opts.as_ptr())
    };
    if raw.is_null() {
        return Err(XdpError::bpf(
            "bpf_object__open_mem",
            target,
            io::Error::last_os_error(),
        ));
    }
    let object = ObjectGuard(raw);
    // SAFETY: object.0 is an open, not yet loaded object.
    let rc = unsafe { sys::bpf_object__load(object.0) };
    parse_ret(rc).map_err(|e| XdpError::bpf("bpf_object__load", target.clone(), e))?;

    // SAFETY: object.0 is a loaded object; prog_name is NUL-terminated.
    let prog = unsafe { sys::bpf_object__find_program_by_name(object.0, prog_name.as_ptr()) };
    if prog.is_null() {
        return Err(XdpError::bpf(
            "bpf_object__find_program_by_name",
            prog_name.to_string_lossy(),
            io::Error::from_raw_os_error(libc::ENOENT),
        ));
    }
    // SAFETY: prog is a program of the loaded object, valid until the object is closed.
    let prog_fd = unsafe { sys::bpf_program__fd(prog) };
    let prog = dup_fd(prog_fd, "bpf_program__fd", &prog_name.to_string_lossy())?;

    let mut maps = Vec::with_capacity(map_names.len());
    for name in map_names {
        // SAFETY: object.0 is a loaded object; name is NUL-terminated.
        let map = unsafe { sys::bpf_object__find_map_by_name(object.0, name.as_ptr()) };
        if map.is_null() {
            return Err(XdpError::bpf(
                "bpf_object__find_map_by_name",
                name.to_string_lossy(),
                io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        // SAFETY: map is a map of the loaded object, valid until the object is closed.
        let fd = unsafe { sys::bpf_map__fd(map) };
        maps.push(dup_fd(fd, "bpf_map__fd", &name.to_string_lossy())?);
    }
    drop(object);
    Ok(Loaded { prog, maps })
}

/// The interface index of `ifname` in the current network namespace.
pub(crate) fn ifindex(ifname: &str) -> Result<u32, XdpError> {
    crate::sys::netdev::ifindex(ifname).ok_or_else(|| XdpError::NetdevNotFound {
        ifname: ifname.to_string(),
    })
}

/// Kernel id and name of a loaded program.
fn prog_info(fd: BorrowedFd<'_>) -> io::Result<(u32, String)> {
    let mut info = sys::bpf_prog_info::default();
    let mut len = size_u32::<sys::bpf_prog_info>();
    // SAFETY: info is a writable bpf_prog_info of len bytes; all its pointer fields are zero, so the
    // kernel writes nothing else.
    let rc = unsafe {
        sys::bpf_obj_get_info_by_fd(
            fd.as_raw_fd(),
            std::ptr::from_mut(&mut info).cast::<c_void>(),
            &mut len,
        )
    };
    parse_ret(rc)?;
    let name: Vec<u8> = info
        .name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| c.to_ne_bytes()[0])
        .collect();
    Ok((info.id, String::from_utf8_lossy(&name).into_owned()))
}

/// Name of the program with kernel id `id`, `?` if it cannot be read (it may have gone meanwhile).
fn prog_name_by_id(id: u32) -> String {
    // SAFETY: plain syscall wrapper; the returned descriptor is owned below.
    let fd = unsafe { sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return "?".to_string();
    }
    // SAFETY: fd is a fresh descriptor this function owns and nothing else closes.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    prog_info(fd.as_fd()).map_or_else(|_| "?".to_string(), |(_, name)| name)
}

/// Program ids attached to `ifindex`, per attach mode.
fn query(ifindex: u32, ifname: &str) -> Result<sys::bpf_xdp_query_opts, XdpError> {
    // SAFETY: bpf_xdp_query_opts holds integers (all-zero is valid) and starts with `size_t sz`.
    let mut opts = unsafe { LibbpfOpts::<sys::bpf_xdp_query_opts>::new() };
    let index = c_int::try_from(ifindex).map_err(|_| XdpError::NetdevNotFound {
        ifname: ifname.to_string(),
    })?;
    // SAFETY: opts is a writable bpf_xdp_query_opts whose sz field is its size.
    let rc = unsafe { sys::bpf_xdp_query(index, 0, opts.as_mut_ptr()) };
    parse_ret(rc).map_err(|e| XdpError::bpf("bpf_xdp_query", ifname, e))?;
    Ok(*opts.get_mut())
}

/// The `bpf_link` of type XDP on `ifindex` that holds program `prog_id`, if there is one: its kernel id
/// and an open descriptor. Links are global, interface indices are per network namespace: matching the
/// program id as well keeps a link of another namespace from being taken for ours.
fn find_xdp_link(ifindex: u32, prog_id: u32) -> Option<(u32, OwnedFd)> {
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // ENOENT: no more links (or no permission to list them).
        // SAFETY: next is a writable u32 for the call.
        parse_ret(unsafe { sys::bpf_link_get_next_id(id, &mut next) }).ok()?;
        id = next;
        // SAFETY: plain syscall wrapper; `parse_ret_fd` owns the returned descriptor.
        let Ok(fd) = parse_ret_fd(unsafe { sys::bpf_link_get_fd_by_id(id) }) else {
            continue; // released meanwhile
        };
        let mut info = sys::bpf_link_info::default();
        let mut len = size_u32::<sys::bpf_link_info>();
        // SAFETY: info is a writable bpf_link_info of len bytes; its pointer fields (for other link
        // types) are zero, so the kernel writes nothing else.
        let rc = unsafe {
            sys::bpf_obj_get_info_by_fd(
                fd.as_raw_fd(),
                std::ptr::from_mut(&mut info).cast::<c_void>(),
                &mut len,
            )
        };
        if parse_ret(rc).is_err() || info.type_ != sys::BPF_LINK_TYPE_XDP || info.prog_id != prog_id
        {
            continue;
        }
        // SAFETY: the link is of type XDP, so `xdp` is the union member the kernel filled in.
        let link_ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
        if link_ifindex == ifindex {
            return Some((id, fd));
        }
    }
}

/// A program attached to one interface through an XDP `bpf_link`: closing the link (on drop, or when the
/// process dies) detaches the program.
#[derive(Debug)]
pub(crate) struct Attachment {
    ifname: String,
    mode: XdpMode,
    prog_id: u32,
    prog: OwnedFd,
    /// The link holding `prog` on the interface. Only this process has it (the kernel creates link
    /// descriptors close-on-exec), so nobody else can change what it attaches.
    link: OwnedFd,
}

impl Attachment {
    /// Fails with [`XdpError::AlreadyAttached`] if `ifindex` runs a program, unless `force`.
    pub(crate) fn refuse_foreign(ifname: &str, ifindex: u32, force: bool) -> Result<(), XdpError> {
        if force {
            return Ok(());
        }
        let q = query(ifindex, ifname)?;
        match [q.drv_prog_id, q.skb_prog_id, q.hw_prog_id]
            .into_iter()
            .find(|id| *id != 0)
        {
            Some(id) => Err(XdpError::AlreadyAttached {
                ifname: ifname.to_string(),
                id,
                name: prog_name_by_id(id),
            }),
            None => Ok(()),
        }
    }

    /// Removes whatever XDP program `ifindex` runs (`--force`): a program held by a `bpf_link` is
    /// detached through the link (`BPF_LINK_DETACH`), one attached through netlink is detached by netlink.
    fn remove_existing(ifname: &str, ifindex: u32, index: c_int) -> Result<(), XdpError> {
        let q = query(ifindex, ifname)?;
        for (id, mode) in [
            (q.drv_prog_id, sys::XDP_FLAGS_DRV_MODE),
            (q.skb_prog_id, sys::XDP_FLAGS_SKB_MODE),
            (q.hw_prog_id, sys::XDP_FLAGS_HW_MODE),
        ] {
            if id == 0 {
                continue;
            }
            let name = prog_name_by_id(id);
            if let Some((link_id, link)) = find_xdp_link(ifindex, id) {
                log::warn!(
                    "{ifname}: detaching XDP program id {id} ({name}) held by bpf_link id {link_id}, \
                     as forced"
                );
                // SAFETY: plain syscall wrapper on an open link descriptor.
                let rc = unsafe { sys::bpf_link_detach(link.as_raw_fd()) };
                parse_ret(rc).map_err(|source| XdpError::ForeignLink {
                    ifname: ifname.to_string(),
                    id,
                    name,
                    link: format!("bpf_link id {link_id}"),
                    source,
                })?;
                continue;
            }
            log::warn!("{ifname}: detaching XDP program id {id} ({name}), as forced");
            // SAFETY: plain netlink request; a null opts pointer means no options.
            let rc = unsafe { sys::bpf_xdp_detach(index, mode, std::ptr::null()) };
            match parse_ret(rc) {
                Ok(_) => {}
                // Attached by a link we could not see (another user namespace, no permission to list).
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(XdpError::ForeignLink {
                        ifname: ifname.to_string(),
                        id,
                        name,
                        link: "a bpf_link".to_string(),
                        source: e,
                    })
                }
                Err(e) => return Err(XdpError::bpf("bpf_xdp_detach", ifname, e)),
            }
        }
        Ok(())
    }

    /// Attaches `prog` to `ifname` through an XDP `bpf_link`. Without `force`, an interface already
    /// running a program is refused; with it, that program is detached first (see
    /// [`remove_existing`](Self::remove_existing)).
    pub(crate) fn attach(
        ifname: &str,
        ifindex: u32,
        mode: XdpMode,
        force: bool,
        prog: OwnedFd,
    ) -> Result<Self, XdpError> {
        let index = c_int::try_from(ifindex).map_err(|_| XdpError::NetdevNotFound {
            ifname: ifname.to_string(),
        })?;
        if force {
            Self::remove_existing(ifname, ifindex, index)?;
        } else {
            Self::refuse_foreign(ifname, ifindex, false)?;
        }
        // SAFETY: bpf_link_create_opts holds integers, pointers and unions of those (all-zero is valid)
        // and starts with `size_t sz`.
        let mut opts = unsafe { LibbpfOpts::<sys::bpf_link_create_opts>::new() };
        // Only the mode bit: the kernel refuses the other XDP flags on links. A link never replaces an
        // attached program (EBUSY, or EEXIST for one in the other mode), which is the "no existing
        // program" guard the netlink attach needed XDP_FLAGS_UPDATE_IF_NOEXIST for.
        opts.get_mut().flags = mode.flags();
        // SAFETY: prog is an open program descriptor, index a valid interface index, opts a valid
        // bpf_link_create_opts for the call.
        let rc =
            unsafe { sys::bpf_link_create(prog.as_raw_fd(), index, sys::BPF_XDP, opts.as_ptr()) };
        let fd = match parse_ret(rc) {
            Ok(fd) => fd,
            Err(e) => {
                return Err(match e.raw_os_error() {
                    Some(libc::EOPNOTSUPP) if mode == XdpMode::Native => {
                        XdpError::NativeUnsupported {
                            ifname: ifname.to_string(),
                        }
                    }
                    Some(libc::ENODEV) => XdpError::NetdevNotFound {
                        ifname: ifname.to_string(),
                    },
                    // Lost a race with another loader: report who won.
                    Some(libc::EBUSY | libc::EEXIST) => {
                        match Self::refuse_foreign(ifname, ifindex, false) {
                            Err(found @ XdpError::AlreadyAttached { .. }) => found,
                            _ => XdpError::bpf("bpf_link_create(BPF_XDP)", ifname, e),
                        }
                    }
                    _ => XdpError::bpf("bpf_link_create(BPF_XDP)", ifname, e),
                });
            }
        };
        // SAFETY: fd is the fresh link descriptor bpf_link_create returned; nothing else owns it.
        let link = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut attachment = Attachment {
            ifname: ifname.to_string(),
            mode,
            prog_id: 0,
            prog,
            link,
        };
        // From here on, dropping `attachment` detaches.
        let (prog_id, _) = prog_info(attachment.prog.as_fd())
            .map_err(|e| XdpError::bpf("bpf_obj_get_info_by_fd", ifname, e))?;
        attachment.prog_id = prog_id;
        Ok(attachment)
    }

    pub(crate) fn ifname(&self) -> &str {
        &self.ifname
    }

    pub(crate) fn mode(&self) -> XdpMode {
        self.mode
    }

    pub(crate) fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Runs the program once on `frame` with `BPF_PROG_RUN`: its return value and the output frame.
    pub(crate) fn test_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), XdpError> {
        let too_big = || {
            XdpError::bpf(
                "bpf_prog_test_run_opts",
                self.ifname.clone(),
                io::Error::from_raw_os_error(libc::E2BIG),
            )
        };
        // Head adjustments can grow the frame by the XDP headroom at most (256 bytes).
        let mut out = vec![0u8; frame.len() + 256];
        // SAFETY: bpf_test_run_opts holds integers and pointers (all-zero is valid) and starts with
        // `size_t sz`.
        let mut opts = unsafe { LibbpfOpts::<sys::bpf_test_run_opts>::new() };
        let o = opts.get_mut();
        o.data_in = frame.as_ptr().cast::<c_void>();
        o.data_size_in = u32::try_from(frame.len()).map_err(|_| too_big())?;
        o.data_out = out.as_mut_ptr().cast::<c_void>();
        o.data_size_out = u32::try_from(out.len()).map_err(|_| too_big())?;
        o.repeat = 1;
        // SAFETY: data_in/data_out point to buffers of the sizes given in opts, live for the call.
        let rc = unsafe { sys::bpf_prog_test_run_opts(self.prog.as_raw_fd(), opts.as_mut_ptr()) };
        parse_ret(rc)
            .map_err(|e| XdpError::bpf("bpf_prog_test_run_opts", self.ifname.clone(), e))?;
        let o = opts.get_mut();
        out.truncate(o.data_size_out as usize);
        Ok((o.retval, out))
    }

    /// Detaches the program: `BPF_LINK_DETACH` on our link, so the program leaves the interface now
    /// even if a copy of the descriptor lived on somewhere. A link detached already (by `--force` of
    /// another instance, or because the interface is gone) is left alone.
    fn detach(&self) {
        // SAFETY: plain syscall wrapper on our open link descriptor.
        let rc = unsafe { sys::bpf_link_detach(self.link.as_raw_fd()) };
        match parse_ret(rc) {
            Ok(_) => log::debug!("{}: detached XDP program id {}", self.ifname, self.prog_id),
            Err(e) => log::warn!(
                "{}: detaching XDP program id {} (BPF_LINK_DETACH) failed: {e}; closing the link \
                 detaches it",
                self.ifname,
                self.prog_id
            ),
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.detach();
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
        let index = ifindex(ifname)?;
        Attachment::refuse_foreign(ifname, index, force)?;
        let loaded = load_object(
            &XSK_FILTER_OBJ.0,
            c"xsk_filter",
            c"xsk_filter",
            &[c"xsks_map", c"cfg", c"rules", c"stats"],
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
        for key in self.rules.keys()? {
            if key.gen == gen {
                self.rules.delete(&key)?;
            }
        }
        Ok(())
    }

    /// Removes every rule and per-address entry (of both generations).
    pub fn clear_rules(&self) -> Result<(), XdpError> {
        for key in self.rules.keys()? {
            self.rules.delete(&key)?;
        }
        Ok(())
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

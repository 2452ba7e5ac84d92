//! `Port`: one AF_XDP socket on `netdev:qid` with its four rings, the packet I/O of a worker.
//!
//! Opening is split in two so that ports can be set up by the main thread and used by workers:
//! [`XskSocket::open`] (`Send`) creates the socket, registers or shares the UMEM, maps the rings,
//! binds and inserts the socket into the XSKMAP; [`Port::attach`] then ties it to the worker's
//! [`FramePool`] and fills the fill ring. A `Port<'pool>` borrows its pool, so it lives on the
//! pool's thread together with the packets it hands out.
//!
//! The socket layer talks to the kernel directly (socket, setsockopt, mmap, bind), as xdpilone and
//! s2n-quic-xdp do, rather than through `xsk_socket__create_shared`: libxdp sizes fill and completion
//! rings per UMEM instead of per socket, and a failed first bind (for instance zero-copy on a driver
//! without it) leaves its UMEM object unusable, which would make the copy-mode fallback impossible.
//! libxdp is still used for what it is good at: loading its default redirect program
//! ([`XskMapSource::LibxdpDefault`]). With [`XskMapSource::Map`] no program is loaded at all (what
//! libxdp's `XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD` does) and the socket is written at index `qid` of
//! the given XSKMAP: our own XDP program, a pinned map, or the Kubernetes device plugin's map.
//!
//! UMEM sharing follows the kernel's rules: the first socket registers the UMEM (`XDP_UMEM_REG`);
//! later sockets on other queues or netdevs bind with `XDP_SHARED_UMEM` and their own fill and
//! completion rings, and inherit the copy/zero-copy and need-wakeup mode of the registering socket.
//!
//! Packet path invariants, per burst and never per packet: at most one acquire load and one release
//! store per ring, at most one `sendto` (TX kick, only when the kernel needs it: always in copy mode,
//! when the ring asks for it with need-wakeup), no allocation when the caller reuses its `Vec`s, and
//! no FFI call. Frames a port has lent to the kernel (fill and RX rings, TX and completion rings) are
//! counted, and taken back into the pool when the port is dropped.

use std::fmt;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use crate::bpf::filter::XdpMode;
use crate::frame::Frame;
use crate::sys::{cvt, cvt_fd, parse_ret};
use crate::xsk::packet::Packet;
use crate::xsk::ring::{ConsRing, ProdRing, RingMemory, XdpDesc};
use crate::xsk::stats::{read_xdp_stats, PortStats};
use crate::xsk::umem::{BoundSocket, FramePool, Mmap, Umem};

/// Default RX ring size (descriptors); the fill ring is twice as large.
pub const DEFAULT_RX_SIZE: u32 = 2048;
/// Default TX ring size (descriptors); the completion ring is as large.
pub const DEFAULT_TX_SIZE: u32 = 2048;

const AF_XDP: libc::c_int = 44;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
/// `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17): descriptors one copy-mode `sendto` may send (default 32).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// The kernel's default copy-mode TX budget per `sendto`.
const DEFAULT_TX_SKB_BUDGET: u32 = 32;
const IFNAMSIZ: usize = 16;

/// Which XSKMAP the socket is inserted into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XskMapSource {
    /// Load libxdp's default redirect program on the netdev if none is there, and use its map.
    /// Ports of this process on other queues of the same netdev share it; it is detached again when
    /// the last of them is dropped, if this process attached it. (Sockets inserted into its map with
    /// [`XskMapSource::Map`] do not keep it attached: open them with `LibxdpDefault` too.)
    #[default]
    LibxdpDefault,
    /// Insert the socket at index `qid` of this XSKMAP and load no program. The fd is borrowed: it
    /// must stay open while the port is being opened, and is not closed by the port.
    Map(RawFd),
}

/// Kernel busy polling for the socket (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`, `SO_BUSY_POLL_BUDGET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// Busy-poll time in microseconds.
    pub timeout_us: u32,
    /// Packets processed per busy-poll round (at most 65535).
    pub budget: u32,
}

/// How to open a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Network device name.
    pub ifname: String,
    /// Queue of the device.
    pub qid: u32,
    /// Mode of the XDP program when this port loads it ([`XskMapSource::LibxdpDefault`]).
    pub xdp_mode: XdpMode,
    /// Ask for zero-copy; falls back to copy mode with a warning when the driver cannot.
    pub zero_copy: bool,
    /// Let the kernel tell when it needs wakeup syscalls (`XDP_USE_NEED_WAKEUP`).
    pub need_wakeup: bool,
    /// Kernel busy polling.
    pub busy_poll: Option<BusyPoll>,
    /// Whether the port sets the busy-poll socket options itself (the default). `false` when the
    /// device plugin sets them (`/config_busy_poll` in UDS mode): `SO_PREFER_BUSY_POLL` and a raised
    /// `SO_BUSY_POLL_BUDGET` need `CAP_NET_ADMIN`, which a pod does not hold. The port still runs in
    /// busy-poll mode (it drives RX with `recvfrom`).
    pub busy_poll_sockopts: bool,
    /// RX ring size (power of two); the fill ring gets twice as many slots.
    pub rx_size: u32,
    /// TX ring size (power of two); the completion ring gets as many slots.
    pub tx_size: u32,
    /// XSKMAP to insert the socket into.
    pub xsk_map: XskMapSource,
}

impl PortConfig {
    /// Defaults for `ifname:qid`: native XDP, copy mode, need-wakeup, no busy polling, 2048-entry
    /// rings, libxdp's default program.
    pub fn new(ifname: impl Into<String>, qid: u32) -> Self {
        Self {
            ifname: ifname.into(),
            qid,
            xdp_mode: XdpMode::Native,
            zero_copy: false,
            need_wakeup: true,
            busy_poll: None,
            busy_poll_sockopts: true,
            rx_size: DEFAULT_RX_SIZE,
            tx_size: DEFAULT_TX_SIZE,
            xsk_map: XskMapSource::LibxdpDefault,
        }
    }

    fn validate(&self) -> Result<(), PortError> {
        let bad = |reason: String| Err(PortError::Config { reason });
        if self.ifname.is_empty() || self.ifname.len() >= IFNAMSIZ || self.ifname.contains('\0') {
            return bad(format!(
                "interface name {:?} must have 1 to {} bytes",
                self.ifname,
                IFNAMSIZ - 1
            ));
        }
        for (name, size) in [("rx_size", self.rx_size), ("tx_size", self.tx_size)] {
            if !size.is_power_of_two() || !(8..=1 << 20).contains(&size) {
                return bad(format!(
                    "{name} {size} is not a power of two between 8 and 1048576"
                ));
            }
        }
        if let Some(bp) = self.busy_poll {
            if bp.timeout_us == 0 || bp.budget == 0 || bp.budget > u32::from(u16::MAX) {
                return bad(format!(
                    "busy_poll needs timeout_us > 0 and budget in 1..=65535, got {bp:?}"
                ));
            }
            if i32::try_from(bp.timeout_us).is_err() {
                return bad(format!(
                    "busy_poll timeout_us {} is too large",
                    bp.timeout_us
                ));
            }
        }
        Ok(())
    }
}

/// The mode a port actually runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMode {
    /// Where the XDP program feeding the socket runs (as attached on the netdev; the configured mode
    /// when no program is attached yet).
    pub xdp: XdpMode,
    /// Zero-copy (true) or copy mode, as negotiated with the driver.
    pub zero_copy: bool,
    /// Whether need-wakeup is in effect.
    pub need_wakeup: bool,
    /// Whether kernel busy polling is configured.
    pub busy_poll: bool,
    /// Whether the socket shares a UMEM registered by another socket.
    pub shared_umem: bool,
}

impl fmt::Display for PortMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let copy = if self.zero_copy { "zero-copy" } else { "copy" };
        write!(f, "{}/{copy}", self.xdp)
    }
}

/// Errors opening or using a port.
///
/// A variant names the failing step (the call, with its `io::Error` as the error's
/// [`source`](std::error::Error::source)), not the port: the caller knows which port it opened and adds
/// that once (as [`crate::instance::InstanceError::Port`] does with the lport name). Only the errors
/// about the interface or queue itself name them.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The configuration cannot work.
    #[error("invalid port config: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// No interface of that name in this network namespace.
    #[error("netdev {0} not found")]
    NoSuchNetdev(String),
    /// The interface has fewer queues.
    #[error("{ifname} has {queues} rx queues; qid {qid} does not exist")]
    NoSuchQueue {
        /// Interface.
        ifname: String,
        /// Its number of RX queues.
        queues: u32,
        /// Requested queue.
        qid: u32,
    },
    /// A system call failed.
    #[error("{call} failed")]
    Syscall {
        /// The call and its argument, e.g. `setsockopt(XDP_UMEM_REG)`.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `bind` refused the socket.
    #[error("bind of the AF_XDP socket ({mode}) failed")]
    Bind {
        /// The mode asked for (`copy`, `zero-copy`, `shared UMEM`).
        mode: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Loading or finding the XDP redirect program failed.
    #[error("XDP program setup failed: {what}")]
    XdpProgram {
        /// The step that failed.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing the socket into the XSKMAP failed.
    #[error("inserting the socket into XSKMAP fd {map_fd} failed")]
    XskMap {
        /// The map.
        map_fd: RawFd,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The socket and the frame pool use different UMEMs.
    #[error("the frame pool of region {region} belongs to another UMEM than the socket")]
    UmemMismatch {
        /// The pool's region.
        region: usize,
    },
}

/// Socket setup helpers (never used per packet).
mod setup {
    use super::*;

    /// Writes socket `sock` at index `qid` of XSKMAP `map`.
    pub(super) fn xskmap_insert(map: RawFd, qid: u32, sock: RawFd) -> io::Result<()> {
        let key = qid;
        let value: libc::c_int = sock;
        // SAFETY: key and value point to live u32/i32 values matching the XSKMAP's 4-byte key and
        // value sizes; libbpf only reads them.
        let rc = unsafe {
            cne_sys::bpf_map_update_elem(
                map,
                std::ptr::from_ref(&key).cast(),
                std::ptr::from_ref(&value).cast(),
                0,
            )
        };
        parse_ret(rc).map(drop)
    }
}

/// The kernel's `struct xdp_umem_reg`, spelled out so that no padding byte is left uninitialised
/// (the kernel reads the last four bytes as `tx_metadata_len` since Linux 6.8).
#[repr(C)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

/// The four mapped rings of a socket.
#[derive(Debug)]
struct Rings {
    fill: ProdRing<u64>,
    comp: ConsRing<u64>,
    rx: ConsRing<XdpDesc>,
    tx: ProdRing<XdpDesc>,
}

/// Pointers into one mapped ring whose entries are `T`.
struct RingParts<T> {
    memory: Arc<dyn RingMemory>,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    slots: NonNull<T>,
    size: u32,
}

/// Maps the ring at page offset `pgoff` of socket `fd`, with `size` entries of `T` (u64 for the fill
/// and completion rings, [`XdpDesc`] for RX and TX), and checks the kernel's offsets against it.
fn map_ring<T>(
    fd: RawFd,
    off: &cne_sys::xdp_ring_offset,
    size: u32,
    pgoff: u64,
) -> io::Result<RingParts<T>> {
    let desc = usize::try_from(off.desc).map_err(io::Error::other)?;
    let len = desc + size as usize * size_of::<T>();
    let map = Mmap::socket_ring(fd, len, pgoff)?;
    let base = map.as_ptr();
    let word = |o: u64| -> io::Result<NonNull<AtomicU32>> {
        let o = usize::try_from(o).map_err(io::Error::other)?;
        if o + 4 > desc || o % 4 != 0 {
            return Err(io::Error::other(format!(
                "ring word offset {o} overlaps the descriptors or is misaligned"
            )));
        }
        NonNull::new(base.wrapping_add(o).cast::<AtomicU32>())
            .ok_or_else(|| io::Error::other("null ring pointer"))
    };
    let producer = word(off.producer)?;
    let consumer = word(off.consumer)?;
    let flags = word(off.flags)?;
    if desc % std::mem::align_of::<T>() != 0 {
        return Err(io::Error::other("misaligned ring descriptors"));
    }
    let slots = NonNull::new(base.wrapping_add(desc).cast::<T>())
        .ok_or_else(|| io::Error::other("null ring pointer"))?;
    Ok(RingParts {
        memory: Arc::new(map),
        producer,
        consumer,
        flags,
        slots,
        size,
    })
}

impl<T: Copy> RingParts<T> {
    fn producer(self) -> ProdRing<T> {
        // SAFETY: map_ring checked that the three words are aligned u32s inside the mapping, before
        // the slot array, and that the array of `size` entries of T is aligned and fits in it; the
        // mapping is owned by `memory`. The kernel only consumes this ring, and each ring is mapped
        // and wrapped once.
        unsafe {
            ProdRing::from_raw(
                self.producer,
                self.consumer,
                self.flags,
                self.slots,
                self.size,
                self.memory,
            )
        }
    }

    fn consumer(self) -> ConsRing<T> {
        // SAFETY: as in `producer`, with the kernel only producing into this ring.
        unsafe {
            ConsRing::from_raw(
                self.producer,
                self.consumer,
                self.flags,
                self.slots,
                self.size,
                self.memory,
            )
        }
    }
}

/// A bound AF_XDP socket with its rings, not yet tied to a frame pool. `Send`: open it anywhere,
/// then move it to the worker that owns the pool and [`Port::attach`] it there.
#[derive(Debug)]
pub struct XskSocket {
    /// Declared first: rings are unmapped after the fd is closed (field order is drop order).
    fd: Option<OwnedFd>,
    rings: Rings,
    umem: Arc<Umem>,
    id: u64,
    ifname: String,
    ifindex: u32,
    qid: u32,
    mode: PortMode,
    busy_poll: Option<BusyPoll>,
    /// Copy-mode `sendto` sends the whole TX ring (XDP_MAX_TX_SKB_BUDGET accepted).
    tx_budget_raised: bool,
    /// Holds a reference on the libxdp default program of `ifindex`.
    default_prog: bool,
    /// XSKMAP fd of the libxdp default program (owned by its registry entry).
    default_map: Option<RawFd>,
}

impl XskSocket {
    /// Creates the socket on `cfg.ifname:cfg.qid` with the memory of `umem`, binds it and inserts it
    /// into the XSKMAP. Clear errors for a missing netdev, a queue the netdev does not have, and each
    /// failing system call.
    pub fn open(cfg: &PortConfig, umem: &Arc<Umem>) -> Result<Self, PortError> {
        cfg.validate()?;
        let ifname = cfg.ifname.as_str();
        let qid = cfg.qid;
        let ifindex = crate::sys::netdev::ifindex(ifname)
            .ok_or_else(|| PortError::NoSuchNetdev(ifname.to_string()))?;
        let queues = crate::sys::netdev::rx_queues(ifname);
        if let Some(queues) = queues {
            if qid >= queues {
                return Err(PortError::NoSuchQueue {
                    ifname: ifname.to_string(),
                    queues,
                    qid,
                });
            }
        }
        let fail =
            |call: &'static str| move |source: io::Error| PortError::Syscall { call, source };
        // SAFETY: plain socket creation; `cvt_fd` owns the new descriptor.
        let fd = cvt_fd(unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })
            .map_err(fail("socket(AF_XDP)"))?;
        let sfd = fd.as_raw_fd();

        // Held until the socket is bound and listed, so a socket chosen as `shared_umem_fd` cannot be
        // closed (and its fd number reused) meanwhile.
        let mut sockets = umem.sockets();
        let owner = sockets.first().copied();
        let sol = libc::SOL_XDP;
        let opt = |v: u32| v as libc::c_int;
        if owner.is_none() {
            let reg = UmemReg {
                addr: umem.area().as_ptr() as u64,
                len: umem.registered_len(),
                chunk_size: umem.frame_size(),
                headroom: umem.headroom() - crate::xsk::umem::MIN_HEADROOM,
                flags: 0,
                tx_metadata_len: 0,
            };
            crate::sys::setsockopt(sfd, sol, opt(cne_sys::XDP_UMEM_REG), &reg)
                .map_err(fail("setsockopt(XDP_UMEM_REG)"))?;
        }
        let fill_size = cfg.rx_size * 2;
        let comp_size = cfg.tx_size;
        crate::sys::setsockopt(sfd, sol, opt(cne_sys::XDP_UMEM_FILL_RING), &fill_size)
            .map_err(fail("setsockopt(XDP_UMEM_FILL_RING)"))?;
        crate::sys::setsockopt(sfd, sol, opt(cne_sys::XDP_UMEM_COMPLETION_RING), &comp_size)
            .map_err(fail("setsockopt(XDP_UMEM_COMPLETION_RING)"))?;
        crate::sys::setsockopt(sfd, sol, opt(cne_sys::XDP_RX_RING), &cfg.rx_size)
            .map_err(fail("setsockopt(XDP_RX_RING)"))?;
        crate::sys::setsockopt(sfd, sol, opt(cne_sys::XDP_TX_RING), &cfg.tx_size)
            .map_err(fail("setsockopt(XDP_TX_RING)"))?;

        let mut off = cne_sys::xdp_mmap_offsets::default();
        let got = crate::sys::getsockopt_into(sfd, sol, opt(cne_sys::XDP_MMAP_OFFSETS), &mut off)
            .map_err(fail("getsockopt(XDP_MMAP_OFFSETS)"))?;
        if got != size_of::<cne_sys::xdp_mmap_offsets>() {
            return Err(fail("getsockopt(XDP_MMAP_OFFSETS)")(io::Error::other(
                "kernel older than 5.4 (no ring flags)",
            )));
        }
        let rings = Rings {
            fill: map_ring::<u64>(sfd, &off.fr, fill_size, cne_sys::XDP_UMEM_PGOFF_FILL_RING)
                .map_err(fail("mmap(fill ring)"))?
                .producer(),
            comp: map_ring::<u64>(
                sfd,
                &off.cr,
                comp_size,
                cne_sys::XDP_UMEM_PGOFF_COMPLETION_RING,
            )
            .map_err(fail("mmap(completion ring)"))?
            .consumer(),
            rx: map_ring::<XdpDesc>(sfd, &off.rx, cfg.rx_size, cne_sys::XDP_PGOFF_RX_RING.into())
                .map_err(fail("mmap(RX ring)"))?
                .consumer(),
            tx: map_ring::<XdpDesc>(sfd, &off.tx, cfg.tx_size, cne_sys::XDP_PGOFF_TX_RING.into())
                .map_err(fail("mmap(TX ring)"))?
                .producer(),
        };
        // Let one copy-mode sendto drain the whole TX ring instead of 32 descriptors (Linux 6.17+;
        // older kernels keep 32 and the port kicks again while the kernel answers EAGAIN).
        let tx_budget_raised = cfg.tx_size > DEFAULT_TX_SKB_BUDGET
            && crate::sys::setsockopt(sfd, sol, XDP_MAX_TX_SKB_BUDGET, &cfg.tx_size).is_ok();

        let (zero_copy_req, need_wakeup) = match owner {
            Some(o) => {
                if cfg.zero_copy != o.zero_copy || cfg.need_wakeup != o.need_wakeup {
                    log::warn!(
                        "{ifname}:{qid}: shares its UMEM and inherits {} with need_wakeup={} from \
                         the socket that registered it",
                        if o.zero_copy {
                            "zero-copy"
                        } else {
                            "copy mode"
                        },
                        o.need_wakeup
                    );
                }
                let sa = sockaddr(ifindex, qid, cne_sys::XDP_SHARED_UMEM, o.fd);
                bind(sfd, &sa).map_err(|source| PortError::Bind {
                    mode: "shared UMEM",
                    source,
                })?;
                (o.zero_copy, o.need_wakeup)
            }
            None => {
                let nw = if cfg.need_wakeup {
                    cne_sys::XDP_USE_NEED_WAKEUP
                } else {
                    0
                };
                let copy = sockaddr(ifindex, qid, cne_sys::XDP_COPY | nw, -1);
                let bound = if cfg.zero_copy {
                    let zc = sockaddr(ifindex, qid, cne_sys::XDP_ZEROCOPY | nw, -1);
                    match bind(sfd, &zc) {
                        Ok(()) => Ok(true),
                        Err(e) => {
                            log::warn!(
                                "{ifname}:{qid}: zero-copy bind failed ({e}); falling back to copy mode"
                            );
                            bind(sfd, &copy).map(|()| false)
                        }
                    }
                } else {
                    bind(sfd, &copy).map(|()| false)
                };
                let zc = bound.map_err(|source| PortError::Bind {
                    mode: "copy mode",
                    source,
                })?;
                (zc, cfg.need_wakeup)
            }
        };
        let mut opts = cne_sys::xdp_options::default();
        let zero_copy =
            match crate::sys::getsockopt_into(sfd, sol, opt(cne_sys::XDP_OPTIONS), &mut opts) {
                Ok(_) => opts.flags & cne_sys::XDP_OPTIONS_ZEROCOPY != 0,
                Err(_) => zero_copy_req,
            };
        let id = umem.next_socket_id();
        sockets.push(BoundSocket {
            id,
            fd: sfd,
            zero_copy,
            need_wakeup,
        });
        drop(sockets);

        let mut sock = Self {
            fd: Some(fd),
            rings,
            umem: Arc::clone(umem),
            id,
            ifname: ifname.to_string(),
            ifindex,
            qid,
            mode: PortMode {
                xdp: cfg.xdp_mode,
                zero_copy,
                need_wakeup,
                busy_poll: cfg.busy_poll.is_some(),
                shared_umem: owner.is_some(),
            },
            busy_poll: cfg.busy_poll,
            tx_budget_raised,
            default_prog: false,
            default_map: None,
        };
        // From here on, Drop undoes everything on error.
        if let Some(bp) = cfg.busy_poll.filter(|_| cfg.busy_poll_sockopts) {
            let sol_socket = libc::SOL_SOCKET;
            let timeout = libc::c_int::try_from(bp.timeout_us).unwrap_or(libc::c_int::MAX);
            let budget = libc::c_int::try_from(bp.budget).unwrap_or(libc::c_int::MAX);
            crate::sys::setsockopt(sfd, sol_socket, SO_PREFER_BUSY_POLL, &1 as &libc::c_int)
                .map_err(fail("setsockopt(SO_PREFER_BUSY_POLL)"))?;
            crate::sys::setsockopt(sfd, sol_socket, libc::SO_BUSY_POLL, &timeout)
                .map_err(fail("setsockopt(SO_BUSY_POLL)"))?;
            crate::sys::setsockopt(sfd, sol_socket, SO_BUSY_POLL_BUDGET, &budget)
                .map_err(fail("setsockopt(SO_BUSY_POLL_BUDGET)"))?;
        }
        let map_fd = match cfg.xsk_map {
            XskMapSource::Map(fd) => fd,
            XskMapSource::LibxdpDefault => {
                let entries = queues.unwrap_or(1).max(qid + 1);
                let fd = crate::bpf::libxdp::acquire(ifindex, ifname, cfg.xdp_mode, entries)?;
                sock.default_prog = true;
                sock.default_map = Some(fd);
                fd
            }
        };
        setup::xskmap_insert(map_fd, qid, sfd)
            .map_err(|source| PortError::XskMap { map_fd, source })?;
        if let Ok((drv, skb)) = crate::bpf::libxdp::attached_prog_ids(ifindex) {
            if drv != 0 {
                sock.mode.xdp = XdpMode::Native;
            } else if skb != 0 {
                sock.mode.xdp = XdpMode::Skb;
            }
        }
        log::debug!("{ifname}:{qid}: AF_XDP socket bound ({})", sock.mode);
        Ok(sock)
    }

    /// The socket's file descriptor (for poll/epoll), -1 once closed.
    pub fn fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Queue id.
    pub fn qid(&self) -> u32 {
        self.qid
    }

    /// The mode actually in effect.
    pub fn mode(&self) -> PortMode {
        self.mode
    }

    /// The UMEM the socket uses.
    pub fn umem(&self) -> &Arc<Umem> {
        &self.umem
    }

    /// The XSKMAP of libxdp's default program when the socket uses it ([`XskMapSource::LibxdpDefault`]);
    /// other queues of the netdev can be inserted into it with [`XskMapSource::Map`].
    pub fn xsk_map_fd(&self) -> Option<RawFd> {
        self.default_map
    }

    /// Stops the socket: removes it from the UMEM's sharing list, closes it (the kernel then stops
    /// using its rings) and drops the reference on libxdp's default program. Idempotent.
    fn close(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        {
            let mut sockets = self.umem.sockets();
            sockets.retain(|s| s.id != self.id);
            // Closed under the lock: no other socket can pick this fd as `shared_umem_fd` now.
            drop(fd);
        }
        if self.default_prog {
            self.default_prog = false;
            self.default_map = None;
            crate::bpf::libxdp::release(self.ifindex);
        }
    }

    /// `sendto(MSG_DONTWAIT)`: asks the kernel to process the TX ring.
    fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: a zero-length sendto with null buffer and address is the AF_XDP TX wakeup; no
        // memory is accessed.
        let rc = unsafe {
            libc::sendto(
                self.fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        cvt(rc).map(drop)
    }

    /// `recvfrom(MSG_DONTWAIT)`: drives RX in zero-copy need-wakeup and busy-poll modes.
    fn wake_rx(&self) {
        // SAFETY: a zero-length recvfrom with null buffer and address accesses no memory.
        let _ = unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
}

impl Drop for XskSocket {
    fn drop(&mut self) {
        self.close();
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "AF_XDP is 44 and the XDP_* bind flags are bits below 1 << 4"
)]
fn sockaddr(ifindex: u32, qid: u32, flags: u32, shared_fd: RawFd) -> cne_sys::sockaddr_xdp {
    cne_sys::sockaddr_xdp {
        sxdp_family: AF_XDP as u16,
        sxdp_flags: flags as u16,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: qid,
        sxdp_shared_umem_fd: shared_fd as u32,
    }
}

/// How long `bind` keeps retrying a busy queue: the kernel releases a queue asynchronously (deferred
/// work) after the previous socket on it is closed, so an immediate reopen can see EBUSY briefly.
const BIND_BUSY_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

fn bind(fd: RawFd, sa: &cne_sys::sockaddr_xdp) -> io::Result<()> {
    let len = crate::sys::socklen::<cne_sys::sockaddr_xdp>();
    let deadline = std::time::Instant::now() + BIND_BUSY_RETRY;
    loop {
        // SAFETY: `sa` is a fully initialised sockaddr_xdp (no padding) of `len` bytes.
        let rc = unsafe { libc::bind(fd, std::ptr::from_ref(sa).cast(), len) };
        let Err(e) = cvt(rc) else {
            return Ok(());
        };
        if e.raw_os_error() != Some(libc::EBUSY) || std::time::Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// An AF_XDP port attached to a worker's frame pool: the packet I/O of one `netdev:qid`.
///
/// Packets received here may be sent on any port attached to the same [`FramePool`] (for example two
/// ports of one worker sharing a UMEM region): their completion then returns the frame to that same
/// pool. Packets of another pool are dropped by [`Port::tx_burst`] and counted in `tx_dropped`,
/// because their completion would hand the frame to the wrong pool.
#[derive(Debug)]
pub struct Port<'pool> {
    sock: XskSocket,
    pool: &'pool FramePool,
    stats: PortStats,
    /// Frames in the fill and RX rings.
    lent_rx: u32,
    /// Frames in the TX ring or sent and not yet completed.
    lent_tx: u32,
    /// Every TX needs a `sendto` (copy mode, busy polling, or need-wakeup off).
    kick_always: bool,
    /// Empty RX polls call `recvfrom` when the fill ring asks (zero-copy with need-wakeup).
    rx_wakeup: bool,
    /// Empty RX polls always call `recvfrom`, which runs the kernel's busy-poll loop.
    busy_poll: bool,
    /// TX kicks per burst while the kernel answers EAGAIN.
    max_kicks: u32,
}

impl<'pool> Port<'pool> {
    /// Opens `cfg` on the UMEM of `pool` and attaches it: [`XskSocket::open`] then [`Port::attach`].
    pub fn open(cfg: &PortConfig, pool: &'pool FramePool) -> Result<Self, PortError> {
        Self::attach(XskSocket::open(cfg, pool.umem())?, pool)
    }

    /// Ties `sock` to `pool` (which must use the same UMEM) and fills the fill ring.
    pub fn attach(sock: XskSocket, pool: &'pool FramePool) -> Result<Self, PortError> {
        if !Arc::ptr_eq(&sock.umem, pool.umem()) {
            return Err(PortError::UmemMismatch {
                region: pool.region(),
            });
        }
        let mode = sock.mode;
        let mut port = Self {
            kick_always: !mode.zero_copy || mode.busy_poll || !mode.need_wakeup,
            rx_wakeup: mode.zero_copy && mode.need_wakeup,
            busy_poll: mode.busy_poll,
            max_kicks: if sock.tx_budget_raised { 1 } else { 4 },
            sock,
            pool,
            stats: PortStats::default(),
            lent_rx: 0,
            lent_tx: 0,
        };
        port.refill();
        Ok(port)
    }

    /// Receives up to `max` packets, appending them to `out` (reserve `max` in `out` once and reuse
    /// it: then no burst allocates), and refills the fill ring. Returns the number received.
    pub fn rx_burst(&mut self, out: &mut Vec<Packet<'pool>>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        let pool = self.pool;
        let frame_size = pool.frame_size();
        let want = u32::try_from(max).unwrap_or(u32::MAX);
        let rx = self.sock.rings.rx.peek(want);
        let n = rx.len();
        if n == 0 {
            let _ = rx.release();
            self.stats.rx_ring_empty += 1;
            // Busy polling is driven by this syscall; zero-copy drivers with need-wakeup only need it
            // when they say so.
            if self.busy_poll || (self.rx_wakeup && self.sock.rings.fill.needs_wakeup()) {
                self.sock.wake_rx();
            }
            // Idle: give completed TX frames back so the pool and fill ring stay full.
            if self.lent_tx > 0 {
                self.reap_completions();
            }
            self.refill();
            return 0;
        }
        out.reserve(n as usize);
        let (mut got, mut bytes, mut errors) = (0usize, 0u64, 0u64);
        for d in rx.iter() {
            let Some(base) = pool.frame_base(d.addr) else {
                errors += 1;
                continue;
            };
            // `d.addr - base` is below frame_size, so the cast is exact.
            #[allow(clippy::cast_possible_truncation, reason = "below frame_size, a u32")]
            let start = (d.addr - base) as u32;
            match start.checked_add(d.len) {
                Some(end) if end <= frame_size => {
                    // The kernel wrote the frame from another CPU: start loading its headers now, so
                    // the misses of the whole burst overlap before the NF reads the first one.
                    crate::hint::prefetch_ptr(pool.ptr(d.addr));
                    out.push(Packet::from_frame(pool, base, start, end));
                    got += 1;
                    bytes += u64::from(d.len);
                }
                _ => {
                    pool.put(base);
                    errors += 1;
                }
            }
        }
        let _ = rx.release();
        self.lent_rx = self.lent_rx.saturating_sub(n);
        self.stats.rx_packets += got as u64;
        self.stats.rx_bytes += bytes;
        self.stats.rx_errors += errors;
        self.refill();
        got
    }

    /// Sends the packets of `pkts`, which is emptied: packets the TX ring has no room for, empty
    /// packets and packets of another pool are dropped (their frames go back to their pool) and
    /// counted. Kicks the kernel once if it needs it, and reaps completions first. Calling it with an
    /// empty `Vec` flushes: reaps completions and kicks a TX ring the kernel has not drained.
    /// Returns the number of packets placed in the TX ring.
    pub fn tx_burst(&mut self, pkts: &mut Vec<Packet<'pool>>) -> usize {
        if self.lent_tx > 0 {
            self.reap_completions();
        }
        let pool = self.pool;
        let (mut sent, mut bytes, mut dropped, mut errors) = (0u32, 0u64, 0u64, 0u64);
        if !pkts.is_empty() {
            let want = u32::try_from(pkts.len()).unwrap_or(u32::MAX);
            let mut tx = self.sock.rings.tx.reserve(want);
            for p in pkts.drain(..) {
                if p.is_empty() {
                    errors += 1;
                } else if !p.belongs_to(pool) || tx.written() == tx.len() {
                    dropped += 1;
                } else {
                    bytes += p.len() as u64;
                    let _ = tx.push(p.into_desc());
                    sent += 1;
                }
                // A packet not moved into the ring is dropped here and returns to its pool.
            }
            let _ = tx.commit();
        }
        self.lent_tx += sent;
        self.stats.tx_packets += u64::from(sent);
        self.stats.tx_bytes += bytes;
        self.stats.tx_dropped += dropped;
        self.stats.tx_errors += errors;
        self.kick();
        sent as usize
    }

    /// A fresh packet from the pool, to build a frame from scratch (see [`FramePool::alloc`]).
    pub fn alloc(&self) -> Option<Packet<'pool>> {
        self.pool.alloc()
    }

    /// Wakes the kernel for the TX ring when it has undrained descriptors and needs a syscall.
    fn kick(&mut self) {
        let tx = &self.sock.rings.tx;
        if tx.pending() == 0 || !(self.kick_always || tx.needs_wakeup()) {
            return;
        }
        for _ in 0..self.max_kicks {
            self.stats.tx_kicks += 1;
            match self.sock.kick_tx() {
                Ok(()) => return,
                Err(e) => match e.raw_os_error() {
                    // The kernel stopped at its per-call budget, or is short of buffers: what is
                    // left stays in the ring for the next kick.
                    Some(libc::EAGAIN) if self.sock.rings.tx.pending() > 0 => {}
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) => return,
                    _ => {
                        self.stats.tx_errors += 1;
                        return;
                    }
                },
            }
        }
    }

    /// Returns completed TX frames to the pool.
    fn reap_completions(&mut self) {
        let pool = self.pool;
        let done = self.sock.rings.comp.peek(self.lent_tx);
        let mut foreign = 0u64;
        for addr in done.iter() {
            match pool.frame_base(addr) {
                Some(base) => pool.put(base),
                None => foreign += 1,
            }
        }
        let n = done.release();
        self.lent_tx -= n;
        self.stats.tx_completed += u64::from(n);
        self.stats.tx_errors += foreign;
    }

    /// Tops the fill ring up from the pool so the kernel always has frames to receive into.
    fn refill(&mut self) {
        let want = self.sock.rings.fill.size() - self.lent_rx;
        if want == 0 {
            return;
        }
        if self.pool.available() < want as usize && self.lent_tx > 0 {
            self.reap_completions();
        }
        let mut fill = self.sock.rings.fill.reserve(want);
        let got = self.pool.take(fill.len() as usize, |addr| fill.push(addr));
        let _ = fill.commit();
        // `got` is at most `want`, a u32.
        let got = u32::try_from(got).unwrap_or(want);
        self.lent_rx += got;
        if got < want {
            self.stats.fill_short += 1;
        }
    }

    /// Software counters plus the kernel's `XDP_STATISTICS` (one getsockopt).
    pub fn stats(&self) -> Result<PortStats, PortError> {
        let kernel = read_xdp_stats(self.fd()).map_err(|source| PortError::Syscall {
            call: "getsockopt(XDP_STATISTICS)",
            source,
        })?;
        Ok(PortStats {
            kernel,
            ..self.stats
        })
    }

    /// The software counters only (no syscall; `kernel` is zero).
    pub fn sw_stats(&self) -> &PortStats {
        &self.stats
    }

    /// Frames this port has lent to the kernel (fill, RX, TX and completion rings). With no packet
    /// alive, `pool.available() + frames_lent()` of all ports on the pool equals its capacity.
    pub fn frames_lent(&self) -> usize {
        (self.lent_rx + self.lent_tx) as usize
    }

    /// The pool this port takes frames from.
    pub fn pool(&self) -> &'pool FramePool {
        self.pool
    }

    /// The socket's file descriptor (for poll/epoll).
    pub fn fd(&self) -> RawFd {
        self.sock.fd()
    }

    /// Interface name.
    pub fn ifname(&self) -> &str {
        &self.sock.ifname
    }

    /// Queue id.
    pub fn qid(&self) -> u32 {
        self.sock.qid
    }

    /// The mode actually in effect (native/skb XDP, copy/zero-copy, need-wakeup, busy polling).
    pub fn mode(&self) -> PortMode {
        self.sock.mode
    }

    /// Busy-poll settings, when configured.
    pub fn busy_poll(&self) -> Option<BusyPoll> {
        self.sock.busy_poll
    }

    /// See [`XskSocket::xsk_map_fd`].
    pub fn xsk_map_fd(&self) -> Option<RawFd> {
        self.sock.xsk_map_fd()
    }
}

impl Drop for Port<'_> {
    fn drop(&mut self) {
        // Close first: once the socket is released the kernel neither consumes the fill and TX rings
        // nor produces into the RX ring, so what is left in them is ours again. The ring mappings
        // stay valid until `sock` is dropped after this.
        self.sock.close();
        let pool = self.pool;
        let rings = &mut self.sock.rings;
        let mut back_rx = 0u32;
        let mut back_tx = 0u32;
        let give = |addr: u64| {
            if let Some(base) = pool.frame_base(addr) {
                pool.put(base);
                true
            } else {
                false
            }
        };
        let rx = rings.rx.peek(u32::MAX);
        for d in rx.iter() {
            back_rx += u32::from(give(d.addr));
        }
        let _ = rx.release();
        rings
            .fill
            .drain_unconsumed(|a| back_rx += u32::from(give(a)));
        let done = rings.comp.peek(u32::MAX);
        for a in done.iter() {
            back_tx += u32::from(give(a));
        }
        let _ = done.release();
        rings
            .tx
            .drain_unconsumed(|d| back_tx += u32::from(give(d.addr)));
        let lost = (self.lent_rx.saturating_sub(back_rx)) + (self.lent_tx.saturating_sub(back_tx));
        if lost > 0 {
            // Zero-copy drivers keep frames they took from the fill ring, and TX frames still in
            // flight complete after the close: they stay out of the pool rather than be reused
            // while the kernel may still touch them.
            log::debug!(
                "{}:{}: {lost} frames still held by the kernel at close are not returned to the pool",
                self.sock.ifname,
                self.sock.qid
            );
        }
        self.lent_rx = 0;
        self.lent_tx = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn sockets_and_pools_move_to_workers() {
        assert_send::<XskSocket>();
        assert_send::<FramePool>();
        assert_send::<Arc<Umem>>();
        assert_send::<PortConfig>();
    }

    #[test]
    fn config_checks_name_the_field() {
        let err = |c: PortConfig| c.validate().expect_err("invalid").to_string();
        assert!(err(PortConfig::new("", 0)).contains("interface name"));
        assert!(err(PortConfig::new("a-very-long-ifname", 0)).contains("1 to 15 bytes"));
        assert!(err(PortConfig {
            tx_size: 4,
            ..PortConfig::new("eth0", 0)
        })
        .contains("tx_size 4"));
        assert!(err(PortConfig {
            busy_poll: Some(BusyPoll {
                timeout_us: 20,
                budget: 70000
            }),
            ..PortConfig::new("eth0", 0)
        })
        .contains("budget"));
        assert!(PortConfig::new("eth0", 3).validate().is_ok());
    }

    #[test]
    fn mode_displays_as_xdp_and_copy_mode() {
        let m = PortMode {
            xdp: XdpMode::Skb,
            zero_copy: false,
            need_wakeup: true,
            busy_poll: false,
            shared_umem: false,
        };
        assert_eq!(m.to_string(), "skb/copy");
    }
}

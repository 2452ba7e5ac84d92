//! UMEM: the packet memory shared by user space and the kernel, and the frame pools carved out of it.
//!
//! A [`Umem`] is one anonymous mapping (2 MiB huge pages when asked for and reserved, otherwise 4 KiB
//! pages advised for transparent huge pages) cut into equal frames of 2048 or 4096 bytes. Frames are addressed by their byte offset
//! from the start of the mapping, which is what the kernel puts in ring descriptors. As in CNDP, the
//! frames are split into `regions`; each region is handed to at most one [`FramePool`] at a time, so
//! two pools never own the same frame. Several AF_XDP sockets share one UMEM (the kernel's
//! `XDP_SHARED_UMEM`), each with its own fill and completion rings, and each port draws its frames
//! from the pool it is attached to.
//!
//! A [`FramePool`] is the free list of one region. It is owned by one worker thread: it is `Send`
//! (it can be moved into the worker) but not `Sync`, and its free list sits in an `UnsafeCell` that
//! only the owning thread can reach. [`crate::xsk::packet::Packet`]s borrow the pool (`Packet<'pool>`), so
//! the borrow checker guarantees the pool, and the UMEM it keeps alive through an `Arc`, outlive every
//! packet; no packet needs a reference count, an atomic or a lock. Every frame of the region is in
//! exactly one place at any time: the free list, one live `Packet`, or a kernel ring lent by a port.
//!
//! Headroom: every packet starts `headroom` bytes into its frame (at least 256, the kernel's
//! `XDP_PACKET_HEADROOM`, which the kernel always leaves in front of received data; the configured
//! headroom above 256 is passed to the kernel as the UMEM's `frame_headroom`). It is the room network
//! functions have to prepend encapsulation headers in place.

use std::cell::UnsafeCell;
use std::fmt;
use std::io;
use std::ops::Range;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::xsk::packet::Packet;
use crate::xsk::ring::RingMemory;

/// Default number of frames (CNDP's `bufcnt: 16`, in units of 1024).
pub const DEFAULT_FRAME_COUNT: u32 = 16 * 1024;
/// Default frame size in bytes.
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// Smallest headroom: the kernel's `XDP_PACKET_HEADROOM`, always left in front of received data.
pub const MIN_HEADROOM: u32 = cne_sys::XDP_PACKET_HEADROOM;
/// Default headroom in front of the packet data of every frame.
pub const DEFAULT_HEADROOM: u32 = MIN_HEADROOM;
/// Room every frame must keep behind the headroom: a full Ethernet frame with one VLAN tag.
pub const MIN_DATA_ROOM: u32 = 1518;
const HUGE_PAGE_SIZE: usize = 2 << 20;

/// Errors building a UMEM or a frame pool.
#[derive(Debug, thiserror::Error)]
pub enum UmemError {
    /// The configuration cannot work; the message says why.
    #[error("invalid UMEM config: {0}")]
    Config(String),
    /// The memory mapping failed.
    #[error("mmap of {len} bytes for the UMEM failed")]
    Mmap {
        /// Bytes requested.
        len: usize,
        /// The error from mmap.
        #[source]
        source: io::Error,
    },
    /// The region index is out of range.
    #[error("UMEM region {region} does not exist (the UMEM has {regions} regions)")]
    NoSuchRegion {
        /// Requested region.
        region: usize,
        /// Number of regions.
        regions: usize,
    },
    /// Another live frame pool owns the region.
    #[error("UMEM region {0} is already owned by a frame pool")]
    RegionInUse(usize),
}

/// How to build a [`Umem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmemConfig {
    /// Total number of frames.
    pub frame_count: u32,
    /// Frame size in bytes: 2048 or 4096.
    pub frame_size: u32,
    /// Bytes in front of the packet data in every frame, at least [`MIN_HEADROOM`].
    pub headroom: u32,
    /// Back the UMEM with 2 MiB huge pages (falls back to 4 KiB pages with a warning when none are
    /// reserved in `/proc/sys/vm/nr_hugepages`).
    pub huge_pages: bool,
    /// Frame counts of the regions, in order; they must add up to `frame_count`. Empty means one
    /// region holding every frame.
    pub regions: Vec<u32>,
}

impl Default for UmemConfig {
    fn default() -> Self {
        Self {
            frame_count: DEFAULT_FRAME_COUNT,
            frame_size: DEFAULT_FRAME_SIZE,
            headroom: DEFAULT_HEADROOM,
            huge_pages: false,
            regions: Vec::new(),
        }
    }
}

impl UmemConfig {
    fn validate(&self) -> Result<Vec<Range<u32>>, UmemError> {
        let bad = |m: String| Err(UmemError::Config(m));
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return bad(format!(
                "frame_size {} is not 2048 or 4096",
                self.frame_size
            ));
        }
        if self.frame_count == 0 {
            return bad("frame_count is 0".into());
        }
        if self.headroom < MIN_HEADROOM {
            return bad(format!(
                "headroom {} is below the kernel's XDP_PACKET_HEADROOM of {MIN_HEADROOM}",
                self.headroom
            ));
        }
        if self.headroom + MIN_DATA_ROOM > self.frame_size {
            return bad(format!(
                "headroom {} leaves less than {MIN_DATA_ROOM} bytes of packet room in {}-byte frames",
                self.headroom, self.frame_size
            ));
        }
        if self.regions.is_empty() {
            return Ok(std::iter::once(0..self.frame_count).collect());
        }
        let mut start = 0u32;
        let mut out = Vec::with_capacity(self.regions.len());
        for (i, &n) in self.regions.iter().enumerate() {
            if n == 0 {
                return bad(format!("region {i} has 0 frames"));
            }
            let end = match start.checked_add(n) {
                Some(end) if end <= self.frame_count => end,
                _ => {
                    return bad(format!(
                        "regions {:?} add up to more than frame_count {}",
                        self.regions, self.frame_count
                    ))
                }
            };
            out.push(start..end);
            start = end;
        }
        if start != self.frame_count {
            return bad(format!(
                "regions {:?} add up to {start}, not frame_count {}",
                self.regions, self.frame_count
            ));
        }
        Ok(out)
    }
}

/// An owned memory mapping, unmapped on drop.
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mmap is an owned address range; it hands out no references, only its base pointer, and
// unmapping on drop is valid from any thread.
unsafe impl Send for Mmap {}
// SAFETY: as above; &Mmap only exposes the base pointer and length.
unsafe impl Sync for Mmap {}

impl RingMemory for Mmap {}

impl Mmap {
    fn map(len: usize, prot: i32, flags: i32, fd: RawFd, offset: libc::off_t) -> io::Result<Self> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing aliases nothing we own.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(ptr.cast::<u8>())
            .map(|ptr| Self { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))
    }

    /// Private anonymous read/write memory of reserved 2 MiB huge pages, pre-faulted.
    fn anonymous_huge(len: usize) -> io::Result<Self> {
        Self::map(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_POPULATE
                | libc::MAP_HUGETLB
                | libc::MAP_HUGE_2MB,
            -1,
            0,
        )
    }

    /// Private anonymous read/write memory of small pages advised for transparent huge pages, then
    /// pre-faulted: with THP in `always` or `madvise` mode the kernel backs it with 2 MiB pages where
    /// it can (no reservation needed), so the NF's first touch of each received frame costs no TLB
    /// miss; otherwise it is ordinary 4 KiB memory.
    fn anonymous_thp(len: usize) -> io::Result<Self> {
        let map = Self::map(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )?;
        let p = map.ptr.as_ptr().cast::<libc::c_void>();
        // SAFETY: `p..p+len` is the mapping just created, owned by `map` and not yet shared; the advice
        // only changes how the kernel backs it, never its contents.
        let _ = unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        // SAFETY: as above; populating faults the pages in and leaves them zero.
        if unsafe { libc::madvise(p, len, libc::MADV_POPULATE_WRITE) } != 0 {
            // Kernels before 5.14: fault every page in by writing it (the memory is zero).
            for off in (0..len).step_by(4096) {
                // SAFETY: `off < len`, inside the owned, writable mapping; it holds zero already.
                unsafe { map.ptr.as_ptr().wrapping_add(off).write_volatile(0) };
            }
        }
        Ok(map)
    }

    /// A shared mapping of one of an AF_XDP socket's rings (`offset` selects which).
    pub(crate) fn socket_ring(fd: RawFd, len: usize, offset: u64) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        Self::map(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            offset,
        )
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe a mapping we created and own; nothing borrows it any more (every
        // user holds the Mmap, directly or through an Arc, and is being dropped).
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        if let Err(e) = crate::sys::cvt(rc) {
            log::warn!("munmap of {} bytes failed: {e}", self.len);
        }
    }
}

impl fmt::Debug for Mmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mmap({:p}, {} bytes)", self.ptr, self.len)
    }
}

/// A socket bound with this UMEM registered (directly or shared), usable as `sxdp_shared_umem_fd`
/// by the next socket. Sockets sharing a UMEM inherit the copy/zero-copy and need-wakeup mode of the
/// socket that registered it (kernel rule), so the mode travels with the entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoundSocket {
    pub(crate) id: u64,
    pub(crate) fd: RawFd,
    pub(crate) zero_copy: bool,
    pub(crate) need_wakeup: bool,
}

/// The packet memory: one mapping of `frame_count` frames split into regions.
pub struct Umem {
    map: Mmap,
    huge_pages: bool,
    frame_size: u32,
    frame_count: u32,
    headroom: u32,
    regions: Vec<Range<u32>>,
    claimed: Mutex<Vec<bool>>,
    sockets: Mutex<Vec<BoundSocket>>,
    next_socket_id: AtomicU64,
}

impl fmt::Debug for Umem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Umem")
            .field("map", &self.map)
            .field("huge_pages", &self.huge_pages)
            .field("frame_size", &self.frame_size)
            .field("frame_count", &self.frame_count)
            .field("headroom", &self.headroom)
            .field("regions", &self.regions)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data (flags, fd lists) stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lifts RLIMIT_MEMLOCK so the kernel can pin the UMEM (and, before Linux 5.11, charge BPF maps).
/// Best effort: without privileges the soft limit is raised to the hard one.
fn raise_memlock() {
    let inf = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) } == 0 {
        return;
    }
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) } == 0 {
        cur.rlim_cur = cur.rlim_max;
        // SAFETY: as above.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &cur) };
        log::debug!("RLIMIT_MEMLOCK raised to the hard limit {}", cur.rlim_max);
    }
}

impl Umem {
    /// Maps the memory and checks the configuration. The UMEM is registered with the kernel by the
    /// first socket opened on it.
    pub fn new(cfg: &UmemConfig) -> Result<Arc<Self>, UmemError> {
        let regions = cfg.validate()?;
        raise_memlock();
        let bytes = cfg.frame_count as usize * cfg.frame_size as usize;
        let (map, huge_pages) = if cfg.huge_pages {
            let len = bytes.div_ceil(HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE;
            match Mmap::anonymous_huge(len) {
                Ok(m) => (m, true),
                Err(e) => {
                    log::warn!(
                        "UMEM: no 2 MiB huge pages for {len} bytes ({e}); falling back to 4 KiB \
                         pages (reserve huge pages in /proc/sys/vm/nr_hugepages)"
                    );
                    (map_small(bytes)?, false)
                }
            }
        } else {
            (map_small(bytes)?, false)
        };
        Ok(Arc::new(Self {
            map,
            huge_pages,
            frame_size: cfg.frame_size,
            frame_count: cfg.frame_count,
            headroom: cfg.headroom,
            claimed: Mutex::new(vec![false; regions.len()]),
            regions,
            sockets: Mutex::new(Vec::new()),
            next_socket_id: AtomicU64::new(1),
        }))
    }

    /// Frame size in bytes.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Number of frames.
    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }

    /// Bytes in front of the packet data in every frame.
    pub fn headroom(&self) -> u32 {
        self.headroom
    }

    /// Whether the memory is backed by 2 MiB huge pages.
    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }

    /// Number of regions.
    pub fn regions(&self) -> usize {
        self.regions.len()
    }

    /// Frame indices of region `region`.
    pub fn region_frames(&self, region: usize) -> Option<Range<u32>> {
        self.regions.get(region).cloned()
    }

    /// Base address of the mapping.
    pub(crate) fn area(&self) -> NonNull<u8> {
        self.map.ptr
    }

    /// Length of the frame area registered with the kernel.
    pub(crate) fn registered_len(&self) -> u64 {
        u64::from(self.frame_count) * u64::from(self.frame_size)
    }

    /// Sockets currently bound with this UMEM (for `XDP_SHARED_UMEM`).
    pub(crate) fn sockets(&self) -> MutexGuard<'_, Vec<BoundSocket>> {
        lock(&self.sockets)
    }

    pub(crate) fn next_socket_id(&self) -> u64 {
        self.next_socket_id.fetch_add(1, Ordering::Relaxed)
    }

    fn claim(&self, region: usize) -> Result<Range<u32>, UmemError> {
        let range = self
            .regions
            .get(region)
            .cloned()
            .ok_or(UmemError::NoSuchRegion {
                region,
                regions: self.regions.len(),
            })?;
        let mut claimed = lock(&self.claimed);
        match claimed.get_mut(region) {
            Some(c) if !*c => {
                *c = true;
                Ok(range)
            }
            _ => Err(UmemError::RegionInUse(region)),
        }
    }

    fn unclaim(&self, region: usize) {
        if let Some(c) = lock(&self.claimed).get_mut(region) {
            *c = false;
        }
    }
}

fn map_small(len: usize) -> Result<Mmap, UmemError> {
    Mmap::anonymous_thp(len).map_err(|source| UmemError::Mmap { len, source })
}

/// The free frames of one UMEM region, owned by one worker thread (see the module doc).
pub struct FramePool {
    umem: Arc<Umem>,
    area: NonNull<u8>,
    frame_size: u32,
    headroom: u32,
    /// Byte range `[lo, lo + span)` of the region in the UMEM.
    lo: u64,
    span: u64,
    region: usize,
    capacity: usize,
    /// Frame base addresses. Capacity is reserved for every frame of the region up front, so pushes
    /// never allocate.
    free: UnsafeCell<Vec<u64>>,
}

// SAFETY: the pool exclusively owns its free list and the region's frames; the raw `area` pointer
// points into the mapping kept alive by `umem` (an Arc of a Send + Sync type). Moving the pool to
// another thread moves that ownership with it. It stays !Sync (UnsafeCell), so it is only ever
// touched from one thread at a time, and `Packet`s, which borrow it, cannot leave that thread.
unsafe impl Send for FramePool {}

impl fmt::Debug for FramePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramePool")
            .field("region", &self.region)
            .field("capacity", &self.capacity)
            .field("available", &self.available())
            .finish()
    }
}

impl FramePool {
    /// Takes ownership of the frames of `region` of `umem`. Fails if another live pool owns it.
    pub fn new(umem: &Arc<Umem>, region: usize) -> Result<Self, UmemError> {
        let frames = umem.claim(region)?;
        let fs = u64::from(umem.frame_size);
        let mut free = Vec::with_capacity(frames.len());
        // Reversed so that `pop` hands out frames in ascending address order.
        free.extend(frames.clone().rev().map(|i| u64::from(i) * fs));
        Ok(Self {
            area: umem.area(),
            frame_size: umem.frame_size,
            headroom: umem.headroom,
            lo: u64::from(frames.start) * fs,
            span: u64::from(frames.end - frames.start) * fs,
            region,
            capacity: frames.len(),
            free: UnsafeCell::new(free),
            umem: Arc::clone(umem),
        })
    }

    /// Runs `f` on the free list.
    #[inline]
    fn with_free<R>(&self, f: impl FnOnce(&mut Vec<u64>) -> R) -> R {
        // SAFETY: FramePool is !Sync, so only the current thread can reach `free`, and no `&mut` to
        // it outlives this call. Re-entry is impossible: the closures passed by this crate only move
        // u64 addresses between the list and local storage or ring slots, and never drop a Packet or
        // call back into the pool.
        f(unsafe { &mut *self.free.get() })
    }

    /// Frames currently free.
    pub fn available(&self) -> usize {
        self.with_free(|v| v.len())
    }

    /// Frames in the region.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Index of the region this pool owns.
    pub fn region(&self) -> usize {
        self.region
    }

    /// Frame size in bytes.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Bytes in front of the data of a fresh packet.
    pub fn headroom(&self) -> u32 {
        self.headroom
    }

    /// The UMEM this pool's frames live in.
    pub fn umem(&self) -> &Arc<Umem> {
        &self.umem
    }

    /// A free frame as an empty packet (data window of length 0 after the headroom; the bytes
    /// behind it are stale). `None` when the pool is empty.
    pub fn alloc(&self) -> Option<Packet<'_>> {
        let addr = self.with_free(|v| v.pop())?;
        Some(Packet::from_frame(self, addr, self.headroom, self.headroom))
    }

    /// Appends up to `n` fresh packets to `out` (give `out` the capacity up front to avoid
    /// allocating); returns how many.
    pub fn alloc_bulk<'p>(&'p self, out: &mut Vec<Packet<'p>>, n: usize) -> usize {
        let mut got = 0;
        while got < n {
            match self.with_free(|v| v.pop()) {
                Some(addr) => {
                    out.push(Packet::from_frame(self, addr, self.headroom, self.headroom));
                    got += 1;
                }
                None => break,
            }
        }
        got
    }

    /// Returns a frame (by base address) to the free list.
    #[inline]
    pub(crate) fn put(&self, base: u64) {
        debug_assert!(self.frame_base(base) == Some(base));
        self.with_free(|v| v.push(base));
    }

    /// Takes up to `n` frames and hands each address to `f` (which must not touch the pool).
    #[inline]
    pub(crate) fn take(&self, n: usize, mut f: impl FnMut(u64) -> bool) -> usize {
        self.with_free(|v| {
            let mut taken = 0;
            while taken < n {
                let Some(&addr) = v.last() else { break };
                if !f(addr) {
                    break;
                }
                v.pop();
                taken += 1;
            }
            taken
        })
    }

    /// The base of the frame holding UMEM address `addr`, if that frame belongs to this pool.
    #[inline]
    pub(crate) fn frame_base(&self, addr: u64) -> Option<u64> {
        let base = addr & !u64::from(self.frame_size - 1);
        (base.wrapping_sub(self.lo) < self.span).then_some(base)
    }

    /// Pointer to UMEM address `addr` (not dereferenced here).
    #[inline]
    pub(crate) fn ptr(&self, addr: u64) -> *mut u8 {
        self.area
            .as_ptr()
            .wrapping_add(usize::try_from(addr).unwrap_or(usize::MAX))
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        // Ports and packets borrow the pool, so none is alive: the region is free for a new pool.
        self.umem.unclaim(self.region);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    fn small() -> UmemConfig {
        UmemConfig {
            frame_count: 64,
            regions: vec![32, 32],
            ..UmemConfig::default()
        }
    }

    #[test]
    fn config_validation_names_the_problem() {
        let e = |c: UmemConfig| Umem::new(&c).expect_err("invalid").to_string();
        assert!(e(UmemConfig {
            frame_size: 3000,
            ..small()
        })
        .contains("frame_size 3000"));
        assert!(e(UmemConfig {
            headroom: 128,
            ..small()
        })
        .contains("XDP_PACKET_HEADROOM"));
        assert!(e(UmemConfig {
            headroom: 1024,
            ..small()
        })
        .contains("packet room"));
        assert!(e(UmemConfig {
            regions: vec![32, 16],
            ..small()
        })
        .contains("add up to 48"));
        assert!(e(UmemConfig {
            regions: vec![60, 16],
            ..small()
        })
        .contains("more than frame_count"));
    }

    /// `AnonHugePages` of the mapping of this process that contains `addr`, in KiB.
    fn anon_huge_kib(addr: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = (lo..hi).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix("AnonHugePages:") {
                    return v.trim().trim_end_matches("kB").trim().parse().ok();
                }
            }
        }
        None
    }

    #[test]
    fn small_page_umem_is_advised_for_transparent_huge_pages() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if !thp.contains("[always]") && !thp.contains("[madvise]") {
            eprintln!(
                "transparent huge pages disabled here ({}): nothing to check",
                thp.trim()
            );
            return;
        }
        // 16 MiB: several whole 2 MiB pages whatever the mapping's alignment.
        let umem = Umem::new(&UmemConfig {
            frame_count: 8192,
            regions: vec![8192],
            ..UmemConfig::default()
        })
        .expect("umem");
        assert!(!umem.huge_pages(), "no reserved huge pages were asked for");
        let kib = anon_huge_kib(umem.area().as_ptr() as usize).expect("mapping in smaps");
        assert!(
            kib >= 4096,
            "only {kib} KiB of the UMEM on transparent huge pages"
        );
    }

    #[test]
    fn huge_pages_fall_back_to_small_pages_when_none_are_free() {
        let free: u64 = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("HugePages_Free:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0);
        let umem = Umem::new(&UmemConfig {
            frame_count: 1024,
            huge_pages: true,
            ..UmemConfig::default()
        })
        .expect("huge pages or the fallback");
        if free == 0 {
            assert!(!umem.huge_pages(), "no free huge page: 4 KiB pages");
        }
        let pool = FramePool::new(&umem, 0).expect("pool");
        let mut p = pool.alloc().expect("frame");
        assert!(p.set_len(8));
        p.data_mut().fill(7);
        assert_eq!(p.data(), &[7; 8]);
    }

    #[test]
    fn regions_are_owned_by_one_pool_at_a_time() {
        let umem = Umem::new(&small()).expect("umem");
        assert_eq!(umem.region_frames(1), Some(32..64));
        let p0 = FramePool::new(&umem, 0).expect("region 0");
        assert!(matches!(
            FramePool::new(&umem, 0),
            Err(UmemError::RegionInUse(0))
        ));
        assert!(matches!(
            FramePool::new(&umem, 2),
            Err(UmemError::NoSuchRegion { region: 2, .. })
        ));
        let p1 = FramePool::new(&umem, 1).expect("region 1");
        assert_eq!((p0.capacity(), p1.capacity()), (32, 32));
        assert_eq!(p1.frame_base(32 * 2048 + 300), Some(32 * 2048));
        assert_eq!(p1.frame_base(31 * 2048), None, "frame of region 0");
        drop(p0);
        assert!(FramePool::new(&umem, 0).is_ok(), "released on drop");
    }

    #[test]
    fn dropped_packets_return_their_frame() {
        let umem = Umem::new(&small()).expect("umem");
        let pool = FramePool::new(&umem, 0).expect("pool");
        let mut pkts = Vec::new();
        assert_eq!(pool.alloc_bulk(&mut pkts, 40), 32, "only 32 frames");
        assert_eq!(pool.available(), 0);
        assert!(pool.alloc().is_none());
        let mut addrs: Vec<u64> = pkts.iter().map(|p| p.frame_addr()).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 32, "every frame handed out once");
        pkts.truncate(10);
        assert_eq!(pool.available(), 22);
        drop(pkts);
        assert_eq!(pool.available(), 32);
    }

    #[test]
    fn fresh_packet_has_headroom_and_writable_frame() {
        let umem = Umem::new(&UmemConfig {
            frame_count: 8,
            headroom: 512,
            ..UmemConfig::default()
        })
        .expect("umem");
        let pool = FramePool::new(&umem, 0).expect("pool");
        let mut p = pool.alloc().expect("frame");
        assert_eq!((p.headroom(), p.len(), p.tailroom()), (512, 0, 2048 - 512));
        assert!(p.set_len(4));
        p.data_mut().copy_from_slice(&[1, 2, 3, 4]);
        let h = p.push_head(2).expect("headroom");
        h[..2].copy_from_slice(&[9, 9]);
        assert_eq!(p.data(), &[9, 9, 1, 2, 3, 4]);
        assert!(!p.set_len(2048));
        assert!(p.set_len(2048 - 510));
        assert_eq!(p.tailroom(), 0);
    }
}

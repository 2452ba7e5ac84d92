//! `Packet`: an owned handle to one UMEM frame.
//!
//! A `Packet<'pool>` is the only way safe code reaches frame memory. It is move-only (neither `Clone`
//! nor `Copy`), so exactly one handle exists per frame handed out; dropping it puts the frame back on
//! the free list of the [`FramePool`] it came from, and sending it
//! ([`crate::xsk::port::Port::tx_burst`]) moves it into the TX ring without running that drop. Because the
//! handle borrows the pool, the pool (and the UMEM mapping it keeps alive) cannot be dropped while a
//! packet exists, so use-after-free and double free cannot be written in safe code. The borrow also
//! makes packets `!Send`: they stay on the worker thread that owns the pool, which is what lets the
//! free list be a plain `Vec` with no atomics or locks.
//!
//! ```
//! use cne::frame::Frame;
//! use cne::xsk::umem::{FramePool, Umem, UmemConfig};
//!
//! let umem = Umem::new(&UmemConfig { frame_count: 8, ..UmemConfig::default() })?;
//! let pool = FramePool::new(&umem, 0)?;
//! let mut pkt = pool.alloc().expect("a free frame");
//! assert!(pkt.set_len(4));
//! pkt.data_mut().copy_from_slice(b"ping");
//! assert_eq!(pool.available(), 7);
//! drop(pkt); // the frame goes back to the pool
//! assert_eq!(pool.available(), 8);
//! # Ok::<(), cne::xsk::umem::UmemError>(())
//! ```
//!
//! What safe code cannot do (each of these fails to compile): keep a packet after its pool is gone,
//!
//! ```compile_fail
//! # use cne::xsk::umem::{FramePool, Umem, UmemConfig};
//! # let umem = Umem::new(&UmemConfig { frame_count: 8, ..UmemConfig::default() }).unwrap();
//! let pool = FramePool::new(&umem, 0).unwrap();
//! let pkt = pool.alloc().unwrap();
//! drop(pool); // error: `pool` is still borrowed by `pkt`
//! drop(pkt);
//! ```
//!
//! duplicate a packet (a second owner of the same frame),
//!
//! ```compile_fail
//! # use cne::xsk::umem::{FramePool, Umem, UmemConfig};
//! # let umem = Umem::new(&UmemConfig { frame_count: 8, ..UmemConfig::default() }).unwrap();
//! # let pool = FramePool::new(&umem, 0).unwrap();
//! let pkt = pool.alloc().unwrap();
//! let twin = pkt.clone(); // error: Packet is not Clone
//! ```
//!
//! or hand a packet to another thread, which would race on the pool's free list.
//!
//! ```compile_fail
//! # use cne::xsk::umem::{FramePool, Umem, UmemConfig};
//! # let umem = Umem::new(&UmemConfig { frame_count: 8, ..UmemConfig::default() }).unwrap();
//! # let pool = FramePool::new(&umem, 0).unwrap();
//! let pkt = pool.alloc().unwrap();
//! std::thread::scope(|s| {
//!     s.spawn(move || drop(pkt)); // error: Packet is not Send
//! });
//! ```
//!
//! The data window `[start, end)` moves inside the frame: `start` is the headroom (room to prepend
//! encapsulation headers with [`Frame::push_head`]), `frame_size - end` the tailroom.

use std::fmt;
use std::mem::ManuallyDrop;

use crate::frame::Frame;
use crate::xsk::ring::XdpDesc;
use crate::xsk::umem::FramePool;

/// One UMEM frame holding a packet, owned by the current worker (see the module doc).
pub struct Packet<'pool> {
    pool: &'pool FramePool,
    /// UMEM address of the frame's first byte.
    addr: u64,
    /// Data window, as offsets from `addr`; `start <= end <= frame_size`.
    start: u32,
    end: u32,
}

impl<'pool> Packet<'pool> {
    /// Wraps frame `addr` of `pool`, taking over its ownership.
    /// Callers guarantee the frame is owned by nobody else and `start <= end <= frame_size`.
    #[inline]
    pub(crate) fn from_frame(pool: &'pool FramePool, addr: u64, start: u32, end: u32) -> Self {
        debug_assert!(start <= end && end <= pool.frame_size());
        debug_assert_eq!(pool.frame_base(addr), Some(addr));
        Self {
            pool,
            addr,
            start,
            end,
        }
    }

    /// Gives up ownership of the frame in exchange for its TX descriptor (the frame now belongs to
    /// the ring it is written to).
    #[inline]
    pub(crate) fn into_desc(self) -> XdpDesc {
        let this = ManuallyDrop::new(self);
        XdpDesc {
            addr: this.addr + u64::from(this.start),
            len: this.end - this.start,
            options: 0,
        }
    }

    /// The pool this packet's frame belongs to.
    pub fn pool(&self) -> &'pool FramePool {
        self.pool
    }

    /// UMEM address of the frame (not of the data).
    pub fn frame_addr(&self) -> u64 {
        self.addr
    }

    /// UMEM address of the first data byte.
    pub fn data_addr(&self) -> u64 {
        self.addr + u64::from(self.start)
    }

    /// Whether `self` was taken from `pool`.
    #[inline]
    pub fn belongs_to(&self, pool: &FramePool) -> bool {
        std::ptr::eq(self.pool, pool)
    }
}

impl Drop for Packet<'_> {
    #[inline]
    fn drop(&mut self) {
        self.pool.put(self.addr);
    }
}

impl fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("frame", &format_args!("{:#x}", self.addr))
            .field("headroom", &self.start)
            .field("len", &(self.end - self.start))
            .finish()
    }
}

impl Frame for Packet<'_> {
    #[inline]
    fn data(&self) -> &[u8] {
        let p = self.pool.ptr(self.addr + u64::from(self.start));
        // SAFETY: [addr + start, addr + end) lies inside one frame of the pool's region (invariant
        // start <= end <= frame_size, frame checked when the packet was made), inside the live UMEM
        // mapping the pool keeps alive for 'pool. This handle is the frame's only owner and the
        // kernel does not touch frames outside its rings, so nothing writes it while borrowed.
        unsafe { std::slice::from_raw_parts(p, (self.end - self.start) as usize) }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let p = self.pool.ptr(self.addr + u64::from(self.start));
        // SAFETY: as in `data`, and `&mut self` makes this the only borrow of the frame.
        unsafe { std::slice::from_raw_parts_mut(p, (self.end - self.start) as usize) }
    }

    #[inline]
    fn headroom(&self) -> usize {
        self.start as usize
    }

    #[inline]
    fn tailroom(&self) -> usize {
        (self.pool.frame_size() - self.end) as usize
    }

    #[inline]
    fn push_head(&mut self, n: usize) -> Option<&mut [u8]> {
        let n = u32::try_from(n).ok().filter(|&n| n <= self.start)?;
        self.start -= n;
        Some(self.data_mut())
    }

    #[inline]
    fn pull_head(&mut self, n: usize) -> bool {
        match u32::try_from(n) {
            Ok(n) if n <= self.end - self.start => {
                self.start += n;
                true
            }
            _ => false,
        }
    }

    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        match u32::try_from(len) {
            Ok(len) if len <= self.pool.frame_size() - self.start => {
                self.end = self.start + len;
                true
            }
            _ => false,
        }
    }

    #[inline]
    fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xsk::umem::{Umem, UmemConfig};

    #[test]
    fn window_ops_match_vecframe() {
        use crate::frame::VecFrame;
        let umem = Umem::new(&UmemConfig {
            frame_count: 4,
            ..UmemConfig::default()
        })
        .expect("umem");
        let pool = FramePool::new(&umem, 0).expect("pool");
        let mut p = pool.alloc().expect("frame");
        assert!(p.set_len(6));
        p.data_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        let mut v = VecFrame::new(&[1, 2, 3, 4, 5, 6], 256, 2048);
        for step in 0..6 {
            let (a, b) = match step {
                0 => (p.pull_head(2), v.pull_head(2)),
                1 => (p.push_head(3).is_some(), v.push_head(3).is_some()),
                2 => (p.set_len(1), v.set_len(1)),
                3 => (p.pull_head(5), v.pull_head(5)),
                4 => (p.set_len(1800), v.set_len(1800)),
                _ => (p.push_head(300).is_some(), v.push_head(300).is_some()),
            };
            assert_eq!(a, b, "step {step}");
            assert_eq!(p.len(), v.len(), "step {step}");
            assert_eq!(p.headroom(), v.headroom(), "step {step}");
            assert_eq!(p.tailroom(), v.tailroom(), "step {step}");
        }
    }

    #[test]
    fn into_desc_keeps_the_frame_out_of_the_pool() {
        let umem = Umem::new(&UmemConfig {
            frame_count: 4,
            ..UmemConfig::default()
        })
        .expect("umem");
        let pool = FramePool::new(&umem, 0).expect("pool");
        let mut p = pool.alloc().expect("frame");
        assert!(p.set_len(60));
        let frame = p.frame_addr();
        let d = p.into_desc();
        assert_eq!((d.addr, d.len), (frame + 256, 60));
        assert_eq!(pool.available(), 3, "the frame now belongs to a ring");
        pool.put(frame);
        assert_eq!(pool.available(), 4);
    }
}

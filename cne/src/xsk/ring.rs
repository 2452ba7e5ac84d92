//! The four AF_XDP rings (fill, completion, RX, TX) as single-producer/single-consumer queues shared
//! with the kernel, with the index math done in Rust so the packet path never crosses FFI.
//!
//! A ring is a power-of-two array of entries plus two free-running `u32` indices, `producer` and
//! `consumer`, that live in memory shared with the peer (the kernel, or another thread for rings in
//! plain memory). Each side owns exactly one index and only reads the other. Entry `i` lives in slot
//! `i & mask`; the number of filled entries is `producer - consumer` in wrapping arithmetic.
//!
//! Memory ordering is the kernel's (see the comment block in `net/xdp/xsk_queue.h`):
//! * the consumer loads `producer` with **acquire** before reading entries, pairing with the
//!   producer's **release** store after writing them, so entry contents are visible;
//! * the producer loads `consumer` with **acquire** before overwriting slots, pairing with the
//!   consumer's **release** store after it finished reading them, so no slot is reused early.
//!
//! Like libxdp's `xsk.h`, each side caches the peer's index (`cached_*`) and only reloads it when the
//! cached view cannot satisfy a request, so a burst costs at most one acquire load and one release
//! store. The producer keeps its cached consumer offset by `size` so that
//! `cached_cons - cached_prod` is directly the number of free slots.
//!
//! Operations are transactions that borrow the ring mutably: [`ProdRing::reserve`] returns a
//! [`Reserved`] into which entries are pushed and which publishes them with one store on
//! [`Reserved::commit`]; [`ConsRing::peek`] returns a [`Peeked`] whose entries are read and then handed
//! back with [`Peeked::release`]. Dropping a transaction without committing or releasing cancels it:
//! nothing is published and the peer sees no change.

use std::cell::UnsafeCell;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Bit of a ring's `flags` word set by the kernel when it wants a wakeup syscall
/// (`XDP_RING_NEED_WAKEUP` in `<linux/if_xdp.h>`).
pub const XDP_RING_NEED_WAKEUP: u32 = 1;

/// One RX or TX ring entry: a UMEM address (offset from the start of the UMEM) and a length.
/// Same layout as the kernel's `struct xdp_desc`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpDesc {
    /// UMEM offset of the first data byte.
    pub addr: u64,
    /// Data length in bytes.
    pub len: u32,
    /// Option flags (`XDP_PKT_CONTD` for multi-buffer; always 0 here).
    pub options: u32,
}

const _: () = assert!(std::mem::size_of::<XdpDesc>() == std::mem::size_of::<cne_sys::xdp_desc>());

/// Errors creating a ring.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// Ring sizes must be powers of two so that `index & mask` selects the slot.
    #[error("ring size {0} is not a power of two between 1 and 2^31")]
    Size(u32),
}

/// Whatever keeps a ring's memory alive (a kernel ring mapping, or plain heap memory).
pub(crate) trait RingMemory: Send + Sync {}

/// The shared part of a ring: pointers into memory the peer also accesses.
struct RawRing<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    slots: NonNull<T>,
    mask: u32,
    size: u32,
    _memory: Arc<dyn RingMemory>,
}

impl<T> RawRing<T> {
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: `producer` points to an aligned u32 inside `_memory`, which lives as long as self;
        // it is only ever accessed atomically (by us through AtomicU32, by the kernel with
        // READ_ONCE/smp_load_acquire/smp_store_release).
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }
    }

    /// Pointer to the slot of free-running index `idx`.
    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & mask < size`, and `slots` points to an array of `size` entries inside
        // `_memory`, so the offset stays in bounds of one allocation.
        unsafe { self.slots.as_ptr().add((idx & self.mask) as usize) }
    }
}

impl<T> fmt::Debug for RawRing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("size", &self.size)
            .field("producer", &self.producer().load(Ordering::Relaxed))
            .field("consumer", &self.consumer().load(Ordering::Relaxed))
            .finish()
    }
}

/// The side of a ring that this process fills: the fill ring and the TX ring.
#[derive(Debug)]
pub struct ProdRing<T: Copy> {
    raw: RawRing<T>,
    /// Our producer index: everything below it is published or being written.
    cached_prod: u32,
    /// Last consumer index seen, plus `size`: `cached_cons - cached_prod` is a lower bound of the
    /// free slots.
    cached_cons: u32,
}

/// The side of a ring that this process drains: the RX ring and the completion ring.
#[derive(Debug)]
pub struct ConsRing<T: Copy> {
    raw: RawRing<T>,
    /// Last producer index seen: `cached_prod - cached_cons` is a lower bound of the filled entries.
    cached_prod: u32,
    /// Our consumer index.
    cached_cons: u32,
}

// SAFETY: the rings only hold pointers into memory kept alive by the `Arc<dyn RingMemory>` (which is
// Send + Sync); the shared indices are atomics, and the slots a side touches are owned by that side
// under the ring protocol, so moving a ring side to another thread is sound when `T` is Send.
unsafe impl<T: Copy + Send> Send for ProdRing<T> {}
// SAFETY: as for ProdRing.
unsafe impl<T: Copy + Send> Send for ConsRing<T> {}

fn check_size(size: u32) -> Result<(), RingError> {
    if size.is_power_of_two() && size <= 1 << 31 {
        Ok(())
    } else {
        Err(RingError::Size(size))
    }
}

impl<T: Copy> ProdRing<T> {
    /// Builds the producer side over ring memory.
    ///
    /// # Safety
    /// `producer`, `consumer` and `flags` must be valid, aligned `u32`s and `slots` a valid array of
    /// `size` entries of `T`, all inside memory kept alive by `memory`, accessed by the peer only as
    /// the consumer of this ring; `size` must be a power of two. No other producer may exist.
    pub(crate) unsafe fn from_raw(
        producer: NonNull<AtomicU32>,
        consumer: NonNull<AtomicU32>,
        flags: NonNull<AtomicU32>,
        slots: NonNull<T>,
        size: u32,
        memory: Arc<dyn RingMemory>,
    ) -> Self {
        let raw = RawRing {
            producer,
            consumer,
            flags,
            slots,
            mask: size.wrapping_sub(1),
            size,
            _memory: memory,
        };
        let cached_prod = raw.producer().load(Ordering::Relaxed);
        let cached_cons = raw.consumer().load(Ordering::Acquire).wrapping_add(size);
        Self {
            raw,
            cached_prod,
            cached_cons,
        }
    }

    /// Number of slots in the ring.
    pub fn size(&self) -> u32 {
        self.raw.size
    }

    /// Free slots, refreshing the consumer index only when the cached view shows fewer than `want`.
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        // Acquire: the peer's reads of the slots it released happen before we overwrite them.
        self.cached_cons = self
            .raw
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.raw.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Reserves up to `n` slots (fewer when the ring is fuller). Push entries into the returned
    /// transaction and [`Reserved::commit`] it; dropping it publishes nothing.
    #[must_use = "a reservation publishes nothing until it is committed"]
    pub fn reserve(&mut self, n: u32) -> Reserved<'_, T> {
        let len = self.free(n).min(n);
        Reserved {
            start: self.cached_prod,
            len,
            written: 0,
            slots: self.raw.slots,
            mask: self.raw.mask,
            ring: self,
        }
    }

    /// Entries published and not yet consumed by the peer (relaxed: advisory only).
    pub fn pending(&self) -> u32 {
        self.cached_prod
            .wrapping_sub(self.raw.consumer().load(Ordering::Relaxed))
    }

    /// Whether the kernel asked for a wakeup (`XDP_RING_NEED_WAKEUP`). Relaxed, as libxdp reads it:
    /// a stale answer costs one extra or one later syscall, never correctness.
    pub fn needs_wakeup(&self) -> bool {
        self.raw.flags().load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }

    /// Entries published but not consumed, read once the consumer has stopped for good (socket
    /// closed): used to take frames back from the fill and TX rings at teardown.
    pub(crate) fn drain_unconsumed(&mut self, mut f: impl FnMut(T)) {
        let mut idx = self.raw.consumer().load(Ordering::Acquire);
        while idx != self.cached_prod {
            // SAFETY: slot(idx) is in bounds; entries in [consumer, producer) were written by us and
            // are no longer read by a stopped consumer.
            f(unsafe { self.raw.slot(idx).read() });
            idx = idx.wrapping_add(1);
        }
        self.cached_cons = self.cached_prod.wrapping_add(self.raw.size);
    }
}

impl<T: Copy> ConsRing<T> {
    /// Builds the consumer side over ring memory.
    ///
    /// # Safety
    /// As for [`ProdRing::from_raw`], with the peer acting only as the producer of this ring and no
    /// other consumer existing.
    pub(crate) unsafe fn from_raw(
        producer: NonNull<AtomicU32>,
        consumer: NonNull<AtomicU32>,
        flags: NonNull<AtomicU32>,
        slots: NonNull<T>,
        size: u32,
        memory: Arc<dyn RingMemory>,
    ) -> Self {
        let raw = RawRing {
            producer,
            consumer,
            flags,
            slots,
            mask: size.wrapping_sub(1),
            size,
            _memory: memory,
        };
        let cached_prod = raw.producer().load(Ordering::Acquire);
        let cached_cons = raw.consumer().load(Ordering::Relaxed);
        Self {
            raw,
            cached_prod,
            cached_cons,
        }
    }

    /// Number of slots in the ring.
    pub fn size(&self) -> u32 {
        self.raw.size
    }

    /// Filled entries, refreshing the producer index only when the cached view shows fewer than
    /// `want`.
    pub fn available(&mut self, want: u32) -> u32 {
        let avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail >= want {
            return avail;
        }
        // Acquire: the producer's writes of the entries happen before our reads of them.
        self.cached_prod = self.raw.producer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Takes up to `n` filled entries. Read them from the returned transaction and
    /// [`Peeked::release`] it; dropping it leaves the entries in the ring for the next peek.
    #[must_use = "peeked entries stay in the ring until released"]
    pub fn peek(&mut self, n: u32) -> Peeked<'_, T> {
        let len = self.available(n).min(n);
        Peeked {
            start: self.cached_cons,
            len,
            slots: self.raw.slots,
            mask: self.raw.mask,
            ring: self,
        }
    }

    /// Whether the kernel asked for a wakeup (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        self.raw.flags().load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }
}

/// Slots reserved in a producer ring, filled with [`Reserved::push`], published by
/// [`Reserved::commit`].
#[must_use = "a reservation publishes nothing until it is committed"]
#[derive(Debug)]
pub struct Reserved<'r, T: Copy> {
    ring: &'r mut ProdRing<T>,
    start: u32,
    len: u32,
    written: u32,
    /// Copies of the ring's slot pointer and mask, so the per-entry path works on locals the
    /// compiler can keep in registers (writes through the slot pointer could alias the ring).
    slots: NonNull<T>,
    mask: u32,
}

impl<T: Copy> Reserved<'_, T> {
    /// Number of reserved slots.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether nothing could be reserved (the ring is full).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of entries pushed so far.
    pub fn written(&self) -> u32 {
        self.written
    }

    /// Writes the next entry. `false` (and nothing written) when all reserved slots are used.
    #[inline]
    pub fn push(&mut self, value: T) -> bool {
        if self.written == self.len {
            return false;
        }
        let idx = (self.start.wrapping_add(self.written) & self.mask) as usize;
        let slot = self.slots.as_ptr().wrapping_add(idx);
        // SAFETY: `idx <= mask < size`, so the slot is in bounds of the ring's slot array, and slots
        // in [producer, consumer + size) belong to the producer, which we are exclusively
        // (`&mut ProdRing`); the peer does not read it before the release store in `commit`.
        unsafe { slot.write(value) };
        self.written += 1;
        true
    }

    /// Publishes the pushed entries with one release store. Unused reserved slots are returned.
    #[inline]
    pub fn commit(self) -> u32 {
        let n = self.written;
        if n > 0 {
            let ring = self.ring;
            ring.cached_prod = self.start.wrapping_add(n);
            // Release: the entry writes above become visible before the new producer index.
            ring.raw
                .producer()
                .store(ring.cached_prod, Ordering::Release);
        }
        n
    }
}

/// Entries taken from a consumer ring, read with [`Peeked::get`] or [`Peeked::iter`], handed back to
/// the producer by [`Peeked::release`].
#[must_use = "peeked entries stay in the ring until released"]
#[derive(Debug)]
pub struct Peeked<'r, T: Copy> {
    ring: &'r mut ConsRing<T>,
    start: u32,
    len: u32,
    /// See [`Reserved`]: local copies for the per-entry path.
    slots: NonNull<T>,
    mask: u32,
}

impl<T: Copy> Peeked<'_, T> {
    /// Number of entries taken.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the ring had no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entry `i` (0-based within this transaction), `None` past the end.
    #[inline]
    pub fn get(&self, i: u32) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let idx = (self.start.wrapping_add(i) & self.mask) as usize;
        let slot = self.slots.as_ptr().wrapping_add(idx);
        // SAFETY: `idx <= mask < size`, so the slot is in bounds; entries in [consumer, producer)
        // were published by the producer (acquire load in `available`) and are not rewritten until
        // we release them.
        Some(unsafe { slot.read() })
    }

    /// The entries in ring order.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        (0..self.len).filter_map(move |i| self.get(i))
    }

    /// Hands all taken entries back to the producer with one release store.
    #[inline]
    pub fn release(self) -> u32 {
        let n = self.len;
        if n > 0 {
            let ring = self.ring;
            ring.cached_cons = self.start.wrapping_add(n);
            // Release: our reads of the entries happen before the producer may overwrite them.
            ring.raw
                .consumer()
                .store(ring.cached_cons, Ordering::Release);
        }
        n
    }
}

/// Ring memory on the heap, for rings between two threads, tests and benchmarks.
struct HeapRing<T> {
    words: [AtomicU32; 3],
    slots: Box<[UnsafeCell<T>]>,
}

// SAFETY: the indices are atomics and each slot is accessed by one side at a time under the ring
// protocol (producer writes before its release store, consumer reads after its acquire load).
unsafe impl<T: Send> Sync for HeapRing<T> {}

impl<T: Send> RingMemory for HeapRing<T> {}

/// A producer/consumer pair over a fresh ring of `size` entries in plain memory, with the same code
/// and memory ordering as the kernel rings: a lock-free single-producer single-consumer queue.
pub fn heap_pair<T: Copy + Default + Send + 'static>(
    size: u32,
) -> Result<(ProdRing<T>, ConsRing<T>), RingError> {
    heap_pair_at(size, 0)
}

/// As [`heap_pair`], with both indices starting at `start` (tests wrap-around near `u32::MAX`).
fn heap_pair_at<T: Copy + Default + Send + 'static>(
    size: u32,
    start: u32,
) -> Result<(ProdRing<T>, ConsRing<T>), RingError> {
    check_size(size)?;
    let mem = Arc::new(HeapRing {
        words: [
            AtomicU32::new(start),
            AtomicU32::new(start),
            AtomicU32::new(0),
        ],
        slots: (0..size).map(|_| UnsafeCell::new(T::default())).collect(),
    });
    let producer = NonNull::from(&mem.words[0]);
    let consumer = NonNull::from(&mem.words[1]);
    let flags = NonNull::from(&mem.words[2]);
    // UnsafeCell<T> has the same layout as T; the pointer is derived from the whole slice so it may
    // reach every slot.
    let slots = NonNull::from(&*mem.slots).cast::<T>();
    let memory: Arc<dyn RingMemory> = mem.clone();
    // SAFETY: all pointers point into `mem`, kept alive by `memory`; `size` is a power of two and
    // the slot array has `size` entries; exactly one producer and one consumer are created.
    let prod =
        unsafe { ProdRing::from_raw(producer, consumer, flags, slots, size, memory.clone()) };
    // SAFETY: as above.
    let cons = unsafe { ConsRing::from_raw(producer, consumer, flags, slots, size, memory) };
    Ok((prod, cons))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn rejects_sizes_that_are_not_powers_of_two() {
        assert!(matches!(heap_pair::<u64>(0), Err(RingError::Size(0))));
        assert!(matches!(heap_pair::<u64>(12), Err(RingError::Size(12))));
        assert!(heap_pair::<u64>(1).is_ok());
    }

    #[test]
    fn fifo_order_and_full_ring() {
        let (mut p, mut c) = heap_pair::<u64>(4).expect("ring");
        let mut r = p.reserve(8);
        assert_eq!(r.len(), 4);
        for v in 10..20 {
            let _ = r.push(v);
        }
        assert_eq!(r.commit(), 4);
        assert!(p.reserve(1).is_empty(), "ring is full");
        let pk = c.peek(3);
        assert_eq!(pk.iter().collect::<Vec<_>>(), vec![10, 11, 12]);
        assert_eq!(pk.release(), 3);
        let mut r = p.reserve(8);
        assert_eq!(r.len(), 3);
        assert!(r.push(20));
        assert_eq!(r.commit(), 1);
        let pk = c.peek(8);
        assert_eq!(pk.iter().collect::<Vec<_>>(), vec![13, 20]);
        let _ = pk.release();
    }

    #[test]
    fn dropped_transactions_cancel() {
        let (mut p, mut c) = heap_pair::<u64>(8).expect("ring");
        {
            let mut r = p.reserve(4);
            assert!(r.push(1));
        }
        assert_eq!(c.peek(8).len(), 0, "uncommitted entries are invisible");
        let mut r = p.reserve(4);
        assert!(r.push(7));
        let _ = r.commit();
        {
            let pk = c.peek(8);
            assert_eq!(pk.get(0), Some(7));
            assert_eq!(pk.get(1), None);
        }
        let pk = c.peek(8);
        assert_eq!(pk.len(), 1, "unreleased entries are still there");
        let _ = pk.release();
        assert_eq!(p.free(8), 8);
    }

    #[test]
    fn drain_unconsumed_returns_published_entries() {
        let (mut p, mut c) = heap_pair::<u64>(8).expect("ring");
        let mut r = p.reserve(5);
        for v in 0..5 {
            let _ = r.push(v);
        }
        let _ = r.commit();
        let _ = c.peek(2).release();
        let mut back = Vec::new();
        p.drain_unconsumed(|v| back.push(v));
        assert_eq!(back, vec![2, 3, 4]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Reserve `n`, push `k` values, commit.
        Produce(u32, u32),
        /// Peek `n`, then release (true) or cancel (false).
        Consume(u32, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..40, 0u32..40).prop_map(|(n, k)| Op::Produce(n, k)),
            (0u32..40, any::<bool>()).prop_map(|(n, r)| Op::Consume(n, r)),
        ]
    }

    proptest! {
        /// The ring behaves as a bounded FIFO: reservations and peeks get exactly
        /// min(request, room) entries, values come out in order, and counts never exceed the size,
        /// including across the u32 wrap of the free-running indices.
        #[test]
        fn ring_matches_fifo_model(
            size_log in 0u32..6,
            start in prop_oneof![Just(0u32), Just(u32::MAX - 20), any::<u32>()],
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let size = 1u32 << size_log;
            let (mut p, mut c) = heap_pair_at::<u64>(size, start).expect("ring");
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Produce(n, k) => {
                        let room = size - u32::try_from(model.len()).unwrap();
                        let mut r = p.reserve(n);
                        prop_assert_eq!(r.len(), n.min(room));
                        let mut pushed = 0;
                        for _ in 0..k {
                            if r.push(next) {
                                model.push_back(next);
                                next += 1;
                                pushed += 1;
                            }
                        }
                        prop_assert_eq!(pushed, k.min(n.min(room)));
                        prop_assert_eq!(r.commit(), pushed);
                    }
                    Op::Consume(n, release) => {
                        let pk = c.peek(n);
                        prop_assert_eq!(pk.len(), n.min(u32::try_from(model.len()).unwrap()));
                        let got: Vec<u64> = pk.iter().collect();
                        let want: Vec<u64> = model.iter().take(got.len()).copied().collect();
                        prop_assert_eq!(&got, &want);
                        if release {
                            prop_assert_eq!(pk.release() as usize, got.len());
                            model.drain(..got.len());
                        }
                    }
                }
                prop_assert!(u32::try_from(model.len()).unwrap() <= size);
                prop_assert_eq!(p.pending(), u32::try_from(model.len()).unwrap());
            }
        }
    }
}

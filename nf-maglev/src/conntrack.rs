//! The per-worker connection table: flow 5-tuple -> backend, with idle timeouts and LRU eviction.
//!
//! Each worker owns one table (Maglev's per-thread tables, Katran's per-CPU LRU): no sharing, no locks, no
//! atomics. A flow keeps the backend it was first given while its entry lives, even when the Maglev tables
//! change under it. The table is allocated once: lookups, inserts and evictions are O(1) and never allocate.
//!
//! Layout: 7-way set-associative. A flow hash picks a bucket of 512 bytes, aligned: a header cache line with a
//! 32-bit tag and an expiry time per way, then the seven entries (key, backend), one cache line each. A lookup
//! reads the header and, on a tag match, one entry: two cache lines in one page, so a table far larger than
//! the TLB's reach costs one page walk per lookup, not two (73 bytes per entry). Storing the *expiry* rather
//! than the last-seen time lets a full bucket pick its victim from the header alone: an expired way if any,
//! otherwise the way closest to expiry, which is the least recently used among flows of one kind and prefers
//! closing TCP connections.
//!
//! Time is a monotonic clock in whole seconds (read once per burst): timeouts have one-second granularity.
//!
//! Flood guard (Katran): above `max_new_per_sec` new entries in the current second, new flows are not recorded;
//! the data plane still forwards them by the Maglev table, so established flows are not flushed by a SYN flood.

/// Ways per bucket: a 64-byte header and seven 64-byte entries make a 512-byte bucket that never straddles
/// a page.
const WAYS: usize = 7;

/// Tag of an empty way. Real tags have their low bit set.
const FREE: u32 = 0;

/// A flow's identity. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`); fragments use ports 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Client address.
    pub src: u128,
    /// VIP address.
    pub dst: u128,
    /// Client port.
    pub sport: u16,
    /// VIP port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

impl FlowKey {
    /// The ports and protocol packed into one word, as [`crate::hash::flow_hash`] takes them.
    #[inline]
    pub fn ports_proto(&self) -> u64 {
        Self::pack_ports_proto(self.sport, self.dport, self.proto)
    }

    /// [`FlowKey::ports_proto`] of these values, for a hash computed before the key is stored.
    #[inline]
    pub fn pack_ports_proto(sport: u16, dport: u16, proto: u8) -> u64 {
        (u64::from(sport) << 24) | (u64::from(dport) << 8) | u64::from(proto)
    }

    /// The flow hash of this key under `seed`.
    #[inline]
    pub fn hash(&self, seed: u64) -> u64 {
        crate::hash::flow_hash(seed, self.src, self.dst, self.ports_proto())
    }
}

/// What the table remembers about a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conn {
    /// Stable identity of the backend (survives table rebuilds; see `control`).
    pub backend: u32,
    /// Index of that backend in its VIP's current backend list when recorded: checked, never trusted.
    pub hint: u16,
    /// A FIN or RST was seen: the shorter timeout applies.
    pub closing: bool,
}

/// Idle timeouts, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Open TCP connection.
    pub tcp: u32,
    /// UDP flow (and any protocol other than TCP).
    pub udp: u32,
    /// TCP connection after FIN or RST.
    pub tcp_fin: u32,
}

/// Event counts since the table was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnTrackStats {
    /// New entries recorded.
    pub inserted: u64,
    /// Live entries displaced from a full bucket (LRU eviction).
    pub evicted: u64,
    /// Entries found past their timeout and dropped.
    pub expired: u64,
    /// New flows not recorded because of the flood guard.
    pub limited: u64,
}

/// Result of [`ConnTrack::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// The flow already had an entry; it now holds the new value.
    Updated,
    /// A new entry was recorded in a free or expired way.
    Inserted,
    /// A new entry was recorded by evicting a live one.
    Evicted,
    /// Not recorded: the flood guard's budget for this second is spent.
    Limited,
}

/// Where a flow lives in a table: its bucket and tag ([`ConnTrack::slot`] of its hash). Only meaningful
/// for the table that computed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slot {
    bucket: u32,
    tag: u32,
}

#[derive(Clone, Copy, Default)]
#[repr(C, align(512))]
struct Bucket {
    /// One tag per way, and a last slot that stays [`FREE`]: eight tags compare as two vectors.
    tags: [u32; WAYS + 1],
    /// Second after which the way's entry is dead.
    expires: [u32; WAYS],
    entries: [Entry; WAYS],
}

impl Bucket {
    /// Bit `w` set for every way whose tag is `tag` (never the padding slot: `tag` is never [`FREE`]).
    #[inline]
    fn matches(&self, tag: u32) -> u32 {
        cne::simd::eq_mask_u32x8(&self.tags, tag)
    }

    /// The way a new entry takes: a free way, else the one expiring first (an expired one if any).
    #[inline]
    fn victim(&self) -> usize {
        let mut victim = 0;
        for w in 0..WAYS {
            if self.tags[w] == FREE {
                return w;
            }
            if self.expires[w] < self.expires[victim] {
                victim = w;
            }
        }
        victim
    }
}

/// 64 bytes, aligned: a lookup touches exactly one cache line of entries.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Entry {
    key: FlowKey,
    conn: Conn,
}

/// The connection table of one worker.
pub struct ConnTrack {
    buckets: Box<[Bucket]>,
    timeouts: Timeouts,
    max_new_per_sec: u32,
    window: u32,
    window_new: u32,
    stats: ConnTrackStats,
}

impl std::fmt::Debug for ConnTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTrack")
            .field("capacity", &self.capacity())
            .field("timeouts", &self.timeouts)
            .field("max_new_per_sec", &self.max_new_per_sec)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ConnTrack {
    /// A table of at least `capacity` entries (rounded up to a multiple of 7, the ways of a bucket), with
    /// `max_new_per_sec` new entries per second at most (0: no limit). This is the only allocation.
    ///
    /// The memory is advised for transparent huge pages before it is first written: lookups land on random
    /// buckets, and with 4 KiB pages a table of a million flows would cost a TLB miss (a page walk) on
    /// nearly every one.
    pub fn new(capacity: u32, timeouts: Timeouts, max_new_per_sec: u32) -> Self {
        let buckets = (capacity as usize).div_ceil(WAYS).max(1);
        let mut table = Vec::with_capacity(buckets);
        // A hint: without huge pages the table works the same, only slower.
        let _ = cne::hint::advise_huge_pages(table.spare_capacity_mut());
        table.resize(buckets, Bucket::default());
        Self {
            buckets: table.into_boxed_slice(),
            timeouts,
            max_new_per_sec,
            window: 0,
            window_new: 0,
            stats: ConnTrackStats::default(),
        }
    }

    /// Number of entries the table can hold.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Changes the timeouts; entries pick them up when next refreshed.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// Changes the flood guard's budget (0: no limit).
    pub fn set_max_new_per_sec(&mut self, max_new_per_sec: u32) {
        self.max_new_per_sec = max_new_per_sec;
    }

    /// Event counts.
    pub fn stats(&self) -> ConnTrackStats {
        self.stats
    }

    /// The bucket of a hash (from the low 32 bits, by multiply-shift: any bucket count works, no division)
    /// and the tag (the high 32 bits, never the tag of a free way). The data plane computes it once per packet and
    /// passes it to the `*_at` methods; the others take the hash.
    #[inline]
    pub fn slot(&self, hash: u64) -> Slot {
        // Truncations intended: the two halves of the hash serve as bucket and tag.
        #[allow(clippy::cast_possible_truncation)]
        let (low, tag) = (u64::from(hash as u32), ((hash >> 32) as u32) | 1);
        // Below the bucket count, itself far below 2^32 (the configured size is capped at 2^26).
        #[allow(clippy::cast_possible_truncation)]
        let bucket = ((low * self.buckets.len() as u64) >> 32) as u32;
        Slot { bucket, tag }
    }

    #[inline]
    fn timeout(&self, key: &FlowKey, conn: &Conn) -> u32 {
        match (key.proto, conn.closing) {
            (6, false) => self.timeouts.tcp,
            (6, true) => self.timeouts.tcp_fin,
            _ => self.timeouts.udp,
        }
    }

    /// The way of bucket `b` holding `key`, if any (expired or not).
    #[inline]
    fn find(&self, b: usize, tag: u32, key: &FlowKey) -> Option<usize> {
        let bucket = self.buckets.get(b)?;
        // All tags compared at once, then only the ways whose tag matches: nearly always one.
        let mut candidates = bucket.matches(tag);
        while candidates != 0 {
            let w = candidates.trailing_zeros() as usize;
            if bucket.entries.get(w).is_some_and(|e| e.key == *key) {
                return Some(w);
            }
            candidates &= candidates - 1;
        }
        None
    }

    /// Starts loading the bucket header of `hash` into the cache, so that a lookup a few packets later finds
    /// it there. Issuing this for a whole burst before the lookups overlaps the cache misses of a large table
    /// instead of paying them one after another.
    #[inline]
    pub fn prefetch_bucket(&self, hash: u64) {
        self.prefetch_bucket_at(self.slot(hash));
    }

    /// [`ConnTrack::prefetch_bucket`] of a slot.
    #[inline]
    pub fn prefetch_bucket_at(&self, slot: Slot) {
        if let Some(bucket) = self.buckets.get(slot.bucket as usize) {
            cne::hint::prefetch_read(&bucket.tags);
        }
    }

    /// Starts loading the entry a lookup of `hash` would compare, once its bucket header is cached (see
    /// [`ConnTrack::prefetch_bucket`]): the first way whose tag matches, or else the way an insert of the
    /// flow would take (a flow without an entry is recorded right after its lookup misses).
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) {
        self.prefetch_entry_at(self.slot(hash));
    }

    /// [`ConnTrack::prefetch_entry`] of a slot.
    #[inline]
    pub fn prefetch_entry_at(&self, slot: Slot) {
        if let Some(bucket) = self.buckets.get(slot.bucket as usize) {
            match bucket.matches(slot.tag).trailing_zeros() as usize {
                w if w < WAYS => cne::hint::prefetch_read(&bucket.entries[w]),
                _ => {
                    let victim = &bucket.entries[bucket.victim()];
                    cne::hint::prefetch_write_ptr(std::ptr::from_ref(victim).cast());
                }
            }
        }
    }

    /// Looks the flow up. On a hit the entry's timeout restarts (the shorter one from now on when `closing`,
    /// i.e. the packet carries FIN or RST) and its value is returned. An expired entry is removed and missed.
    /// `hash` must be `key.hash(seed)` for one fixed seed.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, hash: u64, now: u32, closing: bool) -> Option<Conn> {
        self.lookup_at(key, self.slot(hash), now, closing)
    }

    /// [`ConnTrack::lookup`] at the flow's slot.
    #[inline]
    pub fn lookup_at(
        &mut self,
        key: &FlowKey,
        slot: Slot,
        now: u32,
        closing: bool,
    ) -> Option<Conn> {
        let b = slot.bucket as usize;
        let w = self.find(b, slot.tag, key)?;
        if self.buckets[b].expires[w] < now {
            self.buckets[b].tags[w] = FREE;
            self.stats.expired += 1;
            return None;
        }
        // Stores only what changes: the entry's line is written once per connection (when it starts
        // closing), the header's at most once per second per flow. A table too large for the caches then
        // costs DRAM reads only, not a write-back of two lines per packet as well.
        let mut conn = self.buckets[b].entries[w].conn;
        let newly_closing = closing && !conn.closing;
        conn.closing |= closing;
        let expires = now.saturating_add(self.timeout(key, &conn));
        let bucket = &mut self.buckets[b];
        if newly_closing {
            bucket.entries[w].conn.closing = true;
        }
        if bucket.expires[w] != expires {
            bucket.expires[w] = expires;
        }
        Some(conn)
    }

    /// Records `conn` for the flow, replacing its entry if it has one. A new entry takes a free or expired way,
    /// else evicts the way closest to expiry; new entries are subject to the flood guard.
    #[inline]
    pub fn insert(&mut self, key: &FlowKey, hash: u64, conn: Conn, now: u32) -> Insert {
        self.insert_at(key, self.slot(hash), conn, now)
    }

    /// [`ConnTrack::insert`] at the flow's slot. A slot of another, larger table records nothing
    /// ([`Insert::Limited`]).
    #[inline]
    pub fn insert_at(&mut self, key: &FlowKey, slot: Slot, conn: Conn, now: u32) -> Insert {
        let (b, tag) = (slot.bucket as usize, slot.tag);
        if b >= self.buckets.len() {
            // A slot of another (larger) table: nothing to record it in.
            return Insert::Limited;
        }
        let expires = now.saturating_add(self.timeout(key, &conn));
        if let Some(w) = self.find(b, tag, key) {
            self.buckets[b].entries[w].conn = conn;
            self.buckets[b].expires[w] = expires;
            return Insert::Updated;
        }
        if self.max_new_per_sec != 0 {
            if self.window != now {
                self.window = now;
                self.window_new = 0;
            }
            if self.window_new >= self.max_new_per_sec {
                self.stats.limited += 1;
                return Insert::Limited;
            }
            self.window_new += 1;
        }
        let bucket = &mut self.buckets[b];
        let victim = bucket.victim();
        let outcome = if bucket.tags[victim] == FREE {
            Insert::Inserted
        } else if bucket.expires[victim] < now {
            self.stats.expired += 1;
            Insert::Inserted
        } else {
            self.stats.evicted += 1;
            Insert::Evicted
        };
        bucket.tags[victim] = tag;
        bucket.expires[victim] = expires;
        bucket.entries[victim] = Entry { key: *key, conn };
        self.stats.inserted += 1;
        outcome
    }

    /// Forgets the flow; `true` when it had an entry.
    pub fn remove(&mut self, key: &FlowKey, hash: u64) -> bool {
        let Slot { bucket, tag } = self.slot(hash);
        let b = bucket as usize;
        match self.find(b, tag, key) {
            Some(w) => {
                self.buckets[b].tags[w] = FREE;
                true
            }
            None => false,
        }
    }

    /// Number of live (unexpired) entries at `now`. Scans the whole table: for tests and occasional metrics.
    pub fn live(&self, now: u32) -> usize {
        self.buckets
            .iter()
            .flat_map(|b| b.tags[..WAYS].iter().zip(b.expires.iter()))
            .filter(|(&t, &e)| t != FREE && e >= now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const T: Timeouts = Timeouts {
        tcp: 100,
        udp: 30,
        tcp_fin: 10,
    };

    fn key(i: u32, proto: u8) -> FlowKey {
        FlowKey {
            src: 0xffff_c612_0000_0000 | u128::from(i),
            dst: 0xffff_c612_6401,
            sport: 1024 + (i % 60000) as u16,
            dport: 80,
            proto,
        }
    }

    fn conn(backend: u32) -> Conn {
        Conn {
            backend,
            hint: 0,
            closing: false,
        }
    }

    #[test]
    fn layout_is_cache_friendly() {
        assert_eq!(std::mem::size_of::<Bucket>(), 512);
        assert_eq!(std::mem::size_of::<Entry>(), 64);
        assert_eq!(
            std::mem::offset_of!(Bucket, entries),
            64,
            "entries start on the second cache line"
        );
    }

    #[test]
    fn slot_methods_match_the_hash_methods() {
        let mut a = ConnTrack::new(1000, T, 0);
        let mut b = ConnTrack::new(1000, T, 0);
        for i in 0..3000u32 {
            let k = key(i % 1500, 6);
            let h = k.hash(7);
            assert_eq!(
                a.insert(&k, h, conn(i), 1),
                b.insert_at(&k, b.slot(h), conn(i), 1)
            );
            assert_eq!(
                a.lookup(&k, h, 2, false),
                b.lookup_at(&k, b.slot(h), 2, false)
            );
        }
        assert_eq!(a.stats(), b.stats());
        // A slot of a larger table names a bucket this one lacks: nothing is recorded, nothing panics.
        let big = ConnTrack::new(1 << 20, T, 0);
        let mut small = ConnTrack::new(7, T, 0);
        let k = key(1, 17);
        let far = (0..u64::MAX)
            .map(|h| big.slot(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .find(|s| s.bucket > 0)
            .unwrap_or_default();
        assert_eq!(small.insert_at(&k, far, conn(1), 1), Insert::Limited);
        assert_eq!(small.lookup_at(&k, far, 1, false), None);
        small.prefetch_bucket_at(far);
        small.prefetch_entry_at(far);
        assert_eq!(small.stats().inserted, 0);
    }

    #[test]
    fn capacity_rounds_up() {
        assert_eq!(ConnTrack::new(0, T, 0).capacity(), 7);
        assert_eq!(ConnTrack::new(7, T, 0).capacity(), 7);
        assert_eq!(ConnTrack::new(8, T, 0).capacity(), 14);
        assert_eq!(ConnTrack::new(1_000_000, T, 0).capacity(), 1_000_006);
    }

    #[test]
    fn insert_lookup_update_remove() {
        let mut ct = ConnTrack::new(1024, T, 0);
        let (k, h) = (key(1, 6), key(1, 6).hash(0));
        assert_eq!(ct.lookup(&k, h, 5, false), None);
        assert_eq!(ct.insert(&k, h, conn(7), 5), Insert::Inserted);
        assert_eq!(ct.lookup(&k, h, 6, false), Some(conn(7)));
        let other = key(2, 6);
        assert_eq!(ct.lookup(&other, other.hash(0), 6, false), None);
        assert_eq!(ct.insert(&k, h, conn(9), 6), Insert::Updated);
        assert_eq!(ct.lookup(&k, h, 7, false).map(|c| c.backend), Some(9));
        assert_eq!(ct.live(7), 1, "an update does not duplicate");
        assert!(ct.remove(&k, h));
        assert!(!ct.remove(&k, h));
        assert_eq!(ct.lookup(&k, h, 7, false), None);
        assert_eq!(ct.stats().inserted, 1);
    }

    #[test]
    fn same_key_other_protocol_or_vip_is_another_flow() {
        let mut ct = ConnTrack::new(1024, T, 0);
        let tcp = key(1, 6);
        ct.insert(&tcp, tcp.hash(0), conn(1), 0);
        let udp = key(1, 17);
        assert_eq!(ct.lookup(&udp, udp.hash(0), 0, false), None);
        let other_vip = FlowKey {
            dst: tcp.dst + 1,
            ..tcp
        };
        assert_eq!(ct.lookup(&other_vip, other_vip.hash(0), 0, false), None);
        // Even a forced hash collision is told apart by the full key.
        assert_eq!(ct.lookup(&udp, tcp.hash(0), 0, false), None);
    }

    #[test]
    fn timeouts_by_protocol_and_state() {
        let mut ct = ConnTrack::new(1024, T, 0);
        let (tcp, udp) = (key(1, 6), key(2, 17));
        ct.insert(&tcp, tcp.hash(0), conn(1), 1000);
        ct.insert(&udp, udp.hash(0), conn(2), 1000);
        // Idle exactly the timeout: still alive; one second more: gone.
        assert!(ct.lookup(&udp, udp.hash(0), 1030, false).is_some());
        assert!(ct.lookup(&udp, udp.hash(0), 1061, false).is_none());
        assert!(
            ct.lookup(&tcp, tcp.hash(0), 1100, false).is_some(),
            "tcp keeps 100 s and refreshes"
        );
        // A FIN switches to the short timeout.
        assert!(ct
            .lookup(&tcp, tcp.hash(0), 1150, true)
            .is_some_and(|c| c.closing));
        assert!(ct.lookup(&tcp, tcp.hash(0), 1160, false).is_some());
        assert!(ct.lookup(&tcp, tcp.hash(0), 1171, false).is_none());
        assert_eq!(ct.stats().expired, 2);
    }

    /// Keys that all land in bucket 0 (the low 32 bits of their hashes are 0).
    fn colliding(n: u32) -> Vec<(FlowKey, u64)> {
        (0..n).map(|i| (key(i, 6), u64::from(i) << 40)).collect()
    }

    #[test]
    fn full_bucket_evicts_least_recently_used() {
        let mut ct = ConnTrack::new(70, T, 0);
        let flows = colliding(WAYS as u32 + 1);
        for (i, (k, h)) in flows.iter().take(WAYS).enumerate() {
            assert_eq!(ct.insert(k, *h, conn(i as u32), i as u32), Insert::Inserted);
        }
        // Touch flow 0 so flow 1 becomes the least recently used.
        assert!(ct.lookup(&flows[0].0, flows[0].1, 20, false).is_some());
        let (k, h) = flows[WAYS];
        assert_eq!(ct.insert(&k, h, conn(8), 21), Insert::Evicted);
        assert_eq!(ct.stats().evicted, 1);
        assert!(
            ct.lookup(&flows[1].0, flows[1].1, 21, false).is_none(),
            "LRU flow evicted"
        );
        for (i, (k, h)) in flows.iter().enumerate().filter(|(i, _)| *i != 1) {
            assert!(ct.lookup(k, *h, 21, false).is_some(), "flow {i} kept");
        }
        // The other buckets were untouched: the table had room, only the bucket was full.
        assert_eq!(ct.live(21), WAYS);
    }

    #[test]
    fn closing_connections_are_evicted_first_and_expired_ways_are_reused() {
        let mut ct = ConnTrack::new(7, T, 0);
        let flows = colliding(WAYS as u32 + 2);
        for (k, h) in flows.iter().take(WAYS) {
            ct.insert(k, *h, conn(1), 0);
        }
        // Flow 5 saw a FIN later than everyone else's last packet, but its short timeout makes it the victim.
        assert!(ct.lookup(&flows[5].0, flows[5].1, 50, true).is_some());
        let (k, h) = flows[WAYS];
        assert_eq!(ct.insert(&k, h, conn(1), 50), Insert::Evicted);
        assert!(ct.lookup(&flows[5].0, flows[5].1, 50, false).is_none());
        // Later every original flow has expired: inserting reuses a way without counting an eviction.
        let (k, h) = flows[WAYS + 1];
        assert_eq!(ct.insert(&k, h, conn(1), 200), Insert::Inserted);
        assert_eq!(ct.stats().evicted, 1);
    }

    #[test]
    fn flood_guard_limits_new_entries_per_second() {
        let mut ct = ConnTrack::new(1024, T, 3);
        let flows: Vec<FlowKey> = (0..5).map(|i| key(i, 6)).collect();
        for k in &flows[..3] {
            assert_eq!(ct.insert(k, k.hash(0), conn(1), 10), Insert::Inserted);
        }
        assert_eq!(
            ct.insert(&flows[3], flows[3].hash(0), conn(1), 10),
            Insert::Limited
        );
        assert_eq!(ct.lookup(&flows[3], flows[3].hash(0), 10, false), None);
        // Updating a recorded flow is not a new connection.
        assert_eq!(
            ct.insert(&flows[0], flows[0].hash(0), conn(2), 10),
            Insert::Updated
        );
        // A new second brings a new budget.
        assert_eq!(
            ct.insert(&flows[3], flows[3].hash(0), conn(1), 11),
            Insert::Inserted
        );
        assert_eq!(ct.stats().limited, 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Lookup(u8, bool),
        Remove(u8),
        Tick(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u32>()).prop_map(|(k, b)| Op::Insert(k, b)),
            (any::<u8>(), any::<bool>()).prop_map(|(k, c)| Op::Lookup(k, c)),
            any::<u8>().prop_map(Op::Remove),
            (0u8..40).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// With room for every key (no eviction) the table behaves exactly like a map with expiry times.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(op(), 1..300)) {
            let mut ct = ConnTrack::new(4096, T, 0);
            let mut model: HashMap<u8, (Conn, u32)> = HashMap::new();
            let mut now = 0u32;
            let k = |i: u8| key(u32::from(i), if i % 2 == 0 { 6 } else { 17 });
            let timeout = |i: u8, c: &Conn| match (i % 2 == 0, c.closing) {
                (true, false) => T.tcp,
                (true, true) => T.tcp_fin,
                _ => T.udp,
            };
            for op in ops {
                match op {
                    Op::Insert(i, b) => {
                        let c = conn(b);
                        ct.insert(&k(i), k(i).hash(3), c, now);
                        model.insert(i, (c, now + timeout(i, &c)));
                    }
                    Op::Lookup(i, closing) => {
                        let got = ct.lookup(&k(i), k(i).hash(3), now, closing);
                        let want = match model.get_mut(&i) {
                            Some((c, exp)) if *exp >= now => {
                                c.closing |= closing;
                                *exp = now + timeout(i, c);
                                Some(*c)
                            }
                            _ => None,
                        };
                        if want.is_none() {
                            model.remove(&i);
                        }
                        prop_assert_eq!(got, want);
                    }
                    Op::Remove(i) => {
                        ct.remove(&k(i), k(i).hash(3));
                        model.remove(&i);
                    }
                    Op::Tick(s) => now += u32::from(s),
                }
            }
            prop_assert_eq!(ct.live(now), model.values().filter(|(_, e)| *e >= now).count());
        }
    }
}

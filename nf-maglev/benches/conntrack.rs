//! Connection-table lookups and inserts with 10k and 1M live flows (random order, so the 1M case measures
//! cache misses, as a busy load balancer sees them), and the machine's floor for such a table: random
//! cache-line reads over a buffer of the 1M-flow table's size, 32 in flight.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nf_maglev::conntrack::{Conn, ConnTrack, FlowKey, Timeouts};
use std::hint::black_box;

const TIMEOUTS: Timeouts = Timeouts {
    tcp: 900,
    udp: 60,
    tcp_fin: 30,
};
const BATCH: usize = 1024;

fn flow(i: u64) -> FlowKey {
    FlowKey {
        src: 0xffff_c612_0000_0000 | u128::from(i >> 16),
        dst: 0xffff_c612_6401,
        sport: (i & 0xffff) as u16,
        dport: 80,
        proto: 6,
    }
}

/// A fixed pseudo-random visiting order over `n` flows.
fn order(n: u64, len: usize) -> Vec<(FlowKey, u64)> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = flow(x % n);
            (k, k.hash(1))
        })
        .collect()
}

fn conntrack(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    g.sample_size(30)
        .throughput(Throughput::Elements(BATCH as u64));
    for n in [10_000u64, 1_000_000] {
        // Sized like a deployment: 1.25x the flows, so buckets are 80% full.
        let mut ct = ConnTrack::new((n + n / 4) as u32, TIMEOUTS, 0);
        for i in 0..n {
            let k = flow(i);
            ct.insert(
                &k,
                k.hash(1),
                Conn {
                    backend: i as u32,
                    hint: 0,
                    closing: false,
                },
                1,
            );
        }
        let visits = order(n, 1 << 16);
        let mut at = 0;
        g.bench_function(BenchmarkId::new("lookup_hit", n), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for (k, h) in &visits[at..at + BATCH] {
                    acc ^= ct
                        .lookup(black_box(k), *h, 2, false)
                        .map_or(0, |c| c.backend);
                }
                at = (at + BATCH) % visits.len();
                acc
            })
        });
        let mut at = 0;
        g.bench_function(BenchmarkId::new("lookup_hit_prefetched", n), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for burst in visits[at..at + BATCH].chunks(32) {
                    for (_, h) in burst {
                        ct.prefetch_bucket(*h);
                    }
                    for (_, h) in burst {
                        ct.prefetch_entry(*h);
                    }
                    for (k, h) in burst {
                        acc ^= ct
                            .lookup(black_box(k), *h, 2, false)
                            .map_or(0, |c| c.backend);
                    }
                }
                at = (at + BATCH) % visits.len();
                acc
            })
        });
        let fresh: Vec<(FlowKey, u64)> = (0..1u64 << 16)
            .map(|i| flow(n + i))
            .map(|k| (k, k.hash(1)))
            .collect();
        let mut at = 0;
        g.bench_function(BenchmarkId::new("miss_then_insert", n), |b| {
            b.iter(|| {
                for (k, h) in &fresh[at..at + BATCH] {
                    if ct.lookup(black_box(k), *h, 3, false).is_none() {
                        ct.insert(k, *h, Conn::default(), 3);
                    }
                }
                at = (at + BATCH) % fresh.len();
            })
        });
    }
    g.finish();
}

/// One cache line.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Line([u64; 8]);

/// What any table of this size costs here, whatever its layout: random lines of a 91 MB buffer (the 1M-flow
/// table's size, huge-page advised like it), prefetched 32 at a time and then read. `one_line`: one line per
/// lookup. `header_then_entry`: the connection table's pattern, a 512-byte bucket's first line and then the
/// line it points at (the second fetch can only start once the first has arrived).
fn memory_floor(c: &mut Criterion) {
    const LINES: usize = 91 << 14; // 91 MiB
    let mut g = c.benchmark_group("memory_floor");
    g.sample_size(30).throughput(Throughput::Elements(32));
    let mut mem: Vec<Line> = Vec::with_capacity(LINES);
    let _ = cne::hint::advise_huge_pages(mem.spare_capacity_mut());
    mem.resize(LINES, Line::default());
    for (i, l) in mem.iter_mut().enumerate() {
        l.0[0] = (i as u64).wrapping_mul(0x9e37_79b9) % 7;
    }
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut at = [0usize; 32];
    g.bench_function("one_line", |b| {
        b.iter(|| {
            for a in &mut at {
                *a = (next() % LINES as u64) as usize;
                cne::hint::prefetch_read(&mem[*a]);
            }
            at.iter().map(|&a| mem[a].0[0]).sum::<u64>()
        })
    });
    g.bench_function("header_then_entry", |b| {
        b.iter(|| {
            for a in &mut at {
                *a = (next() % (LINES as u64 / 8)) as usize * 8;
                cne::hint::prefetch_read(&mem[*a]);
            }
            for a in &mut at {
                *a += 1 + mem[*a].0[0] as usize;
                cne::hint::prefetch_read(&mem[*a]);
            }
            at.iter().map(|&a| mem[a].0[1]).sum::<u64>()
        })
    });
    g.finish();
}

criterion_group!(benches, conntrack, memory_floor);
criterion_main!(benches);

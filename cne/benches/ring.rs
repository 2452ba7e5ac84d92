//! Ring throughput: reserve/push/commit and peek/read/release of 64-entry batches over a ring in
//! plain memory, the same code the AF_XDP rings run.

use std::hint::black_box;

use cne::xsk::ring::{heap_pair, XdpDesc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: u32 = 64;

fn ring_batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    g.sample_size(50);
    g.throughput(Throughput::Elements(u64::from(BATCH)));

    let (mut prod, mut cons) = heap_pair::<u64>(2048).expect("ring");
    g.bench_function("addr_batch_64", |b| {
        b.iter(|| {
            let mut r = prod.reserve(BATCH);
            for i in 0..u64::from(BATCH) {
                let _ = r.push(black_box(i * 2048));
            }
            let _ = r.commit();
            let p = cons.peek(BATCH);
            let mut sum = 0u64;
            for a in p.iter() {
                sum = sum.wrapping_add(a);
            }
            let _ = p.release();
            black_box(sum)
        })
    });

    let (mut prod, mut cons) = heap_pair::<XdpDesc>(2048).expect("ring");
    g.bench_function("desc_batch_64", |b| {
        b.iter(|| {
            let mut r = prod.reserve(BATCH);
            for i in 0..u64::from(BATCH) {
                // black_box on the input, not on the struct: a boxed struct measures a
                // store-forwarding stall, not the ring.
                let _ = r.push(XdpDesc {
                    addr: black_box(i) * 2048 + 256,
                    len: 60,
                    options: 0,
                });
            }
            let _ = r.commit();
            let p = cons.peek(BATCH);
            let mut sum = 0u64;
            for d in p.iter() {
                sum = sum.wrapping_add(d.addr + u64::from(d.len));
            }
            let _ = p.release();
            black_box(sum)
        })
    });
    g.finish();
}

criterion_group!(benches, ring_batches);
criterion_main!(benches);

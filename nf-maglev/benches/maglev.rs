//! Maglev table build and lookup times (the paper: 1.8 ms for M = 65537, 22.9 ms for M = 655373).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nf_maglev::maglev::{Member, Table};
use std::hint::black_box;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("backend-{i}")).collect()
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(20);
    for size in [65537u32, 655_373] {
        for n in [10usize, 100, 1000] {
            let nm = names(n);
            let members: Vec<Member<'_>> =
                nm.iter().map(|name| Member { name, weight: 1 }).collect();
            g.bench_with_input(
                BenchmarkId::new(format!("M={size}"), n),
                &members,
                |b, m| b.iter(|| Table::build(black_box(m), size, 0)),
            );
        }
    }
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let nm = names(100);
    let members: Vec<Member<'_>> = nm.iter().map(|name| Member { name, weight: 1 }).collect();
    let table = Table::build(&members, 65537, 0).unwrap_or_else(|e| panic!("build: {e}"));
    let hashes: Vec<u64> = (0..1024u64)
        .map(|i| nf_maglev::hash::flow_hash(1, u128::from(i), 2, 3))
        .collect();
    c.bench_function("maglev_lookup_x1024", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &h in &hashes {
                acc = acc.wrapping_add(u32::from(table.lookup(black_box(h)).unwrap_or(0)));
            }
            acc
        })
    });
}

criterion_group!(benches, build, lookup);
criterion_main!(benches);

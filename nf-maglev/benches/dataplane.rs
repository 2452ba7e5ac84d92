//! `process()` per packet over bursts of 32 frames, with 10k and 1M concurrent flows already in the
//! connection table (flows visited in a fixed pseudo-random order, so 1M flows measure cache misses), GRE
//! over IPv4 to a pool of 100 backends. Each packet is first written into its frame from a template (about 60
//! bytes copied, included in the time), as a NIC would have written it into the UMEM frame.
use cne::frame::{Frame, VecFrame};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nf_maglev::dataplane::{process, process_burst, Verdict};
use nf_maglev::testing::{control, established_plane, fill, flow_picker, template, BURST};
use std::hint::black_box;

fn dataplane(c: &mut Criterion) {
    let mut g = c.benchmark_group("process");
    g.sample_size(30)
        .throughput(Throughput::Elements(BURST as u64));
    let tpl = template();
    for (mode, flows) in [
        ("gre", 10_000u32),
        ("gre", 1_000_000),
        ("l2dsr", 10_000),
        ("l2dsr", 1_000_000),
    ] {
        let ctl = control(flows, mode);
        let shared = ctl.shared();
        let mut plane = established_plane(&ctl, flows, &tpl);
        let mut frames: Vec<VecFrame> = (0..BURST).map(|_| VecFrame::from_bytes(&tpl)).collect();
        let mut next = flow_picker(flows);
        g.bench_function(
            BenchmarkId::new(format!("{mode}_established_one_by_one"), flows),
            |b| {
                b.iter(|| {
                    let state = shared.load();
                    for f in frames.iter_mut() {
                        fill(f, &tpl, next(), 0x10);
                        black_box(process(f, &state, &mut plane, 2));
                    }
                })
            },
        );
        let mut verdicts = [Verdict::Tx; BURST];
        g.bench_function(
            BenchmarkId::new(format!("{mode}_established_burst"), flows),
            |b| {
                b.iter(|| {
                    let state = shared.load();
                    for f in frames.iter_mut() {
                        fill(f, &tpl, next(), 0x10);
                    }
                    process_burst(&mut frames, &mut verdicts, &state, &mut plane, 2);
                    black_box(&verdicts);
                })
            },
        );
        assert!(verdicts.iter().all(|v| *v == Verdict::Tx));
    }
    // Baseline: the frame refill alone, to subtract.
    let mut frames: Vec<VecFrame> = (0..BURST).map(|_| VecFrame::from_bytes(&tpl)).collect();
    let mut i = 0u32;
    g.bench_function("refill_only", |b| {
        b.iter(|| {
            for f in frames.iter_mut() {
                i = i.wrapping_add(7919);
                fill(f, &tpl, i % 10_000, 0x10);
                black_box(f.data()[34]);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, dataplane);
criterion_main!(benches);

//! `process_burst` with 10k flows and with many flows (1M by default) in one process, alternating blocks
//! of bursts, so that both see the same neighbours on a shared machine: the difference is the cost of a
//! connection table too large for the caches. Fixed work, wall time per packet (frame refill included).
//!
//! `cargo run --release -p nf-maglev --example flows_ab -- [gre|l2dsr] [FLOWS] [BLOCKS]`
use cne::frame::VecFrame;
use nf_maglev::control::Control;
use nf_maglev::dataplane::{process_burst, PortPlane, Verdict};
use nf_maglev::testing::{control, established_plane, fill, flow_picker, template, BURST};
use std::hint::black_box;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("gre");
    let big: u32 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let blocks: u32 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(30);
    let tpl = template();
    let sizes = [10_000u32, big];
    let ctls: Vec<Control> = sizes.iter().map(|&f| control(f, mode)).collect();
    let shareds: Vec<_> = ctls.iter().map(|c| c.shared()).collect();
    let mut planes: Vec<PortPlane> = ctls
        .iter()
        .zip(sizes)
        .map(|(c, f)| established_plane(c, f, &tpl))
        .collect();
    let mut pickers: Vec<_> = sizes.iter().map(|&f| flow_picker(f)).collect();
    let mut frames: Vec<VecFrame> = (0..BURST).map(|_| VecFrame::from_bytes(&tpl)).collect();
    let mut verdicts = [Verdict::Tx; BURST];
    let mut per: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
    let rounds = 3000u32;
    for _ in 0..blocks {
        for k in 0..2 {
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                let state = shareds[k].load();
                for f in frames.iter_mut() {
                    fill(f, &tpl, pickers[k](), 0x10);
                }
                process_burst(&mut frames, &mut verdicts, &state, &mut planes[k], 2);
                black_box(&verdicts);
            }
            per[k].push(t.elapsed().as_nanos() as f64 / f64::from(rounds) / BURST as f64);
        }
    }
    let mut d: Vec<f64> = per[1].iter().zip(&per[0]).map(|(a, b)| a - b).collect();
    for v in per.iter_mut().chain(std::iter::once(&mut d)) {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let q = |v: &Vec<f64>| (v[0], v[v.len() / 4], v[v.len() / 2]);
    println!(
        "ns per packet (min, first quartile, median over {blocks} blocks of {rounds} bursts of {BURST}):"
    );
    println!("  10000 flows: {:.1?}", q(&per[0]));
    println!("  {big} flows: {:.1?}", q(&per[1]));
    println!("  difference, block by block: {:.1?}", q(&d));
}

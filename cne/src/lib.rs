//! `cne`: cloud-native AF_XDP packet I/O in the shape of CNDP.
//!
//! The crate owns every piece of `unsafe` the workspace needs above the raw bindings of `cne-sys`:
//! UMEM mappings, the four AF_XDP rings, the XDP program and the sockets. Network functions built on it
//! (`nf-echo`, `nf-maglev`) are `#![forbid(unsafe_code)]`.
//!
//! Layout:
//! * [`xsk`]: AF_XDP sockets: UMEM and frame pools, the four rings, ports, packets, counters, polling.
//! * [`bpf`]: the XDP programs (the filter in front of the sockets, GRE decapsulation) and their loading.
//! * [`k8s`]: the AF_XDP device plugin's client and the `gen-config` subcommand.
//! * [`sys`]: host facts and settings: network devices, TUN devices, fwmark rules, routes and
//!   addresses (rtnetlink), capabilities.
//! * [`config`]: CNDP's JSON-C configuration; [`instance`]: from a configuration to running workers.
//! * [`frame`]: the [`frame::Frame`] trait network functions are written against (UMEM packets,
//!   AF_PACKET buffers, fixtures); [`afpacket`]: the AF_PACKET backend for comparison runs.
//! * [`neighbor`]: ARP and neighbour-discovery answers for owned addresses, shared by the NFs.
//! * [`wire`]: zero-copy header views; [`hint`], [`simd`]: prefetch, huge pages, vector compares.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(clippy::cast_possible_truncation)]

#[allow(unsafe_code)]
pub mod afpacket;
pub mod bpf;
pub mod config;
pub mod frame;
#[allow(unsafe_code)]
pub mod hint;
#[allow(unsafe_code)]
pub mod instance;
pub mod k8s;
pub mod neighbor;
#[allow(unsafe_code)]
pub mod simd;
#[allow(unsafe_code)]
pub mod sys;
pub mod wire;
pub mod xsk;

/// `error` and its chain of causes, `outer: inner: innermost`: the errors of this crate print each
/// cause once, through [`std::error::Error::source`], so a bare `{error}` shows only the outermost step.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

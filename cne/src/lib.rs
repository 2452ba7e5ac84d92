//! `cne`: cloud-native AF_XDP packet I/O in the shape of CNDP.
//!
//! The crate owns every piece of `unsafe` the workspace needs above the raw bindings of `cne-sys`:
//! UMEM mappings, the four AF_XDP rings, the XDP program and the sockets. Network functions built on it
//! (`nf-echo`, `nf-maglev`) are `#![forbid(unsafe_code)]`.
#![deny(missing_docs)]

pub mod afpacket;
pub mod config;
pub mod decap;
pub mod dp;
pub mod frame;
pub mod hint;
pub mod instance;
pub mod neighbor;
pub mod netdev;
pub mod packet;
pub mod podconfig;
pub mod poll;
pub mod port;
pub mod privs;
pub mod ring;
pub mod simd;
pub mod stats;
pub mod umem;
pub mod wire;
pub mod xdp;

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

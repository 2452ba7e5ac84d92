//! The XDP programs this crate ships and loads: the filter in front of the AF_XDP sockets
//! ([`filter`], `bpf/xsk_filter.bpf.c`) and the GRE decapsulation program for load-balancer backends
//! ([`decap`], `bpf/gre_decap.bpf.c`) and the kernel fast path of the Maglev load balancer ([`fast`],
//! `bpf/maglev_fast.bpf.c`), all embedded at build time and loaded with libbpf
//! through the shared machinery of `program` (load, checked maps, `bpf_link` attachment); and the
//! registry of libxdp's default redirect program (`libxdp`), for ports that ask for it instead.

pub mod decap;
pub mod fast;
#[allow(unsafe_code)]
pub mod filter;
#[allow(unsafe_code)]
pub(crate) mod libxdp;
#[allow(unsafe_code)]
pub(crate) mod program;

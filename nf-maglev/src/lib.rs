//! nf-maglev: a one-armed Maglev L4 load balancer over AF_XDP.
//!
//! The crate is split the way Katran splits its library from its BPF program: pure table building
//! ([`maglev`], [`hash`]), configuration ([`config`]), a control plane that builds immutable state off the
//! packet path and publishes it with one atomic swap ([`control`]), and the per-worker data plane
//! ([`conntrack`], [`dataplane`], [`counters`]) that fixtures can drive without any socket. The GRE
//! tunnel's outer-header templates ([`tunnel`]) are built by the control plane and written by the data
//! plane, so they belong to neither: the two depend on it, not on each other. The XDP fast path
//! ([`fastpath`]) is written from the same published state. The admin
//! endpoint's HTTP server ([`http`]) and its authorisation ([`auth`]) live here too, so tests and
//! benchmarks can run them without the rest of the binary.
#![forbid(unsafe_code)]
// Packet length and offset math is checked; test code may cast freely.
#![cfg_attr(not(test), warn(clippy::cast_possible_truncation))]

pub mod announce;
pub mod auth;
pub mod config;
pub mod conntrack;
pub mod control;
pub mod counters;
pub mod dataplane;
pub mod fastpath;
pub mod hash;
pub mod health;
pub mod http;
pub mod maglev;
#[doc(hidden)]
pub mod testing;
pub mod tunnel;

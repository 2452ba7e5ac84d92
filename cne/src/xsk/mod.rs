//! AF_XDP sockets: the UMEM and its frame pools, the four rings, the port that drives them, the
//! packets it hands out, its counters, and the adaptive wait of a polling worker.
//!
//! Everything on the packet path lives here. The ring index math is done in Rust over memory shared
//! with the kernel ([`ring`]), so no per-packet call crosses FFI; [`umem`] owns the mapping and
//! [`packet::Packet`] borrows its pool, so frame memory cannot be used after it is returned.

#[allow(unsafe_code)]
pub mod packet;
#[allow(unsafe_code)]
pub mod poll;
#[allow(unsafe_code)]
pub mod port;
#[allow(unsafe_code)]
pub mod ring;
pub mod stats;
#[allow(unsafe_code)]
pub mod umem;

//! Raw bindings to libxdp (`<xdp/xsk.h>`, `<xdp/libxdp.h>`) and libbpf (`<bpf/bpf.h>`, `<bpf/libbpf.h>`),
//! generated at build time by bindgen from the system headers found with pkg-config.
//!
//! Everything here is `unsafe` to call. The safe layer is the `cne` crate. The `xsk_ring_*` helpers are
//! bound too, but they are one FFI call per operation: the packet path does its ring index math in Rust
//! (`cne::xsk::ring`) over the same ring structures.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    unreachable_pub
)]
#![allow(unsafe_op_in_unsafe_fn)]
#![allow(
    missing_debug_implementations,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]

// Generated code: the workspace's pedantic and restriction lints do not apply to it.
#[allow(clippy::ptr_as_ptr, clippy::multiple_unsafe_ops_per_block)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}
pub use bindings::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_calls_libxdp_and_libbpf() {
        // SAFETY: libbpf_major_version takes no arguments and only returns a constant.
        let major = unsafe { libbpf_major_version() };
        assert!(major >= 1, "libbpf major version {major}");
        let mut buf = [0 as std::os::raw::c_char; 64];
        // SAFETY: buf is a valid, writable buffer of buf.len() bytes for the whole call.
        let rc = unsafe { libxdp_strerror(-22, buf.as_mut_ptr(), buf.len()) };
        assert_eq!(rc, 0);
        // SAFETY: libxdp_strerror NUL-terminates what it writes into buf on success.
        let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        assert!(!msg.to_bytes().is_empty());
        let cfg = xsk_socket_config::default();
        assert_eq!(cfg.rx_size, 0);
        assert_eq!(XDP_USE_NEED_WAKEUP, 1 << 3);
    }
}

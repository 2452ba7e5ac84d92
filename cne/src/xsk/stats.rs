//! Port statistics: software counters kept by the port on the packet path, plus the kernel's
//! per-socket `XDP_STATISTICS`.
//!
//! The software counters are plain `u64` fields of the port, bumped once per burst (never with an
//! atomic), so reading them needs `&Port` on the worker thread; [`crate::xsk::port::Port::stats`] copies
//! them and adds one `getsockopt(XDP_STATISTICS)`, cheap enough to call every second for metrics but
//! not meant for the packet path. Names follow CNDP's per-lport counters where they exist.

use std::io;
use std::os::fd::RawFd;

/// Drop counters the kernel keeps per AF_XDP socket (`struct xdp_statistics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Received frames dropped for reasons other than invalid descriptors.
    pub rx_dropped: u64,
    /// Received frames dropped because of an invalid descriptor.
    pub rx_invalid_descs: u64,
    /// TX descriptors the kernel rejected as invalid.
    pub tx_invalid_descs: u64,
    /// Received frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times a frame could not be received because the fill ring was empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty when asked to send.
    pub tx_ring_empty_descs: u64,
}

/// Statistics of one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Received descriptors that pointed outside the port's frames (never expected).
    pub rx_errors: u64,
    /// `rx_burst` calls that found the RX ring empty.
    pub rx_ring_empty: u64,
    /// Fill-ring refills left short because the frame pool had too few free frames (CNDP's
    /// "not enough entries" counter).
    pub fill_short: u64,
    /// Packets placed in the TX ring.
    pub tx_packets: u64,
    /// Bytes placed in the TX ring.
    pub tx_bytes: u64,
    /// Packets dropped by `tx_burst`: TX ring full, or the packet's frame belongs to another pool.
    pub tx_dropped: u64,
    /// Empty packets refused by `tx_burst` and TX wakeups that failed with an unexpected error.
    pub tx_errors: u64,
    /// TX wakeup syscalls (`sendto`).
    pub tx_kicks: u64,
    /// Frames returned by the completion ring.
    pub tx_completed: u64,
    /// The kernel's counters for the socket.
    pub kernel: XdpStats,
}

/// Reads `XDP_STATISTICS` of socket `fd`.
pub(crate) fn read_xdp_stats(fd: RawFd) -> io::Result<XdpStats> {
    let mut raw = cne_sys::xdp_statistics::default();
    // `xdp_statistics` holds plain u64 counters: any bytes the kernel writes are valid.
    crate::sys::getsockopt_into(
        fd,
        libc::SOL_XDP,
        cne_sys::XDP_STATISTICS as libc::c_int,
        &mut raw,
    )?;
    Ok(XdpStats {
        rx_dropped: raw.rx_dropped,
        rx_invalid_descs: raw.rx_invalid_descs,
        tx_invalid_descs: raw.tx_invalid_descs,
        rx_ring_full: raw.rx_ring_full,
        rx_fill_ring_empty_descs: raw.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: raw.tx_ring_empty_descs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_stats_on_a_non_xdp_socket_is_an_error() {
        // A UDP socket does not understand SOL_XDP: the call fails instead of returning garbage.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
        use std::os::fd::AsRawFd;
        assert!(read_xdp_stats(sock.as_raw_fd()).is_err());
    }
}

//! An AF_PACKET backend: raw Ethernet frames through the kernel's packet sockets, for comparison runs.
//!
//! AF_XDP is measured against this: the same network-function logic (written against [`Frame`]) running on
//! a plain `SOCK_RAW` packet socket bound to one interface, the way CNDP's Rust echo example runs on
//! libpnet. Frames are received with `recvmmsg` and sent with `sendmmsg`, up to [`BATCH`] per system call,
//! straight into and out of the caller's frame buffers: nothing is allocated per batch (the message
//! headers live on the stack). The socket is non-blocking; [`AfPacket::poll_readable`] waits for input.
//!
//! The socket sets `PACKET_IGNORE_OUTGOING`, so frames it (or anyone else on the host) transmits on the
//! interface are not looped back into its receive queue; an echo function would otherwise see its own
//! replies. It is created with protocol 0 and only then bound to `ETH_P_ALL` on the interface, so no frame
//! of another interface is ever queued on it.
//!
//! [`Sender`] is the same socket never bound to a protocol: it only transmits (probe frames of a
//! health checker), and the kernel queues nothing on it.

use std::ffi::{c_int, c_uint, c_void};
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::frame::Frame;
use crate::sys::{cvt, cvt_fd, getsockopt_into, setsockopt, socklen};

/// Most frames moved per system call.
pub const BATCH: usize = 64;

/// `<linux/if_packet.h>`: do not deliver outgoing frames to this socket (Linux 4.20+).
const PACKET_IGNORE_OUTGOING: c_int = 23;

/// Errors of opening an AF_PACKET socket.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// No interface of that name in this network namespace.
    #[error("netdev {ifname} not found")]
    NetdevNotFound {
        /// The interface name asked for.
        ifname: String,
    },
    /// A socket call failed.
    #[error("{call} for AF_PACKET socket on {ifname} failed")]
    Socket {
        /// The failing call.
        call: &'static str,
        /// The interface.
        ifname: String,
        /// The error the kernel reported.
        #[source]
        source: io::Error,
    },
}

/// Kernel counters of a packet socket (`PACKET_STATISTICS`; reading them resets them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Frames received by the socket since the last read, including dropped ones.
    pub packets: u32,
    /// Frames dropped because the receive buffer was full.
    pub drops: u32,
}

/// A raw packet socket bound to one interface. See the module docs.
#[derive(Debug)]
pub struct AfPacket {
    fd: OwnedFd,
    ifname: String,
    ifindex: c_int,
    truncated: u64,
}

impl AfPacket {
    /// Opens a non-blocking `SOCK_RAW` packet socket receiving every protocol on `ifname` and sending
    /// through it. Needs `CAP_NET_RAW`.
    pub fn open(ifname: &str) -> Result<Self, AfPacketError> {
        let (fd, ifindex) = open_unbound(ifname)?;
        let fail = |call, source| AfPacketError::Socket {
            call,
            ifname: ifname.to_string(),
            source,
        };

        let one: c_int = 1;
        setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            &one,
        )
        .map_err(|e| fail("setsockopt(PACKET_IGNORE_OUTGOING)", e))?;

        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = AF_PACKET_FAMILY;
        addr.sll_protocol = ETH_P_ALL_U16.to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: addr is a live sockaddr_ll of the length given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
                socklen::<libc::sockaddr_ll>(),
            )
        };
        cvt(rc).map_err(|e| fail("bind(ETH_P_ALL)", e))?;
        Ok(AfPacket {
            fd,
            ifname: ifname.to_string(),
            ifindex,
            truncated: 0,
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Frames received so far that did not fit their buffer and were cut short.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Receives up to `min(frames.len(), BATCH)` frames, one per buffer, each filling the buffer from its
    /// data start to the end of its tailroom. Returns how many arrived: those frames hold one packet each;
    /// the rest of the first `BATCH` buffers are left empty. `Ok(0)` when nothing is waiting.
    pub fn recv_batch<F: Frame>(&mut self, frames: &mut [F]) -> io::Result<usize> {
        let n = frames.len().min(BATCH);
        // SAFETY: iovec is plain data; all-zero (null base, zero length) is a valid value.
        let mut iov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: mmsghdr is plain data; all-zero (null pointers, zero lengths) is a valid value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (frame, v) in frames[..n].iter_mut().zip(iov.iter_mut()) {
            // Open the window over the whole tailroom; set_len within len + tailroom always succeeds.
            let full = frame.len() + frame.tailroom();
            frame.set_len(full);
            let buf = frame.data_mut();
            v.iov_base = buf.as_mut_ptr().cast::<c_void>();
            v.iov_len = buf.len();
        }
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        let vlen = c_uint::try_from(n).unwrap_or(0);
        // SAFETY: msgs[..n] point to iovecs describing live, writable buffers of the frames, which stay
        // borrowed (and unmoved) for the call; no address or control buffers are given.
        let rc = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = match cvt(rc) {
            Ok(rc) => usize::try_from(rc).unwrap_or(0),
            Err(err) => {
                if err.kind() != io::ErrorKind::WouldBlock
                    && err.kind() != io::ErrorKind::Interrupted
                {
                    for frame in frames[..n].iter_mut() {
                        frame.set_len(0);
                    }
                    return Err(err);
                }
                0
            }
        };
        for (i, (frame, m)) in frames[..n].iter_mut().zip(msgs.iter()).enumerate() {
            let len = if i < got { m.msg_len as usize } else { 0 };
            if len > 0 && m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated += 1;
            }
            frame.set_len(len);
        }
        Ok(got)
    }

    /// Sends up to `min(frames.len(), BATCH)` frames, each as one Ethernet frame out of the interface.
    /// Returns how many the kernel took (they go in order, so the rest can be retried); `Ok(0)` when
    /// the socket buffer or the device queue is full.
    pub fn send_batch<F: Frame>(&mut self, frames: &[F]) -> io::Result<usize> {
        let n = frames.len().min(BATCH);
        // SAFETY: iovec is plain data; all-zero (null base, zero length) is a valid value.
        let mut iov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: mmsghdr is plain data; all-zero (null pointers, zero lengths) is a valid value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (frame, v) in frames[..n].iter().zip(iov.iter_mut()) {
            let data = frame.data();
            // sendmmsg only reads through iov_base; the mutable pointer type is the C struct's.
            v.iov_base = data.as_ptr().cast_mut().cast::<c_void>();
            v.iov_len = data.len();
        }
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        let vlen = c_uint::try_from(n).unwrap_or(0);
        // SAFETY: msgs[..n] point to iovecs describing live buffers of the frames, borrowed for the call;
        // the kernel only reads them. No address: the socket is bound to the interface.
        let rc = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
            )
        };
        match cvt(rc) {
            Ok(rc) => Ok(usize::try_from(rc).unwrap_or(0)),
            Err(err) => match err.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => Ok(0),
                _ => Err(err),
            },
        }
    }

    /// Waits until a frame is ready to be received or `timeout` passes (`None`: no limit). `Ok(false)`
    /// on timeout or when a signal interrupted the wait.
    pub fn poll_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        crate::sys::poll_readable(self.fd.as_fd(), timeout)
    }

    /// Reads (and resets) the kernel's counters of this socket.
    pub fn statistics(&self) -> io::Result<PacketStats> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        // `tpacket_stats` holds two plain u32 counters: any bytes the kernel writes are valid.
        getsockopt_into(
            self.fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut st,
        )?;
        Ok(PacketStats {
            packets: st.tp_packets,
            drops: st.tp_drops,
        })
    }
}

impl AsFd for AfPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A non-blocking `SOCK_RAW` packet socket of protocol 0, not bound: it receives nothing until bound
/// to a protocol. Returns it with the index of `ifname`.
fn open_unbound(ifname: &str) -> Result<(OwnedFd, c_int), AfPacketError> {
    let not_found = || AfPacketError::NetdevNotFound {
        ifname: ifname.to_string(),
    };
    let index = crate::sys::netdev::ifindex(ifname).ok_or_else(not_found)?;
    let ifindex = c_int::try_from(index).map_err(|_| not_found())?;
    // SAFETY: plain system call with constant arguments; `cvt_fd` owns the new descriptor.
    let fd = cvt_fd(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })
    .map_err(|source| AfPacketError::Socket {
        call: "socket(AF_PACKET, SOCK_RAW)",
        ifname: ifname.to_string(),
        source,
    })?;
    Ok((fd, ifindex))
}

/// A transmit-only packet socket: whole Ethernet frames out of one interface, nothing received.
///
/// Created with protocol 0 and never bound to a protocol, the socket has no receive hook in the
/// kernel, so no frame of any interface is ever queued on it (an [`AfPacket`] bound to `ETH_P_ALL`
/// would copy every frame of its interface). Each frame names the interface in its `sockaddr_ll`.
#[derive(Debug)]
pub struct Sender {
    fd: OwnedFd,
    ifname: String,
    ifindex: c_int,
}

impl Sender {
    /// Opens a non-blocking transmit-only packet socket for `ifname`. Needs `CAP_NET_RAW`.
    pub fn open(ifname: &str) -> Result<Sender, AfPacketError> {
        let (fd, ifindex) = open_unbound(ifname)?;
        Ok(Sender {
            fd,
            ifname: ifname.to_string(),
            ifindex,
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Sends `frame`, a whole Ethernet frame (destination and source MAC, EtherType, payload), out of
    /// the interface as it is. Never blocks: `WouldBlock` when the socket buffer is full. A frame
    /// shorter than an Ethernet header is `InvalidInput`.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let (Some(dst), Some(ethertype)) = (frame.get(..6), frame.get(12..14)) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a frame of {} bytes has no Ethernet header", frame.len()),
            ));
        };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = AF_PACKET_FAMILY;
        // Already in network order in the frame.
        addr.sll_protocol = u16::from_ne_bytes([ethertype[0], ethertype[1]]);
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(dst);
        // SAFETY: `frame` is a live buffer only read during the call; `addr` is a live sockaddr_ll of
        // the length given.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast::<c_void>(),
                frame.len(),
                libc::MSG_DONTWAIT,
                std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
                socklen::<libc::sockaddr_ll>(),
            )
        };
        cvt(rc).map(drop)
    }
}

impl AsFd for Sender {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `AF_PACKET` (17) as the `sa_family_t` of a `sockaddr_ll`.
#[allow(clippy::cast_possible_truncation, reason = "AF_PACKET is 17")]
const AF_PACKET_FAMILY: libc::sa_family_t = libc::AF_PACKET as libc::sa_family_t;

/// `ETH_P_ALL` (3) as the 16-bit protocol of a `sockaddr_ll`.
#[allow(clippy::cast_possible_truncation, reason = "ETH_P_ALL is 3")]
const ETH_P_ALL_U16: u16 = libc::ETH_P_ALL as u16;

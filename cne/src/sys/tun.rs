//! A TUN device that lives exactly as long as this process holds it.
//!
//! [`Tun::create`] opens `/dev/net/tun` and creates a layer-3 device (`IFF_TUN | IFF_NO_PI`: every
//! read and write is one bare IPv4 or IPv6 packet) that is not persistent: the kernel deletes it when
//! its last descriptor closes, so the device, its addresses and every route through it vanish when the
//! process exits or dies, with no cleanup left to anyone. That is why it is used to hold addresses and
//! to catch packets of the kernel's own stack (a marked TCP socket whose route points at the device
//! writes its SYN here, where [`Tun::read`] sees it).
//!
//! The descriptor is non-blocking and close-on-exec; [`Tun`] implements [`AsFd`] so callers can wait on
//! it with `poll` or tokio's `AsyncFd`. A device nobody holds open has no carrier and the routes through
//! it are dead, so the packets a route sends there must be read from this same descriptor.
//!
//! Creating and configuring the device needs `CAP_NET_ADMIN`; the errors say so on `EPERM`.

use std::ffi::{c_int, c_short, CStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use super::{cvt, cvt_fd, needs_cap_net_admin};

/// Where the TUN/TAP clone device is.
const DEV_NET_TUN: &CStr = c"/dev/net/tun";

/// `<linux/if_tun.h>`: `TUNSETIFF = _IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `<linux/if_tun.h>`: a layer-3 device.
const IFF_TUN: c_short = 0x0001;
/// `<linux/if_tun.h>`: no 4-byte packet-information prefix on reads and writes.
const IFF_NO_PI: c_short = 0x1000;

/// `<linux/sockios.h>`.
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFMTU: libc::c_ulong = 0x8922;

/// `struct ifreq` with its union as a `short` (`ifr_flags`) or an `int` (`ifr_mtu`): the union's
/// first bytes; the rest pads it to the kernel's 40 bytes.
#[repr(C)]
struct IfreqInt {
    name: [u8; libc::IFNAMSIZ],
    value: c_int,
    _pad: [u8; 20],
}

impl IfreqInt {
    fn new(name: &str, value: c_int) -> Self {
        let mut ifr = IfreqInt {
            name: [0; libc::IFNAMSIZ],
            value,
            _pad: [0; 20],
        };
        let n = name.len().min(libc::IFNAMSIZ - 1);
        ifr.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        ifr
    }

    /// The union read as `ifr_flags` (a `short` in its first two bytes).
    fn flags(&self) -> c_short {
        let b = self.value.to_ne_bytes();
        c_short::from_ne_bytes([b[0], b[1]])
    }

    /// The union written as `ifr_flags`, the other bytes zero.
    fn set_flags(&mut self, flags: c_short) {
        let f = flags.to_ne_bytes();
        self.value = c_int::from_ne_bytes([f[0], f[1], 0, 0]);
    }
}

/// Errors of creating and configuring a TUN device.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The name is empty, too long (15 bytes at most) or holds a NUL or a `/`.
    #[error("invalid TUN device name {name:?}")]
    InvalidName {
        /// The name asked for.
        name: String,
    },
    /// A system call failed.
    #[error("{call} for TUN device {name}{}", needs_cap_net_admin(.source))]
    Call {
        /// The failing call.
        call: &'static str,
        /// The device.
        name: String,
        /// The error the kernel reported.
        #[source]
        source: io::Error,
    },
}

/// A non-persistent TUN device (`IFF_TUN | IFF_NO_PI`) and the descriptor that keeps it alive; dropping
/// it deletes the device. See the module docs.
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
}

impl Tun {
    /// Creates the TUN device `name` in this thread's network namespace (a `%d` in the name lets the
    /// kernel pick the number; [`Tun::name`] tells the result). The device starts down; see
    /// [`Tun::set_up`]. Needs `CAP_NET_ADMIN`.
    pub fn create(name: &str) -> Result<Tun, TunError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['\0', '/']) {
            return Err(TunError::InvalidName {
                name: name.to_string(),
            });
        }
        let fail = |call, source| TunError::Call {
            call,
            name: name.to_string(),
            source,
        };
        // SAFETY: DEV_NET_TUN is a NUL-terminated path; `cvt_fd` owns the new descriptor.
        let fd = cvt_fd(unsafe {
            libc::open(
                DEV_NET_TUN.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| fail("open(/dev/net/tun)", e))?;
        let mut ifr = IfreqInt::new(name, 0);
        ifr.set_flags(IFF_TUN | IFF_NO_PI);
        // SAFETY: TUNSETIFF reads the ifreq and writes the chosen name back into it; it outlives the
        // call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr) };
        cvt(rc).map_err(|e| fail("ioctl(TUNSETIFF)", e))?;
        let end = ifr
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(ifr.name.len());
        let name = String::from_utf8_lossy(&ifr.name[..end]).into_owned();
        let ifindex = super::netdev::ifindex(&name).ok_or_else(|| TunError::Call {
            call: "if_nametoindex",
            name: name.clone(),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })?;
        Ok(Tun { fd, name, ifindex })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sets the MTU, turns off IPv6 address generation (no link-local address, so the kernel sends
    /// nothing of its own through the device; skipped when the kernel has no IPv6) and brings the link
    /// up. Needs `CAP_NET_ADMIN`.
    pub fn set_up(&self, mtu: u32) -> Result<(), TunError> {
        let fail = |call, source| TunError::Call {
            call,
            name: self.name.clone(),
            source,
        };
        // 1 = IN6_ADDR_GEN_MODE_NONE. Written before the link comes up, when the link-local address
        // would be made; no such file when IPv6 is absent.
        let path = format!("/proc/sys/net/ipv6/conf/{}/addr_gen_mode", self.name);
        match std::fs::write(&path, "1") {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(fail("writing addr_gen_mode", e));
            }
            _ => {}
        }
        let sock = self.ioctl_socket()?;
        let mtu = c_int::try_from(mtu).map_err(|_| {
            fail(
                "ioctl(SIOCSIFMTU)",
                io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?;
        let mut ifr = IfreqInt::new(&self.name, mtu);
        // SAFETY: SIOCSIFMTU reads the ifreq (name and MTU), which outlives the call.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCSIFMTU, &mut ifr) };
        cvt(rc).map_err(|e| fail("ioctl(SIOCSIFMTU)", e))?;
        let mut ifr = self.flags(&sock)?;
        #[allow(clippy::cast_possible_truncation, reason = "IFF_UP is 1")]
        ifr.set_flags(ifr.flags() | libc::IFF_UP as c_short);
        // SAFETY: SIOCSIFFLAGS reads the ifreq (name and flags), which outlives the call.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCSIFFLAGS, &mut ifr) };
        cvt(rc).map_err(|e| fail("ioctl(SIOCSIFFLAGS)", e))?;
        Ok(())
    }

    /// Whether the device is still there under its name: someone may have deleted it (`ip link del`),
    /// which leaves the descriptor open but attached to nothing.
    pub fn exists(&self) -> bool {
        super::netdev::ifindex(&self.name) == Some(self.ifindex)
    }

    /// Whether the link is up (`IFF_UP`): someone may have brought it down since [`Tun::set_up`].
    pub fn is_up(&self) -> Result<bool, TunError> {
        let ifr = self.flags(&self.ioctl_socket()?)?;
        Ok(i32::from(ifr.flags()) & libc::IFF_UP != 0)
    }

    /// A socket for the device ioctls.
    fn ioctl_socket(&self) -> Result<OwnedFd, TunError> {
        // SAFETY: plain socket creation; `cvt_fd` owns the new descriptor.
        cvt_fd(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
            .map_err(|source| TunError::Call {
                call: "socket(AF_INET, SOCK_DGRAM)",
                name: self.name.clone(),
                source,
            })
    }

    /// The device's flags, in an ifreq ready for `SIOCSIFFLAGS`.
    fn flags(&self, sock: &OwnedFd) -> Result<IfreqInt, TunError> {
        let mut ifr = IfreqInt::new(&self.name, 0);
        // SAFETY: SIOCGIFFLAGS reads the name and writes the flags into the ifreq, which outlives the
        // call.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFFLAGS, &mut ifr) };
        cvt(rc).map_err(|source| TunError::Call {
            call: "ioctl(SIOCGIFFLAGS)",
            name: self.name.clone(),
            source,
        })?;
        Ok(ifr)
    }

    /// Waits until a packet is waiting or `timeout` passes (`None`: no limit). `Ok(false)` on timeout or
    /// when a signal interrupted the wait.
    pub fn poll_readable(&self, timeout: Option<std::time::Duration>) -> io::Result<bool> {
        super::poll_readable(self.fd.as_fd(), timeout)
    }

    /// Reads one packet (IPv4 or IPv6, no prefix) into `buf`; a packet longer than `buf` is cut short.
    /// Never blocks: `WouldBlock` when no packet is waiting.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes for the call.
        let n =
            cvt(unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })?;
        Ok(n.unsigned_abs())
    }

    /// Writes one packet (IPv4 or IPv6, no prefix) into the kernel's stack as if it arrived on the
    /// device. Never blocks.
    pub fn write(&self, pkt: &[u8]) -> io::Result<usize> {
        // SAFETY: `pkt` is a live buffer of `pkt.len()` bytes, only read during the call.
        let n = cvt(unsafe { libc::write(self.fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) })?;
        Ok(n.unsigned_abs())
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A [`Tun`] whose reads wait on a tokio reactor, so a one-thread async runtime can serve the device
/// beside its other work (no thread of its own, no wake-up of another thread per packet).
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub struct AsyncTun {
    fd: tokio::io::unix::AsyncFd<Tun>,
}

#[cfg(feature = "tokio")]
impl AsyncTun {
    /// Registers `tun` with the current tokio runtime's reactor (call it within the runtime).
    pub fn new(tun: Tun) -> io::Result<AsyncTun> {
        // SAFETY: `Tun` owns its descriptor (an `OwnedFd` that only its drop closes) and
        // `as_raw_fd` always returns that one, so it stays open and the same for the life of the
        // `AsyncFd`, which owns the `Tun`.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(tun) }.map_err(io::Error::from)?;
        Ok(AsyncTun { fd })
    }

    /// The device.
    pub fn get_ref(&self) -> &Tun {
        self.fd.get_ref()
    }

    /// Waits for a packet and reads it into `buf` (see [`Tun::read`]).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().read(buf)) {
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_call() {
        for bad in ["", "0123456789abcdef", "a/b", "a\0b"] {
            let e = Tun::create(bad).expect_err(bad);
            assert!(matches!(e, TunError::InvalidName { .. }), "{e:?}");
        }
    }

    #[test]
    fn permission_errors_name_the_capability() {
        let e = TunError::Call {
            call: "ioctl(TUNSETIFF)",
            name: "hc0".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(
            e.to_string(),
            "ioctl(TUNSETIFF) for TUN device hc0 (needs CAP_NET_ADMIN)"
        );
        let e = TunError::Call {
            call: "ioctl(TUNSETIFF)",
            name: "hc0".into(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert_eq!(e.to_string(), "ioctl(TUNSETIFF) for TUN device hc0");
    }

    #[test]
    fn ifreq_flags_sit_in_the_first_bytes_of_the_union() {
        assert_eq!(size_of::<IfreqInt>(), 40);
        let mut ifr = IfreqInt::new("hc0", 0);
        ifr.set_flags(IFF_TUN | IFF_NO_PI);
        assert_eq!(ifr.flags(), 0x1001);
        assert_eq!(&ifr.name[..4], b"hc0\0");
    }
}

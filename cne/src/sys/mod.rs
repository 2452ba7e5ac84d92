//! Thin, checked wrappers over the host: C return codes turned into errors, socket options, network
//! devices ([`netdev`]), TUN devices ([`tun`]), policy rules, routes and addresses ([`route`]), CPU
//! lists and affinity ([`cpu`]) and capabilities ([`privs`]).
//!
//! Calls into libc, libbpf or libxdp that report failure in an integer return code go through the return-code
//! helpers here, as libbpf-rs does with `parse_ret`: `parse_ret` for libbpf's and libxdp's `-errno`
//! convention, `cvt` for the system-call convention (`-1` and `errno`), and their `_fd` forms for
//! calls that return a new descriptor. Callers then attach the failing call in their error variant
//! (`call` plus the `io::Error` as its `source`), so each cause is printed once.

use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

pub mod cpu;
pub mod netdev;
pub mod privs;
pub mod route;
pub mod tun;

/// Integers a C call can return.
pub(crate) trait RetCode: Copy + PartialOrd + Default + fmt::Display {
    /// The return code as an `errno` value when it is `-errno`.
    fn neg_errno(self) -> i32;
    /// `-1`, the system-call failure value.
    const MINUS_ONE: Self;
}

macro_rules! ret_code {
    ($($t:ty),*) => {$(
        impl RetCode for $t {
            #[inline]
            fn neg_errno(self) -> i32 {
                i32::try_from(self).ok().and_then(i32::checked_neg).unwrap_or(libc::EINVAL)
            }
            const MINUS_ONE: Self = -1;
        }
    )*};
}
ret_code!(i32, i64, isize);

/// libbpf and libxdp report failure as a negative errno: `rc < 0` becomes that error, anything else
/// is returned as it is (libbpf-rs `util::parse_ret`).
#[inline]
pub(crate) fn parse_ret<T: RetCode>(rc: T) -> io::Result<T> {
    if rc < T::default() {
        Err(io::Error::from_raw_os_error(rc.neg_errno()))
    } else {
        Ok(rc)
    }
}

/// [`parse_ret`] for calls that return a new descriptor (`bpf_obj_get`, `bpf_map_create`, ...).
pub(crate) fn parse_ret_fd(rc: libc::c_int) -> io::Result<OwnedFd> {
    let fd = parse_ret(rc)?;
    // SAFETY: a non-negative return of these calls is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// System calls report failure as `-1` with the cause in `errno` (the standard library's `cvt`).
#[inline]
pub(crate) fn cvt<T: RetCode>(rc: T) -> io::Result<T> {
    if rc == T::MINUS_ONE {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// [`cvt`] for calls that return a new descriptor (`socket`, ...).
pub(crate) fn cvt_fd(rc: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(rc)?;
    // SAFETY: a return other than -1 of these calls is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `" (needs CAP_NET_ADMIN)"` when `e` is `EPERM`, else nothing: appended to the messages of network
/// configuration errors, whose usual cause is a missing capability.
pub(crate) fn needs_cap_net_admin(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::EPERM) {
        " (needs CAP_NET_ADMIN)"
    } else {
        ""
    }
}

/// `size_of::<T>()` as a `socklen_t` (the option values passed are a few dozen bytes).
pub(crate) fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// `setsockopt(fd, level, name, val)`.
pub(crate) fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` is a live T of `socklen::<T>()` bytes, only read by the kernel during the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(val).cast(),
            socklen::<T>(),
        )
    };
    cvt(rc).map(drop)
}

/// `getsockopt(fd, level, name)` into `val`, a value of plain integers (any bit pattern valid);
/// returns the length the kernel wrote.
pub(crate) fn getsockopt_into<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &mut T,
) -> io::Result<usize> {
    let mut len = socklen::<T>();
    // SAFETY: `val` is a writable T of `len` bytes; callers only pass structs of integer fields,
    // for which any bytes the kernel writes are valid.
    let rc = unsafe { libc::getsockopt(fd, level, name, std::ptr::from_mut(val).cast(), &mut len) };
    cvt(rc)?;
    Ok(usize::try_from(len).unwrap_or(usize::MAX))
}

/// Waits until `fd` is readable or `timeout` passes (`None`: no limit). `Ok(false)` on timeout or when
/// a signal interrupted the wait.
pub(crate) fn poll_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    timeout: Option<std::time::Duration>,
) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let ms = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX)
    });
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is one live pollfd for the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    let rc = match cvt(rc) {
        Ok(rc) => rc,
        Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(false),
        Err(err) => return Err(err),
    };
    Ok(rc > 0 && pfd.revents & libc::POLLIN != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_codes() {
        assert_eq!(parse_ret(3).unwrap(), 3);
        assert_eq!(parse_ret(0i64).unwrap(), 0);
        let e = parse_ret(-libc::ENOENT).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(
            parse_ret(i64::MIN).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        assert_eq!(cvt(5isize).unwrap(), 5);
        assert!(cvt(-1).is_err());
    }

    #[test]
    fn socket_options_round_trip() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &4096i32).expect("set");
        let mut got = 0i32;
        let len = getsockopt_into(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &mut got).expect("get");
        assert_eq!(len, size_of::<i32>());
        assert!(got >= 4096, "{got}");
        assert!(getsockopt_into(fd, libc::SOL_XDP, 7, &mut got).is_err());
    }
}

//! libxdp's default AF_XDP redirect program (`xsk_def_xdp_prog.o`), for ports opened with
//! [`XskMapSource::LibxdpDefault`](crate::xsk::port::XskMapSource::LibxdpDefault).
//!
//! One program per netdev serves every port of this process on it: a registry counts the ports
//! ([`acquire`], [`release`]) and the last one detaches the program, when this process attached it.
//! A netdev that already runs libxdp's program (attached by another process) is used as it is.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use crate::bpf::filter::XdpMode;
use crate::sys::{parse_ret, RetCode};
use crate::xsk::port::PortError;

struct Entry {
    ifindex: u32,
    /// The program object when this process attached it (null when it found one attached).
    prog: *mut cne_sys::xdp_program,
    mode: cne_sys::xdp_attach_mode,
    map: OwnedFd,
    users: u32,
}

struct Registry(Vec<Entry>);

// SAFETY: the libxdp program objects are only used while holding the registry mutex, one thread
// at a time; libxdp objects are not tied to the thread that created them.
unsafe impl Send for Registry {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry(Vec::new()));

/// `what` failed for `ifname`; the interface is named here because one program serves every port of
/// the netdev.
fn err(ifname: &str, what: impl std::fmt::Display, source: io::Error) -> PortError {
    PortError::XdpProgram {
        what: format!("{ifname}: {what}"),
        source,
    }
}

/// The error of a libxdp return code that is known to be a failure (`rc < 0`, or a null result with
/// `rc` 0, reported as `ENOENT`).
fn failure<T: RetCode>(rc: T) -> io::Error {
    parse_ret(rc)
        .err()
        .unwrap_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
}

/// Takes a reference on the default program of `ifindex` (loading and attaching it in `mode`
/// when the netdev has no XDP program) and returns its XSKMAP fd, valid until [`release`].
pub(crate) fn acquire(
    ifindex: u32,
    ifname: &str,
    mode: XdpMode,
    map_entries: u32,
) -> Result<RawFd, PortError> {
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = reg.0.iter_mut().find(|e| e.ifindex == ifindex) {
        e.users += 1;
        return Ok(e.map.as_raw_fd());
    }
    let (drv, skb) = attached_prog_ids(ifindex)
        .map_err(|e| err(ifname, "query of the attached XDP program", e))?;
    let entry = if drv == 0 && skb == 0 {
        attach(ifindex, ifname, mode, map_entries)?
    } else {
        let mut fd: libc::c_int = -1;
        let c_ifindex = libc::c_int::try_from(ifindex)
            .map_err(|e| err(ifname, "ifindex", io::Error::other(e)))?;
        // SAFETY: `fd` is a valid int for libxdp to write the map fd into.
        let rc = unsafe { cne_sys::xsk_setup_xdp_prog(c_ifindex, &mut fd) };
        if rc < 0 || fd < 0 {
            return Err(err(
                ifname,
                format!(
                    "the netdev already has XDP program id {} attached and it is not libxdp's \
                     AF_XDP program; use XskMapSource::Map with that program's XSKMAP",
                    drv.max(skb)
                ),
                failure(rc),
            ));
        }
        Entry {
            ifindex,
            prog: std::ptr::null_mut(),
            mode: cne_sys::XDP_MODE_UNSPEC,
            // SAFETY: libxdp handed us this fd and keeps no use of it.
            map: unsafe { OwnedFd::from_raw_fd(fd) },
            users: 1,
        }
    };
    let fd = entry.map.as_raw_fd();
    reg.0.push(entry);
    Ok(fd)
}

fn attach(ifindex: u32, ifname: &str, mode: XdpMode, map_entries: u32) -> Result<Entry, PortError> {
    const FILE: &CStr = c"xsk_def_xdp_prog.o";
    const MAP: &CStr = c"xsks_map";
    let c_ifindex =
        libc::c_int::try_from(ifindex).map_err(|e| err(ifname, "ifindex", io::Error::other(e)))?;
    // SAFETY: FILE is NUL-terminated; null options select libxdp's search path.
    let prog = unsafe {
        cne_sys::xdp_program__find_file(FILE.as_ptr(), std::ptr::null_mut(), std::ptr::null_mut())
    };
    // SAFETY: libxdp_get_error only inspects the pointer value (libxdp's error encoding).
    let rc = unsafe { cne_sys::libxdp_get_error(prog.cast_const().cast()) };
    if rc != 0 || prog.is_null() {
        return Err(err(ifname, "loading xsk_def_xdp_prog.o", failure(rc)));
    }
    let close = |prog| {
        // SAFETY: `prog` is a live program object owned by this function.
        unsafe { cne_sys::xdp_program__close(prog) }
    };
    // SAFETY: `prog` is a live program object.
    let obj = unsafe { cne_sys::xdp_program__bpf_obj(prog) };
    let map = if obj.is_null() {
        std::ptr::null_mut()
    } else {
        // SAFETY: `obj` is the program's live bpf_object; MAP is NUL-terminated.
        unsafe { cne_sys::bpf_object__find_map_by_name(obj, MAP.as_ptr()) }
    };
    if map.is_null() {
        close(prog);
        return Err(err(
            ifname,
            "xsk_def_xdp_prog.o has no xsks_map",
            io::Error::from_raw_os_error(libc::ENOENT),
        ));
    }
    // SAFETY: `map` belongs to the not yet loaded object; resizing before load is allowed.
    let rc = unsafe { cne_sys::bpf_map__set_max_entries(map, map_entries) };
    if rc < 0 {
        close(prog);
        return Err(err(ifname, "sizing xsks_map", failure(rc)));
    }
    let xmode = match mode {
        XdpMode::Native => cne_sys::XDP_MODE_NATIVE,
        XdpMode::Skb => cne_sys::XDP_MODE_SKB,
    };
    // SAFETY: `prog` is live; libxdp loads and attaches it.
    let rc = unsafe { cne_sys::xdp_program__attach(prog, c_ifindex, xmode, 0) };
    if rc < 0 {
        close(prog);
        return Err(err(
            ifname,
            format!("attaching libxdp's AF_XDP program in {mode:?} mode"),
            failure(rc),
        ));
    }
    // SAFETY: `map` is part of the now loaded object.
    let raw = unsafe { cne_sys::bpf_map__fd(map) };
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid fd into a new one we own.
    let dup = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
    if raw < 0 || dup < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: `prog` is attached and live; detach it again before closing.
        unsafe { cne_sys::xdp_program__detach(prog, c_ifindex, xmode, 0) };
        close(prog);
        return Err(err(ifname, "duplicating the xsks_map fd", e));
    }
    log::info!("{ifname}: attached libxdp's AF_XDP redirect program ({mode:?} mode)");
    Ok(Entry {
        ifindex,
        prog,
        mode: xmode,
        // SAFETY: `dup` is a fresh fd we own.
        map: unsafe { OwnedFd::from_raw_fd(dup) },
        users: 1,
    })
}

/// Drops a reference taken by [`acquire`]; the last one detaches the program if we attached it.
pub(crate) fn release(ifindex: u32) {
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(pos) = reg.0.iter().position(|e| e.ifindex == ifindex) else {
        return;
    };
    reg.0[pos].users -= 1;
    if reg.0[pos].users > 0 {
        return;
    }
    let e = reg.0.swap_remove(pos);
    if !e.prog.is_null() {
        if let Ok(idx) = libc::c_int::try_from(ifindex) {
            // SAFETY: `e.prog` is the live program object we attached to `ifindex`.
            let rc = unsafe { cne_sys::xdp_program__detach(e.prog, idx, e.mode, 0) };
            if rc < 0 {
                log::warn!(
                    "detaching libxdp's AF_XDP program from ifindex {ifindex} failed: {}",
                    failure(rc)
                );
            }
        }
        // SAFETY: `e.prog` is live and no longer used after this.
        unsafe { cne_sys::xdp_program__close(e.prog) };
    }
}

/// Program ids attached to `ifindex` in driver and generic mode (0 when none).
pub(crate) fn attached_prog_ids(ifindex: u32) -> io::Result<(u32, u32)> {
    let ifindex = libc::c_int::try_from(ifindex).map_err(io::Error::other)?;
    let mut ids = [0u32; 2];
    for (i, flag) in [cne_sys::XDP_FLAGS_DRV_MODE, cne_sys::XDP_FLAGS_SKB_MODE]
        .into_iter()
        .enumerate()
    {
        let flag = libc::c_int::try_from(flag).map_err(io::Error::other)?;
        // SAFETY: `ids[i]` is a valid u32 for the call to write.
        parse_ret(unsafe { cne_sys::bpf_xdp_query_id(ifindex, flag, &mut ids[i]) })?;
    }
    Ok((ids[0], ids[1]))
}

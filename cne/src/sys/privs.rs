//! Dropping privileges once the sockets exist.
//!
//! A running network function needs only `CAP_NET_RAW` (AF_XDP sockets), `CAP_IPC_LOCK` (UMEM
//! registration without a memlock limit) and `CAP_BPF` (the BPF maps: its socket in the XSKMAP, the
//! filter's claims on reload, counters). That holds whether the device plugin owns the XDP program
//! (in a pod) or the NF attached its own: that program hangs on a `bpf_link` whose descriptor the NF
//! holds, and closing it, at exit or at death, detaches the program without `CAP_NET_ADMIN`. After
//! setup and before any other thread starts, [`drop_privileges`] reduces
//! the permitted, effective and inheritable sets and the bounding set to exactly those, clears the
//! ambient set and sets `no_new_privs`, so nothing the process executes later can regain more.
//!
//! Invariant: capabilities, the bounding set and `no_new_privs` are per thread in Linux. Threads created
//! after the call inherit the reduced state; threads that already exist keep theirs, so call this while
//! the process is still single-threaded (or at least before any thread that touches untrusted input). A
//! report of what was kept is returned and logged.

use std::io;

use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities a network function keeps once set up, in every mode.
pub const RUNNING_NF_CAPS: [Capability; 3] = [
    Capability::CAP_NET_RAW,
    Capability::CAP_IPC_LOCK,
    Capability::CAP_BPF,
];

/// [`RUNNING_NF_CAPS`] and `CAP_NET_ADMIN`, for a network function that changes addresses while it
/// runs (nf-maglev announcing its VIPs on a device it owns).
pub const ANNOUNCING_NF_CAPS: [Capability; 4] = [
    Capability::CAP_NET_RAW,
    Capability::CAP_IPC_LOCK,
    Capability::CAP_BPF,
    Capability::CAP_NET_ADMIN,
];

/// Failures while dropping privileges.
#[derive(Debug, thiserror::Error)]
pub enum PrivsError {
    /// A capability system call failed.
    #[error("{call}")]
    Caps {
        /// The failing operation.
        call: &'static str,
        /// The error from the `caps` crate (it carries the errno text).
        source: caps::errors::CapsError,
    },
    /// The bounding set holds capabilities beyond the kept ones, and removing them needs
    /// `CAP_SETPCAP`, which this process does not have.
    #[error(
        "bounding set still holds {caps:?} and CAP_SETPCAP is not permitted to remove them; \
         give the container `capabilities: {{drop: [ALL]}}` plus only the needed ones"
    )]
    BoundingNeedsSetpcap {
        /// The capabilities that would remain in the bounding set.
        caps: Vec<String>,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("prctl(PR_SET_NO_NEW_PRIVS)")]
    NoNewPrivs(#[source] io::Error),
    /// After dropping, a set still holds a capability outside the kept ones.
    #[error("after dropping, the {set} set still holds {caps:?}")]
    StillHeld {
        /// The set (`permitted`, `effective`, ...).
        set: &'static str,
        /// The capabilities found.
        caps: Vec<String>,
    },
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivsReport {
    /// Capabilities asked for and still held (permitted and effective).
    pub kept: Vec<Capability>,
    /// Capabilities asked for that the process never had; the features that need them will fail.
    pub missing: Vec<Capability>,
    /// Capabilities removed from the permitted set.
    pub dropped: Vec<Capability>,
    /// Capabilities removed from the bounding set.
    pub bounding_dropped: Vec<Capability>,
    /// Threads of the process at the time of the call (the others keep their own capabilities).
    pub threads: usize,
}

/// Keeps exactly `keep` (where held) in the permitted, effective and inheritable sets and the bounding
/// set of the calling thread, clears the ambient set and sets `no_new_privs`. Verifies the result.
pub fn drop_privileges(keep: &[Capability]) -> Result<PrivsReport, PrivsError> {
    let keep: CapsHashSet = keep.iter().copied().collect();
    let read = |set: CapSet, call: &'static str| {
        caps::read(None, set).map_err(|source| PrivsError::Caps { call, source })
    };
    let permitted = read(CapSet::Permitted, "capget(permitted)")?;
    let inheritable = read(CapSet::Inheritable, "capget(inheritable)")?;
    let bounding = read(CapSet::Bounding, "prctl(PR_CAPBSET_READ)")?;

    // The bounding set first: removing from it needs CAP_SETPCAP in the effective set, which the next
    // steps take away.
    let mut bounding_extra: Vec<Capability> = bounding.difference(&keep).copied().collect();
    bounding_extra.sort_by_key(|c| c.index());
    if !bounding_extra.is_empty() {
        if !permitted.contains(&Capability::CAP_SETPCAP) {
            return Err(PrivsError::BoundingNeedsSetpcap {
                caps: names(&bounding_extra),
            });
        }
        caps::raise(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(|source| {
            PrivsError::Caps {
                call: "capset(effective += CAP_SETPCAP)",
                source,
            }
        })?;
        for &cap in &bounding_extra {
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| PrivsError::Caps {
                call: "prctl(PR_CAPBSET_DROP)",
                source,
            })?;
        }
    }

    caps::clear(None, CapSet::Ambient).map_err(|source| PrivsError::Caps {
        call: "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
        source,
    })?;
    // Effective before permitted: the kernel refuses an effective set larger than the permitted one.
    let new_permitted: CapsHashSet = permitted.intersection(&keep).copied().collect();
    let new_inheritable: CapsHashSet = inheritable.intersection(&keep).copied().collect();
    let set = |set: CapSet, value: &CapsHashSet, call: &'static str| {
        caps::set(None, set, value).map_err(|source| PrivsError::Caps { call, source })
    };
    set(CapSet::Effective, &new_permitted, "capset(effective)")?;
    set(CapSet::Inheritable, &new_inheritable, "capset(inheritable)")?;
    set(CapSet::Permitted, &new_permitted, "capset(permitted)")?;
    set_no_new_privs()?;

    // Read everything back: a silent failure here would leave the process more privileged than logged.
    for (cs, label) in [
        (CapSet::Permitted, "permitted"),
        (CapSet::Effective, "effective"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Ambient, "ambient"),
        (CapSet::Bounding, "bounding"),
    ] {
        let now = read(cs, "capget(verify)")?;
        let mut extra: Vec<Capability> = now.difference(&keep).copied().collect();
        if !extra.is_empty() {
            extra.sort_by_key(|c| c.index());
            return Err(PrivsError::StillHeld {
                set: label,
                caps: names(&extra),
            });
        }
    }

    let mut kept: Vec<Capability> = new_permitted.iter().copied().collect();
    kept.sort_by_key(|c| c.index());
    let mut missing: Vec<Capability> = keep.difference(&new_permitted).copied().collect();
    missing.sort_by_key(|c| c.index());
    let mut dropped: Vec<Capability> = permitted.difference(&keep).copied().collect();
    dropped.sort_by_key(|c| c.index());
    let report = PrivsReport {
        kept,
        missing,
        dropped,
        bounding_dropped: bounding_extra,
        threads: thread_count(),
    };
    log::info!(
        "capabilities: kept {:?}, dropped {} from permitted and {} from bounding, no_new_privs set",
        names(&report.kept),
        report.dropped.len(),
        report.bounding_dropped.len()
    );
    if !report.missing.is_empty() {
        log::warn!(
            "capabilities {:?} were asked for but never held",
            names(&report.missing)
        );
    }
    if report.threads > 1 {
        log::warn!(
            "capabilities are per thread: {} other thread(s) started before the drop keep theirs",
            report.threads - 1
        );
    }
    Ok(report)
}

/// [`drop_privileges`] with [`RUNNING_NF_CAPS`].
pub fn drop_to_running_nf_caps() -> Result<PrivsReport, PrivsError> {
    drop_privileges(&RUNNING_NF_CAPS)
}

/// [`drop_privileges`] with [`ANNOUNCING_NF_CAPS`].
pub fn drop_to_announcing_nf_caps() -> Result<PrivsReport, PrivsError> {
    drop_privileges(&ANNOUNCING_NF_CAPS)
}

/// Whether `no_new_privs` is set on the calling thread.
pub fn no_new_privs() -> io::Result<bool> {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers; the unused arguments must be zero.
    let rc = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    Ok(super::cvt(rc)? == 1)
}

fn set_no_new_privs() -> Result<(), PrivsError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes no pointers; the unused arguments must be zero.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    super::cvt(rc).map(drop).map_err(PrivsError::NoNewPrivs)
}

fn names(caps: &[Capability]) -> Vec<String> {
    caps.iter().map(ToString::to_string).collect()
}

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Set in the environment of the re-executed test binary, where the drop really happens.
    const CHILD_ENV: &str = "CNE_PRIVS_CHILD";

    fn has(set: CapSet, cap: Capability) -> bool {
        caps::has_cap(None, set, cap).unwrap()
    }

    /// Runs only inside the child process started by `drop_removes_net_admin_in_a_child_process`;
    /// in a normal run it returns at once, so the parent test process keeps its privileges.
    #[test]
    fn child_drops_and_checks() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        assert!(
            has(CapSet::Effective, Capability::CAP_NET_ADMIN),
            "child starts as root"
        );
        let report = drop_to_running_nf_caps().expect("drop");
        assert_eq!(report.kept, RUNNING_NF_CAPS.to_vec());
        assert!(report.missing.is_empty());
        assert!(report.dropped.contains(&Capability::CAP_NET_ADMIN));
        assert!(report.bounding_dropped.contains(&Capability::CAP_SYS_ADMIN));
        for set in [
            CapSet::Effective,
            CapSet::Permitted,
            CapSet::Inheritable,
            CapSet::Bounding,
            CapSet::Ambient,
        ] {
            assert!(
                !has(set, Capability::CAP_NET_ADMIN),
                "{set:?} still has NET_ADMIN"
            );
            assert!(
                !has(set, Capability::CAP_SYS_ADMIN),
                "{set:?} still has SYS_ADMIN"
            );
        }
        for cap in RUNNING_NF_CAPS {
            assert!(has(CapSet::Effective, cap), "{cap} must stay effective");
            assert!(has(CapSet::Bounding, cap), "{cap} must stay in bounding");
        }
        assert!(no_new_privs().unwrap());

        // The kernel agrees: SO_RCVBUFFORCE needs CAP_NET_ADMIN, an AF_XDP socket needs CAP_NET_RAW.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let v: libc::c_int = 1 << 20;
        // SAFETY: v is a valid c_int of the size passed; udp is an open socket.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&udp),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                std::ptr::from_ref(&v).cast(),
                4,
            )
        };
        assert_eq!(rc, -1, "SO_RCVBUFFORCE must need the dropped CAP_NET_ADMIN");
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
        // SAFETY: plain socket(2) call with constant arguments.
        let xsk = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(
            xsk >= 0,
            "AF_XDP socket with CAP_NET_RAW kept: {}",
            io::Error::last_os_error()
        );
        // SAFETY: xsk is a descriptor this test just opened and owns.
        unsafe { libc::close(xsk) };

        // Threads started afterwards inherit the reduced state.
        let t = std::thread::spawn(|| {
            (
                has(CapSet::Permitted, Capability::CAP_NET_ADMIN),
                has(CapSet::Permitted, Capability::CAP_NET_RAW),
                no_new_privs().unwrap(),
            )
        });
        assert_eq!(t.join().unwrap(), (false, true, true));
        println!("privs-child-ok");
    }

    #[test]
    #[ignore = "needs root"]
    fn drop_removes_net_admin_in_a_child_process() {
        lab::require_root();
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args([
                "--exact",
                "sys::privs::tests::child_drops_and_checks",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("privs-child-ok"),
            "child did not run the check:\n{stdout}"
        );
        // This process was not touched.
        assert!(has(CapSet::Effective, Capability::CAP_NET_ADMIN));
    }
}

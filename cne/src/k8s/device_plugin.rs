//! Client side of the Kubernetes AF_XDP device plugin's handshake, and the pinned-map alternative.
//!
//! In a pod the device plugin, not the application, loads the XDP program that redirects each queue to
//! an XSKMAP. The application obtains that map in one of two ways and then only writes its AF_XDP socket
//! at index `qid`:
//!
//! * **UDS** (`/tmp/afxdp_dp/<netdev>/afxdp.sock`, formerly `/tmp/afxdp.sock`): an `AF_UNIX`
//!   `SOCK_SEQPACKET` connection carrying ASCII messages of at most 64 bytes. `/connect,<hostname>` ->
//!   `/host_ok`; per netdev `/xsk_map_fd,<netdev>` -> `/fd_ack` with exactly one descriptor in
//!   `SCM_RIGHTS`; optionally `/config_busy_poll,<timeout_us>,<budget>` with the AF_XDP socket attached
//!   -> `/config_busy_poll_ack`; finally `/fin` -> `/fin_ack`.
//! * **Pinned map** (`/tmp/afxdp_dp/<netdev>/xsks_map` on a bpffs mount): opened with `bpf_obj_get`.
//!
//! Invariants: the plugin's server accepts exactly one connection and removes its socket file after
//! `/fin` or after any failure, so every lport that reaches the same server must share one connection.
//! [`PluginSessions`] guarantees that by keying sessions on the socket file's identity (device and inode),
//! which also covers a pod whose netdev paths are bind mounts of one host socket. The map descriptor is
//! fetched once per netdev and handed out as duplicates ([`OwnedFd`]) so each port owns its copy.
//! Every send and receive is bounded by `SO_SNDTIMEO`/`SO_RCVTIMEO` (30 s by default, the plugin's own
//! default deadline), and every way the exchange can fail has its own [`DevicePluginError`] variant so an
//! operator reading a pod's log knows which side to look at.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::sys::{cvt, parse_ret, parse_ret_fd};
use nix::errno::Errno;
use nix::sys::socket::{
    connect, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::sys::time::TimeVal;

/// Directory under which the device plugin mounts one sub-directory per netdev.
pub const DP_DIR: &str = "/tmp/afxdp_dp";
/// File name of the handshake socket inside a netdev's directory.
pub const UDS_FILE: &str = "afxdp.sock";
/// File name of the pinned XSKMAP inside a netdev's directory (map pinning mode).
pub const PINNED_MAP_FILE: &str = "xsks_map";
/// The single handshake socket of plugin releases before per-netdev directories existed.
pub const LEGACY_UDS_PATH: &str = "/tmp/afxdp.sock";
/// Prefix of the environment variables the plugin sets in the pod, followed by the pool name upper-cased.
pub const DEVICES_ENV_PREFIX: &str = "AFXDP_DEVICES_";
/// The environment variable older plugin releases set (no pool name).
pub const LEGACY_DEVICES_ENV: &str = "AFXDP_DEVICES";
/// Default bound on connect, send and receive: the plugin's own default deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest message either side may send; the plugin reads into a buffer of this size.
pub const MAX_MSG_LEN: usize = 64;
/// Protocol version the plugin answers to `/version`.
pub const PROTOCOL_VERSION: &str = "0.1";
/// `bpf_map_type` value of an XSKMAP (`BPF_MAP_TYPE_XSKMAP`).
pub const XSKMAP_TYPE: u32 = cne_sys::BPF_MAP_TYPE_XSKMAP;
/// `statfs` magic number of bpffs (`BPF_FS_MAGIC` in `<linux/magic.h>`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Longest netdev name the kernel accepts (`IFNAMSIZ` - 1).
const MAX_NETDEV_LEN: usize = 15;
/// Descriptors a reply may carry before the kernel truncates; more than one is already a protocol error.
const MAX_RECV_FDS: usize = 8;

/// Everything that can go wrong while obtaining an XSKMAP from the device plugin.
#[derive(Debug, thiserror::Error)]
pub enum DevicePluginError {
    /// The handshake socket does not exist: the pod was not allocated this netdev, or the plugin has
    /// already served (and removed) it.
    #[error(
        "device-plugin socket {path} does not exist (no afxdp resource allocated, or already used)"
    )]
    MissingSocket {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// The path exists but is not a socket.
    #[error("device-plugin path {path} exists but is not a socket")]
    NotASocket {
        /// The offending path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("{call} on {path}")]
    Io {
        /// The failing call.
        call: &'static str,
        /// The socket or file it was applied to.
        path: PathBuf,
        /// The error the kernel returned.
        source: io::Error,
    },
    /// No reply arrived (or the request could not be sent) within the configured timeout.
    #[error("device plugin at {path}: no answer to {request:?} within {timeout:?}")]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The request that went unanswered.
        request: String,
        /// The timeout in force.
        timeout: Duration,
    },
    /// The plugin answered `/host_nak`: the hostname is not a pod it allocated devices to.
    #[error("device plugin at {path} refused hostname {hostname:?} (/host_nak): it must equal the pod name")]
    HostNak {
        /// The socket path.
        path: PathBuf,
        /// The hostname sent with `/connect`.
        hostname: String,
    },
    /// The plugin answered `/error`: it failed on its side (e.g. could not query the kubelet).
    #[error("device plugin at {path} reported an internal error (/error) for {request:?}")]
    ServerError {
        /// The socket path.
        path: PathBuf,
        /// The request it failed on.
        request: String,
    },
    /// The plugin answered `/fd_nak`: it has no XSKMAP for this netdev.
    #[error("device plugin at {path} has no XSKMAP for netdev {netdev:?} (/fd_nak)")]
    FdNak {
        /// The socket path.
        path: PathBuf,
        /// The netdev asked for.
        netdev: String,
    },
    /// `/fd_ack` carried no descriptor or more than one (any extra ones have been closed).
    #[error("device plugin at {path} sent {count} file descriptors with /fd_ack for {netdev:?}, expected exactly 1")]
    WrongFdCount {
        /// The socket path.
        path: PathBuf,
        /// The netdev asked for.
        netdev: String,
        /// How many descriptors arrived (`MAX_RECV_FDS + 1` stands for "more than fit").
        count: usize,
    },
    /// A reply that the protocol does not allow at this point.
    #[error("device plugin at {path} answered {request:?} with {reply:?}, expected {expected}")]
    UnexpectedReply {
        /// The socket path.
        path: PathBuf,
        /// The request sent.
        request: String,
        /// The reply received.
        reply: String,
        /// What the protocol allows.
        expected: &'static str,
    },
    /// The plugin answered `/config_busy_poll_nak`.
    #[error("device plugin at {path} refused busy polling (timeout {timeout_us} us, budget {budget}): /config_busy_poll_nak")]
    BusyPollNak {
        /// The socket path.
        path: PathBuf,
        /// The requested busy-poll timeout in microseconds.
        timeout_us: u32,
        /// The requested budget.
        budget: u32,
    },
    /// The plugin closed the connection instead of answering.
    #[error("device plugin at {path} closed the connection while {request:?} awaited an answer")]
    Closed {
        /// The socket path.
        path: PathBuf,
        /// The request sent.
        request: String,
    },
    /// The session already ended (after `/fin` or after an error that leaves the exchange out of step).
    #[error("device-plugin session on {path} is no longer usable: {reason}")]
    SessionOver {
        /// The socket path.
        path: PathBuf,
        /// Why it ended.
        reason: &'static str,
    },
    /// A message would exceed the protocol's 64 bytes.
    #[error(
        "device-plugin message {msg:?} is {len} bytes, the protocol allows at most {MAX_MSG_LEN}"
    )]
    MessageTooLong {
        /// The message.
        msg: String,
        /// Its length.
        len: usize,
    },
    /// The timeout must be positive (a zero `SO_RCVTIMEO` would mean "wait forever").
    #[error("device-plugin timeout must be greater than zero")]
    ZeroTimeout,
    /// The pinned map path does not exist.
    #[error("pinned XSKMAP {path} does not exist (map pinning disabled in the plugin, or bpffs not mounted into the pod)")]
    MissingPinnedMap {
        /// The path looked up.
        path: PathBuf,
    },
    /// The pinned map path is not on a bpffs mount.
    #[error("pinned XSKMAP {path} is not on a bpffs mount (filesystem magic {fs_magic:#x})")]
    NotBpffs {
        /// The path looked up.
        path: PathBuf,
        /// The `statfs` magic found instead.
        fs_magic: i64,
    },
    /// The descriptor obtained is a BPF map, but not an XSKMAP.
    #[error("{origin} is a BPF map of type {map_type}, expected XSKMAP ({XSKMAP_TYPE})")]
    NotXskmap {
        /// Where the descriptor came from.
        origin: String,
        /// Its map type.
        map_type: u32,
    },
    /// A netdev name (from the environment or a caller) is not a valid interface name.
    #[error("invalid netdev name {name:?} in {origin}: 1-{MAX_NETDEV_LEN} characters of [A-Za-z0-9_.-] expected")]
    InvalidNetdev {
        /// The name.
        name: String,
        /// Where it came from.
        origin: String,
    },
    /// None of the device plugin's files exist for a netdev.
    #[error("no device-plugin socket or pinned map for netdev {netdev:?}; looked at {tried:?}")]
    NoDeviceFiles {
        /// The netdev.
        netdev: String,
        /// The paths examined.
        tried: Vec<PathBuf>,
    },
}

/// Result alias of this module.
pub type Result<T, E = DevicePluginError> = std::result::Result<T, E>;

/// One netdev the device plugin allocated to this pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDevice {
    /// Pool name as it appears in the environment variable (upper-cased by the plugin); `None` for the
    /// legacy `AFXDP_DEVICES` variable.
    pub pool: Option<String>,
    /// Interface name inside the pod (the CNI moves it in under its own name).
    pub netdev: String,
}

/// Reads the devices the plugin allocated from this process's environment.
pub fn devices_from_env() -> Result<Vec<PluginDevice>> {
    devices_from_vars(std::env::vars())
}

/// Reads `AFXDP_DEVICES_<POOL>` (space-separated netdevs) and the legacy `AFXDP_DEVICES` from `vars`.
///
/// The result is ordered by pool name, then by position in the variable; a netdev listed twice is kept
/// once (first occurrence). Names are validated because they become path components.
pub fn devices_from_vars<I, K, V>(vars: I) -> Result<Vec<PluginDevice>>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut pools: Vec<(Option<String>, String)> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let k = k.as_ref();
            let pool = if k == LEGACY_DEVICES_ENV {
                None
            } else {
                Some(k.strip_prefix(DEVICES_ENV_PREFIX)?.to_owned())
            };
            Some((pool, v.as_ref().to_owned()))
        })
        .collect();
    pools.sort();
    let mut out: Vec<PluginDevice> = Vec::new();
    for (pool, list) in pools {
        let origin = match &pool {
            Some(p) => format!("{DEVICES_ENV_PREFIX}{p}"),
            None => LEGACY_DEVICES_ENV.to_owned(),
        };
        for name in list.split(|c: char| c.is_whitespace() || c == ',') {
            if name.is_empty() {
                continue;
            }
            validate_netdev(name, &origin)?;
            if !out.iter().any(|d| d.netdev == name) {
                out.push(PluginDevice {
                    pool: pool.clone(),
                    netdev: name.to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// Checks that `name` is a plausible interface name, safe to use as a path component.
pub fn validate_netdev(name: &str, origin: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NETDEV_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(DevicePluginError::InvalidNetdev {
            name: name.to_owned(),
            origin: origin.to_owned(),
        })
    }
}

/// How this process obtains the XSKMAP of one netdev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapSource {
    /// Through the handshake on this socket.
    Uds(PathBuf),
    /// From this pinned map on bpffs.
    Pinned(PathBuf),
}

/// Where the device plugin puts its files in the pod; [`Default`] is the plugin's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLayout {
    /// Per-netdev directory root (`/tmp/afxdp_dp`).
    pub dir: PathBuf,
    /// The single socket of older releases (`/tmp/afxdp.sock`).
    pub legacy_uds: PathBuf,
}

impl Default for PluginLayout {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DP_DIR),
            legacy_uds: PathBuf::from(LEGACY_UDS_PATH),
        }
    }
}

impl PluginLayout {
    /// `<dir>/<netdev>/afxdp.sock`.
    pub fn uds_path(&self, netdev: &str) -> PathBuf {
        self.dir.join(netdev).join(UDS_FILE)
    }

    /// `<dir>/<netdev>/xsks_map`.
    pub fn pinned_map_path(&self, netdev: &str) -> PathBuf {
        self.dir.join(netdev).join(PINNED_MAP_FILE)
    }

    /// Finds which of the plugin's files exists for `netdev`: its socket, else its pinned map, else the
    /// legacy socket.
    pub fn detect(&self, netdev: &str) -> Result<MapSource> {
        validate_netdev(netdev, "netdev argument")?;
        let uds = self.uds_path(netdev);
        let pinned = self.pinned_map_path(netdev);
        if uds.symlink_metadata().is_ok() {
            return Ok(MapSource::Uds(uds));
        }
        if pinned.symlink_metadata().is_ok() {
            return Ok(MapSource::Pinned(pinned));
        }
        if self.legacy_uds.symlink_metadata().is_ok() {
            return Ok(MapSource::Uds(self.legacy_uds.clone()));
        }
        Err(DevicePluginError::NoDeviceFiles {
            netdev: netdev.to_owned(),
            tried: vec![uds, pinned, self.legacy_uds.clone()],
        })
    }
}

/// The name the plugin expects in `/connect`: the pod's hostname, which Kubernetes sets to the pod name.
pub fn pod_hostname() -> Result<String> {
    let name = nix::unistd::gethostname().map_err(|e| DevicePluginError::Io {
        call: "gethostname",
        path: PathBuf::new(),
        source: io::Error::from(e),
    })?;
    Ok(name.to_string_lossy().into_owned())
}

/// A reply: its text and any descriptors it carried (closed when dropped unless taken).
#[derive(Debug)]
struct Reply {
    text: String,
    fds: Vec<OwnedFd>,
    /// The kernel discarded descriptors that did not fit the control buffer.
    fds_truncated: bool,
}

/// The connection's mutable state, behind the session's mutex.
#[derive(Debug)]
struct Conn {
    sock: OwnedFd,
    /// One map per netdev, fetched once, handed out as duplicates.
    maps: HashMap<String, OwnedFd>,
    /// `Some(reason)` once the session cannot be used any more.
    over: Option<&'static str>,
}

/// One handshake connection to a device-plugin socket, shared by every lport that reaches that socket.
///
/// Methods take `&self` so an `Arc<PluginSession>` can be shared; requests are serialized internally. The
/// handshake is setup-time work, never on the packet path.
#[derive(Debug)]
pub struct PluginSession {
    path: PathBuf,
    hostname: String,
    timeout: Duration,
    conn: Mutex<Conn>,
}

impl PluginSession {
    /// Connects to `path`, sends `/connect,<hostname>` and expects `/host_ok`.
    pub fn connect(path: impl AsRef<Path>, hostname: &str, timeout: Duration) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if timeout.is_zero() {
            return Err(DevicePluginError::ZeroTimeout);
        }
        let hello = format!("/connect,{hostname}");
        check_len(&hello)?;
        let sock = connect_seqpacket(&path, timeout)?;
        let session = Self {
            path,
            hostname: hostname.to_owned(),
            timeout,
            conn: Mutex::new(Conn {
                sock,
                maps: HashMap::new(),
                over: None,
            }),
        };
        {
            let mut conn = session.lock();
            let reply = session.request(&mut conn, &hello, None)?;
            match reply.text.as_str() {
                "/host_ok" => {}
                "/host_nak" => {
                    conn.over = Some("the plugin refused the hostname");
                    return Err(DevicePluginError::HostNak {
                        path: session.path.clone(),
                        hostname: session.hostname.clone(),
                    });
                }
                _ => return Err(session.fail(&mut conn, &hello, reply, "/host_ok or /host_nak")),
            }
        }
        log::info!(
            "device plugin {}: connected as {hostname:?}",
            session.path.display()
        );
        Ok(session)
    }

    /// The socket path of this session.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The timeout applied to each send and receive.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks `/version`; the plugin of this protocol answers [`PROTOCOL_VERSION`].
    pub fn version(&self) -> Result<String> {
        let mut conn = self.lock();
        let reply = self.request(&mut conn, "/version", None)?;
        if reply.text.starts_with('/') {
            return Err(self.fail(&mut conn, "/version", reply, "a version number"));
        }
        Ok(reply.text)
    }

    /// Returns a descriptor of `netdev`'s XSKMAP, fetching it with `/xsk_map_fd,<netdev>` on first use
    /// and duplicating the cached one afterwards. The caller (the port) writes its AF_XDP socket at
    /// index `qid` of this map.
    pub fn xsk_map_fd(&self, netdev: &str) -> Result<OwnedFd> {
        validate_netdev(netdev, "xsk_map_fd request")?;
        let mut conn = self.lock();
        if let Some(fd) = conn.maps.get(netdev) {
            return fd.try_clone().map_err(|source| DevicePluginError::Io {
                call: "dup(xskmap fd)",
                path: self.path.clone(),
                source,
            });
        }
        let req = format!("/xsk_map_fd,{netdev}");
        check_len(&req)?;
        let mut reply = self.request(&mut conn, &req, None)?;
        match reply.text.as_str() {
            "/fd_ack" => {}
            "/fd_nak" => {
                return Err(DevicePluginError::FdNak {
                    path: self.path.clone(),
                    netdev: netdev.to_owned(),
                })
            }
            _ => return Err(self.fail(&mut conn, &req, reply, "/fd_ack or /fd_nak")),
        }
        if reply.fds.len() != 1 || reply.fds_truncated {
            let count = if reply.fds_truncated {
                MAX_RECV_FDS + 1
            } else {
                reply.fds.len()
            };
            // Dropping the reply closes every descriptor it carried. The plugin broke the protocol, so
            // nothing more is asked on this connection.
            drop(reply);
            conn.over = Some("the plugin sent a wrong number of descriptors");
            return Err(DevicePluginError::WrongFdCount {
                path: self.path.clone(),
                netdev: netdev.to_owned(),
                count,
            });
        }
        let map = reply.fds.remove(0);
        let info = map_info(map.as_fd()).map_err(|e| with_path(e, &self.path))?;
        if info.map_type != XSKMAP_TYPE {
            conn.over = Some("the plugin sent a descriptor that is not an XSKMAP");
            return Err(DevicePluginError::NotXskmap {
                origin: format!("the descriptor {} sent for {netdev}", self.path.display()),
                map_type: info.map_type,
            });
        }
        log::info!(
            "device plugin {}: XSKMAP for {netdev} (map id {}, {} entries)",
            self.path.display(),
            info.id,
            info.max_entries
        );
        let dup = map.try_clone().map_err(|source| DevicePluginError::Io {
            call: "dup(xskmap fd)",
            path: self.path.clone(),
            source,
        })?;
        conn.maps.insert(netdev.to_owned(), map);
        Ok(dup)
    }

    /// Asks the plugin to enable busy polling on the AF_XDP socket `sock` (sent along by
    /// `SCM_RIGHTS`): `/config_busy_poll,<timeout_us>,<budget>`. Call it after the socket exists and
    /// before [`PluginSession::fin`].
    pub fn config_busy_poll(
        &self,
        sock: BorrowedFd<'_>,
        timeout_us: u32,
        budget: u32,
    ) -> Result<()> {
        let req = format!("/config_busy_poll,{timeout_us},{budget}");
        check_len(&req)?;
        let mut conn = self.lock();
        let reply = self.request(&mut conn, &req, Some(sock))?;
        match reply.text.as_str() {
            "/config_busy_poll_ack" => {
                log::info!(
                    "device plugin {}: busy polling on (timeout {timeout_us} us, budget {budget})",
                    self.path.display()
                );
                Ok(())
            }
            "/config_busy_poll_nak" => Err(DevicePluginError::BusyPollNak {
                path: self.path.clone(),
                timeout_us,
                budget,
            }),
            _ => Err(self.fail(
                &mut conn,
                &req,
                reply,
                "/config_busy_poll_ack or /config_busy_poll_nak",
            )),
        }
    }

    /// Ends the handshake: `/fin` -> `/fin_ack`. Map descriptors already handed out stay valid.
    pub fn fin(&self) -> Result<()> {
        let mut conn = self.lock();
        if conn.over == Some(FIN_DONE) {
            return Ok(());
        }
        let reply = self.request(&mut conn, "/fin", None)?;
        if reply.text != "/fin_ack" {
            return Err(self.fail(&mut conn, "/fin", reply, "/fin_ack"));
        }
        conn.over = Some(FIN_DONE);
        conn.maps.clear();
        log::info!("device plugin {}: handshake finished", self.path.display());
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock cannot leave Conn half-updated in a way that matters: at worst
        // a cached map is missing and gets fetched again.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the session unusable and builds the error for an unexpected reply (`/error` included).
    fn fail(
        &self,
        conn: &mut Conn,
        request: &str,
        reply: Reply,
        expected: &'static str,
    ) -> DevicePluginError {
        conn.over = Some("an earlier reply broke the protocol");
        if reply.text == "/error" {
            return DevicePluginError::ServerError {
                path: self.path.clone(),
                request: request.to_owned(),
            };
        }
        DevicePluginError::UnexpectedReply {
            path: self.path.clone(),
            request: request.to_owned(),
            reply: reply.text,
            expected,
        }
    }

    /// Sends one request and waits for one reply. Any transport failure ends the session, since a late
    /// reply would pair with the wrong request.
    fn request(&self, conn: &mut Conn, msg: &str, fd: Option<BorrowedFd<'_>>) -> Result<Reply> {
        if let Some(reason) = conn.over {
            return Err(DevicePluginError::SessionOver {
                path: self.path.clone(),
                reason,
            });
        }
        let res = send_msg(conn.sock.as_fd(), msg, fd)
            .map_err(|e| self.io_error("sendmsg", msg, e))
            .and_then(|()| {
                recv_msg(conn.sock.as_fd()).map_err(|e| self.io_error("recvmsg", msg, e))
            })
            .and_then(|reply| match reply {
                Some(r) => Ok(r),
                None => Err(DevicePluginError::Closed {
                    path: self.path.clone(),
                    request: msg.to_owned(),
                }),
            });
        if res.is_err() {
            conn.over = Some("an earlier request failed");
        }
        res
    }

    fn io_error(&self, call: &'static str, request: &str, source: io::Error) -> DevicePluginError {
        if is_timeout(&source) {
            DevicePluginError::Timeout {
                path: self.path.clone(),
                request: request.to_owned(),
                timeout: self.timeout,
            }
        } else {
            DevicePluginError::Io {
                call,
                path: self.path.clone(),
                source,
            }
        }
    }
}

const FIN_DONE: &str = "the handshake was finished with /fin";

impl Drop for PluginSession {
    fn drop(&mut self) {
        let conn = self.lock();
        if conn.over.is_none() {
            // Best effort, without waiting: the plugin removes its socket file on /fin or on a closed
            // connection alike; /fin merely lets it log a clean end.
            let _ = send_msg_flags(conn.sock.as_fd(), "/fin", None, MsgFlags::MSG_DONTWAIT);
        }
    }
}

/// Identity of a socket file: bind mounts of one host socket share it.
type SocketId = (u64, u64);

/// All handshake sessions of this process, one per device-plugin socket.
#[derive(Debug)]
pub struct PluginSessions {
    hostname: String,
    timeout: Duration,
    sessions: HashMap<SocketId, Arc<PluginSession>>,
}

impl PluginSessions {
    /// Sessions that will introduce themselves as `hostname` and wait at most `timeout` per step.
    pub fn new(hostname: impl Into<String>, timeout: Duration) -> Self {
        Self {
            hostname: hostname.into(),
            timeout,
            sessions: HashMap::new(),
        }
    }

    /// Sessions for this pod: hostname from `gethostname` (the pod name), [`DEFAULT_TIMEOUT`].
    pub fn for_pod() -> Result<Self> {
        Ok(Self::new(pod_hostname()?, DEFAULT_TIMEOUT))
    }

    /// The session for the socket at `uds_path`, connecting on first use.
    pub fn session(&mut self, uds_path: &Path) -> Result<Arc<PluginSession>> {
        let meta = match uds_path.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DevicePluginError::MissingSocket {
                    path: uds_path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(DevicePluginError::Io {
                    call: "stat",
                    path: uds_path.to_path_buf(),
                    source,
                })
            }
        };
        if !meta.file_type().is_socket() {
            return Err(DevicePluginError::NotASocket {
                path: uds_path.to_path_buf(),
            });
        }
        let id = (meta.dev(), meta.ino());
        if let Some(s) = self.sessions.get(&id) {
            return Ok(Arc::clone(s));
        }
        let s = Arc::new(PluginSession::connect(
            uds_path,
            &self.hostname,
            self.timeout,
        )?);
        self.sessions.insert(id, Arc::clone(&s));
        Ok(s)
    }

    /// The XSKMAP of `netdev` from `source`: through the (shared) session of a socket, or by opening a
    /// pinned map.
    pub fn xsk_map(&mut self, netdev: &str, source: &MapSource) -> Result<OwnedFd> {
        match source {
            MapSource::Uds(path) => self.session(path)?.xsk_map_fd(netdev),
            MapSource::Pinned(path) => open_pinned_map(path),
        }
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session was opened.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Sends `/fin` on every session; returns the first failure after trying all of them.
    pub fn finish(&mut self) -> Result<()> {
        let mut first = None;
        for (_, s) in self.sessions.drain() {
            if let Err(e) = s.fin() {
                log::warn!("{}", crate::error_chain(&e));
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// What the kernel reports about a BPF map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    /// `bpf_map_type` ([`XSKMAP_TYPE`] for an XSKMAP).
    pub map_type: u32,
    /// Kernel-wide map id.
    pub id: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Number of entries (queues, for an XSKMAP).
    pub max_entries: u32,
    /// Map name (at most 15 bytes).
    pub name: String,
}

/// Asks the kernel what the BPF map behind `fd` is (`bpf_obj_get_info_by_fd`).
pub fn map_info(fd: BorrowedFd<'_>) -> Result<MapInfo> {
    let mut info = cne_sys::bpf_map_info::default();
    let mut len = u32::try_from(size_of::<cne_sys::bpf_map_info>()).unwrap_or(u32::MAX);
    // SAFETY: info is a valid, writable bpf_map_info and len holds its size; the kernel writes at most
    // len bytes and updates len.
    let rc = unsafe {
        cne_sys::bpf_obj_get_info_by_fd(
            fd.as_raw_fd(),
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    };
    parse_ret(rc).map_err(|source| DevicePluginError::Io {
        call: "bpf_obj_get_info_by_fd",
        path: PathBuf::new(),
        source,
    })?;
    let name_len = info
        .name
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(info.name.len());
    let name: Vec<u8> = info.name[..name_len].iter().map(|&c| c as u8).collect();
    Ok(MapInfo {
        map_type: info.type_,
        id: info.id,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        name: String::from_utf8_lossy(&name).into_owned(),
    })
}

/// Opens the XSKMAP the plugin pinned at `path` (map pinning mode) and checks its type.
pub fn open_pinned_map(path: &Path) -> Result<OwnedFd> {
    if let Err(e) = path.symlink_metadata() {
        if e.kind() == io::ErrorKind::NotFound {
            return Err(DevicePluginError::MissingPinnedMap {
                path: path.to_path_buf(),
            });
        }
        return Err(DevicePluginError::Io {
            call: "stat",
            path: path.to_path_buf(),
            source: e,
        });
    }
    let cpath = path_cstring(path)?;
    let mut sfs = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: cpath is NUL-terminated; sfs is writable storage for one statfs.
    let rc = unsafe { libc::statfs(cpath.as_ptr(), sfs.as_mut_ptr()) };
    cvt(rc).map_err(|source| DevicePluginError::Io {
        call: "statfs",
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: statfs returned 0, so it filled the whole structure.
    let sfs = unsafe { sfs.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let fs_magic = sfs.f_type as i64;
    if fs_magic != BPF_FS_MAGIC {
        return Err(DevicePluginError::NotBpffs {
            path: path.to_path_buf(),
            fs_magic,
        });
    }
    // SAFETY: cpath is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { cne_sys::bpf_obj_get(cpath.as_ptr()) };
    let fd = parse_ret_fd(rc).map_err(|source| DevicePluginError::Io {
        call: "bpf_obj_get",
        path: path.to_path_buf(),
        source,
    })?;
    let info = map_info(fd.as_fd()).map_err(|e| with_path(e, path))?;
    if info.map_type != XSKMAP_TYPE {
        return Err(DevicePluginError::NotXskmap {
            origin: path.display().to_string(),
            map_type: info.map_type,
        });
    }
    log::info!(
        "pinned XSKMAP {} (map id {}, {} entries)",
        path.display(),
        info.id,
        info.max_entries
    );
    Ok(fd)
}

/// Creates an XSKMAP of `entries` slots, as the device plugin does for each netdev.
#[doc(hidden)]
pub fn create_xskmap(entries: u32) -> Result<OwnedFd> {
    let name = c"cne_xsks_map";
    let four = u32::try_from(size_of::<u32>()).unwrap_or(4);
    // SAFETY: name is NUL-terminated and outlives the call; a null opts pointer means "no options".
    let rc = unsafe {
        cne_sys::bpf_map_create(
            XSKMAP_TYPE,
            name.as_ptr(),
            four,
            four,
            entries,
            std::ptr::null(),
        )
    };
    parse_ret_fd(rc).map_err(|source| DevicePluginError::Io {
        call: "bpf_map_create(XSKMAP)",
        path: PathBuf::new(),
        source,
    })
}

/// Pins the BPF object `fd` at `path` on a bpffs mount, as the plugin does in map pinning mode.
#[doc(hidden)]
pub fn pin_map(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let cpath = path_cstring(path)?;
    // SAFETY: cpath is a valid NUL-terminated path; fd is an open descriptor borrowed for the call.
    let rc = unsafe { cne_sys::bpf_obj_pin(fd.as_raw_fd(), cpath.as_ptr()) };
    parse_ret(rc)
        .map(drop)
        .map_err(|source| DevicePluginError::Io {
            call: "bpf_obj_pin",
            path: path.to_path_buf(),
            source,
        })
}

fn with_path(e: DevicePluginError, path: &Path) -> DevicePluginError {
    match e {
        DevicePluginError::Io { call, source, .. } => DevicePluginError::Io {
            call,
            path: path.to_path_buf(),
            source,
        },
        other => other,
    }
}

fn path_cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| DevicePluginError::Io {
        call: "path",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

fn check_len(msg: &str) -> Result<()> {
    if msg.len() > MAX_MSG_LEN {
        return Err(DevicePluginError::MessageTooLong {
            msg: msg.to_owned(),
            len: msg.len(),
        });
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::EINPROGRESS) | Some(libc::ETIMEDOUT)
    )
}

fn timeval(d: Duration) -> TimeVal {
    // A zero timeval would disable the timeout, so anything below one microsecond rounds up.
    let d = d.max(Duration::from_micros(1));
    TimeVal::new(
        libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        libc::suseconds_t::from(d.subsec_micros()),
    )
}

/// Opens a `SOCK_SEQPACKET` connection to `path` with both timeouts set before `connect` (on `AF_UNIX`,
/// `SO_SNDTIMEO` also bounds a connect that waits for a full listen backlog).
fn connect_seqpacket(path: &Path, timeout: Duration) -> Result<OwnedFd> {
    let io_err = |call, source| DevicePluginError::Io {
        call,
        path: path.to_path_buf(),
        source,
    };
    match path.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DevicePluginError::MissingSocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err("stat", e)),
        Ok(_) => {}
    }
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| io_err("socket(AF_UNIX, SOCK_SEQPACKET)", io::Error::from(e)))?;
    let tv = timeval(timeout);
    setsockopt(&sock, sockopt::ReceiveTimeout, &tv)
        .map_err(|e| io_err("setsockopt(SO_RCVTIMEO)", io::Error::from(e)))?;
    setsockopt(&sock, sockopt::SendTimeout, &tv)
        .map_err(|e| io_err("setsockopt(SO_SNDTIMEO)", io::Error::from(e)))?;
    // UnixAddr refuses a path that does not fit sun_path (107 bytes and the NUL).
    let addr = UnixAddr::new(path).map_err(|e| io_err("connect", io::Error::from(e)))?;
    if let Err(e) = connect(sock.as_raw_fd(), &addr) {
        return Err(match e {
            Errno::ENOENT => DevicePluginError::MissingSocket {
                path: path.to_path_buf(),
            },
            Errno::EAGAIN | Errno::EINPROGRESS => DevicePluginError::Timeout {
                path: path.to_path_buf(),
                request: "connect".to_owned(),
                timeout,
            },
            _ => io_err("connect", io::Error::from(e)),
        });
    }
    Ok(sock)
}

fn send_msg(sock: BorrowedFd<'_>, msg: &str, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    send_msg_flags(sock, msg, fd, MsgFlags::empty())
}

/// Sends `msg` as one packet, with `fd` attached by `SCM_RIGHTS` when given.
fn send_msg_flags(
    sock: BorrowedFd<'_>,
    msg: &str,
    fd: Option<BorrowedFd<'_>>,
    flags: MsgFlags,
) -> io::Result<()> {
    let iov = [IoSlice::new(msg.as_bytes())];
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = raw
        .as_ref()
        .map(|r| ControlMessage::ScmRights(r))
        .into_iter()
        .collect();
    let n = sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &cmsgs,
        flags | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)?;
    if n != msg.len() {
        return Err(io::Error::other(format!("sent {n} of {} bytes", msg.len())));
    }
    Ok(())
}

/// Receives one packet and every descriptor attached to it. `Ok(None)` means the peer closed.
fn recv_msg(sock: BorrowedFd<'_>) -> io::Result<Option<Reply>> {
    let mut buf = [0u8; MAX_MSG_LEN];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_RECV_FDS]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_buf),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let (n, flags) = (msg.bytes, msg.flags);
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raws) = c {
            fds.extend(raws.into_iter().filter(|&r| r >= 0).map(|r| {
                // SAFETY: the kernel installed this descriptor in our table for this message;
                // nothing else owns it.
                unsafe { OwnedFd::from_raw_fd(r) }
            }));
        }
    }
    let fds_truncated = flags.contains(MsgFlags::MSG_CTRUNC);
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    let mut text = String::from_utf8_lossy(&buf[..n]).into_owned();
    if flags.contains(MsgFlags::MSG_TRUNC) {
        text.push_str("...(longer than 64 bytes)");
    }
    Ok(Some(Reply {
        text,
        fds,
        fds_truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_from_pool_vars_in_order() {
        let vars = [
            ("PATH", "/bin"),
            ("AFXDP_DEVICES_POOLB", "ens2 ens3"),
            ("AFXDP_DEVICES_POOLA", "ens1"),
            ("AFXDP_DEVICES", "ens3 ens9"),
        ];
        let devs = devices_from_vars(vars).unwrap();
        let got: Vec<(Option<&str>, &str)> = devs
            .iter()
            .map(|d| (d.pool.as_deref(), d.netdev.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, "ens3"),
                (None, "ens9"),
                (Some("POOLA"), "ens1"),
                (Some("POOLB"), "ens2"),
            ]
        );
    }

    #[test]
    fn devices_reject_path_like_names() {
        for bad in ["../etc", "a/b", "..", "averyveryverylongname0"] {
            let err = devices_from_vars([("AFXDP_DEVICES_P", bad)]).unwrap_err();
            assert!(
                matches!(err, DevicePluginError::InvalidNetdev { .. }),
                "{bad}: {err}"
            );
        }
        assert!(devices_from_vars([("AFXDP_DEVICES_P", "")])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn layout_paths_and_detection() {
        let dir = std::env::temp_dir().join(format!("cne-dp-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = PluginLayout {
            dir: dir.clone(),
            legacy_uds: dir.join("legacy.sock"),
        };
        assert_eq!(layout.uds_path("ens1"), dir.join("ens1/afxdp.sock"));
        assert_eq!(layout.pinned_map_path("ens1"), dir.join("ens1/xsks_map"));
        assert!(matches!(
            layout.detect("ens1"),
            Err(DevicePluginError::NoDeviceFiles { .. })
        ));
        std::fs::create_dir_all(dir.join("ens1")).unwrap();
        std::fs::write(dir.join("ens1/xsks_map"), b"").unwrap();
        assert_eq!(
            layout.detect("ens1").unwrap(),
            MapSource::Pinned(dir.join("ens1/xsks_map"))
        );
        std::fs::write(dir.join("ens1/afxdp.sock"), b"").unwrap();
        assert_eq!(
            layout.detect("ens1").unwrap(),
            MapSource::Uds(dir.join("ens1/afxdp.sock"))
        );
        std::fs::write(dir.join("legacy.sock"), b"").unwrap();
        assert_eq!(
            layout.detect("ens2").unwrap(),
            MapSource::Uds(dir.join("legacy.sock"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_hostname_is_refused_before_sending() {
        let host = "h".repeat(60);
        let err =
            PluginSession::connect("/nonexistent/afxdp.sock", &host, DEFAULT_TIMEOUT).unwrap_err();
        assert!(
            matches!(err, DevicePluginError::MessageTooLong { len: 69, .. }),
            "{err}"
        );
    }

    #[test]
    fn zero_timeout_is_refused() {
        let err = PluginSession::connect("/nonexistent", "pod", Duration::ZERO).unwrap_err();
        assert!(matches!(err, DevicePluginError::ZeroTimeout));
    }

    #[test]
    fn timeval_never_zero() {
        let tv = timeval(Duration::from_nanos(1));
        assert_eq!((tv.tv_sec(), tv.tv_usec()), (0, 1));
        let tv = timeval(Duration::from_millis(1500));
        assert_eq!((tv.tv_sec(), tv.tv_usec()), (1, 500_000));
    }

    #[test]
    fn pinned_map_missing_path_is_clear() {
        let err = open_pinned_map(Path::new("/nonexistent/afxdp_dp/ens1/xsks_map")).unwrap_err();
        assert!(
            matches!(err, DevicePluginError::MissingPinnedMap { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("bpffs"));
    }

    #[test]
    fn pinned_map_on_other_fs_is_clear() {
        let p = std::env::temp_dir().join(format!("cne-dp-notbpffs-{}", std::process::id()));
        std::fs::write(&p, b"").unwrap();
        let err = open_pinned_map(&p).unwrap_err();
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(err, DevicePluginError::NotBpffs { .. }), "{err}");
    }
}

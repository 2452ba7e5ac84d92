//! The device-plugin handshake against a stand-in for the plugin's UDS server (root only).
//!
//! The real server lives inside the AF_XDP device plugin and only runs next to a kubelet, so these tests
//! run a stand-in written here from the plugin's protocol: a one-shot `SOCK_SEQPACKET` server in a temp
//! directory that creates a real XSKMAP (as the plugin does after loading its XDP program), answers the
//! requests and passes the map by `SCM_RIGHTS`. Each scripted misbehaviour checks that the client
//! reports the matching [`DevicePluginError`] variant. They need root (`CAP_BPF` for the XSKMAP): `#[ignore = "needs root"]`, and they fail when run anyway without it.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cne::k8s::device_plugin::{
    self as dp, DevicePluginError, MapSource, PluginSession, PluginSessions,
};

use lab::require_root;

const HOST: &str = "cne-test-pod";
/// Bound on how long the stand-in waits for anything, so a broken client cannot hang the suite.
const STAND_IN_LIMIT: Duration = Duration::from_secs(10);

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// As the plugin does when all is well.
    Plugin,
    /// `/host_nak` to `/connect`.
    HostNak,
    /// `/error` to `/connect`.
    ErrorOnConnect,
    /// `/nak` to `/connect` (not a reply `/connect` may get).
    NakOnConnect,
    /// Never answers anything.
    Silent,
    /// `/fd_nak` to `/xsk_map_fd`.
    FdNak,
    /// `/fd_ack` without a descriptor.
    FdAckNoFd,
    /// `/fd_ack` with two descriptors.
    FdAckTwoFds,
    /// `/config_busy_poll_nak`.
    BusyPollNak,
    /// `/fd_ack` with a BPF map that is not an XSKMAP.
    WrongMapType,
}

/// What the stand-in saw.
#[derive(Debug, Default)]
struct Seen {
    connections: usize,
    requests: Vec<String>,
    /// Socket domain (`SO_DOMAIN`) of the descriptor attached to each busy-poll request, `None` when
    /// the request carried no descriptor.
    busy_poll_fd_domains: Vec<Option<i32>>,
    map_id: u32,
}

/// A temp directory holding the stand-in's socket; removed on drop even when a test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cne-dp-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct StandIn {
    path: PathBuf,
    thread: Option<JoinHandle<io::Result<Seen>>>,
}

impl StandIn {
    /// Binds `<dir>/<netdev>/afxdp.sock` and serves one connection following `script`.
    fn start(dir: &Path, netdev: &str, script: Script) -> Self {
        let sock_dir = dir.join(netdev);
        std::fs::create_dir_all(&sock_dir).expect("create socket dir");
        let path = sock_dir.join("afxdp.sock");
        let listener = bind_listen(&path).expect("bind stand-in socket");
        let map = dp::create_xskmap(4).expect("create XSKMAP (needs CAP_BPF)");
        let map_id = dp::map_info(map.as_fd()).expect("map info").id;
        let p = path.clone();
        let thread = std::thread::spawn(move || {
            let res = serve(&listener, &map, script);
            // Like the plugin: one connection, then the socket file goes away.
            let _ = std::fs::remove_file(&p);
            res.map(|mut seen| {
                seen.map_id = map_id;
                seen
            })
        });
        Self {
            path,
            thread: Some(thread),
        }
    }

    fn join(mut self) -> Seen {
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("stand-in panicked")
            .expect("stand-in I/O")
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &OwnedFd, map: &OwnedFd, script: Script) -> io::Result<Seen> {
    let mut seen = Seen::default();
    if !wait_readable(listener.as_fd(), STAND_IN_LIMIT)? {
        return Ok(seen);
    }
    let conn = accept(listener.as_fd())?;
    seen.connections += 1;
    set_rcvtimeo(conn.as_fd(), STAND_IN_LIMIT)?;
    while let Some((req, fds)) = recv_with_fds(conn.as_fd())? {
        seen.requests.push(req.clone());
        let map_fd = map.as_fd();
        let done = match req.as_str() {
            _ if script == Script::Silent => false,
            r if r.starts_with("/connect,") => {
                let reply = match script {
                    Script::HostNak => "/host_nak",
                    Script::ErrorOnConnect => "/error",
                    Script::NakOnConnect => "/nak",
                    _ if r == format!("/connect,{HOST}") => "/host_ok",
                    _ => "/host_nak",
                };
                send_with_fds(conn.as_fd(), reply, &[])?;
                reply != "/host_ok"
            }
            r if r.starts_with("/xsk_map_fd,") => {
                match script {
                    Script::FdNak => send_with_fds(conn.as_fd(), "/fd_nak", &[])?,
                    Script::FdAckNoFd => send_with_fds(conn.as_fd(), "/fd_ack", &[])?,
                    Script::FdAckTwoFds => {
                        send_with_fds(conn.as_fd(), "/fd_ack", &[map_fd, map_fd])?
                    }
                    Script::WrongMapType => {
                        let array = array_map()?;
                        send_with_fds(conn.as_fd(), "/fd_ack", &[array.as_fd()])?
                    }
                    _ => send_with_fds(conn.as_fd(), "/fd_ack", &[map_fd])?,
                }
                false
            }
            r if r.starts_with("/config_busy_poll,") => {
                seen.busy_poll_fd_domains.push(
                    fds.first()
                        .map(|fd| socket_domain(fd.as_fd()))
                        .transpose()?,
                );
                let ok =
                    script != Script::BusyPollNak && fds.len() == 1 && r.split(',').count() == 3;
                let reply = if ok {
                    "/config_busy_poll_ack"
                } else {
                    "/config_busy_poll_nak"
                };
                send_with_fds(conn.as_fd(), reply, &[])?;
                false
            }
            "/version" => {
                send_with_fds(conn.as_fd(), "0.1", &[])?;
                false
            }
            "/fin" => {
                send_with_fds(conn.as_fd(), "/fin_ack", &[])?;
                true
            }
            _ => {
                send_with_fds(conn.as_fd(), "/nak", &[])?;
                false
            }
        };
        if done {
            break;
        }
    }
    // A second client would be a second pending connection: count it, never serve it.
    if wait_readable(listener.as_fd(), Duration::ZERO)? {
        seen.connections += 1;
    }
    Ok(seen)
}

// ---- raw socket plumbing of the stand-in -------------------------------------------------------------

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn bind_listen(path: &Path) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments.
    let raw =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: raw is a fresh descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut addr = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    for (d, &s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = s as libc::c_char;
    }
    let len = (size_of::<libc::sa_family_t>() + path.as_os_str().len() + 1) as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_un of at least len bytes.
    cvt(unsafe { libc::bind(sock.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) })?;
    // SAFETY: sock is a bound socket.
    cvt(unsafe { libc::listen(sock.as_raw_fd(), 4) })?;
    Ok(sock)
}

fn wait_readable(fd: BorrowedFd<'_>, limit: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = limit.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: pfd is one valid pollfd.
    let n = cvt(unsafe { libc::poll(&mut pfd, 1, ms) })?;
    Ok(n == 1)
}

fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: listener is a listening socket; null address pointers are allowed.
    let raw = cvt(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: raw is a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn set_rcvtimeo(sock: BorrowedFd<'_>, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: tv is a valid timeval of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn socket_domain(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut domain: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: domain and len are valid for writes of the sizes given.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            std::ptr::from_mut(&mut domain).cast(),
            &mut len,
        )
    })?;
    Ok(domain)
}

#[repr(C, align(8))]
struct Cmsg([u8; 64]);

fn send_with_fds(sock: BorrowedFd<'_>, msg: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr().cast_mut().cast(),
        iov_len: msg.len(),
    };
    let mut cbuf = Cmsg([0; 64]);
    // SAFETY: msghdr is plain old data; all-zero is its empty value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = (fds.len() * size_of::<libc::c_int>()) as u32;
        hdr.msg_control = cbuf.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only does arithmetic.
        hdr.msg_controllen = unsafe { libc::CMSG_SPACE(payload) } as usize;
        // SAFETY: the control buffer holds at least one header.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
        assert!(!cmsg.is_null());
        // SAFETY: CMSG_LEN only does arithmetic.
        let cmsg_len = unsafe { libc::CMSG_LEN(payload) } as usize;
        // SAFETY: cmsg points at an aligned header slot inside cbuf.
        unsafe {
            cmsg.write(libc::cmsghdr {
                cmsg_len,
                cmsg_level: libc::SOL_SOCKET,
                cmsg_type: libc::SCM_RIGHTS,
            })
        };
        // SAFETY: cmsg is a valid header inside cbuf.
        let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<libc::c_int>();
        for (i, fd) in fds.iter().enumerate() {
            // SAFETY: CMSG_SPACE(payload) reserved room for every descriptor after the header.
            unsafe { data.wrapping_add(i).write_unaligned(fd.as_raw_fd()) };
        }
    }
    // SAFETY: hdr points at iov and cbuf, alive for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // A client that already hung up is not the stand-in's failure (the plugin only logs it).
        if e.raw_os_error() != Some(libc::EPIPE) {
            return Err(e);
        }
    }
    Ok(())
}

/// One request and its descriptors; `None` once the client has gone.
fn recv_with_fds(sock: BorrowedFd<'_>) -> io::Result<Option<(String, Vec<OwnedFd>)>> {
    let mut buf = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = Cmsg([0; 64]);
    // SAFETY: msghdr is plain old data; all-zero is its empty value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = cbuf.0.as_mut_ptr().cast();
    hdr.msg_controllen = cbuf.0.len();
    // SAFETY: hdr points at buf and cbuf, writable and alive for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(None);
        }
        return Err(e);
    }
    let mut fds = Vec::new();
    // SAFETY: hdr describes the control buffer recvmsg filled.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !cmsg.is_null() {
        // SAFETY: cmsg lies inside the control buffer.
        let c = unsafe { cmsg.read_unaligned() };
        // SAFETY: CMSG_LEN only does arithmetic.
        let count = (c.cmsg_len - unsafe { libc::CMSG_LEN(0) } as usize) / size_of::<libc::c_int>();
        // SAFETY: cmsg is a valid header; its data follows it.
        let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<libc::c_int>();
        for i in 0..count {
            // SAFETY: the kernel wrote count descriptors after the header.
            let raw = unsafe { data.wrapping_add(i).read_unaligned() };
            // SAFETY: the kernel installed this descriptor for us.
            fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
        }
        // SAFETY: hdr and cmsg describe the same filled buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(&hdr, cmsg) };
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((
        String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
        fds,
    )))
}

/// Whether any descriptor of this process still refers to BPF map `id` (a leak once the stand-in is gone).
fn process_holds_map(id: u32) -> bool {
    let needle = format!("map_id:\t{id}\n");
    std::fs::read_dir("/proc/self/fdinfo")
        .map(|rd| {
            rd.flatten()
                .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|s| s.contains(&needle)))
        })
        .unwrap_or(false)
}

fn short() -> Duration {
    Duration::from_millis(300)
}

// ---- tests ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs root"]
fn handshake_hands_over_a_valid_xskmap() {
    require_root();
    let dir = TempDir::new("ok");
    let server = StandIn::start(&dir.0, "ens1", Script::Plugin);
    let session = PluginSession::connect(&server.path, HOST, dp::DEFAULT_TIMEOUT).expect("connect");
    assert_eq!(session.version().expect("version"), dp::PROTOCOL_VERSION);
    let map = session.xsk_map_fd("ens1").expect("map fd");
    let info = dp::map_info(map.as_fd()).expect("map info");
    assert_eq!(info.map_type, dp::XSKMAP_TYPE);
    assert_eq!(info.max_entries, 4);
    session.fin().expect("fin");
    let seen = server.join();
    assert_eq!(
        info.id, seen.map_id,
        "the client holds the stand-in's map, not a copy"
    );
    assert_eq!(
        seen.requests,
        vec![
            format!("/connect,{HOST}"),
            "/version".into(),
            "/xsk_map_fd,ens1".into(),
            "/fin".into()
        ]
    );
    // The map outlives the handshake: the port keeps using it.
    assert_eq!(dp::map_info(map.as_fd()).expect("still valid").id, info.id);
}

#[test]
#[ignore = "needs root"]
fn host_nak_is_reported() {
    require_root();
    let dir = TempDir::new("hostnak");
    let server = StandIn::start(&dir.0, "ens1", Script::HostNak);
    let err = PluginSession::connect(&server.path, HOST, short()).unwrap_err();
    assert!(
        matches!(&err, DevicePluginError::HostNak { hostname, .. } if hostname == HOST),
        "{err}"
    );
    assert!(err.to_string().contains("pod name"));
    server.join();
}

#[test]
#[ignore = "needs root"]
fn wrong_hostname_gets_host_nak() {
    require_root();
    let dir = TempDir::new("wronghost");
    let server = StandIn::start(&dir.0, "ens1", Script::Plugin);
    let err = PluginSession::connect(&server.path, "some-other-pod", short()).unwrap_err();
    assert!(matches!(err, DevicePluginError::HostNak { .. }), "{err}");
    server.join();
}

#[test]
#[ignore = "needs root"]
fn server_error_and_unexpected_reply_are_distinct() {
    require_root();
    let dir = TempDir::new("error");
    let server = StandIn::start(&dir.0, "ens1", Script::ErrorOnConnect);
    let err = PluginSession::connect(&server.path, HOST, short()).unwrap_err();
    assert!(
        matches!(err, DevicePluginError::ServerError { .. }),
        "{err}"
    );
    server.join();

    let server = StandIn::start(&dir.0, "ens2", Script::NakOnConnect);
    let err = PluginSession::connect(&server.path, HOST, short()).unwrap_err();
    assert!(
        matches!(&err, DevicePluginError::UnexpectedReply { reply, .. } if reply == "/nak"),
        "{err}"
    );
    drop(err);
    // The stand-in keeps serving after /nak; closing our side ends it.
    server.join();
}

#[test]
#[ignore = "needs root"]
fn fd_nak_is_reported() {
    require_root();
    let dir = TempDir::new("fdnak");
    let server = StandIn::start(&dir.0, "ens1", Script::FdNak);
    let session = PluginSession::connect(&server.path, HOST, short()).expect("connect");
    let err = session.xsk_map_fd("ens1").unwrap_err();
    assert!(
        matches!(&err, DevicePluginError::FdNak { netdev, .. } if netdev == "ens1"),
        "{err}"
    );
    // fd_nak is an answer, not a broken exchange: the session still ends cleanly.
    session.fin().expect("fin after fd_nak");
    server.join();
}

#[test]
#[ignore = "needs root"]
fn silent_server_times_out() {
    require_root();
    let dir = TempDir::new("silent");
    let server = StandIn::start(&dir.0, "ens1", Script::Silent);
    let err = PluginSession::connect(&server.path, HOST, Duration::from_millis(200)).unwrap_err();
    match &err {
        DevicePluginError::Timeout {
            request, timeout, ..
        } => {
            assert_eq!(request, &format!("/connect,{HOST}"));
            assert_eq!(*timeout, Duration::from_millis(200));
        }
        other => panic!("expected Timeout, got {other}"),
    }
    let seen = server.join();
    assert_eq!(seen.requests.len(), 1);
}

#[test]
fn missing_socket_is_reported() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("ens1/afxdp.sock");
    let err = PluginSession::connect(&path, HOST, short()).unwrap_err();
    assert!(
        matches!(&err, DevicePluginError::MissingSocket { path: p } if p == &path),
        "{err}"
    );
    let mut sessions = PluginSessions::new(HOST, short());
    let err = sessions.xsk_map("ens1", &MapSource::Uds(path)).unwrap_err();
    assert!(
        matches!(err, DevicePluginError::MissingSocket { .. }),
        "{err}"
    );
    assert!(sessions.is_empty());
}

#[test]
#[ignore = "needs root"]
fn fd_ack_without_fd_is_reported() {
    require_root();
    let dir = TempDir::new("zerofd");
    let server = StandIn::start(&dir.0, "ens1", Script::FdAckNoFd);
    let session = PluginSession::connect(&server.path, HOST, short()).expect("connect");
    let err = session.xsk_map_fd("ens1").unwrap_err();
    assert!(
        matches!(err, DevicePluginError::WrongFdCount { count: 0, .. }),
        "{err}"
    );
    drop(session);
    server.join();
}

#[test]
#[ignore = "needs root"]
fn fd_ack_with_two_fds_is_reported_and_both_closed() {
    require_root();
    let dir = TempDir::new("twofd");
    let server = StandIn::start(&dir.0, "ens1", Script::FdAckTwoFds);
    let session = PluginSession::connect(&server.path, HOST, short()).expect("connect");
    let err = session.xsk_map_fd("ens1").unwrap_err();
    assert!(
        matches!(err, DevicePluginError::WrongFdCount { count: 2, .. }),
        "{err}"
    );
    drop(session);
    let seen = server.join();
    // The stand-in closed its own descriptor when it ended; any left would be ours.
    assert!(
        !process_holds_map(seen.map_id),
        "a received descriptor was leaked"
    );
}

#[test]
#[ignore = "needs root"]
fn map_of_the_wrong_type_is_reported() {
    require_root();
    let dir = TempDir::new("wrongmap");
    let server = StandIn::start(&dir.0, "ens1", Script::WrongMapType);
    let session = PluginSession::connect(&server.path, HOST, short()).expect("connect");
    let err = session.xsk_map_fd("ens1").unwrap_err();
    assert!(
        matches!(err, DevicePluginError::NotXskmap { map_type, .. } if map_type == cne_sys::BPF_MAP_TYPE_ARRAY),
        "{err}"
    );
    drop(session);
    server.join();
}

#[test]
#[ignore = "needs root"]
fn busy_poll_request_carries_the_socket() {
    require_root();
    let dir = TempDir::new("busypoll");
    let server = StandIn::start(&dir.0, "ens1", Script::Plugin);
    let session = PluginSession::connect(&server.path, HOST, short()).expect("connect");
    let _map = session.xsk_map_fd("ens1").expect("map");
    let xsk = af_xdp_socket();
    session
        .config_busy_poll(xsk.as_fd(), 20, 64)
        .expect("busy poll");
    session.fin().expect("fin");
    let seen = server.join();
    assert!(seen
        .requests
        .contains(&"/config_busy_poll,20,64".to_string()));
    assert_eq!(seen.busy_poll_fd_domains, vec![Some(libc::AF_XDP)]);
}

#[test]
#[ignore = "needs root"]
fn busy_poll_nak_is_reported() {
    require_root();
    let dir = TempDir::new("busynak");
    let server = StandIn::start(&dir.0, "ens1", Script::BusyPollNak);
    let session = PluginSession::connect(&server.path, HOST, short()).expect("connect");
    let xsk = af_xdp_socket();
    let err = session.config_busy_poll(xsk.as_fd(), 20, 64).unwrap_err();
    assert!(
        matches!(
            err,
            DevicePluginError::BusyPollNak {
                timeout_us: 20,
                budget: 64,
                ..
            }
        ),
        "{err}"
    );
    session.fin().expect("fin");
    server.join();
}

#[test]
#[ignore = "needs root"]
fn two_lports_on_one_netdev_share_one_connection() {
    require_root();
    let dir = TempDir::new("shared");
    let server = StandIn::start(&dir.0, "ens1", Script::Plugin);
    // A second netdev whose socket is the same server (how one plugin server per pod is mounted).
    std::fs::create_dir_all(dir.0.join("ens2")).expect("dir");
    let alias = dir.0.join("ens2/afxdp.sock");
    std::os::unix::fs::symlink(&server.path, &alias).expect("symlink");

    let mut sessions = PluginSessions::new(HOST, short());
    let src = MapSource::Uds(server.path.clone());
    let q0 = sessions.xsk_map("ens1", &src).expect("lport ens1:0");
    let q1 = sessions.xsk_map("ens1", &src).expect("lport ens1:1");
    let other = sessions
        .xsk_map("ens2", &MapSource::Uds(alias))
        .expect("lport ens2:0");
    assert_eq!(sessions.len(), 1);
    assert_ne!(
        q0.as_raw_fd(),
        q1.as_raw_fd(),
        "each lport owns its descriptor"
    );
    let id0 = dp::map_info(q0.as_fd()).expect("info").id;
    assert_eq!(dp::map_info(q1.as_fd()).expect("info").id, id0);
    assert_eq!(
        dp::map_info(other.as_fd()).expect("info").map_type,
        dp::XSKMAP_TYPE
    );
    // Busy polling for both lports goes over the same connection, after the sockets exist.
    let session = sessions.session(&server.path).expect("same session");
    let (x0, x1) = (af_xdp_socket(), af_xdp_socket());
    session
        .config_busy_poll(x0.as_fd(), 10, 16)
        .expect("busy poll q0");
    session
        .config_busy_poll(x1.as_fd(), 10, 16)
        .expect("busy poll q1");
    drop(session);
    sessions.finish().expect("fin");

    let seen = server.join();
    assert_eq!(seen.connections, 1);
    let map_requests: Vec<&String> = seen
        .requests
        .iter()
        .filter(|r| r.starts_with("/xsk_map_fd"))
        .collect();
    assert_eq!(map_requests, vec!["/xsk_map_fd,ens1", "/xsk_map_fd,ens2"]);
    assert_eq!(seen.busy_poll_fd_domains, vec![Some(libc::AF_XDP); 2]);
    assert_eq!(seen.requests.last().map(String::as_str), Some("/fin"));
    // The one-shot server is gone: a new session cannot be opened.
    let err = sessions
        .session(&dir.0.join("ens1/afxdp.sock"))
        .unwrap_err();
    assert!(
        matches!(err, DevicePluginError::MissingSocket { .. }),
        "{err}"
    );
}

#[test]
#[ignore = "needs root"]
fn session_is_unusable_after_fin() {
    require_root();
    let dir = TempDir::new("afterfin");
    let server = StandIn::start(&dir.0, "ens1", Script::Plugin);
    let session = PluginSession::connect(&server.path, HOST, short()).expect("connect");
    session.fin().expect("fin");
    session.fin().expect("second fin is a no-op");
    let err = session.xsk_map_fd("ens1").unwrap_err();
    assert!(
        matches!(err, DevicePluginError::SessionOver { .. }),
        "{err}"
    );
    server.join();
}

#[test]
#[ignore = "needs root"]
fn pinned_map_on_bpffs_opens_as_xskmap() {
    require_root();
    let dir = TempDir::new("pinned");
    let mnt = BpffsMount::new(&dir.0.join("bpffs"));
    let map = dp::create_xskmap(2).expect("map");
    let pin = mnt.0.join("xsks_map");
    dp::pin_map(map.as_fd(), &pin).expect("pin");
    let layout = dp::PluginLayout {
        dir: dir.0.join("afxdp_dp"),
        legacy_uds: dir.0.join("afxdp.sock"),
    };
    std::fs::create_dir_all(dir.0.join("afxdp_dp/ens1")).expect("dir");
    std::os::unix::fs::symlink(&pin, layout.pinned_map_path("ens1")).expect("symlink");
    let src = layout.detect("ens1").expect("detect");
    assert_eq!(src, MapSource::Pinned(layout.pinned_map_path("ens1")));
    let mut sessions = PluginSessions::new(HOST, short());
    let fd = sessions.xsk_map("ens1", &src).expect("open pinned");
    let got = dp::map_info(fd.as_fd()).expect("info");
    assert_eq!(got.map_type, dp::XSKMAP_TYPE);
    assert_eq!(got.id, dp::map_info(map.as_fd()).expect("info").id);
    assert!(sessions.is_empty(), "pinned mode opens no connection");
}

/// A BPF array map: a valid map descriptor of the wrong type.
fn array_map() -> io::Result<OwnedFd> {
    // SAFETY: the name is NUL-terminated; a null opts pointer means no options.
    let rc = unsafe {
        cne_sys::bpf_map_create(
            cne_sys::BPF_MAP_TYPE_ARRAY,
            c"cne_array".as_ptr(),
            4,
            4,
            1,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    // SAFETY: rc is a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(rc) })
}

fn af_xdp_socket() -> OwnedFd {
    // SAFETY: plain socket(2) call with constant arguments.
    let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0, "socket(AF_XDP): {}", io::Error::last_os_error());
    // SAFETY: raw is a fresh descriptor owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// A bpffs mounted on a temp directory for the test, unmounted on drop.
struct BpffsMount(PathBuf);

impl BpffsMount {
    fn new(at: &Path) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let st = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t bpf failed");
        Self(at.to_path_buf())
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

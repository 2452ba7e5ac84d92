//! Stand-in for the UDS server of the Kubernetes AF_XDP device plugin, for end-to-end tests.
//!
//! The real server lives inside the device plugin and only runs next to a kubelet, which a lab does
//! not have. This stand-in speaks the plugin's side of the protocol as the plugin documents it: one
//! `AF_UNIX` `SOCK_SEQPACKET` listener at `<dir>/<netdev>/afxdp.sock`, exactly one connection served,
//! ASCII requests of at most 64 bytes: `/connect,<hostname>` -> `/host_ok` (or `/host_nak` when the
//! hostname is not the expected pod name), `/xsk_map_fd,<netdev>` -> `/fd_ack` with the XSKMAP
//! descriptor in `SCM_RIGHTS` (or `/fd_nak`), `/config_busy_poll,<timeout_us>,<budget>` with the
//! AF_XDP socket attached -> `/config_busy_poll_ack`, `/version` -> `0.1`, `/fin` -> `/fin_ack`,
//! anything else -> `/nak`. Like the plugin it removes its socket file once the connection ends.
//!
//! The XSKMAP it hands out is the map of an XDP program the test attached (as the plugin attaches
//! its own). Every request is recorded with the descriptors that came with it, so a test can check
//! the exact exchange. Descriptors received with `/config_busy_poll` are recorded (as their
//! `/proc/self/fd` link, `socket:[inode]`) and closed; the real plugin would set the busy-poll socket
//! options on them first, which this crate cannot do without `unsafe` (the accepted connection and
//! received descriptors are raw descriptors in `nix`'s API). The server thread is bounded in time
//! ([`DpStandIn::start`]'s `limit`) and stops on drop, so a broken client never hangs a test.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    accept4, bind, listen, recvmsg, sendmsg, socket, AddressFamily, Backlog, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};

/// File name of the handshake socket in a netdev's directory (as the plugin names it).
pub const SOCKET_FILE: &str = "afxdp.sock";
/// Longest message of the protocol.
const MAX_MSG: usize = 64;
/// Pause between non-blocking receive attempts on the connection.
const RECV_POLL: Duration = Duration::from_millis(5);

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// As the plugin does: `/host_ok` for the expected hostname (`/host_nak` otherwise), the map for
    /// its netdev (`/fd_nak` for any other), busy polling acknowledged when one socket is attached.
    Plugin,
    /// `/fd_nak` to every `/xsk_map_fd` request (the plugin has no map for the netdev).
    FdNak,
}

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The message text.
    pub text: String,
    /// The `/proc/self/fd` link of each descriptor that came with it (`socket:[inode]` for a
    /// socket), in order.
    pub fds: Vec<String>,
}

/// What the stand-in saw over its lifetime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Connections accepted (the plugin serves one), plus any second one left waiting.
    pub connections: usize,
    /// Requests in arrival order.
    pub requests: Vec<Request>,
    /// Replies sent, in order.
    pub replies: Vec<String>,
}

impl Seen {
    /// The request texts alone.
    pub fn texts(&self) -> Vec<&str> {
        self.requests.iter().map(|r| r.text.as_str()).collect()
    }
}

/// A running stand-in server; `Drop` stops it and removes its socket file.
#[derive(Debug)]
pub struct DpStandIn {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Seen>>>,
}

impl DpStandIn {
    /// Binds `<dir>/<netdev>/afxdp.sock` and serves one connection on a thread, answering as
    /// `behaviour` says, handing out `map` for `netdev` and expecting `/connect,<hostname>`. The
    /// thread gives up `limit` after the start.
    pub fn start(
        dir: &Path,
        netdev: &str,
        hostname: &str,
        map: OwnedFd,
        behaviour: Behaviour,
        limit: Duration,
    ) -> Result<DpStandIn> {
        let sock_dir = dir.join(netdev);
        std::fs::create_dir_all(&sock_dir)
            .with_context(|| format!("creating {}", sock_dir.display()))?;
        let path = sock_dir.join(SOCKET_FILE);
        let listener = bind_listen(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server {
            netdev: netdev.to_string(),
            hostname: hostname.to_string(),
            map,
            behaviour,
            deadline: Instant::now() + limit,
            stop: Arc::clone(&stop),
        };
        let file = path.clone();
        let thread = std::thread::Builder::new()
            .name("dp-standin".into())
            .spawn(move || {
                let res = server.serve(&listener);
                // As the plugin: one connection, then the socket file goes away.
                let _ = std::fs::remove_file(&file);
                res
            })
            .context("spawning the stand-in thread")?;
        Ok(DpStandIn {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path clients connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once the server thread has ended (connection served, failed, or time limit reached).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the server thread to end and returns what it saw.
    pub fn join(mut self) -> Result<Seen> {
        let t = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("stand-in already joined"))?;
        t.join().map_err(|_| anyhow!("stand-in thread panicked"))?
    }
}

impl Drop for DpStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The server thread's state.
struct Server {
    netdev: String,
    hostname: String,
    map: OwnedFd,
    behaviour: Behaviour,
    deadline: Instant,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn give_up(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    fn serve(&self, listener: &OwnedFd) -> Result<Seen> {
        let mut seen = Seen::default();
        if !self.wait_for_client(listener)? {
            return Ok(seen);
        }
        let conn = RawSock(
            accept4(
                listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            )
            .context("accept4")?,
        );
        seen.connections = 1;
        let mut host_ok = false;
        while let Some(req) = self.recv(&conn)? {
            let text = req.text.clone();
            let fd_count = req.fds.len();
            seen.requests.push(req);
            let (reply, with_map, done) = self.answer(&text, fd_count, &mut host_ok);
            let fds: Vec<RawFd> = if with_map {
                vec![self.map.as_raw_fd()]
            } else {
                Vec::new()
            };
            send(&conn, reply, &fds)?;
            seen.replies.push(reply.to_string());
            if done {
                break;
            }
        }
        // The plugin serves one connection: a second client would still be waiting in the backlog.
        if poll_readable(listener, 0)? {
            seen.connections += 1;
        }
        Ok(seen)
    }

    /// The reply to `text`, whether the map goes with it, and whether the exchange ends.
    fn answer(
        &self,
        text: &str,
        fd_count: usize,
        host_ok: &mut bool,
    ) -> (&'static str, bool, bool) {
        if let Some(host) = text.strip_prefix("/connect,") {
            if host == self.hostname {
                *host_ok = true;
                return ("/host_ok", false, false);
            }
            return ("/host_nak", false, true);
        }
        if text == "/fin" {
            return ("/fin_ack", false, true);
        }
        if text == "/version" {
            return ("0.1", false, false);
        }
        if !*host_ok {
            return ("/nak", false, false);
        }
        if let Some(netdev) = text.strip_prefix("/xsk_map_fd,") {
            if netdev == self.netdev && self.behaviour == Behaviour::Plugin {
                return ("/fd_ack", true, false);
            }
            return ("/fd_nak", false, false);
        }
        if let Some(args) = text.strip_prefix("/config_busy_poll,") {
            let numbers = args.split(',').map(str::parse::<u32>).collect::<Vec<_>>();
            let ok = fd_count == 1 && numbers.len() == 2 && numbers.iter().all(Result::is_ok);
            return if ok {
                ("/config_busy_poll_ack", false, false)
            } else {
                ("/config_busy_poll_nak", false, false)
            };
        }
        ("/nak", false, false)
    }

    fn wait_for_client(&self, listener: &OwnedFd) -> Result<bool> {
        while !self.give_up() {
            if poll_readable(listener, 50)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The next request; `None` when the client closed or the stand-in gives up.
    fn recv(&self, conn: &RawSock) -> Result<Option<Request>> {
        loop {
            let mut buf = [0u8; MAX_MSG];
            let mut cmsg = nix::cmsg_space!([RawFd; 4]);
            let got = {
                let mut iov = [IoSliceMut::new(&mut buf)];
                match recvmsg::<()>(
                    conn.0,
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(msg) => {
                        let mut fds = Vec::new();
                        for c in msg.cmsgs().context("control messages")? {
                            if let ControlMessageOwned::ScmRights(v) = c {
                                fds.extend(v);
                            }
                        }
                        Some((msg.bytes, fds))
                    }
                    Err(Errno::EAGAIN) => None,
                    Err(e) => return Err(e).context("recvmsg"),
                }
            };
            match got {
                Some((0, fds)) if fds.is_empty() => return Ok(None),
                Some((n, fds)) => {
                    let links = fds.into_iter().map(describe_and_close).collect();
                    return Ok(Some(Request {
                        text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                        fds: links,
                    }));
                }
                None if self.give_up() => return Ok(None),
                None => std::thread::sleep(RECV_POLL),
            }
        }
    }
}

/// A descriptor `nix` returned as a raw number (an accepted connection); closed on drop.
struct RawSock(RawFd);

impl Drop for RawSock {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}

fn bind_listen(path: &Path) -> Result<OwnedFd> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("socket(AF_UNIX, SOCK_SEQPACKET)")?;
    let addr = UnixAddr::new(path).with_context(|| format!("socket path {}", path.display()))?;
    bind(sock.as_raw_fd(), &addr).with_context(|| format!("bind {}", path.display()))?;
    listen(&sock, Backlog::new(4).context("backlog")?)
        .with_context(|| format!("listen {}", path.display()))?;
    Ok(sock)
}

fn poll_readable(fd: &OwnedFd, ms: u16) -> Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::from(ms)).context("poll")?;
    Ok(n > 0)
}

fn send(conn: &RawSock, msg: &str, fds: &[RawFd]) -> Result<()> {
    if msg.len() > MAX_MSG {
        bail!("reply {msg:?} is longer than {MAX_MSG} bytes");
    }
    let iov = [IoSlice::new(msg.as_bytes())];
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    match sendmsg::<()>(conn.0, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
        Ok(_) => Ok(()),
        // A client that already hung up is not the server's failure (the plugin only logs it).
        Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("sendmsg {msg:?}")),
    }
}

/// The `/proc/self/fd` link of a received descriptor, which is then closed.
fn describe_and_close(fd: RawFd) -> String {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    let _ = nix::unistd::close(fd);
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(behaviour: Behaviour) -> Server {
        Server {
            netdev: "ens1".into(),
            hostname: "pod-a".into(),
            map: std::fs::File::open("/dev/null").unwrap().into(),
            behaviour,
            deadline: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn answers_follow_the_plugin_protocol() {
        let s = server(Behaviour::Plugin);
        let mut ok = false;
        assert_eq!(
            s.answer("/xsk_map_fd,ens1", 0, &mut ok),
            ("/nak", false, false)
        );
        assert_eq!(
            s.answer("/connect,pod-b", 0, &mut ok),
            ("/host_nak", false, true)
        );
        assert!(!ok);
        assert_eq!(
            s.answer("/connect,pod-a", 0, &mut ok),
            ("/host_ok", false, false)
        );
        assert!(ok);
        assert_eq!(
            s.answer("/xsk_map_fd,ens1", 0, &mut ok),
            ("/fd_ack", true, false)
        );
        assert_eq!(
            s.answer("/xsk_map_fd,ens2", 0, &mut ok),
            ("/fd_nak", false, false)
        );
        assert_eq!(
            s.answer("/config_busy_poll,20,64", 1, &mut ok).0,
            "/config_busy_poll_ack"
        );
        assert_eq!(
            s.answer("/config_busy_poll,20,64", 0, &mut ok).0,
            "/config_busy_poll_nak"
        );
        assert_eq!(
            s.answer("/config_busy_poll,20", 1, &mut ok).0,
            "/config_busy_poll_nak"
        );
        assert_eq!(s.answer("/version", 0, &mut ok).0, "0.1");
        assert_eq!(s.answer("/bogus", 0, &mut ok).0, "/nak");
        assert_eq!(s.answer("/fin", 0, &mut ok), ("/fin_ack", false, true));
        let s = server(Behaviour::FdNak);
        assert_eq!(s.answer("/xsk_map_fd,ens1", 0, &mut ok).0, "/fd_nak");
    }

    #[test]
    fn socket_file_is_created_and_removed() {
        let dir = std::env::temp_dir().join(format!("lab-dp-standin-{}", std::process::id()));
        let map: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let s = DpStandIn::start(
            &dir,
            "ens1",
            "pod-a",
            map,
            Behaviour::Plugin,
            Duration::from_millis(100),
        )
        .unwrap();
        assert_eq!(s.path(), dir.join("ens1/afxdp.sock"));
        assert!(s.path().exists());
        let path = s.path().to_path_buf();
        let seen = s.join().unwrap();
        assert_eq!(seen, Seen::default(), "nobody connected");
        assert!(!path.exists(), "socket file left after the server ended");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Client side of one request, for the test below: sends `msg`, returns the reply and how many
    /// descriptors came with it (closed here).
    fn ask(sock: &OwnedFd, msg: &str) -> (String, usize) {
        sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(msg.as_bytes())],
            &[],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut buf = [0u8; MAX_MSG];
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(v) = c {
                fds.extend(v);
            }
        }
        let n = msg.bytes;
        for fd in &fds {
            nix::unistd::close(*fd).unwrap();
        }
        (String::from_utf8_lossy(&buf[..n]).into_owned(), fds.len())
    }

    #[test]
    fn serves_one_client_and_records_the_exchange() {
        let dir = std::env::temp_dir().join(format!("lab-dp-standin-x-{}", std::process::id()));
        let map: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let s = DpStandIn::start(
            &dir,
            "ens1",
            "pod-a",
            map,
            Behaviour::Plugin,
            Duration::from_secs(10),
        )
        .unwrap();
        let client = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        nix::sys::socket::connect(client.as_raw_fd(), &UnixAddr::new(s.path()).unwrap()).unwrap();
        assert_eq!(ask(&client, "/connect,pod-a"), ("/host_ok".into(), 0));
        assert_eq!(ask(&client, "/version"), ("0.1".into(), 0));
        assert_eq!(ask(&client, "/xsk_map_fd,ens1"), ("/fd_ack".into(), 1));
        assert_eq!(ask(&client, "/fin"), ("/fin_ack".into(), 0));
        let path = s.path().to_path_buf();
        let seen = s.join().unwrap();
        assert_eq!(seen.connections, 1);
        assert_eq!(
            seen.texts(),
            ["/connect,pod-a", "/version", "/xsk_map_fd,ens1", "/fin"]
        );
        assert_eq!(seen.replies, ["/host_ok", "0.1", "/fd_ack", "/fin_ack"]);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

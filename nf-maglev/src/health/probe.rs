//! One probe: a TCP connect, an HTTP/1.1 request or a UDP request, through the kernel's own stack, bounded
//! by the check's timeout.
//!
//! A probe that takes the clients' path (see [`super::path`]) is marked with `SO_MARK` so a policy rule
//! routes it into the checker's TUN device, and registers its local port first so the packets the
//! kernel writes there can be sent on to the right backend. Answers come back as for any DSR client:
//! from the VIP, straight to this host's address.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};

use crate::health::check::{Check, Probe};
use crate::health::tracker::{Outcome, Verdict};

/// `<asm-generic/errno.h>`: a non-blocking connect is under way.
const EINPROGRESS: i32 = 115;

/// Largest HTTP answer read (head and body); a body check looks at most this far.
pub const MAX_ANSWER: usize = 64 * 1024;

/// Where a probe goes and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The check.
    pub check: Check,
    /// Address and port probed: the VIP's on the data path, else the backend's.
    pub dst: SocketAddr,
    /// Local address to send from (`None`: the kernel's choice).
    pub src: Option<IpAddr>,
    /// The data path to take, when the probe takes the clients' path.
    pub via: Option<super::path::Via>,
}

impl Target {
    /// Where the probe goes and which way, e.g. `198.18.100.1:80 through GRE to 198.18.0.11 (MAC ...)`.
    pub fn route(&self) -> String {
        match &self.via {
            Some(via) => format!("{} {via}", self.dst),
            None => format!("{} (the backend's address)", self.dst),
        }
    }
}

/// Registers a probe's local port with the data path while the probe runs.
pub trait PortRegistry {
    /// From now on, packets of `proto` from local port `port` of this family go by `via`.
    fn register(&self, v6: bool, proto: u8, port: u16, via: &super::path::Via);
    /// The probe is over: the port may go (once its last packets are through).
    fn unregister(&self, v6: bool, proto: u8, port: u16);
}

/// Runs one probe of `t`; `mark` and `reg` are given when it takes the data path.
pub async fn run(
    t: &Target,
    mark: Option<u32>,
    reg: Option<&(dyn PortRegistry + Sync)>,
) -> Outcome {
    let start = Instant::now();
    let limit = t.check.timeout.duration();
    let result = tokio::time::timeout(limit, attempt(t, mark, reg)).await;
    let duration = start.elapsed();
    match result {
        Ok(Ok(())) => Outcome {
            verdict: Verdict::Ok,
            error: None,
            duration,
        },
        Ok(Err((verdict, error))) => Outcome {
            verdict,
            error: Some(error),
            duration,
        },
        Err(_) => Outcome {
            verdict: Verdict::Timeout,
            error: Some(format!("no answer within {}", t.check.timeout)),
            duration,
        },
    }
}

type Failure = (Verdict, String);

fn io_failure(what: &str, e: &io::Error) -> Failure {
    let verdict = match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => Verdict::Refused,
        io::ErrorKind::TimedOut => Verdict::Timeout,
        _ => Verdict::Error,
    };
    (verdict, format!("{what}: {e}"))
}

/// Keeps a port registered until dropped.
struct Registration<'a> {
    reg: &'a (dyn PortRegistry + Sync),
    v6: bool,
    proto: u8,
    port: u16,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.reg.unregister(self.v6, self.proto, self.port);
    }
}

fn bind_addr(t: &Target) -> SocketAddr {
    let ip = t.src.unwrap_or(match t.dst {
        SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    });
    SocketAddr::new(ip, 0)
}

/// Registers the socket's port when the probe takes the data path.
fn register<'a>(
    t: &Target,
    reg: Option<&'a (dyn PortRegistry + Sync)>,
    proto: u8,
    local: io::Result<SocketAddr>,
) -> Result<Option<Registration<'a>>, Failure> {
    let (Some(reg), Some(via)) = (reg, &t.via) else {
        return Ok(None);
    };
    let local = local.map_err(|e| io_failure("local address", &e))?;
    let v6 = local.is_ipv6();
    reg.register(v6, proto, local.port(), via);
    Ok(Some(Registration {
        reg,
        v6,
        proto,
        port: local.port(),
    }))
}

async fn attempt(
    t: &Target,
    mark: Option<u32>,
    reg: Option<&(dyn PortRegistry + Sync)>,
) -> Result<(), Failure> {
    match &t.check.probe {
        Probe::Udp { send, expect } => udp(t, mark, reg, send, expect.as_deref()).await,
        Probe::Tcp => tcp_connect(t, mark, reg).await,
        probe => {
            let socket = match t.dst {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            }
            .map_err(|e| io_failure("socket", &e))?;
            if let Some(m) = mark {
                SockRef::from(&socket)
                    .set_mark(m)
                    .map_err(|e| io_failure("SO_MARK", &e))?;
            }
            // No TIME_WAIT pile-up on the probing host: close with a reset.
            SockRef::from(&socket)
                .set_linger(Some(Duration::ZERO))
                .map_err(|e| io_failure("SO_LINGER", &e))?;
            socket
                .bind(bind_addr(t))
                .map_err(|e| io_failure("bind", &e))?;
            let _registration = register(t, reg, 6, socket.local_addr())?;
            let mut stream = socket
                .connect(t.dst)
                .await
                .map_err(|e| io_failure("connect", &e))?;
            match probe {
                Probe::Http {
                    method,
                    path,
                    host,
                    status,
                    body,
                } => {
                    let host = host.clone().unwrap_or_else(|| match t.dst {
                        SocketAddr::V4(a) => a.ip().to_string(),
                        SocketAddr::V6(a) => format!("[{}]", a.ip()),
                    });
                    let request = format!(
                        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nf-maglev-health\r\n\
                         Accept: */*\r\nConnection: close\r\n\r\n"
                    );
                    stream
                        .write_all(request.as_bytes())
                        .await
                        .map_err(|e| io_failure("sending the request", &e))?;
                    http_answer(&mut stream, status, body.as_deref(), method == "HEAD").await
                }
                _ => Ok(()),
            }
        }
    }
}

/// A TCP connect probe, polled: the socket is never registered with the reactor; its state is read at
/// each tick of the checker's grid ([`crate::health::checker::slot`]) until it is connected or refused
/// (the caller's timeout ends it otherwise). The probes due on one tick are thus started and completed
/// in one wake-up of the thread each, instead of one wake-up per probe and packet: the cheapest probe,
/// and the default. Its duration is measured to one tick (20 ms).
async fn tcp_connect(
    t: &Target,
    mark: Option<u32>,
    reg: Option<&(dyn PortRegistry + Sync)>,
) -> Result<(), Failure> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(t.dst),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(|e| io_failure("socket", &e))?;
    if let Some(m) = mark {
        socket.set_mark(m).map_err(|e| io_failure("SO_MARK", &e))?;
    }
    // No TIME_WAIT pile-up on the probing host: close with a reset.
    socket
        .set_linger(Some(Duration::ZERO))
        .map_err(|e| io_failure("SO_LINGER", &e))?;
    socket
        .bind(&bind_addr(t).into())
        .map_err(|e| io_failure("bind", &e))?;
    let local = socket
        .local_addr()
        .map_err(|e| io_failure("local address", &e))
        .and_then(|a| {
            a.as_socket()
                .ok_or_else(|| (Verdict::Error, "local address: not an IP socket".to_owned()))
        });
    let _registration = register(t, reg, 6, local.map_err(|(_, m)| io::Error::other(m)))?;
    match socket.connect(&t.dst.into()) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(io_failure("connect", &e)),
    }
    loop {
        tokio::time::sleep_until(crate::health::checker::slot(
            tokio::time::Instant::now() + Duration::from_millis(1),
        ))
        .await;
        if let Some(e) = socket
            .take_error()
            .map_err(|e| io_failure("SO_ERROR", &e))?
        {
            return Err(io_failure("connect", &e));
        }
        if socket.peer_addr().is_ok() {
            return Ok(());
        }
    }
}

/// Reads an HTTP/1.x answer and checks its status (and body).
async fn http_answer<R: AsyncReadExt + Unpin>(
    r: &mut R,
    accepted: &[u16],
    want: Option<&str>,
    head: bool,
) -> Result<(), Failure> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let (code, body_at) = loop {
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|e| io_failure("reading the answer", &e))?;
        if n == 0 {
            return Err((
                Verdict::Error,
                format!("connection closed after {} bytes of answer", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(at)) => break (resp.code.unwrap_or(0), at),
            Ok(httparse::Status::Partial) if buf.len() < MAX_ANSWER => {}
            Ok(httparse::Status::Partial) => {
                return Err((Verdict::Error, "answer head over 64 KiB".into()))
            }
            Err(e) => return Err((Verdict::Error, format!("malformed answer: {e}"))),
        }
    };
    let ok = if accepted.is_empty() {
        (200..400).contains(&code)
    } else {
        accepted.contains(&code)
    };
    if !ok {
        return Err((Verdict::BadStatus, format!("status {code}")));
    }
    let Some(want) = want.filter(|_| !head) else {
        return Ok(());
    };
    let found = |b: &[u8]| b.windows(want.len().max(1)).any(|w| w == want.as_bytes());
    loop {
        if found(&buf[body_at..]) {
            return Ok(());
        }
        if buf.len() >= MAX_ANSWER {
            break;
        }
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|e| io_failure("reading the body", &e))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Err((Verdict::BadBody, format!("body lacks {want:?}")))
}

async fn udp(
    t: &Target,
    mark: Option<u32>,
    reg: Option<&(dyn PortRegistry + Sync)>,
    send: &[u8],
    expect: Option<&[u8]>,
) -> Result<(), Failure> {
    let socket = UdpSocket::bind(bind_addr(t))
        .await
        .map_err(|e| io_failure("bind", &e))?;
    if let Some(m) = mark {
        SockRef::from(&socket)
            .set_mark(m)
            .map_err(|e| io_failure("SO_MARK", &e))?;
    }
    let _registration = register(t, reg, 17, socket.local_addr())?;
    socket
        .connect(t.dst)
        .await
        .map_err(|e| io_failure("connect", &e))?;
    socket
        .send(send)
        .await
        .map_err(|e| io_failure("send", &e))?;
    let mut buf = vec![0u8; 65536];
    let n = socket
        .recv(&mut buf)
        .await
        .map_err(|e| io_failure("receive", &e))?;
    let reply = &buf[..n];
    match expect {
        Some(want) if !reply.windows(want.len().max(1)).any(|w| w == want) => Err((
            Verdict::BadBody,
            format!("reply lacks {:?}", String::from_utf8_lossy(want)),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }
    use crate::health::check::Seconds;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn target(probe: Probe, port: u16, timeout_ms: u32) -> Target {
        Target {
            check: Check {
                probe,
                port,
                interval: Seconds(1000),
                timeout: Seconds(timeout_ms),
                rise: 1,
                fall: 1,
            },
            dst: SocketAddr::new("127.0.0.1".parse().expect("ip"), port),
            src: None,
            via: None,
        }
    }

    fn http(status: Vec<u16>, body: Option<&str>) -> Probe {
        Probe::Http {
            method: "GET".into(),
            path: "/health".into(),
            host: Some("web.example".into()),
            status,
            body: body.map(str::to_owned),
        }
    }

    /// Serves one connection with `answer` (after reading the request) and returns the request.
    fn serve_once(answer: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut req = vec![0u8; 4096];
            let n = s.read(&mut req).expect("read");
            let _ = s.write_all(answer);
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        (port, h)
    }

    #[test]
    fn tcp_connect_passes_and_a_closed_port_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let o = block_on(run(&target(Probe::Tcp, port, 1000), None, None));
        assert_eq!(o.verdict, Verdict::Ok, "{o:?}");
        drop(l);
        let o = block_on(run(&target(Probe::Tcp, port, 1000), None, None));
        assert_eq!(o.verdict, Verdict::Refused, "{o:?}");
    }

    #[test]
    fn http_checks_status_and_body_and_sends_host() {
        let (port, h) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nall ok\n");
        let o = block_on(run(
            &target(http(vec![], Some("ok")), port, 1000),
            None,
            None,
        ));
        assert_eq!(o.verdict, Verdict::Ok, "{o:?}");
        let req = h.join().expect("server");
        assert!(req.starts_with("GET /health HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nHost: web.example\r\n"), "{req}");

        let (port, _h) =
            serve_once(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
        let o = block_on(run(&target(http(vec![], None), port, 1000), None, None));
        assert_eq!(o.verdict, Verdict::BadStatus, "{o:?}");
        assert_eq!(o.error.as_deref(), Some("status 500"));

        let (port, _h) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n");
        let o = block_on(run(&target(http(vec![200], None), port, 1000), None, None));
        assert_eq!(o.verdict, Verdict::BadStatus, "204 not in [200]");

        let (port, _h) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnope");
        let o = block_on(run(
            &target(http(vec![], Some("ok")), port, 1000),
            None,
            None,
        ));
        assert_eq!(o.verdict, Verdict::BadBody, "{o:?}");

        let (port, _h) = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n");
        let o = block_on(run(&target(http(vec![], None), port, 1000), None, None));
        assert_eq!(o.verdict, Verdict::Error, "{o:?}");
    }

    #[test]
    fn a_silent_server_times_out_within_the_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let o = block_on(run(&target(http(vec![], None), port, 200), None, None));
        assert_eq!(o.verdict, Verdict::Timeout, "{o:?}");
        assert!(
            o.duration >= Duration::from_millis(200) && o.duration < Duration::from_millis(1000),
            "{:?}",
            o.duration
        );
        drop(l);
    }

    #[test]
    fn udp_expects_a_reply_with_the_text() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = s.local_addr().expect("addr").port();
        let h = std::thread::spawn(move || {
            let mut b = [0u8; 100];
            for reply in [&b"pong"[..], b"nope"] {
                let (n, from) = s.recv_from(&mut b).expect("recv");
                assert_eq!(&b[..n], b"ping");
                s.send_to(reply, from).expect("send");
            }
        });
        let probe = Probe::Udp {
            send: b"ping".to_vec(),
            expect: Some(b"pong".to_vec()),
        };
        let t = target(probe, port, 1000);
        assert_eq!(block_on(run(&t, None, None)).verdict, Verdict::Ok);
        assert_eq!(block_on(run(&t, None, None)).verdict, Verdict::BadBody);
        h.join().expect("server");
    }
}

//! The admin endpoint's HTTP server ([`nf_maglev::http`]) against hostile clients, in process, with a
//! stand-in for the control thread: slow clients, held connections, oversized headers and bodies,
//! stalled bodies, HTTP/2 and malformed request lines, bearer tokens, the connection limit and the
//! write timeout. Needs no root: everything runs on loopback. Timing bounds are generous (seconds); the
//! latencies are printed, not asserted tightly.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nf_maglev::auth::Token;
use nf_maglev::http::{self, Answer, Limits, Request, Responder, Response, Server, Settings};

/// Every scrape of these tests must answer within this.
const SCRAPE_BOUND: Duration = Duration::from_secs(2);

/// A stand-in for nf-maglev's front: `/metrics`, `/healthz` and `/big` answered at once, `/hold` kept
/// until released, everything else answered by a "control thread" that echoes it.
struct Fake {
    metrics: String,
    big: String,
    held: Mutex<Vec<Responder>>,
    control: crossbeam_channel::Sender<(Request, Responder)>,
}

impl http::Service for Fake {
    fn call(&self, req: Request) -> Answer {
        match req.target.as_str() {
            "/metrics" => Answer::Now(Response::new(200, "text/plain", self.metrics.clone())),
            "/healthz" => Answer::Now(Response::new(200, "text/plain", "ok\n")),
            "/big" => Answer::Now(Response::new(200, "text/plain", self.big.clone())),
            _ => {
                let (responder, waiter) = http::reply_channel();
                if req.target == "/hold" {
                    self.held.lock().expect("lock").push(responder);
                } else {
                    let _ = self.control.send((req, responder));
                }
                Answer::Later(waiter)
            }
        }
    }
}

struct Harness {
    server: Server,
    fake: Arc<Fake>,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Harness {
    fn start(limits: Limits, token: Option<Token>) -> Self {
        Self::with_big(limits, token, 0)
    }

    fn with_big(limits: Limits, token: Option<Token>, big: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<(Request, Responder)>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        {
            let seen = Arc::clone(&seen);
            thread::spawn(move || {
                for (req, responder) in rx {
                    let body = format!("{} {} {}\n", req.method, req.target, req.body.len());
                    seen.lock().expect("lock").push(req);
                    responder.send(Response::new(200, "text/plain", body));
                }
            });
        }
        let metrics: String = (0..1000)
            .map(|i| format!("nf_maglev_test_series{{n=\"{i}\"}} {i}\n"))
            .collect();
        let fake = Arc::new(Fake {
            metrics,
            big: "x".repeat(big),
            held: Mutex::new(Vec::new()),
            control: tx,
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = Server::start(
            "admin-test",
            listener,
            Settings {
                limits,
                token,
                ..Settings::default()
            },
            Arc::clone(&fake) as Arc<dyn http::Service>,
        )
        .expect("start");
        Self { server, fake, seen }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

/// One of the server's counters, by its report name.
fn counter(h: &Harness, name: &str) -> u64 {
    h.server
        .stats()
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// Reads a whole response (until the server closes); returns its status, head and body.
fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Sends `raw` on a new connection and reads the response.
fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String, String) {
    let mut s = connect(addr);
    s.write_all(raw).expect("send");
    read_response(&mut s)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    exchange(
        addr,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// A GET answered within [`SCRAPE_BOUND`]; returns its latency.
fn scrape(addr: SocketAddr, path: &str) -> Duration {
    let start = Instant::now();
    let (status, head, body) = request(addr, "GET", path, "", "");
    let took = start.elapsed();
    assert_eq!(status, 200, "{path}: {head}");
    assert!(!body.is_empty());
    assert!(took < SCRAPE_BOUND, "{path} took {took:?}");
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

fn short_limits() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(3),
        write_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

#[test]
fn scrapes_answer_while_100_clients_trickle_at_one_byte_per_second() {
    let h = Harness::start(short_limits(), None);
    let addr = h.addr();
    // 50 clients send a request head one byte a second, 50 send a complete head and then a body
    // of 2000 bytes one byte a second.
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n\r\n";
    let mut slow: Vec<(TcpStream, Vec<u8>, usize)> = Vec::new();
    for i in 0..100 {
        let mut s = connect(addr);
        if i % 2 == 0 {
            slow.push((s, head.to_vec(), 0));
        } else {
            s.write_all(b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
                .expect("head");
            slow.push((s, vec![b'a'; 2000], 0));
        }
    }
    let slow = Arc::new(Mutex::new(slow));
    let trickling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let trickle = {
        let (slow, trickling) = (Arc::clone(&slow), Arc::clone(&trickling));
        thread::spawn(move || {
            while trickling.load(std::sync::atomic::Ordering::Relaxed) {
                for (s, bytes, sent) in slow.lock().expect("lock").iter_mut() {
                    if *sent < bytes.len() && s.write_all(&bytes[*sent..*sent + 1]).is_ok() {
                        *sent += 1;
                    }
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    let mut lat: Vec<Duration> = (0..50)
        .map(|_| {
            let t = scrape(addr, "/metrics");
            thread::sleep(Duration::from_millis(20));
            t
        })
        .collect();
    lat.sort();
    eprintln!(
        "50 scrapes of /metrics with 100 clients trickling 1 byte/s: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    // The slow clients are cut off: heads after the header timeout (closed without a reply), bodies
    // after the body timeout (408).
    trickling.store(false, std::sync::atomic::Ordering::Relaxed);
    trickle.join().expect("trickle thread");
    let slow = std::mem::take(&mut *slow.lock().expect("lock"));
    let start = Instant::now();
    for (i, (mut s, _, _)) in slow.into_iter().enumerate() {
        let (status, head, _) = read_response(&mut s);
        let want = if i % 2 == 0 { 0 } else { 408 };
        assert_eq!(status, want, "slow client {i}: {head}");
    }
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(
        h.seen.lock().expect("lock").is_empty(),
        "no incomplete request reached the control thread"
    );
}

#[test]
fn ten_thousand_held_connections_cost_bounded_memory() {
    let h = Harness::start(Limits::default(), None);
    let addr = h.addr();
    // Our end of each connection costs a descriptor too; the server holds at most 512.
    let files = lab::raise_open_files();
    let n = 10_000.min(files.saturating_sub(1024));
    if n < 10_000 {
        eprintln!("open-file limit {files}: holding {n} connections");
    }
    let before = rss();
    let mut held = Vec::with_capacity(n as usize);
    let t0 = Instant::now();
    for i in 0..n {
        match TcpStream::connect(addr) {
            Ok(s) => held.push(s),
            Err(e) => panic!("connection {i}: {e}"),
        }
    }
    let connecting = t0.elapsed();
    // Half of them start a request and stop.
    for s in held.iter_mut().step_by(2) {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    }
    let latency = scrape(addr, "/healthz");
    let after = rss();
    let stats = h.server.stats();
    let (accepted, evicted) = (
        stats.accepted.load(std::sync::atomic::Ordering::Relaxed),
        stats.evicted.load(std::sync::atomic::Ordering::Relaxed),
    );
    eprintln!(
        "{n} held connections (opened in {connecting:?}): RSS {} -> {} MiB (whole test process), \
         {accepted} accepted, {evicted} evicted, /healthz answered in {latency:?}",
        before >> 20,
        after >> 20
    );
    assert!(
        after.saturating_sub(before) < 200 << 20,
        "RSS grew {before} -> {after}"
    );
    assert!(evicted >= n.saturating_sub(512), "{evicted}");
    drop(held);
    scrape(addr, "/metrics");
}

#[test]
fn oversized_headers_get_431_and_cost_no_memory() {
    let h = Harness::start(Limits::default(), None);
    let addr = h.addr();
    // One 16 MiB header line.
    let mut s = connect(addr);
    let writer = {
        let mut w = s.try_clone().expect("clone");
        thread::spawn(move || {
            let _ = w.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
            let chunk = vec![b'a'; 64 * 1024];
            for _ in 0..256 {
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = w.write_all(b"\r\n\r\n");
        })
    };
    let (status, head, _) = read_response(&mut s);
    assert_eq!(status, 431, "{head}");
    writer.join().expect("writer");

    // Four clients sending 64 MiB of header each, never ending it.
    let before = rss();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut s = connect(addr);
                let _ = s.write_all(b"GET / HTTP/1.1\r\nX-Endless: ");
                let chunk = vec![b'b'; 64 * 1024];
                let mut sent = 0usize;
                for _ in 0..1024 {
                    match s.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                }
                let (status, _, _) = read_response(&mut s);
                (sent, status)
            })
        })
        .collect();
    for w in writers {
        let (sent, status) = w.join().expect("writer");
        assert!(status == 431 || status == 0, "status {status}");
        assert!(sent < 64 << 20, "the server read all {sent} bytes");
    }
    let after = rss();
    eprintln!(
        "4 x 64 MiB unterminated headers: RSS {} -> {} MiB (whole test process)",
        before >> 20,
        after >> 20
    );
    assert!(
        after.saturating_sub(before) < 32 << 20,
        "RSS grew {before} -> {after}"
    );
    scrape(addr, "/healthz");
}

#[test]
fn bodies_over_the_limit_get_413() {
    let h = Harness::start(Limits::default(), None);
    let addr = h.addr();
    let (status, head, _) = exchange(
        addr,
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    );
    assert_eq!(status, 413, "declared length: {head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // A chunked body is cut at the limit.
    let mut raw = b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        raw.extend_from_slice(b"1000\r\n");
        raw.extend_from_slice(&[b'c'; 0x1000]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let (status, head, _) = exchange(addr, &raw);
    assert_eq!(status, 413, "chunked: {head}");
    assert_eq!(counter(&h, "body_too_large"), 2);
    // 64 KiB exactly is accepted and reaches the control thread.
    let body = "d".repeat(64 * 1024);
    let (status, _, text) = request(addr, "POST", "/api/x", "", &body);
    assert_eq!((status, text.as_str()), (200, "POST /api/x 65536\n"));
    assert_eq!(h.seen.lock().expect("lock").len(), 1);
    scrape(addr, "/healthz");
}

#[test]
fn a_stalled_body_holds_up_nothing() {
    let h = Harness::start(short_limits(), None);
    let addr = h.addr();
    let mut stalled = connect(addr);
    stalled
        .write_all(b"POST /api/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        .expect("head");
    thread::sleep(Duration::from_millis(200));
    scrape(addr, "/metrics");
    scrape(addr, "/healthz");
    let start = Instant::now();
    let (status, _, body) = request(addr, "PUT", "/api/vips/web/backends/a/weight", "", "{}");
    assert_eq!(
        (status, body.as_str()),
        (200, "PUT /api/vips/web/backends/a/weight 2\n")
    );
    assert!(start.elapsed() < SCRAPE_BOUND);
    // The stalled request never reached the control thread and is cut off after the body timeout.
    let (status, head, _) = read_response(&mut stalled);
    assert_eq!(status, 408, "{head}");
    assert_eq!(counter(&h, "body_timeout"), 1);
    let seen = h.seen.lock().expect("lock");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "PUT");
}

#[test]
fn http2_gets_505_and_malformed_request_lines_400() {
    let h = Harness::start(Limits::default(), None);
    let addr = h.addr();
    // The HTTP/2 connection preface and an empty SETTINGS frame, as a prior-knowledge client sends.
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let (status, head, body) = exchange(addr, &preface);
    assert_eq!(status, 505, "{head}");
    assert!(body.contains("HTTP/1.1 only"), "{body}");
    let (status, head, _) = exchange(addr, b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n");
    assert_eq!(status, 505, "{head}");
    let (status, head, _) = exchange(addr, b"GET /healthz HTTP/3\r\n\r\n");
    assert_eq!(status, 505, "{head}");
    assert_eq!(counter(&h, "unsupported_version"), 3);
    for bad in [
        &b"garbage\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1 extra\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
    ] {
        let (status, head, _) = exchange(addr, bad);
        assert_eq!(status, 400, "{:?}: {head}", String::from_utf8_lossy(bad));
    }
    // HTTP/1.0 is still served.
    let (status, _, body) = exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(h.seen.lock().expect("lock").is_empty());
}

#[test]
fn changes_need_the_bearer_token() {
    let token = Token::new("0123456789abcdef0123456789abcdef").expect("token");
    let h = Harness::start(Limits::default(), Some(token));
    let addr = h.addr();
    let path = "/api/vips/web/backends";
    let body = r#"{"name": "evil", "addr": "198.18.9.9", "weight": 1000000}"#;
    for auth in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: Bearer 0123456789abcdef0123456789abcdeX\r\n",
        "Authorization: Basic 0123456789abcdef0123456789abcdef\r\n",
    ] {
        let (status, head, text) = request(addr, "POST", path, auth, body);
        assert_eq!(status, 401, "{auth:?}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
        assert!(text.contains("Authorization: Bearer"), "{text}");
    }
    assert!(
        h.seen.lock().expect("lock").is_empty(),
        "no unauthorised change reached the control thread"
    );
    assert_eq!(counter(&h, "unauthorized"), 4);
    // Reads need no token.
    scrape(addr, "/metrics");
    let (status, _, _) = request(addr, "GET", "/api/state", "", "");
    assert_eq!(status, 200);
    let (status, _, text) = request(
        addr,
        "POST",
        path,
        "Authorization: Bearer 0123456789abcdef0123456789abcdef\r\n",
        body,
    );
    assert_eq!(
        (status, text.as_str()),
        (200, "POST /api/vips/web/backends 57\n")
    );
    let seen = h.seen.lock().expect("lock");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[1].method, "POST");
}

#[test]
fn at_the_limit_idle_connections_make_room_and_busy_ones_are_kept() {
    let limits = Limits {
        max_connections: 4,
        ..Limits::default()
    };
    let h = Harness::start(limits, None);
    let addr = h.addr();
    // Four idle connections: a fifth client evicts the oldest, and is answered.
    let idle: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    thread::sleep(Duration::from_millis(100));
    scrape(addr, "/healthz");
    drop(idle);
    thread::sleep(Duration::from_millis(100));
    // Four requests being answered (held by the control side): a fifth connection is refused at once
    // with 503, and the four are answered when released.
    let busy: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("send");
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.fake.held.lock().expect("lock").len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the held requests did not arrive"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    let (status, head, _) = request(addr, "GET", "/healthz", "", "");
    assert_eq!(status, 503, "{head}");
    assert!(start.elapsed() < SCRAPE_BOUND);
    assert_eq!(
        h.server
            .stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    for r in h.fake.held.lock().expect("lock").drain(..) {
        r.send(Response::new(200, "text/plain", "released\n"));
    }
    for mut s in busy {
        let (status, _, body) = read_response(&mut s);
        assert_eq!((status, body.as_str()), (200, "released\n"));
    }
    scrape(addr, "/healthz");
}

#[test]
fn a_client_that_does_not_read_is_cut_off_by_the_write_timeout() {
    // 32 MiB does not fit in the socket buffers, so the server's writes stop making progress.
    let h = Harness::with_big(short_limits(), None, 32 << 20);
    let addr = h.addr();
    let mut s = connect(addr);
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    thread::sleep(Duration::from_secs(3));
    // Now read: the server gave up after 1 s without progress, so far less than 32 MiB arrives.
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.len() < 32 << 20,
        "the whole response arrived ({} bytes)",
        got.len()
    );
    eprintln!(
        "a client that did not read got {} of {} bytes",
        got.len(),
        32 << 20
    );
    scrape(addr, "/healthz");
}

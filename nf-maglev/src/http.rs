//! The HTTP server of the admin API and the metrics endpoint, built to face untrusted clients.
//!
//! It runs hyper (HTTP/1.1 only) on a single-threaded tokio runtime on its own thread, so any number of
//! connections costs no thread and no worker or control thread ever touches it. A [`Service`] sees only
//! complete requests: the head and the body are read here, under these bounds ([`Limits`]):
//!
//! - **connections**: at most `max_connections` at once. When a new one arrives at the limit, the
//!   oldest connection that is not being answered (one still sending its request, or idle between
//!   requests) is closed to make room, so holding connections open cannot lock out a scraper: the
//!   newest client always gets its turn. Only when every connection is being answered is the new one
//!   refused (a `503` written without waiting, then closed). Running out of file descriptors in
//!   `accept` closes idle connections the same way; [`Limits::within_open_files`] keeps the limit
//!   below the process's open-file limit in the first place.
//! - **head**: the request line and headers must arrive within `header_timeout` (for the request line,
//!   then again for the headers; also between requests of a kept-alive connection) and fit in
//!   `max_header_bytes`, or the connection is closed, with `431` when they are too large.
//! - **version**: a request line of HTTP/2 or later, the HTTP/2 connection preface
//!   (`PRI * HTTP/2.0`) included, gets `505`; a malformed request line gets `400` (from hyper).
//! - **body**: a declared `Content-Length` over `max_body_bytes` gets `413` before anything is read;
//!   a chunked body is cut at the same size (`413`); the whole body must arrive within `body_timeout`
//!   (`408`). These replies close the connection.
//! - **writes**: a write that makes no progress for `write_timeout` closes the connection.
//! - **changes**: with a [`Token`], every request but `GET` and `HEAD` must carry
//!   `Authorization: Bearer <token>`, checked before its body is read; `401` with
//!   `WWW-Authenticate: Bearer` otherwise.
//! - **answers**: a [`Service`] answers at once ([`Answer::Now`]) or hands the request to another
//!   thread and returns a [`Waiter`] ([`Answer::Later`]); a reply that does not come within
//!   `reply_timeout` becomes a `503`, as does one whose [`Responder`] is dropped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{timeout, Sleep};

use crate::auth::Token;

/// The bounds the server enforces. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Request line and headers, in bytes (at least 8192: hyper's smallest read buffer).
    pub max_header_bytes: usize,
    /// Request body, in bytes.
    pub max_body_bytes: usize,
    /// Time to receive the request line, and again the headers.
    pub header_timeout: Duration,
    /// Time to receive the whole body.
    pub body_timeout: Duration,
    /// Time a write may make no progress.
    pub write_timeout: Duration,
    /// Time to wait for an [`Answer::Later`] reply.
    pub reply_timeout: Duration,
}

/// Connections closed at once when `accept` finds no free descriptor.
const EVICT_BATCH: u64 = 16;

/// Listen backlog of the server's socket.
const BACKLOG: i32 = 1024;

/// Default of [`Limits::max_connections`].
pub const MAX_CONNECTIONS: usize = 512;
/// Default of [`Limits::max_header_bytes`].
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default of [`Limits::max_body_bytes`].
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Default of [`Limits::header_timeout`].
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`Limits::body_timeout`].
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Limits::write_timeout`].
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Limits::reply_timeout`].
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_header_bytes: MAX_HEADER_BYTES,
            max_body_bytes: MAX_BODY_BYTES,
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            reply_timeout: REPLY_TIMEOUT,
        }
    }
}

/// Descriptors left to the rest of the process before the admin server gets half of the remainder.
const RESERVED_FILES: u64 = 64;

impl Limits {
    /// These limits with `max_connections` lowered, if needed, to half of the descriptors a process
    /// with this soft `RLIMIT_NOFILE` may open beyond a reserve of 64, so held connections can never
    /// take the descriptors a reload or a worker needs.
    pub fn within_open_files(mut self, soft_limit: u64) -> Self {
        let room = usize::try_from(soft_limit.saturating_sub(RESERVED_FILES) / 2)
            .unwrap_or(usize::MAX)
            .max(1);
        self.max_connections = self.max_connections.min(room);
        self
    }
}

/// The soft limit on open files of this process, from `/proc/self/limits` (`None` when unlimited or
/// unknown).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// The body (at most [`Limits::max_body_bytes`]).
    pub body: Vec<u8>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
    /// Further headers.
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Response {
    /// A response without further headers.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// An error in the admin API's format, `{"error": "message"}`.
    pub fn error(status: u16, message: &str) -> Self {
        Self::new(
            status,
            "application/json",
            format!("{:#}\n", serde_json::json!({ "error": message })),
        )
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Closes the connection after this response.
    fn closing(self) -> Self {
        self.with_header("connection", "close")
    }
}

/// The sending half of a reply to an [`Answer::Later`] request.
#[derive(Debug)]
pub struct Responder(oneshot::Sender<Response>);

impl Responder {
    /// Sends the reply (nothing happens if the client is gone).
    pub fn send(self, response: Response) {
        let _ = self.0.send(response);
    }
}

/// The receiving half, returned in [`Answer::Later`].
#[derive(Debug)]
pub struct Waiter(oneshot::Receiver<Response>);

/// A reply channel: the [`Responder`] goes with the request to the thread that answers it.
pub fn reply_channel() -> (Responder, Waiter) {
    let (tx, rx) = oneshot::channel();
    (Responder(tx), Waiter(rx))
}

/// What a [`Service`] makes of a request.
#[derive(Debug)]
pub enum Answer {
    /// The response.
    Now(Response),
    /// The response will come through the [`Responder`] of this [`Waiter`].
    Later(Waiter),
}

/// Answers complete requests. Runs on the server thread: it must not block.
pub trait Service: Send + Sync + 'static {
    /// Answers `request`.
    fn call(&self, request: Request) -> Answer;
}

/// What the server is configured with.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Bounds.
    pub limits: Limits,
    /// When set, changes (methods other than `GET` and `HEAD`) must carry it.
    pub token: Option<Token>,
    /// Where the server counts its decisions (shared with whoever reports them).
    pub stats: Arc<Stats>,
}

/// Counters of the server's own decisions.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// Connections refused because every slot was answering a request.
    pub refused: AtomicU64,
    /// Changes refused for a missing or wrong token (401).
    pub unauthorized: AtomicU64,
    /// Bodies over the limit (413).
    pub body_too_large: AtomicU64,
    /// Bodies that did not arrive in time (408).
    pub body_timeout: AtomicU64,
    /// Connections speaking HTTP/2 or later (505).
    pub unsupported_version: AtomicU64,
}

impl Stats {
    /// `(name, value)` of every counter, for reports.
    pub fn snapshot(&self) -> [(&'static str, u64); 7] {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("accepted", v(&self.accepted)),
            ("evicted", v(&self.evicted)),
            ("refused", v(&self.refused)),
            ("unauthorized", v(&self.unauthorized)),
            ("body_too_large", v(&self.body_too_large)),
            ("body_timeout", v(&self.body_timeout)),
            ("unsupported_version", v(&self.unsupported_version)),
        ]
    }
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Open connections, oldest first; removing an entry closes its connection.
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Entry>,
}

struct Entry {
    /// Dropping it ends the connection's task.
    _cancel: oneshot::Sender<()>,
    /// Set while a request of the connection is being answered.
    busy: Arc<AtomicBool>,
}

impl Table {
    /// Closes the oldest connection not being answered. Returns whether there was one.
    fn evict_idle(&mut self) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, e)| !e.busy.load(Ordering::Relaxed))
            .map(|(&id, _)| id);
        victim.is_some_and(|id| self.open.remove(&id).is_some())
    }
}

struct Shared {
    settings: Settings,
    service: Arc<dyn Service>,
    table: Mutex<Table>,
    stats: Arc<Stats>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent whatever panicked while holding it.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes a connection from the table when its task ends.
struct ConnectionGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.table().open.remove(&self.id);
    }
}

/// Clears a connection's busy flag when its answer is ready (or abandoned).
struct Busy(Arc<AtomicBool>);

impl Busy {
    fn set(flag: &Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::Relaxed);
        Self(Arc::clone(flag))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// A running server; stopped when dropped.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    stats: Arc<Stats>,
}

impl Server {
    /// Serves `listener` on a new thread named `name`, answering with `service`.
    pub fn start(
        name: &str,
        listener: std::net::TcpListener,
        settings: Settings,
        service: Arc<dyn Service>,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        // Linux takes a second listen() as a new backlog: room for bursts of connections while the
        // accept loop catches up (the standard library's 128 makes the kernel drop SYNs sooner).
        socket2::SockRef::from(&listener).listen(BACKLOG)?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let stats = Arc::clone(&settings.stats);
        let shared = Arc::new(Shared {
            settings,
            service,
            table: Mutex::new(Table::default()),
            stats: Arc::clone(&stats),
        });
        let (stop, stopped) = oneshot::channel();
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, shared, stopped));
                // Dropping the runtime drops every connection's task, closing its socket.
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            stats,
        })
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops accepting, closes every connection and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the admin server thread panicked");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether an `accept` error means this process is out of descriptors or memory.
fn out_of_resources(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _peer)) => admit(&shared, stream),
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    log::warn!("admin server: accept: {e}");
                    last_warning = Some(Instant::now());
                }
                if !out_of_resources(&e) {
                    // A connection that failed before we took it (ECONNABORTED and the like).
                    continue;
                }
                // Free descriptors the way the connection limit does, a few at a time.
                let mut freed = 0;
                {
                    let mut table = shared.table();
                    while freed < EVICT_BATCH && table.evict_idle() {
                        freed += 1;
                    }
                }
                shared.stats.evicted.fetch_add(freed, Ordering::Relaxed);
                if freed > 0 {
                    // The evicted connections' tasks run first and close their sockets.
                    tokio::task::yield_now().await;
                } else {
                    tokio::select! {
                        _ = &mut stop => return,
                        () = tokio::time::sleep(Duration::from_millis(10)) => {}
                    }
                }
            }
        }
    }
}

/// Takes a new connection into the table (making room if needed) and spawns its task.
fn admit(shared: &Arc<Shared>, stream: TcpStream) {
    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let (cancel, cancelled) = oneshot::channel::<()>();
    let busy = Arc::new(AtomicBool::new(false));
    let id = {
        let mut table = shared.table();
        if table.open.len() >= shared.settings.limits.max_connections {
            if table.evict_idle() {
                shared.stats.evicted.fetch_add(1, Ordering::Relaxed);
            } else {
                drop(table);
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                refuse(stream);
                return;
            }
        }
        let id = table.next;
        table.next += 1;
        table.open.insert(
            id,
            Entry {
                _cancel: cancel,
                busy: Arc::clone(&busy),
            },
        );
        id
    };
    let guard = ConnectionGuard {
        shared: Arc::clone(shared),
        id,
    };
    tokio::spawn(async move {
        let shared = Arc::clone(&guard.shared);
        tokio::select! {
            () = serve(shared, stream, busy) => {}
            _ = cancelled => {}
        }
        drop(guard);
    });
}

/// Answers a connection over the limit with a 503 if the socket takes it at once, and closes it.
fn refuse(stream: TcpStream) {
    let bytes = raw_response(&Response::error(
        503,
        "too many admin connections are being answered; try again",
    ));
    let _ = stream.try_write(&bytes);
}

/// A response written by hand, for connections hyper never sees.
fn raw_response(r: &Response) -> Vec<u8> {
    let reason = StatusCode::from_u16(r.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        r.status,
        r.content_type,
        r.body.len(),
        r.body
    )
    .into_bytes()
}

/// What the first line of a connection says.
enum FirstLine {
    /// The client closed the connection before sending anything.
    Closed,
    /// HTTP/1 or not a request line at all (hyper answers): the bytes read so far.
    Http1(Vec<u8>),
    /// A request line of a version we do not speak, `HTTP/2.0` preface included.
    Unsupported,
}

/// Reads until the end of the first line (or `max` bytes) and looks at its version.
async fn first_line(stream: &mut TcpStream, max: usize) -> io::Result<FirstLine> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(if buf.is_empty() {
                FirstLine::Closed
            } else {
                FirstLine::Http1(buf)
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            return Ok(if unsupported_version(&buf[..end]) {
                FirstLine::Unsupported
            } else {
                FirstLine::Http1(buf)
            });
        }
        if buf.len() >= max {
            return Ok(FirstLine::Http1(buf));
        }
    }
}

/// Whether a request line ends in `HTTP/<major>[.<minor>]` with a major version of 2 or more.
fn unsupported_version(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(version) = line.rsplit(|&b| b == b' ').next() else {
        return false;
    };
    let Some(number) = version.strip_prefix(b"HTTP/") else {
        return false;
    };
    let major = number.split(|&b| b == b'.').next().unwrap_or_default();
    !major.is_empty()
        && major.iter().all(u8::is_ascii_digit)
        && (major.len() > 1 || major[0] >= b'2')
}

/// Writes `r` without hyper, then reads what the client still sends for a moment before closing (so
/// the close does not reset the connection before the client has read the response).
async fn answer_raw(mut stream: TcpStream, r: &Response, limits: &Limits) {
    let bytes = raw_response(r);
    let written = timeout(limits.write_timeout, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        let _ = timeout(Duration::from_secs(1), async {
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

async fn serve(shared: Arc<Shared>, mut stream: TcpStream, busy: Arc<AtomicBool>) {
    let limits = shared.settings.limits.clone();
    let prefix = match timeout(
        limits.header_timeout,
        first_line(&mut stream, limits.max_header_bytes),
    )
    .await
    {
        Ok(Ok(FirstLine::Http1(prefix))) => prefix,
        Ok(Ok(FirstLine::Unsupported)) => {
            count(&shared.stats.unsupported_version);
            let r = Response::error(
                505,
                "this endpoint speaks HTTP/1.1 only (HTTP/2 and later are not supported)",
            );
            answer_raw(stream, &r, &limits).await;
            return;
        }
        // Closed, failed, or nothing within the header timeout: hyper closes silently too.
        Ok(Ok(FirstLine::Closed) | Err(_)) | Err(_) => return,
    };
    let io = TokioIo::new(Guarded {
        stream,
        prefix,
        pos: 0,
        write_timeout: limits.write_timeout,
        write_deadline: None,
    });
    let service = service_fn(move |req| {
        let (shared, busy) = (Arc::clone(&shared), Arc::clone(&busy));
        async move { Ok::<_, Infallible>(to_hyper(respond(&shared, &busy, req).await)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(io, service).await {
        log::debug!("admin server: connection: {e}");
    }
}

fn is_change(m: &Method) -> bool {
    m != Method::GET && m != Method::HEAD
}

/// Reads the body under the limits and answers the request.
async fn respond(
    shared: &Shared,
    busy: &Arc<AtomicBool>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response {
    let limits = &shared.settings.limits;
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    if is_change(&method) {
        if let Some(token) = &shared.settings.token {
            let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
            if !token.authorizes(header) {
                count(&shared.stats.unauthorized);
                return Response::error(
                    401,
                    "changes need `Authorization: Bearer <token>` with the token of --admin-token-file",
                )
                .with_header("www-authenticate", "Bearer")
                .closing();
            }
        }
    }
    let too_large = || {
        count(&shared.stats.body_too_large);
        Response::error(
            413,
            &format!("request body exceeds {} bytes", limits.max_body_bytes),
        )
        .closing()
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return too_large();
    }
    let body = Limited::new(req.into_body(), limits.max_body_bytes);
    let body = match timeout(limits.body_timeout, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(e)) => {
            return Response::error(400, &format!("cannot read the request body: {e}")).closing()
        }
        Err(_) => {
            count(&shared.stats.body_timeout);
            return Response::error(
                408,
                &format!(
                    "the request body did not arrive within {} s",
                    limits.body_timeout.as_secs_f64()
                ),
            )
            .closing();
        }
    };
    let _busy = Busy::set(busy);
    let request = Request {
        method: method.as_str().to_owned(),
        target,
        body: body.to_vec(),
    };
    match shared.service.call(request) {
        Answer::Now(r) => r,
        Answer::Later(Waiter(rx)) => match timeout(limits.reply_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Response::error(503, "nf-maglev is shutting down"),
            Err(_) => Response::error(
                503,
                &format!(
                    "no answer within {} s: the control thread is busy",
                    limits.reply_timeout.as_secs_f64()
                ),
            ),
        },
    }
}

fn to_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder()
        .status(r.status)
        .header(CONTENT_TYPE, r.content_type);
    for (name, value) in &r.headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(r.body)))
        .unwrap_or_else(|e| {
            let mut resp = hyper::Response::new(Full::new(Bytes::from(format!(
                "cannot build the response: {e}\n"
            ))));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            resp
        })
}

/// The connection's socket: replays the bytes read while looking at the first line, and fails a write
/// that makes no progress for `write_timeout`.
struct Guarded {
    stream: TcpStream,
    prefix: Vec<u8>,
    pos: usize,
    write_timeout: Duration,
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl Guarded {
    fn guard<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.write_deadline = None;
                Poll::Ready(v)
            }
            Poll::Pending => {
                let limit = self.write_timeout;
                let deadline = self
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if deadline.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "write made no progress within the write timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.guard(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.guard(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        this.guard(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.guard(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_request_lines() {
        for (line, unsupported) in [
            (&b"GET / HTTP/1.1\r"[..], false),
            (b"GET / HTTP/1.0", false),
            (b"PRI * HTTP/2.0\r", true),
            (b"GET / HTTP/2", true),
            (b"GET / HTTP/3.0\r", true),
            (b"GET / HTTP/10.0", true),
            (b"GET /", false),
            (b"garbage", false),
            (b"GET / HTTP/", false),
            (b"GET / HTTP/x.1", false),
        ] {
            assert_eq!(
                unsupported_version(line),
                unsupported,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn connections_fit_the_open_file_limit() {
        let l = |n| Limits::default().within_open_files(n).max_connections;
        assert_eq!(l(1_048_576), MAX_CONNECTIONS);
        assert_eq!(l(20_000), MAX_CONNECTIONS);
        assert_eq!(l(1024), 480);
        assert_eq!(l(128), 32);
        assert_eq!(l(10), 1);
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn eviction_spares_busy_connections() {
        let mut t = Table::default();
        let mut keep = Vec::new();
        for id in 0..3 {
            let (tx, rx) = oneshot::channel();
            keep.push(rx);
            let busy = Arc::new(AtomicBool::new(id == 0));
            t.open.insert(id, Entry { _cancel: tx, busy });
        }
        assert!(t.evict_idle());
        assert_eq!(t.open.keys().copied().collect::<Vec<_>>(), [0, 2]);
        assert!(t.evict_idle());
        assert!(!t.evict_idle(), "only the busy one is left");
        assert_eq!(t.open.keys().copied().collect::<Vec<_>>(), [0]);
    }
}

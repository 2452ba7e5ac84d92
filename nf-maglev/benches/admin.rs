//! Latency of `GET /metrics` on the admin server ([`nf_maglev::http`]) while 100 clients hold
//! connections open, sending their request heads and bodies one byte a second. Prints p50 / p99 / max
//! for an idle server and for the one under that load (goal: p99 under 100 ms).
//!
//! `cargo bench -p nf-maglev --bench admin`. Without `--bench` (as `cargo test --benches` runs it) it
//! makes a few scrapes only, to check that it runs.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nf_maglev::http::{self, Answer, Request, Response, Server, Settings};

/// Answers `/metrics` with about 60 KiB of exposition text, as nf-maglev with a few VIPs does.
struct Metrics(String);

impl http::Service for Metrics {
    fn call(&self, _req: Request) -> Answer {
        Answer::Now(Response::new(
            200,
            "text/plain; version=0.0.4",
            self.0.clone(),
        ))
    }
}

fn scrape(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut body = Vec::new();
    s.read_to_end(&mut body).expect("read");
    assert!(body.starts_with(b"HTTP/1.1 200 "), "bad response");
    start.elapsed()
}

fn report(what: &str, mut lat: Vec<Duration>) {
    lat.sort();
    let at = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    println!(
        "{what}: {} scrapes, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (scrapes, slow_clients) = if full { (500, 100) } else { (5, 10) };
    let text: String = (0..1000)
        .map(|i| format!("nf_maglev_backend_packets_total{{vip=\"web\",backend=\"b{i}\"}} {i}\n"))
        .collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = Server::start(
        "admin-bench",
        listener,
        Settings::default(),
        Arc::new(Metrics(text)),
    )
    .expect("start");
    let addr = server.local_addr();

    report("idle", (0..scrapes).map(|_| scrape(addr)).collect());

    let slow: Vec<(TcpStream, Vec<u8>)> = (0..slow_clients)
        .map(|i| {
            let mut s = TcpStream::connect(addr).expect("connect");
            if i % 2 == 0 {
                (s, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec())
            } else {
                s.write_all(
                    b"POST /api/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n",
                )
                .expect("head");
                (s, vec![b'a'; 2000])
            }
        })
        .collect();
    let slow = Arc::new(Mutex::new(slow));
    let running = Arc::new(AtomicBool::new(true));
    let trickle = {
        let (slow, running) = (Arc::clone(&slow), Arc::clone(&running));
        thread::spawn(move || {
            let mut sent = 0;
            while running.load(Ordering::Relaxed) {
                if let Ok(mut slow) = slow.lock() {
                    for (s, bytes) in slow.iter_mut() {
                        if let Some(b) = bytes.get(sent..=sent) {
                            let _ = s.write_all(b);
                        }
                    }
                }
                sent += 1;
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let lat = (0..scrapes)
        .map(|_| {
            let t = scrape(addr);
            thread::sleep(Duration::from_millis(10));
            t
        })
        .collect();
    report(&format!("{slow_clients} clients trickling 1 byte/s"), lat);
    running.store(false, Ordering::Relaxed);
    trickle.join().expect("trickle thread");
    server.stop();
}

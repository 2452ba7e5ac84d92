//! The admin HTTP API and the metrics endpoint, served on one address (`--listen`, default
//! `127.0.0.1:9100`).
//!
//! Requests are handled one at a time on the control thread, the only thread that changes the
//! configuration, so operations never race each other or a reload. `GET /metrics` and `GET /healthz`
//! are answered by the HTTP server's thread itself from shared state ([`crate::runtime::Front`]), so a slow
//! reload never holds up a scrape; `/healthz` fails (503) when the control thread has not come round
//! its loop for 15 s. Every change goes through the control
//! plane: it is validated like the configuration file and published with one atomic swap, or rejected with
//! the reasons while the running state keeps serving. Changes made here live in memory only: a reload
//! (`SIGHUP` or `POST /api/reload`) replaces them with what the file says.
//!
//! | Method and path                                   | Body                       | Success                 |
//! |---------------------------------------------------|----------------------------|-------------------------|
//! | `GET /healthz`                                    |                            | 200 `ok`                |
//! | `GET /metrics`                                    |                            | 200 Prometheus text     |
//! | `GET /api/state`                                  |                            | 200 state (below)       |
//! | `POST /api/reload`                                |                            | 200 `{"generation": N}` |
//! | `PUT /api/vips/{vip}/backends/{name}/weight`      | `{"weight": N}`            | 200 `{"generation": N}` |
//! | `POST /api/vips/{vip}/backends/{name}/drain`      |                            | 200 `{"generation": N}` |
//! | `DELETE /api/vips/{vip}/backends/{name}`          |                            | 200 `{"generation": N}` |
//! | `POST /api/vips/{vip}/backends`                   | a backend as in the config | 201 `{"generation": N}` |
//! | `POST /api/vips/{vip}/backends/{name}/maintenance`|                            | 200 `{"generation": N}` |
//! | `DELETE /api/vips/{vip}/backends/{name}/maintenance`|                          | 200 `{"generation": N}` |
//!
//! `{vip}` and `{name}` are the names from the configuration, percent-encoded where needed (a default VIP
//! name such as `198.18.100.1:80/tcp` is written `198.18.100.1:80%2Ftcp`). A backend body is
//! `{"name": "b4", "addr": "198.18.1.4", "weight": 1, "mac": "02:00:00:00:01:04"}` (`weight` and `mac`
//! optional, as in the file). Weight 0 drains: the backend keeps its connections and gets no new ones.
//!
//! `GET /api/state` returns `{"generation", "config", "read_only", "reloads": {"applied", "rejected",
//! "last_error"}, "vips": [...], "counters": {...}, "ports": [...]}`. Each VIP has `name`, `addr`, `proto`,
//! `port` (a number or `"all"`), `mode` (`gre` or `l2dsr`), `table_size`, `ready` (some backend with a
//! weight is healthy), `fail_open` (none is, so all share the table), `counters` (`packets`, `bytes`,
//! `new_connections`) and `backends`; each backend has `name`, `addr`, `mac`, `weight`, `state` (`active`,
//! `draining`, `down` or `maintenance`), `health` (`state`: `unknown`, `up`, `down`, `suppressed`,
//! `maintenance` or `unchecked`; `in_table`, `since` (Unix seconds), `last_result`, `last_error`,
//! `last_duration_ms`, `check` (what is probed, where and which way) and `path` (`vip` or `backend`)),
//! `table_entries`, `table_share_percent` and `counters`. Maintenance keeps a backend out of the table
//! whatever its checks say until it is deleted; it lives in memory (a restart forgets it) and survives
//! reloads. `counters` sums all workers
//! (`rx_packets`, `tx_packets`, `drops` by reason, replies, `conntrack`); `ports` lists each queue's
//! socket counters.
//!
//! Errors are JSON, `{"error": "message"}` (validation failures add `"issues": [{"path", "message"}]`):
//! 400 for a malformed request or a configuration that does not validate, 401 for a change without the
//! bearer token of `--admin-token-file` (with `WWW-Authenticate: Bearer`), 403 for changes when the API
//! is read-only (`--read-only-admin`; `GET` still works and `SIGHUP` still reloads), 404 for an unknown
//! path, VIP or backend, 405 for a wrong method, 408 for a body that does not arrive in time, 409 for a
//! backend name that already exists or a reload that changes sections needing a restart (`umems`,
//! `lports`, `threads`, `lcore-groups`), 413 for a body over 64 KiB, 431 for headers over 16 KiB, 500
//! when the XDP claims could not be updated (the new state is published then), 503 while shutting down
//! or when too many requests wait for the control thread, 505 for HTTP/2 and later.
//!
//! Threads: the HTTP server ([`nf_maglev::http`]) reads each request whole (body included, under its
//! size and time limits) on its own thread and writes the reply; only routing runs on the control
//! thread, which therefore never waits for a client.

use std::sync::Arc;

use nf_maglev::config::{BackendSection, Mode, Port};
use nf_maglev::control::{Control, ControlError, State};
use nf_maglev::counters::{Counters, DropReason, Traffic};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::metrics;
use crate::worker::{self, PortReport};

/// A change to the running configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Set a backend's weight.
    Weight {
        vip: String,
        backend: String,
        weight: u32,
    },
    /// Drain a backend (weight 0).
    Drain { vip: String, backend: String },
    /// Remove a backend.
    Remove { vip: String, backend: String },
    /// Add a backend.
    Add {
        vip: String,
        backend: Box<BackendSection>,
    },
    /// Put a backend into maintenance (out of the table whatever its checks say) or take it out.
    Maintenance {
        vip: String,
        backend: String,
        on: bool,
    },
}

impl Change {
    /// Applies the change through `control`, which validates and publishes it or returns every reason
    /// it was refused.
    pub(crate) fn apply(self, control: &mut Control) -> Result<(), ControlError> {
        match self {
            Change::Weight {
                vip,
                backend,
                weight,
            } => control.set_weight(&vip, &backend, weight),
            Change::Drain { vip, backend } => control.drain(&vip, &backend),
            Change::Remove { vip, backend } => control.remove_backend(&vip, &backend),
            Change::Add { vip, backend } => control.add_backend(&vip, *backend),
            // Health is the runtime's, not the control plane's: it handles this change itself.
            Change::Maintenance { .. } => Ok(()),
        }
    }
}

/// An error with its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) message: String,
    /// Validation problems, `(key path, message)`.
    pub(crate) issues: Vec<(String, String)>,
}

impl ApiError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            issues: Vec::new(),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::NoSuchVip(_) | ControlError::NoSuchBackend { .. } => 404,
            ControlError::Invalid(_) => 400,
            ControlError::Table { .. } => 500,
        };
        let issues = match &e {
            ControlError::Invalid(issues) => issues.clone(),
            _ => Vec::new(),
        };
        Self {
            status,
            message: e.to_string(),
            issues,
        }
    }
}

/// What the API needs from the running load balancer.
pub(crate) trait Api {
    /// The published state.
    fn state(&self) -> Arc<State>;
    /// Applies a change through the control plane.
    fn change(&mut self, change: Change) -> Result<(), ControlError>;
    /// Re-reads the configuration file and applies it.
    fn reload(&mut self) -> Result<(), ApiError>;
    /// The metrics in the Prometheus text format.
    fn metrics(&mut self) -> Result<String, ApiError>;
    /// The workers' latest reports.
    fn reports(&self) -> Vec<PortReport>;
    /// What the kernel fast path forwarded (with `data_path: xdp`), counted like a worker counts it.
    fn kernel_counters(&self) -> Option<Counters> {
        None
    }
    /// Why the load balancer is not ready to serve (an interface down or gone, a stalled worker,
    /// claims not programmed); empty when ready.
    fn readiness(&self) -> Vec<String>;
    /// Process facts for `/api/state`: `config`, `reloads`.
    fn info(&self) -> Value;
    /// A backend's `health` object for `/api/state` (`null` when unknown).
    fn backend_health(&self, _vip: &str, _backend: &str) -> Value {
        Value::Null
    }
    /// Whether a backend is in maintenance.
    fn in_maintenance(&self, _vip: &str, _backend: &str) -> bool {
        false
    }
    /// Whether a VIP is ready to serve by health (see the health monitor).
    fn vip_ready(&self, vip: &nf_maglev::control::VipState) -> bool {
        vip.ready()
    }
    /// Whether a VIP address is announced; `None` without announcement.
    fn announced(&self, _addr: std::net::IpAddr) -> Option<bool> {
        None
    }
}

/// A response to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: format!("{v:#}\n"),
        }
    }

    fn error(e: &ApiError) -> Self {
        let mut v = json!({ "error": e.message });
        if !e.issues.is_empty() {
            v["issues"] = e
                .issues
                .iter()
                .map(|(p, m)| json!({ "path": p, "message": m }))
                .collect();
        }
        Self::json(e.status, &v)
    }
}

/// Decodes `%XX` escapes of one path segment; `None` when an escape is malformed or the result is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The body of a weight change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: u32,
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("request body is not {what}: {e}")))
}

/// Routes one request. `read_only` refuses every change with 403.
pub(crate) fn route(
    api: &mut dyn Api,
    read_only: bool,
    method: &str,
    url: &str,
    body: &[u8],
) -> Reply {
    match handle(api, read_only, method, url, body) {
        Ok(reply) => reply,
        Err(e) => Reply::error(&e),
    }
}

fn handle(
    api: &mut dyn Api,
    read_only: bool,
    method: &str,
    url: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode(s).ok_or_else(|| ApiError::new(400, format!("bad escape in {s:?}")))
        })
        .collect::<Result<_, _>>()?;
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let not_allowed = |allowed: &str| {
        Err(ApiError::new(
            405,
            format!("{method} is not allowed on {path}; use {allowed}"),
        ))
    };
    let mutate = |api: &mut dyn Api, status: u16, change: Change| {
        if read_only {
            return Err(ApiError::new(
                403,
                "the admin API is read-only (--read-only-admin)",
            ));
        }
        api.change(change)?;
        Ok(Reply::json(
            status,
            &json!({ "generation": api.state().generation }),
        ))
    };
    match (method, seg.as_slice()) {
        ("GET" | "HEAD", ["healthz"]) => Ok(Reply {
            status: 200,
            content_type: "text/plain",
            body: "ok\n".into(),
        }),
        (_, ["healthz"]) => not_allowed("GET"),
        ("GET" | "HEAD", ["readyz"]) => {
            let problems = api.readiness();
            Ok(Reply {
                status: if problems.is_empty() { 200 } else { 503 },
                content_type: "text/plain",
                body: if problems.is_empty() {
                    "ready\n".into()
                } else {
                    problems
                        .iter()
                        .map(|p| format!("not ready: {p}\n"))
                        .collect()
                },
            })
        }
        (_, ["readyz"]) => not_allowed("GET"),
        ("GET" | "HEAD", ["metrics"]) => Ok(Reply {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            body: api.metrics()?,
        }),
        (_, ["metrics"]) => not_allowed("GET"),
        ("GET" | "HEAD", ["api", "state"]) => Ok(Reply::json(200, &state_json(api))),
        (_, ["api", "state"]) => not_allowed("GET"),
        ("POST", ["api", "reload"]) => {
            if read_only {
                return Err(ApiError::new(
                    403,
                    "the admin API is read-only (--read-only-admin); send SIGHUP to reload",
                ));
            }
            api.reload()?;
            Ok(Reply::json(
                200,
                &json!({ "generation": api.state().generation }),
            ))
        }
        (_, ["api", "reload"]) => not_allowed("POST"),
        ("PUT", ["api", "vips", vip, "backends", backend, "weight"]) => {
            let b: WeightBody = parse_body(body, "{\"weight\": N}")?;
            mutate(
                api,
                200,
                Change::Weight {
                    vip: (*vip).to_owned(),
                    backend: (*backend).to_owned(),
                    weight: b.weight,
                },
            )
        }
        (_, ["api", "vips", _, "backends", _, "weight"]) => not_allowed("PUT"),
        ("POST", ["api", "vips", vip, "backends", backend, "drain"]) => mutate(
            api,
            200,
            Change::Drain {
                vip: (*vip).to_owned(),
                backend: (*backend).to_owned(),
            },
        ),
        (_, ["api", "vips", _, "backends", _, "drain"]) => not_allowed("POST"),
        (m @ ("POST" | "DELETE"), ["api", "vips", vip, "backends", backend, "maintenance"]) => {
            mutate(
                api,
                200,
                Change::Maintenance {
                    vip: (*vip).to_owned(),
                    backend: (*backend).to_owned(),
                    on: m == "POST",
                },
            )
        }
        (_, ["api", "vips", _, "backends", _, "maintenance"]) => not_allowed("POST or DELETE"),
        ("DELETE", ["api", "vips", vip, "backends", backend]) => mutate(
            api,
            200,
            Change::Remove {
                vip: (*vip).to_owned(),
                backend: (*backend).to_owned(),
            },
        ),
        (_, ["api", "vips", _, "backends", _]) => not_allowed("DELETE"),
        ("POST", ["api", "vips", vip, "backends"]) => {
            let backend: BackendSection = parse_body(body, "a backend object")?;
            let state = api.state();
            let Some(v) = state.vip_by_name(vip) else {
                return Err(ControlError::NoSuchVip((*vip).to_owned()).into());
            };
            if v.backends().iter().any(|b| b.name == backend.name) {
                return Err(ApiError::new(
                    409,
                    format!("VIP {vip:?} already has a backend named {:?}", backend.name),
                ));
            }
            mutate(
                api,
                201,
                Change::Add {
                    vip: (*vip).to_owned(),
                    backend: Box::new(backend),
                },
            )
        }
        (_, ["api", "vips", _, "backends"]) => not_allowed("POST"),
        _ => Err(ApiError::new(404, format!("no such endpoint: {path}"))),
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Gre => "gre",
        Mode::L2dsr => "l2dsr",
    }
}

fn port_json(p: Port) -> Value {
    if p.is_all() {
        json!("all")
    } else {
        json!(p.0)
    }
}

fn traffic_json(t: Traffic) -> Value {
    json!({ "packets": t.packets, "bytes": t.bytes, "new_connections": t.new_conns })
}

fn counters_json(c: &Counters, reports: &[PortReport]) -> Value {
    let drops: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .map(|r| (r.name().to_owned(), json!(c.drops_for(*r))))
        .collect();
    json!({
        "rx_packets": c.rx_packets,
        "tx_packets": c.tx_packets,
        "drops": drops,
        "arp_replies": c.arp_replies,
        "nd_replies": c.nd_replies,
        "icmp_too_big": c.icmp_too_big,
        "fragments": c.fragments,
        "icmp_errors": c.icmp_errors,
        "rerouted": c.rerouted,
        "conntrack": {
            "entries": reports.iter().map(|r| r.conntrack_entries).sum::<u64>(),
            "capacity": reports.iter().map(|r| r.conntrack_capacity).sum::<u64>(),
            "inserted": c.conntrack.inserted,
            "evicted": c.conntrack.evicted,
            "expired": c.conntrack.expired,
            "flood_limited": c.conntrack.limited,
        },
    })
}

/// The `GET /api/state` document.
fn state_json(api: &dyn Api) -> Value {
    let state = api.state();
    let reports = api.reports();
    let mut counters = worker::merged_counters(&reports);
    if let Some(k) = api.kernel_counters() {
        counters.merge(&k);
    }
    let traffic = |list: &[Traffic], id: u32| list.get(id as usize).copied().unwrap_or_default();
    let vips: Vec<Value> = state
        .vips()
        .iter()
        .map(|v| {
            let entries = metrics::table_entries(v);
            let size = v.table().size();
            let backends: Vec<Value> = v
                .backends()
                .iter()
                .zip(&entries)
                .map(|(b, &n)| {
                    let share = if size == 0 {
                        0.0
                    } else {
                        (n as f64 * 100_000.0 / size as f64).round() / 1000.0
                    };
                    json!({
                        "name": b.name,
                        "addr": b.addr.to_string(),
                        "mac": b.mac.to_string(),
                        "weight": b.weight,
                        "state": if api.in_maintenance(&v.name, &b.name) {
                            "maintenance"
                        } else if !b.healthy {
                            "down"
                        } else if b.weight == 0 {
                            "draining"
                        } else {
                            "active"
                        },
                        "health": api.backend_health(&v.name, &b.name),
                        "table_entries": n,
                        "table_share_percent": share,
                        "counters": traffic_json(traffic(&counters.backends, b.id)),
                    })
                })
                .collect();
            json!({
                "name": v.name,
                "addr": v.addr.to_string(),
                "proto": v.proto.to_string(),
                "port": port_json(v.port),
                "mode": mode_name(v.mode),
                "table_size": size,
                "ready": api.vip_ready(v),
                "announced": api.announced(v.addr),
                "fail_open": v.fail_open,
                "counters": traffic_json(traffic(&counters.vips, v.id)),
                "backends": backends,
            })
        })
        .collect();
    let ports: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({
                "lport": r.lport,
                "port": r.netdev,
                "queue": r.queue,
                "mode": r.mode,
                "rx_packets": r.stats.rx_packets,
                "rx_bytes": r.stats.rx_bytes,
                "tx_packets": r.stats.tx_packets,
                "tx_bytes": r.stats.tx_bytes,
                "tx_dropped": r.stats.tx_dropped,
                "xdp_rx_dropped": r.stats.kernel.rx_dropped,
                "xdp_rx_ring_full": r.stats.kernel.rx_ring_full,
                "conntrack_entries": r.conntrack_entries,
            })
        })
        .collect();
    let mut doc = json!({
        "generation": state.generation,
        "claim_all": state.claim_all,
        "vips": vips,
        "counters": counters_json(&counters, &reports),
        "ports": ports,
    });
    if let (Value::Object(d), Value::Object(info)) = (&mut doc, api.info()) {
        d.extend(info);
    }
    doc
}

/// A request read off the connection, for the control thread to route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incoming {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) body: Vec<u8>,
}

/// Routes a request on the control thread and logs changes and failures.
pub(crate) fn handle_request(api: &mut dyn Api, read_only: bool, req: &Incoming) -> Reply {
    let reply = route(api, read_only, &req.method, &req.url, &req.body);
    if reply.status >= 400 {
        log::info!(
            "admin: {} {} -> {} {}",
            req.method,
            req.url,
            reply.status,
            reply.body.trim()
        );
    } else if req.method != "GET" && req.method != "HEAD" {
        log::info!("admin: {} {} -> {}", req.method, req.url, reply.status);
    }
    reply
}

/// The reply when the control thread is gone (shutting down).
pub(crate) fn unavailable() -> Reply {
    Reply::error(&ApiError::new(503, "nf-maglev is shutting down"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_maglev::config::MaglevSection;

    /// The API over a bare control plane, no sockets.
    struct Fake {
        control: Control,
        reload_result: Result<(), ApiError>,
        not_ready: Vec<String>,
    }

    impl Api for Fake {
        fn state(&self) -> Arc<State> {
            self.control.state()
        }
        fn change(&mut self, change: Change) -> Result<(), ControlError> {
            change.apply(&mut self.control)
        }
        fn reload(&mut self) -> Result<(), ApiError> {
            self.reload_result.clone()
        }
        fn metrics(&mut self) -> Result<String, ApiError> {
            Ok("# metrics\n".into())
        }
        fn reports(&self) -> Vec<PortReport> {
            Vec::new()
        }
        fn readiness(&self) -> Vec<String> {
            self.not_ready.clone()
        }
        fn info(&self) -> Value {
            json!({ "config": "test.jsonc" })
        }
    }

    fn fake() -> Fake {
        let s: MaglevSection = serde_json::from_str(
            r#"{ "table_size": 251, "local_addrs": ["198.18.0.1"], "gateway_mac": "02:00:00:00:00:fe",
                 "vips": [ { "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre",
                             "backends": [ { "name": "a", "addr": "198.18.1.1" },
                                           { "name": "b", "addr": "198.18.1.2", "weight": 3 } ] } ] }"#,
        )
        .expect("parses");
        Fake {
            control: Control::new(s.validate().expect("valid")).expect("builds"),
            reload_result: Ok(()),
            not_ready: Vec::new(),
        }
    }

    #[test]
    fn readyz_reports_each_problem_and_healthz_stays_ok() {
        let mut api = fake();
        assert_eq!(
            call(&mut api, "GET", "/readyz", ""),
            (200, json!("ready\n"))
        );
        api.not_ready = vec![
            "netdev x is gone".into(),
            "the worker of x:0 stalled".into(),
        ];
        let (status, body) = call(&mut api, "GET", "/readyz", "");
        assert_eq!(status, 503);
        assert_eq!(
            body,
            json!("not ready: netdev x is gone\nnot ready: the worker of x:0 stalled\n")
        );
        assert_eq!(call(&mut api, "GET", "/healthz", "").0, 200);
        assert_eq!(call(&mut api, "POST", "/readyz", "").0, 405);
    }

    const VIP: &str = "198.18.100.1:80%2Ftcp";

    fn call(api: &mut Fake, method: &str, url: &str, body: &str) -> (u16, Value) {
        let r = route(api, false, method, url, body.as_bytes());
        let v = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body.clone()));
        (r.status, v)
    }

    fn backend<'a>(state: &'a Value, name: &str) -> &'a Value {
        state["vips"][0]["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or(&Value::Null)
    }

    #[test]
    fn state_lists_vips_backends_and_shares() {
        let mut api = fake();
        let (status, s) = call(&mut api, "GET", "/api/state", "");
        assert_eq!(status, 200);
        assert_eq!(s["config"], "test.jsonc");
        assert_eq!(s["vips"][0]["name"], "198.18.100.1:80/tcp");
        assert_eq!(
            (&s["vips"][0]["mode"], &s["vips"][0]["port"]),
            (&json!("gre"), &json!(80))
        );
        let (a, b) = (backend(&s, "a"), backend(&s, "b"));
        assert_eq!(a["state"], "active");
        let (ea, eb) = (
            a["table_entries"].as_u64().expect("n"),
            b["table_entries"].as_u64().expect("n"),
        );
        assert_eq!(ea + eb, 251, "every slot belongs to a backend");
        assert!(eb > 2 * ea, "weight 3 against 1: {eb} vs {ea}");
        let pct = a["table_share_percent"].as_f64().expect("f")
            + b["table_share_percent"].as_f64().expect("f");
        assert!((pct - 100.0).abs() < 0.01, "{pct}");
        assert_eq!(s["counters"]["drops"]["no_vip"], 0);
    }

    #[test]
    fn weight_drain_remove_and_add_change_the_state() {
        let mut api = fake();
        let url = |rest: &str| format!("/api/vips/{VIP}/backends{rest}");
        let (st, v) = call(&mut api, "PUT", &url("/a/weight"), r#"{"weight": 5}"#);
        assert_eq!((st, &v["generation"]), (200, &json!(2)));
        let (_, s) = call(&mut api, "GET", "/api/state", "");
        assert_eq!(backend(&s, "a")["weight"], 5);

        assert_eq!(call(&mut api, "POST", &url("/b/drain"), "").0, 200);
        let (_, s) = call(&mut api, "GET", "/api/state", "");
        assert_eq!(backend(&s, "b")["state"], "draining");
        assert_eq!(backend(&s, "b")["table_entries"], 0);
        assert_eq!(backend(&s, "a")["table_entries"], 251);

        let (st, _) = call(
            &mut api,
            "POST",
            &url(""),
            r#"{"name": "c", "addr": "198.18.1.3", "weight": 2}"#,
        );
        assert_eq!(st, 201);
        assert_eq!(call(&mut api, "DELETE", &url("/a"), "").0, 200);
        let (_, s) = call(&mut api, "GET", "/api/state", "");
        let names: Vec<&Value> = s["vips"][0]["backends"]
            .as_array()
            .expect("list")
            .iter()
            .map(|b| &b["name"])
            .collect();
        assert_eq!(names, [&json!("b"), &json!("c")]);
        assert_eq!(s["generation"], 5);
    }

    #[test]
    fn errors_have_status_codes_and_leave_the_state() {
        let mut api = fake();
        let url = |rest: &str| format!("/api/vips/{VIP}/backends{rest}");
        let cases: &[(&str, String, &str, u16)] = &[
            ("PUT", url("/zz/weight"), r#"{"weight": 1}"#, 404),
            (
                "PUT",
                "/api/vips/nope/backends/a/weight".into(),
                r#"{"weight": 1}"#,
                404,
            ),
            ("PUT", url("/a/weight"), r#"{"weight": "x"}"#, 400),
            ("PUT", url("/a/weight"), r#"{"weight": 1, "extra": 2}"#, 400),
            ("PUT", url("/a/weight"), r#"{"weight": 2000000}"#, 400),
            (
                "POST",
                url(""),
                r#"{"name": "a", "addr": "198.18.1.9"}"#,
                409,
            ),
            (
                "POST",
                url(""),
                r#"{"name": "c", "addr": "2001:2::9"}"#,
                400,
            ),
            ("POST", url(""), r#"{"name": "c"}"#, 400),
            ("GET", url("/a/weight"), "", 405),
            ("DELETE", "/api/state".into(), "", 405),
            ("GET", "/api/nothing".into(), "", 404),
            ("GET", "/api/vips/%zz/backends".into(), "", 400),
        ];
        for (method, u, body, want) in cases {
            let (st, v) = call(&mut api, method, u, body);
            assert_eq!(st, *want, "{method} {u} {body}: {v}");
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        }
        let (_, v) = call(&mut api, "PUT", &url("/a/weight"), r#"{"weight": 2000000}"#);
        assert_eq!(
            v["issues"][0]["path"], "maglev.vips[0].backends[0].weight",
            "{v}"
        );
        assert_eq!(api.control.state().generation, 1, "nothing was published");
    }

    #[test]
    fn read_only_refuses_changes_but_serves_reads() {
        let mut api = fake();
        for (method, url, body) in [
            (
                "PUT",
                format!("/api/vips/{VIP}/backends/a/weight"),
                r#"{"weight": 2}"#,
            ),
            ("POST", format!("/api/vips/{VIP}/backends/a/drain"), ""),
            ("DELETE", format!("/api/vips/{VIP}/backends/a"), ""),
            ("POST", "/api/reload".into(), ""),
        ] {
            let r = route(&mut api, true, method, &url, body.as_bytes());
            assert_eq!(r.status, 403, "{method} {url}");
        }
        assert_eq!(api.control.state().generation, 1);
        assert_eq!(route(&mut api, true, "GET", "/api/state", b"").status, 200);
        assert_eq!(route(&mut api, true, "GET", "/healthz", b"").body, "ok\n");
        let m = route(&mut api, true, "GET", "/metrics", b"");
        assert_eq!((m.status, m.content_type), (200, metrics::CONTENT_TYPE));
    }

    #[test]
    fn reload_errors_pass_through() {
        let mut api = fake();
        api.reload_result = Err(ApiError::new(409, "lports changed: restart"));
        let (st, v) = call(&mut api, "POST", "/api/reload", "");
        assert_eq!(
            (st, v["error"].as_str()),
            (409, Some("lports changed: restart"))
        );
        api.reload_result = Ok(());
        assert_eq!(call(&mut api, "POST", "/api/reload?x=1", "").0, 200);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%3a").as_deref(), Some("a/b:"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%2", "%zz", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}

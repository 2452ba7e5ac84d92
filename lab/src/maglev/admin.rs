//! The admin API client: requests to nf-maglev's admin endpoint inside a load balancer's namespace.
//!
//! The endpoint listens on the namespace's loopback, which this process cannot reach from its own
//! namespace, so each request runs `curl` there (`ip netns exec`).

use anyhow::{ensure, Context, Result};

use super::{MaglevLab, Metrics, ADMIN_ADDR, ADMIN_TIMEOUT_S};
use crate::netns::Netns;

/// An admin API request to the nf-maglev of namespace `ns` (curl inside it): (HTTP status, body).
pub(crate) fn admin_request(
    ns: &Netns,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let url = format!("http://{ADMIN_ADDR}{path}");
    let mut argv = vec![
        "curl",
        "-sS",
        "-m",
        ADMIN_TIMEOUT_S,
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ];
    if let Some(b) = body {
        argv.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    argv.push(&url);
    let out = ns
        .exec(&argv)
        .with_context(|| format!("{method} {path} in {}", ns.name()))?;
    let (text, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
    let code = code
        .trim()
        .parse()
        .with_context(|| format!("{method} {path}: no HTTP status in curl's output {out:?}"))?;
    Ok((code, text.to_string()))
}

/// The admin API of the nf-maglev in one load balancer namespace.
#[derive(Debug, Clone, Copy)]
pub struct Admin<'a> {
    pub(crate) ns: &'a Netns,
    /// Index of the load balancer, for messages.
    pub(crate) lb: usize,
}

impl Admin<'_> {
    /// A request: (HTTP status, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        admin_request(self.ns, method, path, body)
    }

    /// Like [`Admin::request`], erroring unless the status is 2xx.
    pub fn ok(&self, method: &str, path: &str, body: Option<&str>) -> Result<String> {
        let (code, text) = self.request(method, path, body)?;
        ensure!(
            (200..300).contains(&code),
            "{method} {path} on load balancer {}: HTTP {code}: {}",
            self.lb,
            text.trim()
        );
        Ok(text)
    }

    /// `/metrics`, parsed.
    pub fn metrics(&self) -> Result<Metrics> {
        Ok(Metrics::parse(&self.ok("GET", "/metrics", None)?))
    }

    /// `/api/state`, parsed.
    pub fn state(&self) -> Result<serde_json::Value> {
        let text = self.ok("GET", "/api/state", None)?;
        serde_json::from_str(&text).context("parsing /api/state")
    }
}

impl MaglevLab {
    fn admin_api(&self, i: usize) -> Admin<'_> {
        Admin {
            ns: &self.lbs[i].host.ns,
            lb: i,
        }
    }

    /// An admin API request to load balancer `i` (curl inside its namespace): (HTTP status, body).
    pub fn admin(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        self.admin_api(i).request(method, path, body)
    }

    /// Like [`MaglevLab::admin`], erroring unless the status is 2xx.
    pub fn admin_ok(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<String> {
        self.admin_api(i).ok(method, path, body)
    }

    /// Load balancer `i`'s `/metrics`, parsed.
    pub fn metrics(&self, i: usize) -> Result<Metrics> {
        self.admin_api(i).metrics()
    }
}

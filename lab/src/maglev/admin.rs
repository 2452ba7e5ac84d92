//! The admin API client: requests to nf-maglev's admin endpoint inside a load balancer's namespace.
//!
//! The endpoint listens on the namespace's loopback, which this process cannot reach from its own
//! namespace, so each request runs `curl` there (`ip netns exec`).

use anyhow::{ensure, Context, Result};

use super::{MaglevLab, Metrics, ADMIN_ADDR, ADMIN_TIMEOUT_S};

impl MaglevLab {
    /// An admin API request to load balancer `i` (curl inside its namespace): (HTTP status, body).
    pub fn admin(
        &self,
        i: usize,
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
        let out = self.lbs[i]
            .host
            .ns
            .exec(&argv)
            .with_context(|| format!("{method} {path} on load balancer {i}"))?;
        let (text, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
        let code = code
            .trim()
            .parse()
            .with_context(|| format!("{method} {path}: no HTTP status in curl's output {out:?}"))?;
        Ok((code, text.to_string()))
    }

    /// Like [`MaglevLab::admin`], erroring unless the status is 2xx.
    pub fn admin_ok(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<String> {
        let (code, text) = self.admin(i, method, path, body)?;
        ensure!(
            (200..300).contains(&code),
            "{method} {path} on load balancer {i}: HTTP {code}: {}",
            text.trim()
        );
        Ok(text)
    }

    /// Load balancer `i`'s `/metrics`, parsed.
    pub fn metrics(&self, i: usize) -> Result<Metrics> {
        Ok(Metrics::parse(&self.admin_ok(i, "GET", "/metrics", None)?))
    }
}

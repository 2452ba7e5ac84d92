//! What a load balancer says about its backends' health: `/api/state` read and waited on.
//!
//! Waits poll `/api/state` (one `curl` in the load balancer's namespace, a few milliseconds) every
//! [`HEALTH_POLL`], so a measured time is late by at most that much plus one request.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{check_interrupt, MaglevLab};

/// Poll interval of [`MaglevLab::wait_in_table`].
pub const HEALTH_POLL: Duration = Duration::from_millis(25);

impl MaglevLab {
    /// Load balancer `i`'s `/api/state`, parsed.
    pub fn state(&self, i: usize) -> Result<Value> {
        let text = self.admin_ok(i, "GET", "/api/state", None)?;
        serde_json::from_str(&text).context("parsing /api/state")
    }

    /// VIP `vip` of load balancer `i`'s `/api/state`.
    pub fn vip_state(&self, i: usize, vip: &str) -> Result<Value> {
        vip_of(&self.state(i)?, vip).cloned()
    }

    /// Backend `name` of VIP `vip` in load balancer `i`'s `/api/state`.
    pub fn backend_state(&self, i: usize, vip: &str, name: &str) -> Result<Value> {
        backend_of(&self.state(i)?, vip, name).cloned()
    }

    /// Waits until every VIP in `vips` has backend `name` in its table (`health.in_table`) as `want`
    /// says, for at most `timeout`. Returns the time it took, or `None` when the bound passed.
    pub fn wait_in_table(
        &self,
        i: usize,
        vips: &[&str],
        name: &str,
        want: bool,
        timeout: Duration,
    ) -> Result<Option<Duration>> {
        let t0 = Instant::now();
        loop {
            let state = self.state(i)?;
            let mut all = true;
            for vip in vips {
                let b = backend_of(&state, vip, name)?;
                all &= b["health"]["in_table"].as_bool() == Some(want);
            }
            if all {
                return Ok(Some(t0.elapsed()));
            }
            if t0.elapsed() >= timeout {
                return Ok(None);
            }
            check_interrupt()?;
            std::thread::sleep(HEALTH_POLL);
        }
    }

    /// Waits until `cond` holds for load balancer `i`'s `/api/state`, for at most `timeout`; returns
    /// the last state seen and whether `cond` held.
    pub fn wait_state(
        &self,
        i: usize,
        timeout: Duration,
        mut cond: impl FnMut(&Value) -> bool,
    ) -> Result<(Value, bool)> {
        let t0 = Instant::now();
        loop {
            let state = self.state(i)?;
            if cond(&state) {
                return Ok((state, true));
            }
            if t0.elapsed() >= timeout {
                return Ok((state, false));
            }
            check_interrupt()?;
            std::thread::sleep(HEALTH_POLL);
        }
    }
}

/// VIP `vip` of an `/api/state` document.
pub fn vip_of<'a>(state: &'a Value, vip: &str) -> Result<&'a Value> {
    state["vips"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == vip))
        .with_context(|| format!("no VIP {vip} in /api/state"))
}

/// Backend `name` of VIP `vip` of an `/api/state` document.
pub fn backend_of<'a>(state: &'a Value, vip: &str, name: &str) -> Result<&'a Value> {
    vip_of(state, vip)?["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == name))
        .with_context(|| format!("no backend {name} in VIP {vip} of /api/state"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_lookups() {
        let s = json!({"vips": [{"name": "web4", "backends": [
            {"name": "b1", "health": {"in_table": true}},
            {"name": "b2", "health": {"in_table": false}}]}]});
        assert_eq!(vip_of(&s, "web4").unwrap()["name"], "web4");
        assert_eq!(
            backend_of(&s, "web4", "b2").unwrap()["health"]["in_table"],
            false
        );
        assert!(vip_of(&s, "web6").is_err());
        assert!(backend_of(&s, "web4", "b3").is_err());
    }
}

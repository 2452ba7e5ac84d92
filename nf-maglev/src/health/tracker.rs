//! What the probe results mean for each backend: rise and fall, flap damping and maintenance, decided
//! on the control thread, with no I/O and an injectable clock, so every rule is tested here.
//!
//! A backend starts `unknown` and in the table (a fresh instance serves at once; its first probes come
//! within one interval). `fall` failed probes in a row make it `down`; `rise` successes in a row make a
//! down backend `up` again, one success an unknown one. Every fall from `up` or `unknown` to `down` is a
//! flap: it adds 1 to the backend's penalty, which halves every `half_life`. At `suppress` the backend
//! is suppressed: it stays out of the table whatever its checks say, until the penalty decays below
//! `reuse` or `max_suppress` has passed. Going down is never delayed (a dead backend must leave at
//! once); only coming back is, so a backend that flaps every interval rebuilds the table a bounded
//! number of times per half-life. Maintenance (set through the admin API) keeps a backend out until
//! cleared and survives reloads while the backend exists.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Validated;
use crate::health::check::{Check, DampingSection};

/// `(VIP name, backend name)`.
pub type Key = (String, String);

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// It passed.
    Ok,
    /// No complete answer within the timeout.
    Timeout,
    /// The connection was refused (TCP reset or ICMP unreachable).
    Refused,
    /// HTTP status not accepted.
    BadStatus,
    /// HTTP body or UDP reply without the expected text.
    BadBody,
    /// Any other failure (a malformed answer, a local error).
    Error,
}

impl Verdict {
    /// Every verdict, for metrics.
    pub const ALL: [Verdict; 6] = [
        Verdict::Ok,
        Verdict::Timeout,
        Verdict::Refused,
        Verdict::BadStatus,
        Verdict::BadBody,
        Verdict::Error,
    ];

    /// The name in metrics and `/api/state`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Timeout => "timeout",
            Verdict::Refused => "refused",
            Verdict::BadStatus => "bad_status",
            Verdict::BadBody => "bad_body",
            Verdict::Error => "error",
        }
    }
}

/// A probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub verdict: Verdict,
    /// What went wrong, for people.
    pub error: Option<String>,
    /// How long it took.
    pub duration: Duration,
}

/// What the checks say about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not probed yet (in the table).
    Unknown,
    /// Passing.
    Up,
    /// Failed `fall` times in a row.
    Down,
    /// Not checked: always in the table.
    Unchecked,
}

/// One backend's health.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its check; `None`: not checked.
    pub check: Option<Check>,
    /// What the checks say.
    pub status: Status,
    /// Successes in a row.
    pub passes: u32,
    /// Failures in a row.
    pub failures: u32,
    /// When the health state shown last changed.
    pub since: SystemTime,
    /// The last probe's result.
    pub last: Option<Outcome>,
    /// Flap penalty at `penalty_at`.
    penalty: f64,
    penalty_at: Instant,
    /// Kept out by damping since then.
    pub suppressed: Option<Instant>,
    /// Kept out by an operator.
    pub maintenance: bool,
}

impl Entry {
    fn new(check: Option<Check>, now: Instant) -> Self {
        Self {
            status: if check.is_some() {
                Status::Unknown
            } else {
                Status::Unchecked
            },
            check,
            passes: 0,
            failures: 0,
            since: SystemTime::now(),
            last: None,
            penalty: 0.0,
            penalty_at: now,
            suppressed: None,
            maintenance: false,
        }
    }

    /// Whether the backend may take new connections.
    pub fn in_table(&self) -> bool {
        !self.maintenance && self.suppressed.is_none() && self.status != Status::Down
    }

    /// Whether the backend may take new connections and its checks have passed (or it is not checked):
    /// a backend not checked yet is in the table but not confirmed.
    pub fn confirmed(&self) -> bool {
        self.in_table() && matches!(self.status, Status::Up | Status::Unchecked)
    }

    /// The state `/api/state` shows: maintenance, then suppression, then the checks.
    pub fn state_name(&self) -> &'static str {
        if self.maintenance {
            "maintenance"
        } else if self.suppressed.is_some() {
            "suppressed"
        } else {
            match self.status {
                Status::Unknown => "unknown",
                Status::Up => "up",
                Status::Down => "down",
                Status::Unchecked => "unchecked",
            }
        }
    }

    /// The flap penalty at `now`.
    pub fn penalty(&self, now: Instant, half_life: Duration) -> f64 {
        if half_life.is_zero() {
            return 0.0;
        }
        let dt = now.saturating_duration_since(self.penalty_at).as_secs_f64();
        self.penalty * 0.5f64.powf(dt / half_life.as_secs_f64())
    }
}

/// A change of whether a backend takes new connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The backend.
    pub key: Key,
    /// Whether it is in the table now.
    pub up: bool,
    /// Why, for the log.
    pub reason: String,
}

/// Every backend's health. See the module docs.
#[derive(Debug, Default)]
pub struct Tracker {
    entries: BTreeMap<Key, Entry>,
    damping: DampingSection,
}

impl Tracker {
    /// Follows `config`: new backends start unknown, removed ones are forgotten, a backend whose check
    /// changed starts again as unknown (its maintenance flag stays).
    pub fn sync(&mut self, config: &Validated, now: Instant) {
        self.damping = config.health.damping;
        let mut next = BTreeMap::new();
        for v in &config.vips {
            for b in &v.backends {
                let key = (v.name.clone(), b.name.clone());
                let entry = match self.entries.remove(&key) {
                    Some(e) if e.check == b.check => e,
                    Some(e) => Entry {
                        maintenance: e.maintenance,
                        ..Entry::new(b.check.clone(), now)
                    },
                    None => Entry::new(b.check.clone(), now),
                };
                next.insert(key, entry);
            }
        }
        self.entries = next;
    }

    /// The backend's entry.
    pub fn get(&self, vip: &str, backend: &str) -> Option<&Entry> {
        self.entries.get(&(vip.to_owned(), backend.to_owned()))
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries.iter()
    }

    /// The backends kept out of the tables.
    pub fn out(&self) -> BTreeSet<Key> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.in_table())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Records a probe result of the backend `key`; returns the transition it causes, if any.
    pub fn record(&mut self, key: &Key, outcome: Outcome, now: Instant) -> Option<Transition> {
        let damping = self.damping;
        let e = self.entries.get_mut(key)?;
        let check = e.check.clone()?;
        let before = e.in_table();
        let ok = outcome.verdict == Verdict::Ok;
        if ok {
            e.passes = e.passes.saturating_add(1);
            e.failures = 0;
        } else {
            e.failures = e.failures.saturating_add(1);
            e.passes = 0;
        }
        let status = match (e.status, ok) {
            (Status::Unknown, true) => Status::Up,
            (Status::Down, true) if e.passes >= check.rise => Status::Up,
            (Status::Up | Status::Unknown, false) if e.failures >= check.fall => Status::Down,
            (s, _) => s,
        };
        let why = outcome
            .error
            .clone()
            .unwrap_or_else(|| outcome.verdict.name().to_owned());
        e.last = Some(outcome);
        if status != e.status {
            if status == Status::Down {
                let half_life = damping.half_life.duration();
                e.penalty = e.penalty(now, half_life) + 1.0;
                e.penalty_at = now;
                if damping.suppress > 0
                    && e.suppressed.is_none()
                    && e.penalty >= f64::from(damping.suppress)
                {
                    e.suppressed = Some(now);
                }
            }
            e.status = status;
            e.since = SystemTime::now();
        }
        let after = e.in_table();
        if before == after {
            return None;
        }
        let reason = if after {
            format!("{} checks passed", check.rise)
        } else if e.suppressed.is_some() && status != Status::Down {
            "flapping: suppressed".to_owned()
        } else {
            format!("{} checks failed (last: {why})", check.fall)
        };
        Some(Transition {
            key: key.clone(),
            up: after,
            reason,
        })
    }

    /// Releases suppressed backends whose penalty decayed below `reuse` or whose suppression reached
    /// `max_suppress`; returns the transitions (a released backend that passes its checks returns).
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let d = self.damping;
        let mut out = Vec::new();
        for (key, e) in &mut self.entries {
            let Some(at) = e.suppressed else { continue };
            let decayed = e.penalty(now, d.half_life.duration()) < f64::from(d.reuse);
            if decayed || now.saturating_duration_since(at) >= d.max_suppress.duration() {
                let before = e.in_table();
                e.suppressed = None;
                e.since = SystemTime::now();
                if !before && e.in_table() {
                    out.push(Transition {
                        key: key.clone(),
                        up: true,
                        reason: "flap damping released it".into(),
                    });
                }
            }
        }
        out
    }

    /// Sets or clears maintenance; returns the transition, if any, or `None` when nothing changed.
    /// `Err(())` when there is no such backend.
    #[allow(clippy::result_unit_err)]
    pub fn set_maintenance(&mut self, key: &Key, on: bool) -> Result<Option<Transition>, ()> {
        let e = self.entries.get_mut(key).ok_or(())?;
        let before = e.in_table();
        e.maintenance = on;
        e.since = SystemTime::now();
        let after = e.in_table();
        Ok((before != after).then(|| Transition {
            key: key.clone(),
            up: after,
            reason: if on {
                "maintenance set".into()
            } else {
                "maintenance cleared".into()
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MaglevSection;

    fn config(damping: &str) -> Validated {
        let s: MaglevSection = serde_json::from_str(&format!(
            r#"{{ "local_addrs": ["198.18.0.1"], "gateway_mac": "02:00:00:00:00:fe",
                 "health": {{ "damping": {damping} }},
                 "vips": [ {{ "name": "web", "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre",
                   "check": {{ "type": "tcp", "interval": 1, "timeout": 0.5, "rise": 2, "fall": 3 }},
                   "backends": [ {{ "name": "a", "addr": "198.18.1.1" }},
                                 {{ "name": "u", "addr": "198.18.1.2", "check": {{ "type": "none" }} }} ] }} ] }}"#
        ))
        .expect("parses");
        s.validate().expect("valid")
    }

    fn outcome(ok: bool) -> Outcome {
        Outcome {
            verdict: if ok { Verdict::Ok } else { Verdict::Timeout },
            error: None,
            duration: Duration::from_millis(1),
        }
    }

    fn key(b: &str) -> Key {
        ("web".into(), b.into())
    }

    #[test]
    fn fall_takes_out_rise_brings_back_unchecked_stays() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.sync(&config("{}"), t0);
        let a = key("a");
        assert_eq!(t.get("web", "a").expect("a").state_name(), "unknown");
        assert_eq!(t.get("web", "u").expect("u").state_name(), "unchecked");
        assert!(t.out().is_empty(), "unknown backends serve");
        assert_eq!(t.record(&a, outcome(true), t0), None);
        assert_eq!(t.record(&a, outcome(false), t0), None);
        assert_eq!(t.record(&a, outcome(false), t0), None);
        let tr = t.record(&a, outcome(false), t0).expect("down after 3");
        assert!(!tr.up);
        assert!(tr.reason.contains("3 checks failed"), "{}", tr.reason);
        assert_eq!(
            t.out().into_iter().collect::<Vec<_>>(),
            std::slice::from_ref(&a)
        );
        assert_eq!(t.record(&a, outcome(true), t0), None, "rise is 2");
        assert!(t.record(&a, outcome(true), t0).expect("up after 2").up);
        assert!(t.out().is_empty());
        assert_eq!(t.record(&key("u"), outcome(false), t0), None, "unchecked");
    }

    #[test]
    fn flapping_is_suppressed_until_the_penalty_decays() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.sync(
            &config(r#"{"half_life": 10, "suppress": 2, "reuse": 1, "max_suppress": 100}"#),
            t0,
        );
        let a = key("a");
        let transitions = flap(&mut t, &a, t0);
        // First flap: out and back (2); the second flap suppresses it (1 more); then it stays out until
        // the penalty halves below reuse, about 10 s, and the cycle repeats.
        assert!(
            transitions <= 2 + 1 + 2 * 100 / 10,
            "{transitions} transitions in 100 s"
        );
        assert!(transitions >= 4, "{transitions}");
        let mut t2 = Tracker::default();
        t2.sync(&config(r#"{"suppress": 0}"#), t0);
        assert_eq!(
            flap(&mut t2, &a, t0),
            40,
            "without damping every flap rebuilds"
        );
    }

    /// 100 s of a backend down for 3 probes and up for 2, one probe a second (every cycle a flap);
    /// returns the transitions.
    fn flap(t: &mut Tracker, a: &Key, t0: Instant) -> usize {
        let mut now = t0;
        let mut transitions = 0;
        for _ in 0..20 {
            for ok in [false, false, false, true, true] {
                now += Duration::from_secs(1);
                transitions += usize::from(t.record(a, outcome(ok), now).is_some());
                transitions += t.tick(now).len();
            }
        }
        transitions
    }

    #[test]
    fn suppression_ends_after_max_suppress_and_maintenance_wins() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.sync(
            &config(r#"{"half_life": 1000, "suppress": 1, "reuse": 0, "max_suppress": 5}"#),
            t0,
        );
        let a = key("a");
        for _ in 0..3 {
            t.record(&a, outcome(false), t0);
        }
        for _ in 0..2 {
            t.record(&a, outcome(true), t0);
        }
        assert_eq!(t.get("web", "a").expect("a").state_name(), "suppressed");
        assert!(t.tick(t0 + Duration::from_secs(4)).is_empty());
        let back = t.tick(t0 + Duration::from_secs(5));
        assert_eq!(back.len(), 1);
        assert!(back[0].up);
        let tr = t.set_maintenance(&a, true).expect("exists").expect("out");
        assert!(!tr.up);
        t.record(&a, outcome(true), t0);
        assert!(t.out().contains(&a), "checks do not end maintenance");
        // A reload keeps maintenance.
        t.sync(&config(r#"{}"#), t0);
        assert!(t.out().contains(&a));
        assert!(
            t.set_maintenance(&a, false)
                .expect("exists")
                .expect("in")
                .up
        );
        assert!(t.set_maintenance(&key("zz"), true).is_err());
    }
}

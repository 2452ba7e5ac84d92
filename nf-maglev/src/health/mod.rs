//! Backend health checks: the `check` configuration ([`check`]), what probe results mean for each
//! backend ([`tracker`]), and the checker that probes ([`checker`], [`probe`], and [`path`] for probes
//! that take the clients' path).
//!
//! The checker runs on a thread of its own with a one-thread async runtime and never touches a worker:
//! it probes each distinct (target, check) once however many VIPs share it, spreads the first probes
//! of the targets over their interval (with jitter on every later one) so that hundreds of backends do
//! not probe in lockstep, and bounds every probe by its timeout. Results go to the control thread,
//! which feeds the [`tracker::Tracker`] and publishes a new state when the set of backends kept out
//! changes: an unhealthy backend is handled like a drained one (its flows stay, it gets no new ones).

pub mod check;
pub mod checker;
pub mod monitor;
pub mod path;
pub mod probe;
pub mod tracker;

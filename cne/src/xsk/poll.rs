//! Adaptive waiting for a worker that polls several ports: spin while traffic flows, sleep in
//! `poll(2)` when idle.
//!
//! A worker calls [`AdaptiveWait::idle`] once per loop iteration with the number of packets it
//! handled. While packets keep coming the call returns at once (no syscall, not even a clock read).
//! After the first empty iteration the worker keeps spinning for a short window (`spin`, 2 ms by
//! default, CNDP's per-thread `idle_timeout` when the config sets it: long enough to ride out the gaps
//! between bursts of a busy link without paying a wakeup, which costs tens of microseconds in a
//! virtual machine; with a traffic source that paused for a few milliseconds twenty times a second, a
//! 50 us window measured 0.67x the throughput of a pure busy loop on one veth queue), then
//! blocks in `poll()` on the sockets' fds for up to `sleep` (100 ms by default, so shutdown flags are
//! still seen promptly). The kernel wakes the worker when a socket's RX ring gets a packet. Once a
//! sleep times out with nothing to do, the next empty iteration sleeps again immediately, so an idle
//! worker costs one short loop iteration per `sleep` period: far below 1% of a core, where a pure
//! busy-poll loop burns 100% and CNDP's idle manager about 13%. Under load it never sleeps, so
//! throughput is that of a pure busy loop.
//!
//! Ports using kernel busy polling ([`crate::xsk::port::BusyPoll`]) rely on the application polling: the
//! spin window is stretched to at least their busy-poll time, and `rx_burst` itself issues the
//! `recvfrom` that drives the busy-poll loop while spinning.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::xsk::port::Port;

/// Default spin window after the last packet.
pub const DEFAULT_SPIN: Duration = Duration::from_millis(2);
/// Default longest sleep in `poll()`.
pub const DEFAULT_SLEEP: Duration = Duration::from_millis(100);

/// How long to spin and how long to sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    /// Keep polling the rings this long after the last packet before sleeping.
    pub spin: Duration,
    /// Longest sleep in `poll()`; bounds how late a shutdown flag is seen.
    pub sleep: Duration,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        Self {
            spin: DEFAULT_SPIN,
            sleep: DEFAULT_SLEEP,
        }
    }
}

/// What [`AdaptiveWait::idle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// There was work: returned at once.
    Busy,
    /// No work, still inside the spin window: returned after a CPU pause hint.
    Spinning,
    /// Slept in `poll()`; `ready` tells whether a socket became readable (false: timeout).
    Slept {
        /// A watched socket has packets.
        ready: bool,
    },
}

/// Counters of an [`AdaptiveWait`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitStats {
    /// Calls to `poll()`.
    pub sleeps: u64,
    /// Sleeps ended by a readable socket.
    pub wakeups: u64,
    /// Sleeps ended by the timeout.
    pub timeouts: u64,
}

/// Spin-then-sleep waiting over the fds of a worker's ports (see the module doc).
#[derive(Debug)]
pub struct AdaptiveWait {
    policy: WaitPolicy,
    spin: Duration,
    fds: Vec<libc::pollfd>,
    idle_since: Option<Instant>,
    /// The last sleep timed out: sleep again without spinning first.
    asleep: bool,
    stats: WaitStats,
}

impl AdaptiveWait {
    /// A waiter with no fds yet.
    pub fn new(policy: WaitPolicy) -> Self {
        Self {
            spin: policy.spin,
            policy,
            fds: Vec::new(),
            idle_since: None,
            asleep: false,
            stats: WaitStats::default(),
        }
    }

    /// Watches a port's socket; a busy-polling port stretches the spin window to its busy-poll time.
    pub fn watch(&mut self, port: &Port<'_>) {
        self.watch_fd(port.fd());
        if let Some(bp) = port.busy_poll() {
            self.spin = self
                .spin
                .max(Duration::from_micros(u64::from(bp.timeout_us)));
        }
    }

    /// Watches any fd for readability (for example an eventfd used to stop the worker).
    pub fn watch_fd(&mut self, fd: RawFd) {
        self.fds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
    }

    /// Counters so far.
    pub fn stats(&self) -> WaitStats {
        self.stats
    }

    /// Call once per loop iteration with the packets handled in it; returns when the worker should
    /// poll its rings again.
    #[inline]
    pub fn idle(&mut self, work: usize) -> Idle {
        if work > 0 {
            self.idle_since = None;
            self.asleep = false;
            return Idle::Busy;
        }
        if !self.asleep {
            let now = Instant::now();
            let since = *self.idle_since.get_or_insert(now);
            if now.duration_since(since) < self.spin {
                std::hint::spin_loop();
                return Idle::Spinning;
            }
        }
        self.sleep()
    }

    fn sleep(&mut self) -> Idle {
        self.stats.sleeps += 1;
        let ms = libc::c_int::try_from(self.policy.sleep.as_millis()).unwrap_or(libc::c_int::MAX);
        let ready = if self.fds.is_empty() {
            std::thread::sleep(self.policy.sleep);
            false
        } else {
            for p in &mut self.fds {
                p.revents = 0;
            }
            // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd structs for the call.
            let n =
                unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
            // EINTR and other errors count as a timeout: the caller polls its rings and comes back.
            n > 0
        };
        if ready {
            self.stats.wakeups += 1;
            self.asleep = false;
            self.idle_since = None;
        } else {
            self.stats.timeouts += 1;
            self.asleep = true;
        }
        Idle::Slept { ready }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn busy_never_sleeps_and_idle_spins_then_sleeps() {
        let mut w = AdaptiveWait::new(WaitPolicy {
            spin: Duration::from_secs(3600),
            sleep: Duration::from_millis(1),
        });
        assert_eq!(w.idle(5), Idle::Busy);
        assert_eq!(w.idle(0), Idle::Spinning);
        assert_eq!(w.stats().sleeps, 0);

        let mut w = AdaptiveWait::new(WaitPolicy {
            spin: Duration::ZERO,
            sleep: Duration::from_millis(1),
        });
        assert_eq!(w.idle(0), Idle::Slept { ready: false });
        // After a timeout the next empty iteration sleeps again without spinning.
        assert_eq!(w.idle(0), Idle::Slept { ready: false });
        assert_eq!(w.idle(1), Idle::Busy);
        assert_eq!(w.stats().timeouts, 2);
    }

    #[test]
    fn readable_fd_ends_the_sleep() {
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        let mut w = AdaptiveWait::new(WaitPolicy {
            spin: Duration::ZERO,
            sleep: Duration::from_secs(30),
        });
        w.watch_fd(a.as_raw_fd());
        b.write_all(b"x").expect("write");
        assert_eq!(w.idle(0), Idle::Slept { ready: true });
        assert_eq!(w.stats().wakeups, 1);
    }
}

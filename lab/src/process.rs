//! Child processes the lab starts (forwarders, generators), owned by PID.
//!
//! A [`Proc`] is the only handle to its child. Signals go to that PID alone, and only while the
//! child is not yet reaped: until `wait` collects it, the kernel cannot reuse the PID, so a signal
//! can never hit an unrelated process. Programs started through `ip netns exec` (optionally via
//! `sh -c '... exec "$@"'`) keep their PID across the exec, so the PID is the program's own.
//! stdout and stderr go to files (read them with [`Proc::stdout`] / [`Proc::stderr`]); `Drop`
//! sends SIGTERM, waits a grace period, then SIGKILL, and removes the files unless
//! `LAB_KEEP_LOGS` is set.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Grace period between SIGTERM and SIGKILL when a `Proc` is dropped while running.
pub const DROP_GRACE: Duration = Duration::from_secs(2);

/// Poll interval of [`Proc::wait_timeout`].
const POLL: Duration = Duration::from_millis(10);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Signals the lab sends to its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: the "stop and print totals" request forwarders and generators handle.
    Int,
    /// SIGTERM.
    Term,
    /// SIGKILL.
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Int => "INT",
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
        }
    }
}

/// A running (or finished, not yet dropped) child process.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    out_path: PathBuf,
    err_path: PathBuf,
}

/// Directory for the stdout/stderr files of children (`$LAB_LOG_DIR` or `$TMPDIR/lab-logs`).
pub fn log_dir() -> PathBuf {
    std::env::var_os("LAB_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("lab-logs"))
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr captured to files named after `name`.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Proc> {
        let dir = log_dir();
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating log directory {}", dir.display()))?;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let stem = format!(
            "{}-{}-{safe}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let out_path = dir.join(format!("{stem}.out"));
        let err_path = dir.join(format!("{stem}.err"));
        let out =
            File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
        let err =
            File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
        let line = cmd::describe(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning `{line}`"))?;
        log::debug!("spawned {name} (pid {}): {line}", child.id());
        Ok(Proc {
            name: name.to_string(),
            child,
            status: None,
            out_path,
            err_path,
        })
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `sig` to the child's PID. Fails once the child has been reaped (its PID may since
    /// belong to someone else).
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if self.try_wait()?.is_some() {
            bail!(
                "{} (pid {}) has already exited; not signalling",
                self.name,
                self.pid()
            );
        }
        if sig == Signal::Kill {
            return self
                .child
                .kill()
                .with_context(|| format!("SIGKILL to {} (pid {})", self.name, self.pid()));
        }
        cmd::run_argv(&["kill", "-s", sig.name(), &self.pid().to_string()])
            .with_context(|| format!("SIG{} to {} (pid {})", sig.name(), self.name, self.pid()))?;
        Ok(())
    }

    /// The exit status if the child has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {} (pid {})", self.name, self.pid()))?;
        }
        Ok(self.status)
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Asks the child to stop: SIGINT, then SIGTERM after `grace`, then SIGKILL after another
    /// `grace`. Returns its exit status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        for sig in [Signal::Int, Signal::Term, Signal::Kill] {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            if sig != Signal::Int {
                log::warn!(
                    "{} (pid {}) still running: sending SIG{}",
                    self.name,
                    self.pid(),
                    sig.name()
                );
            }
            // The child may exit between try_wait and the signal; that race is harmless because
            // an unreaped child keeps its PID.
            if let Err(e) = self.signal(sig) {
                if let Some(st) = self.try_wait()? {
                    return Ok(st);
                }
                return Err(e);
            }
            if let Some(st) = self.wait_timeout(grace)? {
                return Ok(st);
            }
        }
        bail!(
            "{} (pid {}) did not exit after SIGKILL",
            self.name,
            self.pid()
        )
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    /// Path of the stdout file.
    pub fn stdout_path(&self) -> &Path {
        &self.out_path
    }

    /// Path of the stderr file.
    pub fn stderr_path(&self) -> &Path {
        &self.err_path
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.is_running() {
            if let Err(e) = self.signal(Signal::Term) {
                log::warn!("{e:#}");
            }
            if !matches!(self.wait_timeout(DROP_GRACE), Ok(Some(_))) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::env::var_os("LAB_KEEP_LOGS").is_none() {
            let _ = fs::remove_file(&self.out_path);
            let _ = fs::remove_file(&self.err_path);
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (at most 65536), so a test can
/// hold 10k connections where the default soft limit is 1024; children started afterwards inherit it.
/// Returns the soft limit now in force.
pub fn raise_open_files() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let want = hard.min(65_536).max(soft);
    if want > soft && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
        return want;
    }
    soft
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn captures_output_and_exit_status() {
        let mut p = Proc::spawn(
            "echo test",
            cmd::command(&["sh", "-c", "echo out; echo err >&2; exit 4"]).unwrap(),
        )
        .unwrap();
        let st = p
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("exited");
        assert_eq!(st.code(), Some(4));
        assert_eq!(p.stdout(), "out\n");
        assert_eq!(p.stderr(), "err\n");
        assert!(
            p.signal(Signal::Term).is_err(),
            "signalling a reaped child must fail"
        );
    }

    #[test]
    fn stop_uses_sigint_first() {
        // A shell that starts us in the background without job control makes us ignore SIGINT, and
        // children inherit that: restore the default for the sleeper (coreutils env).
        let argv = ["env", "--default-signal=INT", "sleep", "30"];
        let mut p = Proc::spawn("sleeper", cmd::command(&argv).unwrap()).unwrap();
        assert!(p.is_running());
        // Until env has exec'd sleep, SIGINT may still be ignored: wait for the exec (bounded).
        let comm = format!("/proc/{}/comm", p.pid());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&comm).map_or(true, |c| c.trim() != "sleep")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = p.stop(Duration::from_secs(5)).unwrap();
        assert_eq!(st.signal(), Some(2), "sleep dies of SIGINT");
    }

    #[test]
    fn drop_removes_log_files() {
        let p = Proc::spawn("files", cmd::command(&["true"]).unwrap()).unwrap();
        let (o, e) = (p.stdout_path().to_path_buf(), p.stderr_path().to_path_buf());
        assert!(o.exists() && e.exists());
        drop(p);
        if std::env::var_os("LAB_KEEP_LOGS").is_none() {
            assert!(!o.exists() && !e.exists());
        }
    }
}

//! Running the system tools the lab is built on (`ip`, `ethtool`, `kill`, `sh`).
//!
//! Every failure names the full command line, its exit status and its stderr, so a broken lab
//! setup explains itself. Commands inside a namespace go through `ip netns exec`, which also gives
//! them that namespace's view of /sys; `ip` itself is called as `ip -n NS` (no extra mount
//! namespace needed).

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; returns its stdout, or an error with the command and its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds a command from an argv slice (`argv[0]` is the program).
pub fn command<S: AsRef<OsStr>>(argv: &[S]) -> Result<Command> {
    let Some((prog, args)) = argv.split_first() else {
        bail!("empty command line");
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    Ok(cmd)
}

/// Runs an argv to completion in the current namespace.
pub fn run_argv<S: AsRef<OsStr>>(argv: &[S]) -> Result<String> {
    run(&mut command(argv)?)
}

/// `ip [-n NS] args...`, run to completion.
pub fn ip<S: AsRef<OsStr>>(ns: Option<&str>, args: &[S]) -> Result<String> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(args);
    run(&mut cmd)
}

/// `ip netns exec NS argv...` as a command, not yet run.
pub fn in_netns<S: AsRef<OsStr>>(ns: &str, argv: &[S]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(argv);
    cmd
}

/// Shell prelude that mounts bpffs in the private mount namespace `ip netns exec` creates
/// (it remounts /sys, which hides the host's /sys/fs/bpf), then execs the real program so the
/// PID stays the program's.
const BPFFS_PRELUDE: &str =
    "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || exit 125; exec \"$@\"";

/// Like [`in_netns`], with bpffs mounted at /sys/fs/bpf for the program.
pub fn in_netns_with_bpffs<S: AsRef<OsStr>>(ns: &str, argv: &[S]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "sh", "-c", BPFFS_PRELUDE, "sh"])
        .args(argv);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_command_and_stderr() {
        let err = run_argv(&["sh", "-c", "echo nope >&2; exit 3"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sh -c"), "{err}");
        assert!(err.contains("nope"), "{err}");
        assert!(run_argv::<&str>(&[]).is_err());
        assert_eq!(run_argv(&["echo", "hi"]).unwrap(), "hi\n");
    }

    #[test]
    fn netns_commands_keep_the_program_as_exec_target() {
        let c = in_netns_with_bpffs("labx", &["prog", "-c", "x"]);
        let line = describe(&c);
        assert!(line.starts_with("ip netns exec labx sh -c"), "{line}");
        assert!(line.ends_with("sh prog -c x"), "{line}");
    }
}

//! Processes inside namespaces: the PID is the program's own, signals reach it, Drop ends it.

mod common;

use lab::require_root;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use lab::{wait_for, Netns, Signal};

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root"]
fn signal_reaches_the_program_by_pid() {
    require_root();
    let ns = Netns::new("p").unwrap();
    let mut p = ns.spawn("sleeper", &["sleep", "60"]).unwrap();
    let pid = p.pid();
    // `ip netns exec` execs the program in place: the PID becomes `sleep` itself.
    assert!(
        wait_for(Duration::from_secs(5), || comm(pid) == "sleep"),
        "pid {pid} is {:?}",
        comm(pid)
    );
    p.signal(Signal::Term).unwrap();
    let st = p
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("sleep ended by SIGTERM");
    assert_eq!(st.signal(), Some(15));
    assert!(!common::pid_alive(pid));
    assert!(p.signal(Signal::Int).is_err(), "no signals after reaping");
}

#[test]
#[ignore = "needs root"]
fn drop_terminates_the_process() {
    require_root();
    let ns = Netns::new("p").unwrap();
    let p = ns.spawn("sleeper", &["sleep", "61"]).unwrap();
    let pid = p.pid();
    assert!(wait_for(Duration::from_secs(5), || comm(pid) == "sleep"));
    drop(p);
    assert!(
        !common::pid_alive(pid) || comm(pid) != "sleep",
        "sleep {pid} outlived its Proc"
    );
}

#[test]
#[ignore = "needs root"]
fn output_is_captured_and_bpffs_can_be_mounted() {
    require_root();
    let ns = Netns::new("p").unwrap();
    let mut p = ns
        .spawn_with_bpffs(
            "mnt",
            &[
                "sh",
                "-c",
                "mountpoint /sys/fs/bpf && stat -f -c %T /sys/fs/bpf; echo oops >&2",
            ],
        )
        .unwrap();
    let st = p
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("exited");
    assert!(st.success(), "{}", p.stderr());
    assert!(p.stdout().contains("bpf_fs"), "{}", p.stdout());
    assert_eq!(p.stderr(), "oops\n");
}

//! Shared pieces of the lab's root-only integration tests.
#![allow(dead_code)]

/// Number of CPUs this process may use.
pub(crate) fn ncpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// True while `/proc/<pid>` exists.
pub(crate) fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

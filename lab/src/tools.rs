//! Paths of the C tools and BPF objects `build.rs` compiled for this crate.
//!
//! They are absolute paths into Cargo's OUT_DIR, fixed at compile time, so a test binary always
//! runs the generator and forwarder built from the same sources as itself.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The traffic generator (`c/xdpgen.c`).
pub const XDPGEN: &str = env!("LAB_XDPGEN");
/// The reference AF_XDP forwarder (`c/l2fwd.c`).
pub const L2FWD: &str = env!("LAB_L2FWD");
/// The generator's XDP program (`bpf/xdp_gen.bpf.c`), loaded by `xdpgen`.
pub const XDP_GEN_OBJ: &str = env!("LAB_XDP_GEN_OBJ");
/// Sink program returning XDP_PASS (section `xdp`).
pub const XDP_PASS_OBJ: &str = env!("LAB_XDP_PASS_OBJ");
/// Sink program returning XDP_DROP (section `xdp`): accepts and counts frames at the least cost.
pub const XDP_DROP_OBJ: &str = env!("LAB_XDP_DROP_OBJ");
/// MAC swap and XDP_TX (section `xdp`): the bench's kernel-only reference forwarder.
pub const XDP_HAIRPIN_OBJ: &str = env!("LAB_XDP_HAIRPIN_OBJ");
/// The hairpin with GRE encapsulation in a fixed outer IPv4 header (section `xdp`): the reference for
/// a forwarder in XDP that encapsulates in GRE.
pub const XDP_HAIRPIN_GRE_OBJ: &str = env!("LAB_XDP_HAIRPIN_GRE_OBJ");
/// Queue-to-XSKMAP redirect program used by `l2fwd` (section `xdp`).
pub const XSK_REDIRECT_OBJ: &str = env!("LAB_XSK_REDIRECT_OBJ");

/// Directory holding the workspace's release binaries (`nf-echo`, `nf-maglev`): `$LAB_BIN_DIR`,
/// else the directory of the running executable when it is a release build, else
/// `<workspace>/target/release`.
pub fn release_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LAB_BIN_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            if dir.file_name().is_some_and(|n| n == "release") {
                return dir.to_path_buf();
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release")
}

/// The `lab` binary for forwarders it provides itself (`lab xdp-hairpin`): the running executable when
/// it is `lab` (the bench), else `lab` in `bin_dir`.
pub fn lab_exe(bin_dir: &Path) -> PathBuf {
    std::env::current_exe()
        .ok()
        .filter(|exe| exe.file_name().is_some_and(|n| n == "lab"))
        .unwrap_or_else(|| bin_dir.join("lab"))
}

/// Errors with a clear message when `path` is not an executable file.
pub fn require_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => bail!("{} is not an executable file", path.display()),
        Err(_) => bail!("{} not built", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_tools_exist() {
        for p in [XDPGEN, L2FWD] {
            require_executable(Path::new(p)).unwrap();
        }
        for p in [
            XDP_GEN_OBJ,
            XDP_PASS_OBJ,
            XDP_DROP_OBJ,
            XDP_HAIRPIN_OBJ,
            XDP_HAIRPIN_GRE_OBJ,
            XSK_REDIRECT_OBJ,
        ] {
            assert!(Path::new(p).is_file(), "{p}");
        }
        assert!(require_executable(Path::new("/nonexistent/nf-echo")).is_err());
    }
}

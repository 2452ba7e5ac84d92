//! Builds the lab's C tools and BPF objects into OUT_DIR and exports their paths.
//!
//! The generator (`xdpgen`, libbpf) and the reference forwarder (`l2fwd`, libxdp) are C programs:
//! the crate forbids `unsafe`, and the reference must be the plain C shape CNDP users know. Paths are
//! exported as `LAB_*` environment variables for `env!` in `src/tools.rs`, so tests and the bench
//! command find the exact binaries built with this crate. Missing compilers or libraries stop the
//! build with a message naming the package to install.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR set by cargo"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    let bpf_dir = manifest.join("bpf");
    let c_dir = manifest.join("c");

    for dir in [&bpf_dir, &c_dir] {
        println!("cargo:rerun-if-changed={}", dir.display());
        for entry in
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        {
            let path = entry.expect("directory entry").path();
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-env-changed=LAB_CC");
    println!("cargo:rerun-if-env-changed=LAB_CLANG");

    let clang = env::var("LAB_CLANG").unwrap_or_else(|_| "clang".into());
    let cc = env::var("LAB_CC").unwrap_or_else(|_| "gcc".into());
    require_tool(&clang, "clang (Debian: apt-get install clang llvm)");
    require_tool(&cc, "a C compiler (Debian: apt-get install gcc)");
    let libbpf = probe("libbpf", "libbpf-dev");
    let libxdp = probe("libxdp", "libxdp-dev");

    let gen_obj = bpf(
        &clang,
        &bpf_dir.join("xdp_gen.bpf.c"),
        &out.join("xdp_gen.bpf.o"),
        &[],
    );
    let pass_obj = bpf(
        &clang,
        &bpf_dir.join("xdp_sink.bpf.c"),
        &out.join("xdp_pass.bpf.o"),
        &["-DSINK_ACTION=XDP_PASS"],
    );
    let drop_obj = bpf(
        &clang,
        &bpf_dir.join("xdp_sink.bpf.c"),
        &out.join("xdp_drop.bpf.o"),
        &["-DSINK_ACTION=XDP_DROP"],
    );
    let hairpin_obj = bpf(
        &clang,
        &bpf_dir.join("xdp_hairpin.bpf.c"),
        &out.join("xdp_hairpin.bpf.o"),
        &[],
    );
    let hairpin_gre_obj = bpf(
        &clang,
        &bpf_dir.join("xdp_hairpin.bpf.c"),
        &out.join("xdp_hairpin_gre.bpf.o"),
        &["-DHAIRPIN_GRE"],
    );
    let redirect_obj = bpf(
        &clang,
        &bpf_dir.join("xsk_redirect.bpf.c"),
        &out.join("xsk_redirect.bpf.o"),
        &[],
    );

    let xdpgen = out.join("xdpgen");
    compile_c(
        &cc,
        &c_dir.join("xdpgen.c"),
        &xdpgen,
        &[
            format!("-I{}", bpf_dir.display()),
            format!("-DXDPGEN_OBJ=\"{}\"", gen_obj.display()),
        ],
        &[&libbpf],
    );
    let l2fwd = out.join("l2fwd");
    compile_c(
        &cc,
        &c_dir.join("l2fwd.c"),
        &l2fwd,
        &[format!("-DL2FWD_OBJ=\"{}\"", redirect_obj.display())],
        &[&libxdp, &libbpf],
    );

    for (name, path) in [
        ("LAB_XDPGEN", &xdpgen),
        ("LAB_L2FWD", &l2fwd),
        ("LAB_XDP_GEN_OBJ", &gen_obj),
        ("LAB_XDP_PASS_OBJ", &pass_obj),
        ("LAB_XDP_DROP_OBJ", &drop_obj),
        ("LAB_XDP_HAIRPIN_OBJ", &hairpin_obj),
        ("LAB_XDP_HAIRPIN_GRE_OBJ", &hairpin_gre_obj),
        ("LAB_XSK_REDIRECT_OBJ", &redirect_obj),
    ] {
        println!("cargo:rustc-env={name}={}", path.display());
    }
}

fn require_tool(tool: &str, what: &str) {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "lab: `{tool}` not found or not working: the lab's C tools and BPF objects need {what}"
        ),
    }
}

fn probe(lib: &str, package: &str) -> pkg_config::Library {
    pkg_config::Config::new()
        .cargo_metadata(false)
        .probe(lib)
        .unwrap_or_else(|e| {
            panic!("lab: {lib} not found by pkg-config (Debian: apt-get install {package}): {e}")
        })
}

fn bpf(clang: &str, src: &Path, obj: &Path, defines: &[&str]) -> PathBuf {
    let mut cmd = Command::new(clang);
    cmd.args([
        "-O2",
        "-g",
        "-Wall",
        "-target",
        "bpf",
        "-I/usr/include/x86_64-linux-gnu",
    ])
    .args(defines)
    .arg("-c")
    .arg(src)
    .arg("-o")
    .arg(obj);
    run(cmd, src);
    obj.to_path_buf()
}

fn compile_c(cc: &str, src: &Path, bin: &Path, flags: &[String], libs: &[&pkg_config::Library]) {
    let mut cmd = Command::new(cc);
    cmd.args(["-O2", "-g", "-Wall", "-Wextra", "-std=gnu11"])
        .args(flags);
    for lib in libs {
        for inc in &lib.include_paths {
            cmd.arg(format!("-I{}", inc.display()));
        }
    }
    cmd.arg(src).arg("-o").arg(bin);
    for lib in libs {
        for dir in &lib.link_paths {
            cmd.arg(format!("-L{}", dir.display()));
        }
        for l in &lib.libs {
            cmd.arg(format!("-l{l}"));
        }
    }
    cmd.arg("-lpthread");
    run(cmd, src);
}

fn run(mut cmd: Command, src: &Path) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("lab: cannot run {cmd:?} for {}: {e}", src.display()));
    if !out.status.success() {
        panic!(
            "lab: building {} failed ({}):\n{:?}\n{}",
            src.display(),
            out.status,
            cmd,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| !l.is_empty()) {
        println!("cargo:warning={line}");
    }
}

//! Compiles the XDP programs in `bpf/` into BPF objects in OUT_DIR; `cne::bpf::filter`, `cne::bpf::decap` and `cne::bpf::fast` embed them
//! with `include_bytes!`, so a binary carries its programs and needs no object files at run time.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The BPF sources, compiled to `OUT_DIR/<name>.o`.
const PROGRAMS: &[&str] = &["xsk_filter", "gre_decap", "maglev_fast"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    // Debian puts <asm/types.h> under the multiarch directory, which clang does not search for -target bpf.
    let multiarch = format!(
        "-I/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string())
    );
    println!("cargo:rerun-if-changed=bpf/nf_common.h");
    for name in PROGRAMS {
        let src = format!("bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let obj = out.join(format!("{name}.o"));
        let output = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-target", "bpf", &multiarch, "-c", &src, "-o"])
            .arg(&obj)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `{clang}` to compile {src} ({e}): install clang (Debian: apt-get install clang) or set CLANG")
            });
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            panic!(
                "`{clang}` failed to compile {src} ({}):\n{stderr}",
                output.status
            );
        }
        for line in stderr.lines().filter(|l| l.contains("warning:")) {
            println!("cargo:warning={line}");
        }
    }
}

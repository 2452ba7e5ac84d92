//! Generates the bindings from the system headers of libxdp and libbpf, found with pkg-config.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");

    let mut include_paths = Vec::new();
    for (lib, version) in [("libxdp", "1.2"), ("libbpf", "0.8")] {
        let found = pkg_config::Config::new()
            .atleast_version(version)
            .probe(lib)
            .unwrap_or_else(|e| {
                panic!(
                    "cne-sys needs {lib} >= {version} (Debian: apt-get install libxdp-dev libbpf-dev): {e}"
                )
            });
        include_paths.extend(found.include_paths);
    }

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        // libxdp exports the xsk_ring_* helpers as real symbols as well as static inline ones:
        // bind them so setup-time code can call them; the per-packet path does the index math in Rust.
        .generate_inline_functions(true)
        .allowlist_function("xsk_.*")
        .allowlist_function("xdp_.*")
        .allowlist_function("bpf_.*")
        .allowlist_function("libbpf_.*")
        .allowlist_function("libxdp_.*")
        .allowlist_type("xsk_.*")
        .allowlist_type("xdp_.*")
        .allowlist_type("bpf_.*")
        .allowlist_type("sockaddr_xdp")
        .allowlist_var("XDP_.*")
        .allowlist_var("XSK_.*")
        .allowlist_var("BPF_.*")
        .allowlist_var("LIBBPF_.*")
        .allowlist_var("XDP_FLAGS_.*")
        .allowlist_var("SOL_XDP")
        .derive_default(true)
        .layout_tests(false)
        .prepend_enum_name(false);
    for p in &include_paths {
        builder = builder.clang_arg(format!("-I{}", p.display()));
    }
    let bindings = builder
        .generate()
        .expect("bindgen failed on libxdp/libbpf headers");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("cannot write bindings.rs");
}

//! Configs generated or shipped outside `jsonc/` must be what nf-maglev accepts: the `maglev` section
//! of `k8s/nf-maglev-config.yaml` and the benchmark lab's generated config validate with its own rules.
#![forbid(unsafe_code)]

use cne::config::Config;

/// The text of a `key: |` block scalar in a YAML file (the ConfigMap's data entry).
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let indent = header.len() - header.trim_start().len() + 2;
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn configmap_maglev_section_validates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/nf-maglev-config.yaml");
    let yaml = std::fs::read_to_string(path).expect("read ConfigMap");
    let text = block_scalar(&yaml, "maglev.jsonc");
    let config = Config::parse(&text, "k8s/nf-maglev-config.yaml#maglev.jsonc")
        .unwrap_or_else(|e| panic!("{e}"));
    let validated = nf_maglev::config::from_config(&config).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(validated.vips.len(), 3);
}

#[test]
fn benchmark_lab_config_validates() {
    let text = lab::config::maglev_config("veth0", 2, &[0, 1], "gre");
    let config = Config::parse(&text, "lab maglev_config").unwrap_or_else(|e| panic!("{e}"));
    let validated = nf_maglev::config::from_config(&config).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(validated.vips[0].backends.len(), 4);
    assert_eq!(validated.data_path, nf_maglev::config::DataPath::AfXdp);
}

#[test]
fn benchmark_lab_xdp_config_validates() {
    for mode in ["gre", "l2dsr"] {
        let text = lab::config::maglev_xdp_config("veth0", 1, &[1], mode);
        let config =
            Config::parse(&text, "lab maglev_xdp_config").unwrap_or_else(|e| panic!("{e}"));
        let validated = nf_maglev::config::from_config(&config)
            .unwrap_or_else(|errors| panic!("{mode}: {} errors", errors.len()));
        assert_eq!(
            validated.data_path,
            nf_maglev::config::DataPath::Xdp,
            "{mode}"
        );
    }
}

#[test]
fn daemonset_admin_api_is_not_writable_without_a_token() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../k8s/nf-maglev-daemonset.yaml"
    );
    let yaml = std::fs::read_to_string(path).expect("read DaemonSet");
    let args: String = yaml
        .lines()
        .skip_while(|l| !l.contains("exec nf-maglev -c"))
        .take_while(|l| !l.trim_start().starts_with("env:"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(args.contains("--listen 0.0.0.0:9100"), "{args}");
    // nf-maglev refuses to start otherwise (a non-loopback address with changes enabled).
    assert!(
        args.contains("--read-only-admin") || args.contains("--admin-token-file"),
        "{args}"
    );
}

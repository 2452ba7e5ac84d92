//! Every shipped configuration in `jsonc/` loads, and every file in `tests/bad/` fails with the
//! error its header announces:
//!
//! ```text
//! // expect-line: 11
//! // expect-path: lports."eth0:0".umem
//! // expect-msg: umem "umem9" is not defined
//! ```

use cne::config::{Config, ConfigError, MemType, Queues};
use std::path::{Path, PathBuf};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn jsonc_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonc"))
        .collect();
    files.sort();
    files
}

/// Queue counts for `"queues": "all"` do not depend on the machine running the tests.
fn fixed_queues(_netdev: &str) -> std::io::Result<usize> {
    Ok(2)
}

fn load_fixed(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).unwrap();
    Config::parse_with_queue_count(&text, &path.display().to_string(), &fixed_queues)
}

#[test]
fn every_shipped_config_loads() {
    let dir = manifest_dir().join("../jsonc");
    let files = jsonc_files(&dir);
    assert!(
        files.len() >= 5,
        "expected the shipped configs in {}",
        dir.display()
    );
    for path in files {
        let cfg = load_fixed(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!cfg.lports().is_empty(), "{}: no lports", path.display());
        assert!(
            cfg.main_thread().is_some(),
            "{}: no main thread",
            path.display()
        );
        for lport in cfg.lports() {
            let thread = lport.thread.as_deref().unwrap_or_else(|| {
                panic!("{}: lport {} has no thread", path.display(), lport.name)
            });
            assert!(cfg.thread(thread).unwrap().lports.contains(&lport.name));
        }
        // What we write loads back into the same configuration.
        let text = cfg.to_jsonc_string().unwrap();
        let again = Config::parse(&text, "<round-trip>").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again.lports(), cfg.lports(), "{}", path.display());
        assert_eq!(again.umems(), cfg.umems(), "{}", path.display());
        assert_eq!(again.threads(), cfg.threads(), "{}", path.display());
        assert_eq!(
            again.lcore_groups(),
            cfg.lcore_groups(),
            "{}",
            path.display()
        );
        assert_eq!(again.options(), cfg.options(), "{}", path.display());
        assert_eq!(again.application(), cfg.application(), "{}", path.display());
        assert!(again.application_sections().eq(cfg.application_sections()));
    }
}

#[test]
fn cndpfwd_is_read_as_cndp_reads_it() {
    let cfg = Config::load(manifest_dir().join("../jsonc/cndpfwd.jsonc")).unwrap();
    assert_eq!(cfg.application().name.as_deref(), Some("cndpfwd"));
    assert_eq!(cfg.defaults().mtype, MemType::Huge2M);
    let umem = cfg.umem("umem0").unwrap();
    assert_eq!((umem.frame_size(), umem.frame_count()), (2048, 32 * 1024));
    assert_eq!(umem.regions, vec![16, 16]);
    // rxdesc 0 in the umem: the default section's 2 x 1024 applies.
    assert_eq!((umem.rx_ring_size(), umem.fill_ring_size()), (2048, 4096));
    let names: Vec<&str> = cfg.lports().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["eth0:0", "eth1:0"]);
    let eth1 = cfg.lport("eth1:0").unwrap();
    assert_eq!(
        (eth1.netdev.as_str(), eth1.qid, eth1.region),
        ("eth1", 12, 1)
    );
    assert_eq!(eth1.thread.as_deref(), Some("fwd:1"));
    assert_eq!(cfg.lcore_group("default").unwrap().cpus, vec![15, 16]);
    let threads: Vec<&str> = cfg.threads().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(threads, ["main", "fwd:0", "fwd:1"]);
    let fwd0 = cfg.thread("fwd:0").unwrap();
    assert_eq!(
        (fwd0.kind.as_str(), fwd0.cpus.as_slice()),
        ("fwd", &[13][..])
    );
    assert_eq!((fwd0.idle_timeout, fwd0.intr_timeout), (10, 2000));
    assert_eq!(cfg.options().get_str("pkt_api"), Some("xskdev"));
    assert_eq!(cfg.options().get_bool("cli"), Some(true));
    assert_eq!(cfg.options().get_bool("no-metrics"), Some(false));
}

#[test]
fn echo_configs_carry_the_echo_section() {
    #[derive(serde::Deserialize)]
    struct Echo {
        mode: String,
        addrs: Vec<std::net::IpAddr>,
        udp_ports: Vec<u16>,
    }
    for (file, queues) in [("echo-1q.jsonc", 1), ("echo-2q.jsonc", 2)] {
        let cfg = Config::load(manifest_dir().join("../jsonc").join(file)).unwrap();
        assert_eq!(cfg.lports().len(), queues);
        assert!(cfg.lports().iter().all(|l| l.netdev == "veth-dut"));
        let workers: Vec<_> = cfg.threads().iter().filter(|t| !t.is_main()).collect();
        assert_eq!(workers.len(), queues);
        for (i, w) in workers.iter().enumerate() {
            assert_eq!(w.name, format!("fwd:{i}"));
            assert_eq!(w.lports, vec![format!("veth-dut:{i}")]);
        }
        let echo: Echo = cfg.section("echo").unwrap().unwrap();
        assert_eq!(echo.mode, "echo");
        assert_eq!(echo.addrs.len(), 2);
        assert_eq!(echo.udp_ports, vec![7, 9000]);
        assert_eq!(cfg.application_sections().collect::<Vec<_>>(), ["echo"]);
    }
}

#[test]
fn lport_groups_example_expands_in_order() {
    let cfg = load_fixed(&manifest_dir().join("../jsonc/lport-groups.jsonc")).unwrap();
    let got: Vec<(&str, &str, usize, &str)> = cfg
        .lports()
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.umem.as_str(),
                l.region,
                l.thread.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("veth-lan:0", "umem0", 0, "fwd:0"),
            ("veth-lan:1", "umem0", 1, "fwd:1"),
            ("veth-wan:0", "lport-group", 0, "fwd:0"),
            ("veth-wan:1", "lport-group", 1, "fwd:1"),
        ]
    );
    assert_eq!(
        cfg.thread("fwd:1").unwrap().lports,
        ["veth-lan:1", "veth-wan:1"]
    );
    let wan = cfg.lport("veth-wan:0").unwrap();
    assert!(wan.busy_poll);
    assert_eq!((wan.busy_timeout, wan.busy_budget), (20, 64));
    // Built from defaults: 3 x (1 + 1) x 1024 frames per lport, one region each.
    let shared = cfg.umem("lport-group").unwrap();
    assert_eq!(shared.regions, vec![6, 6]);
    assert_eq!(shared.rx_ring_size(), 1024);
    assert_eq!(cfg.lport_groups()[0].queues, Queues::List(vec![0, 1]));
}

struct Expect {
    line: usize,
    path: String,
    msg: String,
}

fn expectation(path: &Path, text: &str) -> Expect {
    let field = |name: &str| -> String {
        let prefix = format!("// expect-{name}:");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{}: no `{prefix}` header", path.display()))
    };
    Expect {
        line: field("line").parse().unwrap(),
        path: field("path"),
        msg: field("msg"),
    }
}

#[test]
fn every_bad_config_fails_where_announced() {
    let files = jsonc_files(&manifest_dir().join("tests/bad"));
    assert!(files.len() >= 11);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let want = expectation(&path, &text);
        let err = match Config::load(&path) {
            Ok(_) => panic!("{}: loaded but should fail", path.display()),
            Err(e) => e,
        };
        let shown = err.to_string();
        assert_eq!(err.origin(), path.display().to_string(), "{shown}");
        assert_eq!(err.line(), Some(want.line), "{shown}");
        assert_eq!(err.key_path(), want.path, "{shown}");
        let head = if want.path.is_empty() {
            format!("{}:{}:", path.display(), want.line)
        } else {
            format!("{}:{}: {}: ", path.display(), want.line, want.path)
        };
        assert!(
            shown.starts_with(&head),
            "{shown}\ndoes not start with\n{head}"
        );
        assert!(
            shown.contains(&want.msg),
            "{shown}\ndoes not contain\n{}",
            want.msg
        );
    }
}

#[test]
fn missing_file_names_the_path() {
    let err = Config::load("/nonexistent/cne.jsonc").unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err
        .to_string()
        .starts_with("/nonexistent/cne.jsonc: cannot read"));
}

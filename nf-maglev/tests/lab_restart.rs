//! nf-maglev killed and restarted, and reloads whose claims cannot be written, on the Maglev lab.
//!
//! SIGKILL (a crash, an OOM kill) runs none of nf-maglev's own clean-up: its XDP filter must still leave
//! the interface, because it is held by a `bpf_link` the kernel releases with the process, and the same
//! command line must start again without `--force`. Held TCP connections to an unchanged backend set
//! keep their backend across the restart (the Maglev table is rebuilt identically). A TCP prober in
//! the client's namespace measures the outage.
//!
//! Claims and state agree: a reload whose claims cannot be written to the filter's rule map (filled up
//! here with entries of a generation the filter never uses, as `bpftool` can) is rejected, and both
//! `/api/state` and the rule map stay as they were; once there is room, the same reload goes through. A
//! reload with more claims than the filter holds is refused up front, naming the limit and the count.
//! Needs root; skipped otherwise.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::maglev::{self, LabSpec, MaglevLab, Mode, Spread, HTTP_PORT, LB_IF, VIP4};
use lab::wait_for;
use serde_json::{json, Value};

const NF_MAGLEV: &str = env!("CARGO_BIN_EXE_nf-maglev");
const HELD: u32 = 30;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Entries of the filter's rule map: two generations of 4096.
const RULE_MAP_ENTRIES: usize = 2 * 4096;

/// New TCP connections to ADDR:PORT, one every INTERVAL seconds for DURATION seconds, each given 50 ms
/// to connect; prints `tries connected longest_gap_ms` (the longest time between two connects).
const TCP_PROBE: &str = r#"
import socket, sys, time
addr, port, duration, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
start = time.monotonic()
tries, ok = 0, []
while time.monotonic() - start < duration:
    t = time.monotonic()
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.05)
    try:
        s.connect((addr, port))
        ok.append(time.monotonic())
    except OSError:
        pass
    finally:
        s.close()
    tries += 1
    rest = interval - (time.monotonic() - t)
    if rest > 0:
        time.sleep(rest)
gaps = [b - a for a, b in zip(ok, ok[1:])]
print(tries, len(ok), int(max(gaps, default=duration) * 1000))
"#;

fn xdp_attached(lab: &MaglevLab) -> bool {
    lab.lb(0).ns().xdp_prog(LB_IF).expect("ip link").is_some()
}

fn restart_after_sigkill(mode: Mode) {
    lab::require_root();
    let _serial = maglev::serial();
    let spec = LabSpec::new(mode, NF_MAGLEV).weights(&[1, 1, 1, 1]);
    let mut lab = MaglevLab::build(&spec).unwrap();
    lab.start_lb(0, &[]).unwrap();
    let vip = IpAddr::V4(VIP4);

    let mut hold = lab.hold(vip, HELD, 2).unwrap();
    let step0 = hold.step(0, STEP_TIMEOUT).unwrap();
    assert_eq!(step0.len(), HELD as usize);
    assert!(step0.iter().all(|r| r.error.is_none()), "{step0:?}");

    let mut probe = lab
        .client()
        .ns()
        .spawn(
            "tcp-probe",
            &[
                "python3",
                "-c",
                TCP_PROBE,
                &VIP4.to_string(),
                &HTTP_PORT.to_string(),
                "6",
                "0.01",
            ],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    lab.kill_lb(0).unwrap();
    let killed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(1), || !xdp_attached(&lab)),
        "{mode}: the XDP program outlived the killed nf-maglev"
    );
    let detached = killed.elapsed();
    // The same command line: no --force, no manual step.
    lab.start_lb(0, &[]).unwrap();
    let ready = killed.elapsed();

    let step1 = hold.step(1, STEP_TIMEOUT).unwrap();
    let kept = step0
        .iter()
        .filter(|before| {
            step1.iter().any(|after| {
                after.sport == before.sport
                    && after.error.is_none()
                    && after.backend == before.backend
            })
        })
        .count();

    probe
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("the prober did not finish");
    let out = probe.stdout();
    let f: Vec<u64> = out
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect();
    assert_eq!(f.len(), 3, "prober printed {out:?}: {}", probe.stderr());
    let (tries, connected, outage_ms) = (f[0], f[1], f[2]);
    eprintln!(
        "{mode}: SIGKILL and restart without --force: program gone {} ms after the kill, admin API and \
         XDP back {} ms after it; held connections kept their backend {kept}/{HELD}; new connections \
         {connected}/{tries}, longest gap between two {outage_ms} ms",
        detached.as_millis(),
        ready.as_millis()
    );
    assert_eq!(kept, HELD as usize, "{mode}: {step1:?}");
    assert!(outage_ms < 2000, "{mode}: outage {outage_ms} ms");

    let fresh = Spread::of(&lab.tcp_conns(vip, 100, 16, None).unwrap());
    assert_eq!(fresh.failed, 0, "{fresh}");
    lab.stop_lb(0).unwrap();
}

#[test]
#[ignore = "needs root"]
fn sigkill_then_the_same_command_keeps_held_connections_gre() {
    restart_after_sigkill(Mode::Gre);
}

#[test]
#[ignore = "needs root"]
fn sigkill_then_the_same_command_keeps_held_connections_l2dsr() {
    restart_after_sigkill(Mode::L2dsr);
}

fn bpftool_json(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool json")
}

/// The kernel ids of the maps of program `id`, with their names.
fn prog_maps(id: &str) -> Vec<(String, Value)> {
    let info = bpftool_json(&["prog", "show", "id", id]);
    info["map_ids"]
        .as_array()
        .expect("map_ids")
        .iter()
        .map(|id| {
            let id = id.to_string();
            let name = bpftool_json(&["map", "show", "id", &id])["name"].clone();
            (id, name)
        })
        .collect()
}

/// Kernel id of the `rules` map of the filter on the load balancer's interface (with the XDP fast path
/// in front, the filter is the program in the fast path's `fallback` map).
fn rules_map_id(lab: &MaglevLab) -> String {
    let prog = lab.lb(0).ns().xdp_prog(LB_IF).unwrap().expect("attached");
    let mut maps = prog_maps(&prog.id.to_string());
    if let Some((fallback, _)) = maps.iter().find(|(_, name)| name == "fallback") {
        // The entry's value is the program id, shown as little-endian hex bytes.
        let entries = bpftool_json(&["map", "dump", "id", fallback]);
        let filter = entries[0]["value"]
            .as_array()
            .expect("value bytes")
            .iter()
            .rev()
            .fold(0u32, |id, b| {
                let b = b.as_str().expect("hex byte").trim_start_matches("0x");
                id << 8 | u32::from_str_radix(b, 16).expect("hex byte")
            });
        maps = prog_maps(&filter.to_string());
    }
    maps.into_iter()
        .find(|(_, name)| name == "rules")
        .map(|(id, _)| id)
        .expect("no rules map")
}

/// The keys of the rule map, as byte lists.
fn rule_keys(map: &str) -> Vec<Vec<u8>> {
    bpftool_json(&["map", "dump", "id", map])
        .as_array()
        .expect("dump")
        .iter()
        .map(|e| {
            e["key"]
                .as_array()
                .expect("key bytes")
                .iter()
                .map(|b| {
                    let b = b.as_str().expect("hex byte");
                    u8::from_str_radix(b.trim_start_matches("0x"), 16).expect("hex")
                })
                .collect()
        })
        .collect()
}

/// `bpftool batch` over `count` entries of generation 2, which the filter never uses: `update`
/// fills the rule map with them, `delete` removes them.
fn foreign_entries(lab: &MaglevLab, map: &str, count: usize, op: &str) {
    let mut cmds = String::new();
    for i in 0..count {
        let n = u32::try_from(i).unwrap().to_be_bytes();
        let key = [
            0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, n[0], n[1], n[2], n[3], 6, 2, 0, 80,
        ];
        let hex: Vec<String> = key.iter().map(|b| format!("{b:02x}")).collect();
        cmds.push_str(&format!("map {op} id {map} key hex {}", hex.join(" ")));
        if op == "update" {
            cmds.push_str(" value hex 01 00 00 00");
        }
        cmds.push('\n');
    }
    let path = lab.dir().join(format!("bpftool-{op}"));
    std::fs::write(&path, cmds).unwrap();
    let out = Command::new("bpftool")
        .args(["batch", "file"])
        .arg(&path)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool batch {op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vip_names(lab: &MaglevLab) -> (u64, BTreeSet<String>) {
    let state: Value =
        serde_json::from_str(&lab.admin_ok(0, "GET", "/api/state", None).unwrap()).unwrap();
    let names = state["vips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    (state["generation"].as_u64().unwrap_or(0), names)
}

/// The rule map's entries of the two generations the filter uses (byte 17 of the key).
fn own_entries(keys: &[Vec<u8>]) -> BTreeSet<Vec<u8>> {
    keys.iter().filter(|k| k[17] < 2).cloned().collect()
}

#[test]
#[ignore = "needs root"]
fn a_reload_whose_claims_cannot_be_written_changes_nothing() {
    lab::require_root();
    let _serial = maglev::serial();
    let spec = LabSpec::new(Mode::Gre, NF_MAGLEV).weights(&[1, 1, 1, 1]);
    let mut lab = MaglevLab::build(&spec).unwrap();
    lab.start_lb(0, &[]).unwrap();
    let (generation, names) = vip_names(&lab);
    let map = rules_map_id(&lab);
    let keys = rule_keys(&map);
    let claims = own_entries(&keys);
    assert!(!claims.is_empty());

    // One more VIP, on a new address: two more entries than today.
    let mut config = lab.config(0);
    let mut extra = config["maglev"]["vips"][0].clone();
    extra["name"] = json!("web4-extra");
    extra["addr"] = json!("198.18.100.2");
    config["maglev"]["vips"].as_array_mut().unwrap().push(extra);
    lab.write_config(0, &serde_json::to_string_pretty(&config).unwrap())
        .unwrap();

    // Leave room for fewer entries than the new claims need.
    let room = 3;
    let foreign = RULE_MAP_ENTRIES - keys.len() - room;
    foreign_entries(&lab, &map, foreign, "update");
    let (code, body) = lab.admin(0, "POST", "/api/reload", None).unwrap();
    eprintln!("reload with a full rule map: HTTP {code}: {}", body.trim());
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("writing the XDP claims"), "{body}");
    assert!(body.contains("the running state and claims stay"), "{body}");
    assert_eq!(
        vip_names(&lab),
        (generation, names.clone()),
        "/api/state changed"
    );
    assert_eq!(own_entries(&rule_keys(&map)), claims, "the claims changed");
    let spread = Spread::of(&lab.tcp_conns(IpAddr::V4(VIP4), 50, 16, None).unwrap());
    assert_eq!(spread.failed, 0, "the old state stopped serving: {spread}");

    // A full map blocks nothing once there is room: the same reload goes through.
    foreign_entries(&lab, &map, foreign, "delete");
    lab.admin_ok(0, "POST", "/api/reload", None).unwrap();
    let (_, now) = vip_names(&lab);
    assert!(now.contains("web4-extra"), "{now:?}");
    let after = own_entries(&rule_keys(&map));
    assert_eq!(
        after.len(),
        claims.len() + 2,
        "one rule and one address more"
    );

    // More claims than a generation holds: refused before anything is built or written.
    let mut config = lab.config(0);
    let template = config["maglev"]["vips"][0].clone();
    let vips: Vec<Value> = (1..=4096)
        .map(|port| {
            let mut v = template.clone();
            v["name"] = json!(format!("p{port}"));
            v["port"] = json!(port);
            v["backends"] = json!([]);
            v
        })
        .collect();
    config["maglev"]["vips"] = json!(vips);
    lab.write_config(0, &serde_json::to_string(&config).unwrap())
        .unwrap();
    let (code, body) = lab.admin(0, "POST", "/api/reload", None).unwrap();
    eprintln!("reload with 4096 VIP ports: HTTP {code}: {}", body.trim());
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("4097") && body.contains("limit of 4096"),
        "{body}"
    );
    assert!(vip_names(&lab).1.contains("web4-extra"));
    assert_eq!(own_entries(&rule_keys(&map)), after);
    lab.stop_lb(0).unwrap();
}

//! Configuration files for the network functions the bench runs, in CNDP's JSON-C schema.
//!
//! One UMEM of 16 x 1024 frames of 2 KiB split into one region per queue, one lport per queue
//! (`"IF:q"`, `net_af_xdp`, region q), the main thread on lcore group `initial` = CPU 0 and one
//! forwarding thread per queue (`"fwd:q"`) on its own group `g<q>` = the CPU the bench pins that
//! queue to. Sections are built as JSON values (plain JSON is valid JSON-C) so the output is
//! always syntactically valid.

use serde_json::{json, Map, Value};

use crate::lab::{DUT_IPV4, DUT_IPV6, GEN_MAC, UDP_PORT};

/// Total UMEM buffers in units of 1024, as in CNDP's stock configs.
pub const BUFCNT_K: u32 = 16;

/// The CNDP sections (`application`, `umems`, `lports`, `lcore-groups`, `threads`) for `queues`
/// queues of `ifname`, queue q's thread pinned to `cpus[q]` (CPU 0 when `cpus` is short).
pub fn cndp_sections(app: &str, ifname: &str, queues: u32, cpus: &[usize]) -> Map<String, Value> {
    let queues = queues.max(1);
    let per = (BUFCNT_K / queues).max(1);
    let mut lports = Map::new();
    let mut groups = Map::new();
    let mut threads = Map::new();
    groups.insert("initial".into(), json!([0]));
    threads.insert("main".into(), json!({ "group": "initial" }));
    for q in 0..queues {
        let lport = format!("{ifname}:{q}");
        let cpu = usize::try_from(q)
            .ok()
            .and_then(|i| cpus.get(i))
            .copied()
            .unwrap_or(0);
        lports.insert(
            lport.clone(),
            json!({ "pmd": "net_af_xdp", "qid": q, "umem": "umem0", "region": q,
                    "description": format!("{ifname} queue {q}") }),
        );
        groups.insert(format!("g{q}"), json!([cpu]));
        threads.insert(
            format!("fwd:{q}"),
            json!({ "group": format!("g{q}"), "lports": [lport] }),
        );
    }
    let regions: Vec<u32> = (0..queues).map(|_| per).collect();
    let mut root = Map::new();
    root.insert(
        "application".into(),
        json!({ "name": app, "description": "lab benchmark" }),
    );
    root.insert(
        "umems".into(),
        json!({ "umem0": { "bufcnt": per * queues, "bufsz": 2, "mtype": "4KB", "regions": regions,
                           "description": "lab UMEM" } }),
    );
    root.insert("lports".into(), Value::Object(lports));
    root.insert("lcore-groups".into(), Value::Object(groups));
    root.insert("threads".into(), Value::Object(threads));
    root
}

/// nf-echo's configuration: the CNDP sections plus `echo { mode, addrs, udp_ports }` answering
/// for the lab's device-under-test addresses and the generator's UDP port.
pub fn echo_config(ifname: &str, queues: u32, cpus: &[usize]) -> String {
    let mut root = cndp_sections("nf-echo", ifname, queues, cpus);
    root.insert(
        "echo".into(),
        json!({ "mode": "mac-swap", "addrs": [DUT_IPV4.to_string(), DUT_IPV6.to_string()],
                "udp_ports": [UDP_PORT] }),
    );
    to_text(root)
}

/// nf-maglev's configuration: the CNDP sections plus a `maglev` section with one UDP VIP (the
/// dut address, port 9) in `mode` (`"gre"` or `"l2dsr"`) over four backends in 198.18.1.0/24
/// whose next hop is the generator end, so forwarded frames return to the generator and are
/// counted there.
pub fn maglev_config(ifname: &str, queues: u32, cpus: &[usize], mode: &str) -> String {
    to_text(maglev_root(ifname, queues, cpus, mode))
}

/// [`maglev_config`] with `"data_path": "xdp"` in the `maglev` section: the same VIP and backends,
/// forwarded by the kernel fast path (XDP_TX) instead of the AF_XDP workers.
pub fn maglev_xdp_config(ifname: &str, queues: u32, cpus: &[usize], mode: &str) -> String {
    let mut root = maglev_root(ifname, queues, cpus, mode);
    if let Some(Value::Object(m)) = root.get_mut("maglev") {
        m.insert("data_path".into(), json!("xdp"));
    }
    to_text(root)
}

fn maglev_root(ifname: &str, queues: u32, cpus: &[usize], mode: &str) -> Map<String, Value> {
    let mut root = cndp_sections("nf-maglev", ifname, queues, cpus);
    // The generator's UDP flows to the dut address are the VIP (forwarded in `mode`, "gre" or
    // "l2dsr"); four backends whose next hop is the generator, so every forwarded frame returns to
    // it and is counted.
    let backends: Vec<Value> = (1..=4)
        .map(|i| {
            json!({ "name": format!("be{i}"), "addr": format!("198.18.1.{i}"), "weight": 1,
                    "mac": GEN_MAC.to_string() })
        })
        .collect();
    root.insert(
        "maglev".into(),
        json!({
            "table_size": 65537,
            "local_addrs": [DUT_IPV4.to_string(), DUT_IPV6.to_string()],
            "gateway_mac": GEN_MAC.to_string(),
            "claim_all": false,
            "vips": [{ "name": "vip0", "addr": DUT_IPV4.to_string(), "proto": "udp", "port": UDP_PORT,
                       "mode": mode, "backends": backends }],
        }),
    );
    root
}

fn to_text(root: Map<String, Value>) -> String {
    let mut s = serde_json::to_string_pretty(&Value::Object(root)).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_config_two_queues() {
        let v: Value = serde_json::from_str(&echo_config("veth1", 2, &[0, 1])).unwrap();
        assert_eq!(v["umems"]["umem0"]["bufcnt"], 16);
        assert_eq!(v["umems"]["umem0"]["regions"], json!([8, 8]));
        assert_eq!(v["lports"]["veth1:1"]["qid"], 1);
        assert_eq!(v["lports"]["veth1:1"]["region"], 1);
        assert_eq!(v["lports"]["veth1:0"]["pmd"], "net_af_xdp");
        assert_eq!(v["lcore-groups"]["initial"], json!([0]));
        assert_eq!(v["lcore-groups"]["g1"], json!([1]));
        assert_eq!(v["threads"]["main"]["group"], "initial");
        assert_eq!(v["threads"]["fwd:1"]["lports"], json!(["veth1:1"]));
        assert_eq!(v["echo"]["mode"], "mac-swap");
        assert_eq!(v["echo"]["udp_ports"], json!([9]));
    }

    #[test]
    fn regions_always_sum_to_bufcnt() {
        for q in 1..=20u32 {
            let v: Value = serde_json::from_str(&echo_config("x", q, &[])).unwrap();
            let u = &v["umems"]["umem0"];
            let sum: u64 = u["regions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_u64().unwrap())
                .sum();
            assert_eq!(Some(sum), u["bufcnt"].as_u64(), "queues {q}");
            assert_eq!(u["regions"].as_array().unwrap().len(), q as usize);
        }
    }

    #[test]
    fn maglev_config_has_cndp_sections_and_vip() {
        let v: Value = serde_json::from_str(&maglev_config("veth1", 1, &[1], "l2dsr")).unwrap();
        assert_eq!(v["maglev"]["vips"][0]["mode"], "l2dsr");
        assert_eq!(v["lcore-groups"]["g0"], json!([1]));
        assert_eq!(v["maglev"]["vips"][0]["addr"], "198.18.0.2");
        assert_eq!(
            v["maglev"]["vips"][0]["backends"].as_array().unwrap().len(),
            4
        );
    }

    #[test]
    fn maglev_xdp_config_adds_only_the_data_path() {
        let mut af_xdp: Value =
            serde_json::from_str(&maglev_config("veth1", 2, &[0, 1], "gre")).unwrap();
        let xdp: Value =
            serde_json::from_str(&maglev_xdp_config("veth1", 2, &[0, 1], "gre")).unwrap();
        assert_eq!(xdp["maglev"]["data_path"], "xdp");
        af_xdp["maglev"]["data_path"] = "xdp".into();
        assert_eq!(af_xdp, xdp);
    }
}

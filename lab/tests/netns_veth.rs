//! Namespaces and veth pairs: created as asked, removed by Drop, even when a test panics.

mod common;

use lab::require_root;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;

use lab::{netns, tools, Lab, Mac, Netns, VethPair};

#[test]
#[ignore = "needs root"]
fn netns_and_veth_exist_until_dropped() {
    require_root();
    let a = Netns::new("x").unwrap();
    let b = Netns::new("y").unwrap();
    assert_ne!(a.name(), b.name());
    assert!(netns::exists(a.name()).unwrap());
    let pair = VethPair::new(&a, &b, 2).unwrap();
    let (ea, eb) = (pair.a().name().to_string(), pair.b().name().to_string());
    assert!(ea.len() <= 15 && eb.len() <= 15);
    assert!(a.links().unwrap().contains(&ea));
    assert!(b.links().unwrap().contains(&eb));
    assert!(
        !a.links().unwrap().contains(&eb),
        "ends live in their own namespaces"
    );

    // N queues each way.
    let queues = a
        .exec(&["ls", &format!("/sys/class/net/{ea}/queues")])
        .unwrap();
    for q in ["rx-0", "rx-1", "tx-0", "tx-1"] {
        assert!(
            queues.split_whitespace().any(|x| x == q),
            "{q} missing: {queues}"
        );
    }

    let mac: Mac = "02:1a:b0:00:10:01".parse().unwrap();
    pair.a().set_mac(mac).unwrap();
    assert_eq!(pair.a().mac().unwrap(), mac);
    assert!(pair.a().ifindex().unwrap() > 0);
    pair.a()
        .add_addr("198.18.5.1".parse().unwrap(), 24)
        .unwrap();
    pair.a()
        .add_addr("2001:2::5:1".parse().unwrap(), 64)
        .unwrap();
    let addrs = a.ip(&["addr", "show", "dev", &ea]).unwrap();
    assert!(addrs.contains("198.18.5.1/24"), "{addrs}");
    assert!(addrs.contains("2001:2::5:1/64"), "{addrs}");
    assert!(
        !addrs.contains("tentative"),
        "nodad addresses are usable at once: {addrs}"
    );
    let bad: IpAddr = "10.1.2.3".parse().unwrap();
    assert!(
        pair.a().add_addr(bad, 24).is_err(),
        "addresses outside the test ranges are refused"
    );
    pair.a().up().unwrap();
    pair.a()
        .add_neigh(
            "198.18.5.2".parse().unwrap(),
            Mac([2, 0x1a, 0xb0, 0, 0x10, 2]),
        )
        .unwrap();
    let neigh = a.ip(&["neigh", "show", "dev", &ea]).unwrap();
    assert!(
        neigh.contains("198.18.5.2") && neigh.contains("PERMANENT"),
        "{neigh}"
    );

    pair.b().set_gro(true).unwrap();
    let feats = b.exec(&["ethtool", "-k", &eb]).unwrap();
    assert!(feats.contains("generic-receive-offload: on"), "{feats}");
    pair.b().set_gro(false).unwrap();
    let feats = b.exec(&["ethtool", "-k", &eb]).unwrap();
    assert!(feats.contains("generic-receive-offload: off"), "{feats}");

    let stats = pair.a().stats().unwrap();
    assert!(stats.0.contains_key("rx_packets") && stats.0.contains_key("tx_bytes"));
    let per_queue = pair.b().ethtool_stats().unwrap();
    assert!(
        per_queue.0.contains_key("rx_queue_1_xdp_packets"),
        "{per_queue:?}"
    );

    let (na, nb) = (a.name().to_string(), b.name().to_string());
    drop(pair);
    assert!(!a.links().unwrap().contains(&ea));
    assert!(
        !b.links().unwrap().contains(&eb),
        "deleting one end deletes the peer"
    );
    drop(a);
    drop(b);
    assert!(!netns::exists(&na).unwrap());
    assert!(!netns::exists(&nb).unwrap());
}

#[test]
#[ignore = "needs root"]
fn xdp_attach_is_visible_and_detaches() {
    require_root();
    let a = Netns::new("x").unwrap();
    let b = Netns::new("y").unwrap();
    let pair = VethPair::new(&a, &b, 1).unwrap();
    assert_eq!(pair.b().xdp_prog().unwrap(), None);
    pair.b()
        .attach_xdp(Path::new(tools::XDP_PASS_OBJ), "xdp")
        .unwrap();
    let p = pair.b().xdp_prog().unwrap().expect("program attached");
    assert_eq!(p.name, "xdp_sink");
    assert!(p.id > 0);
    pair.b().detach_xdp().unwrap();
    assert_eq!(pair.b().xdp_prog().unwrap(), None);
}

#[test]
#[ignore = "needs root"]
fn everything_is_removed_after_a_panic() {
    require_root();
    let seen: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new(1).unwrap();
        lab.sink_returns().unwrap();
        seen.lock()
            .unwrap()
            .extend([lab.generator.name().to_string(), lab.dut.name().to_string()]);
        panic!("test body fails while the lab is up");
    }));
    assert!(result.is_err());
    let names = seen.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    for n in &names {
        assert!(!netns::exists(n).unwrap(), "{n} survived the panic");
    }
}

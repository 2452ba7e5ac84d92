//! The routed lab on its own, without nf-maglev: BIRD and the router's ECMP route, driven by stand-in VIP
//! holders (a process holding the VIPs on a TUN device it owns).
//!
//! Every holder that runs adds one nexthop to the router's route of each VIP; a holder killed with
//! SIGKILL takes its device along and its nexthop goes (the time it takes is printed); a BIRD stopped
//! takes its nexthops along too; a node whose link goes dark is withdrawn by BFD. The client reaches a VIP through the router (the holding namespace's
//! kernel answers the ping, since the VIP is its own address there). Needs root; skipped otherwise.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lab::maglev;
use lab::routed::{RoutedLab, VIPS};

const ROUTE_TIMEOUT: Duration = Duration::from_secs(20);

fn ping(lab: &RoutedLab, vip: IpAddr) {
    lab.client()
        .ns()
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &vip.to_string()])
        .unwrap_or_else(|e| panic!("ping {vip} from the client: {e:#}"));
}

#[test]
#[ignore = "needs root"]
fn holders_announce_and_withdraw_through_bird() {
    lab::require_root();
    let _serial = maglev::serial();
    let mut lab = RoutedLab::build(3, None).unwrap();
    for i in 0..3 {
        lab.start_bird(i).unwrap();
    }
    for vip in VIPS {
        assert!(
            lab.router_nexthops(vip).unwrap().is_empty(),
            "{vip} routed before any holder"
        );
    }

    for i in 0..3 {
        lab.start_holder(i).unwrap();
        let upto: Vec<usize> = (0..=i).collect();
        for vip in VIPS {
            let took = lab.wait_nexthops(vip, &upto, ROUTE_TIMEOUT).unwrap();
            eprintln!(
                "{vip}: holder on lb{i} announced, router shows {} nexthops after {took:?}",
                i + 1
            );
        }
    }
    for vip in VIPS {
        ping(&lab, vip);
    }
    // BFD runs beside every session (six: two families, three peers).
    let bfd = lab.birdc_router("show bfd sessions").unwrap();
    let up = bfd.lines().filter(|l| l.contains(" Up ")).count();
    eprintln!("{bfd}");
    assert_eq!(up, 6, "BFD sessions up:\n{bfd}");

    // SIGKILL: the device dies with the process, BIRD's `direct` sees the interface go, BGP withdraws.
    let at = lab.kill_holder(1).unwrap();
    assert!(!lab.vip_dev_exists(1), "the TUN device outlived its holder");
    let mut withdrawn = Vec::new();
    for vip in VIPS {
        lab.wait_nexthops(vip, &[0, 2], ROUTE_TIMEOUT).unwrap();
        withdrawn.push((vip, at.elapsed()));
    }
    for (vip, t) in &withdrawn {
        eprintln!(
            "{vip}: nexthop of lb1 withdrawn {:.1} ms after SIGKILL of its holder",
            t.as_secs_f64() * 1e3
        );
        assert!(*t < Duration::from_secs(2), "{vip}: withdrawal took {t:?}");
    }
    for vip in VIPS {
        ping(&lab, vip);
    }

    // Back again.
    lab.start_holder(1).unwrap();
    for vip in VIPS {
        lab.wait_nexthops(vip, &[0, 1, 2], ROUTE_TIMEOUT).unwrap();
    }

    // A BIRD that stops closes its sessions: the router drops that peer's routes.
    let at = Instant::now();
    lab.stop_bird(2).unwrap();
    for vip in VIPS {
        lab.wait_nexthops(vip, &[0, 1], ROUTE_TIMEOUT).unwrap();
    }
    eprintln!(
        "BIRD of lb2 stopped: both its nexthops gone after {:.1} ms",
        at.elapsed().as_secs_f64() * 1e3
    );
    lab.start_bird(2).unwrap();
    for vip in VIPS {
        let took = lab.wait_nexthops(vip, &[0, 1, 2], ROUTE_TIMEOUT).unwrap();
        eprintln!("{vip}: lb2 back after its BIRD restarted ({took:?} after the sessions came up)");
    }

    // A node that dies silently (no FIN, no reset: its link to the fabric goes dark): BFD (100 ms x 3)
    // notices, not BGP's 9 s hold time.
    let port = lab.lb(0).port().to_owned();
    let at = Instant::now();
    lab.fabric()
        .ip(&["link", "set", "dev", &port, "down"])
        .unwrap();
    for vip in VIPS {
        lab.wait_nexthops(vip, &[1, 2], ROUTE_TIMEOUT).unwrap();
    }
    let silent = at.elapsed();
    eprintln!(
        "lb0's link to the fabric dark: its nexthops gone after {:.1} ms (BFD)",
        silent.as_secs_f64() * 1e3
    );
    assert!(
        silent < Duration::from_secs(2),
        "a silent node withdrawn after {silent:?}: BFD did not act"
    );
    lab.fabric()
        .ip(&["link", "set", "dev", &port, "up"])
        .unwrap();
    lab.wait_sessions(0, ROUTE_TIMEOUT).unwrap();
    for vip in VIPS {
        lab.wait_nexthops(vip, &[0, 1, 2], ROUTE_TIMEOUT).unwrap();
    }

    // The last holder gone: no route at all.
    for i in 0..3 {
        lab.kill_holder(i).unwrap();
    }
    for vip in VIPS {
        lab.wait_nexthops(vip, &[], ROUTE_TIMEOUT).unwrap();
    }
    eprintln!(
        "router state at the end:\n{}",
        lab.birdc_router("show protocols").unwrap()
    );
}

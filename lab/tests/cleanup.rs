//! `lab cleanup`: leftovers of a run that never reached Drop are found by prefix and removed.
//! (Alone in its test binary: the prefix covers this process's every name.)

mod common;

use lab::require_root;
use lab::{cleanup, netns, Netns, VethPair};

#[test]
#[ignore = "needs root"]
fn cleanup_removes_forgotten_namespaces_and_links() {
    require_root();
    let a = Netns::new("x").unwrap();
    let b = Netns::new("y").unwrap();
    let pair = VethPair::new(&a, &b, 1).unwrap();
    let names = [a.name().to_string(), b.name().to_string()];
    // Simulate a process killed before its destructors ran.
    std::mem::forget(pair);
    std::mem::forget(a);
    std::mem::forget(b);

    let prefix = format!("{}{}_", lab::names::PREFIX, std::process::id());
    let report = cleanup::cleanup(&prefix, false).unwrap();
    for n in &names {
        assert!(report.netns.contains(n), "{n} not reported: {report:?}");
        assert!(!netns::exists(n).unwrap(), "{n} still exists");
    }
    assert!(
        cleanup::cleanup("la", false).is_err(),
        "short prefixes are refused"
    );
}

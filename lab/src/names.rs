//! Unique, short names for namespaces and interfaces.
//!
//! A name is `lab<pid>_<counter><tag>`: the pid separates concurrent test binaries, the counter
//! separates tests inside one binary (they run on parallel threads), and the fixed prefix lets
//! `lab cleanup --prefix lab` find leftovers of killed runs. Interface names must fit IFNAMSIZ (15
//! visible characters); names that would not fit are an error, never silently truncated into a
//! collision.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Result};

/// Prefix of every namespace and interface the harness creates.
pub const PREFIX: &str = "lab";

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Returns the next per-process sequence number (wraps at 0x1000 so names stay short).
fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed) % 0x1000
}

/// A fresh name `lab<pid>_<n><tag>`; `tag` is 1-4 lowercase letters or digits.
pub fn unique(tag: &str) -> Result<String> {
    if tag.is_empty()
        || tag.len() > 4
        || !tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        bail!("name tag {tag:?} must be 1-4 lowercase letters or digits");
    }
    let name = format!("{PREFIX}{}_{:x}{tag}", std::process::id(), next());
    if name.len() > IFNAME_MAX {
        bail!("generated name {name:?} is longer than {IFNAME_MAX} characters; use a shorter tag");
    }
    Ok(name)
}

/// Two fresh interface names sharing one counter value: `lab<pid>_<n>a` and `lab<pid>_<n>b`.
pub fn unique_pair() -> Result<(String, String)> {
    let base = format!("{PREFIX}{}_{:x}", std::process::id(), next());
    if base.len() + 1 > IFNAME_MAX {
        bail!("generated interface name {base}a is longer than {IFNAME_MAX} characters");
    }
    Ok((format!("{base}a"), format!("{base}b")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_short_and_prefixed() {
        let a = unique("g").unwrap();
        let b = unique("g").unwrap();
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.starts_with(PREFIX), "{n}");
            assert!(n.len() <= IFNAME_MAX, "{n}");
            assert!(n.contains(&std::process::id().to_string()), "{n}");
        }
        let (x, y) = unique_pair().unwrap();
        assert_eq!(x[..x.len() - 1], y[..y.len() - 1]);
        assert!(x.ends_with('a') && y.ends_with('b'));
    }

    #[test]
    fn bad_tags_are_rejected() {
        assert!(unique("").is_err());
        assert!(unique("toolong").is_err());
        assert!(unique("A").is_err());
        assert!(unique("a-b").is_err());
    }
}

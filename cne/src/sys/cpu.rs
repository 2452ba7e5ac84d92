//! CPU lists (`0-3,8,10-11`, the format of `cpuset` files and of `--cpus`) and the calling thread's
//! CPU affinity.

use std::io;

/// CPU numbers at or above this are refused in lists (the kernel's `CONFIG_NR_CPUS` maximum is 4096).
const MAX_CPUS: usize = 4096;

/// A CPU list that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU list {text:?}: {reason}")]
pub struct CpuListError {
    /// The text.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses a Linux CPU list such as `0-3,8,10-11` (whitespace and a trailing newline allowed) into
/// sorted, distinct CPU numbers.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, CpuListError> {
    let bad = |reason: &str| CpuListError {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    let mut cpus = Vec::new();
    for part in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: usize = lo.parse().map_err(|_| bad("not a number"))?;
        let hi: usize = hi.parse().map_err(|_| bad("not a number"))?;
        if lo > hi {
            return Err(bad("range runs backwards"));
        }
        if hi >= MAX_CPUS {
            return Err(bad("CPU number above 4095"));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// The CPUs the calling thread may run on (`sched_getaffinity`), in ascending order.
pub fn affinity() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a writable cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    super::cvt(rc)?;
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024);
    Ok((0..max)
        .filter(|&c| {
            // SAFETY: c < CPU_SETSIZE, so the bit test stays inside set.
            unsafe { libc::CPU_ISSET(c, &set) }
        })
        .collect())
}

/// Pins the calling thread to `cpus` (`sched_setaffinity`).
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024);
    for &c in cpus {
        if c >= max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {c} is beyond CPU_SETSIZE"),
            ));
        }
        // SAFETY: c < CPU_SETSIZE, checked above; `set` is a valid cpu_set_t.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    super::cvt(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list(" 5 ").unwrap(), vec![5]);
        assert!(parse_cpu_list("").unwrap().is_empty());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("0-99999").is_err());
    }

    #[test]
    fn pinning_to_the_current_affinity_keeps_it() {
        let mine = affinity().unwrap();
        assert!(!mine.is_empty());
        std::thread::spawn(move || {
            pin_current_thread(&mine).unwrap();
            assert_eq!(affinity().unwrap(), mine);
            assert!(pin_current_thread(&[usize::MAX]).is_err());
        })
        .join()
        .unwrap();
    }
}

//! Performance hints for large, randomly accessed tables: a cache prefetch and transparent huge pages.
//!
//! Neither changes what a program computes. A prefetch asks the CPU to start loading a cache line that a
//! later access will need, so that the cache misses of many independent lookups (a burst of packets into a
//! connection table far larger than the caches) are in flight together instead of one after another. Huge
//! pages let one TLB entry cover 2 MiB instead of 4 KiB, so a table of tens of megabytes no longer costs a
//! page walk per random access (a nested one under a hypervisor). Both are safe to offer: a prefetch never
//! faults and has no architectural effect, and `madvise(MADV_HUGEPAGE)` only changes how the kernel backs
//! memory the caller already owns, never its contents.

/// Starts loading the cache line holding `r` into every cache level, without waiting for it. A no-op on
/// targets without a prefetch instruction.
#[inline(always)]
pub fn prefetch_read<T>(r: &T) {
    prefetch_ptr(std::ptr::from_ref(r).cast());
}

/// Starts loading the cache line at address `p`, like [`prefetch_read`], for memory reached through a raw
/// pointer (a frame of the UMEM). `p` is never dereferenced: any address is allowed.
#[inline(always)]
pub fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: PREFETCHT0 is a hint: it reads nothing architecturally, cannot fault even on an invalid
        // address, and writes nothing.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Starts loading the cache line at address `p` with the intent to write it (`PREFETCHW`), for a line
/// the caller is about to fill (headers prepended into a frame's headroom): the stores then find the
/// line in the cache instead of waiting, one after another, for it to be read in. `p` is never
/// dereferenced: any address is allowed.
#[inline(always)]
pub fn prefetch_write_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
        // SAFETY: PREFETCHW is a hint like PREFETCHT0: it reads and writes nothing architecturally and
        // cannot fault, even on an invalid address (CPUs without it execute it as a no-op).
        unsafe { _mm_prefetch::<_MM_HINT_ET0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the kernel to back the whole pages inside `mem` with transparent huge pages (`MADV_HUGEPAGE`), for
/// memory that will be accessed at random. Call it on memory not yet touched (a `Vec`'s
/// `spare_capacity_mut()` right after `Vec::with_capacity`), so that the first writes fault huge pages in;
/// memory already backed by small pages is only collapsed later, if ever, by `khugepaged`.
///
/// A hint: the kernel may have THP disabled or no huge page free, and the memory works the same either way.
/// Errors are those of `madvise(2)` (e.g. `EINVAL` when the kernel has no THP support). Memory shorter than a
/// page is left alone.
pub fn advise_huge_pages<T>(mem: &[T]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let start = mem.as_ptr() as usize;
        let end = start + std::mem::size_of_val(mem);
        let (first, last) = (start.next_multiple_of(page), end / page * page);
        if last <= first {
            return Ok(());
        }
        // SAFETY: [first, last) is page-aligned and lies inside `mem`, which the caller borrows from memory
        // it owns. MADV_HUGEPAGE neither unmaps nor changes the contents of that memory: it only marks the
        // mapping as eligible for huge pages.
        let rc = unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            )
        };
        crate::sys::cvt(rc)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = mem;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_is_only_a_hint() {
        let v = vec![7u64; 1024];
        for x in &v {
            prefetch_read(x);
        }
        assert!(v.iter().all(|&x| x == 7));
    }

    #[test]
    fn huge_page_advice_keeps_contents() {
        const LEN: usize = 8 << 20;
        let mut v: Vec<u8> = Vec::with_capacity(LEN);
        // The kernel may refuse (no THP support): the advice is a hint, the memory must work regardless.
        let _ = advise_huge_pages(v.spare_capacity_mut());
        v.resize(LEN, 0xa5);
        assert!(v.iter().all(|&b| b == 0xa5));
        assert!(
            advise_huge_pages(&v[..10]).is_ok(),
            "less than a page: nothing to do"
        );
        if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            advise_huge_pages(&v).unwrap_or_else(|e| panic!("madvise on owned heap memory: {e}"));
        }
    }
}

//! Loading and attaching BPF objects: the machinery the XDP programs of this crate ([`super::filter`],
//! [`super::decap`]) share.
//!
//! An embedded object is opened and loaded with libbpf ([`load_object`]); its program and map
//! descriptors are duplicated and the libbpf object is closed at once, so what remains are plain
//! [`OwnedFd`]s: [`Map`]s whose key and value sizes were checked against the Rust types, and an
//! [`Attachment`] that holds the program on one interface through an XDP `bpf_link` and detaches it on
//! drop. Attaching never replaces another program silently (see [`Attachment`]).

use std::ffi::{c_int, c_void, CStr};
use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::bpf::filter::{XdpError, XdpMode};
use crate::sys::{parse_ret, parse_ret_fd};

/// A BPF object file embedded in the binary, aligned for libelf.
#[repr(C, align(8))]
pub(crate) struct Aligned<B: ?Sized>(pub(crate) B);

/// `size_of::<T>()` as the `u32` the BPF ABI uses (all sizes here are a few hundred bytes at most).
fn size_u32<T>() -> u32 {
    u32::try_from(size_of::<T>()).unwrap_or(u32::MAX)
}

/// A BPF map of the loaded object whose key and value sizes were checked to be those of `K` and `V`
/// (plain-data types without padding: integers and byte arrays), so every call that hands the kernel a
/// `&K` or `&V` stays within those objects.
#[derive(Debug)]
pub(crate) struct Map<K, V> {
    pub(crate) name: &'static str,
    pub(crate) fd: OwnedFd,
    pub(crate) max_entries: u32,
    /// Per-CPU maps read one `V` per possible CPU: only [`Map::percpu_sum`] may read them.
    pub(crate) percpu: bool,
    pub(crate) _kv: PhantomData<fn() -> (K, V)>,
}

impl<K: Copy + Default, V: Copy + Default> Map<K, V> {
    /// Takes a map descriptor after checking its key and value sizes against `K` and `V`.
    pub(crate) fn checked(name: &'static str, fd: OwnedFd) -> Result<Self, XdpError> {
        let mut info = cne_sys::bpf_map_info::default();
        let mut len = size_u32::<cne_sys::bpf_map_info>();
        // SAFETY: `info` is a writable bpf_map_info of `len` bytes; the kernel writes at most `len` bytes.
        let rc = unsafe {
            cne_sys::bpf_obj_get_info_by_fd(
                fd.as_raw_fd(),
                std::ptr::from_mut(&mut info).cast::<c_void>(),
                &mut len,
            )
        };
        parse_ret(rc).map_err(|e| XdpError::bpf("bpf_obj_get_info_by_fd", name, e))?;
        let expected = (size_u32::<K>(), size_u32::<V>());
        let found = (info.key_size, info.value_size);
        if found != expected {
            return Err(XdpError::MapLayout {
                map: name,
                found,
                expected,
            });
        }
        Ok(Map {
            name,
            fd,
            max_entries: info.max_entries,
            percpu: matches!(
                info.type_,
                cne_sys::BPF_MAP_TYPE_PERCPU_HASH
                    | cne_sys::BPF_MAP_TYPE_PERCPU_ARRAY
                    | cne_sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
                    | cne_sys::BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE
            ),
            _kv: PhantomData,
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Writes `key -> value` (not in a per-CPU map: it takes a value per CPU).
    pub(crate) fn update(&self, key: &K, value: &V) -> Result<(), XdpError> {
        if self.percpu {
            return Err(XdpError::bpf(
                "bpf_map_update_elem",
                self.name,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        // SAFETY: key and value point to live objects of the map's key and value size (checked in
        // Map::checked).
        let rc = unsafe {
            cne_sys::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                std::ptr::from_ref(key).cast::<c_void>(),
                std::ptr::from_ref(value).cast::<c_void>(),
                u64::from(cne_sys::BPF_ANY),
            )
        };
        parse_ret(rc)
            .map(drop)
            .map_err(|e| XdpError::bpf("bpf_map_update_elem", self.name, e))
    }

    /// Writes `keys[i] -> values[i]` for every `i`, many entries per `bpf(2)` call
    /// (`BPF_MAP_UPDATE_BATCH`; not in a per-CPU map). Not atomic: on an error, a prefix may have been
    /// written.
    pub(crate) fn update_batch(&self, keys: &[K], values: &[V]) -> Result<(), XdpError> {
        /// Entries per call: bounds the kernel's copy of a batch.
        const CHUNK: usize = 16384;
        if keys.len() != values.len() || self.percpu {
            return Err(XdpError::bpf(
                "bpf_map_update_batch",
                self.name,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
            // Fits: a chunk has at most CHUNK entries.
            let mut count = u32::try_from(k.len()).unwrap_or(0);
            // SAFETY: keys and values point to `count` live objects each, of the map's key and value size
            // (checked in Map::checked); count is writable; null opts are libbpf's defaults.
            let rc = unsafe {
                cne_sys::bpf_map_update_batch(
                    self.fd.as_raw_fd(),
                    k.as_ptr().cast::<c_void>(),
                    v.as_ptr().cast::<c_void>(),
                    &mut count,
                    std::ptr::null(),
                )
            };
            parse_ret(rc).map_err(|e| XdpError::bpf("bpf_map_update_batch", self.name, e))?;
        }
        Ok(())
    }

    /// Reads the value at `key`; `None` when absent.
    pub(crate) fn lookup(&self, key: &K) -> Result<Option<V>, XdpError> {
        if self.percpu {
            return Err(XdpError::bpf(
                "bpf_map_lookup_elem",
                self.name,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let mut value = V::default();
        // SAFETY: key points to a live object of the key size, value to a writable one of the value size
        // (the map is not per-CPU, so the kernel writes exactly one value).
        let rc = unsafe {
            cne_sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                std::ptr::from_ref(key).cast::<c_void>(),
                std::ptr::from_mut(&mut value).cast::<c_void>(),
            )
        };
        match parse_ret(rc) {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(XdpError::bpf("bpf_map_lookup_elem", self.name, e)),
        }
    }

    /// Deletes `key`; `false` when it was absent.
    pub(crate) fn delete(&self, key: &K) -> Result<bool, XdpError> {
        // SAFETY: key points to a live object of the map's key size.
        let rc = unsafe {
            cne_sys::bpf_map_delete_elem(
                self.fd.as_raw_fd(),
                std::ptr::from_ref(key).cast::<c_void>(),
            )
        };
        match parse_ret(rc) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(XdpError::bpf("bpf_map_delete_elem", self.name, e)),
        }
    }

    /// Deletes every key of a hash map for which `doomed` holds (control path: reads the keys first).
    pub(crate) fn delete_where(&self, doomed: impl Fn(&K) -> bool) -> Result<(), XdpError> {
        for key in self.keys()?.iter().filter(|k| doomed(k)) {
            self.delete(key)?;
        }
        Ok(())
    }

    /// All keys of a hash map (control path: allocates).
    pub(crate) fn keys(&self) -> Result<Vec<K>, XdpError> {
        let mut keys = Vec::new();
        let mut prev: Option<K> = None;
        loop {
            let mut next = K::default();
            let prev_ptr = prev
                .as_ref()
                .map_or(std::ptr::null(), |k| std::ptr::from_ref(k).cast::<c_void>());
            // SAFETY: prev_ptr is null (first key) or points to a live key; next is a writable key.
            let rc = unsafe {
                cne_sys::bpf_map_get_next_key(
                    self.fd.as_raw_fd(),
                    prev_ptr,
                    std::ptr::from_mut(&mut next).cast::<c_void>(),
                )
            };
            match parse_ret(rc) {
                Ok(_) => {
                    keys.push(next);
                    prev = Some(next);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
                Err(e) => return Err(XdpError::bpf("bpf_map_get_next_key", self.name, e)),
            }
        }
    }
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock of `bpf_ktime_get_coarse_ns`.
pub(crate) fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a writable timespec; CLOCK_MONOTONIC_COARSE exists on every Linux we run on.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// The number of possible CPUs: how many values a per-CPU map holds per key.
pub(crate) fn possible_cpus() -> Result<usize, XdpError> {
    // SAFETY: libbpf_num_possible_cpus takes no arguments; it reads and caches a sysfs file.
    let ncpus = unsafe { cne_sys::libbpf_num_possible_cpus() };
    let ncpus = parse_ret(ncpus).map_err(|e| {
        XdpError::bpf(
            "libbpf_num_possible_cpus",
            "/sys/devices/system/cpu/possible",
            e,
        )
    })?;
    Ok(usize::try_from(ncpus).unwrap_or(1).max(1))
}

impl<K: Copy + Default, V: Copy + Default> Map<K, V> {
    /// Fails unless this is a per-CPU map whose values the kernel lays out without padding (a per-CPU
    /// value is rounded up to 8 bytes, so `V` must be a multiple of 8 long).
    fn check_percpu(&self, call: &'static str) -> Result<(), XdpError> {
        if !self.percpu || size_of::<V>() % 8 != 0 {
            return Err(XdpError::bpf(
                call,
                self.name,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        Ok(())
    }

    /// The values of every possible CPU at `key` of a per-CPU map; `None` when absent.
    pub(crate) fn percpu_lookup(&self, key: &K) -> Result<Option<Vec<V>>, XdpError> {
        self.check_percpu("bpf_map_lookup_elem")?;
        let mut values = vec![V::default(); possible_cpus()?];
        // SAFETY: key points to a live object of the key size; values holds one value per possible CPU,
        // each of the map's value size, a multiple of 8 (checked above), which is what the kernel writes.
        let rc = unsafe {
            cne_sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                std::ptr::from_ref(key).cast::<c_void>(),
                values.as_mut_ptr().cast::<c_void>(),
            )
        };
        match parse_ret(rc) {
            Ok(_) => Ok(Some(values)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(XdpError::bpf("bpf_map_lookup_elem", self.name, e)),
        }
    }
}

impl<V: Copy + Default> Map<u32, V> {
    /// The values of keys `first..first + count` (those below the map's size) of a per-CPU array,
    /// every possible CPU's value of a key in a row: a few `bpf(2)` calls (`BPF_MAP_LOOKUP_BATCH`)
    /// instead of one per key.
    pub(crate) fn percpu_array_read(&self, first: u32, count: u32) -> Result<Vec<V>, XdpError> {
        /// Keys per call: bounds the kernel's buffer of a batch.
        const CHUNK: u32 = 4096;
        const CALL: &str = "bpf_map_lookup_batch";
        self.check_percpu(CALL)?;
        let cpus = possible_cpus()?;
        let want = count.min(self.max_entries.saturating_sub(first));
        let mut values = vec![V::default(); want as usize * cpus];
        let mut keys = vec![0u32; CHUNK.min(want) as usize];
        let mut read = 0u32;
        // A batch goes on after the key it is given (none: from key 0).
        let mut next = first.wrapping_sub(1);
        while read < want {
            let mut n = CHUNK.min(want - read);
            let from = next;
            let out = &mut values[read as usize * cpus..];
            // SAFETY: `from` and `next` are live u32s (an array's batch position is a key); `keys` holds
            // at least `n` u32 keys and `out` at least `n` values of every possible CPU, each of the map's
            // value size, a multiple of 8 (check_percpu), which is what the kernel writes; null opts are
            // libbpf's defaults.
            let rc = unsafe {
                cne_sys::bpf_map_lookup_batch(
                    self.fd.as_raw_fd(),
                    if read == 0 && first == 0 {
                        std::ptr::null_mut()
                    } else {
                        std::ptr::from_ref(&from).cast_mut().cast::<c_void>()
                    },
                    std::ptr::from_mut(&mut next).cast::<c_void>(),
                    keys.as_mut_ptr().cast::<c_void>(),
                    out.as_mut_ptr().cast::<c_void>(),
                    &mut n,
                    std::ptr::null(),
                )
            };
            let done = match parse_ret(rc) {
                Ok(_) => false,
                // The last batch of the map: `n` says how many it held.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
                Err(e) => return Err(XdpError::bpf(CALL, self.name, e)),
            };
            read = read.saturating_add(n.min(want - read));
            if done || n == 0 {
                break;
            }
        }
        values.truncate(read as usize * cpus);
        Ok(values)
    }
}

impl Map<u32, u64> {
    /// Sum over all possible CPUs of the `u64` at `index` of a per-CPU array.
    pub(crate) fn percpu_sum(&self, index: u32) -> Result<u64, XdpError> {
        if !self.percpu {
            return Err(XdpError::bpf(
                "bpf_map_lookup_elem",
                self.name,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        // A u64 per-CPU value occupies exactly 8 bytes per CPU (values are rounded up to 8).
        let mut values = vec![0u64; possible_cpus()?];
        // SAFETY: index is a live u32 key; values holds one 8-byte value per possible CPU, which is what
        // the kernel writes for a per-CPU map with 8-byte values (checked at load).
        let rc = unsafe {
            cne_sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                std::ptr::from_ref(&index).cast::<c_void>(),
                values.as_mut_ptr().cast::<c_void>(),
            )
        };
        parse_ret(rc).map_err(|e| XdpError::bpf("bpf_map_lookup_elem", self.name, e))?;
        Ok(values.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
    }
}

/// A libbpf `*_opts` struct in zeroed memory.
///
/// libbpf's `OPTS_VALID` refuses (EINVAL) an opts struct whose bytes past the last field it knows are
/// not zero, trailing padding included. Rust leaves padding undefined in struct literals and in typed
/// copies (even of a `MaybeUninit`), so the struct lives in an array of `u64` (which has no padding, so
/// every move copies every byte) and is only ever written field by field through
/// [`LibbpfOpts::get_mut`].
struct LibbpfOpts<T> {
    buf: [u64; 16],
    _opts: PhantomData<T>,
}

impl<T> LibbpfOpts<T> {
    /// Zeroed opts with `sz` set to the size of `T`.
    ///
    /// # Safety
    /// All-zero bytes must be a valid `T`, and `T` must start with libbpf's `size_t sz` field.
    unsafe fn new() -> Self {
        const { assert!(size_of::<T>() <= 16 * 8 && std::mem::align_of::<T>() <= 8) };
        let mut buf = [0u64; 16];
        buf[0] = size_of::<T>() as u64;
        LibbpfOpts {
            buf,
            _opts: PhantomData,
        }
    }

    /// The struct, for field writes (never assign it whole: that would make its padding undefined).
    fn get_mut(&mut self) -> &mut T {
        // SAFETY: buf is 8-aligned and at least size_of::<T>() bytes (asserted in new); it holds a valid
        // T (zeroes, a valid T by new's contract, then field writes through this reference only).
        unsafe { &mut *self.buf.as_mut_ptr().cast::<T>() }
    }

    fn as_ptr(&self) -> *const T {
        self.buf.as_ptr().cast::<T>()
    }

    fn as_mut_ptr(&mut self) -> *mut T {
        self.buf.as_mut_ptr().cast::<T>()
    }
}

/// Closes a libbpf object on every path out of [`load_object`].
struct ObjectGuard(*mut cne_sys::bpf_object);

impl Drop for ObjectGuard {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful bpf_object__open_mem and is closed exactly once.
        unsafe { cne_sys::bpf_object__close(self.0) };
    }
}

/// Duplicates a descriptor owned by libbpf so that it outlives the object.
fn dup_fd(fd: c_int, call: &'static str, target: &str) -> Result<OwnedFd, XdpError> {
    let fd = parse_ret(fd).map_err(|e| XdpError::bpf(call, target, e))?;
    // SAFETY: fd is a descriptor libbpf holds open until bpf_object__close, which happens after this.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .map_err(|e| XdpError::bpf("fcntl(F_DUPFD_CLOEXEC)", target, e))
}

/// A loaded (not yet attached) program and its maps, in the order asked for.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) prog: OwnedFd,
    pub(crate) maps: Vec<OwnedFd>,
}

impl ObjectGuard {
    /// The object's map `name` (open or loaded), valid while the object is.
    fn find_map(&self, name: &CStr) -> Result<*mut cne_sys::bpf_map, XdpError> {
        // SAFETY: self.0 is an open object; name is NUL-terminated.
        let map = unsafe { cne_sys::bpf_object__find_map_by_name(self.0, name.as_ptr()) };
        if map.is_null() {
            return Err(XdpError::bpf(
                "bpf_object__find_map_by_name",
                name.to_string_lossy(),
                io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        Ok(map)
    }
}

/// How many entries a map of an object gets when it is created.
#[derive(Clone, Copy, Debug)]
pub(crate) enum MapSize {
    /// This many.
    Entries(u32),
    /// The number compiled in, once for every possible CPU: a plain array with one part per CPU, so
    /// the program and this crate share one constant.
    PerCpu,
}

/// Opens and loads an embedded BPF object, returning its program and the named maps. `sizes` gives maps
/// of the object a number of entries other than the one compiled in (before they are created).
pub(crate) fn load_object(
    obj: &'static [u8],
    obj_name: &'static CStr,
    prog_name: &'static CStr,
    map_names: &[&'static CStr],
    sizes: &[(&'static CStr, MapSize)],
) -> Result<Loaded, XdpError> {
    let target = obj_name.to_string_lossy();
    // SAFETY: bpf_object_open_opts holds integers, a bool, a bitfield and pointers (all-zero is valid)
    // and starts with `size_t sz`.
    let mut opts = unsafe { LibbpfOpts::<cne_sys::bpf_object_open_opts>::new() };
    opts.get_mut().object_name = obj_name.as_ptr();
    // SAFETY: obj is a 'static ELF image (libbpf may keep pointing into it while the object lives);
    // opts and the name it points to are valid for the call.
    let raw = unsafe {
        cne_sys::bpf_object__open_mem(obj.as_ptr().cast::<c_void>(), obj.len(), opts.as_ptr())
    };
    if raw.is_null() {
        return Err(XdpError::bpf(
            "bpf_object__open_mem",
            target,
            io::Error::last_os_error(),
        ));
    }
    let object = ObjectGuard(raw);
    for (name, size) in sizes {
        let map = object.find_map(name)?;
        let entries = match *size {
            MapSize::Entries(n) => n,
            MapSize::PerCpu => {
                let cpus = u32::try_from(possible_cpus()?).unwrap_or(u32::MAX);
                // SAFETY: map belongs to the open object.
                let compiled = unsafe { cne_sys::bpf_map__max_entries(map) };
                compiled.checked_mul(cpus).ok_or_else(|| {
                    XdpError::bpf(
                        "bpf_map__set_max_entries",
                        name.to_string_lossy(),
                        io::Error::from_raw_os_error(libc::E2BIG),
                    )
                })?
            }
        };
        // SAFETY: map belongs to the open object, whose maps are not created yet.
        let rc = unsafe { cne_sys::bpf_map__set_max_entries(map, entries) };
        parse_ret(rc)
            .map_err(|e| XdpError::bpf("bpf_map__set_max_entries", name.to_string_lossy(), e))?;
    }
    // SAFETY: object.0 is an open, not yet loaded object.
    let rc = unsafe { cne_sys::bpf_object__load(object.0) };
    parse_ret(rc).map_err(|e| XdpError::bpf("bpf_object__load", target.clone(), e))?;

    // SAFETY: object.0 is a loaded object; prog_name is NUL-terminated.
    let prog = unsafe { cne_sys::bpf_object__find_program_by_name(object.0, prog_name.as_ptr()) };
    if prog.is_null() {
        return Err(XdpError::bpf(
            "bpf_object__find_program_by_name",
            prog_name.to_string_lossy(),
            io::Error::from_raw_os_error(libc::ENOENT),
        ));
    }
    // SAFETY: prog is a program of the loaded object, valid until the object is closed.
    let prog_fd = unsafe { cne_sys::bpf_program__fd(prog) };
    let prog = dup_fd(prog_fd, "bpf_program__fd", &prog_name.to_string_lossy())?;

    let mut maps = Vec::with_capacity(map_names.len());
    for name in map_names {
        let map = object.find_map(name)?;
        // SAFETY: map is a map of the loaded object, valid until the object is closed.
        let fd = unsafe { cne_sys::bpf_map__fd(map) };
        maps.push(dup_fd(fd, "bpf_map__fd", &name.to_string_lossy())?);
    }
    drop(object);
    Ok(Loaded { prog, maps })
}

/// The interface index of `ifname` in the current network namespace.
pub(crate) fn ifindex(ifname: &str) -> Result<u32, XdpError> {
    crate::sys::netdev::ifindex(ifname).ok_or_else(|| XdpError::NetdevNotFound {
        ifname: ifname.to_string(),
    })
}

/// Kernel id and name of a loaded program.
fn prog_info(fd: BorrowedFd<'_>) -> io::Result<(u32, String)> {
    let mut info = cne_sys::bpf_prog_info::default();
    let mut len = size_u32::<cne_sys::bpf_prog_info>();
    // SAFETY: info is a writable bpf_prog_info of len bytes; all its pointer fields are zero, so the
    // kernel writes nothing else.
    let rc = unsafe {
        cne_sys::bpf_obj_get_info_by_fd(
            fd.as_raw_fd(),
            std::ptr::from_mut(&mut info).cast::<c_void>(),
            &mut len,
        )
    };
    parse_ret(rc)?;
    let name: Vec<u8> = info
        .name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| c.to_ne_bytes()[0])
        .collect();
    Ok((info.id, String::from_utf8_lossy(&name).into_owned()))
}

/// Name of the program with kernel id `id`, `?` if it cannot be read (it may have gone meanwhile).
fn prog_name_by_id(id: u32) -> String {
    // SAFETY: plain syscall wrapper; the returned descriptor is owned below.
    let fd = unsafe { cne_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return "?".to_string();
    }
    // SAFETY: fd is a fresh descriptor this function owns and nothing else closes.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    prog_info(fd.as_fd()).map_or_else(|_| "?".to_string(), |(_, name)| name)
}

/// Program ids attached to `ifindex`, per attach mode.
fn query(ifindex: u32, ifname: &str) -> Result<cne_sys::bpf_xdp_query_opts, XdpError> {
    // SAFETY: bpf_xdp_query_opts holds integers (all-zero is valid) and starts with `size_t sz`.
    let mut opts = unsafe { LibbpfOpts::<cne_sys::bpf_xdp_query_opts>::new() };
    let index = c_int::try_from(ifindex).map_err(|_| XdpError::NetdevNotFound {
        ifname: ifname.to_string(),
    })?;
    // SAFETY: opts is a writable bpf_xdp_query_opts whose sz field is its size.
    let rc = unsafe { cne_sys::bpf_xdp_query(index, 0, opts.as_mut_ptr()) };
    parse_ret(rc).map_err(|e| XdpError::bpf("bpf_xdp_query", ifname, e))?;
    Ok(*opts.get_mut())
}

/// The `bpf_link` of type XDP on `ifindex` that holds program `prog_id`, if there is one: its kernel id
/// and an open descriptor. Links are global, interface indices are per network namespace: matching the
/// program id as well keeps a link of another namespace from being taken for ours.
fn find_xdp_link(ifindex: u32, prog_id: u32) -> Option<(u32, OwnedFd)> {
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // ENOENT: no more links (or no permission to list them).
        // SAFETY: next is a writable u32 for the call.
        parse_ret(unsafe { cne_sys::bpf_link_get_next_id(id, &mut next) }).ok()?;
        id = next;
        // SAFETY: plain syscall wrapper; `parse_ret_fd` owns the returned descriptor.
        let Ok(fd) = parse_ret_fd(unsafe { cne_sys::bpf_link_get_fd_by_id(id) }) else {
            continue; // released meanwhile
        };
        let mut info = cne_sys::bpf_link_info::default();
        let mut len = size_u32::<cne_sys::bpf_link_info>();
        // SAFETY: info is a writable bpf_link_info of len bytes; its pointer fields (for other link
        // types) are zero, so the kernel writes nothing else.
        let rc = unsafe {
            cne_sys::bpf_obj_get_info_by_fd(
                fd.as_raw_fd(),
                std::ptr::from_mut(&mut info).cast::<c_void>(),
                &mut len,
            )
        };
        if parse_ret(rc).is_err()
            || info.type_ != cne_sys::BPF_LINK_TYPE_XDP
            || info.prog_id != prog_id
        {
            continue;
        }
        // SAFETY: the link is of type XDP, so `xdp` is the union member the kernel filled in.
        let link_ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
        if link_ifindex == ifindex {
            return Some((id, fd));
        }
    }
}

/// A program attached to one interface through an XDP `bpf_link`: closing the link (on drop, or when the
/// process dies) detaches the program.
#[derive(Debug)]
pub(crate) struct Attachment {
    ifname: String,
    mode: XdpMode,
    prog_id: u32,
    prog: OwnedFd,
    /// The link holding `prog` on the interface. Only this process has it (the kernel creates link
    /// descriptors close-on-exec), so nobody else can change what it attaches.
    link: OwnedFd,
}

impl Attachment {
    /// Fails with [`XdpError::AlreadyAttached`] if `ifindex` runs a program, unless `force`.
    pub(crate) fn refuse_foreign(ifname: &str, ifindex: u32, force: bool) -> Result<(), XdpError> {
        if force {
            return Ok(());
        }
        let q = query(ifindex, ifname)?;
        match [q.drv_prog_id, q.skb_prog_id, q.hw_prog_id]
            .into_iter()
            .find(|id| *id != 0)
        {
            Some(id) => Err(XdpError::AlreadyAttached {
                ifname: ifname.to_string(),
                id,
                name: prog_name_by_id(id),
            }),
            None => Ok(()),
        }
    }

    /// Removes whatever XDP program `ifindex` runs (`--force`): a program held by a `bpf_link` is
    /// detached through the link (`BPF_LINK_DETACH`), one attached through netlink is detached by netlink.
    fn remove_existing(ifname: &str, ifindex: u32, index: c_int) -> Result<(), XdpError> {
        let q = query(ifindex, ifname)?;
        for (id, mode) in [
            (q.drv_prog_id, cne_sys::XDP_FLAGS_DRV_MODE),
            (q.skb_prog_id, cne_sys::XDP_FLAGS_SKB_MODE),
            (q.hw_prog_id, cne_sys::XDP_FLAGS_HW_MODE),
        ] {
            if id == 0 {
                continue;
            }
            let name = prog_name_by_id(id);
            if let Some((link_id, link)) = find_xdp_link(ifindex, id) {
                log::warn!(
                    "{ifname}: detaching XDP program id {id} ({name}) held by bpf_link id {link_id}, \
                     as forced"
                );
                // SAFETY: plain syscall wrapper on an open link descriptor.
                let rc = unsafe { cne_sys::bpf_link_detach(link.as_raw_fd()) };
                parse_ret(rc).map_err(|source| XdpError::ForeignLink {
                    ifname: ifname.to_string(),
                    id,
                    name,
                    link: format!("bpf_link id {link_id}"),
                    source,
                })?;
                continue;
            }
            log::warn!("{ifname}: detaching XDP program id {id} ({name}), as forced");
            // SAFETY: plain netlink request; a null opts pointer means no options.
            let rc = unsafe { cne_sys::bpf_xdp_detach(index, mode, std::ptr::null()) };
            match parse_ret(rc) {
                Ok(_) => {}
                // Attached by a link we could not see (another user namespace, no permission to list).
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(XdpError::ForeignLink {
                        ifname: ifname.to_string(),
                        id,
                        name,
                        link: "a bpf_link".to_string(),
                        source: e,
                    })
                }
                Err(e) => return Err(XdpError::bpf("bpf_xdp_detach", ifname, e)),
            }
        }
        Ok(())
    }

    /// Attaches `prog` to `ifname` through an XDP `bpf_link`. Without `force`, an interface already
    /// running a program is refused; with it, that program is detached first (see
    /// [`remove_existing`](Self::remove_existing)).
    pub(crate) fn attach(
        ifname: &str,
        ifindex: u32,
        mode: XdpMode,
        force: bool,
        prog: OwnedFd,
    ) -> Result<Self, XdpError> {
        let index = c_int::try_from(ifindex).map_err(|_| XdpError::NetdevNotFound {
            ifname: ifname.to_string(),
        })?;
        if force {
            Self::remove_existing(ifname, ifindex, index)?;
        } else {
            Self::refuse_foreign(ifname, ifindex, false)?;
        }
        // SAFETY: bpf_link_create_opts holds integers, pointers and unions of those (all-zero is valid)
        // and starts with `size_t sz`.
        let mut opts = unsafe { LibbpfOpts::<cne_sys::bpf_link_create_opts>::new() };
        // Only the mode bit: the kernel refuses the other XDP flags on links. A link never replaces an
        // attached program (EBUSY, or EEXIST for one in the other mode), which is the "no existing
        // program" guard the netlink attach needed XDP_FLAGS_UPDATE_IF_NOEXIST for.
        opts.get_mut().flags = mode.flags();
        // SAFETY: prog is an open program descriptor, index a valid interface index, opts a valid
        // bpf_link_create_opts for the call.
        let rc = unsafe {
            cne_sys::bpf_link_create(prog.as_raw_fd(), index, cne_sys::BPF_XDP, opts.as_ptr())
        };
        let fd = match parse_ret(rc) {
            Ok(fd) => fd,
            Err(e) => {
                return Err(match e.raw_os_error() {
                    Some(libc::EOPNOTSUPP) if mode == XdpMode::Native => {
                        XdpError::NativeUnsupported {
                            ifname: ifname.to_string(),
                        }
                    }
                    Some(libc::ENODEV) => XdpError::NetdevNotFound {
                        ifname: ifname.to_string(),
                    },
                    // Lost a race with another loader: report who won.
                    Some(libc::EBUSY | libc::EEXIST) => {
                        match Self::refuse_foreign(ifname, ifindex, false) {
                            Err(found @ XdpError::AlreadyAttached { .. }) => found,
                            _ => XdpError::bpf("bpf_link_create(BPF_XDP)", ifname, e),
                        }
                    }
                    _ => XdpError::bpf("bpf_link_create(BPF_XDP)", ifname, e),
                });
            }
        };
        // SAFETY: fd is the fresh link descriptor bpf_link_create returned; nothing else owns it.
        let link = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut attachment = Attachment {
            ifname: ifname.to_string(),
            mode,
            prog_id: 0,
            prog,
            link,
        };
        // From here on, dropping `attachment` detaches.
        let (prog_id, _) = prog_info(attachment.prog.as_fd())
            .map_err(|e| XdpError::bpf("bpf_obj_get_info_by_fd", ifname, e))?;
        attachment.prog_id = prog_id;
        Ok(attachment)
    }

    pub(crate) fn ifname(&self) -> &str {
        &self.ifname
    }

    pub(crate) fn mode(&self) -> XdpMode {
        self.mode
    }

    pub(crate) fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// The attached program.
    pub(crate) fn prog(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Makes the link run `prog` instead of what it runs now, in one step (`BPF_LINK_UPDATE`): every
    /// packet sees one program or the other. [`prog`](Self::prog) stays the program first attached.
    pub(crate) fn run_instead(&self, prog: BorrowedFd<'_>) -> Result<(), XdpError> {
        // SAFETY: plain syscall wrapper on our open link and an open program descriptor; null opts are
        // libbpf's defaults (no flags, any old program).
        let rc = unsafe {
            cne_sys::bpf_link_update(self.link.as_raw_fd(), prog.as_raw_fd(), std::ptr::null())
        };
        parse_ret(rc)
            .map(drop)
            .map_err(|e| XdpError::bpf("bpf_link_update", &self.ifname, e))
    }

    /// Runs the program once on `frame` with `BPF_PROG_RUN`: its return value and the output frame.
    pub(crate) fn test_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), XdpError> {
        let run = test_run(self.prog.as_fd(), frame, 1, &self.ifname)?;
        Ok((run.retval, run.output))
    }

    /// Detaches the program: `BPF_LINK_DETACH` on our link, so the program leaves the interface now
    /// even if a copy of the descriptor lived on somewhere. A link detached already (by `--force` of
    /// another instance, or because the interface is gone) is left alone.
    fn detach(&self) {
        // SAFETY: plain syscall wrapper on our open link descriptor.
        let rc = unsafe { cne_sys::bpf_link_detach(self.link.as_raw_fd()) };
        match parse_ret(rc) {
            Ok(_) => log::debug!("{}: detached XDP program id {}", self.ifname, self.prog_id),
            Err(e) => log::warn!(
                "{}: detaching XDP program id {} (BPF_LINK_DETACH) failed: {e}; closing the link \
                 detaches it",
                self.ifname,
                self.prog_id
            ),
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.detach();
    }
}

/// What one [`test_run`] reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestRun {
    /// The program's return value (the XDP action) of the last run.
    pub(crate) retval: u32,
    /// The frame as the program left it.
    pub(crate) output: Vec<u8>,
    /// Mean run time per repetition, in nanoseconds, as the kernel measured it.
    pub(crate) duration_ns: u32,
}

/// Runs `prog` `repeat` times on `frame` with `BPF_PROG_RUN` (each run on a fresh copy of the frame).
pub(crate) fn test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
    target: &str,
) -> Result<TestRun, XdpError> {
    let too_big = || {
        XdpError::bpf(
            "bpf_prog_test_run_opts",
            target,
            io::Error::from_raw_os_error(libc::E2BIG),
        )
    };
    // Head adjustments can grow the frame by the XDP headroom at most (256 bytes).
    let mut out = vec![0u8; frame.len() + 256];
    // SAFETY: bpf_test_run_opts holds integers and pointers (all-zero is valid) and starts with
    // `size_t sz`.
    let mut opts = unsafe { LibbpfOpts::<cne_sys::bpf_test_run_opts>::new() };
    let o = opts.get_mut();
    o.data_in = frame.as_ptr().cast::<c_void>();
    o.data_size_in = u32::try_from(frame.len()).map_err(|_| too_big())?;
    o.data_out = out.as_mut_ptr().cast::<c_void>();
    o.data_size_out = u32::try_from(out.len()).map_err(|_| too_big())?;
    o.repeat = i32::try_from(repeat.max(1)).unwrap_or(i32::MAX);
    // SAFETY: data_in/data_out point to buffers of the sizes given in opts, live for the call.
    let rc = unsafe { cne_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), opts.as_mut_ptr()) };
    parse_ret(rc).map_err(|e| XdpError::bpf("bpf_prog_test_run_opts", target, e))?;
    let o = opts.get_mut();
    out.truncate(o.data_size_out as usize);
    Ok(TestRun {
        retval: o.retval,
        output: out,
        duration_ns: o.duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A per-CPU array of `entries` values of three u64s, value `[key, cpu, 7]` on every CPU.
    fn numbered_array(entries: u32) -> Map<u32, [u64; 3]> {
        // SAFETY: the name is NUL-terminated; null opts are libbpf's defaults.
        let rc = unsafe {
            cne_sys::bpf_map_create(
                cne_sys::BPF_MAP_TYPE_PERCPU_ARRAY,
                c"cne_test_pcpu".as_ptr(),
                4,
                24,
                entries,
                std::ptr::null(),
            )
        };
        let fd = crate::sys::parse_ret_fd(rc).expect("bpf_map_create");
        let map = Map::<u32, [u64; 3]>::checked("cne_test_pcpu", fd).expect("layout");
        let cpus = possible_cpus().expect("possible CPUs");
        for key in 0..entries {
            let values: Vec<[u64; 3]> = (0..cpus as u64).map(|c| [u64::from(key), c, 7]).collect();
            // SAFETY: key is a live u32; values holds a 24-byte value for every possible CPU.
            let rc = unsafe {
                cne_sys::bpf_map_update_elem(
                    map.fd.as_raw_fd(),
                    std::ptr::from_ref(&key).cast::<c_void>(),
                    values.as_ptr().cast::<c_void>(),
                    0,
                )
            };
            parse_ret(rc).expect("bpf_map_update_elem");
        }
        map
    }

    /// Batch reads of a per-CPU array return every key's values of every CPU in order, across the
    /// calls a long range takes, and stop at the map's end.
    #[test]
    #[ignore = "needs root"]
    fn percpu_array_reads_return_every_key_in_order() {
        lab::require_root();
        let cpus = possible_cpus().expect("possible CPUs");
        let map = numbered_array(10_000);
        for first in [0u32, 1, 4095, 5000, 9999, 10_000, 20_000] {
            for count in [0u32, 1, 4095, 4096, 4097, 9999, 10_000, 10_001, u32::MAX] {
                let values = map.percpu_array_read(first, count).expect("batch read");
                let keys = count.min(10_000u32.saturating_sub(first)) as usize;
                assert_eq!(values.len(), keys * cpus, "{count} keys from {first}");
                for (i, v) in values.iter().enumerate() {
                    let key = u64::from(first) + (i / cpus) as u64;
                    assert_eq!(
                        *v,
                        [key, (i % cpus) as u64, 7],
                        "value {i} of {count} from {first}"
                    );
                }
            }
        }
        assert!(
            map.update(&0, &[1, 2, 3]).is_err(),
            "one value for a per-CPU map"
        );
        assert!(map.update_batch(&[0], &[[1, 2, 3]]).is_err());
        assert!(map.lookup(&0).is_err());
    }
}

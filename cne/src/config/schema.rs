//! The typed, validated form of CNDP's configuration sections.
//!
//! These are the values after every reference has been resolved and every default applied:
//! a [`Umem`] always has its regions, an [`Lport`] always names an existing UMEM region, a
//! [`Thread`] always has its CPUs. Units follow CNDP's file format (counts in units of 1024,
//! buffer sizes in KiB); the methods convert them to frames, bytes and ring sizes.

use serde::Serialize;
use std::ops::Range;

/// The PMD name of an AF_XDP lport, the only kind this crate drives.
pub const PMD_AF_XDP: &str = "net_af_xdp";
/// Default UMEM buffer count, in units of 1024 buffers (16 -> 16384 frames).
pub const DEFAULT_BUFCNT: u32 = 16;
/// Default UMEM buffer size in KiB (2 -> 2048-byte frames).
pub const DEFAULT_BUFSZ: u32 = 2;
/// Default RX ring size in units of 1024 descriptors (2 -> 2048, CNDP's default).
pub const DEFAULT_RXDESC: u32 = 2;
/// Default TX ring size in units of 1024 descriptors (2 -> 2048, CNDP's default).
pub const DEFAULT_TXDESC: u32 = 2;
/// Default per-thread buffer cache size, in entries.
pub const DEFAULT_CACHE: u32 = 256;
/// Largest per-thread buffer cache size CNDP accepts.
pub const MAX_CACHE: u32 = 256;
/// Most regions one UMEM may be split into (CNDP's `UMEM_MAX_REGIONS`).
pub const MAX_REGIONS: usize = 128;
/// Largest UMEM buffer count, in units of 1024 buffers (64 Mi frames).
pub const MAX_BUFCNT: u32 = 65536;
/// Largest ring size, in units of 1024 descriptors.
pub const MAX_DESC: u32 = 64;
/// Name of the UMEM CNDP creates from `defaults` for lport-groups that name no UMEM.
pub const LPORT_GROUP_UMEM: &str = "lport-group";
/// Name of the lcore-group of the main thread.
pub const INITIAL_GROUP: &str = "initial";
/// Name of the lcore-group of threads that name no group.
pub const DEFAULT_GROUP: &str = "default";
/// Thread type of the main thread (`"main"` key in `threads`).
pub const MAIN_THREAD: &str = "main";

/// The `application` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Application {
    /// Application name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text (`description` or `desc` in the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Memory backing a UMEM (`mtype`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub enum MemType {
    /// Normal 4 KiB pages (`"4KB"`, also the meaning of an empty string).
    #[default]
    #[serde(rename = "4KB")]
    Page4K,
    /// 2 MiB huge pages (`"2MB"`).
    #[serde(rename = "2MB")]
    Huge2M,
    /// 1 GiB huge pages (`"1GB"`).
    #[serde(rename = "1GB")]
    Huge1G,
}

impl MemType {
    /// Parses CNDP's names; the empty string means the default 4 KiB pages.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "" | "4KB" => Some(Self::Page4K),
            "2MB" => Some(Self::Huge2M),
            "1GB" => Some(Self::Huge1G),
            _ => None,
        }
    }

    /// CNDP's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            Self::Page4K => "4KB",
            Self::Huge2M => "2MB",
            Self::Huge1G => "1GB",
        }
    }

    /// Page size in bytes.
    pub fn page_size(self) -> usize {
        match self {
            Self::Page4K => 4 << 10,
            Self::Huge2M => 2 << 20,
            Self::Huge1G => 1 << 30,
        }
    }
}

/// The `defaults` section, with the built-in defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Defaults {
    /// UMEM buffer count in units of 1024 buffers.
    pub bufcnt: u32,
    /// UMEM buffer size in KiB (2 or 4).
    pub bufsz: u32,
    /// RX ring size in units of 1024 descriptors.
    pub rxdesc: u32,
    /// TX ring size in units of 1024 descriptors.
    pub txdesc: u32,
    /// Per-thread buffer cache size in entries (at most [`MAX_CACHE`]).
    pub cache: u32,
    /// Memory type of UMEMs that name none.
    pub mtype: MemType,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            bufcnt: DEFAULT_BUFCNT,
            bufsz: DEFAULT_BUFSZ,
            rxdesc: DEFAULT_RXDESC,
            txdesc: DEFAULT_TXDESC,
            cache: DEFAULT_CACHE,
            mtype: MemType::default(),
        }
    }
}

/// One entry of the `umems` section: a memory area of equal-sized frames, split into regions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Umem {
    /// The UMEM's name (its key in `umems`).
    #[serde(skip)]
    pub name: String,
    /// Number of frames in units of 1024.
    pub bufcnt: u32,
    /// Frame size in KiB: 2 (2048-byte frames) or 4 (4096-byte frames).
    pub bufsz: u32,
    /// Memory backing the area.
    pub mtype: MemType,
    /// Region sizes in units of 1024 frames, in order; they sum to `bufcnt`. A UMEM declared
    /// without `regions` has one region of `bufcnt`.
    pub regions: Vec<u32>,
    /// RX ring size in units of 1024 descriptors (resolved: never 0).
    pub rxdesc: u32,
    /// TX ring size in units of 1024 descriptors (resolved: never 0).
    pub txdesc: u32,
    /// Sockets share the UMEM through `xsk_socket__create_shared()`.
    pub shared_umem: bool,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Umem {
    /// Size of one frame in bytes.
    pub fn frame_size(&self) -> usize {
        self.bufsz as usize * 1024
    }

    /// Number of frames.
    pub fn frame_count(&self) -> usize {
        self.bufcnt as usize * 1024
    }

    /// Size of the whole area in bytes.
    pub fn size_bytes(&self) -> usize {
        self.frame_count() * self.frame_size()
    }

    /// Number of regions.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// The frame indices of region `index`, or `None` if there is no such region.
    pub fn region_frames(&self, index: usize) -> Option<Range<usize>> {
        let size = *self.regions.get(index)? as usize * 1024;
        let start: usize = self.regions[..index]
            .iter()
            .map(|&r| r as usize * 1024)
            .sum();
        Some(start..start + size)
    }

    /// RX ring size in descriptors.
    pub fn rx_ring_size(&self) -> u32 {
        self.rxdesc * 1024
    }

    /// TX ring size in descriptors.
    pub fn tx_ring_size(&self) -> u32 {
        self.txdesc * 1024
    }

    /// Fill ring size in descriptors: twice the RX ring, as CNDP sizes it, so the kernel always
    /// has frames to receive into while the RX ring is full.
    pub fn fill_ring_size(&self) -> u32 {
        self.rx_ring_size() * 2
    }

    /// Completion ring size in descriptors: the TX ring size.
    pub fn completion_ring_size(&self) -> u32 {
        self.tx_ring_size()
    }
}

/// One AF_XDP socket: an `lports` entry, or one generated by an `lport-groups` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lport {
    /// The lport's name, `"netdev:tag"` (generated ones: `"netdev:qid"`).
    pub name: String,
    /// The interface: the part of the name before `:`.
    pub netdev: String,
    /// PMD name; always [`PMD_AF_XDP`].
    pub pmd: String,
    /// PMD options: the text after a `:` in `pmd`, if any.
    pub pmd_opts: Option<String>,
    /// Queue of `netdev` the socket binds to.
    pub qid: u16,
    /// Name of the UMEM the socket uses.
    pub umem: String,
    /// Index of the UMEM region whose frames the socket uses.
    pub region: usize,
    /// Busy polling (`busy_poll` or `busy_polling` in the file).
    pub busy_poll: bool,
    /// Busy-poll timeout handed to `SO_BUSY_POLL` (the kernel reads microseconds); 0 = default.
    pub busy_timeout: u16,
    /// Busy-poll budget (`SO_BUSY_POLL_BUDGET`); 0 = default, 0xFFFF = disabled.
    pub busy_budget: u16,
    /// Kick the kernel on every TX even when `need_wakeup` says it is not needed.
    pub force_wakeup: bool,
    /// Attach XDP in SKB (generic) mode; forces copy mode.
    pub skb_mode: bool,
    /// Use unaligned chunk mode for the UMEM.
    pub unaligned_buffers: bool,
    /// Do not load an XDP program: the socket goes into a map someone else owns. Implied by
    /// `xsk_pin_path` and `uds_path`.
    pub unprivileged: bool,
    /// Path of a pinned XSKMAP to insert the socket into (device-plugin map pinning).
    pub xsk_pin_path: Option<String>,
    /// Path of the device plugin's Unix socket that hands out the XSKMAP fd.
    pub uds_path: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The thread that owns this lport, if one names it.
    pub thread: Option<String>,
}

impl Serialize for Lport {
    /// Writes the `lports` entry value (the name is its key): `pmd` joined with its options as
    /// CNDP reads them, optional strings only when set.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match &self.pmd_opts {
            Some(opts) => m.serialize_entry("pmd", &format!("{}:{opts}", self.pmd))?,
            None => m.serialize_entry("pmd", &self.pmd)?,
        }
        m.serialize_entry("qid", &self.qid)?;
        m.serialize_entry("umem", &self.umem)?;
        m.serialize_entry("region", &self.region)?;
        m.serialize_entry("busy_poll", &self.busy_poll)?;
        m.serialize_entry("busy_timeout", &self.busy_timeout)?;
        m.serialize_entry("busy_budget", &self.busy_budget)?;
        m.serialize_entry("force_wakeup", &self.force_wakeup)?;
        m.serialize_entry("skb_mode", &self.skb_mode)?;
        m.serialize_entry("unaligned_buffers", &self.unaligned_buffers)?;
        m.serialize_entry("unprivileged", &self.unprivileged)?;
        if let Some(p) = &self.xsk_pin_path {
            m.serialize_entry("xsk_pin_path", p)?;
        }
        if let Some(p) = &self.uds_path {
            m.serialize_entry("uds_path", p)?;
        }
        if let Some(d) = &self.description {
            m.serialize_entry("description", d)?;
        }
        m.end()
    }
}

/// An `lcore-groups` entry: a named set of CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LcoreGroup {
    /// The group's name.
    pub name: String,
    /// CPU ids, ascending, without duplicates.
    pub cpus: Vec<usize>,
}

/// A `threads` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Thread {
    /// The thread's name, `"type:id"` or just `"type"` (e.g. `"main"`, `"fwd:0"`).
    #[serde(skip)]
    pub name: String,
    /// The part of the name before `:`; `"main"` is the main thread.
    #[serde(skip)]
    pub kind: String,
    /// The lcore-group the thread runs on ([`DEFAULT_GROUP`] when not given).
    pub group: String,
    /// The CPUs of that group.
    #[serde(skip)]
    pub cpus: Vec<usize>,
    /// The lports the thread owns, in order: its own list, then those lport-groups gave it.
    pub lports: Vec<String>,
    /// Idle detection timeout in milliseconds; 0 = never idle.
    pub idle_timeout: u32,
    /// Interrupt wait timeout in milliseconds when idle.
    pub intr_timeout: u32,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Thread {
    /// True for the main thread.
    pub fn is_main(&self) -> bool {
        self.kind == MAIN_THREAD
    }
}

/// The `queues` of an lport-group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queues {
    /// Every queue of each netdev (`"all"`, or `queues` left out).
    All,
    /// These queue ids, ascending, without duplicates.
    List(Vec<u16>),
}

/// An `lport-groups` entry as declared; its lports appear in [`Config::lports`](super::Config::lports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LportGroup {
    /// The group's name.
    pub name: String,
    /// The interfaces.
    pub netdevs: Vec<String>,
    /// The queues used on each interface.
    pub queues: Queues,
    /// Threads the generated lports are spread over, round-robin.
    pub threads: Vec<String>,
    /// The UMEM of the generated lports.
    pub umem: String,
    /// Names of the generated lports, in order.
    pub lports: Vec<String>,
    /// Free text.
    pub description: Option<String>,
}

/// A value of the `options` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum OptionValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
    /// An array of values of one type, not nested.
    Array(Vec<OptionValue>),
}

/// The `options` section: free key/value pairs in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub(crate) entries: Vec<(String, OptionValue)>,
}

impl Options {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&OptionValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The boolean value of `key`, if it is a boolean.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            OptionValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer value of `key`, if it is an integer.
    pub fn get_int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            OptionValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The string value of `key`, if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            OptionValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// All entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &OptionValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umem(regions: Vec<u32>) -> Umem {
        Umem {
            name: "u".into(),
            bufcnt: regions.iter().sum(),
            bufsz: 2,
            mtype: MemType::Page4K,
            regions,
            rxdesc: 2,
            txdesc: 1,
            shared_umem: false,
            description: None,
        }
    }

    #[test]
    fn umem_units() {
        let u = umem(vec![16, 8, 8]);
        assert_eq!(u.frame_size(), 2048);
        assert_eq!(u.frame_count(), 32 * 1024);
        assert_eq!(u.size_bytes(), 64 << 20);
        assert_eq!(u.region_frames(0), Some(0..16384));
        assert_eq!(u.region_frames(1), Some(16384..24576));
        assert_eq!(u.region_frames(2), Some(24576..32768));
        assert_eq!(u.region_frames(3), None);
        assert_eq!(u.rx_ring_size(), 2048);
        assert_eq!(u.fill_ring_size(), 4096);
        assert_eq!(u.completion_ring_size(), 1024);
    }

    #[test]
    fn mem_type_names() {
        for t in [MemType::Page4K, MemType::Huge2M, MemType::Huge1G] {
            assert_eq!(MemType::from_name(t.name()), Some(t));
        }
        assert_eq!(MemType::from_name(""), Some(MemType::Page4K));
        assert_eq!(MemType::from_name("2mb"), None);
    }
}

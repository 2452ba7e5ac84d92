//! From the parsed document to the typed configuration: decoding, defaults, references, checks.
//!
//! Sections are processed in CNDP's order (`application`, `defaults`, `options`, `umems`,
//! `lports`, `lcore-groups`, `threads`, `lport-groups`) so each one can refer to the ones before
//! it. Every entry is decoded with serde (`deny_unknown_fields`: a misspelt key is an error, not a
//! silently ignored line) and then checked; each error carries the key path and its line.

use super::error::ConfigError;
use super::range::parse_range;
use super::schema::*;
use super::source::{KeyPath, LineMap};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io;

/// The sections this module interprets (CNDP's own); all others belong to the application.
pub(crate) const KNOWN_SECTIONS: [&str; 9] = [
    "application",
    "defaults",
    "options",
    "umems",
    "lports",
    "lcore-groups",
    "threads",
    "lport-groups",
    "users",
];

/// Highest CPU id accepted in `lcore-groups` (glibc's `CPU_SETSIZE` - 1).
const MAX_CPU: u32 = 1023;

/// Where the document came from, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// File name or label.
    pub(crate) name: String,
    /// Key path to line.
    pub(crate) lines: LineMap,
}

impl Origin {
    /// An error at `path` (line of the path, or of its nearest existing parent).
    pub(crate) fn invalid(&self, path: &KeyPath, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.name.clone(),
            line: self.lines.line(path),
            key_path: path.to_string(),
            message: message.into(),
        }
    }

    /// Decodes `value` found at `path` with serde, mapping a failure to the exact inner path.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        path: &KeyPath,
        value: &Value,
    ) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let at = path.join(&KeyPath::from(e.path()));
            self.invalid(&at, e.into_inner().to_string())
        })
    }
}

/// Most names listed by [`known`] before it abbreviates.
const KNOWN_LIST_MAX: usize = 12;

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
const MAX_NETDEV_LEN: usize = 15;

/// "known: a, b" for error messages about dangling names.
fn known<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.len() {
        0 => "none is defined".to_owned(),
        n if n <= KNOWN_LIST_MAX => format!("known: {}", names.join(", ")),
        n => format!(
            "known: {}, ... ({} more)",
            names[..KNOWN_LIST_MAX].join(", "),
            n - KNOWN_LIST_MAX
        ),
    }
}

/// Checks an interface name the way the kernel would.
fn netdev_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("the netdev name is empty".to_owned())
    } else if name.len() > MAX_NETDEV_LEN {
        Some(format!(
            "netdev \"{name}\" is longer than {MAX_NETDEV_LEN} characters"
        ))
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        Some(format!("\"{name}\" is not a netdev name"))
    } else {
        None
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a floating-point number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplication {
    name: Option<String>,
    #[serde(alias = "desc")]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    bufcnt: Option<u32>,
    bufsz: Option<u32>,
    rxdesc: Option<u32>,
    txdesc: Option<u32>,
    cache: Option<u32>,
    mtype: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUmem {
    bufcnt: Option<u32>,
    bufsz: Option<u32>,
    mtype: Option<String>,
    regions: Option<Vec<u32>>,
    rxdesc: Option<u32>,
    txdesc: Option<u32>,
    shared_umem: Option<bool>,
    #[serde(alias = "desc")]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLport {
    netdev: Option<String>,
    pmd: String,
    qid: u16,
    umem: String,
    region: Option<u16>,
    #[serde(alias = "busy_polling")]
    busy_poll: Option<bool>,
    busy_timeout: Option<u16>,
    busy_budget: Option<u16>,
    force_wakeup: Option<bool>,
    skb_mode: Option<bool>,
    unaligned_buffers: Option<bool>,
    unprivileged: Option<bool>,
    xsk_pin_path: Option<String>,
    uds_path: Option<String>,
    #[serde(alias = "desc")]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThread {
    group: Option<String>,
    lports: Option<Vec<String>>,
    idle_timeout: Option<u32>,
    intr_timeout: Option<u32>,
    #[serde(alias = "desc")]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLportGroup {
    netdevs: Vec<String>,
    queues: Option<Value>,
    threads: Vec<String>,
    pmd: Option<String>,
    umem: Option<String>,
    #[serde(alias = "busy_polling")]
    busy_poll: Option<bool>,
    busy_timeout: Option<u16>,
    busy_budget: Option<u16>,
    force_wakeup: Option<bool>,
    skb_mode: Option<bool>,
    unaligned_buffers: Option<bool>,
    #[serde(alias = "desc")]
    description: Option<String>,
}

/// Everything the typed configuration holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parts {
    pub(crate) application: Application,
    pub(crate) defaults: Defaults,
    pub(crate) options: Options,
    pub(crate) umems: Vec<Umem>,
    pub(crate) lports: Vec<Lport>,
    pub(crate) lcore_groups: Vec<LcoreGroup>,
    pub(crate) threads: Vec<Thread>,
    pub(crate) lport_groups: Vec<LportGroup>,
}

/// Counts the queues of a netdev for `"queues": "all"`.
pub(crate) type QueueCounter<'a> = &'a dyn Fn(&str) -> io::Result<usize>;

/// Builds the typed configuration from the document root.
pub(crate) fn resolve(
    doc: &Map<String, Value>,
    src: &Origin,
    queue_count: QueueCounter<'_>,
) -> Result<Parts, ConfigError> {
    let root = KeyPath::root();
    let mut sections: HashMap<&str, &Map<String, Value>> = HashMap::new();
    for name in KNOWN_SECTIONS {
        if let Some(v) = doc.get(name) {
            let obj = v.as_object().ok_or_else(|| {
                src.invalid(
                    &root.key(name),
                    format!("must be an object, found {}", type_name(v)),
                )
            })?;
            sections.insert(name, obj);
        }
    }
    let empty = Map::new();
    let section = |name: &str| sections.get(name).copied().unwrap_or(&empty);

    let mut r = Resolver {
        src,
        parts: Parts::default(),
        lport_lines: HashMap::new(),
        bufcnt_given: false,
    };
    if let Some(v) = doc.get("application") {
        let raw: RawApplication = src.decode(&root.key("application"), v)?;
        r.parts.application = Application {
            name: raw.name,
            description: raw.description,
        };
    }
    if let Some(v) = doc.get("defaults") {
        r.defaults(v)?;
    }
    r.options(section("options"))?;
    r.umems(section("umems"))?;
    r.lports(section("lports"))?;
    r.lcore_groups(section("lcore-groups"))?;
    r.threads(section("threads"))?;
    r.lport_groups(section("lport-groups"), queue_count)?;
    Ok(r.parts)
}

struct Resolver<'a> {
    src: &'a Origin,
    parts: Parts,
    /// Path of the entry that created each lport, for "already defined" messages.
    lport_lines: HashMap<String, KeyPath>,
    /// `defaults.bufcnt` was written in the file (sizes the lport-group UMEM).
    bufcnt_given: bool,
}

impl Resolver<'_> {
    fn err(&self, path: &KeyPath, message: impl Into<String>) -> ConfigError {
        self.src.invalid(path, message)
    }

    fn line(&self, path: &KeyPath) -> usize {
        self.src.lines.line(path)
    }

    fn check_bufsz(&self, path: &KeyPath, bufsz: u32) -> Result<(), ConfigError> {
        if bufsz == 2 || bufsz == 4 {
            Ok(())
        } else {
            Err(self.err(
                path,
                format!(
                    "buffer size {bufsz} KiB is not supported: use 2 (2048-byte frames) or 4 \
                     (4096-byte frames)"
                ),
            ))
        }
    }

    fn check_bufcnt(&self, path: &KeyPath, bufcnt: u32) -> Result<(), ConfigError> {
        if bufcnt == 0 || bufcnt > MAX_BUFCNT {
            Err(self.err(
                path,
                format!("buffer count {bufcnt} (x1024) must be between 1 and {MAX_BUFCNT}"),
            ))
        } else {
            Ok(())
        }
    }

    /// A descriptor count in units of 1024: 0 means "use the fallback"; rings are powers of two.
    fn desc(&self, path: &KeyPath, value: Option<u32>, fallback: u32) -> Result<u32, ConfigError> {
        match value {
            None | Some(0) => Ok(fallback),
            Some(n) if n.is_power_of_two() && n <= MAX_DESC => Ok(n),
            Some(n) => Err(self.err(
                path,
                format!(
                    "{n} (x1024 descriptors) is not a valid ring size: use a power of two up to \
                     {MAX_DESC}, or 0 for the default"
                ),
            )),
        }
    }

    fn mtype(&self, path: &KeyPath, name: &str) -> Result<MemType, ConfigError> {
        MemType::from_name(name).ok_or_else(|| {
            self.err(
                path,
                format!("memory type \"{name}\" is not one of \"4KB\", \"2MB\", \"1GB\""),
            )
        })
    }

    fn defaults(&mut self, v: &Value) -> Result<(), ConfigError> {
        let path = KeyPath::root().key("defaults");
        let raw: RawDefaults = self.src.decode(&path, v)?;
        let mut d = Defaults::default();
        if let Some(n) = raw.bufcnt {
            self.check_bufcnt(&path.key("bufcnt"), n)?;
            d.bufcnt = n;
            self.bufcnt_given = true;
        }
        if let Some(n) = raw.bufsz {
            self.check_bufsz(&path.key("bufsz"), n)?;
            d.bufsz = n;
        }
        d.rxdesc = self.desc(&path.key("rxdesc"), raw.rxdesc, DEFAULT_RXDESC)?;
        d.txdesc = self.desc(&path.key("txdesc"), raw.txdesc, DEFAULT_TXDESC)?;
        if let Some(n) = raw.cache {
            if n > MAX_CACHE {
                return Err(self.err(
                    &path.key("cache"),
                    format!("cache size {n} is larger than {MAX_CACHE}"),
                ));
            }
            d.cache = n;
        }
        if let Some(m) = raw.mtype {
            d.mtype = self.mtype(&path.key("mtype"), &m)?;
        }
        self.parts.defaults = d;
        Ok(())
    }

    fn option_value(
        &self,
        path: &KeyPath,
        v: &Value,
        nested: bool,
    ) -> Result<OptionValue, ConfigError> {
        Ok(match v {
            Value::Bool(b) => OptionValue::Bool(*b),
            Value::String(s) => OptionValue::Str(s.clone()),
            Value::Number(n) => match n.as_i64() {
                Some(i) => OptionValue::Int(i),
                None => {
                    return Err(self.err(path, format!("{n} is not an integer in the i64 range")))
                }
            },
            Value::Array(items) if !nested => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let value = self.option_value(&path.index(i), item, true)?;
                    if let Some(first) = items.first() {
                        if std::mem::discriminant(first) != std::mem::discriminant(item) {
                            return Err(self.err(
                                &path.index(i),
                                format!(
                                    "array values must all have one type: found {} after {}",
                                    type_name(item),
                                    type_name(first)
                                ),
                            ));
                        }
                    }
                    out.push(value);
                }
                OptionValue::Array(out)
            }
            other => {
                return Err(self.err(
                    path,
                    format!(
                        "option values are a boolean, an integer, a string or an array of one of \
                         those, found {}",
                        if nested && other.is_array() {
                            "a nested array"
                        } else {
                            type_name(other)
                        }
                    ),
                ))
            }
        })
    }

    fn options(&mut self, section: &Map<String, Value>) -> Result<(), ConfigError> {
        let path = KeyPath::root().key("options");
        for (key, v) in section {
            let value = self.option_value(&path.key(key), v, false)?;
            self.parts.options.entries.push((key.clone(), value));
        }
        Ok(())
    }

    fn umems(&mut self, section: &Map<String, Value>) -> Result<(), ConfigError> {
        let base = KeyPath::root().key("umems");
        for (name, v) in section {
            let path = base.key(name);
            if name.is_empty() {
                return Err(self.err(&path, "a UMEM name must not be empty"));
            }
            let raw: RawUmem = self.src.decode(&path, v)?;
            let d = &self.parts.defaults;
            let bufcnt = raw.bufcnt.unwrap_or(d.bufcnt);
            self.check_bufcnt(&path.key("bufcnt"), bufcnt)?;
            let bufsz = raw.bufsz.unwrap_or(d.bufsz);
            self.check_bufsz(&path.key("bufsz"), bufsz)?;
            let mtype = match &raw.mtype {
                Some(m) if !m.is_empty() => self.mtype(&path.key("mtype"), m)?,
                _ => d.mtype,
            };
            let (drx, dtx) = (d.rxdesc, d.txdesc);
            let rxdesc = self.desc(&path.key("rxdesc"), raw.rxdesc, drx)?;
            let txdesc = self.desc(&path.key("txdesc"), raw.txdesc, dtx)?;
            let regions = match raw.regions {
                None => vec![bufcnt],
                Some(regions) => {
                    let rpath = path.key("regions");
                    if regions.is_empty() {
                        return Err(self.err(&rpath, "needs at least one region"));
                    }
                    if regions.len() > MAX_REGIONS {
                        return Err(self.err(
                            &rpath,
                            format!(
                                "{} regions, at most {MAX_REGIONS} are allowed",
                                regions.len()
                            ),
                        ));
                    }
                    if let Some(i) = regions.iter().position(|&r| r == 0) {
                        return Err(self.err(&rpath.index(i), "a region must not be empty"));
                    }
                    let sum: u64 = regions.iter().map(|&r| u64::from(r)).sum();
                    if sum != u64::from(bufcnt) {
                        return Err(self.err(
                            &rpath,
                            format!(
                                "regions sum to {sum} (x1024 buffers) but bufcnt is {bufcnt}: \
                                 they must be equal"
                            ),
                        ));
                    }
                    regions
                }
            };
            self.parts.umems.push(Umem {
                name: name.clone(),
                bufcnt,
                bufsz,
                mtype,
                regions,
                rxdesc,
                txdesc,
                shared_umem: raw.shared_umem.unwrap_or(false),
                description: raw.description,
            });
        }
        Ok(())
    }

    fn umem_index(&self, path: &KeyPath, name: &str) -> Result<usize, ConfigError> {
        self.parts
            .umems
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| {
                self.err(
                    path,
                    format!(
                        "umem \"{name}\" is not defined ({})",
                        known(self.parts.umems.iter().map(|u| u.name.as_str()))
                    ),
                )
            })
    }

    /// Splits `"net_af_xdp:opts"` and checks the PMD is AF_XDP.
    fn pmd(&self, path: &KeyPath, text: &str) -> Result<(String, Option<String>), ConfigError> {
        let (name, opts) = match text.split_once(':') {
            Some((n, o)) => (n, Some(o.to_owned())),
            None => (text, None),
        };
        if name != PMD_AF_XDP {
            return Err(self.err(
                path,
                format!("pmd \"{name}\" is not supported (only \"{PMD_AF_XDP}\")"),
            ));
        }
        Ok((name.to_owned(), opts))
    }

    /// Adds an lport after checking its name and its netdev/queue pair are unused.
    fn add_lport(
        &mut self,
        path: &KeyPath,
        qid_path: &KeyPath,
        lport: Lport,
    ) -> Result<(), ConfigError> {
        if let Some(prev) = self.lport_lines.get(&lport.name) {
            return Err(self.err(
                path,
                format!(
                    "lport \"{}\" is already defined at line {}",
                    lport.name,
                    self.line(prev)
                ),
            ));
        }
        if let Some(prev) = self
            .parts
            .lports
            .iter()
            .find(|l| l.netdev == lport.netdev && l.qid == lport.qid)
        {
            let prev_line = self.lport_lines.get(&prev.name).map_or(0, |p| self.line(p));
            return Err(self.err(
                qid_path,
                format!(
                    "queue {} of netdev \"{}\" is already used by lport \"{}\" (line {prev_line})",
                    lport.qid, lport.netdev, prev.name
                ),
            ));
        }
        self.lport_lines.insert(lport.name.clone(), path.clone());
        self.parts.lports.push(lport);
        Ok(())
    }

    fn lports(&mut self, section: &Map<String, Value>) -> Result<(), ConfigError> {
        let base = KeyPath::root().key("lports");
        for (name, v) in section {
            let path = base.key(name);
            let netdev = name.split_once(':').map_or(name.as_str(), |(n, _)| n);
            if let Some(problem) = netdev_problem(netdev) {
                return Err(self.err(&path, format!("an lport name is \"netdev:tag\": {problem}")));
            }
            let raw: RawLport = self.src.decode(&path, v)?;
            if let Some(n) = &raw.netdev {
                if n != netdev {
                    return Err(self.err(
                        &path.key("netdev"),
                        format!("netdev \"{n}\" differs from \"{netdev}\" in the lport name"),
                    ));
                }
            }
            let (pmd, pmd_opts) = self.pmd(&path.key("pmd"), &raw.pmd)?;
            let ui = self.umem_index(&path.key("umem"), &raw.umem)?;
            let umem = &self.parts.umems[ui];
            let region = usize::from(raw.region.unwrap_or(0));
            if region >= umem.regions.len() {
                return Err(self.err(
                    &path.key("region"),
                    format!(
                        "region {region} does not exist in umem \"{}\", which has {} region{} \
                         (0-{})",
                        umem.name,
                        umem.regions.len(),
                        if umem.regions.len() == 1 { "" } else { "s" },
                        umem.regions.len() - 1
                    ),
                ));
            }
            if raw.xsk_pin_path.is_some() && raw.uds_path.is_some() {
                return Err(self.err(
                    &path.key("uds_path"),
                    "set either xsk_pin_path or uds_path: both name where the XSKMAP comes from",
                ));
            }
            let lport = Lport {
                name: name.clone(),
                netdev: netdev.to_owned(),
                pmd,
                pmd_opts,
                qid: raw.qid,
                umem: raw.umem,
                region,
                busy_poll: raw.busy_poll.unwrap_or(false),
                busy_timeout: raw.busy_timeout.unwrap_or(0),
                busy_budget: raw.busy_budget.unwrap_or(0),
                force_wakeup: raw.force_wakeup.unwrap_or(false),
                skb_mode: raw.skb_mode.unwrap_or(false),
                unaligned_buffers: raw.unaligned_buffers.unwrap_or(false),
                unprivileged: raw.unprivileged.unwrap_or(false)
                    || raw.xsk_pin_path.is_some()
                    || raw.uds_path.is_some(),
                xsk_pin_path: raw.xsk_pin_path,
                uds_path: raw.uds_path,
                description: raw.description,
                thread: None,
            };
            self.add_lport(&path, &path.key("qid"), lport)?;
        }
        Ok(())
    }

    fn lcore_groups(&mut self, section: &Map<String, Value>) -> Result<(), ConfigError> {
        let base = KeyPath::root().key("lcore-groups");
        for (name, v) in section {
            let path = base.key(name);
            let items = v.as_array().ok_or_else(|| {
                self.err(
                    &path,
                    format!("an lcore-group is an array of CPUs, found {}", type_name(v)),
                )
            })?;
            let mut cpus = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let ipath = path.index(i);
                let range = match item {
                    Value::Number(n) => match n.as_u64().map(u32::try_from) {
                        Some(Ok(c)) => c..=c,
                        Some(Err(_)) => {
                            return Err(self.err(
                                &ipath,
                                format!("CPU {n} is above the largest CPU id {MAX_CPU}"),
                            ));
                        }
                        None => {
                            return Err(self.err(&ipath, format!("{n} is not a CPU number")));
                        }
                    },
                    Value::String(s) => parse_range(s).map_err(|m| self.err(&ipath, m))?,
                    other => {
                        return Err(self.err(
                            &ipath,
                            format!(
                                "a CPU is a number or a string range \"first-last\", found {}",
                                type_name(other)
                            ),
                        ))
                    }
                };
                if *range.end() > MAX_CPU {
                    return Err(self.err(
                        &ipath,
                        format!("CPU {} is above the largest CPU id {MAX_CPU}", range.end()),
                    ));
                }
                cpus.extend(range.map(|c| c as usize));
            }
            cpus.sort_unstable();
            cpus.dedup();
            if cpus.is_empty() {
                return Err(self.err(&path, "an lcore-group needs at least one CPU"));
            }
            self.parts.lcore_groups.push(LcoreGroup {
                name: name.clone(),
                cpus,
            });
        }
        Ok(())
    }

    /// Gives `lport` to `thread`, refusing a second owner.
    fn assign(
        &mut self,
        path: &KeyPath,
        lport: &str,
        thread_idx: usize,
    ) -> Result<(), ConfigError> {
        let thread_name = self.parts.threads[thread_idx].name.clone();
        let Some(lp) = self.parts.lports.iter_mut().find(|l| l.name == lport) else {
            return Err(self.err(
                path,
                format!(
                    "lport \"{lport}\" is not defined ({})",
                    known(self.parts.lports.iter().map(|l| l.name.as_str()))
                ),
            ));
        };
        if let Some(owner) = &lp.thread {
            let msg = if *owner == thread_name {
                format!("lport \"{lport}\" is listed twice in thread \"{owner}\"")
            } else {
                format!(
                    "lport \"{lport}\" is already assigned to thread \"{owner}\": an lport belongs \
                     to at most one thread"
                )
            };
            return Err(self.err(path, msg));
        }
        lp.thread = Some(thread_name);
        self.parts.threads[thread_idx].lports.push(lport.to_owned());
        Ok(())
    }

    fn threads(&mut self, section: &Map<String, Value>) -> Result<(), ConfigError> {
        let base = KeyPath::root().key("threads");
        for (name, v) in section {
            let path = base.key(name);
            let kind = name.split_once(':').map_or(name.as_str(), |(k, _)| k);
            if kind.is_empty() {
                return Err(self.err(
                    &path,
                    "a thread name is \"type:id\" and its type must not be empty",
                ));
            }
            let raw: RawThread = self.src.decode(&path, v)?;
            let group = raw
                .group
                .clone()
                .unwrap_or_else(|| DEFAULT_GROUP.to_owned());
            let Some(g) = self.parts.lcore_groups.iter().find(|g| g.name == group) else {
                let known = known(self.parts.lcore_groups.iter().map(|g| g.name.as_str()));
                return Err(match raw.group {
                    Some(_) => self.err(
                        &path.key("group"),
                        format!("lcore-group \"{group}\" is not defined ({known})"),
                    ),
                    None => self.err(
                        &path,
                        format!(
                            "the thread names no group and there is no \"{DEFAULT_GROUP}\" \
                             lcore-group ({known})"
                        ),
                    ),
                });
            };
            let cpus = g.cpus.clone();
            self.parts.threads.push(Thread {
                name: name.clone(),
                kind: kind.to_owned(),
                group,
                cpus,
                lports: Vec::new(),
                idle_timeout: raw.idle_timeout.unwrap_or(0),
                intr_timeout: raw.intr_timeout.unwrap_or(0),
                description: raw.description,
            });
            let idx = self.parts.threads.len() - 1;
            for (i, lport) in raw.lports.unwrap_or_default().iter().enumerate() {
                self.assign(&path.key("lports").index(i), lport, idx)?;
            }
        }
        Ok(())
    }

    /// Decodes `queues` into a sorted, duplicate-free list (or `All`).
    fn queues(&self, path: &KeyPath, v: Option<&Value>) -> Result<Queues, ConfigError> {
        let one = |p: &KeyPath, item: &Value, out: &mut Vec<u16>| -> Result<(), ConfigError> {
            let range = match item {
                Value::Number(n) => {
                    let q = n
                        .as_u64()
                        .ok_or_else(|| self.err(p, format!("{n} is not a queue id")))?;
                    let q = u32::try_from(q).unwrap_or(u32::MAX);
                    q..=q
                }
                Value::String(s) => parse_range(s).map_err(|m| self.err(p, m))?,
                other => {
                    return Err(self.err(
                        p,
                        format!(
                            "a queue is a number or a string range \"first-last\", found {}",
                            type_name(other)
                        ),
                    ))
                }
            };
            for q in range {
                let q = u16::try_from(q)
                    .map_err(|_| self.err(p, format!("queue {q} is above {}", u16::MAX)))?;
                out.push(q);
            }
            Ok(())
        };
        let mut list = Vec::new();
        match v {
            None => return Ok(Queues::All),
            Some(Value::String(s)) if s == "all" => return Ok(Queues::All),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    one(&path.index(i), item, &mut list)?;
                }
            }
            Some(other) => one(path, other, &mut list)?,
        }
        list.sort_unstable();
        list.dedup();
        if list.is_empty() {
            return Err(self.err(path, "needs at least one queue"));
        }
        Ok(Queues::List(list))
    }

    fn lport_groups(
        &mut self,
        section: &Map<String, Value>,
        queue_count: QueueCounter<'_>,
    ) -> Result<(), ConfigError> {
        let base = KeyPath::root().key("lport-groups");
        // Lports waiting for the UMEM CNDP builds from `defaults` (index into lports, path).
        let mut shared_umem_users: Vec<(usize, KeyPath)> = Vec::new();
        for (name, v) in section {
            let path = base.key(name);
            let raw: RawLportGroup = self.src.decode(&path, v)?;
            if raw.netdevs.is_empty() {
                return Err(self.err(&path.key("netdevs"), "needs at least one netdev"));
            }
            if raw.threads.is_empty() {
                return Err(self.err(&path.key("threads"), "needs at least one thread"));
            }
            let mut thread_idx = Vec::with_capacity(raw.threads.len());
            for (i, t) in raw.threads.iter().enumerate() {
                let idx = self
                    .parts
                    .threads
                    .iter()
                    .position(|th| th.name == *t)
                    .ok_or_else(|| {
                        self.err(
                            &path.key("threads").index(i),
                            format!(
                                "thread \"{t}\" is not defined ({})",
                                known(self.parts.threads.iter().map(|th| th.name.as_str()))
                            ),
                        )
                    })?;
                thread_idx.push(idx);
            }
            let queues = self.queues(&path.key("queues"), raw.queues.as_ref())?;
            let (pmd, pmd_opts) = match &raw.pmd {
                Some(p) => self.pmd(&path.key("pmd"), p)?,
                None => (PMD_AF_XDP.to_owned(), None),
            };
            let umem_name = raw
                .umem
                .clone()
                .unwrap_or_else(|| LPORT_GROUP_UMEM.to_owned());
            let umem_regions = match self.parts.umems.iter().find(|u| u.name == umem_name) {
                Some(u) => Some(u.regions.len()),
                None if umem_name == LPORT_GROUP_UMEM => None,
                None => {
                    return Err(self.err(
                        &path.key("umem"),
                        format!(
                            "umem \"{umem_name}\" is not defined ({})",
                            known(self.parts.umems.iter().map(|u| u.name.as_str()))
                        ),
                    ))
                }
            };
            let mut names = Vec::new();
            for (ni, netdev) in raw.netdevs.iter().enumerate() {
                let npath = path.key("netdevs").index(ni);
                if let Some(problem) = netdev_problem(netdev) {
                    return Err(self.err(&npath, problem));
                }
                let qids: Vec<u16> = match &queues {
                    Queues::List(l) => l.clone(),
                    Queues::All => {
                        let n = queue_count(netdev).map_err(|source| ConfigError::QueueCount {
                            origin: self.src.name.clone(),
                            line: self.line(&npath),
                            key_path: npath.to_string(),
                            netdev: netdev.clone(),
                            sysfs: format!("/sys/class/net/{netdev}/queues"),
                            source,
                        })?;
                        if n == 0 {
                            return Err(
                                self.err(&npath, format!("netdev \"{netdev}\" has no queues"))
                            );
                        }
                        let n = u16::try_from(n).unwrap_or(u16::MAX);
                        (0..n).collect()
                    }
                };
                for qid in qids {
                    let count = names.len();
                    let tidx = thread_idx[count % thread_idx.len()];
                    let lport_name = format!("{netdev}:{qid}");
                    let region = umem_regions.map_or(0, |n| count % n);
                    let lport = Lport {
                        name: lport_name.clone(),
                        netdev: netdev.clone(),
                        pmd: pmd.clone(),
                        pmd_opts: pmd_opts.clone(),
                        qid,
                        umem: umem_name.clone(),
                        region,
                        busy_poll: raw.busy_poll.unwrap_or(false),
                        busy_timeout: raw.busy_timeout.unwrap_or(0),
                        busy_budget: raw.busy_budget.unwrap_or(0),
                        force_wakeup: raw.force_wakeup.unwrap_or(false),
                        skb_mode: raw.skb_mode.unwrap_or(false),
                        unaligned_buffers: raw.unaligned_buffers.unwrap_or(false),
                        unprivileged: false,
                        xsk_pin_path: None,
                        uds_path: None,
                        description: raw.description.clone(),
                        thread: None,
                    };
                    self.add_lport(&npath, &npath, lport)?;
                    if umem_regions.is_none() {
                        shared_umem_users.push((self.parts.lports.len() - 1, npath.clone()));
                    }
                    self.assign(&npath, &lport_name, tidx)?;
                    names.push(lport_name);
                }
            }
            self.parts.lport_groups.push(LportGroup {
                name: name.clone(),
                netdevs: raw.netdevs,
                queues,
                threads: raw.threads,
                umem: umem_name,
                lports: names,
                description: raw.description,
            });
        }
        if !shared_umem_users.is_empty() {
            self.lport_group_umem(&shared_umem_users)?;
        }
        Ok(())
    }

    /// Creates the UMEM CNDP builds from `defaults` for lport-groups that name none. Unlike CNDP
    /// (one region shared by all), each lport gets a region of its own, so every worker owns its
    /// frames without locking. Sizes: `defaults.bufcnt` split evenly when the file sets it,
    /// otherwise CNDP's estimate of 3 x (RX + TX ring) buffers per lport.
    fn lport_group_umem(&mut self, users: &[(usize, KeyPath)]) -> Result<(), ConfigError> {
        let d = self.parts.defaults.clone();
        let n = u32::try_from(users.len()).unwrap_or(u32::MAX);
        let per = if self.bufcnt_given {
            d.bufcnt / n
        } else {
            3 * (d.rxdesc + d.txdesc)
        };
        if per == 0 {
            return Err(self.err(
                &KeyPath::root().key("defaults").key("bufcnt"),
                format!(
                    "bufcnt {} (x1024) cannot be split over the {n} lports of the \
                     \"{LPORT_GROUP_UMEM}\" umem",
                    d.bufcnt
                ),
            ));
        }
        let bufcnt = per.saturating_mul(n);
        if bufcnt > MAX_BUFCNT {
            return Err(self.err(
                &users[0].1,
                format!(
                    "the \"{LPORT_GROUP_UMEM}\" umem would need {bufcnt} (x1024) buffers, more \
                     than {MAX_BUFCNT}"
                ),
            ));
        }
        for (region, (li, _)) in users.iter().enumerate() {
            self.parts.lports[*li].region = region;
        }
        self.parts.umems.push(Umem {
            name: LPORT_GROUP_UMEM.to_owned(),
            bufcnt,
            bufsz: d.bufsz,
            mtype: d.mtype,
            regions: vec![per; users.len()],
            rxdesc: d.rxdesc,
            txdesc: d.txdesc,
            shared_umem: false,
            description: Some("built from defaults for lport-groups".to_owned()),
        });
        Ok(())
    }
}

//! CNDP's JSON-C configuration: loading, checking, and typed access.
//!
//! A configuration file is JSON with `//` and `/* */` comments (trailing commas before `}` and
//! `]` are tolerated, as json-c does), laid out as CNDP 25.08's `jcfg` reads it: `application`, `defaults`, `options`, `umems`, `lports` (`"netdev:tag"` keys),
//! `lcore-groups`, `threads` (`"type:id"` keys), `lport-groups` and `users`. Any other top-level
//! section belongs to the application and is handed out by [`Config::section`].
//!
//! Invariants of a loaded [`Config`]: every name resolves (an lport's UMEM and region, a thread's
//! lcore-group and lports, an lport-group's threads); every lport has a distinct netdev/queue
//! pair and at most one owning thread; UMEM regions add up to the UMEM; lport-groups have been
//! expanded into lports; declaration order is kept, so workers and queues follow the file.
//!
//! Deliberate differences from CNDP: lport-groups without a `umem` get a UMEM built from
//! `defaults` with one region per lport (CNDP shares one region), and lport-groups over a UMEM
//! with several regions hand them out round-robin (CNDP uses region 0), so each worker owns its
//! frames without locks. CPU ids are not checked against this machine, so configurations can be
//! prepared elsewhere. Unlike CNDP, which warns about unknown keys and skips entries it cannot
//! use, this loader refuses them: a misspelt `busy_pol` would otherwise run silently without busy polling. Every
//! error names the file, the line, the key path and the problem
//! (`fwd.jsonc:23: lports."eth0:0".umem: umem "umem9" is not defined (known: umem0)`), and
//! applications get the same quality for their own sections through [`Config::section`] and
//! [`Config::error_at`].

mod error;
mod file;
mod range;
mod resolve;
mod schema;
mod source;

pub use error::ConfigError;
pub use file::{open_regular, read_regular_to_string, MAX_CONFIG_BYTES};
pub use schema::*;

use resolve::{Origin, Parts, KNOWN_SECTIONS};
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::{Map, Value};
use source::{KeyPath, LineMap};
use std::fmt::Display;
use std::io;
use std::path::Path;

/// A loaded and checked configuration. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Config {
    origin: Origin,
    doc: Map<String, Value>,
    parts: Parts,
}

/// Reads JSON-C text as this crate reads every configuration: `//` and `/* */` comments, trailing
/// commas (as json-c accepts them), a leading byte-order mark; duplicate keys are errors. The top
/// level must be an object. Errors name `origin`, the line and, where there is one, the key path.
/// For files that hold only an application's own sections (`gen-config --nf-config`), which must load
/// exactly as they will load in the full configuration.
pub fn parse_jsonc_object(text: &str, origin: &str) -> Result<Map<String, Value>, ConfigError> {
    Ok(read_document(text, origin)?.0)
}

fn read_document(text: &str, origin: &str) -> Result<(Map<String, Value>, Origin), ConfigError> {
    // Editors on some systems start UTF-8 files with a byte-order mark; RFC 8259 section 8.1
    // lets a parser ignore it, and it changes no line or column.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let syntax = |e: source::SyntaxError| ConfigError::Syntax {
        origin: origin.to_owned(),
        line: e.line,
        column: e.column,
        message: e.message,
    };
    let stripped = source::strip_trailing_commas(&source::strip_comments(text).map_err(syntax)?);
    let value = source::parse_json(&stripped).map_err(syntax)?;
    let lines = LineMap::scan(&stripped).map_err(|d| ConfigError::Invalid {
        origin: origin.to_owned(),
        line: d.line,
        key_path: d.path.to_string(),
        message: format!("duplicate key (first given at line {})", d.first_line),
    })?;
    let origin = Origin {
        name: origin.to_owned(),
        lines,
    };
    let Value::Object(doc) = value else {
        return Err(origin.invalid(&KeyPath::root(), "the configuration must be a JSON object"));
    };
    Ok((doc, origin))
}

impl Config {
    /// Reads and checks the configuration file at `path`. Error messages name the file as given.
    ///
    /// Only a regular file (symlinks followed) of at most [`MAX_CONFIG_BYTES`] is read: a FIFO, a device
    /// or a directory is refused at once, without blocking (see [`read_regular_to_string`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text =
            read_regular_to_string(path, MAX_CONFIG_BYTES).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks configuration text; `origin` names it in error messages (a file name,
    /// or a label such as `"<generated>"`). `"queues": "all"` reads the queue count from sysfs.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::parse_with_queue_count(text, origin, &crate::sys::netdev::rx_queue_count)
    }

    /// Like [`Config::parse`], with the queue count of each netdev for `"queues": "all"` taken
    /// from `queue_count` (for configurations prepared away from the machine that runs them).
    pub fn parse_with_queue_count(
        text: &str,
        origin: &str,
        queue_count: &dyn Fn(&str) -> io::Result<usize>,
    ) -> Result<Self, ConfigError> {
        let (doc, origin) = read_document(text, origin)?;
        let parts = resolve::resolve(&doc, &origin, queue_count)?;
        Ok(Self { origin, doc, parts })
    }

    /// The file name or label the configuration was loaded from.
    pub fn origin(&self) -> &str {
        &self.origin.name
    }

    /// The `application` section.
    pub fn application(&self) -> &Application {
        &self.parts.application
    }

    /// The `defaults` section with built-in defaults filled in.
    pub fn defaults(&self) -> &Defaults {
        &self.parts.defaults
    }

    /// The `options` section.
    pub fn options(&self) -> &Options {
        &self.parts.options
    }

    /// The UMEMs in file order (plus the one built for lport-groups, if any, last).
    pub fn umems(&self) -> &[Umem] {
        &self.parts.umems
    }

    /// The UMEM called `name`.
    pub fn umem(&self, name: &str) -> Option<&Umem> {
        self.parts.umems.iter().find(|u| u.name == name)
    }

    /// All lports: those of `lports` in file order, then those generated by `lport-groups`.
    pub fn lports(&self) -> &[Lport] {
        &self.parts.lports
    }

    /// The lport called `name`.
    pub fn lport(&self, name: &str) -> Option<&Lport> {
        self.parts.lports.iter().find(|l| l.name == name)
    }

    /// The lcore-groups in file order, CPU lists resolved.
    pub fn lcore_groups(&self) -> &[LcoreGroup] {
        &self.parts.lcore_groups
    }

    /// The lcore-group called `name`.
    pub fn lcore_group(&self, name: &str) -> Option<&LcoreGroup> {
        self.parts.lcore_groups.iter().find(|g| g.name == name)
    }

    /// The threads in file order.
    pub fn threads(&self) -> &[Thread] {
        &self.parts.threads
    }

    /// The thread called `name`.
    pub fn thread(&self, name: &str) -> Option<&Thread> {
        self.parts.threads.iter().find(|t| t.name == name)
    }

    /// The main thread (type `main`), if the file declares one.
    pub fn main_thread(&self) -> Option<&Thread> {
        self.parts.threads.iter().find(|t| t.is_main())
    }

    /// The lport-groups as declared (their lports are already in [`Config::lports`]).
    pub fn lport_groups(&self) -> &[LportGroup] {
        &self.parts.lport_groups
    }

    /// Names of the top-level sections this crate does not interpret, in file order.
    pub fn application_sections(&self) -> impl Iterator<Item = &str> {
        self.doc
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_SECTIONS.contains(k))
    }

    /// The raw value of top-level section `name`, if present.
    pub fn section_value(&self, name: &str) -> Option<&Value> {
        self.doc.get(name)
    }

    /// Decodes top-level section `name` into `T`; `Ok(None)` when the section is absent.
    /// A decoding error names the file, the line and the full key path, e.g.
    /// `maglev.vips[0].backends[2].weight: invalid type: string "x", expected u32`.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ConfigError> {
        match self.doc.get(name) {
            None => Ok(None),
            Some(v) => self.origin.decode(&KeyPath::root().key(name), v).map(Some),
        }
    }

    /// An error located at `key_path` (written as in error messages: `maglev.vips[0].name`,
    /// `lports."eth0:0".qid`), for an application's own checks. The line is that of the path,
    /// or of its nearest existing parent when the path names a missing key.
    pub fn error_at(&self, key_path: &str, message: impl Display) -> ConfigError {
        self.origin
            .invalid(&KeyPath::parse(key_path), message.to_string())
    }

    /// The line where `key_path` appears, if it does.
    pub fn line_of(&self, key_path: &str) -> Option<usize> {
        self.origin.lines.exact(&KeyPath::parse(key_path))
    }

    /// The configuration as JSON-C text that loads back into an equal configuration: defaults
    /// resolved, lport-groups expanded into `lports` and thread lists, application sections
    /// copied unchanged.
    pub fn to_jsonc_string(&self) -> Result<String, serde_json::Error> {
        let body = serde_json::to_string_pretty(self)?;
        let name = self
            .parts
            .application
            .name
            .as_deref()
            .unwrap_or("application");
        Ok(format!(
            "// {name}: configuration in CNDP's JSON-C layout, written from {}\n{body}\n",
            self.origin.name
        ))
    }
}

/// Serializes a name-keyed list as a JSON object in list order.
struct Named<'a, T>(&'a [T], fn(&T) -> &str);

impl<T: Serialize> Serialize for Named<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for item in self.0 {
            m.serialize_entry((self.1)(item), item)?;
        }
        m.end()
    }
}

struct Groups<'a>(&'a [LcoreGroup]);

impl Serialize for Groups<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for g in self.0 {
            m.serialize_entry(&g.name, &g.cpus)?;
        }
        m.end()
    }
}

struct OptionsOut<'a>(&'a Options);

impl Serialize for OptionsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for Config {
    /// The document in CNDP's section order, then the application's sections as loaded.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = &self.parts;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("application", &p.application)?;
        m.serialize_entry("defaults", &p.defaults)?;
        m.serialize_entry("options", &OptionsOut(&p.options))?;
        m.serialize_entry("umems", &Named(&p.umems, |u| &u.name))?;
        m.serialize_entry("lports", &Named(&p.lports, |l| &l.name))?;
        m.serialize_entry("lcore-groups", &Groups(&p.lcore_groups))?;
        m.serialize_entry("threads", &Named(&p.threads, |t| &t.name))?;
        for (k, v) in &self.doc {
            if !KNOWN_SECTIONS.contains(&k.as_str()) || k == "users" {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_queue_count(text, "t.jsonc", &|netdev| match netdev {
            "eth0" => Ok(3),
            "eth1" => Ok(2),
            "empty0" => Ok(0),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        })
    }

    fn err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    const BASE: &str = r#"
        "umems": { "u": { "bufcnt": 32, "regions": [8, 8, 8, 8] } },
        "lcore-groups": { "initial": [0], "default": [1], "w": ["0-1"] },
        "threads": {
            "main": { "group": "initial" },
            "fwd:0": { "group": "w" },
            "fwd:1": { "group": "w" },
            "fwd:2": { "group": "w" }
        }"#;

    #[test]
    fn comment_markers_in_strings_survive_loading() {
        let cfg = parse(
            r#"{ // header
            "application": { "name": "a//b", /* inline */ "desc": "/* not a comment */" },
            "options": { "url": "http://198.18.0.1/x" } /* trailing */ }
            // end"#,
        )
        .unwrap();
        assert_eq!(cfg.application().name.as_deref(), Some("a//b"));
        assert_eq!(
            cfg.application().description.as_deref(),
            Some("/* not a comment */")
        );
        assert_eq!(cfg.options().get_str("url"), Some("http://198.18.0.1/x"));
    }

    #[test]
    fn trailing_commas_load_like_json_c() {
        let cfg = parse("{\n\"options\": { \"a\": [1, 2,], },\n\"x\": 1,\n}").unwrap();
        assert_eq!(cfg.options().len(), 1);
        assert_eq!(cfg.line_of("x"), Some(3));
        let e = err("{\n\"options\": { \"a\": [1,, 2] }\n}");
        assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e}");
    }

    #[test]
    fn dangling_names_list_is_abbreviated() {
        let umems: Vec<String> = (0..20).map(|i| format!("\"u{i}\": {{}}")).collect();
        let e = err(&format!(
            r#"{{ "umems": {{ {} }}, "lports": {{ "a:0": {{ "pmd": "net_af_xdp", "qid": 0, "umem": "x" }} }} }}"#,
            umems.join(", ")
        ));
        assert!(e.to_string().ends_with("u10, u11, ... (8 more))"), "{e}");
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let cfg = parse("\u{feff}{\n\"options\": { \"a\": 1 },\n\"x\": 1\n}").unwrap();
        assert_eq!(cfg.options().len(), 1);
        assert_eq!(cfg.line_of("x"), Some(3));
        // Only at the start: elsewhere it is not whitespace.
        let e = err("{\n\u{feff}\"x\": 1\n}");
        assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e}");
    }

    #[test]
    fn empty_document_gets_defaults() {
        let cfg = parse("{}").unwrap();
        assert_eq!(*cfg.defaults(), Defaults::default());
        assert!(cfg.lports().is_empty() && cfg.threads().is_empty());
        assert!(cfg.main_thread().is_none());
    }

    #[test]
    fn non_object_root_and_sections_are_refused() {
        let e = err("[1, 2]");
        assert_eq!(e.line(), Some(1));
        assert!(e.to_string().contains("must be a JSON object"), "{e}");
        let e = err("{\n\"umems\": [1]\n}");
        assert_eq!(
            e.to_string(),
            "t.jsonc:2: umems: must be an object, found an array"
        );
        let e = err("{\n\"lcore-groups\": { \"g\": 3 }\n}");
        assert!(
            e.to_string()
                .contains("lcore-groups.g: an lcore-group is an array"),
            "{e}"
        );
    }

    #[test]
    fn umem_defaults_and_ring_sizes() {
        let cfg = parse(
            r#"{ "defaults": { "bufcnt": 8, "bufsz": 4, "rxdesc": 4, "mtype": "1GB" },
                 "umems": { "a": {}, "b": { "rxdesc": 0, "txdesc": 1, "mtype": "" } } }"#,
        )
        .unwrap();
        let a = cfg.umem("a").unwrap();
        assert_eq!((a.bufcnt, a.bufsz, a.regions.clone()), (8, 4, vec![8]));
        assert_eq!(
            (a.rx_ring_size(), a.tx_ring_size()),
            (4096, DEFAULT_TXDESC * 1024)
        );
        assert_eq!(a.mtype, MemType::Huge1G);
        let b = cfg.umem("b").unwrap();
        assert_eq!((b.rxdesc, b.txdesc), (4, 1));
        // An empty mtype falls back to the defaults section, as in CNDP.
        assert_eq!(b.mtype, MemType::Huge1G);
        let e = err(r#"{ "umems": { "a": { "rxdesc": 3 } } }"#);
        assert!(
            e.to_string()
                .contains("umems.a.rxdesc: 3 (x1024 descriptors) is not a valid ring size"),
            "{e}"
        );
        let e = err(r#"{ "umems": { "a": { "mtype": "2M" } } }"#);
        assert!(
            e.to_string().contains("umems.a.mtype: memory type \"2M\""),
            "{e}"
        );
        let e = err(r#"{ "defaults": { "cache": 512 } }"#);
        assert!(
            e.to_string()
                .contains("defaults.cache: cache size 512 is larger than 256"),
            "{e}"
        );
        let e = err(r#"{ "umems": { "a": { "bufcnt": 2, "regions": [2, 0] } } }"#);
        assert_eq!(e.key_path(), "umems.a.regions[1]");
    }

    #[test]
    fn lport_fields_aliases_and_netdev() {
        let cfg = parse(
            r#"{ "umems": { "u": { "bufcnt": 16 } },
                 "lports": {
                   "ens1f0:rx": { "pmd": "net_af_xdp:opt=1", "qid": 5, "umem": "u",
                                  "busy_polling": true, "busy_budget": 65535,
                                  "xsk_pin_path": "/sys/fs/bpf/x", "desc": "d" },
                   "lo": { "pmd": "net_af_xdp", "qid": 0, "umem": "u", "netdev": "lo" } } }"#,
        )
        .unwrap();
        let l = cfg.lport("ens1f0:rx").unwrap();
        assert_eq!(l.netdev, "ens1f0");
        assert_eq!(
            (l.pmd.as_str(), l.pmd_opts.as_deref()),
            ("net_af_xdp", Some("opt=1"))
        );
        assert!(l.busy_poll && l.unprivileged);
        assert_eq!(l.busy_budget, 0xFFFF);
        assert_eq!(l.description.as_deref(), Some("d"));
        assert_eq!(l.thread, None);
        assert_eq!(cfg.lport("lo").unwrap().netdev, "lo");
        let e = err(
            r#"{ "umems": { "u": {} }, "lports": { "a:0": { "pmd": "net_af_xdp", "qid": 0,
               "umem": "u", "netdev": "b" } } }"#,
        );
        assert!(
            e.to_string().contains("netdev \"b\" differs from \"a\""),
            "{e}"
        );
        let e = err(
            r#"{ "umems": { "u": {} }, "lports": { "a:0": { "pmd": "net_af_xdp", "qid": 70000,
               "umem": "u" } } }"#,
        );
        assert_eq!(e.key_path(), "lports.\"a:0\".qid");
        assert!(e.to_string().contains("expected u16"), "{e}");
        let e = err(
            r#"{ "umems": { "u": {} }, "lports": { "averyveryverylongname:0": { "pmd": "net_af_xdp",
               "qid": 0, "umem": "u" } } }"#,
        );
        assert!(e.to_string().contains("longer than 15 characters"), "{e}");
        let e = err(
            r#"{ "umems": { "u": {} }, "lports": { ":0": { "pmd": "net_af_xdp", "qid": 0, "umem": "u" } } }"#,
        );
        assert!(e.to_string().contains("the netdev name is empty"), "{e}");
        let e = err(
            r#"{ "umems": {}, "lports": { "a:0": { "pmd": "net_af_xdp", "qid": 0, "umem": "u" } } }"#,
        );
        assert!(
            e.to_string()
                .contains("umem \"u\" is not defined (none is defined)"),
            "{e}"
        );
    }

    #[test]
    fn lcore_groups_resolve_sorted_and_deduplicated() {
        let cfg = parse(r#"{ "lcore-groups": { "g": [7, "2-4", "3", 2, " 9 - 10 "] } }"#).unwrap();
        assert_eq!(cfg.lcore_group("g").unwrap().cpus, vec![2, 3, 4, 7, 9, 10]);
        for (bad, want) in [
            ("[\"5-3\"]", "\"5-3\" is not a valid range"),
            ("[\"x\"]", "is not a number or a range"),
            ("[-1]", "-1 is not a CPU number"),
            ("[true]", "found a boolean"),
            ("[]", "needs at least one CPU"),
            ("[4096]", "above the largest CPU id"),
        ] {
            let e = err(&format!("{{ \"lcore-groups\": {{ \"g\": {bad} }} }}"));
            assert!(e.to_string().contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn threads_default_group_and_kind() {
        let cfg = parse(
            r#"{ "lcore-groups": { "initial": [0], "default": [1] },
                 "threads": { "main": { "group": "initial" }, "rx": {}, "fwd:a": { "desc": "x" } } }"#,
        )
        .unwrap();
        assert!(cfg.main_thread().unwrap().is_main());
        let rx = cfg.thread("rx").unwrap();
        assert_eq!(
            (rx.kind.as_str(), rx.group.as_str(), rx.cpus.as_slice()),
            ("rx", "default", &[1][..])
        );
        assert_eq!(cfg.thread("fwd:a").unwrap().kind, "fwd");
        let e = err(r#"{ "lcore-groups": { "initial": [0] }, "threads": { "w:0": {} } }"#);
        assert!(
            e.to_string()
                .contains("threads.\"w:0\": the thread names no group and there is no \"default\""),
            "{e}"
        );
        let e = err(
            r#"{ "umems": { "u": {} }, "lports": { "a:0": { "pmd": "net_af_xdp", "qid": 0, "umem": "u" } },
                 "lcore-groups": { "default": [0] }, "threads": { "w": { "lports": ["a:0", "a:0"] } } }"#,
        );
        assert!(
            e.to_string().contains("listed twice in thread \"w\""),
            "{e}"
        );
    }

    #[test]
    fn options_types() {
        let cfg = parse(r#"{ "options": { "b": true, "i": -3, "s": "x", "a": [1, 2], "e": [] } }"#)
            .unwrap();
        let o = cfg.options();
        assert_eq!(o.get_bool("b"), Some(true));
        assert_eq!(o.get_int("i"), Some(-3));
        assert_eq!(
            o.get("a"),
            Some(&OptionValue::Array(vec![
                OptionValue::Int(1),
                OptionValue::Int(2)
            ]))
        );
        assert_eq!(
            o.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["b", "i", "s", "a", "e"]
        );
        assert_eq!(o.get_str("b"), None);
        for (bad, want) in [
            ("1.5", "not an integer"),
            ("null", "found null"),
            ("{}", "found an object"),
            ("[[1]]", "found a nested array"),
            ("[1, \"x\"]", "found a string after an integer"),
        ] {
            let e = err(&format!("{{ \"options\": {{ \"k\": {bad} }} }}"));
            assert!(e.to_string().contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn lport_groups_expand_round_robin_in_netdev_queue_order() {
        let cfg = parse(&format!(
            r#"{{ {BASE},
            "lport-groups": {{
                "g": {{ "netdevs": ["eth0", "eth1"], "queues": "all",
                        "threads": ["fwd:0", "fwd:1"], "umem": "u", "skb_mode": true }},
                "h": {{ "netdevs": ["eth2"], "queues": [5, "1-2", 1], "threads": ["fwd:2"],
                        "umem": "u" }}
            }} }}"#
        ))
        .unwrap();
        let got: Vec<(&str, u16, usize, &str)> = cfg
            .lports()
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.qid,
                    l.region,
                    l.thread.as_deref().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("eth0:0", 0, 0, "fwd:0"),
                ("eth0:1", 1, 1, "fwd:1"),
                ("eth0:2", 2, 2, "fwd:0"),
                ("eth1:0", 0, 3, "fwd:1"),
                ("eth1:1", 1, 0, "fwd:0"),
                ("eth2:1", 1, 0, "fwd:2"),
                ("eth2:2", 2, 1, "fwd:2"),
                ("eth2:5", 5, 2, "fwd:2"),
            ]
        );
        assert!(cfg.lports()[..5].iter().all(|l| l.skb_mode));
        assert_eq!(
            cfg.thread("fwd:0").unwrap().lports,
            ["eth0:0", "eth0:2", "eth1:1"]
        );
        let groups = cfg.lport_groups();
        assert_eq!(groups[0].queues, Queues::All);
        assert_eq!(groups[1].queues, Queues::List(vec![1, 2, 5]));
        assert_eq!(groups[1].lports, ["eth2:1", "eth2:2", "eth2:5"]);
    }

    #[test]
    fn lport_group_umem_is_built_from_defaults() {
        let text = |defaults: &str| {
            format!(
                r#"{{ "defaults": {{ {defaults} }}, {BASE},
                "lport-groups": {{ "g": {{ "netdevs": ["eth0"], "queues": 3, "threads": ["fwd:0"] }},
                                   "h": {{ "netdevs": ["eth1"], "queues": "0-1", "threads": ["fwd:1"],
                                          "umem": "lport-group" }} }} }}"#
            )
        };
        let cfg = parse(&text("\"rxdesc\": 1")).unwrap();
        let u = cfg.umem(LPORT_GROUP_UMEM).unwrap();
        // 3 x (rx 1 + tx 2) = 9 x 1024 frames for each of the 3 lports.
        assert_eq!((u.bufcnt, u.regions.clone()), (27, vec![9, 9, 9]));
        let regions: Vec<(&str, usize)> = cfg
            .lports()
            .iter()
            .map(|l| (l.name.as_str(), l.region))
            .collect();
        assert_eq!(regions, [("eth0:3", 0), ("eth1:0", 1), ("eth1:1", 2)]);
        let cfg = parse(&text("\"bufcnt\": 10")).unwrap();
        assert_eq!(cfg.umem(LPORT_GROUP_UMEM).unwrap().regions, vec![3, 3, 3]);
        let e = err(&text("\"bufcnt\": 2"));
        assert_eq!(e.key_path(), "defaults.bufcnt");
    }

    #[test]
    fn lport_group_errors() {
        let group = |body: &str| {
            err(&format!(
                "{{ {BASE},\n\"lport-groups\": {{\n\"g\": {body} }} }}"
            ))
        };
        let e = group(r#"{ "netdevs": ["eth9"], "queues": "all", "threads": ["fwd:0"] }"#);
        assert!(matches!(e, ConfigError::QueueCount { .. }), "{e}");
        assert_eq!(e.key_path(), "lport-groups.g.netdevs[0]");
        assert!(e.to_string().contains("/sys/class/net/eth9/queues"), "{e}");
        let e = group(r#"{ "netdevs": ["empty0"], "threads": ["fwd:0"] }"#);
        assert!(
            e.to_string().contains("netdev \"empty0\" has no queues"),
            "{e}"
        );
        let e = group(r#"{ "netdevs": [], "queues": 1, "threads": ["fwd:0"] }"#);
        assert_eq!(e.key_path(), "lport-groups.g.netdevs");
        let e = group(r#"{ "netdevs": ["eth0"], "queues": 1, "threads": [] }"#);
        assert_eq!(e.key_path(), "lport-groups.g.threads");
        let e = group(r#"{ "netdevs": ["eth0"], "queues": "3-1", "threads": ["fwd:0"] }"#);
        assert_eq!(e.key_path(), "lport-groups.g.queues");
        let e = group(r#"{ "netdevs": ["eth0"], "queues": [0, "x"], "threads": ["fwd:0"] }"#);
        assert_eq!(e.key_path(), "lport-groups.g.queues[1]");
        let e = group(r#"{ "netdevs": ["eth0"], "queues": 70000, "threads": ["fwd:0"] }"#);
        assert!(e.to_string().contains("queue 70000 is above 65535"), "{e}");
        let e =
            group(r#"{ "netdevs": ["eth0"], "queues": 1, "threads": ["fwd:0"], "umem": "nope" }"#);
        assert!(
            e.to_string()
                .contains("umem \"nope\" is not defined (known: u)"),
            "{e}"
        );
        let e = group(r#"{ "netdevs": ["eth0"], "queues": 1, "threads": ["fwd:0"], "bogus": 1 }"#);
        assert_eq!(e.key_path(), "lport-groups.g.bogus");
        // A generated lport may not collide with a declared one.
        let e = err(&format!(
            r#"{{ {BASE},
            "lports": {{ "eth0:1": {{ "pmd": "net_af_xdp", "qid": 1, "umem": "u" }} }},
            "lport-groups": {{ "g": {{ "netdevs": ["eth0"], "queues": "0-1", "threads": ["fwd:0"], "umem": "u" }} }} }}"#
        ));
        assert!(
            e.to_string()
                .contains("lport \"eth0:1\" is already defined at line 10"),
            "{e}"
        );
    }

    #[test]
    fn queues_all_reads_sysfs() {
        // Every Linux machine has a loopback with exactly one RX queue in sysfs.
        let cfg = Config::parse(
            r#"{ "umems": { "u": {} }, "lcore-groups": { "default": [0] }, "threads": { "w": {} },
                 "lport-groups": { "g": { "netdevs": ["lo"], "queues": "all", "threads": ["w"], "umem": "u" } } }"#,
            "sysfs",
        )
        .unwrap();
        assert_eq!(
            cfg.lports().len(),
            crate::sys::netdev::rx_queue_count("lo").unwrap()
        );
        assert_eq!(cfg.lports()[0].name, "lo:0");
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Backend {
        name: String,
        weight: u32,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Vip {
        addr: std::net::IpAddr,
        backends: Vec<Backend>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Maglev {
        vips: Vec<Vip>,
    }

    const MAGLEV: &str = r#"{
    "lcore-groups": { "default": [0] },
    "maglev": {
        "vips": [
            {
                "addr": "198.18.1.1",
                "backends": [
                    { "name": "a", "weight": 1 },
                    { "name": "b", "weight": 2 },
                    { "name": "c", "weight": WEIGHT }
                ]
            }
        ]
    }
}"#;

    fn maglev(weight: &str) -> Result<Option<Maglev>, ConfigError> {
        parse(&MAGLEV.replace("WEIGHT", weight))
            .unwrap()
            .section::<Maglev>("maglev")
    }

    #[test]
    fn section_decodes_and_reports_path_and_line() {
        let m = maglev("3").unwrap().unwrap();
        assert_eq!(m.vips[0].backends[2].weight, 3);
        let e = maglev("\"x\"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.jsonc:10: maglev.vips[0].backends[2].weight: invalid type: string \"x\", expected u32"
        );
        let e = maglev("3, \"wieght\": 4").unwrap_err();
        assert_eq!(e.line(), Some(10));
        assert_eq!(e.key_path(), "maglev.vips[0].backends[2].wieght");
        assert!(e.to_string().contains("unknown field `wieght`"), "{e}");
        let cfg = parse(
            &MAGLEV
                .replace("\"name\": \"c\", ", "")
                .replace("WEIGHT", "1"),
        )
        .unwrap();
        let e = cfg.section::<Maglev>("maglev").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.jsonc:10: maglev.vips[0].backends[2]: missing field `name`"
        );
        let cfg = parse(&MAGLEV.replace("198.18.1.1", "nope").replace("WEIGHT", "1")).unwrap();
        let e = cfg.section::<Maglev>("maglev").unwrap_err();
        assert_eq!((e.line(), e.key_path()), (Some(6), "maglev.vips[0].addr"));
        // Absent section.
        assert!(parse("{}")
            .unwrap()
            .section::<Maglev>("maglev")
            .unwrap()
            .is_none());
    }

    #[test]
    fn error_at_locates_application_findings() {
        let cfg = parse(&MAGLEV.replace("WEIGHT", "1")).unwrap();
        let e = cfg.error_at(
            "maglev.vips[0].backends[1].name",
            "duplicate backend name \"b\"",
        );
        assert_eq!(
            e.to_string(),
            "t.jsonc:9: maglev.vips[0].backends[1].name: duplicate backend name \"b\""
        );
        // A key that is not in the file points at its nearest parent.
        let e = cfg.error_at("maglev.vips[0].table_size", "65536 is not prime");
        assert_eq!(e.line(), Some(5));
        assert_eq!(e.key_path(), "maglev.vips[0].table_size");
        assert_eq!(cfg.line_of("maglev.vips"), Some(4));
        assert_eq!(cfg.line_of("maglev.nothing"), None);
        let cfg = parse("{\n\"lports\": {},\n\"x\": {\n\"a:b\": 1 } }").unwrap();
        assert_eq!(cfg.line_of("x.\"a:b\""), Some(4));
    }

    #[test]
    fn application_sections_keep_file_order() {
        let cfg = parse(r#"{ "zeta": 1, "umems": {}, "alpha": {}, "users": {} }"#).unwrap();
        assert_eq!(
            cfg.application_sections().collect::<Vec<_>>(),
            ["zeta", "alpha"]
        );
        assert_eq!(cfg.section_value("zeta"), Some(&Value::from(1)));
        assert_eq!(cfg.section::<u8>("zeta").unwrap(), Some(1));
    }

    #[test]
    fn jsonc_string_round_trips() {
        let cfg = parse(&format!(
            r#"{{ {BASE}, "options": {{ "k": ["a"] }}, "app": {{ "x": [1, 2] }},
            "lports": {{ "eth0:9": {{ "pmd": "net_af_xdp:z", "qid": 9, "umem": "u", "uds_path": "/s" }} }},
            "lport-groups": {{ "g": {{ "netdevs": ["eth1"], "threads": ["fwd:1", "fwd:2"], "umem": "u" }} }} }}"#
        ))
        .unwrap();
        let text = cfg.to_jsonc_string().unwrap();
        assert!(text.starts_with("// application: "));
        let again = Config::parse(&text, "again").unwrap();
        assert_eq!(again.lports(), cfg.lports());
        assert_eq!(again.umems(), cfg.umems());
        assert_eq!(again.threads(), cfg.threads());
        assert_eq!(again.lcore_groups(), cfg.lcore_groups());
        assert_eq!(again.options(), cfg.options());
        assert_eq!(again.defaults(), cfg.defaults());
        assert_eq!(again.section_value("app"), cfg.section_value("app"));
        assert!(again.lport_groups().is_empty());
    }
}

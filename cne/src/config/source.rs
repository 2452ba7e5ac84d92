//! JSON-C source text: comment removal, key paths and the key-path-to-line map.
//!
//! JSON-C is JSON plus `//` line comments and `/* */` block comments (and, as json-c tolerates
//! them, trailing commas before `}` and `]`). Comments and such commas are blanked out byte for
//! byte (newlines kept), so every byte of the remaining JSON sits at the line and column it had in
//! the file: the JSON parser's positions are the file's positions without any translation.
//!
//! After the text parses as JSON, [`LineMap::scan`] walks it once more and records, for every key
//! path, the line where that member's key (or that array element) starts. Every later error,
//! including the application's own, is reported against that map, so it can name `file:line`.
//! The scan also rejects duplicate keys, which plain JSON parsers silently collapse.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// One step of a key path: an object member or an array element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// Object member name.
    Key(String),
    /// Array element index.
    Index(usize),
}

/// A path from the document root to a value, e.g. `lports."eth0:0".umem` or `maglev.vips[0].name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// The empty path (the document root).
    pub(crate) fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by an object member.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path extended by an array index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    /// This path extended by the segments of `other`.
    pub(crate) fn join(&self, other: &KeyPath) -> Self {
        let mut segs = self.0.clone();
        segs.extend(other.0.iter().cloned());
        Self(segs)
    }

    fn push(&mut self, seg: Seg) {
        self.0.push(seg);
    }

    fn pop(&mut self) {
        self.0.pop();
    }

    /// The path without its last segment, or `None` at the root.
    pub(crate) fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            None
        } else {
            Some(Self(self.0[..self.0.len() - 1].to_vec()))
        }
    }

    /// Parses the textual form written by `Display` (`a.b[2]."c:d"`). Text that does not follow
    /// that grammar is taken as one single key, so a lookup degrades to the nearest known line.
    pub(crate) fn parse(text: &str) -> Self {
        Self::try_parse(text).unwrap_or_else(|| Self(vec![Seg::Key(text.to_owned())]))
    }

    fn try_parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let mut segs = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'[' {
                let close = i + text[i..].find(']')?;
                segs.push(Seg::Index(text[i + 1..close].trim().parse().ok()?));
                i = close + 1;
                continue;
            }
            if !segs.is_empty() {
                if bytes[i] != b'.' {
                    return None;
                }
                i += 1;
            }
            if bytes.get(i) == Some(&b'"') {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i >= bytes.len() {
                    return None;
                }
                i += 1;
                segs.push(Seg::Key(serde_json::from_str(&text[start..i]).ok()?));
            } else {
                let start = i;
                while i < bytes.len() && bytes[i] != b'.' && bytes[i] != b'[' {
                    i += 1;
                }
                if i == start {
                    return None;
                }
                segs.push(Seg::Key(text[start..i].to_owned()));
            }
        }
        Some(Self(segs))
    }
}

impl From<&serde_path_to_error::Path> for KeyPath {
    fn from(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        let segs = path
            .iter()
            .filter_map(|seg| match seg {
                Segment::Seq { index } => Some(Seg::Index(*index)),
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                Segment::Unknown => None,
            })
            .collect();
        Self(segs)
    }
}

/// Keys made only of these characters are printed bare; all others are quoted.
fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare(k) {
                        f.write_str(k)?;
                    } else {
                        // Debug of str escapes quotes and control characters like JSON does.
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A syntax problem at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column (bytes).
    pub(crate) column: usize,
    /// What is wrong.
    pub(crate) message: String,
}

/// 1-based line and column of byte offset `pos` in `bytes`.
fn line_col(bytes: &[u8], pos: usize) -> (usize, usize) {
    let before = &bytes[..pos.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = match before.iter().rposition(|&b| b == b'\n') {
        Some(nl) => pos - nl,
        None => pos + 1,
    };
    (line, col)
}

/// Replaces `//` and `/* */` comments with spaces (keeping newlines), leaving string literals
/// untouched: `"http://x"` and `"/* not a comment */"` stay as they are.
pub(crate) fn strip_comments(text: &str) -> Result<String, SyntaxError> {
    let src = text.as_bytes();
    let mut out = src.to_vec();
    let mut i = 0;
    let mut in_string = false;
    while i < src.len() {
        let b = src[i];
        if in_string {
            match b {
                b'\\' => i += 1, // skip the escaped byte, whatever it is
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match (b, src.get(i + 1)) {
            (b'"', _) => {
                in_string = true;
                i += 1;
            }
            (b'/', Some(b'/')) => {
                while i < src.len() && src[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                let start = i;
                out[i] = b' ';
                out[i + 1] = b' ';
                i += 2;
                loop {
                    if i + 1 >= src.len() {
                        let (line, column) = line_col(src, start);
                        return Err(SyntaxError {
                            line,
                            column,
                            message: "unterminated /* comment".into(),
                        });
                    }
                    if src[i] == b'*' && src[i + 1] == b'/' {
                        out[i] = b' ';
                        out[i + 1] = b' ';
                        i += 2;
                        break;
                    }
                    if src[i] != b'\n' {
                        out[i] = b' ';
                    }
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    // Only whole comments (all bytes of any multi-byte character in them) were blanked, so the
    // text is still UTF-8; the check costs nothing and avoids an unwrap.
    String::from_utf8(out).map_err(|e| {
        let (line, column) = line_col(src, e.utf8_error().valid_up_to());
        SyntaxError {
            line,
            column,
            message: "invalid UTF-8".into(),
        }
    })
}

/// Blanks commas that directly precede `}` or `]` (whitespace between allowed), outside strings.
/// json-c, which CNDP parses with, tolerates such trailing commas, so files written for CNDP
/// may have them. Runs on comment-free text; positions stay unchanged.
pub(crate) fn strip_trailing_commas(text: &str) -> String {
    let src = text.as_bytes();
    let mut out = text.to_owned().into_bytes();
    let mut in_string = false;
    let mut last_comma: Option<usize> = None;
    // Last byte outside whitespace: a comma only counts as trailing after a value.
    let mut prev = b' ';
    let mut i = 0;
    while i < src.len() {
        let b = src[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'"' => {
                in_string = true;
                last_comma = None;
            }
            b',' if !matches!(prev, b',' | b'[' | b'{' | b':') => last_comma = Some(i),
            b'}' | b']' => {
                if let Some(c) = last_comma.take() {
                    out[c] = b' ';
                }
            }
            _ => last_comma = None,
        }
        prev = b;
        i += 1;
    }
    // Only ASCII commas were replaced by ASCII spaces: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// Parses comment-free JSON text into a value, with the position of the first syntax error.
pub(crate) fn parse_json(stripped: &str) -> Result<serde_json::Value, SyntaxError> {
    serde_json::from_str(stripped).map_err(|e| {
        // serde_json appends " at line L column C" to its message; we print the position ourselves.
        let text = e.to_string();
        let message = match text.rfind(" at line ") {
            Some(cut) => text[..cut].to_owned(),
            None => text,
        };
        SyntaxError {
            line: e.line().max(1),
            column: e.column().max(1),
            message,
        }
    })
}

/// The line of every key path in a document.
#[derive(Debug, Clone, Default)]
pub(crate) struct LineMap {
    lines: HashMap<KeyPath, usize>,
}

/// A key that occurs twice in one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DuplicateKey {
    /// Path of the second occurrence.
    pub(crate) path: KeyPath,
    /// Line of the second occurrence.
    pub(crate) line: usize,
    /// Line of the first occurrence.
    pub(crate) first_line: usize,
}

impl LineMap {
    /// Scans comment-free text that is already known to be valid JSON.
    pub(crate) fn scan(stripped: &str) -> Result<Self, DuplicateKey> {
        let mut scanner = Scanner {
            src: stripped.as_bytes(),
            pos: 0,
            line: 1,
            map: HashMap::new(),
            path: KeyPath::root(),
        };
        scanner.skip_ws();
        let root_line = scanner.line;
        scanner.map.insert(KeyPath::root(), root_line);
        scanner.value()?;
        Ok(Self { lines: scanner.map })
    }

    /// The line of `path`, or of its nearest ancestor that exists in the document.
    pub(crate) fn line(&self, path: &KeyPath) -> usize {
        let mut p = path.clone();
        loop {
            if let Some(&line) = self.lines.get(&p) {
                return line;
            }
            match p.parent() {
                Some(parent) => p = parent,
                None => return 1,
            }
        }
    }

    /// The line of `path` if that exact path exists.
    pub(crate) fn exact(&self, path: &KeyPath) -> Option<usize> {
        self.lines.get(path).copied()
    }
}

struct Scanner<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
    map: HashMap<KeyPath, usize>,
    path: KeyPath,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn bump(&mut self) {
        if self.peek() == Some(b'\n') {
            self.line += 1;
        }
        self.pos += 1;
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.bump();
        }
    }

    /// Skips a string literal starting at the opening quote and returns its decoded text.
    fn string(&mut self) -> String {
        let start = self.pos;
        self.bump();
        while let Some(b) = self.peek() {
            match b {
                b'\\' => {
                    self.bump();
                    self.bump();
                }
                b'"' => {
                    self.bump();
                    break;
                }
                _ => self.bump(),
            }
        }
        let raw = &self.src[start..self.pos];
        std::str::from_utf8(raw)
            .ok()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    fn value(&mut self) -> Result<(), DuplicateKey> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                self.string();
                Ok(())
            }
            _ => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n') {
                        break;
                    }
                    self.bump();
                }
                Ok(())
            }
        }
    }

    fn object(&mut self) -> Result<(), DuplicateKey> {
        self.bump(); // '{'
        let mut seen: HashSet<String> = HashSet::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'}') | None => {
                    self.bump();
                    return Ok(());
                }
                Some(b',') => {
                    self.bump();
                    continue;
                }
                _ => {}
            }
            let line = self.line;
            let key = self.string();
            self.path.push(Seg::Key(key.clone()));
            if !seen.insert(key) {
                let first_line = self.map.get(&self.path).copied().unwrap_or(line);
                return Err(DuplicateKey {
                    path: self.path.clone(),
                    line,
                    first_line,
                });
            }
            self.map.insert(self.path.clone(), line);
            self.skip_ws();
            self.bump(); // ':'
            self.value()?;
            self.path.pop();
        }
    }

    fn array(&mut self) -> Result<(), DuplicateKey> {
        self.bump(); // '['
        let mut index = 0;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b']') | None => {
                    self.bump();
                    return Ok(());
                }
                Some(b',') => {
                    self.bump();
                    continue;
                }
                _ => {}
            }
            self.path.push(Seg::Index(index));
            self.map.insert(self.path.clone(), self.line);
            self.value()?;
            self.path.pop();
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_line_and_block_comments_keeping_positions() {
        let text = "{ // c1\n  \"a\": /* x\n y */ 1\n}";
        let out = strip_comments(text).unwrap();
        assert_eq!(out.len(), text.len());
        assert_eq!(out, "{      \n  \"a\":     \n      1\n}");
    }

    #[test]
    fn comment_markers_inside_strings_are_kept() {
        let text = r#"{"url": "http://x//y", "c": "/* no */", "q": "a\"//b", "e": "\\"} // end"#;
        let out = strip_comments(text).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["url"], "http://x//y");
        assert_eq!(v["c"], "/* no */");
        assert_eq!(v["q"], "a\"//b");
        assert_eq!(v["e"], "\\");
    }

    #[test]
    fn non_ascii_in_comments_and_strings() {
        let text = "{ /* héllo — wörld */ \"k\": \"ünï\" } // ✓";
        let out = strip_comments(text).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["k"], "ünï");
    }

    #[test]
    fn trailing_commas_are_tolerated_like_json_c() {
        let text = "{\"a\": [1, 2, ],\n \"s\": \",]\", \"o\": {\"x\": 1,\n },\n}";
        let out = strip_trailing_commas(text);
        assert_eq!(out.len(), text.len());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["a"], serde_json::json!([1, 2]));
        assert_eq!(v["s"], ",]");
        assert_eq!(v["o"]["x"], 1);
        // A lone comma is still an error for the parser.
        for bad in ["[,]", "[1,,]", "{,}", "{\"a\":,}"] {
            let out = strip_trailing_commas(bad);
            assert!(
                serde_json::from_str::<serde_json::Value>(&out).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn unterminated_block_comment_is_reported_at_its_start() {
        let err = strip_comments("{\n  /* open\n}").unwrap_err();
        assert_eq!((err.line, err.column), (2, 3));
        assert!(err.message.contains("unterminated"));
    }

    #[test]
    fn json_syntax_errors_carry_positions_and_trailing_text_fails() {
        let err = parse_json("{\n  \"a\": 1,\n  \"b\" 2\n}").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("expected `:`"), "{}", err.message);
        let err = parse_json("{}\n{}").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.message.contains("trailing characters"),
            "{}",
            err.message
        );
    }

    #[test]
    fn line_map_records_keys_and_elements() {
        let text = "{\n \"a\": {\n  \"b:c\": [\n   1,\n   {\"d\": 2}\n  ]\n }\n}";
        let map = LineMap::scan(text).unwrap();
        let p = KeyPath::root().key("a").key("b:c");
        assert_eq!(map.exact(&KeyPath::root().key("a")), Some(2));
        assert_eq!(map.exact(&p), Some(3));
        assert_eq!(map.exact(&p.index(0)), Some(4));
        assert_eq!(map.exact(&p.index(1).key("d")), Some(5));
        // A missing path reports its nearest existing ancestor.
        assert_eq!(map.line(&p.index(1).key("zz")), 5);
    }

    #[test]
    fn duplicate_keys_are_found() {
        let text = "{\n \"a\": 1,\n \"b\": {\"x\": 1,\n  \"x\": 2}\n}";
        let dup = LineMap::scan(text).unwrap_err();
        assert_eq!(dup.path.to_string(), "b.x");
        assert_eq!((dup.first_line, dup.line), (3, 4));
    }

    #[test]
    fn key_path_display_and_parse_round_trip() {
        let p = KeyPath::root()
            .key("lports")
            .key("eth0:0")
            .key("umem")
            .index(3)
            .key("lcore-groups");
        assert_eq!(p.to_string(), "lports.\"eth0:0\".umem[3].lcore-groups");
        assert_eq!(KeyPath::parse(&p.to_string()), p);
        let q = KeyPath::parse("maglev.vips[0].backends[2].weight");
        assert_eq!(
            q,
            KeyPath::root()
                .key("maglev")
                .key("vips")
                .index(0)
                .key("backends")
                .index(2)
                .key("weight")
        );
        assert_eq!(KeyPath::parse("a..b"), KeyPath::root().key("a..b"));
    }
}

//! The configuration error type.
//!
//! Every error past reading the file names where it happened: the file (or the origin given to
//! [`Config::parse`](super::Config::parse)), the line, and for semantic problems the key path, so
//! an operator can jump straight to the offending entry.

use std::io;

/// Joins a key path and a message the way every error prints them (`path: message`).
fn at(key_path: &str, message: &str) -> String {
    if key_path.is_empty() {
        message.to_owned()
    } else {
        format!("{key_path}: {message}")
    }
}

/// Why a configuration could not be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the configuration file")]
    Read {
        /// The path given to [`Config::load`](super::Config::load).
        path: String,
        /// The failing `read` call's error.
        #[source]
        source: io::Error,
    },

    /// The text is not JSON-C (JSON with `//` and `/* */` comments).
    #[error("{origin}:{line}:{column}: {message}")]
    Syntax {
        /// File name or origin label.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        message: String,
    },

    /// The text is valid JSON-C but an entry is wrong: bad type, unknown key, dangling
    /// reference, value out of range, or an application's own check.
    #[error("{origin}:{line}: {}", at(key_path, message))]
    Invalid {
        /// File name or origin label.
        origin: String,
        /// 1-based line of the offending key (or of its nearest existing parent).
        line: usize,
        /// Key path such as `lports."eth0:0".umem`; empty for the document itself.
        key_path: String,
        /// What is wrong.
        message: String,
    },

    /// The queue count of a netdev named by an lport-group with `"queues": "all"` could not be read.
    #[error(
        "{origin}:{line}: {}: cannot count the queues of netdev \"{netdev}\" ({sysfs})",
        key_path
    )]
    QueueCount {
        /// File name or origin label.
        origin: String,
        /// 1-based line of the netdev entry.
        line: usize,
        /// Key path of the netdev entry, e.g. `lport-groups.group0.netdevs[1]`.
        key_path: String,
        /// The interface name.
        netdev: String,
        /// The sysfs directory that was read.
        sysfs: String,
        /// The failing `read_dir` call's error.
        #[source]
        source: io::Error,
    },
}

impl ConfigError {
    /// The 1-based line the error points at, if it has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { line, .. }
            | Self::Invalid { line, .. }
            | Self::QueueCount { line, .. } => Some(*line),
        }
    }

    /// The key path the error points at (empty for syntax and read errors).
    pub fn key_path(&self) -> &str {
        match self {
            Self::Invalid { key_path, .. } | Self::QueueCount { key_path, .. } => key_path,
            Self::Read { .. } | Self::Syntax { .. } => "",
        }
    }

    /// The file name or origin label the error refers to.
    pub fn origin(&self) -> &str {
        match self {
            Self::Read { path, .. } => path,
            Self::Syntax { origin, .. }
            | Self::Invalid { origin, .. }
            | Self::QueueCount { origin, .. } => origin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_formats() {
        let e = ConfigError::Invalid {
            origin: "jsonc/fwd.jsonc".into(),
            line: 23,
            key_path: "lports.\"eth0:0\".umem".into(),
            message: "umem \"umem9\" is not defined (known: umem0)".into(),
        };
        assert_eq!(
            e.to_string(),
            "jsonc/fwd.jsonc:23: lports.\"eth0:0\".umem: umem \"umem9\" is not defined (known: umem0)"
        );
        assert_eq!(e.line(), Some(23));
        let e = ConfigError::Invalid {
            origin: "x".into(),
            line: 1,
            key_path: String::new(),
            message: "top".into(),
        };
        assert_eq!(e.to_string(), "x:1: top");
        let e = ConfigError::Syntax {
            origin: "x".into(),
            line: 2,
            column: 5,
            message: "expected `:`".into(),
        };
        assert_eq!(e.to_string(), "x:2:5: expected `:`");
    }
}

//! Bearer-token authorisation of admin changes (`--admin-token-file`).
//!
//! The token is read once at start-up from a file that only its owner may read or write (the check
//! `ssh` makes for private keys: no permission bit for group or others), through
//! [`cne::config::open_regular`], so a FIFO or a device in its place is refused instead of blocking or
//! being read without end. Trailing whitespace (the newline an editor or `echo` adds) is stripped; an
//! empty token, or one with spaces or control characters inside, is refused.
//!
//! A request carries it as `Authorization: Bearer <token>` (RFC 6750; the scheme name is
//! case-insensitive). The comparison takes the same time whatever the bytes of the guess are
//! ([`subtle::ConstantTimeEq`]), so response times tell an attacker nothing about how much of a guess
//! was right; only the token's length is not hidden (a guess of another length is refused at once),
//! which is why tokens should be long random strings (`head -c 32 /dev/urandom | base64`).

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use subtle::ConstantTimeEq;

/// Largest token file read.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Tokens shorter than this are accepted with a warning.
pub const SHORT_TOKEN_BYTES: usize = 16;

/// A secret bearer token. Its `Debug` output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({} bytes)", self.0.len())
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Opening or reading failed, or the path is not a regular file.
    #[error("{path}: cannot read the admin token file: {source}")]
    Read {
        /// The file.
        path: String,
        /// The failing call's error.
        #[source]
        source: io::Error,
    },
    /// Group or others have some permission on the file.
    #[error(
        "{path}: the admin token file is accessible to group or others (mode {mode:03o}); \
         make it private to its owner: chmod 600 {path}"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not a usable token.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        problem: &'static str,
    },
}

impl Token {
    /// A token from its text; trailing whitespace is stripped. Refuses an empty token and one with
    /// whitespace or control characters inside.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, &'static str> {
        let mut secret = secret.into();
        let len = secret.trim_ascii_end().len();
        secret.truncate(len);
        if secret.is_empty() {
            return Err("the admin token is empty");
        }
        if !secret.iter().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the admin token contains a space, a control character or a non-ASCII byte \
                 (one line of printable ASCII expected)",
            );
        }
        Ok(Self(secret))
    }

    /// Reads the token from `path` (see the [module documentation](self)).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let name = path.display().to_string();
        let read = |source| TokenError::Read {
            path: name.clone(),
            source,
        };
        let (file, meta) = cne::config::open_regular(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Permissions { path: name, mode });
        }
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read)?;
        if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(read(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_TOKEN_FILE_BYTES} bytes"),
            )));
        }
        Self::new(bytes).map_err(|problem| TokenError::Invalid {
            path: name,
            problem,
        })
    }

    /// The token's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: an empty token cannot be built.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an `Authorization` header value carries this token as `Bearer <token>`.
    pub fn authorizes(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header else {
            return false;
        };
        let value = value.trim_ascii();
        let Some(space) = value.iter().position(|&b| b == b' ') else {
            return false;
        };
        let (scheme, credentials) = value.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"Bearer") {
            return false;
        }
        // Lengths that differ are refused at once; equal lengths are compared in constant time.
        bool::from(credentials.trim_ascii().ct_eq(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
            let d =
                std::env::temp_dir().join(format!("nf-maglev-auth-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).expect("mkdir");
            Self(d)
        }
        fn file(&self, name: &str, text: &[u8], mode: u32) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, text).expect("write");
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
            p
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn bearer_header_must_carry_the_exact_token() {
        let t = Token::new("s3cret-token-0123456789\n").expect("valid");
        assert_eq!(t.len(), 23, "the newline is stripped");
        assert!(t.authorizes(Some(b"Bearer s3cret-token-0123456789")));
        assert!(t.authorizes(Some(b"bearer  s3cret-token-0123456789 ")));
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"s3cret-token-0123456789",
            b"Basic s3cret-token-0123456789",
            b"Bearer s3cret-token-012345678",
            b"Bearer s3cret-token-01234567890",
            b"Bearer S3cret-token-0123456789",
            b"Bearer s3cret-token-0123456788",
            b"Bearers3cret-token-0123456789",
        ] {
            assert!(
                !t.authorizes(Some(bad)),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(!t.authorizes(None));
        assert_eq!(
            format!("{t:?}"),
            "Token(23 bytes)",
            "Debug hides the secret"
        );
    }

    #[test]
    fn tokens_must_be_one_printable_word() {
        assert!(Token::new("").is_err());
        assert!(Token::new(" \n\r\n").is_err());
        assert!(Token::new("two words").is_err());
        assert!(Token::new("tab\there").is_err());
        assert!(Token::new("line1\nline2").is_err());
        assert!(Token::new("caf\u{e9}").is_err());
        assert!(Token::new("ok\r\n").is_ok());
    }

    #[test]
    fn token_files_are_checked() {
        let d = Dir::new("files");
        let good = d.file("good", b"0123456789abcdef\n", 0o600);
        let t = Token::from_file(&good).expect("good file");
        assert!(t.authorizes(Some(b"Bearer 0123456789abcdef")));
        assert!(Token::from_file(&d.file("ro", b"0123456789abcdef", 0o400)).is_ok());

        for mode in [0o644, 0o640, 0o604, 0o660, 0o610] {
            let p = d.file(&format!("m{mode:o}"), b"0123456789abcdef", mode);
            let e = Token::from_file(&p).expect_err("too open").to_string();
            assert!(
                e.contains(&format!("(mode {mode:03o})")) && e.contains("chmod 600"),
                "{e}"
            );
        }
        let e = Token::from_file(&d.file("empty", b"\n", 0o600))
            .expect_err("empty")
            .to_string();
        assert!(e.ends_with("the admin token is empty"), "{e}");
        let big = vec![b'a'; MAX_TOKEN_FILE_BYTES as usize + 1];
        let e = Token::from_file(&d.file("big", &big, 0o600))
            .expect_err("too big")
            .to_string();
        assert!(e.contains("larger than 4096 bytes"), "{e}");
        let e = Token::from_file(&d.0.join("missing"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("cannot read the admin token file"), "{e}");
        // A symlink to a device is followed and refused without reading it.
        let zero = d.0.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let e = Token::from_file(&zero).expect_err("device").to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}

//! Reading configuration files without trusting what the path names.
//!
//! A configuration path is re-read on every reload, and whoever can write the directory can replace the
//! file by anything: a FIFO (a plain `read` blocks until a writer comes, wedging the thread that reloads),
//! a symlink to `/dev/zero` (a plain `read_to_string` grows without end), a directory. So the file is
//! opened with `O_NONBLOCK` (opening a FIFO then returns at once instead of waiting for a writer), its
//! type is checked on the open descriptor (`fstat`, after symlinks were followed, so there is no window
//! between the check and the read), only regular files are read, and never more than a cap.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest configuration file read: 16 MiB, far above any real configuration.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// What a non-regular file is, for error messages.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "of an unknown type"
    }
}

/// Opens `path` for reading (following symlinks) if it is a regular file, without blocking on FIFOs or
/// devices. Returns the file and its metadata (from `fstat` on the open descriptor). A file of another
/// type gives an [`io::ErrorKind::InvalidInput`] error saying what it is.
pub fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file (it is {})", kind(&meta)),
        ));
    }
    Ok((file, meta))
}

/// Reads the regular file at `path` as UTF-8 text of at most `limit` bytes (see [`open_regular`]).
/// Error messages do not repeat the path: callers name it.
pub fn read_regular_to_string(path: &Path, limit: u64) -> io::Result<String> {
    let (file, meta) = open_regular(path)?;
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        )
    };
    if meta.len() > limit {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // One byte over the cap tells a file that grew past it from one that ends at it.
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cne-config-file-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn regular_files_are_read_up_to_the_cap() {
        let d = dir("cap");
        let p = d.join("c.jsonc");
        std::fs::write(&p, "0123456789").expect("write");
        assert_eq!(read_regular_to_string(&p, 10).expect("fits"), "0123456789");
        let e = read_regular_to_string(&p, 9).expect_err("over the cap");
        assert!(e.to_string().contains("larger than 9 bytes"), "{e}");
        std::fs::write(&p, [0xff, 0xfe]).expect("write");
        let e = read_regular_to_string(&p, 10).expect_err("not UTF-8");
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        // A symlink to a regular file is followed.
        let link = d.join("link.jsonc");
        std::fs::write(&p, "{}").expect("write");
        std::os::unix::fs::symlink(&p, &link).expect("symlink");
        assert_eq!(read_regular_to_string(&link, 10).expect("read"), "{}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let d = dir("kinds");
        let fifo = d.join("fifo.jsonc");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        let zero = d.join("zero.jsonc");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        // Config::load names the file once, then the problem (its source).
        let e = crate::config::Config::load(&zero).expect_err("refused");
        assert_eq!(
            crate::error_chain(&e),
            format!(
                "{}: cannot read the configuration file: not a regular file (it is a character device)",
                zero.display()
            )
        );
        let mut cases = vec![(zero, "a character device"), (d.clone(), "a directory")];
        if made {
            cases.push((fifo, "a FIFO"));
        } else {
            eprintln!("mkfifo not available: FIFO case skipped");
        }
        for (p, what) in cases {
            let start = Instant::now();
            let e = read_regular_to_string(&p, MAX_CONFIG_BYTES).expect_err("refused");
            assert!(start.elapsed() < Duration::from_secs(5), "{what} blocked");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(
                e.to_string().contains(what) && e.to_string().contains("not a regular file"),
                "{e}"
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}

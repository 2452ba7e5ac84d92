//! Functional-test helpers: send hand-made frames and capture what comes out.
//!
//! [`send_frames`] writes raw Ethernet frames on an interface through an AF_PACKET socket
//! (a short `python3` program run inside the namespace): the peer receives them as ordinary
//! frames, with or without an XDP program. [`Capture`] runs `tcpdump -w` on an interface and
//! parses the pcap file it writes; it records arriving frames only (`-Q in`). A capture sees
//! frames that reach the stack: on a veth whose XDP program drops them (the XDP_DROP sink) it
//! sees nothing, so capture on an end with the XDP_PASS sink, GRO on, or no program.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::process::{self, Proc};
use crate::wait::wait_for;

const SENDER: &str = "import socket,sys\n\
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
s.bind((sys.argv[1],0))\n\
for h in sys.argv[2:]:\n    s.send(bytes.fromhex(h))\n";

/// Sends `frames` (complete Ethernet frames, >= 14 bytes each) out of `ifname` in namespace `ns`.
pub fn send_frames(ns: &str, ifname: &str, frames: &[Vec<u8>]) -> Result<()> {
    if frames.iter().any(|f| f.len() < 14) {
        bail!("every frame needs at least an Ethernet header");
    }
    let mut argv = vec![
        "python3".to_string(),
        "-c".into(),
        SENDER.into(),
        ifname.into(),
    ];
    argv.extend(
        frames
            .iter()
            .map(|f| f.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    );
    cmd::run(&mut cmd::in_netns(ns, &argv))
        .with_context(|| format!("sending {} frame(s) on {ifname}", frames.len()))?;
    Ok(())
}

/// A running `tcpdump` writing to a pcap file.
#[derive(Debug)]
pub struct Capture {
    proc: Proc,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing up to `count` frames on `ifname` in `ns` (optional tcpdump filter
    /// expression) and returns once tcpdump is listening.
    pub fn start(ns: &str, ifname: &str, count: u32, filter: Option<&str>) -> Result<Capture> {
        let dir = process::log_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join(format!(
            "{}-{ifname}-{}.pcap",
            std::process::id(),
            crate::names::unique("c")?
        ));
        let mut argv: Vec<String> = [
            "tcpdump",
            "-n",
            "-U",
            "-p",
            "-Q",
            "in",
            "-i",
            ifname,
            "-c",
            &count.to_string(),
            "-w",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.push(file.to_string_lossy().into_owned());
        if let Some(f) = filter {
            argv.extend(f.split_whitespace().map(str::to_string));
        }
        let mut proc = Proc::spawn("tcpdump", cmd::in_netns(ns, &argv))?;
        let listening = wait_for(Duration::from_secs(10), || {
            proc.stderr().contains("listening on") || !proc.is_running()
        });
        if !listening || !proc.is_running() {
            bail!(
                "tcpdump on {ifname} did not start: {}",
                proc.stderr().trim()
            );
        }
        Ok(Capture { proc, file })
    }

    /// Waits up to `timeout` for the frame count to be reached (then stops tcpdump anyway) and
    /// returns the captured frames in order.
    pub fn finish(mut self, timeout: Duration) -> Result<Vec<Vec<u8>>> {
        if self.proc.wait_timeout(timeout)?.is_none() {
            self.proc.stop(Duration::from_secs(2))?;
        }
        let data = std::fs::read(&self.file)
            .with_context(|| format!("reading {}", self.file.display()))?;
        parse_pcap(&data)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if std::env::var_os("LAB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

/// Parses a classic pcap file (either byte order, micro- or nanosecond timestamps) into frames.
pub fn parse_pcap(data: &[u8]) -> Result<Vec<Vec<u8>>> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let magic = data.get(..4).context("pcap shorter than its magic")?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("not a pcap file (magic {magic:02x?})"),
    };
    let u32_at = |off: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(off..off + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let mut frames = Vec::new();
    let mut off = 24;
    while off < data.len() {
        let len = usize::try_from(u32_at(off + 8).context("truncated pcap record header")?)?;
        let start = off + 16;
        let frame = data
            .get(start..start + len)
            .context("truncated pcap record")?;
        frames.push(frame.to_vec());
        off = start + len;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(le: bool, frames: &[&[u8]]) -> Vec<u8> {
        let w = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut d = Vec::new();
        d.extend(w(0xa1b2_c3d4));
        d.extend(if le { [2u8, 0, 4, 0] } else { [0u8, 2, 0, 4] });
        d.extend([0u8; 8]);
        d.extend(w(65535));
        d.extend(w(1));
        for f in frames {
            d.extend(w(0));
            d.extend(w(0));
            d.extend(w(u32::try_from(f.len()).unwrap()));
            d.extend(w(u32::try_from(f.len()).unwrap()));
            d.extend(*f);
        }
        d
    }

    #[test]
    fn pcap_both_byte_orders() {
        for le in [true, false] {
            let frames = parse_pcap(&pcap(le, &[&[1, 2, 3], &[4; 60]])).unwrap();
            assert_eq!(frames, vec![vec![1, 2, 3], vec![4; 60]]);
        }
        assert_eq!(parse_pcap(&[]).unwrap(), Vec::<Vec<u8>>::new());
        assert!(parse_pcap(b"garbage!").is_err());
        let mut cut = pcap(true, &[&[1, 2, 3]]);
        cut.pop();
        assert!(parse_pcap(&cut).is_err());
    }
}

//! GRE decapsulation in XDP, for the backends of the Maglev load balancer.
//!
//! In GRE forwarding mode the load balancer wraps each client packet in an outer IPv4 or IPv6 header and
//! a GRE header (RFC 2784, protocol type 0x0800 for an IPv4 inner packet, 0x86DD for IPv6) addressed to the
//! backend. The kernels this project targets have no GRE module, so the backend runs
//! [`DecapProgram`] (`bpf/gre_decap.bpf.c`) instead: for GRE packets addressed to one of its local
//! addresses it strips the outer IP and GRE headers (skipping the optional checksum, key and sequence
//! fields of RFC 2890), rewrites the Ethernet type to the inner family and passes the inner packet to the
//! kernel. The backend, which holds the VIP on a local interface, then answers the client directly (DSR).
//! Everything else passes untouched, so the program is safe on an interface that also carries the
//! backend's ordinary traffic.
//!
//! The local-address map is filled before the program is attached, so there is no moment at which GRE
//! packets to a listed address pass undecapsulated. Attach and detach follow [`crate::bpf::filter`]: a foreign
//! program is refused unless forced, and the program is held by an XDP `bpf_link`, so dropping the
//! [`DecapProgram`], or the end of the process (SIGKILL included), detaches it.

use std::io;
use std::net::IpAddr;

use crate::bpf::filter::{RuleKey, XdpError, XdpMode};
use crate::bpf::program::{self, Aligned, Attachment, Map};

/// The compiled `gre_decap` program (`bpf/gre_decap.bpf.c`).
static GRE_DECAP_OBJ: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/gre_decap.o")));

/// Stats map indices, as in `bpf/gre_decap.bpf.c`.
const STAT_DECAPPED: u32 = 0;
const STAT_PASSED: u32 = 1;
const STAT_MALFORMED: u32 = 2;

/// Counters of the decap program, summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecapStats {
    /// GRE packets to a local address, decapsulated and passed on.
    pub decapped: u64,
    /// Everything that is not GRE to a local address, passed untouched.
    pub passed: u64,
    /// GRE to a local address that cannot be decapsulated (truncated, outer fragment, RFC 1701 routing or
    /// unknown version, inner protocol other than IPv4/IPv6, inconsistent inner header): passed untouched.
    pub malformed: u64,
}

/// The `gre_decap` XDP program attached to one interface. Dropping it detaches the program.
#[derive(Debug)]
pub struct DecapProgram {
    // Declared first: dropped (detached) before the map descriptors close.
    attachment: Attachment,
    addrs: Map<RuleKey, u32>,
    stats: Map<u32, u64>,
}

impl DecapProgram {
    /// Loads the program, lists `local_addrs` as the addresses to decapsulate for, and attaches it to
    /// `ifname` in `mode`. Errors as [`crate::bpf::filter::XdpProgram::attach`].
    pub fn attach(
        ifname: &str,
        mode: XdpMode,
        force: bool,
        local_addrs: &[IpAddr],
    ) -> Result<Self, XdpError> {
        let index = program::ifindex(ifname)?;
        Attachment::refuse_foreign(ifname, index, force)?;
        let loaded = program::load_object(
            &GRE_DECAP_OBJ.0,
            c"gre_decap",
            c"gre_decap",
            &[c"decap_addrs", c"stats"],
            &[],
        )?;
        let mut maps = loaded.maps.into_iter();
        let mut next = |name: &'static str| {
            maps.next().ok_or_else(|| XdpError::Bpf {
                call: "bpf_object__find_map_by_name",
                target: name.to_string(),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            })
        };
        let addrs = Map::checked("decap_addrs", next("decap_addrs")?)?;
        let stats = Map::checked("stats", next("stats")?)?;
        for addr in local_addrs {
            addrs.update(&RuleKey::address(*addr), &1u32)?;
        }
        let attachment = Attachment::attach(ifname, index, mode, force, loaded.prog)?;
        log::info!(
            "{ifname}: attached XDP program gre_decap id {} in {mode} mode for {} local addresses",
            attachment.prog_id(),
            local_addrs.len()
        );
        Ok(DecapProgram {
            attachment,
            addrs,
            stats,
        })
    }

    /// Decapsulates GRE packets to `addr` from now on.
    pub fn add_local_addr(&self, addr: IpAddr) -> Result<(), XdpError> {
        self.addrs.update(&RuleKey::address(addr), &1u32)
    }

    /// Stops decapsulating GRE packets to `addr`; `false` when it was not listed.
    pub fn remove_local_addr(&self, addr: IpAddr) -> Result<bool, XdpError> {
        self.addrs.delete(&RuleKey::address(addr))
    }

    /// The interface the program is attached to.
    pub fn ifname(&self) -> &str {
        self.attachment.ifname()
    }

    /// The attach mode.
    pub fn mode(&self) -> XdpMode {
        self.attachment.mode()
    }

    /// The kernel id of the program.
    pub fn prog_id(&self) -> u32 {
        self.attachment.prog_id()
    }

    /// The counters, summed over all CPUs.
    pub fn stats(&self) -> Result<DecapStats, XdpError> {
        Ok(DecapStats {
            decapped: self.stats.percpu_sum(STAT_DECAPPED)?,
            passed: self.stats.percpu_sum(STAT_PASSED)?,
            malformed: self.stats.percpu_sum(STAT_MALFORMED)?,
        })
    }

    /// Runs the program once on `frame` (`BPF_PROG_RUN`): the XDP verdict and the output frame. For tests.
    #[doc(hidden)]
    pub fn test_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), XdpError> {
        self.attachment.test_run(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_object_is_an_elf_file() {
        assert_eq!(&GRE_DECAP_OBJ.0[..4], b"\x7fELF");
    }

    #[test]
    fn missing_netdev_is_named() {
        let err = DecapProgram::attach("cne-no-such-if", XdpMode::Native, false, &[])
            .expect_err("no such netdev");
        assert_eq!(err.to_string(), "netdev cne-no-such-if not found");
    }
}

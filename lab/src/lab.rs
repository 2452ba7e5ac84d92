//! The standard two-namespace lab: a generator side and a device-under-test side.
//!
//! ```text
//!   netns generator                         netns dut
//!   [generator end] 198.18.0.1/24  <-veth->  [dut end] 198.18.0.2/24
//!                   2001:2::1/64                       2001:2::2/64
//!                   02:1a:b0:00:00:01                  02:1a:b0:00:00:02
//! ```
//! Both ends get N queues, fixed MACs and addresses, static neighbour entries for each other (no
//! ARP/NDP needed before traffic flows) and are up. Nothing is attached: a test picks the XDP
//! program or forwarder it needs. A second veth pair, both ends in `generator` and down, carries no
//! traffic: the generator holds its program on it (see [`GenSpec::hold_dev`]). Fields drop in
//! declaration order, so the veths go before the namespaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{Context, Result};

use crate::addr::Mac;
use crate::generator::{GenLimit, GenSpec};
use crate::netns::Netns;
use crate::tools;
use crate::veth::{VethEnd, VethPair};

/// MAC of the generator end.
pub const GEN_MAC: Mac = Mac([0x02, 0x1a, 0xb0, 0, 0, 0x01]);
/// MAC of the device-under-test end.
pub const DUT_MAC: Mac = Mac([0x02, 0x1a, 0xb0, 0, 0, 0x02]);
/// IPv4 address of the generator end.
pub const GEN_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// IPv4 address of the device-under-test end.
pub const DUT_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// IPv6 address of the generator end.
pub const GEN_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
/// IPv6 address of the device-under-test end.
pub const DUT_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// UDP destination port of generated traffic (discard).
pub const UDP_PORT: u16 = 9;

/// A generator namespace and a device-under-test namespace joined by one veth pair.
#[derive(Debug)]
pub struct Lab {
    /// The veth pair: end `a` in `generator`, end `b` in `dut`.
    pub link: VethPair,
    /// Both ends in `generator`, down: the generator's program holder.
    pub hold: VethPair,
    /// Generator namespace.
    pub generator: Netns,
    /// Device-under-test namespace.
    pub dut: Netns,
}

impl Lab {
    /// Builds the lab with `queues` rx/tx queues on both ends.
    pub fn new(queues: u32) -> Result<Lab> {
        let generator = Netns::new("g")?;
        let dut = Netns::new("d")?;
        let link = VethPair::new(&generator, &dut, queues)?;
        let hold = VethPair::new(&generator, &generator, 1)?;
        let lab = Lab {
            link,
            hold,
            generator,
            dut,
        };
        lab.configure().context("configuring the lab veth pair")?;
        Ok(lab)
    }

    fn configure(&self) -> Result<()> {
        for (end, mac, v4, v6, peer_mac, peer_v4, peer_v6) in [
            (
                self.gen_if(),
                GEN_MAC,
                GEN_IPV4,
                GEN_IPV6,
                DUT_MAC,
                DUT_IPV4,
                DUT_IPV6,
            ),
            (
                self.dut_if(),
                DUT_MAC,
                DUT_IPV4,
                DUT_IPV6,
                GEN_MAC,
                GEN_IPV4,
                GEN_IPV6,
            ),
        ] {
            end.set_mac(mac)?;
            end.add_addr(IpAddr::V4(v4), 24)?;
            end.add_addr(IpAddr::V6(v6), 64)?;
            end.up()?;
            end.add_neigh(IpAddr::V4(peer_v4), peer_mac)?;
            end.add_neigh(IpAddr::V6(peer_v6), peer_mac)?;
        }
        Ok(())
    }

    /// The generator's end of the veth.
    pub fn gen_if(&self) -> &VethEnd {
        self.link.a()
    }

    /// The device-under-test's end of the veth.
    pub fn dut_if(&self) -> &VethEnd {
        self.link.b()
    }

    /// Attaches the counting XDP_DROP sink to the generator end, so frames sent back by the
    /// device under test are accepted, counted in its `rx_packets`, and cost the least.
    pub fn sink_returns(&self) -> Result<()> {
        self.gen_if()
            .attach_xdp(Path::new(tools::XDP_DROP_OBJ), "xdp")
    }

    /// IPv4 UDP from the generator end to the dut end (port 1024 -> 9, 64 bytes, 1 flow).
    pub fn gen_spec_v4(&self, limit: GenLimit) -> GenSpec {
        let mut s = GenSpec::new(
            self.gen_if().name(),
            GEN_MAC,
            DUT_MAC,
            GEN_IPV4.into(),
            DUT_IPV4.into(),
            limit,
        );
        s.dport = UDP_PORT;
        s.hold_dev = Some(self.hold.a().name().to_string());
        s
    }

    /// IPv6 UDP from the generator end to the dut end (port 1024 -> 9, 64 bytes, 1 flow).
    pub fn gen_spec_v6(&self, limit: GenLimit) -> GenSpec {
        let mut s = GenSpec::new(
            self.gen_if().name(),
            GEN_MAC,
            DUT_MAC,
            GEN_IPV6.into(),
            DUT_IPV6.into(),
            limit,
        );
        s.dport = UDP_PORT;
        s.hold_dev = Some(self.hold.a().name().to_string());
        s
    }
}

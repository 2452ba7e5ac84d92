//! Policy rules, routes and addresses through rtnetlink (`NETLINK_ROUTE`), used synchronously.
//!
//! [`MarkRoute`] sends every packet that carries one firewall mark out of one device: for IPv4 and
//! IPv6, a policy rule `fwmark MARK lookup TABLE` at a fixed priority and a default route
//! `default dev IFINDEX table TABLE`. A health checker marks its probe sockets (`SO_MARK`) so the
//! kernel's own TCP stack sends them into a TUN device the process reads ([`super::tun`]).
//!
//! Rules outlive the process that added them, routes do not (they go with their device). So
//! [`MarkRoute::install`] first deletes any rule with the same mark, table and priority that an
//! earlier process left when it died, and installing is idempotent across crashes; `Drop` deletes
//! the rules again. A kernel without IPv6 gets the IPv4 half only ([`MarkRoute::families`]).
//!
//! [`add_address`] and [`del_address`] put addresses on a device (IPv6 ones without duplicate address
//! detection, so they are usable at once).
//!
//! The messages are built with the rust-netlink crates (`netlink-packet-route`, `netlink-sys`); each
//! call opens its own socket, sends one request asking for an acknowledgement and waits for it.
//! Errors name the operation and the object, and say when `CAP_NET_ADMIN` is missing.

use std::fmt;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::needs_cap_net_admin;

/// Most stale copies of one rule deleted before installing it (each delete removes one).
const MAX_STALE_RULES: usize = 64;

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    fn address_family(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }

    fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Errors of changing rules, routes and addresses.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A netlink request failed. `op` names the operation and its object (`adding the IPv6 rule
    /// fwmark 0x4e4d lookup 4242`).
    #[error("{op}{}", needs_cap_net_admin(.source))]
    Netlink {
        /// What was being done, to what.
        op: String,
        /// The error the kernel (or the socket) reported.
        #[source]
        source: io::Error,
    },
}

impl RouteError {
    /// The `errno` the kernel answered with, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            RouteError::Netlink { source, .. } => source.raw_os_error(),
        }
    }
}

/// One request on a fresh `NETLINK_ROUTE` socket, waiting for its acknowledgement.
fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    loop {
        let (reply, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < reply.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = usize::try_from(msg.header.length).unwrap_or(usize::MAX);
            if len == 0 {
                break;
            }
            if msg.header.sequence_number == 1 {
                if let NetlinkPayload::Error(e) = msg.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    };
                }
            }
            offset = offset.saturating_add((len + 3) & !3);
        }
    }
}

/// `r` with "not found" (`ENOENT`, `ESRCH`, `ENODEV`, `EADDRNOTAVAIL`) taken as done.
fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if is_missing(&e) => Ok(()),
        r => r,
    }
}

/// Whether `e` says "not found" (`ENOENT`, `ESRCH`, `ENODEV`, `EADDRNOTAVAIL`).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ESRCH | libc::ENODEV | libc::EADDRNOTAVAIL)
    )
}

/// A policy rule `fwmark MARK lookup TABLE` at `priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    mark: u32,
    table: u32,
    priority: u32,
}

impl Rule {
    fn message(self, family: Family) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = family.address_family();
        msg.header.action = RuleAction::ToTable;
        // Tables above 255 only fit the attribute; the header then says RT_TABLE_UNSPEC.
        msg.header.table = u8::try_from(self.table).unwrap_or(0);
        msg.attributes = vec![
            RuleAttribute::Priority(self.priority),
            RuleAttribute::FwMark(self.mark),
            RuleAttribute::FwMask(u32::MAX),
            RuleAttribute::Table(self.table),
        ];
        msg
    }

    fn describe(self, verb: &str, family: Family) -> String {
        format!(
            "{verb} the {family} rule fwmark {:#x} lookup {} priority {}",
            self.mark, self.table, self.priority
        )
    }

    fn add(self, family: Family) -> io::Result<()> {
        request(
            RouteNetlinkMessage::NewRule(self.message(family)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Deletes one rule that matches; `ENOENT` when there is none.
    fn del(self, family: Family) -> io::Result<()> {
        request(RouteNetlinkMessage::DelRule(self.message(family)), 0)
    }

    /// Deletes every copy of the rule; `Ok` when there was none.
    fn del_all(self, family: Family) -> io::Result<()> {
        for _ in 0..MAX_STALE_RULES {
            match self.del(family) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "more than {MAX_STALE_RULES} copies"
        )))
    }
}

/// The default route of `family` through `ifindex` in `table`.
fn default_route(family: Family, table: u32, ifindex: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family.address_family();
    msg.header.destination_prefix_length = 0;
    msg.header.table = u8::try_from(table).unwrap_or(0);
    msg.header.protocol = RouteProtocol::Static;
    // No gateway: the destination is on the link, as `ip route add default dev IF` makes it.
    msg.header.scope = match family {
        Family::V4 => RouteScope::Link,
        Family::V6 => RouteScope::Universe,
    };
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![RouteAttribute::Table(table), RouteAttribute::Oif(ifindex)];
    msg
}

fn describe_route(verb: &str, family: Family, table: u32, ifindex: u32) -> String {
    let dst = match family {
        Family::V4 => "0.0.0.0/0",
        Family::V6 => "::/0",
    };
    format!("{verb} the route {dst} dev #{ifindex} table {table}")
}

/// Packets with one firewall mark routed out of one device, for IPv4 and IPv6: a policy rule and a
/// default route per family. `Drop` deletes the rules; see the module docs.
#[derive(Debug)]
pub struct MarkRoute {
    rule: Rule,
    ifindex: u32,
    families: Vec<Family>,
}

impl MarkRoute {
    /// Routes packets marked `mark` by table `table` (a rule at `priority`), whose only route is a
    /// default route out of `ifindex`; IPv4 and, when the kernel has it, IPv6. Stale rules of the same
    /// mark, table and priority are deleted first. On failure nothing stays installed. Needs
    /// `CAP_NET_ADMIN`.
    pub fn install(
        mark: u32,
        table: u32,
        priority: u32,
        ifindex: u32,
    ) -> Result<MarkRoute, RouteError> {
        let mut installed = MarkRoute {
            rule: Rule {
                mark,
                table,
                priority,
            },
            ifindex,
            families: Vec::with_capacity(2),
        };
        for family in [Family::V4, Family::V6] {
            let rule = installed.rule;
            match rule.del_all(family) {
                Ok(()) => {}
                // No IPv6 in this kernel (or disabled at boot): IPv4 only.
                Err(e) if family == Family::V6 && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    continue;
                }
                Err(source) => {
                    return Err(RouteError::Netlink {
                        op: rule.describe("deleting stale copies of", family),
                        source,
                    })
                }
            }
            request(
                RouteNetlinkMessage::NewRoute(default_route(family, table, ifindex)),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map_err(|source| RouteError::Netlink {
                op: describe_route("adding", family, table, ifindex),
                source,
            })?;
            // Recorded before the rule, so a failure below still deletes the route.
            installed.families.push(family);
            rule.add(family).map_err(|source| RouteError::Netlink {
                op: rule.describe("adding", family),
                source,
            })?;
        }
        Ok(installed)
    }

    /// The families whose rule and route are installed (IPv6 is missing when the kernel has none).
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// Deletes the rules (and the routes, when the device still exists) now, reporting the first
    /// failure; rules or routes already gone are not errors.
    pub fn remove(mut self) -> Result<(), RouteError> {
        self.uninstall()
    }

    fn uninstall(&mut self) -> Result<(), RouteError> {
        let mut first = Ok(());
        for family in std::mem::take(&mut self.families) {
            let rule = self.rule;
            let r = ignore_missing(rule.del(family)).map_err(|source| RouteError::Netlink {
                op: rule.describe("deleting", family),
                source,
            });
            let route = default_route(family, rule.table, self.ifindex);
            // The route goes with its device anyway; a device already gone is no error.
            let r2 = ignore_missing(request(RouteNetlinkMessage::DelRoute(route), 0)).map_err(
                |source| RouteError::Netlink {
                    op: describe_route("deleting", family, rule.table, self.ifindex),
                    source,
                },
            );
            if first.is_ok() {
                first = r.and(r2);
            }
        }
        first
    }
}

impl Drop for MarkRoute {
    fn drop(&mut self) {
        if let Err(e) = self.uninstall() {
            log::warn!("{}", crate::error_chain(&e));
        }
    }
}

/// An address message for `addr/prefix_len` on `ifindex`.
fn address_message(ifindex: u32, addr: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = Family::of(addr).address_family();
    msg.header.prefix_len = prefix_len;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = ifindex;
    match addr {
        IpAddr::V4(_) => {
            msg.attributes = vec![
                AddressAttribute::Local(addr),
                AddressAttribute::Address(addr),
            ];
        }
        IpAddr::V6(_) => {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes = vec![
                AddressAttribute::Address(addr),
                AddressAttribute::Flags(AddressFlags::Nodad),
            ];
        }
    }
    msg
}

/// Checks a prefix length against the family of `addr`.
fn check_prefix(addr: IpAddr, prefix_len: u8, op: &str) -> Result<(), RouteError> {
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if prefix_len > max {
        return Err(RouteError::Netlink {
            op: format!("{op} the address {addr}/{prefix_len}: prefix longer than {max}"),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    Ok(())
}

/// Adds `addr/prefix_len` to the device `ifindex` (`ip addr replace`: adding an address the device
/// already has is no error). IPv6 addresses skip duplicate address detection. Needs `CAP_NET_ADMIN`.
pub fn add_address(ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), RouteError> {
    new_address(ifindex, addr, prefix_len, NLM_F_CREATE | NLM_F_REPLACE)
}

/// Adds `addr/prefix_len` to the device `ifindex` unless it has it already; returns whether it was
/// added. IPv6 addresses skip duplicate address detection. Needs `CAP_NET_ADMIN`.
pub fn ensure_address(ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<bool, RouteError> {
    match new_address(ifindex, addr, prefix_len, NLM_F_CREATE | NLM_F_EXCL) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

fn new_address(ifindex: u32, addr: IpAddr, prefix_len: u8, flags: u16) -> Result<(), RouteError> {
    check_prefix(addr, prefix_len, "adding")?;
    request(
        RouteNetlinkMessage::NewAddress(address_message(ifindex, addr, prefix_len)),
        flags,
    )
    .map_err(|source| RouteError::Netlink {
        op: format!("adding the address {addr}/{prefix_len} to device #{ifindex}"),
        source,
    })
}

/// Deletes `addr/prefix_len` from the device `ifindex`; an address the device does not have is an
/// error (`EADDRNOTAVAIL`). Needs `CAP_NET_ADMIN`.
pub fn del_address(ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<(), RouteError> {
    check_prefix(addr, prefix_len, "deleting")?;
    request(
        RouteNetlinkMessage::DelAddress(address_message(ifindex, addr, prefix_len)),
        0,
    )
    .map_err(|source| RouteError::Netlink {
        op: format!("deleting the address {addr}/{prefix_len} from device #{ifindex}"),
        source,
    })
}

/// The kernel's `local` routing table.
const TABLE_LOCAL: u8 = 255;

/// Deletes the route the kernel put in its `local` table for the address `addr` of the device
/// `ifindex`, so the address stays on the device (a routing daemon can export it) but the host no
/// longer takes packets to it as its own: they are routed by the other rules and tables (for
/// nf-maglev, its probes to the VIP reach the backends). Returns whether there was one to delete: a
/// route not there is no error. Needs `CAP_NET_ADMIN`.
///
/// The kernel puts an IPv6 address's local route in later than the address (from its address
/// configuration work, once duplicate address detection is done or skipped), and puts the local
/// routes of every address back when the device comes up again: a caller that must keep them away
/// deletes again until this returns `true`, and again later.
pub fn del_local_route(ifindex: u32, addr: IpAddr) -> Result<bool, RouteError> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = Family::of(addr).address_family();
    msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
    msg.header.table = TABLE_LOCAL;
    msg.header.scope = RouteScope::Host;
    msg.header.kind = RouteType::Local;
    msg.attributes = vec![
        RouteAttribute::Destination(addr.into()),
        RouteAttribute::Table(u32::from(TABLE_LOCAL)),
        RouteAttribute::Oif(ifindex),
    ];
    match request(RouteNetlinkMessage::DelRoute(msg), 0) {
        Ok(()) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(source) => Err(RouteError::Netlink {
            op: format!("deleting the local route of {addr} on device #{ifindex}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_operation_the_object_and_the_capability() {
        let rule = Rule {
            mark: 0x4e46_0000,
            table: 4242,
            priority: 100,
        };
        let e = RouteError::Netlink {
            op: rule.describe("adding", Family::V6),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(
            e.to_string(),
            "adding the IPv6 rule fwmark 0x4e460000 lookup 4242 priority 100 (needs CAP_NET_ADMIN)"
        );
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(crate::error_chain(&e).contains(": Operation not permitted"));
    }

    #[test]
    fn rules_carry_large_tables_in_the_attribute() {
        let rule = Rule {
            mark: 7,
            table: 4242,
            priority: 100,
        };
        let msg = rule.message(Family::V4);
        assert_eq!(msg.header.table, 0);
        assert!(msg.attributes.contains(&RuleAttribute::Table(4242)));
        assert_eq!(rule.message(Family::V6).header.family, AddressFamily::Inet6);
        let small = Rule { table: 42, ..rule };
        assert_eq!(small.message(Family::V4).header.table, 42);
    }

    #[test]
    fn ipv6_addresses_skip_dad() {
        let v6: IpAddr = "2001:2::100".parse().expect("v6");
        let msg = address_message(3, v6, 128);
        assert!(msg
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        let v4: IpAddr = "198.18.100.1".parse().expect("v4");
        assert_eq!(address_message(3, v4, 32).attributes.len(), 2);
        assert!(add_address(3, v4, 33).is_err());
    }

    #[test]
    fn missing_objects_count_as_removed() {
        assert!(ignore_missing(Err(io::Error::from_raw_os_error(libc::ENOENT))).is_ok());
        assert!(ignore_missing(Err(io::Error::from_raw_os_error(libc::EPERM))).is_err());
    }
}

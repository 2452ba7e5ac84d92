//! The control plane: builds the immutable [`State`] the workers read, off the packet path, and publishes it
//! with one atomic pointer swap.
//!
//! Workers call `shared.load()` once per burst and read the state through that guard: no lock, no reference
//! count traffic on the fast path (arc-swap's RCU-style guards). The control thread owns a [`Control`], applies
//! operations (weights, drain, add, remove, reload) to the validated configuration, validates the result again,
//! rebuilds only the Maglev tables whose VIP changed, and stores the new state. A change that fails validation
//! returns every reason and leaves the published state untouched.
//!
//! Backend identity: every (VIP name, backend name) pair gets a [`BackendId`] the first time it is seen and keeps
//! it for the life of the process, across rebuilds, removals and reloads (ids are never reused). Connection
//! tables store that id, not a table index, so after a rebuild the data plane finds the flow's backend again
//! if it still exists: drained backends (weight 0) keep their flows and get no new ones; a removed backend's
//! flows, and only those, move to the backend the new table gives them.
//!
//! Table generations: when a VIP's table changes, the table it replaces is kept in the new [`VipState`] as a
//! [`PastTable`] for the TCP idle timeout (at most [`MAX_PAST_TABLES`] per VIP), so that a TCP connection whose
//! packets reach a worker that has no entry for it (another queue, another instance, a restart) can still be
//! sent to the backend it began with: see [`VipState::past_pick`] for the rule and its limits. With
//! `generations_file` configured, the generations are also written to a file on every change and read back
//! at start, so a restarted instance knows the tables its predecessor used.

use crate::config::{
    format_issues, BackendSection, Issues, Mac, MaglevSection, Mode, Port, Proto, Validated, Vip,
};
use crate::conntrack::Timeouts;
use crate::maglev::{MaglevError, Member, Table};
use crate::tunnel::GreOuter;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Most past tables a VIP keeps: each costs `2 * table_size` bytes (128 KiB at the default size). When more
/// changes than this happen within the TCP idle timeout, the oldest generation is forgotten first.
pub const MAX_PAST_TABLES: usize = 8;

/// Stable identity of a backend of a VIP; never reused within a process.
pub type BackendId = u32;
/// Stable identity of a VIP (by name); never reused within a process.
pub type VipId = u32;
/// The published state, shared by the control thread and the workers.
pub type SharedState = Arc<ArcSwap<State>>;

/// Control-plane failures. The published state is unchanged after any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The resulting configuration does not validate.
    #[error("invalid maglev configuration:\n{}", format_issues(.0))]
    Invalid(Issues),
    /// No VIP has this name.
    #[error("no VIP named {0:?}")]
    NoSuchVip(String),
    /// The VIP has no backend of this name.
    #[error("VIP {vip:?} has no backend named {backend:?}")]
    NoSuchBackend {
        /// VIP name.
        vip: String,
        /// Backend name.
        backend: String,
    },
    /// Building a table failed (validation rules this out; kept for completeness).
    #[error("building the Maglev table of VIP {vip:?}: {source}")]
    Table {
        /// VIP name.
        vip: String,
        /// The builder's error.
        source: MaglevError,
    },
}

/// An address in the form the data plane compares: IPv4 mapped into IPv6 (`::ffff:a.b.c.d`) plus the family,
/// so an IPv6 packet to `::ffff:198.18.100.1` never matches an IPv4 VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr {
    /// Whether this is an IPv6 address.
    pub v6: bool,
    /// The address bits (IPv4-mapped for IPv4).
    pub bits: u128,
}

impl From<IpAddr> for Addr {
    fn from(a: IpAddr) -> Self {
        match a {
            IpAddr::V4(v4) => Addr {
                v6: false,
                bits: u128::from(v4.to_ipv6_mapped()),
            },
            IpAddr::V6(v6) => Addr {
                v6: true,
                bits: u128::from(v6),
            },
        }
    }
}

impl Addr {
    /// An IPv4 address from its four bytes.
    #[inline]
    pub fn v4(octets: [u8; 4]) -> Self {
        Addr {
            v6: false,
            bits: 0xffff_0000_0000 | u128::from(u32::from_be_bytes(octets)),
        }
    }
    /// An IPv6 address from its sixteen bytes.
    #[inline]
    pub fn v6(octets: [u8; 16]) -> Self {
        Addr {
            v6: true,
            bits: u128::from_be_bytes(octets),
        }
    }
}

/// Key of the exact VIP index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct VipKey {
    addr: Addr,
    proto: u8,
    port: u16,
}

impl VipKey {
    #[inline]
    fn hash(&self) -> u64 {
        crate::hash::addr_hash(
            self.addr.bits,
            (u64::from(self.port) << 16) | (u64::from(self.proto) << 8) | u64::from(self.addr.v6),
        )
    }
}

/// Exact (address, protocol, port) -> VIP position: open addressing with linear probing, at most half full,
/// so a lookup costs one hash and usually one probe, however many VIPs there are.
#[derive(Debug, Default)]
struct VipIndex {
    slots: Vec<Option<(VipKey, u32)>>,
}

impl VipIndex {
    fn new(entries: &[(VipKey, u32)]) -> Self {
        let len = (entries.len() * 2).next_power_of_two().max(4);
        let mut slots = vec![None; len];
        for &(key, i) in entries {
            // Truncation intended: the hash picks a slot.
            #[allow(clippy::cast_possible_truncation)]
            let mut at = key.hash() as usize & (len - 1);
            while slots[at].is_some() {
                at = (at + 1) & (len - 1);
            }
            slots[at] = Some((key, i));
        }
        Self { slots }
    }

    #[inline(always)]
    fn get(&self, key: &VipKey) -> Option<u32> {
        let mask = self.slots.len().wrapping_sub(1);
        #[allow(clippy::cast_possible_truncation)]
        let mut at = key.hash() as usize & mask;
        // Never full (at most half), so an empty slot ends every search.
        while let Some(Some((k, i))) = self.slots.get(at) {
            if k == key {
                return Some(*i);
            }
            at = (at + 1) & mask;
        }
        None
    }
}

/// A backend as the data plane uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendState {
    /// Stable identity.
    pub id: BackendId,
    /// Name (unique within the VIP).
    pub name: String,
    /// Address: the GRE outer destination.
    pub addr: IpAddr,
    /// Destination MAC of frames to it.
    pub mac: Mac,
    /// Weight; 0 = draining (keeps its connections, gets no new ones).
    pub weight: u32,
    /// Whether health allows it new connections (false: down, suppressed or in maintenance; the table
    /// then gives it no slot unless the VIP fails open).
    pub healthy: bool,
    /// The outer header of GRE packets to it, prepared from the local addresses.
    pub gre: GreOuter,
}

/// A VIP with its backends and Maglev table.
#[derive(Debug)]
pub struct VipState {
    /// Stable identity.
    pub id: VipId,
    /// Name.
    pub name: String,
    /// Virtual address.
    pub addr: IpAddr,
    /// Protocol.
    pub proto: Proto,
    /// Port, or [`Port::ALL`].
    pub port: Port,
    /// Forwarding mode.
    pub mode: Mode,
    /// Backends in configuration order; table slots index this list.
    backends: Vec<BackendState>,
    /// `(id, index into backends)`, sorted by id.
    by_id: Vec<(BackendId, u16)>,
    table: Table,
    /// Tables this VIP used before `table`, oldest first, none older than the TCP idle timeout.
    past: Vec<Arc<PastTable>>,
    /// The configuration this was built from, to reuse the state when a change leaves the VIP alone.
    source: Vip,
    /// Every backend with a weight is unhealthy, so the table uses them all anyway (`health.fail_open`).
    pub fail_open: bool,
}

/// A Maglev table a VIP used before its current one, kept so connections that began under it keep their
/// backend when their packets reach a worker without their connection-table entry.
#[derive(Debug)]
pub struct PastTable {
    /// When it stopped being the current table, seconds since the Unix epoch.
    pub replaced_at: u64,
    /// The backends it was built from: name and weight, in the order its slots index.
    members: Vec<(String, u32)>,
    /// Backend id of each member (ids outlive removals, so a removed backend's id is simply absent from the
    /// VIP's current backends).
    ids: Vec<BackendId>,
    table: Table,
}

impl PastTable {
    /// The backend id this table gives a flow hash.
    #[inline]
    fn pick(&self, hash: u64) -> Option<BackendId> {
        let i = self.table.lookup(hash)?;
        self.ids.get(usize::from(i)).copied()
    }
}

impl VipState {
    /// The backends, in configuration order.
    pub fn backends(&self) -> &[BackendState] {
        &self.backends
    }

    /// The Maglev table (slots index [`VipState::backends`]).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The backend a new flow with this hash goes to: `(index, backend)`; `None` when no backend has weight.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<(u16, &BackendState)> {
        let i = self.table.lookup(hash)?;
        self.backends.get(usize::from(i)).map(|b| (i, b))
    }

    /// The members its table was built from: `(name, weight)` with unhealthy backends at weight 0
    /// (unless the VIP fails open).
    fn table_members(&self) -> Vec<(String, u32)> {
        self.backends
            .iter()
            .map(|b| {
                let w = if b.healthy || self.fail_open {
                    b.weight
                } else {
                    0
                };
                (b.name.clone(), w)
            })
            .collect()
    }

    /// Whether some backend with a weight is healthy (not kept out by health), so the table is not failing
    /// open. A backend not checked yet counts as healthy here; readiness to be announced asks more
    /// (the runtime's health monitor: a passed check).
    pub fn ready(&self) -> bool {
        self.backends.iter().any(|b| b.weight > 0 && b.healthy)
    }

    /// The past tables still kept, oldest first.
    pub fn past_tables(&self) -> &[Arc<PastTable>] {
        &self.past
    }

    /// Whether the VIP keeps any past table (the data plane asks before [`VipState::past_pick`]).
    #[inline(always)]
    pub fn has_past(&self) -> bool {
        !self.past.is_empty()
    }

    /// The backend a TCP packet that is not a SYN goes to when no connection-table entry knows its flow: the
    /// pick of the *oldest* kept table whose pick is a backend the VIP still has (a drained one included),
    /// with the position of that table counted from the oldest (`(index, backend, generation)`); `None` when
    /// no kept table gives a live backend (the current table decides then).
    ///
    /// Why the oldest: a packet without a connection-table entry carries no start time, so the load balancer
    /// cannot know under which table its connection began, only that it began within the TCP idle timeout
    /// (an entry older than that would have expired anyway), hence under one of the kept tables or the
    /// current one. Connections that began under an older table are the ones a table change can break:
    /// the current table may give them a new backend that has never seen them, whereas under the oldest
    /// table their backend is the one that accepted them, as long as it exists. A table only differs from
    /// the next for the slots whose backend changed, so a flow whose slot kept its backend across all
    /// generations is unaffected by the rule. The cost of the rule: a connection that began under a *newer*
    /// table, in a slot whose backend changed, and then loses its entry (moves to another queue or instance,
    /// or the instance restarts) within the idle timeout after the change, goes to the older backend and is
    /// reset there. A removed backend is skipped: its connections are lost anyway, and the next generation
    /// that gives a live backend is the best guess left. Past the TCP idle timeout a table is forgotten.
    #[cold]
    pub fn past_pick(&self, hash: u64) -> Option<(u16, &BackendState, u32)> {
        self.past.iter().enumerate().find_map(|(g, t)| {
            let (i, b) = self.backend(t.pick(hash)?, u16::MAX)?;
            Some((i, b, u32::try_from(g).unwrap_or(u32::MAX)))
        })
    }

    /// The backend with this id if the VIP still has it (weight 0 included): `(index, backend)`. `hint` is
    /// where it was last seen; it is checked first, so the usual case costs one comparison.
    #[inline]
    pub fn backend(&self, id: BackendId, hint: u16) -> Option<(u16, &BackendState)> {
        if let Some(b) = self.backends.get(usize::from(hint)) {
            if b.id == id {
                return Some((hint, b));
            }
        }
        let pos = self.by_id.binary_search_by_key(&id, |&(id, _)| id).ok()?;
        let i = self.by_id[pos].1;
        self.backends.get(usize::from(i)).map(|b| (i, b))
    }
}

/// Result of [`State::vip_for_fragment`].
#[derive(Debug, Clone, Copy)]
pub enum FragmentVip<'a> {
    /// No VIP has this address and protocol.
    None,
    /// Several port VIPs share the address and protocol and none covers all ports.
    Ambiguous,
    /// The VIP.
    Vip(&'a VipState),
}

/// Everything the workers read: immutable once published.
#[derive(Debug)]
pub struct State {
    /// Increases with every publication.
    pub generation: u64,
    /// Seed of the flow hash.
    pub hash_seed: u64,
    /// Largest IP packet sent to a backend.
    pub mtu: u16,
    /// GRE outer source for IPv4 backends.
    pub local_v4: Option<Ipv4Addr>,
    /// GRE outer source for IPv6 backends.
    pub local_v6: Option<Ipv6Addr>,
    /// Whether to answer ARP / neighbour solicitations for VIP addresses.
    pub claim_all: bool,
    /// Connection-table size per worker (applies when a worker creates its table).
    pub conntrack_size: u32,
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// New connections recorded per second per worker (0 = no limit).
    pub max_new_conns_per_sec: u32,
    /// One more than the largest VIP id ever assigned (sizes per-id counter arrays).
    pub vip_id_bound: u32,
    /// One more than the largest backend id ever assigned.
    pub backend_id_bound: u32,
    vips: Vec<Arc<VipState>>,
    /// Exact (address, protocol, port) index; all-ports VIPs have port 0.
    index: VipIndex,
    /// (address, protocol) -> the VIP fragments go to: the all-ports VIP, else the only VIP of that address and
    /// protocol; `None` when several port VIPs share it (fragments lack ports, so the choice is ambiguous).
    frag_index: Vec<((Addr, u8), Option<u32>)>,
    /// Sorted distinct VIP addresses, for ARP and neighbour discovery.
    addrs: Vec<Addr>,
}

impl State {
    /// All VIPs, in configuration order.
    pub fn vips(&self) -> &[Arc<VipState>] {
        &self.vips
    }

    /// The VIP for a packet to `dst`, protocol number `proto`, destination port `port`: the exact match, else
    /// the address's all-ports VIP for that protocol.
    #[inline(always)]
    pub fn vip(&self, dst: Addr, proto: u8, port: u16) -> Option<&VipState> {
        let find = |port| {
            self.index.get(&VipKey {
                addr: dst,
                proto,
                port,
            })
        };
        let i = find(port).or_else(|| if port != 0 { find(0) } else { None })?;
        self.vips.get(i as usize).map(|v| &**v)
    }

    /// The VIP an IP fragment to `dst` with protocol `proto` belongs to. Fragments carry no ports (only the
    /// first has the transport header), so they match by address and protocol: the all-ports VIP, else the
    /// only VIP of that address and protocol.
    #[inline]
    pub fn vip_for_fragment(&self, dst: Addr, proto: u8) -> FragmentVip<'_> {
        let Ok(pos) = self
            .frag_index
            .binary_search_by_key(&(dst, proto), |&(k, _)| k)
        else {
            return FragmentVip::None;
        };
        match self.frag_index[pos]
            .1
            .and_then(|i| self.vips.get(i as usize))
        {
            Some(v) => FragmentVip::Vip(v),
            None => FragmentVip::Ambiguous,
        }
    }

    /// Whether `addr` is the address of some VIP (any protocol and port).
    #[inline]
    pub fn is_vip_addr(&self, addr: Addr) -> bool {
        self.addrs.binary_search(&addr).is_ok()
    }

    /// The VIP with this name.
    pub fn vip_by_name(&self, name: &str) -> Option<&VipState> {
        self.vips.iter().find(|v| v.name == name).map(|v| &**v)
    }
}

/// Id assignment that outlives every state.
#[derive(Debug, Default)]
struct Registry {
    vips: HashMap<String, VipId>,
    backends: HashMap<(VipId, String), BackendId>,
}

impl Registry {
    fn vip(&mut self, name: &str) -> VipId {
        let next = u32::try_from(self.vips.len()).unwrap_or(u32::MAX);
        *self.vips.entry(name.to_owned()).or_insert(next)
    }
    fn backend(&mut self, vip: VipId, name: &str) -> BackendId {
        let next = u32::try_from(self.backends.len()).unwrap_or(u32::MAX);
        *self.backends.entry((vip, name.to_owned())).or_insert(next)
    }
}

/// The control plane: owns the configuration and publishes states.
#[derive(Debug)]
pub struct Control {
    config: Validated,
    /// Backends health keeps out of the tables: `(VIP name, backend name)`.
    unhealthy: BTreeSet<(String, String)>,
    registry: Registry,
    shared: SharedState,
    rebuilds: u64,
    /// A fixed clock (seconds since the Unix epoch) instead of the system's, for tests.
    fixed_now: Option<u64>,
}

impl Control {
    /// Builds and publishes the first state. With a `generations_file`, the past tables it lists (those
    /// younger than the TCP idle timeout, built with the same table size and seed) are rebuilt, and its
    /// current tables become past tables of the VIPs whose backends differ now.
    pub fn new(config: Validated) -> Result<Self, ControlError> {
        Self::new_at(config, None)
    }

    /// [`Control::new`] with the clock fixed at `now` (seconds since the Unix epoch), for tests.
    pub fn new_at(config: Validated, now: Option<u64>) -> Result<Self, ControlError> {
        let mut registry = Registry::default();
        let mut rebuilds = 0;
        let fixed_now = now;
        let now = now.unwrap_or_else(unix_now);
        let unhealthy = BTreeSet::new();
        let mut state = build_state(
            &config,
            &unhealthy,
            &mut registry,
            None,
            1,
            &mut rebuilds,
            now,
        )?;
        if let Some(path) = &config.generations_file {
            match read_history(path) {
                Ok(Some(h)) => restore_history(&mut state, &config, &mut registry, &h, now),
                Ok(None) => {}
                Err(e) => log::warn!("{e}; starting without past tables"),
            }
        }
        let control = Self {
            config,
            unhealthy,
            registry,
            shared: Arc::new(ArcSwap::from_pointee(state)),
            rebuilds,
            fixed_now,
        };
        control.save_history();
        Ok(control)
    }

    /// Fixes the clock at `now` seconds since the Unix epoch (`None`: the system clock again). For tests.
    pub fn set_now(&mut self, now: Option<u64>) {
        self.fixed_now = now;
    }

    fn now(&self) -> u64 {
        self.fixed_now.unwrap_or_else(unix_now)
    }

    /// The handle workers load the current state from (`shared.load()` per burst).
    pub fn shared(&self) -> SharedState {
        Arc::clone(&self.shared)
    }

    /// The current state.
    pub fn state(&self) -> Arc<State> {
        self.shared.load_full()
    }

    /// The configuration the current state was built from.
    pub fn config(&self) -> &Validated {
        &self.config
    }

    /// Maglev tables built since start (the first state's included).
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Forgets past tables older than the TCP idle timeout, publishing a new state if there were any;
    /// returns whether it did. Cheap when there is nothing to forget: call it about once a second.
    pub fn tick(&mut self) -> bool {
        let now = self.now();
        let window = u64::from(self.config.conntrack.tcp_timeout_s);
        let state = self.shared.load();
        let stale = state.vips.iter().any(|v| {
            v.past
                .first()
                .is_some_and(|t| t.replaced_at.saturating_add(window) <= now)
        });
        drop(state);
        stale && self.publish(self.config.clone()).is_ok()
    }

    /// Sets a backend's weight (0 drains it).
    pub fn set_weight(
        &mut self,
        vip: &str,
        backend: &str,
        weight: u32,
    ) -> Result<(), ControlError> {
        self.change(vip, |v| {
            let b = find_backend(v, backend)?;
            v.backends[b].weight = weight;
            Ok(())
        })
    }

    /// Drains a backend: weight 0, so it keeps its connections and gets no new ones.
    pub fn drain(&mut self, vip: &str, backend: &str) -> Result<(), ControlError> {
        self.set_weight(vip, backend, 0)
    }

    /// Removes a backend: its connections move to other backends, nobody else's do.
    pub fn remove_backend(&mut self, vip: &str, backend: &str) -> Result<(), ControlError> {
        self.change(vip, |v| {
            let b = find_backend(v, backend)?;
            v.backends.remove(b);
            Ok(())
        })
    }

    /// Adds a backend to a VIP (validated like the configuration file: unique name, family, MAC).
    pub fn add_backend(&mut self, vip: &str, backend: BackendSection) -> Result<(), ControlError> {
        self.change(vip, |v| {
            v.backends.push(backend);
            Ok(())
        })
    }

    /// Sets the backends health keeps out of the tables, `(VIP name, backend name)`, and publishes a new
    /// state when that changes anything; returns whether it published. Names that match no backend are
    /// ignored.
    pub fn set_unhealthy(&mut self, out: BTreeSet<(String, String)>) -> Result<bool, ControlError> {
        if out == self.unhealthy {
            return Ok(false);
        }
        let before = std::mem::replace(&mut self.unhealthy, out);
        if let Err(e) = self.publish(self.config.clone()) {
            self.unhealthy = before;
            return Err(e);
        }
        Ok(true)
    }

    /// The backends health keeps out of the tables.
    pub fn unhealthy(&self) -> &BTreeSet<(String, String)> {
        &self.unhealthy
    }

    /// Replaces the whole configuration. On failure the old state stays published.
    pub fn reload(&mut self, section: &MaglevSection) -> Result<(), ControlError> {
        let config = section.validate().map_err(ControlError::Invalid)?;
        self.publish(config)
    }

    /// Applies `f` to the section form of the VIP named `vip`, then validates and publishes.
    fn change(
        &mut self,
        vip: &str,
        f: impl FnOnce(&mut crate::config::VipSection) -> Result<(), ControlError>,
    ) -> Result<(), ControlError> {
        let mut section = self.config.to_section();
        let v = section
            .vips
            .iter_mut()
            .find(|v| v.name.as_deref() == Some(vip))
            .ok_or_else(|| ControlError::NoSuchVip(vip.to_owned()))?;
        f(v)?;
        self.reload(&section)
    }

    fn publish(&mut self, config: Validated) -> Result<(), ControlError> {
        let old = self.shared.load_full();
        let now = self.now();
        let state = build_state(
            &config,
            &self.unhealthy,
            &mut self.registry,
            Some((&*old, &self.config)),
            old.generation + 1,
            &mut self.rebuilds,
            now,
        )?;
        self.shared.store(Arc::new(state));
        self.config = config;
        self.save_history();
        Ok(())
    }

    /// Writes the generations file, if one is configured (a failure is logged: it costs only the history
    /// of a later restart).
    fn save_history(&self) {
        let Some(path) = &self.config.generations_file else {
            return;
        };
        if let Err(e) = write_history(path, &self.config, &self.shared.load()) {
            log::warn!("{e}");
        }
    }
}

/// Seconds since the Unix epoch: the clock of table generations, which must mean the same after a restart.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The generations file: per VIP the backends (name, weight) of its current table and of its past tables.
/// A table is rebuilt from these, the table size and the seed alone.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct History {
    table_size: u32,
    hash_seed: u64,
    vips: Vec<VipHistory>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VipHistory {
    name: String,
    current: Vec<(String, u32)>,
    past: Vec<PastHistory>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PastHistory {
    replaced_at: u64,
    backends: Vec<(String, u32)>,
}

/// Largest generations file read (a few hundred VIPs with many backends fit easily).
const MAX_HISTORY_BYTES: u64 = 16 << 20;

fn read_history(path: &Path) -> Result<Option<History>, String> {
    use std::io::Read;
    let what = || format!("generations file {}", path.display());
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", what())),
    };
    let meta = file.metadata().map_err(|e| format!("{}: {e}", what()))?;
    if !meta.is_file() || meta.len() > MAX_HISTORY_BYTES {
        return Err(format!(
            "{}: not a regular file of at most {MAX_HISTORY_BYTES} bytes",
            what()
        ));
    }
    let mut text = String::new();
    file.take(MAX_HISTORY_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", what()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", what()))
}

fn write_history(path: &Path, config: &Validated, state: &State) -> Result<(), String> {
    let h = History {
        table_size: config.table_size,
        hash_seed: config.hash_seed,
        vips: state
            .vips
            .iter()
            .map(|v| VipHistory {
                name: v.name.clone(),
                current: v.table_members(),
                past: v
                    .past
                    .iter()
                    .map(|t| PastHistory {
                        replaced_at: t.replaced_at,
                        backends: t.members.clone(),
                    })
                    .collect(),
            })
            .collect(),
    };
    let err =
        |e: &dyn std::fmt::Display| format!("writing generations file {}: {e}", path.display());
    let text = serde_json::to_string(&h).map_err(|e| err(&e))?;
    // Written beside and renamed over: a reader (the next instance) sees the old file or the new one.
    let mut tmp: PathBuf = path.to_path_buf();
    tmp.as_mut_os_string().push(".tmp");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    std::fs::write(&tmp, text).map_err(|e| err(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(&e))
}

/// Gives the VIPs of a freshly built first state the past tables of the generations file: its past tables
/// younger than the TCP idle timeout, and its current table where the VIP's backends differ now (replaced
/// now, as far as this instance knows). Ignored when the table size or seed differ (the tables would not
/// be the ones the flows were sent by).
fn restore_history(
    state: &mut State,
    config: &Validated,
    registry: &mut Registry,
    h: &History,
    now: u64,
) {
    if h.table_size != config.table_size || h.hash_seed != config.hash_seed {
        log::info!("generations file: other table size or seed; past tables not restored");
        return;
    }
    let window = u64::from(config.conntrack.tcp_timeout_s);
    let mut restored = 0;
    for vip in &mut state.vips {
        let Some(old) = h.vips.iter().find(|o| o.name == vip.name) else {
            continue;
        };
        let current = vip.table_members();
        let mut lists: Vec<(u64, &[(String, u32)])> = old
            .past
            .iter()
            .filter(|p| p.replaced_at.saturating_add(window) > now)
            .map(|p| (p.replaced_at, &p.backends[..]))
            .collect();
        if old.current != current {
            lists.push((now, &old.current[..]));
        }
        let start = lists.len().saturating_sub(MAX_PAST_TABLES);
        let past: Vec<Arc<PastTable>> = lists[start..]
            .iter()
            .filter_map(|&(replaced_at, members)| {
                past_table(registry, vip.id, members, replaced_at, config).ok()
            })
            .map(Arc::new)
            .collect();
        restored += past.len();
        if let Some(v) = Arc::get_mut(vip) {
            v.past = past;
        }
    }
    if restored > 0 {
        log::info!("generations file: {restored} past table(s) restored");
    }
}

/// Builds a past table from its backends (name, weight).
fn past_table(
    registry: &mut Registry,
    vip: VipId,
    members: &[(String, u32)],
    replaced_at: u64,
    config: &Validated,
) -> Result<PastTable, MaglevError> {
    let m: Vec<Member<'_>> = members
        .iter()
        .map(|(name, weight)| Member {
            name,
            weight: *weight,
        })
        .collect();
    let table = Table::build(&m, config.table_size, config.hash_seed)?;
    Ok(PastTable {
        replaced_at,
        ids: members
            .iter()
            .map(|(name, _)| registry.backend(vip, name))
            .collect(),
        members: members.to_vec(),
        table,
    })
}

fn find_backend(v: &crate::config::VipSection, name: &str) -> Result<usize, ControlError> {
    v.backends
        .iter()
        .position(|b| b.name == name)
        .ok_or_else(|| ControlError::NoSuchBackend {
            vip: v.name.clone().unwrap_or_default(),
            backend: name.to_owned(),
        })
}

/// Builds a state from `config`. `old` is the state published before and its configuration: VIPs identical
/// to one there (same ids, same table parameters) share its `VipState` instead of rebuilding the table, and
/// a VIP whose table changes keeps the old table as a past one (unless the table size or seed changed,
/// which changes every flow's slot). Past tables older than the TCP idle timeout at `now` are dropped.
fn build_state(
    config: &Validated,
    unhealthy: &BTreeSet<(String, String)>,
    registry: &mut Registry,
    old: Option<(&State, &Validated)>,
    generation: u64,
    rebuilds: &mut u64,
    now: u64,
) -> Result<State, ControlError> {
    let same_tables = old
        .is_some_and(|(_, c)| c.table_size == config.table_size && c.hash_seed == config.hash_seed);
    // The backends' GRE headers are built from the local addresses: a change rebuilds every VIP.
    let reuse = same_tables
        && old.is_some_and(|(_, c)| c.local_v4 == config.local_v4 && c.local_v6 == config.local_v6);
    let window = u64::from(config.conntrack.tcp_timeout_s);
    let mut vips = Vec::with_capacity(config.vips.len());
    for v in &config.vips {
        let id = registry.vip(&v.name);
        let prev = old
            .and_then(|(s, _)| s.vips.iter().find(|o| o.id == id))
            .filter(|_| same_tables);
        let mut past: Vec<Arc<PastTable>> = prev.map_or_else(Vec::new, |p| {
            p.past
                .iter()
                .filter(|t| t.replaced_at.saturating_add(window) > now)
                .cloned()
                .collect()
        });
        let healthy: Vec<bool> = v
            .backends
            .iter()
            .map(|b| !unhealthy.contains(&(v.name.clone(), b.name.clone())))
            .collect();
        // Fail open: when no backend with a weight is healthy, all of them share the table as
        // configured rather than none (unless configured otherwise).
        let fail_open = config.health.fail_open
            && v.backends.iter().any(|b| b.weight > 0)
            && !v
                .backends
                .iter()
                .zip(&healthy)
                .any(|(b, &h)| b.weight > 0 && h);
        let same_health = |p: &VipState| {
            p.fail_open == fail_open
                && p.backends
                    .iter()
                    .map(|b| b.healthy)
                    .eq(healthy.iter().copied())
        };
        if let Some(p) = prev.filter(|p| reuse && p.source == *v && same_health(p)) {
            if past.len() == p.past.len() {
                vips.push(Arc::clone(p));
            } else {
                vips.push(Arc::new(VipState {
                    past,
                    backends: p.backends.clone(),
                    by_id: p.by_id.clone(),
                    table: p.table.clone(),
                    source: p.source.clone(),
                    name: p.name.clone(),
                    ..**p
                }));
            }
            continue;
        }
        let backends: Vec<BackendState> = v
            .backends
            .iter()
            .zip(&healthy)
            .map(|(b, &healthy)| BackendState {
                id: registry.backend(id, &b.name),
                name: b.name.clone(),
                addr: b.addr,
                mac: b.mac,
                weight: b.weight,
                healthy,
                gre: GreOuter::new(b.addr, config.local_v4, config.local_v6),
            })
            .collect();
        let effective = |b: &BackendState| if b.healthy || fail_open { b.weight } else { 0 };
        let members: Vec<Member<'_>> = backends
            .iter()
            .map(|b| Member {
                name: &b.name,
                weight: effective(b),
            })
            .collect();
        let table =
            Table::build(&members, config.table_size, config.hash_seed).map_err(|source| {
                ControlError::Table {
                    vip: v.name.clone(),
                    source,
                }
            })?;
        *rebuilds += 1;
        if let Some(p) = prev {
            let before = p.table_members();
            let after: Vec<(String, u32)> = backends
                .iter()
                .map(|b| (b.name.clone(), effective(b)))
                .collect();
            if before != after {
                past.push(Arc::new(PastTable {
                    replaced_at: now,
                    ids: p.backends.iter().map(|b| b.id).collect(),
                    members: before,
                    table: p.table.clone(),
                }));
                if past.len() > MAX_PAST_TABLES {
                    past.remove(0);
                }
            }
        }
        let mut by_id: Vec<(BackendId, u16)> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id, u16::try_from(i).unwrap_or(u16::MAX)))
            .collect();
        by_id.sort_unstable();
        vips.push(Arc::new(VipState {
            id,
            name: v.name.clone(),
            addr: v.addr,
            proto: v.proto,
            port: v.port,
            mode: v.mode,
            backends,
            by_id,
            table,
            past,
            source: v.clone(),
            fail_open,
        }));
    }

    let mut index: Vec<(VipKey, u32)> = Vec::with_capacity(vips.len());
    let mut frag: HashMap<(Addr, u8), Vec<(u16, u32)>> = HashMap::new();
    for (i, v) in vips.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let (addr, proto) = (Addr::from(v.addr), v.proto.number());
        index.push((
            VipKey {
                addr,
                proto,
                port: v.port.0,
            },
            i,
        ));
        frag.entry((addr, proto)).or_default().push((v.port.0, i));
    }
    let mut frag_index: Vec<((Addr, u8), Option<u32>)> = frag
        .into_iter()
        .map(|(k, ports)| {
            let all = ports.iter().find(|(p, _)| *p == 0).map(|&(_, i)| i);
            (
                k,
                all.or(if ports.len() == 1 {
                    Some(ports[0].1)
                } else {
                    None
                }),
            )
        })
        .collect();
    frag_index.sort_unstable();
    let mut addrs: Vec<Addr> = vips.iter().map(|v| Addr::from(v.addr)).collect();
    addrs.sort_unstable();
    addrs.dedup();

    Ok(State {
        generation,
        hash_seed: config.hash_seed,
        mtu: config.mtu,
        local_v4: config.local_v4,
        local_v6: config.local_v6,
        claim_all: config.claim_all,
        conntrack_size: config.conntrack.size,
        timeouts: Timeouts {
            tcp: config.conntrack.tcp_timeout_s,
            udp: config.conntrack.udp_timeout_s,
            tcp_fin: config.conntrack.tcp_fin_timeout_s,
        },
        max_new_conns_per_sec: config.max_new_conns_per_sec,
        vip_id_bound: u32::try_from(registry.vips.len()).unwrap_or(u32::MAX),
        backend_id_bound: u32::try_from(registry.backends.len()).unwrap_or(u32::MAX),
        vips,
        index: VipIndex::new(&index),
        frag_index,
        addrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MaglevSection;

    fn config() -> Validated {
        let s: MaglevSection = serde_json::from_str(
            r#"{
            "local_addrs": ["198.18.0.1", "2001:2::1"],
            "gateway_mac": "02:00:00:00:00:fe",
            "vips": [
              { "name": "web", "addr": "198.18.100.1", "proto": "tcp", "port": 80, "mode": "gre",
                "backends": [ { "name": "a", "addr": "198.18.1.1" }, { "name": "b", "addr": "198.18.1.2" },
                              { "name": "c", "addr": "2001:2:1::3" } ] },
              { "name": "any", "addr": "198.18.100.1", "proto": "tcp", "port": "all", "mode": "gre",
                "backends": [ { "name": "a", "addr": "198.18.1.1" } ] },
              { "name": "dns", "addr": "198.18.100.2", "proto": "udp", "port": 53, "mode": "gre",
                "backends": [ { "name": "a", "addr": "198.18.1.1" } ] },
              { "name": "dns2", "addr": "198.18.100.2", "proto": "udp", "port": 5353, "mode": "gre",
                "backends": [ { "name": "a", "addr": "198.18.1.1" } ] },
              { "name": "v6", "addr": "2001:2::100", "proto": "udp", "port": 443, "mode": "gre",
                "backends": [ { "name": "a", "addr": "2001:2:1::1" } ] }
            ] }"#,
        )
        .expect("parses");
        s.validate().expect("valid")
    }

    fn v4(s: &str) -> Addr {
        Addr::from(s.parse::<IpAddr>().expect("address"))
    }

    fn ids(state: &State, vip: &str) -> Vec<(String, BackendId)> {
        let v = state.vip_by_name(vip).expect("vip");
        v.backends()
            .iter()
            .map(|b| (b.name.clone(), b.id))
            .collect()
    }

    #[test]
    fn vip_lookup_exact_then_all_ports() {
        let c = Control::new(config()).expect("builds");
        let s = c.state();
        let vip = v4("198.18.100.1");
        assert_eq!(s.vip(vip, 6, 80).map(|v| v.name.as_str()), Some("web"));
        assert_eq!(s.vip(vip, 6, 22).map(|v| v.name.as_str()), Some("any"));
        assert!(s.vip(vip, 17, 80).is_none(), "no UDP VIP on that address");
        assert!(s.vip(v4("198.18.100.9"), 6, 80).is_none());
        assert_eq!(
            s.vip(v4("2001:2::100"), 17, 443).map(|v| v.name.as_str()),
            Some("v6")
        );
        // The same 32 bits in an IPv4-mapped IPv6 address are a different address.
        assert!(s.vip(v4("::ffff:198.18.100.1"), 6, 80).is_none());
        assert!(
            s.is_vip_addr(vip)
                && s.is_vip_addr(v4("2001:2::100"))
                && !s.is_vip_addr(v4("198.18.1.1"))
        );
    }

    #[test]
    fn fragments_match_by_address_and_protocol() {
        let s = Control::new(config()).expect("builds").state();
        let name = |f: FragmentVip<'_>| match f {
            FragmentVip::Vip(v) => v.name.clone(),
            FragmentVip::Ambiguous => "ambiguous".into(),
            FragmentVip::None => "none".into(),
        };
        assert_eq!(
            name(s.vip_for_fragment(v4("198.18.100.1"), 6)),
            "any",
            "all-ports VIP wins"
        );
        assert_eq!(
            name(s.vip_for_fragment(v4("2001:2::100"), 17)),
            "v6",
            "the only VIP"
        );
        assert_eq!(
            name(s.vip_for_fragment(v4("198.18.100.2"), 17)),
            "ambiguous"
        );
        assert_eq!(name(s.vip_for_fragment(v4("198.18.100.2"), 6)), "none");
    }

    /// A backend of weight 1 without a check.
    fn backend(name: &str, addr: &str) -> BackendSection {
        BackendSection {
            check: None,
            name: name.into(),
            addr: addr.parse().expect("ip"),
            weight: 1,
            mac: None,
        }
    }

    #[test]
    fn backend_ids_are_stable_and_per_vip() {
        let mut c = Control::new(config()).expect("builds");
        let before = ids(&c.state(), "web");
        assert_ne!(
            ids(&c.state(), "any")[0].1,
            before[0].1,
            "same name in another VIP is another backend"
        );
        c.remove_backend("web", "a").expect("removes");
        c.add_backend("web", backend("d", "198.18.1.4"))
            .expect("adds");
        c.add_backend("web", backend("a", "198.18.1.1"))
            .expect("adds back");
        let after: HashMap<String, BackendId> = ids(&c.state(), "web").into_iter().collect();
        for (name, id) in &before {
            assert_eq!(after[name], *id, "{name} keeps its id");
        }
        assert!(
            !before.iter().any(|(_, id)| *id == after["d"]),
            "a new backend gets a new id"
        );
        assert_eq!(c.state().generation, 4);
        assert!(c.state().backend_id_bound > after["d"]);
    }

    /// Backends whose ids the kernel fast path cannot count are named (so the log can say which).
    #[test]
    fn ids_past_the_fast_path_counters_are_named() {
        use crate::fastpath::uncounted;
        use cne::bpf::fast::BACKEND_IDS_COUNTED;
        let mut c = Control::new(config()).expect("builds");
        assert!(uncounted(&c.state()).is_empty());
        // Names removed over a long run: their ids are never given again.
        let used = c.registry.backends.len();
        for i in used..BACKEND_IDS_COUNTED as usize {
            c.registry
                .backends
                .insert((u32::MAX, format!("gone-{i}")), i as u32);
        }
        c.add_backend("web", backend("d", "198.18.1.4"))
            .expect("adds");
        assert_eq!(uncounted(&c.state()), ["web/d"]);
        c.remove_backend("web", "d").expect("removes");
        assert!(uncounted(&c.state()).is_empty());
    }

    #[test]
    fn only_the_changed_vip_is_rebuilt() {
        let mut c = Control::new(config()).expect("builds");
        assert_eq!(c.rebuilds(), 5);
        let old = c.state();
        c.set_weight("web", "b", 5).expect("sets");
        let new = c.state();
        assert_eq!(c.rebuilds(), 6);
        assert_eq!(new.generation, old.generation + 1);
        assert!(!Arc::ptr_eq(&old.vips()[0], &new.vips()[0]));
        for i in 1..5 {
            assert!(
                Arc::ptr_eq(&old.vips()[i], &new.vips()[i]),
                "vip {i} reused"
            );
        }
        // A new seed changes every table.
        let mut s = c.config().to_section();
        s.hash_seed = 99;
        c.reload(&s).expect("reloads");
        assert_eq!(c.rebuilds(), 11);
    }

    #[test]
    fn drained_backend_keeps_flows_but_gets_no_new_ones() {
        let mut c = Control::new(config()).expect("builds");
        let b_id = ids(&c.state(), "web")[1].1;
        c.drain("web", "b").expect("drains");
        let s = c.state();
        let web = s.vip_by_name("web").expect("vip");
        assert_eq!(
            web.backend(b_id, 1).map(|(i, b)| (i, b.weight)),
            Some((1, 0)),
            "still present"
        );
        assert!((0..10_000u64).all(|h| web
            .pick(h.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .is_some_and(|(_, b)| b.name != "b")));
    }

    #[test]
    fn removed_backend_is_gone_and_stale_hints_still_resolve() {
        let mut c = Control::new(config()).expect("builds");
        let web_ids = ids(&c.state(), "web");
        c.remove_backend("web", "a").expect("removes");
        let s = c.state();
        let web = s.vip_by_name("web").expect("vip");
        assert!(web.backend(web_ids[0].1, 0).is_none(), "removed");
        // "c" was at index 2, now at 1: the stale hint falls back to the id index.
        assert_eq!(
            web.backend(web_ids[2].1, 2)
                .map(|(i, b)| (i, b.name.as_str())),
            Some((1, "c"))
        );
        assert_eq!(web.backend(web_ids[2].1, 7).map(|(i, _)| i), Some(1));
    }

    #[test]
    fn failed_changes_keep_the_published_state() {
        let mut c = Control::new(config()).expect("builds");
        let old = c.state();
        let dup = backend("b", "198.18.1.9");
        match c.add_backend("web", dup) {
            Err(ControlError::Invalid(issues)) => {
                assert_eq!(issues[0].0, "maglev.vips[0].backends[3].name", "{issues:?}");
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
        assert_eq!(
            c.set_weight("nope", "a", 1),
            Err(ControlError::NoSuchVip("nope".into()))
        );
        assert!(matches!(
            c.drain("web", "zz"),
            Err(ControlError::NoSuchBackend { .. })
        ));
        let mut bad = c.config().to_section();
        bad.table_size = 100;
        assert!(matches!(c.reload(&bad), Err(ControlError::Invalid(_))));
        let mut too_heavy = c.config().to_section();
        too_heavy.vips[0].backends[0].weight = u32::MAX;
        assert!(c.reload(&too_heavy).is_err());
        assert!(Arc::ptr_eq(&old, &c.state()), "nothing was published");
        assert_eq!(c.rebuilds(), 5);
    }

    #[test]
    fn past_tables_are_kept_for_the_tcp_idle_timeout_and_capped() {
        let mut c = Control::new_at(config(), Some(5_000)).expect("builds");
        let web = |c: &Control| {
            c.state()
                .vip_by_name("web")
                .expect("vip")
                .past_tables()
                .len()
        };
        assert_eq!(web(&c), 0);
        // A change that leaves the table alone (a MAC) keeps no past table.
        let mut s = c.config().to_section();
        s.vips[0].backends[0].mac = Some(Mac([2, 0, 0, 0, 0, 9]));
        c.reload(&s).expect("reloads");
        assert_eq!(web(&c), 0);
        for w in 2..=12 {
            c.set_weight("web", "a", w).expect("sets");
        }
        assert_eq!(web(&c), MAX_PAST_TABLES);
        assert_eq!(
            c.state()
                .vip_by_name("any")
                .expect("vip")
                .past_tables()
                .len(),
            0,
            "other VIPs untouched"
        );
        // A new seed moves every flow: past tables would mislead.
        let mut s = c.config().to_section();
        s.hash_seed = 3;
        c.reload(&s).expect("reloads");
        assert_eq!(web(&c), 0);
    }

    #[test]
    fn a_restarted_instance_reads_its_past_tables_back() {
        let dir = std::env::temp_dir().join(format!("nf-maglev-gen-{}", std::process::id()));
        let path = dir.join("generations.json");
        let _ = std::fs::remove_file(&path);
        let mut s = config().to_section();
        s.generations_file = Some(path.clone());
        let first = s.validate().expect("valid");
        let c = Control::new_at(first.clone(), Some(10_000)).expect("builds");
        let table_a = c.state().vip_by_name("web").expect("vip").table().clone();
        drop(c);
        // The configuration file gained a backend while the instance was down.
        let mut s2 = first.to_section();
        s2.vips[0].backends.push(backend("d", "198.18.1.4"));
        let c = Control::new_at(s2.validate().expect("valid"), Some(10_100)).expect("builds");
        let state = c.state();
        let web = state.vip_by_name("web").expect("vip");
        assert_eq!(web.past_tables().len(), 1);
        assert_eq!(web.past_tables()[0].replaced_at, 10_100);
        let names = |v: &VipState, i: u16| v.backends()[usize::from(i)].name.clone();
        let mut differ = 0;
        for h in (0..20_000u64).map(|h| h.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let was = table_a.lookup(h).map(|i| ["a", "b", "c"][usize::from(i)]);
            let (_, b, _) = web.past_pick(h).expect("a live backend");
            assert_eq!(Some(b.name.as_str()), was);
            differ += usize::from(web.pick(h).map(|(i, _)| names(web, i)) != was.map(String::from));
        }
        assert!(differ > 1000, "{differ}");
        drop(c);
        // Restarted again with the same configuration: the past table is still there, until it is too old.
        let again = s2.validate().expect("valid");
        let c = Control::new_at(again.clone(), Some(10_200)).expect("builds");
        assert_eq!(
            c.state()
                .vip_by_name("web")
                .expect("vip")
                .past_tables()
                .len(),
            1
        );
        drop(c);
        let c = Control::new_at(again, Some(10_100 + 900)).expect("builds");
        assert_eq!(
            c.state()
                .vip_by_name("web")
                .expect("vip")
                .past_tables()
                .len(),
            0
        );
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn workers_see_a_change_on_their_next_load() {
        let mut c = Control::new(config()).expect("builds");
        let shared = c.shared();
        let guard = shared.load();
        c.set_weight("web", "a", 3).expect("sets");
        // A guard taken before the swap keeps the state it had; the next load sees the new one.
        assert_eq!(
            guard.vip_by_name("web").expect("vip").backends()[0].weight,
            1
        );
        assert_eq!(
            shared.load().vip_by_name("web").expect("vip").backends()[0].weight,
            3
        );
    }
}

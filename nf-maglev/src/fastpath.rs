//! The control plane's writer for the kernel fast path: a published [`State`] written into the maps of
//! `cne::bpf::fast`'s XDP program, so the program and the AF_XDP workers decide from the same VIPs,
//! backends, Maglev tables and hash seed.
//!
//! Each [`FastPath::publish`] writes the whole state under the generation packets do not see (VIPs,
//! backends and tables; every generation owns one half of the table array), switches the program to it
//! with one map write and then deletes the previous generation, so a packet sees either the old state or
//! the new one, never a mix. Table slots hold backend ids (not positions in the VIP's backend list), so
//! the program needs no second indirection; ids are unique per VIP and backend name and outlive
//! removals, which is also what the connection map stores.
//!
//! What the program does not know stays with user space: past tables are not written, only whether a VIP
//! has any (the program then hands TCP packets other than a SYN that miss its connection map to the
//! workers, and the connections the workers forward from a past table are written into the program's
//! connection map with [`FastPaths::record`]). Idle timeouts and the flood guard take the workers'
//! values.

use crate::config::{Mac, Mode, Validated};
use crate::conntrack::Timeouts;
use crate::control::State;
use crate::counters::{Counters, Traffic};
use crate::dataplane::PastFlow;
use crate::tunnel::GreOuter;
use cne::bpf::fast::{
    FastBackend, FastCfg, FastConn, FastLimits, FastMode, FastOuter, FastProgram, FastStats,
    FastTraffic, FastVip, BACKEND_IDS_COUNTED, VIP_CAPACITY, VIP_IDS_COUNTED,
};
use cne::bpf::filter::{XdpError, XdpProgram};

/// Backend ids the fast path keeps in its array at least (ids are never reused; a reload that adds
/// backends takes new ones).
pub const MIN_BACKEND_SLOTS: u32 = 4096;

/// Why the fast path could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    /// A map operation or the load failed (the cause says which).
    #[error("XDP fast path")]
    Bpf(#[from] XdpError),
    /// The tables of the state do not fit in one generation's half of the table array.
    #[error("the Maglev tables need {need} table-array entries per generation, the fast path has {have}")]
    TablesFull {
        /// Entries the state's tables need.
        need: u64,
        /// Entries one generation has.
        have: u32,
    },
    /// More VIPs than one generation of the VIP map holds.
    #[error("{count} VIP entries, more than the fast path's {VIP_CAPACITY}")]
    TooManyVips {
        /// VIPs of the state.
        count: usize,
    },
    /// The interface runs no XDP program of nf-maglev's own (the AF_XDP device plugin's instead).
    #[error(
        "maglev.data_path \"xdp\" needs nf-maglev's own XDP program on the interface; with the AF_XDP \
         device plugin (uds_path or xsk_pin_path in the lports) use \"af_xdp\""
    )]
    NoOwnProgram,
    /// Reading the interface's MAC address failed.
    #[error("reading the MAC address of {ifname}")]
    Mac {
        /// The interface.
        ifname: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The loaded fast-path program and the generation of the state it shows.
#[derive(Debug)]
pub struct FastPath {
    prog: FastProgram,
    mac: Mac,
    /// Table-array entries of one generation.
    table_room: u64,
}

impl FastPath {
    /// Loads the program with room for `vips` VIPs of `table_size` slots per generation, a connection
    /// map of `conns` entries and backend ids below `backend_slots` in its backend array (higher ids take
    /// a hash lookup); `mac` is the port's MAC address (source of the frames it sends).
    pub fn load(
        vips: u32,
        table_size: u32,
        conns: u32,
        backend_slots: u32,
        mac: Mac,
    ) -> Result<Self, FastPathError> {
        let per_gen = u64::from(vips) * u64::from(table_size);
        let table_entries = u32::try_from(2 * per_gen).map_err(|_| FastPathError::TablesFull {
            need: per_gen,
            have: u32::MAX / 2,
        })?;
        let prog = FastProgram::load(FastLimits {
            table_entries,
            conns,
            backend_slots,
        })?;
        Ok(FastPath {
            prog,
            mac,
            table_room: per_gen,
        })
    }

    /// Whether the tables of `config` fit in one generation (checked before a reload is applied).
    pub fn fits(&self, config: &Validated) -> Result<(), FastPathError> {
        if config.vips.len() > VIP_CAPACITY {
            return Err(FastPathError::TooManyVips {
                count: config.vips.len(),
            });
        }
        // A VIP's table has at most table_size slots.
        let need = config.vips.len() as u64 * u64::from(config.table_size);
        if need > self.table_room {
            return Err(FastPathError::TablesFull {
                need,
                have: u32::try_from(self.table_room).unwrap_or(u32::MAX),
            });
        }
        Ok(())
    }

    /// The program, for its counters and for test runs.
    pub fn program(&self) -> &FastProgram {
        &self.prog
    }

    /// Writes `state` into the maps and switches packets to it. On an error the packets keep the state
    /// published before (what was written of the new one is invisible to them and removed by the next
    /// publication).
    pub fn publish(&self, state: &State) -> Result<(), FastPathError> {
        let vips = state.vips();
        if vips.len() > VIP_CAPACITY {
            return Err(FastPathError::TooManyVips { count: vips.len() });
        }
        let half = self.prog.table_capacity() / 2;
        let need: u64 = vips.iter().map(|v| v.table().slots().len() as u64).sum();
        if need > u64::from(half) {
            return Err(FastPathError::TablesFull { need, have: half });
        }
        let gen = self.prog.active_generation()? ^ 1;
        // Whatever a failed publication left in this generation goes first.
        self.prog.clear_generation(gen)?;
        let mut base = u32::from(gen) * half;
        let mut entries = Vec::new();
        for vip in vips {
            let backends = vip.backends();
            let ids: Vec<u32> = vip
                .table()
                .slots()
                .iter()
                .map(|&i| backends.get(usize::from(i)).map_or(u32::MAX, |b| b.id))
                .collect();
            self.prog.set_table(base, &ids)?;
            for b in backends {
                let outer = match b.gre {
                    GreOuter::None => FastOuter::None,
                    GreOuter::V4 { header, sum } => FastOuter::V4 { header, sum },
                    GreOuter::V6 { header } => FastOuter::V6 { header },
                };
                entries.push((
                    b.id,
                    FastBackend {
                        mac: b.mac.0,
                        new_conns: b.weight > 0 && (b.healthy || vip.fail_open),
                        outer,
                    },
                ));
            }
            // Fits: the sum of all table sizes was checked against `half` above.
            let size = u32::try_from(ids.len()).unwrap_or(0);
            let entry = FastVip {
                table_base: base,
                table_size: size,
                id: vip.id,
                mode: match vip.mode {
                    Mode::Gre => FastMode::Gre,
                    Mode::L2dsr => FastMode::L2Dsr,
                },
                has_past: vip.has_past(),
            };
            self.prog
                .set_vip(vip.addr, vip.proto.number(), vip.port.0, gen, &entry)?;
            base += size;
        }
        self.prog.set_backends(gen, &entries)?;
        self.prog.set_cfg(&FastCfg {
            seed: state.hash_seed,
            active: u32::from(gen),
            mtu: state.mtu,
            mac: self.mac.0,
            tcp_timeout: state.timeouts.tcp,
            tcp_fin_timeout: state.timeouts.tcp_fin,
            udp_timeout: state.timeouts.udp,
            max_new_per_sec: state.max_new_conns_per_sec,
        })?;
        self.prog.clear_generation(gen ^ 1)?;
        Ok(())
    }
}

/// Whether `ifname` has no device behind it but a link to another interface (`iflink` is not its own
/// index): a veth, whose peer must run an XDP program to take `XDP_TX` frames promptly.
fn paired_virtual(ifname: &str) -> bool {
    let dir = std::path::Path::new("/sys/class/net").join(ifname);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map(|t| t.trim().to_owned());
    !dir.join("device").exists()
        && matches!((read("iflink"), read("ifindex")), (Ok(a), Ok(b)) if a != b)
}

/// The connection-map entries of connections the workers forwarded from a past table: the flow, its
/// backend, and the idle timeout user space gives it.
pub fn past_conns(flows: &[PastFlow], timeouts: Timeouts) -> Vec<FastConn> {
    flows
        .iter()
        .map(|f| FastConn {
            src: f.key.src.to_be_bytes(),
            dst: f.key.dst.to_be_bytes(),
            sport: f.key.sport,
            dport: f.key.dport,
            proto: f.key.proto,
            backend: f.backend,
            vip: f.vip,
            closing: f.closing,
            timeout: match (f.key.proto, f.closing) {
                (6, false) => timeouts.tcp,
                (6, true) => timeouts.tcp_fin,
                _ => timeouts.udp,
            },
        })
        .collect()
}

/// The fast paths of a running instance, one per interface, in front of its XDP filters: each runs the
/// fast program, which hands what it does not forward to the interface's filter by tail call.
#[derive(Debug)]
pub struct FastPaths {
    paths: Vec<(String, FastPath)>,
    /// Generation of the state every path holds; `None` after a failed publication.
    generation: Option<u64>,
    /// Whether the log said that some ids are past the program's counters (said once a run).
    warned_uncounted: bool,
}

/// What of `state` the program forwards but cannot count (VIP ids from [`VIP_IDS_COUNTED`] on, backend
/// ids from [`BACKEND_IDS_COUNTED`] on: ids are never reused within a run, so an instance whose VIPs or
/// backends were renamed that often gets there), as `VIP` and `VIP/backend` names; empty when all count.
pub fn uncounted(state: &State) -> Vec<String> {
    let mut names = Vec::new();
    for vip in state.vips() {
        if vip.id >= VIP_IDS_COUNTED {
            names.push(vip.name.clone());
        }
        for b in vip.backends() {
            if b.id >= BACKEND_IDS_COUNTED {
                names.push(format!("{}/{}", vip.name, b.name));
            }
        }
    }
    names
}

impl FastPaths {
    /// Loads a fast path per filter program, publishes `state` into it and puts it in front of the filter
    /// (one link update each: packets never meet neither program). Room: twice the VIPs of `config` (at
    /// least 16, at most the program's limit) and a connection map of `conntrack.size` entries per lport
    /// (what the workers' tables hold together); backend ids up to four times those of `state` (at least
    /// [`MIN_BACKEND_SLOTS`], at most [`BACKEND_IDS_COUNTED`]) take the array lookup.
    /// Dropping the filters detaches the fast paths with them.
    pub fn attach(
        filters: &[XdpProgram],
        lports: usize,
        config: &Validated,
        state: &State,
    ) -> Result<Self, FastPathError> {
        let conns = u32::try_from(lports.max(1))
            .unwrap_or(1)
            .saturating_mul(config.conntrack.size);
        if filters.is_empty() {
            return Err(FastPathError::NoOwnProgram);
        }
        let vips = u32::try_from((2 * config.vips.len()).clamp(16, VIP_CAPACITY)).unwrap_or(16);
        let backend_slots = state
            .backend_id_bound
            .saturating_mul(4)
            .clamp(MIN_BACKEND_SLOTS, BACKEND_IDS_COUNTED);
        let mut paths = Vec::with_capacity(filters.len());
        for filter in filters {
            let ifname = filter.ifname();
            let mac =
                cne::sys::netdev::mac_address(ifname).map_err(|source| FastPathError::Mac {
                    ifname: ifname.to_owned(),
                    source,
                })?;
            let path = FastPath::load(vips, config.table_size, conns, backend_slots, Mac(mac))?;
            path.publish(state)?;
            path.prog.set_fallback(filter.prog_fd())?;
            filter.set_front(path.prog.prog_fd())?;
            log::info!(
                "{ifname}: XDP fast path in front of the filter (room for {vips} VIPs and {conns} \
                 connections)"
            );
            if paired_virtual(ifname) {
                log::warn!(
                    "{ifname} is a virtual device with a peer (a veth?): frames the fast path sends \
                     back with XDP_TX reach a veth's peer only when the peer runs an XDP program of \
                     its own (one returning XDP_PASS will do)"
                );
            }
            paths.push((ifname.to_owned(), path));
        }
        let mut paths = FastPaths {
            paths,
            generation: Some(state.generation),
            warned_uncounted: false,
        };
        paths.warn_uncounted(state);
        Ok(paths)
    }

    /// Says once, loudly, when the state has VIPs or backends the program forwards without counting.
    fn warn_uncounted(&mut self, state: &State) {
        if self.warned_uncounted {
            return;
        }
        let names = uncounted(state);
        if let Some(first) = names.first() {
            self.warned_uncounted = true;
            log::warn!(
                "XDP fast path: {} VIPs or backends (first {first}) have ids past the program's \
                 counters ({VIP_IDS_COUNTED} VIP ids, {BACKEND_IDS_COUNTED} backend ids a run: ids of \
                 removed names are never reused); it forwards their packets, but their per-VIP and \
                 per-backend packet, byte and connection counts leave out what it forwarded until a \
                 restart numbers them afresh",
                names.len()
            );
        }
    }

    /// Publishes `state` unless every path holds it already. `Ok(true)` when something was written.
    pub fn sync(&mut self, state: &State) -> Result<bool, FastPathError> {
        if self.generation == Some(state.generation) {
            return Ok(false);
        }
        self.generation = None;
        for (_, p) in &self.paths {
            p.publish(state)?;
        }
        self.generation = Some(state.generation);
        self.warn_uncounted(state);
        Ok(true)
    }

    /// Whether every path holds `state`.
    pub fn holds(&self, state: &State) -> bool {
        self.generation == Some(state.generation)
    }

    /// Whether `config` fits every path (see [`FastPath::fits`]).
    pub fn fits(&self, config: &Validated) -> Result<(), FastPathError> {
        self.paths.iter().try_for_each(|(_, p)| p.fits(config))
    }

    /// Records connections the workers forwarded from a past table in every path's connection map.
    pub fn record(&self, conns: &[FastConn]) -> Result<(), FastPathError> {
        for (_, p) in &self.paths {
            p.prog.record_conns(conns)?;
        }
        Ok(())
    }

    /// The counters of each path by interface, and what the paths forwarded as the workers count it:
    /// per VIP and backend of `state`, forwarded packets, connections recorded, expired and refused by
    /// the flood guard. A few batch reads of each map.
    pub fn counters(
        &self,
        state: &State,
    ) -> Result<(Vec<(String, FastStats)>, Counters), FastPathError> {
        let mut c = Counters::new(state.vip_id_bound, state.backend_id_bound);
        let mut stats = Vec::with_capacity(self.paths.len());
        let add = |t: &mut Traffic, f: FastTraffic| {
            t.packets += f.packets;
            t.bytes += f.bytes;
            t.new_conns += f.new_conns;
        };
        let vip_ids: Vec<u32> = state.vips().iter().map(|v| v.id).collect();
        let backend_ids: Vec<u32> = (state.vips().iter())
            .flat_map(|v| v.backends().iter().map(|b| b.id))
            .collect();
        for (name, p) in &self.paths {
            let s = p.prog.stats()?;
            stats.push((name.clone(), s));
            c.rx_packets += s.forwarded;
            c.tx_packets += s.forwarded;
            c.conntrack.inserted += s.conn_new;
            c.conntrack.expired += s.conn_expired;
            c.conntrack.limited += s.conn_limited;
            for (&id, f) in vip_ids.iter().zip(p.prog.vip_traffic(&vip_ids)?) {
                if let Some(t) = c.vips.get_mut(id as usize) {
                    add(t, f);
                }
            }
            for (&id, f) in backend_ids
                .iter()
                .zip(p.prog.backend_traffic(&backend_ids)?)
            {
                if let Some(t) = c.backends.get_mut(id as usize) {
                    add(t, f);
                }
            }
        }
        Ok((stats, c))
    }
}

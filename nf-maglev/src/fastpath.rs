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
//! workers), and neither are timeouts or the new-connection flood guard (the kernel's connection map ages
//! out by LRU).

use crate::config::{Mac, Mode};
use crate::control::State;
use crate::tunnel::GreOuter;
use cne::bpf::fast::{
    FastBackend, FastCfg, FastLimits, FastMode, FastOuter, FastProgram, FastVip, VIP_CAPACITY,
};
use cne::bpf::filter::XdpError;

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
}

/// The loaded fast-path program and the generation of the state it shows.
#[derive(Debug)]
pub struct FastPath {
    prog: FastProgram,
    mac: Mac,
}

impl FastPath {
    /// Loads the program with room for `vips` VIPs of `table_size` slots per generation and a connection
    /// map of `conns` entries per CPU; `mac` is the port's MAC address (source of the frames it sends).
    pub fn load(vips: u32, table_size: u32, conns: u32, mac: Mac) -> Result<Self, FastPathError> {
        let per_gen = u64::from(vips) * u64::from(table_size);
        let table_entries = u32::try_from(2 * per_gen).map_err(|_| FastPathError::TablesFull {
            need: per_gen,
            have: u32::MAX / 2,
        })?;
        let prog = FastProgram::load(FastLimits {
            table_entries,
            conns,
        })?;
        Ok(FastPath { prog, mac })
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
        let cfg = self.prog.cfg()?;
        let gen = u8::from(cfg.active & 1 == 0);
        // Whatever a failed publication left in this generation goes first.
        self.prog.clear_generation(gen)?;
        let mut base = u32::from(gen) * half;
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
                let entry = FastBackend {
                    mac: b.mac.0,
                    new_conns: b.weight > 0 && (b.healthy || vip.fail_open),
                    outer,
                };
                self.prog.set_backend(b.id, gen, &entry)?;
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
        self.prog.set_cfg(&FastCfg {
            seed: state.hash_seed,
            active: u32::from(gen),
            mtu: state.mtu,
            mac: self.mac.0,
        })?;
        self.prog.clear_generation(gen ^ 1)?;
        Ok(())
    }
}

//! The requests of the `mmu_update` and `mmuext_op` hypercalls and what a
//! batch of them returns.

use crate::entry::{is_canonical, Level};
use crate::error::Error;
use crate::frame::Gfn;

/// Most requests one `mmu_update` or `mmuext_op` call may carry. A longer
/// batch is refused whole with [`Error::BatchTooLarge`] (-E2BIG) before
/// anything is done; the guest splits its work into calls of at most this
/// many requests. Xen takes any count and preempts itself with a hypercall
/// continuation; a fixed limit gives the same bound on the work done per
/// call (and on what the hypervisor copies out of the guest) without
/// continuations. 4096 updates rewrite eight full tables.
pub const MAX_BATCH: usize = 4096;

/// `mmu_update` commands, in the low 3 bits of [`MmuUpdate::ptr`] (entries
/// are 8-byte aligned). Xen's numbering.
pub mod mmu_cmd {
    /// `*ptr = val`, validated.
    pub const NORMAL_PT_UPDATE: u64 = 0;
    /// Xen's machine-to-physical update. There is no M2P table here (the
    /// guest only sees its own frame numbers), so it is refused with
    /// -ENOSYS.
    pub const MACHPHYS_UPDATE: u64 = 1;
    /// Like [`NORMAL_PT_UPDATE`], but the accessed and dirty bits the entry
    /// has are kept.
    pub const PT_UPDATE_PRESERVE_AD: u64 = 2;
    /// Mask of the command bits.
    pub const MASK: u64 = 7;
}

/// `mmuext_op` commands, Xen's numbering.
pub mod ext_cmd {
    /// Pin an L1 table: `arg1` = frame.
    pub const PIN_L1_TABLE: u32 = 0;
    /// Pin an L2 table.
    pub const PIN_L2_TABLE: u32 = 1;
    /// Pin an L3 table.
    pub const PIN_L3_TABLE: u32 = 2;
    /// Pin an L4 table.
    pub const PIN_L4_TABLE: u32 = 3;
    /// Unpin a table: `arg1` = frame.
    pub const UNPIN_TABLE: u32 = 4;
    /// Switch the calling vCPU to a new L4: `arg1` = frame.
    pub const NEW_BASEPTR: u32 = 5;
    /// Flush the calling vCPU's TLB.
    pub const TLB_FLUSH_LOCAL: u32 = 6;
    /// Invalidate one page on the calling vCPU: `arg1` = address.
    pub const INVLPG_LOCAL: u32 = 7;
    /// Flush the TLBs of a set of vCPUs. The set is not read: every vCPU is
    /// flushed, which is always correct.
    pub const TLB_FLUSH_MULTI: u32 = 8;
    /// Invalidate one page on a set of vCPUs; handled as on all of them.
    pub const INVLPG_MULTI: u32 = 9;
    /// Flush every vCPU's TLB.
    pub const TLB_FLUSH_ALL: u32 = 10;
    /// Invalidate one page on every vCPU: `arg1` = address.
    pub const INVLPG_ALL: u32 = 11;
}

/// One `mmu_update` request, as the guest lays it out (`struct
/// mmu_update`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuUpdate {
    /// Guest-physical address of the entry to write, with the command
    /// ([`mmu_cmd`]) in its low 3 bits.
    pub ptr: u64,
    /// The new entry.
    pub val: u64,
}
const _: () = assert!(std::mem::size_of::<MmuUpdate>() == 16);

impl MmuUpdate {
    /// A normal update of entry `index` of table `table`.
    pub const fn normal(table: Gfn, index: usize, val: u64) -> MmuUpdate {
        MmuUpdate {
            ptr: crate::entry::entry_gpa(table, index) | mmu_cmd::NORMAL_PT_UPDATE,
            val,
        }
    }

    /// An update of entry `index` of table `table` that keeps the entry's
    /// accessed and dirty bits.
    pub const fn preserve_ad(table: Gfn, index: usize, val: u64) -> MmuUpdate {
        MmuUpdate {
            ptr: crate::entry::entry_gpa(table, index) | mmu_cmd::PT_UPDATE_PRESERVE_AD,
            val,
        }
    }
}

/// Size of a guest `struct mmuext_op`: `u32 cmd`, 4 bytes of padding,
/// `u64 arg1`, `u64 arg2`.
pub const MMUEXT_OP_SIZE: u64 = 24;

/// One decoded `mmuext_op` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuExtOp {
    /// Validate `gfn` as a table of `level` and keep it so until unpinned.
    Pin {
        /// The level.
        level: Level,
        /// The table.
        gfn: Gfn,
    },
    /// Drop the pin of `gfn`.
    Unpin {
        /// The table.
        gfn: Gfn,
    },
    /// Make `gfn` the calling vCPU's L4 (its CR3).
    NewBaseptr {
        /// The new L4.
        gfn: Gfn,
    },
    /// Flush the calling vCPU's TLB.
    TlbFlushLocal,
    /// Invalidate `va` on the calling vCPU.
    InvlpgLocal {
        /// A canonical virtual address.
        va: u64,
    },
    /// Flush every vCPU's TLB.
    TlbFlushAll,
    /// Invalidate `va` on every vCPU.
    InvlpgAll {
        /// A canonical virtual address.
        va: u64,
    },
}

impl MmuExtOp {
    /// Decodes a guest request. `arg2` is unused by every command we
    /// implement (Xen's vCPU masks are not read, see
    /// [`ext_cmd::TLB_FLUSH_MULTI`]).
    pub fn decode(cmd: u32, arg1: u64, _arg2: u64) -> Result<MmuExtOp, Error> {
        let invlpg_va = |va: u64| {
            if is_canonical(va) {
                Ok(va)
            } else {
                Err(Error::NonCanonical { va })
            }
        };
        Ok(match cmd {
            ext_cmd::PIN_L1_TABLE => MmuExtOp::Pin {
                level: Level::L1,
                gfn: Gfn(arg1),
            },
            ext_cmd::PIN_L2_TABLE => MmuExtOp::Pin {
                level: Level::L2,
                gfn: Gfn(arg1),
            },
            ext_cmd::PIN_L3_TABLE => MmuExtOp::Pin {
                level: Level::L3,
                gfn: Gfn(arg1),
            },
            ext_cmd::PIN_L4_TABLE => MmuExtOp::Pin {
                level: Level::L4,
                gfn: Gfn(arg1),
            },
            ext_cmd::UNPIN_TABLE => MmuExtOp::Unpin { gfn: Gfn(arg1) },
            ext_cmd::NEW_BASEPTR => MmuExtOp::NewBaseptr { gfn: Gfn(arg1) },
            ext_cmd::TLB_FLUSH_LOCAL => MmuExtOp::TlbFlushLocal,
            ext_cmd::INVLPG_LOCAL => MmuExtOp::InvlpgLocal {
                va: invlpg_va(arg1)?,
            },
            ext_cmd::TLB_FLUSH_MULTI | ext_cmd::TLB_FLUSH_ALL => MmuExtOp::TlbFlushAll,
            ext_cmd::INVLPG_MULTI | ext_cmd::INVLPG_ALL => MmuExtOp::InvlpgAll {
                va: invlpg_va(arg1)?,
            },
            cmd => return Err(Error::UnsupportedExtOp { cmd }),
        })
    }
}

/// How much of the TLB must go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flush {
    /// Nothing.
    #[default]
    None,
    /// The translation of one virtual address.
    Page(u64),
    /// Everything.
    Full,
}

impl Flush {
    /// The smallest flush that covers both.
    pub fn merge(self, other: Flush) -> Flush {
        match (self, other) {
            (Flush::None, f) | (f, Flush::None) => f,
            (Flush::Page(a), Flush::Page(b)) if a == b => Flush::Page(a),
            _ => Flush::Full,
        }
    }
}

/// What the hypervisor must do after a batch, before the calling vCPU
/// returns to the guest. Covers the requests that were done, also when a
/// later one failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Flush on the calling vCPU.
    pub flush_local: Flush,
    /// Flush on every vCPU of the domain.
    pub flush_all: Flush,
    /// The calling vCPU's base pointer changed: load this L4 into its CR3
    /// (which also flushes its non-global translations).
    pub new_base: Option<Gfn>,
}

/// The result of a batch: batches stop at the first failing request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Requests done, in order, before the one that failed (all of them if
    /// none did). The guest learns this count (Xen's `success_count`).
    pub done: usize,
    /// The failure of request `done`, if any.
    pub error: Option<Error>,
    /// What the done requests need from the hypervisor.
    pub effects: Effects,
}

impl BatchOutcome {
    /// The hypercall's return value: 0, or the failure's negative errno.
    pub fn errno(&self) -> i32 {
        self.error.map_or(0, |e| e.errno())
    }

    /// `Ok` if every request was done.
    pub fn result(&self) -> Result<(), Error> {
        self.error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_maps_xen_commands() {
        assert_eq!(
            MmuExtOp::decode(ext_cmd::PIN_L3_TABLE, 7, 0),
            Ok(MmuExtOp::Pin {
                level: Level::L3,
                gfn: Gfn(7)
            })
        );
        assert_eq!(
            MmuExtOp::decode(ext_cmd::TLB_FLUSH_MULTI, 0, 0x1234),
            Ok(MmuExtOp::TlbFlushAll)
        );
        assert_eq!(
            MmuExtOp::decode(ext_cmd::INVLPG_LOCAL, 0x8000_0000_0000, 0),
            Err(Error::NonCanonical {
                va: 0x8000_0000_0000
            })
        );
        assert_eq!(
            MmuExtOp::decode(13, 0, 0),
            Err(Error::UnsupportedExtOp { cmd: 13 })
        );
    }

    #[test]
    fn flush_merge_is_the_smallest_cover() {
        use Flush::*;
        assert_eq!(None.merge(None), None);
        assert_eq!(None.merge(Page(1)), Page(1));
        assert_eq!(Page(1).merge(Page(1)), Page(1));
        assert_eq!(Page(1).merge(Page(2)), Full);
        assert_eq!(Page(1).merge(Full), Full);
        assert_eq!(Full.merge(None), Full);
    }
}

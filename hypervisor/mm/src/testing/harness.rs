//! Drives the frame table and the reference model with the same requests
//! and checks, after every step, that they agree, that the frame table's
//! invariants hold and that no frame changed type while a stale
//! translation could still use it in its old role.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Derived, Model, Refused};
use super::VecMemory;
use crate::entry::Level;
use crate::frame::{FrameClass, Gfn, PageType};
use crate::ops::{BatchOutcome, Effects, MmuExtOp, MmuUpdate, MAX_BATCH};
use crate::table::{Config, FrameTable};

/// One step of a test.
#[derive(Clone, Debug)]
pub enum Op {
    /// The guest writes a word of a frame through a mapping of its own;
    /// skipped when the frame is a page table (the guest could not).
    GuestWrite {
        /// Frame.
        gfn: u64,
        /// Word index.
        idx: u16,
        /// Value.
        val: u64,
    },
    /// An `mmu_update` batch.
    MmuUpdate(Vec<MmuUpdate>),
    /// An `mmu_update` of entry `idx` of the `sel`-th typed page table (in
    /// frame order, wrapping; frame `sel` if there is none): random frame
    /// numbers rarely hit a table, this always does. With `flip` the new
    /// value is the current one with the bits of `val` inverted, which
    /// reaches rewrites with related values (same frame, other rights).
    UpdateTable {
        /// Which table.
        sel: u8,
        /// Entry index.
        idx: u16,
        /// New value, or bits to invert.
        val: u64,
        /// Invert rather than replace.
        flip: bool,
        /// Command (low bits of `ptr`).
        cmd: u64,
    },
    /// The guest writes `reqs` at the start of frame `list_gfn` (if it may
    /// write it) and calls `mmu_update` on `count` requests there.
    MmuUpdateInGuest {
        /// Frame holding the list.
        list_gfn: u64,
        /// Requests written.
        reqs: Vec<MmuUpdate>,
        /// Count passed.
        count: u64,
    },
    /// An `mmuext_op` batch.
    MmuExt {
        /// Calling vCPU (may be out of range).
        vcpu: usize,
        /// Requests.
        ops: Vec<MmuExtOp>,
    },
    /// The guest writes raw `struct mmuext_op`s (command word with padding,
    /// arg1, arg2) at the start of `list_gfn` and calls `mmuext_op`.
    MmuExtInGuest {
        /// Calling vCPU.
        vcpu: usize,
        /// Frame holding the list.
        list_gfn: u64,
        /// Raw records.
        ops: Vec<[u64; 3]>,
        /// Count passed.
        count: u64,
    },
    /// The hypervisor changes a frame's class.
    SetClass {
        /// Frame.
        gfn: u64,
        /// New class.
        class: FrameClass,
    },
    /// The hypervisor adds an I/O range.
    AddIoRange {
        /// First frame.
        first: u64,
        /// Frames.
        count: u64,
    },
    /// The hypervisor reports a full TLB flush.
    NoteFlushed,
    /// The domain is torn down.
    Teardown,
}

/// The frame table, its memory and the model, side by side.
#[derive(Debug)]
pub struct Harness {
    /// The frame table under test.
    pub table: FrameTable,
    /// Its memory.
    pub mem: VecMemory,
    /// The reference model.
    pub model: Model,
    /// Frames whose writable mappings went away since the last flush.
    stale_writable: BTreeSet<u64>,
    /// Frames that stopped being tables since the last flush, with the
    /// level they had.
    stale_table: BTreeMap<u64, Level>,
}

type Check = Result<(), String>;

impl Harness {
    /// A harness for a fresh domain.
    pub fn new(config: Config) -> Harness {
        Harness {
            table: FrameTable::new(config).expect("a small frame table"),
            mem: VecMemory::new(config.nr_frames),
            model: Model::new(
                config.nr_frames,
                config.nr_vcpus,
                config.allow_cache_attrs,
                config.required_bits,
            ),
            stale_writable: BTreeSet::new(),
            stale_table: BTreeMap::new(),
        }
    }

    /// Applies `op` to both sides and checks everything.
    pub fn step(&mut self, op: &Op) -> Check {
        match op {
            Op::GuestWrite { gfn, idx, val } => self.guest_write(*gfn, *idx, *val)?,
            Op::MmuUpdate(reqs) => self.mmu_update(reqs)?,
            Op::UpdateTable {
                sel,
                idx,
                val,
                flip,
                cmd,
            } => {
                let tables: Vec<u64> = (0..self.model.nr_frames)
                    .filter(|g| !self.model.guest_writable(*g))
                    .collect();
                let gfn = match tables.len() {
                    0 => u64::from(*sel) % (self.model.nr_frames + 1),
                    n => tables[usize::from(*sel) % n],
                };
                let idx = *idx % 512;
                let cur = if gfn < self.model.nr_frames {
                    self.model.word(gfn, idx)
                } else {
                    0
                };
                let ptr = gfn * 4096 + u64::from(idx) * 8 + (cmd & 7);
                let val = if *flip { cur ^ val } else { *val };
                self.mmu_update(&[MmuUpdate { ptr, val }])?
            }
            Op::MmuUpdateInGuest {
                list_gfn,
                reqs,
                count,
            } => {
                let words: Vec<u64> = reqs.iter().flat_map(|r| [r.ptr, r.val]).collect();
                if self.write_list(*list_gfn, &words)? {
                    self.mmu_update_in_guest(list_gfn.saturating_mul(4096), *count)?;
                }
            }
            Op::MmuExt { vcpu, ops } => self.mmuext(*vcpu, ops)?,
            Op::MmuExtInGuest {
                vcpu,
                list_gfn,
                ops,
                count,
            } => {
                let words: Vec<u64> = ops.iter().flatten().copied().collect();
                if self.write_list(*list_gfn, &words)? {
                    self.mmuext_in_guest(*vcpu, list_gfn.saturating_mul(4096), *count)?;
                }
            }
            Op::SetClass { gfn, class } => {
                let got = self.table.set_frame_class(Gfn(*gfn), *class);
                let want = self.model.set_class(*gfn, *class);
                if got.is_ok() != want.is_ok() {
                    return Err(format!(
                        "set_frame_class({gfn:#x}, {class}): {got:?}, model {want:?}"
                    ));
                }
            }
            Op::AddIoRange { first, count } => {
                let got = self.table.add_io_range(Gfn(*first), *count);
                let want = self.model.add_io_range(*first, *count);
                if got.is_ok() != want.is_ok() {
                    return Err(format!(
                        "add_io_range({first:#x}, {count}): {got:?}, model {want:?}"
                    ));
                }
            }
            Op::NoteFlushed => {
                self.table.note_tlbs_flushed();
                self.stale_writable.clear();
                self.stale_table.clear();
            }
            Op::Teardown => {
                let before = self.model.derive();
                let flushes = self.mem.flushes;
                self.table.teardown(&mut self.mem);
                self.model.teardown();
                self.track_tlbs(&before, flushes)?;
            }
        }
        self.compare()?;
        self.table
            .check_invariants(&self.mem)
            .map_err(|e| e.to_string())
    }

    /// Tears the domain down and checks that no frame keeps a type or a
    /// reference.
    pub fn finish(&mut self) -> Check {
        self.step(&Op::Teardown)?;
        for (gfn, f) in self.table.frames() {
            if f.type_count != 0 || f.ref_count != 0 || f.pinned || f.page_type != PageType::None {
                return Err(format!("frame {gfn} keeps {f:?} after teardown"));
            }
        }
        Ok(())
    }

    fn guest_write(&mut self, gfn: u64, idx: u16, val: u64) -> Check {
        if gfn >= self.model.nr_frames || idx >= 512 {
            return Ok(());
        }
        let table_writable = self
            .table
            .frame(Gfn(gfn))
            .is_some_and(|f| f.page_type.level().is_none());
        if table_writable != self.model.guest_writable(gfn) {
            return Err(format!(
                "frame {gfn:#x}: writable by the guest differs from the model"
            ));
        }
        if table_writable {
            self.mem.set_entry(Gfn(gfn), idx.into(), val);
            self.model.set_word(gfn, idx, val);
        }
        Ok(())
    }

    /// Writes a request list into a frame the guest may write; `false` if
    /// it may not (or the list does not fit). A list outside memory is not
    /// written but still used, to exercise unreadable lists.
    fn write_list(&mut self, gfn: u64, words: &[u64]) -> Result<bool, String> {
        if gfn >= self.model.nr_frames {
            return Ok(true);
        }
        if words.len() > 512 || !self.model.guest_writable(gfn) {
            return Ok(false);
        }
        for (i, w) in words.iter().enumerate() {
            self.guest_write(gfn, i as u16, *w)?;
        }
        Ok(true)
    }

    fn mmu_update(&mut self, reqs: &[MmuUpdate]) -> Check {
        if reqs.len() > MAX_BATCH {
            let out = self.table.mmu_update(&mut self.mem, reqs);
            return self.expect_refused_whole(&out);
        }
        let (mut t, mut m) = (self.clone_table(), self.mem.clone());
        let batch = t.mmu_update(&mut m, reqs);
        let mut singles = BatchOutcome {
            done: 0,
            error: None,
            effects: Effects::default(),
        };
        for r in reqs {
            let before = self.model.derive();
            let flushes = self.mem.flushes;
            let got = self
                .table
                .mmu_update(&mut self.mem, std::slice::from_ref(r));
            let want = self.model.mmu_update(r.ptr, r.val);
            self.agree(&format!("mmu_update {r:x?}"), &got, want.is_ok())?;
            self.check_plain_write(&before, r.ptr, &got, flushes)?;
            self.track_tlbs(&before, flushes)?;
            if got.error.is_some() {
                singles.error = got.error;
                break;
            }
            singles.done += 1;
        }
        self.same_as_batch(&batch, &singles, &t, &m)
    }

    fn mmu_update_in_guest(&mut self, list_gpa: u64, count: u64) -> Check {
        if count > MAX_BATCH as u64 {
            let out = self
                .table
                .mmu_update_in_guest(&mut self.mem, list_gpa, count);
            return self.expect_refused_whole(&out);
        }
        let (mut t, mut m) = (self.clone_table(), self.mem.clone());
        let batch = t.mmu_update_in_guest(&mut m, list_gpa, count);
        let mut singles = BatchOutcome {
            done: 0,
            error: None,
            effects: Effects::default(),
        };
        for n in 0..count {
            let gpa = list_gpa + 16 * n;
            // Read before: the request may overwrite its own list.
            let ptr = self.model.read(gpa);
            let before = self.model.derive();
            let flushes = self.mem.flushes;
            let got = self.table.mmu_update_in_guest(&mut self.mem, gpa, 1);
            let want = match (self.model.read(gpa), self.model.read(gpa + 8)) {
                (Some(ptr), Some(val)) => self.model.mmu_update(ptr, val),
                _ => Err(Refused),
            };
            self.agree(
                &format!("in-guest mmu_update at {gpa:#x}"),
                &got,
                want.is_ok(),
            )?;
            if let Some(ptr) = ptr {
                self.check_plain_write(&before, ptr, &got, flushes)?;
            }
            self.track_tlbs(&before, flushes)?;
            if got.error.is_some() {
                singles.error = got.error;
                break;
            }
            singles.done += 1;
        }
        self.same_as_batch(&batch, &singles, &t, &m)
    }

    fn mmuext(&mut self, vcpu: usize, ops: &[MmuExtOp]) -> Check {
        if ops.len() > MAX_BATCH || vcpu >= self.model.bases.len() {
            let out = self.table.mmuext_op(&mut self.mem, vcpu, ops);
            return self.expect_refused_whole(&out);
        }
        let (mut t, mut m) = (self.clone_table(), self.mem.clone());
        let batch = t.mmuext_op(&mut m, vcpu, ops);
        let mut singles = BatchOutcome {
            done: 0,
            error: None,
            effects: Effects::default(),
        };
        for op in ops {
            let got = self.ext_single(
                vcpu,
                &mut singles.effects,
                |t, mem| t.mmuext_op(mem, vcpu, std::slice::from_ref(op)),
                Ok(*op),
            )?;
            if got.is_some() {
                singles.error = got;
                break;
            }
            singles.done += 1;
        }
        self.same_as_batch(&batch, &singles, &t, &m)
    }

    fn mmuext_in_guest(&mut self, vcpu: usize, list_gpa: u64, count: u64) -> Check {
        if count > MAX_BATCH as u64 || vcpu >= self.model.bases.len() {
            let out = self
                .table
                .mmuext_op_in_guest(&mut self.mem, vcpu, list_gpa, count);
            return self.expect_refused_whole(&out);
        }
        let (mut t, mut m) = (self.clone_table(), self.mem.clone());
        let batch = t.mmuext_op_in_guest(&mut m, vcpu, list_gpa, count);
        let mut singles = BatchOutcome {
            done: 0,
            error: None,
            effects: Effects::default(),
        };
        for n in 0..count {
            let gpa = list_gpa + 24 * n;
            let words = (
                self.model.read(gpa),
                self.model.read(gpa + 8),
                self.model.read(gpa + 16),
            );
            let op = match words {
                (Some(cmd), Some(a1), Some(a2)) => {
                    MmuExtOp::decode(cmd as u32, a1, a2).map_err(|_| Refused)
                }
                _ => Err(Refused),
            };
            let got = self.ext_single(
                vcpu,
                &mut singles.effects,
                |t, mem| t.mmuext_op_in_guest(mem, vcpu, gpa, 1),
                op,
            )?;
            if got.is_some() {
                singles.error = got;
                break;
            }
            singles.done += 1;
        }
        self.same_as_batch(&batch, &singles, &t, &m)
    }

    /// Runs one ext op on the table (through `run`) and on the model
    /// (`op`, `Err` when it cannot be decoded); returns the table's error.
    fn ext_single(
        &mut self,
        vcpu: usize,
        effects: &mut Effects,
        run: impl FnOnce(&mut FrameTable, &mut VecMemory) -> BatchOutcome,
        op: Result<MmuExtOp, Refused>,
    ) -> Result<Option<crate::Error>, String> {
        let before = self.model.derive();
        let flushes = self.mem.flushes;
        let got = run(&mut self.table, &mut self.mem);
        let want = op.and_then(|op| match op {
            MmuExtOp::Pin { level, gfn } => self.model.pin(level, gfn.0),
            MmuExtOp::Unpin { gfn } => self.model.unpin(gfn.0),
            MmuExtOp::NewBaseptr { gfn } => self.model.new_baseptr(vcpu, gfn.0),
            MmuExtOp::TlbFlushLocal
            | MmuExtOp::InvlpgLocal { .. }
            | MmuExtOp::TlbFlushAll
            | MmuExtOp::InvlpgAll { .. } => Ok(()),
        });
        self.agree(&format!("mmuext_op {op:x?}"), &got, want.is_ok())?;
        self.track_tlbs(&before, flushes)?;
        effects.flush_local = effects.flush_local.merge(got.effects.flush_local);
        effects.flush_all = effects.flush_all.merge(got.effects.flush_all);
        effects.new_base = got.effects.new_base.or(effects.new_base);
        Ok(got.error)
    }

    fn agree(&self, what: &str, got: &BatchOutcome, model_ok: bool) -> Check {
        if got.error.is_none() != model_ok {
            return Err(format!(
                "{what}: the frame table says {:?}, the model says {}",
                got.error,
                if model_ok { "ok" } else { "refused" }
            ));
        }
        Ok(())
    }

    /// An oversized batch, or one for a vCPU that does not exist, must be
    /// refused before anything is done (`compare` then checks that nothing
    /// changed).
    fn expect_refused_whole(&self, batch: &BatchOutcome) -> Check {
        if batch.done != 0 || batch.error.is_none() || batch.effects != Effects::default() {
            return Err(format!(
                "an oversized or misdirected batch was not refused whole: {batch:?}"
            ));
        }
        Ok(())
    }

    /// The batch (run on clones) must end where the singles did.
    fn same_as_batch(
        &self,
        batch: &BatchOutcome,
        singles: &BatchOutcome,
        t: &FrameTable,
        m: &VecMemory,
    ) -> Check {
        if batch != singles {
            return Err(format!("batch {batch:?} but one by one {singles:?}"));
        }
        if !t.frames().eq(self.table.frames()) || *m != self.mem {
            return Err("the batch left another state than its requests one by one".into());
        }
        Ok(())
    }

    fn clone_table(&self) -> FrameTable {
        self.table.clone()
    }

    /// A plain write (a successful `mmu_update` of a word in a frame that
    /// was no table) must not land in a frame that stale translations may
    /// still walk as a page table, unless the TLBs were flushed first.
    fn check_plain_write(
        &self,
        before: &Derived,
        ptr: u64,
        got: &BatchOutcome,
        flushes_before: u64,
    ) -> Check {
        let g = (ptr & !7) / 4096;
        let plain = got.error.is_none()
            && got.done == 1
            && before
                .ty
                .get(g as usize)
                .is_some_and(|t| t.level().is_none());
        if plain && self.mem.flushes == flushes_before {
            if let Some(level) = self.stale_table.get(&g) {
                return Err(format!("a plain write to frame {g:#x} without a flush, while stale translations may use it as an {level} table"));
            }
        }
        Ok(())
    }

    /// Updates the stale-translation sets after one request and checks
    /// that no frame took a new role while it was stale in another.
    fn track_tlbs(&mut self, before: &Derived, flushes_before: u64) -> Check {
        if self.mem.flushes != flushes_before {
            // The frame table flushes before it retypes anything and drops
            // references only after, so the flush covers everything that
            // was stale when the request began.
            self.stale_writable.clear();
            self.stale_table.clear();
        }
        let after = self.model.derive();
        for g in 0..before.ty.len() {
            let (old, new) = (before.ty[g], after.ty[g]);
            if old == new {
                continue;
            }
            let gfn = g as u64;
            match new.level() {
                Some(level) => {
                    if self.stale_writable.contains(&gfn) {
                        return Err(format!("frame {gfn:#x} became an {level} table while a stale writable mapping may exist"));
                    }
                    if let Some(l) = self.stale_table.get(&gfn).filter(|l| **l != level) {
                        return Err(format!("frame {gfn:#x} became an {level} table while stale translations may use it as {l}"));
                    }
                }
                None if new == PageType::Writable => {
                    if let Some(l) = self.stale_table.get(&gfn) {
                        return Err(format!("frame {gfn:#x} became writable while stale translations may use it as an {l} table"));
                    }
                }
                None => {}
            }
            match old.level() {
                Some(level) => {
                    self.stale_table.insert(gfn, level);
                }
                None if old == PageType::Writable => {
                    self.stale_writable.insert(gfn);
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Compares the frame table with the model.
    fn compare(&self) -> Check {
        let d = self.model.derive();
        for (gfn, f) in self.table.frames() {
            let g = gfn.0 as usize;
            let want = (
                d.ty[g],
                u64::from(f.type_count) == d.type_count[g],
                u64::from(f.ref_count) == d.refs[g],
                self.model.pins.contains_key(&gfn.0),
                self.model.classes[g],
            );
            let got = (f.page_type, true, true, f.pinned, f.class);
            if want != got {
                return Err(format!(
                    "frame {gfn}: the frame table has {f:?}, the model type {:?}, type count {}, references {}, pinned {}, class {}",
                    d.ty[g], d.type_count[g], d.refs[g], want.3, want.4
                ));
            }
            for idx in 0..512u16 {
                if self.mem.entry(gfn, idx.into()) != self.model.word(gfn.0, idx) {
                    return Err(format!("word {idx} of frame {gfn} differs from the model"));
                }
            }
        }
        for (v, b) in self.model.bases.iter().enumerate() {
            if self.table.base_pointer(v).map(|g| g.0) != *b {
                return Err(format!("vCPU {v}'s base pointer differs from the model"));
            }
        }
        Ok(())
    }
}

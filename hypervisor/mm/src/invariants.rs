//! A from-scratch check of the frame table's bookkeeping, for tests, the
//! fuzz target and debugging.

use crate::entry::{entry_gpa, is_present, ENTRIES_PER_TABLE};
use crate::frame::{FrameClass, Gfn, PageType};
use crate::memory::PageTableMemory;
use crate::table::{entry_ref, FrameTable, RefKind};

/// A broken invariant, described.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame table invariant violated: {0}")]
pub struct InvariantViolation(pub String);

macro_rules! violated {
    ($($arg:tt)*) => {
        return Err(InvariantViolation(format!($($arg)*)))
    };
}

impl FrameTable {
    /// Recomputes every count from the references actually held (pins,
    /// base pointers and the present entries of every typed table, read
    /// from `mem`) and checks:
    /// - each frame's type count and general count equal the recomputed
    ///   ones;
    /// - every reference asks for the frame's current type (so no frame is
    ///   both a page table and writable, and tables link level to level);
    /// - every present entry of a typed table is valid for its level;
    /// - frames are used only as their class allows;
    /// - pinned frames and base pointers are tables of the right level, and
    ///   pinned implies a type count of at least one;
    /// - I/O frames are mapped only by L1 entries and, inside the table,
    ///   are `Absent` frames without counts.
    ///
    /// Takes time in proportion to the typed tables; meant for tests.
    pub fn check_invariants<M: PageTableMemory>(&self, mem: &M) -> Result<(), InvariantViolation> {
        let n = self.frames.len();
        let mut type_counts = vec![0u64; n];
        let mut refs = vec![0u64; n];

        let mut count = |gfn: Gfn, kind: RefKind, from: &dyn Fn() -> String| {
            let in_table = usize::try_from(gfn.0).ok().filter(|i| *i < n);
            let absent = in_table.is_none_or(|i| self.frames[i].class == FrameClass::Absent);
            if absent && self.is_io_frame(gfn) {
                // I/O frames hold no counts; only L1 entries may map them.
                if let RefKind::Table(level) = kind {
                    violated!("{} uses I/O frame {gfn} as an {level} table", from());
                }
                return Ok(());
            }
            let Some(i) = usize::try_from(gfn.0).ok().filter(|i| *i < n) else {
                violated!("{} refers to frame {gfn} outside the table", from());
            };
            let f = &self.frames[i];
            let wanted = match kind {
                RefKind::ReadOnly => None,
                RefKind::Writable => Some(PageType::Writable),
                RefKind::Table(level) => Some(PageType::table(level)),
            };
            if let Some(wanted) = wanted {
                if f.current_type() != wanted {
                    violated!(
                        "{} needs frame {gfn} as {wanted}, but it is {}",
                        from(),
                        f.current_type()
                    );
                }
                type_counts[i] += 1;
            }
            refs[i] += 1;
            Ok(())
        };

        for (v, base) in self.bases.iter().enumerate() {
            if let Some(b) = base {
                count(*b, RefKind::Table(crate::entry::Level::L4), &|| {
                    format!("the base pointer of vCPU {v}")
                })?;
            }
        }
        for (i, f) in self.frames.iter().enumerate() {
            let gfn = Gfn(i as u64);
            if f.pinned {
                let Some(level) = f.current_type().level() else {
                    violated!("frame {gfn} is pinned but is {}", f.current_type());
                };
                count(gfn, RefKind::Table(level), &|| {
                    format!("the pin of frame {gfn}")
                })?;
            }
            let Some(level) = f.current_type().level() else {
                continue;
            };
            for idx in 0..ENTRIES_PER_TABLE {
                let gpa = entry_gpa(gfn, idx);
                let Ok(e) = mem.read_u64(gpa) else {
                    violated!("entry {idx} of {level} table {gfn} cannot be read");
                };
                if !is_present(e) {
                    continue;
                }
                if let Err(err) = self.check_entry(level, e) {
                    violated!("entry {idx} of {level} table {gfn} is invalid: {err}");
                }
                let (target, kind) = entry_ref(level, e);
                count(target, kind, &|| {
                    format!("entry {idx} ({e:#x}) of {level} table {gfn}")
                })?;
            }
        }

        for (i, f) in self.frames.iter().enumerate() {
            let gfn = Gfn(i as u64);
            if u64::from(f.type_count) != type_counts[i] {
                violated!(
                    "frame {gfn} has a type count of {} but {} type references are held",
                    f.type_count,
                    type_counts[i]
                );
            }
            if u64::from(f.refs) != refs[i] {
                violated!(
                    "frame {gfn} has a reference count of {} but {} references are held",
                    f.refs,
                    refs[i]
                );
            }
            let ty = f.current_type();
            let class_ok = match f.class {
                FrameClass::Ram => true,
                FrameClass::Shared => ty.level().is_none(),
                FrameClass::ReadOnly => ty == PageType::None,
                FrameClass::Reserved | FrameClass::Absent => f.refs == 0,
            };
            if !class_ok {
                violated!(
                    "frame {gfn} is a {} frame but is {ty} with {} references",
                    f.class,
                    f.refs
                );
            }
            if f.type_count > 0 && ty == PageType::None {
                violated!("frame {gfn} has type references but no type");
            }
        }
        for (first, end) in &self.io_ranges {
            for g in *first..(*end).min(n as u64) {
                let f = &self.frames[g as usize];
                if f.class != FrameClass::Absent || f.refs != 0 || f.type_count != 0 {
                    violated!(
                        "frame {} of an I/O range is a {} frame with {} references",
                        Gfn(g),
                        f.class,
                        f.refs
                    );
                }
            }
        }
        if self.flush_epoch == 0 {
            violated!("the flush epoch is zero");
        }
        Ok(())
    }
}

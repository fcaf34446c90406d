//! A from-scratch check of the frame table's bookkeeping, for tests, the
//! fuzz target and debugging.

use std::collections::BTreeSet;

use crate::entry::{entry_gpa, is_present, Level, ENTRIES_PER_TABLE, PTE_RW};
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

impl FrameTable {
    /// Walks the address space whose L4 is `root`, as the CPU would from a
    /// CR3 naming it, and reports (at most `limit`) places where it is not
    /// what validation allows:
    /// - every table reached must be a validated table of its level (type
    ///   Lk with a type count above zero), the root an L4;
    /// - every present entry must be valid for its level (the entry rules,
    ///   I/O frames included);
    /// - every frame an L1 entry maps must be one the guest may map that
    ///   way: owned, not reserved, and, if writable, of type `Writable`
    ///   (never a table, never a read-only frame).
    ///
    /// Each table is visited once, so the walk takes time in proportion to
    /// the tables reachable. For audits of a live domain: the caller stops
    /// its vCPUs first.
    pub fn check_address_space<M: PageTableMemory>(
        &self,
        mem: &M,
        root: Gfn,
        limit: usize,
    ) -> AddressSpaceCheck {
        let mut walk = Walk {
            table: self,
            mem,
            limit,
            seen: BTreeSet::new(),
            out: AddressSpaceCheck::default(),
        };
        walk.table_frame(root, Level::L4, &|| "the root".to_string());
        walk.out
    }
}

/// What [`FrameTable::check_address_space`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressSpaceCheck {
    /// Tables walked.
    pub tables: usize,
    /// Problems found, at most the limit asked for.
    pub findings: Vec<String>,
    /// All problems found (above the limit, they are only counted).
    pub total: usize,
}

impl AddressSpaceCheck {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.total == 0
    }
}

struct Walk<'a, M> {
    table: &'a FrameTable,
    mem: &'a M,
    limit: usize,
    seen: BTreeSet<(u64, Level)>,
    out: AddressSpaceCheck,
}

impl<M: PageTableMemory> Walk<'_, M> {
    fn finding(&mut self, text: String) {
        self.out.total += 1;
        if self.out.findings.len() < self.limit {
            self.out.findings.push(text);
        }
    }

    /// `gfn`, reached by `from`, used as a table of `level`.
    fn table_frame(&mut self, gfn: Gfn, level: Level, from: &dyn Fn() -> String) {
        if !self.seen.insert((gfn.0, level)) {
            return;
        }
        let Some(f) = self.table.frame(gfn) else {
            let what = if self.table.is_io_frame(gfn) {
                "an I/O frame"
            } else {
                "outside the frame table"
            };
            self.finding(format!(
                "{} is {level} table {gfn}, which is {what}",
                from()
            ));
            return;
        };
        if f.page_type != PageType::table(level) || f.type_count == 0 {
            self.finding(format!(
                "{} is {level} table {gfn}, which is not validated as one (it is {}, a {} frame)",
                from(),
                f.page_type,
                f.class
            ));
        }
        self.out.tables += 1;
        for idx in 0..ENTRIES_PER_TABLE {
            let gpa = entry_gpa(gfn, idx);
            let Ok(e) = self.mem.read_u64(gpa) else {
                self.finding(format!("entry {idx} of {level} table {gfn} cannot be read"));
                continue;
            };
            if !is_present(e) {
                continue;
            }
            let here = || format!("entry {idx} ({e:#x}) of {level} table {gfn}");
            if let Err(err) = self.table.check_entry(level, e) {
                self.finding(format!("{} is invalid: {err}", here()));
                continue;
            }
            let (target, _) = entry_ref(level, e);
            match level.lower() {
                Some(lower) => self.table_frame(target, lower, &here),
                None => self.leaf(target, e & PTE_RW != 0, &here),
            }
        }
    }

    /// `gfn`, mapped by an L1 entry `from`.
    fn leaf(&mut self, gfn: Gfn, writable: bool, from: &dyn Fn() -> String) {
        if self.table.is_io_frame(gfn)
            && self
                .table
                .frame(gfn)
                .is_none_or(|f| f.class == FrameClass::Absent)
        {
            return;
        }
        let Some(f) = self.table.frame(gfn) else {
            self.finding(format!(
                "{} maps frame {gfn}, outside the frame table",
                from()
            ));
            return;
        };
        let problem = match (f.class, writable) {
            (FrameClass::Absent | FrameClass::Reserved, _) => Some(format!("a {} frame", f.class)),
            (FrameClass::ReadOnly, true) => Some("a read-only frame, writable".to_string()),
            (_, true) if f.page_type != PageType::Writable => {
                Some(format!("{}, writable", f.page_type))
            }
            _ => None,
        };
        if let Some(p) = problem {
            self.finding(format!("{} maps frame {gfn}: {p}", from()));
        }
    }
}

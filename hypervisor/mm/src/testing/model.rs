//! A reference model of the paging rules that keeps no counts at all: it
//! recomputes every type and count from the roots (pins and base pointers)
//! and the memory each time, and accepts a request when the state it would
//! lead to is valid. Written apart from the frame table, in the plainest
//! way, so that the two can be compared.

use std::collections::BTreeMap;

use crate::entry::Level;
use crate::frame::{FrameClass, PageType};

/// Bits 12..=51 of an entry.
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Flag bits each level allows, spelled out bit by bit from the rule table
/// in the crate documentation (index 0 = L1).
fn allowed_bits(level: Level, cache_attrs: bool) -> u64 {
    let bit = |n: u32| 1u64 << n;
    // P, RW, US, A, D, three available bits, NX.
    let common = bit(0) | bit(1) | bit(2) | bit(5) | bit(6) | bit(9) | bit(10) | bit(11) | bit(63);
    // L1 also: G and the software-available bits 52..=58.
    let l1 = common | bit(8) | (52..=58).map(bit).fold(0, |a, b| a | b);
    match level {
        Level::L1 if cache_attrs => l1 | bit(3) | bit(4) | bit(7),
        Level::L1 => l1,
        Level::L2 | Level::L3 | Level::L4 => common,
    }
}

/// A reference from a root or an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ref {
    ReadOnly(u64),
    Writable(u64),
    Table(Level, u64),
}

impl Ref {
    fn frame(self) -> u64 {
        match self {
            Ref::ReadOnly(g) | Ref::Writable(g) | Ref::Table(_, g) => g,
        }
    }
}

/// The model refuses the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// Types and counts derived from scratch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    /// Type of each frame ([`PageType::None`] when untyped).
    pub ty: Vec<PageType>,
    /// Type references of each frame.
    pub type_count: Vec<u64>,
    /// All references of each frame.
    pub refs: Vec<u64>,
}

/// The model's state: what the guest asked for, nothing derived.
#[derive(Clone, Debug)]
pub struct Model {
    /// Frames.
    pub nr_frames: u64,
    /// Class of each frame.
    pub classes: Vec<FrameClass>,
    /// Non-zero words of each frame, by index.
    pub mem: Vec<BTreeMap<u16, u64>>,
    /// Pinned frames and their level.
    pub pins: BTreeMap<u64, Level>,
    /// Base pointer of each vCPU.
    pub bases: Vec<Option<u64>>,
    /// Cache attributes allowed in L1 entries.
    pub cache_attrs: bool,
    /// Bits every present entry needs.
    pub required_bits: u64,
    /// I/O ranges, `(first, end)` with `end` exclusive.
    pub io: Vec<(u64, u64)>,
}

impl Model {
    /// An empty domain.
    pub fn new(nr_frames: u64, nr_vcpus: usize, cache_attrs: bool, required_bits: u64) -> Model {
        Model {
            nr_frames,
            classes: vec![FrameClass::Ram; nr_frames as usize],
            mem: vec![BTreeMap::new(); nr_frames as usize],
            pins: BTreeMap::new(),
            bases: vec![None; nr_vcpus],
            cache_attrs,
            required_bits,
            io: Vec::new(),
        }
    }

    /// Whether `g` is in an I/O range.
    pub fn is_io(&self, g: u64) -> bool {
        self.io.iter().any(|(f, e)| *f <= g && g < *e)
    }

    /// Adds an I/O range: every frame of it inside the table must be
    /// absent; at most 64 ranges; frame numbers below 2^40.
    pub fn add_io_range(&mut self, first: u64, count: u64) -> Result<(), Refused> {
        let end = first
            .checked_add(count)
            .filter(|e| *e <= 1 << 40)
            .ok_or(Refused)?;
        if count == 0 {
            return Ok(());
        }
        if self.io.len() >= 64 {
            return Err(Refused);
        }
        if (first..end.min(self.nr_frames)).any(|g| self.classes[g as usize] != FrameClass::Absent)
        {
            return Err(Refused);
        }
        self.io.push((first, end));
        Ok(())
    }

    /// The word at `gpa`, if it is in memory (reads are 8-byte aligned).
    pub fn read(&self, gpa: u64) -> Option<u64> {
        let g = gpa / 4096;
        if gpa % 8 != 0 || g >= self.nr_frames {
            return None;
        }
        Some(self.word(g, ((gpa % 4096) / 8) as u16))
    }

    /// Word `idx` of frame `g`.
    pub fn word(&self, g: u64, idx: u16) -> u64 {
        self.mem[g as usize].get(&idx).copied().unwrap_or(0)
    }

    /// Sets word `idx` of frame `g`.
    pub fn set_word(&mut self, g: u64, idx: u16, val: u64) {
        if val == 0 {
            self.mem[g as usize].remove(&idx);
        } else {
            self.mem[g as usize].insert(idx, val);
        }
    }

    fn entry_bits_ok(&self, level: Level, e: u64) -> bool {
        let flags = e & !ADDR;
        // Device registers may be mapped uncached from L1 entries.
        let cache_attrs = self.cache_attrs || (level == Level::L1 && self.is_io((e & ADDR) >> 12));
        flags & !allowed_bits(level, cache_attrs) == 0
            && flags & self.required_bits == self.required_bits
    }

    fn entry_ref(level: Level, e: u64) -> Ref {
        let g = (e & ADDR) >> 12;
        match level {
            Level::L1 if e & 2 != 0 => Ref::Writable(g),
            Level::L1 => Ref::ReadOnly(g),
            Level::L2 => Ref::Table(Level::L1, g),
            Level::L3 => Ref::Table(Level::L2, g),
            Level::L4 => Ref::Table(Level::L3, g),
        }
    }

    fn target_ok(&self, r: Ref) -> bool {
        let g = r.frame();
        if g >= self.nr_frames {
            return false;
        }
        !matches!(
            (self.classes[g as usize], r),
            (FrameClass::Absent | FrameClass::Reserved, _)
                | (FrameClass::ReadOnly, Ref::Writable(_))
                | (FrameClass::ReadOnly | FrameClass::Shared, Ref::Table(..))
        )
    }

    /// Types and counts with the roots plus `extra` references, or `None`
    /// if that state is invalid.
    pub fn derive_with(&self, extra: &[(Option<Level>, bool, u64)]) -> Option<Derived> {
        let extra: Vec<Ref> = extra
            .iter()
            .map(|&(level, writable, g)| match level {
                Some(l) => Ref::Table(l, g),
                None if writable => Ref::Writable(g),
                None => Ref::ReadOnly(g),
            })
            .collect();
        self.derive_refs(&extra)
    }

    /// Types and counts of the current state.
    pub fn derive(&self) -> Derived {
        self.derive_refs(&[])
            .expect("the model only ever reaches valid states")
    }

    fn derive_refs(&self, extra: &[Ref]) -> Option<Derived> {
        let n = self.nr_frames as usize;
        let mut d = Derived {
            ty: vec![PageType::None; n],
            type_count: vec![0; n],
            refs: vec![0; n],
        };
        let mut work: Vec<Ref> = extra.to_vec();
        work.extend(
            self.bases
                .iter()
                .flatten()
                .map(|b| Ref::Table(Level::L4, *b)),
        );
        work.extend(self.pins.iter().map(|(g, l)| Ref::Table(*l, *g)));
        while let Some(r) = work.pop() {
            if self.is_io(r.frame()) {
                // Mapped without counts, never a table.
                if let Ref::Table(..) = r {
                    return None;
                }
                continue;
            }
            if !self.target_ok(r) {
                return None;
            }
            let g = r.frame() as usize;
            d.refs[g] += 1;
            let wanted = match r {
                Ref::ReadOnly(_) => continue,
                Ref::Writable(_) => PageType::Writable,
                Ref::Table(l, _) => PageType::table(l),
            };
            if d.ty[g] == PageType::None {
                d.ty[g] = wanted;
                if let Ref::Table(level, _) = r {
                    for e in self.mem[g].values().filter(|e| *e & 1 != 0) {
                        if !self.entry_bits_ok(level, *e) {
                            return None;
                        }
                        work.push(Self::entry_ref(level, *e));
                    }
                }
            } else if d.ty[g] != wanted {
                return None;
            }
            d.type_count[g] += 1;
        }
        Some(d)
    }

    /// One `mmu_update` request; `Err` if the frame table must refuse it.
    pub fn mmu_update(&mut self, ptr: u64, val: u64) -> Result<(), Refused> {
        let cmd = ptr & 7;
        if cmd != 0 && cmd != 2 {
            return Err(Refused);
        }
        let gpa = ptr & !7;
        let g = gpa / 4096;
        if g >= self.nr_frames {
            return Err(Refused);
        }
        let d = self.derive();
        let idx = ((gpa % 4096) / 8) as u16;
        let old = self.word(g, idx);
        let mut new = val;
        if cmd == 2 && old & 1 != 0 && new & 1 != 0 {
            new |= old & 0x60;
        }
        let Some(level) = d.ty[g as usize].level() else {
            // No table: a plain write if the guest could write the frame.
            return match self.classes[g as usize] {
                FrameClass::Ram | FrameClass::Shared => {
                    self.set_word(g, idx, new);
                    Ok(())
                }
                _ => Err(Refused),
            };
        };
        if new & 1 != 0 {
            if !self.entry_bits_ok(level, new) {
                return Err(Refused);
            }
            // The new reference must be takeable while the old one is still
            // held.
            self.derive_refs(&[Self::entry_ref(level, new)])
                .ok_or(Refused)?;
        }
        self.set_word(g, idx, new);
        Ok(())
    }

    /// Pin `g` as a table of `level`.
    pub fn pin(&mut self, level: Level, g: u64) -> Result<(), Refused> {
        if g >= self.nr_frames || self.pins.contains_key(&g) {
            return Err(Refused);
        }
        self.derive_refs(&[Ref::Table(level, g)]).ok_or(Refused)?;
        self.pins.insert(g, level);
        Ok(())
    }

    /// Unpin `g`.
    pub fn unpin(&mut self, g: u64) -> Result<(), Refused> {
        self.pins.remove(&g).map(|_| ()).ok_or(Refused)
    }

    /// New base pointer of `vcpu`.
    pub fn new_baseptr(&mut self, vcpu: usize, g: u64) -> Result<(), Refused> {
        self.derive_refs(&[Ref::Table(Level::L4, g)])
            .ok_or(Refused)?;
        self.bases[vcpu] = Some(g);
        Ok(())
    }

    /// Change the class of `g`.
    pub fn set_class(&mut self, g: u64, class: FrameClass) -> Result<(), Refused> {
        if g >= self.nr_frames {
            return Err(Refused);
        }
        let d = self.derive();
        let i = g as usize;
        if class != FrameClass::Absent && self.is_io(g) {
            return Err(Refused);
        }
        let fits = match class {
            FrameClass::Ram => true,
            FrameClass::Shared => d.ty[i].level().is_none(),
            FrameClass::ReadOnly => d.type_count[i] == 0,
            FrameClass::Reserved | FrameClass::Absent => d.refs[i] == 0,
        };
        if !fits {
            return Err(Refused);
        }
        self.classes[i] = class;
        Ok(())
    }

    /// Whether the guest could write frame `g` (it is not a page table).
    pub fn guest_writable(&self, g: u64) -> bool {
        g < self.nr_frames && self.derive().ty[g as usize].level().is_none()
    }

    /// Drop every pin and base pointer.
    pub fn teardown(&mut self) {
        self.pins.clear();
        self.bases.iter_mut().for_each(|b| *b = None);
    }
}

//! The per-domain frame table: reference counting, validation of page
//! tables and the `mmu_update` / `mmuext_op` operations.

use crate::entry::{
    entry_frame, entry_gpa, is_present, EntryRules, Level, ENTRIES_PER_TABLE, L1_CACHE_ATTRS,
    PAGE_SHIFT, PTE_A, PTE_D, PTE_RW,
};
use crate::error::Error;
use crate::frame::{Frame, FrameClass, FrameInfo, Gfn, PageType};
use crate::memory::PageTableMemory;
use crate::ops::{
    mmu_cmd, BatchOutcome, Effects, Flush, MmuExtOp, MmuUpdate, MAX_BATCH, MMUEXT_OP_SIZE,
};
use crate::stats::Stats;

/// Largest frame table: frame numbers of 52-bit guest-physical addresses.
pub const MAX_FRAMES: u64 = 1 << 40;

/// How many times a preserving update retries when the CPU sets accessed
/// or dirty bits between the read and the compare-and-exchange. The CPU
/// only ever sets the two bits, so two retries suffice; a memory that
/// changes entries in other ways is reported as a fault.
const PRESERVE_AD_TRIES: usize = 4;

/// The domain's paging configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Frames of the domain's guest-physical RAM range: frame numbers from
    /// 0 to `nr_frames - 1`. Frames in holes are marked
    /// [`FrameClass::Absent`] with [`FrameTable::set_frame_class_range`].
    pub nr_frames: u64,
    /// vCPUs, each with its own base pointer.
    pub nr_vcpus: usize,
    /// Allow the cache-attribute bits (PWT, PCD, PAT) in L1 entries. Off by
    /// default, as Xen has it for domains without devices: an uncached
    /// alias of RAM the host maps write-back risks memory-type conflicts.
    pub allow_cache_attrs: bool,
    /// Bits every present entry at every level must have. On a kvm_pvm host
    /// this is [`crate::entry::PTE_US`]: without it the vCPU livelocks on
    /// page faults, so refusing the entry is the kinder answer.
    pub required_bits: u64,
}

impl Config {
    /// A configuration with the defaults: no cache attributes, no required
    /// bits.
    pub const fn new(nr_frames: u64, nr_vcpus: usize) -> Config {
        Config {
            nr_frames,
            nr_vcpus,
            allow_cache_attrs: false,
            required_bits: 0,
        }
    }
}

/// How an entry (or a pin, or a base pointer) refers to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefKind {
    /// A read-only mapping: a general reference only.
    ReadOnly,
    /// A writable mapping: a general reference and a `Writable` type
    /// reference.
    Writable,
    /// A page table of this level: a general reference and a table type
    /// reference.
    Table(Level),
}

/// The reference a present entry of a table of `level` holds.
#[inline]
pub(crate) fn entry_ref(level: Level, entry: u64) -> (Gfn, RefKind) {
    let kind = match level.lower() {
        Some(lower) => RefKind::Table(lower),
        None if entry & PTE_RW != 0 => RefKind::Writable,
        None => RefKind::ReadOnly,
    };
    (entry_frame(entry), kind)
}

/// Most I/O ranges a domain may have: they are looked up by a linear scan,
/// and a domain has a handful (its device pages and the APICs).
pub const MAX_IO_RANGES: usize = 64;

/// The frame table of one domain. See the crate documentation for the
/// rules it enforces.
///
/// Every operation takes `&mut self`: the hypervisor keeps the table of a
/// domain behind one lock, which serializes the vCPUs' paging hypercalls
/// as Xen's per-page atomics would.
#[derive(Clone, Debug)]
pub struct FrameTable {
    pub(crate) frames: Vec<Frame>,
    pub(crate) bases: Vec<Option<Gfn>>,
    pub(crate) rules: EntryRules,
    pub(crate) config: Config,
    /// Counts the TLB flushes the table knows of: a frame whose type was
    /// dropped in the current epoch may still be reachable through stale
    /// translations.
    pub(crate) flush_epoch: u32,
    pub(crate) stats: Stats,
    /// I/O ranges as `(first, end)` frame numbers, end exclusive: frames
    /// the domain may map from L1 entries (with cache attributes) without
    /// references or types. Inside the table they are `Absent` frames.
    pub(crate) io_ranges: Vec<(u64, u64)>,
}

impl FrameTable {
    /// A frame table of `config.nr_frames` frames, all [`FrameClass::Ram`],
    /// untyped and unreferenced, and no base pointers.
    pub fn new(config: Config) -> Result<FrameTable, Error> {
        let too_large = Error::FrameTableTooLarge {
            nr_frames: config.nr_frames,
        };
        if config.nr_frames > MAX_FRAMES {
            return Err(too_large);
        }
        let n = usize::try_from(config.nr_frames).map_err(|_| too_large)?;
        let mut frames = Vec::new();
        frames.try_reserve_exact(n).map_err(|_| too_large)?;
        frames.resize(n, Frame::default());
        Ok(FrameTable {
            frames,
            bases: vec![None; config.nr_vcpus],
            rules: EntryRules::new(config.allow_cache_attrs, config.required_bits),
            config,
            flush_epoch: 1,
            stats: Stats::default(),
            io_ranges: Vec::new(),
        })
    }

    /// Makes frames `first..first + count` an I/O range of the domain (Xen's
    /// `iomem_caps`): device registers the guest may map from L1 entries,
    /// read-only or writable and with the cache-attribute bits (PWT, PCD,
    /// PAT), but never use as a page table ([`Error::IoFrameAsTable`]).
    /// Mappings of I/O frames take no references and no type: the frames
    /// are not memory the validator protects, so nothing counts them.
    ///
    /// The range may lie beyond the table or over `Absent` frames (the
    ///32-bit MMIO hole when RAM continues above it); a frame of any other
    /// class refuses it with [`Error::IoRangeOverlap`], and all or nothing
    /// is added. Ranges are never removed, and the frames of a range keep
    /// their class ([`FrameTable::set_frame_class`] refuses them), since a
    /// mapping made without a reference could otherwise be dropped as one.
    pub fn add_io_range(&mut self, first: Gfn, count: u64) -> Result<(), Error> {
        let end = first
            .0
            .checked_add(count)
            .filter(|e| *e <= MAX_FRAMES)
            .ok_or(Error::FrameOutOfRange {
                gfn: Gfn(first.0.max(MAX_FRAMES)),
                nr_frames: self.nr_frames(),
            })?;
        if count == 0 {
            return Ok(());
        }
        if self.io_ranges.len() >= MAX_IO_RANGES {
            return Err(Error::TooManyIoRanges { max: MAX_IO_RANGES });
        }
        let in_table = first.0.min(self.nr_frames())..end.min(self.nr_frames());
        for g in in_table {
            let class = self.frames[g as usize].class;
            if class != FrameClass::Absent {
                return Err(Error::IoRangeOverlap { gfn: Gfn(g), class });
            }
        }
        self.io_ranges.push((first.0, end));
        Ok(())
    }

    /// Whether `gfn` is in one of the domain's I/O ranges.
    pub fn is_io_frame(&self, gfn: Gfn) -> bool {
        self.io_ranges
            .iter()
            .any(|(first, end)| (*first..*end).contains(&gfn.0))
    }

    /// The I/O ranges, as first frame and count, in the order added.
    pub fn io_ranges(&self) -> impl Iterator<Item = (Gfn, u64)> + '_ {
        self.io_ranges.iter().map(|(f, e)| (Gfn(*f), e - f))
    }

    /// Whether `gfn` is an I/O frame, looked up only where it can be one:
    /// outside the table or on an `Absent` frame. Keeps the range scan off
    /// the path of every ordinary RAM entry.
    #[inline]
    fn io_frame_here(&self, gfn: Gfn) -> bool {
        let absent_or_outside = usize::try_from(gfn.0)
            .ok()
            .and_then(|i| self.frames.get(i))
            .is_none_or(|f| f.class == FrameClass::Absent);
        absent_or_outside && !self.io_ranges.is_empty() && self.is_io_frame(gfn)
    }

    /// Checks the bits of a present entry of a table of `level`: an L1
    /// entry mapping an I/O frame may also carry the cache attributes.
    #[inline]
    pub(crate) fn check_entry(&self, level: Level, entry: u64) -> Result<(), Error> {
        if level == Level::L1
            && entry & L1_CACHE_ATTRS != 0
            && self.io_frame_here(entry_frame(entry))
        {
            self.rules.check_io_l1(entry)
        } else {
            self.rules.check(level, entry)
        }
    }

    /// The configuration the table was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Frames in the table.
    pub fn nr_frames(&self) -> u64 {
        self.frames.len() as u64
    }

    /// The state of frame `gfn`, `None` outside the table.
    pub fn frame(&self, gfn: Gfn) -> Option<FrameInfo> {
        let i = usize::try_from(gfn.0).ok()?;
        self.frames.get(i).map(Frame::info)
    }

    /// The state of every frame, in frame order.
    pub fn frames(&self) -> impl Iterator<Item = (Gfn, FrameInfo)> + '_ {
        self.frames
            .iter()
            .enumerate()
            .map(|(i, f)| (Gfn(i as u64), f.info()))
    }

    /// The L4 that `vcpu` runs on, if it has one.
    pub fn base_pointer(&self, vcpu: usize) -> Option<Gfn> {
        self.bases.get(vcpu).copied().flatten()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Tells the table that every vCPU's TLB was flushed since the last
    /// call (for instance after the hypervisor carried out a guest's
    /// [`MmuExtOp::TlbFlushAll`]), which spares a flush when a recently
    /// released frame changes type.
    pub fn note_tlbs_flushed(&mut self) {
        self.advance_flush_epoch();
    }

    /// Sets the class of frame `gfn`. Done by the hypervisor when it builds
    /// the domain (the hypercall page, holes) and later (a registered VIF
    /// page, a ballooned-out frame). The change must fit the frame's
    /// current use, else [`Error::FrameInUse`]:
    /// - to `Ram`: always;
    /// - to `Shared`: unless the frame is a page table;
    /// - to `ReadOnly`: only without type references (no writable mapping,
    ///   not a table);
    /// - to `Reserved` or `Absent`: only without any reference. The
    ///   hypervisor flushes the TLBs before it reuses such a frame's memory.
    ///
    /// Frames of an I/O range stay `Absent` ([`Error::IoRangeOverlap`]).
    pub fn set_frame_class(&mut self, gfn: Gfn, class: FrameClass) -> Result<(), Error> {
        let i = self.index(gfn)?;
        self.check_class_change(i, class)?;
        self.frames[i].class = class;
        Ok(())
    }

    /// [`FrameTable::set_frame_class`] for `count` frames from `first`; all
    /// or none are changed.
    pub fn set_frame_class_range(
        &mut self,
        first: Gfn,
        count: u64,
        class: FrameClass,
    ) -> Result<(), Error> {
        let end = first
            .0
            .checked_add(count)
            .filter(|e| *e <= self.nr_frames());
        let Some(end) = end else {
            // The first frame of the range beyond the table.
            return Err(Error::FrameOutOfRange {
                gfn: Gfn(first.0.max(self.nr_frames())),
                nr_frames: self.nr_frames(),
            });
        };
        for g in first.0..end {
            self.check_class_change(g as usize, class)?;
        }
        for g in first.0..end {
            self.frames[g as usize].class = class;
        }
        Ok(())
    }

    fn check_class_change(&self, i: usize, class: FrameClass) -> Result<(), Error> {
        let f = &self.frames[i];
        if class != FrameClass::Absent && self.is_io_frame(Gfn(i as u64)) {
            return Err(Error::IoRangeOverlap {
                gfn: Gfn(i as u64),
                class,
            });
        }
        let fits = match class {
            FrameClass::Ram => true,
            FrameClass::Shared => f.current_type().level().is_none(),
            FrameClass::ReadOnly => f.type_count == 0,
            FrameClass::Reserved | FrameClass::Absent => f.refs == 0,
        };
        if fits {
            Ok(())
        } else {
            Err(Error::FrameInUse {
                gfn: Gfn(i as u64),
                class,
            })
        }
    }

    /// Applies a batch of `mmu_update` requests in order and stops at the
    /// first that fails. A batch longer than [`MAX_BATCH`] is refused whole.
    pub fn mmu_update<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        reqs: &[MmuUpdate],
    ) -> BatchOutcome {
        if let Err(e) = check_batch_len(reqs.len() as u64) {
            return self.fail(0, e, Effects::default());
        }
        for (n, r) in reqs.iter().enumerate() {
            if let Err(e) = self.update_entry(mem, r.ptr, r.val) {
                return self.fail(n, e, Effects::default());
            }
            self.stats.updates_applied += 1;
        }
        BatchOutcome {
            done: reqs.len(),
            error: None,
            effects: Effects::default(),
        }
    }

    /// [`FrameTable::mmu_update`] on `count` requests that the guest laid
    /// out at `list_gpa` (8-byte aligned), read one at a time: nothing is
    /// copied or allocated, whatever `count` the guest passes.
    pub fn mmu_update_in_guest<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        list_gpa: u64,
        count: u64,
    ) -> BatchOutcome {
        if let Err(e) = check_batch_len(count) {
            return self.fail(0, e, Effects::default());
        }
        for n in 0..count {
            let req = guest_record::<M, 2>(mem, list_gpa, n, 16)
                .and_then(|[ptr, val]| self.update_entry(mem, ptr, val));
            if let Err(e) = req {
                return self.fail(n as usize, e, Effects::default());
            }
            self.stats.updates_applied += 1;
        }
        BatchOutcome {
            done: count as usize,
            error: None,
            effects: Effects::default(),
        }
    }

    /// Carries out a batch of `mmuext_op` requests for `vcpu` in order and
    /// stops at the first that fails. The effects of the requests done are
    /// returned also when a later one fails.
    pub fn mmuext_op<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        vcpu: usize,
        ops: &[MmuExtOp],
    ) -> BatchOutcome {
        let mut effects = Effects::default();
        if let Err(e) = check_batch_len(ops.len() as u64).and_then(|()| self.check_vcpu(vcpu)) {
            return self.fail(0, e, effects);
        }
        for (n, op) in ops.iter().enumerate() {
            if let Err(e) = self.ext_op(mem, vcpu, *op, &mut effects) {
                return self.fail(n, e, effects);
            }
            self.stats.ext_ops_done += 1;
        }
        BatchOutcome {
            done: ops.len(),
            error: None,
            effects,
        }
    }

    /// [`FrameTable::mmuext_op`] on `count` guest `struct mmuext_op`s
    /// ([`MMUEXT_OP_SIZE`] bytes each) at `list_gpa` (8-byte aligned), read
    /// one at a time.
    pub fn mmuext_op_in_guest<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        vcpu: usize,
        list_gpa: u64,
        count: u64,
    ) -> BatchOutcome {
        let mut effects = Effects::default();
        if let Err(e) = check_batch_len(count).and_then(|()| self.check_vcpu(vcpu)) {
            return self.fail(0, e, effects);
        }
        for n in 0..count {
            let op = guest_record::<M, 3>(mem, list_gpa, n, MMUEXT_OP_SIZE).and_then(
                |[cmd, arg1, arg2]| {
                    // The command is a u32 followed by padding.
                    MmuExtOp::decode(cmd as u32, arg1, arg2)
                },
            );
            if let Err(e) = op.and_then(|op| self.ext_op(mem, vcpu, op, &mut effects)) {
                return self.fail(n as usize, e, effects);
            }
            self.stats.ext_ops_done += 1;
        }
        BatchOutcome {
            done: count as usize,
            error: None,
            effects,
        }
    }

    /// Drops every base pointer and every pin, as when the domain is
    /// destroyed. Afterwards no frame has a type or a reference.
    pub fn teardown<M: PageTableMemory>(&mut self, mem: &mut M) {
        for v in 0..self.bases.len() {
            if let Some(b) = self.bases[v].take() {
                self.put_ref(mem, b, RefKind::Table(Level::L4));
            }
        }
        for i in 0..self.frames.len() {
            if self.frames[i].pinned {
                self.frames[i].pinned = false;
                let level = self.pinned_level(i);
                self.put_ref(mem, Gfn(i as u64), RefKind::Table(level));
            }
        }
    }

    fn fail(&mut self, done: usize, error: Error, effects: Effects) -> BatchOutcome {
        self.stats.reject(error.reason());
        BatchOutcome {
            done,
            error: Some(error),
            effects,
        }
    }

    /// The level of pinned frame `i`. A pin holds a table type reference,
    /// so the frame is a table; L1 is only a fallback that keeps a broken
    /// invariant from turning into a panic.
    fn pinned_level(&self, i: usize) -> Level {
        let level = self.frames[i].current_type().level();
        debug_assert!(level.is_some(), "pinned frame {i:#x} is not a table");
        level.unwrap_or(Level::L1)
    }

    fn check_vcpu(&self, vcpu: usize) -> Result<(), Error> {
        if vcpu < self.bases.len() {
            Ok(())
        } else {
            Err(Error::InvalidVcpu { vcpu })
        }
    }

    #[inline]
    fn index(&self, gfn: Gfn) -> Result<usize, Error> {
        if gfn.0 < self.frames.len() as u64 {
            Ok(gfn.0 as usize)
        } else {
            Err(Error::FrameOutOfRange {
                gfn,
                nr_frames: self.nr_frames(),
            })
        }
    }

    /// One `mmu_update` request: `*ptr = val` with validation.
    fn update_entry<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        ptr: u64,
        val: u64,
    ) -> Result<(), Error> {
        let cmd = ptr & mmu_cmd::MASK;
        if cmd != mmu_cmd::NORMAL_PT_UPDATE && cmd != mmu_cmd::PT_UPDATE_PRESERVE_AD {
            return Err(Error::UnsupportedCommand { cmd });
        }
        let gpa = ptr & !mmu_cmd::MASK;
        let table = Gfn(gpa >> PAGE_SHIFT);
        let i = self.index(table)?;
        let f = self.frames[i];
        let preserve_ad = cmd == mmu_cmd::PT_UPDATE_PRESERVE_AD;
        let Some(level) = f.current_type().level() else {
            return match f.class {
                FrameClass::Absent => Err(Error::NotOwned { gfn: table }),
                FrameClass::Reserved => Err(Error::ReservedFrame { gfn: table }),
                FrameClass::ReadOnly => Err(Error::ReadOnlyFrame { gfn: table }),
                FrameClass::Ram | FrameClass::Shared => {
                    self.plain_write(mem, i, gpa, val, preserve_ad)
                }
            };
        };
        let mut old = mem.read_u64(gpa).map_err(|_| Error::GuestMemory { gpa })?;
        let with_ad = |old: u64| if preserve_ad { keep_ad(old, val) } else { val };
        let mut new = with_ad(old);

        // The reference the new entry holds is taken before the old one is
        // dropped, so that replacing an entry with one to the same frame
        // never drops the frame's type in between; when both refer to the
        // same frame in the same way nothing changes hands at all.
        let changes_ref =
            !(is_present(old) && is_present(new) && entry_ref(level, old) == entry_ref(level, new));
        if is_present(new) {
            self.check_entry(level, new)?;
            if changes_ref {
                self.get_entry_ref(mem, level, new)?;
            }
        }

        let written = if preserve_ad {
            self.write_preserving_ad(mem, gpa, &mut old, &mut new, with_ad)
        } else {
            mem.write_u64(gpa, new)
                .map_err(|_| Error::GuestMemory { gpa })
        };
        if let Err(e) = written {
            if is_present(new) && changes_ref {
                self.put_entry_ref(mem, level, new);
            }
            return Err(e);
        }
        if is_present(old) && changes_ref {
            self.put_entry_ref(mem, level, old);
        }
        Ok(())
    }

    /// `mmu_update` of a word in frame `i`, which is no page table (Xen's
    /// `PGT_writable_page` case of `do_mmu_update`): the guest could write
    /// it through a writable mapping of its own, so `val` is stored as is,
    /// with no validation and no references. A guest that does not know
    /// whether a frame is a table yet (Linux's `set_pte` on a table being
    /// set up, not pinned) can always use `mmu_update`.
    ///
    /// The frame may have stopped being a page table since the last TLB
    /// flush, and a vCPU may still walk it through a stale translation in
    /// that role: then the TLBs are flushed first, as before a frame takes
    /// the writable type (Xen takes a transient writable type reference,
    /// which flushes for the same reason).
    fn plain_write<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        i: usize,
        gpa: u64,
        val: u64,
        preserve_ad: bool,
    ) -> Result<(), Error> {
        let f = self.frames[i];
        if f.type_count == 0 && f.ty.level().is_some() && f.dropped_at == self.flush_epoch {
            self.flush_before_retype(mem);
        }
        let fault = Error::GuestMemory { gpa };
        if !preserve_ad {
            mem.write_u64(gpa, val).map_err(|_| fault)?;
        } else {
            // The guest may change the word meanwhile (it is its memory),
            // so the exchange retries on any change, a bounded number of
            // times.
            let mut old = mem.read_u64(gpa).map_err(|_| fault)?;
            let mut done = false;
            for _ in 0..PRESERVE_AD_TRIES {
                let new = keep_ad(old, val);
                let seen = mem.compare_exchange_u64(gpa, old, new).map_err(|_| fault)?;
                if seen == old {
                    done = true;
                    break;
                }
                old = seen;
            }
            if !done {
                return Err(fault);
            }
        }
        self.stats.plain_writes += 1;
        Ok(())
    }

    /// Writes `new` over `old` with compare-and-exchange, folding in the
    /// accessed and dirty bits the CPU sets meanwhile.
    fn write_preserving_ad<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        gpa: u64,
        old: &mut u64,
        new: &mut u64,
        with_ad: impl Fn(u64) -> u64,
    ) -> Result<(), Error> {
        let fault = Error::GuestMemory { gpa };
        for _ in 0..PRESERVE_AD_TRIES {
            let seen = mem
                .compare_exchange_u64(gpa, *old, *new)
                .map_err(|_| fault)?;
            if seen == *old {
                return Ok(());
            }
            if (seen ^ *old) & !(PTE_A | PTE_D) != 0 {
                // Only the validator writes tables; anything else is a
                // broken memory, not a race with the CPU.
                return Err(fault);
            }
            *old = seen;
            *new = with_ad(seen);
        }
        Err(fault)
    }

    fn ext_op<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        vcpu: usize,
        op: MmuExtOp,
        effects: &mut Effects,
    ) -> Result<(), Error> {
        match op {
            MmuExtOp::Pin { level, gfn } => {
                let i = self.index(gfn)?;
                if self.frames[i].pinned {
                    return Err(Error::AlreadyPinned { gfn });
                }
                self.get_ref(mem, gfn, RefKind::Table(level))?;
                self.frames[i].pinned = true;
            }
            MmuExtOp::Unpin { gfn } => {
                let i = self.index(gfn)?;
                if !self.frames[i].pinned {
                    return Err(Error::NotPinned { gfn });
                }
                self.frames[i].pinned = false;
                let level = self.pinned_level(i);
                self.put_ref(mem, gfn, RefKind::Table(level));
            }
            MmuExtOp::NewBaseptr { gfn } => {
                self.get_ref(mem, gfn, RefKind::Table(Level::L4))?;
                if let Some(old) = self.bases[vcpu].replace(gfn) {
                    self.put_ref(mem, old, RefKind::Table(Level::L4));
                }
                effects.new_base = Some(gfn);
            }
            MmuExtOp::TlbFlushLocal => effects.flush_local = effects.flush_local.merge(Flush::Full),
            MmuExtOp::InvlpgLocal { va } => {
                effects.flush_local = effects.flush_local.merge(Flush::Page(va))
            }
            MmuExtOp::TlbFlushAll => effects.flush_all = effects.flush_all.merge(Flush::Full),
            MmuExtOp::InvlpgAll { va } => {
                effects.flush_all = effects.flush_all.merge(Flush::Page(va))
            }
        }
        Ok(())
    }

    /// Takes the reference a present entry of a table of `level` holds.
    #[inline]
    fn get_entry_ref<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        level: Level,
        entry: u64,
    ) -> Result<(), Error> {
        let (gfn, kind) = entry_ref(level, entry);
        self.get_ref(mem, gfn, kind).map_err(|e| match e {
            // An Lk entry pointing to an Lk table: name the real problem.
            Error::TypeConflict {
                gfn: g, current, ..
            } if g == gfn && level.lower().is_some() && current == PageType::table(level) => {
                Error::LinearPageTable { gfn, level }
            }
            e => e,
        })
    }

    /// Drops the reference a present entry of a table of `level` holds.
    #[inline]
    fn put_entry_ref<M: PageTableMemory>(&mut self, mem: &mut M, level: Level, entry: u64) {
        let (gfn, kind) = entry_ref(level, entry);
        self.put_ref(mem, gfn, kind);
    }

    /// Takes a general reference on `gfn` and, unless `kind` is read-only,
    /// a type reference; the first type reference of a table validates it.
    fn get_ref<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        gfn: Gfn,
        kind: RefKind,
    ) -> Result<(), Error> {
        if self.io_frame_here(gfn) {
            // Device registers: mapped without references, never a table.
            return match kind {
                RefKind::Table(level) => Err(Error::IoFrameAsTable { gfn, level }),
                RefKind::ReadOnly | RefKind::Writable => Ok(()),
            };
        }
        let i = self.index(gfn)?;
        let f = self.frames[i];
        match (f.class, kind) {
            (FrameClass::Absent, _) => return Err(Error::NotOwned { gfn }),
            (FrameClass::Reserved, _) => return Err(Error::ReservedFrame { gfn }),
            (FrameClass::ReadOnly, RefKind::Writable) => return Err(Error::ReadOnlyFrame { gfn }),
            (class @ (FrameClass::ReadOnly | FrameClass::Shared), RefKind::Table(_)) => {
                return Err(Error::NotTableCapable { gfn, class })
            }
            _ => {}
        }
        match kind {
            RefKind::ReadOnly => {}
            RefKind::Writable => self.get_type(mem, i, PageType::Writable)?,
            RefKind::Table(level) => self.get_type(mem, i, PageType::table(level))?,
        }
        // Checked after the type reference, since validating a table can
        // itself take general references on it (a read-only mapping of
        // itself).
        match self.frames[i].refs.checked_add(1) {
            Some(refs) => self.frames[i].refs = refs,
            None => {
                if kind != RefKind::ReadOnly {
                    self.put_type(mem, i);
                }
                return Err(Error::RefOverflow { gfn });
            }
        }
        Ok(())
    }

    fn put_ref<M: PageTableMemory>(&mut self, mem: &mut M, gfn: Gfn, kind: RefKind) {
        if self.io_frame_here(gfn) {
            // Took none (see `get_ref`).
            return;
        }
        let Some(i) = usize::try_from(gfn.0)
            .ok()
            .filter(|i| *i < self.frames.len())
        else {
            debug_assert!(false, "reference to frame {gfn} outside the table");
            return;
        };
        if kind != RefKind::ReadOnly {
            self.put_type(mem, i);
        }
        let f = &mut self.frames[i];
        debug_assert!(f.refs > 0, "frame {gfn} has no reference to drop");
        f.refs = f.refs.saturating_sub(1);
    }

    /// Takes a type reference of type `ty` on frame `i`.
    fn get_type<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        i: usize,
        ty: PageType,
    ) -> Result<(), Error> {
        let before = self.frames[i];
        let gfn = Gfn(i as u64);
        if before.type_count > 0 {
            if before.ty != ty {
                return Err(Error::TypeConflict {
                    gfn,
                    current: before.ty,
                    wanted: ty,
                });
            }
            self.frames[i].type_count = before
                .type_count
                .checked_add(1)
                .ok_or(Error::RefOverflow { gfn })?;
            return Ok(());
        }

        // The frame changes use. A vCPU may still translate through it in
        // its last role if that role ended after the last flush; flush
        // before the contents are read, so that what is validated is what
        // stays.
        if before.ty != ty && before.ty != PageType::None && before.dropped_at == self.flush_epoch {
            self.flush_before_retype(mem);
        }

        // The type is set before the entries are validated: an entry that
        // refers back to this frame (writable, or as a table of another
        // level) then meets the type conflict it is.
        let f = &mut self.frames[i];
        f.ty = ty;
        f.type_count = 1;
        if let Some(level) = ty.level() {
            if let Err(e) = self.validate_table(mem, gfn, level) {
                // Nothing could reach the frame as a table: it was not
                // linked anywhere yet, so its earlier state stands.
                let f = &mut self.frames[i];
                f.ty = before.ty;
                f.type_count = 0;
                f.dropped_at = before.dropped_at;
                return Err(e);
            }
            self.stats.tables_validated += 1;
        }
        Ok(())
    }

    /// Drops a type reference on frame `i`; the last one of a table
    /// releases the references its entries hold.
    fn put_type<M: PageTableMemory>(&mut self, mem: &mut M, i: usize) {
        let epoch = self.flush_epoch;
        let f = &mut self.frames[i];
        debug_assert!(
            f.type_count > 0,
            "frame {i:#x} has no type reference to drop"
        );
        if f.type_count == 0 {
            return;
        }
        f.type_count -= 1;
        if f.type_count > 0 {
            return;
        }
        f.dropped_at = epoch;
        debug_assert!(
            !f.pinned,
            "pinned frame {i:#x} lost its last type reference"
        );
        if let Some(level) = f.ty.level() {
            self.release_entries(mem, Gfn(i as u64), level, ENTRIES_PER_TABLE);
            self.stats.tables_released += 1;
        }
    }

    /// Validates every entry of `table` as an entry of `level`, taking the
    /// references they hold. On failure the references taken are released.
    fn validate_table<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        table: Gfn,
        level: Level,
    ) -> Result<(), Error> {
        for idx in 0..ENTRIES_PER_TABLE {
            let gpa = entry_gpa(table, idx);
            let checked = match mem.read_u64(gpa) {
                Ok(e) if !is_present(e) => Ok(()),
                Ok(e) => self
                    .check_entry(level, e)
                    .and_then(|()| self.get_entry_ref(mem, level, e)),
                Err(_) => Err(Error::GuestMemory { gpa }),
            };
            if let Err(e) = checked {
                self.release_entries(mem, table, level, idx);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Releases the references held by entries `0..end` of `table`.
    ///
    /// The entries are read again: a table's frame cannot be written by the
    /// guest while it is typed, so they hold what was validated.
    fn release_entries<M: PageTableMemory>(
        &mut self,
        mem: &mut M,
        table: Gfn,
        level: Level,
        end: usize,
    ) {
        for idx in 0..end {
            match mem.read_u64(entry_gpa(table, idx)) {
                Ok(e) if is_present(e) => self.put_entry_ref(mem, level, e),
                Ok(_) => {}
                Err(_) => self.stats.leaked_entries += 1,
            }
        }
    }

    /// A frame that lost its last role since the last flush takes another:
    /// every vCPU flushes first, so that no stale translation reaches it in
    /// the old role.
    fn flush_before_retype<M: PageTableMemory>(&mut self, mem: &mut M) {
        mem.flush_tlbs();
        self.stats.retype_flushes += 1;
        self.advance_flush_epoch();
    }

    fn advance_flush_epoch(&mut self) {
        self.flush_epoch = self.flush_epoch.wrapping_add(1);
        if self.flush_epoch == 0 {
            // After four billion flushes: every frame is covered by the
            // flush just done, so forget when types were dropped.
            for f in &mut self.frames {
                f.dropped_at = 0;
            }
            self.flush_epoch = 1;
        }
    }
}

/// `val` with the accessed and dirty bits of `old` when both are present
/// (the `PT_UPDATE_PRESERVE_AD` command).
#[inline]
fn keep_ad(old: u64, val: u64) -> u64 {
    if is_present(old) && is_present(val) {
        val | (old & (PTE_A | PTE_D))
    } else {
        val
    }
}

fn check_batch_len(len: u64) -> Result<(), Error> {
    if len > MAX_BATCH as u64 {
        Err(Error::BatchTooLarge {
            len,
            max: MAX_BATCH,
        })
    } else {
        Ok(())
    }
}

/// Reads record `n` of `N` words from a guest list of `size`-byte records.
fn guest_record<M: PageTableMemory, const N: usize>(
    mem: &M,
    list_gpa: u64,
    n: u64,
    size: u64,
) -> Result<[u64; N], Error> {
    let base = n
        .checked_mul(size)
        .and_then(|off| list_gpa.checked_add(off))
        .filter(|gpa| gpa % 8 == 0)
        .ok_or(Error::GuestMemory { gpa: list_gpa })?;
    let mut words = [0; N];
    for (k, w) in words.iter_mut().enumerate() {
        let gpa = base
            .checked_add(8 * k as u64)
            .ok_or(Error::GuestMemory { gpa: base })?;
        *w = mem.read_u64(gpa).map_err(|_| Error::GuestMemory { gpa })?;
    }
    Ok(words)
}

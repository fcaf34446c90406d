//! Direct paging for paravirtualized guests, as pure logic.
//!
//! A PV guest builds its own x86-64 page tables in its own memory, and the
//! CPU walks them as they are. The guest may therefore never write a page
//! table directly: it asks the hypervisor to, with the `mmu_update` and
//! `mmuext_op` hypercalls, and the hypervisor checks every entry first.
//! This crate is that check, modelled on Xen's x86 PV MMU
//! (`xen/arch/x86/mm.c`): a per-domain [`FrameTable`] with a type and two
//! reference counts per frame, and the rules below. It does no I/O: guest
//! memory and TLB flushes come through the [`PageTableMemory`] trait, so it
//! is tested, property-tested against a reference model and fuzzed without
//! KVM.
//!
//! # Frames
//!
//! Frames are guest frame numbers ([`Gfn`]): the guest never learns host
//! addresses, and the hypervisor's second-level translation (EPT, or
//! kvm_pvm's shadow tables) maps them. The frame table covers the domain's
//! guest-physical RAM range, frames `0..nr_frames`; any other frame number
//! is refused ([`Error::FrameOutOfRange`]). Each frame has a class
//! ([`FrameClass`]) set by the hypervisor:
//!
//! | class | mapped read-only | mapped writable | page table | used for |
//! |---|---|---|---|---|
//! | `Ram` | yes | yes | yes | ordinary memory |
//! | `Shared` | yes | yes | no | pages the hypervisor or KVM writes on its own: kvm_pvm VIF pages, shared-info and ring pages |
//! | `ReadOnly` | yes | no | no | the hypercall page (the guest executes it but may not rewrite what the hypervisor put there) |
//! | `Reserved` | no | no | no | frames the hypervisor keeps for itself inside the RAM range |
//! | `Absent` | no | no | no | holes (the 32-bit MMIO hole), unpopulated or ballooned-out frames: "not owned by this domain" |
//!
//! A frame whose contents change behind the validator's back can never be a
//! page table, which is why `Shared` and `ReadOnly` frames cannot. A class
//! change must fit the frame's current use (see
//! [`FrameTable::set_frame_class`]).
//!
//! **I/O ranges** ([`FrameTable::add_io_range`], Xen's `iomem_caps`): device
//! registers the domain may map (virtio-mmio slots, the APICs). They lie
//! beyond the table or over `Absent` frames, and only L1 entries may map
//! them, read-only or writable, with the cache attributes (PWT, PCD, PAT)
//! allowed whatever [`Config::allow_cache_attrs`] says. They take no
//! references and no type: they are not memory the validator protects. An
//! L2, L3 or L4 entry, a pin or a base pointer naming one is refused with
//! [`Error::IoFrameAsTable`].
//!
//! # Types and reference counts
//!
//! Each frame has a general reference count, a type ([`PageType`]: none,
//! `Writable`, L1, L2, L3, L4) and a type count. References:
//!
//! | holder | general | type |
//! |---|---|---|
//! | present L1 entry, RW clear | 1 | none |
//! | present L1 entry, RW set | 1 | `Writable` |
//! | present L2/L3/L4 entry | 1 | L1/L2/L3 |
//! | pin of an Lk table | 1 | Lk |
//! | a vCPU's base pointer (CR3) | 1 | L4 |
//!
//! A frame has one type while its type count is above zero, and takes
//! another only once the count is back at zero. That single rule gives
//! the safety property: a page table is never mapped writable (it would
//! need the `Writable` type), and a frame mapped writable is never a page
//! table. Read-only mappings take no type, so the guest may read its page
//! tables, as Linux does. A frame's first type reference as a table
//! validates all 512 entries, taking the references they hold (and so
//! validating lower tables recursively); dropping the last releases them,
//! recursively. Tables link strictly level to level (an L4 entry needs an
//! L3 table and so on), so type references never form a cycle and every
//! count returns to zero when pins and base pointers go
//! ([`FrameTable::teardown`]).
//!
//! # Entry rules
//!
//! Entries that are not present (bit 0 clear) are not looked at: the CPU
//! ignores the other bits and guests keep swap entries there. A present
//! entry must satisfy, at its level:
//!
//! | bit(s) | L1 | L2, L3 | L4 | why |
//! |---|---|---|---|---|
//! | P, RW, US, A, D, 9–11 (available), NX | yes | yes | yes | ordinary use; D is ignored by the CPU above L1 |
//! | PWT, PCD | only with [`Config::allow_cache_attrs`] | no | no | an uncached alias of RAM the host maps write-back risks memory-type conflicts (Xen allows them only to domains with devices) |
//! | 7: PAT / PS | PAT: as PWT | PS: refused as [`Error::Superpage`] | reserved: no | see superpages below |
//! | G | yes | no | no | meaningless in non-leaf entries |
//! | 52–58 | yes | no | no | software-available, ignored by the MMU; Linux keeps its saved dirty bit (58) in read-only leaf entries |
//! | 59–62 | no | no | no | protection keys: they would take effect once the guest sets CR4.PKE |
//! | 12–51 (frame) | a frame of the table | same | same | only the domain's own frames |
//!
//! [`Config::required_bits`] can demand bits in every present entry: on a
//! kvm_pvm host the guest must set US at every level or its vCPU livelocks
//! on page faults, and a refused update is easier to debug than a hang.
//!
//! The frame an entry refers to must suit the reference: `Absent` frames
//! are refused with [`Error::NotOwned`], `Reserved` ones with
//! [`Error::ReservedFrame`], a writable mapping of a `ReadOnly` frame with
//! [`Error::ReadOnlyFrame`], a table reference to a `Shared` or `ReadOnly`
//! frame with [`Error::NotTableCapable`], and a type the frame does not
//! have with [`Error::TypeConflict`].
//!
//! **Superpages** (PS in an L2 or L3 entry, 2 MiB and 1 GiB mappings) are
//! refused with [`Error::Superpage`], as Xen does for PV guests by default.
//! A writable superpage maps 512 (or 262144) frames, each of which would
//! need a `Writable` type reference so that none of them can become a page
//! table: one entry update would cost that many reference updates. Xen's
//! optional PV superpages instead typed whole 2 MiB ranges, with rules for
//! splitting them and a history of bugs (XSA-167 among them). Guests map
//! with 4 KiB pages, as Linux PV guests on Xen do. Should superpages ever
//! be worth it, the way in is a per-range type that excludes page tables
//! from the range, not a per-frame loop.
//!
//! **Linear (recursive) page tables**, an Lk entry pointing to an Lk table
//! (itself or another), are refused with [`Error::LinearPageTable`]. Xen
//! allows a restricted form for old guests; we have none, and the type
//! rules already forbid them (the frame would need two types). A
//! self-referencing table also could never have its type count reach zero
//! once unlinked, so refusing them keeps the counts honest.
//!
//! # Operations
//!
//! - [`FrameTable::mmu_update`] (or [`FrameTable::mmu_update_in_guest`],
//!   which reads the guest's list in place): each request writes the entry
//!   at guest-physical address `ptr & !7` with `val`. The low bits of `ptr`
//!   are the command: 0 is a normal update, 2 also keeps the accessed and
//!   dirty bits the old entry has (when both are present), 1 (Xen's M2P
//!   update) and the others are refused with -ENOSYS. When the entry's
//!   frame is a validated page table the new value must be valid for its
//!   level; the reference the new entry needs is taken before the old one
//!   is dropped, so rewriting an entry with the same frame never fails or
//!   releases anything in between. When it is no table but `Ram` or
//!   `Shared`, the request is a plain 64-bit store of `val` (Xen's
//!   `PGT_writable_page` case): the guest could write the word itself, so
//!   nothing is validated and no reference taken ([`Stats::plain_writes`]);
//!   a guest need not know whether a frame is a table yet. `Absent`,
//!   `Reserved` and `ReadOnly` frames are refused as for mappings.
//! - [`FrameTable::mmuext_op`] (and [`FrameTable::mmuext_op_in_guest`]):
//!   pin an Lk table (validates it and holds a type reference; pinning a
//!   pinned frame fails), unpin (fails if not pinned), new base pointer
//!   (the vCPU's new L4, validated if it is not already; the old one is
//!   released after), and TLB flushes, which change nothing here but come
//!   back as [`Effects`] for the hypervisor to carry out.
//!
//! Batches run in order and stop at the first failing request;
//! [`BatchOutcome::done`] says how many were done, as Xen's
//! `success_count`. A request either happens whole or not at all. A batch
//! of more than [`MAX_BATCH`] requests is refused whole with -E2BIG, so a
//! hostile count costs nothing; the in-guest variants read requests one at
//! a time and allocate nothing.
//!
//! # TLB coherence
//!
//! When a writable mapping or a table link goes away, vCPUs may keep the
//! old translation until they flush. Were the frame to become a page table
//! (or, for an old table, writable or a table of another level) in that
//! window, the guest could write a validated table through the stale
//! translation. Like Xen's TLB-flush filter, the frame table remembers in
//! which flush epoch each frame's type was dropped and calls
//! [`PageTableMemory::flush_tlbs`] before such a frame takes a different
//! type, unless a flush happened since. The hypervisor reports flushes it
//! did on its own with [`FrameTable::note_tlbs_flushed`].
//!
//! # Using it from the hypervisor
//!
//! ```text
//! // Domain build: one table per domain, behind the domain's lock.
//! let mut ft = FrameTable::new(Config { required_bits: PTE_US, ..Config::new(ram_frames, vcpus) })?;
//! ft.set_frame_class_range(hole_start, hole_frames, FrameClass::Absent)?;
//! ft.set_frame_class(hypercall_page, FrameClass::ReadOnly)?;
//! // The builder writes the initial tables into guest memory, then:
//! ft.mmuext_op(&mut mem, 0, &[MmuExtOp::Pin { level: Level::L4, gfn: pml4 },
//!                            MmuExtOp::NewBaseptr { gfn: pml4 }]).result()?;
//! // Hypercalls:
//! let out = ft.mmu_update_in_guest(&mut mem, req_gpa, count);
//! write_guest(done_gpa, out.done); return out.errno();
//! let out = ft.mmuext_op_in_guest(&mut mem, vcpu, ops_gpa, count);
//! apply(out.effects); // flushes, CR3 load
//! ```
//!
//! Every operation takes `&mut self`: the table of a domain sits behind
//! one lock. A request validating a new tree does work in proportion to the
//! tables it newly validates (Xen makes that preemptible; here it is
//! bounded by the domain's own size and only delays the domain itself).
//! Nested validation recurses at most four levels and allocates nothing.

// Pure logic: nothing here needs unsafe code, and nothing may.
#![forbid(unsafe_code)]

mod entry;
mod error;
mod frame;
mod invariants;
mod memory;
mod ops;
mod stats;
mod table;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use entry::{
    entry_frame, entry_gpa, is_present, Level, ENTRIES_PER_TABLE, L1_CACHE_ATTRS, PAGE_SHIFT,
    PAGE_SIZE, PTE_A, PTE_ADDR, PTE_AVAIL, PTE_D, PTE_G, PTE_HIGH, PTE_NX, PTE_P, PTE_PAT_PS,
    PTE_PCD, PTE_PKEY, PTE_PWT, PTE_RW, PTE_SOFT_HIGH, PTE_US,
};
pub use error::{errno, Error, Reason};
pub use frame::{FrameClass, FrameInfo, Gfn, PageType};
pub use invariants::{AddressSpaceCheck, InvariantViolation};
pub use memory::{MemoryFault, PageTableMemory};
pub use ops::{
    ext_cmd, mmu_cmd, BatchOutcome, Effects, Flush, MmuExtOp, MmuUpdate, MAX_BATCH, MMUEXT_OP_SIZE,
};
pub use stats::Stats;
pub use table::{Config, FrameTable, MAX_FRAMES, MAX_IO_RANGES};

#[cfg(test)]
mod tests;

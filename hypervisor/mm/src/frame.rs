//! What the frame table knows about one frame.

use crate::entry::Level;

/// A guest frame number: a guest-physical address shifted right by 12. The
/// guest never sees host or machine addresses, so this is the only kind of
/// frame number in the interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gfn(pub u64);

impl std::fmt::Display for Gfn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// What the domain may do with a frame, set by the hypervisor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameClass {
    /// Ordinary RAM of the domain: may be mapped and may become a page
    /// table.
    #[default]
    Ram,
    /// RAM the hypervisor (or KVM) reads and writes on its own, such as a
    /// kvm_pvm VIF page or a shared-info or ring page: the guest may map it
    /// read-only or writable, but it may never become a page table, since
    /// a validated table must only change through `mmu_update`.
    Shared,
    /// Contents provided by the hypervisor, such as the hypercall page: the
    /// guest may map it read-only (and execute it) but never writable, and
    /// it may not become a page table.
    ReadOnly,
    /// Kept by the hypervisor for itself inside the domain's RAM range: the
    /// guest may not map it at all.
    Reserved,
    /// Not populated, or given back (ballooned out): not owned by the
    /// domain, so it may not be mapped. Frames in holes of the guest-physical
    /// map (the 32-bit MMIO hole) are of this class.
    Absent,
}

impl FrameClass {
    /// Every class.
    pub const ALL: [FrameClass; 5] = [
        FrameClass::Ram,
        FrameClass::Shared,
        FrameClass::ReadOnly,
        FrameClass::Reserved,
        FrameClass::Absent,
    ];

    /// A lower-case name for messages.
    pub const fn name(self) -> &'static str {
        match self {
            FrameClass::Ram => "RAM",
            FrameClass::Shared => "shared",
            FrameClass::ReadOnly => "read-only",
            FrameClass::Reserved => "reserved",
            FrameClass::Absent => "absent",
        }
    }
}

impl std::fmt::Display for FrameClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The use a frame is put to. While a frame's type count is above zero it
/// has exactly one type; it can change type only once the count is zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageType {
    /// No type-counted use (the frame may still be mapped read-only).
    #[default]
    None,
    /// Mapped writable by at least one L1 entry.
    Writable,
    /// A validated L1 page table.
    L1,
    /// A validated L2 page table.
    L2,
    /// A validated L3 page table.
    L3,
    /// A validated L4 page table.
    L4,
}

impl PageType {
    /// The page-table type of a level.
    pub const fn table(level: Level) -> PageType {
        match level {
            Level::L1 => PageType::L1,
            Level::L2 => PageType::L2,
            Level::L3 => PageType::L3,
            Level::L4 => PageType::L4,
        }
    }

    /// The level if this is a page-table type.
    pub const fn level(self) -> Option<Level> {
        match self {
            PageType::L1 => Some(Level::L1),
            PageType::L2 => Some(Level::L2),
            PageType::L3 => Some(Level::L3),
            PageType::L4 => Some(Level::L4),
            PageType::None | PageType::Writable => None,
        }
    }
}

impl std::fmt::Display for PageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PageType::None => "an untyped page",
            PageType::Writable => "a writable page",
            PageType::L1 => "an L1 page table",
            PageType::L2 => "an L2 page table",
            PageType::L3 => "an L3 page table",
            PageType::L4 => "an L4 page table",
        })
    }
}

/// A snapshot of one frame's state, for the hypervisor and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameInfo {
    /// What the domain may do with the frame.
    pub class: FrameClass,
    /// Current type; [`PageType::None`] whenever `type_count` is zero.
    pub page_type: PageType,
    /// References that need the type: entries of validated tables (an L1
    /// entry mapping the frame writable, an Lk entry pointing to it as an
    /// L(k-1) table), pins and base pointers.
    pub type_count: u32,
    /// Every reference: the typed ones plus read-only mappings. Never below
    /// `type_count`.
    pub ref_count: u32,
    /// Pinned as a page table.
    pub pinned: bool,
}

/// The frame table's record of one frame, 16 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Frame {
    /// General reference count.
    pub(crate) refs: u32,
    /// Type reference count.
    pub(crate) type_count: u32,
    /// The flush epoch in which the type count last fell to zero.
    pub(crate) dropped_at: u32,
    /// The current type while `type_count > 0`; afterwards the last type the
    /// frame had, which decides whether a TLB flush is due before the frame
    /// takes another type.
    pub(crate) ty: PageType,
    /// Pinned.
    pub(crate) pinned: bool,
    /// Class.
    pub(crate) class: FrameClass,
}

const _: () = assert!(std::mem::size_of::<Frame>() == 16);

impl Frame {
    /// The type if the type count is above zero.
    #[inline]
    pub(crate) fn current_type(&self) -> PageType {
        if self.type_count > 0 {
            self.ty
        } else {
            PageType::None
        }
    }

    pub(crate) fn info(&self) -> FrameInfo {
        FrameInfo {
            class: self.class,
            page_type: self.current_type(),
            type_count: self.type_count,
            ref_count: self.refs,
            pinned: self.pinned,
        }
    }
}

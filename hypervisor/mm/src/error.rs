//! The errors of the paging operations, their Xen-style errno values and the
//! stable names under which rejections are counted.

use crate::entry::Level;
use crate::frame::{FrameClass, Gfn, PageType};

/// Errno values returned to the guest, negated. They are the values Xen
/// uses on x86, which are Linux's.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// Argument list too long (a batch over [`crate::MAX_BATCH`]).
    pub const E2BIG: i32 = 7;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Bad address.
    pub const EFAULT: i32 = 14;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Function not implemented.
    pub const ENOSYS: i32 = 38;
    /// Value too large for defined data type.
    pub const EOVERFLOW: i32 = 75;
}

/// Why a paging request was refused.
///
/// Every variant is one rejection reason ([`Reason`]); the message reads as
/// a sentence so that it can be logged as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A frame number beyond the end of the domain's frame table.
    #[error("frame {gfn} is outside the domain's {nr_frames} frames")]
    FrameOutOfRange {
        /// The frame.
        gfn: Gfn,
        /// Size of the frame table.
        nr_frames: u64,
    },
    /// The frame is not populated, or was given back (ballooned out).
    #[error("frame {gfn} is not owned by this domain")]
    NotOwned {
        /// The frame.
        gfn: Gfn,
    },
    /// The hypervisor keeps this frame for itself; the guest may not map it.
    #[error("frame {gfn} is reserved by the hypervisor and cannot be mapped")]
    ReservedFrame {
        /// The frame.
        gfn: Gfn,
    },
    /// A writable mapping of a frame the guest may only read.
    #[error("frame {gfn} may only be mapped read-only")]
    ReadOnlyFrame {
        /// The frame.
        gfn: Gfn,
    },
    /// A frame the hypervisor writes on its own cannot hold a page table.
    #[error("frame {gfn} is a {class} frame and cannot be used as a page table")]
    NotTableCapable {
        /// The frame.
        gfn: Gfn,
        /// Its class.
        class: FrameClass,
    },
    /// A present entry sets flag or reserved bits not allowed at its level.
    #[error("{level} entry {entry:#x} sets bits {bits:#x} that are not allowed at that level")]
    DisallowedBits {
        /// Level of the table holding the entry.
        level: Level,
        /// The entry.
        entry: u64,
        /// The offending bits.
        bits: u64,
    },
    /// A present entry lacks bits the domain's configuration requires.
    #[error("{level} entry {entry:#x} lacks the required bits {bits:#x}")]
    MissingRequiredBits {
        /// Level of the table holding the entry.
        level: Level,
        /// The entry.
        entry: u64,
        /// The missing bits.
        bits: u64,
    },
    /// A 2 MiB or 1 GiB mapping (PS set in an L2 or L3 entry).
    #[error("{level} entry {entry:#x} maps a superpage, which paravirtualized guests may not use")]
    Superpage {
        /// Level of the table holding the entry.
        level: Level,
        /// The entry.
        entry: u64,
    },
    /// The frame already has another type.
    #[error("frame {gfn} is in use as {current} and cannot be used as {wanted}")]
    TypeConflict {
        /// The frame.
        gfn: Gfn,
        /// Its current type.
        current: PageType,
        /// The type that was asked for.
        wanted: PageType,
    },
    /// An entry of an Lk table refers to an Lk table (itself or another).
    #[error("frame {gfn} is an {level} page table and cannot be referenced from an {level} entry (linear page tables are not supported)")]
    LinearPageTable {
        /// The referenced frame.
        gfn: Gfn,
        /// Its level, which is also the level of the referring table.
        level: Level,
    },
    /// A frame that is not a validated page table where one is needed.
    /// `mmu_update` no longer produces it (a word of a frame that is no
    /// table is a plain write); kept so that reason names stay stable.
    #[error("frame {gfn} is not a validated page table")]
    NotPageTable {
        /// The frame.
        gfn: Gfn,
    },
    /// Pinning a frame that is pinned already.
    #[error("frame {gfn} is already pinned")]
    AlreadyPinned {
        /// The frame.
        gfn: Gfn,
    },
    /// Unpinning a frame that is not pinned.
    #[error("frame {gfn} is not pinned")]
    NotPinned {
        /// The frame.
        gfn: Gfn,
    },
    /// An `mmu_update` command (low bits of `ptr`) we do not implement.
    #[error("mmu_update command {cmd} is not supported")]
    UnsupportedCommand {
        /// The command.
        cmd: u64,
    },
    /// An `mmuext_op` command we do not implement.
    #[error("mmuext_op command {cmd} is not supported")]
    UnsupportedExtOp {
        /// The command.
        cmd: u32,
    },
    /// A virtual address that is not canonical (INVLPG operand).
    #[error("virtual address {va:#x} is not canonical")]
    NonCanonical {
        /// The address.
        va: u64,
    },
    /// A batch longer than [`crate::MAX_BATCH`].
    #[error("a batch of {len} requests exceeds the limit of {max}")]
    BatchTooLarge {
        /// Length asked for.
        len: u64,
        /// [`crate::MAX_BATCH`].
        max: usize,
    },
    /// Guest memory could not be read or written.
    #[error("guest-physical address {gpa:#x} could not be accessed")]
    GuestMemory {
        /// The address.
        gpa: u64,
    },
    /// A reference count would overflow.
    #[error("frame {gfn} has too many references")]
    RefOverflow {
        /// The frame.
        gfn: Gfn,
    },
    /// The frame is referenced, so its class cannot change.
    #[error("frame {gfn} is still in use and cannot become a {class} frame")]
    FrameInUse {
        /// The frame.
        gfn: Gfn,
        /// The class asked for.
        class: FrameClass,
    },
    /// A vCPU index beyond the domain's vCPUs.
    #[error("vCPU {vcpu} does not exist in this domain")]
    InvalidVcpu {
        /// The index.
        vcpu: usize,
    },
    /// An I/O frame (device registers) referenced as a page table: from an
    /// L2, L3 or L4 entry, a pin or a base pointer.
    #[error("frame {gfn} is in an I/O range and cannot be used as an {level} page table")]
    IoFrameAsTable {
        /// The frame.
        gfn: Gfn,
        /// The table level asked for.
        level: Level,
    },
    /// An I/O range over a frame that is not `Absent`, or a class change of
    /// a frame in an I/O range (the hypervisor's mistake, not the guest's).
    #[error("frame {gfn} is in an I/O range, which cannot overlap a {class} frame")]
    IoRangeOverlap {
        /// The frame.
        gfn: Gfn,
        /// The class the frame has or was to get.
        class: FrameClass,
    },
    /// More I/O ranges than [`crate::MAX_IO_RANGES`].
    #[error("a domain has at most {max} I/O ranges")]
    TooManyIoRanges {
        /// [`crate::MAX_IO_RANGES`].
        max: usize,
    },
    /// The frame table could not be allocated.
    #[error("a frame table of {nr_frames} frames cannot be allocated")]
    FrameTableTooLarge {
        /// Frames asked for.
        nr_frames: u64,
    },
}

impl Error {
    /// The negative errno the guest gets, as Xen would return it.
    pub fn errno(&self) -> i32 {
        use errno::*;
        -match self {
            Error::FrameOutOfRange { .. }
            | Error::DisallowedBits { .. }
            | Error::MissingRequiredBits { .. }
            | Error::Superpage { .. }
            | Error::LinearPageTable { .. }
            | Error::NotPageTable { .. }
            | Error::AlreadyPinned { .. }
            | Error::NotPinned { .. }
            | Error::NonCanonical { .. }
            | Error::InvalidVcpu { .. }
            | Error::IoRangeOverlap { .. }
            | Error::TooManyIoRanges { .. } => EINVAL,
            Error::NotOwned { .. }
            | Error::ReservedFrame { .. }
            | Error::ReadOnlyFrame { .. }
            | Error::NotTableCapable { .. }
            | Error::IoFrameAsTable { .. } => EPERM,
            Error::TypeConflict { .. } | Error::FrameInUse { .. } => EBUSY,
            Error::UnsupportedCommand { .. } | Error::UnsupportedExtOp { .. } => ENOSYS,
            Error::BatchTooLarge { .. } => E2BIG,
            Error::GuestMemory { .. } => EFAULT,
            Error::RefOverflow { .. } => EOVERFLOW,
            Error::FrameTableTooLarge { .. } => ENOMEM,
        }
    }

    /// The rejection reason this error is counted under.
    pub fn reason(&self) -> Reason {
        match self {
            Error::FrameOutOfRange { .. } => Reason::FrameOutOfRange,
            Error::NotOwned { .. } => Reason::NotOwned,
            Error::ReservedFrame { .. } => Reason::ReservedFrame,
            Error::ReadOnlyFrame { .. } => Reason::ReadOnlyFrame,
            Error::NotTableCapable { .. } => Reason::NotTableCapable,
            Error::DisallowedBits { .. } => Reason::DisallowedBits,
            Error::MissingRequiredBits { .. } => Reason::MissingRequiredBits,
            Error::Superpage { .. } => Reason::Superpage,
            Error::TypeConflict { .. } => Reason::TypeConflict,
            Error::LinearPageTable { .. } => Reason::LinearPageTable,
            Error::NotPageTable { .. } => Reason::NotPageTable,
            Error::AlreadyPinned { .. } => Reason::AlreadyPinned,
            Error::NotPinned { .. } => Reason::NotPinned,
            Error::UnsupportedCommand { .. } => Reason::UnsupportedCommand,
            Error::UnsupportedExtOp { .. } => Reason::UnsupportedExtOp,
            Error::NonCanonical { .. } => Reason::NonCanonical,
            Error::BatchTooLarge { .. } => Reason::BatchTooLarge,
            Error::GuestMemory { .. } => Reason::GuestMemory,
            Error::RefOverflow { .. } => Reason::RefOverflow,
            Error::FrameInUse { .. } => Reason::FrameInUse,
            Error::InvalidVcpu { .. } => Reason::InvalidVcpu,
            Error::FrameTableTooLarge { .. } => Reason::FrameTableTooLarge,
            Error::IoFrameAsTable { .. } => Reason::IoFrameAsTable,
            Error::IoRangeOverlap { .. } => Reason::IoRangeOverlap,
            Error::TooManyIoRanges { .. } => Reason::TooManyIoRanges,
        }
    }
}

/// A rejection reason: the [`Error`] variant without its data. Counted in
/// [`crate::Stats`] under a stable name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Reason {
    /// [`Error::FrameOutOfRange`].
    FrameOutOfRange,
    /// [`Error::NotOwned`].
    NotOwned,
    /// [`Error::ReservedFrame`].
    ReservedFrame,
    /// [`Error::ReadOnlyFrame`].
    ReadOnlyFrame,
    /// [`Error::NotTableCapable`].
    NotTableCapable,
    /// [`Error::DisallowedBits`].
    DisallowedBits,
    /// [`Error::MissingRequiredBits`].
    MissingRequiredBits,
    /// [`Error::Superpage`].
    Superpage,
    /// [`Error::TypeConflict`].
    TypeConflict,
    /// [`Error::LinearPageTable`].
    LinearPageTable,
    /// [`Error::NotPageTable`].
    NotPageTable,
    /// [`Error::AlreadyPinned`].
    AlreadyPinned,
    /// [`Error::NotPinned`].
    NotPinned,
    /// [`Error::UnsupportedCommand`].
    UnsupportedCommand,
    /// [`Error::UnsupportedExtOp`].
    UnsupportedExtOp,
    /// [`Error::NonCanonical`].
    NonCanonical,
    /// [`Error::BatchTooLarge`].
    BatchTooLarge,
    /// [`Error::GuestMemory`].
    GuestMemory,
    /// [`Error::RefOverflow`].
    RefOverflow,
    /// [`Error::FrameInUse`].
    FrameInUse,
    /// [`Error::InvalidVcpu`].
    InvalidVcpu,
    /// [`Error::FrameTableTooLarge`].
    FrameTableTooLarge,
    /// [`Error::IoFrameAsTable`].
    IoFrameAsTable,
    /// [`Error::IoRangeOverlap`].
    IoRangeOverlap,
    /// [`Error::TooManyIoRanges`].
    TooManyIoRanges,
}

impl Reason {
    /// Number of reasons.
    pub const COUNT: usize = 25;

    /// Every reason, in declaration order (`ALL[r as usize] == r`).
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::FrameOutOfRange,
        Reason::NotOwned,
        Reason::ReservedFrame,
        Reason::ReadOnlyFrame,
        Reason::NotTableCapable,
        Reason::DisallowedBits,
        Reason::MissingRequiredBits,
        Reason::Superpage,
        Reason::TypeConflict,
        Reason::LinearPageTable,
        Reason::NotPageTable,
        Reason::AlreadyPinned,
        Reason::NotPinned,
        Reason::UnsupportedCommand,
        Reason::UnsupportedExtOp,
        Reason::NonCanonical,
        Reason::BatchTooLarge,
        Reason::GuestMemory,
        Reason::RefOverflow,
        Reason::FrameInUse,
        Reason::InvalidVcpu,
        Reason::FrameTableTooLarge,
        Reason::IoFrameAsTable,
        Reason::IoRangeOverlap,
        Reason::TooManyIoRanges,
    ];

    /// The stable name of the reason, for metrics and logs. Never changes
    /// once released.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::FrameOutOfRange => "frame_out_of_range",
            Reason::NotOwned => "not_owned",
            Reason::ReservedFrame => "reserved_frame",
            Reason::ReadOnlyFrame => "read_only_frame",
            Reason::NotTableCapable => "not_table_capable",
            Reason::DisallowedBits => "disallowed_bits",
            Reason::MissingRequiredBits => "missing_required_bits",
            Reason::Superpage => "superpage",
            Reason::TypeConflict => "type_conflict",
            Reason::LinearPageTable => "linear_page_table",
            Reason::NotPageTable => "not_page_table",
            Reason::AlreadyPinned => "already_pinned",
            Reason::NotPinned => "not_pinned",
            Reason::UnsupportedCommand => "unsupported_command",
            Reason::UnsupportedExtOp => "unsupported_ext_op",
            Reason::NonCanonical => "non_canonical",
            Reason::BatchTooLarge => "batch_too_large",
            Reason::GuestMemory => "guest_memory",
            Reason::RefOverflow => "ref_overflow",
            Reason::FrameInUse => "frame_in_use",
            Reason::InvalidVcpu => "invalid_vcpu",
            Reason::FrameTableTooLarge => "frame_table_too_large",
            Reason::IoFrameAsTable => "io_frame_as_table",
            Reason::IoRangeOverlap => "io_range_overlap",
            Reason::TooManyIoRanges => "too_many_io_ranges",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_at_its_index_with_a_unique_name() {
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(names.insert(r.name()), "duplicate name {}", r.name());
            assert!(r.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }

    #[test]
    fn messages_read_as_sentences_and_errnos_are_negative() {
        let e = Error::NotOwned { gfn: Gfn(0x1234) };
        assert_eq!(e.to_string(), "frame 0x1234 is not owned by this domain");
        assert_eq!(e.errno(), -errno::EPERM);
        let e = Error::TypeConflict {
            gfn: Gfn(0x10),
            current: PageType::L1,
            wanted: PageType::Writable,
        };
        assert_eq!(
            e.to_string(),
            "frame 0x10 is in use as an L1 page table and cannot be used as a writable page"
        );
        assert_eq!(e.errno(), -errno::EBUSY);
        assert_eq!(
            Error::BatchTooLarge {
                len: 1 << 20,
                max: 4096
            }
            .errno(),
            -errno::E2BIG
        );
        assert_eq!(Error::GuestMemory { gpa: 0 }.errno(), -errno::EFAULT);
        assert_eq!(
            Error::FrameTableTooLarge { nr_frames: 1 }.errno(),
            -errno::ENOMEM
        );
        assert_eq!(Error::UnsupportedCommand { cmd: 1 }.errno(), -errno::ENOSYS);
        assert_eq!(
            Error::Superpage {
                level: Level::L2,
                entry: 0x83
            }
            .to_string(),
            "L2 entry 0x83 maps a superpage, which paravirtualized guests may not use"
        );
    }
}

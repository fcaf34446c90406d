//! Page-table entries of 4-level x86-64 paging and the bits allowed in them
//! at each level.

use crate::error::Error;
use crate::frame::Gfn;

/// Entries per page-table frame.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Bytes per frame.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Present.
pub const PTE_P: u64 = 1 << 0;
/// Writable.
pub const PTE_RW: u64 = 1 << 1;
/// User-accessible.
pub const PTE_US: u64 = 1 << 2;
/// Page-level write-through.
pub const PTE_PWT: u64 = 1 << 3;
/// Page-level cache disable.
pub const PTE_PCD: u64 = 1 << 4;
/// Accessed (set by the CPU).
pub const PTE_A: u64 = 1 << 5;
/// Dirty (set by the CPU; ignored in non-leaf entries).
pub const PTE_D: u64 = 1 << 6;
/// PAT index bit in an L1 entry; page size (PS) in an L2 or L3 entry;
/// reserved in an L4 entry.
pub const PTE_PAT_PS: u64 = 1 << 7;
/// Global (L1 only; ignored in non-leaf entries).
pub const PTE_G: u64 = 1 << 8;
/// The three bits software may use (9..=11).
pub const PTE_AVAIL: u64 = 0b111 << 9;
/// The frame number field, bits 12..=51.
pub const PTE_ADDR: u64 = ((1 << 52) - 1) & !(PAGE_SIZE - 1);
/// Bits 52..=62: software-available (52..=58) and protection key (59..=62).
pub const PTE_HIGH: u64 = 0x7ff << 52;
/// The software-available high bits, 52..=58: the MMU ignores them. Linux
/// keeps state there in leaf entries (since 6.6 the saved dirty bit of a
/// read-only entry in bit 58; ZONE_DEVICE's devmap bit in 57).
pub const PTE_SOFT_HIGH: u64 = 0x7f << 52;
/// The protection-key bits, 59..=62: they select a key register once the
/// guest sets CR4.PKE, so they stay refused.
pub const PTE_PKEY: u64 = 0xf << 59;
/// No-execute.
pub const PTE_NX: u64 = 1 << 63;

/// Flag bits every present entry may carry.
const COMMON_ALLOWED: u64 = PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | PTE_AVAIL | PTE_NX;

/// Flag bits allowed in a present L1 entry; the cache attributes are added
/// when [`crate::Config::allow_cache_attrs`] is set.
const L1_ALLOWED: u64 = COMMON_ALLOWED | PTE_G | PTE_SOFT_HIGH;
/// Cache-attribute bits of an L1 entry.
pub const L1_CACHE_ATTRS: u64 = PTE_PWT | PTE_PCD | PTE_PAT_PS;
/// Flag bits allowed in a present L2, L3 or L4 entry (PS is handled apart).
const UPPER_ALLOWED: u64 = COMMON_ALLOWED;

/// The level of a page table: L1 = page table (PT), L2 = page directory
/// (PD), L3 = page-directory-pointer table (PDPT), L4 = PML4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// Page table: its entries map 4 KiB frames.
    L1 = 1,
    /// Page directory: its entries point to L1 tables.
    L2 = 2,
    /// Page-directory-pointer table: its entries point to L2 tables.
    L3 = 3,
    /// PML4, the root: its entries point to L3 tables.
    L4 = 4,
}

impl Level {
    /// All levels, lowest first.
    pub const ALL: [Level; 4] = [Level::L1, Level::L2, Level::L3, Level::L4];

    /// The level of the tables this level's entries point to, or `None` for
    /// L1 (whose entries map data frames).
    pub const fn lower(self) -> Option<Level> {
        match self {
            Level::L1 => None,
            Level::L2 => Some(Level::L1),
            Level::L3 => Some(Level::L2),
            Level::L4 => Some(Level::L3),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "L{}", *self as u8)
    }
}

/// Whether an entry is present. Nothing else of a non-present entry is
/// looked at: the CPU ignores it and guests keep swap entries there.
#[inline]
pub const fn is_present(entry: u64) -> bool {
    entry & PTE_P != 0
}

/// The frame an entry refers to.
#[inline]
pub const fn entry_frame(entry: u64) -> Gfn {
    Gfn((entry & PTE_ADDR) >> PAGE_SHIFT)
}

/// The guest-physical address of entry `index` of table `table`.
#[inline]
pub const fn entry_gpa(table: Gfn, index: usize) -> u64 {
    (table.0 << PAGE_SHIFT) + (index as u64) * 8
}

/// The flag rules of a domain: computed once from its [`crate::Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryRules {
    /// Allowed bits outside the address field, per level (index 0 = L1).
    allowed: [u64; 4],
    /// Bits every present entry must carry.
    required: u64,
}

impl EntryRules {
    pub(crate) fn new(allow_cache_attrs: bool, required: u64) -> Self {
        let l1 = if allow_cache_attrs {
            L1_ALLOWED | L1_CACHE_ATTRS
        } else {
            L1_ALLOWED
        };
        EntryRules {
            allowed: [l1, UPPER_ALLOWED, UPPER_ALLOWED, UPPER_ALLOWED],
            required,
        }
    }

    /// Checks the bits of a present entry at `level`; the frame it refers
    /// to is checked by the frame table.
    #[inline]
    pub(crate) fn check(&self, level: Level, entry: u64) -> Result<(), Error> {
        self.check_allowed(level, entry, self.allowed[level as usize - 1])
    }

    /// Checks the bits of a present L1 entry that maps an I/O frame: the
    /// cache attributes are allowed whatever the configuration says, since
    /// device registers need uncached mappings (Xen relaxes
    /// `l1_disallow_mask` the same way for domains with I/O).
    #[inline]
    pub(crate) fn check_io_l1(&self, entry: u64) -> Result<(), Error> {
        self.check_allowed(Level::L1, entry, L1_ALLOWED | L1_CACHE_ATTRS)
    }

    #[inline]
    fn check_allowed(&self, level: Level, entry: u64, allowed: u64) -> Result<(), Error> {
        debug_assert!(is_present(entry));
        let flags = entry & !PTE_ADDR;
        if matches!(level, Level::L2 | Level::L3) && flags & PTE_PAT_PS != 0 {
            return Err(Error::Superpage { level, entry });
        }
        let bad = flags & !allowed;
        if bad != 0 {
            return Err(Error::DisallowedBits {
                level,
                entry,
                bits: bad,
            });
        }
        let missing = self.required & !flags;
        if missing != 0 {
            return Err(Error::MissingRequiredBits {
                level,
                entry,
                bits: missing,
            });
        }
        Ok(())
    }
}

/// Whether `va` is a canonical 48-bit virtual address.
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == (1 << 17) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> EntryRules {
        EntryRules::new(false, 0)
    }

    #[test]
    fn address_field_covers_bits_12_to_51() {
        assert_eq!(PTE_ADDR, 0x000f_ffff_ffff_f000);
        assert_eq!(entry_frame(0x8000_0000_0012_3067), Gfn(0x123));
        assert_eq!(entry_gpa(Gfn(2), 3), 0x2018);
        // The fields partition the 64 bits.
        let all = PTE_P
            | PTE_RW
            | PTE_US
            | PTE_PWT
            | PTE_PCD
            | PTE_A
            | PTE_D
            | PTE_PAT_PS
            | PTE_G
            | PTE_AVAIL
            | PTE_ADDR
            | PTE_HIGH
            | PTE_NX;
        assert_eq!(all, u64::MAX);
    }

    #[test]
    fn ordinary_flags_are_allowed_at_every_level() {
        let e = 0x5000 | PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | PTE_AVAIL | PTE_NX;
        for level in Level::ALL {
            assert_eq!(rules().check(level, e), Ok(()), "{level}");
        }
    }

    #[test]
    fn global_is_allowed_only_in_l1() {
        let e = 0x5000 | PTE_P | PTE_G;
        assert_eq!(rules().check(Level::L1, e), Ok(()));
        for level in [Level::L2, Level::L3, Level::L4] {
            assert_eq!(
                rules().check(level, e),
                Err(Error::DisallowedBits {
                    level,
                    entry: e,
                    bits: PTE_G
                })
            );
        }
    }

    #[test]
    fn cache_attributes_need_the_configuration() {
        for bit in [PTE_PWT, PTE_PCD, PTE_PAT_PS] {
            let e = 0x5000 | PTE_P | bit;
            assert_eq!(
                rules().check(Level::L1, e),
                Err(Error::DisallowedBits {
                    level: Level::L1,
                    entry: e,
                    bits: bit
                })
            );
            assert_eq!(EntryRules::new(true, 0).check(Level::L1, e), Ok(()));
        }
        // Never in upper levels, configured or not.
        for bit in [PTE_PWT, PTE_PCD] {
            let e = 0x5000 | PTE_P | bit;
            assert!(EntryRules::new(true, 0).check(Level::L2, e).is_err());
        }
    }

    #[test]
    fn ps_is_a_superpage_in_l2_and_l3_and_reserved_in_l4() {
        let e = 0x20_0000 | PTE_P | PTE_PAT_PS;
        for level in [Level::L2, Level::L3] {
            assert_eq!(
                rules().check(level, e),
                Err(Error::Superpage { level, entry: e })
            );
        }
        assert_eq!(
            rules().check(Level::L4, e),
            Err(Error::DisallowedBits {
                level: Level::L4,
                entry: e,
                bits: PTE_PAT_PS
            })
        );
    }

    /// The high bits `bits` (one entry each) are allowed at `allowed` and
    /// refused, named as disallowed, at every other level.
    fn check_high_bits(bits: std::ops::Range<u32>, allowed: &[Level]) {
        for bit in bits {
            let e = PTE_P | (1u64 << bit);
            for level in Level::ALL {
                let want = if allowed.contains(&level) {
                    Ok(())
                } else {
                    Err(Error::DisallowedBits {
                        level,
                        entry: e,
                        bits: 1 << bit,
                    })
                };
                assert_eq!(rules().check(level, e), want, "bit {bit} at {level}");
            }
        }
    }

    #[test]
    fn software_high_bits_are_allowed_in_l1_only() {
        assert_eq!(PTE_SOFT_HIGH | PTE_PKEY, PTE_HIGH);
        check_high_bits(52..59, &[Level::L1]);
    }

    #[test]
    fn protection_keys_are_rejected_everywhere() {
        check_high_bits(59..63, &[]);
    }

    #[test]
    fn required_bits_are_enforced() {
        let r = EntryRules::new(false, PTE_US);
        let e = 0x1000 | PTE_P;
        assert_eq!(
            r.check(Level::L3, e),
            Err(Error::MissingRequiredBits {
                level: Level::L3,
                entry: e,
                bits: PTE_US
            })
        );
        assert_eq!(r.check(Level::L3, e | PTE_US), Ok(()));
    }

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0));
        assert!(is_canonical(0x0000_7fff_ffff_f000));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(!is_canonical(0xfff0_0000_0000_0000));
    }
}

//! Guest-physical memory layout: where RAM goes around the 32-bit MMIO hole.
//!
//! Pure arithmetic, shared by the memory setup, the boot protocols (which
//! describe the same layout to the guest) and the tests.

use pvabi::layout::{MMIO_HOLE_END, MMIO_HOLE_START};

/// One contiguous range of guest RAM, backed by one range of the memfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    /// First guest-physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
    /// Offset of the first byte in the domain's memory file.
    pub file_offset: u64,
}

impl RamRange {
    /// One past the last guest-physical address.
    pub fn end(&self) -> u64 {
        self.gpa + self.len
    }

    /// Whether `[gpa, gpa + len)` lies entirely inside this range.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa >= self.gpa && gpa.checked_add(len).is_some_and(|end| end <= self.end())
    }
}

/// Splits `ram_bytes` of RAM into guest-physical ranges: RAM starts at 0 and
/// continues at 4 GiB for whatever does not fit below the MMIO hole, as on a
/// PC. The memfd is laid out in the same order without gaps.
pub fn ram_ranges(ram_bytes: u64) -> Vec<RamRange> {
    let low = ram_bytes.min(MMIO_HOLE_START);
    let mut ranges = vec![RamRange { gpa: 0, len: low, file_offset: 0 }];
    if ram_bytes > low {
        ranges.push(RamRange { gpa: MMIO_HOLE_END, len: ram_bytes - low, file_offset: low });
    }
    ranges
}

/// Whether `[gpa, gpa + len)` is entirely RAM.
pub fn is_ram(ranges: &[RamRange], gpa: u64, len: u64) -> bool {
    ranges.iter().any(|r| r.contains(gpa, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(256 << 20), vec![RamRange { gpa: 0, len: 256 << 20, file_offset: 0 }]);
    }

    #[test]
    fn memory_exactly_up_to_the_hole_is_one_range() {
        assert_eq!(ram_ranges(MMIO_HOLE_START).len(), 1);
    }

    #[test]
    fn large_memory_continues_above_4g() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], RamRange { gpa: 0, len: MMIO_HOLE_START, file_offset: 0 });
        assert_eq!(r[1], RamRange { gpa: 1 << 32, len: (4 << 30) - MMIO_HOLE_START, file_offset: MMIO_HOLE_START });
        assert_eq!(r.iter().map(|r| r.len).sum::<u64>(), 4 << 30);
    }

    #[test]
    fn the_hole_is_not_ram() {
        let r = ram_ranges(8 << 30);
        assert!(is_ram(&r, 0x1000, 8));
        assert!(!is_ram(&r, pvabi::layout::UNBACKED_MMIO_PROBE, 4));
        assert!(!is_ram(&r, MMIO_HOLE_START - 4, 8), "straddles the start of the hole");
        assert!(!is_ram(&r, u64::MAX - 2, 8), "overflow is not RAM");
    }
}

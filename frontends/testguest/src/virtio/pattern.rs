//! The deterministic disk pattern of the virtio-blk workload.
//!
//! Sector `s` written with seed `x` starts with a 24-byte tag — the bytes
//! `SPVBLK01`, `x` and `s` (little-endian u64s) — followed by 488 bytes of
//! a splitmix64 stream seeded from both. A mismatch can thus say what the
//! sector holds instead: zeros, another seed's pattern, another sector's.

use super::defs::blk::SECTOR_SIZE;

/// The tag's first 8 bytes.
pub const TAG: [u8; 8] = *b"SPVBLK01";

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `out` (one sector) with the pattern of `seed` for `sector`.
pub fn fill_sector(seed: u64, sector: u64, out: &mut [u8]) {
    assert_eq!(out.len(), SECTOR_SIZE);
    out[..8].copy_from_slice(&TAG);
    out[8..16].copy_from_slice(&seed.to_le_bytes());
    out[16..24].copy_from_slice(&sector.to_le_bytes());
    let mut state = seed ^ sector.rotate_left(32) ^ 0x5350_5642_4c4b_3031;
    for chunk in out[24..].chunks_mut(8) {
        let word = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Fills consecutive sectors from `first_sector`.
pub fn fill(seed: u64, first_sector: u64, out: &mut [u8]) {
    for (index, chunk) in out.chunks_mut(SECTOR_SIZE).enumerate() {
        fill_sector(seed, first_sector + index as u64, chunk);
    }
}

/// Why a sector does not hold the expected pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Every byte is zero (never written).
    Zeros,
    /// A well-formed tag of another seed or sector.
    OtherPattern { seed: u64, sector: u64 },
    /// The right tag, but the body differs from byte `offset` on.
    Corrupt { offset: usize, expected: u8, found: u8 },
    /// Something else; the first differing byte.
    Foreign { offset: usize, expected: u8, found: u8 },
}

impl core::fmt::Display for Mismatch {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Mismatch::Zeros => write!(out, "all zeros"),
            Mismatch::OtherPattern { seed, sector } => write!(out, "the pattern of seed {seed} for sector {sector}"),
            Mismatch::Corrupt { offset, expected, found } => {
                write!(out, "the right tag but byte {offset} is {found:#04x}, expected {expected:#04x}")
            }
            Mismatch::Foreign { offset, expected, found } => {
                write!(out, "foreign data (byte {offset} is {found:#04x}, expected {expected:#04x})")
            }
        }
    }
}

/// Checks that `data` (one sector) holds the pattern of `seed` for
/// `sector`.
pub fn check_sector(seed: u64, sector: u64, data: &[u8]) -> Result<(), Mismatch> {
    let mut expected = [0u8; SECTOR_SIZE];
    fill_sector(seed, sector, &mut expected);
    let Some(offset) = data.iter().zip(expected.iter()).position(|(found, wanted)| found != wanted) else {
        return Ok(());
    };
    let (expected_byte, found) = (expected[offset], data[offset]);
    if data.iter().all(|&byte| byte == 0) {
        return Err(Mismatch::Zeros);
    }
    if data[..8] == TAG {
        let other_seed = u64::from_le_bytes(data[8..16].try_into().unwrap());
        let other_sector = u64::from_le_bytes(data[16..24].try_into().unwrap());
        if (other_seed, other_sector) != (seed, sector) {
            fill_sector(other_seed, other_sector, &mut expected);
            if data == expected {
                return Err(Mismatch::OtherPattern { seed: other_seed, sector: other_sector });
            }
        }
        if offset >= 24 {
            return Err(Mismatch::Corrupt { offset, expected: expected_byte, found });
        }
    }
    Err(Mismatch::Foreign { offset, expected: expected_byte, found })
}

/// Checks consecutive sectors from `first_sector`; the first bad one and
/// why.
pub fn check(seed: u64, first_sector: u64, data: &[u8]) -> Result<(), (u64, Mismatch)> {
    for (index, chunk) in data.chunks(SECTOR_SIZE).enumerate() {
        let sector = first_sector + index as u64;
        check_sector(seed, sector, chunk).map_err(|mismatch| (sector, mismatch))?;
    }
    Ok(())
}

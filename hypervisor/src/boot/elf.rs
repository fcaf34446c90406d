//! Checks on a freestanding guest's ELF image before it is loaded.
//!
//! linux-loader does the loading; these checks come first so that a wrong
//! file gets a sentence naming what is wrong with it ("segment 2 at
//! 0xc0000000 is not in RAM") instead of a generic load failure, and so
//! that nothing is ever written below the boot structures or outside RAM.

use thiserror::Error;

use crate::layout::{is_ram, RamRange};

const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PF_X: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
/// More program headers than any kernel has; bounds the work on bad input.
const MAX_PHDRS: usize = 128;

/// What is wrong with an ELF image.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF file at all.
    #[error("the file is not an ELF image (bad magic)")]
    BadMagic,
    /// Truncated header or program header table.
    #[error("the ELF image is truncated: {0}")]
    Truncated(&'static str),
    /// 32-bit or big-endian.
    #[error("the ELF image is not a 64-bit little-endian image")]
    NotElf64Le,
    /// Built for another CPU.
    #[error("the ELF image is for machine type {0}, not x86-64 (62)")]
    WrongMachine(u16),
    /// A shared object or relocatable file.
    #[error("the ELF image has type {0}; a guest kernel must be a static executable (ET_EXEC)")]
    NotExecutable(u16),
    /// Needs a dynamic loader.
    #[error("the ELF image needs a dynamic loader (it has a PT_INTERP or PT_DYNAMIC header); link the guest statically")]
    Dynamic,
    /// Program header table of an unexpected shape.
    #[error("the ELF program header table is malformed: {0}")]
    BadProgramHeaders(String),
    /// No PT_LOAD segment.
    #[error("the ELF image has no loadable segment")]
    NoLoadSegment,
    /// A segment's file data lies outside the file.
    #[error("segment {index}: its file data (offset {offset:#x}, {size:#x} bytes) lies outside the {file_len}-byte file")]
    SegmentOutsideFile {
        /// Program header index.
        index: usize,
        /// p_offset.
        offset: u64,
        /// p_filesz.
        size: u64,
        /// File length.
        file_len: u64,
    },
    /// p_filesz > p_memsz.
    #[error("segment {0}: its file size is larger than its memory size")]
    FileSizeExceedsMemSize(usize),
    /// A segment below the load floor.
    #[error("segment {index} at {gpa:#x} is below {floor:#x}, where the hypervisor keeps the boot structures")]
    SegmentBelowLoadFloor {
        /// Program header index.
        index: usize,
        /// p_paddr.
        gpa: u64,
        /// The floor.
        floor: u64,
    },
    /// A segment not entirely in guest RAM.
    #[error("segment {index} at {gpa:#x} ({len:#x} bytes) does not fit in the domain's RAM")]
    SegmentNotInRam {
        /// Program header index.
        index: usize,
        /// p_paddr.
        gpa: u64,
        /// p_memsz.
        len: u64,
    },
    /// Two segments overlap.
    #[error("segments {0} and {1} overlap")]
    SegmentsOverlap(usize, usize),
    /// The entry point is not in an executable loaded segment.
    #[error("the entry point {0:#x} is not inside an executable loaded segment")]
    EntryNotInSegment(u64),
}

/// A loadable segment as the checks saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// Guest-physical load address (p_paddr).
    pub gpa: u64,
    /// Bytes in memory (p_memsz).
    pub mem_len: u64,
    /// Bytes from the file (p_filesz); the rest is zero-filled.
    pub file_len: u64,
    /// Executable.
    pub executable: bool,
}

/// The facts the boot code needs from a checked image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedElf {
    /// The entry point (virtual == physical for our freestanding guests).
    pub entry: u64,
    /// Loadable segments.
    pub segments: Vec<LoadSegment>,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Checks `image` (the whole file) against the RAM of the domain.
///
/// Freestanding guests are identity mapped at entry, so segments are placed
/// at their physical addresses and the entry point must be one of them.
pub fn check(image: &[u8], ram: &[RamRange], load_floor: u64) -> Result<CheckedElf, ElfError> {
    if image.len() < 4 || &image[..4] != b"\x7fELF" {
        return Err(ElfError::BadMagic);
    }
    if image.len() < EHDR_SIZE {
        return Err(ElfError::Truncated("the ELF header is incomplete"));
    }
    if image[EI_CLASS] != ELFCLASS64 || image[EI_DATA] != ELFDATA2LSB {
        return Err(ElfError::NotElf64Le);
    }
    let e_type = u16_at(image, 16);
    let machine = u16_at(image, 18);
    if machine != EM_X86_64 {
        return Err(ElfError::WrongMachine(machine));
    }
    if e_type != ET_EXEC {
        return Err(if e_type == ET_DYN { ElfError::Dynamic } else { ElfError::NotExecutable(e_type) });
    }
    let entry = u64_at(image, 24);
    let phoff = u64_at(image, 32);
    let phentsize = usize::from(u16_at(image, 54));
    let phnum = usize::from(u16_at(image, 56));
    if phentsize != PHDR_SIZE {
        return Err(ElfError::BadProgramHeaders(format!("entry size is {phentsize}, expected {PHDR_SIZE}")));
    }
    if phnum > MAX_PHDRS {
        return Err(ElfError::BadProgramHeaders(format!("{phnum} entries, at most {MAX_PHDRS} are accepted")));
    }
    let table_end = usize::try_from(phoff)
        .ok()
        .and_then(|o| o.checked_add(phnum * PHDR_SIZE))
        .filter(|&end| end <= image.len())
        .ok_or(ElfError::Truncated("the program header table lies outside the file"))?;
    let table = &image[table_end - phnum * PHDR_SIZE..table_end];

    let mut segments: Vec<(usize, LoadSegment)> = Vec::new();
    for (index, ph) in table.chunks_exact(PHDR_SIZE).enumerate() {
        let p_type = u32_at(ph, 0);
        if p_type == PT_INTERP || p_type == PT_DYNAMIC {
            return Err(ElfError::Dynamic);
        }
        if p_type != PT_LOAD {
            continue;
        }
        let flags = u32_at(ph, 4);
        let (offset, paddr, filesz, memsz) = (u64_at(ph, 8), u64_at(ph, 24), u64_at(ph, 32), u64_at(ph, 40));
        if offset.checked_add(filesz).is_none_or(|end| end > image.len() as u64) {
            return Err(ElfError::SegmentOutsideFile { index, offset, size: filesz, file_len: image.len() as u64 });
        }
        if filesz > memsz {
            return Err(ElfError::FileSizeExceedsMemSize(index));
        }
        if memsz == 0 {
            continue;
        }
        if paddr < load_floor {
            return Err(ElfError::SegmentBelowLoadFloor { index, gpa: paddr, floor: load_floor });
        }
        if !is_ram(ram, paddr, memsz) {
            return Err(ElfError::SegmentNotInRam { index, gpa: paddr, len: memsz });
        }
        let seg = LoadSegment { gpa: paddr, mem_len: memsz, file_len: filesz, executable: flags & PF_X != 0 };
        if let Some((other, _)) = segments.iter().find(|(_, s)| s.gpa < seg.gpa + seg.mem_len && seg.gpa < s.gpa + s.mem_len) {
            return Err(ElfError::SegmentsOverlap(*other, index));
        }
        segments.push((index, seg));
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadSegment);
    }
    if !segments.iter().any(|(_, s)| s.executable && entry >= s.gpa && entry < s.gpa + s.mem_len) {
        return Err(ElfError::EntryNotInSegment(entry));
    }
    Ok(CheckedElf { entry, segments: segments.into_iter().map(|(_, s)| s).collect() })
}

const PT_NOTE: u32 = 4;
/// XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Whether an ELF image carries a PVH entry note (name "Xen", type 18), as
/// a Linux vmlinux built with CONFIG_PVH does. Never panics on bad input.
pub fn has_pvh_note(image: &[u8]) -> bool {
    if image.len() < EHDR_SIZE || &image[..4] != b"\x7fELF" || image[EI_CLASS] != ELFCLASS64 || image[EI_DATA] != ELFDATA2LSB {
        return false;
    }
    let phoff = u64_at(image, 32) as usize;
    let (phentsize, phnum) = (usize::from(u16_at(image, 54)), usize::from(u16_at(image, 56)).min(MAX_PHDRS));
    if phentsize != PHDR_SIZE {
        return false;
    }
    for i in 0..phnum {
        let Some(ph) = phoff.checked_add(i * PHDR_SIZE).and_then(|o| image.get(o..o + PHDR_SIZE)) else { return false };
        if u32_at(ph, 0) != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(ph, 8) as usize, u64_at(ph, 32) as usize);
        let Some(notes) = offset.checked_add(size).and_then(|end| image.get(offset..end)) else { continue };
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let (namesz, descsz, kind) = (u32_at(notes, at) as usize, u32_at(notes, at + 4) as usize, u32_at(notes, at + 8));
            let name_at = at + 12;
            let align4 = |x: usize| x.checked_add(3).map(|v| v & !3);
            let (Some(n), Some(d)) = (align4(namesz), align4(descsz)) else { break };
            if kind == XEN_ELFNOTE_PHYS32_ENTRY && notes.get(name_at..name_at + namesz) == Some(b"Xen\0".as_slice()) {
                return true;
            }
            match name_at.checked_add(n).and_then(|x| x.checked_add(d)) {
                Some(next) if next > at => at = next,
                _ => break,
            }
        }
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layout::ram_ranges;

    /// A minimal well-formed image: one executable segment at `paddr`.
    pub(crate) fn image(paddr: u64, entry: u64, code: &[u8]) -> Vec<u8> {
        let data_off = (EHDR_SIZE + PHDR_SIZE) as u64;
        let mut f = vec![0u8; data_off as usize];
        f[..4].copy_from_slice(b"\x7fELF");
        f[EI_CLASS] = ELFCLASS64;
        f[EI_DATA] = ELFDATA2LSB;
        f[6] = 1;
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes());
        f[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = &mut f[EHDR_SIZE..];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[4..8].copy_from_slice(&(PF_X | 4).to_le_bytes());
        ph[8..16].copy_from_slice(&data_off.to_le_bytes());
        ph[16..24].copy_from_slice(&paddr.to_le_bytes());
        ph[24..32].copy_from_slice(&paddr.to_le_bytes());
        ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&(code.len() as u64 + 0x1000).to_le_bytes());
        ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        f.extend_from_slice(code);
        f
    }

    fn ram() -> Vec<RamRange> {
        ram_ranges(64 << 20)
    }

    #[test]
    fn a_good_image_passes() {
        let c = check(&image(0x20_0000, 0x20_0000, &[0xf4; 16]), &ram(), 0x10_0000).unwrap();
        assert_eq!(c.entry, 0x20_0000);
        assert_eq!(c.segments, vec![LoadSegment { gpa: 0x20_0000, mem_len: 0x1010, file_len: 0x10, executable: true }]);
    }

    #[test]
    fn rejects_non_elf_and_truncated() {
        assert_eq!(check(b"MZ\x90\x00", &ram(), 0), Err(ElfError::BadMagic));
        assert_eq!(check(b"", &ram(), 0), Err(ElfError::BadMagic));
        assert!(matches!(check(b"\x7fELF\x02\x01", &ram(), 0), Err(ElfError::Truncated(_))));
        let mut img = image(0x20_0000, 0x20_0000, &[0; 4]);
        img.truncate(EHDR_SIZE + 10);
        assert!(matches!(check(&img, &ram(), 0), Err(ElfError::Truncated(_))));
    }

    #[test]
    fn rejects_wrong_class_machine_and_type() {
        let good = image(0x20_0000, 0x20_0000, &[0; 4]);
        let mut img = good.clone();
        img[EI_CLASS] = 1;
        assert_eq!(check(&img, &ram(), 0), Err(ElfError::NotElf64Le));
        let mut img = good.clone();
        img[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(check(&img, &ram(), 0), Err(ElfError::WrongMachine(183)));
        let mut img = good.clone();
        img[16..18].copy_from_slice(&ET_DYN.to_le_bytes());
        assert_eq!(check(&img, &ram(), 0), Err(ElfError::Dynamic));
        let mut img = good;
        img[16..18].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(check(&img, &ram(), 0), Err(ElfError::NotExecutable(1)));
    }

    #[test]
    fn rejects_segments_outside_ram_or_below_the_floor() {
        assert!(matches!(check(&image(0x8_0000, 0x8_0000, &[0; 4]), &ram(), 0x10_0000), Err(ElfError::SegmentBelowLoadFloor { .. })));
        assert!(matches!(check(&image(0xD000_0000, 0xD000_0000, &[0; 4]), &ram(), 0x10_0000), Err(ElfError::SegmentNotInRam { .. })));
        assert!(matches!(check(&image(0x3ff_f000, 0x3ff_f000, &[0; 4]), &ram(), 0x10_0000), Err(ElfError::SegmentNotInRam { .. })), "runs past the end of RAM");
        assert!(matches!(check(&image(u64::MAX - 8, u64::MAX - 8, &[0; 4]), &ram(), 0), Err(ElfError::SegmentNotInRam { .. })), "wraps around");
    }

    #[test]
    fn rejects_entry_outside_segments_and_bad_file_ranges() {
        assert_eq!(check(&image(0x20_0000, 0x30_0000, &[0; 4]), &ram(), 0x10_0000), Err(ElfError::EntryNotInSegment(0x30_0000)));
        let mut img = image(0x20_0000, 0x20_0000, &[0; 4]);
        let ph = EHDR_SIZE;
        img[ph + 32..ph + 40].copy_from_slice(&0x10_0000u64.to_le_bytes());
        assert!(matches!(check(&img, &ram(), 0x10_0000), Err(ElfError::SegmentOutsideFile { .. })));
        let mut img = image(0x20_0000, 0x20_0000, &[0; 4]);
        img[ph + 40..ph + 48].copy_from_slice(&1u64.to_le_bytes());
        assert_eq!(check(&img, &ram(), 0x10_0000), Err(ElfError::FileSizeExceedsMemSize(0)));
        let mut img = image(0x20_0000, 0x20_0000, &[0; 4]);
        img[56..58].copy_from_slice(&1000u16.to_le_bytes());
        assert!(matches!(check(&img, &ram(), 0x10_0000), Err(ElfError::BadProgramHeaders(_))));
        let mut img = image(0x20_0000, 0x20_0000, &[0; 4]);
        img[ph..ph + 4].copy_from_slice(&PT_INTERP.to_le_bytes());
        assert_eq!(check(&img, &ram(), 0x10_0000), Err(ElfError::Dynamic));
    }

    /// `image()` with a PT_NOTE program header holding one note.
    fn with_note(name: &[u8], kind: u32) -> Vec<u8> {
        let mut img = image(0x20_0000, 0x20_0000, &[0xf4]);
        let note_off = img.len() as u64;
        let mut note = Vec::new();
        note.extend_from_slice(&(name.len() as u32).to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&kind.to_le_bytes());
        note.extend_from_slice(name);
        note.resize(12 + ((name.len() + 3) & !3), 0);
        note.extend_from_slice(&0x100_0000u32.to_le_bytes());
        img.extend_from_slice(&note);
        // A second program header, placed after the note.
        let ph_off = img.len();
        let mut ph = vec![0u8; PHDR_SIZE];
        ph[0..4].copy_from_slice(&PT_NOTE.to_le_bytes());
        ph[8..16].copy_from_slice(&note_off.to_le_bytes());
        ph[32..40].copy_from_slice(&(note.len() as u64).to_le_bytes());
        let first = img[EHDR_SIZE..EHDR_SIZE + PHDR_SIZE].to_vec();
        img.extend_from_slice(&first);
        img.extend_from_slice(&ph);
        img[32..40].copy_from_slice(&(ph_off as u64).to_le_bytes());
        img[56..58].copy_from_slice(&2u16.to_le_bytes());
        img
    }

    #[test]
    fn finds_the_pvh_note() {
        assert!(has_pvh_note(&with_note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY)));
        assert!(!has_pvh_note(&with_note(b"Xen\0", 17)));
        assert!(!has_pvh_note(&with_note(b"GNU\0", XEN_ELFNOTE_PHYS32_ENTRY)));
        assert!(!has_pvh_note(&image(0x20_0000, 0x20_0000, &[0xf4])));
        let img = with_note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY);
        for len in 0..img.len() {
            let _ = has_pvh_note(&img[..len]);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_prefixes() {
        let img = image(0x20_0000, 0x20_0000, &[0x90; 64]);
        for len in 0..img.len() {
            let _ = check(&img[..len], &ram(), 0x10_0000);
        }
        let mut flipped = img.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = check(&flipped, &ram(), 0x10_0000);
            flipped[i] ^= 0xff;
        }
    }
}

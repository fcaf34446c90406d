//! Guest-side code we own.
//!
//! The freestanding test guest in `testguest/`, which build.rs compiles
//! with its own flags and linker script whenever this crate is built. Tests
//! and scripts get the image from here rather than building it themselves;
//! `cargo run -q -p frontends --bin guest-image` prints its path.
//!
//! [`virtio`] is the guest's virtio-mmio driver code compiled for the host
//! (the same files): unit-tested here against simulated devices, and usable
//! by host tests, e.g. to check a disk image the guest wrote.

/// Absolute path of the test guest's ELF image, built by this crate's
/// build script into its OUT_DIR.
///
/// A static, non-PIE ELF64 executable for x86-64, linked at 2 MiB
/// (physical == virtual) with its PT_LOAD segments at or above
/// `pvabi::boot::LOAD_MIN`, booted with the `pvabi::boot` protocol. The
/// command line chooses what it does: `workload=banner` (default),
/// `workload=compute iterations=N`, `workload=triple-fault`,
/// `workload=invalid-opcode`, `workload=unbacked-mmio`,
/// `workload=page-fault`, `workload=smp`, or one of the PV workloads that
/// exercise the hypercall interface: `workload=pv-basic`, `pv-hostile`,
/// `pv-console`, `pv-console-echo`, `pv-poweroff`, `pv-reboot`, `pv-crash`, and the direct
/// paging workloads `pv-paging` and `pv-paging-hostile`, and the virtio
/// workloads `virtio-probe`, `virtio-blk`, `virtio-net`, `virtio-console`,
/// `virtio-hostile` and `virtio-bench` (docs/testguest.md). It reports on
/// COM1 (`pv-console`, `pv-console-echo`: through the `console_io` hypercall) and ends the
/// domain through `pvabi::ports::DEBUG_EXIT` (`pv-poweroff`, `pv-reboot`,
/// `pv-crash`: through `sched_op(SHUTDOWN)`).
pub const TESTGUEST_ELF: &str = env!("TESTGUEST_ELF");

pub mod virtio;

/// The guest's command-line parser, host-tested (it fills
/// `virtio::args::VirtioArgs`).
#[cfg(test)]
#[path = "../testguest/src/cmdline.rs"]
#[allow(dead_code)]
mod cmdline;

#[cfg(test)]
mod tests {
    //! Checks of the built image against what the boot protocol requires of
    //! an ELF (see `pvabi::boot`), with a minimal ELF64 reader.

    use super::TESTGUEST_ELF;

    const ELFCLASS64: u8 = 2;
    const ELFDATA2LSB: u8 = 1;
    const ET_EXEC: u16 = 2;
    const EM_X86_64: u16 = 62;
    const PT_LOAD: u32 = 1;
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const PF_X: u32 = 1;
    const SHT_DYNAMIC: u32 = 6;
    const ELF64_HEADER_SIZE: usize = 64;
    const PROGRAM_HEADER_SIZE: usize = 56;
    const SECTION_HEADER_SIZE: usize = 64;

    struct ProgramHeader {
        kind: u32,
        flags: u32,
        offset: u64,
        vaddr: u64,
        paddr: u64,
        file_size: u64,
        memory_size: u64,
    }

    struct Elf {
        bytes: Vec<u8>,
    }

    impl Elf {
        fn load() -> Elf {
            let bytes = std::fs::read(TESTGUEST_ELF).unwrap_or_else(|error| panic!("reading {TESTGUEST_ELF}: {error}"));
            assert!(bytes.len() >= ELF64_HEADER_SIZE, "{TESTGUEST_ELF} is shorter than an ELF header");
            Elf { bytes }
        }

        fn u16_at(&self, offset: usize) -> u16 {
            u16::from_le_bytes(self.bytes[offset..offset + 2].try_into().unwrap())
        }

        fn u32_at(&self, offset: usize) -> u32 {
            u32::from_le_bytes(self.bytes[offset..offset + 4].try_into().unwrap())
        }

        fn u64_at(&self, offset: usize) -> u64 {
            u64::from_le_bytes(self.bytes[offset..offset + 8].try_into().unwrap())
        }

        fn object_type(&self) -> u16 {
            self.u16_at(16)
        }

        fn machine(&self) -> u16 {
            self.u16_at(18)
        }

        fn entry(&self) -> u64 {
            self.u64_at(24)
        }

        /// Start offset, entry size and count of a header table.
        fn table(&self, offset_field: usize, size_field: usize, count_field: usize, min_entry_size: usize) -> (usize, usize, usize) {
            let start = self.u64_at(offset_field) as usize;
            let entry_size = self.u16_at(size_field) as usize;
            let count = self.u16_at(count_field) as usize;
            if count > 0 {
                assert!(entry_size >= min_entry_size, "header table entries of {entry_size} bytes");
                assert!(start + entry_size * count <= self.bytes.len(), "header table runs past the end of the file");
            }
            (start, entry_size, count)
        }

        fn program_headers(&self) -> Vec<ProgramHeader> {
            let (start, entry_size, count) = self.table(32, 54, 56, PROGRAM_HEADER_SIZE);
            (0..count)
                .map(|index| {
                    let at = start + index * entry_size;
                    ProgramHeader {
                        kind: self.u32_at(at),
                        flags: self.u32_at(at + 4),
                        offset: self.u64_at(at + 8),
                        vaddr: self.u64_at(at + 16),
                        paddr: self.u64_at(at + 24),
                        file_size: self.u64_at(at + 32),
                        memory_size: self.u64_at(at + 40),
                    }
                })
                .collect()
        }

        fn section_types(&self) -> Vec<u32> {
            let (start, entry_size, count) = self.table(40, 58, 60, SECTION_HEADER_SIZE);
            (0..count).map(|index| self.u32_at(start + index * entry_size + 4)).collect()
        }

        fn loads(&self) -> Vec<ProgramHeader> {
            self.program_headers().into_iter().filter(|header| header.kind == PT_LOAD).collect()
        }
    }

    #[test]
    fn path_is_absolute_and_exists() {
        let path = std::path::Path::new(TESTGUEST_ELF);
        assert!(path.is_absolute(), "{TESTGUEST_ELF} is not absolute");
        assert!(path.is_file(), "{TESTGUEST_ELF} is not a file");
    }

    #[test]
    fn is_a_little_endian_elf64_x86_64_executable() {
        let elf = Elf::load();
        assert_eq!(&elf.bytes[..4], b"\x7fELF");
        assert_eq!(elf.bytes[4], ELFCLASS64, "not ELF64");
        assert_eq!(elf.bytes[5], ELFDATA2LSB, "not little-endian");
        assert_eq!(elf.machine(), EM_X86_64, "not x86-64");
        assert_eq!(elf.object_type(), ET_EXEC, "not ET_EXEC (static, non-PIE)");
    }

    #[test]
    fn entry_point_is_in_an_executable_load_segment() {
        let elf = Elf::load();
        let entry = elf.entry();
        let segment = elf.loads().into_iter().find(|load| (load.vaddr..load.vaddr + load.file_size).contains(&entry));
        let segment = segment.unwrap_or_else(|| panic!("entry {entry:#x} lies in no PT_LOAD's file contents"));
        assert_ne!(segment.flags & PF_X, 0, "the segment holding the entry point is not executable");
    }

    #[test]
    fn load_segments_sit_at_or_above_load_min_and_in_the_file() {
        let elf = Elf::load();
        let loads = elf.loads();
        assert!(!loads.is_empty(), "no PT_LOAD segments");
        for load in &loads {
            assert!(
                load.vaddr >= pvabi::boot::LOAD_MIN && load.paddr >= pvabi::boot::LOAD_MIN,
                "PT_LOAD at vaddr {:#x} / paddr {:#x}, below LOAD_MIN {:#x}",
                load.vaddr,
                load.paddr,
                pvabi::boot::LOAD_MIN
            );
            assert_eq!(load.vaddr, load.paddr, "the guest is linked physical == virtual");
            assert!(load.file_size <= load.memory_size, "PT_LOAD file size exceeds its memory size");
            assert!(load.offset + load.file_size <= elf.bytes.len() as u64, "PT_LOAD runs past the end of the file");
        }
    }

    #[test]
    fn load_segments_do_not_overlap() {
        let mut loads = Elf::load().loads();
        loads.sort_by_key(|load| load.paddr);
        for pair in loads.windows(2) {
            assert!(pair[0].paddr + pair[0].memory_size <= pair[1].paddr, "PT_LOADs at {:#x} and {:#x} overlap", pair[0].paddr, pair[1].paddr);
        }
    }

    #[test]
    fn needs_no_interpreter_or_dynamic_linking() {
        let elf = Elf::load();
        for header in elf.program_headers() {
            assert_ne!(header.kind, PT_INTERP, "has a PT_INTERP");
            assert_ne!(header.kind, PT_DYNAMIC, "has a PT_DYNAMIC");
        }
        assert!(!elf.section_types().contains(&SHT_DYNAMIC), "has a .dynamic section");
    }
}

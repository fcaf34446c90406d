//! The guest ABI of our hypervisor, in one place.
//!
//! Like Xen's `xen/include/public/`, this crate is the whole contract between
//! the hypervisor and the guests it runs: CPUID leaves, I/O ports, MSRs, the
//! boot state of freestanding guests and the structures placed in guest
//! memory. It is `no_std` and has no dependencies so that our own guests (the
//! freestanding test guest in `frontends/`) use the very same definitions as
//! the hypervisor. Every struct that crosses the guest boundary is `#[repr(C)]`
//! with its size checked at compile time.
//!
//! Nothing in here may change meaning once released: add leaves, flags and
//! fields; bump [`ABI_VERSION_MINOR`] for additions and
//! [`ABI_VERSION_MAJOR`] for anything a guest could notice otherwise.
#![no_std]

/// Major ABI version, reported in [`cpuid::LEAF_VERSION`].
pub const ABI_VERSION_MAJOR: u16 = 0;
/// Minor ABI version, reported in [`cpuid::LEAF_VERSION`].
pub const ABI_VERSION_MINOR: u16 = 1;

/// CPUID leaves in the hypervisor range (0x4000_0000..).
///
/// Our leaves sit at the base of the range, where guests look first. KVM's
/// own paravirtual leaves ("KVMKVMKVM", kvm-clock and friends) are moved to
/// [`KVM_LEAF_BASE`] so that a Linux guest still finds them: Linux scans the
/// range in steps of 0x100 for the KVM signature.
pub mod cpuid {
    /// Signature leaf: EAX = highest leaf of our block ([`LEAF_MAX`]),
    /// EBX:ECX:EDX = [`SIGNATURE`].
    pub const LEAF_SIGNATURE: u32 = 0x4000_0000;
    /// Version leaf: EAX = `major << 16 | minor`.
    pub const LEAF_VERSION: u32 = 0x4000_0001;
    /// Feature leaf: EAX = [`features`] bits, EBX = host backend
    /// ([`HostBackend`] as u32), ECX = number of vCPUs, EDX = 0.
    pub const LEAF_FEATURES: u32 = 0x4000_0002;
    /// Highest leaf of our block.
    pub const LEAF_MAX: u32 = LEAF_FEATURES;
    /// Where KVM's own leaves are relocated to.
    pub const KVM_LEAF_BASE: u32 = 0x4000_0100;
    /// The 12-byte signature in EBX, ECX, EDX of [`LEAF_SIGNATURE`].
    pub const SIGNATURE: [u8; 12] = *b"SplitPVonKVM";
    /// Bit 31 of CPUID.1:ECX, "running on a hypervisor".
    pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;

    /// Feature bits in EAX of [`LEAF_FEATURES`].
    pub mod features {
        /// The host's KVM is kvm_pvm: the guest must register a VIF page
        /// (see [`crate::pvm`]) and set the U/S bit in every present
        /// page-table entry at every level to run natively.
        pub const HOST_PVM: u32 = 1 << 0;
    }

    /// The kind of KVM the host provides (EBX of [`LEAF_FEATURES`]).
    #[repr(u32)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum HostBackend {
        /// Could not be determined.
        Unknown = 0,
        /// Intel VT-x (kvm_intel).
        Vmx = 1,
        /// AMD-V (kvm_amd).
        Svm = 2,
        /// kvm_pvm: software paravirtual virtualization, no VT-x/AMD-V.
        Pvm = 3,
    }

    impl HostBackend {
        /// Decodes EBX of [`LEAF_FEATURES`].
        pub const fn from_u32(v: u32) -> HostBackend {
            match v {
                1 => HostBackend::Vmx,
                2 => HostBackend::Svm,
                3 => HostBackend::Pvm,
                _ => HostBackend::Unknown,
            }
        }

        /// The short name used in all our output: `vmx`, `svm`, `pvm`.
        pub const fn name(self) -> &'static str {
            match self {
                HostBackend::Unknown => "unknown",
                HostBackend::Vmx => "vmx",
                HostBackend::Svm => "svm",
                HostBackend::Pvm => "pvm",
            }
        }
    }
}

/// What a guest needs to run natively on a kvm_pvm host.
///
/// Measured on our machines (see `shared/notes`): until the guest itself
/// writes [`MSR_VIF`] with the guest-physical address of a zeroed [`Vif`]
/// page, every instruction goes through KVM's instruction emulator
/// (~3.6 M instructions/s). After the write the vCPU runs natively, provided
/// every present page-table entry at every level has [`PTE_USER`] set;
/// without it the vCPU livelocks on page faults.
pub mod pvm {
    /// Write: guest-physical address of the vCPU's [`Vif`] page (per vCPU).
    pub const MSR_VIF: u32 = 0x4b56_4d10;
    /// Read: [`SIGNATURE_VALUE`] on a kvm_pvm host.
    pub const MSR_SIGNATURE: u32 = 0x4b56_4d11;
    /// The value of [`MSR_SIGNATURE`], "PVM".
    pub const SIGNATURE_VALUE: u64 = 0x4d_5650;
    /// Read: the TSC rate in kHz.
    pub const MSR_TSC_KHZ: u32 = 0x4b56_4d13;
    /// The U/S bit that must be set in every present page-table entry.
    pub const PTE_USER: u64 = 1 << 2;

    /// The virtual interrupt flag page, one per vCPU, 16 bytes, zeroed
    /// before registration. Placed in a page of its own.
    #[repr(C, align(16))]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Vif {
        /// Virtual IF.
        pub interrupt_flag: u8,
        /// An interrupt is pending.
        pub pending: u8,
        /// Reserved, zero.
        pub reserved: [u8; 6],
        /// Meant for the CR2 of the last page fault delivered to the
        /// guest; measured on our kvm_pvm variant it stays 0, so guests read
        /// CR2 itself (which does hold the faulting address).
        pub cr2: u64,
    }
    const _: () = assert!(core::mem::size_of::<Vif>() == 16);
}

/// I/O ports the hypervisor emulates for every domain.
pub mod ports {
    /// First port of the 16550 UART (COM1).
    pub const COM1: u16 = 0x3f8;
    /// Number of COM1 registers.
    pub const COM1_LEN: u16 = 8;
    /// Legacy IRQ line of COM1.
    pub const COM1_IRQ: u32 = 4;
    /// CMOS/RTC index register (the data register follows).
    pub const CMOS_INDEX: u16 = 0x70;
    /// i8042 command/status port; writing 0xfe resets the machine.
    pub const I8042_COMMAND: u16 = 0x64;
    /// The i8042 "pulse reset line" command.
    pub const I8042_RESET: u8 = 0xfe;
    /// Our ACPI power-management block (hardware-reduced ACPI): sleep
    /// control at +0, sleep status at +1, reset at +2. The FADT points here.
    pub const ACPI_PM_BASE: u16 = 0x600;
    /// Length of [`ACPI_PM_BASE`].
    pub const ACPI_PM_LEN: u16 = 4;
    /// Sleep control register (FADT SLEEP_CONTROL_REG).
    pub const ACPI_SLEEP_CONTROL: u16 = ACPI_PM_BASE;
    /// Sleep status register (FADT SLEEP_STATUS_REG).
    pub const ACPI_SLEEP_STATUS: u16 = ACPI_PM_BASE + 1;
    /// Reset register (FADT RESET_REG).
    pub const ACPI_RESET: u16 = ACPI_PM_BASE + 2;
    /// Value written to [`ACPI_RESET`] to reset (FADT RESET_VALUE).
    pub const ACPI_RESET_VALUE: u8 = 1;
    /// SLP_TYP of the S5 (soft-off) state, in the DSDT's `_S5_` object.
    pub const ACPI_S5_SLP_TYP: u8 = 5;
    /// SLP_EN bit of the sleep control register.
    pub const ACPI_SLP_EN: u8 = 1 << 5;
    /// Debug-exit port: a 32-bit `out` of an exit status ends the domain
    /// with that status (see [`crate::exit_status`]). A narrower write is
    /// taken zero-extended.
    pub const DEBUG_EXIT: u16 = 0x0f4;
}

/// Exit statuses a guest reports through [`ports::DEBUG_EXIT`], and how
/// `hypervisor run` turns domain ends into process exit codes.
pub mod exit_status {
    /// The guest did what it was asked to do.
    pub const SUCCESS: u32 = 0;
    /// Generic failure (for example a bad boot parameter).
    pub const FAILURE: u32 = 1;
    /// The guest caught CPU exception `v` in its own IDT: status is
    /// `EXCEPTION_BASE + v` (so #UD is 0x26, #GP 0x2d, #PF 0x2e).
    pub const EXCEPTION_BASE: u32 = 0x20;
    /// Largest status passed through as the process exit code; larger
    /// statuses are reported and exit with this value.
    pub const MAX_GUEST_STATUS: u32 = 99;
    /// Process exit code when the hypervisor ended the domain because it
    /// crashed (triple fault, failed entry, internal KVM error, access to
    /// unbacked memory, all vCPUs halted without an exit status). 101 is
    /// left to mean "the hypervisor itself panicked", as for any Rust
    /// program.
    pub const EXIT_CODE_CRASHED: i32 = 100;
    /// Process exit code when the domain ran past `--timeout`.
    pub const EXIT_CODE_TIMEOUT: i32 = 102;
    /// Process exit code when the domain was stopped from outside (the
    /// console's Ctrl-]).
    pub const EXIT_CODE_STOPPED: i32 = 104;
    /// Process exit code when the domain could not be built or run (no
    /// /dev/kvm, unreadable kernel, bad configuration).
    pub const EXIT_CODE_HOST_ERROR: i32 = 103;
}

/// The boot protocol of freestanding (non-Linux) ELF guests.
///
/// Every vCPU starts at the ELF entry point at the same time, in 64-bit long
/// mode at CPL 0 with interrupts disabled:
/// - RDI = guest-physical address of the [`StartInfo`], RSI = vCPU index
///   (0 is the boot vCPU), RSP = 0: the guest sets up its own stack;
/// - CR0 = PE|MP|ET|NE|WP|PG, CR4 = PAE|OSFXSR|OSXMMEXCPT,
///   EFER = LME|LMA|NXE;
/// - CR3 = [`BOOT_PML4`]: an identity map of the first 4 GiB in 2 MiB pages,
///   present, writable, with [`crate::pvm::PTE_USER`] set at every level on
///   a kvm_pvm host (so the guest can go native before it builds its own
///   tables);
/// - GDT at [`BOOT_GDT`]: 0x08 64-bit code, 0x10 data, 0x18 a 64-bit TSS
///   at [`BOOT_TSS`]; IDT base 0, limit 0 (the guest installs its own).
///
/// Guest-physical memory below [`LOAD_MIN`] belongs to the boot structures;
/// ELF segments must lie at or above it and inside RAM. The hypervisor
/// zeroes every segment's tail beyond its file size (`.bss`), and all other
/// RAM starts zeroed.
pub mod boot {
    /// GDT used at entry.
    pub const BOOT_GDT: u64 = 0x500;
    /// 104-byte TSS referenced by the boot GDT.
    pub const BOOT_TSS: u64 = 0x600;
    /// PML4 of the boot identity map; followed by one PDPT and four PDs.
    pub const BOOT_PML4: u64 = 0x1000;
    /// [`StartInfo`].
    pub const START_INFO: u64 = 0x7000;
    /// The memory map, `StartInfo::memmap_entries` [`MemMapEntry`]s.
    pub const MEMMAP: u64 = 0x7100;
    /// Largest number of memory map entries.
    pub const MEMMAP_MAX_ENTRIES: usize = 32;
    /// The command line, NUL-terminated.
    pub const CMDLINE: u64 = 0x8000;
    /// Largest command line including its NUL.
    pub const CMDLINE_MAX: usize = 4096;
    /// Lowest address an ELF segment may be loaded at (1 MiB).
    pub const LOAD_MIN: u64 = 0x10_0000;
    /// How much the boot identity map covers.
    pub const BOOT_MAP_SIZE: u64 = 4 << 30;

    /// [`StartInfo::magic`]: "SPV1" read as a little-endian u32.
    pub const START_INFO_MAGIC: u32 = u32::from_le_bytes(*b"SPV1");
    /// [`StartInfo::version`].
    pub const START_INFO_VERSION: u32 = 1;

    /// Handed to a freestanding guest in RDI.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct StartInfo {
        /// [`START_INFO_MAGIC`].
        pub magic: u32,
        /// [`START_INFO_VERSION`].
        pub version: u32,
        /// Number of vCPUs of the domain.
        pub vcpu_count: u32,
        /// Reserved, zero.
        pub flags: u32,
        /// Bytes of RAM the domain has (sum of the RAM entries of the map).
        pub ram_bytes: u64,
        /// Guest-physical address of the NUL-terminated command line.
        pub cmdline_gpa: u64,
        /// Length of the command line without its NUL.
        pub cmdline_len: u64,
        /// Guest-physical address of the memory map.
        pub memmap_gpa: u64,
        /// Number of memory map entries.
        pub memmap_entries: u64,
    }
    const _: () = assert!(core::mem::size_of::<StartInfo>() == 56);

    /// One memory map entry; `kind` uses the E820 numbering.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MemMapEntry {
        /// First guest-physical address.
        pub addr: u64,
        /// Size in bytes.
        pub size: u64,
        /// [`MEMMAP_RAM`] or [`MEMMAP_RESERVED`].
        pub kind: u32,
        /// Zero.
        pub reserved: u32,
    }
    const _: () = assert!(core::mem::size_of::<MemMapEntry>() == 24);

    /// Usable RAM (E820 type 1).
    pub const MEMMAP_RAM: u32 = 1;
    /// Reserved (E820 type 2).
    pub const MEMMAP_RESERVED: u32 = 2;
}

/// Guest-physical address space layout shared by every domain.
pub mod layout {
    /// Start of the 32-bit MMIO hole: RAM above this goes to 4 GiB and up.
    pub const MMIO_HOLE_START: u64 = 0xC000_0000;
    /// End of the 32-bit MMIO hole.
    pub const MMIO_HOLE_END: u64 = 1 << 32;
    /// An address inside the MMIO hole where no device ever lives; the test
    /// guest touches it to check that unbacked accesses are refused.
    pub const UNBACKED_MMIO_PROBE: u64 = 0xD000_0000;
}

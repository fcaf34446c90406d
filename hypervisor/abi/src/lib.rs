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
#![forbid(unsafe_code)]

/// Major ABI version, reported in [`cpuid::LEAF_VERSION`].
pub const ABI_VERSION_MAJOR: u16 = 0;
/// Minor ABI version, reported in [`cpuid::LEAF_VERSION`].
pub const ABI_VERSION_MINOR: u16 = 2;

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
    /// ([`HostBackend`] as u32), ECX = number of vCPUs, EDX = the MSR a
    /// guest writes to install the hypercall page
    /// ([`crate::hypercall::MSR_HYPERCALL_PAGE`]).
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
        /// The hypercall page can be installed (EDX of the feature leaf
        /// names the MSR).
        pub const HYPERCALL_PAGE: u32 = 1 << 1;
        /// Direct paging: `mmu_update` / `mmuext_op` are available.
        pub const DIRECT_PAGING: u32 = 1 << 2;
        /// Console input raises GSI [`crate::console::IRQ`] (see there);
        /// without this bit the guest polls `console_io(READ)`.
        pub const CONSOLE_IRQ: u32 = 1 << 3;
        /// This domain is in direct-paging mode: the guest must put its
        /// page tables under validation (pin its L4 and load it with
        /// `MMUEXT_NEW_BASEPTR`) before it starts user space, and change
        /// them only through `mmu_update` / `mmuext_op` afterwards. The
        /// hypervisor checks CR3 and CR0.WP at every exit once a vCPU has
        /// loaded a base pointer. Without this bit the guest may keep its
        /// native page tables even if [`DIRECT_PAGING`] says the
        /// hypercalls are available.
        pub const PAGING_DIRECT: u32 = 1 << 4;
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
        /// Bytes of RAM the domain has: every RAM range, the boot area
        /// below [`LOAD_MIN`] included (which the map lists as reserved).
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
    /// A page in the MMIO hole the hypervisor maps and unmaps for a moment
    /// on kvm_pvm hosts to make KVM drop its shadow page tables (see the
    /// hypervisor's `pv::mmu::ShadowSync`). Guests must not use it.
    pub const SHADOW_SYNC_GPA: u64 = 0xDFFF_F000;
    /// The I/O APIC's register page (domains with an interrupt controller).
    /// With the virtio-mmio slots and the power GED page it is one of the
    /// I/O ranges a direct-paging Linux domain may map uncached.
    pub const IOAPIC_MMIO_BASE: u64 = 0xFEC0_0000;
    /// The local APIC's register page (xAPIC mode), an I/O range like the
    /// I/O APIC's.
    pub const LAPIC_MMIO_BASE: u64 = 0xFEE0_0000;
    /// Size of each APIC register range.
    pub const APIC_MMIO_LEN: u64 = 0x1000;
}

/// Split-driver devices: virtio-mmio (virtio 1.x, "version 2" register
/// layout) transports at fixed places, one page each.
///
/// Device `i` of a domain sits at `MMIO_BASE + i * MMIO_STRIDE` and raises
/// GSI `IRQ_BASE + i` (edge-triggered, active high) on the I/O APIC. Every
/// slot up to [`MAX_DEVICES`] answers; an empty slot reads as a device with
/// ID 0 (the placeholder the virtio spec allows), so a guest can probe the
/// slots in order. Linux guests also find the devices in the DSDT
/// (`LNRO0005`, as Firecracker describes its virtio-mmio devices).
/// The hypervisor process owns the register block; the device itself runs
/// in dom0 (vhost-user), which reads and writes the rings in guest RAM.
pub mod virtio {
    /// Guest-physical address of slot 0.
    pub const MMIO_BASE: u64 = 0xD800_0000;
    /// Distance between slots and the size of each register block.
    pub const MMIO_STRIDE: u64 = 0x1000;
    /// Number of slots.
    pub const MAX_DEVICES: u32 = 8;
    /// GSI of slot 0 (the pins above the ISA range, so no slot shares a
    /// line with a legacy device).
    pub const IRQ_BASE: u32 = 16;
}

/// Power events the host raises in a domain: the ACPI Generic Event Device.
///
/// `hypervisor run` (and dom0 through it) asks a guest to shut down by
/// pressing a virtual power button: it sets [`EVENT_POWER_BUTTON`] in the
/// one-byte event register at [`GED_MMIO_BASE`] and pulses GSI [`GED_IRQ`]
/// (edge-triggered, active high). Reading the register returns the pending
/// events and clears them; writes are ignored. Linux finds the device in the
/// DSDT (`ACPI0013`, whose `_EVT` reads the register and notifies the power
/// button device `PNP0C0C` with 0x80); a guest without an interrupt
/// controller (our freestanding test guest) polls the register.
pub mod power {
    /// Guest-physical address of the event register (a page is reserved).
    pub const GED_MMIO_BASE: u64 = 0xD900_0000;
    /// Size of the reserved MMIO range.
    pub const GED_MMIO_LEN: u64 = 0x1000;
    /// GSI the device raises (an ISA line no other device uses; the virtio
    /// slots take 16 and up).
    pub const GED_IRQ: u32 = 5;
    /// Event register bit: the power button was pressed.
    pub const EVENT_POWER_BUTTON: u32 = 1 << 0;
}

/// Hypercalls: how a guest calls the hypervisor, their numbers, argument
/// structures and error codes.
///
/// # Installing the hypercall page
/// The guest writes the guest-physical address of a page of its RAM to
/// [`MSR_HYPERCALL_PAGE`] (from ring 0). The hypervisor fills the page with
/// one [`STUB_SIZE`]-byte stub per hypercall number: the stub for number
/// `n` is at offset `n * STUB_SIZE`, as in Xen. The page becomes a reserved
/// frame: it can be mapped read-only and executed, never made writable
/// through `mmu_update`. Writing 0 is ignored; a misaligned address or one
/// outside RAM injects #GP into the guest.
///
/// # Calling convention
/// `call` the stub. Arguments in RDI, RSI, RDX, R10, R8 (the Linux syscall
/// registers, as Xen's 64-bit PV ABI); the result comes back in RAX:
/// `>= 0` on success, a negative [`errno`] on failure. Only RAX changes.
/// A stub is `mov eax, n; out HYPERCALL_PORT, eax; ret`: port I/O from
/// user mode (CPL 3) faults in the guest, so a user program cannot make a
/// hypercall.
pub mod hypercall {
    /// The MSR the guest writes the hypercall page's address to.
    pub const MSR_HYPERCALL_PAGE: u32 = 0x4000_0200;
    /// The port the stubs write the hypercall number to.
    pub const HYPERCALL_PORT: u8 = 0xf6;
    /// Bytes per stub.
    pub const STUB_SIZE: usize = 32;
    /// Stubs in the page.
    pub const STUB_COUNT: usize = 4096 / STUB_SIZE;

    /// Batch of page-table updates ([`crate::mm::MmuUpdate`]); args: requests,
    /// count, pointer to a u32 "done" count (or 0), domain (must be
    /// [`crate::DOMID_SELF`]).
    pub const MMU_UPDATE: u32 = 1;
    /// Memory reservation and map ([`crate::memory`]); args: command,
    /// argument pointer.
    pub const MEMORY_OP: u32 = 12;
    /// Several hypercalls in one ([`MulticallEntry`]); args: entries,
    /// count.
    pub const MULTICALL: u32 = 13;
    /// Version ([`crate::version`]); args: command, argument pointer.
    pub const VERSION: u32 = 17;
    /// Console ([`crate::console`]); args: command, count, buffer.
    pub const CONSOLE_IO: u32 = 18;
    /// Page-table management ([`crate::mm::MmuextOp`]); args: operations,
    /// count, pointer to a u32 "done" count (or 0), domain.
    pub const MMUEXT_OP: u32 = 26;
    /// Scheduling ([`crate::sched`]); args: command, argument.
    pub const SCHED_OP: u32 = 29;

    /// Every hypercall number, with its name (for counters and docs).
    pub const ALL: [(u32, &str); 7] = [
        (MMU_UPDATE, "mmu_update"),
        (MEMORY_OP, "memory_op"),
        (MULTICALL, "multicall"),
        (VERSION, "version"),
        (CONSOLE_IO, "console_io"),
        (MMUEXT_OP, "mmuext_op"),
        (SCHED_OP, "sched_op"),
    ];

    /// The name of hypercall `nr`, if it exists.
    pub fn name(nr: u32) -> Option<&'static str> {
        ALL.iter().find(|(n, _)| *n == nr).map(|(_, s)| *s)
    }

    /// The bytes of the stub for hypercall `nr`:
    /// `mov eax, nr; out HYPERCALL_PORT, eax; ret`, padded with `int3`.
    pub const fn stub(nr: u32) -> [u8; STUB_SIZE] {
        let mut s = [0xcc; STUB_SIZE];
        let b = nr.to_le_bytes();
        s[0] = 0xb8;
        s[1] = b[0];
        s[2] = b[1];
        s[3] = b[2];
        s[4] = b[3];
        s[5] = 0xe7;
        s[6] = HYPERCALL_PORT;
        s[7] = 0xc3;
        s
    }

    /// One entry of a [`MULTICALL`] batch; `result` is written back.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MulticallEntry {
        /// Hypercall number.
        pub op: u64,
        /// Its result (written by the hypervisor).
        pub result: u64,
        /// Its arguments.
        pub args: [u64; 6],
    }
    const _: () = assert!(core::mem::size_of::<MulticallEntry>() == 64);

    /// Largest batch one [`MULTICALL`] takes.
    pub const MULTICALL_MAX: u64 = 512;
}

/// The domain itself, in the `domain` argument of the MMU hypercalls.
pub const DOMID_SELF: u32 = 0x7ff0;

/// Error codes: hypercalls return `-errno`, Linux's numbering, as Xen does.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i64 = 1;
    /// No such entry.
    pub const ENOENT: i64 = 2;
    /// Argument list too long (batch too large).
    pub const E2BIG: i64 = 7;
    /// Try again.
    pub const EAGAIN: i64 = 11;
    /// Out of memory.
    pub const ENOMEM: i64 = 12;
    /// Bad address (a pointer outside the guest's RAM).
    pub const EFAULT: i64 = 14;
    /// Busy.
    pub const EBUSY: i64 = 16;
    /// Invalid argument.
    pub const EINVAL: i64 = 22;
    /// No such hypercall (or command).
    pub const ENOSYS: i64 = 38;
    /// A reference count would overflow.
    pub const EOVERFLOW: i64 = 75;
}

/// `VERSION` commands.
pub mod version {
    /// Returns `major << 16 | minor`.
    pub const VERSION: u64 = 0;
    /// Copies the 16-byte extra-version string to the argument pointer.
    pub const EXTRAVERSION: u64 = 1;
    /// Length of the extra-version buffer.
    pub const EXTRAVERSION_LEN: usize = 16;
}

/// `CONSOLE_IO` commands.
pub mod console {
    /// Writes `count` bytes from `buffer` to the domain's console; returns
    /// the number written.
    pub const WRITE: u64 = 0;
    /// Reads up to `count` bytes of console input into `buffer`; returns
    /// the number read (0 if none is waiting).
    pub const READ: u64 = 1;
    /// Largest `count` one call takes; longer writes are cut and the
    /// returned count says how much was taken.
    pub const MAX_CHUNK: u64 = 4096;
    /// GSI (I/O APIC pin; edge-triggered, active high) the hypervisor
    /// pulses when console input arrives for `READ`, if the feature bit
    /// `cpuid::features::CONSOLE_IRQ` is set (domains with an interrupt
    /// controller). The guest then reads until `READ` returns 0; it needs
    /// no polling. An ISA line no other device uses (COM1 has 4, the power
    /// GED 5; the virtio slots take 16 and up).
    pub const IRQ: u32 = 6;
}

/// `SCHED_OP` commands.
pub mod sched {
    /// Gives up the vCPU for now.
    pub const YIELD: u64 = 0;
    /// Blocks until an event (console input, a timer) or for at most the
    /// number of microseconds in the argument (0: no limit).
    pub const BLOCK: u64 = 1;
    /// Ends the domain; the argument points to a [`Shutdown`].
    pub const SHUTDOWN: u64 = 2;

    /// Argument of [`SHUTDOWN`].
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Shutdown {
        /// One of the `REASON_` values.
        pub reason: u32,
    }
    /// Power off.
    pub const REASON_POWEROFF: u32 = 0;
    /// Reboot.
    pub const REASON_REBOOT: u32 = 1;
    /// Crash: the domain ended abnormally (a guest kernel panic).
    pub const REASON_CRASH: u32 = 3;
}

/// `MEMORY_OP` commands and structures (ballooning and the memory map).
pub mod memory {
    /// Give frames back to the domain; returns the number of extents done.
    pub const INCREASE_RESERVATION: u64 = 0;
    /// Take frames away from the domain (balloon inflate); returns the
    /// number of extents done.
    pub const DECREASE_RESERVATION: u64 = 1;
    /// Pages the domain has now.
    pub const CURRENT_RESERVATION: u64 = 3;
    /// Pages the domain may have at most.
    pub const MAXIMUM_RESERVATION: u64 = 4;
    /// Copies the memory map ([`MemoryMap`]).
    pub const MEMORY_MAP: u64 = 9;

    /// Argument of INCREASE/DECREASE_RESERVATION.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Reservation {
        /// Guest-physical address of an array of frame numbers (u64).
        pub extent_start: u64,
        /// Number of extents.
        pub nr_extents: u64,
        /// log2 of pages per extent (only 0 is supported).
        pub extent_order: u32,
        /// Zero.
        pub mem_flags: u32,
        /// [`crate::DOMID_SELF`].
        pub domid: u32,
        /// Zero.
        pub pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<Reservation>() == 32);

    /// Argument of MEMORY_MAP: the guest gives a buffer of `nr_entries`
    /// [`crate::boot::MemMapEntry`]; the hypervisor writes the map and sets
    /// `nr_entries` to the number written.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MemoryMap {
        /// In: buffer capacity; out: entries written.
        pub nr_entries: u32,
        /// Zero.
        pub pad: u32,
        /// Guest-physical address of the buffer.
        pub buffer: u64,
    }
    const _: () = assert!(core::mem::size_of::<MemoryMap>() == 16);
}

/// Direct paging: the structures of `MMU_UPDATE` and `MMUEXT_OP`.
pub mod mm {
    /// One page-table update: write `val` to the entry at guest-physical
    /// address `ptr & !7`; the low bits of `ptr` are the command.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MmuUpdate {
        /// Entry address | command.
        pub ptr: u64,
        /// New entry.
        pub val: u64,
    }
    const _: () = assert!(core::mem::size_of::<MmuUpdate>() == 16);

    /// Normal, checked update.
    pub const MMU_NORMAL_PT_UPDATE: u64 = 0;
    /// As Xen; not supported (machine-to-physical table).
    pub const MMU_MACHPHYS_UPDATE: u64 = 1;
    /// Update that keeps the entry's accessed and dirty bits.
    pub const MMU_PT_UPDATE_PRESERVE_AD: u64 = 2;

    /// One page-table management operation.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MmuextOp {
        /// One of the `MMUEXT_` commands.
        pub cmd: u32,
        /// Zero.
        pub pad: u32,
        /// Frame number (pin, unpin, new base pointer) or linear address
        /// (invlpg).
        pub arg1: u64,
        /// Unused, zero.
        pub arg2: u64,
    }
    const _: () = assert!(core::mem::size_of::<MmuextOp>() == 24);

    // The command numbers are Xen's (xen/include/public/xen.h).

    /// Pin a frame as an L1 table.
    pub const MMUEXT_PIN_L1_TABLE: u32 = 0;
    /// Pin as L2.
    pub const MMUEXT_PIN_L2_TABLE: u32 = 1;
    /// Pin as L3.
    pub const MMUEXT_PIN_L3_TABLE: u32 = 2;
    /// Pin as L4.
    pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
    /// Unpin a table.
    pub const MMUEXT_UNPIN_TABLE: u32 = 4;
    /// Switch to the L4 table in arg1 (the new CR3).
    pub const MMUEXT_NEW_BASEPTR: u32 = 5;
    /// Flush this vCPU's TLB.
    pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;
    /// Invalidate one address on this vCPU.
    pub const MMUEXT_INVLPG_LOCAL: u32 = 7;
    /// As Xen: flush the TLBs of a set of vCPUs (not supported: use
    /// [`MMUEXT_TLB_FLUSH_ALL`]).
    pub const MMUEXT_TLB_FLUSH_MULTI: u32 = 8;
    /// As Xen: invalidate one address on a set of vCPUs (not supported:
    /// use [`MMUEXT_INVLPG_ALL`]).
    pub const MMUEXT_INVLPG_MULTI: u32 = 9;
    /// Flush every vCPU's TLB.
    pub const MMUEXT_TLB_FLUSH_ALL: u32 = 10;
    /// Invalidate one address on every vCPU.
    pub const MMUEXT_INVLPG_ALL: u32 = 11;
    /// Largest batch of updates or operations one call takes.
    pub const MAX_BATCH: u64 = 4096;
}

#[cfg(test)]
mod tests {
    use super::hypercall::*;

    #[test]
    fn stubs_encode_the_number_and_port() {
        let s = stub(29);
        assert_eq!(&s[..8], &[0xb8, 29, 0, 0, 0, 0xe7, HYPERCALL_PORT, 0xc3]);
        assert!(s[8..].iter().all(|&b| b == 0xcc));
        assert_eq!(STUB_COUNT * STUB_SIZE, 4096);
        assert!(ALL.iter().all(|(n, _)| (*n as usize) < STUB_COUNT));
        assert_eq!(name(SCHED_OP), Some("sched_op"));
        assert_eq!(name(99), None);
    }
}

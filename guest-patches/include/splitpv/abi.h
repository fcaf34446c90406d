/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * splitpv/abi.h - the guest ABI of the SplitPVonKVM hypervisor, for C guests.
 *
 * This header mirrors hypervisor/abi/src/lib.rs (the Rust crate `pvabi`),
 * which is the one source of truth, the way Xen's xen/include/public/ headers
 * describe Xen's guest ABI. It is checked by hypervisor/abi/tests/c_header.rs
 * (`cargo test -p pvabi`): every integer constant and enum value of the crate
 * must exist here with the same value, and every struct with the same size,
 * alignment and field offsets, sizes and types. Change lib.rs first, then
 * this file; the test names whatever disagrees.
 *
 * Naming:
 *   pvabi::NAME                     -> SPV_NAME
 *   pvabi::module::NAME             -> SPV_MODULE_NAME
 *   pvabi::module::sub::NAME        -> SPV_MODULE_SUB_NAME
 *   pvabi::module::Enum::Variant    -> SPV_MODULE_ENUM_VARIANT
 *   pvabi::module::StructName       -> struct spv_module_struct_name
 * Struct fields keep their Rust names, order and widths; padding is explicit
 * in Rust and here, so no struct has compiler-inserted holes.
 *
 * Usable from:
 *   - the Linux kernel (__KERNEL__ defined): types from <linux/types.h>;
 *   - freestanding or hosted C: types from <stdint.h>;
 *   - assembly (__ASSEMBLY__ or __ASSEMBLER__ defined): the constants only.
 * Constants are plain integer expressions, usable in #if and in assembly;
 * the few that need an unsigned or 64-bit type in C carry it through
 * SPV_U() / SPV_ULL(), which drop the suffix in assembly.
 *
 * Nothing in here may change meaning once released (see lib.rs): additions
 * bump SPV_ABI_VERSION_MINOR, anything else SPV_ABI_VERSION_MAJOR.
 */
#ifndef SPLITPV_ABI_H
#define SPLITPV_ABI_H

/*
 * Integer literal suffixes. A bare 0xC0000000 is an unsigned int in C, so
 * ~SPV_LAYOUT_MMIO_HOLE_START would lose the upper 32 bits; a bare 1 << 31
 * overflows int. Assemblers need not accept C suffixes, and compute in 64 bits.
 */
#if defined(__ASSEMBLY__) || defined(__ASSEMBLER__)
#define SPV_U(x)	x
#define SPV_ULL(x)	x
#else
#define SPV_U(x)	x##U
#define SPV_ULL(x)	x##ULL
#endif

#if !defined(__ASSEMBLY__) && !defined(__ASSEMBLER__)
/*
 * The Rust integer types of the ABI. The kernel builds with -nostdinc and has
 * no <stdint.h>, hence the two sources.
 */
#ifdef __KERNEL__
#include <linux/types.h>
typedef __u8  spv_u8;
typedef __u16 spv_u16;
typedef __u32 spv_u32;
typedef __u64 spv_u64;
typedef __s32 spv_s32;
typedef __s64 spv_s64;
#else
#include <stdint.h>
typedef uint8_t  spv_u8;
typedef uint16_t spv_u16;
typedef uint32_t spv_u32;
typedef uint64_t spv_u64;
typedef int32_t  spv_s32;
typedef int64_t  spv_s64;
#endif
#endif /* !assembly */

/* ABI version, reported in EAX of SPV_CPUID_LEAF_VERSION as major << 16 | minor. */
#define SPV_ABI_VERSION_MAJOR	0
#define SPV_ABI_VERSION_MINOR	2

/* ------------------------------------------------------------------------
 * cpuid: CPUID leaves in the hypervisor range (0x40000000..).
 *
 * Our leaves sit at the base of the range, where guests look first. KVM's own
 * paravirtual leaves ("KVMKVMKVM", kvm-clock, ...) are moved to
 * SPV_CPUID_KVM_LEAF_BASE, where Linux still finds them: it scans the range
 * in steps of 0x100 for the KVM signature.
 */

/* Signature leaf: EAX = SPV_CPUID_LEAF_MAX, EBX:ECX:EDX = SPV_CPUID_SIGNATURE. */
#define SPV_CPUID_LEAF_SIGNATURE	0x40000000
/* Version leaf: EAX = major << 16 | minor. */
#define SPV_CPUID_LEAF_VERSION		0x40000001
/*
 * Feature leaf: EAX = SPV_CPUID_FEATURES_* bits, EBX = host backend
 * (SPV_CPUID_HOST_BACKEND_*), ECX = number of vCPUs, EDX = the MSR a guest
 * writes to install the hypercall page (SPV_HYPERCALL_MSR_HYPERCALL_PAGE).
 */
#define SPV_CPUID_LEAF_FEATURES		0x40000002
/* Highest leaf of our block. */
#define SPV_CPUID_LEAF_MAX		SPV_CPUID_LEAF_FEATURES
/* Where KVM's own leaves are relocated to. */
#define SPV_CPUID_KVM_LEAF_BASE		0x40000100
/*
 * pvabi::cpuid::SIGNATURE, the 12 bytes in EBX, ECX, EDX of
 * SPV_CPUID_LEAF_SIGNATURE: as a string (the form Linux's
 * hypervisor_cpuid_base() takes; sizeof is 13 with the NUL) and as the three
 * register values (little-endian).
 */
#define SPV_CPUID_SIGNATURE		"SplitPVonKVM"
#define SPV_CPUID_SIGNATURE_EBX		0x696c7053	/* "Spli" */
#define SPV_CPUID_SIGNATURE_ECX		0x6f565074	/* "tPVo" */
#define SPV_CPUID_SIGNATURE_EDX		0x4d564b6e	/* "nKVM" */
/* Bit 31 of CPUID.1:ECX, "running on a hypervisor". */
#define SPV_CPUID_LEAF1_ECX_HYPERVISOR	(SPV_U(1) << 31)

/*
 * cpuid::features: bits in EAX of SPV_CPUID_LEAF_FEATURES.
 */
/*
 * The host's KVM is kvm_pvm: the guest must register a VIF page (see pvm
 * below) and set the U/S bit in every present page-table entry at every
 * level to run natively.
 */
#define SPV_CPUID_FEATURES_HOST_PVM		(1 << 0)
/* The hypercall page can be installed (EDX of the feature leaf names the MSR). */
#define SPV_CPUID_FEATURES_HYPERCALL_PAGE	(1 << 1)
/* Direct paging: mmu_update / mmuext_op are available. */
#define SPV_CPUID_FEATURES_DIRECT_PAGING	(1 << 2)
/*
 * Console input raises GSI SPV_CONSOLE_IRQ (see there); without this bit
 * the guest polls SPV_CONSOLE_READ.
 */
#define SPV_CPUID_FEATURES_CONSOLE_IRQ		(1 << 3)
/*
 * This domain is in direct-paging mode: the guest must put its page tables
 * under validation (pin its L4 and load it with MMUEXT_NEW_BASEPTR) before it
 * starts user space, and change them only through mmu_update / mmuext_op
 * afterwards. The hypervisor checks CR3 and CR0.WP at every exit once a vCPU
 * has loaded a base pointer. Without this bit the guest may keep its native
 * page tables even if SPV_CPUID_FEATURES_DIRECT_PAGING says the hypercalls
 * are available.
 */
#define SPV_CPUID_FEATURES_PAGING_DIRECT	(1 << 4)

/*
 * cpuid::HostBackend: the kind of KVM the host provides, EBX of
 * SPV_CPUID_LEAF_FEATURES. Values outside this list decode as UNKNOWN. Our
 * output names them "unknown", "vmx", "svm", "pvm".
 */
#define SPV_CPUID_HOST_BACKEND_UNKNOWN	0	/* could not be determined */
#define SPV_CPUID_HOST_BACKEND_VMX	1	/* Intel VT-x (kvm_intel) */
#define SPV_CPUID_HOST_BACKEND_SVM	2	/* AMD-V (kvm_amd) */
#define SPV_CPUID_HOST_BACKEND_PVM	3	/* kvm_pvm: software PV, no VT-x/AMD-V */

/* ------------------------------------------------------------------------
 * pvm: what a guest needs to run natively on a kvm_pvm host.
 *
 * Until the guest writes SPV_PVM_MSR_VIF with the guest-physical address of
 * a zeroed struct spv_pvm_vif, every instruction goes through KVM's
 * instruction emulator (~3.6 M instructions/s). After the write the vCPU
 * runs natively, provided every present page-table entry at every level has
 * SPV_PVM_PTE_USER set; without it the vCPU livelocks on page faults.
 */

/* Write: guest-physical address of this vCPU's VIF page (per vCPU). */
#define SPV_PVM_MSR_VIF			0x4b564d10
/* Read: SPV_PVM_SIGNATURE_VALUE on a kvm_pvm host. */
#define SPV_PVM_MSR_SIGNATURE		0x4b564d11
/* The value of SPV_PVM_MSR_SIGNATURE, "PVM". */
#define SPV_PVM_SIGNATURE_VALUE		0x4d5650
/* Read: the TSC rate in kHz. */
#define SPV_PVM_MSR_TSC_KHZ		0x4b564d13
/* The U/S bit that must be set in every present page-table entry. */
#define SPV_PVM_PTE_USER		(1 << 2)

/* ------------------------------------------------------------------------
 * ports: I/O ports the hypervisor emulates for every domain.
 */

/* First port of the 16550 UART (COM1), its register count and legacy IRQ. */
#define SPV_PORTS_COM1			0x3f8
#define SPV_PORTS_COM1_LEN		8
#define SPV_PORTS_COM1_IRQ		4
/* CMOS/RTC index register (the data register follows). */
#define SPV_PORTS_CMOS_INDEX		0x70
/* i8042 command/status port; writing SPV_PORTS_I8042_RESET resets the machine. */
#define SPV_PORTS_I8042_COMMAND		0x64
/* The i8042 "pulse reset line" command. */
#define SPV_PORTS_I8042_RESET		0xfe
/*
 * Our ACPI power-management block (hardware-reduced ACPI): sleep control at
 * +0, sleep status at +1, reset at +2. The FADT points here.
 */
#define SPV_PORTS_ACPI_PM_BASE		0x600
#define SPV_PORTS_ACPI_PM_LEN		4
/* Sleep control register (FADT SLEEP_CONTROL_REG). */
#define SPV_PORTS_ACPI_SLEEP_CONTROL	SPV_PORTS_ACPI_PM_BASE
/* Sleep status register (FADT SLEEP_STATUS_REG). */
#define SPV_PORTS_ACPI_SLEEP_STATUS	(SPV_PORTS_ACPI_PM_BASE + 1)
/* Reset register (FADT RESET_REG) and the value that resets (RESET_VALUE). */
#define SPV_PORTS_ACPI_RESET		(SPV_PORTS_ACPI_PM_BASE + 2)
#define SPV_PORTS_ACPI_RESET_VALUE	1
/* SLP_TYP of the S5 (soft-off) state, in the DSDT's _S5_ object. */
#define SPV_PORTS_ACPI_S5_SLP_TYP	5
/* SLP_EN bit of the sleep control register. */
#define SPV_PORTS_ACPI_SLP_EN		(1 << 5)
/*
 * Debug-exit port: a 32-bit `out` of an exit status (SPV_EXIT_STATUS_*)
 * ends the domain with that status. A narrower write is taken zero-extended.
 */
#define SPV_PORTS_DEBUG_EXIT		0x0f4

/* ------------------------------------------------------------------------
 * exit_status: statuses a guest reports through SPV_PORTS_DEBUG_EXIT, and
 * how `hypervisor run` turns domain ends into process exit codes.
 */

/* The guest did what it was asked to do. */
#define SPV_EXIT_STATUS_SUCCESS			0
/* Generic failure (for example a bad boot parameter). */
#define SPV_EXIT_STATUS_FAILURE			1
/*
 * The guest caught CPU exception v in its own IDT: the status is
 * EXCEPTION_BASE + v (so #UD is 0x26, #GP 0x2d, #PF 0x2e).
 */
#define SPV_EXIT_STATUS_EXCEPTION_BASE		0x20
/*
 * Largest status passed through as the process exit code; larger statuses
 * are reported and exit with this value.
 */
#define SPV_EXIT_STATUS_MAX_GUEST_STATUS	99
/*
 * Host process exit codes (not written by guests): the domain crashed
 * (triple fault, failed entry, internal KVM error, access to unbacked
 * memory, all vCPUs halted without an exit status), ran past --timeout, was
 * stopped from outside (the console's Ctrl-]), or could not be built or run.
 * 101 means the hypervisor itself panicked, as for any Rust program.
 */
#define SPV_EXIT_STATUS_EXIT_CODE_CRASHED	100
#define SPV_EXIT_STATUS_EXIT_CODE_TIMEOUT	102
#define SPV_EXIT_STATUS_EXIT_CODE_STOPPED	104
#define SPV_EXIT_STATUS_EXIT_CODE_HOST_ERROR	103

/* ------------------------------------------------------------------------
 * boot: the boot protocol of freestanding (non-Linux) ELF guests.
 *
 * Every vCPU starts at the ELF entry point at the same time, in 64-bit long
 * mode at CPL 0 with interrupts disabled:
 *  - RDI = guest-physical address of the struct spv_boot_start_info,
 *    RSI = vCPU index (0 is the boot vCPU), RSP = 0: the guest sets up its
 *    own stack;
 *  - CR0 = PE|MP|ET|NE|WP|PG, CR4 = PAE|OSFXSR|OSXMMEXCPT, EFER = LME|LMA|NXE;
 *  - CR3 = SPV_BOOT_BOOT_PML4: an identity map of the first 4 GiB in 2 MiB
 *    pages, present, writable, with SPV_PVM_PTE_USER set at every level on a
 *    kvm_pvm host (so the guest can go native before building its own tables);
 *  - GDT at SPV_BOOT_BOOT_GDT: 0x08 64-bit code, 0x10 data, 0x18 a 64-bit TSS
 *    at SPV_BOOT_BOOT_TSS; IDT base 0, limit 0 (the guest installs its own).
 *
 * Memory below SPV_BOOT_LOAD_MIN belongs to the boot structures; ELF
 * segments must lie at or above it and inside RAM. The hypervisor zeroes each
 * segment's tail beyond its file size (.bss); all other RAM starts zeroed.
 */

/* GDT used at entry. */
#define SPV_BOOT_BOOT_GDT		0x500
/* 104-byte TSS referenced by the boot GDT. */
#define SPV_BOOT_BOOT_TSS		0x600
/* PML4 of the boot identity map; followed by one PDPT and four PDs. */
#define SPV_BOOT_BOOT_PML4		0x1000
/* struct spv_boot_start_info. */
#define SPV_BOOT_START_INFO		0x7000
/* The memory map: start_info.memmap_entries struct spv_boot_mem_map_entry. */
#define SPV_BOOT_MEMMAP			0x7100
/* Largest number of memory map entries. */
#define SPV_BOOT_MEMMAP_MAX_ENTRIES	32
/* The command line, NUL-terminated, and its largest size including the NUL. */
#define SPV_BOOT_CMDLINE		0x8000
#define SPV_BOOT_CMDLINE_MAX		4096
/* Lowest address an ELF segment may be loaded at (1 MiB). */
#define SPV_BOOT_LOAD_MIN		0x100000
/* How much the boot identity map covers (4 GiB). */
#define SPV_BOOT_BOOT_MAP_SIZE		(SPV_ULL(4) << 30)
/* start_info.magic: "SPV1" read as a little-endian u32. */
#define SPV_BOOT_START_INFO_MAGIC	0x31565053
/* start_info.version. */
#define SPV_BOOT_START_INFO_VERSION	1
/* mem_map_entry.kind, E820 numbering: usable RAM (1), reserved (2). */
#define SPV_BOOT_MEMMAP_RAM		1
#define SPV_BOOT_MEMMAP_RESERVED	2

/* ------------------------------------------------------------------------
 * layout: guest-physical address space layout shared by every domain.
 */

/* Start of the 32-bit MMIO hole: RAM above this goes to 4 GiB and up. */
#define SPV_LAYOUT_MMIO_HOLE_START	SPV_ULL(0xC0000000)
/* End of the 32-bit MMIO hole. */
#define SPV_LAYOUT_MMIO_HOLE_END	(SPV_ULL(1) << 32)
/*
 * An address inside the MMIO hole where no device ever lives; the test guest
 * touches it to check that unbacked accesses are refused.
 */
#define SPV_LAYOUT_UNBACKED_MMIO_PROBE	SPV_ULL(0xD0000000)
/* A page the hypervisor maps for a moment on kvm_pvm to resync KVM's shadow page tables; guests must not use it. */
#define SPV_LAYOUT_SHADOW_SYNC_GPA	SPV_ULL(0xDFFFF000)
/*
 * The I/O APIC's and the local APIC's (xAPIC) register pages. With the
 * virtio-mmio slots and the power GED page they are the I/O ranges a
 * direct-paging Linux domain may map (L1 entries only, cache attributes
 * allowed).
 */
#define SPV_LAYOUT_IOAPIC_MMIO_BASE	SPV_ULL(0xFEC00000)
#define SPV_LAYOUT_LAPIC_MMIO_BASE	SPV_ULL(0xFEE00000)
#define SPV_LAYOUT_APIC_MMIO_LEN	SPV_ULL(0x1000)

/* ------------------------------------------------------------------------
 * virtio: split-driver devices, virtio-mmio (version 2) transports.
 * Device i sits at SPV_VIRTIO_MMIO_BASE + i * SPV_VIRTIO_MMIO_STRIDE and
 * raises GSI SPV_VIRTIO_IRQ_BASE + i (edge, active high). Every slot up to
 * SPV_VIRTIO_MAX_DEVICES answers; an empty slot has device ID 0. Linux also
 * finds the devices in the DSDT (LNRO0005).
 */
#define SPV_VIRTIO_MMIO_BASE		SPV_ULL(0xD8000000)
#define SPV_VIRTIO_MMIO_STRIDE		SPV_ULL(0x1000)
#define SPV_VIRTIO_MAX_DEVICES		8
#define SPV_VIRTIO_IRQ_BASE		16

/* ------------------------------------------------------------------------
 * power: the ACPI Generic Event Device (host-initiated shutdown requests).
 * The host sets SPV_POWER_EVENT_POWER_BUTTON in the one-byte event register
 * at SPV_POWER_GED_MMIO_BASE and pulses GSI SPV_POWER_GED_IRQ (edge, active
 * high). Reading the register returns the pending events and clears them;
 * writes are ignored. Linux finds it in the DSDT (ACPI0013, power button
 * PNP0C0C); guests without an interrupt controller poll the register.
 */
#define SPV_POWER_GED_MMIO_BASE		SPV_ULL(0xD9000000)
#define SPV_POWER_GED_MMIO_LEN		SPV_ULL(0x1000)
#define SPV_POWER_GED_IRQ		5
#define SPV_POWER_EVENT_POWER_BUTTON	(SPV_U(1) << 0)

/* ------------------------------------------------------------------------
 * hypercall: how a guest calls the hypervisor.
 *
 * Installing the hypercall page: the guest writes the guest-physical address
 * of a page of its RAM to SPV_HYPERCALL_MSR_HYPERCALL_PAGE (from ring 0).
 * The hypervisor fills the page with one SPV_HYPERCALL_STUB_SIZE-byte stub
 * per hypercall number, the stub for number n at SPV_HYPERCALL_STUB_OFFSET(n),
 * as in Xen. The page becomes a reserved frame: it can be mapped read-only
 * and executed, never made writable through mmu_update. Writing 0 is
 * ignored; a misaligned address or one outside RAM injects #GP.
 *
 * Stub bytes (pvabi::hypercall::stub()): "mov eax, n; out 0xf6, eax; ret",
 * i.e. b8 <n as 4 little-endian bytes> e7 f6 c3, padded with int3 (cc) to
 * SPV_HYPERCALL_STUB_SIZE bytes. For example the stub of
 * SPV_HYPERCALL_SCHED_OP (29) starts b8 1d 00 00 00 e7 f6 c3.
 * Port I/O from user mode (CPL 3) faults in the guest, so a user program
 * cannot make a hypercall.
 *
 * Calling convention: `call` the stub. Arguments in RDI, RSI, RDX, R10, R8
 * (the Linux syscall registers, as Xen's 64-bit PV ABI); the result comes
 * back in RAX as an spv_s64: >= 0 on success, -SPV_ERRNO_* on failure. Only
 * RAX changes.
 */

/* The MSR the guest writes the hypercall page's address to. */
#define SPV_HYPERCALL_MSR_HYPERCALL_PAGE	0x40000200
/* The port the stubs write the hypercall number to. */
#define SPV_HYPERCALL_HYPERCALL_PORT		0xf6
/* Bytes per stub, and stubs in the (4096-byte) page. */
#define SPV_HYPERCALL_STUB_SIZE			32
#define SPV_HYPERCALL_STUB_COUNT		(4096 / SPV_HYPERCALL_STUB_SIZE)
/* Offset of the stub of hypercall nr in the hypercall page. */
#define SPV_HYPERCALL_STUB_OFFSET(nr)		((nr) * SPV_HYPERCALL_STUB_SIZE)

/*
 * Hypercall numbers and their arguments (RDI, RSI, RDX, R10, R8).
 */
/*
 * Batch of page-table updates (struct spv_mm_mmu_update): requests, count,
 * pointer to a u32 "done" count (or 0), domain (must be SPV_DOMID_SELF).
 */
#define SPV_HYPERCALL_MMU_UPDATE	1
/* Memory reservation and map (SPV_MEMORY_*): command, argument pointer. */
#define SPV_HYPERCALL_MEMORY_OP		12
/* Several hypercalls in one (struct spv_hypercall_multicall_entry): entries, count. */
#define SPV_HYPERCALL_MULTICALL		13
/* Version (SPV_VERSION_*): command, argument pointer. */
#define SPV_HYPERCALL_VERSION		17
/* Console (SPV_CONSOLE_*): command, count, buffer. */
#define SPV_HYPERCALL_CONSOLE_IO	18
/*
 * Page-table management (struct spv_mm_mmuext_op): operations, count,
 * pointer to a u32 "done" count (or 0), domain.
 */
#define SPV_HYPERCALL_MMUEXT_OP		26
/* Scheduling (SPV_SCHED_*): command, argument. */
#define SPV_HYPERCALL_SCHED_OP		29

/*
 * pvabi::hypercall::ALL, every hypercall number with its name, in the same
 * order, as an X-macro: X(number, "name") for each. For example
 *	#define NAME(nr, name) [nr] = name,
 *	static const char *const names[] = { SPV_HYPERCALL_ALL(NAME) };
 */
#define SPV_HYPERCALL_ALL(X)					\
	X(SPV_HYPERCALL_MMU_UPDATE, "mmu_update")		\
	X(SPV_HYPERCALL_MEMORY_OP, "memory_op")			\
	X(SPV_HYPERCALL_MULTICALL, "multicall")			\
	X(SPV_HYPERCALL_VERSION, "version")			\
	X(SPV_HYPERCALL_CONSOLE_IO, "console_io")		\
	X(SPV_HYPERCALL_MMUEXT_OP, "mmuext_op")			\
	X(SPV_HYPERCALL_SCHED_OP, "sched_op")

/* Largest batch one SPV_HYPERCALL_MULTICALL takes. */
#define SPV_HYPERCALL_MULTICALL_MAX	512

/* The domain itself, in the domain argument of the MMU hypercalls. */
#define SPV_DOMID_SELF			0x7ff0

/* ------------------------------------------------------------------------
 * errno: hypercalls return -errno, with Linux's numbering (as Xen does), so
 * a Linux guest can pass a failure on unchanged.
 */
#define SPV_ERRNO_EPERM		1	/* operation not permitted */
#define SPV_ERRNO_ENOENT	2	/* no such entry */
#define SPV_ERRNO_E2BIG		7	/* argument list too long (batch too large) */
#define SPV_ERRNO_EAGAIN	11	/* try again */
#define SPV_ERRNO_ENOMEM	12	/* out of memory */
#define SPV_ERRNO_EFAULT	14	/* bad address (a pointer outside the guest's RAM) */
#define SPV_ERRNO_EBUSY		16	/* busy */
#define SPV_ERRNO_EINVAL	22	/* invalid argument */
#define SPV_ERRNO_ENOSYS	38	/* no such hypercall (or command) */
#define SPV_ERRNO_EOVERFLOW	75	/* a reference count would overflow */

/* ------------------------------------------------------------------------
 * version: SPV_HYPERCALL_VERSION commands.
 */
/* Returns major << 16 | minor. */
#define SPV_VERSION_VERSION		0
/* Copies the 16-byte extra-version string to the argument pointer. */
#define SPV_VERSION_EXTRAVERSION	1
/* Length of the extra-version buffer. */
#define SPV_VERSION_EXTRAVERSION_LEN	16

/* ------------------------------------------------------------------------
 * console: SPV_HYPERCALL_CONSOLE_IO commands.
 */
/* Writes count bytes from buffer to the domain's console; returns the number written. */
#define SPV_CONSOLE_WRITE	0
/*
 * Reads up to count bytes of console input into buffer; returns the number
 * read (0 if none is waiting).
 */
#define SPV_CONSOLE_READ	1
/*
 * Largest count one call takes; longer writes are cut and the returned count
 * says how much was taken.
 */
#define SPV_CONSOLE_MAX_CHUNK	4096
/*
 * GSI (I/O APIC pin; edge-triggered, active high) the hypervisor pulses when
 * console input arrives for SPV_CONSOLE_READ, if SPV_CPUID_FEATURES_CONSOLE_IRQ
 * is set (domains with an interrupt controller). The guest then reads until
 * SPV_CONSOLE_READ returns 0; it needs no polling. An ISA line no other
 * device uses (COM1 has 4, the power GED 5; the virtio slots take 16 and up).
 */
#define SPV_CONSOLE_IRQ		6

/* ------------------------------------------------------------------------
 * sched: SPV_HYPERCALL_SCHED_OP commands.
 */
/* Gives up the vCPU for now. */
#define SPV_SCHED_YIELD		0
/*
 * Blocks until an event (console input, a timer) or for at most the number
 * of microseconds in the argument (0: no limit).
 */
#define SPV_SCHED_BLOCK		1
/* Ends the domain; the argument points to a struct spv_sched_shutdown. */
#define SPV_SCHED_SHUTDOWN	2
/* struct spv_sched_shutdown.reason: power off, reboot, crash (a guest panic). */
#define SPV_SCHED_REASON_POWEROFF	0
#define SPV_SCHED_REASON_REBOOT		1
#define SPV_SCHED_REASON_CRASH		3

/* ------------------------------------------------------------------------
 * memory: SPV_HYPERCALL_MEMORY_OP commands (ballooning and the memory map).
 */
/* Give frames back to the domain; returns the number of extents done. */
#define SPV_MEMORY_INCREASE_RESERVATION	0
/* Take frames away from the domain (balloon inflate); returns the number of extents done. */
#define SPV_MEMORY_DECREASE_RESERVATION	1
/* Pages the domain has now. */
#define SPV_MEMORY_CURRENT_RESERVATION	3
/* Pages the domain may have at most. */
#define SPV_MEMORY_MAXIMUM_RESERVATION	4
/* Copies the memory map (struct spv_memory_memory_map). */
#define SPV_MEMORY_MEMORY_MAP		9

/* ------------------------------------------------------------------------
 * mm: direct paging, SPV_HYPERCALL_MMU_UPDATE and SPV_HYPERCALL_MMUEXT_OP.
 */
/* Low bits of struct spv_mm_mmu_update.ptr: the command. */
#define SPV_MM_MMU_NORMAL_PT_UPDATE		0	/* normal, checked update */
#define SPV_MM_MMU_MACHPHYS_UPDATE		1	/* as Xen; not supported */
#define SPV_MM_MMU_PT_UPDATE_PRESERVE_AD	2	/* keep the entry's A/D bits */

/* struct spv_mm_mmuext_op.cmd; the numbers are Xen's (xen/include/public/xen.h). */
#define SPV_MM_MMUEXT_PIN_L1_TABLE	0	/* pin frame arg1 as an L1 table */
#define SPV_MM_MMUEXT_PIN_L2_TABLE	1	/* pin as L2 */
#define SPV_MM_MMUEXT_PIN_L3_TABLE	2	/* pin as L3 */
#define SPV_MM_MMUEXT_PIN_L4_TABLE	3	/* pin as L4 */
#define SPV_MM_MMUEXT_UNPIN_TABLE	4	/* unpin a table */
#define SPV_MM_MMUEXT_NEW_BASEPTR	5	/* switch to the L4 table in arg1 (the new CR3) */
#define SPV_MM_MMUEXT_TLB_FLUSH_LOCAL	6	/* flush this vCPU's TLB */
#define SPV_MM_MMUEXT_INVLPG_LOCAL	7	/* invalidate address arg1 on this vCPU */
#define SPV_MM_MMUEXT_TLB_FLUSH_MULTI	8	/* as Xen, not supported: use TLB_FLUSH_ALL */
#define SPV_MM_MMUEXT_INVLPG_MULTI	9	/* as Xen, not supported: use INVLPG_ALL */
#define SPV_MM_MMUEXT_TLB_FLUSH_ALL	10	/* flush every vCPU's TLB */
#define SPV_MM_MMUEXT_INVLPG_ALL	11	/* invalidate address arg1 on every vCPU */
/* Largest batch of updates or operations one call takes. */
#define SPV_MM_MAX_BATCH		4096

#if !defined(__ASSEMBLY__) && !defined(__ASSEMBLER__)

/*
 * Structures placed in guest memory, in lib.rs order. Sizes are asserted
 * here; offsets, alignment and field types by the Rust test.
 */

/*
 * pvabi::pvm::Vif: the virtual interrupt flag page, one per vCPU, zeroed
 * before registration through SPV_PVM_MSR_VIF. Placed in a page of its own.
 */
struct spv_pvm_vif {
	spv_u8 interrupt_flag;		/* virtual IF */
	spv_u8 pending;			/* an interrupt is pending */
	spv_u8 reserved[6];		/* zero */
	/*
	 * Meant for the CR2 of the last page fault delivered to the guest;
	 * on our kvm_pvm variant it stays 0, so read CR2 itself (which does
	 * hold the faulting address).
	 */
	spv_u64 cr2;
} __attribute__((__aligned__(16)));
_Static_assert(sizeof(struct spv_pvm_vif) == 16, "struct spv_pvm_vif must be 16 bytes");
_Static_assert(_Alignof(struct spv_pvm_vif) == 16, "struct spv_pvm_vif must be 16-byte aligned");

/* pvabi::boot::StartInfo: handed to a freestanding guest in RDI. */
struct spv_boot_start_info {
	spv_u32 magic;		/* SPV_BOOT_START_INFO_MAGIC */
	spv_u32 version;	/* SPV_BOOT_START_INFO_VERSION */
	spv_u32 vcpu_count;	/* number of vCPUs of the domain */
	spv_u32 flags;		/* reserved, zero */
	spv_u64 ram_bytes;	/* bytes of RAM (sum of the RAM entries of the map) */
	spv_u64 cmdline_gpa;	/* guest-physical address of the NUL-terminated command line */
	spv_u64 cmdline_len;	/* length of the command line without its NUL */
	spv_u64 memmap_gpa;	/* guest-physical address of the memory map */
	spv_u64 memmap_entries;	/* number of memory map entries */
};
_Static_assert(sizeof(struct spv_boot_start_info) == 56, "struct spv_boot_start_info must be 56 bytes");

/* pvabi::boot::MemMapEntry: one memory map entry, E820 numbering. */
struct spv_boot_mem_map_entry {
	spv_u64 addr;		/* first guest-physical address */
	spv_u64 size;		/* size in bytes */
	spv_u32 kind;		/* SPV_BOOT_MEMMAP_RAM or SPV_BOOT_MEMMAP_RESERVED */
	spv_u32 reserved;	/* zero */
};
_Static_assert(sizeof(struct spv_boot_mem_map_entry) == 24, "struct spv_boot_mem_map_entry must be 24 bytes");

/*
 * pvabi::hypercall::MulticallEntry: one entry of an SPV_HYPERCALL_MULTICALL
 * batch; result is written back.
 */
struct spv_hypercall_multicall_entry {
	spv_u64 op;		/* hypercall number */
	spv_u64 result;		/* its result, written by the hypervisor: an spv_s64 (-SPV_ERRNO_*) */
	spv_u64 args[6];	/* its arguments */
};
_Static_assert(sizeof(struct spv_hypercall_multicall_entry) == 64, "struct spv_hypercall_multicall_entry must be 64 bytes");

/* pvabi::sched::Shutdown: argument of SPV_SCHED_SHUTDOWN. */
struct spv_sched_shutdown {
	spv_u32 reason;		/* SPV_SCHED_REASON_* */
};
_Static_assert(sizeof(struct spv_sched_shutdown) == 4, "struct spv_sched_shutdown must be 4 bytes");

/*
 * pvabi::memory::Reservation: argument of SPV_MEMORY_INCREASE_RESERVATION
 * and SPV_MEMORY_DECREASE_RESERVATION.
 */
struct spv_memory_reservation {
	spv_u64 extent_start;	/* guest-physical address of an array of u64 frame numbers */
	spv_u64 nr_extents;	/* number of extents */
	spv_u32 extent_order;	/* log2 of pages per extent (only 0 is supported) */
	spv_u32 mem_flags;	/* zero */
	spv_u32 domid;		/* SPV_DOMID_SELF */
	spv_u32 pad;		/* zero */
};
_Static_assert(sizeof(struct spv_memory_reservation) == 32, "struct spv_memory_reservation must be 32 bytes");

/*
 * pvabi::memory::MemoryMap: argument of SPV_MEMORY_MEMORY_MAP. The guest
 * gives a buffer of nr_entries struct spv_boot_mem_map_entry; the hypervisor
 * writes the map and sets nr_entries to the number written.
 */
struct spv_memory_memory_map {
	spv_u32 nr_entries;	/* in: buffer capacity; out: entries written */
	spv_u32 pad;		/* zero */
	spv_u64 buffer;		/* guest-physical address of the buffer */
};
_Static_assert(sizeof(struct spv_memory_memory_map) == 16, "struct spv_memory_memory_map must be 16 bytes");

/*
 * pvabi::mm::MmuUpdate: one page-table update: write val to the entry at
 * guest-physical address ptr & ~7; the low bits of ptr are the command
 * (SPV_MM_MMU_*).
 */
struct spv_mm_mmu_update {
	spv_u64 ptr;		/* entry address | command */
	spv_u64 val;		/* new entry */
};
_Static_assert(sizeof(struct spv_mm_mmu_update) == 16, "struct spv_mm_mmu_update must be 16 bytes");

/* pvabi::mm::MmuextOp: one page-table management operation. */
struct spv_mm_mmuext_op {
	spv_u32 cmd;		/* SPV_MM_MMUEXT_* */
	spv_u32 pad;		/* zero */
	spv_u64 arg1;		/* frame number (pin, unpin, new base pointer) or linear address (invlpg) */
	spv_u64 arg2;		/* unused, zero */
};
_Static_assert(sizeof(struct spv_mm_mmuext_op) == 24, "struct spv_mm_mmuext_op must be 24 bytes");

#endif /* !assembly */

#endif /* SPLITPV_ABI_H */

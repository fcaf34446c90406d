//! Freestanding x86-64 test guest of the SplitPVonKVM hypervisor.
//!
//! Booted per `pvabi::boot` on every vCPU at once. `_start` (entry.rs)
//! registers the vCPU's VIF page on kvm_pvm hosts, so that the guest runs
//! natively there, and enters [`rust_entry`]. The boot vCPU builds the
//! guest's page tables, GDT, TSSs and IDT, prints a banner and runs the
//! workload named on the command line (see cmdline.rs); the other vCPUs
//! report in and halt. Results leave through COM1 (or the `console_io`
//! hypercall, see pv.rs) and the debug-exit port.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod arch;
mod bench;
mod cmdline;
mod console;
mod directpaging;
mod entry;
mod hypercall;
mod mem;
mod paging;
mod pv;
mod sync;
mod traps;
mod usermode;
mod virtio;

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pvabi::boot::{MemMapEntry, StartInfo, CMDLINE_MAX, MEMMAP_MAX_ENTRIES, MEMMAP_RAM, START_INFO_MAGIC, START_INFO_VERSION};
use pvabi::cpuid::{HostBackend, LEAF_FEATURES, LEAF_VERSION};
use pvabi::{exit_status, layout, ports, pvm, sched};

use cmdline::{CmdlineError, Workload, WorkloadNames};
use console::Escaped;
use entry::{ENTRY_SIGNATURE, ENTRY_VIF_REGISTERED, MAX_VCPUS};

/// CR3 of the guest's own page tables once the boot vCPU has built them
/// (and the IDT); 0 before. The release store publishes both to the other
/// vCPUs, which wait for it.
static KERNEL_CR3: AtomicU64 = AtomicU64::new(0);

/// vCPUs that finished bringing themselves up.
static VCPUS_ONLINE: AtomicU32 = AtomicU32::new(0);

/// Ends the domain with `status` (see `pvabi::exit_status`).
pub fn exit(status: u32) -> ! {
    // Between lines, so that another vCPU's line is not cut off midway.
    console::silence();
    arch::outl(ports::DEBUG_EXIT, status);
    // The hypervisor does not resume a vCPU after an exit request; should
    // it, park the vCPU rather than run on.
    arch::halt_forever()
}

/// Reports an error and ends the domain with FAILURE.
macro_rules! fail {
    ($($arg:tt)*) => {{
        println!("testguest: error: {}", format_args!($($arg)*));
        exit(exit_status::FAILURE)
    }};
}

/// Called by `_start` on every vCPU with the boot registers and the
/// `ENTRY_*` flags, on the vCPU's own stack.
extern "C" fn rust_entry(start_info_gpa: u64, vcpu_index: u64, entry_flags: u64) -> ! {
    if vcpu_index == 0 {
        boot_vcpu_main(start_info_gpa, entry_flags)
    } else {
        secondary_vcpu_main(vcpu_index as usize)
    }
}

/// Everything the boot vCPU learned from the StartInfo, copied out of the
/// boot area.
struct BootParameters {
    vcpu_count: u32,
    ram_bytes: u64,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    memory_map: [MemMapEntry; MEMMAP_MAX_ENTRIES],
    memory_map_len: usize,
}

impl BootParameters {
    fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }

    /// The memory map from the StartInfo.
    fn memory_map(&self) -> &[MemMapEntry] {
        &self.memory_map[..self.memory_map_len]
    }

    /// The end of the highest RAM entry of the memory map.
    fn ram_end(&self) -> u64 {
        self.memory_map().iter().filter(|entry| entry.kind == MEMMAP_RAM).map(|entry| entry.addr + entry.size).max().unwrap_or(0)
    }
}

/// Reads and validates the StartInfo at `gpa`, through the boot identity
/// map.
fn read_start_info(gpa: u64) -> BootParameters {
    // SAFETY: the boot map identity-maps the first 4 GiB, where the
    // hypervisor places the StartInfo; the read is unaligned-tolerant and
    // its contents are validated before use.
    let info: StartInfo = unsafe { core::ptr::read_unaligned(gpa as *const StartInfo) };
    if info.magic != START_INFO_MAGIC || info.version != START_INFO_VERSION {
        fail!("no valid StartInfo at {gpa:#x} (magic {:#x}, version {})", info.magic, info.version);
    }
    let mut boot = BootParameters {
        vcpu_count: info.vcpu_count,
        ram_bytes: info.ram_bytes,
        cmdline: [0; CMDLINE_MAX],
        cmdline_len: 0,
        memory_map: [MemMapEntry::default(); MEMMAP_MAX_ENTRIES],
        memory_map_len: 0,
    };
    // The buffer keeps room for a NUL, as the ABI's limit includes it.
    let cmdline_len = (info.cmdline_len as usize).min(CMDLINE_MAX - 1);
    if info.cmdline_len as usize > cmdline_len {
        println!("testguest: warning: command line truncated to {cmdline_len} bytes");
    }
    // SAFETY: the command line lies in the boot area (identity-mapped); at
    // most `cmdline_len` bytes are read into a buffer at least that large.
    unsafe { core::ptr::copy_nonoverlapping(info.cmdline_gpa as *const u8, boot.cmdline.as_mut_ptr(), cmdline_len) };
    boot.cmdline_len = boot.cmdline[..cmdline_len].iter().position(|&byte| byte == 0).unwrap_or(cmdline_len);

    boot.memory_map_len = (info.memmap_entries as usize).min(MEMMAP_MAX_ENTRIES);
    if info.memmap_entries as usize > boot.memory_map_len {
        println!("testguest: warning: memory map has {} entries, using the first {}", info.memmap_entries, MEMMAP_MAX_ENTRIES);
    }
    for (index, slot) in boot.memory_map[..boot.memory_map_len].iter_mut().enumerate() {
        // SAFETY: entry `index` of the map the StartInfo describes, in the
        // identity-mapped boot area.
        *slot = unsafe { core::ptr::read_unaligned((info.memmap_gpa as *const MemMapEntry).add(index)) };
    }
    boot
}

/// What CPUID says about the host.
struct HostInfo {
    /// Our leaves are present.
    has_signature: bool,
    abi_major: u16,
    abi_minor: u16,
    backend: HostBackend,
}

fn host_info(entry_flags: u64) -> HostInfo {
    if entry_flags & ENTRY_SIGNATURE == 0 {
        return HostInfo { has_signature: false, abi_major: 0, abi_minor: 0, backend: HostBackend::Unknown };
    }
    let version = arch::cpuid(LEAF_VERSION).eax;
    HostInfo {
        has_signature: true,
        abi_major: (version >> 16) as u16,
        abi_minor: version as u16,
        backend: HostBackend::from_u32(arch::cpuid(LEAF_FEATURES).ebx),
    }
}

fn boot_vcpu_main(start_info_gpa: u64, entry_flags: u64) -> ! {
    let vif_registered = entry_flags & ENTRY_VIF_REGISTERED != 0;
    console::init();
    traps::init_tables();
    traps::load_tables(0);

    let boot = read_start_info(start_info_gpa);
    if boot.vcpu_count as usize > MAX_VCPUS {
        fail!("{} vCPUs, but this guest supports at most {MAX_VCPUS}", boot.vcpu_count);
    }
    let pml4 = match paging::build_page_tables(boot.memory_map(), vif_registered, &usermode::window_pages()) {
        Ok(pml4) => pml4,
        Err(error) => fail!("cannot build the identity map: {error}"),
    };
    // SAFETY: the new map covers the image (code, data, stacks), the boot
    // area and all RAM at the same addresses as the boot map (and adds the
    // user window, which the boot map does not have).
    unsafe { arch::write_cr3(pml4) };

    let host = host_info(entry_flags);
    print_banner(&boot, &host, vif_registered);
    VCPUS_ONLINE.fetch_add(1, Ordering::AcqRel);
    // Only now let the other vCPUs go, so that the banner comes first.
    KERNEL_CR3.store(pml4, Ordering::Release);

    let options = match cmdline::parse(boot.cmdline()) {
        Ok(options) => options,
        Err(CmdlineError::UnknownWorkload(name)) => {
            fail!("unknown workload \"{}\" (known: {WorkloadNames})", Escaped(name))
        }
        Err(CmdlineError::BadIterations(text)) => {
            fail!("iterations=\"{}\" is not a count (decimal, `_` separators and e-notation allowed)", Escaped(text))
        }
        Err(CmdlineError::BadValue { key, value, expected }) => {
            fail!("{}=\"{}\": expected {expected}", Escaped(key), Escaped(value))
        }
    };
    if let Some(option) = options.ignored {
        println!("testguest: ignored {} unknown option(s), last \"{}\"", options.ignored_count, Escaped(option));
    }
    run_workload(&options, &boot, vif_registered)
}

/// Prints the banner: one line, plus the host's PVM facts on kvm_pvm and a
/// warning on an ABI mismatch, written in one go so that no other vCPU's
/// line lands in between.
fn print_banner(boot: &BootParameters, host: &HostInfo, vif_registered: bool) {
    let (abi_major, abi_minor, backend, mode) = if !host.has_signature {
        (pvabi::ABI_VERSION_MAJOR, pvabi::ABI_VERSION_MINOR, "unknown", "no SplitPVonKVM leaves")
    } else if vif_registered {
        (host.abi_major, host.abi_minor, host.backend.name(), "native: VIF registered")
    } else {
        (host.abi_major, host.abi_minor, host.backend.name(), "hardware-assisted")
    };
    let abi_mismatch = (host.has_signature && host.abi_major != pvabi::ABI_VERSION_MAJOR).then_some(AbiMismatch);
    let pvm_facts = vif_registered.then(|| {
        // SAFETY: both MSRs exist on kvm_pvm hosts, which is what a
        // successful VIF registration proved.
        unsafe { PvmFacts { signature: arch::rdmsr(pvm::MSR_SIGNATURE), tsc_khz: arch::rdmsr(pvm::MSR_TSC_KHZ) } }
    });
    println!(
        "testguest: SplitPVonKVM ABI {abi_major}.{abi_minor}, backend={backend} ({mode}), {} vCPUs, {} MiB RAM, cmdline \"{}\"{}{}",
        boot.vcpu_count,
        boot.ram_bytes >> 20,
        Escaped(boot.cmdline()),
        ExtraLine(pvm_facts),
        ExtraLine(abi_mismatch),
    );
}

/// Displays as nothing, or as a newline and the value: an optional extra
/// line within one `println!`.
struct ExtraLine<T>(Option<T>);

impl<T: core::fmt::Display> core::fmt::Display for ExtraLine<T> {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Some(line) => write!(out, "\n{line}"),
            None => Ok(()),
        }
    }
}

/// What kvm_pvm's MSRs say.
struct PvmFacts {
    signature: u64,
    tsc_khz: u64,
}

impl core::fmt::Display for PvmFacts {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let verdict = if self.signature == pvm::SIGNATURE_VALUE { "PVM" } else { "unexpected" };
        write!(
            out,
            "testguest: PVM signature MSR {:#x} = {:#x} ({verdict}), TSC {} kHz",
            pvm::MSR_SIGNATURE,
            self.signature,
            self.tsc_khz
        )
    }
}

/// The host speaks another major version of the ABI.
struct AbiMismatch;

impl core::fmt::Display for AbiMismatch {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            out,
            "testguest: warning: the host's ABI major version differs from the guest's ({}.{})",
            pvabi::ABI_VERSION_MAJOR,
            pvabi::ABI_VERSION_MINOR
        )
    }
}

fn secondary_vcpu_main(vcpu: usize) -> ! {
    // The boot vCPU publishes its page tables and IDT with a release store.
    let cr3 = loop {
        match KERNEL_CR3.load(Ordering::Acquire) {
            0 => core::hint::spin_loop(),
            cr3 => break cr3,
        }
    };
    traps::load_tables(vcpu);
    // SAFETY: the boot vCPU's map covers this vCPU's code, data and stack
    // at their current addresses (see boot_vcpu_main).
    unsafe { arch::write_cr3(cr3) };
    println!("testguest: vCPU {vcpu} online");
    VCPUS_ONLINE.fetch_add(1, Ordering::AcqRel);
    arch::halt_forever()
}

fn run_workload(options: &cmdline::Options<'_>, boot: &BootParameters, vif_registered: bool) -> ! {
    let vcpu_count = boot.vcpu_count;
    let iterations = options.iterations;
    let virtio = |mode| -> ! {
        let passed = virtio::run(mode, &options.virtio, boot.memory_map(), vif_registered);
        exit(if passed { exit_status::SUCCESS } else { exit_status::FAILURE })
    };
    match options.workload {
        Workload::Banner => exit(exit_status::SUCCESS),
        Workload::Compute => {
            count_down(iterations);
            println!("testguest: compute done, {iterations} iterations");
            exit(exit_status::SUCCESS)
        }
        Workload::TripleFault => {
            traps::load_empty_idt();
            // SAFETY: raises #UD with no IDT to deliver it through; the CPU
            // shuts down, which is what this workload is for.
            unsafe { asm!("ud2", options(nomem, nostack)) };
            fail!("still running after #UD with an empty IDT: no triple fault")
        }
        Workload::InvalidOpcode => {
            // SAFETY: raises #UD, which the exception handler reports before
            // ending the domain.
            unsafe { asm!("ud2", options(nomem, nostack)) };
            fail!("execution continued after ud2")
        }
        Workload::UnbackedMmio => {
            let probe = layout::UNBACKED_MMIO_PROBE as *const u32;
            // SAFETY: the identity map covers the MMIO hole, so the access
            // leaves the guest as an MMIO exit; no device lives there and
            // the hypervisor is expected to end the domain.
            let value = unsafe { core::ptr::read_volatile(probe) };
            fail!("read {value:#x} from unbacked MMIO at {probe:p}: the hypervisor did not stop the domain")
        }
        Workload::PageFault => {
            let probe = paging::UNMAPPED_ADDRESS as *const u64;
            // SAFETY: the address is canonical and unmapped, so the read
            // faults (#PF) into the exception handler, which ends the domain.
            let value = unsafe { core::ptr::read_volatile(probe) };
            fail!("read {value:#x} from unmapped {probe:p} without a page fault")
        }
        Workload::Smp => {
            while VCPUS_ONLINE.load(Ordering::Acquire) < vcpu_count {
                core::hint::spin_loop();
            }
            println!("testguest: all {vcpu_count} vCPUs online");
            exit(exit_status::SUCCESS)
        }
        Workload::PvBasic => pv::basic(boot),
        Workload::PvHostile => pv::hostile(boot),
        Workload::PvConsole => pv::console_workload(),
        Workload::PvConsoleEcho => pv::console_echo_workload(options.virtio.console_wait_ms),
        Workload::PowerButton => {
            // dom0's `shutdown` presses the ACPI power button: the GED
            // event register reads (and clears) bit 0. Poll it every ~10 ms
            // (each read is an MMIO exit) and power off like a guest that
            // honours the button.
            println!("testguest: waiting for the power button");
            let register = pvabi::power::GED_MMIO_BASE as *const u32;
            loop {
                // SAFETY: the identity map covers the MMIO hole (uncached),
                // and the hypervisor backs this register.
                let events = unsafe { core::ptr::read_volatile(register) };
                if events & pvabi::power::EVENT_POWER_BUTTON != 0 {
                    println!("testguest: power button pressed; powering off");
                    pv::shutdown(sched::REASON_POWEROFF)
                }
                let start = arch::rdtsc();
                while arch::rdtsc().wrapping_sub(start) < 20_000_000 {
                    core::hint::spin_loop();
                }
            }
        }
        Workload::PvPoweroff => pv::shutdown(sched::REASON_POWEROFF),
        Workload::PvReboot => pv::shutdown(sched::REASON_REBOOT),
        Workload::PvCrash => pv::shutdown(sched::REASON_CRASH),
        Workload::PvPaging => directpaging::workload(boot),
        Workload::PvPagingHostile => directpaging::hostile(boot),
        Workload::PvPagingCr3Native => directpaging::cr3_native(),
        Workload::PvPagingWpOff => directpaging::wp_off(),
        Workload::PvPagingWpSpin => directpaging::wp_spin(),
        Workload::PvPagingLoop => directpaging::update_loop(iterations),
        Workload::PvPagingCr3Unpin => directpaging::cr3_unpin(),
        Workload::VirtioProbe => virtio(virtio::Mode::Probe),
        Workload::VirtioBlk => virtio(virtio::Mode::Blk),
        Workload::VirtioNet => virtio(virtio::Mode::Net),
        Workload::VirtioConsole => virtio(virtio::Mode::Console),
        Workload::VirtioHostile => virtio(virtio::Mode::Hostile),
        Workload::VirtioBench => virtio(virtio::Mode::Bench),
        Workload::IoLoop => bench::io_loop(iterations, vif_registered),
        Workload::PvNull => bench::null_hypercall(iterations, vif_registered),
        Workload::PvPagingBench => directpaging::update_bench(iterations, vif_registered),
    }
}

/// The compute workload: a `dec`/`jnz` loop, `iterations` times.
fn count_down(iterations: u64) {
    if iterations == 0 {
        return;
    }
    // SAFETY: register-only loop; touches no memory or stack.
    unsafe {
        asm!(
            "2:",
            "dec {counter}",
            "jnz 2b",
            counter = inout(reg) iterations => _,
            options(nomem, nostack),
        );
    }
}

/// The personality routine core's precompiled unwind tables refer to.
///
/// core is built for unwinding; this guest is `panic=abort` and discards
/// the unwind tables, yet the reference to the symbol remains and must
/// resolve. Nothing unwinds, so nothing calls it.
#[no_mangle]
extern "C" fn rust_eh_personality() -> ! {
    console::print_line_from_fault(format_args!("testguest: unwinding is not supported"));
    exit(exit_status::FAILURE)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(location) => console::print_line_from_fault(format_args!("testguest: panic at {location}: {}", info.message())),
        None => console::print_line_from_fault(format_args!("testguest: panic: {}", info.message())),
    }
    exit(exit_status::FAILURE)
}

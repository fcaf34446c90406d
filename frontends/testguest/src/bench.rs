//! Micro-benchmarks of the exits themselves, for the ring benchmark's
//! baselines (`bench/` on the host):
//!
//! - `io-loop iterations=N`: N one-byte `out`s to [`UNUSED_PORT`], a port
//!   no device claims (the hypervisor counts and ignores them): one bare
//!   port-I/O exit to the hypervisor process each.
//! - `pv-null iterations=N`: N `HYPERVISOR_xen_version(VERSION)` calls,
//!   the null hypercall: the same exit plus the hypercall dispatch.
//! - `pv-paging-bench` (directpaging.rs): batched `mmu_update`.
//!
//! Each prints one line, `BENCH <name> PASS: iterations=N cycles=C
//! tsc_khz=K` (K is 0 when the TSC rate is unknown), and exits with
//! SUCCESS; `BENCH <name> FAIL: <why>` and FAILURE otherwise.

use core::arch::asm;

use pvabi::exit_status;

use crate::hypercall;
use crate::{arch, exit, println};

/// The POST-code port: claimed by no device of ours.
pub const UNUSED_PORT: u16 = 0x80;

/// The TSC rate for the result lines (0: unknown).
pub fn tsc_khz(vif_registered: bool) -> u64 {
    crate::virtio::tsc_khz(vif_registered).unwrap_or(0)
}

/// `io-loop`.
pub fn io_loop(iterations: u64, vif_registered: bool) -> ! {
    let start = arch::rdtsc();
    for _ in 0..iterations {
        // SAFETY: a write to a port no device claims; the hypervisor
        // ignores it. Touches no memory.
        unsafe { asm!("out dx, al", in("dx") UNUSED_PORT, in("al") 0u8, options(nomem, nostack, preserves_flags)) };
    }
    let cycles = arch::rdtsc().wrapping_sub(start);
    println!("BENCH io-loop PASS: iterations={iterations} cycles={cycles} tsc_khz={}", tsc_khz(vif_registered));
    exit(exit_status::SUCCESS)
}

/// `pv-null`.
pub fn null_hypercall(iterations: u64, vif_registered: bool) -> ! {
    let hc = match hypercall::install() {
        Ok(hc) => hc,
        Err(error) => {
            println!("BENCH pv-null FAIL: the hypercall page cannot be installed: {error}");
            exit(exit_status::FAILURE)
        }
    };
    let want = hc.version();
    let start = arch::rdtsc();
    for _ in 0..iterations {
        let got = hc.version();
        if got != want {
            println!("BENCH pv-null FAIL: version returned {got:?}, first {want:?}");
            exit(exit_status::FAILURE)
        }
    }
    let cycles = arch::rdtsc().wrapping_sub(start);
    println!("BENCH pv-null PASS: iterations={iterations} cycles={cycles} tsc_khz={}", tsc_khz(vif_registered));
    exit(exit_status::SUCCESS)
}

//! The hypercall interface exercised from inside the freestanding test
//! guest (its `pv-*` workloads, frontends/testguest/src/pv.rs): each
//! workload checks the results itself and prints one line per check; these
//! tests check its verdict, its lines, how the domain ended and what the
//! hypervisor counted (`--stats`).

use std::collections::BTreeMap;

use pvabi::exit_status::EXIT_CODE_CRASHED;
use pvabi::{ABI_VERSION_MAJOR, ABI_VERSION_MINOR};
use systests::{host_is_pvm, kvm_usable, run_testguest, stat_row, GuestRun};

macro_rules! require_kvm {
    () => {
        if !kvm_usable() {
            eprintln!("skipped: /dev/kvm is not usable on this host");
            return;
        }
    };
}

/// RAM of the domains below (`--mem`), which the reservation checks see.
const MEM_MIB: u64 = 64;
/// Its pages.
const RAM_PAGES: u64 = MEM_MIB << 8;

/// What `version(VERSION)` returns, as the guest prints it.
fn abi_version() -> u32 {
    u32::from(ABI_VERSION_MAJOR) << 16 | u32::from(ABI_VERSION_MINOR)
}

/// The hypervisor's per-hypercall counters from the `  hypercalls: a=N b=M`
/// line of `--stats` (empty for `none`).
fn hypercall_counts(r: &GuestRun) -> BTreeMap<String, u64> {
    let line = r
        .messages
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("hypercalls:"))
        .unwrap_or_else(|| panic!("--stats prints the hypercall counters\n{}", r.explain()));
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, n)| (name.to_string(), n.parse().unwrap_or_else(|_| panic!("count {n:?} of {name}"))))
        .collect()
}

/// Asserts that the counters are exactly `expected` (counters not listed
/// must be absent, i.e. zero).
fn assert_counts(r: &GuestRun, expected: &[(&str, u64)]) {
    let got = hypercall_counts(r);
    let want: BTreeMap<String, u64> = expected.iter().map(|(name, n)| (name.to_string(), *n)).collect();
    assert_eq!(got, want, "hypercall counters\n{}", r.explain());
}

/// On kvm_pvm, the guest must run natively: what KVM emulates is only the
/// port I/O (one emulated instruction each: serial bytes and hypercalls)
/// and the few privileged instructions of the boot, a few thousand at
/// most. Emulated, the workloads would be millions.
fn assert_native_on_pvm(r: &GuestRun) {
    let emulated = r.kvm_stat_total("insn_emulation").expect("--stats prints insn_emulation");
    eprintln!("insn_emulation={emulated}");
    if host_is_pvm() {
        assert!(r.console.contains("native: VIF registered"), "{}", r.explain());
        assert!(emulated < 10_000, "the guest must run natively on kvm_pvm: insn_emulation={emulated}\n{}", r.explain());
    }
}

/// Asserts that every check line is there and passed, and nothing failed.
fn assert_checks_passed(r: &GuestRun, workload: &str, count: usize, lines: &[&str]) {
    assert_eq!(r.code, Some(0), "{}", r.explain());
    assert!(!r.console.contains("FAILED"), "{}", r.explain());
    let summary = format!("testguest: pv: {workload}: all {count} checks passed");
    assert!(r.console.contains(&summary), "expected {summary:?}\n{}", r.explain());
    let ok_lines = r.console.lines().filter(|l| l.starts_with("testguest: pv: ") && l.ends_with(" ok")).count();
    assert_eq!(ok_lines, count, "one ok line per check\n{}", r.explain());
    for line in lines {
        assert!(r.console.lines().any(|l| l.starts_with(line) && l.ends_with(" ok")), "expected a line {line:?}... ok\n{}", r.explain());
    }
    assert!(r.messages.contains("the guest exited with status 0"), "{}", r.explain());
}

#[test]
fn pv_basic_makes_every_hypercall_once() {
    require_kvm!();
    let r = run_testguest("workload=pv-basic", &["--stats", "--mem", &MEM_MIB.to_string()]);
    let version = format!("testguest: pv: version(VERSION) = {} ok", abi_version());
    assert!(r.console.contains(&version), "expected {version:?}\n{}", r.explain());
    assert_checks_passed(
        &r,
        "pv-basic",
        11,
        &[
            "testguest: pv: hypercall page installed, its MSR reads back = 0x",
            "testguest: pv: version(EXTRAVERSION) = 0 and \"-splitpv-",
            "testguest: pv: console_io(WRITE) of a line returns its length = 56",
            "testguest: pv: console_io(READ) without input = 0",
            "testguest: pv: sched_op(YIELD) = 0",
            "testguest: pv: sched_op(BLOCK, 1000 us) = 0",
            &format!("testguest: pv: memory_op(MAXIMUM_RESERVATION) = RAM pages = {RAM_PAGES}"),
            &format!("testguest: pv: memory_op(CURRENT_RESERVATION) = RAM pages = {RAM_PAGES}"),
            // The boot area below 1 MiB is reserved, the rest RAM.
            &format!(
                "testguest: pv: memory_op(MEMORY_MAP) = the StartInfo's map = [0x0+0x100000 type 2, 0x100000+{:#x} type 1]",
                (MEM_MIB - 1) << 20
            ),
            &format!("testguest: pv: multicall [version, console_io(WRITE), unknown 77] = 0 [{}, 50, -ENOSYS]", abi_version()),
        ],
    );
    // What the guest wrote through console_io, alone and in the multicall.
    assert!(r.console.contains("testguest: pv: this line went through console_io(WRITE)\n"), "{}", r.explain());
    assert!(r.console.contains("testguest: pv: this line went through a multicall\n"), "{}", r.explain());
    // version: VERSION, EXTRAVERSION and one in the multicall; console_io:
    // WRITE, READ and one in the multicall; memory_op: MAXIMUM, CURRENT,
    // MEMORY_MAP. The multicall's entries count as calls of their own; its
    // entry 77 is the one unknown and the one failed call.
    assert_counts(
        &r,
        &[("version", 3), ("console_io", 3), ("sched_op", 2), ("memory_op", 3), ("multicall", 1), ("unknown", 1), ("failed", 1)],
    );
    assert_native_on_pvm(&r);
}

#[test]
fn pv_hostile_calls_are_refused_and_the_domain_lives_on() {
    require_kvm!();
    let r = run_testguest("workload=pv-hostile", &["--stats", "--mem", &MEM_MIB.to_string()]);
    assert_checks_passed(
        &r,
        "pv-hostile",
        23,
        &[
            "testguest: pv: unknown hypercall 77 = -ENOSYS",
            "testguest: pv: console_io(WRITE) of a buffer outside RAM = -EFAULT",
            "testguest: pv: console_io(WRITE) of a buffer running past the end of RAM = -EFAULT",
            "testguest: pv: version(EXTRAVERSION) to a buffer outside RAM = -EFAULT",
            "testguest: pv: sched_op(SHUTDOWN) with its argument outside RAM = -EFAULT",
            "testguest: pv: sched_op(SHUTDOWN) with reason 9 = -EINVAL",
            "testguest: pv: multicall of 513 entries = -E2BIG with 0 entries run",
            &format!("testguest: pv: multicall [nested multicall, version] = 0 [-EINVAL, {}]", abi_version()),
            "testguest: pv: memory_op(DECREASE_RESERVATION) of 1000000 extents = -E2BIG",
            "testguest: pv: memory_op(DECREASE_RESERVATION) of frame 0xff (below 1 MiB) = 0",
            "testguest: pv: memory_op(DECREASE_RESERVATION) of the hypercall page's frame 0x",
            "testguest: pv: the ballooned frame reads as zero = 0 non-zero words",
            &format!("testguest: pv: memory_op(CURRENT_RESERVATION) dropped by 1 = {}", RAM_PAGES - 1),
            &format!("testguest: pv: memory_op(CURRENT_RESERVATION) is back = {RAM_PAGES}"),
            "testguest: pv: MSR 0x40000200 still reads the installed page = 0x",
            "testguest: pv: version hypercall from user mode (CPL 3) = #GP (error code 0x0) at rip=0x",
            "testguest: pv: version(VERSION) after all of the above",
        ],
    );
    for what in ["(a misaligned address) to MSR 0x40000200 = #GP", "(an address outside RAM) to MSR 0x40000200 = #GP"] {
        assert!(r.console.lines().any(|l| l.contains(what) && l.ends_with(" ok")), "expected {what:?}\n{}", r.explain());
    }
    // failed: 77, the two console writes, EXTRAVERSION, the two shutdowns,
    // the oversized multicall and the oversized balloon request. The
    // nested multicall entry is refused without being dispatched, so it
    // counts nowhere; the balloon calls that take 0 frames succeed.
    // version: EXTRAVERSION, the multicall's second entry, the last check.
    // The user-mode version call must not reach the hypervisor: it would
    // make version 4 and the hypercall exits 18.
    assert_counts(
        &r,
        &[("version", 3), ("console_io", 2), ("sched_op", 2), ("memory_op", 8), ("multicall", 2), ("unknown", 1), ("failed", 8)],
    );
    assert_eq!(stat_row(&r.messages, "hypercalls"), Some(vec![17]), "hypercall exits\n{}", r.explain());
    assert_native_on_pvm(&r);
}

#[test]
fn pv_console_prints_through_console_io() {
    require_kvm!();
    let r = run_testguest("workload=pv-console", &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", r.explain());
    assert!(r.console.contains("lines now go through console_io, one hypercall each\n"), "{}", r.explain());
    assert!(r.console.contains("testguest: pv-console: done\n"), "{}", r.explain());
    let prefix = "testguest: pv-console: long line ";
    let long = r.console.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no long line\n{}", r.explain()));
    let digits: String = "0123456789".chars().cycle().take(5000 - prefix.len()).collect();
    assert!(
        long.len() == 5000 && long[prefix.len()..] == digits,
        "the 5000-byte line arrives whole: {} bytes\n{}",
        long.len(),
        r.explain()
    );
    // One call per line, two for the line longer than the guest's
    // 4096-byte buffer (console::MAX_CHUNK).
    assert_counts(&r, &[("console_io", 4)]);
    // Through the UART, the long line alone would be over 5000 port
    // writes; the banner takes about 230.
    let pio = stat_row(&r.messages, "pio_exits").expect("--stats prints pio_exits").iter().sum::<u64>();
    assert!(pio < 1000, "the lines must not go through the UART: pio_exits={pio}\n{}", r.explain());
    assert_native_on_pvm(&r);
}

#[test]
fn pv_poweroff_powers_the_domain_off() {
    require_kvm!();
    let r = run_testguest("workload=pv-poweroff", &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", r.explain());
    assert!(r.console.contains("testguest: pv: sched_op(SHUTDOWN, poweroff)"), "{}", r.explain());
    assert!(r.messages.contains("ended: the guest powered off"), "{}", r.explain());
    assert!(!r.console.contains("FAILED"), "{}", r.explain());
    assert_counts(&r, &[("sched_op", 1)]);
}

#[test]
fn pv_reboot_is_reported_as_a_reboot() {
    require_kvm!();
    let r = run_testguest("workload=pv-reboot", &[]);
    assert_eq!(r.code, Some(0), "{}", r.explain());
    assert!(r.console.contains("testguest: pv: sched_op(SHUTDOWN, reboot)"), "{}", r.explain());
    assert!(r.messages.contains("ended: the guest asked for a reboot"), "{}", r.explain());
    assert!(!r.console.contains("FAILED"), "{}", r.explain());
}

#[test]
fn pv_crash_is_a_crashed_domain() {
    require_kvm!();
    let r = run_testguest("workload=pv-crash", &[]);
    assert_eq!(r.code, Some(EXIT_CODE_CRASHED), "{}", r.explain());
    assert!(r.console.contains("testguest: pv: crashing on purpose"), "{}", r.explain());
    assert!(r.messages.contains("the domain crashed: the guest kernel panicked"), "{}", r.explain());
    assert!(r.messages.contains("its console shows no panic message"), "{}", r.explain());
}

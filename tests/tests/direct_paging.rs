//! Direct paging (`mmu_update` / `mmuext_op`) exercised from inside the
//! freestanding test guest (its `pv-paging` and `pv-paging-hostile`
//! workloads, frontends/testguest/src/directpaging.rs): the guest builds
//! and switches to an address space the hypervisor validated, then uses
//! it, or makes requests that must be refused. Each workload checks the
//! results itself and prints one line per check; these tests check its
//! verdict, its lines, and what the hypervisor's frame table counted
//! (`--stats`, the `direct paging:` line).

use std::collections::BTreeMap;

use systests::{host_is_pvm, kvm_usable, run_testguest, GuestRun};

macro_rules! require_kvm {
    () => {
        if !kvm_usable() {
            eprintln!("skipped: /dev/kvm is not usable on this host");
            return;
        }
    };
}

/// `name=N` pairs of the `--stats` line starting with `prefix`.
fn counters(r: &GuestRun, prefix: &str) -> BTreeMap<String, u64> {
    let line = r
        .messages
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("--stats prints a {prefix:?} line\n{}", r.explain()));
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, n)| (name.to_string(), n.parse().unwrap_or_else(|_| panic!("count {n:?} of {name}"))))
        .collect()
}

/// The frame table's rejections by reason, without the `rejected_`
/// prefix.
fn rejections(paging: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    paging.iter().filter_map(|(name, n)| name.strip_prefix("rejected_").map(|reason| (reason.to_string(), *n))).collect()
}

/// Asserts that each of `lines` starts a console line that passed.
fn assert_ok_lines(r: &GuestRun, lines: &[&str]) {
    for line in lines {
        assert!(
            r.console.lines().any(|l| l.starts_with(line) && l.ends_with(" ok")),
            "expected a line {line:?}... ok\n{}",
            r.explain()
        );
    }
}

/// Asserts the verdict: exit status 0, no failed check, `count` ok lines
/// and the summary.
fn assert_all_passed(r: &GuestRun, workload: &str, count: usize) {
    let failed: Vec<&str> = r.console.lines().filter(|l| l.contains("FAILED")).collect();
    assert!(failed.is_empty(), "failed checks:\n{}\n\n{}", failed.join("\n"), r.explain());
    let summary = format!("testguest: paging: {workload}: all {count} checks passed");
    assert!(r.console.contains(&summary), "expected {summary:?}\n{}", r.explain());
    let ok_lines = r.console.lines().filter(|l| l.starts_with("testguest: paging: ") && l.ends_with(" ok")).count();
    assert_eq!(ok_lines, count, "one ok line per check\n{}", r.explain());
    assert_eq!(r.code, Some(0), "{}", r.explain());
    assert!(r.messages.contains("the guest exited with status 0"), "{}", r.explain());
}

/// On kvm_pvm the guest must run natively (see tests/pv.rs): what KVM
/// emulates is the port I/O of the console and the hypercalls.
fn assert_native_on_pvm(r: &GuestRun) {
    if host_is_pvm() {
        let emulated = r.kvm_stat_total("insn_emulation").expect("--stats prints insn_emulation");
        assert!(r.console.contains("native: VIF registered"), "{}", r.explain());
        assert!(emulated < 10_000, "the guest must run natively on kvm_pvm: insn_emulation={emulated}\n{}", r.explain());
    }
}

/// Lines both workloads print while building and loading the new address
/// space.
const BUILD_LINES: &[&str] = &[
    "testguest: paging: CPUID announces DIRECT_PAGING = set",
    // One L1 per 2 MiB region of the image.
    "testguest: paging: pin the identity L1s (",
    "testguest: paging: pin the identity L2, L3 and L4 (written directly) = 0, done 3",
    "testguest: paging: pin the window's empty L1, L2 and L3 = 0, done 3",
    "testguest: paging: link the window's tables with mmu_update = 0, done 3",
    "testguest: paging: L4 entry 160 reads back = 0x",
    "testguest: paging: pin a second L4 sharing the identity L3 = 0, done 1",
    "testguest: paging: NEW_BASEPTR to the new L4 = 0, done 1",
    "testguest: paging: CR3 is the new L4, execution continues = 0x",
];

#[test]
fn pv_paging_builds_loads_and_uses_a_validated_address_space() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging", &["--stats", "--mem", "64"]);
    assert_ok_lines(&r, BUILD_LINES);
    assert_ok_lines(
        &r,
        &[
            "testguest: paging: a direct write to the L4 faults = #PF (error code 0x3)",
            "testguest: paging: map data page 0x",
            "testguest: paging: a write through the window reads back through the identity map = no fault (written) then 0x5aa50f0fdeadbeef",
            "testguest: paging: the CPU set A and D in the window's L1 entry = 0x",
            "testguest: paging: MMU_PT_UPDATE_PRESERVE_AD adding a software bit = 0, done 1",
            "testguest: paging: the entry has the new bit and kept A and D = 0x",
            "testguest: paging: the normal update replaced A and D = 0x",
            "testguest: paging: unmap the window page (entry 0) = 0, done 1",
            "testguest: paging: INVLPG_LOCAL of the window = 0, done 1",
            "testguest: paging: TLB_FLUSH_LOCAL and TLB_FLUSH_ALL = 0, done 2",
            "testguest: paging: NEW_BASEPTR to the second L4 = 0, done 1",
            "testguest: paging: in the second address space CR3 follows and the window faults = cr3=0x",
            "testguest: paging: NEW_BASEPTR back to the first L4 = 0, done 1",
            "testguest: paging: back in the first address space the window maps again = cr3=0x",
            "testguest: paging: unpin the second L4 = 0, done 1",
            "testguest: paging: mmu_update on the unpinned second L4 (released) is a plain write that lands = 0, done 1; 0x10deadbeef0000",
            "testguest: paging: unpin all ",
            "testguest: paging: the base pointer keeps them validated: mmu_update on the window's L1, read through it = 0, done 1",
        ],
    );
    // The TLB coherence checks: after mmu_update removed or changed a
    // mapping and the guest asked for a flush, the old translation must be
    // gone.
    assert_ok_lines(
        &r,
        &[
            "testguest: paging: reading the unmapped window faults = #PF (error code 0x0)",
            "testguest: paging: the read-only window reads and refuses writes = no fault (0xa55af0f021524110), then #PF (error code 0x3)",
        ],
    );
    assert_all_passed(&r, "pv-paging", 32);

    let paging = counters(&r, "direct paging:");
    // Updates: three window links, five window entries, the plain write
    // to the released L4, one after the unpins. Tables: the identity L1s
    // (at least one), L2, L3, L4, the window's three, the second L4;
    // released: the second L4.
    assert_eq!(paging.get("updates_applied"), Some(&10), "{paging:?}\n{}", r.explain());
    assert_eq!(paging.get("plain_writes"), Some(&1), "{paging:?}\n{}", r.explain());
    assert!(paging.get("tables_validated").is_some_and(|&n| n >= 8), "{paging:?}\n{}", r.explain());
    assert_eq!(paging.get("tables_released"), Some(&1), "{paging:?}\n{}", r.explain());
    assert!(paging.get("ext_ops_done").is_some_and(|&n| n > 0), "{paging:?}\n{}", r.explain());
    assert_eq!(rejections(&paging), BTreeMap::new(), "{}", r.explain());
    let calls = counters(&r, "hypercalls:");
    // Zero counts are not printed.
    assert_eq!(calls.get("failed"), None, "no call failed: {calls:?}\n{}", r.explain());
    assert!(!r.messages.contains("did not flush their TLBs in time"), "{}", r.explain());
    assert_native_on_pvm(&r);
}

/// RAM of the hostile run: above the 32-bit MMIO hole, so that a frame
/// in the hole is inside the frame table but not owned (-EPERM) rather
/// than beyond it (-EINVAL). The memory is not touched, so it costs
/// nothing.
const HOSTILE_MEM_MIB: &str = "4608";

#[test]
fn pv_paging_hostile_requests_get_their_errno_and_the_domain_lives_on() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging-hostile", &["--stats", "--mem", HOSTILE_MEM_MIB]);
    assert_ok_lines(&r, BUILD_LINES);
    assert_ok_lines(
        &r,
        &[
            // 4608 MiB: RAM ends at 5.5 GiB (frame 0x160000).
            "testguest: paging: map frame 0x160010, beyond RAM = -EINVAL, done 0",
            "testguest: paging: map frame 0xc1000 in the MMIO hole (not owned) = -EPERM, done 0",
            "testguest: paging: batch [map data, map the pinned window L1 writable, map data] = -EBUSY, done 1",
            "testguest: paging: only the request before the failing one took effect = [0x8000000000",
            "testguest: paging: L2 entry -> data page 0x",
            "testguest: paging: L2 entry with PS (a 2 MiB superpage) = -EINVAL, done 0",
            "testguest: paging: L1 entry with the PAT bit (bit 7) = -EINVAL, done 0",
            "testguest: paging: L1 entry with protection-key bit 59 = -EINVAL, done 0",
            "testguest: paging: L4 entry -> the L4 itself (linear page table) = -EINVAL, done 0",
            "testguest: paging: map the hypercall page writable = -EPERM, done 0",
            "testguest: paging: map a boot-area frame (below 1 MiB) writable = -EPERM, done 0",
            "testguest: paging: mmu_update of a word in a data page (not a table) is a plain write that lands = 0, done 1; 0x800000000001003",
            "testguest: paging: mmu_update of a word in the hypercall page (read-only frame) = -EPERM, done 0",
            "testguest: paging: unpin a frame that is not pinned = -EINVAL, done 0",
            "testguest: paging: pin the pinned window L1 again = -EINVAL, done 0",
            "testguest: paging: NEW_BASEPTR to the pinned window L1 = -EBUSY, done 0",
            "testguest: paging: NEW_BASEPTR to a data page mapped writable = -EBUSY, done 0",
            "testguest: paging: CR3 is still the new L4 = 0x",
            "testguest: paging: unknown mmuext_op command 99 = -ENOSYS, done 0",
            "testguest: paging: INVLPG_LOCAL of a non-canonical address = -EINVAL, done 0",
            "testguest: paging: mmu_update command 1 (MMU_MACHPHYS_UPDATE) = -ENOSYS, done 0",
            "testguest: paging: mmu_update with its list at 0xd0000000 (outside RAM) = -EFAULT, done 0",
            "testguest: paging: mmuext_op with its list at 0xd0000000 (outside RAM) = -EFAULT, done 0",
            "testguest: paging: mmu_update with its done pointer outside RAM = -EFAULT",
            "testguest: paging: mmu_update of 1000000 requests = -E2BIG, done 0",
            "testguest: paging: mmuext_op of 1000000 operations = -E2BIG, done 0",
            "testguest: paging: mmu_update for domain 1 (foreign) = -EPERM, done 0xdead",
            "testguest: paging: mmuext_op for domain 1 (foreign) = -EPERM",
            "testguest: paging: pin the spare frame as an L1 (no writable mapping is left) = 0, done 1",
            "testguest: paging: after all of the above, mmu_update maps the window and it works = 0, done 1",
        ],
    );
    if host_is_pvm() {
        assert_ok_lines(&r, &["testguest: paging: a present entry without U/S on kvm_pvm = -EINVAL, done 0"]);
    }
    // TLB coherence: a translation removed with mmu_update + INVLPG_LOCAL
    // must not write the frame once it is a pinned page table.
    assert_ok_lines(&r, &["testguest: paging: a store through the unmapped address into the now-pinned L1 = #PF (error code 0x2)"]);
    assert_all_passed(&r, "pv-paging-hostile", if host_is_pvm() { 48 } else { 47 });

    let paging = counters(&r, "direct paging:");
    assert!(paging.get("updates_applied").is_some_and(|&n| n > 0), "{paging:?}\n{}", r.explain());
    assert_eq!(paging.get("plain_writes"), Some(&1), "the data page\n{}", r.explain());
    assert!(paging.get("tables_validated").is_some_and(|&n| n > 0), "{paging:?}\n{}", r.explain());
    let mut expected: BTreeMap<String, u64> = [
        ("frame_out_of_range", 1),
        ("not_owned", 1),
        // The hypercall page and the boot-area frame mapped writable, a
        // word of the hypercall page written with mmu_update.
        ("read_only_frame", 3),
        // PAT and bit 52 in an L1 entry.
        ("disallowed_bits", 2),
        ("superpage", 1),
        // The pinned L1 mapped writable, the L2 link to a data page, two
        // base pointers.
        ("type_conflict", 4),
        ("linear_page_table", 1),
        ("already_pinned", 1),
        ("not_pinned", 1),
        ("unsupported_command", 1),
        ("unsupported_ext_op", 1),
        ("non_canonical", 1),
        ("batch_too_large", 2),
        // The two lists outside RAM.
        ("guest_memory", 2),
    ]
    .into_iter()
    .map(|(reason, n)| (reason.to_string(), n))
    .collect();
    if host_is_pvm() {
        expected.insert("missing_required_bits".to_string(), 1);
    }
    assert_eq!(rejections(&paging), expected, "rejections by reason\n{}", r.explain());
    // Failed calls: every rejection, plus the two foreign-domain calls
    // (refused before the frame table) and the done pointer outside RAM
    // (the batch itself succeeded).
    let calls = counters(&r, "hypercalls:");
    let rejected: u64 = expected.values().sum();
    assert_eq!(calls.get("failed"), Some(&(rejected + 3)), "{calls:?}\n{}", r.explain());
    assert_native_on_pvm(&r);
}

/// `--paging direct` sets the CPUID bit `PAGING_DIRECT` (the test guest
/// prints it with its first check); the default, native, does not.
#[test]
fn paging_direct_is_announced_only_in_direct_mode() {
    require_kvm!();
    for (args, want) in [(&["--mem", "64"][..], "paging_direct=false"), (&["--mem", "64", "--paging", "direct"][..], "paging_direct=true")] {
        let r = run_testguest("workload=pv-paging", args);
        let line = r.console.lines().find(|l| l.starts_with("testguest: paging: CPUID announces DIRECT_PAGING = set")).unwrap_or_else(|| panic!("no CPUID line\n{}", r.explain()));
        assert!(line.contains(want), "{args:?}: {line}\n{}", r.explain());
        assert_eq!(r.code, Some(0), "{}", r.explain());
    }
}

// Detection where prevention is impossible (hypervisor/src/pv/guard.rs):
// in direct-paging mode every exit of a vCPU that has loaded a validated
// base pointer checks that CR3 is a validated L4 and CR0.WP is set.

/// The reason a killed domain ends with.
const CRASHED_CR3: &str = "the domain crashed: vCPU 0: direct paging violated: vCPU 0 runs on CR3 0x";
const CRASHED_WP: &str = "the domain crashed: vCPU 0: direct paging violated: vCPU 0 runs with CR0.WP clear (CR0 0x";

fn violations(r: &GuestRun) -> (u64, u64) {
    let paging = counters(r, "direct paging:");
    (paging.get("cr3_violations").copied().unwrap_or(0), paging.get("wp_violations").copied().unwrap_or(0))
}

#[test]
fn a_native_cr3_load_kills_a_direct_paging_domain() {
    require_kvm!();
    // Kill is the default policy.
    let r = run_testguest("workload=pv-paging-cr3-native", &["--stats", "--mem", "64", "--paging", "direct"]);
    assert_ok_lines(&r, BUILD_LINES);
    assert_eq!(r.code, Some(pvabi::exit_status::EXIT_CODE_CRASHED), "{}", r.explain());
    assert!(r.messages.contains(CRASHED_CR3), "{}", r.explain());
    assert!(r.messages.contains("which is not a validated L4 (the frame is a writable page; RIP 0x"), "{}", r.explain());
    // Killed at the exit of the line after the load.
    assert!(r.console.contains("testguest: paging: loading CR3 0x"), "{}", r.explain());
    assert!(!r.console.contains("the vCPU runs on the unvalidated copy"), "{}", r.explain());
    assert_eq!(violations(&r), (1, 0), "{}", r.explain());
}

#[test]
fn a_native_cr3_load_is_reported_once_and_the_domain_runs_on() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging-cr3-native", &["--stats", "--mem", "64", "--paging", "direct", "--paging-violation", "report"]);
    assert_ok_lines(&r, &["testguest: paging: the vCPU runs on the unvalidated copy = cr3=0x"]);
    assert_all_passed(&r, "pv-paging-cr3-native", 11);
    let reports = r.messages.matches("hypervisor: direct paging violated: vCPU 0 runs on CR3 0x").count();
    assert_eq!(reports, 1, "reported once\n{}", r.explain());
    // One episode, however many exits the vCPU made on the copy.
    assert_eq!(violations(&r), (1, 0), "{}", r.explain());
}

#[test]
fn nothing_is_checked_without_direct_paging_mode() {
    require_kvm!();
    for w in ["workload=pv-paging-cr3-native", "workload=pv-paging-wp-off"] {
        let r = run_testguest(w, &["--stats", "--mem", "64"]);
        assert_eq!(r.code, Some(0), "{w}\n{}", r.explain());
        assert!(!r.messages.contains("direct paging violated"), "{w}\n{}", r.explain());
        assert_eq!(violations(&r), (0, 0), "{w}\n{}", r.explain());
    }
}

#[test]
fn validated_use_of_direct_paging_is_no_violation() {
    require_kvm!();
    // Both switch base pointers, unpin, and (hostile) try every refused
    // request: none of that may look like a violation.
    let r = run_testguest("workload=pv-paging", &["--stats", "--mem", "64", "--paging", "direct"]);
    assert_all_passed(&r, "pv-paging", 32);
    assert!(!r.messages.contains("violated"), "{}", r.explain());
    let r = run_testguest("workload=pv-paging-hostile", &["--stats", "--mem", HOSTILE_MEM_MIB, "--paging", "direct"]);
    assert_all_passed(&r, "pv-paging-hostile", if host_is_pvm() { 48 } else { 47 });
    assert!(!r.messages.contains("violated"), "{}", r.explain());
    assert_eq!(violations(&r), (0, 0), "{}", r.explain());
}

#[test]
fn clearing_cr0_wp_kills_a_direct_paging_domain() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging-wp-off", &["--stats", "--mem", "64", "--paging", "direct", "--paging-violation", "kill"]);
    assert_eq!(r.code, Some(pvabi::exit_status::EXIT_CODE_CRASHED), "{}", r.explain());
    assert!(r.messages.contains(CRASHED_WP), "{}", r.explain());
    assert!(!r.console.contains("CR0.WP is set again"), "{}", r.explain());
    assert_eq!(violations(&r), (0, 1), "{}", r.explain());
}

#[test]
fn clearing_cr0_wp_is_reported_and_on_hardware_the_store_lands() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging-wp-off", &["--stats", "--mem", "64", "--paging", "direct", "--paging-violation", "report"]);
    assert_all_passed(&r, "pv-paging-wp-off", 12);
    if host_is_pvm() {
        // The store would livelock the vCPU there (docs/pv-abi.md).
        assert_ok_lines(&r, &["testguest: paging: with CR0.WP clear a store into the read-only mapping of a pinned L1 = skipped on kvm_pvm"]);
    } else {
        assert_ok_lines(&r, &["testguest: paging: with CR0.WP clear a store into the read-only mapping of a pinned L1 lands = no fault (stored)"]);
    }
    assert_eq!(r.messages.matches("hypervisor: direct paging violated: vCPU 0 runs with CR0.WP clear").count(), 1, "{}", r.explain());
    assert_eq!(violations(&r), (0, 1), "{}", r.explain());
}

#[test]
fn a_vcpu_that_never_exits_is_still_checked() {
    require_kvm!();
    // The guest clears WP and spins without an exit: the once-a-second
    // kick of direct-paging vCPUs finds it.
    let started = std::time::Instant::now();
    let r = run_testguest("workload=pv-paging-wp-spin", &["--stats", "--mem", "64", "--paging", "direct", "--timeout", "20"]);
    assert_eq!(r.code, Some(pvabi::exit_status::EXIT_CODE_CRASHED), "killed, not timed out\n{}", r.explain());
    assert!(r.messages.contains(CRASHED_WP), "{}", r.explain());
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "{:?}\n{}", started.elapsed(), r.explain());
}

// The audit (hypervisor/src/pv/audit.rs): vCPUs stopped, every count
// recomputed from live memory, each vCPU's address space walked from CR3.

const END_AUDIT: &str = "hypervisor: paging audit at the end: ";

fn audit_line(r: &GuestRun) -> &str {
    let start = r.messages.find(END_AUDIT).unwrap_or_else(|| panic!("no audit at the end\n{}", r.explain()));
    &r.messages[start..]
}

#[test]
fn a_validated_run_audits_clean() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging", &["--stats", "--mem", "64", "--paging", "direct", "--paging-audit"]);
    assert_all_passed(&r, "pv-paging", 32);
    let audit = audit_line(&r);
    assert!(audit.starts_with("hypervisor: paging audit at the end: clean: the frame table's counts match live memory; walked vCPU 0 at CR3 0x"), "{audit}");
    let paging = counters(&r, "direct paging:");
    assert_eq!((paging.get("audits"), paging.get("audit_failures")), (Some(&1), None), "{paging:?}");
}

#[test]
fn an_unvalidated_cr3_fails_the_audit() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging-cr3-native", &["--stats", "--mem", "64", "--paging", "direct", "--paging-violation", "report", "--paging-audit"]);
    assert_all_passed(&r, "pv-paging-cr3-native", 11);
    let audit = audit_line(&r);
    assert!(audit.contains("problem(s) found; walked vCPU 0 at CR3 0x"), "{audit}");
    assert!(audit.contains("the root is L4 table 0x") && audit.contains("which is not validated as one (it is a writable page, a RAM frame)"), "{audit}");
    let paging = counters(&r, "direct paging:");
    assert_eq!((paging.get("audits"), paging.get("audit_failures")), (Some(&1), Some(&1)), "{paging:?}");
}

#[test]
fn a_store_behind_the_validators_back_fails_the_audit_where_it_can_land() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging-wp-off", &["--stats", "--mem", "64", "--paging", "direct", "--paging-violation", "report", "--paging-audit"]);
    assert_all_passed(&r, "pv-paging-wp-off", 12);
    let audit = audit_line(&r);
    if host_is_pvm() {
        // The store is not made there (it cannot land): nothing to find.
        assert!(audit.starts_with("hypervisor: paging audit at the end: clean"), "{audit}");
    } else {
        // Entry 5 of the window L1 maps data page 0, uncounted.
        assert!(audit.contains("frame table invariant violated"), "{audit}");
        assert!(audit.contains("references are held"), "{audit}");
    }
}

#[test]
fn audits_run_periodically_while_the_domain_runs() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging-loop iterations=2000", &["--stats", "--mem", "64", "--paging", "direct", "--paging-audit", "--paging-audit-interval", "1"]);
    assert_all_passed(&r, "pv-paging-loop", 11);
    let periodic = r.messages.matches("hypervisor: paging audit: clean: the frame table's counts match live memory; walked vCPU 0 at CR3 0x").count();
    assert!(periodic >= 2, "{periodic} periodic audits\n{}", r.explain());
    assert!(audit_line(&r).starts_with("hypervisor: paging audit at the end: clean"), "{}", r.explain());
    let paging = counters(&r, "direct paging:");
    assert_eq!(paging.get("audits"), Some(&(periodic as u64 + 1)), "{paging:?}");
    assert_eq!(paging.get("audit_failures"), None, "{paging:?}");
    // Two validated updates and one refusal per round.
    assert_eq!(paging.get("rejected_type_conflict"), Some(&2000), "{paging:?}");
}

#[test]
fn the_audit_needs_direct_paging_mode() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging", &["--mem", "64", "--paging-audit"]);
    assert_eq!(r.code, Some(2), "{}", r.explain());
    assert!(r.messages.contains("--paging-audit needs --paging direct"), "{}", r.explain());
}

#[test]
fn a_native_cr3_load_of_a_pinned_l4_is_fine_until_it_is_unpinned() {
    require_kvm!();
    let r = run_testguest("workload=pv-paging-cr3-unpin", &["--stats", "--mem", "64", "--paging", "direct", "--paging-violation", "report"]);
    assert_all_passed(&r, "pv-paging-cr3-unpin", 13);
    // One violation, after the unpin (the cached check is redone when the
    // L4 loses its type), none for the native load itself.
    assert_eq!(violations(&r), (1, 0), "{}", r.explain());
    assert!(r.messages.contains("which is not a validated L4 (the frame is not a validated page table;"), "{}", r.explain());
    let r = run_testguest("workload=pv-paging-cr3-unpin", &["--stats", "--mem", "64", "--paging", "direct"]);
    assert_eq!(r.code, Some(pvabi::exit_status::EXIT_CODE_CRASHED), "{}", r.explain());
    assert!(r.console.contains("testguest: paging: running on the pinned second L4 after a native mov cr3 = cr3=0x"), "{}", r.explain());
    assert!(!r.console.contains("back on the first L4"), "{}", r.explain());
    assert!(r.messages.contains(CRASHED_CR3), "{}", r.explain());
}

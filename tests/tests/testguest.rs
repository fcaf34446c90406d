//! The freestanding test guest booted through `hypervisor run`: its banner,
//! native execution on kvm_pvm, SMP, and the hostile workloads.

use pvabi::exit_status::{EXCEPTION_BASE, EXIT_CODE_CRASHED, EXIT_CODE_TIMEOUT, FAILURE};
use systests::{host_is_pvm, kvm_usable, run_testguest};

macro_rules! require_kvm {
    () => {
        if !kvm_usable() {
            eprintln!("skipped: /dev/kvm is not usable on this host");
            return;
        }
    };
}

fn backend_name() -> &'static str {
    hypervisor::backend::detect().backend.name()
}

#[test]
fn boots_prints_its_banner_and_exits_zero() {
    require_kvm!();
    let log = std::env::temp_dir().join(format!("testguest-banner-{}.log", std::process::id()));
    let r = run_testguest("workload=banner", &["--console-log", log.to_str().unwrap(), "--mem", "64"]);
    assert_eq!(r.code, Some(0), "{}", r.explain());
    let banner = format!("testguest: SplitPVonKVM ABI {}.{}, backend={}", pvabi::ABI_VERSION_MAJOR, pvabi::ABI_VERSION_MINOR, backend_name());
    assert!(r.console.contains(&banner), "expected {banner:?}\n{}", r.explain());
    assert!(r.console.contains("64 MiB RAM"), "{}", r.explain());
    assert!(r.messages.contains("the guest exited with status 0"), "{}", r.explain());
    let logged = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(logged.contains(&banner), "the console log has the banner too: {logged:?}");
}

#[test]
fn compute_loop_runs_natively_on_pvm() {
    require_kvm!();
    let r = run_testguest("workload=compute iterations=100000000", &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", r.explain());
    assert!(r.console.contains("compute done, 100000000 iterations"), "{}", r.explain());
    let emulated = r.kvm_stat_total("insn_emulation").expect("--stats prints insn_emulation");
    let exits = r.kvm_stat_total("exits").expect("--stats prints exits");
    eprintln!("insn_emulation={emulated} exits={exits}");
    if host_is_pvm() {
        // Emulated, 1e8 iterations would be 2e8 emulated instructions.
        assert!(emulated < 1000, "the loop must run natively on kvm_pvm: insn_emulation={emulated}\n{}", r.explain());
        assert!(r.console.contains("native: VIF registered"), "{}", r.explain());
    }
}

#[test]
fn all_vcpus_come_online() {
    require_kvm!();
    let r = run_testguest("workload=smp", &["--vcpus", "4"]);
    assert_eq!(r.code, Some(0), "{}", r.explain());
    assert!(r.console.contains("all 4 vCPUs online"), "{}", r.explain());
    for i in 1..4 {
        assert!(r.console.contains(&format!("vCPU {i} online")), "{}", r.explain());
    }
}

#[test]
fn invalid_opcode_is_caught_by_the_guest_idt() {
    require_kvm!();
    let r = run_testguest("workload=invalid-opcode", &[]);
    assert_eq!(r.code, Some((EXCEPTION_BASE + 6) as i32), "{}", r.explain());
    assert!(r.console.contains("exception #UD (vector 6)"), "{}", r.explain());
    assert!(r.messages.contains("the guest exited with status 38"), "{}", r.explain());
}

#[test]
fn page_fault_is_delivered_to_the_guest() {
    require_kvm!();
    let r = run_testguest("workload=page-fault", &[]);
    assert_eq!(r.code, Some((EXCEPTION_BASE + 14) as i32), "{}", r.explain());
    assert!(r.console.contains("exception #PF (vector 14)"), "{}", r.explain());
}

#[test]
fn triple_fault_crashes_the_domain_with_a_register_dump() {
    require_kvm!();
    let r = run_testguest("workload=triple-fault", &[]);
    assert_eq!(r.code, Some(EXIT_CODE_CRASHED), "{}", r.explain());
    assert!(r.messages.contains("the guest triple-faulted"), "{}", r.explain());
    assert!(r.messages.contains("registers of vCPU 0"), "{}", r.explain());
    assert!(r.messages.contains("rip=0x"), "{}", r.explain());
    assert!(!r.messages.contains("panicked"), "{}", r.explain());
}

#[test]
fn unbacked_mmio_crashes_the_domain() {
    require_kvm!();
    let r = run_testguest("workload=unbacked-mmio", &[]);
    assert_eq!(r.code, Some(EXIT_CODE_CRASHED), "{}", r.explain());
    let addr = format!("{:#x}", pvabi::layout::UNBACKED_MMIO_PROBE);
    assert!(r.messages.contains(&format!("read 4 byte(s) at guest-physical address {addr}")), "{}", r.explain());
    assert!(r.messages.contains("registers of vCPU 0"), "{}", r.explain());
    assert!(!r.console.contains("continued"), "the read must not complete: {}", r.explain());
}

#[test]
fn an_unknown_workload_is_a_guest_failure() {
    require_kvm!();
    let r = run_testguest("workload=no-such-thing", &[]);
    assert_eq!(r.code, Some(FAILURE as i32), "{}", r.explain());
}

#[test]
fn a_guest_that_runs_too_long_is_stopped() {
    require_kvm!();
    // Far more iterations than 1.5 s allows on any host; every vCPU must be
    // kicked out of KVM_RUN, including the parked ones.
    let r = run_testguest("workload=compute iterations=1000000000000", &["--timeout", "1.5", "--vcpus", "2"]);
    assert_eq!(r.code, Some(EXIT_CODE_TIMEOUT), "{}", r.explain());
    assert!(r.messages.contains("--timeout"), "{}", r.explain());
}

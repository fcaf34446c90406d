//! Linux guests booted by our hypervisor on hardware-assisted KVM, inside
//! the nested-SVM rig (our machines' own KVM is kvm_pvm, where Linux cannot
//! run), with the guest patches of guest-patches/ (PV console, PV shutdown).
//! The first run builds the guest and L1 kernels (minutes, cached in
//! ~/.cache/splitpv); later runs take about a minute.

use systests::rig::{run_scenario_retrying_a_frozen_rig, RigRun};

/// Every expected case that did not pass, and every other case that failed.
fn failures(run: &RigRun, expected: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for &name in expected {
        match run.result(name) {
            Some((_, true, _)) => {}
            Some((_, false, why)) => failures.push(format!("{name}: {why}")),
            None => failures.push(format!("{name}: no result reported")),
        }
    }
    for (name, passed, why) in &run.results {
        if !passed && !expected.contains(&name.as_str()) {
            failures.push(format!("{name}: {why}"));
        }
    }
    failures
}

/// Fails with the rig log's last `tail` lines unless every expected case
/// passed, no other case failed and rig.sh succeeded.
fn assert_all_passed(run: &RigRun, expected: &[&str], tail: usize) {
    let failures = failures(run, expected);
    assert!(failures.is_empty(), "rig failures:\n{}\n--- last lines of the rig log ---\n{}", failures.join("\n"), run.tail(tail));
    assert_eq!(run.code, Some(0), "rig.sh failed:\n{}", run.tail(80));
}

#[test]
fn linux_guests_boot_power_off_reboot_and_panic_in_the_rig() {
    // The scenario takes about 2 minutes; 10 allow for a loaded machine.
    let run = run_scenario_retrying_a_frozen_rig("tests/rig/scenarios/linux-boot.scenario", &["hypervisor"], 600);
    let expected = [
        "linux-bzimage-1vcpu",
        "linux-bzimage-2vcpu",
        "linux-pvh-2vcpu",
        "linux-reboot",
        "linux-panic",
        "linux-restart",
        // The SplitPVonKVM guest patches: PV console only, PV reboot and
        // crash, the same kernel with our CPUID leaves hidden, and the exit
        // counts of the PV console against the 8250.
        "linux-pv-console",
        "linux-pv-reboot",
        "linux-pv-panic",
        "linux-pv-hidden",
        "linux-pv-serial",
        "linux-pv-exits",
    ];
    assert_all_passed(&run, &expected, 150);
}

/// Linux guests created by dom0 inside the rig, in direct paging (1 and 2
/// vCPUs): virtio-blk (a disk written
/// in one life is read back in the next), virtio-net through dom0's switch
/// (ping), the PV console as hvc0 (`dom0 console`, from the first kernel
/// message, with a shell that takes typed commands), the virtio-console as
/// hvc1 (`dom0 console -t virtio`), the ACPI power button (`dom0 shutdown
/// -w`), and a `kill -9` of a hypervisor process reported.
#[test]
fn linux_guests_managed_by_dom0_in_the_rig() {
    let run = run_scenario_retrying_a_frozen_rig("tests/rig/scenarios/dom0-linux.scenario", &["hypervisor", "dom0"], 600);
    let expected = [
        "dom0-linux-disk-write",
        "dom0-linux-ping",
        "dom0-linux-pv-console",
        "dom0-linux-virtio-console",
        "dom0-linux-a-ended-b-runs",
        "dom0-linux-shutdown",
        "dom0-linux-disk-persists",
        "dom0-linux-bridge",
        "dom0-linux-pv-shell",
        "dom0-linux-paging-listed",
        "dom0-linux-kill9",
    ];
    assert_all_passed(&run, &expected, 200);
}

/// The patched Linux in direct paging (guest patch 0008): it boots with 1
/// and 2 vCPUs; its hostile requests are refused with their errnos; a
/// native CR3 load and a write with CR0.WP clear are detected and stop the
/// domain while another domain runs on; it runs a fork/exec/mmap-heavy
/// workload on 2 vCPUs, and the
/// hypervisor refuses none of its page-table updates, sees no CR3 or CR0.WP
/// violation, and finds the frame table matching live memory in the
/// audits while it runs and at the end; every address space that ended
/// gave its tables back. The same kernel and workload with native paging
/// pass too, with the kernel's direct-paging code inert.
#[test]
fn linux_guests_in_direct_paging_in_the_rig() {
    // About 8 minutes on an idle machine (the workload makes some 400,000
    // paging hypercalls under QEMU's emulation); 25 allow for a loaded one.
    let run = run_scenario_retrying_a_frozen_rig("tests/rig/scenarios/linux-paging.scenario", &["hypervisor"], 1500);
    let expected = [
        "linux-dp-1vcpu",
        "linux-dp-2vcpu",
        "linux-dp-hostile",
        "linux-dp-detect-cr3",
        "linux-dp-detect-wp",
        "linux-dp-bystander",
        "linux-dp-workload",
        "linux-dp-released",
        "linux-native-workload",
        "linux-native-inert",
    ];
    assert_all_passed(&run, &expected, 150);
}

//! A tiny run of the whole benchmark: numbers come out, they are sane
//! (positive, finite) and every request the guests sent was counted by the
//! backends. Never how fast anything is.

use std::time::Duration;

use bench::procs::Hypervisor;
use bench::suite::{self, Scale};

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

fn sane(what: &str, v: f64) {
    assert!(v.is_finite() && v > 0.0, "{what} = {v}");
}

#[test]
fn a_tiny_run_produces_sane_numbers_and_a_report() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm cannot be opened here");
        return;
    }
    let hv = Hypervisor::locate(None).expect("the hypervisor binary is there or can be built");
    let r = suite::run(hv, Scale::Tiny, |step| eprintln!("bench: {step}")).expect("the tiny run completes");

    let blk = r.by_size.iter().chain(&r.by_batch).chain(&r.policies).chain(&r.files);
    let mut runs = 0;
    for x in blk {
        runs += 1;
        let what = format!("{} size {} batch {}", x.case.device.name(), x.case.size, x.case.batch);
        sane(&format!("{what}: req/s"), x.req_per_s);
        sane(&format!("{what}: bytes/s"), x.bytes_per_s());
        assert_eq!(x.backend_requests, x.case.count, "{what}: the backend counted every request the guest sent");
        assert_eq!(x.backend_errors, 0, "{what}: no request failed");
        assert!(x.batch_used >= 1 && x.batch_used <= x.case.batch, "{what}: batch {}", x.batch_used);
        assert!(x.kicks >= 1 && x.kicks <= x.batches, "{what}: {} kicks for {} batches", x.kicks, x.batches);
        assert!(x.exits > 0, "{what}: exits counted");
        let c = x.per_request(&r.fixed);
        for (n, v) in [("exits", c.exits), ("hypervisor ns", c.hv_ns), ("backend ns", c.be_ns)] {
            assert!(v.is_finite() && v >= 0.0, "{what}: {n} per request = {v}");
        }
        sane(&format!("{what}: wall ns"), c.wall_ns);
    }
    assert!(runs >= 4, "{runs} blk runs");
    assert!(r.failures.is_empty(), "parts failed: {:?}", r.failures);

    let (net, one) = r.net.as_ref().expect("the net run");
    sane("net round trip", net.rtt_avg_us);
    assert!(net.frames >= 4 * net.count, "{} frames for {} round trips", net.frames, net.count);
    assert_eq!(one.count, 1);

    for (name, l) in [("io-loop", &r.io_loop), ("pv-null", &r.pv_null), ("pv-paging-bench", &r.pv_paging)] {
        assert!(l.cycles > 0, "{name}: cycles");
        assert!(l.exits >= l.iterations, "{name}: {} exits for {} iterations", l.exits, l.iterations);
        if l.tsc_khz > 0 {
            sane(&format!("{name} ns/iteration"), l.ns_per_iteration());
        }
    }
    assert_eq!(r.pv_paging.items, r.pv_paging.iterations * 512);
    for (s, v) in &r.memcpy {
        sane(&format!("memcpy {s}"), *v);
    }
    for s in &r.spsc {
        sane("spsc msgs/s", s.per_s);
    }
    sane("validator", r.pte_validator);
    sane("plain writes", r.plain_writes);
    let (mem, guest_mib) = r.memory.expect("the memory sample");
    // A tiny run can end between two samples of /proc/PID/smaps, so the
    // chosen sample may predate the guest touching its RAM; the full run's
    // long runs always catch it. Sane means: within the domain's RAM.
    assert!(mem.guest_kib <= guest_mib * 1024, "{mem:?}");
    assert!(mem.rss_kib > 0, "{mem:?}");
    assert!(mem.overhead_kib() > 0, "{mem:?}");

    // The report and its plots are written.
    let dir = std::env::temp_dir().join(format!("bench-smoke-{}", std::process::id()));
    let out = dir.join("performance.md");
    bench::report::write(&r, &out, &dir.join("perf"), "perf").expect("the report is written");
    let md = std::fs::read_to_string(&out).expect("the report is there");
    assert!(md.contains("## Targets") && md.contains("tiny run"), "{md}");
    // Without --rig the rig and boot-time sections say why they are empty.
    assert!(md.contains("vs rig (svm)") && md.contains("generated without `--rig`"), "{md}");
    assert!(md.contains("## Boot time to init (Linux)") && md.contains("needs `--rig`"), "{md}");
    for png in ["throughput-vs-size.png", "throughput-vs-batch.png"] {
        let bytes = std::fs::read(dir.join("perf").join(png)).expect("the plot is there");
        assert_eq!(&bytes[1..4], b"PNG");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(r.elapsed < Duration::from_secs(120), "the tiny run took {:?}", r.elapsed);
}

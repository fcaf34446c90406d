//! The markdown report and its plots, from the [`Results`] of one run.
//! Every number in it comes from that run.

use std::fmt::Write;
use std::path::Path;

use crate::plot::{si, Plot, Series};
use crate::ring::{BlkResult, PerRequest};
use crate::suite::{Results, Scale, POLL};
use crate::BenchError;

/// Firecracker's published VMM memory overhead per microVM (MiB).
pub const FIRECRACKER_OVERHEAD_MIB: f64 = 5.0;

fn gbps(bytes_per_s: f64) -> String {
    if !bytes_per_s.is_finite() {
        return "n/a".into();
    }
    format!("{:.2}", bytes_per_s / 1e9)
}

fn ns(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 10_000.0 {
        format!("{:.1} µs", v / 1000.0)
    } else {
        format!("{v:.0} ns")
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn size_label(bytes: u64) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

fn short_size(bytes: u64) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{}K", bytes / 1024)
    } else {
        format!("{bytes}")
    }
}

/// The per-request figures of a blk run.
fn costs(results: &Results, r: &BlkResult) -> PerRequest {
    r.per_request(&results.fixed)
}

fn memcpy_at(results: &Results, size: u64) -> f64 {
    results.memcpy.iter().find(|(s, _)| *s == size).map(|(_, v)| *v).unwrap_or(f64::NAN)
}

/// One row of a blk table: req/s, GB/s, kicks/req, exits/req, CPU.
fn blk_cells(results: &Results, r: &BlkResult) -> String {
    let c = costs(results, r);
    let n = r.case.count as f64;
    format!(
        "{} | {} | {:.3} | {:.3} | {} | {} | {}",
        si(r.req_per_s),
        gbps(r.bytes_per_s()),
        r.kicks as f64 / n,
        c.exits,
        ns(c.hv_ns),
        ns(c.be_ns),
        ns(c.wall_ns)
    )
}

const BLK_HEAD: &str = "req/s | GB/s | kicks/req | exits/req | hypervisor CPU/req | backend CPU/req | wall/req";
const BLK_SEP: &str = "---:|---:|---:|---:|---:|---:|---:";

/// A verdict cell.
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// Writes the report to `out` and the plots to `plots_dir` (whose path
/// relative to `out`'s directory is `plots_rel`).
pub fn write(results: &Results, out: &Path, plots_dir: &Path, plots_rel: &str) -> Result<(), BenchError> {
    std::fs::create_dir_all(plots_dir).map_err(|source| BenchError::File { path: plots_dir.to_path_buf(), source })?;
    let size_png = plots_dir.join("throughput-vs-size.png");
    let batch_png = plots_dir.join("throughput-vs-batch.png");
    size_plot(results).draw(&size_png)?;
    batch_plot(results).draw(&batch_png)?;
    let md = markdown(results, &format!("{plots_rel}/throughput-vs-size.png"), &format!("{plots_rel}/throughput-vs-batch.png"));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| BenchError::File { path: dir.to_path_buf(), source })?;
    }
    std::fs::write(out, md).map_err(|source| BenchError::File { path: out.to_path_buf(), source })
}

fn size_plot(results: &Results) -> Plot {
    let pts = |rs: &[BlkResult]| rs.iter().map(|r| (r.case.size as f64, r.bytes_per_s())).collect::<Vec<_>>();
    let mut series = vec![
        Series { name: "memcpy (same buffer size)".into(), points: results.memcpy.iter().map(|(s, v)| (*s as f64, *v)).collect() },
        Series { name: "SPSC queue, 2 threads".into(), points: results.spsc.iter().map(|s| (s.size as f64, s.per_s * s.size as f64)).collect() },
        Series { name: "ring: null, copies data".into(), points: pts(&results.by_size) },
    ];
    if !results.by_size_status.is_empty() {
        series.push(Series { name: "ring: null, status only".into(), points: pts(&results.by_size_status) });
    }
    for direct in [false, true] {
        let rs: Vec<BlkResult> = results
            .files
            .iter()
            .filter(|r| !r.case.write && r.case.device == crate::ring::BlkDevice::File { direct })
            .cloned()
            .collect();
        if !rs.is_empty() {
            series.push(Series { name: format!("ring: file, {}", if direct { "O_DIRECT" } else { "page cache" }), points: pts(&rs) });
        }
    }
    let mut ticks: Vec<u64> = results.memcpy.iter().map(|(s, _)| *s).collect();
    ticks.sort_unstable();
    ticks.dedup();
    Plot {
        title: "Throughput vs message size (reads, batch 16, EVENT_IDX)".into(),
        x_label: "message size (bytes)".into(),
        y_label: "payload bytes/s (log)".into(),
        x_ticks: ticks.iter().map(|&s| (s as f64, short_size(s))).collect(),
        y_unit: "B/s".into(),
        series,
    }
}

fn batch_plot(results: &Results) -> Plot {
    let mut series = Vec::new();
    let mut sizes: Vec<u64> = results.by_batch.iter().map(|r| r.case.size).collect();
    sizes.dedup();
    for size in sizes {
        for event_idx in [true, false] {
            let points = results
                .by_batch
                .iter()
                .filter(|r| r.case.size == size && r.case.event_idx == event_idx)
                .map(|r| (r.case.batch as f64, r.req_per_s))
                .collect::<Vec<_>>();
            if !points.is_empty() {
                series.push(Series { name: format!("{}, EVENT_IDX {}", size_label(size), if event_idx { "on" } else { "off" }), points });
            }
        }
    }
    let mut ticks: Vec<u64> = results.by_batch.iter().map(|r| r.case.batch).collect();
    ticks.sort_unstable();
    ticks.dedup();
    Plot {
        title: "Requests/s vs batch size (null device, reads)".into(),
        x_label: "requests per kick decision, as asked (the guest runs 64 and more as 42)".into(),
        y_label: "requests/s (log)".into(),
        x_ticks: ticks.iter().map(|&b| (b as f64, b.to_string())).collect(),
        y_unit: "".into(),
        series,
    }
}

/// The markdown text.
pub fn markdown(results: &Results, size_png: &str, batch_png: &str) -> String {
    let mut o = String::new();
    let r = results;
    let exit_ns = r.io_loop.ns_per_iteration();
    let _ = writeln!(o, "# Performance: the ring benchmark\n");
    let _ = writeln!(
        o,
        "Generated by `cargo run --release -p bench -- --out docs/performance.md` ({} run, {:.0} s). \
         Every figure below was measured in that one run; nothing is copied from elsewhere. \
         Ratios are against baselines measured in the same run on the same machine.\n",
        r.scale.name(),
        r.elapsed.as_secs_f64()
    );
    if r.scale != Scale::Full {
        let _ = writeln!(o, "**This is a {} run: fewer points and smaller counts than the full run.**\n", r.scale.name());
    }

    // Host.
    let _ = writeln!(o, "## Host\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| KVM backend (`hypervisor info`) | {} |", r.host.backend);
    let _ = writeln!(o, "| CPU | {} ({} online) |", r.host.cpu, r.host.cpus);
    let _ = writeln!(o, "| kernel | {} |", r.host.kernel);
    let _ = writeln!(o, "| load average (1, 5, 15 min) at start / end | {} / {} |", r.host.load.0, r.host.load.1);
    let busy = |l: &str| l.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) >= 0.5;
    if busy(&r.host.load.0) || busy(&r.host.load.1) {
        let _ = writeln!(
            o,
            "\nThe machine was shared with other work while this ran (load average ≥ 0.5 on {} CPUs): \
             absolute figures are lower and noisier than on an idle machine; the ratios less so.",
            r.host.cpus
        );
    }
    let _ = writeln!(o);

    // Method.
    let _ = writeln!(o, "## What runs\n");
    let _ = writeln!(
        o,
        "- **Frontend**: the freestanding test guest (docs/testguest.md), one `hypervisor run --stats` process \
         per run, {} MiB, 1 vCPU, running natively on this host. `workload=virtio-bench` submits `bench.count` \
         reads (or writes) of `bench.size` bytes in batches of `bench.batch` with one kick decision per batch, \
         at most two batches in flight, and polls the used ring (it asks for no interrupts). It times its loop \
         with the TSC: requests/s and GB/s (10⁹ bytes) are the guest's figures.",
        crate::ring::GUEST_MIB
    );
    let _ = writeln!(
        o,
        "- **Consumer**: dom0's vhost-user backends, started in the bench process with `dom0::backends::start`: \
         the null device (`BackendSpec::Null`: virtio-blk that completes every request at once with OK; \
         \"copies data\" zero-fills the read buffer, one memcpy per request, \"status only\" writes only the \
         status byte), virtio-blk on a {} MiB file through the page cache and with O_DIRECT, and two virtio-net \
         backends on one dom0 `Switch`.",
        crate::ring::DISK_BYTES >> 20
    );
    let _ = writeln!(
        o,
        "- **Exits per request**: the KVM `exits` counter of all vCPUs (`--stats`); **CPU per request**: the \
         hypervisor process's user+system time (wait4) and the backend's (this process's getrusage over the run; \
         its other threads sleep meanwhile). The hypervisor process's CPU includes the guest's own execution on \
         the vCPU thread, and the guest polls while it waits, so it tracks wall time. The fixed cost of a run (boot, banner, device bring-up: {} exits, \
         {} hypervisor CPU, {} backend CPU, measured with a one-request run) is subtracted before dividing by the \
         request count.",
        r.fixed.exits,
        ns(r.fixed.hv_cpu.as_nanos() as f64),
        ns(r.fixed.be_cpu.as_nanos() as f64)
    );
    let _ = writeln!(
        o,
        "- **Sizes**: virtio-blk requests are whole 512-byte sectors, so the blk sweeps run from 512 B to 64 KiB; \
         64 B messages appear only in the baselines and as 60-byte net frames.\n\
         - **Queue size** is fixed at 256: the guest uses the largest power of two ≤ min(QueueNumMax, 256) and \
         the backends offer 256, so there is nothing to sweep.\n\
         - **Batch size**: a blk request takes 3 descriptors and the guest keeps at most two batches in flight, \
         so it cuts batches to 256 / 3 / 2 = 42 requests (the \"used\" column); batches of 64 to 256 run as 42.\n\
         - **Backend busy-polling** (policy tables): implemented in the null device only (`poll` of \
         `BackendSpec::Null`): after the queue runs dry the worker keeps checking the available ring for {} µs \
         with notifications off (VRING_USED_F_NO_NOTIFY, or with EVENT_IDX an avail_event left behind) before \
         it sleeps on the kick eventfd again. The file and net backends run vhost-user-backend's plain \
         epoll loop.\n",
        POLL.as_micros()
    );

    // Targets.
    let _ = writeln!(o, "## Targets\n");
    let _ = writeln!(o, "Targets are reported, never asserted.\n");
    let _ = writeln!(o, "| target | measured | verdict | why (from this run's measurements) |\n|---|---|---|---|");
    targets(&mut o, r, exit_ns);
    let _ = writeln!(o);

    // By size.
    let _ = writeln!(o, "## Throughput by message size\n");
    let _ = writeln!(o, "Null device, reads, batch 16, EVENT_IDX on. memcpy is the same buffer size copied in this process.\n");
    let _ = writeln!(o, "| size | memcpy GB/s | device | {BLK_HEAD} | % of memcpy |\n|---:|---:|---|{BLK_SEP}|---:|");
    for (i, x) in r.by_size.iter().enumerate() {
        let m = memcpy_at(r, x.case.size);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.1} % |",
            size_label(x.case.size),
            gbps(m),
            x.case.device.name(),
            blk_cells(r, x),
            100.0 * ratio(x.bytes_per_s(), m)
        );
        if let Some(s) = r.by_size_status.get(i) {
            // No copy, so no comparison with memcpy.
            let _ = writeln!(o, "| | | {} | {} | — |", s.case.device.name(), blk_cells(r, s));
        }
    }
    let _ = writeln!(o, "\n![throughput vs message size]({size_png})\n");

    // By batch.
    let _ = writeln!(o, "## Throughput by batch size\n");
    let _ = writeln!(o, "Null device (copies data), reads.\n");
    let _ = writeln!(o, "| size | EVENT_IDX | batch asked | batch used | {BLK_HEAD} |\n|---:|---|---:|---:|{BLK_SEP}|");
    for x in &r.by_batch {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            size_label(x.case.size),
            if x.case.event_idx { "on" } else { "off" },
            x.case.batch,
            x.batch_used,
            blk_cells(r, x)
        );
    }
    let _ = writeln!(o, "\n![requests/s vs batch size]({batch_png})\n");

    // Policies.
    let _ = writeln!(o, "## Notification policies\n");
    let _ = writeln!(
        o,
        "\"Kick per request\" is batch 1 without EVENT_IDX. Backend polling is {} µs (null device only). A polling \
         backend keeps a CPU busy while it waits: it pays off only when the guest's vCPU has a CPU of its own (this host has {}, \
         shared with the load shown above); compare the CPU columns.\n",
        POLL.as_micros(),
        r.host.cpus
    );
    let _ = writeln!(o, "| size | device | batch | EVENT_IDX | {BLK_HEAD} | notifications |\n|---:|---|---:|---|{BLK_SEP}|---:|");
    for x in &r.policies {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            size_label(x.case.size),
            x.case.device.name(),
            x.batch_used,
            if x.case.event_idx { "on" } else { "off" },
            blk_cells(r, x),
            x.notifications
        );
    }
    let _ = writeln!(o);

    // Files.
    let _ = writeln!(o, "## virtio-blk on a file\n");
    let _ = writeln!(o, "Batch 16, EVENT_IDX on, consecutive offsets over a {} MiB image.\n", crate::ring::DISK_BYTES >> 20);
    let _ = writeln!(o, "| backend | op | size | {BLK_HEAD} |\n|---|---|---:|{BLK_SEP}|");
    for x in &r.files {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            x.case.device.name(),
            if x.case.write { "write" } else { "read" },
            size_label(x.case.size),
            blk_cells(r, x)
        );
    }
    let _ = writeln!(o);

    // Net.
    let _ = writeln!(o, "## virtio-net between two domains\n");
    match &r.net {
        Some((n, one)) => {
            let count = n.count.saturating_sub(one.count).max(1) as f64;
            let _ = writeln!(
                o,
                "Ping/pong of 60-byte frames (64-byte class) through one dom0 `Switch`, {} round trips; each round trip \
                 is two frames through the switch, two kicks and two receive-queue notifications.\n",
                n.count
            );
            let _ = writeln!(o, "| round trip avg | min | round trips/s | exits/round trip (both domains) | hypervisor CPU/round trip | backends CPU/round trip | frames through the backends |\n|---:|---:|---:|---:|---:|---:|---:|");
            let _ = writeln!(
                o,
                "| {:.1} µs | {:.1} µs | {} | {:.2} | {} | {} | {} |",
                n.rtt_avg_us,
                n.rtt_min_us,
                si(1e6 / n.rtt_avg_us),
                (n.exits as f64 - one.exits as f64).max(0.0) / count,
                ns((n.hv_cpu.as_nanos() as f64 - one.hv_cpu.as_nanos() as f64).max(0.0) / count),
                ns((n.be_cpu.as_nanos() as f64 - one.be_cpu.as_nanos() as f64).max(0.0) / count),
                n.frames
            );
            let _ = writeln!(
                o,
                "\nPer-round-trip figures subtract a one-round-trip run. The test guest has no net throughput mode \
                 (only ping/pong), so net throughput is not measured.\n"
            );
        }
        None => {
            let _ = writeln!(o, "Not measured: see the failures below.\n");
        }
    }

    // Baselines.
    let _ = writeln!(o, "## Baselines\n");
    let _ = writeln!(o, "### memcpy and an SPSC queue\n");
    let _ = writeln!(
        o,
        "SPSC: a crossbeam `bounded(256)` channel between two threads; the producer copies each message into a pooled \
         buffer (one copy per message, as the null device makes), the consumer reads it and hands the buffer back.\n"
    );
    let _ = writeln!(o, "| size | memcpy GB/s | SPSC msgs/s | SPSC GB/s | SPSC wall/msg | SPSC CPU/msg (both threads) |\n|---:|---:|---:|---:|---:|---:|");
    let mut all_sizes: Vec<u64> = r.memcpy.iter().map(|(s, _)| *s).chain(r.spsc.iter().map(|s| s.size as u64)).collect();
    all_sizes.sort_unstable();
    all_sizes.dedup();
    for size in &all_sizes {
        let m = memcpy_at(r, *size);
        match r.spsc.iter().find(|s| s.size as u64 == *size) {
            Some(s) => {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} |",
                    size_label(*size),
                    gbps(m),
                    si(s.per_s),
                    gbps(s.per_s * s.size as f64),
                    ns(s.wall_ns()),
                    ns(s.cpu_ns)
                );
            }
            None => {
                let _ = writeln!(o, "| {} | {} | | | | |", size_label(*size), gbps(m));
            }
        }
    }
    let _ = writeln!(o, "\n### Exits\n");
    let _ = writeln!(o, "| loop (guest workload) | iterations | time per iteration | exits per iteration | hypervisor CPU per iteration |\n|---|---:|---:|---:|---:|");
    for (name, l) in [("bare port-I/O exit (`io-loop`: `out` to port 0x80)", &r.io_loop), ("null hypercall (`pv-null`: `xen_version`)", &r.pv_null), ("`mmu_update` of 512 PTEs (`pv-paging-bench`)", &r.pv_paging)] {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {:.2} | {} |",
            l.iterations,
            ns(l.ns_per_iteration()),
            l.exits_per_iteration(),
            ns(l.hv_ns_per_iteration())
        );
    }
    let _ = writeln!(
        o,
        "\nTime per iteration: the guest's TSC over the loop, the fastest of a few runs. Exits and hypervisor CPU per \
         iteration: that run minus a run of a tenth of the iterations (same boot and setup). \
         Null hypercall / bare exit: **{:.2}×**.\n",
        ratio(r.pv_null.ns_per_iteration(), exit_ns)
    );
    let _ = writeln!(o, "### PTE validation\n");
    let _ = writeln!(o, "| path | updates/s | ns/update | vs plain writes |\n|---|---:|---:|---:|");
    let guest = r.pv_paging.items_per_s();
    for (name, v) in [
        ("plain 8-byte writes into a 512-entry table (no validation)", r.plain_writes),
        ("pvmm validator in-process: map 512 RW / unmap, batches of 512", r.pte_validator),
        ("guest → `mmu_update` hypercall → validator, batches of 512 (end to end)", guest),
    ] {
        let _ = writeln!(o, "| {name} | {} | {:.1} | {:.1}× slower |", si(v), 1e9 / v, ratio(r.plain_writes, v));
    }
    let _ = writeln!(o);

    // Memory.
    let _ = writeln!(o, "## VMM memory overhead\n");
    match r.memory {
        Some((m, guest_mib)) => {
            let mib = |k: u64| k as f64 / 1024.0;
            let _ = writeln!(
                o,
                "The hypervisor process's /proc/PID/smaps, sampled every 20 ms during the 4 KiB null-device run \
                 ({guest_mib} MiB guest, 1 vCPU, one virtio-blk device over vhost-user); the sample with the largest \
                 non-guest resident set.\n"
            );
            let _ = writeln!(o, "| resident | guest RAM touched (memfd) | overhead (rest) | of which anonymous | of which the binary and libraries | vs Firecracker's 5 MiB |\n|---:|---:|---:|---:|---:|---:|");
            let _ = writeln!(
                o,
                "| {:.2} MiB | {:.2} MiB | **{:.2} MiB** | {:.2} MiB | {:.2} MiB | {:.2}× |",
                mib(m.rss_kib),
                mib(m.guest_kib),
                mib(m.overhead_kib()),
                mib(m.anon_kib),
                mib(m.file_kib),
                mib(m.overhead_kib()) / FIRECRACKER_OVERHEAD_MIB
            );
            let _ = writeln!(
                o,
                "\nFile-backed pages (the binary, libc) are shared with every other process mapping the same files; \
                 the anonymous part is what each domain adds on its own.\n"
            );
        }
        None => {
            let _ = writeln!(o, "Not measured in this run.\n");
        }
    }

    // Boot time and what is not done.
    let _ = writeln!(o, "## Boot time to init (Linux) — not measured\n");
    let _ = writeln!(
        o,
        "On this kvm_pvm host our hypervisor cannot boot Linux natively (docs/guests.md); Linux runs only in the \
         nested-SVM rig (tests/rig), whose L1 is itself QEMU TCG and has no QEMU inside, so a QEMU microvm boot of \
         the same kernel and initramfs on the same (L1) host is not available, and a comparison of our in-rig boot \
         (nested SVM inside TCG) with QEMU TCG on the bare host would compare two emulators, not two VMMs. The \
         bench does not measure it.\n"
    );
    let _ = writeln!(o, "## Test-guest workloads added for this benchmark\n");
    let _ = writeln!(
        o,
        "- `workload=io-loop iterations=N`: N one-byte `out`s to port 0x80, which no device claims (the hypervisor \
         counts them as `unclaimed_pio` and resumes the guest): N bare port-I/O exits.\n\
         - `workload=pv-null iterations=N`: installs the hypercall page and calls `HYPERVISOR_xen_version(VERSION)` N times.\n\
         - `workload=pv-paging-bench iterations=N`: builds the `pv-paging` address space, then N `mmu_update` calls of 512 \
         requests, alternately mapping a data page writable at every entry of the window's L1 and unmapping them all.\n\
         - Each prints `BENCH <name> PASS: iterations=N cycles=C tsc_khz=K` (plus `batch=512 updates=U` for the last) and \
         exits with status 0; a failed call prints `BENCH <name> FAIL: …` and exits with 1.\n"
    );
    let _ = writeln!(o, "## Not done\n");
    let _ = writeln!(o, "- The same benchmark inside the rig (hardware-assisted SVM, emulated by QEMU): not run; only the bare kvm_pvm host is reported.");
    let _ = writeln!(o, "- virtio-net throughput (a streaming mode in the test guest): not written; net has round-trip figures only.");
    let _ = writeln!(o, "- 64-byte virtio-blk requests: impossible (whole sectors); queue sizes other than 256: the guest does not allow choosing.");
    for f in &r.failures {
        let _ = writeln!(o, "- Failed in this run: {f}");
    }
    o
}

/// How busy the two threads were per request, and the machine's load.
fn busy(r: &Results, c: &PerRequest) -> String {
    format!(
        "the backend thread is busy {:.0} % and the vCPU thread {:.0} % of the wall time per request, so the rest is waiting \
         for each other or for a CPU (load average {} on {} CPUs during the run).",
        100.0 * c.be_ns / c.wall_ns,
        100.0 * c.hv_ns / c.wall_ns,
        r.host.load.0.split_whitespace().next().unwrap_or("?"),
        r.host.cpus
    )
}

/// The targets table rows.
fn targets(o: &mut String, r: &Results, exit_ns: f64) {
    // 1. 64 KiB through the null device vs memcpy.
    match r.by_size.iter().find(|x| x.case.size == 65536) {
        Some(x) => {
            let m = memcpy_at(r, 65536);
            let pct = 100.0 * ratio(x.bytes_per_s(), m);
            let c = costs(r, x);
            let copy_ns = 65536.0 / m * 1e9;
            let _ = writeln!(
                o,
                "| ≥ 50 % of memcpy bandwidth, 64 KiB messages, null backend | {} GB/s = {pct:.1} % of memcpy ({} GB/s) | {} | {} |",
                gbps(x.bytes_per_s()),
                gbps(m),
                verdict(Some(pct >= 50.0)),
                if pct >= 50.0 {
                    "".to_string()
                } else {
                    format!(
                        "short by {:.1} points. A request takes {} of wall time; its copy at memcpy speed would take {}. \
                         The backend spends {} CPU per request (the copy through vm-memory's checked accessors, the descriptor walk, \
                         the used ring), the vCPU thread {}; {:.3} kicks/request cost ~{} each (one exit); {}",
                        50.0 - pct,
                        ns(c.wall_ns),
                        ns(copy_ns),
                        ns(c.be_ns),
                        ns(c.hv_ns),
                        x.kicks as f64 / x.case.count as f64,
                        ns(exit_ns),
                        busy(r, &c)
                    )
                }
            );
        }
        None => {
            let _ = writeln!(o, "| ≥ 50 % of memcpy bandwidth, 64 KiB messages | — | not measured | no 64 KiB run at this scale |");
        }
    }

    // 2. Small messages with batching and EVENT_IDX.
    let small: Vec<&BlkResult> = r
        .by_batch
        .iter()
        .chain(&r.policies)
        .chain(&r.by_size)
        .chain(&r.by_size_status)
        .filter(|x| x.case.event_idx && x.batch_used >= 8)
        .collect();
    let smallest = small.iter().map(|x| x.case.size).min();
    match small.iter().filter(|x| Some(x.case.size) == smallest).max_by(|a, b| a.req_per_s.total_cmp(&b.req_per_s)) {
        Some(best) => {
            let c = costs(r, best);
            let ok = best.req_per_s >= 5e6 && c.exits < 0.01;
            let _ = writeln!(
                o,
                "| ≥ 5 M req/s, 64 B messages, batching + EVENT_IDX, < 0.01 exits/req | best: {} req/s, {:.3} exits/req ({}, {}, batch {}) | {} | {} |",
                si(best.req_per_s),
                c.exits,
                size_label(best.case.size),
                best.case.device.name(),
                best.batch_used,
                verdict(Some(ok)),
                format_args!(
                    "blk requests are at least 512 B (64 B is not possible through virtio-blk). {}A request takes {} of wall time; \
                     exits are not the limit ({:.3} kicks/request at ~{} each = {} per request). The backend spends {} CPU per request \
                     (descriptor walk and checks, status write, used ring, through vm-memory), the vCPU thread {} (the guest builds the \
                     chain and polls); {}",
                    if best.req_per_s < 5e6 { format!("Short by {:.0}×. ", 5e6 / best.req_per_s) } else { String::new() },
                    ns(c.wall_ns),
                    best.kicks as f64 / best.case.count as f64,
                    ns(exit_ns),
                    ns(best.kicks as f64 / best.case.count as f64 * exit_ns),
                    ns(c.be_ns),
                    ns(c.hv_ns),
                    busy(r, &c)
                )
            );
        }
        None => {
            let _ = writeln!(o, "| ≥ 5 M req/s for small messages | — | not measured | no batched EVENT_IDX run at this scale |");
        }
    }

    // 3. Per-request cost at batch 64 vs SPSC.
    let b64 = r.by_batch.iter().chain(&r.policies).find(|x| x.case.batch == 64 && x.case.event_idx && x.case.size == 4096 && x.case.device.name() == "null (copies data)");
    let spsc = r.spsc.iter().find(|s| s.size == 4096);
    match (b64, spsc) {
        (Some(x), Some(s)) => {
            let c = costs(r, x);
            let wall = ratio(c.wall_ns, s.wall_ns());
            let cpu = ratio(c.hv_ns + c.be_ns, s.cpu_ns);
            let _ = writeln!(
                o,
                "| per-request cost within 2× of SPSC at batch 64 (4 KiB) | wall {} vs {} = {wall:.1}×; CPU (both processes) {} vs {} = {cpu:.1}× (batch used: {}) | {} | {} |",
                ns(c.wall_ns),
                ns(s.wall_ns()),
                ns(c.hv_ns + c.be_ns),
                ns(s.cpu_ns),
                x.batch_used,
                verdict(Some(wall <= 2.0)),
                if wall <= 2.0 {
                    String::new()
                } else {
                    format!(
                        "{:.3} exits/request × {} per exit = {} of the {} per request; backend {} CPU per request; {}",
                        c.exits,
                        ns(exit_ns),
                        ns(c.exits * exit_ns),
                        ns(c.wall_ns),
                        ns(c.be_ns),
                        busy(r, &c)
                    )
                }
            );
        }
        _ => {
            let _ = writeln!(o, "| per-request cost within 2× of SPSC at batch 64 | — | not measured | no batch-64 4 KiB run at this scale |");
        }
    }

    // 4. Null hypercall vs bare exit.
    let hc = r.pv_null.ns_per_iteration();
    let q = ratio(hc, exit_ns);
    let _ = writeln!(
        o,
        "| null hypercall ≤ 1.2× a bare port-I/O exit | {} vs {} = {q:.2}× | {} | {} |",
        ns(hc),
        ns(exit_ns),
        verdict(q.is_finite().then_some(q <= 1.2)),
        format_args!(
            "a hypercall is a port-I/O exit to port 0xf6 plus the dispatch (register sync, handler); the difference per call \
             is {}{}; hypervisor CPU per call {} vs {} per bare exit.",
            ns(hc - exit_ns),
            if hc < exit_ns { ", i.e. within the run-to-run noise of the exit itself on this machine" } else { "" },
            ns(r.pv_null.hv_ns_per_iteration()),
            ns(r.io_loop.hv_ns_per_iteration())
        )
    );

    // 5. PTE updates.
    let guest = r.pv_paging.items_per_s();
    let per_call = r.pv_paging.ns_per_iteration();
    let _ = writeln!(
        o,
        "| ≥ 10 M validated PTE updates/s, batches of 512 | validator in-process {} /s ({}); guest end to end {} /s ({}) | in-process {}, end to end {} | {} |",
        si(r.pte_validator),
        verdict(Some(r.pte_validator >= 1e7)),
        si(guest),
        verdict(Some(guest >= 1e7)),
        verdict(Some(r.pte_validator >= 1e7)),
        verdict(Some(guest >= 1e7)),
        format_args!(
            "end to end a call of 512 takes {}: {:.1} exits per call (~{} each) and {} of validation at the in-process rate; \
             the remaining {} per call is the hypervisor reading the list and writing the entries through guest memory, and \
             TLB work after the call.",
            ns(per_call),
            r.pv_paging.exits_per_iteration(),
            ns(exit_ns),
            ns(512e9 / r.pte_validator),
            ns(per_call - 512e9 / r.pte_validator - exit_ns * r.pv_paging.exits_per_iteration())
        )
    );

    // 6. Memory.
    match r.memory {
        Some((m, _)) => {
            let mib = m.overhead_kib() as f64 / 1024.0;
            let anon = m.anon_kib as f64 / 1024.0;
            let _ = writeln!(
                o,
                "| ≤ 3 MiB VMM overhead per domain | {mib:.2} MiB resident beyond guest RAM ({anon:.2} MiB anonymous); Firecracker publishes 5 MiB | {} | {} |",
                verdict(Some(mib <= 3.0)),
                if mib <= 3.0 {
                    String::new()
                } else {
                    format!(
                        "{:.2} MiB of it is the binary and shared libraries (shared between domains); the anonymous part alone is {}.",
                        m.file_kib as f64 / 1024.0,
                        if anon <= 3.0 { "within the target" } else { "over it too" }
                    )
                }
            );
        }
        None => {
            let _ = writeln!(o, "| ≤ 3 MiB VMM overhead per domain | — | not measured | |");
        }
    }
    let _ = writeln!(o, "| boot time to init vs QEMU microvm | — | not measured | see below |");
}

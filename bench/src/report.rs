//! The markdown report and its plots, from the [`Results`] of one run.
//! Every number in it comes from that run.

use std::fmt::Write;
use std::path::Path;

use crate::plot::{si, Plot, Series};
use crate::profile::{self, Profiles};
use crate::rig::{RigData, RigPart};
use crate::ring::{BlkResult, PerRequest};
use crate::suite::{Results, Scale, POLL};
use crate::summary::{BootTimes, NullPoint, Summary};
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
/// relative to `out`'s directory is `plots_rel`), without a rig part.
pub fn write(results: &Results, out: &Path, plots_dir: &Path, plots_rel: &str) -> Result<(), BenchError> {
    write_with_rig(results, &RigPart::NotRequested, out, plots_dir, plots_rel)
}

/// [`write`] with the rig part (`bench --rig`).
pub fn write_with_rig(results: &Results, rig: &RigPart, out: &Path, plots_dir: &Path, plots_rel: &str) -> Result<(), BenchError> {
    std::fs::create_dir_all(plots_dir).map_err(|source| BenchError::File { path: plots_dir.to_path_buf(), source })?;
    let size_png = plots_dir.join("throughput-vs-size.png");
    let batch_png = plots_dir.join("throughput-vs-batch.png");
    size_plot(results).draw(&size_png)?;
    batch_plot(results).draw(&batch_png)?;
    let profiles = profile::load(plots_dir);
    let md = markdown_full(
        results,
        rig,
        profiles.as_ref(),
        plots_rel,
        &format!("{plots_rel}/throughput-vs-size.png"),
        &format!("{plots_rel}/throughput-vs-batch.png"),
    );
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

/// The markdown text, without a rig part.
pub fn markdown(results: &Results, size_png: &str, batch_png: &str) -> String {
    markdown_with_rig(results, &RigPart::NotRequested, size_png, batch_png)
}

/// The markdown text (no profiles).
pub fn markdown_with_rig(results: &Results, rig: &RigPart, size_png: &str, batch_png: &str) -> String {
    markdown_full(results, rig, None, "perf", size_png, batch_png)
}

/// The markdown text, with the profiles' summaries (`bench profile`, read
/// from `plots_rel/profiles.json`) if there are any.
pub fn markdown_full(
    results: &Results,
    rig: &RigPart,
    profiles: Option<&Profiles>,
    plots_rel: &str,
    size_png: &str,
    batch_png: &str,
) -> String {
    let mut o = String::new();
    let r = results;
    let exit_ns = r.io_loop.ns_per_iteration();
    let _ = writeln!(o, "# Performance: the ring benchmark\n");
    let _ = writeln!(
        o,
        "Generated by `cargo run --release -p bench -- --out docs/performance.md --rig` ({} run, {:.0} s on the bare \
         machine{}). Every bare-machine figure below was measured in that one run (and every rig figure in its rig \
         run); nothing is copied from elsewhere. Ratios are against baselines measured in the same run on the same \
         machine.\n",
        r.scale.name(),
        r.elapsed.as_secs_f64(),
        match rig {
            RigPart::NotRequested => "; without `--rig`, so the rig part was not run".to_string(),
            RigPart::Unavailable(_) => "; the rig part could not run, see below".to_string(),
            RigPart::Ran(d) if d.reused => format!("; the rig part comes from the log of an earlier run, {}", d.log.display()),
            RigPart::Ran(d) => format!(", then {:.0} s in the rig", d.wall.as_secs_f64()),
        }
    );
    if r.scale != Scale::Full {
        let _ = writeln!(o, "**This is a {} run: fewer points and smaller counts than the full run.**\n", r.scale.name());
    }
    if let Some(p) = profiles {
        let _ = writeln!(
            o,
            "The CPU profiles cited in the targets table (\"perf …\") come from a separate run: `{}` at {} (perf record \
             attached to the backend's worker thread and the hypervisor process; see \
             [Profiles](#profiles-why-the-missed-targets-are-missed), also in [{plots_rel}/profiles.md]({plots_rel}/profiles.md)).\n",
            p.command, p.taken_at
        );
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
    targets(&mut o, r, exit_ns, rig, profiles);
    let _ = writeln!(o);

    if let Some(p) = profiles {
        let _ = writeln!(o, "## Profiles (why the missed targets are missed)\n");
        profile::markdown(&mut o, p, 2);
    }

    rig_section(&mut o, r, rig);

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

    boot_section(&mut o, rig);
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
    match rig {
        RigPart::Ran(_) => {
            let _ = writeln!(
                o,
                "- The rig runs a subset (`--scale rig`: null device at three sizes, batch 1 at 4 KiB, page-cache file reads, \
                 net ping/pong, the exit loops, the baselines): no batch or policy sweeps, no O_DIRECT (L1's /tmp is a tmpfs)."
            );
            let _ = writeln!(o, "- No real VT-x/AMD-V host: the hardware-assisted figures come from nested SVM emulated by QEMU TCG.");
        }
        _ => {
            let _ = writeln!(o, "- The same benchmark inside the rig (hardware-assisted SVM, emulated by QEMU): not run; only the bare kvm_pvm host is reported.");
        }
    }
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

/// "perf (`ID`, when): backend …; hypervisor …" for the targets table, or
/// None without that profile.
fn cite(profiles: Option<&Profiles>, id: &str) -> Option<String> {
    let p = profiles?.get(id)?;
    let parts: Vec<String> = p
        .views
        .iter()
        .map(|v| {
            let who = if v.key == "backend" { "of the backend worker thread's CPU" } else { "of the hypervisor process's CPU" };
            format!("{who} {}", v.cite(5, 2.0))
        })
        .collect();
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        " **perf** ([`{id}`](#{}), {}, {} samples): {}.",
        anchor(&format!("`{}`: {}", p.id, p.title)),
        profiles?.taken_at,
        p.samples,
        parts.join("; ")
    ))
}

/// GitHub's anchor for a heading.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The targets table rows.
fn targets(o: &mut String, r: &Results, exit_ns: f64, rig: &RigPart, profiles: Option<&Profiles>) {
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
                         The backend spends {} CPU per request{}, the vCPU thread {}; {:.3} kicks/request cost ~{} each (one exit); {}{}",
                        50.0 - pct,
                        ns(c.wall_ns),
                        ns(copy_ns),
                        ns(c.be_ns),
                        if profiles.is_some() { "" } else { " (not profiled)" },
                        ns(c.hv_ns),
                        x.kicks as f64 / x.case.count as f64,
                        ns(exit_ns),
                        busy(r, &c),
                        cite(profiles, "null-64k").unwrap_or_default()
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
                     exits are not the limit ({:.3} kicks/request at ~{} each = {} per request). The backend spends {} CPU per request, \
                     the vCPU thread {}; {}{}",
                    if best.req_per_s < 5e6 { format!("Short by {:.0}×. ", 5e6 / best.req_per_s) } else { String::new() },
                    ns(c.wall_ns),
                    best.kicks as f64 / best.case.count as f64,
                    ns(exit_ns),
                    ns(best.kicks as f64 / best.case.count as f64 * exit_ns),
                    ns(c.be_ns),
                    ns(c.hv_ns),
                    busy(r, &c),
                    cite(profiles, "null-512-b16").map(|c| format!("{c} (Profiled at batch 16, the size sweep's batch.)")).unwrap_or_default()
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
             that leaves {} per call for everything else{}",
            ns(per_call),
            r.pv_paging.exits_per_iteration(),
            ns(exit_ns),
            ns(512e9 / r.pte_validator),
            ns(per_call - 512e9 / r.pte_validator - exit_ns * r.pv_paging.exits_per_iteration()),
            match cite(profiles, "pv-paging") {
                Some(c) => format!(".{c}"),
                None => " (not profiled).".to_string(),
            }
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
    boot_target(o, rig);
}

/// "rig / bare" for two times (or "bare / rig" for two rates): how many
/// times slower the rig is.
fn slower(bare: f64, rig: f64, is_rate: bool) -> String {
    let q = if is_rate { ratio(bare, rig) } else { ratio(rig, bare) };
    if !q.is_finite() {
        "—".into()
    } else if q >= 1.0 {
        format!("{q:.1}× slower")
    } else {
        format!("{:.1}× faster", 1.0 / q)
    }
}

/// A count or a dimensionless figure side by side: rig / bare.
fn times(bare: f64, rig: f64) -> String {
    let q = ratio(rig, bare);
    if q.is_finite() {
        format!("{q:.2}×")
    } else {
        "—".into()
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "—".into())
}

/// The first word of a load-average string.
fn load1(l: &str) -> &str {
    l.split_whitespace().next().unwrap_or("?")
}

/// The "Bare machine vs rig" section.
fn rig_section(o: &mut String, r: &Results, rig: &RigPart) {
    let bare = Summary::of(r);
    let _ = writeln!(o, "## Bare machine ({}) vs rig (svm)\n", bare.backend);
    let d: &RigData = match rig {
        RigPart::NotRequested => {
            let _ = writeln!(o, "Not run: the report was generated without `--rig`.\n");
            return;
        }
        RigPart::Unavailable(why) => {
            let _ = writeln!(o, "Not run: the rig could not be used: {why}.\n");
            return;
        }
        RigPart::Ran(d) => d,
    };
    let s = match &d.summary {
        Ok(s) => s,
        Err(why) => {
            let _ = writeln!(
                o,
                "The rig ran (rig.sh exit code {}, log `{}`) but gave no benchmark figures: {why}. Its last lines:\n\n```\n{}\n```\n",
                opt(d.code, |c| c.to_string()),
                d.log.display(),
                d.tail
            );
            return;
        }
    };
    let _ = writeln!(
        o,
        "The same code on two kinds of KVM: this bench binary, the same `hypervisor` binary and the same test guest image \
         run once on this machine's kvm_pvm (the tables above) and once inside the hardware-assisted rig (tests/rig): \
         `bench --rig` starts `tests/rig/rig.sh run --scenario tests/rig/scenarios/bench.scenario` with the three copied \
         into L1 (debug info stripped), and L1 runs `bench --scale rig --summary` on its own `/dev/kvm`, which is \
         kvm_amd with nested paging ({}). The in-rig bench prints its key figures as framed JSON (`BENCH-JSON summary …` \
         lines) on L1's serial console; this report reads them from rig.sh's output (log: `{}`).\n",
        d.l1_kvm.as_deref().unwrap_or("state not reported"),
        d.log.display()
    );
    let _ = writeln!(
        o,
        "**The rig's KVM is nested inside QEMU TCG**: L1 is an emulated x86 CPU with emulated AMD SVM (`-cpu qemu64,+svm,+npt`, \
         one vCPU, on this same 2-CPU host), so every guest instruction and every world switch is translated by QEMU. Its \
         absolute figures are not those of a real VT-x/AMD-V host and say nothing about one; what compares is what the \
         code does — exits per request, exits per call, the fixed exits of a run — and ratios within one column (a \
         hypercall against a bare exit, an exit against a unit of plain CPU work). The in-process baselines (memcpy, the \
         PTE validator, no KVM involved) show how much slower the emulated CPU is by itself.\n"
    );
    if !s.tsc_from_guest {
        let _ = writeln!(
            o,
            "The test guest times its loops with the TSC. On kvm_pvm it reads the TSC rate from PVM's MSR; under the rig's \
             SVM it cannot tell the rate (the emulated CPU has no CPUID leaf 0x15/0x16), so the in-rig bench converts the guest's \
             cycle counts with L1's TSC rate, which it measures itself (rdtsc against CLOCK_MONOTONIC; KVM gives a guest its \
             host's TSC rate unless told otherwise).\n"
        );
    }
    let _ = writeln!(o, "| | bare machine | rig | rig vs bare |\n|---|---:|---:|---:|");
    let row = |o: &mut String, name: &str, a: String, b: String, c: String| {
        let _ = writeln!(o, "| {name} | {a} | {b} | {c} |");
    };
    row(o, "KVM backend (`hypervisor info`)", format!("**{}**", bare.backend), format!("**{}**", s.backend), String::new());
    row(
        o,
        "CPU (online)",
        format!("{} ({})", bare.cpu, bare.cpus),
        format!("{} ({}), emulated by QEMU TCG on the bare machine", s.cpu, s.cpus),
        String::new(),
    );
    row(o, "kernel", bare.kernel.clone(), s.kernel.clone(), String::new());
    row(o, "run (scale, wall time)", format!("{}, {:.0} s", bare.scale, bare.elapsed_s), format!("{}, {:.0} s", s.scale, s.elapsed_s), String::new());
    row(
        o,
        "load average (1 min) at start / end",
        format!("{} / {}", load1(&bare.load.0), load1(&bare.load.1)),
        format!("{} / {} (L1's own)", load1(&s.load.0), load1(&s.load.1)),
        String::new(),
    );
    let tsc = |x: &Summary, place: &str| {
        format!("{} MHz ({})", x.tsc_khz as f64 / 1000.0, if x.tsc_from_guest { "the guest's own".to_string() } else { format!("measured by the bench {place}") })
    };
    row(o, "TSC rate the guest's cycle counts are converted with", tsc(&bare, "on this machine"), tsc(s, "in L1"), String::new());
    let sizes: Vec<u64> = s.null.iter().map(|p| p.size).filter(|z| bare.null_at(*z).is_some()).collect();
    for z in &sizes {
        let (a, b) = (bare.null_at(*z).expect("filtered"), s.null_at(*z).expect("listed"));
        let lbl = size_label(*z);
        row(o, &format!("null device {lbl} reads, batch 16, EVENT_IDX: req/s"), si(a.req_per_s), si(b.req_per_s), slower(a.req_per_s, b.req_per_s, true));
        row(o, "… GB/s", gbps(a.bytes_per_s), gbps(b.bytes_per_s), slower(a.bytes_per_s, b.bytes_per_s, true));
        row(
            o,
            "… exits/request (kicks/request)",
            format!("{:.3} ({:.3})", a.exits_per_req, a.kicks_per_req),
            format!("{:.3} ({:.3})", b.exits_per_req, b.kicks_per_req),
            times(a.exits_per_req, b.exits_per_req),
        );
    }
    let b1 = |p: &NullPoint| format!("{:.3} ({} req/s)", p.exits_per_req, si(p.req_per_s));
    row(
        o,
        "kick per request (4 KiB, batch 1, EVENT_IDX): exits/request",
        opt(bare.batch1.as_ref(), b1),
        opt(s.batch1.as_ref(), b1),
        match (&bare.batch1, &s.batch1) {
            (Some(a), Some(b)) => times(a.exits_per_req, b.exits_per_req),
            _ => "—".into(),
        },
    );
    row(
        o,
        "exits of a one-request run (boot, banner, device bring-up)",
        bare.fixed_exits.to_string(),
        s.fixed_exits.to_string(),
        times(bare.fixed_exits as f64, s.fixed_exits as f64),
    );
    row(o, "bare port-I/O exit (`io-loop`)", ns(bare.exit.ns), ns(s.exit.ns), slower(bare.exit.ns, s.exit.ns, false));
    row(
        o,
        "… exits per iteration; hypervisor CPU per exit",
        format!("{:.2}; {}", bare.exit.exits, ns(bare.exit.hv_ns)),
        format!("{:.2}; {}", s.exit.exits, ns(s.exit.hv_ns)),
        String::new(),
    );
    row(o, "null hypercall (`pv-null`)", ns(bare.hypercall.ns), ns(s.hypercall.ns), slower(bare.hypercall.ns, s.hypercall.ns, false));
    row(
        o,
        "… null hypercall / bare exit",
        format!("{:.2}×", ratio(bare.hypercall.ns, bare.exit.ns)),
        format!("{:.2}×", ratio(s.hypercall.ns, s.exit.ns)),
        String::new(),
    );
    row(o, "`mmu_update` of 512 PTEs, per call", ns(bare.mmu_update.ns), ns(s.mmu_update.ns), slower(bare.mmu_update.ns, s.mmu_update.ns, false));
    row(
        o,
        "… exits per call (of which KVM page faults, `pf_taken`)",
        format!("{:.2} ({:.2})", bare.mmu_update.exits, bare.mmu_update.pf),
        format!("{:.2} ({:.2})", s.mmu_update.exits, s.mmu_update.pf),
        times(bare.mmu_update.exits, s.mmu_update.exits),
    );
    row(
        o,
        "validated PTE updates/s, guest → `mmu_update` → validator",
        si(bare.pte_guest_per_s),
        si(s.pte_guest_per_s),
        slower(bare.pte_guest_per_s, s.pte_guest_per_s, true),
    );
    row(
        o,
        "validated PTE updates/s, validator in-process (no KVM)",
        si(bare.pte_validator_per_s),
        si(s.pte_validator_per_s),
        slower(bare.pte_validator_per_s, s.pte_validator_per_s, true),
    );
    row(o, "memcpy 64 KiB, GB/s (no KVM)", gbps(bare.memcpy_64k), gbps(s.memcpy_64k), slower(bare.memcpy_64k, s.memcpy_64k, true));
    row(
        o,
        "a bare exit in units of one in-process PTE validation",
        format!("{:.0}", bare.exit.ns * bare.pte_validator_per_s / 1e9),
        format!("{:.0}", s.exit.ns * s.pte_validator_per_s / 1e9),
        times(bare.exit.ns * bare.pte_validator_per_s, s.exit.ns * s.pte_validator_per_s),
    );
    let mem = |m: (f64, f64)| format!("{:.2} MiB ({:.2} MiB anonymous)", m.0, m.1);
    row(
        o,
        "VMM overhead: resident beyond guest RAM",
        opt(bare.vmm_overhead_mib, mem),
        opt(s.vmm_overhead_mib, mem),
        match (bare.vmm_overhead_mib, s.vmm_overhead_mib) {
            (Some(a), Some(b)) => times(a.0, b.0),
            _ => "—".into(),
        },
    );
    row(
        o,
        "virtio-net ping/pong, average round trip",
        opt(bare.net_rtt_us, |v| format!("{v:.1} µs")),
        opt(s.net_rtt_us, |v| format!("{v:.1} µs")),
        match (bare.net_rtt_us, s.net_rtt_us) {
            (Some(a), Some(b)) => slower(a, b, false),
            _ => "—".into(),
        },
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "\"rig vs bare\": for times and rates how many times slower (or faster) the rig is; for counts rig ÷ bare. \
         The rig's counts are smaller (`--scale rig`: {} requests per null-device run, {} per batch-1 run) and L1 has \
         one CPU, so the backend thread and the vCPU thread take turns on it instead of running side by side.\n",
        crate::suite::RIG_COUNT,
        crate::suite::RIG_COUNT / 4
    );
    rig_reading(o, &bare, s);
    let failed: Vec<String> = d.results.iter().filter(|x| !x.pass).map(|x| format!("{}: {}", x.name, x.reason)).collect();
    if !failed.is_empty() || !s.failures.is_empty() {
        let _ = writeln!(o, "Failures in the rig run: {}.\n", failed.into_iter().chain(s.failures.iter().cloned()).collect::<Vec<_>>().join("; "));
    }
    if let Some(t) = &d.times {
        let _ = writeln!(o, "rig.sh's timings: {t}.\n");
    }
    if !d.host_load.0.is_empty() {
        let busy = |l: &str| load1(l).parse::<f64>().unwrap_or(0.0) >= 0.5;
        let _ = writeln!(
            o,
            "This machine's load average (1, 5, 15 min) before / after the rig run: {} / {}{}.\n",
            d.host_load.0,
            d.host_load.1,
            if busy(&d.host_load.0) || busy(&d.host_load.1) {
                ": QEMU's TCG thread shared the CPUs with other work, which slows the emulated CPU and adds noise to every rig figure"
            } else {
                ""
            }
        );
    }
}

/// What the side-by-side table says, computed from it.
fn rig_reading(o: &mut String, bare: &Summary, s: &Summary) {
    let cpu = ratio(bare.pte_validator_per_s, s.pte_validator_per_s);
    let exit = ratio(s.exit.ns, bare.exit.ns);
    let mut lines = Vec::new();
    if cpu.is_finite() && exit.is_finite() {
        lines.push(format!(
            "Plain CPU work (the in-process validator) runs {cpu:.0}× slower in L1 than on the bare machine; a bare exit takes {}× as long \
             ({} vs {}). Measured in units of CPU work, an exit costs {:.1}× as much in the rig as on kvm_pvm: {}",
            format_args!("{exit:.1}"),
            ns(s.exit.ns),
            ns(bare.exit.ns),
            exit / cpu,
            if exit / cpu > 1.0 {
                "under TCG a world switch of the emulated SVM (VMRUN/#VMEXIT, done by QEMU in software, plus L1 KVM's exit handling and the return to our userspace) is dearer relative to ordinary instructions than kvm_pvm's exit on real hardware."
            } else {
                "relative to ordinary instructions the emulated SVM world switch costs less than kvm_pvm's exit on real hardware."
            }
        ));
    }
    let hq = (ratio(bare.hypercall.ns, bare.exit.ns), ratio(s.hypercall.ns, s.exit.ns));
    if hq.0.is_finite() && hq.1.is_finite() {
        lines.push(format!(
            "A null hypercall costs {:.2}× a bare exit on kvm_pvm and {:.2}× in the rig: on both it is one exit (`{:.2}` and `{:.2}` \
             exits per call) plus the dispatch.",
            hq.0, hq.1, bare.hypercall.exits, s.hypercall.exits
        ));
    }
    if let (Some(a), Some(b)) = (bare.null_at(4096), s.null_at(4096)) {
        lines.push(format!(
            "With batching and EVENT_IDX the ring needs few exits on both: {:.3} exits per 4 KiB request on kvm_pvm, {:.3} in the rig. \
             The counts differ with timing, not code: an exit is a kick the guest makes when it finds the backend asleep, and in L1 \
             the backend thread and the vCPU share one CPU.",
            a.exits_per_req, b.exits_per_req
        ));
    }
    lines.push(format!(
        "`mmu_update` takes {:.2} exits per call of 512 updates on {} and {:.2} on {}: one for the hypercall, and KVM page \
         faults ({:.2} and {:.2} `pf_taken` per call) where KVM shadows the guest's page tables (kvm_pvm has no nested paging; \
         the rig's SVM has NPT).",
        bare.mmu_update.exits, bare.backend, s.mmu_update.exits, s.backend, bare.mmu_update.pf, s.mmu_update.pf
    ));
    lines.push(format!(
        "The exits a run needs before its first request (boot, banner, device bring-up, one request) are {} on {} and {} on {}.",
        bare.fixed_exits, bare.backend, s.fixed_exits, s.backend
    ));
    for l in lines {
        let _ = writeln!(o, "- {l}");
    }
    let _ = writeln!(o);
}

/// The boot-time row of the targets table.
fn boot_target(o: &mut String, rig: &RigPart) {
    let why = match rig {
        RigPart::NotRequested => "the rig part was not run (no `--rig`)".to_string(),
        RigPart::Unavailable(w) => format!("the rig could not be used: {w}"),
        RigPart::Ran(d) => match &d.boot {
            Err(e) => format!("no boot times from the rig: {e}"),
            Ok(b) => {
                let ours = b.series.first().and_then(|x| x.median_ready());
                let qemu = b.series.get(1).and_then(|x| x.median_ready());
                match (ours, qemu) {
                    (Some(a), Some(q)) => {
                        let _ = writeln!(
                            o,
                            "| boot time to init vs QEMU microvm | ours {a:.2} s vs QEMU microvm {q:.2} s to `SPLITPV-GUEST-READY` = {:.2}× (median of {} boots each, \
                             both inside the rig on nested SVM) | measured: ours is {} | same kernel, initramfs and command line on the same KVM; see \
                             [Boot time](#boot-time-to-init-linux-our-hypervisor-vs-qemu-microvm) |",
                            a / q,
                            b.series[0].ready_times().len().min(b.series[1].ready_times().len()),
                            if a <= q { "faster" } else { "slower" }
                        );
                        return;
                    }
                    (Some(a), None) => format!(
                        "ours {a:.2} s; QEMU microvm not measured: {}",
                        b.series.get(1).and_then(|x| x.error.clone()).unwrap_or_else(|| "no QEMU boot".into())
                    ),
                    _ => "our boot did not reach init in the rig".into(),
                }
            }
        },
    };
    let _ = writeln!(o, "| boot time to init vs QEMU microvm | — | not measured | {why} |");
}

/// The boot-time section.
fn boot_section(o: &mut String, rig: &RigPart) {
    let _ = writeln!(o, "## Boot time to init (Linux): our hypervisor vs QEMU microvm\n");
    let b: &BootTimes = match rig {
        RigPart::NotRequested => {
            let _ = writeln!(
                o,
                "Not measured: our hypervisor cannot boot Linux on this kvm_pvm host (docs/guests.md); the comparison runs inside \
                 the rig and needs `--rig`.\n"
            );
            return;
        }
        RigPart::Unavailable(why) => {
            let _ = writeln!(o, "Not measured: the rig could not be used: {why}.\n");
            return;
        }
        RigPart::Ran(d) => match &d.boot {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(o, "Not measured: the rig run gave no boot times ({e}).\n");
                return;
            }
        },
    };
    let _ = writeln!(
        o,
        "Both VMMs boot the same guest (guest-patches/: `{}`, `{}`) with the same command line `{}`, {} MiB, 1 vCPU, inside the \
         rig's L1 on the same nested-SVM KVM, one after the other ({} boots each, alternating; L1 load average before: {}). \
         `bench boot-time` starts the VMM and timestamps its stdout line by line: **to ready** is the time from starting the \
         process to the `SPLITPV-GUEST-READY` line that the guest's /init prints first. The guest kernel's own clock at \
         \"Run /init as init process\" (its console line) is shown beside it: the difference is the VMM's setup, the firmware \
         (QEMU's qboot; our hypervisor has none), the kernel's decompression and early setup before its clock starts, and /init's \
         first lines.\n",
        b.kernel,
        b.initrd,
        b.cmdline,
        b.mem_mib,
        b.series.first().map_or(0, |s| s.runs.len()),
        b.load
    );
    let _ = writeln!(
        o,
        "| VMM | command | to ready: median | min – max | guest kernel's clock at /init (median) | to ready minus the kernel's clock (median) | process exit (median) |\n|---|---|---:|---:|---:|---:|---:|"
    );
    for s in &b.series {
        let t = s.ready_times();
        let mut exits: Vec<f64> = s.runs.iter().filter_map(|r| r.exit_s).collect();
        exits.sort_by(f64::total_cmp);
        let exit_median = if exits.is_empty() { None } else { Some(exits[exits.len() / 2]) };
        let mut outside: Vec<f64> = s.runs.iter().filter_map(|r| Some(r.ready_s? - r.kernel_init_s?)).collect();
        outside.sort_by(f64::total_cmp);
        let outside_median = if outside.is_empty() { None } else { Some(outside[outside.len() / 2]) };
        match s.median_ready() {
            Some(m) => {
                let _ = writeln!(
                    o,
                    "| {} | `{}` | **{m:.2} s** | {:.2} – {:.2} s ({} of {} boots) | {} | {} | {} |",
                    s.vmm,
                    s.command,
                    t[0],
                    t[t.len() - 1],
                    t.len(),
                    s.runs.len(),
                    opt(s.median_kernel_init(), |v| format!("{v:.2} s")),
                    opt(outside_median, |v| format!("{v:.2} s")),
                    opt(exit_median, |v| format!("{v:.2} s"))
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "| {} | `{}` | not measured | {} | | | |",
                    s.vmm,
                    if s.command.is_empty() { "—" } else { &s.command },
                    s.error.as_deref().unwrap_or("no boot reached the marker").replace('|', "/")
                );
            }
        }
    }
    let _ = writeln!(o);
    if let (Some(a), Some(q)) = (b.series.first().and_then(|s| s.median_ready()), b.series.get(1).and_then(|s| s.median_ready())) {
        let _ = writeln!(
            o,
            "Ours reaches init in {:.2}× QEMU microvm's time (median against median). As with the benchmark, L1 is QEMU TCG: \
             every guest instruction is translated and every exit (this command line sends the whole boot log through the \
             emulated 8250 on both VMMs) costs far more than on a real VT-x/AMD-V host, so the absolute times are inflated, \
             and the host's load spreads them; only the comparison between the two VMMs on the same KVM carries over.\n",
            a / q
        );
    }
    if let RigPart::Ran(d) = rig {
        if !d.host_load.0.is_empty() {
            let _ = writeln!(
                o,
                "This machine's load average before / after the whole rig run: {} / {} (2 CPUs).\n",
                d.host_load.0, d.host_load.1
            );
        }
    }
    for s in &b.series {
        if let (Some(t), true) = (&s.tail, s.median_ready().is_none()) {
            let _ = writeln!(o, "{}'s last output: `{}`\n", s.vmm, t.replace('`', "'"));
        }
    }
}

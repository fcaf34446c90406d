//! The guest runs: virtio-blk requests through the null device or a file,
//! virtio-net round trips between two domains through dom0's switch, and
//! the exit loops (`io-loop`, `pv-null`, `pv-paging-bench`).
//!
//! Each run is one `hypervisor run` of the test guest, with its backends
//! started here by `dom0::backends::start`; the backends' CPU time is this
//! process's CPU time over the run (nothing else here works meanwhile).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dom0::backends::{self, BackendSpec, NetPort, RunningBackend, Switch};

use crate::procs::{self, num, GuestRun, Hypervisor, RunSpec};
use crate::BenchError;

/// Capacity of the null device and size of the disk image.
pub const DISK_BYTES: u64 = 64 << 20;
/// Guest RAM of every run (MiB).
pub const GUEST_MIB: u64 = 64;

/// What the runs share: the hypervisor, a scratch directory for sockets
/// and the disk image.
pub struct Env {
    /// The hypervisor binary.
    pub hv: Hypervisor,
    /// Scratch directory (sockets, the disk image).
    pub dir: PathBuf,
    next: AtomicU32,
}

impl Env {
    /// A scratch directory under the system's temporary directory (a
    /// real file system: O_DIRECT needs one).
    pub fn new(hv: Hypervisor) -> Result<Env, BenchError> {
        let dir = std::env::temp_dir().join(format!("splitpv-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| BenchError::File { path: dir.clone(), source })?;
        Ok(Env { hv, dir, next: AtomicU32::new(0) })
    }

    fn socket(&self, tag: &str) -> PathBuf {
        self.dir.join(format!("{tag}-{}.sock", self.next.fetch_add(1, Ordering::Relaxed)))
    }

    /// The disk image ([`DISK_BYTES`] of non-zero data), made on first use.
    pub fn disk(&self) -> Result<PathBuf, BenchError> {
        let path = self.dir.join("disk.img");
        if !path.exists() {
            let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8 | 1).collect();
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&path)?;
                for _ in 0..DISK_BYTES >> 20 {
                    f.write_all(&chunk)?;
                }
                f.sync_all()
            };
            write().map_err(|source| BenchError::File { path: path.clone(), source })?;
        }
        Ok(path)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_backend(what: &str, spec: BackendSpec, socket: &Path) -> Result<RunningBackend, BenchError> {
    backends::start(spec, socket).map_err(|source| BenchError::Backend { what: what.into(), source })
}

/// The device behind a virtio-blk run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BlkDevice {
    /// The null device; `touch`: copy the data; `poll`: busy-poll the queue
    /// this long before sleeping.
    Null {
        /// Copy the data (one memcpy per request).
        touch: bool,
        /// Backend busy-polling period.
        poll: Duration,
    },
    /// virtio-blk on a file, through the page cache or with O_DIRECT.
    File {
        /// O_DIRECT.
        direct: bool,
    },
}

impl BlkDevice {
    /// A short name for tables.
    pub fn name(&self) -> String {
        match self {
            BlkDevice::Null { touch: true, poll } if poll.is_zero() => "null (copies data)".into(),
            BlkDevice::Null { touch: false, poll } if poll.is_zero() => "null (status only)".into(),
            BlkDevice::Null { touch, poll } => {
                format!("null ({}, polls {} µs)", if *touch { "copies data" } else { "status only" }, poll.as_micros())
            }
            BlkDevice::File { direct: false } => "file, page cache".into(),
            BlkDevice::File { direct: true } => "file, O_DIRECT".into(),
        }
    }
}

/// One virtio-bench configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlkCase {
    /// The backend.
    pub device: BlkDevice,
    /// Bytes per request (a multiple of 512).
    pub size: u64,
    /// Requests per kick decision, as asked (the guest may cut it).
    pub batch: u64,
    /// Requests in all.
    pub count: u64,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX.
    pub event_idx: bool,
    /// Writes instead of reads.
    pub write: bool,
}

/// What a virtio-bench run measured.
#[derive(Clone, Debug)]
pub struct BlkResult {
    /// The configuration.
    pub case: BlkCase,
    /// The batch the guest used (cut to what fits two batches in the queue).
    pub batch_used: u64,
    /// Requests per second over the guest's timed loop.
    pub req_per_s: f64,
    /// Kicks the guest made (QueueNotify writes).
    pub kicks: u64,
    /// Batches submitted.
    pub batches: u64,
    /// Requests the backend counted.
    pub backend_requests: u64,
    /// Requests the backend refused or failed.
    pub backend_errors: u64,
    /// Call-eventfd signals.
    pub notifications: u64,
    /// KVM exits of the whole run, all vCPUs.
    pub exits: u64,
    /// CPU time of the hypervisor process.
    pub hv_cpu: Duration,
    /// CPU time of the backend (this process) over the run.
    pub be_cpu: Duration,
    /// The guest's run, for memory figures.
    pub run: GuestRun,
}

impl BlkResult {
    /// Payload bytes per second.
    pub fn bytes_per_s(&self) -> f64 {
        self.req_per_s * self.case.size as f64
    }
}

/// What a run costs besides its requests (boot, banner, device bring-up):
/// subtracted before dividing by the request count.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fixed {
    /// Exits.
    pub exits: u64,
    /// Hypervisor CPU time.
    pub hv_cpu: Duration,
    /// Backend CPU time.
    pub be_cpu: Duration,
}

/// Per-request costs of a run, fixed costs taken out.
#[derive(Clone, Copy, Debug)]
pub struct PerRequest {
    /// Exits per request.
    pub exits: f64,
    /// Hypervisor CPU ns per request.
    pub hv_ns: f64,
    /// Backend CPU ns per request.
    pub be_ns: f64,
    /// Wall ns per request (1 / rate).
    pub wall_ns: f64,
}

/// `total - fixed` over `count`, never below zero.
fn per(total: f64, fixed: f64, count: u64) -> f64 {
    ((total - fixed) / count.max(1) as f64).max(0.0)
}

impl BlkResult {
    /// The costs per request with `fixed` taken out.
    pub fn per_request(&self, fixed: &Fixed) -> PerRequest {
        let n = self.case.count;
        PerRequest {
            exits: per(self.exits as f64, fixed.exits as f64, n),
            hv_ns: per(self.hv_cpu.as_nanos() as f64, fixed.hv_cpu.as_nanos() as f64, n),
            be_ns: per(self.be_cpu.as_nanos() as f64, fixed.be_cpu.as_nanos() as f64, n),
            wall_ns: 1e9 / self.req_per_s.max(f64::MIN_POSITIVE),
        }
    }
}

fn guest_failed(cmdline: &str, run: &GuestRun) -> BenchError {
    BenchError::GuestFailed { cmdline: cmdline.into(), code: run.code, detail: run.tail() }
}

/// Runs one virtio-bench configuration.
pub fn run_blk(env: &Env, case: &BlkCase, sample_memory: bool) -> Result<BlkResult, BenchError> {
    run_blk_observed(env, case, sample_memory, &mut |_| {})
}

/// [`run_blk`], calling `started` with the hypervisor's process id once it
/// runs (the backend is already listening then): `bench profile` attaches
/// perf there.
pub fn run_blk_observed(env: &Env, case: &BlkCase, sample_memory: bool, started: &mut dyn FnMut(u32)) -> Result<BlkResult, BenchError> {
    let spec = match case.device {
        BlkDevice::Null { touch, poll } => BackendSpec::Null { capacity_bytes: DISK_BYTES, touch_data: touch, poll },
        BlkDevice::File { direct } => BackendSpec::Blk { path: env.disk()?, read_only: false, serial: "bench".into(), direct },
    };
    let socket = env.socket("blk");
    let cmdline = format!(
        "workload=virtio-bench bench.size={} bench.batch={} bench.count={} bench.eventidx={} bench.op={}",
        case.size,
        case.batch,
        case.count,
        u8::from(case.event_idx),
        if case.write { "write" } else { "read" }
    );
    let cpu_before = procs::self_cpu()?;
    let backend = start_backend(&case.device.name(), spec, &socket)?;
    let spec = RunSpec {
        cmdline: cmdline.clone(),
        devices: vec![format!("blk:{}", socket.display())],
        mem_mib: GUEST_MIB,
        timeout: Duration::from_secs(120),
        sample_memory: sample_memory.then_some(Duration::from_millis(20)),
        name: "bench",
    };
    let guest = procs::spawn_guest(&env.hv, &spec)?;
    started(guest.pid());
    let run = guest.wait(spec.sample_memory)?;
    let stats = backend.stats();
    let _ = backend.stop();
    let be_cpu = procs::self_cpu()?.saturating_sub(cpu_before);
    let Some(line) = run.line("VIRTIO-BENCH PASS:").filter(|_| run.code == Some(0)) else {
        return Err(guest_failed(&cmdline, &run));
    };
    let req_per_s = match (num(line, "req_per_s"), num(line, "cycles")) {
        (Some(r), _) => r as f64,
        // No TSC rate in the guest (not on kvm_pvm): its cycles at this
        // machine's TSC rate.
        (None, Some(cycles)) if procs::tsc_khz() > 0 => case.count as f64 * procs::tsc_khz() as f64 * 1e3 / cycles.max(1) as f64,
        // Else the whole run's wall time, boot included.
        _ => case.count as f64 / run.wall.as_secs_f64(),
    };
    Ok(BlkResult {
        case: *case,
        batch_used: num(line, "batch").unwrap_or(case.batch),
        req_per_s,
        kicks: num(line, "kicks").unwrap_or(0),
        batches: num(line, "batches").unwrap_or(0),
        backend_requests: stats.requests,
        backend_errors: stats.errors,
        notifications: stats.notifications,
        exits: run.stat("exits").unwrap_or(0),
        hv_cpu: run.cpu,
        be_cpu,
        run,
    })
}

/// The fixed costs of a virtio-bench run: the same with a single request.
pub fn calibrate_blk(env: &Env) -> Result<Fixed, BenchError> {
    let case = BlkCase {
        device: BlkDevice::Null { touch: true, poll: Duration::ZERO },
        size: 4096,
        batch: 1,
        count: 1,
        event_idx: true,
        write: false,
    };
    let r = run_blk(env, &case, false)?;
    Ok(Fixed { exits: r.exits, hv_cpu: r.hv_cpu, be_cpu: r.be_cpu })
}

/// What a ping/pong run between two domains measured.
#[derive(Clone, Debug)]
pub struct NetResult {
    /// Round trips.
    pub count: u64,
    /// Average round-trip time (µs), from the pinging guest's TSC.
    pub rtt_avg_us: f64,
    /// Shortest round trip (µs).
    pub rtt_min_us: f64,
    /// Frames the backends handled (both directions, both domains).
    pub frames: u64,
    /// Kicks of the pinging guest.
    pub kicks: u64,
    /// KVM exits of both domains.
    pub exits: u64,
    /// CPU time of both hypervisor processes.
    pub hv_cpu: Duration,
    /// CPU time of both backends and the switch (this process).
    pub be_cpu: Duration,
}

/// `count` ping/pong round trips of 60-byte frames between two domains
/// through one dom0 switch.
pub fn run_net(env: &Env, count: u64) -> Result<NetResult, BenchError> {
    let switch = Switch::new("bench");
    let macs = [[0x52, 0x54, 0x00, 0xbe, 0x00, 0x01], [0x52, 0x54, 0x00, 0xbe, 0x00, 0x02]];
    let cpu_before = procs::self_cpu()?;
    let mut running = Vec::new();
    let mut guests = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        let socket = env.socket("net");
        let backend =
            start_backend("net", BackendSpec::Net { mac: *mac, port: NetPort::Switch(switch.clone()) }, &socket)?;
        running.push(backend);
        // The pong domain first, so the first ping finds it (the pinger
        // resends every 100 ms until it does).
        let cmdline = if i == 0 {
            format!("workload=virtio-net net.role=pong net.count={count}")
        } else {
            let m = macs[0];
            format!(
                "workload=virtio-net net.role=ping net.count={count} net.peer={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            )
        };
        let spec = RunSpec {
            cmdline: cmdline.clone(),
            devices: vec![format!("net:{}", socket.display())],
            mem_mib: GUEST_MIB,
            timeout: Duration::from_secs(120),
            sample_memory: None,
            name: if i == 0 { "pong" } else { "ping" },
        };
        guests.push((cmdline, procs::spawn_guest(&env.hv, &spec)?));
    }
    let mut runs = Vec::new();
    for (cmdline, g) in guests {
        runs.push((cmdline, g.wait(None)?));
    }
    let frames: u64 = running.iter().map(|b| b.stats().requests).sum();
    for b in running {
        let _ = b.stop();
    }
    let be_cpu = procs::self_cpu()?.saturating_sub(cpu_before);
    for (cmdline, r) in &runs {
        if r.code != Some(0) {
            return Err(guest_failed(cmdline, r));
        }
    }
    let (ping_cmdline, ping) = &runs[1];
    let line = ping.line("VIRTIO-NET PASS ping:").ok_or_else(|| guest_failed(ping_cmdline, ping))?;
    let khz = ping
        .line("VIRTIO TSC ")
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|w| w.parse::<f64>().ok())
        .filter(|&k| k > 0.0)
        .or(Some(procs::tsc_khz() as f64).filter(|&k| k > 0.0));
    let after = |word: &str| -> Option<f64> {
        let mut it = line.split_whitespace();
        it.find(|w| *w == word)?;
        it.next()?.trim_end_matches(',').parse().ok()
    };
    let to_us = |cycles: f64| khz.map(|k| cycles / k * 1000.0).unwrap_or(f64::NAN);
    let kicks = line
        .rsplit(", ")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    Ok(NetResult {
        count,
        rtt_avg_us: to_us(after("avg").unwrap_or(f64::NAN)),
        rtt_min_us: to_us(after("min").unwrap_or(f64::NAN)),
        frames,
        kicks,
        exits: runs.iter().map(|(_, r)| r.stat("exits").unwrap_or(0)).sum(),
        hv_cpu: runs.iter().map(|(_, r)| r.cpu).sum(),
        be_cpu,
    })
}

/// The better (faster) of `reps` runs of `workload=NAME iterations=N`,
/// with the per-iteration exits and hypervisor CPU taken from the
/// difference to a run of `base` iterations (which carries the same boot
/// and setup), so they count the loop alone. On a shared machine the best
/// of a few runs is the least disturbed one.
pub fn run_loop_best(env: &Env, workload: &str, iterations: u64, base: u64, reps: u32) -> Result<LoopResult, BenchError> {
    let mut best: Option<LoopResult> = None;
    for _ in 0..reps.max(1) {
        let r = run_loop(env, workload, iterations)?;
        if best.as_ref().is_none_or(|b| r.cycles < b.cycles) {
            best = Some(r);
        }
    }
    let mut best = best.expect("at least one run");
    let short = run_loop(env, workload, base)?;
    best.loop_exits = best.exits.saturating_sub(short.exits);
    best.loop_pf = best.pf_taken.saturating_sub(short.pf_taken);
    best.loop_hv_cpu = best.hv_cpu.saturating_sub(short.hv_cpu);
    best.loop_iterations = iterations.saturating_sub(base).max(1);
    Ok(best)
}

/// What one of the exit loops measured.
#[derive(Clone, Debug)]
pub struct LoopResult {
    /// Iterations (exits, hypercalls or mmu_update calls).
    pub iterations: u64,
    /// Updates (pv-paging-bench), else equal to iterations.
    pub items: u64,
    /// TSC cycles of the loop.
    pub cycles: u64,
    /// The TSC rate (kHz; 0 unknown): the guest's, else this machine's
    /// ([`procs::tsc_khz`]).
    pub tsc_khz: u64,
    /// The guest knew the TSC rate itself (kvm_pvm's MSR, CPUID 0x15/0x16).
    pub tsc_from_guest: bool,
    /// KVM exits of the whole run.
    pub exits: u64,
    /// CPU time of the hypervisor process.
    pub hv_cpu: Duration,
    /// KVM's `pf_taken` of the whole run (page faults KVM handled: shadow
    /// paging on kvm_pvm).
    pub pf_taken: u64,
    /// `pf_taken` of the loop alone.
    pub loop_pf: u64,
    /// Exits of the loop alone (this run's minus a short run's).
    pub loop_exits: u64,
    /// Hypervisor CPU time of the loop alone.
    pub loop_hv_cpu: Duration,
    /// Iterations the `loop_*` figures are for.
    pub loop_iterations: u64,
}

impl LoopResult {
    /// Exits per iteration, boot and setup taken out.
    pub fn exits_per_iteration(&self) -> f64 {
        self.loop_exits as f64 / self.loop_iterations.max(1) as f64
    }

    /// KVM page faults per iteration, boot and setup taken out.
    pub fn pf_per_iteration(&self) -> f64 {
        self.loop_pf as f64 / self.loop_iterations.max(1) as f64
    }

    /// Hypervisor CPU per iteration (ns), boot and setup taken out.
    pub fn hv_ns_per_iteration(&self) -> f64 {
        self.loop_hv_cpu.as_nanos() as f64 / self.loop_iterations.max(1) as f64
    }

    /// Nanoseconds per iteration (NaN if the TSC rate is unknown).
    pub fn ns_per_iteration(&self) -> f64 {
        if self.tsc_khz == 0 {
            return f64::NAN;
        }
        self.cycles as f64 / self.tsc_khz as f64 * 1e6 / self.iterations.max(1) as f64
    }

    /// Items per second.
    pub fn items_per_s(&self) -> f64 {
        self.items as f64 / (self.ns_per_iteration() * self.iterations as f64 / 1e9)
    }
}

/// Runs `workload=NAME iterations=N` (io-loop, pv-null, pv-paging-bench).
pub fn run_loop(env: &Env, workload: &str, iterations: u64) -> Result<LoopResult, BenchError> {
    run_loop_observed(env, workload, iterations, &mut |_| {})
}

/// [`run_loop`], calling `started` with the hypervisor's process id once it
/// runs.
pub fn run_loop_observed(env: &Env, workload: &str, iterations: u64, started: &mut dyn FnMut(u32)) -> Result<LoopResult, BenchError> {
    let cmdline = format!("workload={workload} iterations={iterations}");
    let guest = procs::spawn_guest(
        &env.hv,
        &RunSpec {
            cmdline: cmdline.clone(),
            devices: Vec::new(),
            mem_mib: GUEST_MIB,
            timeout: Duration::from_secs(120),
            sample_memory: None,
            name: "bench",
        },
    )?;
    started(guest.pid());
    let run = guest.wait(None)?;
    let prefix = format!("BENCH {workload} PASS:");
    let Some(line) = run.line(&prefix).filter(|_| run.code == Some(0)) else {
        return Err(guest_failed(&cmdline, &run));
    };
    Ok(LoopResult {
        iterations,
        items: num(line, "updates").unwrap_or(iterations),
        cycles: num(line, "cycles").unwrap_or(0),
        tsc_khz: num(line, "tsc_khz").filter(|&k| k > 0).unwrap_or_else(procs::tsc_khz),
        tsc_from_guest: num(line, "tsc_khz").is_some_and(|k| k > 0),
        exits: run.stat("exits").unwrap_or(0),
        hv_cpu: run.cpu,
        loop_exits: run.stat("exits").unwrap_or(0),
        pf_taken: run.stat("pf_taken").unwrap_or(0),
        loop_pf: run.stat("pf_taken").unwrap_or(0),
        loop_hv_cpu: run.cpu,
        loop_iterations: iterations,
    })
}

//! What a run measures (full, quick or tiny) and the running of it.

use std::time::{Duration, Instant};

use crate::baseline::{self, SpscResult};
use crate::procs::{Hypervisor, MemSample};
use crate::ring::{self, BlkCase, BlkDevice, BlkResult, Env, Fixed, LoopResult, NetResult};
use crate::BenchError;

/// How much to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// The documented run (~10 minutes at most).
    Full,
    /// `--quick` (~1 minute at most).
    Quick,
    /// The smoke test: one of everything, tiny counts.
    Tiny,
    /// `--scale rig`: inside the rig's L1 (nested SVM under QEMU TCG, about
    /// 50× slower than the bare machine, one CPU): the figures the
    /// side-by-side table needs, in a few minutes.
    Rig,
}

impl Scale {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Full => "full",
            Scale::Quick => "quick",
            Scale::Tiny => "tiny",
            Scale::Rig => "rig",
        }
    }

    /// The scale named `name` (full, quick, tiny, rig).
    pub fn parse(name: &str) -> Option<Scale> {
        [Scale::Full, Scale::Quick, Scale::Tiny, Scale::Rig].into_iter().find(|s| s.name() == name)
    }
}

/// The host the run was made on.
#[derive(Clone, Debug, Default)]
pub struct Host {
    /// KVM backend (pvm, vmx, svm) as `hypervisor info` reports it.
    pub backend: String,
    /// CPU model.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// /proc/loadavg at the start and at the end.
    pub load: (String, String),
}

impl Host {
    fn probe(hv: &Hypervisor) -> Host {
        let info = hv.info();
        let s = |k: &str| info.as_ref().and_then(|v| v.get(k)).and_then(|v| v.as_str()).unwrap_or("unknown").to_string();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
            .unwrap_or_else(|| s("cpu"));
        Host {
            backend: s("backend"),
            cpu: model,
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            load: (loadavg(), String::new()),
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct Results {
    /// How much was measured.
    pub scale: Scale,
    /// The host.
    pub host: Host,
    /// Fixed costs of a virtio-bench run (one request).
    pub fixed: Fixed,
    /// Null device (copies data), reads, batch 16, EVENT_IDX, by size.
    pub by_size: Vec<BlkResult>,
    /// Null device (status only), the same sizes.
    pub by_size_status: Vec<BlkResult>,
    /// Null device (copies data), reads, by batch, with and without
    /// EVENT_IDX, at 512 B and 4 KiB.
    pub by_batch: Vec<BlkResult>,
    /// Notification policies at fixed size.
    pub policies: Vec<BlkResult>,
    /// virtio-blk on a file.
    pub files: Vec<BlkResult>,
    /// Ping/pong between two domains, and its one-round-trip calibration.
    pub net: Option<(NetResult, NetResult)>,
    /// memcpy bandwidth by size (bytes, bytes/s).
    pub memcpy: Vec<(u64, f64)>,
    /// SPSC queue by size.
    pub spsc: Vec<SpscResult>,
    /// Bare port-I/O exits.
    pub io_loop: LoopResult,
    /// Null hypercalls.
    pub pv_null: LoopResult,
    /// Batched mmu_update from the guest.
    pub pv_paging: LoopResult,
    /// The validator in-process (updates/s).
    pub pte_validator: f64,
    /// Plain memory writes (entries/s).
    pub plain_writes: f64,
    /// The hypervisor process's memory during a null-device run, and the
    /// guest RAM size (MiB).
    pub memory: Option<(MemSample, u64)>,
    /// Parts that could not be measured, and why.
    pub failures: Vec<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

/// Request sizes of the size sweep.
pub fn sizes(scale: Scale) -> Vec<u64> {
    match scale {
        Scale::Full => vec![512, 1024, 2048, 4096, 8192, 16384, 32768, 65536],
        Scale::Quick | Scale::Rig => vec![512, 4096, 65536],
        Scale::Tiny => vec![4096],
    }
}

/// Batch sizes of the batch sweep (the guest cuts what does not fit).
pub fn batches(scale: Scale) -> Vec<u64> {
    match scale {
        Scale::Full => vec![1, 2, 4, 8, 16, 32, 64, 128, 256],
        Scale::Quick => vec![1, 16, 64],
        Scale::Tiny => vec![4],
        // Batch 16 is in the size sweep; batch 1 shows a kick per request.
        Scale::Rig => vec![1],
    }
}

/// The backend polling period of the polling policies.
pub const POLL: Duration = Duration::from_micros(50);

/// Requests per blk run at `--scale rig`.
pub const RIG_COUNT: u64 = 16_000;

/// Requests per blk run: enough for about half a second at the rate a
/// configuration reaches on kvm_pvm.
fn count(scale: Scale, batch: u64, event_idx: bool, slow: bool) -> u64 {
    let base: u64 = match scale {
        Scale::Full => 250_000,
        Scale::Quick => 40_000,
        Scale::Tiny => 200,
        Scale::Rig => RIG_COUNT,
    };
    // One kick per request or per few requests: far fewer requests/s.
    let n = if batch <= 2 || (!event_idx && batch < 8) { base / 4 } else { base };
    if slow {
        n / 4
    } else {
        n
    }
    .max(16)
}

fn case(device: BlkDevice, size: u64, batch: u64, event_idx: bool, write: bool, scale: Scale) -> BlkCase {
    let slow = matches!(device, BlkDevice::File { direct: true });
    BlkCase { device, size, batch, count: count(scale, batch, event_idx, slow), event_idx, write }
}

/// Runs everything `scale` asks for. `progress` gets one line per step.
pub fn run(hv: Hypervisor, scale: Scale, mut progress: impl FnMut(&str)) -> Result<Results, BenchError> {
    let started = Instant::now();
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map_err(BenchError::NoKvm)?;
    let mut host = Host::probe(&hv);
    let env = Env::new(hv)?;
    let mut failures = Vec::new();
    let null = BlkDevice::Null { touch: true, poll: Duration::ZERO };
    let status_only = BlkDevice::Null { touch: false, poll: Duration::ZERO };

    progress("calibrating: one request");
    let fixed = ring::calibrate_blk(&env)?;

    let mut by_size = Vec::new();
    let mut by_size_status = Vec::new();
    for &size in &sizes(scale) {
        progress(&format!("null device, {size}-byte reads, batch 16"));
        by_size.push(ring::run_blk(&env, &case(null, size, 16, true, false, scale), size == 4096)?);
        if !matches!(scale, Scale::Tiny | Scale::Rig) {
            by_size_status.push(ring::run_blk(&env, &case(status_only, size, 16, true, false, scale), false)?);
        }
    }
    let memory = by_size.iter().find(|r| r.case.size == 4096).and_then(|r| r.run.memory).map(|m| (m, ring::GUEST_MIB));

    let mut by_batch = Vec::new();
    let batch_sizes: &[u64] = if scale == Scale::Full { &[512, 4096] } else { &[4096] };
    for &size in batch_sizes {
        let event_idx_cases: &[bool] = if scale == Scale::Rig { &[true] } else { &[true, false] };
        for &event_idx in event_idx_cases {
            for &batch in &batches(scale) {
                progress(&format!("null device, {size}-byte reads, batch {batch}, EVENT_IDX {}", u8::from(event_idx)));
                by_batch.push(ring::run_blk(&env, &case(null, size, batch, event_idx, false, scale), false)?);
            }
        }
    }

    let mut policies = Vec::new();
    let polled = BlkDevice::Null { touch: true, poll: POLL };
    let policy_sizes: &[u64] = match scale {
        Scale::Full => &[512, 4096],
        Scale::Quick | Scale::Tiny => &[4096],
        // Busy-polling backends on L1's single CPU measure nothing useful.
        Scale::Rig => &[],
    };
    for &size in policy_sizes {
        for (device, batch, event_idx) in
            [(null, 1, false), (null, 16, false), (null, 16, true), (polled, 1, false), (polled, 16, false), (polled, 16, true), (polled, 64, true)]
        {
            if scale == Scale::Tiny && device != polled {
                continue;
            }
            progress(&format!("policy: {}, {size} B, batch {batch}, EVENT_IDX {}", device.name(), u8::from(event_idx)));
            policies.push(ring::run_blk(&env, &case(device, size, batch, event_idx, false, scale), false)?);
            if scale == Scale::Tiny {
                break;
            }
        }
    }

    let mut files = Vec::new();
    let file_cases: Vec<(u64, bool)> = match scale {
        Scale::Full => vec![(4096, false), (4096, true), (65536, false), (65536, true)],
        Scale::Quick => vec![(4096, false), (65536, false)],
        Scale::Tiny | Scale::Rig => vec![(4096, false)],
    };
    // O_DIRECT: L1's /tmp is a tmpfs.
    let file_modes: &[bool] = if scale == Scale::Rig { &[false] } else { &[false, true] };
    for &direct in file_modes {
        for &(size, write) in &file_cases {
            let device = BlkDevice::File { direct };
            progress(&format!("{}, {size}-byte {}", device.name(), if write { "writes" } else { "reads" }));
            match ring::run_blk(&env, &case(device, size, 16, true, write, scale), false) {
                Ok(r) => files.push(r),
                // O_DIRECT may be refused by the temporary directory's file
                // system: say so and go on.
                Err(e) => failures.push(format!("{}: {e}", device.name())),
            }
        }
    }

    progress("virtio-net ping/pong through the dom0 switch");
    let net_count = match scale {
        Scale::Full => 2000,
        Scale::Quick => 300,
        Scale::Tiny => 20,
        Scale::Rig => 300,
    };
    let net = match ring::run_net(&env, 1).and_then(|one| Ok((ring::run_net(&env, net_count)?, one))) {
        Ok(n) => Some(n),
        Err(e) => {
            failures.push(format!("virtio-net: {e}"));
            None
        }
    };

    progress("exit loops: io-loop, pv-null, pv-paging-bench");
    let (exits, calls, reps) = match scale {
        Scale::Full => (50_000, 4000, 3),
        Scale::Quick => (10_000, 1000, 2),
        Scale::Tiny => (2000, 50, 1),
        Scale::Rig => (20_000, 2000, 3),
    };
    let io_loop = ring::run_loop_best(&env, "io-loop", exits, exits / 10, reps)?;
    let pv_null = ring::run_loop_best(&env, "pv-null", exits, exits / 10, reps)?;
    let pv_paging = ring::run_loop_best(&env, "pv-paging-bench", calls, calls / 10, reps)?;

    progress("baselines: memcpy, SPSC, PTE validation");
    let budget = match scale {
        Scale::Full => Duration::from_millis(200),
        Scale::Quick | Scale::Rig => Duration::from_millis(40),
        Scale::Tiny => Duration::from_millis(5),
    };
    let mut memcpy_sizes = vec![64];
    memcpy_sizes.extend(sizes(scale));
    let memcpy = memcpy_sizes.iter().map(|&s| (s, baseline::memcpy(s as usize, budget))).collect();
    let spsc_sizes: Vec<u64> = match scale {
        Scale::Full => vec![64, 512, 4096, 65536],
        Scale::Quick | Scale::Rig => vec![64, 512, 4096, 65536],
        Scale::Tiny => vec![512],
    };
    let messages = match scale {
        Scale::Full => 400_000u64,
        Scale::Quick => 50_000,
        Scale::Rig => 20_000,
        Scale::Tiny => 2000,
    };
    let spsc = spsc_sizes.iter().map(|&s| baseline::spsc(s as usize, messages.min((8u64 << 30) / s).max(1000))).collect();
    let pte_validator = baseline::pte_validation(budget * 2).map_err(BenchError::Validator)?;
    let plain_writes = baseline::plain_writes(budget);

    host.load.1 = loadavg();
    Ok(Results {
        scale,
        host,
        fixed,
        by_size,
        by_size_status,
        by_batch,
        policies,
        files,
        net,
        memcpy,
        spsc,
        io_loop,
        pv_null,
        pv_paging,
        pte_validator,
        plain_writes,
        memory,
        failures,
        elapsed: started.elapsed(),
    })
}

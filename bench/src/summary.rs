//! The key figures of a run in a form that travels: the side-by-side table
//! of the bare machine and the rig is built from one [`Summary`] of each.
//! Inside the rig, `bench --summary` prints its summary as JSON on L1's
//! serial console, framed by [`frame`] and read back on the host by
//! [`unframe`].

use serde::{Deserialize, Serialize};

use crate::ring::BlkDevice;
use crate::suite::Results;

/// One null-device (copies data) run of the size sweep: reads, batch 16,
/// EVENT_IDX on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NullPoint {
    /// Bytes per request.
    pub size: u64,
    /// Requests per second (the guest's TSC).
    #[serde(deserialize_with = "nan_if_null")]
    pub req_per_s: f64,
    /// Payload bytes per second.
    #[serde(deserialize_with = "nan_if_null")]
    pub bytes_per_s: f64,
    /// KVM exits per request, a run's fixed cost taken out.
    #[serde(deserialize_with = "nan_if_null")]
    pub exits_per_req: f64,
    /// Kicks (QueueNotify writes) per request.
    #[serde(deserialize_with = "nan_if_null")]
    pub kicks_per_req: f64,
    /// Wall time per request (ns).
    #[serde(deserialize_with = "nan_if_null")]
    pub wall_ns: f64,
    /// Hypervisor process CPU per request (ns).
    #[serde(deserialize_with = "nan_if_null")]
    pub hv_ns: f64,
    /// Backend CPU per request (ns).
    #[serde(deserialize_with = "nan_if_null")]
    pub be_ns: f64,
}

/// One of the exit loops.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoopPoint {
    /// Time per iteration (ns, the guest's TSC).
    #[serde(deserialize_with = "nan_if_null")]
    pub ns: f64,
    /// Exits per iteration.
    #[serde(deserialize_with = "nan_if_null")]
    pub exits: f64,
    /// Hypervisor CPU per iteration (ns).
    #[serde(deserialize_with = "nan_if_null")]
    pub hv_ns: f64,
    /// KVM page faults (`pf_taken`) per iteration.
    #[serde(deserialize_with = "nan_if_null")]
    pub pf: f64,
}

/// The key figures of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// full, quick, tiny or rig.
    pub scale: String,
    /// Wall time of the run (s).
    #[serde(deserialize_with = "nan_if_null")]
    pub elapsed_s: f64,
    /// KVM backend as `hypervisor info` names it (pvm, svm, vmx).
    pub backend: String,
    /// CPU model.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// Load average at the start and at the end.
    pub load: (String, String),
    /// Exits of a one-request virtio-bench run (boot, banner, device
    /// bring-up, one request).
    pub fixed_exits: u64,
    /// The null device (copies data) by size.
    pub null: Vec<NullPoint>,
    /// The null device at 4 KiB with a kick per request (batch 1, EVENT_IDX
    /// on), if measured.
    pub batch1: Option<NullPoint>,
    /// Bare port-I/O exit (`io-loop`).
    pub exit: LoopPoint,
    /// Null hypercall (`pv-null`).
    pub hypercall: LoopPoint,
    /// `mmu_update` of 512 PTEs (`pv-paging-bench`), per call.
    pub mmu_update: LoopPoint,
    /// Validated PTE updates/s, guest end to end.
    #[serde(deserialize_with = "nan_if_null")]
    pub pte_guest_per_s: f64,
    /// Validated PTE updates/s, the validator in-process (no KVM: the
    /// CPU's own speed).
    #[serde(deserialize_with = "nan_if_null")]
    pub pte_validator_per_s: f64,
    /// memcpy of 64 KiB (bytes/s; no KVM).
    #[serde(deserialize_with = "nan_if_null")]
    pub memcpy_64k: f64,
    /// Resident memory of the hypervisor process beyond guest RAM (MiB),
    /// of which anonymous (MiB).
    pub vmm_overhead_mib: Option<(f64, f64)>,
    /// virtio-net ping/pong average round trip (µs).
    pub net_rtt_us: Option<f64>,
    /// The TSC rate the guest's cycles were converted with (kHz).
    pub tsc_khz: u64,
    /// Whether the guest knew that rate itself (else the bench measured it).
    pub tsc_from_guest: bool,
    /// Parts that could not be measured.
    pub failures: Vec<String>,
}

/// serde_json writes a non-finite f64 (a figure that could not be
/// computed) as `null`; read it back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn point(results: &Results, r: &crate::ring::BlkResult) -> NullPoint {
    let c = r.per_request(&results.fixed);
    NullPoint {
        size: r.case.size,
        req_per_s: r.req_per_s,
        bytes_per_s: r.bytes_per_s(),
        exits_per_req: c.exits,
        kicks_per_req: r.kicks as f64 / r.case.count.max(1) as f64,
        wall_ns: c.wall_ns,
        hv_ns: c.hv_ns,
        be_ns: c.be_ns,
    }
}

fn lp(l: &crate::ring::LoopResult) -> LoopPoint {
    LoopPoint { ns: l.ns_per_iteration(), exits: l.exits_per_iteration(), hv_ns: l.hv_ns_per_iteration(), pf: l.pf_per_iteration() }
}

impl Summary {
    /// The key figures of `results`.
    pub fn of(results: &Results) -> Summary {
        let r = results;
        let copies = BlkDevice::Null { touch: true, poll: std::time::Duration::ZERO };
        Summary {
            scale: r.scale.name().into(),
            elapsed_s: r.elapsed.as_secs_f64(),
            backend: r.host.backend.clone(),
            cpu: r.host.cpu.clone(),
            cpus: r.host.cpus,
            kernel: r.host.kernel.clone(),
            load: r.host.load.clone(),
            fixed_exits: r.fixed.exits,
            null: r.by_size.iter().map(|x| point(r, x)).collect(),
            batch1: r
                .by_batch
                .iter()
                .find(|x| x.case.batch == 1 && x.case.event_idx && x.case.size == 4096 && x.case.device == copies)
                .map(|x| point(r, x)),
            exit: lp(&r.io_loop),
            hypercall: lp(&r.pv_null),
            mmu_update: lp(&r.pv_paging),
            pte_guest_per_s: r.pv_paging.items_per_s(),
            pte_validator_per_s: r.pte_validator,
            memcpy_64k: r.memcpy.iter().find(|(s, _)| *s == 65536).map(|(_, v)| *v).unwrap_or(f64::NAN),
            vmm_overhead_mib: r.memory.map(|(m, _)| (m.overhead_kib() as f64 / 1024.0, m.anon_kib as f64 / 1024.0)),
            net_rtt_us: r.net.as_ref().map(|(n, _)| n.rtt_avg_us),
            tsc_khz: r.io_loop.tsc_khz,
            tsc_from_guest: r.io_loop.tsc_from_guest,
            failures: r.failures.clone(),
        }
    }

    /// The null-device point at `size`, if measured.
    pub fn null_at(&self, size: u64) -> Option<&NullPoint> {
        self.null.iter().find(|p| p.size == size)
    }
}

/// One Linux boot timed to the guest's ready marker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootRun {
    /// Seconds from starting the VMM process to the `SPLITPV-GUEST-READY`
    /// line on its console (None: never seen).
    pub ready_s: Option<f64>,
    /// The guest kernel's own clock at "Run /init as init process" (s),
    /// if the console shows it.
    pub kernel_init_s: Option<f64>,
    /// Seconds from start to the process's exit (None: killed).
    pub exit_s: Option<f64>,
    /// The VMM's exit code.
    pub code: Option<i32>,
}

/// Repeated boots of one VMM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootSeries {
    /// Which VMM ("splitpv hypervisor", "QEMU microvm").
    pub vmm: String,
    /// The command line that was run.
    pub command: String,
    /// The boots, in order.
    pub runs: Vec<BootRun>,
    /// Why it could not be measured, if it could not.
    pub error: Option<String>,
    /// The end of its output when a run failed.
    pub tail: Option<String>,
}

impl BootSeries {
    /// The ready times of the runs that reached the marker, sorted.
    pub fn ready_times(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.runs.iter().filter_map(|r| r.ready_s).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median ready time.
    pub fn median_ready(&self) -> Option<f64> {
        median(&self.ready_times())
    }

    /// The median of the kernel's own time to /init.
    pub fn median_kernel_init(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.runs.iter().filter_map(|r| r.kernel_init_s).collect();
        v.sort_by(f64::total_cmp);
        median(&v)
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// What `bench boot-time` measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootTimes {
    /// The kernel and initramfs both VMMs booted.
    pub kernel: String,
    /// The initramfs.
    pub initrd: String,
    /// The guest command line.
    pub cmdline: String,
    /// Guest RAM (MiB).
    pub mem_mib: u64,
    /// Load average before the boots.
    pub load: String,
    /// Our hypervisor, then QEMU.
    pub series: Vec<BootSeries>,
}

const FRAME: &str = "BENCH-JSON";
const CHUNK: usize = 120;

/// 64-bit FNV-1a of `s`.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `json` as console lines `BENCH-JSON <tag> <i>/<n> <chunk>` and a last
/// line `BENCH-JSON <tag> end <n> <bytes> <fnv1a>`: short lines (a kernel
/// message can land between two of them without harm), each chunk ending
/// in a non-space character (so nothing that trims lines changes it).
pub fn frame(tag: &str, json: &str) -> String {
    let chars: Vec<char> = json.chars().collect();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let mut end = (start + CHUNK).min(chars.len());
        while end > start + 1 && chars[end - 1] == ' ' {
            end -= 1;
        }
        chunks.push(chars[start..end].iter().collect::<String>());
        start = end;
    }
    let n = chunks.len();
    let mut out = String::new();
    for (i, c) in chunks.iter().enumerate() {
        out.push_str(&format!("{FRAME} {tag} {}/{n} {c}\n", i + 1));
    }
    out.push_str(&format!("{FRAME} {tag} end {n} {} {:016x}\n", json.len(), fnv(json)));
    out
}

/// The JSON that [`frame`] framed under `tag` in `log` (the last complete
/// one if there are several), checked against its length and checksum.
pub fn unframe(log: &str, tag: &str) -> Result<String, String> {
    let prefix = format!("{FRAME} {tag} ");
    let mut chunks: Vec<Option<String>> = Vec::new();
    let mut found = None;
    let mut last_err = format!("no `{FRAME} {tag}` lines in the output");
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        let Some(rest) = line.find(&prefix).map(|i| &line[i + prefix.len()..]) else { continue };
        let (head, body) = rest.split_once(' ').unwrap_or((rest, ""));
        if head == "end" {
            let w: Vec<&str> = body.split_whitespace().collect();
            let (Some(n), Some(len), Some(sum)) =
                (w.first().and_then(|v| v.parse::<usize>().ok()), w.get(1).and_then(|v| v.parse::<usize>().ok()), w.get(2))
            else {
                last_err = format!("a garbled end line: {line:?}");
                chunks.clear();
                continue;
            };
            let json: Option<String> = (chunks.len() == n).then(|| chunks.iter().cloned().collect::<Option<String>>()).flatten();
            match json {
                Some(j) if j.len() == len && format!("{:016x}", fnv(&j)) == *sum => found = Some(j),
                Some(_) => last_err = "the framed JSON does not match its length or checksum (console garbled?)".into(),
                None => last_err = format!("{} of {n} chunks arrived", chunks.iter().filter(|c| c.is_some()).count()),
            }
            chunks.clear();
            continue;
        }
        let Some((i, n)) = head.split_once('/').and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?))) else {
            continue;
        };
        if i == 0 || i > n {
            continue;
        }
        if chunks.len() != n {
            chunks = vec![None; n];
        }
        chunks[i - 1] = Some(body.to_string());
    }
    found.ok_or(last_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_noise_and_are_checked() {
        let s = Summary {
            scale: "rig".into(),
            backend: "svm".into(),
            cpu: "QEMU Virtual CPU version 2.5+".into(),
            null: vec![NullPoint { size: 4096, req_per_s: 1234.5, ..NullPoint::default() }; 7],
            failures: vec!["a   reason with spaces     ".into()],
            ..Summary::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        let framed = frame("summary", &json);
        assert!(framed.lines().all(|l| l.len() < CHUNK + 40 && !l.ends_with(' ')), "{framed}");
        // Console noise between the lines and \r\n line ends.
        let noisy: String = framed.lines().map(|l| format!("[   12.3] kvm: something\r\n{l}\r\n")).collect();
        let back: Summary = serde_json::from_str(&unframe(&noisy, "summary").unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(unframe(&noisy, "boot").unwrap_err().contains("no `BENCH-JSON boot`"));
        // A lost line is noticed.
        let lost: String = framed.lines().enumerate().filter(|(i, _)| *i != 1).map(|(_, l)| format!("{l}\n")).collect();
        assert!(unframe(&lost, "summary").is_err());
        // So is a changed character.
        let changed = framed.replacen("1234.5", "1234.6", 1);
        assert!(unframe(&changed, "summary").unwrap_err().contains("checksum"));
    }

    #[test]
    fn medians() {
        let b = BootSeries {
            runs: vec![
                BootRun { ready_s: Some(3.0), kernel_init_s: Some(1.0), ..BootRun::default() },
                BootRun { ready_s: None, ..BootRun::default() },
                BootRun { ready_s: Some(1.0), kernel_init_s: Some(2.0), ..BootRun::default() },
            ],
            ..BootSeries::default()
        };
        assert_eq!(b.ready_times(), vec![1.0, 3.0]);
        assert_eq!(b.median_ready(), Some(2.0));
        assert_eq!(b.median_kernel_init(), Some(1.5));
        assert_eq!(BootSeries::default().median_ready(), None);
    }
}

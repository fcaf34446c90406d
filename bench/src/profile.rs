//! `bench profile`: CPU profiles of the runs behind the missed targets,
//! taken with `perf record` attached to the processes that do the work, and
//! summarised (top symbols, self and children; and a breakdown into groups
//! of symbols) as `profiles.json` and `profiles.md` next to the report's
//! plots (docs/perf/). The report ([`crate::report`]) includes them when
//! `profiles.json` is there.
//!
//! - `null-64k`: the null device (copies data), 64 KiB reads, batch 16,
//!   EVENT_IDX: perf on this process (the backend's worker thread) and on
//!   the hypervisor process (the ≥ 50 % of memcpy target).
//! - `null-512-b16`: the same at 512 B (the small-request rate target).
//! - `pv-paging`: the guest's `mmu_update` loop (`pv-paging-bench`): perf on
//!   the hypervisor process (the validated PTE updates/s target).
//!
//! perf samples CPU time (`cpu-clock`: this host has no hardware PMU
//! events), so a profile says where CPU time goes, not where a thread
//! waits. Call graphs are unwound from DWARF (`--call-graph dwarf`): the
//! Rust code is built without frame pointers, with which `-g` would lose
//! most callers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ring::{self, BlkCase, BlkDevice, Env};
use crate::BenchError;

/// Samples per second and thread.
pub const FREQ: u32 = 999;
/// `--call-graph` of perf record: stack bytes copied per sample.
pub const CALL_GRAPH: &str = "dwarf,16384";
/// The command that produces the profiles.
pub const COMMAND: &str = "cargo run --release -p bench -- profile --out-dir docs/perf";
/// Rows of the top-symbol tables.
pub const TOP: usize = 10;

/// All profiles of one `bench profile` run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profiles {
    /// The command that produced them.
    pub command: String,
    /// When (UTC, ISO 8601).
    pub taken_at: String,
    /// `perf --version`.
    pub perf_version: String,
    /// /proc/loadavg (1, 5, 15 min) at the start and at the end.
    pub load: (String, String),
    /// Online CPUs.
    pub cpus: usize,
    /// The profiles.
    pub profiles: Vec<Profile>,
}

/// One profiled run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    /// Short name: `null-64k`, `null-512-b16`, `pv-paging`.
    pub id: String,
    /// What ran.
    pub title: String,
    /// The target it explains.
    pub target: String,
    /// The guest's command line.
    pub guest_cmdline: String,
    /// The guest's own figure for the run (under perf), e.g. "95 k req/s".
    pub measured: String,
    /// The perf record command (process ids of this run).
    pub perf_command: String,
    /// Where perf.data was left (not in the repository).
    pub data: String,
    /// Samples in all.
    pub samples: u64,
    /// Every thread with samples, busiest first.
    pub threads: Vec<ThreadRow>,
    /// The summaries: the backend's worker thread, the hypervisor process.
    pub views: Vec<View>,
}

/// A thread's share of the samples.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThreadRow {
    /// `bench` (this process: the backends) or `hypervisor`.
    pub process: String,
    /// The thread's name.
    pub comm: String,
    /// Its id.
    pub tid: u32,
    /// Samples.
    pub samples: u64,
    /// CPU time sampled (ms): samples × the sampling period.
    pub cpu_ms: f64,
}

/// The summary of a set of threads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct View {
    /// `backend` or `hypervisor`.
    pub key: String,
    /// What it covers, for the tables.
    pub name: String,
    /// Samples.
    pub samples: u64,
    /// CPU time sampled (ms).
    pub cpu_ms: f64,
    /// The symbols with the most self time.
    pub top: Vec<SymShare>,
    /// Every sample in exactly one group ([`group`]), largest first.
    pub groups: Vec<Group>,
}

/// A symbol's share of a view's samples.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SymShare {
    /// The symbol (demangled by perf).
    pub symbol: String,
    /// Its object (binary, library, `[kernel.kallsyms]`).
    pub dso: String,
    /// % of samples with it as the leaf.
    pub self_pct: f64,
    /// % of samples with it anywhere on the stack.
    pub children_pct: f64,
}

/// A group of symbols' share of a view's samples.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    /// The group ([`group`]).
    pub name: String,
    /// % of samples.
    pub pct: f64,
}

/// One stack frame of a sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The symbol (`[unknown]` when perf has none).
    pub sym: String,
    /// Its object.
    pub dso: String,
}

impl Frame {
    fn kernel(&self) -> bool {
        self.dso.starts_with("[kernel")
    }
}

/// One sample of `perf script`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Thread name.
    pub comm: String,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Sampling period (ns of cpu-clock).
    pub period: u64,
    /// Leaf first.
    pub frames: Vec<Frame>,
}

/// Parses `perf script -F comm,pid,tid,period,ip,sym,dso` output: a header
/// line `COMM PID/TID PERIOD` then one `ADDR SYM (DSO)` line per frame.
pub fn parse_script(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut cur: Option<Sample> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            out.extend(cur.take());
            continue;
        }
        if line.starts_with(|c: char| c.is_whitespace()) {
            let Some(s) = cur.as_mut() else { continue };
            let t = line.trim();
            let rest = t.split_once(char::is_whitespace).map(|(_, r)| r.trim()).unwrap_or("");
            let (sym, dso) = match rest.rfind(" (") {
                Some(i) if rest.ends_with(')') => (&rest[..i], &rest[i + 2..rest.len() - 1]),
                _ => (rest, ""),
            };
            s.frames.push(Frame { sym: sym.trim().to_string(), dso: dso.to_string() });
            continue;
        }
        out.extend(cur.take());
        // COMM may contain spaces: the last two words are PID/TID and PERIOD.
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 3 {
            continue;
        }
        let period = words[words.len() - 1].parse().unwrap_or(0);
        let Some((pid, tid)) = words[words.len() - 2].split_once('/') else { continue };
        cur = Some(Sample {
            comm: words[..words.len() - 2].join(" "),
            pid: pid.parse().unwrap_or(0),
            tid: tid.parse().unwrap_or(0),
            period,
            frames: Vec::new(),
        });
    }
    out.extend(cur);
    out
}

fn any(frames: &[Frame], kernel_only: bool, pats: &[&str]) -> bool {
    frames.iter().filter(|f| !kernel_only || f.kernel()).any(|f| pats.iter().any(|p| f.sym.contains(p)))
}

/// The group a sample belongs to: the first rule that matches, in this
/// order (the names say the rule).
pub fn group(frames: &[Frame]) -> &'static str {
    let Some(leaf) = frames.first() else { return "no stack" };
    let has_kernel = frames.iter().any(Frame::kernel);
    if !has_kernel && leaf.sym.contains("ioctl") {
        return "guest code (vCPU inside KVM_RUN, no host frame: perf shows the ioctl)";
    }
    if ["memset", "memcpy", "memmove", "copy_user", "clear_user", "_copy_to_iter", "_copy_from_iter", "rep_movs", "rep_stos"]
        .iter()
        .any(|p| leaf.sym.contains(p))
    {
        return "memset/memcpy (moving the data itself)";
    }
    if ["malloc", "free", "realloc", "_int_", "tcache"].iter().any(|p| leaf.sym.contains(p)) && !leaf.dso.starts_with("[kernel") {
        return "malloc/free (heap allocation)";
    }
    if leaf.sym.contains("vm_memory::") {
        return "vm-memory (guest memory accessors: bounds checks, region lookup, volatile copy)";
    }
    if leaf.sym.contains("virtio_queue::") {
        return "virtio-queue (descriptor chains, avail/used ring)";
    }
    if leaf.sym.contains("pvmm::") {
        return "pvmm (PTE validation, frame table)";
    }
    if has_kernel {
        if any(frames, true, &["kvm_mmu", "mmu_page", "paging64", "paging32", "kvm_tdp", "mmu_zap", "kvm_zap", "rmap"]) {
            return "kernel: KVM MMU (shadow page tables, zapping)";
        }
        if any(frames, true, &["futex"]) {
            return "kernel: futex (wake-ups, waits)";
        }
        if any(frames, true, &["eventfd", "epoll"]) {
            return "kernel: eventfd / epoll (kicks, call notifications)";
        }
        if any(frames, true, &["__schedule", "finish_task_switch", "schedule_idle"]) {
            return "kernel: scheduler (context switches)";
        }
        if any(frames, true, &["kvm", "vmx", "svm", "pvm"]) {
            return "kernel: KVM, other (exit handling, KVM_RUN entry/exit)";
        }
        return "kernel: other";
    }
    if ["dom0::", "vhost_user_backend::", "vhost::"].iter().any(|p| leaf.sym.contains(p)) {
        return "dom0 backend / vhost-user-backend code";
    }
    if leaf.sym.contains("hypervisor::") {
        return "hypervisor crate code";
    }
    "user space: other"
}

/// Summarises `samples` (all of one view).
pub fn summarise(key: &str, name: &str, samples: &[&Sample], top: usize) -> View {
    let total: u64 = samples.iter().map(|s| s.period).sum();
    let pct = |v: u64| if total == 0 { 0.0 } else { 100.0 * v as f64 / total as f64 };
    let mut selfs: HashMap<(String, String), u64> = HashMap::new();
    let mut children: HashMap<(String, String), u64> = HashMap::new();
    let mut groups: BTreeMap<&'static str, u64> = BTreeMap::new();
    for s in samples {
        if let Some(leaf) = s.frames.first() {
            *selfs.entry((leaf.sym.clone(), leaf.dso.clone())).or_default() += s.period;
        }
        let mut seen = HashSet::new();
        for f in &s.frames {
            if seen.insert((&f.sym, &f.dso)) {
                *children.entry((f.sym.clone(), f.dso.clone())).or_default() += s.period;
            }
        }
        *groups.entry(group(&s.frames)).or_default() += s.period;
    }
    let mut by_self: Vec<((String, String), u64)> = selfs.into_iter().collect();
    by_self.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let top = by_self
        .into_iter()
        .take(top)
        .map(|((symbol, dso), v)| {
            let c = children.get(&(symbol.clone(), dso.clone())).copied().unwrap_or(v);
            SymShare { symbol, dso, self_pct: pct(v), children_pct: pct(c) }
        })
        .collect();
    let mut groups: Vec<Group> = groups.into_iter().map(|(n, v)| Group { name: n.to_string(), pct: pct(v) }).collect();
    groups.sort_by(|a, b| b.pct.total_cmp(&a.pct));
    View { key: key.into(), name: name.into(), samples: samples.len() as u64, cpu_ms: total as f64 / 1e6, top, groups }
}

/// A running `perf record`.
struct Recorder {
    child: Child,
    command: String,
}

impl Recorder {
    fn start(pids: &[u32], data: &Path) -> Result<Recorder, BenchError> {
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let args = [
            "record".to_string(),
            "-F".into(),
            FREQ.to_string(),
            "--call-graph".into(),
            CALL_GRAPH.into(),
            "-o".into(),
            data.display().to_string(),
            "-p".into(),
            pids.join(","),
        ];
        let child = Command::new("perf")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| BenchError::Spawn { what: "perf".into(), source })?;
        Ok(Recorder { child, command: format!("perf {}", args.join(" ")) })
    }

    /// SIGINT (perf record's way to stop and write its data), then waits.
    fn stop(self) -> Result<(), BenchError> {
        // SAFETY: the pid is our own child's, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let out = self.child.wait_with_output().map_err(|source| BenchError::Os { what: "waiting for perf", source })?;
        use std::os::unix::process::ExitStatusExt;
        if out.status.success() || out.status.code() == Some(130) || out.status.signal() == Some(libc::SIGINT) {
            Ok(())
        } else {
            Err(BenchError::Profile(format!("{} failed ({}): {}", self.command, out.status, String::from_utf8_lossy(&out.stderr).trim())))
        }
    }
}

/// Waits (up to 5 s) until `pid` has a thread named `vcpu…`: `perf record
/// -p` follows only the threads that exist when it attaches, so it has to
/// attach after the hypervisor has started its vCPU thread.
fn wait_for_vcpu(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let found = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten().any(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("vcpu"))
        });
        if found {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `perf script` of `data`, parsed.
fn script(data: &Path) -> Result<Vec<Sample>, BenchError> {
    let out = Command::new("perf")
        .args(["script", "--no-inline", "-F", "comm,pid,tid,period,ip,sym,dso", "-i"])
        .arg(data)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|source| BenchError::Spawn { what: "perf script".into(), source })?;
    if !out.status.success() {
        return Err(BenchError::Profile(format!("perf script -i {} failed ({})", data.display(), out.status)));
    }
    Ok(parse_script(&String::from_utf8_lossy(&out.stdout)))
}

/// The thread table and the views of one perf.data: `bench_pid`'s busiest
/// thread is the backend's worker (the other threads of this process sleep
/// during a run), and all threads of `hv_pid`.
fn analyse(samples: &[Sample], bench_pid: Option<u32>, hv_pid: u32) -> (Vec<ThreadRow>, Vec<View>) {
    let mut threads: BTreeMap<(u32, u32), ThreadRow> = BTreeMap::new();
    for s in samples {
        let process = if Some(s.pid) == bench_pid {
            "bench"
        } else if s.pid == hv_pid {
            "hypervisor"
        } else {
            continue;
        };
        let row = threads.entry((s.pid, s.tid)).or_insert_with(|| ThreadRow {
            process: process.into(),
            comm: s.comm.clone(),
            tid: s.tid,
            samples: 0,
            cpu_ms: 0.0,
        });
        row.samples += 1;
        row.cpu_ms += s.period as f64 / 1e6;
    }
    let mut threads: Vec<ThreadRow> = threads.into_values().collect();
    threads.sort_by_key(|t| std::cmp::Reverse(t.samples));
    let mut views = Vec::new();
    if let Some(bp) = bench_pid {
        if let Some(worker) = threads.iter().find(|t| t.process == "bench") {
            let picked: Vec<&Sample> = samples.iter().filter(|s| s.pid == bp && s.tid == worker.tid).collect();
            views.push(summarise(
                "backend",
                &format!("backend worker thread `{}` (the bench process's busiest thread)", worker.comm),
                &picked,
                TOP,
            ));
        }
    }
    let hv: Vec<&Sample> = samples.iter().filter(|s| s.pid == hv_pid).collect();
    if !hv.is_empty() {
        views.push(summarise("hypervisor", "hypervisor process (all threads)", &hv, TOP));
    }
    (threads, views)
}

/// Options of `bench profile`.
pub struct Options {
    /// Where profiles.json and profiles.md go (docs/perf).
    pub out_dir: PathBuf,
    /// Where perf.data files go.
    pub data_dir: PathBuf,
    /// Scale the run lengths (1.0: about 2–3 s per profile on an idle
    /// machine; longer under load).
    pub length: f64,
}

/// The UTC time now as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// Runs the three profiled runs and writes profiles.json and profiles.md.
pub fn run(env: &Env, opts: &Options, mut progress: impl FnMut(&str)) -> Result<Profiles, BenchError> {
    let version = Command::new("perf")
        .arg("--version")
        .output()
        .map_err(|source| BenchError::Spawn { what: "perf --version".into(), source })?;
    let perf_version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    std::fs::create_dir_all(&opts.data_dir).map_err(|source| BenchError::File { path: opts.data_dir.clone(), source })?;
    let load_start = loadavg();
    let taken_at = utc_now();
    let me = std::process::id();
    let n = |base: u64| ((base as f64 * opts.length) as u64).max(100);
    let mut profiles = Vec::new();

    let null = BlkDevice::Null { touch: true, poll: Duration::ZERO };
    for (id, size, count, target) in [
        ("null-64k", 65536u64, n(600_000), "≥ 50 % of memcpy bandwidth, 64 KiB messages, null backend"),
        ("null-512-b16", 512, n(1_500_000), "≥ 5 M req/s, small messages, batching + EVENT_IDX"),
    ] {
        let case = BlkCase { device: null, size, batch: 16, count, event_idx: true, write: false };
        let data = opts.data_dir.join(format!("{id}.perf.data"));
        progress(&format!("profile {id}: null device (copies data), {size}-byte reads, batch 16, EVENT_IDX, {count} requests"));
        let mut rec: Option<Result<Recorder, BenchError>> = None;
        let mut hv_pid = 0;
        let t0 = Instant::now();
        let result = ring::run_blk_observed(env, &case, false, &mut |pid| {
            hv_pid = pid;
            wait_for_vcpu(pid);
            rec = Some(Recorder::start(&[me, pid], &data));
        });
        let rec = rec.ok_or_else(|| BenchError::Profile("the guest never started".into()))??;
        let command = rec.command.clone();
        rec.stop()?;
        let r = result?;
        progress(&format!("profile {id}: {:.1} s; perf script", t0.elapsed().as_secs_f64()));
        let samples = script(&data)?;
        let (threads, views) = analyse(&samples, Some(me), hv_pid);
        profiles.push(Profile {
            id: id.into(),
            title: format!("null device (copies data), {} reads, batch 16 (used {}), EVENT_IDX", size_label(size), r.batch_used),
            target: target.into(),
            guest_cmdline: format!("workload=virtio-bench bench.size={size} bench.batch=16 bench.count={count} bench.eventidx=1 bench.op=read"),
            measured: format!(
                "{} req/s, {:.2} GB/s, {:.3} exits/request (the guest's figures, under perf)",
                crate::plot::si(r.req_per_s),
                r.bytes_per_s() / 1e9,
                r.exits as f64 / count as f64
            ),
            perf_command: command,
            data: data.display().to_string(),
            samples: samples.len() as u64,
            threads,
            views,
        });
    }

    let calls = n(20_000);
    let id = "pv-paging";
    let data = opts.data_dir.join(format!("{id}.perf.data"));
    progress(&format!("profile {id}: pv-paging-bench, {calls} mmu_update calls of 512"));
    let mut rec: Option<Result<Recorder, BenchError>> = None;
    let mut hv_pid = 0;
    let result = ring::run_loop_observed(env, "pv-paging-bench", calls, &mut |pid| {
        hv_pid = pid;
        wait_for_vcpu(pid);
        rec = Some(Recorder::start(&[pid], &data));
    });
    let rec = rec.ok_or_else(|| BenchError::Profile("the guest never started".into()))??;
    let command = rec.command.clone();
    rec.stop()?;
    let r = result?;
    let samples = script(&data)?;
    let (threads, views) = analyse(&samples, None, hv_pid);
    profiles.push(Profile {
        id: id.into(),
        title: "guest `mmu_update` loop (`pv-paging-bench`): calls of 512 PTE updates".into(),
        target: "≥ 10 M validated PTE updates/s, batches of 512 (end to end)".into(),
        guest_cmdline: format!("workload=pv-paging-bench iterations={calls}"),
        measured: format!(
            "{} updates/s, {:.1} µs per call of 512, {:.2} exits per call (the guest's figures, under perf; exits include boot)",
            crate::plot::si(r.items_per_s()),
            r.ns_per_iteration() / 1000.0,
            r.exits as f64 / calls as f64
        ),
        perf_command: command,
        data: data.display().to_string(),
        samples: samples.len() as u64,
        threads,
        views,
    });

    let p = Profiles {
        command: COMMAND.into(),
        taken_at,
        perf_version,
        load: (load_start, loadavg()),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        profiles,
    };
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| BenchError::File { path: opts.out_dir.clone(), source })?;
    let json_path = opts.out_dir.join(JSON);
    let json = serde_json::to_string_pretty(&p).expect("profiles serialize");
    std::fs::write(&json_path, json + "\n").map_err(|source| BenchError::File { path: json_path, source })?;
    let md_path = opts.out_dir.join("profiles.md");
    let mut md = String::from("# Profiles (why the missed targets are missed)\n\n");
    markdown(&mut md, &p, 2);
    std::fs::write(&md_path, md).map_err(|source| BenchError::File { path: md_path, source })?;
    Ok(p)
}

/// The file name of the summaries next to the plots.
pub const JSON: &str = "profiles.json";

/// Reads `dir/profiles.json` if it is there (None if not, or unreadable).
pub fn load(dir: &Path) -> Option<Profiles> {
    let text = std::fs::read_to_string(dir.join(JSON)).ok()?;
    serde_json::from_str(&text).ok()
}

fn size_label(bytes: u64) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Long Rust paths shortened for a table cell (the full name is in
/// profiles.json).
fn short(sym: &str) -> String {
    let s = sym.replace('|', "\\|");
    if s.chars().count() > 110 {
        format!("{}…", s.chars().take(110).collect::<String>())
    } else {
        s
    }
}

fn short_dso(dso: &str) -> String {
    Path::new(dso).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| dso.to_string())
}

/// The profiles as markdown, headings at level `level + 1` and below.
pub fn markdown(o: &mut String, p: &Profiles, level: usize) {
    let h = "#".repeat(level + 1);
    let _ = writeln!(
        o,
        "Produced by `{}` at {} ({}; load average {} at the start, {} at the end, {} CPUs). That is a separate run from \
         the figures of the report: each profile is one more run of the same configuration with `perf record` attached, \
         and perf slows it a little (its own figure is given). perf samples CPU time (`cpu-clock` at {} Hz per thread; \
         this host has no hardware PMU events), with call graphs unwound from DWARF (`--call-graph {}`: the Rust code has \
         no frame pointers, so plain `-g` would lose the callers). A profile says where CPU time goes; time a thread \
         spends waiting (asleep, or runnable without a CPU) has no samples.\n",
        p.command, p.taken_at, p.perf_version, p.load.0, p.load.1, p.cpus, FREQ, CALL_GRAPH
    );
    let _ = writeln!(
        o,
        "**self**: % of the view's samples with the symbol as the leaf (the code running); **children**: % with it anywhere \
         on the stack (it or what it called). The groups put every sample in one group, by the first rule that matches, in \
         the order the rules are listed in bench/src/profile.rs (`group`): the vCPU inside KVM_RUN with no host frame \
         (guest code), memset/memcpy, malloc/free, vm-memory, virtio-queue, pvmm, kernel (KVM MMU, futex, eventfd/epoll, scheduler, \
         KVM other, other), then the remaining user-space code.\n"
    );
    for prof in &p.profiles {
        let _ = writeln!(o, "{h} `{}`: {}\n", prof.id, prof.title);
        let _ = writeln!(o, "- explains: {}", prof.target);
        let _ = writeln!(o, "- guest: `{}`; measured under perf: {}", prof.guest_cmdline, prof.measured);
        let _ = writeln!(o, "- `{}` ({} samples; data left in `{}`, not in the repository)\n", prof.perf_command, prof.samples, prof.data);
        let _ = writeln!(o, "| process | thread | tid | samples | CPU sampled |\n|---|---|---:|---:|---:|");
        for t in prof.threads.iter().filter(|t| t.samples * 100 >= prof.samples.max(1)) {
            let _ = writeln!(o, "| {} | `{}` | {} | {} | {:.0} ms |", t.process, t.comm, t.tid, t.samples, t.cpu_ms);
        }
        let rest: u64 = prof.threads.iter().filter(|t| t.samples * 100 < prof.samples.max(1)).map(|t| t.samples).sum();
        if rest > 0 {
            let _ = writeln!(o, "| | other threads (< 1 % each) | | {rest} | |");
        }
        let _ = writeln!(o);
        for v in &prof.views {
            let _ = writeln!(o, "**{}**: {} samples, {:.0} ms CPU.\n", v.name, v.samples, v.cpu_ms);
            let _ = writeln!(o, "| group | share |\n|---|---:|");
            for g in v.groups.iter().filter(|g| g.pct >= 0.5) {
                let _ = writeln!(o, "| {} | {:.1} % |", g.name, g.pct);
            }
            let small: f64 = v.groups.iter().filter(|g| g.pct < 0.5).map(|g| g.pct).sum();
            if small > 0.0 {
                let _ = writeln!(o, "| (groups under 0.5 % each) | {small:.1} % |");
            }
            let _ = writeln!(o, "\n| symbol | object | self | children |\n|---|---|---:|---:|");
            for s in &v.top {
                let _ = writeln!(o, "| `{}` | {} | {:.1} % | {:.1} % |", short(&s.symbol), short_dso(&s.dso), s.self_pct, s.children_pct);
            }
            let _ = writeln!(o);
        }
    }
}

impl Profiles {
    /// The profile `id`.
    pub fn get(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }
}

impl Profile {
    /// The view `key` (`backend`, `hypervisor`).
    pub fn view(&self, key: &str) -> Option<&View> {
        self.views.iter().find(|v| v.key == key)
    }
}

impl View {
    /// Its largest groups (at least `min` %, at most `n`) as "x % name"
    /// with the names cut at their first parenthesis.
    pub fn cite(&self, n: usize, min: f64) -> String {
        self.groups
            .iter()
            .filter(|g| g.pct >= min)
            .take(n)
            .map(|g| format!("{:.0} % {}", g.pct, g.name.split(" (").next().unwrap_or(&g.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The symbol with the most self time.
    pub fn top_symbol(&self) -> Option<&SymShare> {
        self.top.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "\
vcpu0 15792/15795     500250 
\t           9bd80 __GI___ioctl (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t           1de38 hypervisor::vcpu::run (/work/target/release/hypervisor)

vhost worker 100/101     500250 
\t           11111 __memset_avx2_unaligned_erms (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t           22222 vm_memory::bytes::Bytes::write_slice (/x/bench)
\t           33333 dom0::backends::null::NullDisk::handle (/x/bench)

vhost worker 100/101     500250 
\tffffffff81b6ccb2 futex_wake ([kernel.kallsyms])
\tffffffff821ef691 do_syscall_64 ([kernel.kallsyms])
\t           33333 dom0::backends::null::NullDisk::handle (/x/bench)

vhost worker 100/101     500250 
\t           22222 vm_memory::bytes::Bytes::write_slice (/x/bench)
\t           33333 dom0::backends::null::NullDisk::handle (/x/bench)
";

    #[test]
    fn parses_perf_script() {
        let s = parse_script(SCRIPT);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].comm, "vcpu0");
        assert_eq!((s[0].pid, s[0].tid, s[0].period), (15792, 15795, 500250));
        assert_eq!(s[1].comm, "vhost worker");
        assert_eq!(s[1].frames[0], Frame { sym: "__memset_avx2_unaligned_erms".into(), dso: "/usr/lib/x86_64-linux-gnu/libc.so.6".into() });
        assert_eq!(s[2].frames.len(), 3);
    }

    #[test]
    fn groups_and_shares() {
        let s = parse_script(SCRIPT);
        assert!(group(&s[0].frames).starts_with("guest code"));
        assert!(group(&s[1].frames).starts_with("memset/memcpy"));
        assert!(group(&s[2].frames).starts_with("kernel: futex"));
        assert!(group(&s[3].frames).starts_with("vm-memory"));
        let (threads, views) = analyse(&s, Some(100), 15792);
        assert_eq!(threads[0].tid, 101);
        assert_eq!(threads[0].samples, 3);
        let be = &views[0];
        assert_eq!(be.key, "backend");
        assert_eq!(be.samples, 3);
        let handle = be.top.iter().all(|t| t.symbol != "dom0::backends::null::NullDisk::handle");
        assert!(handle, "no self time in handle");
        let ws = be.top.iter().find(|t| t.symbol.contains("write_slice")).unwrap();
        assert!((ws.self_pct - 100.0 / 3.0).abs() < 1e-9);
        assert!((ws.children_pct - 200.0 / 3.0).abs() < 1e-9);
        assert!(be.cite(2, 0.0).starts_with("33 % "));
        assert_eq!(views[1].key, "hypervisor");
    }

    #[test]
    fn utc_dates() {
        let now = utc_now();
        assert_eq!(now.len(), "2025-01-01 00:00 UTC".len());
        assert!(now.ends_with(" UTC"));
    }
}

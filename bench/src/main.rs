//! `bench`: the ring benchmark. See the crate docs (lib.rs) and
//! docs/performance.md, which it regenerates.
//!
//! ```text
//! cargo run --release -p bench -- [--quick | --scale full|quick|tiny|rig]
//!     [--out docs/performance.md] [--plots DIR] [--hypervisor PATH]
//!     [--testguest PATH] [--summary] [--rig] [--rig-boot-runs N]
//! bench profile [--out-dir docs/perf] [--data-dir DIR] [--length X] [--hypervisor PATH] [--testguest PATH]
//! bench boot-time --kernel BZIMAGE --initrd CPIO [--hypervisor PATH]
//!     [--qemu PATH --bios FILE [--qemu-datadir DIR]] [--runs N] [--mem MIB]
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bench::boot::{self, BootSpec};
use bench::procs::Hypervisor;
use bench::profile;
use bench::ring::Env;
use bench::rig::{self, RigOptions, RigPart};
use bench::suite::{self, Scale};
use bench::summary::{self, Summary};
use bench::{report, BenchError};

struct Args {
    scale: Scale,
    out: PathBuf,
    plots: Option<PathBuf>,
    hypervisor: Option<PathBuf>,
    testguest: Option<PathBuf>,
    summary: bool,
    rig: bool,
    rig_reuse_log: Option<PathBuf>,
    rig_boot_runs: u32,
}

const USAGE: &str = "usage: bench [--quick | --scale NAME] [--out FILE.md] [--plots DIR] [--hypervisor PATH]\n\
    \x20            [--testguest PATH] [--summary] [--rig] [--rig-boot-runs N] [--rig-reuse-log FILE]\n\
    \x20      bench profile [--out-dir DIR] [--data-dir DIR] [--length X] [--hypervisor PATH] [--testguest PATH]\n\
    \x20      bench boot-time --kernel BZIMAGE --initrd CPIO [--hypervisor PATH] [--qemu PATH --bios FILE\n\
    \x20            [--qemu-datadir DIR]] [--runs N] [--mem MIB] [--cmdline S] [--timeout S]\n\
    --quick        fewer points and smaller counts (about a minute); = --scale quick\n\
    --scale NAME   full (default), quick, tiny (smoke test) or rig (inside the rig's L1)\n\
    --out FILE     the report (default docs/performance.md)\n\
    --plots DIR    where the PNGs go (default: perf/ next to the report)\n\
    --hypervisor   the hypervisor binary (default: $SPLITPV_HYPERVISOR, else next to this one, built if missing)\n\
    --testguest    the test guest image (default: $SPLITPV_TESTGUEST, else the one this bench was built with)\n\
    --summary      also print the key figures as framed JSON on stdout (BENCH-JSON summary …)\n\
    --rig          then run the benchmark and the Linux boot-time comparison inside the hardware-assisted\n\
    \x20              rig (tests/rig/rig.sh, scenario tests/rig/scenarios/bench.scenario) and report both\n\
    --rig-boot-runs N   boots per VMM in the rig's boot-time comparison (default 5)\n\
    --rig-reuse-log FILE  take the rig part from the log of an earlier --rig run instead of running it\n\
    profile        perf profiles (perf record, DWARF call graphs) of the runs behind the missed targets: the null\n\
    \x20              device at 64 KiB and at 512 B batch 16 (this process's backend thread and the hypervisor process)\n\
    \x20              and pv-paging-bench (the hypervisor process); writes DIR/profiles.json and DIR/profiles.md\n\
    \x20              (default docs/perf), which the report then includes; perf.data goes to --data-dir (default\n\
    \x20              ~/.cache/splitpv/perf); --length scales the runs (default 1: ~3 s each when idle)\n\
    boot-time      boot the Linux guest with our hypervisor and QEMU microvm, timed to SPLITPV-GUEST-READY";

fn parse(args: impl Iterator<Item = String>) -> Result<Option<Args>, BenchError> {
    let mut a = Args {
        scale: Scale::Full,
        out: PathBuf::from("docs/performance.md"),
        plots: None,
        hypervisor: None,
        testguest: None,
        summary: false,
        rig: false,
        rig_reuse_log: None,
        rig_boot_runs: 5,
    };
    let mut it = args.peekable();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| BenchError::Usage(format!("{name} needs a value")));
        match arg.as_str() {
            "--quick" => a.scale = Scale::Quick,
            "--tiny" => a.scale = Scale::Tiny,
            "--scale" => {
                let v = value("--scale")?;
                a.scale = Scale::parse(&v).ok_or_else(|| BenchError::Usage(format!("unknown scale {v:?}")))?;
            }
            "--out" => a.out = PathBuf::from(value("--out")?),
            "--plots" => a.plots = Some(PathBuf::from(value("--plots")?)),
            "--hypervisor" => a.hypervisor = Some(PathBuf::from(value("--hypervisor")?)),
            "--testguest" => a.testguest = Some(PathBuf::from(value("--testguest")?)),
            "--summary" => a.summary = true,
            "--rig" => a.rig = true,
            "--rig-reuse-log" => {
                a.rig = true;
                a.rig_reuse_log = Some(PathBuf::from(value("--rig-reuse-log")?));
            }
            "--rig-boot-runs" => a.rig_boot_runs = number(&value("--rig-boot-runs")?)? as u32,
            "-h" | "--help" => return Ok(None),
            other => return Err(BenchError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    Ok(Some(a))
}

fn number(v: &str) -> Result<u64, BenchError> {
    v.parse().map_err(|_| BenchError::Usage(format!("{v:?} is not a number")))
}

/// The plots' directory relative to the report's, for the links.
fn relative(plots: &Path, out: &Path) -> String {
    let base = out.parent().unwrap_or(Path::new(""));
    plots.strip_prefix(base).unwrap_or(plots).display().to_string()
}

/// $SPLITPV_CACHE, else ~/.cache/splitpv (rig.sh's cache).
fn cache_dir() -> PathBuf {
    std::env::var_os("SPLITPV_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/splitpv")))
        .unwrap_or_else(std::env::temp_dir)
}

/// Where the rig's log goes: next to rig.sh's own logs.
fn rig_log() -> PathBuf {
    let dir = cache_dir().join("rig-logs");
    let _ = std::fs::create_dir_all(&dir);
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    dir.join(format!("bench-{secs}-{}.log", std::process::id()))
}

fn run() -> Result<(), BenchError> {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("boot-time") {
        argv.next();
        return boot_time(argv);
    }
    if argv.peek().map(String::as_str) == Some("profile") {
        argv.next();
        return profile(argv);
    }
    let Some(args) = parse(argv)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let plots = args.plots.clone().unwrap_or_else(|| args.out.parent().unwrap_or(Path::new("")).join("perf"));
    let hv = Hypervisor::locate(args.hypervisor.as_deref())?.with_testguest(args.testguest.as_deref())?;
    eprintln!("bench: {} run with {} and the test guest {}", args.scale.name(), hv.path.display(), hv.testguest.display());
    let results = suite::run(hv.clone(), args.scale, |step| eprintln!("bench: {step}"))?;
    if args.summary {
        let json = serde_json::to_string(&Summary::of(&results)).expect("a summary serializes");
        print!("{}", summary::frame("summary", &json));
    }
    let rig = if let Some(log) = &args.rig_reuse_log {
        rig::from_log(log)
    } else if args.rig {
        let bench = std::env::current_exe().map_err(|source| BenchError::Os { what: "current_exe", source })?;
        let opts = RigOptions {
            hypervisor: hv.path.clone(),
            testguest: hv.testguest.clone(),
            bench,
            log: rig_log(),
            boot_runs: args.rig_boot_runs,
        };
        eprintln!("bench: the rig part (log {})", opts.log.display());
        rig::run(&opts, |line| eprintln!("rig| {line}"))
    } else {
        RigPart::NotRequested
    };
    if let RigPart::Unavailable(why) = &rig {
        eprintln!("bench: the rig part could not run: {why}");
    }
    report::write_with_rig(&results, &rig, &args.out, &plots, &relative(&plots, &args.out))?;
    eprintln!(
        "bench: wrote {} and the plots in {} ({:.0} s)",
        args.out.display(),
        plots.display(),
        results.elapsed.as_secs_f64()
    );
    Ok(())
}

/// `bench profile …`: see [`bench::profile`].
fn profile(args: impl Iterator<Item = String>) -> Result<(), BenchError> {
    let mut opts = profile::Options { out_dir: PathBuf::from("docs/perf"), data_dir: cache_dir().join("perf"), length: 1.0 };
    let (mut hypervisor, mut testguest) = (None, None);
    let mut it = args;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| BenchError::Usage(format!("{name} needs a value")));
        match arg.as_str() {
            "--out-dir" => opts.out_dir = PathBuf::from(value("--out-dir")?),
            "--data-dir" => opts.data_dir = PathBuf::from(value("--data-dir")?),
            "--length" => {
                let v = value("--length")?;
                opts.length = v.parse().ok().filter(|x: &f64| *x > 0.0).ok_or_else(|| BenchError::Usage(format!("{v:?} is not a positive number")))?;
            }
            "--hypervisor" => hypervisor = Some(PathBuf::from(value("--hypervisor")?)),
            "--testguest" => testguest = Some(PathBuf::from(value("--testguest")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(BenchError::Usage(format!("profile: unknown argument {other:?}"))),
        }
    }
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map_err(BenchError::NoKvm)?;
    let hv = Hypervisor::locate(hypervisor.as_deref())?.with_testguest(testguest.as_deref())?;
    let env = Env::new(hv)?;
    let p = profile::run(&env, &opts, |l| eprintln!("bench: {l}"))?;
    for prof in &p.profiles {
        for v in &prof.views {
            eprintln!("bench: {} / {}: {}", prof.id, v.key, v.cite(5, 3.0));
        }
    }
    eprintln!("bench: wrote {} and profiles.md in {}", profile::JSON, opts.out_dir.display());
    Ok(())
}

/// `bench boot-time …`: prints the boot times as framed JSON (BENCH-JSON
/// boot …); fails if a VMM never reached the marker.
fn boot_time(args: impl Iterator<Item = String>) -> Result<(), BenchError> {
    let mut spec = BootSpec {
        hypervisor: PathBuf::new(),
        qemu: None,
        bios: None,
        qemu_datadir: None,
        kernel: PathBuf::new(),
        initrd: PathBuf::new(),
        cmdline: boot::CMDLINE.into(),
        mem_mib: 256,
        runs: 3,
        timeout: Duration::from_secs(300),
    };
    let mut hypervisor = None;
    let mut it = args;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| BenchError::Usage(format!("{name} needs a value")));
        match arg.as_str() {
            "--hypervisor" => hypervisor = Some(PathBuf::from(value("--hypervisor")?)),
            "--qemu" => spec.qemu = Some(PathBuf::from(value("--qemu")?)),
            "--bios" => spec.bios = Some(PathBuf::from(value("--bios")?)),
            "--qemu-datadir" => spec.qemu_datadir = Some(PathBuf::from(value("--qemu-datadir")?)),
            "--kernel" => spec.kernel = PathBuf::from(value("--kernel")?),
            "--initrd" => spec.initrd = PathBuf::from(value("--initrd")?),
            "--cmdline" => spec.cmdline = value("--cmdline")?,
            "--mem" => spec.mem_mib = number(&value("--mem")?)?,
            "--runs" => spec.runs = number(&value("--runs")?)? as u32,
            "--timeout" => spec.timeout = Duration::from_secs(number(&value("--timeout")?)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(BenchError::Usage(format!("boot-time: unknown argument {other:?}"))),
        }
    }
    if spec.kernel.as_os_str().is_empty() || spec.initrd.as_os_str().is_empty() {
        return Err(BenchError::Usage("boot-time needs --kernel and --initrd".into()));
    }
    spec.hypervisor = Hypervisor::locate(hypervisor.as_deref())?.path;
    let times = boot::measure(&spec, |l| eprintln!("bench: {l}"));
    let json = serde_json::to_string(&times).expect("boot times serialize");
    print!("{}", summary::frame("boot", &json));
    let failed: Vec<String> = times.series.iter().filter_map(|s| s.error.as_ref().map(|e| format!("{}: {e}", s.vmm))).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(BenchError::Boot(failed.join("; ")))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            if matches!(e, BenchError::Usage(_)) {
                eprintln!("{USAGE}");
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

//! `bench`: the ring benchmark. See the crate docs (lib.rs) and
//! docs/performance.md, which it regenerates.
//!
//! ```text
//! cargo run --release -p bench -- [--quick] [--out docs/performance.md]
//!     [--plots DIR] [--hypervisor PATH]
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bench::procs::Hypervisor;
use bench::suite::{self, Scale};
use bench::{report, BenchError};

struct Args {
    scale: Scale,
    out: PathBuf,
    plots: Option<PathBuf>,
    hypervisor: Option<PathBuf>,
}

const USAGE: &str = "usage: bench [--quick] [--out FILE.md] [--plots DIR] [--hypervisor PATH]\n\
    --quick        fewer points and smaller counts (about a minute)\n\
    --out FILE     the report (default docs/performance.md)\n\
    --plots DIR    where the PNGs go (default: perf/ next to the report)\n\
    --hypervisor   the hypervisor binary (default: next to this one, built if missing)";

fn parse(args: impl Iterator<Item = String>) -> Result<Option<Args>, BenchError> {
    let mut a = Args { scale: Scale::Full, out: PathBuf::from("docs/performance.md"), plots: None, hypervisor: None };
    let mut it = args.peekable();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| BenchError::Usage(format!("{name} needs a value")));
        match arg.as_str() {
            "--quick" => a.scale = Scale::Quick,
            "--tiny" => a.scale = Scale::Tiny,
            "--out" => a.out = PathBuf::from(value("--out")?),
            "--plots" => a.plots = Some(PathBuf::from(value("--plots")?)),
            "--hypervisor" => a.hypervisor = Some(PathBuf::from(value("--hypervisor")?)),
            "-h" | "--help" => return Ok(None),
            other => return Err(BenchError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    Ok(Some(a))
}

/// The plots' directory relative to the report's, for the links.
fn relative(plots: &Path, out: &Path) -> String {
    let base = out.parent().unwrap_or(Path::new(""));
    plots.strip_prefix(base).unwrap_or(plots).display().to_string()
}

fn run() -> Result<(), BenchError> {
    let Some(args) = parse(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let plots = args.plots.clone().unwrap_or_else(|| args.out.parent().unwrap_or(Path::new("")).join("perf"));
    let hv = Hypervisor::locate(args.hypervisor.as_deref())?;
    eprintln!("bench: {} run with {}", args.scale.name(), hv.path.display());
    let results = suite::run(hv, args.scale, |step| eprintln!("bench: {step}"))?;
    report::write(&results, &args.out, &plots, &relative(&plots, &args.out))?;
    eprintln!(
        "bench: wrote {} and the plots in {} ({:.0} s)",
        args.out.display(),
        plots.display(),
        results.elapsed.as_secs_f64()
    );
    Ok(())
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

//! Driving the hardware-assisted rig (tests/rig/rig.sh) from Rust tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The outcome of one rig run.
#[derive(Debug)]
pub struct RigRun {
    /// rig.sh's exit code.
    pub code: Option<i32>,
    /// Everything it printed (L1's serial console included).
    pub log: String,
    /// (name, passed, reason) per RIG-RESULT line.
    pub results: Vec<(String, bool, String)>,
}

impl RigRun {
    /// The result named `name`, if the scenario reported one.
    pub fn result(&self, name: &str) -> Option<&(String, bool, String)> {
        self.results.iter().find(|(n, _, _)| n == name)
    }

    /// The last `n` lines of the log, to attach to a failure.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Parses `RIG-RESULT <name> PASS` / `RIG-RESULT <name> FAIL <reason>`.
pub fn parse_results(log: &str) -> Vec<(String, bool, String)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.trim_end_matches('\r').split_once("RIG-RESULT ")?.1;
            let mut w = rest.splitn(3, ' ');
            let (name, verdict) = (w.next()?, w.next()?);
            Some((name.to_string(), verdict == "PASS", w.next().unwrap_or("").to_string()))
        })
        .collect()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// Runs `scenario` (relative to the repository root) in the rig with the
/// workspace binaries `bins` copied into L1.
pub fn run_scenario(scenario: &str, bins: &[&str], timeout_secs: u32) -> RigRun {
    let root = repo_root();
    // One file per run: rig.sh appends to it, and a rerun must not see the
    // results of the run before.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log_path =
        std::env::temp_dir().join(format!("rig-{}-{run}-{}.log", std::process::id(), scenario.replace('/', "_")));
    let _ = std::fs::remove_file(&log_path);
    let mut cmd = Command::new(root.join("tests/rig/rig.sh"));
    cmd.arg("run").arg("--scenario").arg(root.join(scenario)).arg("--timeout").arg(timeout_secs.to_string());
    cmd.arg("--log").arg(&log_path);
    for b in bins {
        cmd.arg("--bin").arg(crate::workspace_bin(b));
    }
    let out = cmd.output().expect("tests/rig/rig.sh runs");
    let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    // The results come from the log file: it has the scenario's RIG-RESULT
    // lines and the ones rig.sh adds for the run itself (rig-frozen,
    // rig-timeout, ...), which its summary on stdout shows without the
    // prefix.
    let results = match std::fs::read(&log_path) {
        Ok(file) => parse_results(&String::from_utf8_lossy(&file)),
        Err(_) => parse_results(&log),
    };
    RigRun { code: out.status.code(), results, log }
}

/// How many times a scenario whose L1 froze is run again.
pub const FROZEN_RIG_RETRIES: u32 = 3;

/// [`run_scenario`], run again (at most [`FROZEN_RIG_RETRIES`] times) when
/// L1 froze: L1 used to stop making progress now and then under QEMU's TCG
/// emulation of SVM (a lost one-shot timer interrupt left it in HLT for
/// good; rig.sh now boots it with `highres=off`, see tests/rig/README.md),
/// which says nothing about our code. rig.sh notices it by L1's heartbeat stopping
/// (`rig-frozen`, within a minute) or, as a backstop, by its timeout
/// (`rig-timeout`). Every other failure counts at once; each retry is
/// printed with the frozen run's last lines.
pub fn run_scenario_retrying_a_frozen_rig(scenario: &str, bins: &[&str], timeout_secs: u32) -> RigRun {
    let mut run = run_scenario(scenario, bins, timeout_secs);
    for attempt in 1..=FROZEN_RIG_RETRIES {
        let Some((why, _, _)) = ["rig-frozen", "rig-timeout"].iter().find_map(|r| run.result(r)) else { break };
        eprintln!(
            "rig: {scenario}: {why}: L1 froze; running the scenario again ({attempt} of {FROZEN_RIG_RETRIES}). \
             Last lines of the frozen run:\n{}",
            run.tail(40)
        );
        run = run_scenario(scenario, bins, timeout_secs);
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines() {
        let r = parse_results("noise\nRIG-RESULT a PASS\r\n[ 1.0] RIG-RESULT b FAIL exit code 3, expected 0\nRIG-RESULT c\n");
        assert_eq!(r, vec![("a".into(), true, "".into()), ("b".into(), false, "exit code 3, expected 0".into())]);
    }
}

//! Host facts for `dom0 info`.

use std::process::Stdio;

use crate::paths::hypervisor_binary;

/// Host name, kernel release, CPUs, memory (total, available) in MiB.
pub struct HostFacts {
    pub hostname: String,
    pub kernel: String,
    pub cpus: u32,
    pub memory_total_mib: u64,
    pub memory_available_mib: u64,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

fn meminfo_mib(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Reads /proc.
pub fn facts() -> HostFacts {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    HostFacts {
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_total_mib: meminfo_mib(&meminfo, "MemTotal"),
        memory_available_mib: meminfo_mib(&meminfo, "MemAvailable"),
    }
}

/// `hypervisor info` as text, and the backend name from it. Run as a
/// process (not in-process) so the answer is the one the domains' own
/// binary gives.
pub async fn hypervisor_info() -> (String, String) {
    let out = tokio::process::Command::new(hypervisor_binary())
        .arg("info")
        .stdin(Stdio::null())
        .output()
        .await;
    match out {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let backend = text
                .lines()
                .find_map(|l| l.strip_prefix("host backend: "))
                .map(|b| b.split_whitespace().next().unwrap_or("unknown").to_string())
                .unwrap_or_else(|| "unknown".into());
            (text, backend)
        }
        Err(e) => (format!("running {} failed: {e}", hypervisor_binary().display()), "unknown".into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn meminfo_values_are_read_in_mib() {
        let m = "MemTotal:       24600000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(super::meminfo_mib(m, "MemTotal"), 24023);
        assert_eq!(super::meminfo_mib(m, "MemAvailable"), 2);
        assert_eq!(super::meminfo_mib(m, "Missing"), 0);
    }
}

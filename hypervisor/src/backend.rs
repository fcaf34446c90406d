//! Which kind of KVM the host gives us: VT-x, AMD-V or kvm_pvm.
//!
//! The answer changes how guests must behave (on kvm_pvm they must register
//! a VIF page and set the U bit in their page tables to run natively), so the
//! hypervisor reports it to the guest in CPUID and to people in `info`.

use std::path::Path;

pub use pvabi::cpuid::HostBackend;

/// How the backend was determined, for people reading `hypervisor info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendDetection {
    /// The answer.
    pub backend: HostBackend,
    /// Why we think so.
    pub evidence: String,
}

/// Decides the backend from the loaded KVM vendor modules and the CPU flags.
///
/// The module is the stronger evidence: kvm_pvm is loaded on hosts whose CPU
/// may even advertise VT-x to nobody, and on a host with both vendor modules
/// available only the loaded one serves /dev/kvm.
pub fn detect_from(module_loaded: impl Fn(&str) -> bool, cpu_flags: &str) -> BackendDetection {
    for (module, backend) in [("kvm_pvm", HostBackend::Pvm), ("kvm_intel", HostBackend::Vmx), ("kvm_amd", HostBackend::Svm)] {
        if module_loaded(module) {
            return BackendDetection { backend, evidence: format!("kernel module {module} is loaded") };
        }
    }
    let has_flag = |f: &str| cpu_flags.split_whitespace().any(|x| x == f);
    for (flag, backend) in [("vmx", HostBackend::Vmx), ("svm", HostBackend::Svm)] {
        if has_flag(flag) {
            return BackendDetection { backend, evidence: format!("the CPU has the {flag} flag (KVM built into the kernel)") };
        }
    }
    BackendDetection {
        backend: HostBackend::Unknown,
        evidence: "no KVM vendor module is loaded and the CPU has neither the vmx nor the svm flag".into(),
    }
}

/// Detects the backend of this host from /sys/module and /proc/cpuinfo.
pub fn detect() -> BackendDetection {
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("flags")).map(str::to_owned))
        .unwrap_or_default();
    detect_from(|m| Path::new("/sys/module").join(m).exists(), &flags)
}

/// The CPU model name from /proc/cpuinfo, for reports.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_module_wins_over_cpu_flags() {
        let d = detect_from(|m| m == "kvm_pvm", "flags : fpu vmx sse");
        assert_eq!(d.backend, HostBackend::Pvm);
        assert!(d.evidence.contains("kvm_pvm"));
    }

    #[test]
    fn vendor_modules() {
        assert_eq!(detect_from(|m| m == "kvm_intel", "").backend, HostBackend::Vmx);
        assert_eq!(detect_from(|m| m == "kvm_amd", "").backend, HostBackend::Svm);
    }

    #[test]
    fn built_in_kvm_falls_back_to_flags() {
        assert_eq!(detect_from(|_| false, "flags\t: fpu svm lm").backend, HostBackend::Svm);
        assert_eq!(detect_from(|_| false, "flags\t: fpu vmx lm").backend, HostBackend::Vmx);
        // A flag must match as a whole word.
        assert_eq!(detect_from(|_| false, "flags\t: vmxnet svmx").backend, HostBackend::Unknown);
    }
}

//! What `hypervisor info` reports: the host's KVM backend and the KVM
//! capabilities the hypervisor relies on.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::{Cap, Kvm};
use pvabi::cpuid::HostBackend;
use serde::Serialize;

use crate::backend::{self, BackendDetection};

/// KVM_CAP_BINARY_STATS_FD (not in kvm-ioctls' `Cap`).
const KVM_CAP_BINARY_STATS_FD: u64 = 203;

/// One capability and why we need it.
#[derive(Clone, Debug, Serialize)]
pub struct CapabilityReport {
    /// KVM_CAP_* name.
    pub name: &'static str,
    /// KVM_CHECK_EXTENSION's answer (0 = absent; some caps report a count).
    pub value: i32,
    /// Whether the hypervisor cannot run without it.
    pub required: bool,
    /// What we use it for.
    pub used_for: &'static str,
}

/// Everything `hypervisor info` prints.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// `vmx`, `svm`, `pvm` or `unknown`.
    pub backend: &'static str,
    /// How it was determined.
    pub evidence: String,
    /// On kvm_pvm: whether the signature MSR confirmed it.
    pub pvm_signature_confirmed: Option<bool>,
    /// CPU model.
    pub cpu: String,
    /// KVM API version.
    pub kvm_api_version: i32,
    /// Capabilities.
    pub capabilities: Vec<CapabilityReport>,
    /// Consequences for guests, in words.
    pub notes: Vec<String>,
}

impl HostReport {
    /// Whether every required capability is present.
    pub fn usable(&self) -> bool {
        self.capabilities.iter().all(|c| !c.required || c.value > 0)
    }
}

/// Reads the PVM signature MSR through a scratch vCPU.
fn pvm_signature(kvm: &Kvm) -> Option<bool> {
    let vm = kvm.create_vm().ok()?;
    let vcpu = vm.create_vcpu(0).ok()?;
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index: pvabi::pvm::MSR_SIGNATURE, ..Default::default() }]).ok()?;
    match vcpu.get_msrs(&mut msrs) {
        Ok(1) => Some(msrs.as_slice()[0].data == pvabi::pvm::SIGNATURE_VALUE),
        _ => Some(false),
    }
}

/// Probes the host. Fails only if /dev/kvm cannot be opened.
pub fn probe() -> Result<HostReport, kvm_ioctls::Error> {
    let BackendDetection { backend, evidence } = backend::detect();
    let kvm = Kvm::new()?;
    let caps: [(Cap, &'static str, bool, &'static str); 14] = [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY", true, "guest RAM from our memfd"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID", true, "KVM_GET_SUPPORTED_CPUID for the guest's CPUID"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT", true, "stopping vCPUs without lost wake-ups"),
        (Cap::MaxVcpus, "KVM_CAP_MAX_VCPUS", true, "the vCPU limit per domain"),
        (Cap::NrMemslots, "KVM_CAP_NR_MEMSLOTS", true, "RAM ranges around the MMIO hole"),
        (Cap::Irqchip, "KVM_CAP_IRQCHIP", false, "in-kernel IOAPIC/LAPIC for Linux guests"),
        (Cap::Pit2, "KVM_CAP_PIT2", false, "in-kernel PIT for Linux guests"),
        (Cap::TscDeadlineTimer, "KVM_CAP_TSC_DEADLINE_TIMER", false, "LAPIC TSC-deadline timer for Linux guests"),
        (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD", false, "guest kicks reach dom0 without a userspace exit"),
        (Cap::Irqfd, "KVM_CAP_IRQFD", false, "dom0 interrupts guests without a userspace exit"),
        (Cap::X86UserSpaceMsr, "KVM_CAP_X86_USER_SPACE_MSR", false, "trapping the hypercall-page MSR"),
        (Cap::X86MsrFilter, "KVM_CAP_X86_MSR_FILTER", false, "trapping only our MSRs"),
        (Cap::SyncRegs, "KVM_CAP_SYNC_REGS", false, "hypercall arguments without extra ioctls"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR", false, "real-mode support on VT-x"),
    ];
    let mut capabilities: Vec<CapabilityReport> = caps
        .iter()
        .map(|(cap, name, required, used_for)| CapabilityReport {
            name,
            value: kvm.check_extension_int(*cap),
            required: *required,
            used_for,
        })
        .collect();
    capabilities.push(CapabilityReport {
        name: "KVM_CAP_BINARY_STATS_FD",
        value: kvm.check_extension_raw(KVM_CAP_BINARY_STATS_FD as _),
        required: false,
        used_for: "vCPU counters for --stats (exits, io_exits, insn_emulation, ...)",
    });
    let pvm_signature_confirmed = (backend == HostBackend::Pvm).then(|| pvm_signature(&kvm)).flatten();
    let notes = match backend {
        HostBackend::Pvm => vec![
            "kvm_pvm has no VT-x/AMD-V underneath: guest code runs through KVM's instruction emulator (a few million instructions/s) until the guest registers a VIF page (MSR 0x4b564d10) and sets the U bit in every page-table entry; our test guest does both and runs natively.".into(),
            "Unmodified Linux guests are not PVM-aware here: they run emulated and fail; use a VT-x/AMD-V host or the nested-SVM rig in tests/rig.".into(),
            "Exits to userspace cost tens of microseconds here: device paths use ioeventfd/irqfd and batching.".into(),
        ],
        HostBackend::Vmx | HostBackend::Svm => vec!["Hardware-assisted virtualization: every guest runs natively.".into()],
        HostBackend::Unknown => vec!["The backend could not be identified; guests may run emulated.".into()],
    };
    Ok(HostReport {
        backend: backend.name(),
        evidence,
        pvm_signature_confirmed,
        cpu: backend::cpu_model(),
        kvm_api_version: kvm.get_api_version(),
        capabilities,
        notes,
    })
}

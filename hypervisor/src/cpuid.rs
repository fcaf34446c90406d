//! The CPUID a vCPU sees: what KVM supports, plus our hypervisor leaves.
//!
//! Pure logic over `kvm_cpuid_entry2` so it is tested without /dev/kvm.

use kvm_bindings::kvm_cpuid_entry2;
use pvabi::cpuid::{
    features, HostBackend, KVM_LEAF_BASE, LEAF1_ECX_HYPERVISOR, LEAF_FEATURES, LEAF_MAX, LEAF_SIGNATURE, LEAF_VERSION,
    SIGNATURE,
};

/// Start of the hypervisor CPUID range.
const HV_RANGE_START: u32 = 0x4000_0000;
/// End (exclusive) of the block KVM reports its own leaves in.
const HV_BLOCK_END: u32 = HV_RANGE_START + 0x100;
/// Distance KVM's leaves are moved by.
const KVM_LEAF_SHIFT: u32 = KVM_LEAF_BASE - HV_RANGE_START;

/// What the CPUID of one vCPU depends on besides KVM's supported set.
#[derive(Clone, Copy, Debug)]
pub struct CpuidParams {
    /// Index of this vCPU, used as its APIC ID.
    pub vcpu_index: u32,
    /// Number of vCPUs in the domain.
    pub vcpu_count: u32,
    /// The host backend, reported to the guest.
    pub backend: HostBackend,
    /// Whether the domain has direct paging (`mmu_update`, `mmuext_op`).
    pub direct_paging: bool,
    /// Whether the domain is in direct-paging mode (`--paging direct`):
    /// the guest must put its page tables under validation.
    pub paging_direct: bool,
    /// Whether console input raises `pvabi::console::IRQ`.
    pub console_irq: bool,
    /// Leave KVM's leaves at 0x4000_0000 and add none of ours, as a plain
    /// KVM host would (`hypervisor run --hide-pv-cpuid`).
    pub hide_pv_leaves: bool,
}

/// Builds the CPUID entries of one vCPU from KVM_GET_SUPPORTED_CPUID.
///
/// - leaf 1: the hypervisor bit (KVM leaves it clear; without it Linux
///   ignores the paravirtual leaves and kvm-clock) and this vCPU's APIC ID;
/// - leaves 0xB and 0x1F: the x2APIC ID;
/// - KVM's own leaves move from 0x4000_0000 to [`KVM_LEAF_BASE`]; ours take
///   their place (signature, ABI version, features and host backend).
///   With [`CpuidParams::hide_pv_leaves`] KVM's leaves stay where they are
///   and ours are left out.
pub fn build(supported: &[kvm_cpuid_entry2], p: CpuidParams) -> Vec<kvm_cpuid_entry2> {
    let mut out: Vec<kvm_cpuid_entry2> = Vec::with_capacity(supported.len() + 3);
    for e in supported {
        let mut e = *e;
        match e.function {
            1 => {
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                e.ebx = (e.ebx & 0x00ff_ffff) | ((p.vcpu_index & 0xff) << 24);
            }
            0xb | 0x1f => e.edx = p.vcpu_index,
            f if (HV_RANGE_START..HV_BLOCK_END).contains(&f) && !p.hide_pv_leaves => {
                e.function += KVM_LEAF_SHIFT;
                if f == HV_RANGE_START {
                    // EAX of a base leaf is the highest leaf of its block.
                    e.eax = e.eax.max(HV_RANGE_START) + KVM_LEAF_SHIFT;
                }
            }
            _ => {}
        }
        out.push(e);
    }
    if p.hide_pv_leaves {
        return out;
    }
    let word = |i: usize| u32::from_le_bytes([SIGNATURE[i], SIGNATURE[i + 1], SIGNATURE[i + 2], SIGNATURE[i + 3]]);
    let leaf = |function, eax, ebx, ecx, edx| kvm_cpuid_entry2 { function, index: 0, flags: 0, eax, ebx, ecx, edx, ..Default::default() };
    let feature_bits = features::HYPERCALL_PAGE
        | if p.backend == HostBackend::Pvm { features::HOST_PVM } else { 0 }
        | if p.direct_paging { features::DIRECT_PAGING } else { 0 }
        | if p.direct_paging && p.paging_direct { features::PAGING_DIRECT } else { 0 }
        | if p.console_irq { features::CONSOLE_IRQ } else { 0 };
    out.push(leaf(LEAF_SIGNATURE, LEAF_MAX, word(0), word(4), word(8)));
    out.push(leaf(LEAF_VERSION, (u32::from(pvabi::ABI_VERSION_MAJOR) << 16) | u32::from(pvabi::ABI_VERSION_MINOR), 0, 0, 0));
    out.push(leaf(LEAF_FEATURES, feature_bits, p.backend as u32, p.vcpu_count, pvabi::hypercall::MSR_HYPERCALL_PAGE));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, index, eax, ebx, ecx, edx, ..Default::default() }
    }

    fn find(v: &[kvm_cpuid_entry2], function: u32) -> kvm_cpuid_entry2 {
        *v.iter().find(|e| e.function == function).unwrap_or_else(|| panic!("leaf {function:#x} missing"))
    }

    fn kvm_like() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, 0, 0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            entry(1, 0, 0x806f8, 0x0001_0800, 0x7ed8_320b, 0x178b_fbff),
            entry(0xb, 0, 1, 1, 0x100, 7),
            entry(0xb, 1, 4, 2, 0x201, 7),
            entry(0x4000_0000, 0, 0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d),
            entry(0x4000_0001, 0, 0x0100_7efb, 0, 0, 0),
        ]
    }

    #[test]
    fn hypervisor_bit_and_apic_id() {
        let v = build(&kvm_like(), CpuidParams { vcpu_index: 3, vcpu_count: 4, backend: HostBackend::Vmx, direct_paging: false, paging_direct: false, console_irq: true, hide_pv_leaves: false });
        assert_ne!(find(&v, LEAF_FEATURES).eax & features::CONSOLE_IRQ, 0);
        let l1 = find(&v, 1);
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!(l1.ebx & 0xff_ffff, 0x01_0800, "other EBX fields are kept");
        assert!(v.iter().filter(|e| e.function == 0xb).all(|e| e.edx == 3));
    }

    #[test]
    fn our_leaves_replace_kvms_which_move_up() {
        let v = build(&kvm_like(), CpuidParams { vcpu_index: 0, vcpu_count: 2, backend: HostBackend::Pvm, direct_paging: true, paging_direct: false, console_irq: false, hide_pv_leaves: false });
        let sig = find(&v, LEAF_SIGNATURE);
        let mut bytes = Vec::new();
        for r in [sig.ebx, sig.ecx, sig.edx] {
            bytes.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(bytes, SIGNATURE);
        assert_eq!(sig.eax, LEAF_MAX);
        assert_eq!(v.iter().filter(|e| e.function == LEAF_SIGNATURE).count(), 1, "KVM's signature leaf is gone from the base");
        let kvm = find(&v, KVM_LEAF_BASE);
        assert_eq!((kvm.ebx, kvm.ecx, kvm.edx), (0x4b4d_564b, 0x564b_4d56, 0x4d), "KVMKVMKVM kept");
        assert_eq!(kvm.eax, KVM_LEAF_BASE + 1, "max leaf of the moved block");
        assert_eq!(find(&v, KVM_LEAF_BASE + 1).eax, 0x0100_7efb, "KVM features kept");
        let f = find(&v, LEAF_FEATURES);
        assert_eq!(f.eax & features::HOST_PVM, features::HOST_PVM);
        assert_eq!(HostBackend::from_u32(f.ebx), HostBackend::Pvm);
        assert_eq!(f.ecx, 2);
        assert_ne!(f.eax & features::HYPERCALL_PAGE, 0);
        assert_ne!(f.eax & features::DIRECT_PAGING, 0);
        assert_eq!(f.eax & features::CONSOLE_IRQ, 0, "no console interrupt without an interrupt controller");
        assert_eq!(f.edx, pvabi::hypercall::MSR_HYPERCALL_PAGE);
        let ver = find(&v, LEAF_VERSION);
        assert_eq!(ver.eax, (u32::from(pvabi::ABI_VERSION_MAJOR) << 16) | u32::from(pvabi::ABI_VERSION_MINOR));
    }

    #[test]
    fn paging_direct_only_for_direct_paging_domains() {
        let params = |direct_paging, paging_direct| CpuidParams { vcpu_index: 0, vcpu_count: 1, backend: HostBackend::Vmx, direct_paging, paging_direct, console_irq: false, hide_pv_leaves: false };
        let bits = |p| find(&build(&kvm_like(), p), LEAF_FEATURES).eax & (features::DIRECT_PAGING | features::PAGING_DIRECT);
        assert_eq!(bits(params(true, true)), features::DIRECT_PAGING | features::PAGING_DIRECT);
        assert_eq!(bits(params(true, false)), features::DIRECT_PAGING, "native mode: the hypercalls only");
        assert_eq!(bits(params(false, true)), 0, "never the mode without the hypercalls");
    }

    #[test]
    fn no_pvm_flag_on_hardware_hosts() {
        let v = build(&kvm_like(), CpuidParams { vcpu_index: 0, vcpu_count: 1, backend: HostBackend::Svm, direct_paging: false, paging_direct: false, console_irq: false, hide_pv_leaves: false });
        assert_eq!(find(&v, LEAF_FEATURES).eax & features::HOST_PVM, 0);
        assert_eq!(find(&v, LEAF_FEATURES).eax & features::DIRECT_PAGING, 0);
        assert_eq!(HostBackend::from_u32(find(&v, LEAF_FEATURES).ebx), HostBackend::Svm);
    }

    #[test]
    fn hidden_leaves_look_like_plain_kvm() {
        let v = build(&kvm_like(), CpuidParams { vcpu_index: 1, vcpu_count: 2, backend: HostBackend::Svm, direct_paging: true, paging_direct: true, console_irq: true, hide_pv_leaves: true });
        let sig = find(&v, LEAF_SIGNATURE);
        assert_eq!((sig.eax, sig.ebx, sig.ecx, sig.edx), (0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d), "KVMKVMKVM at the base, unmoved");
        assert_eq!(find(&v, LEAF_VERSION).eax, 0x0100_7efb, "KVM's feature leaf in its place");
        assert!(v.iter().all(|e| e.function < KVM_LEAF_BASE || e.function >= KVM_LEAF_BASE + 0x100), "nothing at the moved base");
        assert!(v.iter().all(|e| e.function != LEAF_FEATURES), "none of our leaves");
        assert_eq!(v.len(), kvm_like().len());
        let l1 = find(&v, 1);
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0, "the hypervisor bit stays, as a KVM host's VMM sets it");
        assert_eq!(l1.ebx >> 24, 1);
    }
}

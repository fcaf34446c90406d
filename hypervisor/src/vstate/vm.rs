//! The KVM VM of one domain.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_bindings::{kvm_enable_cap, KVM_CAP_X86_USER_SPACE_MSR, KVM_MSR_EXIT_REASON_FILTER};
use kvm_bindings::{kvm_irqchip, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};
use kvm_ioctls::{Cap, Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};
use thiserror::Error;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::memory::GuestRam;

/// The VM could not be created or configured.
#[derive(Debug, Error)]
pub enum VmError {
    /// /dev/kvm could not be opened.
    #[error("opening /dev/kvm failed: {0} (is KVM available and are you allowed to use it?)")]
    OpenKvm(kvm_ioctls::Error),
    /// Wrong KVM API version.
    #[error("/dev/kvm speaks KVM API version {0}; version 12 is required")]
    ApiVersion(i32),
    /// A capability we cannot do without is missing.
    #[error("the host's KVM lacks {0}, which the hypervisor requires")]
    MissingCap(&'static str),
    /// KVM_CREATE_VM failed.
    #[error("creating the KVM VM failed: {0}")]
    CreateVm(kvm_ioctls::Error),
    /// Too many vCPUs for this host.
    #[error("this host's KVM supports at most {max} vCPUs per VM; {requested} were asked for")]
    TooManyVcpus {
        /// Asked for.
        requested: u32,
        /// KVM_CAP_MAX_VCPUS.
        max: u32,
    },
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("registering guest RAM at {gpa:#x} with KVM failed: {source}")]
    MemoryRegion {
        /// Region start.
        gpa: u64,
        /// Cause.
        source: kvm_ioctls::Error,
    },
    /// The in-kernel interrupt controllers or PIT could not be created.
    #[error("creating the in-kernel {what} failed: {source}")]
    Irqchip {
        /// Which one.
        what: &'static str,
        /// Cause.
        source: kvm_ioctls::Error,
    },
    /// An irqfd could not be registered.
    #[error("connecting an interrupt eventfd to GSI {gsi} failed: {source}")]
    Irqfd {
        /// The GSI.
        gsi: u32,
        /// Cause.
        source: kvm_ioctls::Error,
    },
    /// The MSR trap could not be set up.
    #[error("trapping the hypercall-page MSR failed (KVM_CAP_X86_USER_SPACE_MSR / KVM_X86_SET_MSR_FILTER): {source}")]
    MsrTrap {
        /// Cause.
        source: kvm_ioctls::Error,
    },
    /// An ioeventfd could not be registered.
    #[error("connecting a notification eventfd to MMIO address {addr:#x} failed: {source}")]
    Ioeventfd {
        /// The address.
        addr: u64,
        /// Cause.
        source: kvm_ioctls::Error,
    },
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("reading the CPUID KVM supports failed: {0}")]
    SupportedCpuid(kvm_ioctls::Error),
}

/// A KVM VM with its system handle.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl Vm {
    /// Opens /dev/kvm and creates a VM.
    pub fn new() -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(VmError::ApiVersion(api));
        }
        for (cap, name) in [
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCap(name));
            }
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        Ok(Vm { kvm, fd })
    }

    /// Whether KVM can mirror the special registers (CR0, CR3, CR4…) into
    /// kvm_run at every exit (KVM_CAP_SYNC_REGS with KVM_SYNC_X86_SREGS),
    /// which the direct-paging checks need.
    pub fn can_sync_sregs(&self) -> bool {
        let fields = self.kvm.check_extension_int(Cap::SyncRegs);
        fields > 0 && fields as u32 & kvm_bindings::KVM_SYNC_X86_SREGS != 0
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// A duplicate of the VM file descriptor, for VM-wide ioctls from
    /// another owner.
    pub fn dup_fd(&self) -> std::io::Result<std::fs::File> {
        use std::os::fd::{AsRawFd, BorrowedFd};
        // SAFETY: the VM file descriptor stays open for the borrow, which
        // only lives for the duplication below.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd.as_raw_fd()) };
        Ok(std::fs::File::from(fd.try_clone_to_owned()?))
    }

    /// The /dev/kvm handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// Largest number of vCPUs KVM allows in one VM.
    pub fn max_vcpus(&self) -> u32 {
        self.kvm.get_max_vcpus() as u32
    }

    /// Checks `n` vCPUs are possible.
    pub fn check_vcpus(&self, requested: u32) -> Result<(), VmError> {
        let max = self.max_vcpus();
        if requested > max {
            return Err(VmError::TooManyVcpus { requested, max });
        }
        Ok(())
    }

    /// Registers every RAM region as a KVM memory slot.
    pub fn register_memory(&self, ram: &GuestRam) -> Result<(), VmError> {
        for (slot, region) in ram.memory().iter().enumerate() {
            let gpa = region.start_addr().0;
            let region_desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the host range [as_ptr, as_ptr + len) is a live mapping
            // owned by `ram`, which the caller keeps alive for as long as the
            // VM runs (the Domain owns both and drops the VM first).
            unsafe { self.fd.set_user_memory_region(region_desc) }.map_err(|source| VmError::MemoryRegion { gpa, source })?;
        }
        Ok(())
    }

    /// Creates the in-kernel PIC, I/O APIC, local APICs and PIT, as a PC
    /// has them. Must come before the vCPUs are created.
    pub fn create_platform_irqchip(&self) -> Result<(), VmError> {
        self.fd.create_irq_chip().map_err(|source| VmError::Irqchip { what: "interrupt controllers", source })?;
        self.mask_pic()?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        self.fd.create_pit2(pit).map_err(|source| VmError::Irqchip { what: "PIT", source })
    }

    /// Masks every line of both 8259s. Our guests have no legacy PIC (the
    /// FADT is hardware-reduced, so Linux never programs it), yet KVM routes
    /// GSIs 0-15 to the PIC as well as the I/O APIC, resets the PICs with
    /// no line masked and an interrupt base of 0, and resets the boot vCPU's
    /// LINT0 to ExtINT: a pulse on an ISA line (console input on GSI 6, the
    /// power button on 5) before the guest has set up its local APIC would
    /// arrive as exception vector 6 or 5 (#UD, #BR). A guest that does use
    /// the PIC initialises it and sets its own mask.
    fn mask_pic(&self) -> Result<(), VmError> {
        for chip_id in [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE] {
            let mut chip = kvm_irqchip { chip_id, ..Default::default() };
            self.fd.get_irqchip(&mut chip).map_err(|source| VmError::Irqchip { what: "PIC state", source })?;
            // For the PIC chip ids KVM fills and reads the union's `pic`.
            chip.chip.pic.imr = 0xff;
            self.fd.set_irqchip(&chip).map_err(|source| VmError::Irqchip { what: "PIC state", source })?;
        }
        Ok(())
    }

    /// Makes guest accesses to our own MSRs (the hypercall page) exit to
    /// userspace; every other MSR stays KVM's.
    pub fn trap_pv_msrs(&self) -> Result<(), VmError> {
        let cap = kvm_enable_cap { cap: KVM_CAP_X86_USER_SPACE_MSR, args: [u64::from(KVM_MSR_EXIT_REASON_FILTER), 0, 0, 0], ..Default::default() };
        self.fd.enable_cap(&cap).map_err(|source| VmError::MsrTrap { source })?;
        // A clear bit denies the access in KVM, which with the capability
        // above means an exit to us.
        let deny = [0u8];
        let range = MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base: pvabi::hypercall::MSR_HYPERCALL_PAGE,
            msr_count: 1,
            bitmap: &deny,
        };
        self.fd.set_msr_filter(MsrFilterDefaultAction::ALLOW, &[range]).map_err(|source| VmError::MsrTrap { source })
    }

    /// Makes every signal of `evt` raise `gsi` in the in-kernel irqchip.
    pub fn register_irqfd(&self, evt: &vmm_sys_util::eventfd::EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd.register_irqfd(evt, gsi).map_err(|source| VmError::Irqfd { gsi, source })
    }

    /// Makes a 32-bit guest write of `value` to MMIO address `addr` signal
    /// `evt` inside KVM, without an exit to this process.
    pub fn register_mmio_ioeventfd(&self, evt: &vmm_sys_util::eventfd::EventFd, addr: u64, value: u32) -> Result<(), VmError> {
        self.fd.register_ioevent(evt, &kvm_ioctls::IoEventAddress::Mmio(addr), value).map_err(|source| VmError::Ioeventfd { addr, source })
    }

    /// KVM_GET_SUPPORTED_CPUID.
    pub fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        self.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(VmError::SupportedCpuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_irqchip_starts_with_both_pics_masked() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        let vm = Vm::new().expect("a VM can be created");
        vm.create_platform_irqchip().expect("the irqchip can be created");
        for chip_id in [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE] {
            let mut chip = kvm_irqchip { chip_id, ..Default::default() };
            vm.fd().get_irqchip(&mut chip).unwrap();
            // SAFETY: KVM filled the `pic` member for a PIC chip id.
            let imr = unsafe { chip.chip.pic.imr };
            assert_eq!(imr, 0xff, "PIC {chip_id}: an ISA-line pulse would reach the vCPU as an exception vector");
        }
    }
}

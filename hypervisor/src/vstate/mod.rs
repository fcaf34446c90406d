//! KVM state: the VM, its memory, its vCPUs and their counters.

pub mod memory;
pub mod regs;
pub mod stats;
pub mod vcpu;
pub mod vm;

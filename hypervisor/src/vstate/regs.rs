//! Register dumps for crash reports.

use std::fmt;

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

/// The registers of a vCPU at the moment its domain ended abnormally.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterDump {
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
}

fn seg(f: &mut fmt::Formatter<'_>, name: &str, s: &kvm_segment) -> fmt::Result {
    write!(
        f,
        "{name}={:04x} base={:#x} limit={:#x} type={:#x} dpl={} l={} db={} p={}",
        s.selector, s.base, s.limit, s.type_, s.dpl, s.l, s.db, s.present
    )
}

impl fmt::Display for RegisterDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.regs;
        let s = &self.sregs;
        writeln!(f, "  rip={:#018x} rsp={:#018x} rflags={:#010x}", r.rip, r.rsp, r.rflags)?;
        writeln!(f, "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}", r.rax, r.rbx, r.rcx, r.rdx)?;
        writeln!(f, "  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}", r.rsi, r.rdi, r.rbp, r.r8)?;
        writeln!(f, "  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}", r.r9, r.r10, r.r11, r.r12)?;
        writeln!(f, "  r13={:#018x} r14={:#018x} r15={:#018x}", r.r13, r.r14, r.r15)?;
        writeln!(f, "  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}", s.cr0, s.cr2, s.cr3, s.cr4, s.efer)?;
        write!(f, "  ")?;
        seg(f, "cs", &s.cs)?;
        write!(f, "\n  ")?;
        seg(f, "ss", &s.ss)?;
        writeln!(f)?;
        write!(f, "  gdt={:#x}/{:#x} idt={:#x}/{:#x}", s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_the_key_registers() {
        let mut d = RegisterDump::default();
        d.regs.rip = 0x20_1234;
        d.sregs.cr3 = 0x1000;
        let s = d.to_string();
        assert!(s.contains("rip=0x0000000000201234"), "{s}");
        assert!(s.contains("cr3=0x1000"), "{s}");
        assert!(s.contains("idt=0x0/0x0"), "{s}");
    }
}

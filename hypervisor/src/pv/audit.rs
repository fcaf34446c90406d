//! The paging audit: with the vCPUs stopped, recompute every count of the
//! frame table from live guest memory (`pvmm::FrameTable::check_invariants`)
//! and walk the address space of every vCPU in direct paging from its CR3
//! (`pvmm::FrameTable::check_address_space`). What the exit checks
//! (`guard`) cannot see, a write behind the validator's back between two
//! exits for instance, the audit finds afterwards.

use std::fmt;
use std::sync::atomic::Ordering;

use pvmm::PTE_ADDR;
use serde::{Deserialize, Serialize};

use super::guard::cr3_frame;
use super::{mmu, PvDomain};

/// Findings listed in a report (more are only counted).
pub const MAX_FINDINGS: usize = 10;

/// The result of one audit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Nothing was found.
    pub clean: bool,
    /// The vCPUs whose address space was walked, with their CR3.
    pub walked: Vec<(u32, u64)>,
    /// Tables visited by the walks.
    pub tables: u64,
    /// Problems found, the first [`MAX_FINDINGS`].
    pub findings: Vec<String>,
    /// How many problems were found in all.
    pub total_findings: u64,
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let walked = if self.walked.is_empty() {
            "no vCPU has loaded a validated base pointer, so no address space was walked".to_string()
        } else {
            let list: Vec<String> = self.walked.iter().map(|(v, cr3)| format!("vCPU {v} at CR3 {cr3:#x}")).collect();
            format!("walked {} ({} tables)", list.join(", "), self.tables)
        };
        if self.clean {
            write!(f, "clean: the frame table's counts match live memory; {walked}")
        } else {
            write!(f, "{} problem(s) found; {walked}", self.total_findings)?;
            for finding in &self.findings {
                write!(f, "\n  - {finding}")?;
            }
            if self.total_findings > self.findings.len() as u64 {
                write!(f, "\n  (and {} more)", self.total_findings - self.findings.len() as u64)?;
            }
            Ok(())
        }
    }
}

/// Audits `pv` with the vCPUs in `cr3s` (index, CR3) stopped by the caller.
/// Counted in the domain's `audits` and `audit_failures`.
pub fn audit(pv: &PvDomain, cr3s: &[(usize, u64)]) -> AuditReport {
    let mut report = AuditReport::default();
    let add = |report: &mut AuditReport, finding: String| {
        report.total_findings += 1;
        if report.findings.len() < MAX_FINDINGS {
            report.findings.push(finding);
        }
    };
    match &pv.frames {
        None => add(&mut report, "the domain has no frame table".to_string()),
        Some(frames) => {
            let table = frames.lock().unwrap_or_else(|p| p.into_inner());
            // Reading only: nothing here flushes.
            let mut no_flush = || {};
            let mem = mmu::GuestTables::new(pv.memory(), &mut no_flush);
            if let Err(v) = table.check_invariants(&mem) {
                add(&mut report, v.to_string());
            }
            for &(vcpu, cr3) in cr3s {
                report.walked.push((vcpu as u32, cr3));
                if cr3 & !PTE_ADDR != 0 {
                    add(&mut report, format!("vCPU {vcpu}: CR3 {cr3:#x} sets bits besides the frame number"));
                }
                let walk = table.check_address_space(&mem, cr3_frame(cr3), MAX_FINDINGS);
                report.tables += walk.tables as u64;
                for finding in walk.findings {
                    add(&mut report, format!("vCPU {vcpu} (CR3 {cr3:#x}): {finding}"));
                }
                // Those beyond the limit are counted too.
                report.total_findings += (walk.total - walk.total.min(MAX_FINDINGS)) as u64;
            }
        }
    }
    report.clean = report.total_findings == 0;
    pv.audits.fetch_add(1, Ordering::Relaxed);
    if !report.clean {
        pv.audit_failures.fetch_add(1, Ordering::Relaxed);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::serial::{ConsoleSink, ConsoleTail};
    use crate::pv::{FrameLayout, PvConsole};
    use crate::vstate::memory::GuestRam;
    use pvmm::{Gfn, Level, MmuExtOp};
    use std::sync::{Arc, Mutex};
    use vm_memory::{Bytes, GuestAddress};

    fn domain() -> (PvDomain, GuestRam) {
        let ram = GuestRam::new(c"audit-test", 16 << 20).unwrap();
        let console = PvConsole::new(Arc::new(Mutex::new(ConsoleSink::new(false, None, ConsoleTail::default()))));
        let map = crate::boot::freestanding::memory_map(ram.ranges());
        let pv = PvDomain::new(ram.memory().clone(), ram.file().try_clone().unwrap(), ram.ranges().to_vec(), map, console, 1, &FrameLayout::freestanding());
        (pv, ram)
    }

    /// L4 0x400000 -> L3 -> L2 -> L1 -> data 0x500000, pinned.
    fn pinned_tree(pv: &PvDomain) -> u64 {
        let (l4, l3, l2, l1, data) = (0x40_0000u64, 0x40_1000u64, 0x40_2000u64, 0x40_3000u64, 0x50_0000u64);
        for (table, entry) in [(l4, l3 | 3), (l3, l2 | 3), (l2, l1 | 3), (l1, data | 3)] {
            pv.memory().write_obj(entry, GuestAddress(table)).unwrap();
        }
        let mut t = pv.frames.as_ref().unwrap().lock().unwrap();
        let mut no_flush = || {};
        let mut mem = mmu::GuestTables::new(pv.memory(), &mut no_flush);
        t.mmuext_op(&mut mem, 0, &[MmuExtOp::Pin { level: Level::L4, gfn: Gfn(l4 >> 12) }]).result().unwrap();
        l4
    }

    #[test]
    fn a_validated_domain_audits_clean() {
        let (pv, _ram) = domain();
        let l4 = pinned_tree(&pv);
        let r = audit(&pv, &[(0, l4)]);
        assert!(r.clean, "{r}");
        assert_eq!((r.tables, r.walked.clone()), (4, vec![(0, l4)]));
        assert!(r.to_string().starts_with("clean: the frame table's counts match live memory; walked vCPU 0 at CR3 0x400000 (4 tables)"), "{r}");
        assert_eq!((pv.audits.load(Ordering::Relaxed), pv.audit_failures.load(Ordering::Relaxed)), (1, 0));
    }

    #[test]
    fn a_write_behind_the_validators_back_and_a_foreign_cr3_are_found() {
        let (pv, _ram) = domain();
        let l4 = pinned_tree(&pv);
        // A second mapping of the data page, written straight into the
        // validated L1: counts no longer match, and the walk sees it too
        // (a writable mapping of the L1 itself).
        pv.memory().write_obj(0x40_3000u64 | 3, GuestAddress(0x40_3008)).unwrap();
        // A vCPU on an unvalidated copy of the L4.
        pv.memory().write_obj(0x40_1000u64 | 3, GuestAddress(0x60_0000)).unwrap();
        let r = audit(&pv, &[(0, l4), (1, 0x60_0000)]);
        assert!(!r.clean);
        let text = r.to_string();
        assert!(text.contains("frame table invariant violated"), "{text}");
        assert!(text.contains("vCPU 0 (CR3 0x400000): entry 1 (0x403003) of L1 table 0x403 maps frame 0x403: an L1 page table, writable"), "{text}");
        assert!(text.contains("vCPU 1 (CR3 0x600000): the root is L4 table 0x600, which is not validated as one"), "{text}");
        assert_eq!(pv.audit_failures.load(Ordering::Relaxed), 1);
    }
}

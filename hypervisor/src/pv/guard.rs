//! Detection where prevention is impossible: the CR3 and CR0.WP checks of
//! direct-paging domains.
//!
//! On hardware-assisted KVM a guest kernel can load CR3 itself or clear
//! CR0.WP (neither reaches userspace as an exit), and so escape the
//! validator. What the hypervisor can do is look: KVM mirrors CR0, CR3 and
//! CR4 into kvm_run at every exit (`KVM_SYNC_X86_SREGS`), and once a vCPU
//! has loaded its first validated base pointer (`MMUEXT_NEW_BASEPTR`), every
//! exit checks that
//! - CR3 names an L4 the frame table holds as a validated table (type L4
//!   with a type count above zero: pinned, or some vCPU's base pointer),
//!   with bits 0-11 (PCID, PWT, PCD) and 52-63 clear;
//! - CR0.WP is set (with WP clear the guest kernel can write through the
//!   read-only mappings of its page tables).
//!
//! A violation is counted when a vCPU is first seen in it (a vCPU that
//! stays on the same bad CR3, or keeps WP clear, is one violation, not one
//! per exit), reported once per kind per domain, and, with
//! [`ViolationPolicy::Kill`], ends the domain as crashed. Switches between
//! two exits go unseen: this is detection, not prevention.
//!
//! Cost: nothing for a vCPU that has not entered direct paging; otherwise a
//! comparison with the CR3 and frame-table generation of the last check,
//! and the table's lock only when either changed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pvmm::{FrameInfo, Gfn, PageType, PTE_ADDR};

pub use crate::config::ViolationPolicy;

/// CR0.WP: supervisor writes honour read-only mappings.
pub const CR0_WP: u64 = 1 << 16;

/// What is wrong with a CR3 value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cr3Problem {
    /// Bits outside the frame number are set (a PCID, PWT/PCD, or bits
    /// above 51).
    ExtraBits(u64),
    /// The frame is not in the frame table.
    OutsideTable,
    /// The frame is not a validated L4.
    NotL4(PageType),
}

impl std::fmt::Display for Cr3Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cr3Problem::ExtraBits(bits) => write!(f, "it sets bits {bits:#x} besides the frame number (PCIDs and cache bits are not allowed)"),
            Cr3Problem::OutsideTable => write!(f, "the frame is outside the domain's frame table"),
            Cr3Problem::NotL4(PageType::None) => write!(f, "the frame is not a validated page table"),
            Cr3Problem::NotL4(ty) => write!(f, "the frame is {ty}"),
        }
    }
}

/// Checks a CR3 value against the state of the frame it names (`None`
/// outside the table).
pub fn check_cr3(cr3: u64, frame: Option<FrameInfo>) -> Result<(), Cr3Problem> {
    let extra = cr3 & !PTE_ADDR;
    if extra != 0 {
        return Err(Cr3Problem::ExtraBits(extra));
    }
    let f = frame.ok_or(Cr3Problem::OutsideTable)?;
    if f.page_type == PageType::L4 && f.type_count > 0 {
        Ok(())
    } else {
        Err(Cr3Problem::NotL4(f.page_type))
    }
}

/// The frame CR3 names.
pub fn cr3_frame(cr3: u64) -> Gfn {
    Gfn((cr3 & PTE_ADDR) >> 12)
}

/// One violation, as reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// CR3 is no validated L4.
    Cr3 {
        /// vCPU index.
        vcpu: usize,
        /// CR3.
        cr3: u64,
        /// Why.
        problem: Cr3Problem,
        /// RIP at the exit.
        rip: u64,
    },
    /// CR0.WP is clear.
    WpClear {
        /// vCPU index.
        vcpu: usize,
        /// CR0.
        cr0: u64,
        /// RIP at the exit.
        rip: u64,
    },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Cr3 { vcpu, cr3, problem, rip } => {
                write!(f, "direct paging violated: vCPU {vcpu} runs on CR3 {cr3:#x} which is not a validated L4 ({problem}; RIP {rip:#x})")
            }
            Violation::WpClear { vcpu, cr0, rip } => {
                write!(f, "direct paging violated: vCPU {vcpu} runs with CR0.WP clear (CR0 {cr0:#x}; RIP {rip:#x}), so its kernel can write its page tables directly")
            }
        }
    }
}

/// The domain-wide part: policy, which vCPUs have entered direct paging,
/// the frame table's generation and the counters.
#[derive(Debug)]
pub struct PagingGuard {
    policy: ViolationPolicy,
    entered: Vec<AtomicBool>,
    generation: AtomicU64,
    cr3_violations: AtomicU64,
    wp_violations: AtomicU64,
    reported_cr3: AtomicBool,
    reported_wp: AtomicBool,
}

impl PagingGuard {
    /// A guard for `vcpus` vCPUs, none entered yet.
    pub fn new(vcpus: usize, policy: ViolationPolicy) -> PagingGuard {
        PagingGuard {
            policy,
            entered: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            generation: AtomicU64::new(0),
            cr3_violations: AtomicU64::new(0),
            wp_violations: AtomicU64::new(0),
            reported_cr3: AtomicBool::new(false),
            reported_wp: AtomicBool::new(false),
        }
    }

    /// What a violation does.
    pub fn policy(&self) -> ViolationPolicy {
        self.policy
    }

    /// vCPU `vcpu` loaded a validated base pointer: from now on its exits
    /// are checked.
    pub fn enter(&self, vcpu: usize) {
        if let Some(e) = self.entered.get(vcpu) {
            e.store(true, Ordering::Release);
        }
    }

    /// Whether `vcpu` has entered direct paging.
    pub fn entered(&self, vcpu: usize) -> bool {
        self.entered.get(vcpu).is_some_and(|e| e.load(Ordering::Acquire))
    }

    /// The frame table may have changed types (a frame became or stopped
    /// being a table, or changed class): checks cached against an older
    /// generation are done again.
    pub fn table_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// `(cr3_violations, wp_violations)`.
    pub fn counts(&self) -> (u64, u64) {
        (self.cr3_violations.load(Ordering::Relaxed), self.wp_violations.load(Ordering::Relaxed))
    }

    /// Counts `v`; returns whether it is the first of its kind in this
    /// domain (and so is to be reported).
    fn count(&self, v: &Violation) -> bool {
        let (counter, reported) = match v {
            Violation::Cr3 { .. } => (&self.cr3_violations, &self.reported_cr3),
            Violation::WpClear { .. } => (&self.wp_violations, &self.reported_wp),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        !reported.swap(true, Ordering::AcqRel)
    }
}

/// What one vCPU remembers between exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuGuard {
    /// CR3 and generation of the last CR3 check, and its outcome.
    cached: Option<(u64, u64, Result<(), Cr3Problem>)>,
    /// The CR3 of the violation the vCPU is in, if it is in one.
    bad_cr3: Option<u64>,
    /// WP was clear at the last exit.
    wp_clear: bool,
}

/// What an exit's check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExitCheck {
    /// New violations (counted), in order: CR3, then WP.
    pub new: Vec<Violation>,
    /// Those of `new` that are the first of their kind in the domain.
    pub first_of_kind: Vec<Violation>,
}

impl VcpuGuard {
    /// Checks the state at one exit of `vcpu`: `cr0`, `cr3` and `rip` from
    /// the synced registers; `frame` looks the CR3 frame up in the frame
    /// table (called only when the cached answer may be stale). Does
    /// nothing before the vCPU has entered direct paging.
    pub fn check(&mut self, guard: &PagingGuard, vcpu: usize, cr0: u64, cr3: u64, rip: u64, frame: impl FnOnce(Gfn) -> Option<FrameInfo>) -> ExitCheck {
        let mut out = ExitCheck::default();
        if !guard.entered(vcpu) {
            return out;
        }
        let generation = guard.generation();
        let result = match self.cached {
            Some((c, g, r)) if c == cr3 && g == generation => r,
            _ => {
                let r = check_cr3(cr3, if cr3 & !PTE_ADDR == 0 { frame(cr3_frame(cr3)) } else { None });
                self.cached = Some((cr3, generation, r));
                r
            }
        };
        match result {
            Ok(()) => self.bad_cr3 = None,
            Err(_) if self.bad_cr3 == Some(cr3) => {}
            Err(problem) => {
                self.bad_cr3 = Some(cr3);
                out.new.push(Violation::Cr3 { vcpu, cr3, problem, rip });
            }
        }
        let wp_clear = cr0 & CR0_WP == 0;
        if wp_clear && !self.wp_clear {
            out.new.push(Violation::WpClear { vcpu, cr0, rip });
        }
        self.wp_clear = wp_clear;
        for v in &out.new {
            if guard.count(v) {
                out.first_of_kind.push(v.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvmm::FrameClass;

    fn frame(ty: PageType, type_count: u32) -> Option<FrameInfo> {
        Some(FrameInfo { class: FrameClass::Ram, page_type: ty, type_count, ref_count: type_count, pinned: false })
    }

    const WP: u64 = CR0_WP | 1;

    #[test]
    fn cr3_must_name_a_validated_l4_without_extra_bits() {
        assert_eq!(check_cr3(0x5000, frame(PageType::L4, 1)), Ok(()));
        assert_eq!(check_cr3(0x5000, frame(PageType::L4, 0)), Err(Cr3Problem::NotL4(PageType::L4)));
        assert_eq!(check_cr3(0x5000, frame(PageType::Writable, 1)), Err(Cr3Problem::NotL4(PageType::Writable)));
        assert_eq!(check_cr3(0x5000, frame(PageType::L3, 2)), Err(Cr3Problem::NotL4(PageType::L3)));
        assert_eq!(check_cr3(0x5000, None), Err(Cr3Problem::OutsideTable));
        assert_eq!(check_cr3(0x5001, frame(PageType::L4, 1)), Err(Cr3Problem::ExtraBits(1)), "a PCID");
        assert_eq!(check_cr3(0x5018, frame(PageType::L4, 1)), Err(Cr3Problem::ExtraBits(0x18)), "PWT, PCD");
        assert_eq!(check_cr3(1 << 63 | 0x5000, frame(PageType::L4, 1)), Err(Cr3Problem::ExtraBits(1 << 63)));
        assert_eq!(cr3_frame(0x0012_3000), Gfn(0x123));
    }

    #[test]
    fn nothing_is_checked_before_the_vcpu_enters() {
        let g = PagingGuard::new(2, ViolationPolicy::Kill);
        let mut v = VcpuGuard::default();
        let out = v.check(&g, 0, 0, 0x9000, 0, |_| panic!("no lookup before entering"));
        assert_eq!(out, ExitCheck::default());
        g.enter(1);
        assert!(!g.entered(0) && g.entered(1));
        g.enter(7); // out of range: ignored
    }

    #[test]
    fn violations_are_counted_once_per_episode_and_reported_once_per_kind() {
        let g = PagingGuard::new(1, ViolationPolicy::Report);
        g.enter(0);
        let mut v = VcpuGuard::default();
        let good = |_| frame(PageType::L4, 1);
        let bad = |_| frame(PageType::Writable, 1);
        assert!(v.check(&g, 0, WP, 0x5000, 1, good).new.is_empty());
        // A bad CR3: one violation, reported.
        let out = v.check(&g, 0, WP, 0x6000, 2, bad);
        assert_eq!(out.new, [Violation::Cr3 { vcpu: 0, cr3: 0x6000, problem: Cr3Problem::NotL4(PageType::Writable), rip: 2 }]);
        assert_eq!(out.first_of_kind, out.new);
        // Staying there: nothing new, and no lookup (cached).
        assert!(v.check(&g, 0, WP, 0x6000, 3, |_| panic!("cached")).new.is_empty());
        // Back to a good one, then a bad one again: counted, not reported.
        assert!(v.check(&g, 0, WP, 0x5000, 4, good).new.is_empty());
        let out = v.check(&g, 0, WP, 0x6000, 5, bad);
        assert_eq!(out.new.len(), 1);
        assert!(out.first_of_kind.is_empty());
        // WP clear, twice: one violation.
        let out = v.check(&g, 0, 1, 0x6000, 6, bad);
        assert!(matches!(out.new[..], [Violation::WpClear { cr0: 1, rip: 6, .. }]), "{out:?}");
        assert_eq!(out.first_of_kind, out.new);
        assert!(v.check(&g, 0, 1, 0x6000, 7, bad).new.is_empty());
        assert!(v.check(&g, 0, WP, 0x6000, 8, bad).new.is_empty());
        assert_eq!(g.counts(), (2, 1));
    }

    #[test]
    fn a_table_change_invalidates_the_cached_answer() {
        let g = PagingGuard::new(1, ViolationPolicy::Kill);
        g.enter(0);
        let mut v = VcpuGuard::default();
        assert!(v.check(&g, 0, WP, 0x5000, 0, |_| frame(PageType::L4, 1)).new.is_empty());
        assert!(v.check(&g, 0, WP, 0x5000, 0, |_| panic!("cached")).new.is_empty());
        // The L4 was unpinned while the vCPU runs on it.
        g.table_changed();
        let out = v.check(&g, 0, WP, 0x5000, 9, |_| frame(PageType::None, 0));
        assert_eq!(out.new, [Violation::Cr3 { vcpu: 0, cr3: 0x5000, problem: Cr3Problem::NotL4(PageType::None), rip: 9 }]);
        assert_eq!(
            out.new[0].to_string(),
            "direct paging violated: vCPU 0 runs on CR3 0x5000 which is not a validated L4 (the frame is not a validated page table; RIP 0x9)"
        );
    }

    #[test]
    fn cr3_with_a_pcid_is_refused_without_a_lookup() {
        let g = PagingGuard::new(1, ViolationPolicy::Kill);
        g.enter(0);
        let mut v = VcpuGuard::default();
        let out = v.check(&g, 0, WP, 0x5001, 0, |_| panic!("no lookup"));
        assert_eq!(out.new, [Violation::Cr3 { vcpu: 0, cr3: 0x5001, problem: Cr3Problem::ExtraBits(1), rip: 0 }]);
    }
}

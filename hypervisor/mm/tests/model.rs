//! Property tests: random sequences of requests run through the frame table
//! and through the reference model (`pvmm::testing::Model`), which
//! recomputes every type and count from scratch. After every step the
//! harness checks that both accepted or refused the same requests, that
//! every frame's type and counts and every word of memory agree, that a
//! batch ends exactly where its requests one at a time end, that the frame
//! table's invariants hold, and that no frame took a new role while a
//! stale TLB entry could still use it in its old one. Teardown must bring
//! every count back to zero.

use proptest::collection::vec;
use proptest::prelude::*;
use pvmm::testing::{fuzz_batches, ops_from_bytes, Harness, Op};
use pvmm::*;

/// Frames of the test domains: few, so that random frame numbers collide
/// and build multi-level trees.
const N: u64 = 12;

fn frame() -> impl Strategy<Value = u64> {
    prop_oneof![12 => 0..N, 1 => N..N + 3]
}

fn index() -> impl Strategy<Value = u16> {
    prop_oneof![12 => 0u16..4, 1 => 508u16..512]
}

/// Mostly ordinary entries, sometimes with one odd bit, rarely anything.
fn entry() -> impl Strategy<Value = u64> {
    let odd = prop_oneof![
        8 => Just(0),
        1 => Just(PTE_G),
        1 => Just(PTE_PAT_PS),
        1 => Just(PTE_PCD),
        1 => Just(1u64 << 52),
    ];
    let ordinary = (frame(), 0u8..8, any::<bool>(), 0u8..8, any::<u8>(), odd).prop_map(
        |(g, p, rw, us, ad, odd)| {
            let mut e = (g << 12) | odd;
            if p != 0 {
                e |= PTE_P;
            }
            if rw {
                e |= PTE_RW;
            }
            // Almost always: some configurations require it.
            if us != 0 {
                e |= PTE_US;
            }
            e | u64::from(ad & 0b11) << 5 | if ad & 4 != 0 { PTE_NX } else { 0 }
        },
    );
    prop_oneof![20 => ordinary, 1 => any::<u64>()]
}

/// Bits to invert in an existing entry.
fn flip() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(PTE_RW),
        2 => Just(PTE_P),
        1 => Just(PTE_A | PTE_D),
        2 => (12u32..16).prop_map(|b| 1u64 << b),
        1 => Just(PTE_NX | PTE_US),
        1 => any::<u64>(),
    ]
}

fn update() -> impl Strategy<Value = MmuUpdate> {
    let cmd = prop_oneof![8 => Just(0u64), 3 => Just(2u64), 1 => 0u64..8];
    (frame(), index(), cmd, entry()).prop_map(|(g, i, cmd, val)| MmuUpdate {
        ptr: (g << 12) | (u64::from(i) << 3) | cmd,
        val,
    })
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        Just(Level::L1),
        Just(Level::L2),
        Just(Level::L3),
        Just(Level::L4)
    ]
}

fn ext_op() -> impl Strategy<Value = MmuExtOp> {
    prop_oneof![
        4 => (level(), frame()).prop_map(|(level, g)| MmuExtOp::Pin { level, gfn: Gfn(g) }),
        3 => frame().prop_map(|g| MmuExtOp::Unpin { gfn: Gfn(g) }),
        2 => frame().prop_map(|g| MmuExtOp::NewBaseptr { gfn: Gfn(g) }),
        1 => Just(MmuExtOp::TlbFlushLocal),
        1 => Just(MmuExtOp::TlbFlushAll),
        1 => (0u64..1 << 20).prop_map(|p| MmuExtOp::InvlpgLocal { va: p << 12 }),
        1 => (0u64..1 << 20).prop_map(|p| MmuExtOp::InvlpgAll { va: 0xffff_8000_0000_0000 | p << 12 }),
    ]
}

/// A raw guest `struct mmuext_op`, possibly undecodable.
fn raw_ext_op() -> impl Strategy<Value = [u64; 3]> {
    (0u64..16, any::<bool>(), frame(), any::<u8>()).prop_map(|(cmd, pad, a1, a2)| {
        let arg1 = if matches!(cmd, 7 | 9 | 11) && a2 & 1 != 0 {
            0x0000_8000_0000_0000
        } else {
            a1
        };
        [
            cmd | if pad { 0xabcd_0000_0000 } else { 0 },
            arg1,
            u64::from(a2),
        ]
    })
}

fn count(len: usize) -> impl Strategy<Value = u64> {
    prop_oneof![8 => Just(len as u64), 1 => Just(len as u64 + 2), 1 => Just(u64::MAX)]
}

fn op() -> impl Strategy<Value = Op> {
    let class = prop_oneof![
        Just(FrameClass::Ram),
        Just(FrameClass::Shared),
        Just(FrameClass::ReadOnly),
        Just(FrameClass::Reserved),
        Just(FrameClass::Absent),
    ];
    prop_oneof![
        8 => (frame(), index(), entry()).prop_map(|(gfn, idx, val)| Op::GuestWrite { gfn, idx, val }),
        6 => vec(update(), 1..6).prop_map(Op::MmuUpdate),
        8 => (any::<u8>(), index(), prop_oneof![1 => flip().prop_map(|v| (v, true)), 1 => entry().prop_map(|v| (v, false))], prop_oneof![3 => Just(0u64), 1 => Just(2u64)])
            .prop_map(|(sel, idx, (val, flip), cmd)| Op::UpdateTable { sel, idx, val, flip, cmd }),
        1 => (frame(), vec(update(), 1..4))
            .prop_flat_map(|(g, reqs)| {
                let n = reqs.len();
                (Just(g), Just(reqs), count(n))
            })
            .prop_map(|(list_gfn, reqs, count)| Op::MmuUpdateInGuest { list_gfn, reqs, count }),
        5 => (prop_oneof![9 => 0usize..2, 1 => Just(2usize)], vec(ext_op(), 1..5))
            .prop_map(|(vcpu, ops)| Op::MmuExt { vcpu, ops }),
        1 => (0usize..2, frame(), vec(raw_ext_op(), 1..4))
            .prop_flat_map(|(v, g, ops)| {
                let n = ops.len();
                (Just(v), Just(g), Just(ops), count(n))
            })
            .prop_map(|(vcpu, list_gfn, ops, count)| Op::MmuExtInGuest { vcpu, list_gfn, ops, count }),
        1 => (frame(), class).prop_map(|(gfn, class)| Op::SetClass { gfn, class }),
        1 => (frame(), 0u64..3).prop_map(|(first, count)| Op::AddIoRange { first, count }),
        1 => Just(Op::NoteFlushed),
        1 => Just(Op::Teardown),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (any::<bool>(), any::<bool>()).prop_map(|(cache, us)| Config {
        allow_cache_attrs: cache,
        required_bits: if us { PTE_US } else { 0 },
        ..Config::new(N, 2)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn frame_table_agrees_with_the_model(config in config(), io_past_table in any::<bool>(), ops in vec(op(), 1..80)) {
        let mut h = Harness::new(config);
        // Device frames past the table, where `frame()` lands now and then.
        if io_past_table {
            h.step(&Op::AddIoRange { first: N, count: 2 }).unwrap();
        }
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = h.step(op) {
                prop_assert!(false, "step {} ({:x?}): {}", i, op, e);
            }
        }
        if let Err(e) = h.finish() {
            prop_assert!(false, "teardown: {}", e);
        }
    }

    /// The fuzz target's body on random bytes, so that it runs in every
    /// `cargo test` and not only under cargo-fuzz.
    #[test]
    fn fuzz_body_holds_on_random_bytes(data in vec(any::<u8>(), 0..1024)) {
        fuzz_batches(&data);
    }
}

/// A small deterministic generator, so that the coverage test below sees
/// the same inputs every run.
struct XorShift(u64);

impl XorShift {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}

/// Length of the longest chain of linked tables from table `g` of `level`
/// down (1 for a table with no table below).
fn chain(h: &Harness, g: Gfn, level: Level) -> u8 {
    let Some(lower) = level.lower() else {
        return 1;
    };
    (0..ENTRIES_PER_TABLE)
        .map(|i| h.mem.entry(g, i))
        .filter(|e| is_present(*e))
        .map(|e| 1 + chain(h, entry_frame(e), lower))
        .max()
        .unwrap_or(1)
}

/// Random requests are only worth something if they reach deep into the
/// rules: check that the fuzz decoder's inputs build four-level trees,
/// apply updates, flush, and hit every guest-visible rejection.
#[test]
fn random_inputs_reach_every_rule() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut rejected = [0u64; Reason::COUNT];
    let (mut applied, mut flushes, mut deepest) = (0, 0, 0);
    let (mut plain, mut io_mapped, mut io_uncached) = (0, 0, 0);
    for _ in 0..400 {
        let data = rng.bytes(1500);
        let (config, ops) = ops_from_bytes(&data);
        let mut h = Harness::new(config);
        for op in &ops {
            h.step(op).unwrap();
            let depth = h
                .table
                .frames()
                .filter_map(|(g, f)| Some(chain(&h, g, f.page_type.level()?)))
                .max()
                .unwrap_or(0);
            deepest = deepest.max(depth);
            // Present L1 entries of typed L1 tables that map I/O frames.
            for (g, f) in h.table.frames() {
                if f.page_type != PageType::L1 {
                    continue;
                }
                for i in 0..ENTRIES_PER_TABLE {
                    let e = h.mem.entry(g, i);
                    if is_present(e) && h.table.is_io_frame(entry_frame(e)) {
                        io_mapped += 1;
                        if e & L1_CACHE_ATTRS != 0 {
                            io_uncached += 1;
                        }
                    }
                }
            }
        }
        h.finish().unwrap();
        for (r, n) in h.table.stats().rejections() {
            rejected[r as usize] += n;
        }
        applied += h.table.stats().updates_applied;
        plain += h.table.stats().plain_writes;
        flushes += h.table.stats().retype_flushes;
    }
    assert!(applied > 100, "only {applied} updates applied");
    assert!(flushes > 0, "no retype flush");
    assert_eq!(deepest, 4, "no four-level tree was built");
    assert!(plain > 0, "no plain write");
    assert!(io_mapped > 0, "no L1 entry mapped an I/O frame");
    assert!(
        io_uncached > 0,
        "no L1 entry mapped an I/O frame with cache attributes"
    );
    let unreachable_here = [
        Reason::RefOverflow,        // needs 2^32 references
        Reason::FrameTableTooLarge, // not a request
        Reason::FrameInUse,         // not counted: a hypervisor call
        Reason::IoRangeOverlap,     // the same
        Reason::TooManyIoRanges,    // the same
        Reason::NotPageTable,       // mmu_update on a non-table is a plain write
    ];
    for r in Reason::ALL {
        if !unreachable_here.contains(&r) {
            assert!(rejected[r as usize] > 0, "no request was refused for {r}");
        }
    }
}

//! Validated page-table updates per second, against plain memory writes.
//!
//! `cargo bench -p pvmm --bench update_rate` prints one line per case:
//! batches of 512 `mmu_update` requests on one L1 table (a whole table
//! rewritten per call), and the same 512 words written without
//! validation. No assertions: numbers to read, not to gate on.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pvmm::testing::VecMemory;
use pvmm::*;

const FRAMES: u64 = 4096;
const TABLE: Gfn = Gfn(1);
/// First data frame mapped by the table.
const DATA: u64 = 1024;
const RUN_FOR: Duration = Duration::from_millis(1500);

/// Runs `batch` (which does 512 updates) until `RUN_FOR` has passed and
/// returns updates per second.
fn rate(mut batch: impl FnMut(usize)) -> f64 {
    // Warm up.
    for i in 0..64 {
        batch(i);
    }
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < RUN_FOR {
        for _ in 0..64 {
            batch(n);
            n += 1;
        }
    }
    (n * 512) as f64 / start.elapsed().as_secs_f64()
}

fn setup() -> (FrameTable, VecMemory) {
    let mut ft = FrameTable::new(Config::new(FRAMES, 1)).unwrap();
    let mut mem = VecMemory::new(FRAMES);
    ft.mmuext_op(
        &mut mem,
        0,
        &[MmuExtOp::Pin {
            level: Level::L1,
            gfn: TABLE,
        }],
    )
    .result()
    .unwrap();
    (ft, mem)
}

/// Requests setting every entry of the table to `f(i)`.
fn batch(f: impl Fn(u64) -> u64) -> Vec<MmuUpdate> {
    (0..512)
        .map(|i| MmuUpdate::normal(TABLE, i as usize, f(i)))
        .collect()
}

fn pte(gfn: u64, flags: u64) -> u64 {
    (gfn << PAGE_SHIFT) | PTE_P | PTE_US | PTE_A | flags
}

fn report(name: &str, per_s: f64) {
    println!(
        "{name:<58} {:>8.1} M updates/s  ({:>5.1} ns each)",
        per_s / 1e6,
        1e9 / per_s
    );
}

fn main() {
    // Map 512 distinct frames writable, then unmap them: every update takes
    // or drops a Writable type reference.
    let (mut ft, mut mem) = setup();
    let map = batch(|i| pte(DATA + i, PTE_RW));
    let unmap = batch(|_| 0);
    report(
        "mmu_update: map 512 frames RW / unmap (alternating)",
        rate(|n| {
            let reqs = if n % 2 == 0 { &map } else { &unmap };
            assert_eq!(black_box(ft.mmu_update(&mut mem, reqs)).error, None);
        }),
    );
    ft.check_invariants(&mem).unwrap();

    // Write-protect and unprotect (as fork does): RW <-> RO of the same
    // frames, a type reference dropped or taken each time.
    let (mut ft, mut mem) = setup();
    let ro = batch(|i| pte(DATA + i, 0));
    ft.mmu_update(&mut mem, &map).result().unwrap();
    report(
        "mmu_update: RW <-> RO of the same 512 frames",
        rate(|n| {
            let reqs = if n % 2 == 0 { &ro } else { &map };
            assert_eq!(black_box(ft.mmu_update(&mut mem, reqs)).error, None);
        }),
    );

    // Rewrite with the same frame and rights (A/D, NX changes): no
    // reference changes hands.
    let (mut ft, mut mem) = setup();
    let nx = batch(|i| pte(DATA + i, PTE_RW | PTE_NX));
    ft.mmu_update(&mut mem, &map).result().unwrap();
    report(
        "mmu_update: same frame and rights, other flags",
        rate(|n| {
            let reqs = if n % 2 == 0 { &nx } else { &map };
            assert_eq!(black_box(ft.mmu_update(&mut mem, reqs)).error, None);
        }),
    );

    // The same with the accessed/dirty-preserving command.
    let (mut ft, mut mem) = setup();
    let map_ad: Vec<MmuUpdate> = (0..512)
        .map(|i| MmuUpdate::preserve_ad(TABLE, i, pte(DATA + i as u64, PTE_RW)))
        .collect();
    report(
        "mmu_update PRESERVE_AD: map 512 frames RW / unmap",
        rate(|n| {
            let reqs = if n % 2 == 0 { &map_ad } else { &unmap };
            assert_eq!(black_box(ft.mmu_update(&mut mem, reqs)).error, None);
        }),
    );

    // Requests read from guest memory, as the hypercall handler will call it.
    let (mut ft, mut mem) = setup();
    // Each list is 8 KiB: frames 2-3 hold `map`, 4-5 hold `unmap`.
    let mut words = Vec::new();
    for reqs in [&map, &unmap] {
        for r in reqs.iter() {
            words.push(r.ptr);
            words.push(r.val);
        }
    }
    for (i, w) in words.iter().enumerate() {
        mem.set_entry(Gfn(2 + (i / 512) as u64), i % 512, *w);
    }
    report(
        "mmu_update_in_guest: map / unmap, list read in place",
        rate(|n| {
            let gpa = if n % 2 == 0 { 2 << 12 } else { 4 << 12 };
            assert_eq!(
                black_box(ft.mmu_update_in_guest(&mut mem, gpa, 512)).error,
                None
            );
        }),
    );

    // Validation of a whole table: pin and unpin an L1 with 512 writable
    // mappings (rate in entries validated and released per second).
    let (mut ft, mut mem) = setup();
    for i in 0..512 {
        mem.set_entry(Gfn(7), i, pte(DATA + i as u64, PTE_RW));
    }
    let pin = [MmuExtOp::Pin {
        level: Level::L1,
        gfn: Gfn(7),
    }];
    let unpin = [MmuExtOp::Unpin { gfn: Gfn(7) }];
    report(
        "pin / unpin a full L1 (entries validated or released)",
        rate(|n| {
            let ops: &[MmuExtOp] = if n % 2 == 0 { &pin } else { &unpin };
            assert_eq!(black_box(ft.mmuext_op(&mut mem, 0, ops)).error, None);
        }),
    );

    // Baselines: the same 512 words written with no validation.
    let mut plain = VecMemory::new(FRAMES);
    report(
        "baseline: 512 write_u64 to VecMemory",
        rate(|n| {
            let reqs = if n % 2 == 0 { &map } else { &unmap };
            for r in reqs {
                plain.write_u64(black_box(r.ptr), r.val).unwrap();
            }
        }),
    );
    let mut raw = vec![0u64; 512];
    report(
        "baseline: 512 stores to a Vec<u64>",
        rate(|n| {
            let reqs = if n % 2 == 0 { &map } else { &unmap };
            for (slot, r) in raw.iter_mut().zip(reqs.iter()) {
                *slot = black_box(r.val);
            }
            black_box(&raw);
        }),
    );
}

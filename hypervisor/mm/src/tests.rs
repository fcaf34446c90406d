//! Unit tests: one or more minimal examples per rule.

use crate::testing::VecMemory;
use crate::*;

const NR: u64 = 32;

fn setup() -> (FrameTable, VecMemory) {
    setup_with(Config::new(NR, 2))
}

fn setup_with(config: Config) -> (FrameTable, VecMemory) {
    (
        FrameTable::new(config).unwrap(),
        VecMemory::new(config.nr_frames),
    )
}

/// A present entry for frame `gfn` with `flags`.
fn pte(gfn: u64, flags: u64) -> u64 {
    (gfn << PAGE_SHIFT) | PTE_P | flags
}

fn ext(ft: &mut FrameTable, mem: &mut VecMemory, op: MmuExtOp) -> Result<(), Error> {
    ft.mmuext_op(mem, 0, &[op]).result()
}

fn pin(ft: &mut FrameTable, mem: &mut VecMemory, level: Level, gfn: u64) -> Result<(), Error> {
    ext(
        ft,
        mem,
        MmuExtOp::Pin {
            level,
            gfn: Gfn(gfn),
        },
    )
}

fn unpin(ft: &mut FrameTable, mem: &mut VecMemory, gfn: u64) -> Result<(), Error> {
    ext(ft, mem, MmuExtOp::Unpin { gfn: Gfn(gfn) })
}

fn update(
    ft: &mut FrameTable,
    mem: &mut VecMemory,
    table: u64,
    idx: usize,
    val: u64,
) -> Result<(), Error> {
    ft.mmu_update(mem, &[MmuUpdate::normal(Gfn(table), idx, val)])
        .result()
}

fn info(ft: &FrameTable, gfn: u64) -> FrameInfo {
    ft.frame(Gfn(gfn)).unwrap()
}

/// (type, type count, reference count, pinned) of a frame.
fn counts(ft: &FrameTable, gfn: u64) -> (PageType, u32, u32, bool) {
    let f = info(ft, gfn);
    (f.page_type, f.type_count, f.ref_count, f.pinned)
}

fn assert_all_zero(ft: &FrameTable) {
    for (gfn, f) in ft.frames() {
        assert_eq!(
            (f.page_type, f.type_count, f.ref_count, f.pinned),
            (PageType::None, 0, 0, false),
            "frame {gfn}"
        );
    }
}

fn ok(ft: &FrameTable, mem: &VecMemory) {
    ft.check_invariants(mem).unwrap();
}

/// Expects `res` to be `err`, counted once more under its reason than
/// `before`.
macro_rules! refused {
    ($ft:expr, $res:expr, $err:expr, $before:expr $(,)?) => {{
        let res: Result<(), Error> = $res;
        let err: Error = $err;
        assert_eq!(res, Err(err));
        assert_eq!($ft.stats().rejected(err.reason()), $before + 1);
    }};
}

/// Builds L4 1 -> L3 2 -> L2 3 -> L1 4 -> data 5 (writable) and 6
/// (read-only).
fn tree(mem: &mut VecMemory) {
    mem.set_entry(Gfn(1), 0, pte(2, PTE_RW));
    mem.set_entry(Gfn(2), 0, pte(3, PTE_RW));
    mem.set_entry(Gfn(3), 0, pte(4, PTE_RW));
    mem.set_entry(Gfn(4), 0, pte(5, PTE_RW));
    mem.set_entry(Gfn(4), 1, pte(6, 0));
}

#[test]
fn pinning_an_l1_counts_its_mappings_and_unpinning_releases_them() {
    let (mut ft, mut mem) = setup();
    mem.set_entry(Gfn(1), 0, pte(5, PTE_RW));
    mem.set_entry(Gfn(1), 1, pte(6, 0));
    mem.set_entry(Gfn(1), 511, pte(5, PTE_RW | PTE_NX));
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    assert_eq!(counts(&ft, 1), (PageType::L1, 1, 1, true));
    assert_eq!(counts(&ft, 5), (PageType::Writable, 2, 2, false));
    assert_eq!(counts(&ft, 6), (PageType::None, 0, 1, false));
    ok(&ft, &mem);
    unpin(&mut ft, &mut mem, 1).unwrap();
    assert_all_zero(&ft);
    ok(&ft, &mem);
    assert_eq!(ft.stats().tables_validated, 1);
    assert_eq!(ft.stats().tables_released, 1);
    assert_eq!(ft.stats().ext_ops_done, 2);
}

#[test]
fn pinning_an_l4_validates_the_whole_tree_and_unpinning_releases_it() {
    let (mut ft, mut mem) = setup();
    tree(&mut mem);
    pin(&mut ft, &mut mem, Level::L4, 1).unwrap();
    assert_eq!(counts(&ft, 1), (PageType::L4, 1, 1, true));
    assert_eq!(counts(&ft, 2), (PageType::L3, 1, 1, false));
    assert_eq!(counts(&ft, 3), (PageType::L2, 1, 1, false));
    assert_eq!(counts(&ft, 4), (PageType::L1, 1, 1, false));
    assert_eq!(counts(&ft, 5), (PageType::Writable, 1, 1, false));
    assert_eq!(counts(&ft, 6), (PageType::None, 0, 1, false));
    ok(&ft, &mem);
    assert_eq!(ft.stats().tables_validated, 4);
    unpin(&mut ft, &mut mem, 1).unwrap();
    assert_all_zero(&ft);
    assert_eq!(ft.stats().tables_released, 4);
}

#[test]
fn shared_subtables_are_validated_once_and_counted_per_reference() {
    let (mut ft, mut mem) = setup();
    mem.set_entry(Gfn(3), 0, pte(4, 0));
    mem.set_entry(Gfn(3), 1, pte(4, 0));
    mem.set_entry(Gfn(4), 0, pte(5, PTE_RW));
    pin(&mut ft, &mut mem, Level::L2, 3).unwrap();
    assert_eq!(counts(&ft, 4), (PageType::L1, 2, 2, false));
    assert_eq!(counts(&ft, 5), (PageType::Writable, 1, 1, false));
    assert_eq!(ft.stats().tables_validated, 2);
    // Pinning the shared L1 too only adds a reference.
    pin(&mut ft, &mut mem, Level::L1, 4).unwrap();
    assert_eq!(counts(&ft, 4), (PageType::L1, 3, 3, true));
    unpin(&mut ft, &mut mem, 3).unwrap();
    assert_eq!(counts(&ft, 4), (PageType::L1, 1, 1, true));
    assert_eq!(counts(&ft, 5), (PageType::Writable, 1, 1, false));
    unpin(&mut ft, &mut mem, 4).unwrap();
    assert_all_zero(&ft);
}

#[test]
fn non_present_entries_may_hold_anything() {
    let (mut ft, mut mem) = setup();
    for level_table in [1, 2, 3, 4] {
        mem.set_entry(Gfn(level_table), 7, !PTE_P);
    }
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    pin(&mut ft, &mut mem, Level::L2, 2).unwrap();
    pin(&mut ft, &mut mem, Level::L3, 3).unwrap();
    pin(&mut ft, &mut mem, Level::L4, 4).unwrap();
    // And may be written so.
    update(&mut ft, &mut mem, 2, 8, 0xdead_beef_0000_0000).unwrap();
    ok(&ft, &mem);
}

#[test]
fn a_table_may_map_itself_read_only_but_not_writable() {
    let (mut ft, mut mem) = setup();
    mem.set_entry(Gfn(1), 0, pte(1, 0));
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    assert_eq!(counts(&ft, 1), (PageType::L1, 1, 2, true));
    ok(&ft, &mem);
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 1, pte(1, PTE_RW)),
        Error::TypeConflict {
            gfn: Gfn(1),
            current: PageType::L1,
            wanted: PageType::Writable
        },
        0,
    );
    // Pinning a table that maps itself writable fails and leaves nothing.
    mem.set_entry(Gfn(2), 0, pte(2, PTE_RW));
    assert_eq!(
        pin(&mut ft, &mut mem, Level::L1, 2),
        Err(Error::TypeConflict {
            gfn: Gfn(2),
            current: PageType::L1,
            wanted: PageType::Writable
        })
    );
    assert_eq!(counts(&ft, 2), (PageType::None, 0, 0, false));
    ok(&ft, &mem);
}

#[test]
fn frames_outside_the_table_are_refused() {
    let (mut ft, mut mem) = setup();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, pte(NR, 0)),
        Error::FrameOutOfRange {
            gfn: Gfn(NR),
            nr_frames: NR
        },
        0,
    );
    // Address bits up to 51 are frame bits, checked against the table.
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, PTE_ADDR | PTE_P),
        Error::FrameOutOfRange {
            gfn: Gfn(PTE_ADDR >> 12),
            nr_frames: NR
        },
        1,
    );
    refused!(
        &ft,
        pin(&mut ft, &mut mem, Level::L1, u64::MAX),
        Error::FrameOutOfRange {
            gfn: Gfn(u64::MAX),
            nr_frames: NR
        },
        2,
    );
    refused!(
        &ft,
        update(&mut ft, &mut mem, NR + 5, 0, 0),
        Error::FrameOutOfRange {
            gfn: Gfn(NR + 5),
            nr_frames: NR
        },
        3,
    );
    assert_eq!(
        Error::FrameOutOfRange {
            gfn: Gfn(NR),
            nr_frames: NR
        }
        .errno(),
        -errno::EINVAL
    );
    assert_eq!(counts(&ft, 1), (PageType::L1, 1, 1, true));
    ok(&ft, &mem);
}

#[test]
fn absent_frames_are_not_owned() {
    let (mut ft, mut mem) = setup();
    ft.set_frame_class(Gfn(9), FrameClass::Absent).unwrap();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, pte(9, 0)),
        Error::NotOwned { gfn: Gfn(9) },
        0
    );
    refused!(
        &ft,
        pin(&mut ft, &mut mem, Level::L1, 9),
        Error::NotOwned { gfn: Gfn(9) },
        1
    );
    refused!(
        &ft,
        update(&mut ft, &mut mem, 9, 0, 0),
        Error::NotOwned { gfn: Gfn(9) },
        2
    );
    assert_eq!(
        Error::NotOwned { gfn: Gfn(0x1234) }.to_string(),
        "frame 0x1234 is not owned by this domain"
    );
    ok(&ft, &mem);
}

#[test]
fn reserved_frames_cannot_be_mapped_at_all() {
    let (mut ft, mut mem) = setup();
    ft.set_frame_class(Gfn(9), FrameClass::Reserved).unwrap();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, pte(9, 0)),
        Error::ReservedFrame { gfn: Gfn(9) },
        0
    );
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, pte(9, PTE_RW)),
        Error::ReservedFrame { gfn: Gfn(9) },
        1
    );
    assert_eq!(Error::ReservedFrame { gfn: Gfn(9) }.errno(), -errno::EPERM);
    ok(&ft, &mem);
}

#[test]
fn read_only_frames_map_read_only_only_and_never_as_tables() {
    let (mut ft, mut mem) = setup();
    ft.set_frame_class(Gfn(9), FrameClass::ReadOnly).unwrap();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    update(&mut ft, &mut mem, 1, 0, pte(9, 0)).unwrap();
    assert_eq!(counts(&ft, 9), (PageType::None, 0, 1, false));
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 1, pte(9, PTE_RW)),
        Error::ReadOnlyFrame { gfn: Gfn(9) },
        0
    );
    refused!(
        &ft,
        pin(&mut ft, &mut mem, Level::L1, 9),
        Error::NotTableCapable {
            gfn: Gfn(9),
            class: FrameClass::ReadOnly
        },
        0,
    );
    ok(&ft, &mem);
}

#[test]
fn shared_frames_map_writable_but_never_become_tables() {
    let (mut ft, mut mem) = setup();
    ft.set_frame_class(Gfn(9), FrameClass::Shared).unwrap();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    update(&mut ft, &mut mem, 1, 0, pte(9, PTE_RW)).unwrap();
    assert_eq!(counts(&ft, 9), (PageType::Writable, 1, 1, false));
    pin(&mut ft, &mut mem, Level::L2, 2).unwrap();
    let err = Error::NotTableCapable {
        gfn: Gfn(9),
        class: FrameClass::Shared,
    };
    refused!(&ft, update(&mut ft, &mut mem, 2, 0, pte(9, 0)), err, 0);
    assert_eq!(
        err.to_string(),
        "frame 0x9 is a shared frame and cannot be used as a page table"
    );
    ok(&ft, &mem);
}

#[test]
fn disallowed_bits_are_refused_per_level() {
    let (mut ft, mut mem) = setup();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    pin(&mut ft, &mut mem, Level::L2, 2).unwrap();
    pin(&mut ft, &mut mem, Level::L4, 3).unwrap();
    let e = pte(5, 1 << 59);
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, e),
        Error::DisallowedBits {
            level: Level::L1,
            entry: e,
            bits: 1 << 59
        },
        0,
    );
    let e = pte(4, PTE_G);
    refused!(
        &ft,
        update(&mut ft, &mut mem, 2, 0, e),
        Error::DisallowedBits {
            level: Level::L2,
            entry: e,
            bits: PTE_G
        },
        1,
    );
    let e = pte(4, PTE_PCD);
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, e),
        Error::DisallowedBits {
            level: Level::L1,
            entry: e,
            bits: PTE_PCD
        },
        2,
    );
    let e = pte(4, PTE_PAT_PS);
    refused!(
        &ft,
        update(&mut ft, &mut mem, 3, 0, e),
        Error::DisallowedBits {
            level: Level::L4,
            entry: e,
            bits: PTE_PAT_PS
        },
        3,
    );
    // Global is fine in an L1 entry.
    update(&mut ft, &mut mem, 1, 0, pte(5, PTE_G | PTE_RW)).unwrap();
    ok(&ft, &mem);
}

#[test]
fn cache_attributes_are_allowed_when_configured() {
    let (mut ft, mut mem) = setup_with(Config {
        allow_cache_attrs: true,
        ..Config::new(NR, 1)
    });
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    update(
        &mut ft,
        &mut mem,
        1,
        0,
        pte(5, PTE_PCD | PTE_PWT | PTE_PAT_PS),
    )
    .unwrap();
    ok(&ft, &mem);
}

#[test]
fn required_bits_are_enforced_at_every_level() {
    let (mut ft, mut mem) = setup_with(Config {
        required_bits: PTE_US,
        ..Config::new(NR, 1)
    });
    mem.set_entry(Gfn(2), 0, pte(1, 0));
    let e = pte(1, 0);
    assert_eq!(
        pin(&mut ft, &mut mem, Level::L2, 2),
        Err(Error::MissingRequiredBits {
            level: Level::L2,
            entry: e,
            bits: PTE_US
        })
    );
    assert_eq!(ft.stats().rejected(Reason::MissingRequiredBits), 1);
    mem.set_entry(Gfn(2), 0, pte(1, PTE_US));
    pin(&mut ft, &mut mem, Level::L2, 2).unwrap();
    ok(&ft, &mem);
}

#[test]
fn superpages_are_refused_in_l2_and_l3() {
    let (mut ft, mut mem) = setup();
    pin(&mut ft, &mut mem, Level::L2, 2).unwrap();
    pin(&mut ft, &mut mem, Level::L3, 3).unwrap();
    let e = pte(0, PTE_PAT_PS | PTE_RW);
    refused!(
        &ft,
        update(&mut ft, &mut mem, 2, 0, e),
        Error::Superpage {
            level: Level::L2,
            entry: e
        },
        0
    );
    refused!(
        &ft,
        update(&mut ft, &mut mem, 3, 0, e),
        Error::Superpage {
            level: Level::L3,
            entry: e
        },
        1
    );
    // The same refusal when validating a table.
    mem.set_entry(Gfn(4), 3, e);
    assert_eq!(
        pin(&mut ft, &mut mem, Level::L2, 4),
        Err(Error::Superpage {
            level: Level::L2,
            entry: e
        })
    );
    ok(&ft, &mem);
}

#[test]
fn a_frame_has_one_type_at_a_time() {
    let (mut ft, mut mem) = setup();
    // 5 is writable through L1 1, so it cannot be pinned as a table.
    mem.set_entry(Gfn(1), 0, pte(5, PTE_RW));
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    refused!(
        &ft,
        pin(&mut ft, &mut mem, Level::L2, 5),
        Error::TypeConflict {
            gfn: Gfn(5),
            current: PageType::Writable,
            wanted: PageType::L2
        },
        0,
    );
    // 1 is an L1 table, so it cannot be mapped writable nor used as an L2.
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 1, pte(1, PTE_RW)),
        Error::TypeConflict {
            gfn: Gfn(1),
            current: PageType::L1,
            wanted: PageType::Writable
        },
        1,
    );
    pin(&mut ft, &mut mem, Level::L3, 3).unwrap();
    refused!(
        &ft,
        update(&mut ft, &mut mem, 3, 0, pte(1, 0)),
        Error::TypeConflict {
            gfn: Gfn(1),
            current: PageType::L1,
            wanted: PageType::L2
        },
        2,
    );
    // Once the writable mapping is gone, 5 may become a table.
    update(&mut ft, &mut mem, 1, 0, 0).unwrap();
    pin(&mut ft, &mut mem, Level::L2, 5).unwrap();
    ok(&ft, &mem);
}

#[test]
fn linear_page_tables_are_refused() {
    let (mut ft, mut mem) = setup();
    // An L4 pointing to itself.
    mem.set_entry(Gfn(1), 511, pte(1, PTE_RW));
    assert_eq!(
        pin(&mut ft, &mut mem, Level::L4, 1),
        Err(Error::LinearPageTable {
            gfn: Gfn(1),
            level: Level::L4
        })
    );
    assert_eq!(counts(&ft, 1), (PageType::None, 0, 0, false));
    // An L2 entry pointing to another L2.
    pin(&mut ft, &mut mem, Level::L2, 2).unwrap();
    pin(&mut ft, &mut mem, Level::L2, 3).unwrap();
    refused!(
        &ft,
        update(&mut ft, &mut mem, 2, 0, pte(3, 0)),
        Error::LinearPageTable {
            gfn: Gfn(3),
            level: Level::L2
        },
        1,
    );
    ok(&ft, &mem);
}

#[test]
fn updates_of_frames_that_are_no_table_are_plain_writes() {
    let (mut ft, mut mem) = setup();
    // An untyped RAM frame: the value is stored as is, not validated (it
    // names a frame beyond the table and a reserved bit), no reference.
    let odd = pte(NR + 5, 1 << 60);
    update(&mut ft, &mut mem, 1, 0, odd).unwrap();
    assert_eq!(mem.entry(Gfn(1), 0), odd);
    assert_eq!(counts(&ft, 1), (PageType::None, 0, 0, false));
    // A frame mapped writable (type Writable) is written the same way.
    mem.set_entry(Gfn(2), 0, pte(3, PTE_RW));
    pin(&mut ft, &mut mem, Level::L1, 2).unwrap();
    update(&mut ft, &mut mem, 3, 7, pte(2, PTE_RW)).unwrap();
    assert_eq!(mem.entry(Gfn(3), 7), pte(2, PTE_RW));
    assert_eq!(counts(&ft, 2), (PageType::L1, 1, 1, true));
    assert_eq!(counts(&ft, 3), (PageType::Writable, 1, 1, false));
    // Shared frames too; PRESERVE_AD keeps the old entry's A and D.
    ft.set_frame_class(Gfn(4), FrameClass::Shared).unwrap();
    mem.set_entry(Gfn(4), 1, pte(9, PTE_A | PTE_D));
    ft.mmu_update(
        &mut mem,
        &[MmuUpdate::preserve_ad(Gfn(4), 1, pte(10, PTE_RW))],
    )
    .result()
    .unwrap();
    assert_eq!(mem.entry(Gfn(4), 1), pte(10, PTE_RW | PTE_A | PTE_D));
    assert_eq!(ft.stats().plain_writes, 3);
    assert_eq!(ft.stats().updates_applied, 3);
    assert_eq!(ft.stats().rejected_total(), 0);
    ok(&ft, &mem);
}

#[test]
fn plain_writes_are_refused_on_frames_the_guest_cannot_write() {
    let (mut ft, mut mem) = setup();
    ft.set_frame_class(Gfn(1), FrameClass::Absent).unwrap();
    ft.set_frame_class(Gfn(2), FrameClass::Reserved).unwrap();
    ft.set_frame_class(Gfn(3), FrameClass::ReadOnly).unwrap();
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, 1),
        Error::NotOwned { gfn: Gfn(1) },
        0
    );
    refused!(
        &ft,
        update(&mut ft, &mut mem, 2, 0, 1),
        Error::ReservedFrame { gfn: Gfn(2) },
        0
    );
    refused!(
        &ft,
        update(&mut ft, &mut mem, 3, 0, 1),
        Error::ReadOnlyFrame { gfn: Gfn(3) },
        0
    );
    refused!(
        &ft,
        update(&mut ft, &mut mem, NR, 0, 1),
        Error::FrameOutOfRange {
            gfn: Gfn(NR),
            nr_frames: NR
        },
        0
    );
    for g in 1..4 {
        assert_eq!(mem.entry(Gfn(g), 0), 0);
    }
    assert_eq!(ft.stats().plain_writes, 0);
    ok(&ft, &mem);
}

#[test]
fn a_plain_write_to_a_frame_that_was_a_table_since_the_last_flush_flushes_first() {
    let (mut ft, mut mem) = setup();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    unpin(&mut ft, &mut mem, 1).unwrap();
    // A vCPU may still walk frame 1 as an L1 through a cached upper entry.
    let before = mem.flushes;
    update(&mut ft, &mut mem, 1, 0, pte(2, PTE_RW)).unwrap();
    assert_eq!(mem.flushes, before + 1);
    assert_eq!(ft.stats().retype_flushes, 1);
    // Once flushed, further writes need none.
    update(&mut ft, &mut mem, 1, 1, pte(2, PTE_RW)).unwrap();
    assert_eq!(mem.flushes, before + 1);
    ok(&ft, &mem);
}

#[test]
fn io_ranges_are_mapped_from_l1_entries_without_counts() {
    let mut config = Config::new(NR, 2);
    config.required_bits = PTE_US;
    let (mut ft, mut mem) = setup_with(config);
    // One range beyond the table, one over absent frames inside it.
    ft.add_io_range(Gfn(NR + 100), 2).unwrap();
    ft.set_frame_class_range(Gfn(20), 4, FrameClass::Absent)
        .unwrap();
    ft.add_io_range(Gfn(21), 2).unwrap();
    assert!(ft.is_io_frame(Gfn(NR + 101)) && ft.is_io_frame(Gfn(22)));
    assert!(!ft.is_io_frame(Gfn(NR + 102)) && !ft.is_io_frame(Gfn(20)));
    assert_eq!(
        ft.io_ranges().collect::<Vec<_>>(),
        [(Gfn(NR + 100), 2), (Gfn(21), 2)]
    );
    // Read-only, writable and uncached mappings (cache attributes are not
    // configured for RAM) of both, in an L1 that is then pinned.
    mem.set_entry(
        Gfn(1),
        0,
        pte(NR + 100, PTE_US | PTE_RW | PTE_PCD | PTE_PWT),
    );
    mem.set_entry(Gfn(1), 1, pte(NR + 101, PTE_US | PTE_PAT_PS));
    mem.set_entry(Gfn(1), 2, pte(21, PTE_US | PTE_RW | PTE_G));
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    // Through mmu_update, both ways, and a rewrite.
    update(&mut ft, &mut mem, 1, 3, pte(22, PTE_US | PTE_RW | PTE_PCD)).unwrap();
    update(&mut ft, &mut mem, 1, 3, pte(22, PTE_US)).unwrap();
    update(&mut ft, &mut mem, 1, 0, 0).unwrap();
    assert_eq!(counts(&ft, 21), (PageType::None, 0, 0, false));
    assert_eq!(info(&ft, 21).class, FrameClass::Absent);
    ok(&ft, &mem);
    // Cache attributes stay refused on RAM, and the required bits apply.
    let ram_uc = pte(5, PTE_US | PTE_PCD);
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 4, ram_uc),
        Error::DisallowedBits {
            level: Level::L1,
            entry: ram_uc,
            bits: PTE_PCD
        },
        0
    );
    let no_us = pte(22, PTE_RW);
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 4, no_us),
        Error::MissingRequiredBits {
            level: Level::L1,
            entry: no_us,
            bits: PTE_US
        },
        0
    );
    // Frames next to a range are not I/O frames.
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 4, pte(NR + 102, PTE_US)),
        Error::FrameOutOfRange {
            gfn: Gfn(NR + 102),
            nr_frames: NR
        },
        0
    );
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 4, pte(20, PTE_US)),
        Error::NotOwned { gfn: Gfn(20) },
        0
    );
    unpin(&mut ft, &mut mem, 1).unwrap();
    assert_all_zero(&ft);
    ok(&ft, &mem);
}

#[test]
fn io_frames_are_never_page_tables() {
    let (mut ft, mut mem) = setup();
    ft.add_io_range(Gfn(NR), 1).unwrap();
    ft.set_frame_class(Gfn(30), FrameClass::Absent).unwrap();
    ft.add_io_range(Gfn(30), 1).unwrap();
    for (level, table) in [(Level::L2, 2), (Level::L3, 3), (Level::L4, 4)] {
        pin(&mut ft, &mut mem, level, table).unwrap();
        let lower = level.lower().unwrap();
        for io in [NR, 30] {
            let before = ft.stats().rejected(Reason::IoFrameAsTable);
            refused!(
                &ft,
                update(&mut ft, &mut mem, table, 0, pte(io, 0)),
                Error::IoFrameAsTable {
                    gfn: Gfn(io),
                    level: lower
                },
                before
            );
        }
    }
    refused!(
        &ft,
        pin(&mut ft, &mut mem, Level::L1, 30),
        Error::IoFrameAsTable {
            gfn: Gfn(30),
            level: Level::L1
        },
        6
    );
    refused!(
        &ft,
        ext(&mut ft, &mut mem, MmuExtOp::NewBaseptr { gfn: Gfn(30) }),
        Error::IoFrameAsTable {
            gfn: Gfn(30),
            level: Level::L4
        },
        7
    );
    // An unvalidated table that links one fails its pin.
    mem.set_entry(Gfn(5), 9, pte(30, PTE_RW));
    refused!(
        &ft,
        pin(&mut ft, &mut mem, Level::L2, 5),
        Error::IoFrameAsTable {
            gfn: Gfn(30),
            level: Level::L1
        },
        8
    );
    assert_eq!(counts(&ft, 5), (PageType::None, 0, 0, false));
    // mmu_update never writes into an I/O frame.
    refused!(
        &ft,
        update(&mut ft, &mut mem, 30, 0, 1),
        Error::NotOwned { gfn: Gfn(30) },
        0
    );
    ok(&ft, &mem);
}

#[test]
fn io_ranges_only_cover_absent_frames_and_keep_them() {
    let (mut ft, _mem) = setup();
    ft.set_frame_class(Gfn(10), FrameClass::Absent).unwrap();
    for class in [
        FrameClass::Ram,
        FrameClass::Shared,
        FrameClass::ReadOnly,
        FrameClass::Reserved,
    ] {
        ft.set_frame_class(Gfn(11), class).unwrap();
        assert_eq!(
            ft.add_io_range(Gfn(10), 2),
            Err(Error::IoRangeOverlap {
                gfn: Gfn(11),
                class
            })
        );
        assert!(!ft.is_io_frame(Gfn(10)), "all or nothing");
    }
    ft.set_frame_class(Gfn(11), FrameClass::Absent).unwrap();
    // Straddling the end of the table is fine.
    ft.set_frame_class_range(Gfn(NR - 2), 2, FrameClass::Absent)
        .unwrap();
    ft.add_io_range(Gfn(NR - 2), 10).unwrap();
    ft.add_io_range(Gfn(10), 2).unwrap();
    assert_eq!(ft.add_io_range(Gfn(5), 0), Ok(()));
    assert_eq!(
        ft.set_frame_class(Gfn(10), FrameClass::Ram),
        Err(Error::IoRangeOverlap {
            gfn: Gfn(10),
            class: FrameClass::Ram
        })
    );
    assert_eq!(
        ft.set_frame_class_range(Gfn(9), 3, FrameClass::Shared)
            .map_err(|e| e.reason()),
        Err(Reason::IoRangeOverlap)
    );
    assert_eq!(info(&ft, 9).class, FrameClass::Ram);
    assert_eq!(ft.set_frame_class(Gfn(10), FrameClass::Absent), Ok(()));
    assert!(matches!(
        ft.add_io_range(Gfn(MAX_FRAMES - 1), 2),
        Err(Error::FrameOutOfRange { .. })
    ));
    assert!(matches!(
        ft.add_io_range(Gfn(u64::MAX), 2),
        Err(Error::FrameOutOfRange { .. })
    ));
    while ft.io_ranges().count() < MAX_IO_RANGES {
        ft.add_io_range(Gfn(NR + 1000), 1).unwrap();
    }
    assert_eq!(
        ft.add_io_range(Gfn(NR + 2000), 1),
        Err(Error::TooManyIoRanges { max: MAX_IO_RANGES })
    );
}

#[test]
fn pin_and_unpin_are_checked() {
    let (mut ft, mut mem) = setup();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    refused!(
        &ft,
        pin(&mut ft, &mut mem, Level::L1, 1),
        Error::AlreadyPinned { gfn: Gfn(1) },
        0
    );
    refused!(
        &ft,
        pin(&mut ft, &mut mem, Level::L2, 1),
        Error::AlreadyPinned { gfn: Gfn(1) },
        1
    );
    refused!(
        &ft,
        unpin(&mut ft, &mut mem, 2),
        Error::NotPinned { gfn: Gfn(2) },
        0
    );
    assert_eq!(counts(&ft, 1), (PageType::L1, 1, 1, true));
    unpin(&mut ft, &mut mem, 1).unwrap();
    refused!(
        &ft,
        unpin(&mut ft, &mut mem, 1),
        Error::NotPinned { gfn: Gfn(1) },
        1
    );
    assert_all_zero(&ft);
}

#[test]
fn unsupported_commands_are_refused() {
    let (mut ft, mut mem) = setup();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    for cmd in [mmu_cmd::MACHPHYS_UPDATE, 3, 4, 7] {
        let res = ft
            .mmu_update(
                &mut mem,
                &[MmuUpdate {
                    ptr: (1 << 12) | cmd,
                    val: pte(5, 0),
                }],
            )
            .result();
        assert_eq!(res, Err(Error::UnsupportedCommand { cmd }));
        assert_eq!(res.unwrap_err().errno(), -errno::ENOSYS);
    }
    assert_eq!(ft.stats().rejected(Reason::UnsupportedCommand), 4);
    // Unknown ext ops, as the guest lays them out.
    mem.set_entry(Gfn(8), 0, u64::from(13u32)); // MMUEXT_SET_LDT
    let out = ft.mmuext_op_in_guest(&mut mem, 0, 8 << 12, 1);
    assert_eq!(out.error, Some(Error::UnsupportedExtOp { cmd: 13 }));
    assert_eq!(out.done, 0);
    ok(&ft, &mem);
}

#[test]
fn invlpg_needs_a_canonical_address() {
    let (mut ft, mut mem) = setup();
    mem.set_entry(Gfn(8), 0, u64::from(ext_cmd::INVLPG_ALL));
    mem.set_entry(Gfn(8), 1, 0x0000_8000_0000_0000);
    let out = ft.mmuext_op_in_guest(&mut mem, 0, 8 << 12, 1);
    assert_eq!(
        out.error,
        Some(Error::NonCanonical {
            va: 0x0000_8000_0000_0000
        })
    );
    assert_eq!(ft.stats().rejected(Reason::NonCanonical), 1);
}

#[test]
fn oversized_batches_are_refused_whole() {
    let (mut ft, mut mem) = setup();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    let reqs = vec![MmuUpdate::normal(Gfn(1), 0, pte(5, 0)); MAX_BATCH + 1];
    let out = ft.mmu_update(&mut mem, &reqs);
    assert_eq!(out.done, 0);
    assert_eq!(
        out.error,
        Some(Error::BatchTooLarge {
            len: MAX_BATCH as u64 + 1,
            max: MAX_BATCH
        })
    );
    assert_eq!(out.errno(), -errno::E2BIG);
    assert_eq!(mem.entry(Gfn(1), 0), 0);
    // A hostile count in guest memory costs nothing either.
    let out = ft.mmu_update_in_guest(&mut mem, 0, u64::MAX);
    assert_eq!(
        out.error,
        Some(Error::BatchTooLarge {
            len: u64::MAX,
            max: MAX_BATCH
        })
    );
    let out = ft.mmuext_op_in_guest(&mut mem, 0, 0, 1_000_000);
    assert_eq!(
        out.error,
        Some(Error::BatchTooLarge {
            len: 1_000_000,
            max: MAX_BATCH
        })
    );
    assert_eq!(ft.stats().rejected(Reason::BatchTooLarge), 3);
    // The limit itself is fine.
    let out = ft.mmu_update(&mut mem, &reqs[..MAX_BATCH]);
    assert_eq!((out.done, out.error), (MAX_BATCH, None));
    assert_eq!(counts(&ft, 5), (PageType::None, 0, 1, false));
    ok(&ft, &mem);
}

#[test]
fn unreadable_tables_fail_validation_cleanly() {
    let (mut ft, mut mem) = setup();
    mem.set_entry(Gfn(2), 0, pte(1, 0));
    mem.set_entry(Gfn(1), 0, pte(5, PTE_RW));
    // The L1 below the L2 cannot be read: everything taken is given back.
    mem.fault_reads = Some(Gfn(1));
    assert_eq!(
        pin(&mut ft, &mut mem, Level::L2, 2),
        Err(Error::GuestMemory { gpa: 1 << 12 })
    );
    assert_eq!(Error::GuestMemory { gpa: 0 }.errno(), -errno::EFAULT);
    mem.fault_reads = None;
    assert_all_zero(&ft);
    ok(&ft, &mem);
}

#[test]
fn a_failed_write_gives_back_the_new_reference() {
    let (mut ft, mut mem) = setup();
    mem.set_entry(Gfn(1), 0, pte(5, PTE_RW));
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    mem.fault_writes = Some(Gfn(1));
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, pte(6, PTE_RW)),
        Error::GuestMemory { gpa: 1 << 12 },
        0,
    );
    mem.fault_writes = None;
    assert_eq!(counts(&ft, 5), (PageType::Writable, 1, 1, false));
    assert_eq!(counts(&ft, 6), (PageType::None, 0, 0, false));
    ok(&ft, &mem);
}

#[test]
fn guest_lists_must_be_readable_and_aligned() {
    let (mut ft, mut mem) = setup();
    let out = ft.mmu_update_in_guest(&mut mem, NR << 12, 1);
    assert_eq!(
        (out.done, out.error),
        (0, Some(Error::GuestMemory { gpa: NR << 12 }))
    );
    let out = ft.mmu_update_in_guest(&mut mem, 0x1004, 1);
    assert_eq!(out.error, Some(Error::GuestMemory { gpa: 0x1004 }));
    let out = ft.mmuext_op_in_guest(&mut mem, 0, u64::MAX - 7, 2);
    assert!(matches!(out.error, Some(Error::GuestMemory { .. })));
}

#[test]
fn reference_counts_never_overflow() {
    let (mut ft, mut mem) = setup();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    ft.frames[5].refs = u32::MAX;
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, pte(5, 0)),
        Error::RefOverflow { gfn: Gfn(5) },
        0
    );
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, pte(5, PTE_RW)),
        Error::RefOverflow { gfn: Gfn(5) },
        1
    );
    // The type reference taken on the way was dropped again.
    assert_eq!(ft.frames[5].type_count, 0);
    ft.frames[6].refs = 7;
    ft.frames[6].type_count = u32::MAX;
    ft.frames[6].ty = PageType::Writable;
    refused!(
        &ft,
        update(&mut ft, &mut mem, 1, 0, pte(6, PTE_RW)),
        Error::RefOverflow { gfn: Gfn(6) },
        2
    );
    assert_eq!(ft.frames[6].refs, 7);
    assert_eq!(mem.entry(Gfn(1), 0), 0);
}

#[test]
fn class_changes_must_fit_the_frames_use() {
    let (mut ft, mut mem) = setup();
    mem.set_entry(Gfn(1), 0, pte(5, PTE_RW));
    mem.set_entry(Gfn(1), 1, pte(6, 0));
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    let in_use = |gfn, class| {
        Err(Error::FrameInUse {
            gfn: Gfn(gfn),
            class,
        })
    };
    // Writable 5 may become shared but not read-only or absent.
    assert_eq!(
        ft.set_frame_class(Gfn(5), FrameClass::ReadOnly),
        in_use(5, FrameClass::ReadOnly)
    );
    assert_eq!(
        ft.set_frame_class(Gfn(5), FrameClass::Absent),
        in_use(5, FrameClass::Absent)
    );
    ft.set_frame_class(Gfn(5), FrameClass::Shared).unwrap();
    // Read-only mapped 6 may become read-only, not reserved.
    ft.set_frame_class(Gfn(6), FrameClass::ReadOnly).unwrap();
    assert_eq!(
        ft.set_frame_class(Gfn(6), FrameClass::Reserved),
        in_use(6, FrameClass::Reserved)
    );
    // Table 1 may not become shared.
    assert_eq!(
        ft.set_frame_class(Gfn(1), FrameClass::Shared),
        in_use(1, FrameClass::Shared)
    );
    assert_eq!(
        Error::FrameInUse {
            gfn: Gfn(1),
            class: FrameClass::Shared
        }
        .errno(),
        -errno::EBUSY
    );
    // A range is changed whole or not at all.
    assert_eq!(
        ft.set_frame_class_range(Gfn(3), 4, FrameClass::Absent),
        in_use(5, FrameClass::Absent)
    );
    assert_eq!(info(&ft, 3).class, FrameClass::Ram);
    ft.set_frame_class_range(Gfn(10), 22, FrameClass::Absent)
        .unwrap();
    let beyond = Err(Error::FrameOutOfRange {
        gfn: Gfn(NR),
        nr_frames: NR,
    });
    assert_eq!(
        ft.set_frame_class_range(Gfn(10), 23, FrameClass::Ram),
        beyond
    );
    assert_eq!(
        ft.set_frame_class_range(Gfn(10), u64::MAX, FrameClass::Ram),
        beyond
    );
    assert_eq!(
        ft.set_frame_class_range(Gfn(NR + 3), 1, FrameClass::Ram),
        Err(Error::FrameOutOfRange {
            gfn: Gfn(NR + 3),
            nr_frames: NR
        })
    );
    assert_eq!(info(&ft, 31).class, FrameClass::Absent);
    ok(&ft, &mem);
}

#[test]
fn vcpus_are_checked() {
    let (mut ft, mut mem) = setup();
    let out = ft.mmuext_op(&mut mem, 2, &[MmuExtOp::TlbFlushLocal]);
    assert_eq!(
        (out.done, out.error),
        (0, Some(Error::InvalidVcpu { vcpu: 2 }))
    );
    assert_eq!(ft.base_pointer(2), None);
}

#[test]
fn frame_tables_beyond_52_bit_addresses_are_refused() {
    let err = FrameTable::new(Config::new(MAX_FRAMES + 1, 1)).unwrap_err();
    assert_eq!(
        err,
        Error::FrameTableTooLarge {
            nr_frames: MAX_FRAMES + 1
        }
    );
    assert_eq!(err.errno(), -errno::ENOMEM);
}

#[test]
fn updates_swap_references() {
    let (mut ft, mut mem) = setup();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    update(&mut ft, &mut mem, 1, 0, pte(5, PTE_RW)).unwrap();
    assert_eq!(counts(&ft, 5), (PageType::Writable, 1, 1, false));
    // Writable to read-only drops the type, keeps a reference.
    update(&mut ft, &mut mem, 1, 0, pte(5, 0)).unwrap();
    assert_eq!(counts(&ft, 5), (PageType::None, 0, 1, false));
    // To another frame.
    update(&mut ft, &mut mem, 1, 0, pte(6, PTE_RW)).unwrap();
    assert_eq!(counts(&ft, 5), (PageType::None, 0, 0, false));
    assert_eq!(counts(&ft, 6), (PageType::Writable, 1, 1, false));
    update(&mut ft, &mut mem, 1, 0, 0).unwrap();
    assert_eq!(counts(&ft, 6), (PageType::None, 0, 0, false));
    assert_eq!(ft.stats().updates_applied, 4);
    ok(&ft, &mem);
}

#[test]
fn rewriting_an_entry_with_the_same_frame_keeps_everything() {
    let (mut ft, mut mem) = setup();
    tree(&mut mem);
    pin(&mut ft, &mut mem, Level::L4, 1).unwrap();
    let validated = ft.stats().tables_validated;
    // The L2 entry holds the only reference to L1 4; rewriting it must not
    // release and revalidate the L1.
    update(&mut ft, &mut mem, 3, 0, pte(4, PTE_RW | PTE_A)).unwrap();
    update(&mut ft, &mut mem, 2, 0, pte(3, PTE_US)).unwrap();
    assert_eq!(ft.stats().tables_validated, validated);
    assert_eq!(ft.stats().tables_released, 0);
    // The same for a writable mapping held only once.
    update(&mut ft, &mut mem, 4, 0, pte(5, PTE_RW | PTE_D)).unwrap();
    assert_eq!(counts(&ft, 4), (PageType::L1, 1, 1, false));
    assert_eq!(counts(&ft, 5), (PageType::Writable, 1, 1, false));
    ok(&ft, &mem);
}

#[test]
fn the_new_reference_is_taken_before_the_old_one_is_dropped() {
    let (mut ft, mut mem) = setup();
    // L2 2 -> L1 3. L1 4 maps 3 writable: linking 4 in place of 3 needs 3
    // writable while the entry still holds it as an L1, so it is refused.
    mem.set_entry(Gfn(2), 0, pte(3, 0));
    mem.set_entry(Gfn(4), 0, pte(3, PTE_RW));
    pin(&mut ft, &mut mem, Level::L2, 2).unwrap();
    assert_eq!(
        update(&mut ft, &mut mem, 2, 0, pte(4, 0)),
        Err(Error::TypeConflict {
            gfn: Gfn(3),
            current: PageType::L1,
            wanted: PageType::Writable
        })
    );
    // Unlinking first, then linking, works.
    update(&mut ft, &mut mem, 2, 0, 0).unwrap();
    update(&mut ft, &mut mem, 2, 0, pte(4, 0)).unwrap();
    assert_eq!(counts(&ft, 3), (PageType::Writable, 1, 1, false));
    ok(&ft, &mem);
}

#[test]
fn preserve_ad_keeps_the_accessed_and_dirty_bits_of_the_old_entry() {
    let (mut ft, mut mem) = setup();
    mem.set_entry(Gfn(1), 0, pte(5, PTE_RW | PTE_A | PTE_D));
    mem.set_entry(Gfn(1), 1, pte(5, PTE_RW | PTE_A | PTE_D));
    mem.set_entry(Gfn(1), 2, PTE_A | PTE_D); // not present
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    let reqs = [
        MmuUpdate::preserve_ad(Gfn(1), 0, pte(6, 0)),
        MmuUpdate::normal(Gfn(1), 1, pte(6, 0)),
        MmuUpdate::preserve_ad(Gfn(1), 2, pte(6, 0)),
    ];
    assert_eq!(ft.mmu_update(&mut mem, &reqs).result(), Ok(()));
    assert_eq!(mem.entry(Gfn(1), 0), pte(6, PTE_A | PTE_D));
    assert_eq!(mem.entry(Gfn(1), 1), pte(6, 0));
    // Bits of a non-present old entry are not accessed/dirty bits.
    assert_eq!(mem.entry(Gfn(1), 2), pte(6, 0));
    // A non-present new value is stored as given.
    ft.mmu_update(&mut mem, &[MmuUpdate::preserve_ad(Gfn(1), 0, 0x5000)])
        .result()
        .unwrap();
    assert_eq!(mem.entry(Gfn(1), 0), 0x5000);
    assert_eq!(counts(&ft, 5), (PageType::None, 0, 0, false));
    assert_eq!(counts(&ft, 6), (PageType::None, 0, 2, false));
    ok(&ft, &mem);
}

/// A memory whose CPU sets accessed and dirty bits at the worst moment.
struct RacingCpu {
    mem: VecMemory,
    races: u32,
}

impl PageTableMemory for RacingCpu {
    fn read_u64(&self, gpa: u64) -> Result<u64, MemoryFault> {
        self.mem.read_u64(gpa)
    }
    fn write_u64(&mut self, gpa: u64, value: u64) -> Result<(), MemoryFault> {
        self.mem.write_u64(gpa, value)
    }
    fn compare_exchange_u64(
        &mut self,
        gpa: u64,
        current: u64,
        new: u64,
    ) -> Result<u64, MemoryFault> {
        if self.races > 0 {
            // The CPU sets A, then D, between the read and the exchange.
            self.races -= 1;
            let e = self.mem.read_u64(gpa)?;
            let bit = if e & PTE_A == 0 { PTE_A } else { PTE_D };
            self.mem.write_u64(gpa, e | bit)?;
        }
        let old = self.mem.read_u64(gpa)?;
        if old == current {
            self.mem.write_u64(gpa, new)?;
        }
        Ok(old)
    }
    fn flush_tlbs(&mut self) {}
}

#[test]
fn preserve_ad_retries_when_the_cpu_sets_bits_meanwhile() {
    let (mut ft, mem) = setup();
    let mut m = RacingCpu { mem, races: 2 };
    m.mem.set_entry(Gfn(1), 0, pte(5, PTE_RW));
    ft.mmuext_op(
        &mut m,
        0,
        &[MmuExtOp::Pin {
            level: Level::L1,
            gfn: Gfn(1),
        }],
    )
    .result()
    .unwrap();
    ft.mmu_update(&mut m, &[MmuUpdate::preserve_ad(Gfn(1), 0, pte(6, PTE_RW))])
        .result()
        .unwrap();
    assert_eq!(m.mem.entry(Gfn(1), 0), pte(6, PTE_RW | PTE_A | PTE_D));
    assert_eq!(counts(&ft, 5), (PageType::None, 0, 0, false));
    assert_eq!(counts(&ft, 6), (PageType::Writable, 1, 1, false));
    ok(&ft, &m.mem);
}

#[test]
fn batches_stop_at_the_first_error_and_report_progress() {
    let (mut ft, mut mem) = setup();
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    let reqs = [
        MmuUpdate::normal(Gfn(1), 0, pte(5, PTE_RW)),
        MmuUpdate::normal(Gfn(1), 1, pte(6, 0)),
        MmuUpdate::normal(Gfn(1), 2, pte(7, PTE_G | PTE_PCD)),
        MmuUpdate::normal(Gfn(1), 3, pte(8, 0)),
    ];
    let out = ft.mmu_update(&mut mem, &reqs);
    assert_eq!(out.done, 2);
    assert_eq!(out.errno(), -errno::EINVAL);
    assert!(matches!(
        out.error,
        Some(Error::DisallowedBits { bits: PTE_PCD, .. })
    ));
    assert_eq!(mem.entry(Gfn(1), 1), pte(6, 0));
    assert_eq!(mem.entry(Gfn(1), 2), 0);
    assert_eq!(mem.entry(Gfn(1), 3), 0);
    assert_eq!(counts(&ft, 8), (PageType::None, 0, 0, false));
    assert_eq!(ft.stats().updates_applied, 2);
    assert_eq!(ft.stats().rejected_total(), 1);
    ok(&ft, &mem);
}

#[test]
fn ext_batches_return_the_effects_of_what_was_done() {
    let (mut ft, mut mem) = setup();
    tree(&mut mem);
    let ops = [
        MmuExtOp::InvlpgLocal { va: 0x1000 },
        MmuExtOp::InvlpgLocal { va: 0x1000 },
        MmuExtOp::InvlpgAll { va: 0x2000 },
        MmuExtOp::NewBaseptr { gfn: Gfn(1) },
        MmuExtOp::Unpin { gfn: Gfn(1) },
        MmuExtOp::TlbFlushAll,
    ];
    let out = ft.mmuext_op(&mut mem, 1, &ops);
    assert_eq!(out.done, 4);
    assert_eq!(out.error, Some(Error::NotPinned { gfn: Gfn(1) }));
    assert_eq!(
        out.effects,
        Effects {
            flush_local: Flush::Page(0x1000),
            flush_all: Flush::Page(0x2000),
            new_base: Some(Gfn(1))
        }
    );
    assert_eq!(ft.base_pointer(1), Some(Gfn(1)));
    assert_eq!(ft.base_pointer(0), None);
    ok(&ft, &mem);
}

#[test]
fn base_pointers_hold_their_l4_and_release_the_old_one() {
    let (mut ft, mut mem) = setup();
    tree(&mut mem);
    mem.set_entry(Gfn(10), 0, pte(2, 0)); // a second L4 sharing the L3
    ext(&mut ft, &mut mem, MmuExtOp::NewBaseptr { gfn: Gfn(1) }).unwrap();
    assert_eq!(counts(&ft, 1), (PageType::L4, 1, 1, false));
    // The same base again is fine.
    ext(&mut ft, &mut mem, MmuExtOp::NewBaseptr { gfn: Gfn(1) }).unwrap();
    assert_eq!(counts(&ft, 1), (PageType::L4, 1, 1, false));
    // Switching keeps the shared L3 alive throughout.
    ext(&mut ft, &mut mem, MmuExtOp::NewBaseptr { gfn: Gfn(10) }).unwrap();
    assert_eq!(counts(&ft, 1), (PageType::None, 0, 0, false));
    assert_eq!(counts(&ft, 2), (PageType::L3, 1, 1, false));
    assert_eq!(ft.stats().tables_released, 1);
    // A base that is pinned and then unpinned stays typed.
    pin(&mut ft, &mut mem, Level::L4, 10).unwrap();
    unpin(&mut ft, &mut mem, 10).unwrap();
    assert_eq!(counts(&ft, 10), (PageType::L4, 1, 1, false));
    // Only L4 tables can be bases.
    assert_eq!(
        ext(&mut ft, &mut mem, MmuExtOp::NewBaseptr { gfn: Gfn(3) }),
        Err(Error::TypeConflict {
            gfn: Gfn(3),
            current: PageType::L2,
            wanted: PageType::L4
        })
    );
    ok(&ft, &mem);
}

#[test]
fn teardown_returns_every_count_to_zero() {
    let (mut ft, mut mem) = setup();
    tree(&mut mem);
    mem.set_entry(Gfn(4), 2, pte(1, 0)); // the L1 maps the L4 read-only
    mem.set_entry(Gfn(12), 0, pte(13, PTE_RW));
    ext(&mut ft, &mut mem, MmuExtOp::NewBaseptr { gfn: Gfn(1) }).unwrap();
    ft.mmuext_op(&mut mem, 1, &[MmuExtOp::NewBaseptr { gfn: Gfn(1) }])
        .result()
        .unwrap();
    pin(&mut ft, &mut mem, Level::L2, 3).unwrap();
    pin(&mut ft, &mut mem, Level::L1, 12).unwrap();
    assert_eq!(counts(&ft, 1), (PageType::L4, 2, 3, false));
    ok(&ft, &mem);
    ft.teardown(&mut mem);
    assert_all_zero(&ft);
    assert_eq!(ft.base_pointer(0), None);
    ok(&ft, &mem);
}

#[test]
fn retyping_a_frame_that_was_writable_flushes_first() {
    let (mut ft, mut mem) = setup();
    mem.set_entry(Gfn(1), 0, pte(5, PTE_RW));
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    update(&mut ft, &mut mem, 1, 0, 0).unwrap();
    assert_eq!(mem.flushes, 0);
    // 5 may still be writable through a stale TLB entry.
    pin(&mut ft, &mut mem, Level::L1, 5).unwrap();
    assert_eq!(mem.flushes, 1);
    assert_eq!(ft.stats().retype_flushes, 1);
    // Same type again: nothing stale can hurt.
    unpin(&mut ft, &mut mem, 5).unwrap();
    pin(&mut ft, &mut mem, Level::L1, 5).unwrap();
    assert_eq!(mem.flushes, 1);
    // A table that goes back to being writable needs a flush too.
    unpin(&mut ft, &mut mem, 5).unwrap();
    update(&mut ft, &mut mem, 1, 0, pte(5, PTE_RW)).unwrap();
    assert_eq!(mem.flushes, 2);
    // A flush the hypervisor reports spares the next one.
    update(&mut ft, &mut mem, 1, 0, 0).unwrap();
    ft.note_tlbs_flushed();
    pin(&mut ft, &mut mem, Level::L2, 5).unwrap();
    assert_eq!(mem.flushes, 2);
    // Frames only ever mapped read-only need none.
    update(&mut ft, &mut mem, 1, 1, pte(6, 0)).unwrap();
    update(&mut ft, &mut mem, 1, 1, 0).unwrap();
    pin(&mut ft, &mut mem, Level::L1, 6).unwrap();
    assert_eq!(mem.flushes, 2);
    ok(&ft, &mem);
}

#[test]
fn the_flush_epoch_survives_wrapping() {
    let (mut ft, mut mem) = setup();
    ft.flush_epoch = u32::MAX;
    mem.set_entry(Gfn(1), 0, pte(5, PTE_RW));
    pin(&mut ft, &mut mem, Level::L1, 1).unwrap();
    update(&mut ft, &mut mem, 1, 0, 0).unwrap();
    assert_eq!(ft.frames[5].dropped_at, u32::MAX);
    pin(&mut ft, &mut mem, Level::L1, 5).unwrap();
    assert_eq!(mem.flushes, 1);
    assert_eq!(ft.flush_epoch, 1);
    assert!(ft.frames.iter().all(|f| f.dropped_at == 0));
    ok(&ft, &mem);
    // After the wrap a drop is stale again, and a retype flushes.
    unpin(&mut ft, &mut mem, 5).unwrap();
    update(&mut ft, &mut mem, 1, 0, pte(5, PTE_RW)).unwrap();
    assert_eq!(mem.flushes, 2);
}

#[test]
fn requests_can_be_read_from_guest_memory() {
    let (mut ft, mut mem) = setup();
    ft.set_frame_class(Gfn(20), FrameClass::Shared).unwrap();
    // Ops list in frame 20: pin L1 1 (padding in the command word is
    // ignored), new base 2 (fails: 2 is no L4 once pinned as L1 below).
    mem.set_entry(
        Gfn(20),
        0,
        0xffff_ffff_0000_0000 | u64::from(ext_cmd::PIN_L1_TABLE),
    );
    mem.set_entry(Gfn(20), 1, 1);
    mem.set_entry(Gfn(20), 3, u64::from(ext_cmd::TLB_FLUSH_LOCAL));
    mem.set_entry(Gfn(20), 6, u64::from(ext_cmd::NEW_BASEPTR));
    mem.set_entry(Gfn(20), 7, 1);
    let out = ft.mmuext_op_in_guest(&mut mem, 0, 20 << 12, 3);
    assert_eq!(out.done, 2);
    assert_eq!(
        out.error,
        Some(Error::TypeConflict {
            gfn: Gfn(1),
            current: PageType::L1,
            wanted: PageType::L4
        })
    );
    assert_eq!(out.effects.flush_local, Flush::Full);
    // Updates list in frame 21.
    let reqs = [
        MmuUpdate::normal(Gfn(1), 0, pte(5, PTE_RW)),
        MmuUpdate::normal(Gfn(1), 1, pte(NR, 0)),
    ];
    for (i, r) in reqs.iter().enumerate() {
        mem.set_entry(Gfn(21), 2 * i, r.ptr);
        mem.set_entry(Gfn(21), 2 * i + 1, r.val);
    }
    let out = ft.mmu_update_in_guest(&mut mem, 21 << 12, 2);
    assert_eq!(out.done, 1);
    assert_eq!(
        out.error,
        Some(Error::FrameOutOfRange {
            gfn: Gfn(NR),
            nr_frames: NR
        })
    );
    assert_eq!(mem.entry(Gfn(1), 0), pte(5, PTE_RW));
    ok(&ft, &mem);
}

#[test]
fn the_invariant_check_notices_broken_counts() {
    let (mut ft, mut mem) = setup();
    tree(&mut mem);
    pin(&mut ft, &mut mem, Level::L4, 1).unwrap();
    ok(&ft, &mem);
    let mut broken = ft.clone();
    broken.frames[6].refs += 1;
    assert!(broken
        .check_invariants(&mem)
        .unwrap_err()
        .to_string()
        .contains("frame 0x6 has a reference count of 2"));
    let mut broken = ft.clone();
    broken.frames[4].type_count = 2;
    broken.frames[4].refs = 2;
    assert!(broken.check_invariants(&mem).is_err());
    // A table changed behind the validator's back.
    let mut m = mem.clone();
    m.set_entry(Gfn(4), 0, pte(4, PTE_RW));
    assert!(ft.check_invariants(&m).is_err());
    m.set_entry(Gfn(4), 0, pte(5, PTE_RW | (1 << 60)));
    assert!(ft
        .check_invariants(&m)
        .unwrap_err()
        .to_string()
        .contains("invalid"));
    let mut broken = ft.clone();
    broken.frames[9].class = FrameClass::Absent;
    broken.frames[5].class = FrameClass::ReadOnly;
    assert!(broken.check_invariants(&mem).is_err());
}

#[test]
fn stats_count_rejections_by_reason() {
    let (mut ft, mut mem) = setup();
    let _ = pin(&mut ft, &mut mem, Level::L1, NR);
    let _ = unpin(&mut ft, &mut mem, 1);
    let _ = unpin(&mut ft, &mut mem, 1);
    let counted: Vec<(&str, u64)> = ft
        .stats()
        .rejections()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.name(), n))
        .collect();
    assert_eq!(counted, [("frame_out_of_range", 1), ("not_pinned", 2)]);
}

#[test]
fn a_validated_address_space_walks_clean() {
    let (mut ft, mut mem) = setup();
    tree(&mut mem);
    pin(&mut ft, &mut mem, Level::L4, 1).unwrap();
    let walk = ft.check_address_space(&mem, Gfn(1), 10);
    assert!(walk.is_clean(), "{walk:?}");
    assert_eq!(walk.tables, 4);
    // I/O frames mapped from an L1 are fine too.
    ft.add_io_range(Gfn(NR), 1).unwrap();
    update(&mut ft, &mut mem, 4, 2, pte(NR, PTE_RW | PTE_PCD)).unwrap();
    assert!(ft.check_address_space(&mem, Gfn(1), 10).is_clean());
}

#[test]
fn an_unvalidated_address_space_is_found_out() {
    let (ft, mut mem) = setup();
    tree(&mut mem);
    // Nothing pinned: every table is unvalidated, and the writable leaf
    // has no writable type.
    let walk = ft.check_address_space(&mem, Gfn(1), 10);
    assert_eq!(walk.tables, 4);
    assert_eq!(walk.total, 5, "{walk:#?}");
    assert!(
        walk.findings[0].starts_with(
            "the root is L4 table 0x1, which is not validated as one (it is an untyped page"
        ),
        "{walk:#?}"
    );
    assert!(
        walk.findings
            .iter()
            .any(|f| f.contains("maps frame 0x5: an untyped page, writable")),
        "{walk:#?}"
    );
    // The limit bounds the list, not the count.
    let walk = ft.check_address_space(&mem, Gfn(1), 2);
    assert_eq!((walk.findings.len(), walk.total), (2, 5));
    // A root outside the table.
    assert_eq!(ft.check_address_space(&mem, Gfn(NR + 1), 10).total, 1);
}

#[test]
fn entries_written_behind_the_validators_back_are_found() {
    let (mut ft, mut mem) = setup();
    tree(&mut mem);
    pin(&mut ft, &mut mem, Level::L4, 1).unwrap();
    // As a guest with CR0.WP clear could: a writable mapping of the L2,
    // a protection key, and a link to a data frame.
    mem.set_entry(Gfn(4), 3, pte(3, PTE_RW));
    mem.set_entry(Gfn(4), 4, pte(6, 1 << 59));
    mem.set_entry(Gfn(3), 5, pte(7, PTE_RW));
    let walk = ft.check_address_space(&mem, Gfn(1), 10);
    assert_eq!(walk.total, 3, "{walk:#?}");
    assert!(
        walk.findings
            .iter()
            .any(|f| f.contains("maps frame 0x3: an L2 page table, writable")),
        "{walk:#?}"
    );
    assert!(
        walk.findings
            .iter()
            .any(|f| f.contains("is invalid: L1 entry")),
        "{walk:#?}"
    );
    assert!(
        walk.findings
            .iter()
            .any(|f| f.contains("is L1 table 0x7, which is not validated")),
        "{walk:#?}"
    );
    // The count check sees them too.
    assert!(ft.check_invariants(&mem).is_err());
}

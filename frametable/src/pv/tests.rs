//! The PV glue against the real frame table: validation through pins and
//! typed gets, `mmu_update` through [`TableOracle`], preemption, failure.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use core::sync::atomic::{AtomicU64, Ordering};
use std::vec::Vec;

use hvmem_pagetable::pv::{
    EntryError, MmuUpdate, PvConfig, PvLevel, UpdateError, XEN_L4_SLOTS, mmu_update,
};
use hvmem_pagetable::{PhysMem, SliceMem};
use hvmem_types::{DomId, FrameRange, Mfn, PhysAddr};

use super::PvValidator;
use crate::{FrameError, FrameInfo, FrameTable, FrameType, InvalidEntry, Owner, PutOutcome};

const P: u64 = 1;
const RW: u64 = 2;
const PSE: u64 = 1 << 7;
const D1: Owner = Owner::Domain(DomId::new(1));
const D2: Owner = Owner::Domain(DomId::new(2));
const FRAMES: usize = 12;

fn arena() -> Vec<AtomicU64> {
    (0..FRAMES * 512).map(|_| AtomicU64::new(0)).collect()
}

fn write(mem: &SliceMem<'_>, table: u64, index: usize, raw: u64) {
    mem.table(PhysAddr::new(table << 12), 512).unwrap()[index].store(raw, Ordering::Relaxed);
}

fn mfn(n: u64) -> Mfn {
    Mfn::new(n)
}

/// (general refs, type refs, type, validated)
fn state(table: &FrameTable<'_>, n: u64) -> (u64, u64, FrameType, bool) {
    let s = table.state(mfn(n)).unwrap();
    (s.refs, s.type_refs, s.frame_type, s.validated)
}

/// Frames 0..=9 are D1's, 10 and 11 D2's. Frame 0 holds an L4 whose entry 0
/// points at an L3 (1), then an L2 (2), then an L1 (3) that maps frame 4
/// writable and frame 5 read-only.
fn build<'a>(frames: &'a [FrameInfo], mem: &SliceMem<'_>) -> FrameTable<'a> {
    let table =
        FrameTable::new(frames, &[FrameRange::new(mfn(0), FRAMES as u64).unwrap()]).unwrap();
    for n in 0..10 {
        table.assign(mfn(n), D1).unwrap();
    }
    table.assign(mfn(10), D2).unwrap();
    table.assign(mfn(11), D2).unwrap();
    write(mem, 0, 0, (1 << 12) | P | RW);
    write(mem, 1, 0, (2 << 12) | P | RW);
    write(mem, 2, 0, (3 << 12) | P | RW);
    write(mem, 3, 0, (4 << 12) | P | RW);
    write(mem, 3, 1, (5 << 12) | P);
    table
}

fn config() -> PvConfig {
    PvConfig::new(46).unwrap()
}

#[test]
fn pinning_an_l4_validates_the_hierarchy_through_the_frame_table() {
    let frames: [FrameInfo; FRAMES] = Default::default();
    let words = arena();
    let mem = SliceMem::new(PhysAddr::new(0), &words);
    let table = build(&frames, &mem);
    let v = PvValidator::new(&mem, config());
    table.pin(mfn(0), D1, FrameType::L4, &v).unwrap();
    assert_eq!(state(&table, 0), (2, 1, FrameType::L4, true));
    assert_eq!(state(&table, 1), (2, 1, FrameType::L3, true));
    assert_eq!(state(&table, 2), (2, 1, FrameType::L2, true));
    assert_eq!(state(&table, 3), (2, 1, FrameType::L1, true));
    assert_eq!(state(&table, 4), (2, 1, FrameType::Writable, true));
    assert_eq!((state(&table, 5).0, state(&table, 5).1), (2, 0));
    // Unpinning the root de-validates the whole hierarchy.
    let _ = table.unpin(mfn(0), D1, &v).unwrap();
    for n in 0..=5 {
        let (refs, type_refs, _, _) = state(&table, n);
        assert_eq!((refs, type_refs), (1, 0), "frame {n}");
    }
    assert_eq!(table.release(mfn(4), D1), Ok(PutOutcome::Freed));
}

#[test]
fn frame_mapped_writable_cannot_be_pinned_as_a_page_table() {
    let frames: [FrameInfo; FRAMES] = Default::default();
    let words = arena();
    let mem = SliceMem::new(PhysAddr::new(0), &words);
    let table = build(&frames, &mem);
    let v = PvValidator::new(&mem, config());
    table.pin(mfn(3), D1, FrameType::L1, &v).unwrap();
    assert!(matches!(
        table.pin(mfn(4), D1, FrameType::L1, &v),
        Err(FrameError::TypeConflict {
            held: FrameType::Writable,
            ..
        })
    ));
    // And a table in use cannot be mapped writable by another L1.
    write(&mem, 6, 0, (3 << 12) | P | RW);
    assert_eq!(
        table.pin(mfn(6), D1, FrameType::L1, &v),
        Err(FrameError::Invalid {
            mfn: mfn(6),
            entry: InvalidEntry { index: 0 }
        })
    );
    assert_eq!(
        state(&table, 3).0,
        2,
        "the failed pin left nothing on frame 3"
    );
}

#[test]
fn l1_entry_cannot_map_a_page_table_writable_through_mmu_update() {
    let frames: [FrameInfo; FRAMES] = Default::default();
    let words = arena();
    let mem = SliceMem::new(PhysAddr::new(0), &words);
    let table = build(&frames, &mem);
    let v = PvValidator::new(&mem, config());
    table.pin(mfn(0), D1, FrameType::L4, &v).unwrap();
    let oracle = v.oracle(&table);
    let batch = [
        MmuUpdate {
            ptr: (3 << 12) | 16,
            val: (6 << 12) | P | RW,
        },
        MmuUpdate {
            ptr: (3 << 12) | 24,
            val: (2 << 12) | P | RW,
        },
    ];
    let err = mmu_update(&mem, &oracle, v.config(), D1, &batch).unwrap_err();
    assert_eq!(err.done, 1);
    assert_eq!(
        err.error,
        UpdateError::Entry(EntryError::WritablePageTable { mfn: mfn(2) })
    );
    assert_eq!(state(&table, 6), (2, 1, FrameType::Writable, true));
    assert_eq!(state(&table, 2), (2, 1, FrameType::L2, true), "unchanged");
    // The table frames themselves were held only during the batch.
    assert_eq!(state(&table, 3), (2, 1, FrameType::L1, true));
}

#[test]
fn mmu_update_retargeting_an_l2_entry_validates_the_new_l1_and_devalidates_the_old() {
    let frames: [FrameInfo; FRAMES] = Default::default();
    let words = arena();
    let mem = SliceMem::new(PhysAddr::new(0), &words);
    let table = build(&frames, &mem);
    let v = PvValidator::new(&mem, config());
    table.pin(mfn(0), D1, FrameType::L4, &v).unwrap();
    write(&mem, 7, 9, (8 << 12) | P | RW);
    let oracle = v.oracle(&table);
    let batch = [MmuUpdate {
        ptr: 2 << 12,
        val: (7 << 12) | P | RW,
    }];
    assert_eq!(mmu_update(&mem, &oracle, v.config(), D1, &batch), Ok(1));
    assert_eq!(state(&table, 7), (2, 1, FrameType::L1, true));
    assert_eq!(state(&table, 8), (2, 1, FrameType::Writable, true));
    // The old L1 lost its last type reference: de-validated, its entries'
    // references dropped.
    assert_eq!((state(&table, 3).0, state(&table, 3).1), (1, 0));
    assert_eq!((state(&table, 4).0, state(&table, 4).1), (1, 0));
    assert_eq!((state(&table, 5).0, state(&table, 5).1), (1, 0));
}

#[test]
fn foreign_frames_and_foreign_tables_are_refused() {
    let frames: [FrameInfo; FRAMES] = Default::default();
    let words = arena();
    let mem = SliceMem::new(PhysAddr::new(0), &words);
    let table = build(&frames, &mem);
    let v = PvValidator::new(&mem, config());
    table.pin(mfn(3), D1, FrameType::L1, &v).unwrap();
    table.pin(mfn(11), D2, FrameType::L1, &v).unwrap();
    let oracle = v.oracle(&table);
    let map_foreign = [MmuUpdate {
        ptr: (3 << 12) | 16,
        val: (10 << 12) | P,
    }];
    assert_eq!(
        mmu_update(&mem, &oracle, v.config(), D1, &map_foreign)
            .unwrap_err()
            .error,
        UpdateError::Entry(EntryError::ForeignFrame { mfn: mfn(10) })
    );
    let write_foreign_table = [MmuUpdate {
        ptr: 11 << 12,
        val: (4 << 12) | P,
    }];
    assert_eq!(
        mmu_update(&mem, &oracle, v.config(), D1, &write_foreign_table)
            .unwrap_err()
            .error,
        UpdateError::TableNotOwned { table: mfn(11) }
    );
    let beyond_the_table = [MmuUpdate {
        ptr: (3 << 12) | 16,
        val: (500 << 12) | P,
    }];
    assert_eq!(
        mmu_update(&mem, &oracle, v.config(), D1, &beyond_the_table)
            .unwrap_err()
            .error,
        UpdateError::Entry(EntryError::ForeignFrame { mfn: mfn(500) })
    );
}

#[test]
fn preempted_validation_resumes_on_the_next_pin() {
    let frames: [FrameInfo; FRAMES] = Default::default();
    let words = arena();
    let mem = SliceMem::new(PhysAddr::new(0), &words);
    let table = build(&frames, &mem);
    write(&mem, 7, 0, (8 << 12) | P);
    write(&mem, 7, 300, (9 << 12) | P | RW);
    let v = PvValidator::new(&mem, config()).with_budget(200);
    assert_eq!(
        table.pin(mfn(7), D1, FrameType::L1, &v),
        Err(FrameError::Preempted { mfn: mfn(7) })
    );
    assert_eq!(
        table.pin(mfn(7), D1, FrameType::L1, &v),
        Err(FrameError::Preempted { mfn: mfn(7) })
    );
    table.pin(mfn(7), D1, FrameType::L1, &v).unwrap();
    assert_eq!(state(&table, 7), (2, 1, FrameType::L1, true));
    assert_eq!(state(&table, 8).0, 2);
    assert_eq!(state(&table, 9), (2, 1, FrameType::Writable, true));
}

/// XSA-148 through the frame table: an L2 with PSE set never validates.
#[test]
fn xsa_148_l2_with_a_superpage_entry_fails_validation_and_holds_nothing() {
    let frames: [FrameInfo; FRAMES] = Default::default();
    let words = arena();
    let mem = SliceMem::new(PhysAddr::new(0), &words);
    let table = build(&frames, &mem);
    let v = PvValidator::new(&mem, config()).with_budget(3);
    write(&mem, 2, 1, (8 << 12) | P | RW | PSE);
    // Entry 0's L1 validates a few entries per call, preempting the L2 each
    // time; then entry 1 fails.
    let mut calls = 0;
    let result = loop {
        calls += 1;
        match table.pin(mfn(2), D1, FrameType::L2, &v) {
            Err(FrameError::Preempted { .. }) if calls < 1000 => {}
            other => break other,
        }
    };
    assert!(
        calls > 100,
        "{calls}: the nested L1 validation was preempted too"
    );
    assert_eq!(
        result,
        Err(FrameError::Invalid {
            mfn: mfn(2),
            entry: InvalidEntry { index: 1 }
        })
    );
    for n in [2, 3, 4, 5, 8] {
        let (refs, type_refs, _, _) = state(&table, n);
        assert_eq!((refs, type_refs), (1, 0), "frame {n}");
    }
}

#[test]
fn xen_l4_slots_hold_no_references() {
    let frames: [FrameInfo; FRAMES] = Default::default();
    let words = arena();
    let mem = SliceMem::new(PhysAddr::new(0), &words);
    let table = build(&frames, &mem);
    let v = PvValidator::new(&mem, config());
    // The hypervisor's own entry in slot 256 (here: garbage) is not the guest's.
    write(&mem, 0, XEN_L4_SLOTS.start as usize, (10 << 12) | P | PSE);
    table.pin(mfn(0), D1, FrameType::L4, &v).unwrap();
    assert_eq!(state(&table, 10).0, 1);
    let oracle = v.oracle(&table);
    let batch = [MmuUpdate {
        ptr: 256 * 8,
        val: 0,
    }];
    assert_eq!(
        mmu_update(&mem, &oracle, v.config(), D1, &batch)
            .unwrap_err()
            .error,
        UpdateError::XenSlot { index: 256 }
    );
    let _ = table.unpin(mfn(0), D1, &v).unwrap();
    assert_eq!(state(&table, 1).1, 0);
}

#[test]
fn types_the_pv_validator_cannot_check_are_refused() {
    let frames: [FrameInfo; FRAMES] = Default::default();
    let words = arena();
    let mem = SliceMem::new(PhysAddr::new(0), &words);
    let table = build(&frames, &mem);
    let v = PvValidator::new(&mem, config());
    table.get_page(mfn(6), D1).unwrap();
    for ty in [FrameType::SegmentDescriptor, FrameType::Stage2] {
        assert!(matches!(
            table.get_type(mfn(6), ty, &v),
            Err(FrameError::Invalid { .. })
        ));
    }
    assert_eq!(table.get_type(mfn(6), FrameType::Writable, &v), Ok(()));
    assert_eq!(state(&table, 6).2, FrameType::Writable);
    let _ = PvLevel::L1;
}

//! Tests of the engine's bulk stores, named after the rules they guard.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use core::sync::atomic::{AtomicU64, Ordering};
use std::vec;
use std::vec::Vec;

use hvmem_types::{PageSize, PhysAddr, VirtAddr};

use super::{STORE_GROUP, store_stepped};
use crate::model_tests::FrameStack;
use crate::{Attributes, LeafSizes, MapOptions, PageTable, SliceMem, TranslateError, X86Paging};

#[test]
fn store_stepped_writes_entry_i_from_address_first_plus_i_steps_for_any_length() {
    // Every length around the group size and its multiples: whole groups,
    // a remainder, a remainder alone.
    for len in 0..=3 * STORE_GROUP + 1 {
        let words: Vec<AtomicU64> = (0..len + 2).map(|_| AtomicU64::new(u64::MAX)).collect();
        let (guard_lo, rest) = words.split_first().unwrap();
        let (guard_hi, run) = rest.split_last().unwrap();
        store_stepped(run, 0x1000, 0x1000, |at| at | 0x7);
        for (i, e) in run.iter().enumerate() {
            let want = (0x1000 + i as u64 * 0x1000) | 0x7;
            assert_eq!(e.load(Ordering::Relaxed), want, "len {len}, entry {i}");
        }
        assert_eq!(guard_lo.load(Ordering::Relaxed), u64::MAX, "len {len}");
        assert_eq!(guard_hi.load(Ordering::Relaxed), u64::MAX, "len {len}");
    }
}

const BASE: u64 = 0x10_0000;

#[test]
fn a_map_into_fresh_tables_writes_exactly_its_pages_for_any_length_and_offset() {
    let step = 0x1000u64;
    // The last-level table starts at 0x4000_0000: offsets into it, and
    // lengths that end inside it, fill it whole, or run into the next one.
    // Under miri, which took two minutes over most of a table of atomics,
    // one offset near the end of the table and two lengths: a group and a
    // remainder, and the rest of the table (a group and seven).
    let firsts: &[u64] = if cfg!(miri) {
        &[497]
    } else {
        &[0, 1, 7, 8, 9, 505]
    };
    for &first in firsts {
        let lens: Vec<u64> = if cfg!(miri) {
            vec![STORE_GROUP as u64 + 3, 512 - first]
        } else {
            (1..=2 * STORE_GROUP as u64 + 1)
                .chain([512 - first, 513])
                .collect()
        };
        for len in lens {
            // Garbage in every frame: the editor clears or overwrites it.
            let words: Vec<AtomicU64> = (0..8 * 512)
                .map(|i| AtomicU64::new(0xdead_beef_0000_0001 ^ i))
                .collect();
            let mem = SliceMem::new(PhysAddr::new(BASE), &words);
            let mut frames = FrameStack((0..8).rev().map(|i| BASE + i * step).collect());
            let mut pt = PageTable::new(X86Paging::four_level(), &mem, &mut frames).unwrap();
            let start = 0x4000_0000 + first * step;
            let out = 0x8000_0000 + 0x30_0000;
            let options = MapOptions::new().sizes(LeafSizes::only(PageSize::Size4K));
            let _ = pt
                .map(
                    &mem,
                    &mut frames,
                    VirtAddr::new(start),
                    PhysAddr::new(out),
                    len * step,
                    &Attributes::DATA,
                    options,
                )
                .unwrap();
            for i in 0..len {
                let at = VirtAddr::new(start + i * step + 0x18);
                let t = pt.translate_addr(&mem, at).unwrap();
                assert_eq!(
                    t.output.get(),
                    out + i * step + 0x18,
                    "{first}+{len}: page {i}"
                );
            }
            for outside in [start - step, start + len * step] {
                assert!(
                    matches!(
                        pt.translate_addr(&mem, VirtAddr::new(outside)),
                        Err(TranslateError::NotMapped { .. })
                    ),
                    "{first}+{len}: {outside:#x} mapped"
                );
            }
        }
    }
}

//! Unit tests, each named after the rule it guards, and the model-based
//! property test.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::vec;
use std::vec::Vec;

use hvmem_types::{FrameRange, Mfn, PageOrder};
use proptest::prelude::*;

use crate::{
    AddZoneError, AllocError, BuddyAllocator, Contents, FreeError, MAX_ZONE_FRAMES, ReleaseError,
    ReserveError, ZoneId, ZonePolicy, metadata_words,
};

fn order(k: u8) -> PageOrder {
    PageOrder::new(k).unwrap()
}

fn range(start: u64, len: u64) -> FrameRange {
    FrameRange::new(Mfn::new(start), len).unwrap()
}

/// Owns the metadata of up to four zones so tests can build allocators.
struct Meta(Vec<Vec<u64>>);

impl Meta {
    fn for_ranges(ranges: &[FrameRange]) -> Self {
        Self(
            ranges
                .iter()
                .map(|r| vec![0; metadata_words(r.len())])
                .collect(),
        )
    }

    fn heap(&mut self, max: u8, ranges: &[FrameRange], contents: Contents) -> BuddyAllocator<'_> {
        let mut heap = BuddyAllocator::new(order(max)).unwrap();
        for (r, m) in ranges.iter().zip(self.0.iter_mut()) {
            heap.add_zone(*r, m, contents).unwrap();
        }
        heap
    }
}

#[test]
fn allocations_are_naturally_aligned_in_machine_frames() {
    let zone = [range(3, 1000)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(18, &zone, Contents::Clean);
    for k in [0, 3, 5, 8, 1, 0, 7] {
        let mfn = heap.alloc(order(k)).unwrap();
        assert!(mfn.is_aligned(order(k)), "{mfn:?} for order {k}");
        assert!(zone[0].contains_range(&range(mfn.get(), 1 << k)));
    }
}

#[test]
fn zone_edges_are_cut_into_maximal_aligned_blocks() {
    let zone = [range(3, 13)];
    let mut meta = Meta::for_ranges(&zone);
    let heap = meta.heap(18, &zone, Contents::Clean);
    let stats = heap.stats();
    assert_eq!(stats.free_frames, 13);
    assert_eq!(
        (0..4)
            .map(|k| stats.free_blocks(order(k)))
            .collect::<Vec<_>>(),
        [1, 0, 1, 1]
    );
    assert_eq!(stats.largest_free, Some(order(3)));
}

#[test]
fn order_above_max_order_is_refused() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(4, &zone, Contents::Clean);
    assert_eq!(
        heap.alloc(order(5)),
        Err(AllocError::OrderTooLarge {
            requested: order(5),
            max: order(4)
        })
    );
    assert!(matches!(
        heap.free(Mfn::new(0), order(5)),
        Err(FreeError::OrderTooLarge { .. })
    ));
    assert!(BuddyAllocator::<1>::new(order(31)).is_err());
}

#[test]
fn free_merges_buddies_back_to_the_maximum_order() {
    // Smaller under miri, which interprets every split and merge.
    let max: u8 = if cfg!(miri) { 7 } else { 10 };
    let zone = [range(0, 1 << max)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(max, &zone, Contents::Clean);
    let frames: Vec<_> = (0..1 << max)
        .map(|_| heap.alloc(order(0)).unwrap())
        .collect();
    assert_eq!(heap.alloc(order(0)), Err(AllocError::OutOfMemory));
    for f in frames
        .iter()
        .rev()
        .step_by(2)
        .chain(frames.iter().step_by(2))
    {
        heap.free(*f, order(0)).unwrap();
    }
    let stats = heap.stats();
    assert_eq!(stats.free_blocks(order(max)), 1);
    assert_eq!(stats.largest_free, Some(order(max)));
}

#[test]
fn blocks_never_merge_across_a_zone_edge() {
    let zones = [range(0, 8), range(8, 8)];
    let mut meta = Meta::for_ranges(&zones);
    let heap = meta.heap(18, &zones, Contents::Clean);
    assert_eq!(heap.stats().free_blocks(order(3)), 2);
    assert_eq!(heap.stats().free_blocks(order(4)), 0);
}

#[test]
fn double_free_is_refused_and_changes_nothing() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    let a = heap.alloc(order(2)).unwrap();
    let _b = heap.alloc(order(2)).unwrap();
    heap.free(a, order(2)).unwrap();
    let before = heap.stats();
    assert_eq!(heap.free(a, order(2)), Err(FreeError::NotAllocated));
    assert_eq!(heap.stats(), before);
}

#[test]
fn a_hot_block_comes_back_first_without_splitting_anything() {
    let zone = [range(0, 1024)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(10, &zone, Contents::Clean);
    heap.set_hot_frames(64);
    let a = heap.alloc(order(0)).unwrap();
    let b = heap.alloc(order(0)).unwrap();
    heap.free(a, order(0)).unwrap();
    heap.free(b, order(0)).unwrap();
    // LIFO: the most recently freed, still cache-warm frame first.
    assert_eq!(heap.alloc(order(0)), Ok(b));
    assert_eq!(heap.alloc(order(0)), Ok(a));
    // The 1024-frame block was split once, by the first allocation only.
    assert_eq!(heap.stats().free_blocks(order(9)), 1);
}

#[test]
fn hot_frames_count_as_free_and_dirty_blocks_of_their_order() {
    let zone = [range(0, 1024)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(10, &zone, Contents::Clean);
    heap.set_hot_frames(64);
    let a = heap.alloc(order(3)).unwrap();
    heap.free(a, order(3)).unwrap();
    let stats = heap.stats();
    assert_eq!(
        (stats.hot_frames, stats.free_frames, stats.dirty_frames),
        (8, 1024, 8)
    );
    assert_eq!(stats.free_blocks(order(3)), 2);
    // Merged back, the dirty marks survive and the scrubber finds them.
    heap.flush_hot();
    let stats = heap.stats();
    assert_eq!((stats.hot_frames, stats.dirty_frames), (0, 8));
    assert_eq!(stats.free_blocks(order(10)), 1);
    let mut scrubbed = 0;
    let _ = heap.scrub(u64::MAX, |_| scrubbed += 1);
    assert_eq!(scrubbed, 8);
}

#[test]
fn double_free_of_a_hot_block_is_refused_and_changes_nothing() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    heap.set_hot_frames(16);
    let a = heap.alloc(order(1)).unwrap();
    heap.free(a, order(1)).unwrap();
    let before = heap.stats();
    assert_eq!(before.hot_frames, 2);
    assert_eq!(heap.free(a, order(1)), Err(FreeError::NotAllocated));
    assert_eq!(heap.free(a, order(0)), Err(FreeError::NotAllocated));
    assert_eq!(heap.stats(), before);
}

#[test]
fn hot_blocks_merge_when_an_allocation_would_otherwise_fail() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    heap.set_hot_frames(1024);
    let frames: Vec<_> = (0..64).map(|_| heap.alloc(order(0)).unwrap()).collect();
    for f in frames {
        heap.free(f, order(0)).unwrap();
    }
    assert_eq!(heap.stats().hot_frames, 64);
    // 64 unmerged frames, yet the whole zone is one free block to a caller.
    let all = heap.alloc(order(6)).unwrap();
    assert_eq!(all, Mfn::new(0));
    heap.free(all, order(6)).unwrap();
    // Reserving a range of hot frames merges them first as well.
    let frames: Vec<_> = (0..8).map(|_| heap.alloc(order(0)).unwrap()).collect();
    for f in frames {
        heap.free(f, order(0)).unwrap();
    }
    heap.reserve(range(0, 8)).unwrap();
    assert_eq!(heap.stats().reserved_frames, 8);
}

#[test]
fn a_free_to_a_full_hot_list_merges_at_once_and_a_lower_limit_merges_the_excess() {
    let zone = [range(0, 256)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(8, &zone, Contents::Clean);
    heap.set_hot_frames(8);
    let frames: Vec<_> = (0..32).map(|_| heap.alloc(order(0)).unwrap()).collect();
    for &f in &frames {
        heap.free(f, order(0)).unwrap();
        assert!(heap.stats().hot_frames <= 8);
    }
    // The first eight frees filled the list; the later ones merged at once,
    // so the list still holds the first eight, the eighth on top.
    assert_eq!(heap.stats().hot_frames, 8);
    assert_eq!(heap.alloc(order(0)).unwrap(), frames[7]);
    heap.free(frames[7], order(0)).unwrap();
    heap.set_hot_frames(2);
    assert!(heap.stats().hot_frames <= 2);
    heap.set_hot_frames(0);
    assert_eq!(heap.stats().hot_frames, 0);
    assert_eq!(heap.stats().free_blocks(order(8)), 1);
}

#[test]
fn free_with_the_wrong_order_is_refused() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    let a = heap.alloc(order(2)).unwrap();
    assert_eq!(
        heap.free(a, order(1)),
        Err(FreeError::WrongOrder {
            allocated: order(2)
        })
    );
    assert_eq!(
        heap.free(a, order(3)),
        Err(FreeError::WrongOrder {
            allocated: order(2)
        })
    );
    heap.free(a, order(2)).unwrap();
}

#[test]
fn a_frame_inside_an_allocated_block_cannot_be_freed_alone() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    let a = heap.alloc(order(3)).unwrap();
    assert_eq!(
        heap.free(a.checked_add(1).unwrap(), order(0)),
        Err(FreeError::NotAllocated)
    );
    assert_eq!(
        heap.free(a.checked_add(4).unwrap(), order(2)),
        Err(FreeError::NotAllocated)
    );
}

#[test]
fn misaligned_and_foreign_frees_are_refused() {
    let zone = [range(16, 40)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    assert_eq!(
        heap.free(Mfn::new(18), order(2)),
        Err(FreeError::Misaligned)
    );
    assert_eq!(heap.free(Mfn::new(8), order(0)), Err(FreeError::OutOfRange));
    assert_eq!(
        heap.free(Mfn::new(56), order(0)),
        Err(FreeError::OutOfRange)
    );
    // Aligned, starts inside, ends past the zone.
    assert_eq!(
        heap.free(Mfn::new(48), order(4)),
        Err(FreeError::OutOfRange)
    );
    assert_eq!(
        heap.free(Mfn::new(u64::MAX), order(0)),
        Err(FreeError::OutOfRange)
    );
}

#[test]
fn reserve_takes_exactly_the_range_and_splits_around_it() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    heap.reserve(range(5, 3)).unwrap();
    let stats = heap.stats();
    assert_eq!((stats.free_frames, stats.reserved_frames), (61, 3));
    // Every frame but 5..8 can still be allocated, one at a time.
    let mut got: Vec<u64> = (0..61)
        .map(|_| heap.alloc(order(0)).unwrap().get())
        .collect();
    got.sort_unstable();
    let expected: Vec<u64> = (0..64).filter(|f| !(5..8).contains(f)).collect();
    assert_eq!(got, expected);
}

#[test]
fn reserving_allocated_memory_is_refused_and_changes_nothing() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    let a = heap.alloc(order(0)).unwrap();
    let before = heap.stats();
    assert_eq!(
        heap.reserve(range(0, 64)),
        Err(ReserveError::NotFree { mfn: a })
    );
    assert_eq!(heap.reserve(range(60, 8)), Err(ReserveError::OutOfRange));
    assert_eq!(heap.reserve(range(60, 0)), Err(ReserveError::OutOfRange));
    assert_eq!(heap.stats(), before);
    heap.reserve(range(10, 4)).unwrap();
    assert_eq!(
        heap.reserve(range(12, 1)),
        Err(ReserveError::NotFree { mfn: Mfn::new(12) })
    );
}

#[test]
fn released_frames_come_back_dirty_and_merge() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    heap.reserve(range(3, 20)).unwrap();
    assert_eq!(heap.free(Mfn::new(4), order(0)), Err(FreeError::Reserved));
    assert_eq!(
        heap.release(range(2, 4)),
        Err(ReleaseError::NotReserved { mfn: Mfn::new(2) })
    );
    heap.release(range(10, 13)).unwrap();
    heap.release(range(3, 7)).unwrap();
    let stats = heap.stats();
    assert_eq!(
        (stats.free_frames, stats.dirty_frames, stats.reserved_frames),
        (64, 20, 0)
    );
    assert_eq!(stats.free_blocks(order(6)), 1);
}

/// The contents of a simulated machine: who last wrote each frame.
struct Memory(Vec<u32>);

impl Memory {
    fn write(&mut self, mfn: Mfn, k: u8, owner: u32) {
        for f in mfn.get()..mfn.get() + (1 << k) {
            self.0[f as usize] = owner;
        }
    }

    fn is_zero(&self, mfn: Mfn, k: u8) -> bool {
        (mfn.get()..mfn.get() + (1 << k)).all(|f| self.0[f as usize] == 0)
    }
}

#[test]
fn alloc_clean_never_returns_another_users_data() {
    let zone = [range(0, 256)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(8, &zone, Contents::Clean);
    let mut mem = Memory(vec![0; 256]);
    // A guest fills half the memory and frees it: dirty, not yet scrubbed.
    let guest = heap.alloc(order(7)).unwrap();
    mem.write(guest, 7, 1);
    heap.free(guest, order(7)).unwrap();
    for k in [7, 3, 0, 4] {
        let mfn = heap
            .alloc_clean(order(k), |m| mem.0[m.get() as usize] = 0)
            .unwrap();
        assert!(mem.is_zero(mfn, k), "order {k} at {mfn:?}");
        mem.write(mfn, k, 2);
    }
}

#[test]
fn scrub_honours_its_budget_and_resumes_where_it_stopped() {
    let zone = [range(0, 256)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(8, &zone, Contents::Dirty);
    let mut seen = vec![0u8; 256];
    let mut total = 0;
    loop {
        let p = heap.scrub(10, |m| seen[m.get() as usize] += 1);
        assert!(p.scrubbed <= 10);
        total += p.scrubbed;
        if p.dirty_left == 0 {
            break;
        }
    }
    assert_eq!(total, 256);
    assert!(
        seen.iter().all(|&n| n == 1),
        "each frame scrubbed exactly once"
    );
    assert_eq!(
        heap.scrub(10, |_| panic!("nothing left to scrub")).scrubbed,
        0
    );
}

#[test]
fn clean_and_dirty_buddies_merge_without_losing_dirty_marks() {
    let zone = [range(0, 16)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(4, &zone, Contents::Clean);
    let a = heap.alloc(order(2)).unwrap();
    heap.free(a, order(2)).unwrap();
    let stats = heap.stats();
    assert_eq!((stats.free_blocks(order(4)), stats.dirty_frames), (1, 4));
    // Only the four dirty frames get scrubbed, and only once.
    let mut scrubbed = Vec::new();
    heap.scrub(100, |m| scrubbed.push(m.get()));
    scrubbed.sort_unstable();
    assert_eq!(scrubbed, (a.get()..a.get() + 4).collect::<Vec<_>>());
}

#[test]
fn blocks_freed_whole_keep_every_dirty_mark_through_merge_split_reserve_and_scrub() {
    // Blocks freed whole go on the lists without their dirty bits set
    // (lazily); every path that needs the bits must still see every frame
    // dirty, exactly once.
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    let blocks: Vec<Mfn> = (0..4).map(|_| heap.alloc(order(4)).unwrap()).collect();
    let mut sorted = blocks.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 16, 32, 48].map(Mfn::new));
    // Two freed buddies merge into one dirty order-5 block.
    heap.free(Mfn::new(16), order(4)).unwrap();
    heap.free(Mfn::new(0), order(4)).unwrap();
    let stats = heap.stats();
    assert_eq!((stats.free_blocks(order(5)), stats.dirty_frames), (1, 32));
    // A split of it: the allocated eighth leaves the dirty count.
    let a = heap.alloc(order(2)).unwrap();
    assert_eq!((a, heap.stats().dirty_frames), (Mfn::new(0), 28));
    // A clean allocation that has to take a dirty block scrubs all of it.
    let mut scrubbed = Vec::new();
    let c = heap
        .alloc_clean(order(2), |m| scrubbed.push(m.get()))
        .unwrap();
    assert_eq!(scrubbed, (c.get()..c.get() + 4).collect::<Vec<_>>());
    assert_eq!(heap.stats().dirty_frames, 24);
    // A reservation inside a dirty block takes its frames out of the count.
    heap.reserve(range(20, 4)).unwrap();
    assert_eq!(heap.stats().dirty_frames, 20);
    // The scrubber finds exactly the remaining dirty frames, once each.
    let mut scrubbed = Vec::new();
    let progress = heap.scrub(1000, |m| scrubbed.push(m.get()));
    scrubbed.sort_unstable();
    let expected: Vec<u64> = (0..32)
        .filter(|f| !(0..4).contains(f) && !(c.get()..c.get() + 4).contains(f))
        .filter(|f| !(20..24).contains(f))
        .collect();
    assert_eq!((scrubbed, progress.dirty_left), (expected, 0));
    // Everything back: a clean block merging with a freed one keeps only
    // the freed frames dirty.
    heap.release(range(20, 4)).unwrap();
    heap.free(a, order(2)).unwrap();
    heap.free(c, order(2)).unwrap();
    heap.free(Mfn::new(32), order(4)).unwrap();
    heap.free(Mfn::new(48), order(4)).unwrap();
    let stats = heap.stats();
    assert_eq!(
        (stats.free_blocks(order(6)), stats.dirty_frames),
        (1, 4 + 4 + 4 + 32)
    );
    let mut scrubbed = 0;
    heap.alloc_clean(order(6), |_| scrubbed += 1).unwrap();
    assert_eq!(scrubbed, 44);
}

#[test]
fn reused_dirty_memory_is_counted_exactly_and_scrubbed_once_per_dirty_frame() {
    // Reuse of dirty memory: its frames leave the dirty count when allocated
    // and come back to it when freed, and scrubbing sees each one once.
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    let a = heap.alloc(order(4)).unwrap();
    heap.free(a, order(4)).unwrap();
    assert_eq!(heap.stats().dirty_frames, 16);
    // The all-dirty block comes back whole: its 16 frames leave the count.
    let b = heap.alloc(order(4)).unwrap();
    assert_eq!(b, a);
    assert_eq!(heap.stats().dirty_frames, 0);
    // A smaller piece of it: only its own frames leave the count.
    heap.free(b, order(4)).unwrap();
    let c = heap.alloc(order(2)).unwrap();
    assert_eq!(heap.stats().dirty_frames, 12);
    heap.free(c, order(2)).unwrap();
    assert_eq!(heap.stats().dirty_frames, 16);
    // alloc_clean of the whole zone scrubs exactly the 16 dirty frames.
    let mut scrubbed = Vec::new();
    let all = heap
        .alloc_clean(order(6), |m| scrubbed.push(m.get()))
        .unwrap();
    scrubbed.sort_unstable();
    assert_eq!(scrubbed, (a.get()..a.get() + 16).collect::<Vec<_>>());
    assert_eq!(heap.stats().dirty_frames, 0);
    // Freed again, every frame is dirty once.
    heap.free(all, order(6)).unwrap();
    assert_eq!(heap.stats().dirty_frames, 64);
    let mut scrubbed = 0;
    heap.scrub(1000, |_| scrubbed += 1);
    assert_eq!((scrubbed, heap.stats().dirty_frames), (64, 0));
}

#[test]
fn a_partly_dirty_block_split_for_an_allocation_counts_only_its_dirty_frames() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    // Dirty frames 0..2 and 16..20, in a merged, partly dirty order-6 block.
    let x = heap.alloc(order(1)).unwrap();
    let y = heap.alloc(order(4)).unwrap();
    let z = heap.alloc(order(2)).unwrap();
    assert_eq!((x.get(), y.get(), z.get()), (0, 16, 4));
    heap.free(z, order(2)).unwrap();
    heap.free(x, order(1)).unwrap();
    heap.free(y, order(4)).unwrap();
    assert_eq!(heap.stats().dirty_frames, 2 + 16 + 4);
    // The lower half of the merged block holds every dirty frame.
    let w = heap.alloc(order(5)).unwrap();
    assert_eq!(w.get(), 0);
    assert_eq!(heap.stats().dirty_frames, 0);
    heap.free(w, order(5)).unwrap();
    assert_eq!(heap.stats().dirty_frames, 32);
}

#[test]
fn zone_policy_only_never_falls_back_and_prefer_does() {
    let zones = [range(0, 16), range(16, 16)];
    let mut meta = Meta::for_ranges(&zones);
    let mut heap = meta.heap(4, &zones, Contents::Clean);
    let z1 = ZoneId::new(1);
    assert!(zones[1].contains(heap.alloc_in(order(4), ZonePolicy::Prefer(z1)).unwrap()));
    assert_eq!(
        heap.alloc_in(order(0), ZonePolicy::Only(z1)),
        Err(AllocError::OutOfMemory)
    );
    assert!(zones[0].contains(heap.alloc_in(order(0), ZonePolicy::Prefer(z1)).unwrap()));
    assert_eq!(
        heap.alloc_in(order(0), ZonePolicy::Only(ZoneId::new(3))),
        Err(AllocError::NoSuchZone)
    );
    assert_eq!(heap.zone_of(Mfn::new(20)), Some(z1));
}

#[test]
fn zones_are_checked_when_added() {
    // A refused zone keeps its metadata borrowed for the allocator's lifetime,
    // so each attempt gets its own buffer.
    let mut bufs: Vec<Vec<u64>> = (0..6).map(|_| vec![0; metadata_words(32)]).collect();
    bufs[2].pop();
    let [m1, m2, m3, m4, m5, m6] = &mut bufs[..] else {
        unreachable!()
    };
    let mut heap = BuddyAllocator::<2>::new(order(5)).unwrap();
    heap.add_zone(range(0, 32), m1, Contents::Clean).unwrap();
    assert_eq!(
        heap.add_zone(range(31, 32), m2, Contents::Clean),
        Err(AddZoneError::Overlaps {
            existing: range(0, 32)
        })
    );
    assert!(matches!(
        heap.add_zone(range(32, 32), m3, Contents::Clean),
        Err(AddZoneError::MetadataTooSmall { .. })
    ));
    assert_eq!(
        heap.add_zone(range(64, 0), m4, Contents::Clean),
        Err(AddZoneError::Empty)
    );
    heap.add_zone(range(32, 32), m5, Contents::Clean).unwrap();
    assert_eq!(
        heap.add_zone(range(64, 32), m6, Contents::Clean),
        Err(AddZoneError::TooManyZones)
    );
}

#[test]
fn zones_of_max_zone_frames_or_more_are_too_large_for_the_28_bit_links() {
    // The size is checked before the metadata, so no metadata is needed to
    // see the limit; one frame less passes it and asks for metadata.
    let mut empty: [u64; 0] = [];
    let mut short: [u64; 0] = [];
    let mut heap = BuddyAllocator::<2>::new(order(18)).unwrap();
    assert_eq!(
        heap.add_zone(range(0, MAX_ZONE_FRAMES), &mut empty, Contents::Clean),
        Err(AddZoneError::TooLarge)
    );
    assert_eq!(
        heap.add_zone(range(0, MAX_ZONE_FRAMES - 1), &mut short, Contents::Clean),
        Err(AddZoneError::MetadataTooSmall {
            needed: metadata_words(MAX_ZONE_FRAMES - 1),
            given: 0
        })
    );
}

#[test]
fn fragmentation_index_tells_fragmentation_from_lack_of_memory() {
    let zone = [range(0, 64)];
    let mut meta = Meta::for_ranges(&zone);
    let mut heap = meta.heap(6, &zone, Contents::Clean);
    assert_eq!(heap.stats().fragmentation_index(order(6)), None);
    // Keep every other frame: 32 free frames, none of them adjacent.
    let frames: Vec<_> = (0..64).map(|_| heap.alloc(order(0)).unwrap()).collect();
    for f in frames.iter().filter(|f| f.get() % 2 == 0) {
        heap.free(*f, order(0)).unwrap();
    }
    let stats = heap.stats();
    assert_eq!(stats.unusable_index(order(1)), 1000);
    // Twice the memory an order-4 block needs, all of it in single frames.
    assert!(stats.fragmentation_index(order(4)).unwrap() > 900);
    // One free frame left: an order-1 block fails for lack of memory.
    for _ in 0..31 {
        heap.alloc(order(0)).unwrap();
    }
    assert_eq!(heap.stats().free_frames, 1);
    assert_eq!(heap.stats().fragmentation_index(order(1)), Some(0));
}

// ---- The model-based property test ----------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Alloc(u8),
    AllocClean(u8),
    /// Free the n-th live allocation (modulo), with an order offset (0 = right).
    Free(usize, u8),
    /// Free an arbitrary frame and order: almost always a bad input.
    FreeRaw(u64, u8),
    Reserve(u64, u64),
    Release(u64, u64),
    Scrub(u64),
    /// Set the hot-list limit (frames per cached order).
    Hot(u32),
    /// Merge every hot block.
    FlushHot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..7).prop_map(Op::Alloc),
        2 => (0u8..7).prop_map(Op::AllocClean),
        4 => (any::<usize>(), prop_oneof![6 => Just(0u8), 1 => 1u8..3]).prop_map(|(i, d)| Op::Free(i, d)),
        1 => (0u64..600, 0u8..8).prop_map(|(m, k)| Op::FreeRaw(m, k)),
        1 => (0u64..600, 0u64..40).prop_map(|(s, n)| Op::Reserve(s, n)),
        1 => (0u64..600, 0u64..40).prop_map(|(s, n)| Op::Release(s, n)),
        1 => (0u64..200).prop_map(Op::Scrub),
        1 => prop_oneof![Just(0u32), Just(2), Just(8), Just(64), Just(1024)].prop_map(Op::Hot),
        1 => Just(Op::FlushHot),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Frame {
    Free,
    Allocated,
    Reserved,
    /// Not in any zone.
    Hole,
}

/// The model: what each frame is, and whether it holds someone's data.
struct Model {
    frames: Vec<Frame>,
    dirty: Vec<bool>,
    live: Vec<(Mfn, u8)>,
    max: u8,
}

impl Model {
    fn count(&self, what: Frame) -> u64 {
        self.frames.iter().filter(|&&f| f == what).count() as u64
    }

    fn span(&self, mfn: Mfn, k: u8) -> core::ops::Range<usize> {
        mfn.get() as usize..(mfn.get() + (1 << k)) as usize
    }

    /// Whether some naturally aligned run of `2^k` frames is free.
    fn has_free_block(&self, k: u8) -> bool {
        self.frames
            .chunks(1 << k)
            .any(|c| c.len() == 1 << k && c.iter().all(|&f| f == Frame::Free))
    }

    fn take(&mut self, mfn: Mfn, k: u8) {
        for f in self.span(mfn, k) {
            assert_eq!(self.frames[f], Frame::Free, "{mfn:?} order {k} overlaps");
            self.frames[f] = Frame::Allocated;
        }
        self.live.push((mfn, k));
    }
}

fn check(heap: &BuddyAllocator<'_>, model: &Model) {
    let stats = heap.stats();
    assert_eq!(stats.free_frames, model.count(Frame::Free));
    assert_eq!(stats.reserved_frames, model.count(Frame::Reserved));
    let dirty_free = (0..model.frames.len())
        .filter(|&f| model.frames[f] == Frame::Free && model.dirty[f])
        .count() as u64;
    assert_eq!(stats.dirty_frames, dirty_free);
    let by_blocks: u64 = (0..=model.max)
        .map(|k| stats.free_blocks(order(k)) << k)
        .sum();
    assert_eq!(by_blocks, stats.free_frames);
}

fn run_model(max: u8, zones: &[FrameRange], ops: &[Op]) {
    let top = zones.iter().map(|z| z.end().get()).max().unwrap_or(0) as usize;
    let mut meta = Meta::for_ranges(zones);
    let mut heap = meta.heap(max, zones, Contents::Clean);
    let mut model = Model {
        frames: vec![Frame::Hole; top],
        dirty: vec![false; top],
        live: vec![],
        max,
    };
    for z in zones {
        for f in z.start().get()..z.end().get() {
            model.frames[f as usize] = Frame::Free;
        }
    }
    check(&heap, &model);
    for op in ops {
        let before = heap.stats();
        match *op {
            Op::Alloc(k) => match heap.alloc(order(k)) {
                Ok(mfn) => {
                    assert!(mfn.is_aligned(order(k)));
                    model.take(mfn, k);
                }
                Err(e) => {
                    assert!(
                        k > max || !model.has_free_block(k),
                        "spurious {e:?} for order {k}"
                    );
                }
            },
            Op::AllocClean(k) => {
                let mut scrubbed = Vec::new();
                match heap.alloc_clean(order(k), |m| scrubbed.push(m)) {
                    Ok(mfn) => {
                        for m in scrubbed {
                            assert!(model.span(mfn, k).contains(&(m.get() as usize)));
                            model.dirty[m.get() as usize] = false;
                        }
                        for f in model.span(mfn, k) {
                            assert!(!model.dirty[f], "alloc_clean returned dirty {f:#x}");
                        }
                        model.take(mfn, k);
                    }
                    Err(_) => assert!(k > max || !model.has_free_block(k)),
                }
            }
            Op::Free(i, delta) => {
                if model.live.is_empty() {
                    continue;
                }
                let i = i % model.live.len();
                let (mfn, k) = model.live[i];
                let result = heap.free(mfn, order(k + delta));
                if delta == 0 {
                    result.unwrap();
                    model.live.swap_remove(i);
                    for f in model.span(mfn, k) {
                        model.frames[f] = Frame::Free;
                        model.dirty[f] = true;
                    }
                } else {
                    assert!(result.is_err());
                    assert_eq!(heap.stats(), before);
                }
            }
            Op::FreeRaw(m, k) => {
                let mfn = Mfn::new(m);
                let is_live = model.live.iter().any(|&(l, lk)| l == mfn && lk == k);
                if !is_live {
                    assert!(heap.free(mfn, order(k)).is_err(), "freed {mfn:?} order {k}");
                    assert_eq!(heap.stats(), before);
                }
            }
            Op::Reserve(s, n) => {
                let r = range(s, n);
                let all_free = n > 0
                    && (s + n) as usize <= top
                    && zones.iter().any(|z| z.contains_range(&r))
                    && model.frames[s as usize..(s + n) as usize]
                        .iter()
                        .all(|&f| f == Frame::Free);
                match heap.reserve(r) {
                    Ok(()) => {
                        assert!(all_free);
                        for f in s..s + n {
                            model.frames[f as usize] = Frame::Reserved;
                        }
                    }
                    Err(_) => {
                        assert!(!all_free);
                        assert_eq!(heap.stats(), before);
                    }
                }
            }
            Op::Release(s, n) => {
                let r = range(s, n);
                let all_reserved = n > 0
                    && (s + n) as usize <= top
                    && zones.iter().any(|z| z.contains_range(&r))
                    && model.frames[s as usize..(s + n) as usize]
                        .iter()
                        .all(|&f| f == Frame::Reserved);
                match heap.release(r) {
                    Ok(()) => {
                        assert!(all_reserved);
                        for f in s..s + n {
                            model.frames[f as usize] = Frame::Free;
                            model.dirty[f as usize] = true;
                        }
                    }
                    Err(_) => {
                        assert!(!all_reserved);
                        assert_eq!(heap.stats(), before);
                    }
                }
            }
            Op::Scrub(budget) => {
                let mut scrubbed = Vec::new();
                let p = heap.scrub(budget, |m| scrubbed.push(m));
                assert!(p.scrubbed <= budget);
                for m in scrubbed {
                    let f = m.get() as usize;
                    assert_eq!(model.frames[f], Frame::Free, "scrubbed a frame in use");
                    assert!(model.dirty[f], "scrubbed a clean frame");
                    model.dirty[f] = false;
                }
            }
            Op::Hot(frames) => {
                heap.set_hot_frames(frames);
                assert_eq!(heap.hot_frames(), frames);
                // At most `frames` frames per hot list of every zone.
                let hot = heap.stats().hot_frames;
                let lists = (crate::zone::HOT_LISTS * zones.len()) as u64;
                assert!(
                    hot <= lists * u64::from(frames),
                    "{hot} hot frames over the limit"
                );
            }
            Op::FlushHot => {
                heap.flush_hot();
                assert_eq!(heap.stats().hot_frames, 0);
            }
        }
        check(&heap, &model);
    }
    // Give everything back: each zone is again its maximal aligned blocks
    // once the hot lists are merged.
    for (mfn, k) in core::mem::take(&mut model.live) {
        heap.free(mfn, order(k)).unwrap();
    }
    heap.flush_hot();
    for z in zones {
        let mut f = z.start().get();
        while f < z.end().get() {
            let start = f;
            while f < z.end().get() && model.frames[f as usize] == Frame::Reserved {
                f += 1;
            }
            if f > start {
                heap.release(range(start, f - start)).unwrap();
            }
            f += 1;
        }
    }
    let stats = heap.stats();
    let mut expected = [0u64; 31];
    for z in zones {
        for (_, k) in z.aligned_blocks(order(max)) {
            expected[usize::from(k.get())] += 1;
        }
    }
    for k in 0..=max {
        assert_eq!(
            stats.free_blocks(order(k)),
            expected[usize::from(k)],
            "order {k}"
        );
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random alloc/alloc_clean/free/reserve/release/scrub sequences over two
    /// zones with unaligned edges, checked against a per-frame model after
    /// every step: allocations never overlap, every frame is free, allocated
    /// or reserved exactly once, counts and dirty counts match, clean
    /// allocations and the scrubber only ever see what they should, an
    /// allocation fails only when no aligned free run exists, refused
    /// operations change nothing, hot lists stay within their limit, and
    /// freeing everything (and merging the hot lists) restores one maximal
    /// block per aligned region.
    #[test]
    fn random_operations_match_the_model(
        max in prop_oneof![Just(3u8), Just(6), Just(18)],
        ops in proptest::collection::vec(op(), 0..if cfg!(miri) { 12 } else { 120 }),
    ) {
        run_model(max, &[range(5, 250), range(300, 211)], &ops);
    }
}

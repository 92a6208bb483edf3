//! The `buddy` target: operation sequences against a per-frame model.
//!
//! Input layout: a max-order byte, two zones (start and length as `u16`s,
//! kept small so that the model can check every frame), then operations of
//! one tag byte and its arguments. About one operation in eight is garbage
//! by construction (arbitrary frames, orders up to 255, huge ranges), and the
//! checks demand that the allocator refuse it and stay unchanged.

use hvmem_buddy::{
    AllocError, BuddyAllocator, Contents, Stats, ZoneId, ZonePolicy, metadata_words,
};
use hvmem_types::{FrameRange, Mfn, PageOrder};

use crate::bytes::Bytes;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Frame {
    Hole,
    Free,
    Allocated,
    Reserved,
}

struct Model {
    frames: Vec<Frame>,
    dirty: Vec<bool>,
    live: Vec<(Mfn, PageOrder)>,
}

impl Model {
    fn span(mfn: Mfn, order: PageOrder) -> std::ops::Range<usize> {
        mfn.get() as usize..(mfn.get() + order.frames()) as usize
    }

    fn all(&self, r: &FrameRange, what: Frame) -> bool {
        !r.is_empty()
            && (r.end().get() as usize) <= self.frames.len()
            && self.frames[r.start().get() as usize..r.end().get() as usize]
                .iter()
                .all(|&f| f == what)
    }

    /// Whether an aligned run of `2^order` frames is free within one zone
    /// (a block never spans two zones, even adjacent ones).
    fn has_free_block(&self, order: PageOrder, zones: &[FrameRange]) -> bool {
        let n = order.frames() as usize;
        self.frames.chunks(n).enumerate().any(|(i, c)| {
            let block = FrameRange::new(Mfn::new((i * n) as u64), n as u64);
            c.len() == n
                && c.iter().all(|&f| f == Frame::Free)
                && block.is_some_and(|b| zones.iter().any(|z| z.contains_range(&b)))
        })
    }

    fn take(&mut self, mfn: Mfn, order: PageOrder) {
        assert!(mfn.is_aligned(order), "{mfn:?} not aligned to {order:?}");
        for f in Self::span(mfn, order) {
            assert_eq!(
                self.frames.get(f),
                Some(&Frame::Free),
                "{mfn:?} {order:?} overlaps"
            );
            self.frames[f] = Frame::Allocated;
        }
        self.live.push((mfn, order));
    }

    fn check(&self, heap: &BuddyAllocator<'_, 2>) {
        let s = heap.stats();
        // Two zones, each with a hot list per order 0 to 9 of at most the
        // limit's worth of frames.
        assert!(s.hot_frames <= 2 * 10 * u64::from(heap.hot_frames()));
        let count = |w| self.frames.iter().filter(|&&f| f == w).count() as u64;
        assert_eq!(s.free_frames, count(Frame::Free));
        assert_eq!(s.reserved_frames, count(Frame::Reserved));
        let dirty = (0..self.frames.len())
            .filter(|&f| self.frames[f] == Frame::Free && self.dirty[f])
            .count() as u64;
        assert_eq!(s.dirty_frames, dirty);
    }
}

/// A refused call changed nothing. Running out of memory may have merged
/// the hot lists first (`merged`): the same frames are free and dirty, in
/// larger blocks.
fn same_memory(heap: &BuddyAllocator<'_, 2>, before: &Stats, merged: bool) {
    let after = heap.stats();
    if merged {
        assert_eq!(
            (after.free_frames, after.dirty_frames, after.reserved_frames),
            (
                before.free_frames,
                before.dirty_frames,
                before.reserved_frames
            )
        );
        assert!(after.largest_free >= before.largest_free);
    } else {
        assert_eq!(after, *before);
    }
}

/// Runs one input. Panics on any disagreement with the model.
pub fn run(data: &[u8]) {
    let mut input = Bytes::new(data);
    let max = PageOrder::new(input.u8() % 19).unwrap_or(PageOrder::ZERO);
    let z0 = FrameRange::new(
        Mfn::new(u64::from(input.u16() % 2048)),
        u64::from(input.u16() % 1024) + 1,
    );
    let Some(z0) = z0 else { return };
    // The second zone starts anywhere after the first: adjacent or not.
    let gap = u64::from(input.u16() % 2048);
    let Some(z1) = FrameRange::new(
        Mfn::new(z0.end().get() + gap),
        u64::from(input.u16() % 1024) + 1,
    ) else {
        return;
    };
    let setup = input.u8();
    let contents = if setup & 1 == 0 {
        Contents::Clean
    } else {
        Contents::Dirty
    };
    // Hot lists off, small, medium or large (bits 1-2 of the same byte).
    let hot = [0, 4, 64, 1024][usize::from((setup >> 1) & 3)];
    let mut m0 = vec![0u64; metadata_words(z0.len())];
    let mut m1 = vec![0u64; metadata_words(z1.len())];
    let mut heap = BuddyAllocator::<2>::new(max).unwrap();
    heap.add_zone(z0, &mut m0, contents).unwrap();
    heap.add_zone(z1, &mut m1, contents).unwrap();
    heap.set_hot_frames(hot);

    let top = z1.end().get() as usize;
    let mut model = Model {
        frames: vec![Frame::Hole; top],
        dirty: vec![false; top],
        live: vec![],
    };
    for z in [z0, z1] {
        for f in z.start().get()..z.end().get() {
            model.frames[f as usize] = Frame::Free;
            model.dirty[f as usize] = contents == Contents::Dirty;
        }
    }
    model.check(&heap);

    let mut steps = 0;
    while !input.is_empty() && steps < 4096 {
        steps += 1;
        let before = heap.stats();
        match input.u8() % 9 {
            0 | 1 => {
                let order = PageOrder::new(input.u8() % 20).unwrap();
                let policy = match input.u8() % 4 {
                    0 => ZonePolicy::Only(ZoneId::new(input.u8() % 3)),
                    1 => ZonePolicy::Prefer(ZoneId::new(input.u8() % 3)),
                    _ => ZonePolicy::Any,
                };
                match heap.alloc_in(order, policy) {
                    Ok(mfn) => model.take(mfn, order),
                    Err(e) => {
                        if policy == ZonePolicy::Any && order <= max {
                            assert!(
                                !model.has_free_block(order, &[z0, z1]),
                                "spurious failure {order:?}"
                            );
                        }
                        same_memory(&heap, &before, e == AllocError::OutOfMemory);
                    }
                }
            }
            2 => {
                let order = PageOrder::new(input.u8() % 20).unwrap();
                let mut scrubbed = Vec::new();
                match heap.alloc_clean(order, |m| scrubbed.push(m)) {
                    Ok(mfn) => {
                        for m in scrubbed {
                            assert!(Model::span(mfn, order).contains(&(m.get() as usize)));
                            model.dirty[m.get() as usize] = false;
                        }
                        assert!(
                            Model::span(mfn, order).all(|f| !model.dirty[f]),
                            "dirty frame handed out clean"
                        );
                        model.take(mfn, order);
                    }
                    Err(e) => {
                        assert!(order > max || !model.has_free_block(order, &[z0, z1]));
                        same_memory(&heap, &before, e == AllocError::OutOfMemory);
                    }
                }
            }
            3 | 4 => {
                if model.live.is_empty() {
                    continue;
                }
                let i = usize::from(input.u16()) % model.live.len();
                let (mfn, order) = model.live.swap_remove(i);
                heap.free(mfn, order).unwrap();
                for f in Model::span(mfn, order) {
                    model.frames[f] = Frame::Free;
                    model.dirty[f] = true;
                }
            }
            5 => {
                // Garbage free: any frame, any order up to 255.
                let mfn = Mfn::new(if input.u8() & 1 == 0 {
                    u64::from(input.u16())
                } else {
                    input.u64()
                });
                let k = input.u8();
                let Some(order) = PageOrder::new(k) else {
                    continue;
                };
                if model.live.contains(&(mfn, order)) {
                    continue;
                }
                assert!(heap.free(mfn, order).is_err(), "freed {mfn:?} {order:?}");
                assert_eq!(heap.stats(), before);
            }
            6 => {
                let r = FrameRange::new(
                    Mfn::new(u64::from(input.u16() % 4096)),
                    u64::from(input.u8()),
                );
                let Some(r) = r else { continue };
                let ok =
                    model.all(&r, Frame::Free) && [z0, z1].iter().any(|z| z.contains_range(&r));
                match heap.reserve(r) {
                    Ok(()) => {
                        assert!(ok, "reserved {r:?}");
                        for f in r.start().get()..r.end().get() {
                            model.frames[f as usize] = Frame::Reserved;
                        }
                    }
                    Err(_) => {
                        assert!(!ok, "refused to reserve {r:?}");
                        assert_eq!(heap.stats(), before);
                    }
                }
            }
            7 => {
                let r = FrameRange::new(
                    Mfn::new(u64::from(input.u16() % 4096)),
                    u64::from(input.u8()),
                );
                let Some(r) = r else { continue };
                let ok =
                    model.all(&r, Frame::Reserved) && [z0, z1].iter().any(|z| z.contains_range(&r));
                match heap.release(r) {
                    Ok(()) => {
                        assert!(ok, "released {r:?}");
                        for f in r.start().get()..r.end().get() {
                            model.frames[f as usize] = Frame::Free;
                            model.dirty[f as usize] = true;
                        }
                    }
                    Err(_) => {
                        assert!(!ok, "refused to release {r:?}");
                        assert_eq!(heap.stats(), before);
                    }
                }
            }
            _ => {
                let budget = u64::from(input.u16() % 512);
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
        }
        model.check(&heap);
    }
}

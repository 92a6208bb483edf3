//! A lock-free cache of single frames in front of the allocator.
//!
//! Most allocations in a hypervisor are single frames (page-table pages, grant
//! status frames, balloon pages), and the buddy allocator takes `&mut self`, so
//! the embedder serialises it behind a lock. A [`FrameCache`] per CPU keeps a
//! few order-0 frames that its CPU takes and returns without that lock; the
//! embedder refills it from, and drains it into, the allocator in batches.
//!
//! ## Protocol
//!
//! The cache is `N` slots, each an `AtomicU64` holding a machine frame number
//! or `EMPTY` (`u64::MAX`, which no zone can contain). Any thread may push or
//! pop: usually the owning CPU, but also a remote CPU draining the cache of an
//! offlined CPU, or a reclaimer under memory pressure.
//!
//! - **push** claims an empty slot with `compare_exchange(EMPTY, mfn)`: it only
//!   ever replaces `EMPTY`, so no frame in the cache is overwritten (lost).
//!   `Release`, so that whatever the pusher wrote to the frame (a scrub) is
//!   visible to the thread that pops it.
//! - **pop** takes a slot with `swap(EMPTY)`: a frame is returned by exactly
//!   one swap, so no frame is handed out twice, and there is no ABA window
//!   because a slot's value is read and emptied in one step. `Acquire`, to
//!   pair with the push.
//! - A `hint` index (relaxed, only a starting point for the scan) keeps the
//!   common case to one or two slots; correctness never depends on it.
//!
//! Every operation scans at most `N` slots: bounded, wait-free per call. A push
//! to a full cache, or of a frame number equal to `EMPTY`, fails and hands the
//! frame back to be freed to the allocator.

use hvmem_types::{Mfn, PageOrder};

use crate::BuddyAllocator;
use crate::error::FreeError;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

const EMPTY: u64 = u64::MAX;

/// A lock-free cache of up to `N` single frames.
///
/// Any thread may push and pop; each slot is claimed by a compare-exchange from
/// empty and emptied by a swap, so no frame is lost, and a frame pushed once
/// is popped at most once.
///
/// # How to use it
///
/// [`BuddyAllocator`] takes `&mut self`, so put it behind your lock. Give
/// each CPU a `FrameCache`. A CPU pops single frames from its cache and
/// pushes freed ones back, without the lock. When its cache is empty, it
/// takes the lock and calls [`refill`](Self::refill) with a batch size;
/// when a push fails (the cache is full), it takes the lock, frees that
/// frame, and may [`drain`](Self::drain) the cache. To offline a CPU, drain
/// its cache into the allocator.
///
/// Two things the cache does not check:
///
/// - **Double frees.** [`push`](Self::push) does not look for the frame in
///   the cache or ask the allocator. A frame pushed twice is handed out
///   twice. The allocator's own checks apply only when the frame reaches it
///   through [`drain`](Self::drain).
/// - **Old data.** [`refill`](Self::refill) takes frames with
///   [`BuddyAllocator::alloc`], so they may hold a previous user's data.
///   Scrub a frame before a guest can see it.
#[derive(Debug)]
pub struct FrameCache<const N: usize> {
    slots: [AtomicU64; N],
    hint: AtomicUsize,
}

impl<const N: usize> Default for FrameCache<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameCache<N> {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| AtomicU64::new(EMPTY)),
            hint: AtomicUsize::new(0),
        }
    }

    /// Slot `i` of the scan that starts at the hint, going up (`up`) or down.
    fn slot(&self, start: usize, i: usize, up: bool) -> Option<(usize, &AtomicU64)> {
        let idx = if up {
            start.checked_add(i)?.checked_rem(N)?
        } else {
            start.checked_add(N)?.checked_sub(1 + i)?.checked_rem(N)?
        };
        self.slots.get(idx).map(|s| (idx, s))
    }

    /// Puts a frame in the cache.
    ///
    /// It does not detect double frees: pushing a frame that is already in
    /// the cache (or was never allocated) succeeds, and the frame is then
    /// handed out twice.
    ///
    /// # Errors
    ///
    /// Gives the frame back if the cache is full (or its number is
    /// `u64::MAX`): free it to the allocator instead.
    pub fn push(&self, mfn: Mfn) -> Result<(), Mfn> {
        if mfn.get() == EMPTY {
            return Err(mfn);
        }
        let start = self.hint.load(Ordering::Relaxed);
        for i in 0..N {
            let Some((idx, slot)) = self.slot(start, i, true) else {
                break;
            };
            if slot.load(Ordering::Relaxed) == EMPTY
                && slot
                    .compare_exchange(EMPTY, mfn.get(), Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                self.hint.store(idx + 1, Ordering::Relaxed);
                return Ok(());
            }
        }
        Err(mfn)
    }

    /// Takes a frame from the cache, if it holds one.
    pub fn pop(&self) -> Option<Mfn> {
        let start = self.hint.load(Ordering::Relaxed);
        for i in 0..N {
            let (idx, slot) = self.slot(start, i, false)?;
            if slot.load(Ordering::Relaxed) != EMPTY {
                let raw = slot.swap(EMPTY, Ordering::Acquire);
                if raw != EMPTY {
                    self.hint.store(idx, Ordering::Relaxed);
                    return Some(Mfn::new(raw));
                }
            }
        }
        None
    }

    /// The number of frames in the cache at some moment during the call.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != EMPTY)
            .count()
    }

    /// Whether the cache looked empty during the call.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves up to `count` single frames from `heap` into the cache (fewer if
    /// the heap runs out or the cache fills). Returns how many moved.
    ///
    /// The frames come from [`BuddyAllocator::alloc`], not
    /// [`alloc_clean`](BuddyAllocator::alloc_clean): they may hold old data.
    /// Scrub a frame before handing it to a guest.
    pub fn refill<const Z: usize>(&self, heap: &mut BuddyAllocator<'_, Z>, count: usize) -> usize {
        let mut moved = 0;
        while moved < count {
            let Ok(mfn) = heap.alloc(PageOrder::ZERO) else {
                break;
            };
            if let Err(mfn) = self.push(mfn) {
                // Full: the frame was allocated a moment ago, so this free
                // cannot fail; if it somehow did, the frame stays allocated
                // (leaked, never handed out twice).
                let freed = heap.free(mfn, PageOrder::ZERO);
                debug_assert!(freed.is_ok(), "{freed:?}");
                break;
            }
            moved += 1;
        }
        moved
    }

    /// Frees every frame in the cache to `heap`. Returns how many were freed.
    ///
    /// # Errors
    ///
    /// Stops at the first frame `heap` refuses (one that was never allocated
    /// from it as a single frame) and returns that error; the refused frame is
    /// dropped from the cache, and the frames not yet drained stay in it.
    pub fn drain<const Z: usize>(
        &self,
        heap: &mut BuddyAllocator<'_, Z>,
    ) -> Result<usize, FreeError> {
        let mut freed = 0;
        while let Some(mfn) = self.pop() {
            heap.free(mfn, PageOrder::ZERO)?;
            freed += 1;
        }
        Ok(freed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn full_cache_hands_the_frame_back() {
        let cache = FrameCache::<2>::new();
        assert_eq!(cache.push(Mfn::new(1)), Ok(()));
        assert_eq!(cache.push(Mfn::new(2)), Ok(()));
        assert_eq!(cache.push(Mfn::new(3)), Err(Mfn::new(3)));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_empty_sentinel_is_never_cached() {
        let cache = FrameCache::<2>::new();
        assert_eq!(cache.push(Mfn::new(u64::MAX)), Err(Mfn::new(u64::MAX)));
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_slot_cache_is_always_full_and_empty() {
        let cache = FrameCache::<0>::new();
        assert_eq!(cache.push(Mfn::new(1)), Err(Mfn::new(1)));
        assert_eq!(cache.pop(), None);
    }

    #[test]
    fn pop_returns_each_pushed_frame_once() {
        let cache = FrameCache::<8>::new();
        for f in 0..8 {
            cache.push(Mfn::new(f)).unwrap();
        }
        let mut seen = [false; 8];
        while let Some(m) = cache.pop() {
            assert!(!seen[m.get() as usize]);
            seen[m.get() as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;
    use std::vec::Vec;

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    /// Two CPUs pop while a third pushes: every frame ends up popped exactly
    /// once or still cached, none lost, none duplicated.
    #[test]
    fn loom_concurrent_pops_and_push_conserve_frames() {
        loom::model(|| {
            let cache = Arc::new(FrameCache::<2>::new());
            cache.push(Mfn::new(10)).unwrap();
            let poppers: Vec<_> = (0..2)
                .map(|_| {
                    let c = Arc::clone(&cache);
                    thread::spawn(move || c.pop().map(Mfn::get))
                })
                .collect();
            let pusher = {
                let c = Arc::clone(&cache);
                thread::spawn(move || c.push(Mfn::new(20)).map_err(Mfn::get))
            };
            let mut all: Vec<u64> = poppers
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .collect();
            if let Err(back) = pusher.join().unwrap() {
                all.push(back);
            }
            while let Some(m) = cache.pop() {
                all.push(m.get());
            }
            assert_eq!(sorted(all), [10, 20]);
        });
    }

    /// A push into the last free slot races another push and a pop: the loser
    /// of a full cache gets its frame back, nothing is overwritten.
    #[test]
    fn loom_racing_pushes_never_overwrite() {
        loom::model(|| {
            let cache = Arc::new(FrameCache::<1>::new());
            let pushers: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|f| {
                    let c = Arc::clone(&cache);
                    thread::spawn(move || c.push(Mfn::new(f)).err().map(Mfn::get))
                })
                .collect();
            let popper = {
                let c = Arc::clone(&cache);
                thread::spawn(move || c.pop().map(Mfn::get))
            };
            let mut all: Vec<u64> = pushers
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .collect();
            all.extend(popper.join().unwrap());
            all.extend(cache.pop().map(Mfn::get));
            assert_eq!(sorted(all), [1, 2]);
        });
    }
}

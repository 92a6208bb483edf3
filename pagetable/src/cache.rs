//! A caller-filled cache of table frames ([`FrameCache`]).

use core::fmt;

use hvmem_types::PhysAddr;

use crate::alloc::TableAllocator;

/// A caller-filled cache of table frames.
///
/// Some editors cannot call their frame allocator while they edit: the
/// allocator takes a lock the editor already holds, may sleep, or may not
/// be called from the context the update runs in. KVM solves this with its
/// MMU memory caches: before it takes the MMU lock, it tops a per-vCPU cache
/// up to the most pages the coming update can need, and the update draws
/// only from the cache. [`FrameCache`] is that cache for this crate:
///
/// 1. outside the lock, [`FrameCache::top_up`] to
///    [`PageTable::max_new_tables`](crate::PageTable::max_new_tables) for
///    the range about to be edited;
/// 2. under the lock, pass the cache as the update's [`TableAllocator`]:
///    the update cannot run out, and when it fails for another reason the
///    frames it reserved go back into the cache;
/// 3. tables the update frees go to the cache's `retire` function, never
///    back into the cache: hardware may still hold them in its
///    paging-structure caches until the update's
///    [`TlbFlush`](crate::TlbFlush) is done, so they must wait for it (the
///    caller queues them, as Linux defers freeing page tables).
///
/// The cache keeps its frames in a slice the caller provides, so it needs no
/// allocation and its capacity is the slice's length. It hands out single
/// tables only: a concatenated root (AArch64 stage 2,
/// [`TableAllocator::alloc_root`]) comes from the frame allocator itself,
/// and goes back to it (destroy such a table with that allocator).
///
/// Frames still in the cache when it is dropped are not freed anywhere: take
/// them back with [`pop`](Self::pop) first.
///
/// ```
/// use core::sync::atomic::AtomicU64;
/// use hvmem_pagetable::{Attributes, FrameCache, MapOptions, PageTable, SliceMem, X86Paging};
/// use hvmem_types::{PhysAddr, VirtAddr};
///
/// let arena: Vec<AtomicU64> = (0..8 * 512).map(|_| AtomicU64::new(0)).collect();
/// let mem = SliceMem::new(PhysAddr::new(0x10_0000), &arena);
/// let mut free: Vec<PhysAddr> = (0..8).map(|i| PhysAddr::new(0x10_0000 + i * 0x1000)).collect();
///
/// let mut retired = Vec::new();
/// let mut slots = [PhysAddr::new(0); 4];
/// let mut cache = FrameCache::new(&mut slots, |t| retired.push(t));
/// cache.top_up(1, || free.pop()).unwrap();
/// let mut pt = PageTable::new(X86Paging::four_level(), &mem, &mut cache).unwrap();
///
/// // Before taking the lock: enough frames for any update of this range.
/// let va = VirtAddr::new(0x7000_0000);
/// let need = pt.max_new_tables(va, 0x1000);
/// assert_eq!(need, 3); // a PDPT, a PD and a PT
/// cache.top_up(need, || free.pop()).unwrap();
///
/// // Under the lock: the update draws only from the cache.
/// let flush = pt
///     .map(&mem, &mut cache, va, PhysAddr::new(0x8000_0000), 0x1000, &Attributes::DATA,
///          MapOptions::new())
///     .unwrap();
/// assert!(flush.is_empty());
/// assert_eq!(cache.len(), 0);
///
/// // Unmapping frees the three tables to `retire`, to reuse after the flush.
/// let flush = pt.unmap(&mem, &mut cache, va, 0x1000).unwrap();
/// assert!(flush.covers(0x7000_0000));
/// drop(cache); // Ends the cache's borrow of `retired`.
/// assert_eq!(retired.len(), 3);
/// ```
pub struct FrameCache<'s, R> {
    slots: &'s mut [PhysAddr],
    len: usize,
    retire: R,
}

impl<'s, R: FnMut(PhysAddr)> FrameCache<'s, R> {
    /// An empty cache that holds up to `slots.len()` frames (whatever
    /// `slots` holds now is ignored) and hands the tables updates free to
    /// `retire`.
    pub fn new(slots: &'s mut [PhysAddr], retire: R) -> Self {
        Self {
            slots,
            len: 0,
            retire,
        }
    }

    /// Frames in the cache.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no frame.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most frames the cache can hold.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Adds a frame, or gives it back when the cache is full.
    ///
    /// # Errors
    ///
    /// `Err(frame)` when the cache is full.
    pub fn push(&mut self, frame: PhysAddr) -> Result<(), PhysAddr> {
        match self.slots.get_mut(self.len) {
            Some(slot) => {
                *slot = frame;
                self.len += 1;
                Ok(())
            }
            None => Err(frame),
        }
    }

    /// Takes the frame added last.
    pub fn pop(&mut self) -> Option<PhysAddr> {
        let last = self.len.checked_sub(1)?;
        let frame = *self.slots.get(last)?;
        self.len = last;
        Some(frame)
    }

    /// Fills the cache from `source` until it holds at least `min` frames.
    /// Frames taken before a failure stay in the cache.
    ///
    /// # Errors
    ///
    /// [`TopUpError::TooSmall`] (and nothing taken) when `min` exceeds the
    /// capacity; [`TopUpError::Exhausted`] when `source` ran dry first.
    pub fn top_up(
        &mut self,
        min: usize,
        mut source: impl FnMut() -> Option<PhysAddr>,
    ) -> Result<(), TopUpError> {
        if min > self.capacity() {
            return Err(TopUpError::TooSmall {
                capacity: self.capacity(),
            });
        }
        while self.len < min {
            let frame = source().ok_or(TopUpError::Exhausted { held: self.len })?;
            // Cannot fail: len < min <= capacity.
            self.push(frame).map_err(|_| TopUpError::TooSmall {
                capacity: self.capacity(),
            })?;
        }
        Ok(())
    }
}

impl<R> fmt::Debug for FrameCache<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCache")
            .field("frames", &self.slots.get(..self.len))
            .field("capacity", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<R: FnMut(PhysAddr)> TableAllocator for FrameCache<'_, R> {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        self.pop()
    }

    /// Hands the table to `retire`: it may still be cached by hardware
    /// until the update's flush is done.
    fn free_table(&mut self, table: PhysAddr) {
        (self.retire)(table);
    }

    /// Puts the frame back into the cache (to `retire` only if the cache is
    /// somehow full): it was never reachable.
    fn return_unused(&mut self, frame: PhysAddr) {
        if let Err(frame) = self.push(frame) {
            (self.retire)(frame);
        }
    }
}

/// Why [`FrameCache::top_up`] could not reach its minimum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopUpError {
    /// The minimum is more than the cache can hold.
    TooSmall {
        /// The cache's capacity.
        capacity: usize,
    },
    /// The source had no more frames.
    Exhausted {
        /// Frames the cache holds now.
        held: usize,
    },
}

impl fmt::Display for TopUpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooSmall { capacity } => {
                write!(f, "the frame cache holds at most {capacity} frames")
            }
            Self::Exhausted { held } => {
                write!(f, "no more frames to fill the cache ({held} held)")
            }
        }
    }
}

impl core::error::Error for TopUpError {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use core::sync::atomic::AtomicU64;
    use std::vec::Vec;

    use hvmem_types::{PhysAddr, VirtAddr};

    use super::{FrameCache, TopUpError};
    use crate::{Attributes, MapError, MapOptions, PageTable, SliceMem, TableAllocator, X86Paging};

    const BASE: u64 = 0x10_0000;

    fn arena(frames: usize) -> Vec<AtomicU64> {
        (0..frames * 512).map(|_| AtomicU64::new(0)).collect()
    }

    fn frames(n: u64) -> Vec<PhysAddr> {
        (0..n)
            .rev()
            .map(|i| PhysAddr::new(BASE + i * 0x1000))
            .collect()
    }

    /// An arena of 8 table frames, `source` holding them, a cache of 8
    /// slots whose freed tables go to `retired`, and an x86 table whose
    /// root came from the cache.
    macro_rules! world {
        ($mem:ident, $source:ident, $retired:ident, $cache:ident, $pt:ident) => {
            let words = arena(8);
            let $mem = SliceMem::new(PhysAddr::new(BASE), &words);
            let mut $source = frames(8);
            let mut $retired = Vec::new();
            let mut slots = [PhysAddr::new(0); 8];
            let mut $cache = FrameCache::new(&mut slots, |t| $retired.push(t));
            $cache.top_up(1, || $source.pop()).unwrap();
            let mut $pt = PageTable::new(X86Paging::four_level(), &$mem, &mut $cache).unwrap();
        };
    }

    #[test]
    fn top_up_refuses_a_minimum_beyond_capacity_and_takes_nothing() {
        let mut slots = [PhysAddr::new(0); 2];
        let mut cache = FrameCache::new(&mut slots, |_| {});
        let mut calls = 0;
        let r = cache.top_up(3, || {
            calls += 1;
            Some(PhysAddr::new(BASE))
        });
        assert_eq!(r, Err(TopUpError::TooSmall { capacity: 2 }));
        assert_eq!((calls, cache.len()), (0, 0));
        // An empty cache is an allocator out of memory.
        assert_eq!(cache.alloc_table(), None);
    }

    #[test]
    fn top_up_keeps_what_it_took_when_the_source_runs_dry() {
        let mut slots = [PhysAddr::new(0); 4];
        let mut cache = FrameCache::new(&mut slots, |_| {});
        let mut source = frames(2);
        assert_eq!(
            cache.top_up(4, || source.pop()),
            Err(TopUpError::Exhausted { held: 2 })
        );
        assert_eq!(cache.len(), 2);
        // A full enough cache takes nothing more.
        cache.top_up(2, || panic!("not needed")).unwrap();
    }

    #[test]
    fn a_failed_update_puts_its_reserved_frames_back_into_the_cache() {
        world!(mem, source, retired, cache, pt);
        // Three tables needed, two in the cache: refused, both kept.
        cache.top_up(2, || source.pop()).unwrap();
        let r = pt.map(
            &mem,
            &mut cache,
            VirtAddr::new(0x4000_0000),
            PhysAddr::new(0x8000_0000),
            0x1000,
            &Attributes::DATA,
            MapOptions::new(),
        );
        assert_eq!(r.unwrap_err(), MapError::OutOfMemory);
        assert_eq!(cache.len(), 2);
        // Refused for another reason after reserving: the frames come back.
        cache.top_up(3, || source.pop()).unwrap();
        let _ = pt
            .map(
                &mem,
                &mut cache,
                VirtAddr::new(0x4000_0000),
                PhysAddr::new(0x8000_0000),
                0x1000,
                &Attributes::DATA,
                MapOptions::new(),
            )
            .unwrap();
        cache.top_up(3, || source.pop()).unwrap();
        let r = pt.map(
            &mem,
            &mut cache,
            VirtAddr::new(0x4000_0000),
            PhysAddr::new(0x8000_0000),
            0x20_0000,
            &Attributes::DATA,
            MapOptions::new().sizes(crate::LeafSizes::only_level(0)),
        );
        assert!(matches!(r, Err(MapError::AlreadyMapped { .. })), "{r:?}");
        assert_eq!(cache.len(), 3);
        assert!(retired.is_empty());
    }

    #[test]
    fn freed_tables_go_to_retire_never_back_into_the_cache() {
        world!(mem, source, retired, cache, pt);
        let va = VirtAddr::new(0x4000_0000);
        cache
            .top_up(pt.max_new_tables(va, 0x2000), || source.pop())
            .unwrap();
        let _ = pt
            .map(
                &mem,
                &mut cache,
                va,
                PhysAddr::new(0x8000_0000),
                0x2000,
                &Attributes::DATA,
                MapOptions::new(),
            )
            .unwrap();
        let held = cache.len();
        let _ = pt.unmap(&mem, &mut cache, va, 0x2000).unwrap();
        assert_eq!(cache.len(), held);
        assert_eq!(retired.len(), 3);
    }

    #[test]
    fn the_bound_counts_one_table_per_region_the_range_touches() {
        let mut slots = [PhysAddr::new(0); 1];
        let cache = FrameCache::new(&mut slots, |_| {});
        assert_eq!(cache.capacity(), 1);
        let pt = PageTable::from_root(X86Paging::four_level(), PhysAddr::new(BASE));
        let bound = |va: u64, len: u64| pt.max_new_tables(VirtAddr::new(va), len);
        assert_eq!(bound(0x4000_0000, 0x1000), 3);
        // Two pages on either side of a 2 MiB boundary: two PTs.
        assert_eq!(bound(0x401f_f000, 0x2000), 4);
        // 1 GiB aligned: 512 PTs, a PD, a PDPT.
        assert_eq!(bound(0x4000_0000, 0x4000_0000), 514);
        // Nothing to do, or refused before any table is taken.
        assert_eq!(bound(0x4000_0000, 0), 0);
        assert_eq!(bound(0x8000_0000_0000, 0x1000), 0);
        // The last page of the upper half does not overflow.
        assert_eq!(bound(0xffff_ffff_ffff_f000, 0x1000), 3);
        assert_eq!(bound(0xffff_ffff_ffff_f000, u64::MAX), 0);
    }
}

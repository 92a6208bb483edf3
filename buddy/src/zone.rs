//! One zone: a frame range with its own free lists.
//!
//! ## Free lists
//!
//! Each order `k` has two intrusive doubly linked lists of free blocks, threaded
//! through the head frames' link words: *clean* blocks (no frame needs
//! scrubbing) and *dirty* blocks (some frame may). A 32-bit mask per list kind
//! says which orders are non-empty, so finding the smallest usable order is one
//! `trailing_zeros`. Splitting and merging take O(1) per order level; nothing
//! scans memory in proportion to its size.
//!
//! ## Alignment
//!
//! Blocks are naturally aligned in *machine* frame numbers, not relative to the
//! zone's start, so an order-9 block is a 2 MiB-aligned run that a page table
//! can map with one leaf. A zone may start and end anywhere; its edges are cut
//! into maximal aligned blocks, and a block's buddy outside the zone never
//! merges.
//!
//! ## Dirty frames
//!
//! A per-frame dirty bit is the truth; a block's list says only "may hold dirty
//! frames". A dirty block also records `first_dirty`, the offset of its first
//! possibly dirty frame, so that the scrubber resumes where it stopped and a
//! split knows when a half is certainly clean. Merging a clean block with a
//! dirty one gives a dirty block; the per-frame bits are untouched, so no dirty
//! mark is lost and clean frames are never scrubbed twice.
//!
//! A block of order 1 or more freed whole goes on the dirty list *lazily*:
//! every frame of it is dirty, but its bits are not set (they stay clear, as
//! an allocated block's are), and its `first_dirty` word holds a mark instead
//! of an offset. Taken whole or split for an allocation, it needs no bitmap
//! work at all (its halves stay lazy); two lazy buddies merge into a lazy
//! block. Its bits are set only when something reads them: a merge with a
//! buddy whose bits are the truth, the scrubber, a reservation cutting it.
//!
//! ## Hot lists
//!
//! Optionally (a limit set by the embedder, off by default), a freed block of
//! order 0 to 9 (up to 2 MiB of 4 KiB frames; Linux's per-CPU page lists keep
//! orders 0 to 3 and 9) is not merged at once: it goes on a LIFO *hot list* of
//! its order, holding at most the limit's worth of frames, and the next
//! allocation of that order takes the most recently freed (cache-warm) block
//! back without splitting anything. A hot block is free: it counts in the free
//! and dirty totals and in the statistics as a free block of its order, and a
//! double free of it is refused. It is not merged while hot, so the lists are
//! bounded (a block freed to a full list merges at once), and they are merged back
//! entirely before anything that needs the buddies whole: an allocation that
//! would fail, a reservation, a scrub.

use hvmem_types::{FrameRange, Mfn, PageOrder};

use crate::error::{AddZoneError, FreeError, ReleaseError, ReserveError};
use crate::meta::{FrameMeta, FrameState, MAX_ZONE_FRAMES, NIL};
use crate::{Contents, MAX_SUPPORTED_ORDER};

/// Number of orders the fixed-size per-zone arrays cover.
pub(crate) const ORDERS: usize = MAX_SUPPORTED_ORDER.get() as usize + 1;

const CLEAN: usize = 0;
const DIRTY: usize = 1;

/// Hot lists, one per order from 0 to 9 (2 MiB of 4 KiB frames, the
/// pageblock order), indexed by order so that the hot paths need no mapping.
/// Orders 4 to 8 are cached as well as Linux's 0 to 3 and 9: in a mixed
/// workload their frees would otherwise merge and their allocations split.
pub(crate) const HOT_LISTS: usize = 10;

/// One hot list: an intrusive LIFO through the heads' `next` links.
#[derive(Clone, Copy, Debug)]
struct HotList {
    head: u32,
    blocks: u32,
    limit: u32,
}

/// A zone's free lists over its metadata.
#[derive(Debug)]
pub(crate) struct Zone<'m> {
    range: FrameRange,
    frames: u32,
    max_order: u8,
    meta: FrameMeta<'m>,
    heads: [[u32; ORDERS]; 2],
    nonempty: [u32; 2],
    blocks: [u32; ORDERS],
    /// Free frames on the free lists (hot ones are counted by their lists).
    free_frames: u64,
    /// Possibly dirty free frames on the free lists (every hot frame counts
    /// as dirty, too, by its list).
    dirty_frames: u64,
    reserved_frames: u64,
    /// Hot list of order `k` at index `k`.
    hot: [HotList; HOT_LISTS],
}

impl<'m> Zone<'m> {
    /// A zone over `range` with every frame free, clean or dirty per `contents`.
    pub(crate) fn new(
        range: FrameRange,
        storage: &'m mut [u64],
        max_order: PageOrder,
        contents: Contents,
    ) -> Result<Self, AddZoneError> {
        if range.is_empty() {
            return Err(AddZoneError::Empty);
        }
        // Every index, and `index + 1`, must fit a 28-bit link below NIL.
        let frames = u32::try_from(range.len())
            .ok()
            .filter(|&n| u64::from(n) < MAX_ZONE_FRAMES)
            .ok_or(AddZoneError::TooLarge)?;
        let needed = crate::metadata_words(range.len());
        let given = storage.len();
        let meta = FrameMeta::new(storage, frames)
            .ok_or(AddZoneError::MetadataTooSmall { needed, given })?;
        let mut zone = Self {
            range,
            frames,
            max_order: max_order.get(),
            meta,
            heads: [[NIL; ORDERS]; 2],
            nonempty: [0; 2],
            blocks: [0; ORDERS],
            free_frames: range.len(),
            dirty_frames: 0,
            reserved_frames: 0,
            hot: [HotList {
                head: NIL,
                blocks: 0,
                limit: 0,
            }; HOT_LISTS],
        };
        let dirty = contents == Contents::Dirty;
        for (mfn, order) in range.aligned_blocks(max_order) {
            let i = zone.index_in_zone(mfn);
            if dirty {
                zone.dirty_frames += u64::from(zone.meta.mark_dirty(i, 1 << order.get()));
            }
            zone.push_free(i, order.get(), dirty, 0, false);
        }
        Ok(zone)
    }

    pub(crate) fn range(&self) -> FrameRange {
        self.range
    }

    /// The zone-relative index of a frame already known to be in the zone.
    fn index_in_zone(&self, mfn: Mfn) -> u32 {
        mfn.frames_since(self.range.start()).unwrap_or(0) as u32
    }

    /// The zone-relative index of `[mfn, mfn + count)` if it lies in the zone.
    pub(crate) fn index_of_span(&self, mfn: Mfn, count: u64) -> Option<u32> {
        let i = mfn.frames_since(self.range.start())?;
        let end = i.checked_add(count)?;
        (end <= u64::from(self.frames)).then_some(i as u32)
    }

    fn mfn(&self, i: u32) -> Mfn {
        Mfn::new(self.range.start().get() + u64::from(i))
    }

    /// The index of the buddy of block `(i, k)`, if that buddy lies in the zone.
    #[inline]
    fn buddy_of(&self, i: u32, k: u8) -> Option<u32> {
        let base = self.range.start().get();
        let size = 1u64 << k;
        let buddy = (base + u64::from(i)) ^ size;
        let rel = buddy.checked_sub(base)?;
        (rel + size <= u64::from(self.frames)).then_some(rel as u32)
    }

    /// The head of the free list of order `k`, dirty or clean.
    #[inline(always)]
    fn head_mut(&mut self, dirty: bool, k: u8) -> Option<&mut u32> {
        self.heads
            .get_mut(usize::from(dirty))
            .and_then(|h| h.get_mut(usize::from(k)))
    }

    /// Pushes the free block `(i, k)` on the clean or dirty list of its
    /// order. A dirty block records `first_dirty`, or is `lazy` (every frame
    /// dirty, its bits all clear; orders 1 and up only).
    #[inline]
    fn push_free(&mut self, i: u32, k: u8, dirty: bool, first_dirty: u32, lazy: bool) {
        let list = usize::from(dirty);
        let Some(head) = self.head_mut(dirty, k) else {
            return;
        };
        let old = *head;
        *head = i;
        self.meta.set_head(i, old, NIL, FrameState::free(k, dirty));
        if old != NIL {
            self.meta.set_prev(old, i);
        }
        if lazy {
            debug_assert!(
                dirty && k != 0,
                "only dirty blocks of order 1 and up are lazy"
            );
            self.meta.set_lazy(i, k);
        } else if dirty {
            self.meta.set_first_dirty(i, k, first_dirty);
        }
        if let Some(n) = self.nonempty.get_mut(list) {
            *n |= 1 << k;
        }
        if let Some(b) = self.blocks.get_mut(usize::from(k)) {
            *b += 1;
        }
    }

    /// Takes the free block `(i, k)` off its list.
    ///
    /// The `prev` link of a list's head is never read (the head is known
    /// from `heads`), so taking the head off, which every allocation from
    /// the lists does, leaves the next block's `prev` stale instead of
    /// writing it: one store to a cold line fewer. Every block behind the
    /// head has an exact `prev`, set when a block is pushed in front of it
    /// or its neighbour in front is unlinked.
    #[inline]
    fn unlink_free(&mut self, i: u32, k: u8, dirty: bool) {
        let list = usize::from(dirty);
        let (next, prev) = self.meta.links(i);
        let Some(head) = self.head_mut(dirty, k) else {
            return;
        };
        if *head == i {
            *head = next;
            if next == NIL {
                if let Some(n) = self.nonempty.get_mut(list) {
                    *n &= !(1 << k);
                }
            }
        } else {
            self.meta.set_next(prev, next);
            if next != NIL {
                self.meta.set_prev(next, prev);
            }
        }
        if let Some(b) = self.blocks.get_mut(usize::from(k)) {
            *b -= 1;
        }
    }

    /// Takes a free block of `order` off the lists, splitting a larger one if
    /// needed. Returns its index, whether it may hold dirty frames, and
    /// whether it is lazy (every frame dirty, its bits clear). With
    /// `clean_only`, dirty blocks are not considered.
    #[inline]
    pub(crate) fn take_block(&mut self, order: u8, clean_only: bool) -> Option<(u32, bool, bool)> {
        self.take_block_inline(order, clean_only)
    }

    /// [`take_block`](Self::take_block), always inlined: for the allocation
    /// path, where a call and its register saves are a tenth of the work.
    #[inline(always)]
    fn take_block_inline(&mut self, order: u8, clean_only: bool) -> Option<(u32, bool, bool)> {
        let above = u32::MAX << order;
        let clean = self.nonempty[CLEAN] & above;
        let candidates = if clean_only {
            clean
        } else {
            clean | (self.nonempty[DIRTY] & above)
        };
        if candidates == 0 {
            return None;
        }
        let mut k = candidates.trailing_zeros() as u8;
        // Prefer a dirty block of the same order: clean memory is worth more to
        // the callers that ask for it.
        let mut dirty = !clean_only && self.nonempty[DIRTY] & (1 << k) != 0;
        let i = *self.heads.get(usize::from(dirty))?.get(usize::from(k))?;
        self.unlink_free(i, k, dirty);
        // `i + 1` is inside the block, never a list neighbour, so the
        // unlink left its `first_dirty` word alone.
        let (mut first_dirty, lazy) = if dirty {
            self.meta.dirty_word(i, k)
        } else {
            (0, false)
        };
        if k == order {
            // The common case: a block of the size asked for, whose
            // `first_dirty` is not needed (it is read only to split).
            self.meta.set_state(i, FrameState::allocated(order));
            self.free_frames -= 1 << order;
            return Some((i, dirty, lazy));
        }
        // Keep the lower half, give the upper halves back.
        if lazy {
            // Both halves are every frame dirty, bits clear: the upper ones
            // stay lazy, except a single frame, which gets its bit.
            while k > order {
                k -= 1;
                let half = 1u32 << k;
                if k == 0 {
                    self.meta.set_dirty(i + half, 1);
                }
                self.push_free(i + half, k, true, 0, k != 0);
            }
        }
        while k > order {
            k -= 1;
            let half = 1u32 << k;
            if dirty && first_dirty >= half {
                // Every dirty frame is in the upper half: the lower one is clean.
                self.push_free(i + half, k, true, first_dirty - half, false);
                dirty = false;
                first_dirty = 0;
            } else {
                // The upper half may or may not hold dirty frames; the scrubber
                // (or a later split) finds out from the per-frame bits.
                self.push_free(i + half, k, dirty, 0, false);
            }
        }
        self.meta.set_state(i, FrameState::allocated(order));
        self.free_frames -= 1 << order;
        Some((i, dirty, lazy))
    }

    /// Counts the block `(i, order)` just taken off the lists out of the
    /// dirty frames, clearing its dirty bits (none to clear when lazy).
    #[inline(always)]
    fn clean_taken(&mut self, i: u32, order: u8, dirty: bool, lazy: bool) {
        if lazy {
            self.dirty_frames -= 1 << order;
        } else if dirty {
            self.dirty_frames -= u64::from(self.meta.clean_block(i, order));
        }
    }

    /// [`clean_taken`](Self::clean_taken) of a dirty block that is not
    /// lazy, out of line: the bitmap code's registers would otherwise be
    /// saved on every allocation from the lists, lazy blocks' too.
    #[inline(never)]
    fn clean_taken_bits(&mut self, i: u32, order: u8) {
        self.dirty_frames -= u64::from(self.meta.clean_block(i, order));
    }

    /// Allocates a block; its frames may hold a previous user's data.
    #[inline]
    pub(crate) fn alloc(&mut self, order: u8) -> Option<Mfn> {
        if let Some(i) = self.pop_hot(order) {
            // A hot block is counted (free and dirty) by its list only, and
            // its dirty bits were never set (see `free`): nothing to update
            // but its state.
            self.meta.set_state(i, FrameState::allocated(order));
            return Some(self.mfn(i));
        }
        self.alloc_from_lists(order)
    }

    /// [`alloc`](Self::alloc) past the hot lists: a free block of the size
    /// asked for if there is one, taken as [`take_block`](Self::take_block)
    /// would (a dirty one first), else a split.
    #[inline(never)]
    fn alloc_from_lists(&mut self, order: u8) -> Option<Mfn> {
        let bit = 1u32.checked_shl(u32::from(order)).unwrap_or(0);
        let dirty = self.nonempty[DIRTY] & bit != 0;
        if !dirty && self.nonempty[CLEAN] & bit == 0 {
            return self.alloc_split(order);
        }
        // The common case, kept small (no split loop, few registers).
        let i = *self
            .heads
            .get(usize::from(dirty))?
            .get(usize::from(order))?;
        self.unlink_free(i, order, dirty);
        self.meta.set_state(i, FrameState::allocated(order));
        self.free_frames -= 1 << order;
        if dirty {
            if order == 0 {
                // Never lazy: one bit, inline (the default heap's common case).
                self.dirty_frames -= u64::from(self.meta.mark_clean(i, 1));
            } else if self.meta.is_lazy(i, order) {
                self.dirty_frames -= 1 << order;
            } else {
                self.clean_taken_bits(i, order);
            }
        }
        Some(self.mfn(i))
    }

    /// [`alloc_from_lists`](Self::alloc_from_lists) with no free block of
    /// the order asked for: split a larger one, or merge the hot lists.
    #[inline(never)]
    fn alloc_split(&mut self, order: u8) -> Option<Mfn> {
        let (i, dirty, lazy) = match self.take_block_inline(order, false) {
            Some(taken) => taken,
            None if self.any_hot() => {
                self.flush_hot();
                self.take_block(order, false)?
            }
            None => return None,
        };
        self.clean_taken(i, order, dirty, lazy);
        Some(self.mfn(i))
    }

    /// Takes the most recently freed block of order `k` off its hot list.
    #[inline]
    fn pop_hot(&mut self, k: u8) -> Option<u32> {
        let list = self.hot.get_mut(usize::from(k))?;
        if list.head == NIL {
            return None;
        }
        let i = list.head;
        list.head = self.meta.next(i);
        list.blocks -= 1;
        Some(i)
    }

    /// Whether any hot list holds a block.
    fn any_hot(&self) -> bool {
        self.hot.iter().any(|l| l.head != NIL)
    }

    /// Merges the `keep`-th and later blocks of hot list `s` (the oldest)
    /// into the free lists.
    #[inline(never)]
    fn merge_hot(&mut self, s: usize, keep: u32) {
        let k = s as u8;
        let Some(list) = self.hot.get_mut(s) else {
            return;
        };
        let mut rest = list.head;
        if keep == 0 {
            list.head = NIL;
        } else {
            let mut last = list.head;
            for _ in 1..keep {
                last = self.meta.next(last);
            }
            rest = self.meta.next(last);
            self.meta.set_next(last, NIL);
        }
        list.blocks = list.blocks.min(keep);
        while rest != NIL {
            let next = self.meta.next(rest);
            // Leaving its list, the block is counted by the zone.
            self.free_frames += 1 << k;
            self.dirty_frames += 1 << k;
            self.merge_freed(rest, k);
            rest = next;
        }
    }

    /// Merges every hot block into the free lists.
    pub(crate) fn flush_hot(&mut self) {
        for s in 0..HOT_LISTS {
            self.merge_hot(s, 0);
        }
    }

    /// Sets each hot list's limit to `frames` frames' worth of blocks of its
    /// order (0 turns hot lists off), merging what no longer fits.
    pub(crate) fn set_hot_frames(&mut self, frames: u32) {
        for s in 0..HOT_LISTS {
            let limit = frames >> s;
            if let Some(list) = self.hot.get_mut(s) {
                list.limit = limit;
                if list.blocks > limit {
                    self.merge_hot(s, limit);
                }
            }
        }
    }

    /// Frames on hot lists.
    pub(crate) fn hot_frames(&self) -> u64 {
        self.hot
            .iter()
            .enumerate()
            .map(|(k, l)| u64::from(l.blocks) << k)
            .sum()
    }

    /// Allocates a block whose frames are all clean: a clean block if there is
    /// one, otherwise a dirty block whose dirty frames are scrubbed now.
    pub(crate) fn alloc_clean(&mut self, order: u8, scrub: &mut impl FnMut(Mfn)) -> Option<Mfn> {
        let mut taken = self
            .take_block(order, true)
            .or_else(|| self.take_block(order, false));
        if taken.is_none() && self.any_hot() {
            self.flush_hot();
            taken = self.take_block(order, false);
        }
        let (i, dirty, lazy) = taken?;
        if lazy {
            // Every frame is dirty and has no bit to clear.
            let base = self.range.start().get();
            for j in i..i + (1 << order) {
                scrub(Mfn::new(base + u64::from(j)));
            }
            self.dirty_frames -= 1 << order;
        } else if dirty {
            let base = self.range.start();
            let mut budget = u64::MAX;
            let (cleared, _) = self
                .meta
                .scrub_frames(i, i + (1 << order), &mut budget, |j| {
                    scrub(Mfn::new(base.get() + u64::from(j)));
                });
            self.dirty_frames -= u64::from(cleared);
        }
        Some(self.mfn(i))
    }

    /// Frees the allocated block `(i, k)`: its frames become dirty and it merges
    /// with free buddies.
    #[inline]
    pub(crate) fn free(&mut self, i: u32, k: u8) -> Result<(), FreeError> {
        let state = self.meta.state(i);
        if state != FrameState::allocated(k) {
            return Err(self.free_error(state, k));
        }
        // An allocated block's dirty bits are clear. On a hot list the block
        // counts as free and dirty as a whole through its list, and its bits
        // stay clear, so that taking it back costs nothing; they are set, and
        // its frames counted by the zone, when it leaves the hot list to be
        // merged.
        if let Some(list) = self.hot.get_mut(usize::from(k))
            && list.blocks < list.limit
        {
            // The common case, kept free of calls so that it needs no saved
            // registers: link the block at the head of its hot list.
            self.meta.set_head(i, list.head, NIL, FrameState::hot(k));
            list.head = i;
            list.blocks += 1;
        } else {
            self.free_past_hot_room(i, k);
        }
        Ok(())
    }

    /// [`free`](Self::free) of a block whose hot list is full or off: the
    /// block merges at once, while its metadata is in the cache (the blocks
    /// already on the list stay there, to be handed out first).
    #[inline(never)]
    fn free_past_hot_room(&mut self, i: u32, k: u8) {
        self.free_frames += 1 << k;
        self.dirty_frames += 1 << k;
        // As `merge_freed`, inlined: this is every free when hot lists are
        // off, and every free that finds its hot list full.
        if k == 0 {
            self.meta.set_dirty(i, 1);
        }
        if let Some((b, bstate)) = self.free_buddy(i, k) {
            if k == 0 {
                // A single frame has its bit: no lazy merge to try.
                self.merge_bits(i, 0, true, 0, b, bstate);
            } else {
                self.merge_dirty(i, k, b, bstate);
            }
        } else {
            // The common case: nothing to merge, so the merge loop and its
            // registers stay out of this path.
            self.push_free(i, k, true, 0, k != 0);
        }
    }

    /// The buddy of block `(i, k)` and its state, if it is a free block of
    /// order `k` that the block may merge with.
    #[inline(always)]
    fn free_buddy(&self, i: u32, k: u8) -> Option<(u32, FrameState)> {
        if k >= self.max_order {
            return None;
        }
        let b = self.buddy_of(i, k)?;
        let bstate = self.meta.state(b);
        bstate.is_free_of_order(k).then_some((b, bstate))
    }

    /// Inserts the freed block `(i, k)` (lazy from order 1, its one bit set
    /// at order 0), merging it with its free buddy `b` (state `bstate`) and
    /// then up: [`merge_and_insert`](Self::merge_and_insert) with the first
    /// buddy already found.
    #[inline(never)]
    fn merge_dirty(&mut self, i: u32, k: u8, b: u32, bstate: FrameState) {
        self.merge_from(i, k, true, 0, k != 0, b, bstate);
    }

    /// Merges the free block `(i, k)` (dirty from `first_dirty` if `dirty`,
    /// or `lazy`) with its free buddy `b` of state `bstate`, then with the
    /// buddies of the merged blocks, and inserts the result.
    ///
    /// Two lazy buddies make a lazy block, bits still unset. Once a lazy
    /// block meets a buddy that is not lazy, its bits are set, and from
    /// there on the merged block's bits are the truth: a lazy buddy met
    /// later gets its bits set before it joins.
    #[inline(always)]
    #[expect(
        clippy::too_many_arguments,
        reason = "the merge state, kept in registers"
    )]
    fn merge_from(
        &mut self,
        mut i: u32,
        mut k: u8,
        dirty: bool,
        first_dirty: u32,
        lazy: bool,
        mut b: u32,
        mut bstate: FrameState,
    ) {
        if lazy {
            loop {
                let blazy = bstate.on_dirty_list() && self.meta.is_lazy(b, k);
                if !blazy {
                    // Every frame of `(i, k)` is dirty: from its first.
                    self.meta.set_block_dirty(i, k);
                    return self.merge_bits(i, k, true, 0, b, bstate);
                }
                self.unlink_free(b, k, true);
                if b < i {
                    self.meta.set_state(i, FrameState::TAIL);
                    i = b;
                } else {
                    self.meta.set_state(b, FrameState::TAIL);
                }
                k += 1;
                match self.free_buddy(i, k) {
                    Some((next, state)) => (b, bstate) = (next, state),
                    None => {
                        self.push_free(i, k, true, 0, true);
                        return;
                    }
                }
            }
        }
        self.merge_bits(i, k, dirty, first_dirty, b, bstate);
    }

    /// [`merge_from`](Self::merge_from) of a block whose dirty bits are the
    /// truth (not lazy).
    #[inline(never)]
    fn merge_bits(
        &mut self,
        mut i: u32,
        mut k: u8,
        mut dirty: bool,
        mut first_dirty: u32,
        mut b: u32,
        mut bstate: FrameState,
    ) {
        'merge: loop {
            // No call in this loop, so the arrays stay in registers; a lazy
            // buddy leaves it to get its bits, then comes back.
            loop {
                let bdirty = bstate.on_dirty_list();
                let (bfirst, blazy) = if bdirty {
                    self.meta.dirty_word(b, k)
                } else {
                    (0, false)
                };
                if blazy {
                    break;
                }
                self.unlink_free(b, k, bdirty);
                let half = 1u32 << k;
                if b < i {
                    first_dirty = if bdirty { bfirst } else { half + first_dirty };
                    self.meta.set_state(i, FrameState::TAIL);
                    i = b;
                } else {
                    first_dirty = if dirty { first_dirty } else { half + bfirst };
                    self.meta.set_state(b, FrameState::TAIL);
                }
                dirty |= bdirty;
                k += 1;
                match self.free_buddy(i, k) {
                    Some((next, state)) => (b, bstate) = (next, state),
                    None => break 'merge,
                }
            }
            // Every frame of the lazy buddy is dirty: set its bits, and it is
            // a dirty block from its first frame.
            self.set_lazy_bits(b, k);
        }
        self.push_free(i, k, dirty, if dirty { first_dirty } else { 0 }, false);
    }

    /// Sets the dirty bits of the free lazy block `(i, k)` (all of them) and
    /// makes it an ordinary dirty block; out of line, so that the merge loop
    /// stays small.
    #[cold]
    #[inline(never)]
    fn set_lazy_bits(&mut self, i: u32, k: u8) {
        self.meta.set_block_dirty(i, k);
        self.meta.set_first_dirty(i, k, 0);
    }

    /// Why freeing `(i, k)` with head state `state` is refused: out of
    /// line, so that the accepted free is one byte comparison.
    #[cold]
    #[inline(never)]
    fn free_error(&self, state: FrameState, k: u8) -> FreeError {
        if !state.is_allocated() {
            if state.is_reserved() {
                FreeError::Reserved
            } else {
                FreeError::NotAllocated
            }
        } else {
            debug_assert_ne!(state.order(), k);
            FreeError::WrongOrder {
                allocated: PageOrder::new(state.order()).unwrap_or(PageOrder::ZERO),
            }
        }
    }

    /// Merges a freed (or formerly hot) block whose dirty bits are clear and
    /// already counted in `dirty_frames`: lazy from order 1 (its bits stay
    /// unset), its one bit set at order 0. Out of line, so that the hot-list
    /// path stays small.
    #[inline(never)]
    fn merge_freed(&mut self, i: u32, k: u8) {
        debug_assert_eq!(
            self.meta.count_dirty(i, 1 << k),
            0,
            "an allocated block had dirty bits"
        );
        if k == 0 {
            self.meta.set_dirty(i, 1);
        }
        self.merge_and_insert(i, k, true, 0, k != 0);
    }

    /// Inserts the free block `(i, k)` (dirty from `first_dirty` if `dirty`,
    /// or `lazy`), first merging it with its buddies.
    #[inline(always)]
    fn merge_and_insert(&mut self, i: u32, k: u8, dirty: bool, first_dirty: u32, lazy: bool) {
        match self.free_buddy(i, k) {
            Some((b, bstate)) => self.merge_from(i, k, dirty, first_dirty, lazy, b, bstate),
            None => self.push_free(i, k, dirty, if dirty { first_dirty } else { 0 }, lazy),
        }
    }

    /// The head and state of the block holding frame `f` (see the invariant in
    /// `meta`): the first non-`TAIL` frame met while aligning `f` down.
    fn container(&self, f: u32) -> Option<(u32, FrameState)> {
        let base = self.range.start().get();
        let m = base + u64::from(f);
        for k in 0..=self.max_order {
            let head = (m & !((1u64 << k) - 1)).checked_sub(base)? as u32;
            let state = self.meta.state(head);
            if !state.is_tail() {
                let end = u64::from(head) + (1u64 << state.order());
                return (end > u64::from(f)).then_some((head, state));
            }
        }
        None
    }

    /// Takes the zone-relative frames `[start, end)` out of the free pool.
    pub(crate) fn reserve(&mut self, start: u32, end: u32) -> Result<(), ReserveError> {
        // Check every frame first, so that a refusal changes nothing (hot
        // blocks are free, too).
        let mut f = start;
        while f < end {
            match self.container(f) {
                Some((head, state)) if state.is_free() || state.is_hot() => {
                    f = head + (1 << state.order());
                }
                _ => return Err(ReserveError::NotFree { mfn: self.mfn(f) }),
            }
        }
        // Merge the hot blocks, so that every frame of the range sits in a
        // block on the free lists.
        if self.any_hot() {
            self.flush_hot();
        }
        let mut f = start;
        while f < end {
            let Some((head, state)) = self.container(f) else {
                debug_assert!(false, "free block vanished during reserve");
                break;
            };
            let (k, dirty) = (state.order(), state.on_dirty_list());
            if dirty && self.meta.is_lazy(head, k) {
                // The pieces below are cut by the bits: set them.
                self.meta.set_block_dirty(head, k);
            }
            self.unlink_free(head, k, dirty);
            let block_end = head + (1 << k);
            let (lo, hi) = (head.max(start), block_end.min(end));
            self.reinsert_piece(head, lo, dirty);
            self.reinsert_piece(hi, block_end, dirty);
            for j in lo..hi {
                self.meta.set_state(j, FrameState::RESERVED);
            }
            self.dirty_frames -= u64::from(self.meta.mark_clean(lo, hi - lo));
            self.free_frames -= u64::from(hi - lo);
            self.reserved_frames += u64::from(hi - lo);
            f = block_end;
        }
        Ok(())
    }

    /// Puts `[from, to)`, a piece of a free block cut by a reservation, back as
    /// maximal aligned blocks, each on the list its frames' dirty bits call for.
    fn reinsert_piece(&mut self, from: u32, to: u32, may_be_dirty: bool) {
        let Some(piece) = FrameRange::from_bounds(self.mfn(from), self.mfn(to)) else {
            return;
        };
        let max = PageOrder::new(self.max_order).unwrap_or(PageOrder::ZERO);
        for (mfn, order) in piece.aligned_blocks(max) {
            let i = self.index_in_zone(mfn);
            let first_dirty = if may_be_dirty {
                match self.meta.find_dirty(i, 1 << order.get(), u32::MAX) {
                    Ok(Some(at)) => Some(at - i),
                    _ => None,
                }
            } else {
                None
            };
            self.push_free(
                i,
                order.get(),
                first_dirty.is_some(),
                first_dirty.unwrap_or(0),
                false,
            );
        }
    }

    /// Gives the reserved zone-relative frames `[start, end)` back, dirty.
    pub(crate) fn release(&mut self, start: u32, end: u32) -> Result<(), ReleaseError> {
        if let Some(f) = (start..end).find(|&f| !self.meta.state(f).is_reserved()) {
            return Err(ReleaseError::NotReserved { mfn: self.mfn(f) });
        }
        let Some(range) = FrameRange::from_bounds(self.mfn(start), self.mfn(end)) else {
            return Ok(());
        };
        let max = PageOrder::new(self.max_order).unwrap_or(PageOrder::ZERO);
        for (mfn, order) in range.aligned_blocks(max) {
            let i = self.index_in_zone(mfn);
            let n = 1u32 << order.get();
            for j in i + 1..i + n {
                self.meta.set_state(j, FrameState::TAIL);
            }
            self.dirty_frames += u64::from(self.meta.mark_dirty(i, n));
            self.reserved_frames -= u64::from(n);
            self.free_frames += u64::from(n);
            self.merge_and_insert(i, order.get(), true, 0, false);
        }
        Ok(())
    }

    /// Scrubs dirty free frames, largest blocks first, spending at most
    /// `budget` units (one per frame scrubbed, one per clean 64-frame word
    /// skipped). Returns the frames scrubbed.
    pub(crate) fn scrub(&mut self, budget: &mut u64, scrub: &mut impl FnMut(Mfn)) -> u64 {
        let base = self.range.start();
        let mut scrubbed = 0;
        if *budget > 0 && self.any_hot() {
            // Hot blocks are dirty: give them to the scrubber.
            self.flush_hot();
        }
        while *budget > 0 && self.nonempty[DIRTY] != 0 {
            let k = (31 - self.nonempty[DIRTY].leading_zeros()) as u8;
            let Some(&i) = self.heads[DIRTY].get(usize::from(k)) else {
                break;
            };
            if self.meta.is_lazy(i, k) {
                // The scrubber goes by the bits: set them.
                self.meta.set_block_dirty(i, k);
                self.meta.set_first_dirty(i, k, 0);
            }
            let first = self.meta.first_dirty(i, k);
            let end = i + (1 << k);
            let (cleared, resume) =
                self.meta
                    .scrub_frames(i.saturating_add(first).min(end), end, budget, |j| {
                        scrub(Mfn::new(base.get() + u64::from(j)));
                    });
            self.dirty_frames -= u64::from(cleared);
            scrubbed += u64::from(cleared);
            match resume {
                Some(at) => self.meta.set_first_dirty(i, k, at - i),
                None => {
                    self.unlink_free(i, k, true);
                    self.push_free(i, k, false, 0, false);
                }
            }
        }
        scrubbed
    }

    pub(crate) fn free_frames(&self) -> u64 {
        self.free_frames + self.hot_frames()
    }

    pub(crate) fn dirty_frames(&self) -> u64 {
        self.dirty_frames + self.hot_frames()
    }

    pub(crate) fn reserved_frames(&self) -> u64 {
        self.reserved_frames
    }

    /// Free blocks of order `k`, hot ones included.
    pub(crate) fn free_blocks(&self, k: usize) -> u32 {
        let hot = self.hot.get(k).map_or(0, |l| l.blocks);
        self.blocks.get(k).copied().unwrap_or(0) + hot
    }

    /// The order of the largest free block, if any (hot ones included).
    pub(crate) fn largest_free(&self) -> Option<u8> {
        let mut all = self.nonempty[CLEAN] | self.nonempty[DIRTY];
        for (k, list) in self.hot.iter().enumerate() {
            if list.blocks != 0 {
                all |= 1 << k;
            }
        }
        (all != 0).then(|| (31 - all.leading_zeros()) as u8)
    }

    /// Whether the zone holds a clean free block of at least `order`.
    pub(crate) fn has_clean(&self, order: u8) -> bool {
        self.nonempty[CLEAN] & (u32::MAX << order) != 0
    }
}

//! Per-frame metadata in caller-provided storage.
//!
//! A zone of `n` frames keeps, in one `&mut [u64]` that the embedder hands in:
//!
//! | part   | words      | per frame | holds |
//! |--------|------------|-----------|-------|
//! | frame words | `n`   | 8 bytes   | the frame's [`FrameState`] byte and, for the head of a free block, its free-list `next` and `prev` (28 bits each); for the frame after the head of a free dirty block of order >= 1, the block's `first_dirty` offset, or the mark of a lazy block, in its `next` field |
//! | dirty  | `ceil(n/64)`| 1 bit    | the frame holds data of its last user and must be scrubbed before anyone who asked for clean memory gets it |
//!
//! That is 8.125 bytes per frame plus rounding: 0.198% of the 4 KiB a frame
//! holds. [`metadata_words`] gives the exact size.
//!
//! The state byte shares its word with the links, so validating a block
//! (its state) and linking or unlinking it (its links) touch one cache line,
//! not two. The price is the 28-bit links: a zone has fewer than
//! [`MAX_ZONE_FRAMES`] frames (1 TiB of 4 KiB frames).
//!
//! ## The state byte, and the invariant that makes O(1) checks possible
//!
//! Only the first frame of a block (its *head*) carries the block's state; every
//! other frame of a block is [`FrameState::TAIL`]. A head is written whenever a
//! block is created (split, merge, allocation, release) and a head that stops
//! being one (its block merged into a larger one) is reset to `TAIL`, so:
//!
//! > a frame's state is not `TAIL` if and only if the frame heads a block.
//!
//! Hence a free is validated by one byte read (is this frame the head of an
//! allocated block of this order?), a buddy is tested by one byte read (is the
//! buddy the head of a free block of the same order?), and the block holding any
//! frame is found by at most `MAX_ORDER + 1` reads (the first non-`TAIL` frame met
//! while aligning the frame down to growing orders heads the block).
//!
//! Reserved frames are the exception that keeps reservations exact: each one is
//! its own order-0 head, so any sub-range of a reservation can be released.

use zerocopy::{FromBytes, IntoBytes};

/// The sentinel for "no frame" in free-list links: the largest value of a
/// 28-bit link field.
pub(crate) const NIL: u32 = (1 << LINK_BITS) - 1;

/// Bits of each free-list link in a frame word.
const LINK_BITS: u32 = 28;

/// A zone has fewer frames than this (`2^28 - 1`, 1 TiB of 4 KiB frames):
/// every frame index and the index one past it fit a 28-bit free-list link
/// and differ from its "no frame" value.
pub const MAX_ZONE_FRAMES: u64 = NIL as u64;

/// The `first_dirty` of a lazy dirty block (see [`FrameMeta::is_lazy`]):
/// no offset into a block of a zone (offsets are below its frame count).
const LAZY: u32 = NIL;

/// The `next` field of a frame word.
const NEXT_MASK: u64 = NIL as u64;
/// The `prev` field of a frame word.
const PREV_MASK: u64 = (NIL as u64) << LINK_BITS;
/// The state byte of a frame word: its last byte, little-endian.
const STATE_BYTE: usize = 7;

/// Words of metadata a zone of `frames` frames needs: see the module docs.
///
/// Returns `usize::MAX` (which no slice can satisfy) if the count overflows.
#[must_use]
pub const fn metadata_words(frames: u64) -> usize {
    let words = frames;
    let dirty = frames.div_ceil(64);
    match words.checked_add(dirty) {
        Some(total) if total <= usize::MAX as u64 => total as usize,
        _ => usize::MAX,
    }
}

/// Bytes of metadata a zone of `frames` frames needs (8 times
/// [`metadata_words`]).
#[must_use]
pub const fn metadata_bytes(frames: u64) -> usize {
    metadata_words(frames).saturating_mul(8)
}

/// The state byte of a frame: a kind in the top two bits, a "possibly dirty"
/// list flag, and an order in the low five bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct FrameState(u8);

impl FrameState {
    const KIND_MASK: u8 = 0b1100_0000;
    const FREE: u8 = 0b0100_0000;
    const ALLOCATED: u8 = 0b1000_0000;
    const RESERVED_KIND: u8 = 0b1100_0000;
    const ON_DIRTY_LIST: u8 = 0b0010_0000;
    const ORDER_MASK: u8 = 0b0001_1111;

    /// Not a head: the frame belongs to the block headed by a lower frame.
    pub(crate) const TAIL: Self = Self(0);
    /// A reserved frame (its own order-0 head).
    pub(crate) const RESERVED: Self = Self(Self::RESERVED_KIND);

    /// The head of a free block of order `k`, on the dirty list if `dirty`.
    pub(crate) const fn free(k: u8, dirty: bool) -> Self {
        Self(Self::FREE | (k & Self::ORDER_MASK) | if dirty { Self::ON_DIRTY_LIST } else { 0 })
    }

    /// The head of an allocated block of order `k`.
    pub(crate) const fn allocated(k: u8) -> Self {
        Self(Self::ALLOCATED | (k & Self::ORDER_MASK))
    }

    /// The head of a free block of order `k` on a hot list: free, but not
    /// merged, so to the merge loop it looks taken (the dirty-list flag
    /// marks it under the allocated kind).
    pub(crate) const fn hot(k: u8) -> Self {
        Self(Self::ALLOCATED | Self::ON_DIRTY_LIST | (k & Self::ORDER_MASK))
    }

    pub(crate) const fn is_tail(self) -> bool {
        self.0 == 0
    }

    pub(crate) const fn is_free(self) -> bool {
        self.0 & Self::KIND_MASK == Self::FREE
    }

    pub(crate) const fn is_allocated(self) -> bool {
        self.0 & (Self::KIND_MASK | Self::ON_DIRTY_LIST) == Self::ALLOCATED
    }

    /// Whether this is the head of a block on a hot list.
    pub(crate) const fn is_hot(self) -> bool {
        self.0 & (Self::KIND_MASK | Self::ON_DIRTY_LIST) == Self::ALLOCATED | Self::ON_DIRTY_LIST
    }

    pub(crate) const fn is_reserved(self) -> bool {
        self.0 & Self::KIND_MASK == Self::RESERVED_KIND
    }

    /// Whether a free head is on the dirty list.
    pub(crate) const fn on_dirty_list(self) -> bool {
        self.0 & Self::ON_DIRTY_LIST != 0
    }

    /// The order of a head (0 for `TAIL` and reserved frames).
    pub(crate) const fn order(self) -> u8 {
        self.0 & Self::ORDER_MASK
    }

    /// Whether this is the head of a free block of order exactly `k` (on
    /// either list): the buddy test of the merge loop.
    pub(crate) const fn is_free_of_order(self, k: u8) -> bool {
        self.0 & !Self::ON_DIRTY_LIST == Self::FREE | k
    }
}

/// The two arrays of a zone, carved out of the embedder's slice.
///
/// Every accessor takes a zone-relative frame index. Callers keep indices below
/// the zone's frame count (the zone checks guest-supplied frames before they get
/// here); an out-of-range index reads as "no frame" and writes are dropped, so a
/// broken internal invariant degrades into a refused operation, never a panic.
#[derive(Debug)]
pub(crate) struct FrameMeta<'m> {
    /// One little-endian word per frame: `next` in bits 0-27, `prev` in
    /// bits 28-55, the state byte in bits 56-63 (its last byte, so that
    /// writing a state is a byte store).
    words: &'m mut [[u8; 8]],
    dirty: &'m mut [u64],
}

impl<'m> FrameMeta<'m> {
    /// Carves the arrays for `frames` frames out of `storage` and resets them:
    /// every frame `TAIL`, no link, nothing dirty. Returns `None` if `storage`
    /// is shorter than [`metadata_words`]`(frames)`.
    pub(crate) fn new(storage: &'m mut [u64], frames: u32) -> Option<Self> {
        let n = frames as usize;
        let needed = metadata_words(u64::from(frames));
        let storage = storage.get_mut(..needed)?;
        if u64::from(frames) >= MAX_ZONE_FRAMES {
            return None;
        }
        let (frame_words, dirty) = storage.split_at_mut(n);
        // Infallible: a `u64` slice is a whole number of `[u8; 8]`.
        let words = <[[u8; 8]]>::mut_from_bytes(frame_words.as_mut_bytes()).ok()?;
        words.fill(word(NIL, NIL, FrameState::TAIL));
        dirty.fill(0);
        Some(Self { words, dirty })
    }

    #[inline]
    fn load(&self, i: u32) -> Option<u64> {
        self.words.get(i as usize).map(|w| u64::from_le_bytes(*w))
    }

    #[inline]
    pub(crate) fn state(&self, i: u32) -> FrameState {
        // An index past the zone reads as TAIL: never a head, never free.
        FrameState(self.words.get(i as usize).map_or(0, |w| w[STATE_BYTE]))
    }

    #[inline]
    pub(crate) fn set_state(&mut self, i: u32, s: FrameState) {
        if let Some(w) = self.words.get_mut(i as usize) {
            w[STATE_BYTE] = s.0;
        }
    }

    #[inline]
    pub(crate) fn next(&self, i: u32) -> u32 {
        self.load(i).map_or(NIL, |w| (w & NEXT_MASK) as u32)
    }

    /// `(next, prev)` of frame `i`, in one read.
    #[inline]
    pub(crate) fn links(&self, i: u32) -> (u32, u32) {
        self.load(i).map_or((NIL, NIL), |w| {
            (
                (w & NEXT_MASK) as u32,
                ((w & PREV_MASK) >> LINK_BITS) as u32,
            )
        })
    }

    /// Sets `next` and `prev` of frame `i` and its state, in one store.
    #[inline]
    pub(crate) fn set_head(&mut self, i: u32, next: u32, prev: u32, s: FrameState) {
        if let Some(w) = self.words.get_mut(i as usize) {
            *w = word(next, prev, s);
        }
    }

    /// Rewrites the bits of frame `i`'s word under `mask` with `bits`.
    #[inline]
    fn update(&mut self, i: u32, mask: u64, bits: u64) {
        if let Some(w) = self.words.get_mut(i as usize) {
            let old = u64::from_le_bytes(*w);
            *w = ((old & !mask) | (bits & mask)).to_le_bytes();
        }
    }

    #[inline]
    pub(crate) fn set_next(&mut self, i: u32, next: u32) {
        self.update(i, NEXT_MASK, u64::from(next));
    }

    #[inline]
    pub(crate) fn set_prev(&mut self, i: u32, prev: u32) {
        self.update(i, PREV_MASK, u64::from(prev) << LINK_BITS);
    }

    /// The offset of the first possibly dirty frame of the free block of order
    /// `k >= 1` headed at `i`. Kept in the links word of frame `i + 1`, which no
    /// list uses while that frame is inside a free block.
    #[inline]
    pub(crate) fn first_dirty(&self, i: u32, k: u8) -> u32 {
        if k == 0 {
            0
        } else {
            self.next(i.wrapping_add(1))
        }
    }

    /// Records `offset` as the `first_dirty` of the free dirty block of
    /// order `k >= 1` at `i`, whose dirty bits are the truth (not
    /// [lazy](Self::is_lazy)).
    #[inline]
    pub(crate) fn set_first_dirty(&mut self, i: u32, k: u8, offset: u32) {
        if k != 0 {
            self.set_next(i.wrapping_add(1), offset);
        }
    }

    /// Whether the free dirty block of order `k` at `i` is *lazy*: every
    /// frame dirty, but its dirty bits not set (all clear). Marked by a
    /// `first_dirty` of [`LAZY`], so on the line the block's links are on;
    /// order-0 blocks are never lazy.
    #[inline]
    pub(crate) fn is_lazy(&self, i: u32, k: u8) -> bool {
        k != 0 && self.next(i.wrapping_add(1)) == LAZY
    }

    /// The `first_dirty` offset of the free dirty block of order `k` at `i`
    /// and whether it is [lazy](Self::is_lazy) (then the offset is 0), in
    /// one read.
    #[inline]
    pub(crate) fn dirty_word(&self, i: u32, k: u8) -> (u32, bool) {
        let first = self.first_dirty(i, k);
        if first == LAZY {
            (0, true)
        } else {
            (first, false)
        }
    }

    /// Makes the free dirty block of order `k >= 1` at `i`, whose dirty
    /// bits are all clear, lazy: every frame counts as dirty from its first.
    #[inline]
    pub(crate) fn set_lazy(&mut self, i: u32, k: u8) {
        self.set_first_dirty(i, k, LAZY);
    }

    #[cfg(test)]
    pub(crate) fn is_dirty(&self, i: u32) -> bool {
        self.dirty
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Marks the frames `[i, i + n)` dirty; returns how many were clean.
    #[inline]
    pub(crate) fn mark_dirty(&mut self, i: u32, n: u32) -> u32 {
        if let Some((w, mask)) = self.word_of_span(i, n) {
            // Within one word (every block below 64 frames, being aligned):
            // one masked update, the all-clean case counted without a
            // popcount.
            let newly = count_bits(!*w & mask, mask, n);
            *w |= mask;
            return newly;
        }
        if let Some(words) = self.whole_words(i, n) {
            // A block of 64 frames or more, word-aligned: whole words, and the
            // common all-clean word counted without a popcount.
            let mut newly = 0;
            for w in words {
                newly += count_bits(!*w, u64::MAX, 64);
                *w = u64::MAX;
            }
            return newly;
        }
        let mut newly = 0;
        self.for_each_word(i, n, |w, mask| {
            newly += (!*w & mask).count_ones();
            *w |= mask;
        });
        newly
    }

    /// Marks the frames `[i, i + n)` dirty without reading the bits first:
    /// for a freed block, whose bits are known to be clear (an allocated
    /// block's always are).
    #[inline]
    pub(crate) fn set_dirty(&mut self, i: u32, n: u32) {
        if n == 1 {
            if let Some(w) = self.dirty.get_mut(i as usize / 64) {
                *w |= 1 << (i % 64);
            }
            return;
        }
        if let Some((w, mask)) = self.word_of_span(i, n) {
            *w |= mask;
            return;
        }
        if let Some(words) = self.whole_words(i, n) {
            fill_words(words, u64::MAX);
            return;
        }
        self.for_each_word(i, n, |w, mask| *w |= mask);
    }

    /// Marks the `2^k` frames at `i` dirty without reading their bits (as
    /// [`set_dirty`](Self::set_dirty)). When `i` is aligned to the block's
    /// size in the zone's bitmap (always, for a zone starting on a 64-frame
    /// boundary), a block below 64 frames is one masked word and a larger one
    /// whole words, with none of the general span's checks.
    #[inline(always)]
    pub(crate) fn set_block_dirty(&mut self, i: u32, k: u8) {
        if k == 0 || !bitmap_aligned(i, k) {
            self.set_dirty(i, 1 << k);
        } else if k < 6 {
            if let Some(w) = self.dirty.get_mut(i as usize / 64) {
                *w |= block_mask(i, k);
            }
        } else if let Some(words) = self.block_words(i, k) {
            fill_words(words, u64::MAX);
        }
    }

    /// Marks the `2^k` frames at `i` clean; returns how many were dirty (as
    /// [`mark_clean`](Self::mark_clean), on the fast path of
    /// [`set_block_dirty`](Self::set_block_dirty) when `i` is aligned).
    #[inline(always)]
    pub(crate) fn clean_block(&mut self, i: u32, k: u8) -> u32 {
        if k == 0 || !bitmap_aligned(i, k) {
            return self.mark_clean(i, 1 << k);
        }
        if k < 6 {
            let Some(w) = self.dirty.get_mut(i as usize / 64) else {
                return 0;
            };
            let mask = block_mask(i, k);
            let cleared = count_bits(*w & mask, mask, 1 << k);
            *w &= !mask;
            return cleared;
        }
        let Some(words) = self.block_words(i, k) else {
            return 0;
        };
        take_words(words)
    }

    /// The bitmap words of the aligned block of order `k >= 6` at `i`.
    #[inline]
    fn block_words(&mut self, i: u32, k: u8) -> Option<&mut [u64]> {
        let first = i as usize / 64;
        // Orders are at most 30 (the state byte's five bits), so the shift
        // is below 32 and the sum far from overflowing.
        let count = 1usize << (u32::from(k).checked_sub(6)? & 31);
        self.dirty.get_mut(first..first + count)
    }

    /// How many of the frames `[i, i + n)` are dirty (for debug checks).
    pub(crate) fn count_dirty(&self, i: u32, n: u32) -> u32 {
        let end = i.saturating_add(n);
        let mut at = i;
        let mut count = 0;
        while at < end {
            let bit = at % 64;
            let span = (64 - bit).min(end - at);
            let word = self.dirty.get(at as usize / 64).copied().unwrap_or(0);
            count += (word & span_mask(bit, span)).count_ones();
            at += span;
        }
        count
    }

    /// Marks the frames `[i, i + n)` clean; returns how many were dirty.
    #[inline]
    pub(crate) fn mark_clean(&mut self, i: u32, n: u32) -> u32 {
        if n == 1 {
            // The single-frame case, which dominates: one bit.
            let Some(w) = self.dirty.get_mut(i as usize / 64) else {
                return 0;
            };
            let bit = 1u64 << (i % 64);
            let cleared = u32::from(*w & bit != 0);
            *w &= !bit;
            return cleared;
        }
        if let Some((w, mask)) = self.word_of_span(i, n) {
            let cleared = count_bits(*w & mask, mask, n);
            *w &= !mask;
            return cleared;
        }
        if let Some(words) = self.whole_words(i, n) {
            let mut cleared = 0;
            for w in words.iter() {
                cleared += count_bits(*w, u64::MAX, 64);
            }
            fill_words(words, 0);
            return cleared;
        }
        let mut cleared = 0;
        self.for_each_word(i, n, |w, mask| {
            cleared += (*w & mask).count_ones();
            *w &= !mask;
        });
        cleared
    }

    /// The first dirty frame in `[i, i + n)`, scanning at most `max_words`
    /// bitmap words; `Err(resume)` if the scan stopped early at `resume`.
    pub(crate) fn find_dirty(&self, i: u32, n: u32, max_words: u32) -> Result<Option<u32>, u32> {
        let end = i.saturating_add(n);
        let mut at = i;
        let mut words = 0;
        while at < end {
            if words == max_words {
                return Err(at);
            }
            words += 1;
            let word = self.dirty.get(at as usize / 64).copied().unwrap_or(0);
            let bit = at % 64;
            let span = (64 - bit).min(end - at);
            let mask = span_mask(bit, span);
            let hits = word & mask;
            if hits != 0 {
                return Ok(Some(at - bit + hits.trailing_zeros()));
            }
            at += span;
        }
        Ok(None)
    }

    /// Scrubs the dirty frames of `[from, to)` in order, calling `scrub` with
    /// each one's index and clearing its bit. Spends one unit of `budget` per
    /// frame scrubbed and one per clean word skipped; stops when the budget is
    /// spent. Returns the frames cleared and, if it stopped early, where to
    /// resume.
    pub(crate) fn scrub_frames(
        &mut self,
        from: u32,
        to: u32,
        budget: &mut u64,
        mut scrub: impl FnMut(u32),
    ) -> (u32, Option<u32>) {
        let mut cleared = 0;
        let mut at = from;
        while at < to {
            if *budget == 0 {
                return (cleared, Some(at));
            }
            let bit = at % 64;
            let span = (64 - bit).min(to - at);
            let Some(word) = self.dirty.get_mut(at as usize / 64) else {
                break;
            };
            let mut hits = *word & span_mask(bit, span);
            if hits == 0 {
                *budget -= 1;
            }
            while hits != 0 {
                let b = hits.trailing_zeros();
                if *budget == 0 {
                    return (cleared, Some(at - bit + b));
                }
                scrub(at - bit + b);
                *word &= !(1 << b);
                hits &= hits - 1;
                cleared += 1;
                *budget -= 1;
            }
            at += span;
        }
        (cleared, None)
    }

    /// The bitmap word holding `[i, i + n)` and the span's mask in it, when
    /// the span (of 1 to 64 frames) lies within one word.
    #[inline]
    fn word_of_span(&mut self, i: u32, n: u32) -> Option<(&mut u64, u64)> {
        let bit = i % 64;
        if n == 0 || n > 64 - bit {
            return None;
        }
        let w = self.dirty.get_mut(i as usize / 64)?;
        Some((w, span_mask(bit, n)))
    }

    /// The bitmap words of `[i, i + n)` when the span covers whole words.
    #[inline]
    fn whole_words(&mut self, i: u32, n: u32) -> Option<&mut [u64]> {
        if i % 64 != 0 || n % 64 != 0 {
            return None;
        }
        let first = i as usize / 64;
        self.dirty.get_mut(first..first + n as usize / 64)
    }

    fn for_each_word(&mut self, i: u32, n: u32, mut f: impl FnMut(&mut u64, u64)) {
        let end = i.saturating_add(n);
        let mut at = i;
        while at < end {
            let bit = at % 64;
            let span = (64 - bit).min(end - at);
            if let Some(w) = self.dirty.get_mut(at as usize / 64) {
                f(w, span_mask(bit, span));
            }
            at += span;
        }
    }
}

/// A frame word of links `next` and `prev` (kept to their 28 bits, so that
/// a broken invariant cannot reach the state byte) and state `s`.
#[inline]
const fn word(next: u32, prev: u32, s: FrameState) -> [u8; 8] {
    let w = (next as u64 & NEXT_MASK)
        | ((prev as u64) << LINK_BITS & PREV_MASK)
        | (s.0 as u64) << (8 * STATE_BYTE);
    w.to_le_bytes()
}

/// The set bits of `bits`, a subset of `mask` (which has `n` bits set):
/// the empty and full cases without a popcount, which is a dozen
/// instructions on targets without one.
#[inline]
const fn count_bits(bits: u64, mask: u64, n: u32) -> u32 {
    if bits == 0 {
        0
    } else if bits == mask {
        n
    } else {
        bits.count_ones()
    }
}

/// Sets every word of `words` to `value`; the block sizes of orders 6 to 9
/// (1 to 8 words) as fixed-size stores rather than a `memset` call.
#[inline]
fn fill_words(words: &mut [u64], value: u64) {
    if let Ok(w) = <&mut [u64; 1]>::try_from(&mut *words) {
        *w = [value; 1];
    } else if let Ok(w) = <&mut [u64; 2]>::try_from(&mut *words) {
        *w = [value; 2];
    } else if let Ok(w) = <&mut [u64; 4]>::try_from(&mut *words) {
        *w = [value; 4];
    } else if let Ok(w) = <&mut [u64; 8]>::try_from(&mut *words) {
        *w = [value; 8];
    } else {
        words.fill(value);
    }
}

/// Clears `words` and returns how many bits were set; the block sizes of
/// orders 6 to 9 (1 to 8 words) as fixed-size code whose common case, a
/// block freed whole (every bit set), is one AND over the words rather than
/// a test per word.
#[inline(always)]
fn take_words(words: &mut [u64]) -> u32 {
    #[inline(always)]
    fn fixed<const N: usize>(w: &mut [u64; N]) -> u32 {
        let all = w.iter().fold(u64::MAX, |acc, &x| acc & x);
        let set = if all == u64::MAX {
            64 * N as u32
        } else {
            w.iter().map(|&x| count_bits(x, u64::MAX, 64)).sum()
        };
        *w = [0; N];
        set
    }
    if let Ok(w) = <&mut [u64; 1]>::try_from(&mut *words) {
        fixed(w)
    } else if let Ok(w) = <&mut [u64; 2]>::try_from(&mut *words) {
        fixed(w)
    } else if let Ok(w) = <&mut [u64; 4]>::try_from(&mut *words) {
        fixed(w)
    } else if let Ok(w) = <&mut [u64; 8]>::try_from(&mut *words) {
        fixed(w)
    } else {
        let mut set = 0;
        for w in words.iter_mut() {
            set += count_bits(*w, u64::MAX, 64);
            *w = 0;
        }
        set
    }
}

/// Whether `2^k` frames at `i` start on a multiple of their size, or of a
/// whole bitmap word for 64 frames or more.
#[inline]
const fn bitmap_aligned(i: u32, k: u8) -> bool {
    let size = if k < 6 { 1u32 << k } else { 64 };
    i % size == 0
}

/// The bits of the aligned block of order `k < 6` at `i` in its word.
#[inline]
const fn block_mask(i: u32, k: u8) -> u64 {
    ((1u64 << (1u32 << k)) - 1) << (i % 64)
}

/// Bits `[bit, bit + span)` of a word; `1 <= span <= 64 - bit`.
#[inline]
const fn span_mask(bit: u32, span: u32) -> u64 {
    if span >= 64 {
        u64::MAX
    } else {
        ((1u64 << span) - 1) << bit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_stays_under_a_quarter_percent_of_managed_memory() {
        let frames = 1u64 << 18;
        let bytes = metadata_bytes(frames) as u64;
        assert!(
            bytes * 400 <= frames * 4096,
            "{bytes} bytes for {frames} frames"
        );
    }

    #[test]
    fn metadata_size_overflow_is_unsatisfiable() {
        assert_eq!(metadata_words(u64::MAX), usize::MAX);
    }

    #[test]
    fn short_storage_is_refused() {
        // 9 frames need 9 frame words and one dirty word; 10 need 11.
        let mut words = [0u64; 10];
        assert!(FrameMeta::new(&mut words, 10).is_none());
        assert!(FrameMeta::new(&mut words, 9).is_some());
    }

    #[test]
    fn zones_reaching_the_link_limit_get_no_metadata() {
        let mut words = [0u64; 4];
        assert!(FrameMeta::new(&mut words, NIL).is_none());
        assert!(FrameMeta::new(&mut words, u32::MAX).is_none());
    }

    #[test]
    fn link_writes_leave_the_state_byte_alone_and_state_writes_leave_the_links() {
        let mut words = [0u64; 40];
        let mut m = FrameMeta::new(&mut words, 32).unwrap();
        let last = NIL - 1;
        let states = [
            FrameState::TAIL,
            FrameState::free(30, true),
            FrameState::allocated(17),
            FrameState::hot(9),
            FrameState::RESERVED,
        ];
        for (i, s) in (0..).zip(states) {
            m.set_head(i, last, 0, s);
            assert_eq!((m.state(i), m.links(i)), (s, (last, 0)));
            m.set_next(i, NIL);
            m.set_prev(i, last);
            assert_eq!((m.state(i), m.links(i)), (s, (NIL, last)));
            // A value past the link field is cut to it, never reaching the
            // state byte.
            m.set_next(i, u32::MAX);
            m.set_prev(i, u32::MAX);
            assert_eq!((m.state(i), m.links(i)), (s, (NIL, NIL)));
            m.set_state(i, FrameState::free(0, false));
            assert_eq!(m.links(i), (NIL, NIL));
            m.set_state(i, s);
            // The `first_dirty` word of a block is the next frame's `next`.
            m.set_first_dirty(i, 1, 5);
            assert_eq!(m.state(i + 1), FrameState::TAIL);
            assert_eq!(m.first_dirty(i, 1), 5);
            assert_eq!(m.state(i), s);
        }
        // Past the zone: reads are "no frame", writes dropped.
        m.set_head(32, 1, 1, FrameState::allocated(0));
        assert_eq!((m.state(32), m.links(32)), (FrameState::TAIL, (NIL, NIL)));
    }

    #[test]
    fn dirty_bitmap_counts_transitions_across_words() {
        let mut words = [0u64; 200];
        let mut m = FrameMeta::new(&mut words, 150).unwrap();
        assert_eq!(m.mark_dirty(60, 10), 10);
        assert_eq!(m.mark_dirty(65, 10), 5);
        assert_eq!(m.find_dirty(0, 150, 10), Ok(Some(60)));
        assert_eq!(m.find_dirty(75, 75, 10), Ok(None));
        assert_eq!(m.find_dirty(0, 150, 0), Err(0));
        assert_eq!(m.mark_clean(0, 150), 15);
        assert!(!m.is_dirty(64));
    }

    #[test]
    fn dirty_bitmap_counts_are_exact_for_empty_full_and_mixed_spans() {
        let mut words = [0u64; 1200];
        let mut m = FrameMeta::new(&mut words, 1024).unwrap();
        // Within one word: all clean, partly dirty, all dirty.
        assert_eq!(m.mark_dirty(8, 8), 8);
        assert_eq!(m.mark_dirty(0, 16), 8);
        assert_eq!(m.mark_dirty(0, 16), 0);
        assert_eq!(m.mark_clean(4, 8), 8);
        assert_eq!(m.mark_clean(0, 16), 8);
        assert_eq!(m.count_dirty(0, 64), 0);
        // Whole words, in the fixed-size (1, 2, 4, 8 words) and general cases.
        for words in [1u32, 2, 4, 8, 16] {
            let n = 64 * words;
            m.set_dirty(0, n);
            assert_eq!(m.count_dirty(0, 1024), n, "{words} words set");
            assert_eq!(m.mark_clean(0, n), n, "{words} words all dirty");
            m.set_dirty(3, 1);
            m.set_dirty(n - 1, 1);
            assert_eq!(m.mark_dirty(0, n), n - 2, "{words} words, two dirty");
            assert_eq!(m.mark_clean(0, n), n);
            assert_eq!(m.mark_clean(0, n), 0, "{words} words all clean");
        }
        assert_eq!(m.count_dirty(0, 1024), 0);
    }

    #[test]
    fn block_bitmap_updates_match_the_general_span_updates() {
        let mut a_words = [0u64; 1200];
        let mut b_words = [0u64; 1200];
        let mut a = FrameMeta::new(&mut a_words, 1024).unwrap();
        let mut b = FrameMeta::new(&mut b_words, 1024).unwrap();
        // A few scattered dirty frames, then every aligned block of orders
        // 0 to 10 set and cleaned both ways.
        for f in [0, 5, 63, 64, 130, 511, 700] {
            a.set_dirty(f, 1);
            b.set_dirty(f, 1);
        }
        for k in 0..=8u8 {
            let n = 1u32 << k;
            // Aligned blocks, and blocks as a zone starting off a 64-frame
            // boundary sees them (shifted by 3 frames).
            let aligned = (0..768).step_by(n as usize).take(5);
            for i in aligned.clone().chain(aligned.map(|i| i + 3)) {
                assert_eq!(
                    a.clean_block(i, k),
                    b.mark_clean(i, n),
                    "clean {i} order {k}"
                );
                a.set_block_dirty(i, k);
                b.set_dirty(i, n);
                assert_eq!(a.count_dirty(0, 1024), b.count_dirty(0, 1024));
                assert_eq!(a.clean_block(i, k), n, "order {k} all dirty");
                assert_eq!(b.mark_clean(i, n), n);
            }
        }
    }

    #[test]
    fn cleaning_a_block_counts_its_dirty_frames_whether_all_some_or_none_are_dirty() {
        let mut words = [0u64; 2400];
        let mut m = FrameMeta::new(&mut words, 2048).unwrap();
        // Orders 6 to 10: 1, 2, 4, 8 words (the fixed-size cases) and 16.
        for k in 6..=10u8 {
            let n = 1u32 << k;
            for at in [0, n] {
                assert_eq!(m.clean_block(at, k), 0, "order {k} all clean");
                m.set_block_dirty(at, k);
                assert_eq!(m.clean_block(at, k), n, "order {k} all dirty");
                assert_eq!(m.count_dirty(0, 2048), 0);
                // One clean frame in the last word, one dirty frame alone.
                m.set_block_dirty(at, k);
                assert_eq!(m.mark_clean(at + n - 1, 1), 1);
                assert_eq!(m.clean_block(at, k), n - 1, "order {k} all but one");
                m.set_dirty(at + n / 2, 1);
                assert_eq!(m.clean_block(at, k), 1, "order {k} one dirty");
                assert_eq!(m.count_dirty(0, 2048), 0);
            }
        }
    }

    #[test]
    fn state_byte_round_trips() {
        let s = FrameState::free(18, true);
        assert!(s.is_free() && s.on_dirty_list() && s.order() == 18);
        assert!(s.is_free_of_order(18) && !s.is_free_of_order(17));
        assert!(FrameState::allocated(3).is_allocated());
        assert!(FrameState::RESERVED.is_reserved());
        assert!(FrameState::TAIL.is_tail());
    }
}

//! Half-open ranges of machine frames.

use core::fmt;

use crate::{Mfn, PageOrder};

/// The machine frames `[start, end)`. Never wraps: `start <= end` always holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FrameRange {
    start: Mfn,
    end: Mfn,
}

impl FrameRange {
    /// `count` frames from `start`, or `None` if the end overflows.
    #[inline]
    #[must_use]
    pub const fn new(start: Mfn, count: u64) -> Option<Self> {
        match start.checked_add(count) {
            Some(end) => Some(Self { start, end }),
            None => None,
        }
    }

    /// The frames from `start` up to, not including, `end`; `None` if
    /// `end < start`.
    #[inline]
    #[must_use]
    pub const fn from_bounds(start: Mfn, end: Mfn) -> Option<Self> {
        if start.get() <= end.get() {
            Some(Self { start, end })
        } else {
            None
        }
    }

    /// The first frame.
    #[inline]
    #[must_use]
    pub const fn start(&self) -> Mfn {
        self.start
    }

    /// The frame after the last one.
    #[inline]
    #[must_use]
    pub const fn end(&self) -> Mfn {
        self.end
    }

    /// The number of frames.
    #[inline]
    #[must_use]
    pub const fn len(&self) -> u64 {
        self.end.get() - self.start.get()
    }

    /// Whether the range holds no frame.
    #[inline]
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.end.get() == self.start.get()
    }

    /// Whether `mfn` lies in the range.
    #[inline]
    #[must_use]
    pub const fn contains(&self, mfn: Mfn) -> bool {
        self.start.get() <= mfn.get() && mfn.get() < self.end.get()
    }

    /// Whether every frame of `other` lies in this range (an empty `other`
    /// is contained when its start is inside or at the end).
    #[inline]
    #[must_use]
    pub const fn contains_range(&self, other: &Self) -> bool {
        self.start.get() <= other.start.get() && other.end.get() <= self.end.get()
    }

    /// Whether the two ranges share a frame.
    #[inline]
    #[must_use]
    pub const fn overlaps(&self, other: &Self) -> bool {
        self.start.get() < other.end.get() && other.start.get() < self.end.get()
    }

    /// The decomposition of the range into maximal naturally aligned blocks of
    /// at most `max_order`, lowest first: each block `(mfn, order)` has `mfn`
    /// aligned to `2^order` frames. This is how a buddy allocator seeds its free
    /// lists from an arbitrary range.
    #[inline]
    #[must_use]
    pub const fn aligned_blocks(&self, max_order: PageOrder) -> AlignedBlocks {
        AlignedBlocks {
            next: self.start.get(),
            end: self.end.get(),
            max_order: max_order.get(),
        }
    }
}

impl fmt::Debug for FrameRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.get(), self.end.get())
    }
}

/// Iterator over the naturally aligned blocks of a [`FrameRange`]; see
/// [`FrameRange::aligned_blocks`].
#[derive(Clone, Debug)]
pub struct AlignedBlocks {
    next: u64,
    end: u64,
    max_order: u8,
}

impl Iterator for AlignedBlocks {
    type Item = (Mfn, PageOrder);

    fn next(&mut self) -> Option<Self::Item> {
        let left = self.end.checked_sub(self.next).filter(|&n| n > 0)?;
        // The block may be no larger than the alignment of its start, the
        // frames left, and the maximum order. Frame 0 is aligned to anything.
        let by_alignment = if self.next == 0 {
            63
        } else {
            self.next.trailing_zeros()
        };
        let by_length = 63 - left.leading_zeros();
        let k = by_alignment.min(by_length).min(u32::from(self.max_order));
        let start = self.next;
        // `k <= by_length`, so `start + 2^k <= end` and this cannot overflow.
        self.next = start + (1 << k);
        Some((Mfn::new(start), PageOrder(k as u8)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    #[test]
    fn range_end_never_wraps() {
        assert!(FrameRange::new(Mfn::new(u64::MAX), 1).is_none());
        assert!(FrameRange::from_bounds(Mfn::new(5), Mfn::new(4)).is_none());
        let r = FrameRange::new(Mfn::new(u64::MAX - 1), 1).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r.contains(Mfn::new(u64::MAX - 1)));
        assert!(!r.contains(Mfn::new(u64::MAX)));
    }

    #[test]
    fn overlap_is_strict_at_the_edges() {
        let a = FrameRange::new(Mfn::new(0), 4).unwrap();
        let b = FrameRange::new(Mfn::new(4), 4).unwrap();
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&FrameRange::new(Mfn::new(3), 1).unwrap()));
        assert!(!a.contains_range(&b));
    }

    #[test]
    fn blocks_of_the_whole_address_space_end_at_the_top() {
        let r = FrameRange::from_bounds(Mfn::new(0), Mfn::new(u64::MAX)).unwrap();
        let blocks: Vec<_> = r.aligned_blocks(PageOrder::MAX).collect();
        assert_eq!(blocks.len(), 64);
        assert_eq!(blocks[0], (Mfn::new(0), PageOrder::MAX));
    }

    /// Longest range the tiling property tries: with order-0 blocks a range
    /// costs one step per frame, which the interpreter cannot afford at 2^20.
    const TILED_LEN: u64 = if cfg!(miri) { 1 << 12 } else { 1 << 20 };

    proptest! {
        /// The blocks tile the range exactly, in order, each naturally aligned
        /// and no larger than the maximum order.
        #[test]
        fn aligned_blocks_tile_the_range(start in 0u64..1 << 40, len in 0u64..TILED_LEN, max in 0u8..=20) {
            let r = FrameRange::new(Mfn::new(start), len).unwrap();
            let max = PageOrder::new(max).unwrap();
            let mut next = start;
            for (mfn, order) in r.aligned_blocks(max) {
                prop_assert_eq!(mfn.get(), next);
                prop_assert!(order <= max);
                prop_assert!(mfn.is_aligned(order));
                next += order.frames();
            }
            prop_assert_eq!(next, start + len);
        }
    }
}

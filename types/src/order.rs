//! Page orders (power-of-two frame counts) and leaf page sizes.

use core::fmt;

use crate::{PAGE_SHIFT, SIZE_1G, SIZE_2M};

/// A power-of-two number of frames: order `k` is `2^k` frames.
///
/// Orders are at most [`PageOrder::MAX`] (63), so [`PageOrder::frames`] never
/// overflows. Allocators impose their own, smaller, maximum.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PageOrder(pub(crate) u8);

impl PageOrder {
    /// Order 0: one frame.
    pub const ZERO: Self = Self(0);
    /// The largest representable order: `2^63` frames.
    pub const MAX: Self = Self(63);
    /// A 2 MiB block of 4 KiB frames.
    pub const SIZE_2M: Self = Self(9);
    /// A 1 GiB block of 4 KiB frames (Xen's `MAX_ORDER` on x86 and Arm).
    pub const SIZE_1G: Self = Self(18);

    /// The order `k`, or `None` if `k > 63`.
    #[inline]
    #[must_use]
    pub const fn new(k: u8) -> Option<Self> {
        if k <= Self::MAX.0 {
            Some(Self(k))
        } else {
            None
        }
    }

    /// The exponent `k`.
    #[inline]
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The number of frames, `2^k`.
    #[inline]
    #[must_use]
    pub const fn frames(self) -> u64 {
        1 << self.0
    }

    /// The size in bytes, `2^(k + 12)`, or `None` if it exceeds 64 bits.
    #[inline]
    #[must_use]
    pub const fn bytes(self) -> Option<u64> {
        if self.0 as u32 + PAGE_SHIFT < 64 {
            Some(1 << (self.0 as u32 + PAGE_SHIFT))
        } else {
            None
        }
    }

    /// The smallest order whose block holds at least `frames` frames, or
    /// `None` for more than `2^63` frames. Zero frames round up to order 0.
    #[inline]
    #[must_use]
    pub const fn covering(frames: u64) -> Option<Self> {
        match frames.checked_next_power_of_two() {
            Some(p) => Some(Self(p.trailing_zeros() as u8)),
            None => None,
        }
    }
}

impl fmt::Debug for PageOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order {}", self.0)
    }
}

impl fmt::Display for PageOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order {}", self.0)
    }
}

/// The leaf sizes of 4 KiB-granule page tables (x86-64, EPT, AArch64 4K).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// A 4 KiB page.
    Size4K,
    /// A 2 MiB large page or block.
    Size2M,
    /// A 1 GiB huge page or block.
    Size1G,
}

impl PageSize {
    /// The size in bytes.
    #[inline]
    #[must_use]
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << PAGE_SHIFT,
            Self::Size2M => SIZE_2M,
            Self::Size1G => SIZE_1G,
        }
    }

    /// The same size as a page order.
    #[inline]
    #[must_use]
    pub const fn order(self) -> PageOrder {
        match self {
            Self::Size4K => PageOrder::ZERO,
            Self::Size2M => PageOrder::SIZE_2M,
            Self::Size1G => PageOrder::SIZE_1G,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_beyond_63_do_not_exist() {
        assert_eq!(PageOrder::new(64), None);
        assert_eq!(PageOrder::new(63).map(PageOrder::frames), Some(1 << 63));
        assert_eq!(PageOrder::MAX.bytes(), None);
        assert_eq!(PageOrder::new(51).unwrap().bytes(), Some(1 << 63));
    }

    #[test]
    fn covering_rounds_up_to_a_power_of_two() {
        assert_eq!(PageOrder::covering(0), Some(PageOrder::ZERO));
        assert_eq!(PageOrder::covering(1), Some(PageOrder::ZERO));
        assert_eq!(PageOrder::covering(3), PageOrder::new(2));
        assert_eq!(PageOrder::covering(512), Some(PageOrder::SIZE_2M));
        assert_eq!(PageOrder::covering((1 << 63) + 1), None);
    }

    #[test]
    fn page_sizes_agree_with_orders() {
        for size in [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G] {
            assert_eq!(size.order().bytes(), Some(size.bytes()));
        }
    }
}

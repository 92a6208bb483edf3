//! Frame numbers: machine frames (host) and guest frames (guest physical).

use core::fmt;

use crate::{GuestPhysAddr, PAGE_SHIFT, PageOrder, PhysAddr};

macro_rules! frame_number {
    ($(#[$doc:meta])* $name:ident, $addr:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw frame number.
            #[inline]
            #[must_use]
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw frame number.
            #[inline]
            #[must_use]
            pub const fn get(self) -> u64 {
                self.0
            }

            /// The frame `n` frames further on, or `None` on overflow.
            #[inline]
            #[must_use]
            pub const fn checked_add(self, n: u64) -> Option<Self> {
                match self.0.checked_add(n) {
                    Some(raw) => Some(Self(raw)),
                    None => None,
                }
            }

            /// The frame `n` frames before this one, or `None` below frame 0.
            #[inline]
            #[must_use]
            pub const fn checked_sub(self, n: u64) -> Option<Self> {
                match self.0.checked_sub(n) {
                    Some(raw) => Some(Self(raw)),
                    None => None,
                }
            }

            /// The number of frames from `earlier` to `self`, or `None` if
            /// `earlier` is after `self`.
            #[inline]
            #[must_use]
            pub const fn frames_since(self, earlier: Self) -> Option<u64> {
                self.0.checked_sub(earlier.0)
            }

            /// Whether the frame number is a multiple of `2^order` frames.
            #[inline]
            #[must_use]
            pub const fn is_aligned(self, order: PageOrder) -> bool {
                self.0 & (order.frames() - 1) == 0
            }

            /// The address of the first byte of the frame, or `None` if it does
            /// not fit in 64 bits.
            #[inline]
            #[must_use]
            pub const fn to_phys(self) -> Option<$addr> {
                if self.0 > (u64::MAX >> PAGE_SHIFT) {
                    None
                } else {
                    Some($addr::new(self.0 << PAGE_SHIFT))
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, " {:#x}"), self.0)
            }
        }
    };
}

frame_number!(
    /// A machine frame number: a host physical address shifted right by
    /// [`PAGE_SHIFT`](crate::PAGE_SHIFT).
    Mfn,
    PhysAddr,
    "Mfn"
);

frame_number!(
    /// A guest frame number: a guest physical address shifted right by
    /// [`PAGE_SHIFT`](crate::PAGE_SHIFT). For x86 PV guests it equals the
    /// machine frame; for translated guests (HVM, PVH, Arm) the stage-2 tables
    /// map it to one.
    Gfn,
    GuestPhysAddr,
    "Gfn"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_arithmetic_is_checked_at_both_ends() {
        assert_eq!(Mfn::new(u64::MAX).checked_add(1), None);
        assert_eq!(Mfn::new(0).checked_sub(1), None);
        assert_eq!(Mfn::new(5).checked_add(3), Some(Mfn::new(8)));
        assert_eq!(Mfn::new(8).frames_since(Mfn::new(5)), Some(3));
        assert_eq!(Mfn::new(5).frames_since(Mfn::new(8)), None);
    }

    #[test]
    fn frame_to_address_refuses_frames_beyond_64_bit_addresses() {
        assert_eq!(Mfn::new(1 << 52).to_phys(), None);
        assert_eq!(
            Mfn::new((1 << 52) - 1).to_phys(),
            Some(PhysAddr::new(!0xfff))
        );
        assert_eq!(Gfn::new(2).to_phys(), Some(GuestPhysAddr::new(0x2000)));
    }

    #[test]
    fn alignment_is_relative_to_the_order() {
        let o9 = PageOrder::new(9).unwrap();
        assert!(Mfn::new(0x200).is_aligned(o9));
        assert!(!Mfn::new(0x201).is_aligned(o9));
        assert!(Mfn::new(7).is_aligned(PageOrder::ZERO));
    }

    #[test]
    fn debug_names_the_kind_of_frame() {
        assert_eq!(std::format!("{:?}", Mfn::new(0x10)), "Mfn(0x10)");
        assert_eq!(std::format!("{}", Gfn::new(0x10)), "Gfn 0x10");
    }
}

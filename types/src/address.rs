//! Byte addresses: host physical, guest physical and virtual.

use core::fmt;

use crate::{Gfn, Mfn, PAGE_SHIFT, PAGE_SIZE};

macro_rules! address {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw address.
            #[inline]
            #[must_use]
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw address.
            #[inline]
            #[must_use]
            pub const fn get(self) -> u64 {
                self.0
            }

            /// The offset of the address inside its 4 KiB page.
            #[inline]
            #[must_use]
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }

            /// Whether the address is a multiple of `align`, which must be a
            /// power of two; `false` for any other `align`.
            #[inline]
            #[must_use]
            pub const fn is_aligned_to(self, align: u64) -> bool {
                align.is_power_of_two() && self.0 & (align - 1) == 0
            }

            /// The address rounded down to a multiple of `align` (a power of
            /// two), or `None` if `align` is not a power of two.
            #[inline]
            #[must_use]
            pub const fn align_down(self, align: u64) -> Option<Self> {
                if align.is_power_of_two() {
                    Some(Self(self.0 & !(align - 1)))
                } else {
                    None
                }
            }

            /// The address rounded up to a multiple of `align` (a power of
            /// two), or `None` if `align` is not a power of two or the result
            /// overflows.
            #[inline]
            #[must_use]
            pub const fn align_up(self, align: u64) -> Option<Self> {
                if !align.is_power_of_two() {
                    return None;
                }
                match self.0.checked_add(align - 1) {
                    Some(raw) => Some(Self(raw & !(align - 1))),
                    None => None,
                }
            }

            /// The address `n` bytes further on, or `None` on overflow.
            #[inline]
            #[must_use]
            pub const fn checked_add(self, n: u64) -> Option<Self> {
                match self.0.checked_add(n) {
                    Some(raw) => Some(Self(raw)),
                    None => None,
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
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address!(
    /// A host physical address.
    PhysAddr,
    "PhysAddr"
);
address!(
    /// A guest physical address (intermediate physical address on Arm): what
    /// a guest believes is physical memory, translated by stage-2 / EPT tables.
    GuestPhysAddr,
    "GuestPhysAddr"
);
address!(
    /// A virtual address, in the host's or a guest's stage-1 address space.
    VirtAddr,
    "VirtAddr"
);

impl PhysAddr {
    /// The machine frame that holds this address.
    #[inline]
    #[must_use]
    pub const fn frame(self) -> Mfn {
        Mfn::new(self.0 >> PAGE_SHIFT)
    }
}

impl GuestPhysAddr {
    /// The guest frame that holds this address.
    #[inline]
    #[must_use]
    pub const fn frame(self) -> Gfn {
        Gfn::new(self.0 >> PAGE_SHIFT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_rejects_non_power_of_two() {
        assert_eq!(PhysAddr::new(0x1234).align_down(3), None);
        assert_eq!(PhysAddr::new(0x1234).align_up(0), None);
        assert!(!PhysAddr::new(0).is_aligned_to(6));
    }

    #[test]
    fn align_up_reports_overflow() {
        assert_eq!(VirtAddr::new(u64::MAX).align_up(PAGE_SIZE), None);
        assert_eq!(
            VirtAddr::new(0x1001).align_up(PAGE_SIZE),
            Some(VirtAddr::new(0x2000))
        );
        assert_eq!(
            VirtAddr::new(0x1fff).align_down(PAGE_SIZE),
            Some(VirtAddr::new(0x1000))
        );
    }

    #[test]
    fn address_splits_into_frame_and_offset() {
        let a = GuestPhysAddr::new(0xdead_beef);
        assert_eq!(a.frame(), Gfn::new(0xdeadb));
        assert_eq!(a.page_offset(), 0xeef);
        assert_eq!(PhysAddr::new(0x3fff).frame(), Mfn::new(3));
    }
}

//! Free blocks of guest memory, as the driver's hinting and reporting see
//! them: naturally aligned runs of `2^order` 4 KiB pages, tracked one bit
//! per granule (a block of the smallest order the feature uses).

use core::fmt;

use hvmem_types::{Gfn, PAGE_SHIFT};

use crate::bitmap::{PageBitmap, StorageError, bitmap_words};

/// The largest block order (in 4 KiB pages) the driver accepts: 1 GiB.
pub const MAX_BLOCK_ORDER: u32 = 18;

/// A naturally aligned run of `2^order` 4 KiB guest pages starting at `gfn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FreeBlock {
    /// The first 4 KiB frame; a multiple of `2^order`.
    pub gfn: Gfn,
    /// log2 of the number of 4 KiB pages.
    pub order: u32,
}

impl FreeBlock {
    /// The 4 KiB pages in the block.
    #[must_use]
    pub const fn pages(&self) -> u64 {
        1 << self.order
    }

    /// The guest-physical `(address, length)` in bytes, as a virtqueue
    /// buffer names it.
    #[must_use]
    pub const fn range(&self) -> (u64, u64) {
        (self.gfn.get() << PAGE_SHIFT, self.pages() << PAGE_SHIFT)
    }
}

/// Why a free block was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockError {
    /// The feature was not negotiated.
    NotNegotiated,
    /// The order is below the feature's granule or above
    /// [`MAX_BLOCK_ORDER`], or the frame is not aligned to it.
    Misaligned {
        /// The block.
        block: FreeBlock,
    },
    /// The block reaches past guest memory.
    OutOfRange {
        /// The block.
        block: FreeBlock,
    },
    /// The block holds pages in the balloon or in a balloon request in
    /// flight: they are not free.
    InBalloon {
        /// The block.
        block: FreeBlock,
    },
    /// The block overlaps another one the driver holds (hinted, or in the
    /// report in flight).
    AlreadyHeld {
        /// The block.
        block: FreeBlock,
    },
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotNegotiated => f.write_str("the feature was not negotiated"),
            Self::Misaligned { block } => write!(
                f,
                "block {} of order {} is not an aligned block of a usable order",
                block.gfn, block.order
            ),
            Self::OutOfRange { block } => {
                write!(
                    f,
                    "block {} of order {} reaches past guest memory",
                    block.gfn, block.order
                )
            }
            Self::InBalloon { block } => {
                write!(
                    f,
                    "block {} of order {} holds ballooned pages",
                    block.gfn, block.order
                )
            }
            Self::AlreadyHeld { block } => {
                write!(
                    f,
                    "block {} of order {} is already held by the driver",
                    block.gfn, block.order
                )
            }
        }
    }
}
impl core::error::Error for BlockError {}

/// Words of storage for a [`GranuleMap`] over `guest_pages` 4 KiB pages with
/// granules of `2^granule_order` pages (0 for an order above
/// [`MAX_BLOCK_ORDER`]).
#[must_use]
pub(crate) const fn granule_words(guest_pages: u64, granule_order: u32) -> usize {
    if granule_order > MAX_BLOCK_ORDER {
        0
    } else {
        bitmap_words(guest_pages.div_ceil(1 << granule_order))
    }
}

/// One bit per granule of guest memory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GranuleMap<S> {
    bits: PageBitmap<S>,
    order: u32,
    guest_pages: u64,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> GranuleMap<S> {
    pub(crate) fn new(storage: S, guest_pages: u64, order: u32) -> Result<Self, StorageError> {
        let granules = guest_pages.div_ceil(1 << order.min(MAX_BLOCK_ORDER));
        Ok(Self {
            bits: PageBitmap::new(storage, granules)?,
            order,
            guest_pages,
        })
    }

    /// 4 KiB pages of guest memory.
    pub(crate) fn guest_pages(&self) -> u64 {
        self.guest_pages
    }

    /// The granule order.
    pub(crate) fn order(&self) -> u32 {
        self.order
    }

    /// The granules of a valid block: `first..first + count`.
    pub(crate) fn granules(&self, block: FreeBlock) -> Result<(u64, u64), BlockError> {
        if block.order < self.order
            || block.order > MAX_BLOCK_ORDER
            || block.gfn.get() % block.pages() != 0
        {
            return Err(BlockError::Misaligned { block });
        }
        match block.gfn.get().checked_add(block.pages()) {
            Some(end) if end <= self.guest_pages => {}
            _ => return Err(BlockError::OutOfRange { block }),
        }
        Ok((
            block.gfn.get() >> self.order,
            1 << (block.order - self.order),
        ))
    }

    pub(crate) fn any_set(&self, (first, count): (u64, u64)) -> bool {
        self.bits.any_set(first, count)
    }

    pub(crate) fn all_set(&self, (first, count): (u64, u64)) -> bool {
        self.bits.all_set(first, count)
    }

    pub(crate) fn set(&mut self, (first, count): (u64, u64)) {
        for g in first..first + count {
            self.bits.set(g);
        }
    }

    pub(crate) fn clear(&mut self, (first, count): (u64, u64)) {
        for g in first..first + count {
            self.bits.clear(g);
        }
    }

    /// The 4 KiB pages in set granules.
    pub(crate) fn pages(&self) -> u64 {
        self.bits.count() << self.order
    }

    /// The first set granule at or after granule `from`, as a block.
    pub(crate) fn first_from(&self, from: u64) -> Option<FreeBlock> {
        let g = self.bits.first_set_from(from)?;
        Some(FreeBlock {
            gfn: Gfn::new(g << self.order),
            order: self.order,
        })
    }

    /// Whether the granule holding 4 KiB frame `gfn` is set.
    pub(crate) fn holds(&self, gfn: Gfn) -> bool {
        self.bits.get(gfn.get() >> self.order)
    }
}

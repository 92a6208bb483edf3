//! Free page reporting, driver side, as Linux's page-reporting core and
//! `virtballoon_free_page_report` behave (the device side is
//! [`BalloonDevice::report`](crate::virtio::device::BalloonDevice::report)).
//!
//! # Protocol
//!
//! 1. The guest offers its free blocks of at least the reporting order
//!    ([`FreePageReporter::report`]). The driver skips the ones already
//!    reported since they were last allocated, takes up to
//!    [`REPORT_CAPACITY`] others, and returns their ranges: one
//!    scatter-gather chain on reporting_vq. The guest must keep those blocks
//!    out of its allocator (Linux isolates them from the free lists) until
//!    the ack.
//! 2. The device uses the chain (it may discard the pages); the driver's
//!    [`FreePageReporter::acked`] marks the blocks reported and hands them
//!    back to go on the free lists again. Their contents are undefined
//!    unless PAGE_POISON was negotiated, in which case the guest filled them
//!    with the poison value before reporting.
//! 3. When the guest allocates pages from a reported block, it tells the
//!    driver ([`FreePageReporter::allocated`]); once freed again the block is
//!    reportable again.
//!
//! One report is in flight at a time, as in Linux.

use core::fmt;

use hvmem_types::{Gfn, PAGE_SHIFT};

use crate::bitmap::StorageError;
use crate::virtio::Features;
use crate::virtio::blocks::{BlockError, FreeBlock, GranuleMap, MAX_BLOCK_ORDER, granule_words};
use crate::virtio::driver::BalloonDriver;

/// Ranges in one report: Linux's `PAGE_REPORTING_CAPACITY`.
pub const REPORT_CAPACITY: usize = 32;

/// A common Linux reporting order on x86-64 with 4 KiB pages: the pageblock
/// order, 9 (2 MiB).
///
/// It is not a fixed Linux default. The virtio driver leaves the order to
/// the page-reporting core, whose fallback depends on the kernel version,
/// and an administrator can change it with the `page_reporting_order`
/// parameter. (On arm64 with 64 KiB pages the driver uses order 5.) Pass
/// the order the guest actually uses.
pub const LINUX_REPORT_ORDER: u32 = 9;

/// Words of storage for a reporter over `guest_pages` 4 KiB pages reporting
/// blocks of at least `2^order` pages.
#[must_use]
pub const fn reporter_storage_words(guest_pages: u64, order: u32) -> usize {
    granule_words(guest_pages, order)
}

/// Why a reporter could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReporterConfigError {
    /// The order is below the guest page order or above
    /// [`MAX_BLOCK_ORDER`].
    BadOrder,
    /// The storage is too small.
    Storage(StorageError),
}

impl fmt::Display for ReporterConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadOrder => f.write_str("reporting order outside the guest page order..=18"),
            Self::Storage(e) => write!(f, "reporter storage: {e}"),
        }
    }
}
impl core::error::Error for ReporterConfigError {}

/// Why a reporting step was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReporterError {
    /// A report is in flight: wait for its ack.
    InFlight,
    /// No report is in flight to acknowledge.
    NothingInFlight,
    /// A block was refused.
    Block(BlockError),
}

impl fmt::Display for ReporterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InFlight => f.write_str("a report is in flight"),
            Self::NothingInFlight => f.write_str("no report is in flight"),
            Self::Block(e) => e.fmt(f),
        }
    }
}
impl core::error::Error for ReporterError {}

/// What the guest does after offering its free blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum ReportStep<'a> {
    /// Isolate these blocks, put their ranges (`(address, length)` in bytes)
    /// on reporting_vq as one chain, notify, and call
    /// [`acked`](FreePageReporter::acked) when the device used it.
    Send {
        /// The blocks, to keep out of the allocator until the ack.
        blocks: &'a [FreeBlock],
        /// Their ranges, in the same order.
        ranges: &'a [(u64, u64)],
    },
    /// Every offered block is reported already.
    Nothing,
}

/// The driver's free page reporting state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FreePageReporter<S> {
    negotiated: bool,
    reported: GranuleMap<S>,
    blocks: [FreeBlock; REPORT_CAPACITY],
    ranges: [(u64, u64); REPORT_CAPACITY],
    count: usize,
    in_flight: bool,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> FreePageReporter<S> {
    /// A reporter for the driver that negotiated `negotiated`, over
    /// `guest_pages` 4 KiB pages with guest pages of `2^page_shift` bytes,
    /// reporting blocks of at least `2^order` 4 KiB pages.
    ///
    /// # Errors
    ///
    /// Every [`ReporterConfigError`] variant.
    pub fn new(
        negotiated: Features,
        guest_pages: u64,
        page_shift: u32,
        order: u32,
        storage: S,
    ) -> Result<Self, ReporterConfigError> {
        page_shift
            .checked_sub(PAGE_SHIFT)
            .filter(|&p| p <= order && order <= MAX_BLOCK_ORDER)
            .ok_or(ReporterConfigError::BadOrder)?;
        let none = FreeBlock {
            gfn: Gfn::new(0),
            order,
        };
        Ok(Self {
            negotiated: negotiated.contains(Features::PAGE_REPORTING),
            reported: GranuleMap::new(storage, guest_pages, order)
                .map_err(ReporterConfigError::Storage)?,
            blocks: [none; REPORT_CAPACITY],
            ranges: [(0, 0); REPORT_CAPACITY],
            count: 0,
            in_flight: false,
        })
    }

    /// The guest's free blocks, offered for reporting: each of at least the
    /// reporting order and naturally aligned, none in the balloon. Builds
    /// the next report from the ones not reported yet.
    ///
    /// # Errors
    ///
    /// [`ReporterError::InFlight`], or the [`BlockError`] of the first bad
    /// offer (not negotiated, misaligned, past memory, ballooned, or
    /// overlapping another block taken for this report); nothing is taken then.
    pub fn report<B: AsRef<[u64]> + AsMut<[u64]>>(
        &mut self,
        free: &[FreeBlock],
        balloon: &BalloonDriver<B>,
    ) -> Result<ReportStep<'_>, ReporterError> {
        if !self.negotiated {
            return Err(ReporterError::Block(BlockError::NotNegotiated));
        }
        if self.in_flight {
            return Err(ReporterError::InFlight);
        }
        // Select into locals: a refused offer leaves `self` untouched.
        let mut blocks = self.blocks;
        let mut ranges = self.ranges;
        let mut count = 0;
        for &block in free {
            let granules = self
                .reported
                .granules(block)
                .map_err(ReporterError::Block)?;
            if balloon.holds_any(block.gfn, block.pages()) {
                return Err(ReporterError::Block(BlockError::InBalloon { block }));
            }
            if count == REPORT_CAPACITY || self.reported.all_set(granules) {
                continue;
            }
            let end = block.gfn.get() + block.pages();
            let taken = blocks.get(..count).unwrap_or(&[]);
            if taken
                .iter()
                .any(|b| b.gfn.get() < end && block.gfn.get() < b.gfn.get() + b.pages())
            {
                return Err(ReporterError::Block(BlockError::AlreadyHeld { block }));
            }
            if let (Some(b), Some(r)) = (blocks.get_mut(count), ranges.get_mut(count)) {
                *b = block;
                *r = block.range();
                count += 1;
            }
        }
        if count == 0 {
            return Ok(ReportStep::Nothing);
        }
        self.blocks = blocks;
        self.ranges = ranges;
        self.count = count;
        self.in_flight = true;
        Ok(ReportStep::Send {
            blocks: self.blocks.get(..count).unwrap_or(&[]),
            ranges: self.ranges.get(..count).unwrap_or(&[]),
        })
    }

    /// The device used the report: its blocks are reported, and go back on
    /// the guest's free lists (returned here).
    ///
    /// # Errors
    ///
    /// [`ReporterError::NothingInFlight`].
    pub fn acked(&mut self) -> Result<&[FreeBlock], ReporterError> {
        if !self.in_flight {
            return Err(ReporterError::NothingInFlight);
        }
        self.in_flight = false;
        for i in 0..self.count {
            let Some(&block) = self.blocks.get(i) else {
                break;
            };
            if let Ok(granules) = self.reported.granules(block) {
                self.reported.set(granules);
            }
        }
        Ok(self.blocks.get(..self.count).unwrap_or(&[]))
    }

    /// The guest allocated the `2^order` 4 KiB pages at `gfn` (any order,
    /// aligned): the reported blocks they touch are reportable again once
    /// free.
    ///
    /// # Errors
    ///
    /// [`BlockError::OutOfRange`] for pages past guest memory or
    /// [`BlockError::Misaligned`] for an unaligned run or an order above
    /// [`MAX_BLOCK_ORDER`].
    pub fn allocated(&mut self, gfn: Gfn, order: u32) -> Result<(), BlockError> {
        let block = FreeBlock { gfn, order };
        // Widen the run to whole granules of the reporting order.
        let g = self.reported.order();
        let wide = if order >= g {
            block
        } else {
            FreeBlock {
                gfn: Gfn::new(gfn.get() >> g << g),
                order: g,
            }
        };
        if order > MAX_BLOCK_ORDER || gfn.get() % block.pages() != 0 {
            return Err(BlockError::Misaligned { block });
        }
        match self.reported.granules(wide) {
            Ok(granules) => {
                self.reported.clear(granules);
                Ok(())
            }
            // Pages in the partial granule at the end of memory: never
            // reportable, so nothing to forget.
            Err(BlockError::OutOfRange { .. })
                if gfn
                    .get()
                    .checked_add(block.pages())
                    .is_some_and(|end| end <= self.reported.guest_pages()) =>
            {
                Ok(())
            }
            Err(BlockError::OutOfRange { .. }) => Err(BlockError::OutOfRange { block }),
            Err(_) => Err(BlockError::Misaligned { block }),
        }
    }

    /// Whether a report is in flight.
    #[must_use]
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// 4 KiB pages reported and not allocated since.
    #[must_use]
    pub fn reported_pages(&self) -> u64 {
        self.reported.pages()
    }

    /// Whether the 4 KiB frame `gfn` is in a reported block.
    #[must_use]
    pub fn is_reported(&self, gfn: Gfn) -> bool {
        self.reported.holds(gfn)
    }
}

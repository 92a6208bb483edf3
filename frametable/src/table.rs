//! The frame table: records for one or more frame ranges, with holes between.
//!
//! Physical memory is sparse (firmware holes, NUMA nodes far apart), so the
//! table maps each covered range onto a stretch of the caller's storage, one
//! after the other, the way Xen's "pdx" compression squeezes out holes. A
//! lookup scans a few ranges, or bisects up to [`FrameTable::MAX_RANGES`];
//! a frame outside them is an error, never a panic.

use core::fmt;

use hvmem_types::{FrameRange, Mfn};

use crate::frame::{CountWord, FrameState, TypeWord};
use crate::sync::Ordering;
use crate::{FrameError, FrameInfo, LayoutError};

/// Told about every frame whose last reference goes, so the embedder can
/// return it to its allocator.
///
/// A frame is freed by whichever operation drops its last reference: a
/// [`put_page`](FrameTable::put_page), a guard's drop, a
/// [`release`](FrameTable::release), an [`unpin`](FrameTable::unpin) or a
/// [`relinquish`](FrameTable::relinquish), or a [`Validator`](crate::Validator)'s
/// de-validation dropping the references its entries held. The table calls
/// the sink exactly once per free, after the frame's record already reads
/// "free".
///
/// The call is synchronous: it runs on the CPU that dropped the last
/// reference, inside that operation, which may itself run inside a
/// validator or under a lock the caller holds. So `frame_freed` must not
/// block, and must not take a lock that a caller of the table may hold.
/// Queue the frame (a lock-free list, a per-CPU buffer) and hand it to the
/// allocator later.
pub trait FreeSink: Sync {
    /// `mfn` has no owner and no reference any more.
    fn frame_freed(&self, mfn: Mfn);
}

/// A [`FreeSink`] that ignores frees, for embedders that learn about them
/// from the operations' return values alone.
#[derive(Clone, Copy, Default, Debug)]
pub struct IgnoreFreed;

impl FreeSink for IgnoreFreed {
    fn frame_freed(&self, _mfn: Mfn) {}
}

static IGNORE_FREED: IgnoreFreed = IgnoreFreed;

/// What dropping a reference did to the frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use = "a freed frame must go back to the allocator"]
pub enum PutOutcome {
    /// Other references remain.
    StillReferenced,
    /// That was the last reference: the frame is free now (and the
    /// [`FreeSink`] was told).
    Freed,
}

/// One covered range and where its records start in the storage.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Span {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) base: usize,
}

/// Per-frame owners, reference counts and types over caller-provided storage.
///
/// All operations take `&self` and are lock-free compare-and-swap loops on the
/// frame's record (see the [`frame`](crate::frame) module for the protocol),
/// so one table is shared by every CPU. The table is `Sync`: build it once
/// at boot (for example keep it in a static set once) and give each CPU a
/// `&FrameTable`; no lock goes around it.
pub struct FrameTable<'a> {
    frames: &'a [FrameInfo],
    spans: [Span; FrameTable::MAX_RANGES],
    nr_spans: usize,
    pub(crate) sink: &'a dyn FreeSink,
}

impl<'a> FrameTable<'a> {
    /// The most ranges one table covers.
    pub const MAX_RANGES: usize = 16;

    /// Up to this many ranges, a lookup scans them in order; above, it
    /// searches them by bisection.
    const SCANNED_RANGES: usize = 4;

    /// A table over `ranges` (sorted, not overlapping), with the records of
    /// each range stored one after the other in `frames`. Records beyond the
    /// ranges' total are unused.
    ///
    /// The records are used as they are, not reset: pass records made with
    /// [`FrameInfo::new`], or zero-filled memory (an all-zero record is a
    /// free frame). The table frees frames through
    /// [`IgnoreFreed`] until [`with_free_sink`](Self::with_free_sink) names
    /// another [`FreeSink`].
    ///
    /// # Errors
    ///
    /// - [`LayoutError::TooManyRanges`] above [`Self::MAX_RANGES`] ranges.
    /// - [`LayoutError::Unsorted`] if a range starts before the previous one
    ///   ends.
    /// - [`LayoutError::StorageTooSmall`] if `frames` has fewer records than
    ///   the ranges have frames.
    pub fn new(frames: &'a [FrameInfo], ranges: &[FrameRange]) -> Result<Self, LayoutError> {
        if ranges.len() > Self::MAX_RANGES {
            return Err(LayoutError::TooManyRanges);
        }
        let mut spans = [Span::default(); Self::MAX_RANGES];
        let mut needed: u64 = 0;
        let mut previous_end = 0;
        let mut nr_spans = 0;
        for range in ranges.iter().filter(|range| !range.is_empty()) {
            if range.start().get() < previous_end {
                return Err(LayoutError::Unsorted);
            }
            previous_end = range.end().get();
            let too_small = LayoutError::StorageTooSmall {
                needed: u64::MAX,
                provided: frames.len(),
            };
            let base = usize::try_from(needed).map_err(|_| too_small)?;
            needed = needed.checked_add(range.len()).ok_or(too_small)?;
            if let Some(span) = spans.get_mut(nr_spans) {
                *span = Span {
                    start: range.start().get(),
                    end: range.end().get(),
                    base,
                };
            }
            nr_spans += 1;
        }
        if usize::try_from(needed).map_or(true, |needed| needed > frames.len()) {
            return Err(LayoutError::StorageTooSmall {
                needed,
                provided: frames.len(),
            });
        }
        Ok(Self {
            frames,
            spans,
            nr_spans,
            sink: &IGNORE_FREED,
        })
    }

    /// The same table, telling `sink` about every frame it frees.
    #[must_use]
    pub fn with_free_sink(self, sink: &'a dyn FreeSink) -> Self {
        Self { sink, ..self }
    }

    /// Whether the table covers `mfn`.
    #[must_use]
    pub fn covers(&self, mfn: Mfn) -> bool {
        self.frame(mfn).is_ok()
    }

    /// The number of frames the table covers.
    #[must_use]
    pub fn frame_count(&self) -> u64 {
        self.spans().iter().map(|span| span.end - span.start).sum()
    }

    /// A snapshot of `mfn`'s owner, counts, type and flags.
    ///
    /// # Errors
    ///
    /// [`FrameError::OutOfRange`] if the table does not cover `mfn`.
    pub fn state(&self, mfn: Mfn) -> Result<FrameState, FrameError> {
        let frame = self.frame(mfn)?;
        let count = CountWord(frame.count.load(Ordering::Acquire));
        let ty = TypeWord(frame.type_info.load(Ordering::Acquire));
        Ok(FrameState::from_words(count, ty))
    }

    pub(crate) fn spans(&self) -> &[Span] {
        self.spans.get(..self.nr_spans).unwrap_or(&[])
    }

    /// The record of `mfn`.
    ///
    /// Up to [`Self::SCANNED_RANGES`] ranges (most machines), a forward scan
    /// for the first range ending above `mfn`, with a branch per range: the
    /// address of the record then depends only on that range's fields, not
    /// on a chain of comparisons, so once the branches are predicted (a
    /// caller working in one range) the record's load issues at once. Above
    /// that, a branch-free binary search, so that the far end of a table of
    /// [`Self::MAX_RANGES`] costs four steps rather than sixteen.
    #[inline]
    pub(crate) fn frame(&self, mfn: Mfn) -> Result<&'a FrameInfo, FrameError> {
        let raw = mfn.get();
        let spans = self.spans();
        let span = if spans.len() <= Self::SCANNED_RANGES {
            spans.iter().find(|span| raw < span.end)
        } else {
            spans.get(spans.partition_point(|span| span.end <= raw))
        };
        span.filter(|span| span.start <= raw)
            .and_then(|span| self.frames.get(span.base + (raw - span.start) as usize))
            .ok_or(FrameError::OutOfRange { mfn })
    }

    /// The record at `offset` into `span`, with its frame number.
    pub(crate) fn frame_in_span(&self, span: usize, offset: u64) -> Option<(Mfn, &'a FrameInfo)> {
        let span = self.spans().get(span)?;
        let raw = span
            .start
            .checked_add(offset)
            .filter(|&raw| raw < span.end)?;
        let frame = self.frames.get(span.base + offset as usize)?;
        Some((Mfn::new(raw), frame))
    }
}

impl fmt::Debug for FrameTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for span in self.spans() {
            list.entry(&format_args!("[{:#x}, {:#x})", span.start, span.end));
        }
        list.finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Owner;
    use hvmem_types::DomId;

    fn range(start: u64, len: u64) -> FrameRange {
        FrameRange::new(Mfn::new(start), len).unwrap()
    }

    #[test]
    fn lookup_outside_every_range_is_out_of_range() {
        let frames: [FrameInfo; 6] = Default::default();
        let table = FrameTable::new(&frames, &[range(0x100, 4), range(0x200, 2)]).unwrap();
        assert_eq!(table.frame_count(), 6);
        for covered in [0x100, 0x103, 0x200, 0x201] {
            assert!(table.covers(Mfn::new(covered)), "{covered:#x}");
        }
        for hole in [0, 0xff, 0x104, 0x1ff, 0x202, u64::MAX] {
            assert_eq!(
                table.state(Mfn::new(hole)),
                Err(FrameError::OutOfRange {
                    mfn: Mfn::new(hole)
                })
            );
        }
    }

    /// Both lookups (the scan of a few ranges, the bisection of many) find
    /// every range's first and last frame in its own records and refuse
    /// every hole, for every number of ranges up to the limit.
    #[test]
    fn lookup_by_scan_and_by_bisection_find_the_same_records() {
        let frames: [FrameInfo; 2 * FrameTable::MAX_RANGES] =
            core::array::from_fn(|_| FrameInfo::new());
        let ranges: [FrameRange; FrameTable::MAX_RANGES] =
            core::array::from_fn(|at| range(0x100 * (at as u64 + 1), 2));
        for count in 0..=FrameTable::MAX_RANGES {
            let table = FrameTable::new(&frames, ranges.get(..count).unwrap()).unwrap();
            for (at, covered) in ranges.iter().enumerate() {
                for offset in 0..2 {
                    let mfn = Mfn::new(covered.start().get() + offset);
                    let expected = frames.get(2 * at + offset as usize).unwrap();
                    match table.frame(mfn) {
                        Ok(found) => {
                            assert!(at < count, "{mfn} found in a table of {count}");
                            assert!(core::ptr::eq(found, expected), "{mfn} of {count}");
                        }
                        Err(error) => {
                            assert!(at >= count, "{mfn} missing from a table of {count}");
                            assert_eq!(error, FrameError::OutOfRange { mfn });
                        }
                    }
                }
                for hole in [covered.start().get() - 1, covered.start().get() + 2] {
                    assert_eq!(
                        table.frame(Mfn::new(hole)).err(),
                        Some(FrameError::OutOfRange {
                            mfn: Mfn::new(hole)
                        })
                    );
                }
            }
        }
    }

    #[test]
    fn ranges_map_onto_distinct_records() {
        let frames: [FrameInfo; 6] = Default::default();
        let table = FrameTable::new(&frames, &[range(0x100, 4), range(0x200, 2)]).unwrap();
        table.assign(Mfn::new(0x103), Owner::Host).unwrap();
        table
            .assign(Mfn::new(0x200), Owner::Domain(DomId::new(1)))
            .unwrap();
        assert_eq!(
            table.state(Mfn::new(0x103)).unwrap().owner,
            Some(Owner::Host)
        );
        assert_eq!(table.state(Mfn::new(0x102)).unwrap().owner, None);
        assert_eq!(table.state(Mfn::new(0x201)).unwrap().owner, None);
    }

    #[test]
    fn layout_refuses_overlap_and_short_storage() {
        let frames: [FrameInfo; 4] = Default::default();
        assert_eq!(
            FrameTable::new(&frames, &[range(0x100, 4), range(0x103, 1)]).unwrap_err(),
            LayoutError::Unsorted
        );
        assert_eq!(
            FrameTable::new(&frames, &[range(0x100, 4), range(0x200, 1)]).unwrap_err(),
            LayoutError::StorageTooSmall {
                needed: 5,
                provided: 4
            }
        );
        let many = [range(0, 1); FrameTable::MAX_RANGES + 1];
        assert_eq!(
            FrameTable::new(&frames, &many).unwrap_err(),
            LayoutError::TooManyRanges
        );
        assert!(FrameTable::new(&frames, &[]).is_ok());
    }
}

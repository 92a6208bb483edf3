//! The allocator facade: zones, zone policies, and argument checks.

use hvmem_types::{FrameRange, Mfn, PageOrder};

use crate::error::{AddZoneError, AllocError, ConfigError, FreeError, ReleaseError, ReserveError};
use crate::stats::Stats;
use crate::zone::Zone;
use crate::{Contents, MAX_SUPPORTED_ORDER};

/// Names a zone of a [`BuddyAllocator`]: its position in the order zones were
/// added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneId(u8);

impl ZoneId {
    /// The zone added `index`-th (from 0).
    #[must_use]
    pub const fn new(index: u8) -> Self {
        Self(index)
    }

    /// The position of the zone.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Which zones an allocation may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZonePolicy {
    /// Any zone, in the order they were added.
    Any,
    /// This zone first, then the others in the order they were added (a NUMA
    /// node's memory before remote memory).
    Prefer(ZoneId),
    /// Only this zone (memory below a DMA limit, a node with strict affinity).
    Only(ZoneId),
}

/// How much scrubbing one call to [`BuddyAllocator::scrub`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScrubProgress {
    /// Frames scrubbed by this call.
    pub scrubbed: u64,
    /// Free frames still dirty afterwards (0: the scrubber may sleep).
    pub dirty_left: u64,
}

/// A binary buddy allocator of machine frames over up to `ZONES` zones.
///
/// See the [crate documentation](crate) for the model and an example.
#[derive(Debug)]
pub struct BuddyAllocator<'m, const ZONES: usize = 4> {
    zones: [Option<Zone<'m>>; ZONES],
    max_order: PageOrder,
    hot_frames: u32,
}

impl<'m, const ZONES: usize> BuddyAllocator<'m, ZONES> {
    /// An allocator with no zone whose largest block is `2^max_order` frames.
    ///
    /// # Errors
    ///
    /// [`ConfigError::MaxOrderTooLarge`] above [`MAX_SUPPORTED_ORDER`].
    pub fn new(max_order: PageOrder) -> Result<Self, ConfigError> {
        if max_order > MAX_SUPPORTED_ORDER {
            return Err(ConfigError::MaxOrderTooLarge {
                requested: max_order,
            });
        }
        Ok(Self {
            zones: [const { None }; ZONES],
            max_order,
            hot_frames: 0,
        })
    }

    /// The largest order this allocator hands out.
    #[must_use]
    pub fn max_order(&self) -> PageOrder {
        self.max_order
    }

    /// Keeps freed blocks of orders 0 to 9 on per-zone *hot lists* of up to
    /// `frames` frames per order (like Linux's per-CPU page lists, which keep
    /// orders 0 to 3 and 9, but inside the heap's lock; at most `10 * frames`
    /// free frames per zone stay unmerged): a free of such a block only
    /// links it, and the next
    /// allocation of its order takes the most recently freed block back, with
    /// no merge or split and while it is still in the CPU cache. Hot blocks
    /// are free in every count and statistic and are merged back whenever the
    /// buddies are needed whole (an allocation that would fail, a
    /// reservation, a scrub, [`flush_hot`](Self::flush_hot)). `0` (the
    /// default) frees and merges at once, as Xen does. Lowering the limit
    /// merges what no longer fits.
    pub fn set_hot_frames(&mut self, frames: u32) {
        self.hot_frames = frames;
        for zone in self.zones.iter_mut().flatten() {
            zone.set_hot_frames(frames);
        }
    }

    /// The hot-list limit set by [`set_hot_frames`](Self::set_hot_frames).
    #[must_use]
    pub fn hot_frames(&self) -> u32 {
        self.hot_frames
    }

    /// Merges every block on a hot list into the free lists, so that the
    /// free lists alone show the heap fully merged.
    pub fn flush_hot(&mut self) {
        for zone in self.zones.iter_mut().flatten() {
            zone.flush_hot();
        }
    }

    /// Adds a zone over `range`, keeping its metadata in `metadata`, which must
    /// hold at least [`metadata_words`](crate::metadata_words)`(range.len())`
    /// words. Every frame of the zone starts free, clean or dirty per
    /// `contents`.
    ///
    /// # Errors
    ///
    /// - [`AddZoneError::TooManyZones`] when all `ZONES` slots are used,
    /// - [`AddZoneError::Empty`] for an empty range,
    /// - [`AddZoneError::TooLarge`] for [`MAX_ZONE_FRAMES`](crate::MAX_ZONE_FRAMES)
    ///   frames or more,
    /// - [`AddZoneError::Overlaps`] if it shares a frame with another zone,
    /// - [`AddZoneError::MetadataTooSmall`] if `metadata` is too short.
    pub fn add_zone(
        &mut self,
        range: FrameRange,
        metadata: &'m mut [u64],
        contents: Contents,
    ) -> Result<ZoneId, AddZoneError> {
        if let Some(existing) = self
            .zones
            .iter()
            .flatten()
            .map(Zone::range)
            .find(|r| r.overlaps(&range))
        {
            return Err(AddZoneError::Overlaps { existing });
        }
        let (index, slot) = self
            .zones
            .iter_mut()
            .enumerate()
            .find(|(_, z)| z.is_none())
            .ok_or(AddZoneError::TooManyZones)?;
        let index = u8::try_from(index).map_err(|_| AddZoneError::TooManyZones)?;
        let mut zone = Zone::new(range, metadata, self.max_order, contents)?;
        zone.set_hot_frames(self.hot_frames);
        *slot = Some(zone);
        Ok(ZoneId(index))
    }

    /// The frames of a zone.
    #[must_use]
    pub fn zone_range(&self, zone: ZoneId) -> Option<FrameRange> {
        self.zone(zone).map(Zone::range)
    }

    /// The zone that holds `mfn`.
    #[must_use]
    pub fn zone_of(&self, mfn: Mfn) -> Option<ZoneId> {
        self.zones
            .iter()
            .position(|z| z.as_ref().is_some_and(|z| z.range().contains(mfn)))
            .map(|i| ZoneId(i as u8))
    }

    fn zone(&self, zone: ZoneId) -> Option<&Zone<'m>> {
        self.zones.get(zone.index()).and_then(Option::as_ref)
    }

    fn check_order(&self, order: PageOrder) -> Result<u8, AllocError> {
        if order > self.max_order {
            Err(AllocError::OrderTooLarge {
                requested: order,
                max: self.max_order,
            })
        } else {
            Ok(order.get())
        }
    }

    /// Allocates `2^order` frames, aligned to `2^order`, from any zone. The
    /// frames may hold a previous user's data: use
    /// [`alloc_clean`](Self::alloc_clean) for memory a guest will see.
    ///
    /// # Errors
    ///
    /// [`AllocError::OrderTooLarge`] above the maximum order;
    /// [`AllocError::OutOfMemory`] if no zone has a large enough free block.
    #[inline]
    pub fn alloc(&mut self, order: PageOrder) -> Result<Mfn, AllocError> {
        let k = self.check_order(order)?;
        for zone in self.zones.iter_mut().flatten() {
            if let Some(mfn) = zone.alloc(k) {
                return Ok(mfn);
            }
        }
        Err(AllocError::OutOfMemory)
    }

    /// Like [`alloc`](Self::alloc), from the zones `policy` allows.
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc), and [`AllocError::NoSuchZone`] if the policy
    /// names a zone that does not exist.
    pub fn alloc_in(&mut self, order: PageOrder, policy: ZonePolicy) -> Result<Mfn, AllocError> {
        let k = self.check_order(order)?;
        self.first_zone(policy, |z| z.alloc(k))
    }

    /// Allocates `2^order` clean frames: never a frame that holds another
    /// user's data. A clean block is taken if any zone has one; otherwise a
    /// dirty block is taken and its dirty frames are scrubbed now, one call of
    /// `scrub` per frame, before this returns.
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc).
    pub fn alloc_clean(
        &mut self,
        order: PageOrder,
        scrub: impl FnMut(Mfn),
    ) -> Result<Mfn, AllocError> {
        self.alloc_clean_in(order, ZonePolicy::Any, scrub)
    }

    /// Like [`alloc_clean`](Self::alloc_clean), from the zones `policy` allows.
    /// Every allowed zone is searched for a clean block before any dirty one
    /// is scrubbed.
    ///
    /// # Errors
    ///
    /// As [`alloc_in`](Self::alloc_in).
    pub fn alloc_clean_in(
        &mut self,
        order: PageOrder,
        policy: ZonePolicy,
        mut scrub: impl FnMut(Mfn),
    ) -> Result<Mfn, AllocError> {
        let k = self.check_order(order)?;
        let clean = self.first_zone(policy, |z| {
            if z.has_clean(k) {
                z.alloc_clean(k, &mut scrub)
            } else {
                None
            }
        });
        match clean {
            Err(AllocError::OutOfMemory) => {
                self.first_zone(policy, |z| z.alloc_clean(k, &mut scrub))
            }
            other => other,
        }
    }

    /// Runs `take` on the zones `policy` allows, in its order, until one
    /// gives a frame.
    fn first_zone(
        &mut self,
        policy: ZonePolicy,
        mut take: impl FnMut(&mut Zone<'m>) -> Option<Mfn>,
    ) -> Result<Mfn, AllocError> {
        let first = match policy {
            ZonePolicy::Any => None,
            ZonePolicy::Prefer(z) | ZonePolicy::Only(z) => {
                let zone = self
                    .zones
                    .get_mut(z.index())
                    .and_then(Option::as_mut)
                    .ok_or(AllocError::NoSuchZone)?;
                if let Some(mfn) = take(zone) {
                    return Ok(mfn);
                }
                if matches!(policy, ZonePolicy::Only(_)) {
                    return Err(AllocError::OutOfMemory);
                }
                Some(z.index())
            }
        };
        for (i, zone) in self.zones.iter_mut().enumerate() {
            if Some(i) == first {
                continue;
            }
            if let Some(mfn) = zone.as_mut().and_then(&mut take) {
                return Ok(mfn);
            }
        }
        Err(AllocError::OutOfMemory)
    }

    /// Frees the block of `2^order` frames at `mfn` that [`alloc`](Self::alloc)
    /// (or a variant) returned. Its frames become dirty, and it merges with
    /// free buddies up to the maximum order.
    ///
    /// # Errors
    ///
    /// The allocator is unchanged on every error:
    /// - [`FreeError::OrderTooLarge`] above the maximum order,
    /// - [`FreeError::Misaligned`] if `mfn` is not aligned to `2^order`,
    /// - [`FreeError::OutOfRange`] if the block is not inside one zone,
    /// - [`FreeError::NotAllocated`] if `mfn` does not head an allocated block
    ///   (a double free, or a frame inside a larger block),
    /// - [`FreeError::WrongOrder`] if the block was allocated with another order,
    /// - [`FreeError::Reserved`] for a reserved frame.
    #[inline]
    pub fn free(&mut self, mfn: Mfn, order: PageOrder) -> Result<(), FreeError> {
        if order > self.max_order {
            return Err(FreeError::OrderTooLarge {
                requested: order,
                max: self.max_order,
            });
        }
        if !mfn.is_aligned(order) {
            return Err(FreeError::Misaligned);
        }
        for zone in self.zones.iter_mut().flatten() {
            if let Some(i) = zone.index_of_span(mfn, order.frames()) {
                return zone.free(i, order.get());
            }
        }
        Err(FreeError::OutOfRange)
    }

    fn zone_of_range(&mut self, range: FrameRange) -> Option<(&mut Zone<'m>, u32, u32)> {
        if range.is_empty() {
            return None;
        }
        self.zones.iter_mut().flatten().find_map(|z| {
            let start = z.index_of_span(range.start(), range.len())?;
            Some((z, start, start + range.len() as u32))
        })
    }

    /// Takes exactly the frames of `range` out of the free pool (a firmware
    /// hole, a guest's fixed memory), splitting the free blocks around it.
    /// Reserved frames are given back with [`release`](Self::release), any
    /// sub-range at a time.
    ///
    /// # Errors
    ///
    /// The allocator is unchanged on every error:
    /// - [`ReserveError::OutOfRange`] if the range is empty or not in one zone,
    /// - [`ReserveError::NotFree`] naming the first frame that is allocated or
    ///   reserved.
    pub fn reserve(&mut self, range: FrameRange) -> Result<(), ReserveError> {
        let (zone, start, end) = self.zone_of_range(range).ok_or(ReserveError::OutOfRange)?;
        zone.reserve(start, end)
    }

    /// Gives reserved frames back to the free pool, dirty, merging them with
    /// their free buddies.
    ///
    /// # Errors
    ///
    /// The allocator is unchanged on every error:
    /// - [`ReleaseError::OutOfRange`] if the range is empty or not in one zone,
    /// - [`ReleaseError::NotReserved`] naming the first frame not reserved.
    pub fn release(&mut self, range: FrameRange) -> Result<(), ReleaseError> {
        let (zone, start, end) = self.zone_of_range(range).ok_or(ReleaseError::OutOfRange)?;
        zone.release(start, end)
    }

    /// Scrubs free dirty frames in the background: calls `scrub` for at most
    /// `budget` frames (a clean 64-frame stretch skipped also costs one unit),
    /// largest free blocks first, and moves blocks that become clean to the
    /// clean lists. Call it from an idle loop until `dirty_left` is 0.
    pub fn scrub(&mut self, budget: u64, mut scrub: impl FnMut(Mfn)) -> ScrubProgress {
        let mut left = budget;
        let mut scrubbed = 0;
        for zone in self.zones.iter_mut().flatten() {
            if left == 0 {
                break;
            }
            scrubbed += zone.scrub(&mut left, &mut scrub);
        }
        ScrubProgress {
            scrubbed,
            dirty_left: self.zones.iter().flatten().map(Zone::dirty_frames).sum(),
        }
    }

    /// Statistics over every zone.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for zone in self.zones.iter().flatten() {
            stats.add_zone(zone);
        }
        stats
    }

    /// Statistics of one zone.
    #[must_use]
    pub fn zone_stats(&self, zone: ZoneId) -> Option<Stats> {
        let mut stats = Stats::default();
        stats.add_zone(self.zone(zone)?);
        Some(stats)
    }

    /// The number of free frames in every zone.
    #[must_use]
    pub fn free_frames(&self) -> u64 {
        self.zones.iter().flatten().map(Zone::free_frames).sum()
    }
}

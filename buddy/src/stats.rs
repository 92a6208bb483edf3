//! Free-memory statistics and fragmentation indices.

use core::fmt;

use hvmem_types::PageOrder;

use crate::zone::{ORDERS, Zone};

/// A snapshot of an allocator's (or one zone's) free memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Frames managed.
    pub frames: u64,
    /// Free frames.
    pub free_frames: u64,
    /// Free frames that still hold a previous user's data.
    pub dirty_frames: u64,
    /// Frames taken with `reserve`.
    pub reserved_frames: u64,
    /// The order of the largest free block.
    pub largest_free: Option<PageOrder>,
    /// Free frames on hot lists (see
    /// [`BuddyAllocator::set_hot_frames`](crate::BuddyAllocator::set_hot_frames)),
    /// included in `free_frames` and in the free blocks of their orders.
    pub hot_frames: u64,
    free_blocks: [u64; ORDERS],
}

impl Stats {
    pub(crate) fn add_zone(&mut self, zone: &Zone<'_>) {
        self.frames += zone.range().len();
        self.free_frames += zone.free_frames();
        self.dirty_frames += zone.dirty_frames();
        self.reserved_frames += zone.reserved_frames();
        self.hot_frames += zone.hot_frames();
        for (k, count) in self.free_blocks.iter_mut().enumerate() {
            *count += u64::from(zone.free_blocks(k));
        }
        let largest = zone.largest_free().and_then(PageOrder::new);
        self.largest_free = self.largest_free.max(largest);
    }

    /// Free blocks of exactly `order`.
    #[must_use]
    pub fn free_blocks(&self, order: PageOrder) -> u64 {
        self.free_blocks
            .get(usize::from(order.get()))
            .copied()
            .unwrap_or(0)
    }

    /// Frames allocated (neither free nor reserved).
    #[must_use]
    pub fn allocated_frames(&self) -> u64 {
        self.frames - self.free_frames - self.reserved_frames
    }

    /// Free frames in blocks of at least `order`: what an allocation of that
    /// order can use.
    #[must_use]
    pub fn usable_frames(&self, order: PageOrder) -> u64 {
        self.free_blocks
            .iter()
            .enumerate()
            .skip(usize::from(order.get()))
            .map(|(k, &n)| n << k)
            .sum()
    }

    /// The unusable free space index for `order`, in thousandths: the share
    /// of free memory in blocks too small for an allocation of that order
    /// (0 = all free memory usable, 1000 = none). 0 when nothing is free.
    #[must_use]
    pub fn unusable_index(&self, order: PageOrder) -> u16 {
        if self.free_frames == 0 {
            return 0;
        }
        let unusable = self.free_frames - self.usable_frames(order).min(self.free_frames);
        (unusable * 1000 / self.free_frames) as u16
    }

    /// The fragmentation index for `order`, in thousandths, as Linux defines
    /// it for compaction: `None` if an allocation of that order would succeed;
    /// otherwise near 0 when it fails for lack of memory and near 1000 when it
    /// fails because free memory is split into too many small blocks.
    #[must_use]
    pub fn fragmentation_index(&self, order: PageOrder) -> Option<u16> {
        if self.usable_frames(order) > 0 {
            return None;
        }
        let blocks: u64 = self.free_blocks.iter().sum();
        if blocks == 0 {
            return Some(0);
        }
        let requested = order.frames();
        let lack = (1000 + self.free_frames.saturating_mul(1000) / requested) / blocks;
        Some(1000u64.saturating_sub(lack) as u16)
    }
}

impl fmt::Display for Stats {
    /// A small table: totals, then the free blocks of each non-empty order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "frames {}  free {}  dirty {}  reserved {}  largest free {}",
            self.frames,
            self.free_frames,
            self.dirty_frames,
            self.reserved_frames,
            self.largest_free.map_or(-1, |o| i32::from(o.get()))
        )?;
        writeln!(f, "order  free blocks  unusable index")?;
        for (k, &n) in self.free_blocks.iter().enumerate() {
            if n != 0 {
                let order = PageOrder::new(k as u8).unwrap_or(PageOrder::ZERO);
                writeln!(f, "{k:>5}  {n:>11}  {:>12}‰", self.unusable_index(order))?;
            }
        }
        Ok(())
    }
}

//! Table frames: where they come from, and the reservation that makes every
//! update all or nothing.
//!
//! An update first counts the tables it will need (a dry run over the live
//! tables), then takes that many frames from the [`TableAllocator`] before it
//! changes anything. If the allocator runs dry, the frames already taken go
//! back and the update fails with the tables untouched. The commit step draws
//! from the reservation and cannot run out. Reserved frames are chained
//! through their own first entry, so a reservation of any size needs no
//! storage of its own.

use core::sync::atomic::{AtomicU64, Ordering};

use hvmem_types::PhysAddr;

use crate::mem::PhysMem;

/// Where table frames come from and go back to.
pub trait TableAllocator {
    /// A frame for a table (its contents need not be zero; the editor clears
    /// it), or `None` when memory is exhausted.
    fn alloc_table(&mut self) -> Option<PhysAddr>;

    /// A table frame the editor no longer uses.
    ///
    /// A table that was reachable from a live root may still be cached in
    /// paging-structure caches until the [`TlbFlush`](crate::TlbFlush) of the
    /// update that freed it has been carried out: the allocator must not reuse
    /// the frame before then (queue it, as Linux defers table freeing).
    fn free_table(&mut self, table: PhysAddr);

    /// A frame from [`alloc_table`](Self::alloc_table) that the editor gives
    /// back without ever having made it reachable (an update that failed,
    /// or a reservation it did not use up): it may be reused at once. The
    /// default hands it to [`free_table`](Self::free_table).
    fn return_unused(&mut self, frame: PhysAddr) {
        self.free_table(frame);
    }

    /// `tables` physically contiguous table frames aligned to their total
    /// size, for a concatenated root (AArch64 stage 2 starts with up to 16).
    /// The default gives a single table and nothing larger; override it
    /// together with [`free_root`](Self::free_root).
    fn alloc_root(&mut self, tables: usize) -> Option<PhysAddr> {
        if tables == 1 {
            self.alloc_table()
        } else {
            None
        }
    }

    /// A root from [`alloc_root`](Self::alloc_root) the editor no longer
    /// uses (same reuse rule as [`free_table`](Self::free_table)). The
    /// default frees a single table and nothing larger (the default
    /// `alloc_root` never hands out more).
    fn free_root(&mut self, root: PhysAddr, tables: usize) {
        if tables == 1 {
            self.free_table(root);
        }
    }
}

/// Frames taken for one update, chained through their entry 0.
#[derive(Debug)]
pub(crate) struct Reservation {
    head: Option<u64>,
    len: usize,
    entries: usize,
}

impl Reservation {
    pub(crate) const fn empty(entries: usize) -> Self {
        Self {
            head: None,
            len: 0,
            entries,
        }
    }

    /// Frames still reserved.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Takes `count` frames, or none at all. A frame is cleared when it is
    /// taken ([`take`](Self::take)), not here, so that a table the commit
    /// overwrites whole is written once
    /// ([`take_uncleared`](Self::take_uncleared)).
    pub(crate) fn take_frames(
        count: usize,
        entries: usize,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
    ) -> Result<Self, ReserveFailure> {
        let mut r = Self::empty(entries);
        while r.len < count {
            let Some(frame) = alloc.alloc_table() else {
                r.release(mem, alloc);
                return Err(ReserveFailure::OutOfMemory);
            };
            let Some(table) = mem.table(frame, entries) else {
                alloc.free_table(frame);
                r.release(mem, alloc);
                return Err(ReserveFailure::NotAccessible(frame));
            };
            if let Some(first) = table.first() {
                // Link: next frame + 1, so that 0 means "end" even for frame 0.
                first.store(r.head.map_or(0, |h| h + 1), Ordering::Relaxed);
            }
            r.head = Some(frame.get());
            r.len += 1;
        }
        Ok(r)
    }

    /// Unlinks the next frame: its entry 0 is cleared, the others hold
    /// whatever the frame held.
    fn unlink<'m>(&mut self, mem: &'m impl PhysMem) -> Option<(u64, &'m [AtomicU64])> {
        let frame = self.head?;
        let table = mem.table(PhysAddr::new(frame), self.entries)?;
        let first = table.first()?;
        // Not yet reachable by anyone: plain accesses suffice.
        let next = first.load(Ordering::Relaxed);
        first.store(0, Ordering::Relaxed);
        self.head = next.checked_sub(1);
        self.len -= 1;
        Some((frame, table))
    }

    /// A zeroed frame from the reservation.
    pub(crate) fn take(&mut self, mem: &impl PhysMem) -> Option<u64> {
        let (frame, table) = self.unlink(mem)?;
        for e in table {
            e.store(0, Ordering::Relaxed);
        }
        #[cfg(test)]
        crate::bbm::trace::fresh(table);
        Some(frame)
    }

    /// A frame from the reservation whose entries (but entry 0, which is
    /// zero) are left as the allocator handed them out: for a caller that
    /// writes every entry before the table becomes reachable.
    pub(crate) fn take_uncleared(&mut self, mem: &impl PhysMem) -> Option<u64> {
        let (frame, _table) = self.unlink(mem)?;
        #[cfg(test)]
        crate::bbm::trace::fresh(_table);
        Some(frame)
    }

    /// Gives every frame still reserved back to the allocator.
    pub(crate) fn release(mut self, mem: &impl PhysMem, alloc: &mut impl TableAllocator) {
        while let Some((frame, _)) = self.unlink(mem) {
            alloc.return_unused(PhysAddr::new(frame));
        }
    }
}

/// Why a reservation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReserveFailure {
    OutOfMemory,
    NotAccessible(PhysAddr),
}

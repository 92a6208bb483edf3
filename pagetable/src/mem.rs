//! How the editor reaches table memory.

use core::sync::atomic::AtomicU64;

use hvmem_types::PhysAddr;

/// Maps the physical address of a table to its entries.
///
/// The editor reads and writes entries only through the returned atomics, so
/// the same code edits live tables (that hardware walks and updates A/D bits
/// in), a guest's tables inside guest memory, and a test arena.
///
/// Implementing it is safe: producing the slice is the implementor's
/// business (a direct map, a guest-memory mapping); the contract is only that
/// the slice covers the table's memory for as long as it is borrowed.
pub trait PhysMem {
    /// The `entries` eight-byte entries of the table at `table`, or `None` if
    /// that memory is not accessible (not RAM, not mapped, misaligned).
    fn table(&self, table: PhysAddr, entries: usize) -> Option<&[AtomicU64]>;
}

/// Physical memory backed by a slice of atomics: an arena for tests,
/// benches and fuzzing, or a direct-mapped region.
#[derive(Debug)]
pub struct SliceMem<'a> {
    base: u64,
    words: &'a [AtomicU64],
}

impl<'a> SliceMem<'a> {
    /// Memory whose physical address `base` is `words[0]`.
    #[must_use]
    pub fn new(base: PhysAddr, words: &'a [AtomicU64]) -> Self {
        Self {
            base: base.get(),
            words,
        }
    }

    /// The physical address just past the arena.
    #[must_use]
    pub fn end(&self) -> PhysAddr {
        PhysAddr::new(self.base.saturating_add(self.words.len() as u64 * 8))
    }
}

impl PhysMem for SliceMem<'_> {
    #[inline]
    fn table(&self, table: PhysAddr, entries: usize) -> Option<&[AtomicU64]> {
        // Below the base the offset wraps to a huge value, and an offset
        // between entries has low bits set, which the rotation moves to the
        // top: then `end` either lies past the end or wraps below `first`,
        // and the slice refuses both, as it does a table past the end.
        let first = table.get().wrapping_sub(self.base).rotate_right(3);
        let first = usize::try_from(first).ok()?;
        let end = first.wrapping_add(entries);
        if end > self.words.len() || end < first {
            return None;
        }
        self.words.get(first..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_mem_refuses_addresses_outside_or_between_entries() {
        let words: [AtomicU64; 1024] = core::array::from_fn(|_| AtomicU64::new(0));
        let mem = SliceMem::new(PhysAddr::new(0x10_0000), &words);
        assert!(mem.table(PhysAddr::new(0x10_0000), 512).is_some());
        assert!(mem.table(PhysAddr::new(0x10_1000), 512).is_some());
        assert!(
            mem.table(PhysAddr::new(0x10_1008), 512).is_none(),
            "runs past the end"
        );
        assert!(
            mem.table(PhysAddr::new(0x10_0004), 1).is_none(),
            "between entries"
        );
        assert!(
            mem.table(PhysAddr::new(0xf_f000), 1).is_none(),
            "below the base"
        );
        assert!(mem.table(PhysAddr::new(u64::MAX), 1).is_none());
        assert_eq!(mem.end(), PhysAddr::new(0x10_2000));
    }
}

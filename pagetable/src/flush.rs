//! The TLB work an update leaves to the caller.

use core::fmt;

/// Translations that changed and may still be cached: invalidate them on
/// every CPU that may hold them before relying on the update, and before
/// reusing any table frame it freed.
///
/// How, per format (the range is in the format's input addresses: virtual
/// for x86 paging and stage 1, guest-physical for EPT and stage 2):
///
/// - x86 paging: `INVLPG` each page of [`range`](Self::range) (it also
///   drops global entries and, with [`tables_changed`](Self::tables_changed),
///   the paging-structure caches for that address), or above a threshold of
///   pages a full flush: `INVPCID` type 2 (type 1 and a CR3 write keep
///   global entries). Remote CPUs need a shootdown IPI.
/// - EPT: `INVEPT` single-context for any non-empty flush (EPT cannot be
///   invalidated by guest-physical address).
/// - AArch64 stage 1: `DSB ISHST`, then `TLBI VAE1IS` (or `VALE1IS` when
///   [`tables_changed`](Self::tables_changed) is false; `VAE2IS` at EL2)
///   per page, or `TLBI ASIDE1IS` / `VMALLE1IS` / `ALLE2IS` above a
///   threshold; then `DSB ISH`, `ISB`. Broadcast TLBIs reach every CPU of
///   the inner-shareable domain.
/// - AArch64 stage 2: as [`BreakBeforeMake`](crate::BreakBeforeMake)
///   describes, `TLBI IPAS2E1IS` per page then `VMALLE1IS`, or
///   `VMALLS12E1IS`.
///
/// An empty flush on AArch64 still needs `DSB ISHST` (and `ISB`) before the
/// new entries are relied on; x86 needs nothing.
///
/// Holds one input-address range, the smallest that covers every range the
/// update changed (as Linux's `mmu_gather` does): an update that changed
/// two distant pages lists the span between them too, and invalidating
/// translations that did not change is harmless. A caller decides from the
/// range's length whether to invalidate page by page or flush everything.
/// (One range keeps the value at 24 bytes. Every update returns one, and
/// clearing and moving a list of three ranges cost an x86 one-page map and
/// unmap 19 of their 307 instructions.) Newly created translations are
/// never listed: not-present entries are not cached.
#[must_use = "the TLBs may still hold the old translations"]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TlbFlush {
    /// The range `[start, end)`, empty while `start >= end` (the empty
    /// value is `(u64::MAX, 0)`, so that adding a range is a min and a
    /// max).
    start: u64,
    end: u64,
    all: bool,
    tables: bool,
}

impl TlbFlush {
    /// Nothing to flush.
    pub const NONE: Self = Self {
        start: u64::MAX,
        end: 0,
        all: false,
        tables: false,
    };

    /// Everything, paging-structure caches included.
    pub const ALL: Self = Self {
        start: u64::MAX,
        end: 0,
        all: true,
        tables: true,
    };

    /// Whether nothing needs flushing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.start >= self.end && !self.all
    }

    /// Whether the whole address space must be flushed (x86: `INVPCID`
    /// type 2, or type 1 if no leaf was global; EPT: `INVEPT`
    /// single-context; stage 1: `TLBI ASIDE1IS`, `VMALLE1IS` with global
    /// leaves, `ALLE2IS` at EL2; stage 2: `VMALLS12E1IS`): what tearing down
    /// a table returns.
    #[must_use]
    pub fn is_flush_all(&self) -> bool {
        self.all
    }

    /// Whether a table entry changed or a table was freed, so that
    /// paging-structure caches must be flushed too (INVLPG does that on x86;
    /// on Arm use a non-leaf TLBI).
    #[must_use]
    pub fn tables_changed(&self) -> bool {
        self.tables
    }

    /// The input-address range `[start, end)` to invalidate, if any.
    #[must_use]
    pub fn range(&self) -> Option<(u64, u64)> {
        (self.start < self.end).then_some((self.start, self.end))
    }

    /// [`range`](Self::range) as an iterator (of at most one range).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.range().into_iter()
    }

    /// Whether the flush invalidates the translation of `input`.
    #[must_use]
    pub fn covers(&self, input: u64) -> bool {
        self.all || (self.start <= input && input < self.end)
    }

    /// Adds `[start, end)`: the range grows to cover it.
    #[inline]
    pub(crate) fn add(&mut self, start: u64, end: u64, table: bool) {
        self.add_inline(start, end, table);
    }

    /// [`add`](Self::add), always inlined (the one-page updates).
    #[inline(always)]
    pub(crate) fn add_inline(&mut self, start: u64, end: u64, table: bool) {
        self.tables |= table;
        if start < end {
            self.start = self.start.min(start);
            self.end = self.end.max(end);
        }
    }

    /// Both flushes.
    pub fn merge(mut self, other: Self) -> Self {
        self.tables |= other.tables;
        self.all |= other.all;
        if let Some((start, end)) = other.range() {
            self.add(start, end, false);
        }
        self
    }
}

impl fmt::Debug for TlbFlush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all {
            return f.write_str("TlbFlush(all)");
        }
        let mut list = f.debug_list();
        for (s, e) in self.ranges() {
            list.entry(&format_args!("{s:#x}..{e:#x}"));
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_grows_to_cover_every_range_added() {
        let mut f = TlbFlush::NONE;
        assert!(f.is_empty() && f.range().is_none() && !f.covers(0));
        f.add(0x2000, 0x3000, false);
        f.add(0x1000, 0x2000, false);
        assert_eq!(f.range(), Some((0x1000, 0x3000)));
        f.add(0x10_0000, 0x10_1000, true);
        assert_eq!(
            f.ranges().collect::<std::vec::Vec<_>>(),
            [(0x1000, 0x10_1000)]
        );
        assert!(f.covers(0x8000) && !f.covers(0x10_1000) && f.tables_changed());
        assert!(!f.is_flush_all());
    }

    #[test]
    fn an_empty_range_adds_nothing_and_merge_keeps_both() {
        let mut f = TlbFlush::NONE;
        f.add(0x5000, 0x5000, false);
        assert!(f.is_empty());
        let mut g = TlbFlush::NONE;
        g.add(0x9000, 0xa000, false);
        let both = f.merge(g).merge(TlbFlush::ALL);
        assert!(both.is_flush_all() && both.tables_changed() && both.covers(0));
        assert_eq!(both.range(), Some((0x9000, 0xa000)));
    }
}

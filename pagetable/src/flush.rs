//! The TLB work an update leaves to the caller.

use core::fmt;

/// Translations that changed and may still be cached: invalidate them
/// (INVLPG / INVPCID, INVEPT, TLBI; on every CPU that may hold them) before
/// relying on the update, and before reusing any table frame it freed.
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

    /// Whether the whole address space must be flushed (INVPCID type 1,
    /// INVEPT single-context, TLBI VMALLS12E1IS): what tearing down a table
    /// returns.
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

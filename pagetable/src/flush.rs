//! The TLB work an update leaves to the caller.

use core::fmt;

const MAX_RANGES: usize = 3;

/// Translations that changed and may still be cached: invalidate them
/// (INVLPG / INVPCID, INVEPT, TLBI; on every CPU that may hold them) before
/// relying on the update, and before reusing any table frame it freed.
///
/// Holds up to three input-address ranges (adjacent ones merge); past that
/// it asks for a full flush. (Three keeps the value at 56 bytes: every
/// update returns one, and a one-page update spent a tenth of its
/// instructions clearing and moving the seven-range value it had before.)
/// Newly created translations are never listed: not-present entries are not
/// cached.
#[must_use = "the TLBs may still hold the old translations"]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TlbFlush {
    ranges: [(u64, u64); MAX_RANGES],
    len: u8,
    all: bool,
    tables: bool,
}

impl TlbFlush {
    /// Nothing to flush.
    pub const NONE: Self = Self {
        ranges: [(0, 0); MAX_RANGES],
        len: 0,
        all: false,
        tables: false,
    };

    /// Everything, paging-structure caches included.
    pub const ALL: Self = Self {
        ranges: [(0, 0); MAX_RANGES],
        len: 0,
        all: true,
        tables: true,
    };

    /// Whether nothing needs flushing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.all
    }

    /// Whether the list overflowed: flush the whole address space (INVPCID
    /// type 1, INVEPT single-context, TLBI VMALLS12E1IS).
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

    /// The input-address ranges `[start, end)` to invalidate.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().take(usize::from(self.len)).copied()
    }

    /// Whether the flush invalidates the translation of `input`.
    #[must_use]
    pub fn covers(&self, input: u64) -> bool {
        self.all || self.ranges().any(|(s, e)| s <= input && input < e)
    }

    /// Adds `[start, end)`; adjacent or overlapping ranges merge.
    #[inline]
    pub(crate) fn add(&mut self, start: u64, end: u64, table: bool) {
        self.add_inline(start, end, table);
    }

    /// [`add`](Self::add), always inlined (the one-page updates).
    #[inline(always)]
    pub(crate) fn add_inline(&mut self, start: u64, end: u64, table: bool) {
        self.tables |= table;
        if self.all || start >= end {
            return;
        }
        let n = usize::from(self.len);
        if let Some(last) = n.checked_sub(1).and_then(|i| self.ranges.get_mut(i)) {
            if start <= last.1 && last.0 <= end {
                *last = (last.0.min(start), last.1.max(end));
                return;
            }
        }
        match self.ranges.get_mut(n) {
            Some(slot) => {
                *slot = (start, end);
                self.len += 1;
            }
            None => self.all = true,
        }
    }

    /// Both flushes.
    pub fn merge(mut self, other: Self) -> Self {
        self.tables |= other.tables;
        self.all |= other.all;
        for (s, e) in other.ranges() {
            self.add(s, e, false);
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
    fn adjacent_ranges_merge_and_overflow_becomes_flush_all() {
        let mut f = TlbFlush::NONE;
        assert!(f.is_empty());
        f.add(0x1000, 0x2000, false);
        f.add(0x2000, 0x3000, false);
        assert_eq!(f.ranges().collect::<std::vec::Vec<_>>(), [(0x1000, 0x3000)]);
        for i in 0..8 {
            f.add(0x10_0000 * (i + 1), 0x10_0000 * (i + 1) + 0x1000, false);
        }
        assert!(f.is_flush_all());
        assert!(f.covers(0xdead_0000));
    }
}

//! The one-leaf fast path.
//!
//! Mapping or unmapping a single page is the most frequent update (a fault
//! handler, a balloon, a grant map), and the general plan/commit walk spends
//! most of its time on bookkeeping that one slot per level does not need. The
//! fast path makes the same decisions on one path from the root: it walks
//! down once, recording the tables it passes; if it meets anything but the
//! plain cases (tables all the way, or an invalid entry below which the
//! missing tables can be built), it hands over to the general engine before
//! changing anything. Missing tables are reserved first and linked bottom
//! up, so the new leaf appears with the single store that links the top new
//! table: still all or nothing.

use core::sync::atomic::{AtomicU64, Ordering};

use hvmem_types::PhysAddr;

use crate::alloc::{Reservation, ReserveFailure, TableAllocator};
use crate::bbm::{Break, BreakBeforeMake};
use crate::error::TableError;
use crate::flush::TlbFlush;
use crate::format::{EntryKind, Format};
use crate::mem::PhysMem;
use crate::shape::{Shape, with_shape};
use crate::table::PageTable;

/// Deepest paging hierarchy any format has (AArch64 4K + LPA2: 5 levels).
const MAX_LEVELS: usize = 8;

/// What the fast path decided.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Single {
    /// Done; the flush was added to the caller's.
    Done,
    /// Not a case for the fast path: nothing was changed.
    General,
}

impl<F: Format> PageTable<F> {
    /// The entries of the table at `table` (level `level`).
    #[inline]
    fn entries_of<'m>(
        &self,
        mem: &'m impl PhysMem,
        table: u64,
        level: u8,
    ) -> Result<&'m [AtomicU64], TableError> {
        let n = if level + 1 == self.format.levels() {
            self.format.root_entries()
        } else {
            self.format.entries()
        };
        mem.table(PhysAddr::new(table), n)
            .ok_or(TableError::NotAccessible {
                table: PhysAddr::new(table),
            })
    }

    #[inline]
    fn slot_of<'m>(
        &self,
        entries: &'m [AtomicU64],
        index: u64,
        level: u8,
    ) -> Option<&'m AtomicU64> {
        let i = (index >> self.format.level_shift(level)) & (entries.len() as u64).wrapping_sub(1);
        entries.get(i as usize)
    }

    /// Records an entry write for the break-before-make checker of the tests.
    #[inline]
    fn traced_store(&self, entry: &AtomicU64, old: u64, new: u64, level: u8, index: u64) {
        entry.store(new, Ordering::Release);
        #[cfg(test)]
        {
            let size = 1u64 << self.format.level_shift(level);
            let at = self.format.index_to_input(index & !(size - 1));
            crate::bbm::trace::write(entry, level, at, size, old, new);
        }
        let _ = (old, level, index);
    }

    /// Maps one leaf at `level` for the index `index` with entry `leaf`,
    /// adding what must be invalidated to `flush`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn map_single(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        index: u64,
        level: u8,
        leaf: u64,
        replace: bool,
        flush: &mut TlbFlush,
    ) -> Result<Single, SingleError> {
        // A 4 KiB page, the usual case, gets its own copy with the level a
        // constant: the walk down then unrolls.
        if level == 0 {
            with_shape!(self.shape, &self.format, |shape| self.map_single_in(
                shape, mem, alloc, bbm, index, 0, leaf, replace, flush
            ))
        } else {
            with_shape!(self.shape, &self.format, |shape| self.map_single_in(
                shape, mem, alloc, bbm, index, level, leaf, replace, flush
            ))
        }
    }

    /// [`map_single`](Self::map_single) for tables of the given shape.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn map_single_in(
        &mut self,
        shape: impl Shape,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        index: u64,
        level: u8,
        leaf: u64,
        replace: bool,
        flush: &mut TlbFlush,
    ) -> Result<Single, SingleError> {
        let pattern = self.format.table_pattern();
        let below_root = shape.entries();
        let mut entries_per_table = shape.root_entries();
        let mut table = self.root;
        let mut l = shape.levels() - 1;
        let bits = shape.bits();
        let mut shift = shape.level_shift(&self.format, l);
        // Walk down to the table that holds the leaf, or to an invalid entry.
        let mut missing_at = None;
        while l > level {
            let entries = table_at(mem, table, entries_per_table)?;
            let Some(entry) = slot_at(entries, index, shift) else {
                return Ok(Single::General);
            };
            let raw = entry.load(Ordering::Acquire);
            if pattern.matches(raw) {
                table = pattern.address(raw);
            } else {
                match self.format.kind(raw, l) {
                    EntryKind::Table(next) => table = next,
                    EntryKind::Invalid => {
                        missing_at = Some((entry, l));
                        break;
                    }
                    EntryKind::Leaf(_) | EntryKind::Malformed => return Ok(Single::General),
                }
            }
            l -= 1;
            shift -= bits;
            debug_assert_eq!(shift, self.format.level_shift(l));
            entries_per_table = below_root;
        }
        let Some((top_entry, top_level)) = missing_at else {
            let entries = table_at(mem, table, entries_per_table)?;
            let Some(entry) = slot_at(entries, index, shift) else {
                return Ok(Single::General);
            };
            let raw = entry.load(Ordering::Acquire);
            // The usual free slot, without classifying it: a zero entry is
            // invalid in every format (unmapping writes zero).
            let kind = if raw == 0 {
                EntryKind::Invalid
            } else {
                self.format.kind(raw, level)
            };
            return Ok(match kind {
                EntryKind::Invalid => {
                    self.traced_store(entry, raw, leaf, level, index);
                    Single::Done
                }
                // Part of a contiguous run: the general engine unfolds it.
                EntryKind::Leaf(_) if self.format.is_contiguous(raw) => Single::General,
                EntryKind::Leaf(_) if replace => {
                    let size = 1u64 << self.format.level_shift(level);
                    let at = self.format.index_to_input(index & !(size - 1));
                    if self.format.needs_break(raw, leaf, level) {
                        self.traced_store(entry, raw, 0, level, index);
                        let broken = Break {
                            start: at,
                            end: at.saturating_add(size),
                            level,
                            table: false,
                        };
                        #[cfg(test)]
                        crate::bbm::trace::record(crate::bbm::trace::Event::Invalidate(broken));
                        bbm.invalidate(&broken);
                        self.traced_store(entry, 0, leaf, level, index);
                    } else {
                        self.traced_store(entry, raw, leaf, level, index);
                        flush.add_inline(at, at.saturating_add(size), false);
                    }
                    Single::Done
                }
                EntryKind::Leaf(_) => {
                    return Err(SingleError::Mapped(self.format.index_to_input(index)));
                }
                EntryKind::Table(_) | EntryKind::Malformed => Single::General,
            });
        };
        // Tables for levels top_level-1 down to `level`, built bottom up.
        let needed = usize::from(top_level - level);
        if needed > MAX_LEVELS {
            return Ok(Single::General);
        }
        let mut reservation = Reservation::take_frames(needed, self.format.entries(), mem, alloc)?;
        // Filled bottom up while unlinked. The reservation checked every
        // frame, so none of this fails; if it did, every frame goes back and
        // the general engine (which reports the error) takes over, with the
        // tables untouched.
        let mut built = [0u64; MAX_LEVELS];
        let mut taken = 0;
        let mut below = None;
        for (lv, slot) in (level..top_level).zip(built.iter_mut()) {
            let filled = reservation.take(mem).and_then(|t| {
                *slot = t;
                taken += 1;
                let entry = self
                    .entries_of(mem, t, lv)
                    .ok()
                    .and_then(|entries| self.slot_of(entries, index, lv))?;
                let raw = match below {
                    None => leaf,
                    Some(child) => self.format.encode_table(child, lv),
                };
                entry.store(raw, Ordering::Relaxed);
                Some(t)
            });
            if filled.is_none() {
                for &t in built.iter().take(taken) {
                    alloc.return_unused(PhysAddr::new(t));
                }
                reservation.release(mem, alloc);
                return Ok(Single::General);
            }
            below = filled;
        }
        if let Some(child) = below {
            let old = top_entry.load(Ordering::Relaxed);
            let table = self.format.encode_table(child, top_level);
            self.traced_store(top_entry, old, table, top_level, index);
        }
        reservation.release(mem, alloc);
        Ok(Single::Done)
    }

    /// Unmaps the one leaf at `level` covering `index`, freeing the tables on
    /// its path that become empty, adding what must be invalidated to
    /// `flush`.
    #[inline(always)]
    pub(crate) fn unmap_single(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        index: u64,
        level: u8,
        flush: &mut TlbFlush,
    ) -> Result<Single, SingleError> {
        // As for `map_single`: the usual 4 KiB page has its own copy.
        if level == 0 {
            with_shape!(self.shape, &self.format, |shape| self
                .unmap_single_in(shape, mem, alloc, index, 0, flush))
        } else {
            with_shape!(self.shape, &self.format, |shape| self
                .unmap_single_in(shape, mem, alloc, index, level, flush))
        }
    }

    /// [`unmap_single`](Self::unmap_single) for tables of the given shape.
    #[inline(always)]
    fn unmap_single_in(
        &mut self,
        shape: impl Shape,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        index: u64,
        level: u8,
        flush: &mut TlbFlush,
    ) -> Result<Single, SingleError> {
        let top = shape.levels() - 1;
        let pattern = self.format.table_pattern();
        let below_root = shape.entries();
        let mut entries_per_table = shape.root_entries();
        if usize::from(top) >= MAX_LEVELS {
            return Ok(Single::General);
        }
        let mut table = self.root;
        let mut l = top;
        let bits = shape.bits();
        let mut shift = shape.level_shift(&self.format, l);
        // Down through the tables the pattern recognises to the leaf, if it
        // is a plain page; anything else is classified out of line.
        let found = loop {
            let entries = table_at(mem, table, entries_per_table)?;
            let Some(entry) = slot_at(entries, index, shift) else {
                return Ok(Single::General);
            };
            let raw = entry.load(Ordering::Acquire);
            if l == level {
                // A page by the shortcut, a block by its kind; a contiguous
                // run, a hole or anything else goes out of line.
                let leaf = if level == 0 {
                    self.format.last_level_leaf(raw).is_some()
                } else {
                    matches!(self.format.kind(raw, level), EntryKind::Leaf(_))
                };
                break (leaf && !self.format.is_contiguous(raw)).then_some((entry, entries));
            }
            if !pattern.matches(raw) {
                break None;
            }
            table = pattern.address(raw);
            l -= 1;
            shift -= bits;
            debug_assert_eq!(shift, self.format.level_shift(l));
            entries_per_table = below_root;
        };
        let (leaf, leaf_table) = match found {
            Some(found) => found,
            None => {
                match self.unmap_descend(shape, mem, table, entries_per_table, l, index, level)? {
                    Descent::Leaf(entry, entries) => (entry, entries),
                    Descent::Done => return Ok(Single::Done),
                    Descent::General => return Ok(Single::General),
                }
            }
        };
        // From here on nothing may fail: the leaf goes, and each table on
        // the path that is left empty is unlinked and freed, bottom up.
        let size = 1u64 << self.format.level_shift(level);
        let at = self.format.index_to_input(index & !(size - 1));
        let old = leaf.load(Ordering::Relaxed);
        self.traced_store(leaf, old, 0, level, index);
        flush.add_inline(at, at.saturating_add(size), false);
        if level < top && self.is_empty_table(leaf_table, level) {
            self.free_emptied_path(mem, alloc, index, level, flush);
        }
        Ok(Single::Done)
    }

    /// [`unmap_single_in`](Self::unmap_single_in)'s walk from the table at
    /// `table` (level `l`, `entries` entries) on, classifying every entry
    /// with `Format::kind`: entries the fast descent does not recognise.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    #[inline(never)]
    fn unmap_descend<'m>(
        &self,
        shape: impl Shape,
        mem: &'m impl PhysMem,
        mut table: u64,
        mut entries_per_table: usize,
        mut l: u8,
        index: u64,
        level: u8,
    ) -> Result<Descent<'m>, SingleError> {
        let mut shift = shape.level_shift(&self.format, l);
        loop {
            let entries = table_at(mem, table, entries_per_table)?;
            let Some(entry) = slot_at(entries, index, shift) else {
                return Ok(Descent::General);
            };
            let raw = entry.load(Ordering::Acquire);
            if l == 0
                && level == 0
                && self.format.last_level_leaf(raw).is_some()
                && !self.format.is_contiguous(raw)
            {
                return Ok(Descent::Leaf(entry, entries));
            }
            match self.format.kind(raw, l) {
                EntryKind::Invalid => return Ok(Descent::Done),
                EntryKind::Table(next) if l > level => table = next,
                EntryKind::Leaf(_) if l == level && !self.format.is_contiguous(raw) => {
                    return Ok(Descent::Leaf(entry, entries));
                }
                _ => return Ok(Descent::General),
            }
            l -= 1;
            shift -= shape.bits();
            entries_per_table = shape.entries();
        }
    }

    /// Whether every entry of `entries` (a table at `level`) is invalid.
    /// Stops at the first valid one (usually early: tables are rarely left
    /// empty).
    #[inline(always)]
    fn is_empty_table(&self, entries: &[AtomicU64], level: u8) -> bool {
        for e in entries {
            let raw = e.load(Ordering::Acquire);
            // A page the shortcut recognises is not invalid.
            if (level == 0 && self.format.last_level_leaf(raw).is_some())
                || self.format.kind(raw, level) != EntryKind::Invalid
            {
                return false;
            }
        }
        true
    }

    /// After the leaf at `level` for `index` was removed and left its table
    /// empty: unlinks and frees that table and every table above it that is
    /// left empty in turn, bottom up (never the root), adding the flushes.
    /// The walk down found tables all the way, and nothing changed them
    /// since but the leaf's removal.
    #[cold]
    #[inline(never)]
    fn free_emptied_path(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        index: u64,
        level: u8,
        flush: &mut TlbFlush,
    ) {
        let top = self.format.levels() - 1;
        // The table at each level of the path.
        let mut tables = [0u64; MAX_LEVELS];
        let mut table = self.root;
        for l in (level..=top).rev() {
            let Some(t) = tables.get_mut(usize::from(l)) else {
                return;
            };
            *t = table;
            if l == level {
                break;
            }
            let next = self
                .entries_of(mem, table, l)
                .ok()
                .and_then(|e| self.slot_of(e, index, l))
                .map(|e| self.format.kind(e.load(Ordering::Acquire), l));
            let Some(EntryKind::Table(next)) = next else {
                return;
            };
            table = next;
        }
        for lv in level..top {
            let (Some(&t), Some(&above)) =
                (tables.get(usize::from(lv)), tables.get(usize::from(lv) + 1))
            else {
                break;
            };
            // Both tables were readable during the walk.
            let Ok(entries) = self.entries_of(mem, t, lv) else {
                break;
            };
            if !self.is_empty_table(entries, lv) {
                break;
            }
            let Some(parent) = self
                .entries_of(mem, above, lv + 1)
                .ok()
                .and_then(|e| self.slot_of(e, index, lv + 1))
            else {
                break;
            };
            let old = parent.load(Ordering::Relaxed);
            self.traced_store(parent, old, 0, lv + 1, index);
            alloc.free_table(PhysAddr::new(t));
            let span = 1u64 << self.format.level_shift(lv + 1);
            let start = self.format.index_to_input(index & !(span - 1));
            flush.add(start, start.saturating_add(span), true);
        }
    }
}

/// The entry of `entries` covering `index` in a table whose entries map
/// `1 << shift` bytes each.
#[inline(always)]
fn slot_at(entries: &[AtomicU64], index: u64, shift: u32) -> Option<&AtomicU64> {
    entries.get(((index >> shift) & (entries.len() as u64).wrapping_sub(1)) as usize)
}

/// The `entries` entries of the table at `table`.
#[inline(always)]
fn table_at(mem: &impl PhysMem, table: u64, entries: usize) -> Result<&[AtomicU64], TableError> {
    mem.table(PhysAddr::new(table), entries)
        .ok_or(TableError::NotAccessible {
            table: PhysAddr::new(table),
        })
}

/// Where [`PageTable::unmap_descend`] ended.
enum Descent<'m> {
    /// At the leaf to remove: its entry and the table holding it.
    Leaf(&'m AtomicU64, &'m [AtomicU64]),
    /// Nothing mapped there: nothing to do.
    Done,
    /// Not a case for the fast path.
    General,
}

/// Why the fast path refused.
pub(crate) enum SingleError {
    Table(TableError),
    Reserve(ReserveFailure),
    Mapped(u64),
}

impl From<TableError> for SingleError {
    fn from(e: TableError) -> Self {
        Self::Table(e)
    }
}

impl From<ReserveFailure> for SingleError {
    fn from(e: ReserveFailure) -> Self {
        Self::Reserve(e)
    }
}

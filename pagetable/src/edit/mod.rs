//! The update engine: plan, then commit.
//!
//! Every update (map, unmap, protect) walks the slots its range covers, level
//! by level, twice:
//!
//! 1. **Plan** reads the live tables, never writes, and decides for each slot
//!    what the commit will do: write a leaf, descend into an existing table,
//!    create a table under an invalid entry, or split a large leaf into a
//!    table of smaller leaves. It counts the tables the commit will need and
//!    finds every reason to refuse (a mapped entry a map may not replace, a
//!    malformed entry, an inaccessible table). Below a slot that does not
//!    exist yet, it walks a virtual node ([`Node::Empty`], [`Node::Split`])
//!    standing for the table the commit will create.
//! 2. The caller reserves exactly that many frames.
//! 3. **Commit** repeats the same decisions on the now-reserved tables and
//!    cannot fail: every table it creates comes from the reservation, every
//!    check it relies on was made by the plan.
//!
//! Entries are written with `Release` (a new table's cleared entries are
//! visible before the entry that points to it) and read with `Acquire`. The
//! embedder serialises editors; hardware walkers may read concurrently and
//! always see either the old or the new entry.

use core::sync::atomic::{AtomicU64, Ordering};

use hvmem_types::PhysAddr;

use crate::alloc::{Reservation, TableAllocator};
use crate::attrs::Attributes;
use crate::bbm::{Break, BreakBeforeMake};
use crate::error::TableError;
use crate::flush::TlbFlush;
use crate::format::{Descriptor, EntryKind, Format};
use crate::mem::PhysMem;
use crate::table::LeafSizes;

mod protect;
#[cfg(test)]
mod tests;

/// What an update does to each slot of its range.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Edit {
    /// Map the range starting at index `start` to `pa` onwards.
    Map {
        pa: u64,
        start: u64,
        /// The leaf encoding at address 0 for each level the map may use.
        templates: [u64; 8],
        sizes: LeafSizes,
        replace: bool,
        /// Whether whole aligned runs get the contiguous hint.
        contiguous: bool,
    },
    /// Remove translations.
    Unmap,
    /// Rewrite the attributes of existing leaves.
    Protect {
        attrs: Attributes,
        /// The leaf encoding at address 0 for each level that may hold one.
        templates: [u64; 8],
    },
}

/// What [`Editor::break_run`] writes back after invalidating a run.
#[derive(Clone, Copy)]
enum Refill<'e> {
    /// Nothing: the caller fills the run (tables below are freed).
    Nothing,
    /// The same entries without the contiguous hint (unfolding).
    Unhinted,
    /// The same leaves with these attributes, hint kept.
    Protect(&'e Attributes),
}

/// A table as the plan sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Node {
    /// A table in memory.
    Real(u64),
    /// A table the commit will create under an invalid entry: all invalid.
    Empty,
    /// A table the commit will create by splitting a leaf: entry `i` maps
    /// `pa + i * size` with `attrs`.
    Split { pa: u64, attrs: Attributes },
}

/// Why a plan refused.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PlanError {
    Table(TableError),
    /// Something is mapped at this input address (map without replace).
    Mapped(u64),
}

impl From<TableError> for PlanError {
    fn from(e: TableError) -> Self {
        Self::Table(e)
    }
}

/// One slot of a table, cut to the update's range.
#[derive(Clone, Copy, Debug)]
struct Slot {
    index: usize,
    /// The index-space address the slot starts at.
    start: u64,
    size: u64,
    /// The part of the update's range inside the slot.
    piece_start: u64,
    piece_end: u64,
}

impl Slot {
    fn is_full(&self) -> bool {
        self.piece_start == self.start && self.piece_end - self.piece_start == self.size
    }
}

/// Whether `len` leaves from `template` mapping pages of `step` bytes from
/// `first` differ only by their addresses in the in-place bits `field` (see
/// [`Format::leaf_address_in_place`]), each the one before plus `step`: the
/// field is one run of bits from at most `step`'s bit, the template holds
/// none of it, and the addresses from `first` to the last agree outside it
/// (so no step carries out of the field).
fn steps_in_place(field: u64, template: u64, first: u64, len: usize, step: u64) -> bool {
    let lowest = field & field.wrapping_neg();
    let one_run = field.wrapping_add(lowest) & field == 0;
    let last = (len as u64)
        .checked_sub(1)
        .and_then(|n| n.checked_mul(step))
        .and_then(|span| first.checked_add(span));
    one_run
        && lowest != 0
        && lowest <= step
        && template & field == 0
        && last.is_some_and(|last| (first ^ last) & !field == 0)
}

/// How many entries [`store_stepped`] writes per loop turn.
const STORE_GROUP: usize = 8;

/// Stores `leaf(first + i * step)` in entry `i` of `entries` (relaxed: the
/// table is not linked yet), eight entries a turn with the eight values
/// computed from one running address. A one-entry loop (the trip count is
/// not known, so the compiler does not unroll it) spends more on its counter
/// and branch than on the store: 7 instructions a leaf on x86, against 3.5
/// grouped, and the bulk map of 1 GiB of 4 KiB pages then ran at about
/// twice the time of plain grouped stores to the same frames.
#[inline(always)]
fn store_stepped(entries: &[AtomicU64], first: u64, step: u64, leaf: impl Fn(u64) -> u64) {
    let mut at = first;
    let mut groups = entries.chunks_exact(STORE_GROUP);
    for group in &mut groups {
        // Always a whole group: `chunks_exact` yields nothing shorter.
        if let Ok(group) = <&[AtomicU64; STORE_GROUP]>::try_from(group) {
            for e in group {
                e.store(leaf(at), Ordering::Relaxed);
                at = at.wrapping_add(step);
            }
        }
    }
    for e in groups.remainder() {
        e.store(leaf(at), Ordering::Relaxed);
        at = at.wrapping_add(step);
    }
}

/// The slots of the table at `base` (level `level`) that `[start, end)` covers.
fn slots(shift: u32, base: u64, start: u64, end: u64) -> impl Iterator<Item = Slot> {
    let size = 1u64 << shift;
    let first = (start - base) >> shift;
    let last = (end - 1 - base) >> shift;
    (first..=last).map(move |i| {
        let slot_start = base + (i << shift);
        Slot {
            index: i as usize,
            start: slot_start,
            size,
            piece_start: start.max(slot_start),
            piece_end: end.min(slot_start.saturating_add(size)),
        }
    })
}

/// The engine over one format and memory, for one update.
pub(crate) struct Editor<'a, F: Format, M: PhysMem, B: BreakBeforeMake> {
    format: &'a F,
    mem: &'a M,
    reservation: Reservation,
    flush: TlbFlush,
    bbm: &'a mut B,
}

impl<'a, F: Format, M: PhysMem, B: BreakBeforeMake> Editor<'a, F, M, B> {
    pub(crate) fn new(format: &'a F, mem: &'a M, reservation: Reservation, bbm: &'a mut B) -> Self {
        Self {
            format,
            mem,
            reservation,
            flush: TlbFlush::NONE,
            bbm,
        }
    }

    /// Writes `new` over `old` (just read) in an entry covering the slot at
    /// `start` (index space) of `size` bytes at `level`.
    #[inline]
    fn store(&self, entry: &AtomicU64, old: u64, new: u64, level: u8, start: u64, size: u64) {
        entry.store(new, Ordering::Release);
        #[cfg(test)]
        crate::bbm::trace::write(
            entry,
            level,
            self.format.index_to_input(start),
            size,
            old,
            new,
        );
        let _ = (old, level, start, size);
    }

    /// Exchanges an entry for `new`; returns what it held.
    #[inline]
    fn swap(&self, entry: &AtomicU64, new: u64, level: u8, start: u64, size: u64) -> u64 {
        let old = entry.swap(new, Ordering::AcqRel);
        #[cfg(test)]
        crate::bbm::trace::write(
            entry,
            level,
            self.format.index_to_input(start),
            size,
            old,
            new,
        );
        let _ = (level, start, size);
        old
    }

    /// Asks the caller to invalidate `[start, start + size)` (index space).
    fn invalidate(&mut self, start: u64, size: u64, level: u8, table: bool) {
        let at = self.format.index_to_input(start);
        let broken = Break {
            start: at,
            end: at.saturating_add(size),
            level,
            table,
        };
        #[cfg(test)]
        crate::bbm::trace::record(crate::bbm::trace::Event::Invalidate(broken));
        self.bbm.invalidate(&broken);
    }

    /// Replaces the valid entry `old` (just read) by `new`, with
    /// break-before-make if the format needs it. Returns the entry's previous
    /// value and whether it was broken (its translations are then already
    /// invalidated).
    fn replace(
        &mut self,
        entry: &AtomicU64,
        old: u64,
        new: u64,
        level: u8,
        slot: &Slot,
    ) -> (u64, bool) {
        if !self.format.needs_break(old, new, level) {
            return (self.swap(entry, new, level, slot.start, slot.size), false);
        }
        let old = self.swap(entry, 0, level, slot.start, slot.size);
        let table = matches!(self.format.kind(old, level), EntryKind::Table(_));
        self.invalidate(slot.start, slot.size, level, table);
        self.store(entry, 0, new, level, slot.start, slot.size);
        (old, true)
    }

    /// The entries of the table at `table`, which sits at `level`.
    fn table(&self, table: u64, level: u8) -> Result<&'a [AtomicU64], TableError> {
        let entries = if level + 1 == self.format.levels() {
            self.format.root_entries()
        } else {
            self.format.entries()
        };
        self.mem
            .table(PhysAddr::new(table), entries)
            .ok_or(TableError::NotAccessible {
                table: PhysAddr::new(table),
            })
    }

    fn malformed(&self, slot: &Slot, level: u8) -> TableError {
        TableError::Malformed {
            at: self.format.index_to_input(slot.start),
            level,
        }
    }

    /// Whether a map writes a leaf for this slot (rather than descending).
    fn leaf_here(&self, edit: &Edit, slot: &Slot, level: u8) -> bool {
        match *edit {
            Edit::Map {
                pa, start, sizes, ..
            } => {
                slot.is_full()
                    && sizes.allows(level)
                    && self.format.leaf_allowed(level)
                    && (pa + (slot.piece_start - start)) & (slot.size - 1) == 0
            }
            Edit::Unmap | Edit::Protect { .. } => false,
        }
    }

    fn flush_slot(&mut self, slot: &Slot, table: bool) {
        let start = self.format.index_to_input(slot.start);
        self.flush
            .add(start, start.saturating_add(slot.size), table);
    }

    /// Step 1: counts the tables the commit needs, or refuses.
    pub(crate) fn plan(
        &self,
        node: Node,
        level: u8,
        base: u64,
        start: u64,
        end: u64,
        edit: &Edit,
    ) -> Result<usize, PlanError> {
        let virtual_node = !matches!(node, Node::Real(_));
        // Below a virtual node nothing ever needs a table at level 0, and an
        // unmap or protect of an empty table changes nothing.
        if virtual_node
            && (level == 0 || (matches!(node, Node::Empty) && !matches!(edit, Edit::Map { .. })))
        {
            return Ok(0);
        }
        let table = match node {
            Node::Real(t) => Some(self.table(t, level)?),
            Node::Empty | Node::Split { .. } => None,
        };
        if let (0, Some(entries), Edit::Protect { .. }) = (level, table, edit) {
            if let Some(result) = self.plan_protect_last_level(entries, base, start, end) {
                return result;
            }
        }
        if let (0, Some(entries), Edit::Unmap | Edit::Protect { .. }) = (level, table, edit) {
            if let Some(result) = self.plan_last_level(entries, base, start, end, edit) {
                return result;
            }
        }
        let mut needed = 0usize;
        for slot in slots(self.format.level_shift(level), base, start, end) {
            // Only the kind of each entry: a leaf's attributes are decoded
            // where a split needs them.
            let (raw, entry) = match (node, table) {
                (Node::Real(_), Some(t)) => {
                    let raw = t.get(slot.index).map_or(0, |e| e.load(Ordering::Acquire));
                    (raw, self.format.kind(raw, level))
                }
                (Node::Split { pa, .. }, _) => (0, EntryKind::Leaf(pa + (slot.start - base))),
                _ => (0, EntryKind::Invalid),
            };
            let below = level.checked_sub(1);
            let split_of = |pa: u64, attrs: Attributes| -> Result<Node, PlanError> {
                match below {
                    Some(l)
                        if self.format.leaf_allowed(l)
                            && self.format.encode_leaf(pa, &attrs, l).is_ok() =>
                    {
                        Ok(Node::Split { pa, attrs })
                    }
                    _ => Err(self.malformed(&slot, level).into()),
                }
            };
            match (edit, entry) {
                (_, EntryKind::Malformed) => return Err(self.malformed(&slot, level).into()),
                (Edit::Map { replace, .. }, entry) if self.leaf_here(edit, &slot, level) => {
                    if !replace {
                        match entry {
                            EntryKind::Leaf(_) => {
                                return Err(PlanError::Mapped(
                                    self.format.index_to_input(slot.piece_start),
                                ));
                            }
                            EntryKind::Table(child) => {
                                self.check_unmapped(
                                    child,
                                    level.saturating_sub(1),
                                    slot.start,
                                    slot.piece_start,
                                    slot.piece_end,
                                )?;
                            }
                            _ => {}
                        }
                    }
                }
                (_, EntryKind::Invalid) if !matches!(edit, Edit::Map { .. }) => {}
                (_, EntryKind::Invalid) => {
                    let Some(l) = below else { continue };
                    needed += 1 + self.plan(
                        Node::Empty,
                        l,
                        slot.start,
                        slot.piece_start,
                        slot.piece_end,
                        edit,
                    )?;
                }
                (Edit::Unmap, EntryKind::Leaf(_) | EntryKind::Table(_)) if slot.is_full() => {}
                (Edit::Protect { .. }, EntryKind::Leaf(_)) if slot.is_full() => {}
                (_, EntryKind::Table(child)) => {
                    let Some(l) = below else {
                        return Err(self.malformed(&slot, level).into());
                    };
                    needed += self.plan(
                        Node::Real(child),
                        l,
                        slot.start,
                        slot.piece_start,
                        slot.piece_end,
                        edit,
                    )?;
                }
                (_, EntryKind::Leaf(pa)) => {
                    if let Edit::Map { replace: false, .. } = edit {
                        return Err(PlanError::Mapped(
                            self.format.index_to_input(slot.piece_start),
                        ));
                    }
                    let Some(l) = below else { continue };
                    let attrs = match node {
                        Node::Split { attrs, .. } => attrs,
                        _ => match self.format.decode(raw, level) {
                            Descriptor::Leaf(_, attrs) => attrs,
                            _ => return Err(self.malformed(&slot, level).into()),
                        },
                    };
                    let split = split_of(pa, attrs)?;
                    needed += 1 + self.plan(
                        split,
                        l,
                        slot.start,
                        slot.piece_start,
                        slot.piece_end,
                        edit,
                    )?;
                }
            }
        }
        Ok(needed)
    }

    /// The plan of an unmap or protect in a last-level table: nothing to
    /// allocate there, only entries to refuse (malformed ones, and for a
    /// protect a table pointer where only leaves may be), in one pass over
    /// the kinds. The same decisions as the general loop; `None` if the range
    /// is not inside `entries` (the general loop handles that).
    fn plan_last_level(
        &self,
        entries: &[AtomicU64],
        base: u64,
        start: u64,
        end: u64,
        edit: &Edit,
    ) -> Option<Result<usize, PlanError>> {
        let shift = self.format.level_shift(0);
        let first = usize::try_from((start - base) >> shift).ok()?;
        let last = usize::try_from((end - 1 - base) >> shift).ok()?;
        let run = entries.get(first..=last)?;
        let unmap = matches!(edit, Edit::Unmap);
        for (i, e) in run.iter().enumerate() {
            match self.format.kind(e.load(Ordering::Acquire), 0) {
                EntryKind::Invalid | EntryKind::Leaf(_) => {}
                EntryKind::Table(_) if unmap => {}
                EntryKind::Table(_) | EntryKind::Malformed => {
                    let at = base + (((first + i) as u64) << shift);
                    return Some(Err(TableError::Malformed {
                        at: self.format.index_to_input(at),
                        level: 0,
                    }
                    .into()));
                }
            }
        }
        Some(Ok(0))
    }

    /// Adds `[start, end)` (index space, inside one table) to the flush.
    fn flush_index(&mut self, start: u64, end: u64) {
        let at = self.format.index_to_input(start);
        self.flush.add(at, at.saturating_add(end - start), false);
    }

    /// Refuses if anything is mapped in `[start, end)` below `table`.
    fn check_unmapped(
        &self,
        table: u64,
        level: u8,
        base: u64,
        start: u64,
        end: u64,
    ) -> Result<(), PlanError> {
        let entries = self.table(table, level)?;
        for slot in slots(self.format.level_shift(level), base, start, end) {
            let raw = entries
                .get(slot.index)
                .map_or(0, |e| e.load(Ordering::Acquire));
            match self.format.kind(raw, level) {
                EntryKind::Invalid => {}
                EntryKind::Leaf(_) => {
                    return Err(PlanError::Mapped(
                        self.format.index_to_input(slot.piece_start),
                    ));
                }
                EntryKind::Malformed => return Err(self.malformed(&slot, level).into()),
                EntryKind::Table(child) => match level.checked_sub(1) {
                    Some(l) => {
                        self.check_unmapped(child, l, slot.start, slot.piece_start, slot.piece_end)?
                    }
                    None => return Err(self.malformed(&slot, level).into()),
                },
            }
        }
        Ok(())
    }

    /// A table from the reservation, or (if the plan was wrong, which the
    /// tests guard against) none: the slot is then left as it was.
    /// `cleared`: zeroed; otherwise the caller overwrites every entry before
    /// linking it.
    fn take_table(&mut self, cleared: bool) -> Option<u64> {
        let t = if cleared {
            self.reservation.take(self.mem)
        } else {
            self.reservation.take_uncleared(self.mem)
        };
        debug_assert!(t.is_some(), "the plan reserved too few tables");
        t
    }

    /// Fills a fresh table at `level` with leaves replicating a larger leaf,
    /// each with the larger leaf's hardware bits `recorded`.
    fn fill_split(&self, table: u64, level: u8, pa: u64, attrs: &Attributes, recorded: u64) {
        let Ok(entries) = self.table(table, level) else {
            return;
        };
        let size = 1u64 << self.format.level_shift(level);
        for (i, e) in entries.iter().enumerate() {
            let raw = self
                .format
                .encode_leaf(pa + i as u64 * size, attrs, level)
                .map_or(0, |leaf| leaf | recorded);
            e.store(raw, Ordering::Relaxed);
        }
    }

    /// The part of `[start, end)` (this table's piece, index space) whose
    /// leaves a map writes as whole contiguous runs: runs entirely inside
    /// the piece whose output address is aligned to the run.
    fn contiguous_span(&self, edit: &Edit, level: u8, start: u64, end: u64) -> (u64, u64) {
        let run = self.format.contiguous_run(level);
        let Edit::Map {
            pa,
            start: map_start,
            sizes,
            contiguous,
            ..
        } = *edit
        else {
            return (0, 0);
        };
        if run == 0 || !contiguous || !sizes.allows(level) || !self.format.leaf_allowed(level) {
            return (0, 0);
        }
        let size = 1u64 << (self.format.level_shift(level) + run);
        // Output and input advance together: one run aligned means all are.
        if (pa.wrapping_sub(map_start)) & (size - 1) != 0 {
            return (0, 0);
        }
        let first = start.div_ceil(size).saturating_mul(size);
        let last = end & !(size - 1);
        if first >= last { (0, 0) } else { (first, last) }
    }

    /// Before a table's slots change: makes every contiguous run the update
    /// touches safe to edit entry by entry. A run a map rewrites whole with
    /// the hint is broken outright (its old entries invalidated together);
    /// a run unmapped whole, or given new permissions whole, is left alone
    /// (the flush covers it); a run given a new memory type whole is broken
    /// and rewritten with the hint kept; any other touched run with the hint
    /// is unfolded: broken, then written back without the hint (Linux's
    /// contpte rules).
    #[allow(clippy::too_many_arguments)]
    fn prepare_runs(
        &mut self,
        entries: &[AtomicU64],
        level: u8,
        base: u64,
        start: u64,
        end: u64,
        edit: &Edit,
        alloc: &mut impl TableAllocator,
    ) {
        let run = self.format.contiguous_run(level);
        let n = 1usize << run;
        let shift = self.format.level_shift(level);
        let (span_start, span_end) = self.contiguous_span(edit, level, start, end);
        for group in slots(shift + run, base, start, end) {
            let first = group.index << run;
            let Some(run_entries) = entries.get(first..first + n) else {
                continue;
            };
            if group.start >= span_start && group.start < span_end {
                let Edit::Map {
                    pa,
                    start: map_start,
                    templates,
                    ..
                } = edit
                else {
                    continue;
                };
                let template = templates.get(usize::from(level)).copied().unwrap_or(0);
                let stale = run_entries.iter().enumerate().any(|(i, e)| {
                    let old = e.load(Ordering::Acquire);
                    if self.format.kind(old, level) == EntryKind::Invalid {
                        return false;
                    }
                    let at = group.start + ((i as u64) << shift);
                    let new = self.format.with_contiguous(
                        self.format
                            .with_output_address(template, pa + (at - map_start), level),
                        true,
                    );
                    old != new
                });
                if stale {
                    self.break_run(run_entries, level, &group, Refill::Nothing, alloc);
                }
                continue;
            }
            if let Edit::Protect { attrs, templates } = edit {
                let template = templates.get(usize::from(level)).copied().unwrap_or(0);
                self.prepare_protect_run(run_entries, level, &group, attrs, template, alloc);
                continue;
            }
            let hinted = run_entries.iter().any(|e| {
                let raw = e.load(Ordering::Acquire);
                self.format.is_contiguous(raw)
                    && matches!(self.format.kind(raw, level), EntryKind::Leaf(_))
            });
            if !hinted {
                continue;
            }
            if !group.is_full() {
                self.break_run(run_entries, level, &group, Refill::Unhinted, alloc);
                continue;
            }
            match edit {
                // Every entry goes invalid; the flush covers the run.
                Edit::Unmap => {}
                // Prepared above.
                Edit::Protect { .. } => {}
                Edit::Map { .. } => {
                    self.break_run(run_entries, level, &group, Refill::Unhinted, alloc);
                }
            }
        }
    }

    /// Break-before-make over a whole run: invalidates every valid entry of
    /// it at once, then refills them as `refill` says.
    fn break_run(
        &mut self,
        run_entries: &[AtomicU64],
        level: u8,
        group: &Slot,
        refill: Refill<'_>,
        alloc: &mut impl TableAllocator,
    ) {
        const MAX_RUN: usize = 128;
        let mut olds = [0u64; MAX_RUN];
        let mut valid = 0u128;
        let mut table = false;
        let shift = self.format.level_shift(level);
        let size = 1u64 << shift;
        for (i, (e, old)) in run_entries.iter().zip(olds.iter_mut()).enumerate() {
            let raw = e.load(Ordering::Acquire);
            let at = group.start + ((i as u64) << shift);
            match self.format.decode(raw, level) {
                Descriptor::Invalid => continue,
                Descriptor::Table(_) => table = true,
                Descriptor::Leaf(..) | Descriptor::Malformed => {}
            }
            *old = self.swap(e, 0, level, at, size);
            valid |= 1 << i;
        }
        if valid == 0 {
            return;
        }
        self.invalidate(group.start, group.size, level, table);
        for (i, (e, &old)) in run_entries.iter().zip(olds.iter()).enumerate() {
            if valid & (1 << i) == 0 {
                continue;
            }
            let at = group.start + ((i as u64) << shift);
            let new = match (refill, self.format.decode(old, level)) {
                (Refill::Nothing, Descriptor::Table(child)) => {
                    if let Some(l) = level.checked_sub(1) {
                        self.free_subtree(child, l, alloc);
                    }
                    continue;
                }
                (Refill::Nothing, _) => continue,
                (Refill::Protect(attrs), Descriptor::Leaf(pa, _)) => {
                    match self.format.encode_leaf(pa, attrs, level) {
                        Ok(new) => self
                            .format
                            .with_contiguous(new, self.format.is_contiguous(old)),
                        Err(_) => self.format.with_contiguous(old, false),
                    }
                }
                (_, Descriptor::Leaf(..)) => self.format.with_contiguous(old, false),
                (_, _) => old,
            };
            self.store(e, 0, new, level, at, size);
        }
    }

    /// Step 3: applies the update. Cannot fail. `fresh`: the table was just
    /// taken from the reservation (all invalid) and is not linked yet, so no
    /// walker can see it: nothing there to break, flush or read first.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn commit(
        &mut self,
        table: u64,
        level: u8,
        base: u64,
        start: u64,
        end: u64,
        edit: &Edit,
        alloc: &mut impl TableAllocator,
        fresh: bool,
    ) {
        let Ok(entries) = self.table(table, level) else {
            return;
        };
        if let (0, false, Edit::Protect { attrs, templates }) = (level, fresh, edit) {
            if self.protect_last_level_masked(entries, base, start, end, attrs, templates[0], alloc)
            {
                return;
            }
        }
        if !fresh && self.format.contiguous_run(level) > 0 {
            self.prepare_runs(entries, level, base, start, end, edit, alloc);
        }
        if level == 0 {
            if let Edit::Protect { templates, .. } = edit {
                if self.protect_last_level(entries, base, start, end, templates[0]) {
                    return;
                }
            }
            if let Edit::Map {
                pa,
                start: map_start,
                templates,
                sizes,
                ..
            } = edit
            {
                if sizes.allows(0) {
                    let span = self.contiguous_span(edit, 0, start, end);
                    let pa = pa + (start - map_start);
                    if fresh {
                        self.fill_last_level(entries, base, start, end, pa, templates[0], span);
                    } else {
                        self.map_last_level(
                            entries,
                            base,
                            start,
                            end,
                            pa,
                            templates[0],
                            span,
                            alloc,
                        );
                    }
                    return;
                }
            }
        }
        let span = self.contiguous_span(edit, level, start, end);
        for slot in slots(self.format.level_shift(level), base, start, end) {
            let Some(entry) = entries.get(slot.index) else {
                continue;
            };
            let raw = entry.load(Ordering::Acquire);
            let current = self.format.kind(raw, level);
            let below = level.checked_sub(1);
            if self.leaf_here(edit, &slot, level) {
                if let Edit::Map {
                    pa,
                    start: map_start,
                    templates,
                    ..
                } = edit
                {
                    let template = templates.get(usize::from(level)).copied().unwrap_or(0);
                    let mut leaf = self.format.with_output_address(
                        template,
                        pa + (slot.piece_start - map_start),
                        level,
                    );
                    if slot.start >= span.0 && slot.start < span.1 {
                        leaf = self.format.with_contiguous(leaf, true);
                    }
                    if current == EntryKind::Invalid {
                        // Walkers do not write to invalid entries: a plain
                        // store cannot lose an accessed/dirty update.
                        self.store(entry, raw, leaf, level, slot.start, slot.size);
                    } else {
                        let (old, broken) = self.replace(entry, raw, leaf, level, &slot);
                        self.dispose(old, level, &slot, broken, alloc);
                    }
                }
                continue;
            }
            match (edit, current) {
                (_, EntryKind::Malformed) => {}
                (Edit::Map { sizes, .. }, EntryKind::Invalid) => {
                    // A last-level table the map fills whole (the bulk fast
                    // path below writes every entry) need not be cleared
                    // first.
                    let filled_whole = below == Some(0) && slot.is_full() && sizes.allows(0);
                    let (Some(l), Some(child)) = (below, self.take_table(!filled_whole)) else {
                        continue;
                    };
                    // Filled before it is linked: the release store that
                    // links it publishes its entries.
                    self.commit(
                        child,
                        l,
                        slot.start,
                        slot.piece_start,
                        slot.piece_end,
                        edit,
                        alloc,
                        true,
                    );
                    let table_entry = self.format.encode_table(child, level);
                    self.store(entry, raw, table_entry, level, slot.start, slot.size);
                }
                (_, EntryKind::Invalid) => {}
                (Edit::Unmap, _) if slot.is_full() => {
                    let old = self.swap(entry, 0, level, slot.start, slot.size);
                    self.dispose(old, level, &slot, false, alloc);
                }
                (Edit::Protect { templates, .. }, EntryKind::Leaf(pa)) if slot.is_full() => {
                    let template = templates.get(usize::from(level)).copied().unwrap_or(0);
                    // The same memory: what hardware recorded stays.
                    let mut new = self.format.with_output_address(template, pa, level)
                        | (raw & self.format.hardware_bits());
                    // A run still hinted here is one that keeps the hint.
                    if self.format.is_contiguous(raw) {
                        new = self.format.with_contiguous(new, true);
                    }
                    // An entry that already holds the new value is left as
                    // it is (no store, nothing to flush).
                    if raw != new {
                        let (old, broken) = self.replace(entry, raw, new, level, &slot);
                        // Hardware bits set after the load above came back
                        // in the exchange: put them in the new entry too.
                        let late = old & self.format.hardware_bits() & !new;
                        if late != 0 && !broken {
                            let _ = entry.fetch_or(late, Ordering::AcqRel);
                        }
                        if old != new && !broken {
                            self.flush_slot(&slot, false);
                        }
                    }
                }
                (_, EntryKind::Table(child)) => {
                    let Some(l) = below else { continue };
                    self.commit(
                        child,
                        l,
                        slot.start,
                        slot.piece_start,
                        slot.piece_end,
                        edit,
                        alloc,
                        false,
                    );
                    if matches!(edit, Edit::Unmap) && self.is_empty(child, l) {
                        self.store(entry, raw, 0, level, slot.start, slot.size);
                        alloc.free_table(PhysAddr::new(child));
                        self.flush_slot(&slot, true);
                    }
                }
                (_, EntryKind::Leaf(_)) => {
                    // The plan checked this leaf decodes and splits.
                    let Descriptor::Leaf(pa, attrs) = self.format.decode(raw, level) else {
                        continue;
                    };
                    let (Some(l), Some(child)) = (below, self.take_table(true)) else {
                        continue;
                    };
                    self.fill_split(child, l, pa, &attrs, raw & self.format.hardware_bits());
                    let table_entry = self.format.encode_table(child, level);
                    let (_, broken) = self.replace(entry, raw, table_entry, level, &slot);
                    if !broken {
                        self.flush_slot(&slot, true);
                    }
                    self.commit(
                        child,
                        l,
                        slot.start,
                        slot.piece_start,
                        slot.piece_end,
                        edit,
                        alloc,
                        false,
                    );
                }
            }
        }
    }

    /// The bulk-map fast path into a fresh, unlinked last-level table: no
    /// entry to read, nothing to flush, plain stores (the link publishes
    /// them).
    #[allow(clippy::too_many_arguments)]
    fn fill_last_level(
        &self,
        entries: &[AtomicU64],
        base: u64,
        start: u64,
        end: u64,
        pa: u64,
        template: u64,
        span: (u64, u64),
    ) {
        let shift = self.format.level_shift(0);
        let first = ((start - base) >> shift) as usize;
        let last = ((end - 1 - base) >> shift) as usize;
        let Some(run) = entries.get(first..=last) else {
            // Never for a range inside the table; a table taken uncleared
            // must still not be linked holding garbage.
            for e in entries {
                e.store(0, Ordering::Relaxed);
            }
            return;
        };
        let hinted = self.format.with_contiguous(template, true);
        // Three stretches: before, inside and after the hinted runs.
        let lo = span.0.clamp(start, end);
        let hi = span.1.clamp(lo, end);
        let cut = |at: u64| ((at - start) >> shift) as usize;
        let (before, rest) = run.split_at(cut(lo).min(run.len()));
        let (inside, after) = rest.split_at(cut(hi).saturating_sub(cut(lo)).min(rest.len()));
        let in_place = self.format.leaf_address_in_place(0);
        let step = 1u64 << shift;
        let mut offset = 0u64;
        for (stretch, template) in [(before, template), (inside, hinted), (after, template)] {
            let first = pa + offset;
            if in_place.is_some_and(|f| steps_in_place(f, template, first, stretch.len(), step)) {
                // Each next leaf holds the next page's address in place: the
                // first one, stepped.
                let leaf = self.format.with_output_address(template, first, 0);
                store_stepped(stretch, leaf, step, |leaf| leaf);
            } else {
                store_stepped(stretch, first, step, |at| {
                    self.format.with_output_address(template, at, 0)
                });
            }
            offset += step * stretch.len() as u64;
        }
    }

    /// The bulk-map fast path: every slot of a last-level table in
    /// `[start, end)` gets a leaf (the range is aligned to the smallest page,
    /// so every slot is whole), with the contiguous hint inside `span`. Same
    /// decisions as the general loop, without the per-slot bookkeeping.
    #[allow(clippy::too_many_arguments)]
    fn map_last_level(
        &mut self,
        entries: &[AtomicU64],
        base: u64,
        start: u64,
        end: u64,
        pa: u64,
        template: u64,
        span: (u64, u64),
        alloc: &mut impl TableAllocator,
    ) {
        let shift = self.format.level_shift(0);
        let first = ((start - base) >> shift) as usize;
        let last = ((end - 1 - base) >> shift) as usize;
        let Some(run) = entries.get(first..=last) else {
            return;
        };
        let hinted = self.format.with_contiguous(template, true);
        for (i, entry) in run.iter().enumerate() {
            let offset = (i as u64) << shift;
            let slot_start = start + offset;
            let template = if slot_start >= span.0 && slot_start < span.1 {
                hinted
            } else {
                template
            };
            let leaf = self.format.with_output_address(template, pa + offset, 0);
            let old = entry.load(Ordering::Acquire);
            if self.format.kind(old, 0) == EntryKind::Invalid {
                self.store(entry, old, leaf, 0, slot_start, 1 << shift);
            } else {
                let slot = Slot {
                    index: first + i,
                    start: slot_start,
                    size: 1 << shift,
                    piece_start: slot_start,
                    piece_end: slot_start + (1 << shift),
                };
                let (old, broken) = self.replace(entry, old, leaf, 0, &slot);
                self.dispose(old, 0, &slot, broken, alloc);
            }
        }
    }

    /// Accounts for an entry just overwritten: flush it (unless a break
    /// already invalidated it), free its subtree.
    fn dispose(
        &mut self,
        old: u64,
        level: u8,
        slot: &Slot,
        broken: bool,
        alloc: &mut impl TableAllocator,
    ) {
        match self.format.kind(old, level) {
            EntryKind::Invalid => {}
            EntryKind::Leaf(_) | EntryKind::Malformed => {
                if !broken {
                    self.flush_slot(slot, false);
                }
            }
            EntryKind::Table(child) => {
                if let Some(l) = level.checked_sub(1) {
                    self.free_subtree(child, l, alloc);
                }
                if !broken {
                    self.flush_slot(slot, true);
                }
            }
        }
    }

    fn is_empty(&self, table: u64, level: u8) -> bool {
        self.table(table, level).is_ok_and(|entries| {
            entries
                .iter()
                .all(|e| self.format.kind(e.load(Ordering::Acquire), level) == EntryKind::Invalid)
        })
    }

    /// Frees `table` (at `level`) and every table below it.
    pub(crate) fn free_subtree(&self, table: u64, level: u8, alloc: &mut impl TableAllocator) {
        if let (Ok(entries), Some(l)) = (self.table(table, level), level.checked_sub(1)) {
            for e in entries {
                if let EntryKind::Table(child) = self.format.kind(e.load(Ordering::Acquire), level)
                {
                    self.free_subtree(child, l, alloc);
                }
            }
        }
        alloc.free_table(PhysAddr::new(table));
    }

    /// Merges uniform tables in `[start, end)` below `table`, bottom up.
    /// Replacing a table entry by a block is a size change: with
    /// break-before-make where the format needs it.
    pub(crate) fn merge(
        &mut self,
        table: u64,
        level: u8,
        base: u64,
        start: u64,
        end: u64,
        alloc: &mut impl TableAllocator,
    ) {
        let Some(l) = level.checked_sub(1) else {
            return;
        };
        let Ok(entries) = self.table(table, level) else {
            return;
        };
        for slot in slots(self.format.level_shift(level), base, start, end) {
            let Some(entry) = entries.get(slot.index) else {
                continue;
            };
            let raw = entry.load(Ordering::Acquire);
            let EntryKind::Table(child) = self.format.kind(raw, level) else {
                continue;
            };
            self.merge(
                child,
                l,
                slot.start,
                slot.piece_start,
                slot.piece_end,
                alloc,
            );
            if !slot.is_full() || !self.format.leaf_allowed(level) {
                continue;
            }
            let Some((pa, attrs, recorded)) = self.uniform(child, l) else {
                continue;
            };
            if pa & (slot.size - 1) != 0 {
                continue;
            }
            let Ok(leaf) = self.format.encode_leaf(pa, &attrs, level) else {
                continue;
            };
            let leaf = leaf | recorded;
            let broken = self.format.needs_break(raw, leaf, level);
            let step = if broken { 0 } else { leaf };
            if entry
                .compare_exchange(raw, step, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            #[cfg(test)]
            crate::bbm::trace::write(
                entry,
                level,
                self.format.index_to_input(slot.start),
                slot.size,
                raw,
                step,
            );
            if broken {
                self.invalidate(slot.start, slot.size, level, true);
                self.store(entry, 0, leaf, level, slot.start, slot.size);
            } else {
                self.flush_slot(&slot, true);
            }
            alloc.free_table(PhysAddr::new(child));
        }
    }

    /// The first address and attributes of a table whose entries are all
    /// leaves mapping one contiguous run with the same attributes, and the
    /// union of their hardware bits ([`Format::hardware_bits`]).
    fn uniform(&self, table: u64, level: u8) -> Option<(u64, Attributes, u64)> {
        let entries = self.table(table, level).ok()?;
        let size = 1u64 << self.format.level_shift(level);
        let Descriptor::Leaf(first, attrs) = self
            .format
            .decode(entries.first()?.load(Ordering::Acquire), level)
        else {
            return None;
        };
        let hardware = self.format.hardware_bits();
        let mut recorded = 0;
        entries
            .iter()
            .enumerate()
            .all(|(i, e)| {
                let raw = e.load(Ordering::Acquire);
                recorded |= raw & hardware;
                self.format.decode(raw, level) == Descriptor::Leaf(first + i as u64 * size, attrs)
            })
            .then_some((first, attrs, recorded))
    }

    /// Gives back what the reservation still holds; returns the flush.
    pub(crate) fn finish(self, mem: &M, alloc: &mut impl TableAllocator) -> TlbFlush {
        debug_assert_eq!(
            self.reservation_len(),
            0,
            "the plan reserved too many tables"
        );
        self.reservation.release(mem, alloc);
        self.flush
    }

    fn reservation_len(&self) -> usize {
        self.reservation.len()
    }
}

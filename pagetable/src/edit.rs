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
use crate::error::TableError;
use crate::flush::TlbFlush;
use crate::format::{Descriptor, Format};
use crate::mem::PhysMem;
use crate::table::LeafSizes;

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
    },
    /// Remove translations.
    Unmap,
    /// Rewrite the attributes of existing leaves.
    Protect { attrs: Attributes },
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
pub(crate) struct Editor<'a, F: Format, M: PhysMem> {
    format: &'a F,
    mem: &'a M,
    reservation: Reservation,
    flush: TlbFlush,
}

impl<'a, F: Format, M: PhysMem> Editor<'a, F, M> {
    pub(crate) fn new(format: &'a F, mem: &'a M, reservation: Reservation) -> Self {
        Self {
            format,
            mem,
            reservation,
            flush: TlbFlush::NONE,
        }
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
        let mut needed = 0usize;
        for slot in slots(self.format.level_shift(level), base, start, end) {
            let entry = match (node, table) {
                (Node::Real(_), Some(t)) => {
                    let raw = t.get(slot.index).map_or(0, |e| e.load(Ordering::Acquire));
                    self.format.decode(raw, level)
                }
                (Node::Split { pa, attrs }, _) => Descriptor::Leaf(pa + (slot.start - base), attrs),
                _ => Descriptor::Invalid,
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
                (_, Descriptor::Malformed) => return Err(self.malformed(&slot, level).into()),
                (Edit::Map { replace, .. }, entry) if self.leaf_here(edit, &slot, level) => {
                    if !replace {
                        match entry {
                            Descriptor::Leaf(..) => {
                                return Err(PlanError::Mapped(
                                    self.format.index_to_input(slot.piece_start),
                                ));
                            }
                            Descriptor::Table(child) => {
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
                (_, Descriptor::Invalid) if !matches!(edit, Edit::Map { .. }) => {}
                (_, Descriptor::Invalid) => {
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
                (Edit::Unmap, Descriptor::Leaf(..) | Descriptor::Table(_)) if slot.is_full() => {}
                (Edit::Protect { .. }, Descriptor::Leaf(..)) if slot.is_full() => {}
                (_, Descriptor::Table(child)) => {
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
                (_, Descriptor::Leaf(pa, attrs)) => {
                    if let Edit::Map { replace: false, .. } = edit {
                        return Err(PlanError::Mapped(
                            self.format.index_to_input(slot.piece_start),
                        ));
                    }
                    let Some(l) = below else { continue };
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
            match self.format.decode(raw, level) {
                Descriptor::Invalid => {}
                Descriptor::Leaf(..) => {
                    return Err(PlanError::Mapped(
                        self.format.index_to_input(slot.piece_start),
                    ));
                }
                Descriptor::Malformed => return Err(self.malformed(&slot, level).into()),
                Descriptor::Table(child) => match level.checked_sub(1) {
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
    fn take_table(&mut self) -> Option<u64> {
        let t = self.reservation.take(self.mem);
        debug_assert!(t.is_some(), "the plan reserved too few tables");
        t
    }

    /// Fills a fresh table at `level` with leaves replicating a larger leaf.
    fn fill_split(&self, table: u64, level: u8, pa: u64, attrs: &Attributes) {
        let Ok(entries) = self.table(table, level) else {
            return;
        };
        let size = 1u64 << self.format.level_shift(level);
        for (i, e) in entries.iter().enumerate() {
            let raw = self
                .format
                .encode_leaf(pa + i as u64 * size, attrs, level)
                .unwrap_or(0);
            e.store(raw, Ordering::Relaxed);
        }
    }

    /// Step 3: applies the update. Cannot fail.
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
    ) {
        let Ok(entries) = self.table(table, level) else {
            return;
        };
        if level == 0 {
            if let Edit::Map {
                pa,
                start: map_start,
                templates,
                sizes,
                ..
            } = edit
            {
                if sizes.allows(0) {
                    self.map_last_level(
                        entries,
                        base,
                        start,
                        end,
                        pa + (start - map_start),
                        templates[0],
                        alloc,
                    );
                    return;
                }
            }
        }
        for slot in slots(self.format.level_shift(level), base, start, end) {
            let Some(entry) = entries.get(slot.index) else {
                continue;
            };
            let raw = entry.load(Ordering::Acquire);
            let current = self.format.decode(raw, level);
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
                    let leaf = self.format.with_output_address(
                        template,
                        pa + (slot.piece_start - map_start),
                        level,
                    );
                    if current == Descriptor::Invalid {
                        // Walkers do not write to invalid entries: a plain
                        // store cannot lose an accessed/dirty update.
                        entry.store(leaf, Ordering::Release);
                    } else {
                        let old = entry.swap(leaf, Ordering::AcqRel);
                        self.dispose(old, level, &slot, alloc);
                    }
                }
                continue;
            }
            match (edit, current) {
                (_, Descriptor::Malformed) => {}
                (Edit::Map { .. }, Descriptor::Invalid) => {
                    let (Some(l), Some(child)) = (below, self.take_table()) else {
                        continue;
                    };
                    entry.store(self.format.encode_table(child, level), Ordering::Release);
                    self.commit(
                        child,
                        l,
                        slot.start,
                        slot.piece_start,
                        slot.piece_end,
                        edit,
                        alloc,
                    );
                }
                (_, Descriptor::Invalid) => {}
                (Edit::Unmap, _) if slot.is_full() => {
                    let old = entry.swap(0, Ordering::AcqRel);
                    self.dispose(old, level, &slot, alloc);
                }
                (Edit::Protect { attrs }, Descriptor::Leaf(pa, _)) if slot.is_full() => {
                    if let Ok(new) = self.format.encode_leaf(pa, attrs, level) {
                        if entry.swap(new, Ordering::AcqRel) != new {
                            self.flush_slot(&slot, false);
                        }
                    }
                }
                (_, Descriptor::Table(child)) => {
                    let Some(l) = below else { continue };
                    self.commit(
                        child,
                        l,
                        slot.start,
                        slot.piece_start,
                        slot.piece_end,
                        edit,
                        alloc,
                    );
                    if matches!(edit, Edit::Unmap) && self.is_empty(child, l) {
                        entry.store(0, Ordering::Release);
                        alloc.free_table(PhysAddr::new(child));
                        self.flush_slot(&slot, true);
                    }
                }
                (_, Descriptor::Leaf(pa, attrs)) => {
                    let (Some(l), Some(child)) = (below, self.take_table()) else {
                        continue;
                    };
                    self.fill_split(child, l, pa, &attrs);
                    entry.store(self.format.encode_table(child, level), Ordering::Release);
                    self.flush_slot(&slot, true);
                    self.commit(
                        child,
                        l,
                        slot.start,
                        slot.piece_start,
                        slot.piece_end,
                        edit,
                        alloc,
                    );
                }
            }
        }
    }

    /// The bulk-map fast path: every slot of a last-level table in
    /// `[start, end)` gets a leaf (the range is aligned to the smallest page,
    /// so every slot is whole). Same decisions as the general loop, without
    /// the per-slot bookkeeping.
    #[allow(clippy::too_many_arguments)]
    fn map_last_level(
        &mut self,
        entries: &[AtomicU64],
        base: u64,
        start: u64,
        end: u64,
        pa: u64,
        template: u64,
        alloc: &mut impl TableAllocator,
    ) {
        let shift = self.format.level_shift(0);
        let first = ((start - base) >> shift) as usize;
        let last = ((end - 1 - base) >> shift) as usize;
        let Some(run) = entries.get(first..=last) else {
            return;
        };
        for (i, entry) in run.iter().enumerate() {
            let offset = (i as u64) << shift;
            let leaf = self.format.with_output_address(template, pa + offset, 0);
            let old = entry.load(Ordering::Acquire);
            if self.format.decode(old, 0) == Descriptor::Invalid {
                entry.store(leaf, Ordering::Release);
            } else {
                let old = entry.swap(leaf, Ordering::AcqRel);
                let slot_start = start + offset;
                let slot = Slot {
                    index: first + i,
                    start: slot_start,
                    size: 1 << shift,
                    piece_start: slot_start,
                    piece_end: slot_start + (1 << shift),
                };
                self.dispose(old, 0, &slot, alloc);
            }
        }
    }

    /// Accounts for an entry just overwritten: flush it, free its subtree.
    fn dispose(&mut self, old: u64, level: u8, slot: &Slot, alloc: &mut impl TableAllocator) {
        match self.format.decode(old, level) {
            Descriptor::Invalid => {}
            Descriptor::Leaf(..) | Descriptor::Malformed => self.flush_slot(slot, false),
            Descriptor::Table(child) => {
                if let Some(l) = level.checked_sub(1) {
                    self.free_subtree(child, l, alloc);
                }
                self.flush_slot(slot, true);
            }
        }
    }

    fn is_empty(&self, table: u64, level: u8) -> bool {
        self.table(table, level).is_ok_and(|entries| {
            entries.iter().all(|e| {
                self.format.decode(e.load(Ordering::Acquire), level) == Descriptor::Invalid
            })
        })
    }

    /// Frees `table` (at `level`) and every table below it.
    pub(crate) fn free_subtree(&self, table: u64, level: u8, alloc: &mut impl TableAllocator) {
        if let (Ok(entries), Some(l)) = (self.table(table, level), level.checked_sub(1)) {
            for e in entries {
                if let Descriptor::Table(child) =
                    self.format.decode(e.load(Ordering::Acquire), level)
                {
                    self.free_subtree(child, l, alloc);
                }
            }
        }
        alloc.free_table(PhysAddr::new(table));
    }

    /// Merges uniform tables in `[start, end)` below `table`, bottom up.
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
            let Descriptor::Table(child) = self.format.decode(raw, level) else {
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
            let Some((pa, attrs)) = self.uniform(child, l) else {
                continue;
            };
            if pa & (slot.size - 1) != 0 {
                continue;
            }
            let Ok(leaf) = self.format.encode_leaf(pa, &attrs, level) else {
                continue;
            };
            if entry
                .compare_exchange(raw, leaf, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                alloc.free_table(PhysAddr::new(child));
                self.flush_slot(&slot, true);
            }
        }
    }

    /// The first address and attributes of a table whose entries are all
    /// leaves mapping one contiguous run with the same attributes.
    fn uniform(&self, table: u64, level: u8) -> Option<(u64, Attributes)> {
        let entries = self.table(table, level).ok()?;
        let size = 1u64 << self.format.level_shift(level);
        let Descriptor::Leaf(first, attrs) = self
            .format
            .decode(entries.first()?.load(Ordering::Acquire), level)
        else {
            return None;
        };
        entries
            .iter()
            .enumerate()
            .all(|(i, e)| {
                self.format.decode(e.load(Ordering::Acquire), level)
                    == Descriptor::Leaf(first + i as u64 * size, attrs)
            })
            .then_some((first, attrs))
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

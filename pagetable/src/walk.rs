//! Reading tables: translation and the range visitor.
//!
//! Both are bounded by the number of levels: a walk reads one entry per level
//! and descends at most `levels - 1` times, so tables with cycles, garbage or
//! pointers outside memory terminate with an error, never a hang.

use core::ops::ControlFlow;
use core::sync::atomic::{AtomicU64, Ordering};

use hvmem_types::PhysAddr;

use crate::attrs::{Access, Attributes};
use crate::error::{TableError, TranslateError};
use crate::format::{Descriptor, EntryKind, Format};
use crate::mem::PhysMem;
use crate::shape::{Shape, ShapeTag, with_shape};

/// Where an address translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address (leaf base plus offset).
    pub output: PhysAddr,
    /// The level of the leaf.
    pub level: u8,
    /// The size the leaf maps, in bytes.
    pub size: u64,
    /// The leaf's attributes, with the access rights cut down by every table
    /// entry on the way (x86 R/W, U/S and XD combine over the walk).
    pub attributes: Attributes,
}

/// Where an address translates to, without the attributes: what
/// [`PageTable::translate_addr`](crate::PageTable::translate_addr) returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputAddr {
    /// The physical address (leaf base plus offset).
    pub output: PhysAddr,
    /// The level of the leaf.
    pub level: u8,
    /// The size the leaf maps, in bytes.
    pub size: u64,
}

/// What [`PageTable::visit`](crate::PageTable::visit) reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// A table entry at `level` covering `size` bytes from `at`.
    Table {
        /// First input address covered.
        at: u64,
        /// Level of the entry.
        level: u8,
        /// Bytes covered.
        size: u64,
        /// The next-level table.
        table: PhysAddr,
    },
    /// A leaf.
    Leaf {
        /// First input address mapped.
        at: u64,
        /// Level of the leaf.
        level: u8,
        /// Bytes mapped.
        size: u64,
        /// Physical address of the leaf's first byte.
        output: PhysAddr,
        /// The leaf's own attributes.
        attributes: Attributes,
    },
    /// An invalid entry.
    Hole {
        /// First input address covered.
        at: u64,
        /// Level of the entry.
        level: u8,
        /// Bytes covered.
        size: u64,
    },
    /// A malformed entry, or a table that is not accessible.
    ///
    /// An inaccessible table (one the `PhysMem` does not map) is reported
    /// once, right after the [`Visit::Table`] entry that names it, with
    /// `raw` 0, the level of the entries it would hold, and `at` the start
    /// of the region it covers; none of its entries is visited.
    Malformed {
        /// First input address covered.
        at: u64,
        /// Level of the entry.
        level: u8,
        /// The raw entry.
        raw: u64,
    },
}

fn table_entries<'m, F: Format>(
    format: &F,
    mem: &'m impl PhysMem,
    table: u64,
    level: u8,
) -> Option<&'m [AtomicU64]> {
    let entries = if level + 1 == format.levels() {
        format.root_entries()
    } else {
        format.entries()
    };
    mem.table(PhysAddr::new(table), entries)
}

/// The entry covering `index` at `level`, if the walk reaches it.
pub(crate) fn entry_at<'m, F: Format>(
    format: &F,
    mem: &'m impl PhysMem,
    root: u64,
    index: u64,
    level: u8,
) -> Option<&'m AtomicU64> {
    let mut table = root;
    let mut l = format.levels().checked_sub(1)?;
    loop {
        let entries = table_entries(format, mem, table, l)?;
        let mask = entries.len() as u64 - 1;
        let entry = entries.get(((index >> format.level_shift(l)) & mask) as usize)?;
        if l == level {
            return Some(entry);
        }
        match format.decode(entry.load(Ordering::Acquire), l) {
            Descriptor::Table(next) => table = next,
            _ => return None,
        }
        l = l.checked_sub(1)?;
    }
}

/// The leaf entry a walk stopped at.
struct Leaf {
    raw: u64,
    pa: u64,
    level: u8,
    size: u64,
}

/// Where the fast walk ([`walk_fast`]) left off without a plain leaf.
enum Detour {
    /// `mem` gives no table at this address.
    NotAccessible(u64),
    /// The entry `raw` at `level` (mapping `1 << shift` bytes) is not one
    /// the shortcuts recognise: [`walk_on`] classifies it and goes on.
    Classify { raw: u64, level: u8, shift: u32 },
}

/// Walks to the leaf covering `index`, passing every table entry on the way
/// to `on_table`. At most one entry per level is read, so any table contents
/// terminate.
///
/// The fast part ([`walk_fast`]) reads the per-walk constants once and
/// recognises the common entries with one mask test each; at the first
/// entry it does not recognise, [`walk_on`] goes on, classifying every
/// entry with `Format::kind` (no attributes built). Either way it accepts
/// and refuses exactly what a walk classifying every entry with `kind`
/// would. [`translate_addr`] calls the fast part itself and leaves the rest
/// out of line.
#[inline(always)]
fn walk_to_leaf<F: Format>(
    format: &F,
    tag: ShapeTag,
    mem: &impl PhysMem,
    root: u64,
    index: u64,
    mut on_table: impl FnMut(u64, u8),
) -> Result<Leaf, TranslateError> {
    let fast = walk_fast_shaped(format, tag, mem, root, index, &mut on_table);
    match fast {
        Ok(leaf) => Ok(leaf),
        Err(Detour::NotAccessible(table)) => Err(not_accessible(table)),
        Err(Detour::Classify { raw, level, shift }) => {
            walk_on(format, mem, index, raw, level, shift, &mut on_table)
        }
    }
}

/// [`walk_fast`] compiled for the shape `tag` names.
#[inline(always)]
fn walk_fast_shaped<F: Format>(
    format: &F,
    tag: ShapeTag,
    mem: &impl PhysMem,
    root: u64,
    index: u64,
    on_table: &mut impl FnMut(u64, u8),
) -> Result<Leaf, Detour> {
    with_shape!(tag, format, |shape| walk_fast::<F>(
        format, shape, mem, root, index, on_table
    ))
}

/// The part of [`walk_to_leaf`] that follows the entries the format's
/// [`TablePattern`](crate::TablePattern) and
/// [`Format::last_level_leaf`] recognise, for tables of the given shape:
/// an entry above the last level that matches the pattern is a table, and a
/// last-level entry `last_level_leaf` recognises is a page.
#[inline(always)]
fn walk_fast<F: Format>(
    format: &F,
    shape: impl Shape,
    mem: &impl PhysMem,
    root: u64,
    index: u64,
    on_table: &mut impl FnMut(u64, u8),
) -> Result<Leaf, Detour> {
    let pattern = format.table_pattern();
    let mut table = root;
    let mut level = shape.levels().saturating_sub(1);
    let mut entries_per_table = shape.root_entries();
    let mut shift = shape.level_shift(format, level);
    loop {
        let Some(raw) = read_entry(mem, table, entries_per_table, index, shift) else {
            return Err(Detour::NotAccessible(table));
        };
        if level == 0 {
            if let Some(pa) = format.last_level_leaf(raw) {
                return Ok(Leaf {
                    raw,
                    pa,
                    level,
                    size: 1u64 << shift,
                });
            }
            return Err(Detour::Classify { raw, level, shift });
        }
        if !pattern.matches(raw) {
            return Err(Detour::Classify { raw, level, shift });
        }
        on_table(raw, level);
        level -= 1;
        // Every table below the root resolves the same number of bits.
        shift -= shape.bits();
        debug_assert_eq!(shift, format.level_shift(level));
        table = pattern.address(raw);
        entries_per_table = shape.entries();
    }
}

/// The entry covering `index` in the table at `table` (`entries` entries
/// of `1 << shift` bytes), or 0 (invalid) if the slot lies past the
/// entries `mem` gives; `None` if `mem` gives no such table.
#[inline(always)]
fn read_entry(
    mem: &impl PhysMem,
    table: u64,
    entries: usize,
    index: u64,
    shift: u32,
) -> Option<u64> {
    let entries = mem.table(PhysAddr::new(table), entries)?;
    let slot = ((index >> shift) & (entries.len() as u64).wrapping_sub(1)) as usize;
    Some(entries.get(slot).map_or(0, |e| e.load(Ordering::Acquire)))
}

/// The error of a walk that met a table `mem` does not give.
#[cold]
fn not_accessible(table: u64) -> TranslateError {
    TranslateError::Table(TableError::NotAccessible {
        table: PhysAddr::new(table),
    })
}

/// [`walk_to_leaf`] from the entry `raw` at `level` on, classifying every
/// entry with `Format::kind`: holes, blocks, malformed entries, and the
/// entries of formats without shortcuts.
#[inline(always)]
fn walk_on<F: Format>(
    format: &F,
    mem: &impl PhysMem,
    index: u64,
    mut raw: u64,
    mut level: u8,
    mut shift: u32,
    on_table: &mut impl FnMut(u64, u8),
) -> Result<Leaf, TranslateError> {
    let entries_below_root = format.entries();
    loop {
        match format.kind(raw, level) {
            EntryKind::Table(next) => {
                on_table(raw, level);
                level = level
                    .checked_sub(1)
                    .ok_or_else(|| malformed_at(format, index, shift, level))?;
                shift = format.level_shift(level);
                raw = read_entry(mem, next, entries_below_root, index, shift)
                    .ok_or_else(|| not_accessible(next))?;
            }
            EntryKind::Leaf(pa) => {
                return Ok(Leaf {
                    raw,
                    pa,
                    level,
                    size: 1u64 << shift,
                });
            }
            EntryKind::Invalid => return Err(TranslateError::NotMapped { level }),
            EntryKind::Malformed => return Err(malformed_at(format, index, shift, level)),
        }
    }
}

/// A malformed entry at `level` in the walk to `index`.
#[cold]
fn malformed_at<F: Format>(format: &F, index: u64, shift: u32, level: u8) -> TranslateError {
    TranslateError::Table(TableError::Malformed {
        at: format.index_to_input(index & !((1u64 << shift) - 1)),
        level,
    })
}

/// Walks to the leaf covering `index`: its output address, and its
/// attributes with the access rights the tables on the way leave.
#[inline]
pub(crate) fn translate<F: Format>(
    format: &F,
    tag: ShapeTag,
    mem: &impl PhysMem,
    root: u64,
    index: u64,
) -> Result<Translation, TranslateError> {
    let mut limits = Access::all();
    let leaf = walk_to_leaf::<F>(format, tag, mem, root, index, |raw, level| {
        limits &= format.table_limits(raw, level);
    })?;
    // `kind` agrees with `decode`, so the leaf decodes as a leaf. (The
    // last level, the usual one, spelled out: its decode is the simplest.)
    let decoded = if leaf.level == 0 {
        format.decode(leaf.raw, 0)
    } else {
        format.decode(leaf.raw, leaf.level)
    };
    let Descriptor::Leaf(_, mut attributes) = decoded else {
        return Err(malformed_at(
            format,
            index,
            leaf.size.trailing_zeros(),
            leaf.level,
        ));
    };
    attributes.access &= limits;
    Ok(Translation {
        output: PhysAddr::new(leaf.pa | (index & (leaf.size - 1))),
        level: leaf.level,
        size: leaf.size,
        attributes,
    })
}

/// [`translate`] without the attributes: no leaf's attributes are built,
/// no rights combined. It accepts and refuses exactly the entries
/// `translate` does.
pub(crate) fn translate_addr<F: Format>(
    format: &F,
    tag: ShapeTag,
    mem: &impl PhysMem,
    root: u64,
    index: u64,
) -> Result<OutputAddr, TranslateError> {
    let fast = walk_fast_shaped(format, tag, mem, root, index, &mut |_, _| {});
    // The common case returns from registers; the rest, with its larger
    // result, out of line.
    match fast {
        Ok(leaf) => Ok(output_addr(&leaf, index)),
        Err(detour) => translate_addr_detour(format, mem, index, detour),
    }
}

/// [`translate_addr`] past the entries [`walk_fast`] recognises.
#[cold]
#[inline(never)]
fn translate_addr_detour<F: Format>(
    format: &F,
    mem: &impl PhysMem,
    index: u64,
    detour: Detour,
) -> Result<OutputAddr, TranslateError> {
    match detour {
        Detour::NotAccessible(table) => Err(not_accessible(table)),
        Detour::Classify { raw, level, shift } => {
            walk_on(format, mem, index, raw, level, shift, &mut |_, _| {})
                .map(|leaf| output_addr(&leaf, index))
        }
    }
}

/// The output address of `index` through `leaf`.
#[inline(always)]
fn output_addr(leaf: &Leaf, index: u64) -> OutputAddr {
    OutputAddr {
        output: PhysAddr::new(leaf.pa | (index & (leaf.size - 1))),
        level: leaf.level,
        size: leaf.size,
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn visit<F: Format>(
    format: &F,
    mem: &impl PhysMem,
    table: u64,
    level: u8,
    base: u64,
    start: u64,
    end: u64,
    f: &mut impl FnMut(Visit) -> ControlFlow<()>,
) -> ControlFlow<()> {
    if start >= end {
        return ControlFlow::Continue(());
    }
    let shift = format.level_shift(level);
    let size = 1u64 << shift;
    let Some(entries) = table_entries(format, mem, table, level) else {
        return f(Visit::Malformed {
            at: format.index_to_input(base),
            level,
            raw: 0,
        });
    };
    let first = (start - base) >> shift;
    let last = (end - 1 - base) >> shift;
    for i in first..=last {
        let slot = base + (i << shift);
        let at = format.index_to_input(slot);
        let raw = entries
            .get(i as usize)
            .map_or(0, |e| e.load(Ordering::Acquire));
        match format.decode(raw, level) {
            Descriptor::Invalid => f(Visit::Hole { at, level, size })?,
            Descriptor::Malformed => f(Visit::Malformed { at, level, raw })?,
            Descriptor::Leaf(pa, attributes) => f(Visit::Leaf {
                at,
                level,
                size,
                output: PhysAddr::new(pa),
                attributes,
            })?,
            Descriptor::Table(next) => {
                f(Visit::Table {
                    at,
                    level,
                    size,
                    table: PhysAddr::new(next),
                })?;
                match level.checked_sub(1) {
                    Some(l) => visit(
                        format,
                        mem,
                        next,
                        l,
                        slot,
                        start.max(slot),
                        end.min(slot.saturating_add(size)),
                        f,
                    )?,
                    None => f(Visit::Malformed { at, level, raw })?,
                }
            }
        }
    }
    ControlFlow::Continue(())
}

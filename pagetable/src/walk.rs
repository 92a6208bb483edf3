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

/// Walks to the leaf covering `index`.
#[inline]
pub(crate) fn translate<F: Format>(
    format: &F,
    mem: &impl PhysMem,
    root: u64,
    index: u64,
) -> Result<Translation, TranslateError> {
    let mut table = root;
    let mut limits = Access::all();
    let mut level = format.levels().saturating_sub(1);
    let mut entries_per_table = format.root_entries();
    loop {
        let entries =
            mem.table(PhysAddr::new(table), entries_per_table)
                .ok_or(TranslateError::Table(TableError::NotAccessible {
                    table: PhysAddr::new(table),
                }))?;
        let shift = format.level_shift(level);
        let slot = ((index >> shift) & (entries.len() as u64).wrapping_sub(1)) as usize;
        let raw = entries.get(slot).map_or(0, |e| e.load(Ordering::Acquire));
        let malformed = || {
            TranslateError::Table(TableError::Malformed {
                at: format.index_to_input(index & !((1u64 << shift) - 1)),
                level,
            })
        };
        // `decode`, not `kind`: the attributes of the leaf are wanted, and
        // formats whose `kind` is cheaper build them only for leaves (x86);
        // calling both would decode the leaf twice where `kind` is the
        // default (AArch64).
        match format.decode(raw, level) {
            Descriptor::Table(next) => {
                limits &= format.table_limits(raw, level);
                level = level.checked_sub(1).ok_or_else(malformed)?;
                table = next;
                entries_per_table = format.entries();
            }
            Descriptor::Leaf(pa, mut attributes) => {
                let size = 1u64 << shift;
                attributes.access &= limits;
                return Ok(Translation {
                    output: PhysAddr::new(pa | (index & (size - 1))),
                    level,
                    size,
                    attributes,
                });
            }
            Descriptor::Invalid => return Err(TranslateError::NotMapped { level }),
            Descriptor::Malformed => return Err(malformed()),
        }
    }
}

/// The walk of [`translate`] without the attributes: `Format::kind` at
/// every level, leaves included, so no leaf's attributes are built. The
/// entries it accepts and refuses are exactly those `translate` does
/// (`kind` agrees with `decode`).
pub(crate) fn translate_addr<F: Format>(
    format: &F,
    mem: &impl PhysMem,
    root: u64,
    index: u64,
) -> Result<OutputAddr, TranslateError> {
    let mut table = root;
    let mut level = format.levels().saturating_sub(1);
    let mut entries_per_table = format.root_entries();
    loop {
        let entries =
            mem.table(PhysAddr::new(table), entries_per_table)
                .ok_or(TranslateError::Table(TableError::NotAccessible {
                    table: PhysAddr::new(table),
                }))?;
        let shift = format.level_shift(level);
        let slot = ((index >> shift) & (entries.len() as u64).wrapping_sub(1)) as usize;
        let raw = entries.get(slot).map_or(0, |e| e.load(Ordering::Acquire));
        let malformed = || {
            TranslateError::Table(TableError::Malformed {
                at: format.index_to_input(index & !((1u64 << shift) - 1)),
                level,
            })
        };
        match format.kind(raw, level) {
            EntryKind::Table(next) => {
                level = level.checked_sub(1).ok_or_else(malformed)?;
                table = next;
                entries_per_table = format.entries();
            }
            EntryKind::Leaf(pa) => {
                let size = 1u64 << shift;
                return Ok(OutputAddr {
                    output: PhysAddr::new(pa | (index & (size - 1))),
                    level,
                    size,
                });
            }
            EntryKind::Invalid => return Err(TranslateError::NotMapped { level }),
            EntryKind::Malformed => return Err(malformed()),
        }
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

//! Whole-table validation and de-validation: what a frame table runs when a
//! frame first takes a page-table type, and after its last such reference.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use hvmem_types::Mfn;

use super::entry::{ENTRIES, EntryError, PRESENT, PvConfig, XEN_L4_SLOTS, drop_entry, take_entry};
use super::oracle::{FrameOracle, PvLevel};
use crate::PhysMem;

/// How far a [`validate_table`] call got.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TableProgress {
    /// Every entry is checked and holds its references.
    Done,
    /// The call stopped before `next_entry`; the entries below it hold their
    /// references. Call again with `start_entry = next_entry` to resume.
    /// `next_entry` equals the call's `start_entry` when the call did
    /// nothing (a target's validation was itself incomplete).
    Preempted {
        /// The first entry not yet validated.
        next_entry: u32,
    },
}

/// Why a table failed validation. Every reference the validation took, in
/// this call and in earlier preempted ones, has been released.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ValidateError {
    /// The table's memory is not reachable through [`PhysMem`].
    Unreachable {
        /// The table.
        table: Mfn,
    },
    /// `start_entry` is beyond the table.
    BadStart {
        /// The start asked for.
        start_entry: u32,
    },
    /// An entry broke a rule.
    Entry {
        /// Its index in the table.
        index: u32,
        /// The rule.
        error: EntryError,
    },
}

impl ValidateError {
    /// The index of the entry that failed, or 0 when the table as a whole
    /// did.
    #[must_use]
    pub const fn index(&self) -> u32 {
        match self {
            Self::Entry { index, .. } => *index,
            Self::Unreachable { .. } | Self::BadStart { .. } => 0,
        }
    }
}

impl fmt::Display for ValidateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable { table } => write!(f, "table {table} is not reachable"),
            Self::BadStart { start_entry } => {
                write!(f, "start entry {start_entry} is beyond the table")
            }
            Self::Entry { index, error } => write!(f, "entry {index}: {error}"),
        }
    }
}

impl core::error::Error for ValidateError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Entry { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The table's 512 entries, or `None`.
pub(crate) fn table_entries<M: PhysMem + ?Sized>(mem: &M, table: Mfn) -> Option<&[AtomicU64]> {
    let addr = table.to_phys()?;
    mem.table(addr, ENTRIES as usize)
        .filter(|e| e.len() == ENTRIES as usize)
}

/// Whether entry `index` of a table at `level` belongs to the guest (every
/// entry but Xen's L4 slots).
pub(crate) fn guest_slot(level: PvLevel, index: u32) -> bool {
    !(level == PvLevel::L4 && XEN_L4_SLOTS.contains(&index))
}

/// Validates entries `start_entry..` of `table`, a page table of `level`
/// owned by `owner`: for every present guest entry, checks its bits against
/// the level's rules and takes the references it holds on its target (see
/// the [module docs](super)). Examines at most `budget` entries (at least
/// one) before returning [`TableProgress::Preempted`].
///
/// Entries are read once each (acquire); the caller guarantees nobody else
/// writes the table meanwhile (a frame table calls this under its validate
/// lock, when no writable mapping of the frame can exist).
///
/// # Errors
///
/// [`ValidateError::Unreachable`], [`ValidateError::BadStart`], or
/// [`ValidateError::Entry`] for the first entry that breaks a rule. On error,
/// the references of entries `0..index` are released, so the frame holds
/// nothing, as the frame table's validator contract asks.
#[allow(clippy::too_many_arguments)]
pub fn validate_table<M, O>(
    mem: &M,
    oracle: &O,
    config: &PvConfig,
    owner: O::Domain,
    table: Mfn,
    level: PvLevel,
    start_entry: u32,
    budget: u32,
) -> Result<TableProgress, ValidateError>
where
    M: PhysMem + ?Sized,
    O: FrameOracle + ?Sized,
{
    if start_entry > ENTRIES {
        return Err(ValidateError::BadStart { start_entry });
    }
    let Some(entries) = table_entries(mem, table) else {
        return Err(ValidateError::Unreachable { table });
    };
    let end = start_entry.saturating_add(budget.max(1)).min(ENTRIES);
    for (index, entry) in (start_entry..end).zip(entries.iter().skip(start_entry as usize)) {
        if !guest_slot(level, index) {
            continue;
        }
        let raw = entry.load(Ordering::Acquire);
        if raw & PRESENT == 0 {
            continue;
        }
        match take_entry(oracle, config, owner, table, level, raw) {
            Ok(()) => {}
            Err(EntryError::Retry { .. }) => {
                return Ok(TableProgress::Preempted { next_entry: index });
            }
            Err(error) => {
                release_entries(entries, oracle, level, index);
                return Err(ValidateError::Entry { index, error });
            }
        }
    }
    Ok(if end == ENTRIES {
        TableProgress::Done
    } else {
        TableProgress::Preempted { next_entry: end }
    })
}

/// Drops the references every present guest entry of `table` below `below`
/// holds (512, or more, for a fully validated table; the `next_entry` of a
/// preempted validation that is being abandoned). Cannot fail: an
/// unreachable table holds nothing this crate could release (and means the
/// embedder broke its own invariant: `debug_assert!`).
pub fn devalidate_table<M, O>(mem: &M, oracle: &O, table: Mfn, level: PvLevel, below: u32)
where
    M: PhysMem + ?Sized,
    O: FrameOracle + ?Sized,
{
    let Some(entries) = table_entries(mem, table) else {
        debug_assert!(false, "de-validating unreachable table {table}");
        return;
    };
    release_entries(entries, oracle, level, below.min(ENTRIES));
}

fn release_entries<O: FrameOracle + ?Sized>(
    entries: &[AtomicU64],
    oracle: &O,
    level: PvLevel,
    below: u32,
) {
    for (index, entry) in (0..below).zip(entries) {
        let raw = entry.load(Ordering::Acquire);
        if raw & PRESENT != 0 && guest_slot(level, index) {
            drop_entry(oracle, level, raw);
        }
    }
}

//! The frame table's [`Validator`] for PV page tables.

use hvmem_pagetable::PhysMem;
use hvmem_pagetable::pv::{ENTRIES, PvConfig, TableProgress, devalidate_table, validate_table};

use super::oracle::{TableOracle, pv_level};
use crate::{FrameTable, InvalidEntry, TableFrame, ValidatedEntries, Validation, Validator};

/// Validates x86-64 PV page tables (L1..L4) for a [`FrameTable`], reading
/// them through `M` and checking entries with hvmem-pagetable's rules.
///
/// Validation examines at most `budget` entries per call (all 512 by
/// default) and resumes where it stopped on the next get, as the frame table
/// allows. A target whose own validation is incomplete preempts the table
/// that points at it, at that entry.
#[derive(Debug)]
pub struct PvValidator<'m, M: PhysMem + ?Sized> {
    mem: &'m M,
    config: PvConfig,
    budget: u32,
}

impl<'m, M: PhysMem + ?Sized> PvValidator<'m, M> {
    /// A validator reading tables through `mem`, with `config`'s rules, and
    /// no preemption.
    #[must_use]
    pub const fn new(mem: &'m M, config: PvConfig) -> Self {
        Self {
            mem,
            config,
            budget: ENTRIES,
        }
    }

    /// The same validator, examining at most `budget` entries (at least one)
    /// per call before letting the frame table report
    /// [`Preempted`](crate::FrameError::Preempted).
    #[must_use]
    pub const fn with_budget(mut self, budget: u32) -> Self {
        self.budget = budget;
        self
    }

    /// The rules it checks entries with.
    #[must_use]
    pub const fn config(&self) -> &PvConfig {
        &self.config
    }

    /// `table` as a [`FrameOracle`](hvmem_pagetable::pv::FrameOracle) that
    /// validates with this validator: what
    /// [`mmu_update`](hvmem_pagetable::pv::mmu_update) needs.
    #[must_use]
    pub const fn oracle<'a, 't>(&'a self, table: &'a FrameTable<'t>) -> TableOracle<'a, 't, Self> {
        TableOracle::new(table, self)
    }
}

impl<M: PhysMem + ?Sized> Validator for PvValidator<'_, M> {
    fn validate(
        &self,
        table: &FrameTable<'_>,
        frame: TableFrame,
        start_entry: u32,
    ) -> Result<Validation, InvalidEntry> {
        let Some(level) = pv_level(frame.frame_type) else {
            // Not a PV page table: contents this validator cannot check.
            return Err(InvalidEntry { index: start_entry });
        };
        let oracle = TableOracle::new(table, self);
        match validate_table(
            self.mem,
            &oracle,
            &self.config,
            frame.owner,
            frame.mfn,
            level,
            start_entry,
            self.budget,
        ) {
            Ok(TableProgress::Done) => Ok(Validation::Complete),
            Ok(TableProgress::Preempted { next_entry }) => Ok(Validation::Preempted { next_entry }),
            Err(error) => Err(InvalidEntry {
                index: error.index(),
            }),
        }
    }

    fn devalidate(&self, table: &FrameTable<'_>, frame: TableFrame, entries: ValidatedEntries) {
        let Some(level) = pv_level(frame.frame_type) else {
            return;
        };
        let below = match entries {
            ValidatedEntries::All => ENTRIES,
            ValidatedEntries::Below(n) => n,
        };
        devalidate_table(
            self.mem,
            &TableOracle::new(table, self),
            frame.mfn,
            level,
            below,
        );
    }
}

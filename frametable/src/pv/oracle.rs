//! [`FrameOracle`] over a [`FrameTable`].

use core::fmt;

use hvmem_pagetable::pv::{FrameOracle, OracleError, PvLevel, PvType};
use hvmem_types::Mfn;

use crate::{FrameError, FrameTable, FrameType, Owner, Validator};

/// A [`FrameTable`] seen as pagetable's [`FrameOracle`], with the validator
/// its typed gets and puts run (a [`PvValidator`](super::PvValidator), so
/// that a frame taking a page-table type has its entries checked).
pub struct TableOracle<'a, 't, V: Validator + ?Sized> {
    table: &'a FrameTable<'t>,
    validator: &'a V,
}

impl<'a, 't, V: Validator + ?Sized> TableOracle<'a, 't, V> {
    /// The oracle over `table`, validating page-table types with
    /// `validator`.
    #[must_use]
    pub const fn new(table: &'a FrameTable<'t>, validator: &'a V) -> Self {
        Self { table, validator }
    }
}

impl<V: Validator + ?Sized> fmt::Debug for TableOracle<'_, '_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableOracle")
            .field("table", self.table)
            .finish_non_exhaustive()
    }
}

/// The frame-table type of a PV typed use.
pub(crate) const fn frame_type(ty: PvType) -> FrameType {
    match ty {
        PvType::Writable => FrameType::Writable,
        PvType::Table(PvLevel::L1) => FrameType::L1,
        PvType::Table(PvLevel::L2) => FrameType::L2,
        PvType::Table(PvLevel::L3) => FrameType::L3,
        PvType::Table(PvLevel::L4) => FrameType::L4,
    }
}

/// The PV level of a frame-table type, if it is one.
pub(crate) const fn pv_level(ty: FrameType) -> Option<PvLevel> {
    match ty {
        FrameType::L1 => Some(PvLevel::L1),
        FrameType::L2 => Some(PvLevel::L2),
        FrameType::L3 => Some(PvLevel::L3),
        FrameType::L4 => Some(PvLevel::L4),
        _ => None,
    }
}

const fn oracle_error(error: FrameError) -> OracleError {
    match error {
        FrameError::CountOverflow { .. } | FrameError::TypeCountOverflow { .. } => {
            OracleError::Overflow
        }
        FrameError::TypeConflict { .. } => OracleError::TypeConflict,
        FrameError::ValidationInProgress { .. } | FrameError::Preempted { .. } => {
            OracleError::Retry
        }
        FrameError::Invalid { .. } => OracleError::Invalid,
        _ => OracleError::NotOwned,
    }
}

impl<V: Validator + ?Sized> FrameOracle for TableOracle<'_, '_, V> {
    type Domain = Owner;

    fn owner(&self, mfn: Mfn) -> Option<Owner> {
        self.table.state(mfn).ok().and_then(|state| state.owner)
    }

    fn page_table_level(&self, mfn: Mfn) -> Option<PvLevel> {
        let state = self.table.state(mfn).ok()?;
        if state.type_refs == 0 || !state.validated {
            return None;
        }
        pv_level(state.frame_type)
    }

    fn get_ref(&self, mfn: Mfn, owner: Owner) -> Result<(), OracleError> {
        self.table.get_page(mfn, owner).map_err(oracle_error)
    }

    fn put_ref(&self, mfn: Mfn) {
        let dropped = self.table.put_page(mfn);
        debug_assert!(dropped.is_ok(), "{mfn}: {dropped:?}");
    }

    fn get_type(&self, mfn: Mfn, ty: PvType) -> Result<(), OracleError> {
        self.table
            .get_type(mfn, frame_type(ty), self.validator)
            .map_err(oracle_error)
    }

    fn put_type(&self, mfn: Mfn, _ty: PvType) {
        let dropped = self.table.put_type(mfn, self.validator);
        debug_assert!(dropped.is_ok(), "{mfn}: {dropped:?}");
    }
}

//! What validation needs from a frame table: owners, and the references a
//! valid entry holds on the frame it points at.

use core::fmt;

use hvmem_types::Mfn;

/// A level of a 64-bit PV guest's page tables, in Xen's words: L1 is the last
/// level (its entries map 4 KiB pages), L4 the root a guest loads into CR3.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PvLevel {
    /// A page table (x86 PT): entries map 4 KiB frames.
    L1,
    /// A page directory (x86 PD): entries point at L1 tables.
    L2,
    /// A page-directory-pointer table (x86 PDPT): entries point at L2 tables.
    L3,
    /// The root (x86 PML4): entries point at L3 tables.
    L4,
}

impl PvLevel {
    /// Every level, bottom up.
    pub const ALL: [Self; 4] = [Self::L1, Self::L2, Self::L3, Self::L4];

    /// The level a present entry of this level points at, or `None` for L1
    /// (whose entries map data frames).
    #[must_use]
    pub const fn below(self) -> Option<Self> {
        match self {
            Self::L1 => None,
            Self::L2 => Some(Self::L1),
            Self::L3 => Some(Self::L2),
            Self::L4 => Some(Self::L3),
        }
    }

    /// The level as a number, 1..=4.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::L1 => 1,
            Self::L2 => 2,
            Self::L3 => 3,
            Self::L4 => 4,
        }
    }
}

impl fmt::Display for PvLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.number())
    }
}

/// The typed use an entry's reference asks of its target (Xen
/// `PGT_writable_page`, `PGT_lN_page_table`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PvType {
    /// The frame has writable mappings: held by every present L1 entry with
    /// RW set.
    Writable,
    /// The frame is a page table of this level: held by every present entry
    /// of the level above.
    Table(PvLevel),
}

impl fmt::Display for PvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Writable => f.write_str("writable"),
            Self::Table(level) => write!(f, "{level} page table"),
        }
    }
}

/// Why a [`FrameOracle`] refused a reference.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum OracleError {
    /// The frame does not exist, is free, or belongs to another domain.
    NotOwned,
    /// The frame is in use as another type (its type count is not zero).
    TypeConflict,
    /// A reference count is at its limit.
    Overflow,
    /// The frame's validation for the type is incomplete: preempted, or
    /// running on another CPU. Nothing was taken; asking again later may
    /// succeed.
    Retry,
    /// Validating the frame's contents for the type failed.
    Invalid,
}

impl fmt::Display for OracleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOwned => "frame not owned by the domain",
            Self::TypeConflict => "frame in use as another type",
            Self::Overflow => "reference count at its limit",
            Self::Retry => "frame validation incomplete, retry",
            Self::Invalid => "frame contents invalid for the type",
        })
    }
}

impl core::error::Error for OracleError {}

/// The facts and actions guest-table validation needs from a frame table
/// (hvmem-frametable implements it behind its `pagetable` feature).
///
/// # Implementor contract
///
/// The validator's safety rests on these; a wrong answer lets a guest map
/// what it must not.
///
/// 1. [`get_ref`](Self::get_ref) succeeds only if `owner` owns the frame at
///    the moment the reference is taken (owner check and increment are one
///    atomic step, as Xen's `get_page`), and then keeps the frame allocated
///    to `owner` until the matching [`put_ref`](Self::put_ref).
/// 2. [`get_type`](Self::get_type) is called only while the caller holds a
///    general reference on the frame. It succeeds only if the frame can hold
///    `ty`: a frame holds one type at a time and changes type only while its
///    type count is zero, so a frame with a live [`PvType::Writable`]
///    reference never gets a page-table type and vice versa. This is what
///    stops a guest from mapping its own page tables writable.
/// 3. When `get_type` gives a frame a page-table type it did not have with a
///    non-zero count, the frame's contents must be validated for that level
///    before the call succeeds (with [`validate_table`](super::validate_table)),
///    and when the last reference of a page-table type goes, `put_type` must
///    release what the entries hold (with
///    [`devalidate_table`](super::devalidate_table)). A validation that
///    cannot finish now returns [`OracleError::Retry`] and takes nothing.
/// 4. Every failed get leaves the frame as it was. Puts are only called to
///    drop a reference the validator took (with the same `ty`); they cannot
///    fail.
/// 5. [`page_table_level`](Self::page_table_level) reports a level only for a
///    frame whose page-table type is validated and has a non-zero type count.
///    It is a snapshot: the batch takes a type reference on the table before
///    trusting it, so a stale answer costs an error, never safety.
///
/// Calls may recurse: `get_type` validating an L3 calls back into the oracle
/// for the L2 frames it points at. Without linear page tables the levels
/// strictly decrease, so the depth is bounded by four.
pub trait FrameOracle {
    /// Who owns frames: a domain id, or the frame table's owner type.
    type Domain: Copy + Eq + fmt::Debug;

    /// The owner of `mfn`, or `None` if the frame is free or unknown.
    fn owner(&self, mfn: Mfn) -> Option<Self::Domain>;

    /// The level `mfn` is currently validated and in use as, if it is a page
    /// table with a non-zero type count.
    fn page_table_level(&self, mfn: Mfn) -> Option<PvLevel>;

    /// Takes a general reference on `mfn` in the name of `owner`.
    ///
    /// # Errors
    ///
    /// [`OracleError::NotOwned`] if `owner` does not own the frame,
    /// [`OracleError::Overflow`] if the count is at its limit.
    fn get_ref(&self, mfn: Mfn, owner: Self::Domain) -> Result<(), OracleError>;

    /// Drops a general reference taken by [`get_ref`](Self::get_ref).
    fn put_ref(&self, mfn: Mfn);

    /// Takes a typed reference of `ty` on `mfn`, validating the frame if
    /// that is how it first takes a page-table type. The caller holds a
    /// general reference.
    ///
    /// # Errors
    ///
    /// [`OracleError::TypeConflict`], [`OracleError::Overflow`],
    /// [`OracleError::Retry`] or [`OracleError::Invalid`].
    fn get_type(&self, mfn: Mfn, ty: PvType) -> Result<(), OracleError>;

    /// Drops a typed reference taken by [`get_type`](Self::get_type).
    fn put_type(&self, mfn: Mfn, ty: PvType);
}

//! Why an operation was refused.

use core::fmt;

use hvmem_types::Mfn;

use crate::{FrameType, InvalidEntry, Owner};

/// Why a frame-table operation was refused.
///
/// The frame's state is unchanged whenever one of these is returned, except
/// for [`Preempted`](Self::Preempted), which can leave a partial validation
/// behind (see there).
///
/// Every operation lists, under `# Errors`, the variants it can return.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame lies in none of the table's ranges (a hole, or beyond).
    OutOfRange {
        /// The frame asked for.
        mfn: Mfn,
    },
    /// The owner is a reserved domain id, which can hold no frame.
    ReservedDomain {
        /// The refused owner.
        owner: Owner,
    },
    /// The frame is free (or being assigned): it has no owner.
    Unowned {
        /// The frame.
        mfn: Mfn,
    },
    /// The frame belongs to another owner than the one named.
    WrongOwner {
        /// The frame.
        mfn: Mfn,
    },
    /// Assigning a frame that is not free.
    AlreadyOwned {
        /// The frame.
        mfn: Mfn,
    },
    /// Moving a frame that holds references besides its allocation reference.
    InUse {
        /// The frame.
        mfn: Mfn,
    },
    /// The owner already dropped its allocation reference.
    NotAllocated {
        /// The frame.
        mfn: Mfn,
    },
    /// Taking one more general reference would reach the count's limit.
    CountOverflow {
        /// The frame.
        mfn: Mfn,
    },
    /// Dropping a general reference that nobody took (put without get).
    NotReferenced {
        /// The frame.
        mfn: Mfn,
    },
    /// Dropping the last general reference while type references remain.
    TypeStillReferenced {
        /// The frame.
        mfn: Mfn,
    },
    /// The frame is in use as another type (the type count is not zero).
    TypeConflict {
        /// The frame.
        mfn: Mfn,
        /// The type it holds.
        held: FrameType,
        /// The type asked for.
        wanted: FrameType,
    },
    /// Taking one more type reference would overflow the type count.
    TypeCountOverflow {
        /// The frame.
        mfn: Mfn,
    },
    /// Dropping a type reference that nobody holds (put without get).
    NotTypeReferenced {
        /// The frame.
        mfn: Mfn,
    },
    /// Another CPU is validating or de-validating the frame for this type;
    /// retry later (Xen spins, or returns `-EINTR` to a preemptible caller).
    ///
    /// Do not spin on it while holding a lock that the other CPU's validator
    /// may need. A hypervisor usually returns to the guest and restarts the
    /// hypercall (a continuation).
    ValidationInProgress {
        /// The frame.
        mfn: Mfn,
    },
    /// The validator stopped part-way; the next get of the same type resumes
    /// where it stopped (Xen `-ERESTART`). No type reference was taken.
    ///
    /// This is the one error that can change the frame. Unless the validator
    /// stopped before its first entry, the frame is left partially
    /// validated: its type count is 1, it holds one extra general reference,
    /// and it stores the entry to resume at. The entries already checked keep
    /// their references. A get of another type fails with
    /// [`TypeConflict`](Self::TypeConflict) until the validation is resumed
    /// to the end (a get or pin of the same type) or abandoned by
    /// [`FrameTable::relinquish`](crate::FrameTable::relinquish).
    Preempted {
        /// The frame.
        mfn: Mfn,
    },
    /// The validator refused an entry of the frame; no type reference was
    /// taken and the references of the checked entries were released.
    Invalid {
        /// The frame.
        mfn: Mfn,
        /// The entry that failed.
        entry: InvalidEntry,
    },
    /// Pinning a type that cannot be pinned (only page tables can).
    NotPinnable {
        /// The refused type.
        frame_type: FrameType,
    },
    /// Pinning a frame that is already pinned (Xen `-EINVAL`).
    AlreadyPinned {
        /// The frame.
        mfn: Mfn,
    },
    /// Unpinning a frame that is not pinned (Xen `-EINVAL`).
    NotPinned {
        /// The frame.
        mfn: Mfn,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange { mfn } => write!(f, "{mfn} is not covered by the frame table"),
            Self::ReservedDomain { owner } => {
                write!(f, "{owner} is a reserved id and owns no frame")
            }
            Self::Unowned { mfn } => write!(f, "{mfn} is free"),
            Self::WrongOwner { mfn } => write!(f, "{mfn} belongs to another owner"),
            Self::AlreadyOwned { mfn } => write!(f, "{mfn} is already owned"),
            Self::InUse { mfn } => write!(f, "{mfn} is still referenced"),
            Self::NotAllocated { mfn } => {
                write!(f, "{mfn} no longer holds its allocation reference")
            }
            Self::CountOverflow { mfn } => write!(f, "reference count of {mfn} is at its limit"),
            Self::NotReferenced { mfn } => write!(f, "{mfn} has no reference to drop"),
            Self::TypeStillReferenced { mfn } => {
                write!(f, "last reference of {mfn} dropped while its type is held")
            }
            Self::TypeConflict { mfn, held, wanted } => {
                write!(f, "{mfn} is in use as {held}, not {wanted}")
            }
            Self::TypeCountOverflow { mfn } => write!(f, "type count of {mfn} is at its limit"),
            Self::NotTypeReferenced { mfn } => write!(f, "{mfn} has no type reference to drop"),
            Self::ValidationInProgress { mfn } => {
                write!(f, "{mfn} is being validated on another CPU")
            }
            Self::Preempted { mfn } => write!(f, "validation of {mfn} was preempted"),
            Self::Invalid { mfn, entry } => write!(f, "{mfn} failed validation at {entry}"),
            Self::NotPinnable { frame_type } => write!(f, "a {frame_type} frame cannot be pinned"),
            Self::AlreadyPinned { mfn } => write!(f, "{mfn} is already pinned"),
            Self::NotPinned { mfn } => write!(f, "{mfn} is not pinned"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Why a frame table could not be built over the given storage and ranges.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum LayoutError {
    /// More ranges than [`FrameTable::MAX_RANGES`](crate::FrameTable::MAX_RANGES).
    TooManyRanges,
    /// The ranges are not sorted by start, or two of them overlap.
    Unsorted,
    /// The storage holds fewer records than the ranges have frames.
    StorageTooSmall {
        /// Records needed.
        needed: u64,
        /// Records provided.
        provided: usize,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyRanges => write!(
                f,
                "more than {} frame ranges",
                crate::FrameTable::MAX_RANGES
            ),
            Self::Unsorted => f.write_str("frame ranges are unsorted or overlap"),
            Self::StorageTooSmall { needed, provided } => write!(
                f,
                "{needed} frames need a record each, storage holds {provided}"
            ),
        }
    }
}

impl core::error::Error for LayoutError {}

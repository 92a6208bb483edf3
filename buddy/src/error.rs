//! One error enum per operation; each variant says which rule the input broke.

use core::fmt;

use hvmem_types::{FrameRange, Mfn, PageOrder};

macro_rules! impl_error {
    ($name:ident) => {
        impl core::error::Error for $name {}
    };
}

/// Why a new allocator could not be configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The maximum order is above [`MAX_SUPPORTED_ORDER`](crate::MAX_SUPPORTED_ORDER).
    MaxOrderTooLarge {
        /// The order asked for.
        requested: PageOrder,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxOrderTooLarge { requested } => write!(
                f,
                "maximum {requested} is above the supported {}",
                crate::MAX_SUPPORTED_ORDER
            ),
        }
    }
}
impl_error!(ConfigError);

/// Why a zone could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddZoneError {
    /// Every zone slot of the allocator is in use.
    TooManyZones,
    /// The range holds no frame.
    Empty,
    /// The range has [`MAX_ZONE_FRAMES`](crate::MAX_ZONE_FRAMES) (`2^28 - 1`)
    /// frames or more; split it into several zones.
    TooLarge,
    /// The range shares frames with an existing zone.
    Overlaps {
        /// The existing zone's frames.
        existing: FrameRange,
    },
    /// The metadata slice is shorter than [`metadata_words`](crate::metadata_words).
    MetadataTooSmall {
        /// Words needed.
        needed: usize,
        /// Words given.
        given: usize,
    },
}

impl fmt::Display for AddZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyZones => f.write_str("every zone slot is in use"),
            Self::Empty => f.write_str("the zone has no frame"),
            Self::TooLarge => f.write_str("the zone has 2^28 - 1 frames or more"),
            Self::Overlaps { existing } => write!(f, "the zone overlaps the zone {existing:?}"),
            Self::MetadataTooSmall { needed, given } => {
                write!(f, "metadata of {given} words given, {needed} needed")
            }
        }
    }
}
impl_error!(AddZoneError);

/// Why an allocation failed. The allocator is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocError {
    /// The order is above the allocator's maximum order.
    OrderTooLarge {
        /// The order asked for.
        requested: PageOrder,
        /// The allocator's maximum.
        max: PageOrder,
    },
    /// The zone named by the request does not exist.
    NoSuchZone,
    /// No free block of that order (or larger) in the zones the request allows.
    OutOfMemory,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OrderTooLarge { requested, max } => {
                write!(f, "{requested} is above the maximum {max}")
            }
            Self::NoSuchZone => f.write_str("no such zone"),
            Self::OutOfMemory => f.write_str("no free block large enough"),
        }
    }
}
impl_error!(AllocError);

/// Why a free was refused. The allocator is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreeError {
    /// The order is above the allocator's maximum order.
    OrderTooLarge {
        /// The order given.
        requested: PageOrder,
        /// The allocator's maximum.
        max: PageOrder,
    },
    /// The frame is not aligned to `2^order` frames, so it cannot head a block
    /// of that order.
    Misaligned,
    /// The block is not entirely inside one zone.
    OutOfRange,
    /// The frame does not head an allocated block: it is free (a double free),
    /// or it lies inside a larger allocated block.
    NotAllocated,
    /// The frame heads an allocated block of another order.
    WrongOrder {
        /// The order the block was allocated with.
        allocated: PageOrder,
    },
    /// The frame was taken with `reserve`; give it back with `release`.
    Reserved,
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OrderTooLarge { requested, max } => {
                write!(f, "{requested} is above the maximum {max}")
            }
            Self::Misaligned => f.write_str("the frame is not aligned to its order"),
            Self::OutOfRange => f.write_str("the block is not inside one zone"),
            Self::NotAllocated => f.write_str("the frame does not head an allocated block"),
            Self::WrongOrder { allocated } => {
                write!(f, "the block was allocated as {allocated}")
            }
            Self::Reserved => f.write_str("the frame is reserved, not allocated"),
        }
    }
}
impl_error!(FreeError);

/// Why a range could not be reserved. The allocator is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReserveError {
    /// The range is empty or not entirely inside one zone.
    OutOfRange,
    /// A frame of the range is allocated or reserved already.
    NotFree {
        /// The first such frame.
        mfn: Mfn,
    },
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange => f.write_str("the range is empty or not inside one zone"),
            Self::NotFree { mfn } => write!(f, "{mfn} is not free"),
        }
    }
}
impl_error!(ReserveError);

/// Why a reserved range could not be released. The allocator is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The range is empty or not entirely inside one zone.
    OutOfRange,
    /// A frame of the range is not reserved.
    NotReserved {
        /// The first such frame.
        mfn: Mfn,
    },
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange => f.write_str("the range is empty or not inside one zone"),
            Self::NotReserved { mfn } => write!(f, "{mfn} is not reserved"),
        }
    }
}
impl_error!(ReleaseError);

//! One error enum per operation. On every error the tables are unchanged.

use core::fmt;

use hvmem_types::PhysAddr;

use crate::attrs::AttrError;

/// Why a range was refused before any table was looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeError {
    /// An address or the length is not a multiple of the smallest leaf size
    /// the operation may use (or, from `PageTable::new`, a concatenated root
    /// not aligned to its size).
    Misaligned,
    /// The input range is not translatable by the format: non-canonical,
    /// beyond the input size, crossing the canonical hole, or wrapping.
    OutOfRange,
    /// The physical range does not fit the format's output size.
    OutputOutOfRange,
    /// The options allow no leaf size this format supports.
    NoLeafSize,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Misaligned => "address or length not aligned to the leaf size",
            Self::OutOfRange => "input range not translatable by this format",
            Self::OutputOutOfRange => "physical range beyond the format's output size",
            Self::NoLeafSize => "no allowed leaf size exists in this format",
        })
    }
}

impl core::error::Error for RangeError {}

/// Why the existing tables stopped an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableError {
    /// A table's memory is not accessible through the `PhysMem`.
    NotAccessible {
        /// The table's physical address.
        table: PhysAddr,
    },
    /// An entry is valid but malformed (reserved bits, a leaf where none may
    /// be): the editor does not guess what it meant.
    Malformed {
        /// The input address the entry covers.
        at: u64,
        /// Its level.
        level: u8,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAccessible { table } => write!(f, "table at {table} is not accessible"),
            Self::Malformed { at, level } => {
                write!(f, "malformed entry at level {level} covering {at:#x}")
            }
        }
    }
}

impl core::error::Error for TableError {}

/// The `From` conversions and `Error` impl every update error shares.
macro_rules! update_error_common {
    ($name:ident) => {
        impl core::error::Error for $name {}

        impl From<RangeError> for $name {
            fn from(e: RangeError) -> Self {
                Self::Range(e)
            }
        }

        impl From<TableError> for $name {
            fn from(e: TableError) -> Self {
                Self::Table(e)
            }
        }
    };
}

/// Why [`PageTable::map`](crate::PageTable::map),
/// [`map_live`](crate::PageTable::map_live) or
/// [`PageTable::new`](crate::PageTable::new) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapError {
    /// The range itself is invalid.
    Range(RangeError),
    /// The existing tables stopped the update.
    Table(TableError),
    /// The allocator could not supply the table frames the update needs.
    OutOfMemory,
    /// The format cannot express the attributes at a level the mapping would
    /// use.
    Attributes(AttrError),
    /// Something is mapped at this input address and the options do not
    /// allow replacing it.
    AlreadyMapped {
        /// The first mapped input address met.
        at: u64,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Range(e) => fmt::Display::fmt(e, f),
            Self::Table(e) => fmt::Display::fmt(e, f),
            Self::OutOfMemory => f.write_str("out of memory for page tables"),
            Self::Attributes(e) => fmt::Display::fmt(e, f),
            Self::AlreadyMapped { at } => write!(f, "already mapped at {at:#x}"),
        }
    }
}
update_error_common!(MapError);

/// Why [`PageTable::unmap`](crate::PageTable::unmap) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnmapError {
    /// The range itself is invalid.
    Range(RangeError),
    /// The existing tables stopped the update.
    Table(TableError),
    /// Unmapping part of a large leaf needs a table to split it into, and
    /// the allocator had none.
    OutOfMemory,
}

impl fmt::Display for UnmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Range(e) => fmt::Display::fmt(e, f),
            Self::Table(e) => fmt::Display::fmt(e, f),
            Self::OutOfMemory => f.write_str("out of memory for page tables"),
        }
    }
}
update_error_common!(UnmapError);

/// Why [`PageTable::protect`](crate::PageTable::protect) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtectError {
    /// The range itself is invalid.
    Range(RangeError),
    /// The existing tables stopped the update.
    Table(TableError),
    /// Changing part of a large leaf needs a table to split it into, and the
    /// allocator had none.
    OutOfMemory,
    /// The format cannot express the attributes at a level in the range.
    Attributes(AttrError),
}

impl fmt::Display for ProtectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Range(e) => fmt::Display::fmt(e, f),
            Self::Table(e) => fmt::Display::fmt(e, f),
            Self::OutOfMemory => f.write_str("out of memory for page tables"),
            Self::Attributes(e) => fmt::Display::fmt(e, f),
        }
    }
}
update_error_common!(ProtectError);

/// Why [`PageTable::translate`](crate::PageTable::translate) found no
/// translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TranslateError {
    /// The address is not translatable by the format.
    OutOfRange,
    /// The walk met an invalid entry at this level.
    NotMapped {
        /// The level of the invalid entry.
        level: u8,
    },
    /// The walk met an inaccessible table or a malformed entry.
    Table(TableError),
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange => f.write_str("address not translatable by this format"),
            Self::NotMapped { level } => write!(f, "not mapped (invalid entry at level {level})"),
            Self::Table(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl core::error::Error for TranslateError {}

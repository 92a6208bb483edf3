//! Why an operation was refused, and the one place that maps each reason to
//! the errno Xen returns.

use core::fmt;

use crate::abi;

/// Why a tmem operation was refused. Unless a variant says otherwise, the
/// pools are unchanged (the host may still have evicted ephemeral pages
/// while trying to make room, which it may do at any time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TmemError {
    /// The client handle names no live client.
    NoSuchClient,
    /// Every client slot is in use.
    TooManyClients,
    /// A client for this domain exists already.
    ClientExists,
    /// The pool id names no pool of this client (out of range, never created,
    /// destroyed, or another client's).
    NoSuchPool,
    /// The pool flags ask for a spec version other than 1.
    BadVersion,
    /// The pool flags ask for a page size other than 4 KiB.
    BadPageSize,
    /// `TMEM_POOL_PRECOMPRESSED`, which Xen always refuses.
    Precompressed,
    /// Reserved pool-flag bits are set.
    ReservedFlags,
    /// Shared and persistent together.
    SharedPersistent,
    /// The client has 16 pools, or the host has no free pool (or shared
    /// pool) slot.
    TooManyPools,
    /// A page buffer is not exactly 4096 bytes.
    BadBufferLength {
        /// The length given.
        len: usize,
    },
    /// A persistent put would take the client past its quota. An older copy
    /// of the page, if any, is gone (frontswap's rule).
    QuotaExceeded,
    /// The host has no memory for the page, even after evicting ephemeral
    /// pages. An older copy of the page, if any, is gone (frontswap's rule).
    NoMemory,
    /// The index tables are full (too many pages or objects for the memory
    /// the embedder gave). An older copy of the page, if any, is gone.
    NoSpace,
    /// Too many UUIDs authorized for the client (16 at most).
    TooManyUuids,
    /// The page store returned a frame it had not handed out, or stored
    /// data failed to decompress: the embedder's store is broken.
    StoreFault,
}

impl TmemError {
    /// The (positive) errno Xen's `do_tmem_op` returns, negated, for this
    /// reason.
    #[must_use]
    pub const fn errno(self) -> i32 {
        match self {
            Self::NoSuchClient | Self::NoSuchPool => abi::ENODEV,
            Self::BadVersion
            | Self::BadPageSize
            | Self::Precompressed
            | Self::ReservedFlags
            | Self::SharedPersistent
            | Self::TooManyPools => abi::EPERM,
            Self::BadBufferLength { .. } => abi::EINVAL,
            Self::QuotaExceeded | Self::NoMemory | Self::StoreFault => abi::ENOMEM,
            Self::NoSpace => abi::ENOSPC,
            Self::TooManyClients | Self::ClientExists | Self::TooManyUuids => abi::EINVAL,
        }
    }
}

impl fmt::Display for TmemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchClient => f.write_str("no such tmem client"),
            Self::TooManyClients => f.write_str("every client slot is in use"),
            Self::ClientExists => f.write_str("the domain has a tmem client already"),
            Self::NoSuchPool => f.write_str("no such pool for this client"),
            Self::BadVersion => f.write_str("pool flags ask for an unknown tmem spec version"),
            Self::BadPageSize => f.write_str("pool flags ask for a page size other than 4 KiB"),
            Self::Precompressed => f.write_str("precompressed pools are not supported"),
            Self::ReservedFlags => f.write_str("reserved pool flag bits are set"),
            Self::SharedPersistent => f.write_str("a pool cannot be both shared and persistent"),
            Self::TooManyPools => f.write_str("no free pool slot"),
            Self::BadBufferLength { len } => write!(f, "page buffer of {len} bytes, not 4096"),
            Self::QuotaExceeded => f.write_str("the client is at its persistent-page quota"),
            Self::NoMemory => f.write_str("the host has no memory for the page"),
            Self::NoSpace => f.write_str("the tmem index tables are full"),
            Self::TooManyUuids => f.write_str("the client has 16 authorized UUIDs already"),
            Self::StoreFault => f.write_str("the page store is inconsistent"),
        }
    }
}

impl core::error::Error for TmemError {}

/// Why [`Tmem::new`](crate::Tmem::new) refused its memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// A table is too small, too large, or a hash table's length is not a
    /// power of two at least twice its record table's.
    BadTable {
        /// Which table.
        table: &'static str,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadTable { table } => write!(f, "tmem memory: table `{table}` is mis-sized"),
        }
    }
}

impl core::error::Error for LayoutError {}

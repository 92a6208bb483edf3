//! The attributes of a mapping, in one model for every format.

use core::fmt;

bitflags::bitflags! {
    /// Access rights of a mapping.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Access: u8 {
        /// Reads allowed.
        const READ = 1 << 0;
        /// Writes allowed.
        const WRITE = 1 << 1;
        /// Instruction fetches allowed.
        const EXECUTE = 1 << 2;
        /// Accessible from user mode (x86 U/S, AArch64 EL0).
        const USER = 1 << 3;
    }
}

/// The memory type (cacheability) of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryType {
    /// Write-back cacheable: normal RAM.
    WriteBack,
    /// Write-through.
    WriteThrough,
    /// Write-combining (x86 WC, AArch64 normal non-cacheable).
    WriteCombining,
    /// Write-protect (x86 only).
    WriteProtect,
    /// Uncacheable: device memory, strongly ordered.
    Uncacheable,
    /// x86 UC-: uncacheable, but MTRR WC may override.
    UncacheableMinus,
}

/// Everything a leaf says about the page it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// Access rights.
    pub access: Access,
    /// Memory type.
    pub memory_type: MemoryType,
    /// Survives address-space switches (x86 G; AArch64 !nG).
    pub global: bool,
    /// x86 protection key (0..=15); 0 where keys do not exist.
    pub protection_key: u8,
    /// EPT: ignore the guest's PAT and use `memory_type` as is.
    pub ignore_guest_pat: bool,
}

impl Attributes {
    /// Readable, writable, not executable, write-back, supervisor only.
    pub const DATA: Self = Self::new(Access::READ.union(Access::WRITE));
    /// Readable and executable, write-back, supervisor only.
    pub const CODE: Self = Self::new(Access::READ.union(Access::EXECUTE));
    /// Read-only data.
    pub const READ_ONLY: Self = Self::new(Access::READ);

    /// Write-back memory with `access`, no key, not global.
    #[must_use]
    pub const fn new(access: Access) -> Self {
        Self {
            access,
            memory_type: MemoryType::WriteBack,
            global: false,
            protection_key: 0,
            ignore_guest_pat: false,
        }
    }

    /// The same attributes with another memory type.
    #[must_use]
    pub const fn with_memory_type(mut self, memory_type: MemoryType) -> Self {
        self.memory_type = memory_type;
        self
    }
}

/// Why a format cannot encode some attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttrError {
    /// The format has no way to express this access combination (EPT
    /// write-only, x86 not readable, ...).
    Access(Access),
    /// The memory type is not in the format's table (PAT, MAIR) or not
    /// valid for it.
    MemoryType(MemoryType),
    /// Global mappings do not exist in this format.
    Global,
    /// Protection keys above 15, or in a format without keys.
    ProtectionKey(u8),
    /// Ignore-PAT outside EPT.
    IgnoreGuestPat,
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Access(a) => write!(f, "the format cannot express access {a:?}"),
            Self::MemoryType(m) => write!(f, "the format cannot express memory type {m:?}"),
            Self::Global => f.write_str("the format has no global mappings"),
            Self::ProtectionKey(k) => write!(f, "protection key {k} is not available"),
            Self::IgnoreGuestPat => f.write_str("ignore-PAT exists only in EPT"),
        }
    }
}

impl core::error::Error for AttrError {}

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
        /// Accessible from user mode (x86 U/S, AArch64 EL0 via AP[1]).
        const USER = 1 << 3;
        /// Instruction fetches allowed from user mode, separately from
        /// [`EXECUTE`](Self::EXECUTE), which is then the privileged right
        /// (AArch64 UXN beside PXN; stage-2 XN[1:0] with FEAT_XNX). x86 and
        /// EPT have no separate control and refuse it.
        const USER_EXECUTE = 1 << 4;
    }
}

bitflags::bitflags! {
    /// The hardware access and dirty tracking bits of a leaf (AArch64 AF and
    /// DBM). x86 and EPT leave accessed/dirty to the hardware and take only
    /// [`ACCESSED`](Self::ACCESSED).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Tracking: u8 {
        /// The access flag (AF). Clear, the first access faults (or sets
        /// it, with hardware AF management).
        const ACCESSED = 1 << 0;
        /// The dirty-bit modifier (DBM): with hardware dirty management a
        /// write to a read-only page makes it writable instead of faulting.
        const DIRTY_BIT_MODIFIER = 1 << 1;
    }
}

/// The memory type (cacheability) of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// AArch64 Device-nGnRE: uncached, no gathering or reordering, early
    /// write acknowledgement ([`Uncacheable`](Self::Uncacheable) is
    /// Device-nGnRnE there). x86 has none.
    Device,
    /// Stage 2 with FEAT_S2FWB: leave the memory type to stage 1 (MemAttr
    /// `0b0111`). Nothing else has it.
    Inherited,
}

/// Shareability of a mapping (AArch64 SH; x86 memory is always coherent,
/// which is [`Inner`](Self::Inner)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shareability {
    /// Non-shareable (SH `0b00`).
    NonShareable,
    /// Outer shareable (SH `0b10`).
    Outer,
    /// Inner shareable (SH `0b11`).
    Inner,
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
    /// AArch64 shareability; [`Shareability::Inner`] elsewhere.
    pub shareability: Shareability,
    /// AArch64 AF and DBM; [`Tracking::ACCESSED`] elsewhere. (One byte of
    /// flags keeps `Attributes` at seven bytes, so that a decoded entry fits
    /// two registers.)
    pub tracking: Tracking,
}

impl Attributes {
    /// Readable, writable, not executable, write-back, supervisor only.
    pub const DATA: Self = Self::new(Access::READ.union(Access::WRITE));
    /// Readable and executable, write-back, supervisor only. A stage-2
    /// table without FEAT_XNX refuses it (EL1 and EL0 execution must then
    /// agree): use `READ | EXECUTE | USER_EXECUTE` there.
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
            shareability: Shareability::Inner,
            tracking: Tracking::ACCESSED,
        }
    }

    /// Checks the AArch64-only fields hold the values x86 and EPT imply
    /// (inner shareable, accessed, no DBM).
    pub(crate) fn check_x86(&self) -> Result<(), AttrError> {
        if self.access.contains(Access::USER_EXECUTE) {
            return Err(AttrError::Access(self.access));
        }
        if self.shareability != Shareability::Inner {
            return Err(AttrError::Shareability(self.shareability));
        }
        if !self.tracking.contains(Tracking::ACCESSED) {
            return Err(AttrError::AccessFlag);
        }
        if self.tracking.contains(Tracking::DIRTY_BIT_MODIFIER) {
            return Err(AttrError::DirtyBitModifier);
        }
        Ok(())
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
    /// The format cannot express this shareability (x86; AArch64 with
    /// LPA2, where it comes from TCR/VTCR).
    Shareability(Shareability),
    /// A clear access flag, in a format whose hardware manages it.
    AccessFlag,
    /// The dirty-bit modifier, in a format without one.
    DirtyBitModifier,
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Access(a) => write!(f, "the format cannot express access {a:?}"),
            Self::MemoryType(m) => write!(f, "the format cannot express memory type {m:?}"),
            Self::Global => f.write_str("the format has no global mappings"),
            Self::ProtectionKey(k) => write!(f, "protection key {k} is not available"),
            Self::IgnoreGuestPat => f.write_str("ignore-PAT exists only in EPT"),
            Self::Shareability(s) => write!(f, "the format cannot express shareability {s:?}"),
            Self::AccessFlag => f.write_str("the format cannot leave the access flag clear"),
            Self::DirtyBitModifier => f.write_str("the format has no dirty-bit modifier"),
        }
    }
}

impl core::error::Error for AttrError {}

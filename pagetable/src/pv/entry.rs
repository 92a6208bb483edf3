//! Per-level rules for one entry a 64-bit PV guest writes into its own page
//! tables (reference a.8), and the references a valid entry holds.

use core::fmt;
use core::ops::Range;

use hvmem_types::Mfn;

use super::oracle::{FrameOracle, OracleError, PvLevel, PvType};

/// Entries in a 4 KiB table.
pub const ENTRIES: u32 = 512;

/// The L4 slots that belong to the hypervisor (Xen's 64-bit PV layout:
/// 256..=271, the first 8 TiB of the upper half). A guest cannot write them
/// through [`mmu_update`](super::mmu_update); validation neither reads nor
/// takes references for them, and the embedder installs its own entries
/// there after an L4 is validated.
pub const XEN_L4_SLOTS: Range<u32> = 256..272;

pub(crate) const PRESENT: u64 = 1 << 0;
pub(crate) const RW: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
pub(crate) const ACCESSED: u64 = 1 << 5;
pub(crate) const DIRTY: u64 = 1 << 6;
/// PSE in an L2/L3 entry, PAT in an L1 entry.
const PSE_PAT: u64 = 1 << 7;
const GLOBAL: u64 = 1 << 8;
const AVAIL: u64 = 0x7 << 9;
const AVAIL_HIGH: u64 = 0x7ff << 52;
const NX: u64 = 1 << 63;
/// The address field of a 4 KiB entry before MAXPHYADDR narrows it.
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// Xen's base disallow mask in its 24-bit flag space (PTE bits 11..0 as
/// flag bits 11..0, PTE bits 63..52 as flag bits 23..12): PWT, PCD,
/// PSE/PAT and GLOBAL, and nothing of NX or the available bits.
const BASE_DISALLOW: u32 = 0xff00_0198;

/// Flag changes that need no new references when the address stays the same
/// (Xen's fast path): the available bits, NX, GLOBAL, USER, ACCESSED and
/// DIRTY. RW is never among them at any level, since a change of RW at L1
/// changes the writable reference (XSA-182 was a fast path that let a flag
/// change skip the checks it needed). The new entry's flags are still checked
/// against the level's disallow mask before the fast path is taken.
pub(crate) const FAST_PATH_FLAGS: u64 = NX | AVAIL | AVAIL_HIGH | GLOBAL | USER | ACCESSED | DIRTY;

/// The 24-bit flag value of an entry.
#[must_use]
pub const fn pte_flags(raw: u64) -> u32 {
    ((raw & 0xfff) | ((raw >> 40) & 0x00ff_f000)) as u32
}

/// The rules of one PV guest's tables: the CPU's MAXPHYADDR and NX support,
/// and whether the guest may choose cache attributes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PvConfig {
    max_phys_bits: u8,
    no_execute: bool,
    cache_attributes: bool,
}

impl PvConfig {
    /// The rules for a CPU with `max_phys_bits` of physical address
    /// (MAXPHYADDR, 32..=52) and NX, for a guest without I/O resources (no
    /// cache attributes). `None` for a width out of range.
    #[must_use]
    pub const fn new(max_phys_bits: u8) -> Option<Self> {
        if max_phys_bits < 32 || max_phys_bits > 52 {
            return None;
        }
        Some(Self {
            max_phys_bits,
            no_execute: true,
            cache_attributes: false,
        })
    }

    /// The same rules on a CPU without NX (EFER.NXE clear): bit 63 is
    /// reserved and refused.
    #[must_use]
    pub const fn without_no_execute(mut self) -> Self {
        self.no_execute = false;
        self
    }

    /// The same rules for a guest with I/O resources: L1 entries may set the
    /// cache-attribute bits PWT, PCD and PAT (Xen allows them only then).
    #[must_use]
    pub const fn with_cache_attributes(mut self) -> Self {
        self.cache_attributes = true;
        self
    }

    /// The MAXPHYADDR the rules assume.
    #[must_use]
    pub const fn max_phys_bits(&self) -> u8 {
        self.max_phys_bits
    }

    /// The address bits an entry may use: `[max_phys_bits - 1 : 12]`.
    #[must_use]
    pub const fn address_mask(&self) -> u64 {
        ((1u64 << self.max_phys_bits) - 1) & ADDRESS
    }

    /// The 24-bit flags a present entry at `level` may not set.
    #[must_use]
    pub const fn disallowed_flags(&self, level: PvLevel) -> u32 {
        let mut mask = BASE_DISALLOW & 0x00ff_ffff;
        if let PvLevel::L1 = level {
            mask &= !(GLOBAL as u32);
            if self.cache_attributes {
                mask &= !((PWT | PCD | PSE_PAT) as u32);
            }
        }
        if !self.no_execute {
            mask |= pte_flags(NX);
        }
        mask
    }

    /// Checks the bits of a present entry at `level` (nothing about its
    /// target) and returns the frame it points at.
    ///
    /// # Errors
    ///
    /// [`EntryError::ReservedBits`], [`EntryError::LargePage`] or
    /// [`EntryError::DisallowedFlags`].
    pub const fn check_bits(&self, raw: u64, level: PvLevel) -> Result<Mfn, EntryError> {
        let reserved = raw & ADDRESS & !self.address_mask();
        if reserved != 0 {
            return Err(EntryError::ReservedBits { bits: reserved });
        }
        if raw & PSE_PAT != 0 && matches!(level, PvLevel::L2 | PvLevel::L3) {
            return Err(EntryError::LargePage { level });
        }
        let flags = pte_flags(raw) & self.disallowed_flags(level);
        if flags != 0 {
            return Err(EntryError::DisallowedFlags { level, flags });
        }
        Ok(Mfn::new((raw & ADDRESS) >> 12))
    }
}

/// Why an entry is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EntryError {
    /// Address bits at or above MAXPHYADDR are set (these bits).
    ReservedBits {
        /// The offending bits, in place.
        bits: u64,
    },
    /// PSE in an L2 or L3 entry: PV guests get no superpages (XSA-148).
    LargePage {
        /// The entry's level.
        level: PvLevel,
    },
    /// Flags the level refuses: PWT, PCD, PSE/PAT or GLOBAL (GLOBAL is
    /// allowed at L1, cache attributes at L1 only for guests with I/O
    /// resources), NX without NX support.
    DisallowedFlags {
        /// The entry's level.
        level: PvLevel,
        /// The refused bits, in the 24-bit flag space.
        flags: u32,
    },
    /// The target frame is not the guest's (free, another domain's, or no
    /// frame at all).
    ForeignFrame {
        /// The target.
        mfn: Mfn,
    },
    /// A writable L1 entry whose target is in use as a page table (or any
    /// other type): a page table is never mapped writable.
    WritablePageTable {
        /// The target.
        mfn: Mfn,
    },
    /// An L2/L3/L4 entry whose target is in use as something other than a
    /// table of the next lower level (a data page with writable mappings, a
    /// table of another level, a linear entry).
    WrongTargetType {
        /// The target.
        mfn: Mfn,
        /// The type the entry needs.
        wanted: PvLevel,
    },
    /// An entry pointing at the table it lives in (a linear, or recursive,
    /// page table). hvmem does not implement Xen's read-only linear rule
    /// and refuses every linear entry.
    LinearEntry {
        /// The table.
        mfn: Mfn,
    },
    /// The target's contents failed validation as the next lower level.
    InvalidTarget {
        /// The target.
        mfn: Mfn,
    },
    /// A reference count on the target is at its limit.
    CountOverflow {
        /// The target.
        mfn: Mfn,
    },
    /// The target's validation is incomplete (preempted, or running on
    /// another CPU); nothing was taken. Retry later.
    Retry {
        /// The target.
        mfn: Mfn,
    },
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedBits { bits } => write!(f, "reserved address bits {bits:#x} set"),
            Self::LargePage { level } => write!(f, "PSE in an {level} entry of a PV guest"),
            Self::DisallowedFlags { level, flags } => {
                write!(f, "flags {flags:#x} not allowed in an {level} entry")
            }
            Self::ForeignFrame { mfn } => write!(f, "{mfn} is not the guest's"),
            Self::WritablePageTable { mfn } => {
                write!(
                    f,
                    "{mfn} cannot be mapped writable: it is in use as another type"
                )
            }
            Self::WrongTargetType { mfn, wanted } => {
                write!(f, "{mfn} cannot be used as an {wanted} page table")
            }
            Self::LinearEntry { mfn } => write!(f, "linear entry to its own table {mfn}"),
            Self::InvalidTarget { mfn } => write!(f, "{mfn} failed validation"),
            Self::CountOverflow { mfn } => write!(f, "reference count of {mfn} at its limit"),
            Self::Retry { mfn } => write!(f, "validation of {mfn} incomplete, retry"),
        }
    }
}

impl core::error::Error for EntryError {}

/// The typed reference a present entry at `level` holds on its target, if
/// any (the general reference is always held).
pub(crate) const fn typed_use(raw: u64, level: PvLevel) -> Option<PvType> {
    match level.below() {
        Some(lower) => Some(PvType::Table(lower)),
        None if raw & RW != 0 => Some(PvType::Writable),
        None => None,
    }
}

/// Checks a present entry `raw` at `level` of `table` (owned by `owner`) and
/// takes the references it holds on its target: a general one, plus a
/// writable one for an RW L1 entry or a next-lower-level one for L2..L4.
/// On error nothing is held.
pub(crate) fn take_entry<O: FrameOracle + ?Sized>(
    oracle: &O,
    config: &PvConfig,
    owner: O::Domain,
    table: Mfn,
    level: PvLevel,
    raw: u64,
) -> Result<(), EntryError> {
    let mfn = config.check_bits(raw, level)?;
    if mfn == table && level != PvLevel::L1 {
        return Err(EntryError::LinearEntry { mfn });
    }
    oracle.get_ref(mfn, owner).map_err(|e| match e {
        OracleError::Overflow => EntryError::CountOverflow { mfn },
        _ => EntryError::ForeignFrame { mfn },
    })?;
    let Some(ty) = typed_use(raw, level) else {
        return Ok(());
    };
    oracle.get_type(mfn, ty).map_err(|e| {
        oracle.put_ref(mfn);
        match (e, ty) {
            (OracleError::Overflow, _) => EntryError::CountOverflow { mfn },
            (OracleError::Retry, _) => EntryError::Retry { mfn },
            (OracleError::Invalid, _) => EntryError::InvalidTarget { mfn },
            (_, PvType::Writable) => EntryError::WritablePageTable { mfn },
            (_, PvType::Table(wanted)) => EntryError::WrongTargetType { mfn, wanted },
        }
    })
}

/// Drops the references a present, validated entry `raw` at `level` holds:
/// the typed one first, then the general one that backs it.
pub(crate) fn drop_entry<O: FrameOracle + ?Sized>(oracle: &O, level: PvLevel, raw: u64) {
    let mfn = Mfn::new((raw & ADDRESS) >> 12);
    if let Some(ty) = typed_use(raw, level) {
        oracle.put_type(mfn, ty);
    }
    oracle.put_ref(mfn);
}

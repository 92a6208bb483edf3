//! Stage-2 translation: a guest's intermediate physical addresses (IPA).

use hvmem_types::GuestPhysAddr;

use super::geometry::{AF, CONTIGUOUS, DBM, Geometry, SOFTWARE};
use super::{ConfigError, Granule, LargeAddresses};
use crate::attrs::{Access, AttrError, Attributes, MemoryType, Tracking};
use crate::format::{Descriptor, EntryKind, Format};

const MEMATTR_SHIFT: u32 = 2;
const S2AP_READ: u64 = 1 << 6;
const S2AP_WRITE: u64 = 1 << 7;
const XN_SHIFT: u32 = 53;
const XN: u64 = 0b11 << XN_SHIFT;

/// Bits that may change on a live leaf without break-before-make
/// (paging-formats.md B.10): S2AP, AF, XN, software bits.
const SAFE: u64 = S2AP_READ | S2AP_WRITE | AF | XN | SOFTWARE;

/// AArch64 stage-2 descriptors, as configured by VTCR_EL2 and HCR_EL2.FWB.
///
/// The root level and the number of concatenated root tables follow from
/// the IPA size and granule as KVM chooses them (the shallowest walk that
/// at most 16 concatenated tables allow; Arm ARM, "Concatenated
/// translation tables for the initial stage 2 lookup").
///
/// Attributes: [`Access::READ`] and [`Access::WRITE`] are S2AP (any
/// combination, none included); [`Access::EXECUTE`] is execution at EL1 and
/// [`Access::USER_EXECUTE`] at EL0 (XN\[1:0\] with FEAT_XNX; without it the
/// two must be equal, as bit 54). No `USER`, no `global`. Memory types
/// without FWB: `Uncacheable` (Device-nGnRnE), `Device` (nGnRE),
/// `WriteCombining` (Normal-NC), `WriteThrough`, `WriteBack` (which leaves
/// stage 1 in charge); with FWB: `Uncacheable`, `Device`, `WriteCombining`
/// and `WriteBack` forced, and `Inherited` (use stage 1's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2 {
    geometry: Geometry,
    fwb: bool,
    xnx: bool,
}

impl Stage2 {
    /// Stage-2 tables for `ipa_bits`-bit IPAs (VTCR_EL2.T0SZ = 64 -
    /// `ipa_bits`) with `granule`, no FWB, no FEAT_XNX, and the widest output
    /// size `large` allows.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InputBits`] outside 25..=48 (25..=52 with LPA or
    /// LPA2), [`ConfigError::LargeAddresses`] for LPA/LPA2 with the wrong
    /// granule.
    pub fn new(granule: Granule, ipa_bits: u8, large: LargeAddresses) -> Result<Self, ConfigError> {
        Ok(Self {
            geometry: Geometry::new(granule, ipa_bits, large, true)?,
            fwb: false,
            xnx: false,
        })
    }

    /// The same tables with another output size (VTCR_EL2.PS).
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutputBits`] for a size the field cannot hold, or 52
    /// without LPA/LPA2.
    pub fn with_output_bits(mut self, bits: u8) -> Result<Self, ConfigError> {
        self.geometry = self.geometry.with_output_bits(bits)?;
        Ok(self)
    }

    /// The same tables with HCR_EL2.FWB set (FEAT_S2FWB): MemAttr forces
    /// the memory type.
    #[must_use]
    pub const fn with_fwb(mut self) -> Self {
        self.fwb = true;
        self
    }

    /// The same tables on a CPU with FEAT_XNX: separate EL1 and EL0 execute
    /// permissions.
    #[must_use]
    pub const fn with_xnx(mut self) -> Self {
        self.xnx = true;
        self
    }

    /// VTCR_EL2.T0SZ.
    #[must_use]
    pub fn t0sz(&self) -> u64 {
        64 - u64::from(self.geometry.input_bits)
    }

    /// VTCR_EL2.TG0.
    #[must_use]
    pub fn tg0(&self) -> u64 {
        self.geometry.granule.tg0()
    }

    /// VTCR_EL2.PS.
    #[must_use]
    pub fn ps(&self) -> u64 {
        self.geometry.ps()
    }

    /// The architecture's number of the root level (0..=3).
    #[must_use]
    pub fn start_level(&self) -> i8 {
        self.geometry.start_level()
    }

    /// VTCR_EL2.SL0 for the root level: 2 - level for 4 KiB, 3 - level for
    /// 16 and 64 KiB.
    #[must_use]
    pub fn sl0(&self) -> u64 {
        let base = if self.geometry.granule == Granule::Size4KiB {
            2
        } else {
            3
        };
        (base - self.start_level()) as u64
    }

    /// The root's size in bytes, which is also the alignment VTTBR_EL2.BADDR
    /// needs.
    #[must_use]
    pub fn root_bytes(&self) -> u64 {
        8 << self.geometry.root_bits
    }

    fn memattr(&self, mt: MemoryType) -> Option<u64> {
        match (self.fwb, mt) {
            (_, MemoryType::Uncacheable) => Some(0b0000),
            (_, MemoryType::Device) => Some(0b0001),
            (_, MemoryType::WriteCombining) => Some(0b0101),
            (false, MemoryType::WriteThrough) => Some(0b1010),
            (false, MemoryType::WriteBack) => Some(0b1111),
            (true, MemoryType::WriteBack) => Some(0b0110),
            (true, MemoryType::Inherited) => Some(0b0111),
            _ => None,
        }
    }

    fn memory_type(&self, memattr: u64) -> Option<MemoryType> {
        match (self.fwb, memattr) {
            (_, 0b0000) => Some(MemoryType::Uncacheable),
            (_, 0b0001) => Some(MemoryType::Device),
            (_, 0b0101) => Some(MemoryType::WriteCombining),
            (false, 0b1010) => Some(MemoryType::WriteThrough),
            (false, 0b1111) => Some(MemoryType::WriteBack),
            (true, 0b0110) => Some(MemoryType::WriteBack),
            (true, 0b0111) => Some(MemoryType::Inherited),
            _ => None,
        }
    }

    /// Whether a leaf's attribute fields decode (what makes
    /// [`leaf_attributes`](Self::leaf_attributes) `Some`), without building
    /// them: a MemAttr this configuration defines, a valid SH, and XN\[0\]
    /// clear unless FEAT_XNX is in use.
    #[inline]
    fn leaf_fields_valid(&self, raw: u64) -> bool {
        self.memory_type((raw >> MEMATTR_SHIFT) & 0xf).is_some()
            && self.geometry.decode_shareability(raw).is_some()
            && (self.xnx || ((raw & XN) >> XN_SHIFT) & 0b01 == 0)
    }

    #[inline]
    fn leaf_attributes(&self, raw: u64) -> Option<Attributes> {
        let mut attrs = Attributes::new(Access::empty());
        attrs.memory_type = self.memory_type((raw >> MEMATTR_SHIFT) & 0xf)?;
        attrs.shareability = self.geometry.decode_shareability(raw)?;
        attrs.tracking = Tracking::empty();
        attrs.tracking.set(Tracking::ACCESSED, raw & AF != 0);
        attrs
            .tracking
            .set(Tracking::DIRTY_BIT_MODIFIER, raw & DBM != 0);
        let mut access = Access::empty();
        access.set(Access::READ, raw & S2AP_READ != 0);
        access.set(Access::WRITE, raw & S2AP_WRITE != 0);
        let xn = (raw & XN) >> XN_SHIFT;
        let (el1, el0) = match (self.xnx, xn) {
            (true, 0b00) | (false, 0b00) => (true, true),
            (true, 0b01) => (false, true),
            (true, 0b11) => (true, false),
            (_, 0b10) => (false, false),
            // XN[0] is RES0 without FEAT_XNX.
            _ => return None,
        };
        access.set(Access::EXECUTE, el1);
        access.set(Access::USER_EXECUTE, el0);
        attrs.access = access;
        Some(attrs)
    }
}

impl Format for Stage2 {
    type Input = GuestPhysAddr;

    #[inline]
    fn levels(&self) -> u8 {
        self.geometry.levels
    }

    #[inline]
    fn granule_shift(&self) -> u32 {
        self.geometry.shift()
    }

    #[inline]
    fn root_entries(&self) -> usize {
        1 << self.geometry.root_bits
    }

    fn level_name(&self, level: u8) -> &'static str {
        Geometry::level_name(level)
    }

    #[inline]
    fn input_to_index(&self, input: u64) -> Option<u64> {
        (input >> self.geometry.input_bits == 0).then_some(input)
    }

    #[inline]
    fn index_to_input(&self, index: u64) -> u64 {
        index
    }

    #[inline]
    fn output_bits(&self) -> u32 {
        u32::from(self.geometry.output_bits)
    }

    #[inline]
    fn leaf_allowed(&self, level: u8) -> bool {
        self.geometry.block_allowed(level)
    }

    #[inline]
    fn kind(&self, raw: u64, level: u8) -> EntryKind {
        self.geometry
            .entry_kind(raw, level, |raw| self.leaf_fields_valid(raw))
    }

    #[inline]
    fn decode(&self, raw: u64, level: u8) -> Descriptor {
        self.geometry
            .descriptor(raw, level, |raw| self.leaf_attributes(raw))
    }

    #[inline]
    fn encode_table(&self, table: u64, _level: u8) -> u64 {
        self.geometry.encode_table(table)
    }

    #[inline]
    fn table_pattern(&self) -> crate::TablePattern {
        self.geometry.table_pattern()
    }

    #[inline]
    fn last_level_leaf(&self, raw: u64) -> Option<u64> {
        // At the last level the table pattern's bits are a page's; then the
        // attribute fields, as `kind` checks them.
        let pattern = self.geometry.table_pattern();
        (pattern.matches(raw) && self.leaf_fields_valid(raw)).then_some(pattern.address(raw))
    }

    fn encode_leaf(&self, pa: u64, attrs: &Attributes, level: u8) -> Result<u64, AttrError> {
        let access = attrs.access;
        if access.contains(Access::USER) {
            return Err(AttrError::Access(access));
        }
        if attrs.global {
            return Err(AttrError::Global);
        }
        if attrs.protection_key != 0 {
            return Err(AttrError::ProtectionKey(attrs.protection_key));
        }
        if attrs.ignore_guest_pat {
            return Err(AttrError::IgnoreGuestPat);
        }
        let memattr = self
            .memattr(attrs.memory_type)
            .ok_or(AttrError::MemoryType(attrs.memory_type))?;
        let el1 = access.contains(Access::EXECUTE);
        let el0 = access.contains(Access::USER_EXECUTE);
        let xn = match (el1, el0) {
            (true, true) => 0b00,
            (false, false) => 0b10,
            (false, true) if self.xnx => 0b01,
            (true, false) if self.xnx => 0b11,
            _ => return Err(AttrError::Access(access)),
        };
        let mut raw = Geometry::leaf_type(level)
            | memattr << MEMATTR_SHIFT
            | self.geometry.encode_shareability(attrs.shareability)?
            | xn << XN_SHIFT
            | self.geometry.encode_oa(pa);
        if access.contains(Access::READ) {
            raw |= S2AP_READ;
        }
        if access.contains(Access::WRITE) {
            raw |= S2AP_WRITE;
        }
        if attrs.tracking.contains(Tracking::ACCESSED) {
            raw |= AF;
        }
        if attrs.tracking.contains(Tracking::DIRTY_BIT_MODIFIER) {
            raw |= DBM;
        }
        Ok(raw)
    }

    #[inline]
    fn with_output_address(&self, template: u64, pa: u64, _level: u8) -> u64 {
        template | self.geometry.encode_oa(pa)
    }

    #[inline]
    fn needs_break(&self, old: u64, new: u64, _level: u8) -> bool {
        Geometry::needs_break(old, new, SAFE)
    }

    #[inline]
    fn contiguous_run(&self, level: u8) -> u32 {
        self.geometry.contiguous_run(level)
    }

    #[inline]
    fn is_contiguous(&self, raw: u64) -> bool {
        raw & CONTIGUOUS != 0
    }

    #[inline]
    fn with_contiguous(&self, raw: u64, on: bool) -> u64 {
        if on {
            raw | CONTIGUOUS
        } else {
            raw & !CONTIGUOUS
        }
    }

    #[inline]
    fn leaf_address_mask(&self, level: u8) -> Option<u64> {
        Some(self.geometry.leaf_address_mask(level))
    }

    #[inline]
    fn leaf_address_in_place(&self, _level: u8) -> Option<u64> {
        Some(self.geometry.address_in_place())
    }
}

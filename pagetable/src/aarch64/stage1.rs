//! Stage-1 translation: virtual addresses of EL1&0, EL2 or EL2&0.

use hvmem_types::VirtAddr;

use super::geometry::{AF, CONTIGUOUS, DBM, Geometry, SH_SHIFT, SOFTWARE};
use super::{ConfigError, Granule, LargeAddresses, Mair};
use crate::attrs::{Access, AttrError, Attributes, Tracking};
use crate::format::{Descriptor, EntryKind, Format};

const ATTR_INDEX_SHIFT: u32 = 2;
/// AP\[1\]: EL0 access (RES1 in the single-range EL2 regime).
const AP_USER: u64 = 1 << 6;
/// AP\[2\]: read-only.
const AP_READ_ONLY: u64 = 1 << 7;
const NOT_GLOBAL: u64 = 1 << 11;
const PXN: u64 = 1 << 53;
/// UXN in two-range regimes, XN at EL2.
const UXN: u64 = 1 << 54;
const PXN_TABLE: u64 = 1 << 59;
const XN_TABLE: u64 = 1 << 60;
const AP_TABLE_NO_EL0: u64 = 1 << 61;
const AP_TABLE_NO_WRITE: u64 = 1 << 62;

/// Bits that may change on a live leaf without break-before-make
/// (paging-formats.md B.10): AP\[2\], AF, DBM, PXN, UXN, software bits; nG
/// only from 0 to 1.
const SAFE: u64 = AP_READ_ONLY | AF | DBM | PXN | UXN | SOFTWARE;

/// Which values of a page's AttrIndx and SH fields decode, as a table of
/// 32 bits for [`page_fields_index`]: AttrIndx must name a slot of `mair`
/// in use, and SH must not be the reserved 0b01 unless the descriptor holds
/// output address bits there (LPA2).
fn page_fields_ok(mair: &Mair, geometry: &Geometry) -> u32 {
    let sh_is_address = matches!(geometry.large, LargeAddresses::Lpa2 { .. });
    let mut ok = 0u32;
    for slot in 0..8u8 {
        for sh in 0..4u64 {
            if mair.memory_type(slot).is_some() && (sh_is_address || sh != 0b01) {
                let raw = u64::from(slot) << ATTR_INDEX_SHIFT | sh << SH_SHIFT;
                ok |= 1 << page_fields_index(raw);
            }
        }
    }
    ok
}

/// The index of a descriptor's AttrIndx (bits 4:2) and SH (bits 9:8)
/// fields in the table [`page_fields_ok`] builds: AttrIndx in bits 2:0, SH
/// in bits 4:3.
#[inline(always)]
fn page_fields_index(raw: u64) -> u32 {
    (((raw >> ATTR_INDEX_SHIFT) & 0b111) | ((raw >> (SH_SHIFT - 3)) & 0b11000)) as u32
}

/// The translation regime whose stage-1 tables these are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Regime {
    /// EL1&0: two privilege levels (AP\[1\], PXN and UXN), ASIDs (nG), two
    /// address ranges.
    El1And0,
    /// EL2 without VHE: one privilege level (AP\[1\] RES1, XN only), no
    /// ASIDs, one address range.
    El2,
    /// EL2&0 (VHE): like EL1&0.
    El2And0,
}

/// Which of the two address ranges of a two-range regime the table maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VaRange {
    /// TTBR0: addresses from 0 up.
    Lower,
    /// TTBR1: addresses from the top down (upper bits all ones).
    Upper,
}

/// AArch64 stage-1 descriptors, as configured by TCR_ELx, MAIR_ELx and the
/// regime.
///
/// Attributes: [`Access::READ`] always (stage 1 cannot make a page
/// unreadable to the privileged level), [`Access::WRITE`] is AP\[2\] clear,
/// [`Access::USER`] is AP\[1\] (EL0 access), [`Access::EXECUTE`] is PXN
/// clear and [`Access::USER_EXECUTE`] UXN clear (at EL2: only `EXECUTE`, as
/// XN). EL0-writable pages are never privileged-executable, so that
/// combination is refused. The memory type goes through the [`Mair`];
/// `global` is nG clear (regimes with ASIDs; EL2 takes only `false`);
/// shareability, AF and DBM are the descriptor's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage1 {
    geometry: Geometry,
    regime: Regime,
    va_range: VaRange,
    mair: Mair,
    /// Which AttrIndx and SH values decode, for `last_level_leaf`
    /// ([`page_fields_ok`]).
    page_fields_ok: u32,
}

impl Stage1 {
    /// Stage-1 tables for `regime` with `granule` and `input_bits`-bit
    /// virtual addresses (TnSZ = 64 - `input_bits`), the lower range,
    /// Linux's MAIR layout, and the widest output size `large` allows.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InputBits`] outside 25..=48 (25..=52 with LPA or
    /// LPA2), [`ConfigError::LargeAddresses`] for LPA/LPA2 with the wrong
    /// granule.
    pub fn new(
        regime: Regime,
        granule: Granule,
        input_bits: u8,
        large: LargeAddresses,
    ) -> Result<Self, ConfigError> {
        let geometry = Geometry::new(granule, input_bits, large, false)?;
        Ok(Self {
            geometry,
            regime,
            va_range: VaRange::Lower,
            mair: Mair::LINUX,
            page_fields_ok: page_fields_ok(&Mair::LINUX, &geometry),
        })
    }

    /// The same tables for another address range.
    ///
    /// # Errors
    ///
    /// [`ConfigError::VaRange`] for the upper range at EL2.
    pub fn with_va_range(mut self, va_range: VaRange) -> Result<Self, ConfigError> {
        if va_range == VaRange::Upper && self.regime == Regime::El2 {
            return Err(ConfigError::VaRange);
        }
        self.va_range = va_range;
        Ok(self)
    }

    /// The same tables with another output size (TCR.IPS / TCR_EL2.PS).
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutputBits`] for a size the field cannot hold, or 52
    /// without LPA/LPA2.
    pub fn with_output_bits(mut self, bits: u8) -> Result<Self, ConfigError> {
        self.geometry = self.geometry.with_output_bits(bits)?;
        self.page_fields_ok = page_fields_ok(&self.mair, &self.geometry);
        Ok(self)
    }

    /// The same tables with another MAIR layout.
    #[must_use]
    pub fn with_mair(mut self, mair: Mair) -> Self {
        self.mair = mair;
        self.page_fields_ok = page_fields_ok(&mair, &self.geometry);
        self
    }

    /// The MAIR layout (program `mair().value()` into MAIR_ELx).
    #[must_use]
    pub fn mair(&self) -> &Mair {
        &self.mair
    }

    /// The regime.
    #[must_use]
    pub fn regime(&self) -> Regime {
        self.regime
    }

    /// TCR_ELx.TnSZ: 64 minus the input size.
    #[must_use]
    pub fn tnsz(&self) -> u64 {
        64 - u64::from(self.geometry.input_bits)
    }

    /// TCR_ELx.TG0 or TG1 (by range) for the granule.
    #[must_use]
    pub fn tg(&self) -> u64 {
        match self.va_range {
            VaRange::Lower => self.geometry.granule.tg0(),
            VaRange::Upper => self.geometry.granule.tg1(),
        }
    }

    /// TCR_ELx.IPS / TCR_EL2.PS for the output size.
    #[must_use]
    pub fn ps(&self) -> u64 {
        self.geometry.ps()
    }

    /// The architecture's number of the root level (-1..=3).
    #[must_use]
    pub fn start_level(&self) -> i8 {
        self.geometry.start_level()
    }

    fn two_ranges(&self) -> bool {
        self.regime != Regime::El2
    }

    fn input_mask(&self) -> u64 {
        (1u64 << self.geometry.input_bits) - 1
    }

    /// Whether a leaf's attribute fields decode (what makes
    /// [`leaf_attributes`](Self::leaf_attributes) `Some`), without building
    /// them: an AttrIndx naming a MAIR slot in use and a valid SH.
    #[inline]
    fn leaf_fields_valid(&self, raw: u64) -> bool {
        let index = ((raw >> ATTR_INDEX_SHIFT) & 0b111) as u8;
        self.mair.memory_type(index).is_some() && self.geometry.decode_shareability(raw).is_some()
    }

    #[inline]
    fn leaf_attributes(&self, raw: u64) -> Option<Attributes> {
        let index = ((raw >> ATTR_INDEX_SHIFT) & 0b111) as u8;
        let mut attrs = Attributes::new(Access::READ);
        attrs.memory_type = self.mair.memory_type(index)?;
        attrs.shareability = self.geometry.decode_shareability(raw)?;
        attrs.tracking = Tracking::empty();
        attrs.tracking.set(Tracking::ACCESSED, raw & AF != 0);
        attrs
            .tracking
            .set(Tracking::DIRTY_BIT_MODIFIER, raw & DBM != 0);
        let mut access = Access::READ;
        access.set(Access::WRITE, raw & AP_READ_ONLY == 0);
        if self.two_ranges() {
            access.set(Access::USER, raw & AP_USER != 0);
            // EL0-writable memory is never executable at EL1 (or EL2 in VHE).
            let el0_writable = access.contains(Access::USER | Access::WRITE);
            access.set(Access::EXECUTE, raw & PXN == 0 && !el0_writable);
            access.set(Access::USER_EXECUTE, raw & UXN == 0);
            attrs.global = raw & NOT_GLOBAL == 0;
        } else {
            access.set(Access::EXECUTE, raw & UXN == 0);
        }
        attrs.access = access;
        Some(attrs)
    }
}

impl Format for Stage1 {
    type Input = VirtAddr;

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
        let mask = self.input_mask();
        match self.va_range {
            VaRange::Lower => (input & !mask == 0).then_some(input),
            VaRange::Upper => (input | mask == u64::MAX).then_some(input & mask),
        }
    }

    #[inline]
    fn index_to_input(&self, index: u64) -> u64 {
        match self.va_range {
            VaRange::Lower => index,
            VaRange::Upper => index | !self.input_mask(),
        }
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
        // At the last level the table pattern's bits are a page's: valid,
        // page type, no reserved or out-of-range address bit, the plain
        // address field. Then the attribute fields: a used MAIR slot and,
        // where the descriptor holds it (not LPA2), a non-reserved SH.
        let pattern = self.geometry.table_pattern();
        (pattern.matches(raw) && (self.page_fields_ok >> page_fields_index(raw)) & 1 != 0)
            .then_some(pattern.address(raw))
    }

    fn encode_leaf(&self, pa: u64, attrs: &Attributes, level: u8) -> Result<u64, AttrError> {
        let access = attrs.access;
        if !access.contains(Access::READ) {
            return Err(AttrError::Access(access));
        }
        if attrs.protection_key != 0 {
            return Err(AttrError::ProtectionKey(attrs.protection_key));
        }
        if attrs.ignore_guest_pat {
            return Err(AttrError::IgnoreGuestPat);
        }
        let index = self
            .mair
            .index_of(attrs.memory_type)
            .ok_or(AttrError::MemoryType(attrs.memory_type))?;
        let mut raw = Geometry::leaf_type(level)
            | u64::from(index) << ATTR_INDEX_SHIFT
            | self.geometry.encode_shareability(attrs.shareability)?
            | self.geometry.encode_oa(pa);
        if !access.contains(Access::WRITE) {
            raw |= AP_READ_ONLY;
        }
        if attrs.tracking.contains(Tracking::ACCESSED) {
            raw |= AF;
        }
        if attrs.tracking.contains(Tracking::DIRTY_BIT_MODIFIER) {
            raw |= DBM;
        }
        if self.two_ranges() {
            if access.contains(Access::USER | Access::WRITE | Access::EXECUTE) {
                // The hardware would not honour EXECUTE here.
                return Err(AttrError::Access(access));
            }
            if access.contains(Access::USER) {
                raw |= AP_USER;
            }
            if !access.contains(Access::EXECUTE) {
                raw |= PXN;
            }
            if !access.contains(Access::USER_EXECUTE) {
                raw |= UXN;
            }
            if !attrs.global {
                raw |= NOT_GLOBAL;
            }
        } else {
            if access.intersects(Access::USER | Access::USER_EXECUTE) {
                return Err(AttrError::Access(access));
            }
            if attrs.global {
                return Err(AttrError::Global);
            }
            // AP[1] is RES1 in the single-range regime.
            raw |= AP_USER;
            if !access.contains(Access::EXECUTE) {
                raw |= UXN;
            }
        }
        Ok(raw)
    }

    #[inline]
    fn with_output_address(&self, template: u64, pa: u64, _level: u8) -> u64 {
        template | self.geometry.encode_oa(pa)
    }

    fn table_limits(&self, raw: u64, _level: u8) -> Access {
        let mut limit = Access::all();
        if raw & AP_TABLE_NO_WRITE != 0 {
            limit.remove(Access::WRITE);
        }
        if self.two_ranges() {
            if raw & AP_TABLE_NO_EL0 != 0 {
                limit.remove(Access::USER | Access::USER_EXECUTE);
            }
            if raw & PXN_TABLE != 0 {
                limit.remove(Access::EXECUTE);
            }
            if raw & XN_TABLE != 0 {
                limit.remove(Access::USER_EXECUTE);
            }
        } else if raw & XN_TABLE != 0 {
            limit.remove(Access::EXECUTE);
        }
        limit
    }

    #[inline]
    fn needs_break(&self, old: u64, new: u64, _level: u8) -> bool {
        // nG may be set in place (the entry only becomes more private), not
        // cleared.
        let safe = if new & NOT_GLOBAL != 0 {
            SAFE | NOT_GLOBAL
        } else {
            SAFE
        };
        Geometry::needs_break(old, new, safe)
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

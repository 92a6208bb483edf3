//! What stage 1 and stage 2 share: granule, levels, the root, the output
//! address field (with FEAT_LPA and FEAT_LPA2), blocks and contiguous runs.

use core::fmt;

use crate::attrs::{Attributes, Shareability};
use crate::format::{Descriptor, EntryKind};

/// The translation granule: the table size and smallest page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granule {
    /// 4 KiB: 512 entries per table, 9 bits per level.
    Size4KiB,
    /// 16 KiB: 2048 entries per table, 11 bits per level.
    Size16KiB,
    /// 64 KiB: 8192 entries per table, 13 bits per level.
    Size64KiB,
}

impl Granule {
    /// log2 of the granule size.
    #[must_use]
    pub const fn shift(self) -> u32 {
        match self {
            Self::Size4KiB => 12,
            Self::Size16KiB => 14,
            Self::Size64KiB => 16,
        }
    }

    /// The TCR_ELx.TG0 / VTCR_EL2.TG0 encoding.
    #[must_use]
    pub const fn tg0(self) -> u64 {
        match self {
            Self::Size4KiB => 0b00,
            Self::Size16KiB => 0b10,
            Self::Size64KiB => 0b01,
        }
    }

    /// The TCR_ELx.TG1 encoding (differs from TG0: a classic bug).
    #[must_use]
    pub const fn tg1(self) -> u64 {
        match self {
            Self::Size4KiB => 0b10,
            Self::Size16KiB => 0b01,
            Self::Size64KiB => 0b11,
        }
    }
}

/// How output (and input) addresses wider than 48 bits are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LargeAddresses {
    /// Up to 48-bit addresses: the output address is descriptor bits
    /// `[47:G]`.
    None,
    /// FEAT_LPA with the 64 KiB granule: OA\[51:48\] in descriptor bits
    /// `[15:12]`, 4 TiB blocks at level 1; 52-bit inputs (FEAT_LVA).
    Lpa,
    /// FEAT_LPA2 (TCR/VTCR.DS = 1) with the 4 or 16 KiB granule: the output
    /// address is bits `[49:G]` plus OA\[51:50\] in bits `[9:8]`, so
    /// descriptors carry no shareability: it comes from TCR/VTCR SH0/SH1,
    /// given here. Adds blocks one level up and, for 4 KiB, level -1.
    Lpa2 {
        /// The shareability TCR_ELx.SHn / VTCR_EL2.SH0 gives every mapping.
        shareability: Shareability,
    },
}

/// Why a configuration does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The input-address size is not allowed with this granule and
    /// address extension.
    InputBits(u8),
    /// Not a TCR.IPS / VTCR.PS output size (32, 36, 40, 42, 44, 48, 52),
    /// or 52 without LPA/LPA2.
    OutputBits(u8),
    /// LPA is for the 64 KiB granule, LPA2 for 4 and 16 KiB.
    LargeAddresses,
    /// The upper (TTBR1) range in a regime that has only one.
    VaRange,
    /// A MAIR slot with a memory type that has no MAIR encoding.
    Mair,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InputBits(b) => write!(f, "{b}-bit input addresses are not supported here"),
            Self::OutputBits(b) => write!(f, "{b}-bit output addresses are not supported here"),
            Self::LargeAddresses => f.write_str("LPA needs the 64 KiB granule, LPA2 4 or 16 KiB"),
            Self::VaRange => f.write_str("this regime has no upper address range"),
            Self::Mair => f.write_str("memory type without a MAIR encoding"),
        }
    }
}

impl core::error::Error for ConfigError {}

pub(crate) const VALID: u64 = 1 << 0;
pub(crate) const TABLE_OR_PAGE: u64 = 1 << 1;
pub(crate) const SH_SHIFT: u32 = 8;
pub(crate) const AF: u64 = 1 << 10;
pub(crate) const DBM: u64 = 1 << 51;
pub(crate) const CONTIGUOUS: u64 = 1 << 52;
/// Software bits `[58:55]`: ignored by hardware, never written here.
pub(crate) const SOFTWARE: u64 = 0xf << 55;

/// The geometry of one configuration, levels numbered from the bottom
/// (0 = the architecture's level 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) granule: Granule,
    pub(crate) input_bits: u8,
    pub(crate) output_bits: u8,
    pub(crate) large: LargeAddresses,
    pub(crate) levels: u8,
    /// Input bits the root resolves (more than a table's with concatenation).
    pub(crate) root_bits: u8,
    /// Precomputed for the decoder: the address field, the bits that must be
    /// zero, and the levels that may hold leaves (bit n = level n).
    field: u64,
    reserved: u64,
    blocks: u8,
    /// The bits `table_pattern` checks.
    table_check: u64,
}

const PS_SIZES: [u8; 7] = [32, 36, 40, 42, 44, 48, 52];

impl Geometry {
    /// Stage 1 (`concatenate` false: the root level is the one the input
    /// size needs, possibly partly used) or stage 2 (KVM's choice: one level
    /// fewer where up to 16 concatenated tables can resolve the rest).
    pub(crate) fn new(
        granule: Granule,
        input_bits: u8,
        large: LargeAddresses,
        concatenate: bool,
    ) -> Result<Self, ConfigError> {
        let wide = match (large, granule) {
            (LargeAddresses::None, _) => false,
            (LargeAddresses::Lpa, Granule::Size64KiB) => true,
            (LargeAddresses::Lpa2 { .. }, Granule::Size4KiB | Granule::Size16KiB) => true,
            _ => return Err(ConfigError::LargeAddresses),
        };
        let max_input = if wide { 52 } else { 48 };
        if !(25..=max_input).contains(&input_bits) {
            return Err(ConfigError::InputBits(input_bits));
        }
        let g = granule.shift();
        let bits = g - 3;
        let ia = u32::from(input_bits);
        let mut levels = if concatenate {
            ((ia - 8) / bits).max(2)
        } else {
            (ia - 4) / bits
        };
        let shift_below_root = |levels: u32| g + bits * (levels - 1);
        if ia <= shift_below_root(levels) {
            // The root would resolve no bit: start one level lower.
            levels -= 1;
        }
        let root_bits = ia - shift_below_root(levels);
        if root_bits == 0 || root_bits > bits + if concatenate { 4 } else { 0 } {
            return Err(ConfigError::InputBits(input_bits));
        }
        let mut geometry = Self {
            granule,
            input_bits,
            output_bits: if wide { 52 } else { 48 },
            large,
            levels: levels as u8,
            root_bits: root_bits as u8,
            field: 0,
            reserved: 0,
            blocks: 0,
            table_check: 0,
        };
        geometry.field = geometry.compute_field();
        geometry.reserved = geometry.compute_reserved();
        geometry.blocks = (0..geometry.levels)
            .filter(|&l| geometry.compute_block_allowed(l))
            .fold(0, |m, l| m | 1 << l);
        geometry.table_check = geometry.compute_table_check();
        Ok(geometry)
    }

    pub(crate) fn with_output_bits(mut self, bits: u8) -> Result<Self, ConfigError> {
        if !PS_SIZES.contains(&bits) || (bits == 52 && self.large == LargeAddresses::None) {
            return Err(ConfigError::OutputBits(bits));
        }
        self.output_bits = bits;
        self.table_check = self.compute_table_check();
        Ok(self)
    }

    /// The PS / IPS field value for the output size.
    pub(crate) fn ps(&self) -> u64 {
        PS_SIZES
            .iter()
            .position(|&b| b == self.output_bits)
            .unwrap_or(5) as u64
    }

    pub(crate) fn shift(&self) -> u32 {
        self.granule.shift()
    }

    /// The architecture's number of a level (3 = last; -1 with LPA2).
    pub(crate) fn arm_level(level: u8) -> i8 {
        3 - level as i8
    }

    pub(crate) fn start_level(&self) -> i8 {
        Self::arm_level(self.levels - 1)
    }

    pub(crate) fn lpa2(&self) -> bool {
        matches!(self.large, LargeAddresses::Lpa2 { .. })
    }

    /// Whether a block (or page, at level 0) may sit at `level`.
    #[inline]
    pub(crate) fn block_allowed(&self, level: u8) -> bool {
        level < 8 && self.blocks & (1 << level) != 0
    }

    fn compute_block_allowed(&self, level: u8) -> bool {
        if level >= self.levels {
            return false;
        }
        match (level, self.granule) {
            (0 | 1, _) => true,
            (2, Granule::Size4KiB) => true,
            (2, Granule::Size16KiB) => self.lpa2(),
            (2, Granule::Size64KiB) => self.large == LargeAddresses::Lpa,
            (3, Granule::Size4KiB) => self.lpa2(),
            _ => false,
        }
    }

    /// log2 of the entries in a contiguous run at `level` (paging-formats.md
    /// B.8), 0 where there is none.
    pub(crate) fn contiguous_run(&self, level: u8) -> u32 {
        if !self.block_allowed(level) {
            return 0;
        }
        match (self.granule, level) {
            (Granule::Size4KiB, 0..=2) => 4,
            (Granule::Size16KiB, 0) => 7,
            (Granule::Size16KiB, 1) => 5,
            (Granule::Size64KiB, 0 | 1) => 5,
            _ => 0,
        }
    }

    /// The address field bits `[top:G]` of a descriptor.
    #[inline]
    fn field(&self) -> u64 {
        self.field
    }

    fn compute_field(&self) -> u64 {
        let top = if self.lpa2() { 50 } else { 48 };
        ((1u64 << top) - 1) & !((1u64 << self.shift()) - 1)
    }

    /// The descriptor bits holding `pa` (a granule-aligned address).
    #[inline]
    pub(crate) fn encode_oa(&self, pa: u64) -> u64 {
        let low = pa & self.field();
        match self.large {
            LargeAddresses::None => low,
            LargeAddresses::Lpa => low | ((pa >> 48) & 0xf) << 12,
            LargeAddresses::Lpa2 { .. } => low | ((pa >> 50) & 0b11) << SH_SHIFT,
        }
    }

    /// The address a descriptor holds.
    #[inline]
    pub(crate) fn decode_oa(&self, raw: u64) -> u64 {
        let low = raw & self.field();
        match self.large {
            LargeAddresses::None => low,
            LargeAddresses::Lpa => low | ((raw >> 12) & 0xf) << 48,
            LargeAddresses::Lpa2 { .. } => low | ((raw >> SH_SHIFT) & 0b11) << 50,
        }
    }

    /// Bits that must be zero in a valid descriptor besides the attributes:
    /// `[49:48]` unless LPA2 makes them address bits, and `[G-1:12]` unless
    /// LPA puts OA\[51:48\] there.
    #[inline]
    fn reserved(&self) -> u64 {
        self.reserved
    }

    fn compute_reserved(&self) -> u64 {
        let below_granule = ((1u64 << self.shift()) - 1) & !0xfff;
        match self.large {
            LargeAddresses::None => 0b11 << 48 | below_granule,
            LargeAddresses::Lpa => 0b11 << 48,
            LargeAddresses::Lpa2 { .. } => below_granule,
        }
    }

    /// The structural part of decoding, common to both stages.
    #[inline]
    pub(crate) fn kind(&self, raw: u64, level: u8) -> Kind {
        if raw & VALID == 0 || (level == 0 && raw & TABLE_OR_PAGE == 0) {
            // Level 3 `0b01` is reserved and faults like an invalid entry.
            return Kind::Invalid;
        }
        if raw & self.reserved() != 0 {
            return Kind::Malformed;
        }
        let pa = self.decode_oa(raw);
        if self.output_bits < 64 && pa >> self.output_bits != 0 {
            // An address size fault.
            return Kind::Malformed;
        }
        if level > 0 && raw & TABLE_OR_PAGE != 0 {
            return Kind::Table(pa);
        }
        if !self.block_allowed(level) {
            return Kind::Malformed;
        }
        // `level` is below `levels` here, so the shift is at most 48.
        let size = 1u64 << (self.shift() + (self.shift() - 3) * u32::from(level));
        if pa & (size - 1) != 0 {
            return Kind::Malformed;
        }
        Kind::Leaf(pa)
    }

    /// `Format::kind` for both stages: the structural decode, and a leaf
    /// only if `leaf_ok` accepts its attribute fields.
    #[inline]
    pub(crate) fn entry_kind(
        &self,
        raw: u64,
        level: u8,
        leaf_ok: impl FnOnce(u64) -> bool,
    ) -> EntryKind {
        match self.kind(raw, level) {
            Kind::Invalid => EntryKind::Invalid,
            Kind::Malformed => EntryKind::Malformed,
            Kind::Table(t) => EntryKind::Table(t),
            Kind::Leaf(pa) if leaf_ok(raw) => EntryKind::Leaf(pa),
            Kind::Leaf(_) => EntryKind::Malformed,
        }
    }

    /// `Format::decode` for both stages: the structural decode, and a leaf
    /// with the attributes `attributes` reads (`None`: malformed).
    #[inline]
    pub(crate) fn descriptor(
        &self,
        raw: u64,
        level: u8,
        attributes: impl FnOnce(u64) -> Option<Attributes>,
    ) -> Descriptor {
        match self.kind(raw, level) {
            Kind::Invalid => Descriptor::Invalid,
            Kind::Malformed => Descriptor::Malformed,
            Kind::Table(t) => Descriptor::Table(t),
            Kind::Leaf(pa) => match attributes(raw) {
                Some(attrs) => Descriptor::Leaf(pa, attrs),
                None => Descriptor::Malformed,
            },
        }
    }

    /// `Format::table_pattern` for both stages: valid, table type, no
    /// reserved bit, no address bit beyond the output size, and the
    /// extended address bits (LPA OA\[51:48\], LPA2 OA\[51:50\]) clear, so
    /// that the address is the plain field.
    #[inline]
    pub(crate) fn table_pattern(&self) -> crate::TablePattern {
        crate::TablePattern {
            check: self.table_check,
            value: VALID | TABLE_OR_PAGE,
            address: self.field(),
        }
    }

    fn compute_table_check(&self) -> u64 {
        let extended = match self.large {
            LargeAddresses::None => 0,
            LargeAddresses::Lpa => 0xf << 12,
            LargeAddresses::Lpa2 { .. } => 0b11 << SH_SHIFT,
        };
        let beyond_output = if self.output_bits < 64 {
            self.field() & !((1u64 << self.output_bits) - 1)
        } else {
            0
        };
        VALID | TABLE_OR_PAGE | self.reserved() | extended | beyond_output
    }

    /// A table descriptor pointing at `table`.
    #[inline]
    pub(crate) fn encode_table(&self, table: u64) -> u64 {
        self.encode_oa(table) | TABLE_OR_PAGE | VALID
    }

    /// The type bits of a leaf at `level`: page (`0b11`) or block (`0b01`).
    #[inline]
    pub(crate) fn leaf_type(level: u8) -> u64 {
        if level == 0 {
            TABLE_OR_PAGE | VALID
        } else {
            VALID
        }
    }

    /// The SH field for `sh`, or nothing with LPA2 (where `sh` must be what
    /// TCR/VTCR gives).
    pub(crate) fn encode_shareability(
        &self,
        sh: Shareability,
    ) -> Result<u64, crate::attrs::AttrError> {
        match self.large {
            LargeAddresses::Lpa2 { shareability } if shareability == sh => Ok(0),
            LargeAddresses::Lpa2 { .. } => Err(crate::attrs::AttrError::Shareability(sh)),
            _ => Ok(match sh {
                Shareability::NonShareable => 0b00,
                Shareability::Outer => 0b10,
                Shareability::Inner => 0b11,
            } << SH_SHIFT),
        }
    }

    /// The shareability of a leaf; `None` for the reserved `0b01`.
    #[inline]
    pub(crate) fn decode_shareability(&self, raw: u64) -> Option<Shareability> {
        match self.large {
            LargeAddresses::Lpa2 { shareability } => Some(shareability),
            _ => match (raw >> SH_SHIFT) & 0b11 {
                0b00 => Some(Shareability::NonShareable),
                0b10 => Some(Shareability::Outer),
                0b11 => Some(Shareability::Inner),
                _ => None,
            },
        }
    }

    /// `Format::leaf_address_mask` for both stages: the descriptor bits of
    /// the output addresses a leaf at `level` may hold (aligned to its size,
    /// below the output size), wherever the encoding puts them.
    #[inline]
    pub(crate) fn leaf_address_mask(&self, level: u8) -> u64 {
        let shift = self.shift() + (self.shift() - 3) * u32::from(level);
        let below_size = 1u64.checked_shl(shift).map_or(u64::MAX, |size| size - 1);
        let addresses = ((1u64 << self.output_bits) - 1) & !below_size;
        self.encode_oa(addresses)
    }

    /// The output-address bits a descriptor holds in place, at every level:
    /// `[47:G]`, or `[49:G]` with LPA2 (LPA moves `[51:48]` to `[15:12]`,
    /// LPA2 moves `[51:50]` to `[9:8]`, outside this field).
    #[inline]
    pub(crate) fn address_in_place(&self) -> u64 {
        self.field()
    }

    /// Break-before-make rule shared by both stages: `safe` are the bits that
    /// may change in place.
    pub(crate) fn needs_break(old: u64, new: u64, safe: u64) -> bool {
        old & VALID != 0 && new & VALID != 0 && (old ^ new) & !safe != 0
    }

    pub(crate) fn level_name(level: u8) -> &'static str {
        ["L3", "L2", "L1", "L0", "L-1"]
            .get(usize::from(level))
            .copied()
            .unwrap_or("?")
    }
}

/// A descriptor's structure, before its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Invalid,
    Table(u64),
    Leaf(u64),
    Malformed,
}

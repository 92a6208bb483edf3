//! Intel EPT: the stage-2 tables of VMX, indexed by guest-physical address.

use hvmem_types::GuestPhysAddr;

use super::{address_mask, high_reserved, leaf_address_mask, level_name, valid_phys_bits};
use crate::Access;
use crate::attrs::{AttrError, Attributes, MemoryType};
use crate::format::{Descriptor, EntryKind, Format};

const R: u64 = 1 << 0;
const W: u64 = 1 << 1;
const X: u64 = 1 << 2;
const RWX: u64 = R | W | X;
const MT_SHIFT: u32 = 3;
const MT: u64 = 0b111 << MT_SHIFT;
const IPAT: u64 = 1 << 6;
const LARGE: u64 = 1 << 7;
/// Set by the processor when EPTP enables accessed and dirty flags
/// (ignored otherwise).
const ACCESSED: u64 = 1 << 8;
const DIRTY: u64 = 1 << 9;

/// EPT, as configured by the EPTP walk length and IA32_VMX_EPT_VPID_CAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ept {
    five_level: bool,
    max_phys_bits: u8,
    gigabyte_pages: bool,
    execute_only: bool,
}

impl Ept {
    /// A 4-level walk, MAXPHYADDR 52, 2 MiB and 1 GiB leaves, no
    /// execute-only pages.
    #[must_use]
    pub const fn four_level() -> Self {
        Self {
            five_level: false,
            max_phys_bits: 52,
            gigabyte_pages: true,
            execute_only: false,
        }
    }

    /// A 5-level walk (57-bit guest-physical addresses).
    #[must_use]
    pub const fn five_level() -> Self {
        let mut f = Self::four_level();
        f.five_level = true;
        f
    }

    /// The same format with another MAXPHYADDR (32..=52), or `None`.
    #[must_use]
    pub const fn with_max_phys_bits(mut self, bits: u8) -> Option<Self> {
        if valid_phys_bits(bits) {
            self.max_phys_bits = bits;
            Some(self)
        } else {
            None
        }
    }

    /// The same format without 1 GiB leaves.
    #[must_use]
    pub const fn without_gigabyte_pages(mut self) -> Self {
        self.gigabyte_pages = false;
        self
    }

    /// The same format on a CPU that supports execute-only translations.
    #[must_use]
    pub const fn with_execute_only(mut self) -> Self {
        self.execute_only = true;
        self
    }

    fn input_bits(&self) -> u32 {
        if self.five_level { 57 } else { 48 }
    }

    /// The XWR combinations that cause an EPT misconfiguration.
    fn misconfigured_rights(&self, raw: u64) -> bool {
        let xwr = raw & RWX;
        xwr == W || xwr == W | X || (xwr == X && !self.execute_only)
    }
}

/// EPT memory-type encodings: 0 UC, 1 WC, 4 WT, 5 WP, 6 WB.
fn memory_type_code(mt: MemoryType) -> Option<u64> {
    match mt {
        MemoryType::Uncacheable => Some(0),
        MemoryType::WriteCombining => Some(1),
        MemoryType::WriteThrough => Some(4),
        MemoryType::WriteProtect => Some(5),
        MemoryType::WriteBack => Some(6),
        MemoryType::UncacheableMinus | MemoryType::Device | MemoryType::Inherited => None,
    }
}

fn memory_type_of(code: u64) -> Option<MemoryType> {
    match code {
        0 => Some(MemoryType::Uncacheable),
        1 => Some(MemoryType::WriteCombining),
        4 => Some(MemoryType::WriteThrough),
        5 => Some(MemoryType::WriteProtect),
        6 => Some(MemoryType::WriteBack),
        _ => None,
    }
}

impl crate::format::WithoutBreakBeforeMake for Ept {}

impl Format for Ept {
    type Input = GuestPhysAddr;

    #[inline]
    fn levels(&self) -> u8 {
        if self.five_level { 5 } else { 4 }
    }

    #[inline]
    fn granule_shift(&self) -> u32 {
        12
    }

    fn level_name(&self, level: u8) -> &'static str {
        level_name(level)
    }

    #[inline]
    fn input_to_index(&self, input: u64) -> Option<u64> {
        (input >> self.input_bits() == 0).then_some(input)
    }

    #[inline]
    fn index_to_input(&self, index: u64) -> u64 {
        index
    }

    #[inline]
    fn output_bits(&self) -> u32 {
        u32::from(self.max_phys_bits)
    }

    #[inline]
    fn leaf_allowed(&self, level: u8) -> bool {
        match level {
            0 | 1 => true,
            2 => self.gigabyte_pages,
            _ => false,
        }
    }

    #[inline]
    fn decode(&self, raw: u64, level: u8) -> Descriptor {
        match self.kind(raw, level) {
            EntryKind::Invalid => Descriptor::Invalid,
            EntryKind::Table(t) => Descriptor::Table(t),
            EntryKind::Malformed => Descriptor::Malformed,
            EntryKind::Leaf(addr) => {
                // `kind` checked the memory type; a failure here would be a
                // bug, reported as malformed rather than guessed.
                let Some(memory_type) = memory_type_of((raw & MT) >> MT_SHIFT) else {
                    return Descriptor::Malformed;
                };
                let mut access = Access::empty();
                access.set(Access::READ, raw & R != 0);
                access.set(Access::WRITE, raw & W != 0);
                access.set(Access::EXECUTE, raw & X != 0);
                Descriptor::Leaf(
                    addr,
                    Attributes {
                        access,
                        memory_type,
                        global: false,
                        protection_key: 0,
                        ignore_guest_pat: raw & IPAT != 0,
                        ..Attributes::DATA
                    },
                )
            }
        }
    }

    #[inline]
    fn kind(&self, raw: u64, level: u8) -> EntryKind {
        if raw & RWX == 0 {
            return EntryKind::Invalid;
        }
        if raw & high_reserved(self.max_phys_bits) != 0 || self.misconfigured_rights(raw) {
            return EntryKind::Malformed;
        }
        let addr = raw & address_mask(self.max_phys_bits);
        let is_leaf = level == 0 || (raw & LARGE != 0 && level <= 2);
        if !is_leaf {
            // Non-leaf entries reserve bits 3..6 (and 7 at PML4/PML5).
            let reserved = if level >= 3 { 0xf8 } else { 0x78 };
            return if raw & reserved != 0 {
                EntryKind::Malformed
            } else {
                EntryKind::Table(addr)
            };
        }
        if !self.leaf_allowed(level) || memory_type_of((raw & MT) >> MT_SHIFT).is_none() {
            return EntryKind::Malformed;
        }
        if addr & ((1u64 << self.level_shift(level)) - 1) != 0 {
            return EntryKind::Malformed;
        }
        EntryKind::Leaf(addr)
    }

    #[inline]
    fn encode_table(&self, table: u64, _level: u8) -> u64 {
        (table & address_mask(self.max_phys_bits)) | RWX
    }

    #[inline]
    fn table_pattern(&self) -> crate::TablePattern {
        // Readable (every XWR combination with R is well formed), bits 3..7
        // clear (reserved in a non-leaf entry; bit 7 clear is not a large
        // leaf), no address bit beyond MAXPHYADDR.
        crate::TablePattern {
            check: R | 0xf8 | high_reserved(self.max_phys_bits),
            value: R,
            address: address_mask(self.max_phys_bits),
        }
    }

    #[inline]
    fn last_level_leaf(&self, raw: u64) -> Option<u64> {
        // Readable (never misconfigured), no address bit beyond MAXPHYADDR,
        // a memory type EPT defines.
        (raw & (R | high_reserved(self.max_phys_bits)) == R
            && memory_type_of((raw & MT) >> MT_SHIFT).is_some())
        .then_some(raw & address_mask(self.max_phys_bits))
    }

    #[inline]
    fn encode_leaf(&self, pa: u64, attrs: &Attributes, level: u8) -> Result<u64, AttrError> {
        attrs.check_x86()?;
        let access = attrs.access;
        let mut raw = pa & address_mask(self.max_phys_bits);
        if access.contains(Access::READ) {
            raw |= R;
        }
        if access.contains(Access::WRITE) {
            raw |= W;
        }
        if access.contains(Access::EXECUTE) {
            raw |= X;
        }
        if access.contains(Access::USER) || raw & RWX == 0 || self.misconfigured_rights(raw) {
            return Err(AttrError::Access(access));
        }
        if attrs.global {
            return Err(AttrError::Global);
        }
        if attrs.protection_key != 0 {
            return Err(AttrError::ProtectionKey(attrs.protection_key));
        }
        let code =
            memory_type_code(attrs.memory_type).ok_or(AttrError::MemoryType(attrs.memory_type))?;
        raw |= code << MT_SHIFT;
        if attrs.ignore_guest_pat {
            raw |= IPAT;
        }
        if level > 0 {
            raw |= LARGE;
        }
        Ok(raw)
    }

    #[inline]
    fn hardware_bits(&self) -> u64 {
        ACCESSED | DIRTY
    }

    #[inline]
    fn leaf_address_mask(&self, level: u8) -> Option<u64> {
        Some(leaf_address_mask(
            self.max_phys_bits,
            self.level_shift(level),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_without_read_is_a_misconfiguration() {
        let f = Ept::four_level();
        assert_eq!(f.decode(W, 0), Descriptor::Malformed);
        assert_eq!(f.decode(W | X, 0), Descriptor::Malformed);
        assert_eq!(
            f.decode(X | (6 << 3), 0),
            Descriptor::Malformed,
            "execute-only unsupported"
        );
        assert!(matches!(
            f.with_execute_only().decode(X | (6 << 3), 0),
            Descriptor::Leaf(..)
        ));
        let wo = Attributes::new(Access::WRITE);
        assert_eq!(
            f.encode_leaf(0, &wo, 0),
            Err(AttrError::Access(Access::WRITE))
        );
    }

    #[test]
    fn invalid_memory_types_2_3_7_are_malformed() {
        let f = Ept::four_level();
        for code in [2u64, 3, 7] {
            assert_eq!(f.decode(R | (code << 3), 0), Descriptor::Malformed);
        }
        assert!(matches!(f.decode(R | (6 << 3), 0), Descriptor::Leaf(_, _)));
    }

    #[test]
    fn large_ept_leaf_has_no_pat_bit_so_bit_12_is_reserved() {
        let f = Ept::four_level();
        let raw = R | LARGE | (6 << 3) | (1 << 12);
        assert_eq!(f.decode(raw, 1), Descriptor::Malformed);
        assert_eq!(
            f.decode(raw & !(1 << 12), 1),
            Descriptor::Leaf(0, Attributes::READ_ONLY)
        );
    }

    #[test]
    fn non_leaf_reserved_bits_depend_on_level() {
        let f = Ept::four_level();
        assert_eq!(
            f.decode(RWX | LARGE, 3),
            Descriptor::Malformed,
            "bit 7 in a PML4E"
        );
        assert_eq!(
            f.decode(RWX | (1 << 3), 2),
            Descriptor::Malformed,
            "bit 3 in a non-leaf PDPTE"
        );
        assert_eq!(f.decode(RWX | 0x5000, 2), Descriptor::Table(0x5000));
    }

    #[test]
    fn ept_has_no_user_global_or_keys() {
        let f = Ept::four_level();
        let user = Attributes::new(Access::READ | Access::USER);
        assert!(f.encode_leaf(0, &user, 0).is_err());
        let mut global = Attributes::DATA;
        global.global = true;
        assert_eq!(f.encode_leaf(0, &global, 0), Err(AttrError::Global));
    }

    #[test]
    fn guest_physical_addresses_beyond_the_walk_are_refused() {
        assert_eq!(Ept::four_level().input_to_index(1 << 48), None);
        assert_eq!(Ept::five_level().input_to_index(1 << 48), Some(1 << 48));
    }

    #[test]
    fn every_expressible_ept_leaf_round_trips() {
        let f = Ept::four_level().with_execute_only();
        for level in 0..3 {
            for bits in 1..8u8 {
                let mut attrs = Attributes::new(Access::from_bits_truncate(bits));
                for mt in [
                    MemoryType::Uncacheable,
                    MemoryType::WriteCombining,
                    MemoryType::WriteThrough,
                    MemoryType::WriteProtect,
                    MemoryType::WriteBack,
                ] {
                    attrs.memory_type = mt;
                    attrs.ignore_guest_pat = bits & 1 != 0;
                    let Ok(raw) = f.encode_leaf(0x4000_0000, &attrs, level) else {
                        continue;
                    };
                    assert_eq!(f.decode(raw, level), Descriptor::Leaf(0x4000_0000, attrs));
                }
            }
        }
    }
}

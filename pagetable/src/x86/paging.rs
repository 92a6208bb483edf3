//! IA-32e paging: 4-level (48-bit) and 5-level (LA57, 57-bit) tables.

use hvmem_types::VirtAddr;

use super::{address_mask, high_reserved, leaf_address_mask, level_name, valid_phys_bits};
use crate::Access;
use crate::attrs::{AttrError, Attributes, MemoryType};
use crate::format::{Descriptor, EntryKind, Format};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const PAT_4K: u64 = 1 << 7;
const G: u64 = 1 << 8;
const PAT_LARGE: u64 = 1 << 12;
const PKEY_SHIFT: u32 = 59;
const PKEY: u64 = 0xf << PKEY_SHIFT;
const XD: u64 = 1 << 63;

/// The PAT layout Linux programs: index = PAT·4 + PCD·2 + PWT.
pub const LINUX_PAT: [MemoryType; 8] = [
    MemoryType::WriteBack,
    MemoryType::WriteCombining,
    MemoryType::UncacheableMinus,
    MemoryType::Uncacheable,
    MemoryType::WriteBack,
    MemoryType::WriteProtect,
    MemoryType::UncacheableMinus,
    MemoryType::WriteThrough,
];

/// IA-32e paging, as configured by CR4.LA57, EFER.NXE, CR4.PKE, the PAT MSR,
/// MAXPHYADDR and 1 GiB-page support.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct X86Paging {
    five_level: bool,
    max_phys_bits: u8,
    gigabyte_pages: bool,
    no_execute: bool,
    protection_keys: bool,
    pat: [MemoryType; 8],
    // Derived from the fields above by `derive`, so that the decoder and the
    // encoder do not recompute them on every entry.
    /// The address field, bits `[max_phys_bits - 1 : 12]`.
    addr_mask: u64,
    /// Bits that make a present entry malformed at every level.
    reserved: u64,
    /// The first PAT index holding each memory type (by discriminant), or
    /// `NO_PAT_INDEX`.
    pat_index: [u8; MEMORY_TYPES],
    /// `64 - input bits`: the shift that sign-extends from bit 47 or 56.
    canonical_shift: u32,
}

/// The first PAT slot holding the memory type with discriminant `t`, or
/// `NO_PAT_INDEX`.
const fn first_pat_slot(pat: &[MemoryType; 8], t: u8) -> u8 {
    let [a, b, c, d, e, f, g, h] = *pat;
    if a as u8 == t {
        0
    } else if b as u8 == t {
        1
    } else if c as u8 == t {
        2
    } else if d as u8 == t {
        3
    } else if e as u8 == t {
        4
    } else if f as u8 == t {
        5
    } else if g as u8 == t {
        6
    } else if h as u8 == t {
        7
    } else {
        NO_PAT_INDEX
    }
}

/// How many `MemoryType` variants there are.
const MEMORY_TYPES: usize = 8;
const NO_PAT_INDEX: u8 = u8::MAX;

impl X86Paging {
    /// 4-level paging, 48-bit virtual addresses, MAXPHYADDR 52, 1 GiB pages,
    /// NX, protection keys and Linux's PAT layout.
    #[must_use]
    pub const fn four_level() -> Self {
        Self {
            five_level: false,
            max_phys_bits: 52,
            gigabyte_pages: true,
            no_execute: true,
            protection_keys: true,
            pat: LINUX_PAT,
            addr_mask: 0,
            reserved: 0,
            pat_index: [NO_PAT_INDEX; MEMORY_TYPES],
            canonical_shift: 0,
        }
        .derive()
    }

    /// Recomputes the derived masks and the PAT lookup after a change.
    const fn derive(mut self) -> Self {
        self.addr_mask = address_mask(self.max_phys_bits);
        self.canonical_shift = 64 - self.input_bits();
        self.reserved = high_reserved(self.max_phys_bits) | if self.no_execute { 0 } else { XD };
        let pat = &self.pat;
        self.pat_index = [
            first_pat_slot(pat, 0),
            first_pat_slot(pat, 1),
            first_pat_slot(pat, 2),
            first_pat_slot(pat, 3),
            first_pat_slot(pat, 4),
            first_pat_slot(pat, 5),
            first_pat_slot(pat, 6),
            first_pat_slot(pat, 7),
        ];
        self
    }

    /// 5-level paging (LA57), 57-bit virtual addresses; otherwise as
    /// [`four_level`](Self::four_level).
    #[must_use]
    pub const fn five_level() -> Self {
        let mut f = Self::four_level();
        f.five_level = true;
        f.derive()
    }

    /// The same format with another MAXPHYADDR (32..=52), or `None`.
    #[must_use]
    pub const fn with_max_phys_bits(mut self, bits: u8) -> Option<Self> {
        if valid_phys_bits(bits) {
            self.max_phys_bits = bits;
            Some(self.derive())
        } else {
            None
        }
    }

    /// The same format without 1 GiB pages (CPUID Page1GB clear).
    #[must_use]
    pub const fn without_gigabyte_pages(mut self) -> Self {
        self.gigabyte_pages = false;
        self
    }

    /// The same format with EFER.NXE clear: no execute-disable bit, and
    /// bit 63 reserved.
    #[must_use]
    pub const fn without_no_execute(mut self) -> Self {
        self.no_execute = false;
        self.derive()
    }

    /// The same format with CR4.PKE clear: bits 62:59 of a leaf are then
    /// ignored by hardware, never read as a key, and an `Attributes` with a
    /// nonzero `protection_key` is refused.
    #[must_use]
    pub const fn without_protection_keys(mut self) -> Self {
        self.protection_keys = false;
        self.derive()
    }

    /// The same format with another PAT layout (the PAT MSR's eight
    /// entries; [`LINUX_PAT`] is the default).
    #[must_use]
    pub const fn with_pat(mut self, pat: [MemoryType; 8]) -> Self {
        self.pat = pat;
        self.derive()
    }

    const fn input_bits(&self) -> u32 {
        if self.five_level { 57 } else { 48 }
    }

    fn pat_index(&self, raw: u64, level: u8) -> usize {
        let pat = if level == 0 {
            raw & PAT_4K != 0
        } else {
            raw & PAT_LARGE != 0
        };
        usize::from(pat) * 4 + usize::from(raw & PCD != 0) * 2 + usize::from(raw & PWT != 0)
    }

    fn leaf_attributes(&self, raw: u64, level: u8) -> Attributes {
        let mut access = Access::READ;
        access.set(Access::WRITE, raw & RW != 0);
        access.set(Access::USER, raw & US != 0);
        access.set(Access::EXECUTE, !(self.no_execute && raw & XD != 0));
        Attributes {
            access,
            memory_type: self
                .pat
                .get(self.pat_index(raw, level))
                .copied()
                .unwrap_or(MemoryType::Uncacheable),
            global: raw & G != 0,
            protection_key: if self.protection_keys {
                ((raw & PKEY) >> PKEY_SHIFT) as u8
            } else {
                0
            },
            ignore_guest_pat: false,
            shareability: crate::Shareability::Inner,
            tracking: crate::attrs::Tracking::ACCESSED,
        }
    }
}

impl crate::format::WithoutBreakBeforeMake for X86Paging {}

impl Format for X86Paging {
    type Input = VirtAddr;

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
        // Canonical: bits [63:N] all equal bit N-1.
        let shift = self.canonical_shift;
        let extended = (((input << shift) as i64) >> shift) as u64;
        (extended == input).then_some((input << shift) >> shift)
    }

    #[inline]
    fn index_to_input(&self, index: u64) -> u64 {
        let shift = self.canonical_shift;
        (((index << shift) as i64) >> shift) as u64
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
            EntryKind::Leaf(pa) => Descriptor::Leaf(pa, self.leaf_attributes(raw, level)),
            EntryKind::Malformed => Descriptor::Malformed,
        }
    }

    #[inline]
    fn kind(&self, raw: u64, level: u8) -> EntryKind {
        if raw & P == 0 {
            return EntryKind::Invalid;
        }
        if raw & self.reserved != 0 {
            return EntryKind::Malformed;
        }
        // `addr_mask` never has bits 11:0; saying so lets a caller's
        // alignment check of the next table's address fold away.
        let addr = raw & self.addr_mask & !0xfff;
        if level == 0 {
            // Bit 7 is PAT in a PTE.
            return EntryKind::Leaf(addr);
        }
        if raw & PS == 0 {
            return EntryKind::Table(addr);
        }
        if !self.leaf_allowed(level) {
            // PS in a PML4E or PML5E, or a 1 GiB leaf without Page1GB.
            return EntryKind::Malformed;
        }
        // Bits [shift-1:13] are reserved in a large leaf; bit 12 is PAT.
        let low = addr & ((1u64 << self.level_shift(level)) - 1);
        if low & !PAT_LARGE != 0 {
            return EntryKind::Malformed;
        }
        EntryKind::Leaf(addr & !low)
    }

    #[inline]
    fn encode_table(&self, table: u64, _level: u8) -> u64 {
        (table & self.addr_mask) | P | RW | US
    }

    #[inline]
    fn table_pattern(&self) -> crate::TablePattern {
        // Present, not a large page (PS is reserved in PML4E and PML5E, so
        // clear is a table at every level), no reserved bit.
        crate::TablePattern {
            check: P | PS | self.reserved,
            value: P,
            // Already without bits 11:0; masking them again cost the walks
            // an instruction or two.
            address: self.addr_mask,
        }
    }

    #[inline]
    fn last_level_leaf(&self, raw: u64) -> Option<u64> {
        // Present and no reserved bit is a page in a PT (bit 7 is PAT).
        (raw & (P | self.reserved) == P).then_some(raw & self.addr_mask & !0xfff)
    }

    #[inline]
    fn encode_leaf(&self, pa: u64, attrs: &Attributes, level: u8) -> Result<u64, AttrError> {
        attrs.check_x86()?;
        let access = attrs.access;
        if !access.contains(Access::READ) {
            return Err(AttrError::Access(access));
        }
        if !access.contains(Access::EXECUTE) && !self.no_execute {
            return Err(AttrError::Access(access));
        }
        if attrs.ignore_guest_pat {
            return Err(AttrError::IgnoreGuestPat);
        }
        if attrs.protection_key > 15 || (attrs.protection_key != 0 && !self.protection_keys) {
            return Err(AttrError::ProtectionKey(attrs.protection_key));
        }
        let index = match self.pat_index.get(attrs.memory_type as usize) {
            Some(&i) if i != NO_PAT_INDEX => i,
            _ => return Err(AttrError::MemoryType(attrs.memory_type)),
        };
        let mut raw = (pa & self.addr_mask) | P;
        if access.contains(Access::WRITE) {
            raw |= RW;
        }
        if access.contains(Access::USER) {
            raw |= US;
        }
        if !access.contains(Access::EXECUTE) {
            raw |= XD;
        }
        if attrs.global {
            raw |= G;
        }
        raw |= u64::from(attrs.protection_key) << PKEY_SHIFT;
        if index & 1 != 0 {
            raw |= PWT;
        }
        if index & 2 != 0 {
            raw |= PCD;
        }
        if level == 0 {
            if index & 4 != 0 {
                raw |= PAT_4K;
            }
        } else {
            raw |= PS;
            if index & 4 != 0 {
                raw |= PAT_LARGE;
            }
        }
        Ok(raw)
    }

    #[inline]
    fn table_limits(&self, raw: u64, _level: u8) -> Access {
        let mut limit = Access::READ;
        limit.set(Access::WRITE, raw & RW != 0);
        limit.set(Access::USER, raw & US != 0);
        limit.set(Access::EXECUTE, !(self.no_execute && raw & XD != 0));
        limit
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
    fn canonical_rule_depends_on_the_paging_depth() {
        // paging-formats.md A.10.2: canonical for 57 bits, not for 48.
        let va = 0xFF11_2233_4455_6677;
        assert_eq!(X86Paging::four_level().input_to_index(va), None);
        let five = X86Paging::five_level();
        let index = five.input_to_index(va).unwrap();
        assert_eq!(five.index_to_input(index), va);
        assert_eq!(
            X86Paging::four_level().input_to_index(0xFFFF_8000_0000_0000),
            Some(1 << 47)
        );
        assert_eq!(
            X86Paging::four_level().input_to_index(0x0000_8000_0000_0000),
            None
        );
    }

    #[test]
    fn without_protection_keys_bits_62_59_are_no_key_and_keys_are_refused() {
        let f = X86Paging::four_level().without_protection_keys();
        let leaf = 0x1000 | P | RW | XD | (0xa << PKEY_SHIFT);
        match f.decode(leaf, 0) {
            Descriptor::Leaf(pa, attrs) => assert_eq!((pa, attrs.protection_key), (0x1000, 0)),
            d => panic!("{d:?}"),
        }
        let mut attrs = Attributes::DATA;
        attrs.protection_key = 1;
        assert_eq!(
            f.encode_leaf(0x1000, &attrs, 0),
            Err(AttrError::ProtectionKey(1))
        );
        assert!(
            X86Paging::four_level()
                .encode_leaf(0x1000, &attrs, 0)
                .is_ok()
        );
    }

    #[test]
    fn worked_example_a10_1_splits_into_indexes() {
        let f = X86Paging::four_level();
        let va = f.input_to_index(0x0000_7F3A_5C6D_E123).unwrap();
        let index = |level: u8| (va >> f.level_shift(level)) & 0x1ff;
        assert_eq!(
            [index(3), index(2), index(1), index(0)],
            [254, 233, 227, 222]
        );
        assert_eq!(va & 0xfff, 0x123);
        assert_eq!(va & ((1 << 21) - 1), 0xDE123);
        assert_eq!(va & ((1 << 30) - 1), 0x1C6DE123);
    }

    #[test]
    fn worked_example_a10_2_five_level_indexes() {
        let f = X86Paging::five_level();
        let va = f.input_to_index(0xFF11_2233_4455_6677).unwrap();
        let index = |level: u8| (va >> f.level_shift(level)) & 0x1ff;
        assert_eq!(
            [index(4), index(3), index(2), index(1), index(0)],
            [273, 68, 205, 34, 342]
        );
    }

    #[test]
    fn large_leaf_puts_pat_in_bit_12_and_ps_in_bit_7() {
        // paging-formats.md A.10.3: MAXPHYADDR 46, 2 MiB leaf at 0x3F_FFE0_0000.
        let f = X86Paging::four_level().with_max_phys_bits(46).unwrap();
        let attrs = Attributes::DATA.with_memory_type(MemoryType::WriteThrough);
        let raw = f.encode_leaf(0x3F_FFE0_0000, &attrs, 1).unwrap();
        assert_eq!(raw & PS, PS);
        assert_eq!(raw & PAT_LARGE, PAT_LARGE, "WT is PAT index 7");
        assert_eq!(raw & (PWT | PCD), PWT | PCD);
        assert_eq!(f.decode(raw, 1), Descriptor::Leaf(0x3F_FFE0_0000, attrs));
        // A 4 KiB leaf carries PAT in bit 7 instead.
        let raw = f.encode_leaf(0x2000, &attrs, 0).unwrap();
        assert_eq!(raw & PAT_4K, PAT_4K);
        assert_eq!(raw & PAT_LARGE, 0);
    }

    #[test]
    fn reserved_bits_make_an_entry_malformed() {
        let f = X86Paging::four_level().with_max_phys_bits(46).unwrap();
        assert_eq!(
            f.decode(P | (1 << 47), 0),
            Descriptor::Malformed,
            "above MAXPHYADDR"
        );
        assert_eq!(f.decode(P | PS, 3), Descriptor::Malformed, "PS in a PML4E");
        assert_eq!(
            f.decode(P | PS | (1 << 13), 1),
            Descriptor::Malformed,
            "bit 13 in a 2 MiB leaf"
        );
        let no_1g = X86Paging::four_level().without_gigabyte_pages();
        assert_eq!(
            no_1g.decode(P | PS, 2),
            Descriptor::Malformed,
            "1 GiB leaf without Page1GB"
        );
        let no_nx = X86Paging::four_level().without_no_execute();
        assert_eq!(
            no_nx.decode(P | XD, 0),
            Descriptor::Malformed,
            "XD with EFER.NXE clear"
        );
        assert_eq!(
            f.decode(RW | US, 0),
            Descriptor::Invalid,
            "not present: the rest is software's"
        );
    }

    #[test]
    fn attributes_the_format_cannot_express_are_refused() {
        let f = X86Paging::four_level();
        let write_only = Attributes::new(Access::WRITE);
        assert_eq!(
            f.encode_leaf(0, &write_only, 0),
            Err(AttrError::Access(Access::WRITE))
        );
        let mut keyed = Attributes::DATA;
        keyed.protection_key = 16;
        assert_eq!(
            f.encode_leaf(0, &keyed, 0),
            Err(AttrError::ProtectionKey(16))
        );
        let no_nx = X86Paging::four_level().without_no_execute();
        assert!(no_nx.encode_leaf(0, &Attributes::DATA, 0).is_err());
        let only_wb = X86Paging::four_level().with_pat([MemoryType::WriteBack; 8]);
        let uc = Attributes::DATA.with_memory_type(MemoryType::Uncacheable);
        assert_eq!(
            only_wb.encode_leaf(0, &uc, 0),
            Err(AttrError::MemoryType(MemoryType::Uncacheable))
        );
    }

    #[test]
    fn every_expressible_leaf_round_trips() {
        let f = X86Paging::four_level();
        for level in 0..3 {
            for bits in 0..16u8 {
                let mut attrs = Attributes::new(Access::from_bits_truncate(bits) | Access::READ);
                attrs.global = bits & 1 != 0;
                attrs.protection_key = bits;
                for mt in LINUX_PAT {
                    attrs.memory_type = mt;
                    let pa = 0x4000_0000;
                    let raw = f.encode_leaf(pa, &attrs, level).unwrap();
                    assert_eq!(f.decode(raw, level), Descriptor::Leaf(pa, attrs));
                }
            }
        }
    }
}

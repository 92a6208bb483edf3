//! Worked examples per granule: geometry, index split, concatenation, and
//! the encoding of each attribute (paging-formats.md part B).

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use super::*;
use crate::{Access, AttrError, Attributes, Descriptor, Format, MemoryType, Shareability};

const NONE: LargeAddresses = LargeAddresses::None;
const LPA2_INNER: LargeAddresses = LargeAddresses::Lpa2 {
    shareability: Shareability::Inner,
};

fn s1(granule: Granule, bits: u8) -> Stage1 {
    Stage1::new(Regime::El1And0, granule, bits, NONE).unwrap()
}

fn s2(granule: Granule, bits: u8) -> Stage2 {
    Stage2::new(granule, bits, NONE).unwrap()
}

#[test]
fn stage1_start_level_and_root_entries_follow_the_input_size() {
    // paging-formats.md B.2: (granule, IA) -> (start level, root entries).
    let cases = [
        (Granule::Size4KiB, 25, 2, 16),
        (Granule::Size4KiB, 30, 2, 512),
        (Granule::Size4KiB, 31, 1, 2),
        (Granule::Size4KiB, 39, 1, 512),
        (Granule::Size4KiB, 40, 0, 2),
        (Granule::Size4KiB, 48, 0, 512),
        (Granule::Size16KiB, 25, 3, 2048),
        (Granule::Size16KiB, 26, 2, 2),
        (Granule::Size16KiB, 36, 2, 2048),
        (Granule::Size16KiB, 37, 1, 2),
        (Granule::Size16KiB, 47, 1, 2048),
        (Granule::Size16KiB, 48, 0, 2),
        (Granule::Size64KiB, 25, 3, 512),
        (Granule::Size64KiB, 29, 3, 8192),
        (Granule::Size64KiB, 30, 2, 2),
        (Granule::Size64KiB, 42, 2, 8192),
        (Granule::Size64KiB, 48, 1, 64),
    ];
    for (granule, bits, start, entries) in cases {
        let f = s1(granule, bits);
        assert_eq!(
            (f.start_level(), f.root_entries(), f.root_tables()),
            (start, entries, 1),
            "{granule:?} {bits}"
        );
        assert_eq!(f.tnsz(), 64 - u64::from(bits));
    }
    // Beyond 48 bits only with LPA (64 KiB) or LPA2 (4, 16 KiB).
    assert_eq!(
        Stage1::new(Regime::El1And0, Granule::Size4KiB, 49, NONE),
        Err(ConfigError::InputBits(49))
    );
    assert_eq!(
        Stage1::new(Regime::El1And0, Granule::Size64KiB, 52, LPA2_INNER),
        Err(ConfigError::LargeAddresses)
    );
    assert_eq!(
        Stage1::new(Regime::El1And0, Granule::Size4KiB, 24, NONE),
        Err(ConfigError::InputBits(24))
    );
    let lpa2 = Stage1::new(Regime::El1And0, Granule::Size4KiB, 52, LPA2_INNER).unwrap();
    assert_eq!(
        (lpa2.start_level(), lpa2.root_entries(), lpa2.levels()),
        (-1, 16, 5)
    );
    assert_eq!(lpa2.level_name(4), "L-1");
    let lpa = Stage1::new(Regime::El1And0, Granule::Size64KiB, 52, LargeAddresses::Lpa).unwrap();
    assert_eq!((lpa.start_level(), lpa.root_entries()), (1, 1024));
}

#[test]
fn stage2_concatenates_root_tables_as_kvm_chooses() {
    // paging-formats.md B.3: (granule, IPA) -> (T0SZ, start, SL0, root entries, tables, bytes).
    let cases = [
        (Granule::Size4KiB, 32, 32, 2, 0, 2048, 4, 16 << 10),
        (Granule::Size4KiB, 36, 28, 1, 1, 64, 1, 512),
        (Granule::Size4KiB, 40, 24, 1, 1, 1024, 2, 8 << 10),
        (Granule::Size4KiB, 42, 22, 1, 1, 4096, 8, 32 << 10),
        (Granule::Size4KiB, 44, 20, 0, 2, 32, 1, 256),
        (Granule::Size4KiB, 48, 16, 0, 2, 512, 1, 4 << 10),
        (Granule::Size16KiB, 40, 24, 2, 1, 32768, 16, 256 << 10),
        (Granule::Size16KiB, 48, 16, 1, 2, 4096, 2, 32 << 10),
        (Granule::Size64KiB, 40, 24, 2, 1, 2048, 1, 16 << 10),
        (Granule::Size64KiB, 44, 20, 2, 1, 32768, 4, 256 << 10),
        (Granule::Size64KiB, 48, 16, 1, 2, 64, 1, 512),
    ];
    for (granule, ipa, t0sz, start, sl0, entries, tables, bytes) in cases {
        let f = s2(granule, ipa);
        assert_eq!(
            (
                f.t0sz(),
                f.start_level(),
                f.sl0(),
                f.root_entries(),
                f.root_tables(),
                f.root_bytes()
            ),
            (t0sz, start, sl0, entries, tables, bytes),
            "{granule:?} {ipa}"
        );
    }
    // Never more than 16 tables, never a root resolving no bit.
    for granule in [Granule::Size4KiB, Granule::Size16KiB, Granule::Size64KiB] {
        for ipa in 25..=48 {
            let f = s2(granule, ipa);
            assert!(f.root_tables() <= 16, "{granule:?} {ipa}");
            assert!(
                f.root_entries() >= 2 || f.start_level() == 3,
                "{granule:?} {ipa}"
            );
            // 4 KiB starts at L0 only above 42 bits; 16/64 KiB never at L0.
            if f.start_level() == 0 {
                assert!(
                    granule == Granule::Size4KiB && ipa > 42,
                    "{granule:?} {ipa}"
                );
            }
        }
    }
    // 52-bit IPA with LPA2 and 4 KiB: 16 tables at L0, not level -1.
    let f = Stage2::new(Granule::Size4KiB, 52, LPA2_INNER).unwrap();
    assert_eq!((f.start_level(), f.root_tables()), (0, 16));
}

const VA: u64 = 0x0000_7F3A_5C6D_E123;

fn indexes<F: Format>(f: &F, input: u64) -> std::vec::Vec<u64> {
    let index = f.input_to_index(input).unwrap();
    (0..f.levels())
        .rev()
        .map(|l| {
            let entries = if l + 1 == f.levels() {
                f.root_entries()
            } else {
                f.entries()
            } as u64;
            (index >> f.level_shift(l)) & (entries - 1)
        })
        .collect()
}

#[test]
fn worked_examples_b11_1_to_3_split_the_same_va_per_granule() {
    assert_eq!(
        indexes(&s1(Granule::Size4KiB, 48), VA),
        [254, 233, 227, 222]
    );
    assert_eq!(
        indexes(&s1(Granule::Size16KiB, 48), VA),
        [0, 2035, 1326, 439]
    );
    assert_eq!(indexes(&s1(Granule::Size64KiB, 48), VA), [31, 6610, 7277]);
    assert_eq!(VA & 0x3fff, 0x2123);
    assert_eq!(VA & 0xffff, 0xE123);
}

#[test]
fn worked_examples_b11_4_and_5_index_concatenated_roots() {
    let f = s2(Granule::Size4KiB, 40);
    let i = indexes(&f, 0xAB_CDEF_1234);
    assert_eq!(i, [687, 111, 241]);
    assert_eq!((i[0] / 512, i[0] % 512, i[0] * 8), (1, 175, 0x1578));
    let f = s2(Granule::Size4KiB, 42);
    let i = indexes(&f, 0x3CD_EF12_3456);
    assert_eq!(i, [3895, 376, 291]);
    assert_eq!((i[0] / 512, i[0] % 512, i[0] * 8), (7, 311, 0x79B8));
    assert_eq!(f.input_to_index(1 << 42), None, "beyond the IPA size");
}

#[test]
fn upper_range_takes_addresses_with_the_top_bits_set() {
    let f = s1(Granule::Size4KiB, 39)
        .with_va_range(VaRange::Upper)
        .unwrap();
    assert_eq!(f.input_to_index(0xFFFF_FF80_0000_0000), Some(0));
    assert_eq!(f.input_to_index(0x0000_0000_0000_1000), None);
    assert_eq!(f.index_to_input(0x1000), 0xFFFF_FF80_0000_1000);
    assert_eq!(f.tg(), Granule::Size4KiB.tg1());
    assert_eq!(
        Stage1::new(Regime::El2, Granule::Size4KiB, 48, NONE)
            .unwrap()
            .with_va_range(VaRange::Upper),
        Err(ConfigError::VaRange)
    );
}

#[test]
fn mair_linux_layout_value_and_indexes() {
    assert_eq!(Mair::LINUX.value(), 0x0000_bb00_ff44_0400);
    assert_eq!(Mair::LINUX.index_of(MemoryType::WriteBack), Some(3));
    assert_eq!(Mair::LINUX.index_of(MemoryType::Device), Some(1));
    assert_eq!(Mair::LINUX.memory_type(4), None);
    assert_eq!(
        Mair::new([Some(MemoryType::WriteProtect); 8]),
        Err(ConfigError::Mair)
    );
}

#[test]
fn stage1_page_descriptor_bits() {
    let f = s1(Granule::Size4KiB, 48);
    let pa = 0x0000_1234_5678_9000;
    // Kernel data: AttrIndx 3 (WB), SH inner, AF, nG, PXN, UXN, AP RW EL1-only.
    let raw = f.encode_leaf(pa, &Attributes::DATA, 0).unwrap();
    assert_eq!(
        raw,
        pa | 0b11 | 3 << 2 | 0b11 << 8 | 1 << 10 | 1 << 11 | 1 << 53 | 1 << 54
    );
    assert_eq!(f.decode(raw, 0), Descriptor::Leaf(pa, Attributes::DATA));
    // A 2 MiB block: type 0b01.
    let block = f.encode_leaf(0x4020_0000, &Attributes::DATA, 1).unwrap();
    assert_eq!(block & 0b11, 0b01);
    // AP[2:1] per access.
    let ap = |access: Access| (f.encode_leaf(pa, &Attributes::new(access), 0).unwrap() >> 6) & 0b11;
    assert_eq!(ap(Access::READ | Access::WRITE), 0b00);
    assert_eq!(ap(Access::READ | Access::WRITE | Access::USER), 0b01);
    assert_eq!(ap(Access::READ), 0b10);
    assert_eq!(ap(Access::READ | Access::USER), 0b11);
    // Kernel code: PXN clear, UXN set; user code: UXN clear, PXN set.
    let code = f.encode_leaf(pa, &Attributes::CODE, 0).unwrap();
    assert_eq!(code >> 53 & 0b11, 0b10);
    let user_code = Attributes::new(Access::READ | Access::USER | Access::USER_EXECUTE);
    assert_eq!(f.encode_leaf(pa, &user_code, 0).unwrap() >> 53 & 0b11, 0b01);
    // Global, DBM, AF clear, outer / non-shareable, device memory.
    let mut a = Attributes::DATA.with_memory_type(MemoryType::Device);
    a.global = true;
    a.tracking = crate::Tracking::DIRTY_BIT_MODIFIER;
    a.shareability = Shareability::Outer;
    let raw = f.encode_leaf(pa, &a, 0).unwrap();
    assert_eq!(raw & (1 << 11 | 1 << 10), 0);
    assert_eq!(raw & (1 << 51), 1 << 51);
    assert_eq!((raw >> 2) & 0b111, 1);
    assert_eq!((raw >> 8) & 0b11, 0b10);
    assert_eq!(f.decode(raw, 0), Descriptor::Leaf(pa, a));
    a.shareability = Shareability::NonShareable;
    assert_eq!((f.encode_leaf(pa, &a, 0).unwrap() >> 8) & 0b11, 0b00);
}

#[test]
fn stage1_refuses_what_it_cannot_express() {
    let f = s1(Granule::Size4KiB, 48);
    let wx_user = Attributes::new(Access::READ | Access::WRITE | Access::USER | Access::EXECUTE);
    assert_eq!(
        f.encode_leaf(0, &wx_user, 0),
        Err(AttrError::Access(wx_user.access))
    );
    let write_only = Attributes::new(Access::WRITE);
    assert!(f.encode_leaf(0, &write_only, 0).is_err());
    let wp = Attributes::DATA.with_memory_type(MemoryType::WriteProtect);
    assert_eq!(
        f.encode_leaf(0, &wp, 0),
        Err(AttrError::MemoryType(MemoryType::WriteProtect))
    );
    let el2 = Stage1::new(Regime::El2, Granule::Size4KiB, 48, NONE).unwrap();
    let user = Attributes::new(Access::READ | Access::USER);
    assert!(el2.encode_leaf(0, &user, 0).is_err());
    // EL2: AP[1] RES1, XN in bit 54, no nG.
    let raw = el2.encode_leaf(0x1000, &Attributes::CODE, 0).unwrap();
    assert_eq!(raw & (1 << 6 | 1 << 11 | 1 << 53 | 1 << 54), 1 << 6);
    assert_eq!(
        el2.decode(raw, 0),
        Descriptor::Leaf(0x1000, Attributes::CODE)
    );
}

#[test]
fn every_expressible_stage1_leaf_round_trips() {
    for regime in [Regime::El1And0, Regime::El2, Regime::El2And0] {
        let f = Stage1::new(regime, Granule::Size16KiB, 47, NONE).unwrap();
        for bits in 0..32u8 {
            for mt in [
                MemoryType::WriteBack,
                MemoryType::Device,
                MemoryType::WriteCombining,
            ] {
                for sh in [
                    Shareability::Inner,
                    Shareability::Outer,
                    Shareability::NonShareable,
                ] {
                    let mut a = Attributes::new(Access::from_bits_truncate(bits) | Access::READ)
                        .with_memory_type(mt);
                    a.shareability = sh;
                    a.global = bits & 1 != 0;
                    a.tracking = crate::Tracking::from_bits_truncate(bits >> 1);
                    for level in [0, 1] {
                        let pa = 0x1_0000_0000;
                        if let Ok(raw) = f.encode_leaf(pa, &a, level) {
                            assert_eq!(
                                f.decode(raw, level),
                                Descriptor::Leaf(pa, a),
                                "{regime:?} {a:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn stage2_memattr_s2ap_and_xn_bits() {
    let f = s2(Granule::Size4KiB, 40);
    let pa = 0x8000_0000;
    let rw = Attributes::new(Access::READ | Access::WRITE);
    let raw = f.encode_leaf(pa, &rw, 0).unwrap();
    // MemAttr 0b1111 (WB), S2AP RW, SH inner, AF, XN (bit 54).
    assert_eq!(
        raw,
        pa | 0b11 | 0xf << 2 | 0b11 << 6 | 0b11 << 8 | 1 << 10 | 1 << 54
    );
    assert_eq!(f.decode(raw, 0), Descriptor::Leaf(pa, rw));
    let memattr =
        |f: &Stage2, mt| (f.encode_leaf(pa, &rw.with_memory_type(mt), 0).unwrap() >> 2) & 0xf;
    assert_eq!(memattr(&f, MemoryType::Device), 0b0001);
    assert_eq!(memattr(&f, MemoryType::Uncacheable), 0b0000);
    assert_eq!(memattr(&f, MemoryType::WriteCombining), 0b0101);
    assert_eq!(memattr(&f, MemoryType::WriteThrough), 0b1010);
    let fwb = f.with_fwb();
    assert_eq!(memattr(&fwb, MemoryType::WriteBack), 0b0110);
    assert_eq!(memattr(&fwb, MemoryType::Inherited), 0b0111);
    assert!(
        f.encode_leaf(pa, &rw.with_memory_type(MemoryType::Inherited), 0)
            .is_err()
    );
    assert!(
        fwb.encode_leaf(pa, &rw.with_memory_type(MemoryType::WriteThrough), 0)
            .is_err()
    );
    // S2AP: none, read-only, write-only are all expressible.
    for (access, s2ap) in [
        (Access::empty(), 0b00),
        (Access::READ, 0b01),
        (Access::WRITE, 0b10),
    ] {
        let raw = f.encode_leaf(pa, &Attributes::new(access), 0).unwrap();
        assert_eq!((raw >> 6) & 0b11, s2ap);
    }
    // XN[1:0] with FEAT_XNX: 00 both, 01 EL0 only, 10 none, 11 EL1 only.
    let xnx = f.with_xnx();
    let xn = |access| {
        (xnx.encode_leaf(pa, &Attributes::new(Access::READ | access), 0)
            .unwrap()
            >> 53)
            & 0b11
    };
    assert_eq!(xn(Access::EXECUTE | Access::USER_EXECUTE), 0b00);
    assert_eq!(xn(Access::USER_EXECUTE), 0b01);
    assert_eq!(xn(Access::empty()), 0b10);
    assert_eq!(xn(Access::EXECUTE), 0b11);
    // Without it, EL1 and EL0 execute cannot differ.
    assert!(f.encode_leaf(pa, &Attributes::CODE, 0).is_err());
    assert!(
        f.encode_leaf(pa, &Attributes::new(Access::READ | Access::USER), 0)
            .is_err()
    );
    let mut global = rw;
    global.global = true;
    assert_eq!(f.encode_leaf(pa, &global, 0), Err(AttrError::Global));
}

#[test]
fn reserved_encodings_decode_as_malformed_or_invalid() {
    let f = s1(Granule::Size4KiB, 48);
    let raw = f.encode_leaf(0x1000, &Attributes::DATA, 0).unwrap();
    assert_eq!(
        f.decode(raw & !0b10, 0),
        Descriptor::Invalid,
        "L3 0b01 is reserved"
    );
    assert_eq!(
        f.decode((raw & !(0b11 << 8)) | 0b01 << 8, 0),
        Descriptor::Malformed,
        "SH 0b01"
    );
    assert_eq!(
        f.decode((raw & !(0b111 << 2)) | 4 << 2, 0),
        Descriptor::Malformed,
        "unused MAIR slot"
    );
    assert_eq!(
        f.decode(raw | 1 << 48, 0),
        Descriptor::Malformed,
        "RES0 bit 48"
    );
    let small = s1(Granule::Size4KiB, 48).with_output_bits(40).unwrap();
    assert_eq!(
        small.decode(raw | 1 << 40, 0),
        Descriptor::Malformed,
        "above the output size"
    );
    let block = f.encode_leaf(0x4000_0000, &Attributes::DATA, 2).unwrap();
    assert_eq!(
        f.decode(block, 3),
        Descriptor::Malformed,
        "no 512 GiB block without LPA2"
    );
    assert_eq!(
        f.decode(block | 1 << 16, 2),
        Descriptor::Malformed,
        "nT / misaligned block"
    );
    let s16 = s1(Granule::Size16KiB, 47);
    let b = s16
        .encode_leaf(0x10_0000_0000, &Attributes::DATA, 1)
        .unwrap();
    assert_eq!(
        s16.decode(b, 2),
        Descriptor::Malformed,
        "no 64 GiB block without LPA2"
    );
    for level in 3..=u8::MAX {
        let f = s2(Granule::Size64KiB, 48);
        assert_ne!(f.decode(0b01, level), Descriptor::Invalid, "level {level}");
        assert!(
            !matches!(f.decode(0b01, level), Descriptor::Leaf(..)),
            "level {level}"
        );
    }
    let s2 = s2(Granule::Size4KiB, 40);
    let raw = s2.encode_leaf(0, &Attributes::DATA, 0).unwrap();
    assert_eq!(
        s2.decode(raw | 1 << 53, 0),
        Descriptor::Malformed,
        "XN[0] without FEAT_XNX"
    );
    assert_eq!(
        s2.decode((raw & !(0xf << 2)) | 0b0100 << 2, 0),
        Descriptor::Malformed,
        "MemAttr 0b0100"
    );
}

#[test]
fn lpa2_moves_oa_51_50_into_the_shareability_field() {
    let f = Stage1::new(Regime::El1And0, Granule::Size4KiB, 52, LPA2_INNER).unwrap();
    let pa = 0x000F_1234_5678_9000;
    let raw = f.encode_leaf(pa, &Attributes::DATA, 0).unwrap();
    assert_eq!((raw >> 8) & 0b11, 0b11, "OA[51:50]");
    assert_eq!((raw >> 48) & 0b11, 0b11, "OA[49:48]");
    assert_eq!(raw & 0x0000_FFFF_FFFF_F000, pa & 0x0000_FFFF_FFFF_F000);
    assert_eq!(f.decode(raw, 0), Descriptor::Leaf(pa, Attributes::DATA));
    assert_eq!(
        f.with_output_address(f.encode_leaf(0, &Attributes::DATA, 0).unwrap(), pa, 0),
        raw
    );
    // Shareability comes from TCR: another is refused.
    let mut outer = Attributes::DATA;
    outer.shareability = Shareability::Outer;
    assert_eq!(
        f.encode_leaf(pa, &outer, 0),
        Err(AttrError::Shareability(Shareability::Outer))
    );
    // Blocks one level up: 512 GiB at L0; level -1 holds tables only.
    assert!(f.leaf_allowed(3) && !f.leaf_allowed(4));
    let t = f.encode_table(0x000C_0000_0000_1000, 4);
    assert_eq!(f.decode(t, 4), Descriptor::Table(0x000C_0000_0000_1000));
}

#[test]
fn lpa_puts_oa_51_48_in_bits_15_to_12() {
    let f = Stage2::new(Granule::Size64KiB, 52, LargeAddresses::Lpa).unwrap();
    let pa = 0x000A_0000_1234_0000;
    let raw = f.encode_leaf(pa, &Attributes::DATA, 0).unwrap();
    assert_eq!((raw >> 12) & 0xf, 0xA);
    assert_eq!(f.decode(raw, 0), Descriptor::Leaf(pa, Attributes::DATA));
    assert!(f.leaf_allowed(2), "4 TiB blocks at level 1 with LPA");
    assert!(!s2(Granule::Size64KiB, 48).leaf_allowed(2));
    assert_eq!(
        s2(Granule::Size64KiB, 48).decode(raw, 0),
        Descriptor::Malformed,
        "bits 15:12 RES0"
    );
}

#[test]
fn break_before_make_is_needed_for_address_size_type_and_hint_changes() {
    let f = s1(Granule::Size4KiB, 48);
    let data = f.encode_leaf(0x1000, &Attributes::DATA, 0).unwrap();
    let ro = f.encode_leaf(0x1000, &Attributes::READ_ONLY, 0).unwrap();
    let moved = f.encode_leaf(0x2000, &Attributes::DATA, 0).unwrap();
    let device = f
        .encode_leaf(
            0x1000,
            &Attributes::DATA.with_memory_type(MemoryType::Device),
            0,
        )
        .unwrap();
    let mut global = Attributes::DATA;
    global.global = true;
    let global = f.encode_leaf(0x1000, &global, 0).unwrap();
    assert!(!f.needs_break(data, ro, 0), "AP[2]");
    assert!(!f.needs_break(data, 0, 0), "to invalid");
    assert!(f.needs_break(data, moved, 0), "output address");
    assert!(f.needs_break(data, device, 0), "AttrIndx");
    assert!(
        f.needs_break(data, f.with_contiguous(data, true), 0),
        "contiguous bit"
    );
    assert!(!f.needs_break(global, data, 0), "nG set");
    assert!(f.needs_break(data, global, 0), "nG cleared");
    let block = f.encode_leaf(0x20_0000, &Attributes::DATA, 1).unwrap();
    assert!(
        f.needs_break(block, f.encode_table(0x5000, 1), 1),
        "block to table"
    );
    let s = s2(Granule::Size4KiB, 40);
    let rw = s.encode_leaf(0x1000, &Attributes::DATA, 0).unwrap();
    let r = s.encode_leaf(0x1000, &Attributes::READ_ONLY, 0).unwrap();
    let mut dbm = Attributes::DATA;
    dbm.tracking |= crate::Tracking::DIRTY_BIT_MODIFIER;
    assert!(!s.needs_break(rw, r, 0), "S2AP");
    assert!(
        s.needs_break(rw, s.encode_leaf(0x1000, &dbm, 0).unwrap(), 0),
        "DBM at stage 2"
    );
    assert!(
        s.needs_break(
            rw,
            s.encode_leaf(
                0x1000,
                &Attributes::DATA.with_memory_type(MemoryType::Device),
                0
            )
            .unwrap(),
            0
        )
    );
}

#[test]
fn contiguous_runs_per_granule_and_level() {
    // paging-formats.md B.8.
    let f = s1(Granule::Size4KiB, 48);
    assert_eq!(
        [
            f.contiguous_run(0),
            f.contiguous_run(1),
            f.contiguous_run(2),
            f.contiguous_run(3)
        ],
        [4, 4, 4, 0]
    );
    let f = s1(Granule::Size16KiB, 47);
    assert_eq!(
        [
            f.contiguous_run(0),
            f.contiguous_run(1),
            f.contiguous_run(2)
        ],
        [7, 5, 0]
    );
    let f = s2(Granule::Size64KiB, 48);
    assert_eq!(
        [
            f.contiguous_run(0),
            f.contiguous_run(1),
            f.contiguous_run(2)
        ],
        [5, 5, 0]
    );
}

// ---- Live edits: break-before-make and the contiguous hint ----------------

use core::sync::atomic::AtomicU64;
use std::vec::Vec;

use crate::model_tests::{FrameStack, Recorder};
use crate::{MapOptions, PageTable, SliceMem};
use hvmem_types::{GuestPhysAddr, PhysAddr, VirtAddr};

const ARENA: u64 = 0x100_0000;

fn arena(frames: usize) -> (Vec<AtomicU64>, FrameStack) {
    (
        (0..frames * 512).map(|_| AtomicU64::new(0)).collect(),
        FrameStack(
            (0..frames as u64)
                .rev()
                .map(|i| ARENA + i * 0x1000)
                .collect(),
        ),
    )
}

#[test]
fn splitting_a_live_block_breaks_before_making() {
    let (words, mut frames) = arena(8);
    let mem = SliceMem::new(PhysAddr::new(ARENA), &words);
    let mut pt = PageTable::new(s1(Granule::Size4KiB, 39), &mem, &mut frames).unwrap();
    let mut bbm = Recorder::default();
    let va = VirtAddr::new(0x4000_0000);
    let _ = pt
        .map_live(
            &mem,
            &mut frames,
            &mut bbm,
            va,
            PhysAddr::new(0x8000_0000),
            0x20_0000,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    assert!(bbm.0.is_empty(), "invalid to valid needs no break");
    // Write-protecting one page splits the 2 MiB block: block -> invalid ->
    // invalidate the block's range -> table.
    let flush = pt
        .protect_live(
            &mem,
            &mut frames,
            &mut bbm,
            VirtAddr::new(0x4000_1000),
            0x1000,
            &Attributes::READ_ONLY,
        )
        .unwrap();
    assert_eq!(
        bbm.0,
        [crate::Break {
            start: 0x4000_0000,
            end: 0x4020_0000,
            level: 1,
            table: false
        }]
    );
    // The permission change itself needs only the flush.
    assert!(flush.covers(0x4000_1000));
    let t = pt.translate(&mem, VirtAddr::new(0x4000_1000)).unwrap();
    assert_eq!(
        (t.output.get(), t.attributes),
        (0x8000_1000, Attributes::READ_ONLY)
    );
}

#[test]
fn merging_into_a_live_block_breaks_before_making() {
    let (words, mut frames) = arena(8);
    let mem = SliceMem::new(PhysAddr::new(ARENA), &words);
    let pt = PageTable::new(s2(Granule::Size4KiB, 40), &mem, &mut frames);
    assert!(pt.is_err(), "two concatenated tables need alloc_root");
    let f = s2(Granule::Size4KiB, 36);
    let mut pt = PageTable::new(f, &mem, &mut frames).unwrap();
    let mut bbm = Recorder::default();
    let ipa = GuestPhysAddr::new(0x20_0000);
    let opts = MapOptions::new().sizes(crate::LeafSizes::only_level(0));
    let _ = pt
        .map_live(
            &mem,
            &mut frames,
            &mut bbm,
            ipa,
            PhysAddr::new(0x4000_0000),
            0x20_0000,
            &Attributes::DATA,
            opts,
        )
        .unwrap();
    assert_eq!(pt.translate(&mem, ipa).unwrap().size, 0x1000);
    let _ = pt
        .merge_live(&mem, &mut frames, &mut bbm, ipa, 0x20_0000)
        .unwrap();
    assert_eq!(
        bbm.0,
        [crate::Break {
            start: 0x20_0000,
            end: 0x40_0000,
            level: 1,
            table: true
        }]
    );
    assert_eq!(pt.translate(&mem, ipa).unwrap().size, 0x20_0000);
}

#[test]
fn a_whole_run_changes_permissions_in_place_but_memory_type_with_a_break() {
    let (words, mut frames) = arena(8);
    let mem = SliceMem::new(PhysAddr::new(ARENA), &words);
    let f = s1(Granule::Size4KiB, 39);
    let mut pt = PageTable::new(f, &mem, &mut frames).unwrap();
    let mut bbm = Recorder::default();
    let va = VirtAddr::new(0x10_0000);
    // 64 KiB + 4 KiB: one hinted run of 16 pages, one plain page.
    let _ = pt
        .map_live(
            &mem,
            &mut frames,
            &mut bbm,
            va,
            PhysAddr::new(0x20_0000),
            0x1_1000,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    let hinted = |pt: &PageTable<Stage1>, at: u64| {
        f.is_contiguous(pt.raw_entry(&mem, VirtAddr::new(at), 0).unwrap())
    };
    assert!((0..16).all(|i| hinted(&pt, 0x10_0000 + i * 0x1000)));
    assert!(!hinted(&pt, 0x11_0000));
    // Read-only over the whole run: in place, the hint stays, flushed.
    let flush = pt
        .protect_live(
            &mem,
            &mut frames,
            &mut bbm,
            va,
            0x1_0000,
            &Attributes::READ_ONLY,
        )
        .unwrap();
    assert!(bbm.0.is_empty() && flush.covers(0x10_f000));
    assert!((0..16).all(|i| hinted(&pt, 0x10_0000 + i * 0x1000)));
    // Device memory over the whole run: one break for the run.
    let device = Attributes::READ_ONLY.with_memory_type(MemoryType::Device);
    let _ = pt
        .protect_live(&mem, &mut frames, &mut bbm, va, 0x1_0000, &device)
        .unwrap();
    assert_eq!(bbm.0.len(), 1);
    assert_eq!((bbm.0[0].start, bbm.0[0].end), (0x10_0000, 0x11_0000));
    // Half the run back to write-back: the run is unfolded first.
    let _ = pt
        .protect_live(
            &mem,
            &mut frames,
            &mut bbm,
            va,
            0x8000,
            &Attributes::READ_ONLY,
        )
        .unwrap();
    assert!(!(0..16).any(|i| hinted(&pt, 0x10_0000 + i * 0x1000)));
}

#[test]
fn x86_live_edits_never_break_and_return_flush_ranges() {
    let (words, mut frames) = arena(8);
    let mem = SliceMem::new(PhysAddr::new(ARENA), &words);
    let mut pt = PageTable::new(crate::X86Paging::four_level(), &mem, &mut frames).unwrap();
    let mut bbm = Recorder::default();
    let va = VirtAddr::new(0x4000_0000);
    let _ = pt
        .map_live(
            &mem,
            &mut frames,
            &mut bbm,
            va,
            PhysAddr::new(0x8000_0000),
            0x20_0000,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    let flush = pt
        .map_live(
            &mem,
            &mut frames,
            &mut bbm,
            va,
            PhysAddr::new(0xC000_0000),
            0x1000,
            &Attributes::DATA,
            MapOptions::new().replacing(),
        )
        .unwrap();
    assert!(bbm.0.is_empty());
    assert!(flush.covers(0x4000_0000) && flush.tables_changed());
}

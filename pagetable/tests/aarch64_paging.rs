//! Differential test against the `aarch64-paging` crate: the same 4 KiB
//! stage-1 and stage-2 mappings built by both, in one arena, must give the
//! same descriptors bit for bit (hvmem with the contiguous hint off, since
//! `aarch64-paging` 0.12 never sets it; with it on, everything but that bit)
//! and the same translation for every mapped page.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_paging::Mapping;
use aarch64_paging::descriptor::{
    El1Attributes, PagingAttributes, PhysicalAddress, Stage2Attributes,
};
use aarch64_paging::paging::{
    Constraints, El1And0, MemoryRegion, PageTable as ApPageTable, Stage2, Translation,
    TranslationRegime, VaRange as ApVaRange,
};
use bitflags::Flags;
use hvmem_pagetable::aarch64::{Granule, LargeAddresses, Regime, Stage1, Stage2 as HvStage2};
use hvmem_pagetable::{
    Access, Attributes, Break, BreakBeforeMake, Format, InputAddress, MapOptions, MemoryType,
    PageTable, SliceMem, TableAllocator,
};
use hvmem_types::PhysAddr;

const BASE: u64 = 0x4000_0000;
const PAGES: usize = 512;

#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);

/// One arena of 4 KiB frames for both crates' tables.
struct Arena {
    pages: Vec<Page>,
}

impl Arena {
    fn new() -> Self {
        Self {
            pages: (0..PAGES)
                .map(|_| Page(core::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `Page` is `repr(C)` and holds exactly 512 `AtomicU64`s with
        // no padding, so the vector's pages are `PAGES * 512` contiguous,
        // initialised atomics, borrowed for as long as `self`.
        unsafe { core::slice::from_raw_parts(self.pages.as_ptr().cast::<AtomicU64>(), PAGES * 512) }
    }
}

/// Hands out the arena's frames: the lower half to hvmem, the upper half to
/// aarch64-paging.
struct Frames(Vec<u64>);

impl TableAllocator for Frames {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        self.0.pop().map(PhysAddr::new)
    }
    fn free_table(&mut self, table: PhysAddr) {
        self.0.push(table.get());
    }
}

struct ArenaTranslation {
    base: NonNull<Page>,
    next: usize,
}

impl<A: PagingAttributes> Translation<A> for ArenaTranslation {
    fn allocate_table(&mut self) -> (NonNull<ApPageTable<A>>, PhysicalAddress) {
        assert!(self.next < PAGES, "arena exhausted");
        let i = self.next;
        self.next += 1;
        // SAFETY: `i < PAGES`, inside the arena's allocation.
        let page = unsafe { self.base.add(i) };
        // SAFETY: the page is initialised atomics; zero it through them.
        for w in unsafe { &page.as_ref().0 } {
            w.store(0, Ordering::Relaxed);
        }
        (page.cast(), PhysicalAddress(BASE as usize + i * 4096))
    }

    unsafe fn deallocate_table(&mut self, _table: NonNull<ApPageTable<A>>) {}

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<ApPageTable<A>> {
        let i = (pa.0 - BASE as usize) / 4096;
        assert!(i < PAGES);
        // SAFETY: `i < PAGES`, inside the arena's allocation.
        unsafe { self.base.add(i) }.cast()
    }
}

struct NoTlb;
impl BreakBeforeMake for NoTlb {
    fn invalidate(&mut self, _broken: &Break) {
        panic!("a fresh mapping never breaks");
    }
}

/// Mappings (input, output, length) covering single pages, contiguous runs,
/// 2 MiB and 1 GiB blocks and unaligned edges.
const MAPPINGS: [(u64, u64, u64); 6] = [
    (0x1000, 0x8000_1000, 0x1000),
    (0x10_0000, 0x9000_0000, 0x1_0000),
    (0x20_3000, 0xA020_3000, 0x40_0000 - 0x3000 + 0x5000),
    (0x4000_0000, 0xC000_0000, 0x4000_0000),
    (0x40_0000_0000 - 0x20_0000, 0x1_0000_0000, 0x20_1000),
    (0x12_3456_0000, 0x3_0000_0000, 0x21_0000),
];

fn compare<F, R>(
    format: F,
    mapping: impl FnOnce(ArenaTranslation) -> Mapping<ArenaTranslation, R>,
    attrs: &[(Attributes, R::Attributes)],
    hint: bool,
) where
    F: Format + Copy,
    R: TranslationRegime,
{
    let arena = Arena::new();
    let mem = SliceMem::new(PhysAddr::new(BASE), arena.words());
    let mut frames = Frames(
        (0..PAGES as u64 / 2)
            .rev()
            .map(|i| BASE + i * 4096)
            .collect(),
    );
    let translation = ArenaTranslation {
        base: NonNull::from(&arena.pages[0]),
        next: PAGES / 2,
    };
    let mut theirs = mapping(translation);
    let mut ours = PageTable::new(format, &mem, &mut frames).unwrap();
    let options = if hint {
        MapOptions::new()
    } else {
        MapOptions::new().without_contiguous_hint()
    };
    for (i, &(input, output, len)) in MAPPINGS.iter().enumerate() {
        let (a, flags) = attrs[i % attrs.len()];
        let _ = ours
            .map_live(
                &mem,
                &mut frames,
                &mut NoTlb,
                F::Input::from_raw(input),
                PhysAddr::new(output),
                len,
                &a,
                options,
            )
            .unwrap();
        theirs
            .map_range(
                &MemoryRegion::new(input as usize, (input + len) as usize),
                PhysicalAddress(output as usize),
                flags,
                Constraints::empty(),
            )
            .unwrap();
    }
    let their_root = PageTable::from_root(format, PhysAddr::new(theirs.root_address().0 as u64));
    let mask = if hint { !(1u64 << 52) } else { u64::MAX };
    let mut pages = 0;
    for &(input, output, len) in &MAPPINGS {
        for page in (0..len).step_by(0x1000) {
            let at = F::Input::from_raw(input + page);
            let a = ours.translate(&mem, at).unwrap();
            let b = their_root.translate(&mem, at).unwrap();
            assert_eq!(a, b, "{input:#x}+{page:#x}");
            assert_eq!(a.output.get(), output + page);
            let ra = ours.raw_entry(&mem, at, a.level).unwrap();
            let rb = their_root.raw_entry(&mem, at, b.level).unwrap();
            assert_eq!(
                ra & mask,
                rb & mask,
                "{input:#x}+{page:#x} level {}",
                a.level
            );
            pages += 1;
        }
    }
    assert!(pages > 262_144);
    // aarch64-paging's own view of its leaves agrees with ours.
    let mut leaves = 0;
    for &(input, _, len) in &MAPPINGS {
        let range = MemoryRegion::new(input as usize, (input + len) as usize);
        theirs
            .walk_range(&range, &mut |region, d, level| {
                let is_leaf = level == 3 || (d.is_valid() && !d.is_table_or_page());
                if d.is_valid() && is_leaf {
                    let raw = d.flags().bits() as u64 | d.output_address().0 as u64;
                    let at = F::Input::from_raw(region.start().0 as u64);
                    let ours_raw = ours.raw_entry(&mem, at, (3 - level) as u8).unwrap();
                    assert_eq!(
                        ours_raw & mask,
                        raw & mask,
                        "{:#x} level {level}",
                        region.start().0
                    );
                    leaves += 1;
                }
                Ok(())
            })
            .unwrap();
    }
    assert!(leaves > 0);
}

#[test]
fn stage1_el1_descriptors_and_translations_match_aarch64_paging() {
    let f = Stage1::new(Regime::El1And0, Granule::Size4KiB, 39, LargeAddresses::None).unwrap();
    let base = El1Attributes::VALID
        | El1Attributes::INNER_SHAREABLE
        | El1Attributes::ACCESSED
        | El1Attributes::NON_GLOBAL;
    let user_code = Attributes::new(Access::READ | Access::USER | Access::USER_EXECUTE);
    let mut global_ro = Attributes::READ_ONLY;
    global_ro.global = true;
    let attrs = [
        (
            Attributes::DATA,
            base | El1Attributes::ATTRIBUTE_INDEX_3 | El1Attributes::PXN | El1Attributes::UXN,
        ),
        (
            Attributes::CODE,
            base | El1Attributes::ATTRIBUTE_INDEX_3 | El1Attributes::READ_ONLY | El1Attributes::UXN,
        ),
        (
            user_code,
            base | El1Attributes::ATTRIBUTE_INDEX_3
                | El1Attributes::READ_ONLY
                | El1Attributes::USER
                | El1Attributes::PXN,
        ),
        (
            Attributes::DATA.with_memory_type(MemoryType::Device),
            base | El1Attributes::ATTRIBUTE_INDEX_1 | El1Attributes::PXN | El1Attributes::UXN,
        ),
        (
            global_ro,
            (base - El1Attributes::NON_GLOBAL)
                | El1Attributes::ATTRIBUTE_INDEX_3
                | El1Attributes::READ_ONLY
                | El1Attributes::PXN
                | El1Attributes::UXN,
        ),
    ];
    for hint in [false, true] {
        compare(
            f,
            |t| Mapping::with_asid_and_va_range(t, 1, 1, El1And0, ApVaRange::Lower),
            &attrs,
            hint,
        );
    }
}

#[test]
fn stage2_descriptors_and_translations_match_aarch64_paging() {
    let f = HvStage2::new(Granule::Size4KiB, 39, LargeAddresses::None).unwrap();
    assert_eq!((f.start_level(), f.root_tables()), (1, 1));
    let base = Stage2Attributes::VALID | Stage2Attributes::SH_INNER | Stage2Attributes::ACCESS_FLAG;
    let wb = Stage2Attributes::MEMATTR_NORMAL_OUTER_WB | Stage2Attributes::MEMATTR_NORMAL_INNER_WB;
    let exec = Attributes::new(Access::READ | Access::EXECUTE | Access::USER_EXECUTE);
    let attrs = [
        (
            Attributes::DATA,
            base | wb | Stage2Attributes::S2AP_ACCESS_RW | Stage2Attributes::XN,
        ),
        (
            Attributes::READ_ONLY,
            base | wb | Stage2Attributes::S2AP_ACCESS_RO | Stage2Attributes::XN,
        ),
        (exec, base | wb | Stage2Attributes::S2AP_ACCESS_RO),
        (
            Attributes::DATA.with_memory_type(MemoryType::Device),
            base | Stage2Attributes::MEMATTR_DEVICE_nGnRE
                | Stage2Attributes::S2AP_ACCESS_RW
                | Stage2Attributes::XN,
        ),
    ];
    for hint in [false, true] {
        compare(f, |t| Mapping::new(t, 1, Stage2), &attrs, hint);
    }
}

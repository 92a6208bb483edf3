//! `hvmem-pagetable`'s AArch64 stage-1 format side by side with the
//! `aarch64-paging` crate, over the same kind of arena: host memory standing
//! in for physical memory, 4 KiB-aligned tables, frames handed out in order.
//! Both use EL1&0 tables with the 4 KiB granule and 48-bit VAs (root at
//! level 0), normal write-back memory, an inactive table (no TLB work).
//! Both reach a table from its physical address with a bounds check
//! (hvmem: the crate's `DirectMap`). `a64_translate_random` also runs hvmem
//! through `SliceMem` (`hvmem-pagetable+slicemem`), the safe arena whose
//! borrowed slice is checked on every table step.
//!
//! | group | one iteration |
//! |---|---|
//! | `a64_map_4k_single` | map one 4 KiB page into existing tables, then unmap it (time per pair) |
//! | `a64_map_1g_of_4k` | map 1 GiB as 262144 4 KiB pages into an empty table, one call each |
//! | `a64_translate_random` | translate one random address in a 1 GiB region of 4 KiB pages to its output address (hvmem: `translate_addr`, through `DirectMap` and as `hvmem-pagetable+slicemem` through `SliceMem`, and `translate` with the attributes as `hvmem-pagetable+attributes`; aarch64-paging: `walk_range` over that address) |
//! | `a64_protect_1g` | make a 1 GiB region of 4 KiB pages read-only, or writable again (aarch64-paging: `modify_range`) |
//!
//! ```text
//! cargo bench -p hvmem-benches --bench pagetable_aarch64 -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "bench setup: a broken table must stop the bench loudly"
)]

use std::hint::black_box;
use std::ptr::NonNull;

use aarch64_paging::Mapping;
use aarch64_paging::descriptor::{El1Attributes, PhysicalAddress};
use aarch64_paging::paging::{
    Constraints, El1And0, MemoryRegion, PageTable as ApTable, Translation, VaRange as ApVaRange,
};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hvmem_benches::arena::{Arena, FRAMES, Frame, GIB, PHYS_BASE, REGION, Stack, translate_loops};
use hvmem_benches::rng::XorShift64;
use hvmem_pagetable::aarch64::{Granule, LargeAddresses, Regime, Stage1};
use hvmem_pagetable::{
    Attributes, Break, BreakBeforeMake, LeafSizes, MapOptions, PageTable, PhysMem,
};
use hvmem_types::{PhysAddr, VirtAddr};

/// An inactive table: nothing to invalidate (never asked, in these
/// workloads).
struct Inactive;

impl BreakBeforeMake for Inactive {
    fn invalidate(&mut self, _broken: &Break) {}
}

fn stage1() -> Stage1 {
    Stage1::new(Regime::El1And0, Granule::Size4KiB, 48, LargeAddresses::None).unwrap()
}

fn hv_table(arena: &impl PhysMem, frames: &mut Stack) -> PageTable<Stage1> {
    PageTable::new(stage1(), arena, frames).expect("root")
}

fn four_k() -> MapOptions {
    MapOptions::new().sizes(LeafSizes::only_level(0))
}

fn hv_map(
    pt: &mut PageTable<Stage1>,
    arena: &impl PhysMem,
    frames: &mut Stack,
    va: u64,
    pa: u64,
    len: u64,
) {
    let f = pt.map_live(
        arena,
        frames,
        &mut Inactive,
        VirtAddr::new(va),
        PhysAddr::new(pa),
        len,
        &Attributes::DATA,
        four_k(),
    );
    let _ = black_box(f.unwrap());
}

// ---- aarch64-paging side ------------------------------------------------

/// Frames of an arena, handed out in order; `reset` starts over.
struct ApFrames {
    base: NonNull<Frame>,
    next: usize,
}

impl ApFrames {
    fn new(arena: &mut Arena) -> Self {
        Self {
            base: NonNull::from(arena.frames.first_mut().expect("frame")),
            next: 0,
        }
    }
}

impl Translation<El1Attributes> for ApFrames {
    fn allocate_table(&mut self) -> (NonNull<ApTable<El1Attributes>>, PhysicalAddress) {
        assert!(self.next < FRAMES, "arena exhausted");
        let i = self.next;
        self.next += 1;
        // SAFETY: `i < FRAMES`: inside the arena, which outlives the mapping.
        let frame = unsafe { self.base.add(i) };
        // SAFETY: as above; the frame is initialised atomics, zeroed here as
        // `allocate_table` requires, and not otherwise borrowed.
        let table = unsafe { frame.cast::<ApTable<El1Attributes>>().as_mut() };
        *table = ApTable::EMPTY;
        (frame.cast(), PhysicalAddress(PHYS_BASE as usize + i * 4096))
    }

    unsafe fn deallocate_table(&mut self, _table: NonNull<ApTable<El1Attributes>>) {}

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<ApTable<El1Attributes>> {
        let i = (pa.0 - PHYS_BASE as usize) / 4096;
        assert!(i < FRAMES);
        // SAFETY: `i < FRAMES`: inside the arena.
        unsafe { self.base.add(i) }.cast()
    }
}

fn ap_mapping(arena: &mut Arena) -> Mapping<ApFrames, El1And0> {
    Mapping::with_asid_and_va_range(ApFrames::new(arena), 1, 0, El1And0, ApVaRange::Lower)
}

/// The same descriptor bits as hvmem's `Attributes::DATA` (minus the page
/// type bit, which aarch64-paging adds itself).
fn ap_data() -> El1Attributes {
    El1Attributes::VALID
        | El1Attributes::ATTRIBUTE_INDEX_3
        | El1Attributes::INNER_SHAREABLE
        | El1Attributes::ACCESSED
        | El1Attributes::NON_GLOBAL
        | El1Attributes::PXN
        | El1Attributes::UXN
}

fn ap_map(m: &mut Mapping<ApFrames, El1And0>, va: u64, pa: u64, len: u64, flags: El1Attributes) {
    m.map_range(
        &MemoryRegion::new(va as usize, (va + len) as usize),
        PhysicalAddress(pa as usize),
        flags,
        Constraints::NO_BLOCK_MAPPINGS,
    )
    .expect("map");
}

// ---- the workloads -------------------------------------------------------

/// hvmem's `a64_map_4k_single` loop, through the physical memory `mem`
/// gives.
fn hv_map_4k_single<'a, M: PhysMem>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    arena: &'a Arena,
    mem: impl Fn(&'a Arena) -> M,
) {
    let arena = mem(arena);
    let mut frames = Stack::new();
    let mut pt = hv_table(&arena, &mut frames);
    // One page stays mapped so that the tables outlive every unmap.
    hv_map(&mut pt, &arena, &mut frames, REGION, 0, 4096);
    let mut i = 0u64;
    g.bench_function(name, |b| {
        b.iter(|| {
            i = i % 511 + 1;
            let va = REGION + i * 4096;
            hv_map(&mut pt, &arena, &mut frames, va, i * 4096, 4096);
            let f = pt.unmap_live(&arena, &mut frames, &mut Inactive, VirtAddr::new(va), 4096);
            let _ = black_box(f.unwrap());
        });
    });
}

fn map_4k_single(c: &mut Criterion) {
    let mut g = c.benchmark_group("a64_map_4k_single");
    hv_map_4k_single(&mut g, "hvmem-pagetable", &Arena::new(), Arena::mem);
    {
        let mut arena = Arena::new();
        let mut m = ap_mapping(&mut arena);
        ap_map(&mut m, REGION, 0, 4096, ap_data());
        let mut i = 0u64;
        g.bench_function("aarch64-paging", |b| {
            b.iter(|| {
                i = i % 511 + 1;
                let va = REGION + i * 4096;
                ap_map(&mut m, va, i * 4096, 4096, ap_data());
                // Unmapping is mapping with the valid bit clear.
                ap_map(black_box(&mut m), va, 0, 4096, El1Attributes::empty());
            });
        });
    }
    g.finish();
}

fn map_1g_of_4k(c: &mut Criterion) {
    let mut g = c.benchmark_group("a64_map_1g_of_4k");
    g.sample_size(10);
    {
        let arena = Arena::new();
        let arena = arena.mem();
        g.bench_function("hvmem-pagetable", |b| {
            b.iter_batched(
                || {
                    let mut frames = Stack::new();
                    let pt = hv_table(&arena, &mut frames);
                    (pt, frames)
                },
                |(mut pt, mut frames)| hv_map(&mut pt, &arena, &mut frames, REGION, 0, GIB),
                BatchSize::PerIteration,
            );
        });
    }
    {
        let mut arena = Arena::new();
        let arena_ptr: *mut Arena = &mut arena;
        g.bench_function("aarch64-paging", |b| {
            b.iter_batched(
                // SAFETY: the arena outlives the bench; each mapping is
                // dropped before the next is made.
                || ap_mapping(unsafe { &mut *arena_ptr }),
                |mut m| {
                    ap_map(&mut m, REGION, 0, GIB, ap_data());
                    black_box(m)
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

/// hvmem's `a64_translate_random` loops, through the physical memory `mem`
/// gives (see [`translate_loops`] for `names`).
fn hv_translate_random<'a, M: PhysMem>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    addrs: &[u64],
    names: (&str, Option<&str>),
    arena: &'a Arena,
    mem: impl Fn(&'a Arena) -> M,
) {
    let arena = mem(arena);
    let mut frames = Stack::new();
    let mut pt = hv_table(&arena, &mut frames);
    hv_map(&mut pt, &arena, &mut frames, REGION, 0, GIB);
    translate_loops(g, addrs, names, &pt, &arena);
}

fn translate_random(c: &mut Criterion) {
    let mut g = c.benchmark_group("a64_translate_random");
    let mut rng = XorShift64::new(0x7ab1e);
    let addrs: Vec<u64> = (0..4096).map(|_| REGION + rng.below(GIB)).collect();
    hv_translate_random(
        &mut g,
        &addrs,
        ("hvmem-pagetable", Some("hvmem-pagetable+attributes")),
        &Arena::new(),
        Arena::mem,
    );
    hv_translate_random(
        &mut g,
        &addrs,
        ("hvmem-pagetable+slicemem", None),
        &Arena::new(),
        Arena::slice,
    );
    {
        let mut arena = Arena::new();
        let mut m = ap_mapping(&mut arena);
        ap_map(&mut m, REGION, 0, GIB, ap_data());
        let mut i = 0;
        g.bench_function("aarch64-paging", |b| {
            b.iter(|| {
                i = (i + 1) % addrs.len();
                let va = addrs[i] as usize;
                let mut out = 0usize;
                m.walk_range(&MemoryRegion::new(va, va + 1), &mut |_, d, level| {
                    if level == 3 {
                        out = d.output_address().0 | (va & 0xfff);
                    }
                    Ok(())
                })
                .unwrap();
                black_box(out)
            });
        });
    }
    g.finish();
}

fn protect_1g(c: &mut Criterion) {
    let mut g = c.benchmark_group("a64_protect_1g");
    g.sample_size(10);
    {
        let arena = Arena::new();
        let arena = arena.mem();
        let mut frames = Stack::new();
        let mut pt = hv_table(&arena, &mut frames);
        hv_map(&mut pt, &arena, &mut frames, REGION, 0, GIB);
        let mut read_only = false;
        g.bench_function("hvmem-pagetable", |b| {
            b.iter(|| {
                read_only = !read_only;
                let attrs = if read_only {
                    Attributes::READ_ONLY
                } else {
                    Attributes::DATA
                };
                let f = pt.protect_live(
                    &arena,
                    &mut frames,
                    &mut Inactive,
                    VirtAddr::new(REGION),
                    GIB,
                    &attrs,
                );
                let _ = black_box(f.unwrap());
            });
        });
    }
    {
        let mut arena = Arena::new();
        let mut m = ap_mapping(&mut arena);
        ap_map(&mut m, REGION, 0, GIB, ap_data());
        let range = MemoryRegion::new(REGION as usize, (REGION + GIB) as usize);
        let mut read_only = false;
        g.bench_function("aarch64-paging", |b| {
            b.iter(|| {
                read_only = !read_only;
                let (set, clear) = if read_only {
                    (El1Attributes::READ_ONLY, El1Attributes::empty())
                } else {
                    (El1Attributes::empty(), El1Attributes::READ_ONLY)
                };
                m.modify_range(&range, &|_, d| {
                    if d.level() == 3 {
                        d.modify_flags(set, clear)
                    } else {
                        Ok(())
                    }
                })
                .unwrap();
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = hvmem_benches::criterion();
    targets = map_4k_single, translate_random, map_1g_of_4k, protect_1g
}
criterion_main!(benches);

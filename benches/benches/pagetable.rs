//! `hvmem-pagetable` side by side with the `x86_64` crate's
//! `OffsetPageTable`, over the same kind of arena: host memory standing in
//! for physical memory, 4 KiB-aligned tables, a stack of free table frames.
//! Both reach a table at a fixed offset from its physical address: `x86_64`
//! with no check, hvmem through the crate's `DirectMap`, which also checks
//! the address against the arena. `translate_random` also runs hvmem
//! through `SliceMem` (`hvmem-pagetable+slicemem`), the safe arena whose
//! borrowed slice is checked on every table step.
//!
//! | group | one iteration |
//! |---|---|
//! | `map_4k_single` | map one 4 KiB page into existing tables, then unmap it (time per map+unmap pair) |
//! | `map_1g_of_4k` | map 1 GiB as 262144 4 KiB pages into an empty table (hvmem: one call; x86_64: one `map_to` per page) |
//! | `unmap_1g_of_4k` | unmap that 1 GiB again (hvmem: one call, freeing the tables; x86_64: one `unmap` per page) |
//! | `protect_1g_of_4k` | make 1 GiB of 4 KiB pages read-only, then writable again on the next iteration (hvmem: one `protect` call; x86_64: one `update_flags` per page) |
//! | `translate_random` | translate one random address in a 1 GiB region of 4 KiB pages to its output address (hvmem: `translate_addr`, through `DirectMap` and as `hvmem-pagetable+slicemem` through `SliceMem`, and `translate` with the attributes as `hvmem-pagetable+attributes`; x86_64: `translate_addr`) |
//! | `map_2m_single` | map one 2 MiB leaf, then unmap it |
//!
//! ```text
//! cargo bench -p hvmem-benches --bench pagetable -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "bench setup: a broken table must stop the bench loudly"
)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hvmem_benches::arena::{
    Arena as HvArena, FRAMES, GIB, PHYS_BASE, REGION, Stack, translate_loops,
};
use hvmem_benches::rng::XorShift64;
use hvmem_pagetable::{Attributes, LeafSizes, MapOptions, PageTable, PhysMem, X86Paging};
use hvmem_types::{PageSize, PhysAddr, VirtAddr};
use x86::{FrameAllocator, Mapper, OffsetPageTable, Translate};
use x86_64::structures::paging as x86;

// ---- hvmem side --------------------------------------------------------

fn hv_table(arena: &impl PhysMem, frames: &mut Stack) -> PageTable<X86Paging> {
    PageTable::new(X86Paging::four_level(), arena, frames).expect("root")
}

fn four_k() -> MapOptions {
    MapOptions::new().sizes(LeafSizes::only(PageSize::Size4K))
}

/// Setup (not timed): maps `len` bytes at `REGION` to physical 0 as 4 KiB
/// data pages.
fn hv_premap(pt: &mut PageTable<X86Paging>, arena: &impl PhysMem, frames: &mut Stack, len: u64) {
    let _ = pt
        .map(
            arena,
            frames,
            VirtAddr::new(REGION),
            PhysAddr::new(0),
            len,
            &Attributes::DATA,
            four_k(),
        )
        .unwrap();
}

// ---- x86_64 side -------------------------------------------------------

struct X86Arena {
    tables: Vec<x86::PageTable>,
}

impl X86Arena {
    fn new() -> Self {
        Self {
            tables: (0..FRAMES).map(|_| x86::PageTable::new()).collect(),
        }
    }

    /// A mapper whose "physical memory" is this arena; frame 0 is the root.
    fn mapper(&mut self) -> OffsetPageTable<'_> {
        let host = self.tables.as_mut_ptr() as u64;
        let offset = x86_64::VirtAddr::new(host.wrapping_sub(PHYS_BASE));
        let root = self.tables.first_mut().expect("root");
        root.zero();
        // SAFETY: every table frame the allocator hands out lies inside
        // `tables`, which lives as long as the mapper, and the arena's
        // physical address `PHYS_BASE + i * 4096` is at host address
        // `offset + PHYS_BASE + i * 4096` = `&tables[i]`.
        unsafe { OffsetPageTable::new(root, offset) }
    }
}

struct X86Frames(Vec<u64>);

impl X86Frames {
    fn new() -> Self {
        // Frame 0 is the root.
        Self(
            (1..FRAMES as u64)
                .rev()
                .map(|i| PHYS_BASE + i * 4096)
                .collect(),
        )
    }
}

// SAFETY: each frame is handed out once and lies in the arena.
unsafe impl FrameAllocator<x86::Size4KiB> for X86Frames {
    fn allocate_frame(&mut self) -> Option<x86::PhysFrame<x86::Size4KiB>> {
        let pa = self.0.pop()?;
        Some(x86::PhysFrame::containing_address(x86_64::PhysAddr::new(
            pa,
        )))
    }
}

fn x86_map_4k(m: &mut OffsetPageTable<'_>, f: &mut X86Frames, va: u64, pa: u64) {
    let page = x86::Page::<x86::Size4KiB>::containing_address(x86_64::VirtAddr::new(va));
    let frame = x86::PhysFrame::containing_address(x86_64::PhysAddr::new(pa));
    let flags = x86::PageTableFlags::PRESENT
        | x86::PageTableFlags::WRITABLE
        | x86::PageTableFlags::NO_EXECUTE;
    // SAFETY: the frames mapped are never accessed; only the tables are.
    unsafe { m.map_to(page, frame, flags, f) }
        .expect("map")
        .ignore();
}

fn x86_unmap_4k(m: &mut OffsetPageTable<'_>, va: u64) {
    let page = x86::Page::<x86::Size4KiB>::containing_address(x86_64::VirtAddr::new(va));
    m.unmap(page).expect("unmap").1.ignore();
}

// ---- the workloads -------------------------------------------------------

/// hvmem's `map_4k_single` loop, through the physical memory `mem` gives.
fn hv_map_4k_single<'a, M: PhysMem>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    arena: &'a HvArena,
    mem: impl Fn(&'a HvArena) -> M,
) {
    let arena = mem(arena);
    let mut frames = Stack::new();
    let mut pt = hv_table(&arena, &mut frames);
    // One page stays mapped so that the tables outlive every unmap.
    hv_premap(&mut pt, &arena, &mut frames, 4096);
    let mut i = 0u64;
    g.bench_function(name, |b| {
        b.iter(|| {
            i = i % 511 + 1;
            let va = VirtAddr::new(REGION + i * 4096);
            let f = pt.map(
                &arena,
                &mut frames,
                va,
                PhysAddr::new(i * 4096),
                4096,
                &Attributes::DATA,
                four_k(),
            );
            let _ = black_box(f.unwrap());
            let _ = black_box(pt.unmap(&arena, &mut frames, va, 4096).unwrap());
        });
    });
}

fn map_4k_single(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_4k_single");
    hv_map_4k_single(&mut g, "hvmem-pagetable", &HvArena::new(), HvArena::mem);
    {
        let mut arena = X86Arena::new();
        let mut frames = X86Frames::new();
        let mut m = arena.mapper();
        x86_map_4k(&mut m, &mut frames, REGION, 0);
        let mut i = 0u64;
        g.bench_function("x86_64", |b| {
            b.iter(|| {
                i = i % 511 + 1;
                x86_map_4k(&mut m, &mut frames, REGION + i * 4096, i * 4096);
                x86_unmap_4k(black_box(&mut m), REGION + i * 4096);
            });
        });
    }
    g.finish();
}

fn map_1g_of_4k(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_1g_of_4k");
    g.sample_size(10);
    {
        let arena = HvArena::new();
        let arena = arena.mem();
        g.bench_function("hvmem-pagetable", |b| {
            b.iter_batched(
                || {
                    let mut frames = Stack::new();
                    let pt = hv_table(&arena, &mut frames);
                    (pt, frames)
                },
                |(mut pt, mut frames)| {
                    let f = pt.map(
                        &arena,
                        &mut frames,
                        VirtAddr::new(REGION),
                        PhysAddr::new(0),
                        GIB,
                        &Attributes::DATA,
                        four_k(),
                    );
                    let _ = black_box(f.unwrap());
                },
                BatchSize::PerIteration,
            );
        });
    }
    {
        let mut arena = X86Arena::new();
        g.bench_function("x86_64", |b| {
            b.iter_batched(
                X86Frames::new,
                |mut frames| {
                    let mut m = arena.mapper();
                    for p in 0..GIB / 4096 {
                        x86_map_4k(&mut m, &mut frames, REGION + p * 4096, p * 4096);
                    }
                    let _ = black_box(m.level_4_table());
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

fn unmap_1g_of_4k(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmap_1g_of_4k");
    g.sample_size(10);
    {
        let arena = HvArena::new();
        let arena = arena.mem();
        g.bench_function("hvmem-pagetable", |b| {
            b.iter_batched(
                || {
                    let mut frames = Stack::new();
                    let mut pt = hv_table(&arena, &mut frames);
                    hv_premap(&mut pt, &arena, &mut frames, GIB);
                    (pt, frames)
                },
                |(mut pt, mut frames)| {
                    let _ = black_box(
                        pt.unmap(&arena, &mut frames, VirtAddr::new(REGION), GIB)
                            .unwrap(),
                    );
                },
                BatchSize::PerIteration,
            );
        });
    }
    {
        let mut arena = X86Arena::new();
        let arena_ptr: *mut X86Arena = &mut arena;
        g.bench_function("x86_64", |b| {
            b.iter_batched(
                || {
                    // SAFETY: the arena outlives the bench and setup and
                    // routine never run at the same time.
                    let arena = unsafe { &mut *arena_ptr };
                    let mut frames = X86Frames::new();
                    let mut m = arena.mapper();
                    for p in 0..GIB / 4096 {
                        x86_map_4k(&mut m, &mut frames, REGION + p * 4096, p * 4096);
                    }
                },
                |()| {
                    // SAFETY: as above.
                    let arena = unsafe { &mut *arena_ptr };
                    let host = arena.tables.as_mut_ptr() as u64;
                    let offset = x86_64::VirtAddr::new(host.wrapping_sub(PHYS_BASE));
                    let root = arena.tables.first_mut().expect("root");
                    // SAFETY: as in `X86Arena::mapper`, without clearing the root.
                    let mut m = unsafe { OffsetPageTable::new(root, offset) };
                    for p in 0..GIB / 4096 {
                        x86_unmap_4k(&mut m, REGION + p * 4096);
                    }
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

fn protect_1g_of_4k(c: &mut Criterion) {
    let mut g = c.benchmark_group("protect_1g_of_4k");
    g.sample_size(10);
    {
        let arena = HvArena::new();
        let arena = arena.mem();
        let mut frames = Stack::new();
        let mut pt = hv_table(&arena, &mut frames);
        hv_premap(&mut pt, &arena, &mut frames, GIB);
        let mut writable = true;
        g.bench_function("hvmem-pagetable", |b| {
            b.iter(|| {
                writable = !writable;
                let attrs = if writable {
                    Attributes::DATA
                } else {
                    Attributes::READ_ONLY
                };
                black_box(
                    pt.protect(&arena, &mut frames, VirtAddr::new(REGION), GIB, &attrs)
                        .unwrap(),
                )
            });
        });
    }
    {
        let mut arena = X86Arena::new();
        let mut frames = X86Frames::new();
        let mut m = arena.mapper();
        for p in 0..GIB / 4096 {
            x86_map_4k(&mut m, &mut frames, REGION + p * 4096, p * 4096);
        }
        let mut writable = true;
        g.bench_function("x86_64", |b| {
            b.iter(|| {
                writable = !writable;
                let mut flags = x86::PageTableFlags::PRESENT | x86::PageTableFlags::NO_EXECUTE;
                if writable {
                    flags |= x86::PageTableFlags::WRITABLE;
                }
                for p in 0..GIB / 4096 {
                    let page = x86::Page::<x86::Size4KiB>::containing_address(
                        x86_64::VirtAddr::new(REGION + p * 4096),
                    );
                    // SAFETY: the pages are never accessed; only the tables are.
                    unsafe { m.update_flags(page, flags) }
                        .expect("update_flags")
                        .ignore();
                }
                black_box(&mut m);
            });
        });
    }
    g.finish();
}

/// hvmem's `translate_random` loops, through the physical memory `mem`
/// gives (see [`translate_loops`] for `names`).
fn hv_translate_random<'a, M: PhysMem>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    addrs: &[u64],
    names: (&str, Option<&str>),
    arena: &'a HvArena,
    mem: impl Fn(&'a HvArena) -> M,
) {
    let arena = mem(arena);
    let mut frames = Stack::new();
    let mut pt = hv_table(&arena, &mut frames);
    hv_premap(&mut pt, &arena, &mut frames, GIB);
    translate_loops(g, addrs, names, &pt, &arena);
}

fn translate_random(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate_random");
    let mut rng = XorShift64::new(0x7ab1e);
    let addrs: Vec<u64> = (0..4096).map(|_| REGION + rng.below(GIB)).collect();
    hv_translate_random(
        &mut g,
        &addrs,
        ("hvmem-pagetable", Some("hvmem-pagetable+attributes")),
        &HvArena::new(),
        HvArena::mem,
    );
    hv_translate_random(
        &mut g,
        &addrs,
        ("hvmem-pagetable+slicemem", None),
        &HvArena::new(),
        HvArena::slice,
    );
    {
        let mut arena = X86Arena::new();
        let mut frames = X86Frames::new();
        let mut m = arena.mapper();
        for p in 0..GIB / 4096 {
            x86_map_4k(&mut m, &mut frames, REGION + p * 4096, p * 4096);
        }
        let mut i = 0;
        g.bench_function("x86_64", |b| {
            b.iter(|| {
                i = (i + 1) % addrs.len();
                black_box(m.translate_addr(x86_64::VirtAddr::new(addrs[i])).unwrap())
            });
        });
    }
    g.finish();
}

fn map_2m_single(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_2m_single");
    let opts = MapOptions::new().sizes(LeafSizes::only(PageSize::Size2M));
    {
        let arena = HvArena::new();
        let arena = arena.mem();
        let mut frames = Stack::new();
        let mut pt = hv_table(&arena, &mut frames);
        let _ = pt
            .map(
                &arena,
                &mut frames,
                VirtAddr::new(REGION),
                PhysAddr::new(0),
                1 << 21,
                &Attributes::DATA,
                opts,
            )
            .unwrap();
        let mut i = 0u64;
        g.bench_function("hvmem-pagetable", |b| {
            b.iter(|| {
                i = i % 511 + 1;
                let va = VirtAddr::new(REGION + (i << 21));
                let _ = black_box(
                    pt.map(
                        &arena,
                        &mut frames,
                        va,
                        PhysAddr::new(i << 21),
                        1 << 21,
                        &Attributes::DATA,
                        opts,
                    )
                    .unwrap(),
                );
                let _ = black_box(pt.unmap(&arena, &mut frames, va, 1 << 21).unwrap());
            });
        });
    }
    {
        let mut arena = X86Arena::new();
        let mut frames = X86Frames::new();
        let mut m = arena.mapper();
        let flags = x86::PageTableFlags::PRESENT
            | x86::PageTableFlags::WRITABLE
            | x86::PageTableFlags::NO_EXECUTE;
        let map2m = |m: &mut OffsetPageTable<'_>, f: &mut X86Frames, i: u64| {
            let page = x86::Page::<x86::Size2MiB>::containing_address(x86_64::VirtAddr::new(
                REGION + (i << 21),
            ));
            let frame =
                x86::PhysFrame::<x86::Size2MiB>::containing_address(x86_64::PhysAddr::new(i << 21));
            // SAFETY: the frames mapped are never accessed.
            unsafe { m.map_to(page, frame, flags, f) }
                .expect("map")
                .ignore();
        };
        map2m(&mut m, &mut frames, 0);
        let mut i = 0u64;
        g.bench_function("x86_64", |b| {
            b.iter(|| {
                i = i % 511 + 1;
                map2m(&mut m, &mut frames, i);
                let page = x86::Page::<x86::Size2MiB>::containing_address(x86_64::VirtAddr::new(
                    REGION + (i << 21),
                ));
                m.unmap(page).expect("unmap").1.ignore();
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = hvmem_benches::criterion();
    targets = map_4k_single, map_2m_single, translate_random, map_1g_of_4k, unmap_1g_of_4k, protect_1g_of_4k
}
criterion_main!(benches);

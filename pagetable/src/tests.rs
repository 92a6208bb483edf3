//! Unit tests named after the rules they guard, and the model-based
//! property test of the editor.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use core::ops::ControlFlow;
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::BTreeSet;
use std::vec;
use std::vec::Vec;

use hvmem_types::{GuestPhysAddr, PageSize, PhysAddr, VirtAddr};
use proptest::prelude::*;

use crate::{
    Access, AttrError, Attributes, Ept, LeafSizes, MapError, MapOptions, MemoryType, PageTable,
    PhysMem, RangeError, SliceMem, TableAllocator, TableError, TranslateError, UnmapError, Visit,
    X86Paging,
};

const ARENA_BASE: u64 = 0x100_0000;
const KIB4: u64 = 0x1000;
const MIB2: u64 = 0x20_0000;
const GIB1: u64 = 0x4000_0000;

/// Table frames from an arena, with a cap and a record of what is out.
struct Frames {
    free: Vec<u64>,
    live: BTreeSet<u64>,
    cap: usize,
    /// Frames drawn during the current update and not returned unused, and
    /// the most at any time: what a `FrameCache` would have had to hold.
    drawn: usize,
    peak: usize,
}

impl Frames {
    fn new(frames: usize) -> Self {
        Self {
            free: (0..frames as u64)
                .rev()
                .map(|i| ARENA_BASE + i * KIB4)
                .collect(),
            live: BTreeSet::new(),
            cap: usize::MAX,
            drawn: 0,
            peak: 0,
        }
    }
}

impl TableAllocator for Frames {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        if self.live.len() >= self.cap {
            return None;
        }
        let f = self.free.pop()?;
        // Dirty the frame: the editor must clear what it takes.
        assert!(self.live.insert(f));
        self.drawn += 1;
        self.peak = self.peak.max(self.drawn);
        Some(PhysAddr::new(f))
    }

    fn return_unused(&mut self, frame: PhysAddr) {
        self.drawn -= 1;
        self.free_table(frame);
    }

    fn free_table(&mut self, table: PhysAddr) {
        assert!(
            self.live.remove(&table.get()),
            "double free of table {table}"
        );
        self.free.push(table.get());
    }
}

struct Machine {
    words: Vec<AtomicU64>,
    frames: Frames,
}

impl Machine {
    fn new(frames: usize) -> Self {
        Self {
            // Garbage everywhere: tables must be cleared before use.
            words: (0..frames * 512)
                .map(|i| AtomicU64::new(0xdead_beef_0000_0001 ^ i as u64))
                .collect(),
            frames: Frames::new(frames),
        }
    }

    /// The words of every table frame in use: what a failed update must
    /// leave alone. (Frames it reserved and gave back may be cleared.)
    fn snapshot(&self) -> Vec<(u64, u64)> {
        self.frames
            .live
            .iter()
            .flat_map(|&f| {
                let first = ((f - ARENA_BASE) / 8) as usize;
                (first..first + 512).map(move |i| (f, i as u64))
            })
            .map(|(f, i)| (f, self.words[i as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

fn va(raw: u64) -> VirtAddr {
    VirtAddr::new(raw)
}

fn pa(raw: u64) -> PhysAddr {
    PhysAddr::new(raw)
}

fn x86(m: &mut Machine) -> PageTable<X86Paging> {
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    PageTable::new(X86Paging::four_level(), &mem, &mut m.frames).unwrap()
}

fn leaf_sizes(pt: &PageTable<X86Paging>, mem: &impl PhysMem, start: u64, len: u64) -> Vec<u64> {
    let mut sizes = Vec::new();
    pt.visit(mem, va(start), len, |v| {
        if let Visit::Leaf { size, .. } = v {
            sizes.push(size);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    sizes
}

/// Counts the tables reachable from the root, the root included.
fn live_tables<F: crate::Format>(pt: &PageTable<F>, mem: &impl PhysMem, span: u64) -> usize {
    let mut n = 1;
    pt.visit(mem, F::Input::from_raw(0), span, |v| {
        if matches!(v, Visit::Table { .. }) {
            n += 1;
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    n
}

use crate::InputAddress;

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn map_uses_the_largest_leaves_that_fit() {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    // From 1 GiB - 4 KiB to 2 GiB + 2 MiB + 4 KiB: 4K, 1G, 2M, 4K.
    let start = GIB1 - KIB4;
    let len = KIB4 + GIB1 + MIB2 + KIB4;
    let f = pt
        .map(
            &mem,
            &mut m.frames,
            va(start),
            pa(start),
            len,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    assert!(f.is_empty());
    assert_eq!(leaf_sizes(&pt, &mem, start, len), [KIB4, GIB1, MIB2, KIB4]);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn forced_size_maps_only_that_size() {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let opts = MapOptions::new().sizes(LeafSizes::only(PageSize::Size2M));
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(GIB1),
            pa(GIB1),
            GIB1,
            &Attributes::DATA,
            opts,
        )
        .unwrap();
    let sizes = leaf_sizes(&pt, &mem, GIB1, GIB1);
    assert_eq!(sizes.len(), 512);
    assert!(sizes.iter().all(|&s| s == MIB2));
    // A forced size refuses addresses not aligned to it.
    assert_eq!(
        pt.map(
            &mem,
            &mut m.frames,
            va(KIB4),
            pa(0),
            MIB2,
            &Attributes::DATA,
            opts
        ),
        Err(MapError::Range(RangeError::Misaligned))
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn overmap_is_refused_without_partial_success() {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0x40_3000),
            pa(0x9000),
            KIB4,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    let before = m.snapshot();
    let live = m.frames.live.len();
    let err = pt.map(
        &mem,
        &mut m.frames,
        va(0x40_0000),
        pa(0),
        0x10_0000,
        &Attributes::DATA,
        MapOptions::new(),
    );
    assert_eq!(err, Err(MapError::AlreadyMapped { at: 0x40_3000 }));
    assert!(m.snapshot() == before);
    assert_eq!(m.frames.live.len(), live);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn replacing_a_mapping_reports_the_old_translation_for_flushing() {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0x40_0000),
            pa(0),
            MIB2,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    let flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0x40_1000),
            pa(0x7000),
            KIB4,
            &Attributes::READ_ONLY,
            MapOptions::new().replacing(),
        )
        .unwrap();
    assert!(
        flush.covers(0x40_0000) && flush.covers(0x5f_f000),
        "the split 2 MiB leaf"
    );
    assert!(flush.tables_changed());
    let t = pt.translate(&mem, va(0x40_1abc)).unwrap();
    assert_eq!((t.output, t.attributes.access), (pa(0x7abc), Access::READ));
    assert_eq!(
        pt.translate(&mem, va(0x40_2000)).unwrap().output,
        pa(0x2000)
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn out_of_memory_leaves_the_tables_exactly_as_before() {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0),
            pa(0),
            KIB4,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    let before = m.snapshot();
    let live = m.frames.live.clone();
    // 8 MiB of 4 KiB pages in a fresh 1 GiB region needs 1 PD + 4 PTs.
    m.frames.cap = live.len() + 4;
    let opts = MapOptions::new().sizes(LeafSizes::only(PageSize::Size4K));
    let err = pt.map(
        &mem,
        &mut m.frames,
        va(GIB1),
        pa(0),
        0x80_0000,
        &Attributes::DATA,
        opts,
    );
    assert_eq!(err, Err(MapError::OutOfMemory));
    assert!(m.snapshot() == before);
    assert_eq!(m.frames.live, live);
    m.frames.cap = live.len() + 5;
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(GIB1),
            pa(0),
            0x80_0000,
            &Attributes::DATA,
            opts,
        )
        .unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn unmap_splits_a_partly_covered_large_leaf() {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0),
            pa(GIB1),
            GIB1,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    let flush = pt
        .unmap(&mem, &mut m.frames, va(MIB2 + KIB4), KIB4)
        .unwrap();
    assert!(flush.covers(0) && flush.covers(GIB1 - 1));
    assert_eq!(
        pt.translate(&mem, va(MIB2 + KIB4)),
        Err(TranslateError::NotMapped { level: 0 })
    );
    assert_eq!(
        pt.translate(&mem, va(MIB2)).unwrap().output,
        pa(GIB1 + MIB2)
    );
    assert_eq!(pt.translate(&mem, va(MIB2 * 3)).unwrap().size, MIB2);
    // With no frame to split into, the unmap is refused and nothing changes.
    let before = m.snapshot();
    m.frames.cap = m.frames.live.len();
    assert_eq!(
        pt.unmap(&mem, &mut m.frames, va(MIB2 * 5), KIB4),
        Err(UnmapError::OutOfMemory)
    );
    assert!(m.snapshot() == before);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn unmap_frees_every_table_it_empties() {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let opts = MapOptions::new().sizes(LeafSizes::only(PageSize::Size4K));
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0x7f00_0000_0000),
            pa(0),
            0x40_0000,
            &Attributes::DATA,
            opts,
        )
        .unwrap();
    assert_eq!(m.frames.live.len(), 1 + 1 + 1 + 2);
    let flush = pt
        .unmap(&mem, &mut m.frames, va(0x7f00_0000_0000), 0x40_0000)
        .unwrap();
    assert!(flush.tables_changed());
    assert_eq!(m.frames.live.len(), 1, "only the root is left");
}

#[test]
fn unmapping_the_last_page_of_a_table_frees_the_tables_above_it() {
    let mut m = Machine::new(16);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let opts = MapOptions::new();
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0x7f00_0020_0000),
            pa(0),
            KIB4,
            &Attributes::DATA,
            opts,
        )
        .unwrap();
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0x7f00_0040_0000),
            pa(0),
            KIB4,
            &Attributes::DATA,
            opts,
        )
        .unwrap();
    assert_eq!(m.frames.live.len(), 5, "root, PDPT, PD and two PTs");
    let flush = pt
        .unmap(&mem, &mut m.frames, va(0x7f00_0020_0000), KIB4)
        .unwrap();
    assert!(flush.tables_changed() && flush.covers(0x7f00_0020_0000));
    assert_eq!(m.frames.live.len(), 4, "the emptied PT only");
    let _flush = pt
        .unmap(&mem, &mut m.frames, va(0x7f00_0040_0000), KIB4)
        .unwrap();
    assert_eq!(m.frames.live.len(), 1, "everything up to the root");
    assert_eq!(live_tables(&pt, &mem, 1 << 47), 1);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn protect_changes_attributes_and_splits_at_the_edges() {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0),
            pa(0),
            2 * MIB2,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    let ro = Attributes::READ_ONLY.with_memory_type(MemoryType::Uncacheable);
    let flush = pt
        .protect(&mem, &mut m.frames, va(MIB2 - KIB4), 2 * KIB4, &ro)
        .unwrap();
    assert!(flush.covers(0) && flush.covers(MIB2));
    assert_eq!(
        pt.translate(&mem, va(MIB2 - KIB4))
            .unwrap()
            .attributes
            .memory_type,
        MemoryType::Uncacheable
    );
    assert_eq!(
        pt.translate(&mem, va(MIB2)).unwrap().attributes.access,
        Access::READ
    );
    assert_eq!(
        pt.translate(&mem, va(MIB2 + KIB4)).unwrap().attributes,
        Attributes::DATA
    );
    assert_eq!(
        pt.translate(&mem, va(MIB2 + KIB4)).unwrap().output,
        pa(MIB2 + KIB4)
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn merge_folds_a_uniform_table_back_into_a_large_leaf() {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let opts = MapOptions::new().sizes(LeafSizes::only(PageSize::Size4K));
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(MIB2),
            pa(4 * MIB2),
            MIB2,
            &Attributes::DATA,
            opts,
        )
        .unwrap();
    let tables = m.frames.live.len();
    let flush = pt.merge(&mem, &mut m.frames, va(0), GIB1).unwrap();
    assert!(flush.covers(MIB2));
    assert_eq!(m.frames.live.len(), tables - 1);
    let t = pt.translate(&mem, va(MIB2 + 0x1234)).unwrap();
    assert_eq!((t.output, t.size), (pa(4 * MIB2 + 0x1234), MIB2));
    // A table whose leaves differ in one attribute stays.
    let _flush = pt
        .protect(&mem, &mut m.frames, va(MIB2), KIB4, &Attributes::READ_ONLY)
        .unwrap();
    let flush = pt.merge(&mem, &mut m.frames, va(0), GIB1).unwrap();
    assert!(flush.is_empty());
    assert_eq!(pt.translate(&mem, va(MIB2 + KIB4)).unwrap().size, KIB4);
}

#[test]
fn bad_ranges_are_refused_before_any_table_is_touched() {
    let mut m = Machine::new(16);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let d = Attributes::DATA;
    let o = MapOptions::new();
    let mut try_map =
        |v: u64, p: u64, len: u64| pt.map(&mem, &mut m.frames, va(v), pa(p), len, &d, o);
    assert_eq!(
        try_map(0x1001, 0, KIB4),
        Err(MapError::Range(RangeError::Misaligned))
    );
    assert_eq!(
        try_map(0, 0x10, KIB4),
        Err(MapError::Range(RangeError::Misaligned))
    );
    assert_eq!(
        try_map(0, 0, 0x800),
        Err(MapError::Range(RangeError::Misaligned))
    );
    assert_eq!(
        try_map(0x8000_0000_0000, 0, KIB4),
        Err(MapError::Range(RangeError::OutOfRange)),
        "non-canonical"
    );
    assert_eq!(
        try_map(0x7fff_ffff_f000, 0, 2 * KIB4),
        Err(MapError::Range(RangeError::OutOfRange)),
        "crosses the hole"
    );
    assert_eq!(
        try_map(0xffff_ffff_ffff_f000, 0, 2 * KIB4),
        Err(MapError::Range(RangeError::OutOfRange)),
        "wraps"
    );
    assert_eq!(
        try_map(0, 1 << 52, KIB4),
        Err(MapError::Range(RangeError::OutputOutOfRange))
    );
    let mut pt46 = PageTable::from_root(
        X86Paging::four_level().with_max_phys_bits(46).unwrap(),
        pt.root(),
    );
    assert_eq!(
        pt46.map(&mem, &mut m.frames, va(0), pa(1 << 46), KIB4, &d, o),
        Err(MapError::Range(RangeError::OutputOutOfRange))
    );
    let wo = Attributes::new(Access::WRITE);
    assert_eq!(
        pt.map(&mem, &mut m.frames, va(0), pa(0), KIB4, &wo, o),
        Err(MapError::Attributes(AttrError::Access(Access::WRITE)))
    );
    assert_eq!(m.frames.live.len(), 1);
}

#[test]
fn map_last_address_of_the_upper_half() {
    let mut m = Machine::new(16);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let top = 0xffff_ffff_ffff_f000;
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(top),
            pa(0x5000),
            KIB4,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    assert_eq!(pt.translate(&mem, va(u64::MAX)).unwrap().output, pa(0x5fff));
    let flush = pt.unmap(&mem, &mut m.frames, va(top), KIB4).unwrap();
    assert!(flush.covers(top));
}

#[test]
fn translate_combines_rights_over_the_walk() {
    let mut m = Machine::new(16);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let user = Attributes::new(Access::READ | Access::WRITE | Access::USER | Access::EXECUTE);
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0),
            pa(0),
            KIB4,
            &user,
            MapOptions::new(),
        )
        .unwrap();
    // A guest clears R/W and sets XD in the PML4E: the page is read-only and
    // not executable, whatever the leaf says.
    let pml4e = mem.table(pt.root(), 512).unwrap().first().unwrap();
    pml4e.fetch_and(!0b10, Ordering::Relaxed);
    pml4e.fetch_or(1 << 63, Ordering::Relaxed);
    assert_eq!(
        pt.translate(&mem, va(0)).unwrap().attributes.access,
        Access::READ | Access::USER
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn walking_cyclic_or_garbage_tables_terminates() {
    let mut m = Machine::new(16);
    let pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let root = mem.table(pt.root(), 512).unwrap();
    // Every entry points back to the root; one points outside memory.
    for e in root {
        e.store(pt.root().get() | 0x7, Ordering::Relaxed);
    }
    root[1].store(0x7fff_0000_0007, Ordering::Relaxed);
    // A self-referencing table is a legal recursive mapping: the walk ends at
    // the last level, on the root frame itself.
    assert_eq!(
        pt.translate(&mem, va(0x234)).unwrap().output,
        pa(pt.root().get() + 0x234)
    );
    assert!(matches!(
        pt.translate(&mem, va(0x80_0000_0000)),
        Err(TranslateError::Table(TableError::NotAccessible { .. }))
    ));
    let mut visits = 0;
    pt.visit(&mem, va(0), u64::MAX >> 17, |_| {
        visits += 1;
        if visits < 10_000 {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    })
    .unwrap();
    assert_eq!(visits, 10_000);
}

#[test]
fn five_level_tables_map_above_the_48_bit_space() {
    let mut m = Machine::new(16);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let mut pt = PageTable::new(X86Paging::five_level(), &mem, &mut m.frames).unwrap();
    let high = 0xff11_2233_4455_6000;
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(high),
            pa(0x9000),
            KIB4,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .unwrap();
    assert_eq!(
        pt.translate(&mem, va(high + 0x677)).unwrap().output,
        pa(0x9677)
    );
    assert_eq!(m.frames.live.len(), 5);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn ept_maps_guest_physical_memory_with_stage_2_rights() {
    let mut m = Machine::new(16);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let mut ept = PageTable::new(Ept::four_level(), &mem, &mut m.frames).unwrap();
    let rwx = Attributes::new(Access::READ | Access::WRITE | Access::EXECUTE);
    let _flush = ept
        .map(
            &mem,
            &mut m.frames,
            GuestPhysAddr::new(0),
            pa(GIB1),
            GIB1,
            &rwx,
            MapOptions::new(),
        )
        .unwrap();
    let t = ept
        .translate(&mem, GuestPhysAddr::new(0x1234_5678))
        .unwrap();
    assert_eq!(
        (t.output, t.size, t.level),
        (pa(GIB1 + 0x1234_5678), GIB1, 2)
    );
    assert_eq!(
        ept.map(
            &mem,
            &mut m.frames,
            GuestPhysAddr::new(1 << 48),
            pa(0),
            KIB4,
            &rwx,
            MapOptions::new()
        ),
        Err(MapError::Range(RangeError::OutOfRange))
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of entries: too slow under the interpreter; runs natively in the test stage"
)]
fn destroy_frees_every_table() {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let opts = MapOptions::new().sizes(LeafSizes::only(PageSize::Size4K));
    let _flush = pt
        .map(
            &mem,
            &mut m.frames,
            va(0),
            pa(0),
            0x40_0000,
            &Attributes::DATA,
            opts,
        )
        .unwrap();
    let flush = pt.destroy(&mem, &mut m.frames);
    assert!(flush.is_flush_all());
    assert!(m.frames.live.is_empty());
}

// ---- The model-based property test ----------------------------------------

/// 16 MiB of input addresses: 4096 pages, eight 2 MiB slots.
const WINDOW_PAGES: u64 = 4096;
const WINDOW: u64 = 0x7f00_0000_0000;

const ATTRS: [Attributes; 4] = [
    Attributes::DATA,
    Attributes::CODE,
    Attributes::READ_ONLY,
    Attributes::new(Access::READ.union(Access::WRITE).union(Access::USER)),
];

#[derive(Clone, Debug)]
enum Op {
    Map {
        page: u64,
        pages: u64,
        frame: u64,
        attrs: usize,
        sizes: u8,
        replace: bool,
        merge: bool,
    },
    Unmap {
        page: u64,
        pages: u64,
    },
    Protect {
        page: u64,
        pages: u64,
        attrs: usize,
    },
    Merge {
        page: u64,
        pages: u64,
    },
    /// The next operation gets at most this many new tables.
    Starve(usize),
}

fn op() -> impl Strategy<Value = Op> {
    // Single pages and single 2 MiB blocks often: the one-leaf fast path.
    let span = (
        0..WINDOW_PAGES,
        prop_oneof![2 => Just(1u64), 1 => Just(512u64), 3 => 1u64..1200],
    );
    prop_oneof![
        4 => (span.clone(), 0u64..8192, 0..ATTRS.len(), 0u8..3, any::<bool>(), any::<bool>())
            .prop_map(|((page, pages), frame, attrs, sizes, replace, merge)| {
                // Mostly 2 MiB-aligned starts, so that large leaves happen.
                let (page, frame) = if frame % 3 == 0 { (page & !511, frame & !511) } else { (page, frame) };
                Op::Map { page, pages, frame, attrs, sizes, replace, merge }
            }),
        2 => span.clone().prop_map(|(page, pages)| Op::Unmap { page, pages }),
        2 => (span.clone(), 0..ATTRS.len()).prop_map(|((page, pages), attrs)| Op::Protect { page, pages, attrs }),
        1 => span.prop_map(|(page, pages)| Op::Merge { page, pages }),
        1 => (0usize..3).prop_map(Op::Starve),
    ]
}

type Model = Vec<Option<(u64, Attributes)>>;

fn check(pt: &PageTable<X86Paging>, mem: &impl PhysMem, model: &Model) {
    // Under miri every 61st page, so that the interpreter finishes.
    let step = if cfg!(miri) { 61 } else { 1 };
    for (page, want) in model.iter().enumerate().step_by(step) {
        let got = pt.translate(mem, va(WINDOW + page as u64 * KIB4));
        match want {
            None => assert!(
                matches!(got, Err(TranslateError::NotMapped { .. })),
                "page {page}: {got:?}"
            ),
            Some((frame, attrs)) => {
                let t = got.unwrap_or_else(|e| panic!("page {page}: {e:?}"));
                assert_eq!(
                    (t.output.get() / KIB4, t.attributes),
                    (*frame, *attrs),
                    "page {page}"
                );
            }
        }
    }
}

/// The A/D bits of the leaf mapping each of `pages` pages at `page` of the
/// window (0 for a hole).
fn leaf_hardware_bits(
    pt: &PageTable<X86Paging>,
    mem: &SliceMem<'_>,
    page: u64,
    pages: u64,
) -> Vec<u64> {
    (page..page + pages)
        .map(|p| {
            let at = WINDOW + p * KIB4;
            pt.translate(mem, va(at))
                .map_or(0, |t| bits_at(mem, pt.root(), at, t.level, X86_A | X86_D))
        })
        .collect()
}

/// Hardware at work between updates: sets the accessed bit of some present
/// entries of every live table and the dirty bit of some (ignored in a
/// table entry), as page walks and writes would.
fn hardware_records_accesses(m: &Machine, mem: &SliceMem<'_>, step: usize) {
    for &frame in &m.frames.live {
        let entries = mem.table(PhysAddr::new(frame), 512).unwrap();
        for (i, e) in entries.iter().enumerate() {
            let h = (frame ^ (i as u64) << 20 ^ (step as u64) << 40)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                >> 58;
            if e.load(Ordering::Relaxed) & 1 != 0 && h < 16 {
                let bits = if h < 6 { X86_A | X86_D } else { X86_A };
                let _ = e.fetch_or(bits, Ordering::Relaxed);
            }
        }
    }
}

fn run_model(ops: &[Op]) {
    let mut m = Machine::new(64);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let mut model: Model = vec![None; WINDOW_PAGES as usize];
    let mut starve = None;
    for (step, op) in ops.iter().enumerate() {
        m.frames.cap = starve
            .take()
            .map_or(usize::MAX, |n| m.frames.live.len() + n);
        let before_model = model.clone();
        let before_words = m.snapshot();
        let clip = |page: u64, pages: u64| (page, pages.min(WINDOW_PAGES - page));
        let bound = match *op {
            Op::Starve(_) => 0,
            Op::Map { page, pages, .. }
            | Op::Unmap { page, pages }
            | Op::Protect { page, pages, .. }
            | Op::Merge { page, pages } => {
                let (page, pages) = clip(page, pages);
                pt.max_new_tables(va(WINDOW + page * KIB4), pages * KIB4)
            }
        };
        (m.frames.drawn, m.frames.peak) = (0, 0);
        let result = match *op {
            Op::Starve(n) => {
                starve = Some(n);
                continue;
            }
            Op::Map {
                page,
                pages,
                frame,
                attrs,
                sizes,
                replace,
                merge,
            } => {
                let (page, pages) = clip(page, pages);
                let sizes = [
                    LeafSizes::ANY,
                    LeafSizes::only(PageSize::Size4K),
                    LeafSizes::up_to_level(1),
                ][usize::from(sizes)];
                let mut opts = MapOptions::new().sizes(sizes);
                if replace {
                    opts = opts.replacing();
                }
                if merge {
                    opts = opts.merging();
                }
                let r = pt.map(
                    &mem,
                    &mut m.frames,
                    va(WINDOW + page * KIB4),
                    pa(frame * KIB4),
                    pages * KIB4,
                    &ATTRS[attrs],
                    opts,
                );
                let overlaps = model[page as usize..(page + pages) as usize]
                    .iter()
                    .any(Option::is_some);
                match r {
                    Ok(_) => {
                        assert!(replace || !overlaps, "mapped over existing pages");
                        for i in 0..pages {
                            model[(page + i) as usize] = Some((frame + i, ATTRS[attrs]));
                        }
                    }
                    Err(MapError::AlreadyMapped { .. }) => assert!(!replace && overlaps),
                    Err(MapError::OutOfMemory) => {}
                    Err(e) => panic!("{op:?}: {e:?}"),
                }
                r.map_err(|_| ())
            }
            Op::Unmap { page, pages } => {
                let (page, pages) = clip(page, pages);
                let r = pt.unmap(&mem, &mut m.frames, va(WINDOW + page * KIB4), pages * KIB4);
                match r {
                    Ok(_) => model[page as usize..(page + pages) as usize].fill(None),
                    Err(UnmapError::OutOfMemory) => {}
                    Err(e) => panic!("{op:?}: {e:?}"),
                }
                r.map_err(|_| ())
            }
            Op::Protect { page, pages, attrs } => {
                let (page, pages) = clip(page, pages);
                let recorded = leaf_hardware_bits(&pt, &mem, page, pages);
                let r = pt.protect(
                    &mem,
                    &mut m.frames,
                    va(WINDOW + page * KIB4),
                    pages * KIB4,
                    &ATTRS[attrs],
                );
                match r {
                    Ok(_) => {
                        for (_, a) in model[page as usize..(page + pages) as usize]
                            .iter_mut()
                            .flatten()
                        {
                            *a = ATTRS[attrs];
                        }
                        // What hardware recorded stays with the memory.
                        for (i, (old, new)) in recorded
                            .iter()
                            .zip(leaf_hardware_bits(&pt, &mem, page, pages))
                            .enumerate()
                        {
                            assert_eq!(old & !new, 0, "{op:?}: page {i} lost A/D");
                        }
                    }
                    Err(crate::ProtectError::OutOfMemory) => {}
                    Err(e) => panic!("{op:?}: {e:?}"),
                }
                r.map_err(|_| ())
            }
            Op::Merge { page, pages } => {
                let (page, pages) = clip(page, pages);
                Ok(pt
                    .merge(&mem, &mut m.frames, va(WINDOW + page * KIB4), pages * KIB4)
                    .unwrap())
            }
        };
        // A frame cache topped up to the bound would not have run dry.
        assert!(
            m.frames.peak <= bound,
            "{op:?}: drew {} tables, bound {bound}",
            m.frames.peak
        );
        match result {
            Ok(flush) => {
                // Every translation that changed or vanished is flushed.
                for (i, (old, new)) in before_model.iter().zip(&model).enumerate() {
                    if old.is_some() && old != new {
                        assert!(
                            flush.covers(WINDOW + i as u64 * KIB4),
                            "{op:?}: page {i} not flushed"
                        );
                    }
                }
            }
            Err(()) => {
                assert!(
                    m.snapshot() == before_words,
                    "{op:?} failed but changed the tables"
                );
            }
        }
        check(&pt, &mem, &model);
        hardware_records_accesses(&m, &mem, step);
        assert_eq!(
            live_tables(&pt, &mem, 1 << 47),
            m.frames.live.len(),
            "{op:?}"
        );
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random map / unmap / protect / merge sequences, some starved of table
    /// frames, against a page -> (frame, attributes) model. After every
    /// step: every page translates as the model says, every translation that
    /// changed is covered by the returned flush, a failed update left every
    /// table word as it was, and the allocator has exactly as many table
    /// frames out as the tree holds (no leak, no double free).
    #[test]
    #[cfg_attr(miri, ignore = "a model check per step: too slow under the interpreter; runs natively in the test stage")]
    fn random_edits_match_the_model(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 4 } else { 40 })) {
        run_model(&ops);
    }
}

/// Raw values that exercise every branch of the x86 and EPT decoders: each
/// control bit alone and together, addresses at and above MAXPHYADDR, the
/// low bits of large leaves, XD, protection keys.
fn interesting_raws() -> Vec<u64> {
    let bits: Vec<u64> = (0..64).map(|b| 1u64 << b).collect();
    let bases = [
        0u64,
        1,
        0b11,
        0b111,
        0x83,
        0x87,
        0x7,
        0x3f,
        0x47,
        0xb7,
        0x8000_0000_0000_0003,
        0x0000_000f_ffff_f083,
        0x000f_ffff_ffff_f007,
    ];
    let mut out = Vec::new();
    for &b in &bases {
        out.push(b);
        for &bit in &bits {
            out.push(b | bit);
            out.push(b ^ bit);
        }
    }
    out
}

fn check_kind_agrees<F: crate::Format>(format: &F, raw: u64) {
    for level in 0..format.levels() {
        assert_eq!(
            format.kind(raw, level),
            crate::EntryKind::from(format.decode(raw, level)),
            "raw {raw:#x} level {level} in {}",
            core::any::type_name::<F>()
        );
    }
}

/// Runs `$body` with `$f` bound to each configuration of every format
/// family (x86, EPT, AArch64 stage 1 and stage 2), at most `$few` of each
/// when given: the families are different types, so this is one loop per
/// family.
macro_rules! for_each_configuration {
    ($f:ident => $body:block) => {
        for_each_configuration!($f, usize::MAX => $body)
    };
    ($f:ident, $few:expr => $body:block) => {
        for $f in x86_configurations().into_iter().take($few) $body
        for $f in ept_configurations().into_iter().take($few) $body
        for $f in stage1_configurations().into_iter().take($few) $body
        for $f in stage2_configurations().into_iter().take($few) $body
    };
}

/// Under miri, the first, middle and last of `v`. The configuration sweeps
/// check safe bit logic, which the normal test stage checks in every
/// configuration; under miri, all of them took two fifths of this crate's
/// time.
fn under_miri_a_few<T>(v: Vec<T>) -> Vec<T> {
    if !cfg!(miri) || v.len() <= 3 {
        return v;
    }
    let (middle, last) = (v.len() / 2, v.len() - 1);
    v.into_iter()
        .enumerate()
        .filter(|&(i, _)| i == 0 || i == middle || i == last)
        .map(|(_, f)| f)
        .collect()
}

fn x86_configurations() -> Vec<X86Paging> {
    let mut v = Vec::new();
    for base in [X86Paging::four_level(), X86Paging::five_level()] {
        for bits in [32u8, 36, 46, 52] {
            let f = base.with_max_phys_bits(bits).unwrap();
            v.push(f);
            v.push(f.without_no_execute());
            v.push(f.without_gigabyte_pages());
            v.push(f.with_pat([MemoryType::WriteBack; 8]));
        }
    }
    under_miri_a_few(v)
}

fn ept_configurations() -> Vec<Ept> {
    let mut v = Vec::new();
    for base in [Ept::four_level(), Ept::five_level()] {
        for bits in [32u8, 39, 46, 52] {
            let f = base.with_max_phys_bits(bits).unwrap();
            v.push(f);
            v.push(f.with_execute_only());
            v.push(f.without_gigabyte_pages());
        }
    }
    under_miri_a_few(v)
}

fn stage1_configurations() -> Vec<crate::aarch64::Stage1> {
    use crate::aarch64::{Granule, LargeAddresses, Regime, Stage1};
    let mut v = Vec::new();
    for regime in [Regime::El1And0, Regime::El2, Regime::El2And0] {
        for granule in [Granule::Size4KiB, Granule::Size16KiB, Granule::Size64KiB] {
            v.push(Stage1::new(regime, granule, 48, LargeAddresses::None).unwrap());
        }
        v.push(Stage1::new(regime, Granule::Size64KiB, 52, LargeAddresses::Lpa).unwrap());
        let lpa2 = LargeAddresses::Lpa2 {
            shareability: crate::Shareability::Inner,
        };
        v.push(Stage1::new(regime, Granule::Size4KiB, 52, lpa2).unwrap());
        v.push(
            Stage1::new(regime, Granule::Size16KiB, 39, LargeAddresses::None)
                .unwrap()
                .with_output_bits(40)
                .unwrap(),
        );
    }
    under_miri_a_few(v)
}

fn stage2_configurations() -> Vec<crate::aarch64::Stage2> {
    use crate::aarch64::{Granule, LargeAddresses, Stage2};
    let mut v = Vec::new();
    for granule in [Granule::Size4KiB, Granule::Size16KiB, Granule::Size64KiB] {
        let f = Stage2::new(granule, 40, LargeAddresses::None).unwrap();
        v.extend([f, f.with_fwb(), f.with_xnx(), f.with_fwb().with_xnx()]);
    }
    v.push(Stage2::new(Granule::Size64KiB, 52, LargeAddresses::Lpa).unwrap());
    let lpa2 = LargeAddresses::Lpa2 {
        shareability: crate::Shareability::Outer,
    };
    v.push(Stage2::new(Granule::Size16KiB, 52, lpa2).unwrap());
    under_miri_a_few(v)
}

/// `Format::kind` is what walks use at every level; it must say exactly what
/// `decode` says, or a walk would treat an entry differently from an update.
#[test]
fn kind_agrees_with_decode_on_every_branch() {
    let raws = interesting_raws();
    let raws = if cfg!(miri) { &raws[..64] } else { &raws[..] };
    for_each_configuration!(f => {
        for &raw in raws {
            check_kind_agrees(&f, raw);
        }
    });
}

/// The editor writes zero to clear an entry and takes a zero entry for a
/// free slot without decoding it: every format must decode zero as invalid.
#[test]
fn the_zero_entry_is_invalid_at_every_level_of_every_format() {
    fn check<F: crate::Format>(format: &F) {
        for level in 0..format.levels() {
            assert_eq!(format.decode(0, level), crate::Descriptor::Invalid);
        }
    }
    for_each_configuration!(f => {
        check(&f);
    });
}

/// The PAT lookup the x86 encoder precomputes picks the first PAT slot that
/// holds a memory type, as a search of the PAT would, and refuses types the
/// PAT lacks.
#[test]
fn precomputed_pat_lookup_uses_the_first_slot_of_each_type() {
    let pat = [
        MemoryType::Uncacheable,
        MemoryType::WriteBack,
        MemoryType::WriteBack,
        MemoryType::WriteCombining,
        MemoryType::Uncacheable,
        MemoryType::WriteThrough,
        MemoryType::WriteThrough,
        MemoryType::WriteThrough,
    ];
    let f = X86Paging::four_level().with_pat(pat);
    let attrs = |m| Attributes::DATA.with_memory_type(m);
    // PAT index 1 = PWT only; index 3 = PWT | PCD; 5 = PAT | PWT.
    let pwt = 1 << 3;
    let pcd = 1 << 4;
    let pat4k = 1 << 7;
    let flags = pwt | pcd | pat4k;
    let raw = |m| crate::Format::encode_leaf(&f, 0, &attrs(m), 0).map(|r| r & flags);
    assert_eq!(raw(MemoryType::WriteBack), Ok(pwt));
    assert_eq!(raw(MemoryType::WriteCombining), Ok(pwt | pcd));
    assert_eq!(raw(MemoryType::Uncacheable), Ok(0));
    assert_eq!(raw(MemoryType::WriteThrough), Ok(pat4k | pwt));
    assert_eq!(
        raw(MemoryType::WriteProtect),
        Err(AttrError::MemoryType(MemoryType::WriteProtect))
    );
}

proptest! {
    #![proptest_config(config())]

    /// Random raw values: `kind` and `decode` agree at every level of every
    /// x86 and EPT configuration.
    #[test]
    fn kind_agrees_with_decode_on_random_values(raw in any::<u64>(), present in any::<bool>()) {
        let raw = if present { raw | 1 } else { raw };
        for f in x86_configurations() {
            check_kind_agrees(&f, raw);
        }
        for f in ept_configurations() {
            check_kind_agrees(&f, raw);
        }
    }

    /// Random raw values: `kind` and `decode` agree at every level of every
    /// AArch64 stage-1 and stage-2 configuration (attribute fields
    /// included: unused MAIR slots, reserved SH and MemAttr values, XN\[0\]
    /// without FEAT_XNX make a leaf malformed for both).
    #[test]
    fn aarch64_kind_agrees_with_decode_on_random_values(raw in any::<u64>(), kind in 0u64..4) {
        // Valid, and a block or table/page type, most of the time.
        let raw = if kind == 0 { raw } else { raw | 1 };
        for f in stage1_configurations() {
            check_kind_agrees(&f, raw);
        }
        for f in stage2_configurations() {
            check_kind_agrees(&f, raw);
        }
    }
}

// The leaf address mask (`Format::leaf_address_mask`) and the protect fast
// path built on it.

/// Attributes from a seed, every field varying, so that each format sees
/// sets it can encode and many it cannot.
fn attributes_from(seed: u64) -> Attributes {
    use crate::Shareability;
    use crate::attrs::Tracking;
    const TYPES: [MemoryType; 8] = [
        MemoryType::WriteBack,
        MemoryType::WriteThrough,
        MemoryType::WriteCombining,
        MemoryType::WriteProtect,
        MemoryType::Uncacheable,
        MemoryType::UncacheableMinus,
        MemoryType::Device,
        MemoryType::Inherited,
    ];
    const SHARE: [Shareability; 3] = [
        Shareability::Inner,
        Shareability::Outer,
        Shareability::NonShareable,
    ];
    // Readable, accessed, inner shareable, no key and no ignore-PAT most of
    // the time: what every format can encode.
    let rare = |shift: u32| (seed >> shift) & 3 == 0;
    let mut access = Access::from_bits_truncate((seed >> 8) as u8);
    if !rare(16) {
        access |= Access::READ;
    }
    let mut tracking = Tracking::from_bits_truncate((seed >> 18) as u8);
    if !rare(20) {
        tracking |= Tracking::ACCESSED;
    }
    Attributes {
        access,
        memory_type: TYPES[(seed % 8) as usize],
        global: (seed >> 3) & 1 != 0,
        protection_key: if rare(22) {
            ((seed >> 24) & 0xf) as u8
        } else {
            0
        },
        ignore_guest_pat: rare(28),
        shareability: if rare(30) {
            SHARE[((seed >> 32) % 3) as usize]
        } else {
            Shareability::Inner
        },
        tracking,
    }
}

/// Checks the rules of `Format::leaf_address_mask` at `level` for `raw`,
/// the same entry with its address bits taken from `address`, and the
/// template of `attrs`.
fn check_leaf_address_mask<F: crate::Format>(
    f: &F,
    level: u8,
    raw: u64,
    address: u64,
    attrs: &Attributes,
) {
    let name = core::any::type_name::<F>();
    let Some(mask) = f.leaf_address_mask(level) else {
        return;
    };
    let other = (raw & !mask) | (address & mask);
    // What kind an entry is does not depend on its address bits.
    assert_eq!(
        core::mem::discriminant(&f.kind(raw, level)),
        core::mem::discriminant(&f.kind(other, level)),
        "{raw:#x} and {other:#x} at level {level} in {name}: {f:?}",
        f = (f.kind(raw, level), f.kind(other, level))
    );
    assert_eq!(f.is_contiguous(raw), f.is_contiguous(other));
    let Ok(template) = f.encode_leaf(0, attrs, level) else {
        return;
    };
    let hinted = f.with_contiguous(template, true);
    assert_eq!(template & mask, 0, "{attrs:?} at level {level} in {name}");
    assert_eq!(hinted & mask, 0, "{attrs:?} at level {level} in {name}");
    for entry in [raw, other] {
        if let crate::EntryKind::Leaf(pa) = f.kind(entry, level) {
            // Keeping the masked bits is decoding the address and encoding
            // it again.
            let rebuilt = f.with_output_address(template, pa, level);
            assert_eq!(
                rebuilt,
                template | (entry & mask),
                "{entry:#x} at level {level} in {name}"
            );
            assert_eq!(f.with_contiguous(rebuilt, true), hinted | (entry & mask));
        }
    }
    // Whether the rewrite needs a break does not depend on the address.
    for bits in [template, hinted] {
        assert_eq!(
            f.needs_break(raw, (raw & mask) | bits, level),
            f.needs_break(other, (other & mask) | bits, level),
            "{raw:#x} and {other:#x} to {bits:#x} at level {level} in {name}"
        );
    }
}

/// Entries to check the mask's rules on at `level`: a random value, a leaf
/// at a random address with random attributes, that leaf with one bit
/// flipped, and with the contiguous hint.
fn mask_candidates<F: crate::Format>(
    f: &F,
    level: u8,
    raw: u64,
    pa: u64,
    seed: u64,
    flip: u32,
) -> Vec<u64> {
    let mut v = vec![raw, raw | 1];
    let size = 1u64 << f.level_shift(level).min(63);
    let pa = pa & ((1u64 << f.output_bits()) - 1) & !(size - 1);
    if let Ok(leaf) = f.encode_leaf(pa, &attributes_from(seed), level) {
        v.extend([
            leaf,
            leaf ^ (1u64 << (flip % 64)),
            f.with_contiguous(leaf, true),
        ]);
    }
    v
}

proptest! {
    #![proptest_config(config())]

    /// `Format::leaf_address_mask`'s rules, at every level of every x86,
    /// EPT, stage-1 and stage-2 configuration the `kind` tests use: an
    /// entry's kind, contiguous hint and break verdict do not depend on its
    /// address bits; templates hold no address bits; and the protect's
    /// rebuild `template | (raw & mask)` (with the hint kept) equals
    /// decoding the leaf's address and encoding it into the template.
    #[test]
    fn leaf_address_mask_rebuild_equals_decode_and_encode(
        raw in any::<u64>(),
        address in any::<u64>(),
        pa in any::<u64>(),
        seeds in [any::<u64>(); 2],
        flip in any::<u32>(),
    ) {
        let attrs = attributes_from(seeds[0]);
        fn all<F: crate::Format>(f: &F, raw: u64, address: u64, pa: u64, seed: u64, flip: u32, attrs: &Attributes) {
            assert!(f.leaf_address_mask(0).is_some_and(|m| m != 0));
            for level in 0..f.levels() {
                for entry in mask_candidates(f, level, raw, pa, seed, flip) {
                    check_leaf_address_mask(f, level, entry, address, attrs);
                    check_leaf_address_mask(f, level, entry, !address, attrs);
                }
            }
        }
        // A few configurations of each kind under miri.
        let few = if cfg!(miri) { 2 } else { usize::MAX };
        for_each_configuration!(f, few => {
            all(&f, raw, address, pa, seeds[1], flip, &attrs);
        });
    }
}

/// A format without its leaf address mask: protect then decodes and encodes
/// every leaf (the general path), which the fast path must match.
#[derive(Clone, Copy, Debug)]
struct Unmasked<F>(F);

impl<F: crate::Format> crate::Format for Unmasked<F> {
    type Input = F::Input;
    fn levels(&self) -> u8 {
        self.0.levels()
    }
    fn granule_shift(&self) -> u32 {
        self.0.granule_shift()
    }
    fn entries(&self) -> usize {
        self.0.entries()
    }
    fn root_entries(&self) -> usize {
        self.0.root_entries()
    }
    fn root_tables(&self) -> usize {
        self.0.root_tables()
    }
    fn level_shift(&self, level: u8) -> u32 {
        self.0.level_shift(level)
    }
    fn level_name(&self, level: u8) -> &'static str {
        self.0.level_name(level)
    }
    fn input_to_index(&self, input: u64) -> Option<u64> {
        self.0.input_to_index(input)
    }
    fn index_to_input(&self, index: u64) -> u64 {
        self.0.index_to_input(index)
    }
    fn output_bits(&self) -> u32 {
        self.0.output_bits()
    }
    fn leaf_allowed(&self, level: u8) -> bool {
        self.0.leaf_allowed(level)
    }
    fn decode(&self, raw: u64, level: u8) -> crate::Descriptor {
        self.0.decode(raw, level)
    }
    fn kind(&self, raw: u64, level: u8) -> crate::EntryKind {
        self.0.kind(raw, level)
    }
    fn encode_table(&self, table: u64, level: u8) -> u64 {
        self.0.encode_table(table, level)
    }
    fn encode_leaf(&self, pa: u64, attrs: &Attributes, level: u8) -> Result<u64, AttrError> {
        self.0.encode_leaf(pa, attrs, level)
    }
    fn with_output_address(&self, template: u64, pa: u64, level: u8) -> u64 {
        self.0.with_output_address(template, pa, level)
    }
    fn hardware_bits(&self) -> u64 {
        self.0.hardware_bits()
    }
    fn needs_break(&self, old: u64, new: u64, level: u8) -> bool {
        self.0.needs_break(old, new, level)
    }
    fn contiguous_run(&self, level: u8) -> u32 {
        self.0.contiguous_run(level)
    }
    fn is_contiguous(&self, raw: u64) -> bool {
        self.0.is_contiguous(raw)
    }
    fn with_contiguous(&self, raw: u64, on: bool) -> u64 {
        self.0.with_contiguous(raw, on)
    }
    fn table_limits(&self, raw: u64, level: u8) -> Access {
        self.0.table_limits(raw, level)
    }
}

/// A random table and protect for the comparison of the two protect paths.
#[derive(Clone, Debug)]
struct ProtectCase {
    /// Attribute sets (besides `DATA` and `READ_ONLY`).
    seeds: Vec<u64>,
    /// Maps: first page, pages, attribute set, contiguous hint, blocks.
    maps: Vec<(u64, u64, usize, bool, bool)>,
    /// Unmaps: first page, pages.
    unmaps: Vec<(u64, u64)>,
    /// Bit flips in table words (hardware A/D updates, guest corruption):
    /// which word, which bit.
    pokes: Vec<(u64, u32)>,
    /// The protect: first page, pages, attribute set.
    protect: (u64, u64, usize),
}

fn protect_case() -> impl Strategy<Value = ProtectCase> {
    // Two last-level tables of 4 KiB pages.
    let pages = 1024u64;
    (
        proptest::collection::vec(any::<u64>(), 2),
        proptest::collection::vec(
            (0..pages, 1..pages, 0usize..4, any::<bool>(), any::<bool>()),
            1..5,
        ),
        proptest::collection::vec((0..pages, 1u64..64), 0..3),
        proptest::collection::vec((any::<u64>(), 0u32..96), 0..6),
        (0..pages, 1..pages + 64, 0usize..4),
    )
        .prop_map(|(seeds, maps, unmaps, pokes, protect)| ProtectCase {
            seeds,
            maps,
            unmaps,
            pokes,
            protect,
        })
}

/// What one run of a case left: the result, every table word, the
/// break-before-make requests (in address order) and the recorded writes
/// (entries as offsets into the arena; in order for each entry, entries in
/// address order: the fast path prepares and rewrites one contiguous run
/// after the other, the general path prepares every run of a table first).
type ProtectOutcome = (
    Result<(Vec<(u64, u64)>, bool, bool), crate::ProtectError>,
    Vec<u64>,
    Vec<crate::Break>,
    Vec<(usize, u8, u64, u64, u64, u64)>,
);

fn run_protect_case<F: crate::Format>(f: F, case: &ProtectCase) -> ProtectOutcome {
    use crate::bbm::trace::{self, Event};
    use crate::model_tests::Recorder;
    const BASE: u64 = 0x4000_0000;
    let mut m = Machine::new(16);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let mut pt = PageTable::new(f, &mem, &mut m.frames).unwrap();
    let mut sets = vec![Attributes::DATA, Attributes::READ_ONLY];
    sets.extend(case.seeds.iter().map(|&s| attributes_from(s)));
    let at = |page: u64| F::Input::from_raw(BASE + page * KIB4);
    let mut bbm = Recorder::default();
    for &(page, pages, set, hint, blocks) in &case.maps {
        let mut options = MapOptions::new();
        if !hint {
            options = options.without_contiguous_hint();
        }
        if !blocks {
            options = options.sizes(LeafSizes::only_level(0));
        }
        let frame = 0x8000_0000 + page * KIB4;
        let _ = pt.map_live(
            &mem,
            &mut m.frames,
            &mut bbm,
            at(page),
            pa(frame),
            pages * KIB4,
            &sets[set % sets.len()],
            options,
        );
    }
    for &(page, pages) in &case.unmaps {
        let _ = pt.unmap_live(&mem, &mut m.frames, &mut bbm, at(page), pages * KIB4);
    }
    let live: Vec<u64> = m.frames.live.iter().copied().collect();
    for &(which, bit) in &case.pokes {
        // Bits 64..96 pick among the ones hardware or a guest touch most:
        // valid, write, A, D, PAT/PS, SH, AF, DBM, contiguous.
        const HOT: [u32; 16] = [0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 51, 52, 53, 54, 63, 12];
        let bit = if bit < 64 {
            bit
        } else {
            HOT[(bit % 16) as usize]
        };
        let frame = live[(which % live.len() as u64) as usize];
        let word = ((frame - ARENA_BASE) / 8 + (which >> 32) % 512) as usize;
        m.words[word].fetch_xor(1 << bit, Ordering::Relaxed);
    }
    let before: Vec<u64> = m.words.iter().map(|w| w.load(Ordering::Relaxed)).collect();
    let (page, pages, set) = case.protect;
    let mut bbm = Recorder::default();
    trace::start();
    let result = pt
        .protect_live(
            &mem,
            &mut m.frames,
            &mut bbm,
            at(page),
            pages * KIB4,
            &sets[set % sets.len()],
        )
        .map(|flush| {
            (
                flush.ranges().collect(),
                flush.is_flush_all(),
                flush.tables_changed(),
            )
        });
    let origin = m.words.as_ptr() as usize;
    let mut writes: Vec<_> = trace::take()
        .into_iter()
        .filter_map(|e| match e {
            Event::Write {
                entry,
                level,
                at,
                size,
                old,
                new,
            } => Some((entry - origin, level, at, size, old, new)),
            Event::Invalidate(_) | Event::Fresh { .. } => None,
        })
        .collect();
    writes.sort_by_key(|w| w.0);
    let mut breaks = bbm.0;
    breaks.sort_by_key(|b| (b.start, b.end, b.level, b.table));
    let after: Vec<u64> = m.words.iter().map(|w| w.load(Ordering::Relaxed)).collect();
    if result.is_err() {
        assert_eq!(before, after, "a failed protect changed the tables");
    }
    (result, after, breaks, writes)
}

/// The table pattern's contract for every level above the last: an entry
/// matching it is exactly the table `kind` says, at the address the pattern
/// gives. Entries forced to match (random bits outside the pattern's check)
/// and random entries that happen to.
fn check_table_pattern<F: crate::Format + core::fmt::Debug>(format: &F, raw: u64) {
    let pattern = format.table_pattern();
    for candidate in [raw, (raw & !pattern.check) | pattern.value] {
        if !pattern.matches(candidate) {
            continue;
        }
        for level in 1..format.levels() {
            assert_eq!(
                format.kind(candidate, level),
                crate::EntryKind::Table(pattern.address(candidate)),
                "raw {candidate:#x} level {level} in {format:?}"
            );
        }
    }
}

#[test]
fn table_pattern_matches_only_tables_kind_accepts_on_every_branch() {
    let raws = interesting_raws();
    let raws = if cfg!(miri) { &raws[..64] } else { &raws[..] };
    // Each configuration made once (making them is most of the cost under
    // miri), every value checked in it.
    for_each_configuration!(f => {
        for &raw in raws {
            check_table_pattern(&f, raw);
        }
    });
}

#[test]
fn table_pattern_matches_the_tables_the_editor_writes() {
    fn check<F: crate::Format + core::fmt::Debug>(f: &F) {
        let table = 0x1234_5000 & !((1u64 << f.granule_shift()) - 1);
        for level in 1..f.levels() {
            let raw = f.encode_table(table, level);
            assert!(f.table_pattern().matches(raw), "{raw:#x} in {f:?}");
            assert_eq!(f.table_pattern().address(raw), table);
        }
    }
    for_each_configuration!(f => {
        check(&f);
    });
}

proptest! {
    #![proptest_config(config())]

    /// Random raw values: an entry the table pattern matches is the table
    /// `kind` says at every level above the last, in every configuration.
    #[test]
    fn table_pattern_matches_only_tables_kind_accepts(raw in any::<u64>()) {
        for_each_configuration!(f => {
            check_table_pattern(&f, raw);
        });
    }
}

/// A break-before-make callback that records every break.
#[derive(Default)]
struct Breaks(Vec<crate::Break>);

impl crate::BreakBeforeMake for Breaks {
    fn invalidate(&mut self, broken: &crate::Break) {
        self.0.push(*broken);
    }
}

/// One step of the equivalence test of the one-leaf fast path: a one-leaf
/// map (`len` 4 KiB or 2 MiB) or unmap at `page` (4 KiB units from the
/// window's base).
#[derive(Clone, Debug)]
struct OneLeaf {
    map: bool,
    page: u64,
    large: bool,
    frame: u64,
    attrs: usize,
    replace: bool,
}

/// The window the equivalence test edits: 8 MiB from a 1 GiB boundary, so
/// that the tables above the last two levels are shared.
const ONE_LEAF_BASE: u64 = 0x40_4000_0000;

impl OneLeaf {
    fn span(&self) -> (u64, u64) {
        if self.large {
            (ONE_LEAF_BASE + (self.page & !511) * KIB4, MIB2)
        } else {
            (ONE_LEAF_BASE + self.page * KIB4, KIB4)
        }
    }
}

fn one_leaf() -> impl Strategy<Value = OneLeaf> {
    (
        any::<bool>(),
        // Few pages often, so that maps meet mapped pages and unmaps empty
        // tables.
        prop_oneof![2 => 0u64..40, 2 => 1024u64..1028, 1 => 0u64..2048],
        prop_oneof![4 => Just(false), 1 => Just(true)],
        0u64..4096,
        0..ATTRS.len(),
        any::<bool>(),
    )
        .prop_map(|(map, page, large, frame, attrs, replace)| OneLeaf {
            map,
            page,
            large,
            frame,
            attrs,
            replace,
        })
}

/// A copy of a machine: the same words and the same allocator state.
fn clone_machine(m: &Machine) -> Machine {
    Machine {
        words: m
            .words
            .iter()
            .map(|w| AtomicU64::new(w.load(Ordering::Relaxed)))
            .collect(),
        frames: Frames {
            free: m.frames.free.clone(),
            live: m.frames.live.clone(),
            cap: m.frames.cap,
            drawn: 0,
            peak: 0,
        },
    }
}

/// What a table says about the window: every entry `visit` reports, with
/// table addresses left out (the two paths may take different frames).
fn window_contents<F: crate::Format>(pt: &PageTable<F>, mem: &impl PhysMem) -> Vec<Visit> {
    let mut v = Vec::new();
    pt.visit(mem, F::Input::from_raw(ONE_LEAF_BASE), 4 * MIB2, |e| {
        v.push(match e {
            Visit::Table {
                at, level, size, ..
            } => Visit::Table {
                at,
                level,
                size,
                table: PhysAddr::new(0),
            },
            other => other,
        });
        ControlFlow::Continue(())
    })
    .unwrap();
    v
}

/// Applies `step` through the public entry point (fast path first) to one
/// copy of the machine and through the general engine to another, and
/// checks that both give the same result, the same breaks, the same number
/// of table frames, the same contents of the window, and, when both used
/// the same frames, the same table words.
fn check_one_leaf_step<F: crate::Format + Copy + core::fmt::Debug>(
    format: F,
    root: u64,
    m: &mut Machine,
    step: &OneLeaf,
    cap: usize,
) {
    let (start, len) = step.span();
    let input = F::Input::from_raw(start);
    let pa = if step.large {
        (step.frame & !511) * KIB4
    } else {
        step.frame * KIB4
    };
    let mut options = MapOptions::new().sizes(LeafSizes::only(if step.large {
        PageSize::Size2M
    } else {
        PageSize::Size4K
    }));
    if step.replace {
        options = options.replacing();
    }
    let attrs = ATTRS[step.attrs];
    let mut general = clone_machine(m);
    let before = m.frames.live.clone();
    m.frames.cap = m.frames.live.len() + cap;
    general.frames.cap = m.frames.cap;
    let index = format.input_to_index(start).unwrap();

    let mut fast_breaks = Breaks::default();
    let mut pt = PageTable::from_root(format, PhysAddr::new(root));
    let fast = {
        let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
        if step.map {
            pt.map_live(
                &mem,
                &mut m.frames,
                &mut fast_breaks,
                input,
                PhysAddr::new(pa),
                len,
                &attrs,
                options,
            )
            .map_err(|e| std::format!("{e:?}"))
        } else {
            pt.unmap_live(&mem, &mut m.frames, &mut fast_breaks, input, len)
                .map_err(|e| std::format!("{e:?}"))
        }
    };
    let mut general_breaks = Breaks::default();
    let mut gpt = PageTable::from_root(format, PhysAddr::new(root));
    let slow = {
        let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &general.words);
        if step.map {
            gpt.map_general(
                &mem,
                &mut general.frames,
                &mut general_breaks,
                index,
                index + len,
                PhysAddr::new(pa),
                &attrs,
                options,
            )
            .map_err(|e| std::format!("{e:?}"))
        } else {
            gpt.unmap_general(
                &mem,
                &mut general.frames,
                &mut general_breaks,
                index,
                index + len,
            )
            .map_err(|e| std::format!("{e:?}"))
        }
    };
    m.frames.cap = usize::MAX;
    assert_eq!(fast, slow, "{step:?} in {format:?}");
    assert_eq!(fast_breaks.0, general_breaks.0, "{step:?} in {format:?}");
    assert_eq!(
        m.frames.live.len(),
        general.frames.live.len(),
        "{step:?} in {format:?}"
    );
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let gmem = SliceMem::new(PhysAddr::new(ARENA_BASE), &general.words);
    assert_eq!(
        window_contents(&pt, &mem),
        window_contents(&gpt, &gmem),
        "{step:?} in {format:?}"
    );
    // Without a table taken or freed, both wrote the same frames: the same
    // words.
    if m.frames.live == before && general.frames.live == before {
        assert!(
            m.snapshot() == general.snapshot(),
            "{step:?} in {format:?}: table words differ"
        );
    }
}

/// Runs `steps` on a fresh table of `format`, checking each against the
/// general engine. The steps before each one build the state it meets:
/// tables present or missing, leaves of both sizes, contiguous runs on
/// AArch64, tables emptied by unmaps.
fn check_one_leaf_steps<F: crate::Format + Copy + core::fmt::Debug>(
    format: F,
    steps: &[(OneLeaf, usize)],
) {
    let mut m = Machine::new(64);
    let root = {
        let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
        PageTable::new(format, &mem, &mut m.frames).unwrap().root()
    };
    // A contiguous run of 16 pages (hinted on AArch64) to meet.
    {
        let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
        let mut pt = PageTable::from_root(format, root);
        let _ = pt
            .map_live(
                &mem,
                &mut m.frames,
                &mut Breaks::default(),
                F::Input::from_raw(ONE_LEAF_BASE + 16 * KIB4),
                PhysAddr::new(0x10_0000),
                16 * KIB4,
                &Attributes::DATA,
                MapOptions::new(),
            )
            .unwrap();
    }
    for (step, cap) in steps {
        check_one_leaf_step(format, root.get(), &mut m, step, *cap);
    }
}

fn one_leaf_formats_run(steps: &[(OneLeaf, usize)]) {
    use crate::aarch64::{Granule, LargeAddresses, Regime, Stage1};
    check_one_leaf_steps(X86Paging::four_level(), steps);
    check_one_leaf_steps(X86Paging::five_level(), steps);
    check_one_leaf_steps(Ept::four_level(), steps);
    for (regime, bits) in [(Regime::El1And0, 48), (Regime::El2, 39)] {
        let f = Stage1::new(regime, Granule::Size4KiB, bits, LargeAddresses::None).unwrap();
        check_one_leaf_steps(f, steps);
    }
    let lpa2 = LargeAddresses::Lpa2 {
        shareability: crate::Shareability::Inner,
    };
    let f = Stage1::new(Regime::El1And0, Granule::Size4KiB, 52, lpa2).unwrap();
    check_one_leaf_steps(f, steps);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..config() })]

    /// The one-leaf fast path of map and unmap is only a shortcut: from any
    /// state, one-page and one-block maps and unmaps through the public
    /// entry points give what the general plan/reserve/commit engine gives
    /// (result, flush, breaks, tables, frames), starved of frames or not.
    #[test]
    #[cfg_attr(miri, ignore = "many configurations and steps: natively only")]
    fn one_leaf_fast_path_matches_the_general_engine(
        steps in proptest::collection::vec((one_leaf(), prop_oneof![3 => Just(8usize), 1 => 0usize..3]), 1..40)
    ) {
        one_leaf_formats_run(&steps);
    }
}

/// A one-page range is checked by its first address (the shortcut of the
/// one-page update): the pages on both sides of the x86 canonical hole and
/// of the AArch64 input size are accepted or refused as a whole, like a
/// longer range.
#[test]
fn one_page_ranges_are_translatable_as_a_whole() {
    let mut m = Machine::new(16);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let map = |pt: &mut PageTable<X86Paging>, frames: &mut Frames, at: u64| {
        pt.map(
            &mem,
            frames,
            va(at),
            pa(0x1000),
            KIB4,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .map(|_| ())
    };
    for at in [0x0000_7fff_ffff_f000, 0xffff_8000_0000_0000] {
        assert_eq!(map(&mut pt, &mut m.frames, at), Ok(()), "{at:#x}");
        assert!(pt.unmap(&mem, &mut m.frames, va(at), KIB4).is_ok());
    }
    for at in [
        0x0000_8000_0000_0000,
        0xffff_7fff_ffff_f000,
        0x7fff_ffff_ffff_f000,
    ] {
        assert_eq!(
            map(&mut pt, &mut m.frames, at),
            Err(MapError::Range(RangeError::OutOfRange)),
            "{at:#x}"
        );
        assert_eq!(
            pt.unmap(&mem, &mut m.frames, va(at), KIB4),
            Err(UnmapError::Range(RangeError::OutOfRange)),
            "{at:#x}"
        );
    }

    use crate::aarch64::{Granule, LargeAddresses, Regime, Stage1};
    let f = Stage1::new(Regime::El1And0, Granule::Size4KiB, 39, LargeAddresses::None).unwrap();
    let mut a = Machine::new(16);
    let amem = SliceMem::new(PhysAddr::new(ARENA_BASE), &a.words);
    let mut apt = PageTable::new(f, &amem, &mut a.frames).unwrap();
    let mut amap = |at: u64| {
        apt.map_live(
            &amem,
            &mut a.frames,
            &mut Breaks::default(),
            va(at),
            pa(0x1000),
            KIB4,
            &Attributes::DATA,
            MapOptions::new(),
        )
        .map(|_| ())
    };
    assert_eq!(amap((1 << 39) - KIB4), Ok(()));
    assert_eq!(amap(1 << 39), Err(MapError::Range(RangeError::OutOfRange)));
}

/// The last-level shortcut's contract: a page it recognises is exactly the
/// leaf `kind` says at level 0. Entries forced into the table pattern's
/// shape (where the shortcut looks first) and random ones.
fn check_last_level_leaf<F: crate::Format + core::fmt::Debug>(format: &F, raw: u64) {
    let pattern = format.table_pattern();
    for candidate in [raw, (raw & !pattern.check) | pattern.value] {
        if let Some(pa) = format.last_level_leaf(candidate) {
            assert_eq!(
                format.kind(candidate, 0),
                crate::EntryKind::Leaf(pa),
                "raw {candidate:#x} in {format:?}"
            );
        }
    }
}

fn stage1_configurations_with_mairs() -> Vec<crate::aarch64::Stage1> {
    let sparse = crate::aarch64::Mair::new([
        None,
        Some(MemoryType::WriteBack),
        None,
        None,
        None,
        None,
        None,
        Some(MemoryType::Device),
    ])
    .unwrap();
    let mut v = stage1_configurations();
    let with_sparse: Vec<_> = v.iter().map(|f| f.with_mair(sparse)).collect();
    v.extend(with_sparse);
    v
}

#[test]
fn last_level_leaf_shortcut_agrees_with_kind_on_every_branch() {
    let raws = interesting_raws();
    let raws = if cfg!(miri) { &raws[..64] } else { &raws[..] };
    let formats = stage1_configurations_with_mairs();
    let (x86, ept, stage2) = (
        x86_configurations(),
        ept_configurations(),
        stage2_configurations(),
    );
    let mut recognised = 0;
    for &raw in raws {
        for f in &formats {
            check_last_level_leaf(f, raw);
            recognised += usize::from(crate::Format::last_level_leaf(f, raw | 0b11).is_some());
        }
        for f in &x86 {
            check_last_level_leaf(f, raw);
        }
        for f in &ept {
            check_last_level_leaf(f, raw);
        }
        for f in &stage2 {
            check_last_level_leaf(f, raw);
        }
    }
    assert!(recognised > 0, "the shortcut never fired");
}

#[test]
fn last_level_leaf_shortcut_recognises_the_pages_the_editor_writes() {
    fn check<F: crate::Format + core::fmt::Debug>(f: &F) {
        let stage2_attrs = Attributes::new(Access::READ | Access::WRITE);
        let mut encoded = 0;
        let shares = [
            crate::Shareability::Inner,
            crate::Shareability::Outer,
            crate::Shareability::NonShareable,
        ];
        for attrs in ATTRS.iter().chain([&stage2_attrs]) {
            for shareability in shares {
                let attrs = Attributes {
                    shareability,
                    ..*attrs
                };
                let Ok(raw) = f.encode_leaf(0x1234_0000, &attrs, 0) else {
                    continue;
                };
                encoded += 1;
                assert_eq!(
                    f.last_level_leaf(raw),
                    Some(0x1234_0000),
                    "{raw:#x} in {f:?}"
                );
            }
        }
        assert!(encoded > 0, "{f:?}");
    }
    stage1_configurations_with_mairs().iter().for_each(check);
    stage2_configurations().iter().for_each(check);
    x86_configurations().iter().for_each(check);
    ept_configurations().iter().for_each(check);
}

proptest! {
    #![proptest_config(config())]

    /// The protect fast path (keep the leaf address mask's bits, one
    /// verdict per attribute pattern) does exactly what the general path
    /// (decode and encode each leaf) does: same result and flush, same
    /// table words, same break-before-make requests, same writes to each
    /// entry in the same order, on tables of mixed attributes, contiguous runs, blocks, holes
    /// and flipped bits; and a failed protect writes nothing.
    #[test]
    #[cfg_attr(miri, ignore = "whole tables per case: natively only")]
    fn protect_through_the_leaf_address_mask_matches_decode_and_encode(case in protect_case()) {
        use crate::aarch64::{Granule, LargeAddresses, Regime, Stage1, Stage2};
        fn compare<F: crate::Format + Copy>(f: F, case: &ProtectCase) {
            let fast = run_protect_case(f, case);
            let general = run_protect_case(Unmasked(f), case);
            assert_eq!(fast, general, "{}", core::any::type_name::<F>());
        }
        compare(X86Paging::four_level(), &case);
        compare(X86Paging::four_level().with_max_phys_bits(36).unwrap(), &case);
        compare(Ept::four_level(), &case);
        compare(
            Stage1::new(Regime::El1And0, Granule::Size4KiB, 48, LargeAddresses::None).unwrap(),
            &case,
        );
        compare(
            Stage1::new(Regime::El2, Granule::Size4KiB, 48, LargeAddresses::None).unwrap(),
            &case,
        );
        let lpa2 = LargeAddresses::Lpa2 { shareability: crate::Shareability::Inner };
        compare(Stage1::new(Regime::El1And0, Granule::Size4KiB, 52, lpa2).unwrap(), &case);
        compare(
            Stage2::new(Granule::Size4KiB, 39, LargeAddresses::None)
                .unwrap()
                .with_xnx()
                .with_output_bits(40)
                .unwrap(),
            &case,
        );
    }

    /// Random raw values: a page the last-level shortcut recognises is the
    /// leaf `kind` says, in every stage-1 configuration and MAIR layout.
    #[test]
    fn last_level_leaf_shortcut_agrees_with_kind(raw in any::<u64>()) {
        for f in stage1_configurations_with_mairs() {
            check_last_level_leaf(&f, raw);
        }
        for f in stage2_configurations() {
            check_last_level_leaf(&f, raw);
        }
        for f in x86_configurations() {
            check_last_level_leaf(&f, raw);
        }
        for f in ept_configurations() {
            check_last_level_leaf(&f, raw);
        }
    }
}

/// One-page maps remember the last attributes' encoding: alternating
/// attributes, and attributes the format refuses in between, still give
/// every page exactly the encoding of its own attributes.
#[test]
fn one_page_maps_encode_each_page_with_its_own_attributes() {
    let mut m = Machine::new(16);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let refused = Attributes {
        protection_key: 16,
        ..Attributes::DATA
    };
    let sequence = [
        ATTRS[0], ATTRS[2], refused, ATTRS[2], ATTRS[1], ATTRS[0], ATTRS[3],
    ];
    for (i, attrs) in sequence.iter().enumerate() {
        let at = 0x4000_0000 + i as u64 * KIB4;
        let result = pt.map(
            &mem,
            &mut m.frames,
            va(at),
            pa(0x10_0000 + i as u64 * KIB4),
            KIB4,
            attrs,
            MapOptions::new(),
        );
        let expected =
            crate::Format::encode_leaf(pt.format(), 0x10_0000 + i as u64 * KIB4, attrs, 0);
        match expected {
            Ok(raw) => {
                assert!(result.is_ok(), "{attrs:?}");
                assert_eq!(pt.raw_entry(&mem, va(at), 0), Some(raw), "{attrs:?}");
            }
            Err(e) => assert_eq!(result, Err(MapError::Attributes(e))),
        }
    }
}

/// Granule-sized table frames for the bulk-map comparison: the first 16
/// frames of the arena are the (possibly concatenated) root.
struct GranuleFrames {
    free: Vec<u64>,
}

impl GranuleFrames {
    const ROOT: u64 = 16;

    fn new(granule: u64, frames: u64) -> Self {
        Self {
            free: (Self::ROOT..Self::ROOT + frames)
                .rev()
                .map(|i| ARENA_BASE + i * granule)
                .collect(),
        }
    }
}

impl TableAllocator for GranuleFrames {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        self.free.pop().map(PhysAddr::new)
    }

    fn free_table(&mut self, table: PhysAddr) {
        self.free.push(table.get());
    }

    fn alloc_root(&mut self, tables: usize) -> Option<PhysAddr> {
        (tables <= Self::ROOT as usize).then(|| PhysAddr::new(ARENA_BASE))
    }

    fn free_root(&mut self, _root: PhysAddr, _tables: usize) {}
}

/// One map of a bulk-map case: first page (from the bottom of the input
/// space), pages, output address, attribute seed, contiguous hint, blocks.
type BulkMap = (u64, u64, u64, u64, bool, bool);

/// A bulk map before it meets a format: first page and pages in 1/512ths
/// of a table, which output anchor, output shift in 1/512ths of a table (or
/// the input's own alignment), attribute seed, contiguous hint, blocks.
type AbstractBulkMap = (u64, u64, usize, u64, bool, u64, bool, bool);

fn abstract_bulk_maps() -> impl Strategy<Value = Vec<AbstractBulkMap>> {
    let map = (
        0..2 * 512u64,
        1..=3 * 512u64,
        0usize..3,
        0..3 * 512u64,
        any::<bool>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    );
    proptest::collection::vec(map, 1..3)
}

/// The maps of a case in format `f`: up to three last-level tables' worth
/// of pages, with output addresses below `2^output_bits` that often cross
/// bit 48 or 50 (where LPA and LPA2 keep address bits out of place) and
/// often share the input's alignment (so the contiguous hint applies).
fn concrete_bulk_maps<F: crate::Format>(f: &F, maps: &[AbstractBulkMap]) -> Vec<BulkMap> {
    let entries = f.entries() as u64;
    let page = 1u64 << f.granule_shift();
    let span = entries * page;
    let top = 1u64 << f.output_bits();
    maps.iter()
        .map(
            |&(first, pages, anchor, shift, aligned, seed, hint, blocks)| {
                let first = first * entries / 512;
                let pages = (pages * entries / 512).max(1);
                let anchors = [0x8000_0000u64, 1 << 48, 1 << 50];
                // Below the boundary by two tables: the map crosses it.
                let base = anchors[anchor].min(top).saturating_sub(2 * span);
                let shift = if aligned {
                    first
                } else {
                    shift * entries / 512
                };
                let out = (base + shift * page).min(top.saturating_sub(pages * page));
                (first, pages, out & !(page - 1), seed, hint, blocks)
            },
        )
        .collect()
}

/// What a sequence of bulk maps leaves: each result and flush, and every
/// word of the arena (roots, tables, and the garbage of frames not taken).
fn run_bulk_maps<F: crate::Format>(f: F, maps: &[BulkMap]) -> (Vec<std::string::String>, Vec<u64>) {
    use crate::model_tests::Recorder;
    let page = 1u64 << f.granule_shift();
    let entries = f.entries();
    let frames = 24u64;
    let words: Vec<AtomicU64> = (0..(GranuleFrames::ROOT + frames) as usize * entries)
        .map(|i| AtomicU64::new(0xdead_beef_0000_0001 ^ (i as u64) << 12))
        .collect();
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &words);
    let mut alloc = GranuleFrames::new(page, frames);
    let mut pt = PageTable::new(f, &mem, &mut alloc).unwrap();
    let mut results = Vec::new();
    for &(first, pages, out, seed, hint, blocks) in maps {
        let mut options = MapOptions::new();
        if !hint {
            options = options.without_contiguous_hint();
        }
        if !blocks {
            options = options.sizes(LeafSizes::only_level(0));
        }
        let at = F::Input::from_raw(pt.format().index_to_input(first * page));
        let mut bbm = Recorder::default();
        let result = pt
            .map_live(
                &mem,
                &mut alloc,
                &mut bbm,
                at,
                pa(out),
                pages * page,
                &attributes_from(seed),
                options,
            )
            .map(|flush| {
                (
                    flush.ranges().collect::<Vec<_>>(),
                    flush.is_flush_all(),
                    flush.tables_changed(),
                )
            });
        results.push(std::format!("{result:?} {:?}", bbm.0));
    }
    let after = words.iter().map(|w| w.load(Ordering::Relaxed)).collect();
    (results, after)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..config() })]

    /// Fresh last-level tables a map fills whole or in part hold exactly
    /// what the general encoding writes (a format without
    /// `leaf_address_in_place` encodes every leaf), in every stage-1 and
    /// stage-2 configuration (4, 16 and 64 KiB granules, LPA, LPA2), with
    /// output ranges crossing the bits LPA and LPA2 keep out of place.
    #[test]
    #[cfg_attr(miri, ignore = "maps thousands of pages per case; runs natively")]
    fn bulk_map_steps_write_what_the_general_encoding_writes(
        seed in any::<u64>(),
        maps in abstract_bulk_maps(),
    ) {
        fn compare<F: crate::Format + Copy + core::fmt::Debug>(f: F, maps: &[AbstractBulkMap]) {
            let maps = concrete_bulk_maps(&f, maps);
            assert_eq!(
                run_bulk_maps(f, &maps),
                run_bulk_maps(Unmasked(f), &maps),
                "{f:?} {maps:x?}"
            );
        }
        let stage1 = stage1_configurations();
        let stage2 = stage2_configurations();
        // Every case on a few configurations, always on LPA2 and 64 KiB LPA.
        for (i, f) in stage1.iter().enumerate() {
            if (seed >> (i % 64)) & 1 == 1 || i % 6 == 3 || i % 6 == 4 {
                compare(*f, &maps);
            }
        }
        for (i, f) in stage2.iter().enumerate() {
            if (seed >> (i % 64)) & 1 == 1 || i + 2 >= stage2.len() {
                compare(*f, &maps);
            }
        }
    }
}

/// `leaf_address_in_place`'s contract at every level of `f`, for leaves of
/// `attrs` at `raw` (made aligned and below the output size).
fn check_address_in_place<F: crate::Format + core::fmt::Debug>(
    f: &F,
    raw: u64,
    attrs: &Attributes,
) {
    for level in 0..f.levels() {
        let Some(field) = f.leaf_address_in_place(level) else {
            continue;
        };
        let lowest = field & field.wrapping_neg();
        assert!(
            lowest != 0 && field.wrapping_add(lowest) & field == 0,
            "{field:#x} is not one run of bits in {f:?}"
        );
        assert!(lowest <= 1 << f.level_shift(level), "{f:?} level {level}");
        let top = 1u64
            .checked_shl(f.output_bits())
            .map_or(u64::MAX, |t| t - 1);
        let pa = raw & top & !((1u64 << f.level_shift(level)) - 1);
        let Ok(template) = f.encode_leaf(0, attrs, level) else {
            continue;
        };
        for t in [template, f.with_contiguous(template, true)] {
            assert_eq!(t & field, 0, "{f:?} level {level} {attrs:?}");
            let outside = f.with_output_address(t, pa & !field, level);
            assert_eq!(outside & field, 0, "{f:?} level {level} pa {pa:#x}");
            assert_eq!(
                f.with_output_address(t, pa, level),
                outside | (pa & field),
                "{f:?} level {level} pa {pa:#x}"
            );
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// The in-place address bits AArch64 formats report keep their promise
    /// (one run of bits, none in a template, the rest of the address
    /// encoded apart), at every level of every stage-1 and stage-2
    /// configuration: the bulk map's stepping relies on it.
    #[test]
    fn address_in_place_bits_hold_the_address_unchanged(raw in any::<u64>(), seed in any::<u64>()) {
        let attrs = attributes_from(seed);
        for f in stage1_configurations() {
            check_address_in_place(&f, raw, &attrs);
            check_address_in_place(&f, raw, &Attributes::DATA);
        }
        for f in stage2_configurations() {
            check_address_in_place(&f, raw, &attrs);
            check_address_in_place(&f, raw, &Attributes::DATA);
        }
    }
}

/// The fast loops are compiled once per table shape (`crate::shape`): a
/// walk through 4 KiB tables of 512 entries must translate exactly as the
/// same loop compiled for any geometry, in every configuration, for pages,
/// blocks, holes and addresses past the mapped range.
#[test]
fn translation_is_the_same_whatever_shape_the_walk_is_compiled_for() {
    fn check<F: crate::Format + Copy + core::fmt::Debug>(f: F) {
        // Other geometries only ever run the loop compiled for any shape.
        if crate::shape::ShapeTag::of(&f) == crate::shape::ShapeTag::Any {
            return;
        }
        let mut m = Machine::new(16);
        let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
        let mut pt = PageTable::new(f, &mem, &mut m.frames).unwrap();
        let g = 1u64 << f.granule_shift();
        let block = 1u64 << f.level_shift(1);
        let base = 1u64 << 30;
        // Attributes every configuration can express (without NX, a page
        // is executable).
        let attrs = ATTRS
            .iter()
            .find(|a| f.encode_leaf(0, a, 0).is_ok())
            .copied()
            .unwrap();
        let mut map = |at: u64, pa: u64, len: u64| {
            let _ = pt
                .map_live(
                    &mem,
                    &mut m.frames,
                    &mut Breaks::default(),
                    F::Input::from_raw(f.index_to_input(at)),
                    PhysAddr::new(pa),
                    len,
                    &attrs,
                    MapOptions::new(),
                )
                .unwrap();
        };
        map(base, 0, 3 * g);
        map(base + block, block, block);
        let offsets = [
            0,
            g / 2,
            g + 8,
            3 * g - 8,
            3 * g,
            block,
            block + block / 3 / 8 * 8,
            2 * block - 8,
            2 * block,
            7 << 30,
        ];
        let fixed = pt.shape;
        for off in offsets {
            let at = F::Input::from_raw(f.index_to_input(base + off));
            pt.shape = fixed;
            let (t, a) = (pt.translate(&mem, at), pt.translate_addr(&mem, at));
            pt.shape = crate::shape::ShapeTag::Any;
            let (any_t, any_a) = (pt.translate(&mem, at), pt.translate_addr(&mem, at));
            assert_eq!(t, any_t, "{off:#x} in {f:?}");
            assert_eq!(a, any_a, "{off:#x} in {f:?}");
        }
    }
    // Under miri, the first configuration of each kind.
    let few = if cfg!(miri) { 1 } else { usize::MAX };
    for_each_configuration!(f, few => {
        check(f);
    });
}

/// A hypervisor's direct map and the safe slice reach the same memory in
/// the same way: the same edits through either give the same results and
/// leave the same words in the same table frames.
#[test]
fn editing_through_a_direct_map_matches_editing_through_a_slice() {
    use std::format;
    use std::string::String;

    // Under miri, 16 pages instead of a 2 MiB block split into 512.
    const BIG: u64 = if cfg!(miri) { 16 * KIB4 } else { MIB2 };

    fn run(mem: &impl PhysMem, frames: &mut Frames) -> Vec<String> {
        let mut out = Vec::new();
        let mut pt = PageTable::new(X86Paging::four_level(), mem, frames).unwrap();
        let base = 0x7f00_0000_0000;
        let attrs = Attributes::DATA;
        let mut log = |s: String| out.push(s);
        log(format!(
            "{:?}",
            pt.map(
                mem,
                frames,
                va(base),
                pa(0),
                BIG + 3 * KIB4,
                &attrs,
                MapOptions::new()
            )
        ));
        log(format!(
            "{:?}",
            pt.map(
                mem,
                frames,
                va(base),
                pa(0),
                KIB4,
                &attrs,
                MapOptions::new()
            )
        ));
        log(format!(
            "{:?}",
            pt.protect(mem, frames, va(base + KIB4), BIG, &Attributes::READ_ONLY)
        ));
        log(format!(
            "{:?}",
            pt.unmap(mem, frames, va(base + 2 * KIB4), KIB4)
        ));
        for off in [0, KIB4, 2 * KIB4, BIG - 8, BIG + KIB4, 4 * BIG] {
            log(format!("{:?}", pt.translate(mem, va(base + off))));
            log(format!("{:?}", pt.translate_addr(mem, va(base + off))));
        }
        log(format!("{:?}", pt.unmap(mem, frames, va(base), 4 * BIG)));
        out
    }

    let frames = if cfg!(miri) { 8 } else { 16 };
    let mut a = Machine::new(frames);
    let mut b = Machine::new(frames);
    let slice = SliceMem::new(pa(ARENA_BASE), &a.words);
    // SAFETY: `b.words` is 8-aligned, `len * 8` bytes long, outlives
    // `direct` (both live to the end of the test, and the vector is never
    // resized), and is only ever accessed through atomics.
    #[allow(unsafe_code)]
    let direct = unsafe {
        crate::DirectMap::new(
            pa(ARENA_BASE),
            core::ptr::NonNull::from(b.words.as_slice()).cast::<u8>(),
            (b.words.len() * 8) as u64,
        )
    };
    let through_slice = run(&slice, &mut a.frames);
    let through_direct = run(&direct, &mut b.frames);
    assert_eq!(through_slice, through_direct);
    assert!(through_slice.iter().any(|r| r.contains("Ok")));
    assert_eq!(a.frames.live, b.frames.live);
    let words =
        |m: &Machine| -> Vec<u64> { m.words.iter().map(|w| w.load(Ordering::Relaxed)).collect() };
    assert_eq!(words(&a), words(&b));
}

// ---- Hardware accessed and dirty bits --------------------------------------

/// x86 paging's accessed and dirty bits.
const X86_A: u64 = 1 << 5;
const X86_D: u64 = 1 << 6;

/// The entry at `level` on the walk to `input` in 512-entry tables (x86
/// paging and EPT), as hardware would reach it to set A/D.
fn entry_at<'m>(mem: &'m SliceMem<'_>, root: PhysAddr, input: u64, level: u8) -> &'m AtomicU64 {
    let mut table = root.get();
    let mut l = 3u8;
    loop {
        let index = (input >> (12 + 9 * u32::from(l))) & 0x1ff;
        let entry = &mem.table(PhysAddr::new(table), 512).unwrap()[index as usize];
        if l == level {
            return entry;
        }
        table = entry.load(Ordering::Relaxed) & 0x000f_ffff_ffff_f000;
        l -= 1;
    }
}

/// What hardware does on an access: sets bits in a leaf.
fn hardware_sets(mem: &SliceMem<'_>, root: PhysAddr, input: u64, level: u8, bits: u64) {
    let _ = entry_at(mem, root, input, level).fetch_or(bits, Ordering::Relaxed);
}

fn bits_at(mem: &SliceMem<'_>, root: PhysAddr, input: u64, level: u8, bits: u64) -> u64 {
    entry_at(mem, root, input, level).load(Ordering::Relaxed) & bits
}

/// Maps `len` bytes of data at `at` to physical `at + 1 GiB`.
fn map_data(
    pt: &mut PageTable<X86Paging>,
    mem: &SliceMem<'_>,
    frames: &mut Frames,
    at: u64,
    len: u64,
    sizes: LeafSizes,
) {
    let options = MapOptions::new().sizes(sizes);
    let _ = pt
        .map(
            mem,
            frames,
            va(at),
            pa(at + GIB1),
            len,
            &Attributes::DATA,
            options,
        )
        .unwrap();
}

/// The pages of a 512-page table the A/D tests check: all of them, or under
/// miri (where each walk is slow) a spread including both ends.
fn checked_pages() -> impl Iterator<Item = u64> {
    (0..512u64).filter(|p| !cfg!(miri) || p % 61 == 0 || *p == 511)
}

/// The bits a page of the 512-page pattern below gets: none, A, or A and D.
fn pattern_bits(page: u64) -> u64 {
    [0, X86_A, X86_A | X86_D][(page % 3) as usize]
}

#[test]
#[cfg_attr(
    miri,
    ignore = "whole 512-entry tables, 17-29 s under the interpreter; safe code, runs natively in the test stage"
)]
fn protect_keeps_the_accessed_and_dirty_bits_hardware_set() {
    let mut m = Machine::new(16);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let base = 0x4000_0000;
    // A last-level table of pages (the grouped protect path) and a 2 MiB
    // leaf (the general path).
    map_data(
        &mut pt,
        &mem,
        &mut m.frames,
        base,
        MIB2,
        LeafSizes::only(PageSize::Size4K),
    );
    map_data(
        &mut pt,
        &mem,
        &mut m.frames,
        base + MIB2,
        MIB2,
        LeafSizes::ANY,
    );
    for page in checked_pages() {
        hardware_sets(&mem, pt.root(), base + page * KIB4, 0, pattern_bits(page));
    }
    hardware_sets(&mem, pt.root(), base + MIB2, 1, X86_A | X86_D);
    for attrs in [Attributes::READ_ONLY, Attributes::DATA] {
        let flush = pt
            .protect(&mem, &mut m.frames, va(base), 2 * MIB2, &attrs)
            .unwrap();
        assert!(flush.covers(base) && flush.covers(base + MIB2));
        for page in checked_pages() {
            let at = base + page * KIB4;
            assert_eq!(
                bits_at(&mem, pt.root(), at, 0, X86_A | X86_D),
                pattern_bits(page),
                "page {page}"
            );
            assert_eq!(
                pt.translate(&mem, va(at)).unwrap().attributes.access,
                attrs.access
            );
        }
        assert_eq!(
            bits_at(&mem, pt.root(), base + MIB2, 1, X86_A | X86_D),
            X86_A | X86_D
        );
        assert_eq!(
            pt.translate(&mem, va(base + MIB2))
                .unwrap()
                .attributes
                .access,
            attrs.access
        );
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "whole 512-entry tables, 17-29 s under the interpreter; safe code, runs natively in the test stage"
)]
fn a_split_passes_the_large_leafs_accessed_and_dirty_bits_to_every_piece() {
    let mut m = Machine::new(16);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let base = 0x4000_0000;
    map_data(&mut pt, &mem, &mut m.frames, base, 2 * MIB2, LeafSizes::ANY);
    hardware_sets(&mem, pt.root(), base, 1, X86_A | X86_D);
    hardware_sets(&mem, pt.root(), base + MIB2, 1, X86_A);
    // A protect splits the first leaf, an unmap the second.
    let _ = pt
        .protect(
            &mem,
            &mut m.frames,
            va(base + 5 * KIB4),
            KIB4,
            &Attributes::READ_ONLY,
        )
        .unwrap();
    let _ = pt
        .unmap(&mem, &mut m.frames, va(base + MIB2 + 7 * KIB4), KIB4)
        .unwrap();
    for page in checked_pages() {
        let at = base + page * KIB4;
        assert_eq!(pt.translate(&mem, va(at)).unwrap().size, KIB4);
        assert_eq!(
            bits_at(&mem, pt.root(), at, 0, X86_A | X86_D),
            X86_A | X86_D,
            "page {page}"
        );
        if page != 7 {
            assert_eq!(
                bits_at(&mem, pt.root(), at + MIB2, 0, X86_A | X86_D),
                X86_A,
                "page {page}"
            );
        }
    }
}

#[test]
fn a_merge_keeps_the_union_of_its_leaves_accessed_and_dirty_bits() {
    let mut m = Machine::new(16);
    let mut pt = x86(&mut m);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let base = 0x4000_0000;
    map_data(
        &mut pt,
        &mem,
        &mut m.frames,
        base,
        MIB2,
        LeafSizes::only(PageSize::Size4K),
    );
    hardware_sets(&mem, pt.root(), base + 7 * KIB4, 0, X86_D);
    hardware_sets(&mem, pt.root(), base + 300 * KIB4, 0, X86_A);
    let _ = pt.merge(&mem, &mut m.frames, va(base), MIB2).unwrap();
    assert_eq!(pt.translate(&mem, va(base)).unwrap().size, MIB2);
    assert_eq!(
        bits_at(&mem, pt.root(), base, 1, X86_A | X86_D),
        X86_A | X86_D
    );
}

#[test]
fn ept_protect_and_split_keep_the_accessed_and_dirty_flags() {
    const EPT_A: u64 = 1 << 8;
    const EPT_D: u64 = 1 << 9;
    let mut m = Machine::new(16);
    let mem = SliceMem::new(PhysAddr::new(ARENA_BASE), &m.words);
    let mut ept = PageTable::new(Ept::four_level(), &mem, &mut m.frames).unwrap();
    let rw = Attributes::new(Access::READ | Access::WRITE);
    let _ = ept
        .map(
            &mem,
            &mut m.frames,
            GuestPhysAddr::new(0),
            pa(MIB2),
            MIB2,
            &rw,
            MapOptions::new(),
        )
        .unwrap();
    hardware_sets(&mem, ept.root(), 0, 1, EPT_A | EPT_D);
    let _ = ept
        .protect(
            &mem,
            &mut m.frames,
            GuestPhysAddr::new(0),
            MIB2,
            &Attributes::READ_ONLY,
        )
        .unwrap();
    assert_eq!(
        bits_at(&mem, ept.root(), 0, 1, EPT_A | EPT_D),
        EPT_A | EPT_D
    );
    let _ = ept
        .protect(&mem, &mut m.frames, GuestPhysAddr::new(KIB4), KIB4, &rw)
        .unwrap();
    for page in checked_pages() {
        assert_eq!(
            bits_at(&mem, ept.root(), page * KIB4, 0, EPT_A | EPT_D),
            EPT_A | EPT_D,
            "page {page}"
        );
    }
}

/// The contract of `Format::hardware_bits`: they change no entry's kind, hint
/// or break verdict, and no leaf the format encodes has them.
#[test]
fn hardware_bits_change_no_kind_and_are_never_encoded() {
    fn check<F: crate::Format>(format: &F, raws: &[u64]) {
        let hw = format.hardware_bits();
        for &raw in raws {
            for level in 0..format.levels() {
                for bits in [hw, hw & hw.wrapping_neg()] {
                    let other = raw ^ bits;
                    assert_eq!(
                        format.kind(raw, level),
                        format.kind(other, level),
                        "{raw:#x} at {level}"
                    );
                    assert_eq!(format.is_contiguous(raw), format.is_contiguous(other));
                }
            }
        }
        for seed in 0..if cfg!(miri) { 8 } else { 64 } {
            let attrs = attributes_from(seed);
            for level in 0..format.levels() {
                if let Ok(leaf) = format.encode_leaf(0, &attrs, level) {
                    assert_eq!(leaf & hw, 0, "{attrs:?} at {level}");
                }
            }
        }
    }
    let raws = interesting_raws();
    let raws = if cfg!(miri) { &raws[..16] } else { &raws[..] };
    for_each_configuration!(f => {
        check(&f, raws);
    });
}

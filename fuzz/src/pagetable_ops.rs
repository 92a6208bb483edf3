//! The `pagetable_ops` target: map / unmap / protect / merge sequences on
//! live tables of x86-64 paging or one of the AArch64 stage-1 / stage-2
//! configurations (the first byte picks), with table frames running out at
//! random, against a page -> (frame, attributes) model of a window.
//!
//! After every operation: each page of the window translates as the model
//! says; a translation that changed is covered by the returned flush or by
//! a break-before-make invalidation (x86 never asks for one); a failed
//! operation left every live table word as it was and asked for no
//! invalidation; every contiguous hint marks a whole, aligned run of equal
//! leaves; the allocator has out exactly the tables the tree holds; the
//! update never held more new tables at once than `max_new_tables` said.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};

use hvmem_pagetable::aarch64::{Granule, LargeAddresses, Regime, Stage1, Stage2, VaRange};
use hvmem_pagetable::{
    Access, Attributes, Break, BreakBeforeMake, Descriptor, Format, InputAddress, LeafSizes,
    MapOptions, MemoryType, PageTable, Shareability, SliceMem, TableAllocator, Visit, X86Paging,
};
use hvmem_types::PhysAddr;

use crate::bytes::Bytes;

/// 1 MiB aligned: the first 16 frames hold a concatenated root.
const BASE: u64 = 0x10_0000;
const ROOT_FRAMES: u64 = 16;
const FRAMES: u64 = 40;
/// x86: a window straddling a 2 MiB boundary in the upper half.
const X86_WINDOW: u64 = 0xffff_8880_001f_f000 - 0x1f_f000;

struct Frames {
    free: Vec<u64>,
    live: BTreeSet<u64>,
    budget: usize,
    root_out: bool,
    /// Frames drawn during the current update and not returned unused, and
    /// the most at any time: what a `FrameCache` would have had to hold.
    drawn: usize,
    peak: usize,
}

impl TableAllocator for Frames {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        if self.budget == 0 {
            return None;
        }
        self.budget -= 1;
        let f = self.free.pop()?;
        assert!(self.live.insert(f), "frame {f:#x} handed out twice");
        self.drawn += 1;
        self.peak = self.peak.max(self.drawn);
        Some(PhysAddr::new(f))
    }

    fn return_unused(&mut self, frame: PhysAddr) {
        self.drawn -= 1;
        self.free_table(frame);
    }

    fn free_table(&mut self, table: PhysAddr) {
        assert!(self.live.remove(&table.get()), "table {table} freed twice");
        self.free.push(table.get());
    }

    fn alloc_root(&mut self, tables: usize) -> Option<PhysAddr> {
        assert!(tables <= 16 && !self.root_out, "root of {tables} tables");
        self.root_out = true;
        Some(PhysAddr::new(BASE))
    }
}

/// Records the invalidations an update asked for.
struct Recorder(Vec<Break>);

impl BreakBeforeMake for Recorder {
    fn invalidate(&mut self, broken: &Break) {
        self.0.push(*broken);
    }
}

/// Runs one input. Panics on any disagreement with the model.
pub fn run(data: &[u8]) {
    let mut input = Bytes::new(data);
    let lpa2 = LargeAddresses::Lpa2 {
        shareability: Shareability::Inner,
    };
    let s1_attrs = [
        Attributes::DATA,
        Attributes::READ_ONLY,
        Attributes::new(Access::READ | Access::USER | Access::USER_EXECUTE),
        Attributes::DATA.with_memory_type(MemoryType::Device),
    ];
    let s2_attrs = [
        Attributes::DATA,
        Attributes::READ_ONLY,
        Attributes::new(Access::READ | Access::EXECUTE | Access::USER_EXECUTE),
        Attributes::DATA.with_memory_type(MemoryType::Device),
    ];
    let stage1 = |g, bits, large| Stage1::new(Regime::El1And0, g, bits, large).ok();
    let stage2 = |g, bits, large| Stage2::new(g, bits, large).ok().map(Stage2::with_xnx);
    match input.u8() % 10 {
        0 => run_format(
            X86Paging::four_level(),
            [
                Attributes::DATA,
                Attributes::CODE,
                Attributes::READ_ONLY,
                Attributes::DATA.with_memory_type(MemoryType::Uncacheable),
            ],
            Some(X86_WINDOW),
            &mut input,
        ),
        1 => stage1(Granule::Size4KiB, 48, LargeAddresses::None)
            .into_iter()
            .for_each(|f| run_format(f, s1_attrs, None, &mut input)),
        2 => stage1(Granule::Size16KiB, 47, LargeAddresses::None)
            .into_iter()
            .for_each(|f| run_format(f, s1_attrs, None, &mut input)),
        3 => stage1(Granule::Size64KiB, 42, LargeAddresses::None)
            .into_iter()
            .for_each(|f| run_format(f, s1_attrs, None, &mut input)),
        4 => stage1(Granule::Size4KiB, 52, lpa2)
            .and_then(|f| f.with_va_range(VaRange::Upper).ok())
            .into_iter()
            .for_each(|f| run_format(f, s1_attrs, None, &mut input)),
        5 => Stage1::new(Regime::El2, Granule::Size4KiB, 39, LargeAddresses::None)
            .ok()
            .into_iter()
            .for_each(|f| {
                let el2 = [
                    Attributes::DATA,
                    Attributes::READ_ONLY,
                    Attributes::CODE,
                    Attributes::DATA.with_memory_type(MemoryType::Device),
                ];
                run_format(f, el2, None, &mut input)
            }),
        6 => stage2(Granule::Size4KiB, 40, LargeAddresses::None)
            .into_iter()
            .for_each(|f| run_format(f, s2_attrs, None, &mut input)),
        7 => stage2(Granule::Size16KiB, 40, LargeAddresses::None)
            .into_iter()
            .for_each(|f| run_format(f, s2_attrs, None, &mut input)),
        8 => stage2(Granule::Size64KiB, 52, LargeAddresses::Lpa)
            .into_iter()
            .for_each(|f| run_format(f, s2_attrs, None, &mut input)),
        _ => stage2(Granule::Size4KiB, 36, LargeAddresses::None)
            .map(Stage2::with_fwb)
            .into_iter()
            .for_each(|f| run_format(f, s2_attrs, None, &mut input)),
    }
}

fn snapshot(words: &[AtomicU64], live: &BTreeSet<u64>, entries: usize, root: usize) -> Vec<u64> {
    let mut v: Vec<u64> = words[..root]
        .iter()
        .map(|w| w.load(Ordering::Relaxed))
        .collect();
    for &f in live {
        let first = ((f - BASE) / 8) as usize;
        v.extend(
            words[first..first + entries]
                .iter()
                .map(|w| w.load(Ordering::Relaxed)),
        );
    }
    v
}

/// One input against format `f`: `window` is x86's window start, or `None`
/// for the last 1024 pages of the input space.
fn run_format<F: Format + Copy>(
    f: F,
    attrs_set: [Attributes; 4],
    window: Option<u64>,
    input: &mut Bytes<'_>,
) {
    let page_size = 1u64 << f.granule_shift();
    let entries = f.entries();
    let words: Vec<AtomicU64> = (0..(ROOT_FRAMES + FRAMES) as usize * entries)
        .map(|i| AtomicU64::new(i as u64 * 0x9e37_79b9))
        .collect();
    let mem = SliceMem::new(PhysAddr::new(BASE), &words);
    let mut frames = Frames {
        free: (ROOT_FRAMES..ROOT_FRAMES + FRAMES)
            .map(|i| BASE + i * page_size)
            .collect(),
        live: BTreeSet::new(),
        budget: usize::MAX,
        root_out: false,
        drawn: 0,
        peak: 0,
    };
    let mut pt = PageTable::new(f, &mem, &mut frames).unwrap();
    let root_words = if f.root_tables() > 1 {
        f.root_entries()
    } else {
        0
    };
    let top = f.levels() - 1;
    let space = (f.root_entries() as u64) << f.level_shift(top);
    let pages_in_window: u64 = 1024;
    let window_index = match window {
        Some(w) => f.input_to_index(w).unwrap(),
        None => space - pages_in_window * page_size,
    };
    let mut model: Vec<Option<(u64, Attributes)>> = vec![None; pages_in_window as usize];
    let mut bbm = Recorder(Vec::new());
    let block = (entries as u64).min(pages_in_window);

    let mut steps = 0;
    while !input.is_empty() && steps < 48 {
        steps += 1;
        bbm.0.clear();
        let tag = input.u8();
        let page = u64::from(input.u16()) % pages_in_window;
        let pages = (u64::from(input.u16()) % 700 + 1).min(pages_in_window - page);
        let at = |page: u64| F::Input::from_raw(f.index_to_input(window_index + page * page_size));
        let len = pages * page_size;
        frames.budget = if tag & 0x80 != 0 {
            usize::from(input.u8() % 4)
        } else {
            usize::MAX
        };
        let bound = pt.max_new_tables(at(page), len);
        (frames.drawn, frames.peak) = (0, 0);
        let before_model = model.clone();
        let before = snapshot(&words, &frames.live, entries, root_words);
        let result = match tag % 5 {
            0 | 1 => {
                let raw_frame = u64::from(input.u16());
                let frame = if tag & 0x40 != 0 {
                    raw_frame & !(block - 1)
                } else if tag & 0x20 != 0 {
                    raw_frame & !31
                } else {
                    raw_frame
                };
                let attrs = attrs_set[usize::from(input.u8()) % attrs_set.len()];
                let flags = input.u8();
                let sizes = [
                    LeafSizes::ANY,
                    LeafSizes::up_to_level(0),
                    LeafSizes::up_to_level(1),
                ][usize::from(flags % 3)];
                let mut opts = MapOptions::new().sizes(sizes);
                if flags & 0x10 != 0 {
                    opts = opts.replacing();
                }
                if flags & 0x20 != 0 {
                    opts = opts.merging();
                }
                if flags & 0x40 != 0 {
                    opts = opts.without_contiguous_hint();
                }
                let r = pt.map_live(
                    &mem,
                    &mut frames,
                    &mut bbm,
                    at(page),
                    PhysAddr::new(frame * page_size),
                    len,
                    &attrs,
                    opts,
                );
                if r.is_ok() {
                    let overlapped = model[page as usize..(page + pages) as usize]
                        .iter()
                        .any(Option::is_some);
                    assert!(opts.replace || !overlapped, "mapped over existing pages");
                    for i in 0..pages {
                        model[(page + i) as usize] = Some((frame + i, attrs));
                    }
                }
                r.ok()
            }
            2 => {
                let r = pt.unmap_live(&mem, &mut frames, &mut bbm, at(page), len);
                if r.is_ok() {
                    model[page as usize..(page + pages) as usize].fill(None);
                }
                r.ok()
            }
            3 => {
                let attrs = attrs_set[usize::from(input.u8()) % attrs_set.len()];
                let r = pt.protect_live(&mem, &mut frames, &mut bbm, at(page), len, &attrs);
                if r.is_ok() {
                    for (_, a) in model[page as usize..(page + pages) as usize]
                        .iter_mut()
                        .flatten()
                    {
                        *a = attrs;
                    }
                }
                r.ok()
            }
            _ => pt
                .merge_live(&mem, &mut frames, &mut bbm, at(page), len)
                .ok(),
        };
        assert!(
            frames.peak <= bound,
            "drew {} tables, max_new_tables said {bound}",
            frames.peak
        );
        match result {
            Some(flush) => {
                for (i, (old, new)) in before_model.iter().zip(&model).enumerate() {
                    let input = f.index_to_input(window_index + i as u64 * page_size);
                    if old.is_some() && old != new {
                        assert!(
                            flush.covers(input)
                                || bbm.0.iter().any(|b| b.start <= input && input < b.end),
                            "page {i} changed but neither flushed nor invalidated"
                        );
                    }
                }
            }
            None => {
                assert!(
                    bbm.0.is_empty(),
                    "a failed update asked for an invalidation"
                );
                assert!(
                    snapshot(&words, &frames.live, entries, root_words) == before,
                    "a failed update changed the tables"
                );
            }
        }
        for (i, want) in model.iter().enumerate() {
            let got = pt.translate(&mem, at(i as u64));
            match (want, got) {
                (None, Err(_)) => {}
                (Some((frame, attrs)), Ok(t)) => {
                    assert_eq!(
                        (t.output.get() / page_size, t.attributes),
                        (*frame, *attrs),
                        "page {i}"
                    );
                }
                (want, got) => panic!("page {i}: model {want:?}, table {got:?}"),
            }
        }
        check_runs(&pt, &mem, at(0), pages_in_window * page_size);
        let mut tables = usize::from(f.root_tables() == 1);
        // x86: the two canonical halves; AArch64: the whole input space.
        let halves = match window {
            Some(_) => [(0, 1u64 << 47), (0xffff_8000_0000_0000, 1 << 47)],
            None => [(f.index_to_input(0), space), (f.index_to_input(0), 0)],
        };
        for (start, len) in halves {
            pt.visit(&mem, F::Input::from_raw(start), len, |v| {
                tables += usize::from(matches!(v, Visit::Table { .. }));
                ControlFlow::Continue(())
            })
            .unwrap();
        }
        assert_eq!(tables, frames.live.len(), "table frames leaked or lost");
    }
}

/// Every contiguous hint marks a whole, aligned run of leaves with
/// consecutive output addresses and equal attributes.
fn check_runs<F: Format>(pt: &PageTable<F>, mem: &SliceMem<'_>, start: F::Input, len: u64) {
    let f = pt.format();
    let mut leaves = Vec::new();
    pt.visit(mem, start, len, |v| {
        if let Visit::Leaf { at, level, .. } = v {
            leaves.push((at, level));
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    for (at, level) in leaves {
        let raw = pt.raw_entry(mem, F::Input::from_raw(at), level).unwrap();
        if !f.is_contiguous(raw) {
            continue;
        }
        let n = 1u64 << f.contiguous_run(level);
        let size = 1u64 << f.level_shift(level);
        let index = f.input_to_index(at).unwrap();
        let first = index & !(n * size - 1);
        let entry = |i: u64| {
            let raw = pt
                .raw_entry(
                    mem,
                    F::Input::from_raw(f.index_to_input(first + i * size)),
                    level,
                )
                .unwrap();
            (f.is_contiguous(raw), f.decode(raw, level))
        };
        let (hinted, head) = entry(0);
        assert!(n > 1 && hinted, "hint at {at:#x} outside a hinted run");
        if first != index {
            continue;
        }
        let Descriptor::Leaf(pa0, attrs0) = head else {
            panic!("run at {first:#x} starts with a non-leaf");
        };
        assert_eq!(pa0 & (n * size - 1), 0, "run output not aligned");
        for i in 1..n {
            assert_eq!(
                entry(i),
                (true, Descriptor::Leaf(pa0 + i * size, attrs0)),
                "run at {first:#x}: entry {i}"
            );
        }
    }
}

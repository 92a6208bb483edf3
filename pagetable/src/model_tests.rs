//! The model-based property test over every AArch64 configuration (granule
//! x stage x input size), with the break-before-make checker, and the
//! contiguous-hint rules on live tables.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use core::ops::ControlFlow;
use core::sync::atomic::{AtomicU64, Ordering};
use std::boxed::Box;
use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use crate::aarch64::{Granule, LargeAddresses, Regime, Stage1, Stage2, VaRange};
use crate::bbm::trace::{self, Event};
use crate::{
    Access, Attributes, Break, BreakBeforeMake, Descriptor, Format, InputAddress, LeafSizes,
    MapError, MapOptions, MemoryType, PageTable, PhysMem, ProtectError, Shareability, SliceMem,
    TableAllocator, TlbFlush, TranslateError, UnmapError, Visit,
};

const BASE: u64 = 0x1000_0000;
/// Frames reserved at the start of the arena for a concatenated root.
const ROOT_FRAMES: u64 = 16;

/// Granule-sized table frames from an arena; the first 16 form the root.
struct Frames {
    free: Vec<u64>,
    live: BTreeSet<u64>,
    root_out: bool,
    cap: usize,
    /// Frames drawn during the current update and not returned unused, and
    /// the most at any time: what a `FrameCache` would have had to hold.
    drawn: usize,
    peak: usize,
}

impl Frames {
    fn new(granule: u64, frames: u64) -> Self {
        Self {
            free: (ROOT_FRAMES..ROOT_FRAMES + frames)
                .rev()
                .map(|i| BASE + i * granule)
                .collect(),
            live: BTreeSet::new(),
            root_out: false,
            cap: usize::MAX,
            drawn: 0,
            peak: 0,
        }
    }
}

impl TableAllocator for Frames {
    fn alloc_table(&mut self) -> Option<hvmem_types::PhysAddr> {
        if self.live.len() >= self.cap {
            return None;
        }
        let f = self.free.pop()?;
        assert!(self.live.insert(f));
        self.drawn += 1;
        self.peak = self.peak.max(self.drawn);
        Some(hvmem_types::PhysAddr::new(f))
    }

    fn return_unused(&mut self, frame: hvmem_types::PhysAddr) {
        self.drawn -= 1;
        self.free_table(frame);
    }

    fn free_table(&mut self, table: hvmem_types::PhysAddr) {
        assert!(self.live.remove(&table.get()), "double free of {table}");
        self.free.push(table.get());
    }

    fn alloc_root(&mut self, tables: usize) -> Option<hvmem_types::PhysAddr> {
        assert!(tables <= 16 && !self.root_out);
        self.root_out = true;
        Some(hvmem_types::PhysAddr::new(BASE))
    }

    fn free_root(&mut self, root: hvmem_types::PhysAddr, tables: usize) {
        if tables == 1 {
            self.free_table(root);
        } else {
            assert!(self.root_out && root.get() == BASE);
            self.root_out = false;
        }
    }
}

/// A stack of free table frames (physical addresses): the simplest
/// `TableAllocator`, handing back the last frame freed first.
pub(crate) struct FrameStack(pub(crate) Vec<u64>);

impl crate::TableAllocator for FrameStack {
    fn alloc_table(&mut self) -> Option<hvmem_types::PhysAddr> {
        self.0.pop().map(hvmem_types::PhysAddr::new)
    }

    fn free_table(&mut self, table: hvmem_types::PhysAddr) {
        self.0.push(table.get());
    }
}

/// The caller's half of break-before-make: records what it was asked.
#[derive(Default)]
pub(crate) struct Recorder(pub(crate) Vec<Break>);

impl BreakBeforeMake for Recorder {
    fn invalidate(&mut self, broken: &Break) {
        self.0.push(*broken);
    }
}

/// Replays recorded entry writes and invalidations and checks that no valid
/// entry was replaced by one that needs break-before-make, directly or
/// through an invalid entry without an invalidation of its range between.
/// `flushes` are the `TlbFlush`es the caller carried out after each update
/// (in the log, an update's flush follows its events).
pub(crate) struct BbmChecker {
    /// Entries broken and not yet made again: last valid value, its input
    /// range, and whether that range has been invalidated since.
    broken: BTreeMap<usize, (u64, u8, u64, u64, bool)>,
}

impl BbmChecker {
    pub(crate) fn new() -> Self {
        Self {
            broken: BTreeMap::new(),
        }
    }

    pub(crate) fn replay<F: Format>(&mut self, f: &F, events: &[Event]) -> Result<(), String> {
        for e in events {
            match *e {
                Event::Fresh { first, bytes } => {
                    self.broken
                        .retain(|&k, _| !(first..first + bytes).contains(&k));
                }
                Event::Invalidate(b) => self.invalidated(b.start, b.end),
                Event::Write {
                    entry,
                    level,
                    at,
                    size,
                    old,
                    new,
                } => {
                    let valid = |raw| f.decode(raw, level) != Descriptor::Invalid;
                    if valid(old) && valid(new) && f.needs_break(old, new, level) {
                        return Err(format!(
                            "{at:#x} level {level}: {old:#x} replaced by {new:#x} in one store"
                        ));
                    }
                    if valid(new) {
                        if let Some((last, l, s, _, done)) = self.broken.remove(&entry) {
                            if l == level && f.needs_break(last, new, level) && !done {
                                return Err(format!(
                                    "{s:#x} level {level}: {last:#x} -> invalid -> {new:#x} without an invalidation"
                                ));
                            }
                        }
                    } else if valid(old) {
                        self.broken.insert(entry, (old, level, at, size, false));
                    }
                }
            }
        }
        Ok(())
    }

    fn invalidated(&mut self, start: u64, end: u64) {
        for (_, _, at, size, done) in self.broken.values_mut() {
            if *at < end && start < at.saturating_add(*size) {
                *done = true;
            }
        }
    }

    /// The caller carried out `flush` after the update.
    pub(crate) fn flushed(&mut self, flush: &TlbFlush) {
        if flush.is_flush_all() {
            self.invalidated(0, u64::MAX);
        }
        for (s, e) in flush.ranges() {
            self.invalidated(s, e);
        }
    }
}

/// One configuration under test.
pub(crate) trait Config: Format + Copy + core::fmt::Debug {
    /// Four attribute sets the format can express, differing in permissions
    /// and (the last) in memory type.
    fn attrs(&self) -> [Attributes; 4];
}

impl Config for Stage1 {
    fn attrs(&self) -> [Attributes; 4] {
        let user = if self.regime() == Regime::El2 {
            Access::READ | Access::EXECUTE
        } else {
            Access::READ | Access::USER | Access::USER_EXECUTE
        };
        [
            Attributes::DATA,
            Attributes::READ_ONLY,
            Attributes::new(user),
            Attributes::DATA.with_memory_type(MemoryType::Device),
        ]
    }
}

impl Config for Stage2 {
    fn attrs(&self) -> [Attributes; 4] {
        [
            Attributes::DATA,
            Attributes::READ_ONLY,
            Attributes::new(Access::READ | Access::EXECUTE | Access::USER_EXECUTE),
            Attributes::DATA.with_memory_type(MemoryType::Device),
        ]
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
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
    Starve(usize),
}

/// Operations over a window of `pages` granule pages; `run` and `block` are
/// the contiguous-run and last-level-table lengths in pages.
pub(crate) fn op(pages: u64, run: u64, block: u64) -> impl Strategy<Value = Op> {
    let span = (
        0..pages,
        prop_oneof![2 => Just(1u64), 2 => Just(run), 1 => Just(block), 3 => 1u64..block + run],
    );
    let align = move |page: u64, frame: u64, how: u64| match how % 3 {
        0 => (page & !(block - 1), frame & !(block - 1)),
        1 => (page & !(run - 1), frame & !(run - 1)),
        _ => (page, frame),
    };
    prop_oneof![
        4 => (span.clone(), 0u64..4 * block, 0usize..4, 0u8..3, any::<bool>(), any::<bool>(), 0u64..3)
            .prop_map(move |((page, pages), frame, attrs, sizes, replace, merge, how)| {
                let (page, frame) = align(page, frame, how);
                Op::Map { page, pages, frame, attrs, sizes, replace, merge }
            }),
        2 => (span.clone(), 0u64..2).prop_map(move |((page, pages), how)| {
            let (page, _) = align(page, 0, how);
            Op::Unmap { page, pages }
        }),
        2 => (span.clone(), 0usize..4).prop_map(|((page, pages), attrs)| Op::Protect { page, pages, attrs }),
        1 => span.prop_map(|(page, pages)| Op::Merge { page, pages }),
        1 => (0usize..3).prop_map(Op::Starve),
    ]
}

/// Checks that every contiguous hint in the window marks a whole, aligned
/// run of valid leaves with contiguous output addresses and equal
/// attributes (paging-formats.md B.8).
fn check_runs<F: Format>(pt: &PageTable<F>, mem: &impl PhysMem, start: u64, len: u64) {
    let f = pt.format();
    let mut leaves = Vec::new();
    pt.visit(mem, F::Input::from_raw(start), len, |v| {
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
        assert!(n > 1, "hint at level {level}, which has no runs");
        let size = 1u64 << f.level_shift(level);
        let index = f.input_to_index(at).unwrap();
        let first = index & !(n * size - 1);
        let head = pt
            .raw_entry(mem, F::Input::from_raw(f.index_to_input(first)), level)
            .unwrap();
        assert!(
            f.is_contiguous(head),
            "run at {first:#x}: entry 0 lacks the hint"
        );
        if first != index {
            // The run's first entry checks the whole run.
            continue;
        }
        let Descriptor::Leaf(pa0, attrs0) = f.decode(head, level) else {
            panic!("run at {first:#x} starts with a non-leaf");
        };
        assert_eq!(pa0 & (n * size - 1), 0, "run output not aligned");
        for i in 1..n {
            let input = f.index_to_input(first + i * size);
            let raw = pt.raw_entry(mem, F::Input::from_raw(input), level).unwrap();
            assert!(
                f.is_contiguous(raw),
                "run at {first:#x}: entry {i} lacks the hint"
            );
            assert_eq!(
                f.decode(raw, level),
                Descriptor::Leaf(pa0 + i * size, attrs0),
                "run at {first:#x}: entry {i}"
            );
        }
    }
}

/// Runs `ops` on a fresh table of format `f` over a window at the top of its
/// input space (or lower, for large inputs), against a page model.
pub(crate) fn run_model<F: Config>(f: F, window_pages: u64, ops: &[Op]) {
    let page_size = 1u64 << f.granule_shift();
    let entries = f.entries();
    let arena_frames = ROOT_FRAMES + 40;
    let words: Vec<AtomicU64> = (0..arena_frames as usize * entries)
        .map(|i| AtomicU64::new(0xdead_beef_0000_0003 ^ (i as u64) << 12))
        .collect();
    let mem = SliceMem::new(hvmem_types::PhysAddr::new(BASE), &words);
    let mut frames = Frames::new(page_size, arena_frames - ROOT_FRAMES);
    let mut bbm = Recorder::default();
    let mut checker = BbmChecker::new();
    trace::start();
    let mut pt = PageTable::new(f, &mem, &mut frames).unwrap();
    // The last `window_pages` pages of the input space, so that the last
    // address is exercised.
    let space = (f.root_entries() as u64) << f.level_shift(f.levels() - 1);
    let window_index = space - window_pages * page_size;
    let window = f.index_to_input(window_index);
    let attrs = f.attrs();
    let mut model: Vec<Option<(u64, Attributes)>> = vec![None; window_pages as usize];
    let mut starve = None;
    let snapshot = |frames: &Frames| -> Vec<u64> {
        let root_words = f.root_entries();
        let mut v: Vec<u64> = words[..root_words]
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        for &t in &frames.live {
            let first = ((t - BASE) / 8) as usize;
            v.extend(
                words[first..first + entries]
                    .iter()
                    .map(|w| w.load(Ordering::Relaxed)),
            );
        }
        v
    };
    checker.replay(&f, &trace::take()).unwrap();
    for op in ops {
        trace::start();
        bbm.0.clear();
        frames.cap = starve.take().map_or(usize::MAX, |n| frames.live.len() + n);
        let before_model = model.clone();
        let before_words = snapshot(&frames);
        let clip = |page: u64, pages: u64| (page, pages.min(window_pages - page));
        let at = |page: u64| F::Input::from_raw(f.index_to_input(window_index + page * page_size));
        let bound = match *op {
            Op::Starve(_) => 0,
            Op::Map { page, pages, .. }
            | Op::Unmap { page, pages }
            | Op::Protect { page, pages, .. }
            | Op::Merge { page, pages } => {
                let (page, pages) = clip(page, pages);
                pt.max_new_tables(at(page), pages * page_size)
            }
        };
        (frames.drawn, frames.peak) = (0, 0);
        let result: Result<TlbFlush, ()> = match *op {
            Op::Starve(n) => {
                starve = Some(n);
                let _ = trace::take();
                continue;
            }
            Op::Map {
                page,
                pages,
                frame,
                attrs: a,
                sizes,
                replace,
                merge,
            } => {
                let (page, pages) = clip(page, pages);
                let sizes = [
                    LeafSizes::ANY,
                    LeafSizes::only_level(0),
                    LeafSizes::up_to_level(1),
                ][usize::from(sizes)];
                let mut opts = MapOptions::new().sizes(sizes);
                if replace {
                    opts = opts.replacing();
                }
                if merge {
                    opts = opts.merging();
                }
                let r = pt.map_live(
                    &mem,
                    &mut frames,
                    &mut bbm,
                    at(page),
                    hvmem_types::PhysAddr::new(frame * page_size),
                    pages * page_size,
                    &attrs[a],
                    opts,
                );
                let overlaps = model[page as usize..(page + pages) as usize]
                    .iter()
                    .any(Option::is_some);
                match r {
                    Ok(_) => {
                        assert!(replace || !overlaps, "mapped over existing pages");
                        for i in 0..pages {
                            model[(page + i) as usize] = Some((frame + i, attrs[a]));
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
                let r = pt.unmap_live(&mem, &mut frames, &mut bbm, at(page), pages * page_size);
                match r {
                    Ok(_) => model[page as usize..(page + pages) as usize].fill(None),
                    Err(UnmapError::OutOfMemory) => {}
                    Err(e) => panic!("{op:?}: {e:?}"),
                }
                r.map_err(|_| ())
            }
            Op::Protect {
                page,
                pages,
                attrs: a,
            } => {
                let (page, pages) = clip(page, pages);
                let r = pt.protect_live(
                    &mem,
                    &mut frames,
                    &mut bbm,
                    at(page),
                    pages * page_size,
                    &attrs[a],
                );
                match r {
                    Ok(_) => {
                        for (_, x) in model[page as usize..(page + pages) as usize]
                            .iter_mut()
                            .flatten()
                        {
                            *x = attrs[a];
                        }
                    }
                    Err(ProtectError::OutOfMemory) => {}
                    Err(e) => panic!("{op:?}: {e:?}"),
                }
                r.map_err(|_| ())
            }
            Op::Merge { page, pages } => {
                let (page, pages) = clip(page, pages);
                Ok(pt
                    .merge_live(&mem, &mut frames, &mut bbm, at(page), pages * page_size)
                    .unwrap())
            }
        };
        // A frame cache topped up to the bound would not have run dry.
        assert!(
            frames.peak <= bound,
            "{op:?}: drew {} tables, bound {bound}",
            frames.peak
        );
        let events = trace::take();
        match result {
            Ok(flush) => {
                // Every translation that changed is flushed or was broken.
                for (i, (old, new)) in before_model.iter().zip(&model).enumerate() {
                    let input = f.index_to_input(window_index + i as u64 * page_size);
                    if old.is_some() && old != new {
                        assert!(
                            flush.covers(input)
                                || bbm.0.iter().any(|b| b.start <= input && input < b.end),
                            "{op:?}: page {i} neither flushed nor invalidated"
                        );
                    }
                }
                checker
                    .replay(&f, &events)
                    .unwrap_or_else(|e| panic!("{op:?}: break-before-make violated: {e}"));
                checker.flushed(&flush);
            }
            Err(()) => {
                assert!(bbm.0.is_empty(), "{op:?} failed after a break");
                assert!(
                    snapshot(&frames) == before_words,
                    "{op:?} failed but changed the tables"
                );
            }
        }
        // Every page the update changed, and a sample of the rest.
        for (page, want) in model.iter().enumerate() {
            if before_model[page] == *want && page % 7 != 0 {
                continue;
            }
            let got = pt.translate(&mem, at(page as u64));
            // The address-only walk agrees with the full one, errors too.
            let addr = got.map(|t| crate::OutputAddr {
                output: t.output,
                level: t.level,
                size: t.size,
            });
            assert_eq!(
                pt.translate_addr(&mem, at(page as u64)),
                addr,
                "page {page}"
            );
            match want {
                None => assert!(
                    matches!(got, Err(TranslateError::NotMapped { .. })),
                    "page {page}: {got:?}"
                ),
                Some((frame, a)) => {
                    let t = got.unwrap_or_else(|e| panic!("{op:?}: page {page}: {e:?}"));
                    assert_eq!(
                        (t.output.get() / page_size, t.attributes),
                        (*frame, *a),
                        "{op:?}: page {page}"
                    );
                }
            }
        }
        check_runs(&pt, &mem, window, window_pages * page_size);
        let mut tables = 0;
        pt.visit(&mem, F::Input::from_raw(f.index_to_input(0)), space, |v| {
            if matches!(v, Visit::Table { .. }) {
                tables += 1;
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        let root = usize::from(f.root_tables() == 1);
        assert_eq!(
            tables + root,
            frames.live.len(),
            "{op:?}: leaked or lost tables"
        );
    }
    let _ = pt.destroy(&mem, &mut frames);
    assert!(frames.live.is_empty() && !frames.root_out);
}

/// Every AArch64 configuration the proptest covers: each granule, both
/// stages (stage 1 in each regime and range), input sizes at each start
/// level, concatenated roots, LPA and LPA2.
/// A configuration: its name, the model run on it, and the window, run and
/// block lengths in pages.
pub(crate) type Configuration = (String, Box<dyn Fn(&[Op])>, u64, u64, u64);

pub(crate) fn configurations() -> Vec<Configuration> {
    let mut v: Vec<Configuration> = Vec::new();
    let lpa2 = LargeAddresses::Lpa2 {
        shareability: Shareability::Inner,
    };
    for granule in [Granule::Size4KiB, Granule::Size16KiB, Granule::Size64KiB] {
        let g = granule.shift();
        let entries = 1u64 << (g - 3);
        let run = match granule {
            Granule::Size4KiB => 16,
            Granule::Size16KiB => 128,
            Granule::Size64KiB => 32,
        };
        let large = if granule == Granule::Size64KiB {
            LargeAddresses::Lpa
        } else {
            lpa2
        };
        // Input sizes at each start level, the most concatenated stage-2
        // roots, and 52 bits.
        let inputs: [(u8, LargeAddresses); 5] = [
            (25, LargeAddresses::None),
            (40, LargeAddresses::None),
            (44, LargeAddresses::None),
            (48, LargeAddresses::None),
            (52, large),
        ];
        for (i, (bits, large)) in inputs.into_iter().enumerate() {
            // Two last-level tables' worth of pages, or half the space.
            let window = (2 * entries).min((1u64 << bits) >> (g + 1));
            let block = entries.min(window);
            // Every regime and range at 48 bits, the common one elsewhere.
            let regimes: &[(Regime, VaRange)] = if bits == 48 {
                &[
                    (Regime::El1And0, VaRange::Lower),
                    (Regime::El1And0, VaRange::Upper),
                    (Regime::El2, VaRange::Lower),
                    (Regime::El2And0, VaRange::Upper),
                ]
            } else {
                &[(Regime::El1And0, VaRange::Lower)]
            };
            for &(regime, range) in regimes {
                let Ok(f) =
                    Stage1::new(regime, granule, bits, large).and_then(|f| f.with_va_range(range))
                else {
                    continue;
                };
                v.push((
                    format!("{f:?}"),
                    Box::new(move |ops| run_model(f, window, ops)),
                    window,
                    run.min(window),
                    block,
                ));
            }
            let Ok(mut f) = Stage2::new(granule, bits, large) else {
                continue;
            };
            if i % 2 == 1 {
                f = f.with_fwb();
            }
            let f = f.with_xnx();
            v.push((
                format!("{f:?}"),
                Box::new(move |ops| run_model(f, window, ops)),
                window,
                run.min(window),
                block,
            ));
        }
    }
    v
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 1 } else { 5 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Random map / unmap / protect / merge sequences on live tables of every
/// AArch64 configuration, some starved of table frames, against a page ->
/// (frame, attributes) model. After every step: every page translates as the
/// model says; every translation that changed was either invalidated through
/// the break-before-make callback or is in the returned flush; the recorded
/// entry writes never replace a valid entry by one needing break-before-make
/// without an invalid entry and an invalidation between; every contiguous
/// hint marks a whole well-formed run; a failed update changed no table
/// word and called no break; no table leaks.
#[test]
#[cfg_attr(
    miri,
    ignore = "a model check per step over many configurations: natively only"
)]
fn random_live_edits_match_the_model_in_every_aarch64_configuration() {
    for (name, run, window, run_len, block) in configurations() {
        let mut runner = proptest::test_runner::TestRunner::new(config());
        let strategy = proptest::collection::vec(op(window, run_len, block), 1..24);
        runner
            .run(&strategy, |ops| {
                run(&ops);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn the_checker_catches_a_break_without_invalidation() {
    let f = Stage1::new(Regime::El1And0, Granule::Size4KiB, 48, LargeAddresses::None).unwrap();
    let a = f.encode_leaf(0x1000, &Attributes::DATA, 0).unwrap();
    let b = f.encode_leaf(0x2000, &Attributes::DATA, 0).unwrap();
    let w = |old, new| Event::Write {
        entry: 8,
        level: 0,
        at: 0x5000,
        size: 0x1000,
        old,
        new,
    };
    let direct = [w(a, b)];
    assert!(BbmChecker::new().replay(&f, &direct).is_err());
    let no_tlbi = [w(a, 0), w(0, b)];
    assert!(BbmChecker::new().replay(&f, &no_tlbi).is_err());
    let elsewhere = [
        w(a, 0),
        Event::Invalidate(Break {
            start: 0x6000,
            end: 0x7000,
            level: 0,
            table: false,
        }),
        w(0, b),
    ];
    assert!(BbmChecker::new().replay(&f, &elsewhere).is_err());
    let good = [
        w(a, 0),
        Event::Invalidate(Break {
            start: 0x5000,
            end: 0x6000,
            level: 0,
            table: false,
        }),
        w(0, b),
    ];
    assert!(BbmChecker::new().replay(&f, &good).is_ok());
    let permission = [w(
        a,
        f.encode_leaf(0x1000, &Attributes::READ_ONLY, 0).unwrap(),
    )];
    assert!(BbmChecker::new().replay(&f, &permission).is_ok());
}

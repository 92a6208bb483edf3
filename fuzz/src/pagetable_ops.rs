//! The `pagetable_ops` target: map / unmap / protect / merge sequences on an
//! x86-64 table, with table frames running out at random, against a
//! page -> (frame, attributes) model of a 4 MiB window.
//!
//! After every operation: each page of the window translates as the model
//! says; a translation that changed is covered by the returned flush; a
//! failed operation left every live table word as it was; the allocator has
//! out exactly the tables the tree holds.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};

use hvmem_pagetable::{
    Access, Attributes, LeafSizes, MapOptions, MemoryType, PageTable, SliceMem, TableAllocator,
    Visit, X86Paging,
};
use hvmem_types::{PhysAddr, VirtAddr};

use crate::bytes::Bytes;

const BASE: u64 = 0x10_0000;
const FRAMES: usize = 48;
const PAGES: u64 = 1024;
/// A window straddling a 2 MiB boundary in the upper half.
const WINDOW: u64 = 0xffff_8880_001f_f000 - 0x1f_f000;

const ATTRS: [Attributes; 4] = [
    Attributes::DATA,
    Attributes::CODE,
    Attributes::READ_ONLY,
    Attributes::new(Access::READ.union(Access::WRITE)).with_memory_type(MemoryType::Uncacheable),
];

struct Frames {
    free: Vec<u64>,
    live: BTreeSet<u64>,
    budget: usize,
}

impl TableAllocator for Frames {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        if self.budget == 0 {
            return None;
        }
        self.budget -= 1;
        let f = self.free.pop()?;
        assert!(self.live.insert(f), "frame {f:#x} handed out twice");
        Some(PhysAddr::new(f))
    }

    fn free_table(&mut self, table: PhysAddr) {
        assert!(self.live.remove(&table.get()), "table {table} freed twice");
        self.free.push(table.get());
    }
}

fn snapshot(words: &[AtomicU64], live: &BTreeSet<u64>) -> Vec<u64> {
    live.iter()
        .flat_map(|&f| {
            let first = ((f - BASE) / 8) as usize;
            words[first..first + 512]
                .iter()
                .map(|w| w.load(Ordering::Relaxed))
        })
        .collect()
}

/// Runs one input. Panics on any disagreement with the model.
pub fn run(data: &[u8]) {
    let mut input = Bytes::new(data);
    let words: Vec<AtomicU64> = (0..FRAMES * 512)
        .map(|i| AtomicU64::new(i as u64 * 0x9e37_79b9))
        .collect();
    let mem = SliceMem::new(PhysAddr::new(BASE), &words);
    let mut frames = Frames {
        free: (0..FRAMES as u64).map(|i| BASE + i * 0x1000).collect(),
        live: BTreeSet::new(),
        budget: usize::MAX,
    };
    let mut pt = PageTable::new(X86Paging::four_level(), &mem, &mut frames).unwrap();
    let mut model: Vec<Option<(u64, Attributes)>> = vec![None; PAGES as usize];

    let mut steps = 0;
    while !input.is_empty() && steps < 64 {
        steps += 1;
        let tag = input.u8();
        let page = u64::from(input.u16()) % PAGES;
        let pages = (u64::from(input.u16()) % 700 + 1).min(PAGES - page);
        let at = VirtAddr::new(WINDOW + page * 0x1000);
        let len = pages * 0x1000;
        frames.budget = if tag & 0x80 != 0 {
            usize::from(input.u8() % 4)
        } else {
            usize::MAX
        };
        let before_model = model.clone();
        let before = snapshot(&words, &frames.live);
        let result = match tag % 5 {
            0 | 1 => {
                let raw_frame = u64::from(input.u16());
                let frame = if tag & 0x40 != 0 {
                    raw_frame & !511
                } else {
                    raw_frame
                };
                let attrs = ATTRS[usize::from(input.u8()) % ATTRS.len()];
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
                let r = pt.map(
                    &mem,
                    &mut frames,
                    at,
                    PhysAddr::new(frame * 0x1000),
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
                let r = pt.unmap(&mem, &mut frames, at, len);
                if r.is_ok() {
                    model[page as usize..(page + pages) as usize].fill(None);
                }
                r.ok()
            }
            3 => {
                let attrs = ATTRS[usize::from(input.u8()) % ATTRS.len()];
                let r = pt.protect(&mem, &mut frames, at, len, &attrs);
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
            _ => pt.merge(&mem, &mut frames, at, len).ok(),
        };
        match result {
            Some(flush) => {
                for (i, (old, new)) in before_model.iter().zip(&model).enumerate() {
                    if old.is_some() && old != new {
                        assert!(
                            flush.covers(WINDOW + i as u64 * 0x1000),
                            "page {i} changed but not flushed"
                        );
                    }
                }
            }
            None => assert!(
                snapshot(&words, &frames.live) == before,
                "a failed update changed the tables"
            ),
        }
        for (i, want) in model.iter().enumerate() {
            let got = pt.translate(&mem, VirtAddr::new(WINDOW + i as u64 * 0x1000));
            match (want, got) {
                (None, Err(_)) => {}
                (Some((frame, attrs)), Ok(t)) => {
                    assert_eq!(
                        (t.output.get() >> 12, t.attributes),
                        (*frame, *attrs),
                        "page {i}"
                    );
                }
                (want, got) => panic!("page {i}: model {want:?}, table {got:?}"),
            }
        }
        let mut tables = 1;
        pt.visit(&mem, VirtAddr::new(0), 1 << 47, |v| {
            tables += usize::from(matches!(v, Visit::Table { .. }));
            ControlFlow::Continue(())
        })
        .unwrap();
        pt.visit(&mem, VirtAddr::new(0xffff_8000_0000_0000), 1 << 47, |v| {
            tables += usize::from(matches!(v, Visit::Table { .. }));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(tables, frames.live.len(), "table frames leaked or lost");
    }
}

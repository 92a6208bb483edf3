//! The table arena both page-table benches give hvmem-pagetable: host
//! memory standing in for physical memory, 4 KiB-aligned table frames, and
//! a stack of free frames, read through the crate's `DirectMap` (as a
//! hypervisor reads its own tables) or its safe `SliceMem`.

use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use hvmem_pagetable::{DirectMap, Format, PageTable, PhysMem, SliceMem, TableAllocator};
use hvmem_types::{PhysAddr, VirtAddr};

/// Table frames in an arena: enough for 1 GiB of 4 KiB pages (515 on x86,
/// 516 on AArch64) and more.
pub const FRAMES: usize = 1024;
/// The physical address of frame 0 of an arena.
pub const PHYS_BASE: u64 = 0x1_0000_0000;
/// One GiB.
pub const GIB: u64 = 1 << 30;
/// Where the benches map: an address every format here translates.
pub const REGION: u64 = 0x0000_4000_0000_0000;

/// A 4 KiB table frame of atomics.
#[derive(Debug)]
#[repr(C, align(4096))]
pub struct Frame(pub [AtomicU64; 512]);

/// [`FRAMES`] zeroed table frames, physical address [`PHYS_BASE`] at the
/// first.
#[derive(Debug)]
pub struct Arena {
    /// The frames, in physical-address order.
    pub frames: Vec<Frame>,
}

impl Arena {
    /// A zeroed arena.
    #[must_use]
    pub fn new() -> Self {
        Self {
            frames: (0..FRAMES)
                .map(|_| Frame(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    /// The arena as a hypervisor reads physical memory: a [`DirectMap`].
    #[must_use]
    pub fn mem(&self) -> DirectMap {
        // SAFETY: the frames are `FRAMES * 4096` bytes of 8-aligned atomics
        // in a row (`Frame` is `repr(C)`, 4096 bytes, no padding), owned by
        // the arena, which every bench keeps alive (and unmoved: the vector's
        // buffer does not move) for as long as it uses the map.
        unsafe {
            DirectMap::new(
                PhysAddr::new(PHYS_BASE),
                NonNull::from(self.frames.as_slice()).cast::<u8>(),
                (FRAMES * 4096) as u64,
            )
        }
    }

    /// The same arena as the crate's safe [`SliceMem`].
    #[must_use]
    pub fn slice(&self) -> SliceMem<'_> {
        // SAFETY: `Frame` is `repr(C)` and exactly 512 atomics (4096 bytes,
        // so no padding between frames): the vector's frames are
        // `FRAMES * 512` initialised atomics in a row, borrowed for as long
        // as the arena is.
        let words = unsafe {
            std::slice::from_raw_parts(self.frames.as_ptr().cast::<AtomicU64>(), FRAMES * 512)
        };
        SliceMem::new(PhysAddr::new(PHYS_BASE), words)
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

/// Every frame of an arena, lowest address first out: the table allocator
/// of every hvmem page-table bench.
#[derive(Debug)]
pub struct Stack(Vec<u64>);

impl Stack {
    /// All [`FRAMES`] frames free.
    #[must_use]
    pub fn new() -> Self {
        Self(
            (0..FRAMES as u64)
                .rev()
                .map(|i| PHYS_BASE + i * 4096)
                .collect(),
        )
    }
}

impl Default for Stack {
    fn default() -> Self {
        Self::new()
    }
}

impl TableAllocator for Stack {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        self.0.pop().map(PhysAddr::new)
    }

    fn free_table(&mut self, table: PhysAddr) {
        self.0.push(table.get());
    }
}

/// The translation loops of both page-table benches: each iteration
/// translates the next of `addrs`, round robin, through `pt` over `mem`.
/// `name` times `translate_addr` (the address only, as the peers' walks
/// give it); `name_attrs`, if given, times `translate` (the leaf's
/// attributes decoded and the tables' rights combined over the walk, more
/// than the peers give).
///
/// # Panics
///
/// If `addrs` is empty or an address does not translate: the bench's setup
/// is broken.
#[allow(
    clippy::indexing_slicing,
    reason = "the index is taken modulo the length"
)]
pub fn translate_loops<F: Format<Input = VirtAddr>>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    addrs: &[u64],
    (name, name_attrs): (&str, Option<&str>),
    pt: &PageTable<F>,
    mem: &impl PhysMem,
) {
    let mut i = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(
                pt.translate_addr(mem, VirtAddr::new(addrs[i]))
                    .expect("a mapped address")
                    .output,
            )
        });
    });
    if let Some(name) = name_attrs {
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % addrs.len();
                black_box(
                    pt.translate(mem, VirtAddr::new(addrs[i]))
                        .expect("a mapped address"),
                )
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvmem_pagetable::PhysMem;

    #[test]
    fn both_views_give_the_same_frames_and_the_stack_hands_out_each_once() {
        let arena = Arena::new();
        let (direct, slice) = (arena.mem(), arena.slice());
        let mut stack = Stack::new();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(frame) = stack.alloc_table() {
            assert!(seen.insert(frame.get()));
            let a = direct.table(frame, 512).map(<[AtomicU64]>::as_ptr);
            let b = slice.table(frame, 512).map(<[AtomicU64]>::as_ptr);
            assert!(a.is_some());
            assert_eq!(a, b);
        }
        assert_eq!(seen.len(), FRAMES);
    }
}

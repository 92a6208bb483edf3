//! The `pagetable_walk` target: arbitrary, possibly malformed or cyclic
//! table contents, walked as x86-64, EPT and AArch64 tables. Translating any address and visiting any range must
//! terminate, read only tables inside the arena, read at most one table per
//! level per translation, and never panic.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicU64;

use hvmem_pagetable::aarch64::{Granule, LargeAddresses, Regime, Stage1, Stage2};
use hvmem_pagetable::{Ept, Format, InputAddress, PageTable, PhysMem, SliceMem, X86Paging};
use hvmem_types::PhysAddr;

use crate::bytes::Bytes;

const BASE: u64 = 0x20_0000;
const FRAMES: u64 = 8;

/// The arena, counting the tables a walk asks for and checking each lies
/// inside it.
struct Counting<'a> {
    inner: SliceMem<'a>,
    reads: Cell<usize>,
}

impl PhysMem for Counting<'_> {
    fn table(&self, table: PhysAddr, entries: usize) -> Option<&[AtomicU64]> {
        self.reads.set(self.reads.get() + 1);
        let t = self.inner.table(table, entries);
        if t.is_some() {
            assert!(
                table.get() >= BASE && table.get() + entries as u64 * 8 <= BASE + FRAMES * 0x1000
            );
        }
        t
    }
}

fn walk<F: Format>(format: F, mem: &Counting<'_>, root: u64, input: &mut Bytes<'_>) {
    let levels = usize::from(format.levels());
    let pt = PageTable::from_root(format, PhysAddr::new(root));
    for _ in 0..16 {
        let addr = input.u64();
        mem.reads.set(0);
        let _ = pt.translate(mem, F::Input::from_raw(addr));
        assert!(
            mem.reads.get() <= levels,
            "a translation read {} tables",
            mem.reads.get()
        );
    }
    let start = input.u64() & !0xfff;
    let len = input.u64() & 0xffff_ffff_f000;
    let mut visits = 0u32;
    let _ = pt.visit(mem, F::Input::from_raw(start), len, |_| {
        visits += 1;
        if visits < 4096 {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    });
}

/// Runs one input. Panics if a walk misbehaves.
pub fn run(data: &[u8]) {
    let mut input = Bytes::new(data);
    // Table words from the input, biased so that many entries point back into
    // the arena (cycles, shared tables) with assorted flag bits.
    let words: Vec<AtomicU64> = (0..FRAMES * 512)
        .map(|_| {
            let raw = input.u64();
            let word = if raw & 3 == 1 {
                BASE + (raw >> 8) % (FRAMES * 0x1000)
            } else {
                0
            };
            AtomicU64::new(if raw & 4 != 0 {
                (word & !0xfff) | (raw & 0x8000_0000_0000_0fff)
            } else {
                raw
            })
        })
        .collect();
    let mem = Counting {
        inner: SliceMem::new(PhysAddr::new(BASE), &words),
        reads: Cell::new(0),
    };
    let root = BASE + u64::from(input.u8()) % FRAMES * 0x1000;
    walk(X86Paging::four_level(), &mem, root, &mut input);
    walk(
        X86Paging::five_level()
            .with_max_phys_bits(40)
            .unwrap_or(X86Paging::five_level()),
        &mem,
        root,
        &mut input,
    );
    walk(Ept::four_level(), &mem, root, &mut input);
    // AArch64: 4 KiB stage 1 (48-bit, and 52-bit LPA2 with level -1), a
    // concatenated 4 KiB stage-2 root, 16 KiB tables (which fit the arena
    // at even frames), and a 64 KiB configuration whose tables never fit.
    let lpa2 = LargeAddresses::Lpa2 {
        shareability: hvmem_pagetable::Shareability::Inner,
    };
    for (granule, bits, large) in [
        (Granule::Size4KiB, 48, LargeAddresses::None),
        (Granule::Size4KiB, 52, lpa2),
        (Granule::Size16KiB, 47, LargeAddresses::None),
        (Granule::Size64KiB, 42, LargeAddresses::None),
    ] {
        if let Ok(f) = Stage1::new(Regime::El1And0, granule, bits, large) {
            walk(f, &mem, root, &mut input);
        }
    }
    for (granule, bits) in [(Granule::Size4KiB, 40), (Granule::Size16KiB, 36)] {
        if let Ok(f) = Stage2::new(granule, bits, LargeAddresses::None) {
            walk(f.with_fwb(), &mem, root, &mut input);
        }
    }
}

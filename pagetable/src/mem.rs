//! How the editor reaches table memory.

use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use hvmem_types::PhysAddr;

/// Maps the physical address of a table to its entries.
///
/// The editor reads and writes entries only through the returned atomics, so
/// the same code edits live tables (that hardware walks and updates A/D bits
/// in), a guest's tables inside guest memory, and a test arena.
///
/// Implementing it is safe: producing the slice is the implementor's
/// business (a direct map, a guest-memory mapping); the contract is only that
/// the slice covers the table's memory for as long as it is borrowed.
pub trait PhysMem {
    /// The `entries` eight-byte entries of the table at `table`, or `None` if
    /// that memory is not accessible (not RAM, not mapped, misaligned).
    fn table(&self, table: PhysAddr, entries: usize) -> Option<&[AtomicU64]>;
}

/// Physical memory backed by a slice of atomics: an arena for tests,
/// benches and fuzzing, or a direct-mapped region.
#[derive(Debug)]
pub struct SliceMem<'a> {
    base: u64,
    words: &'a [AtomicU64],
}

impl<'a> SliceMem<'a> {
    /// Memory whose physical address `base` is `words[0]`.
    #[must_use]
    pub fn new(base: PhysAddr, words: &'a [AtomicU64]) -> Self {
        Self {
            base: base.get(),
            words,
        }
    }

    /// The physical address just past the arena.
    #[must_use]
    pub fn end(&self) -> PhysAddr {
        PhysAddr::new(self.base.saturating_add(self.words.len() as u64 * 8))
    }
}

impl PhysMem for SliceMem<'_> {
    #[inline]
    fn table(&self, table: PhysAddr, entries: usize) -> Option<&[AtomicU64]> {
        // Below the base the offset wraps to a huge value, and an offset
        // between entries has low bits set, which the rotation moves to the
        // top: then `end` either lies past the end or wraps below `first`,
        // and the slice refuses both, as it does a table past the end.
        let first = table.get().wrapping_sub(self.base).rotate_right(3);
        let first = usize::try_from(first).ok()?;
        let end = first.wrapping_add(entries);
        if end > self.words.len() || end < first {
            return None;
        }
        self.words.get(first..end)
    }
}

/// Physical memory reached through a direct map: physical address
/// `base + x` is at virtual address `virt + x`, for `x < len`.
///
/// This is how a hypervisor or a host kernel reaches its own tables (Xen's
/// directmap, Linux's `__va`), and what `x86_64`'s `OffsetPageTable` assumes.
/// Unlike [`SliceMem`] it does not hold a Rust borrow of the memory, so it
/// can cover memory the Rust program does not own (all of RAM); the price is
/// an `unsafe` constructor. A table address is still checked against the
/// window and for alignment (one rotation and one compare, as
/// [`SliceMem`] does), so a corrupt entry cannot send the editor outside
/// the mapped range; what it saves over [`SliceMem`] is the slice: no
/// borrow to keep, and no reload of its bounds between the atomic loads
/// of a walk.
///
/// ```
/// use core::ptr::NonNull;
/// use core::sync::atomic::AtomicU64;
/// use hvmem_pagetable::{DirectMap, PageTable, TableAllocator, X86Paging};
/// use hvmem_types::{PhysAddr, VirtAddr};
///
/// # struct Frames(Vec<u64>);
/// # impl TableAllocator for Frames {
/// #     fn alloc_table(&mut self) -> Option<PhysAddr> { self.0.pop().map(PhysAddr::new) }
/// #     fn free_table(&mut self, table: PhysAddr) { self.0.push(table.get()) }
/// # }
/// // Stand-in for RAM: 16 frames at physical 1 MiB.
/// let ram: Vec<AtomicU64> = (0..16 * 512).map(|_| AtomicU64::new(0)).collect();
/// // SAFETY: `ram` outlives `mem`, is 8-aligned, 64 KiB long, and is only
/// // accessed through atomics.
/// let mem = unsafe {
///     DirectMap::new(PhysAddr::new(0x10_0000), NonNull::from(ram.as_slice()).cast(), 16 * 4096)
/// };
/// let mut frames = Frames((0..16).map(|i| 0x10_0000 + i * 4096).collect());
/// let pt = PageTable::new(X86Paging::four_level(), &mem, &mut frames).unwrap();
/// assert!(pt.translate_addr(&mem, VirtAddr::new(0x4000_0000)).is_err());
/// ```
#[derive(Debug)]
pub struct DirectMap {
    base: u64,
    len: u64,
    /// The window's length in words.
    words: u64,
    /// How many words a table of 512 entries (every x86 table, AArch64's
    /// with the 4 KiB granule) may start at: the common check, precomputed.
    starts_512: u64,
    virt: NonNull<AtomicU64>,
}

// SAFETY: a `DirectMap` only hands out `&[AtomicU64]`, which are `Send` and
// `Sync`; `new`'s contract keeps the memory valid for as long as the value
// lives, on any thread.
#[allow(unsafe_code)]
unsafe impl Send for DirectMap {}
// SAFETY: as for `Send`: shared access is through atomics only.
#[allow(unsafe_code)]
unsafe impl Sync for DirectMap {}

impl DirectMap {
    /// Physical `[base, base + len)` mapped at virtual `virt`.
    ///
    /// # Safety
    ///
    /// For as long as the returned value (and any reference it hands out)
    /// lives, every byte of `[virt, virt + len)` must be mapped, readable and
    /// writable, aligned to 8 bytes at `virt`, and accessed by others only
    /// atomically (hardware page walks and A/D updates are atomic); and it
    /// must be the memory the tables' physical addresses name, or the editor
    /// edits the wrong memory. `len` must be at most `isize::MAX`, and
    /// `virt + len` must not wrap.
    #[allow(unsafe_code)]
    #[must_use]
    pub unsafe fn new(base: PhysAddr, virt: NonNull<u8>, len: u64) -> Self {
        let virt = virt.cast::<AtomicU64>();
        let words = len >> 3;
        Self {
            base: base.get(),
            len,
            words,
            starts_512: Self::starts(words, 512),
            virt,
        }
    }

    /// The physical address just past the window.
    #[must_use]
    pub fn end(&self) -> PhysAddr {
        PhysAddr::new(self.base.saturating_add(self.len))
    }

    /// How many of a window's `words` a table of `entries` words may start
    /// at (none if it does not fit).
    const fn starts(words: u64, entries: u64) -> u64 {
        // `words` is at most 2^61: no overflow.
        (words + 1).saturating_sub(entries)
    }
}

impl PhysMem for DirectMap {
    #[inline]
    fn table(&self, table: PhysAddr, entries: usize) -> Option<&[AtomicU64]> {
        let table = table.get();
        // The offset in words. Below the base the offset wraps to a huge
        // value, and an offset between entries has low bits set, which the
        // rotation moves to the top: both then lie past the words a table
        // of `entries` words may start at.
        let first = table.wrapping_sub(self.base).rotate_right(3);
        let starts = if entries == 512 {
            self.starts_512
        } else {
            Self::starts(self.words, entries as u64)
        };
        if first >= starts {
            return None;
        }
        let first = usize::try_from(first).ok()?;
        // SAFETY: the table's `entries` words lie inside the window:
        // `new`'s contract makes them mapped memory (at most `isize::MAX`
        // bytes from `virt`), valid and accessed only atomically for the
        // lifetime of `self`, and `virt` is 8-aligned.
        #[allow(unsafe_code)]
        let entries =
            unsafe { core::slice::from_raw_parts(self.virt.add(first).as_ptr(), entries) };
        Some(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_mem_refuses_addresses_outside_or_between_entries() {
        let words: [AtomicU64; 1024] = core::array::from_fn(|_| AtomicU64::new(0));
        let mem = SliceMem::new(PhysAddr::new(0x10_0000), &words);
        assert!(mem.table(PhysAddr::new(0x10_0000), 512).is_some());
        assert!(mem.table(PhysAddr::new(0x10_1000), 512).is_some());
        assert!(
            mem.table(PhysAddr::new(0x10_1008), 512).is_none(),
            "runs past the end"
        );
        assert!(
            mem.table(PhysAddr::new(0x10_0004), 1).is_none(),
            "between entries"
        );
        assert!(
            mem.table(PhysAddr::new(0xf_f000), 1).is_none(),
            "below the base"
        );
        assert!(mem.table(PhysAddr::new(u64::MAX), 1).is_none());
        assert_eq!(mem.end(), PhysAddr::new(0x10_2000));
    }

    #[test]
    fn direct_map_gives_the_same_tables_as_a_slice_and_refuses_the_same_addresses() {
        let words: [AtomicU64; 1024] = core::array::from_fn(|i| AtomicU64::new(i as u64));
        let slice = SliceMem::new(PhysAddr::new(0x10_0000), &words);
        // SAFETY: `words` outlives `direct`, is 8-aligned, 8 KiB long, and
        // only ever accessed through atomics.
        #[allow(unsafe_code)]
        let direct = unsafe {
            DirectMap::new(
                PhysAddr::new(0x10_0000),
                NonNull::from(&words).cast::<u8>(),
                8 * 1024,
            )
        };
        assert_eq!(direct.end(), slice.end());
        for table in [
            0x10_0000,
            0x10_0008,
            0x10_0ff8,
            0x10_1000,
            0x10_1008,
            0x10_1ff8,
            0x10_2000,
            0x10_0004,
            0xf_f000,
            0xf_fff8,
            0,
            u64::MAX,
            u64::MAX - 7,
        ] {
            for entries in [0, 1, 2, 512, 1024, usize::MAX / 8 + 1, usize::MAX] {
                let a = slice.table(PhysAddr::new(table), entries);
                let b = direct.table(PhysAddr::new(table), entries);
                assert_eq!(
                    a.map(|t| (t.as_ptr(), t.len())),
                    b.map(|t| (t.as_ptr(), t.len())),
                    "table {table:#x}, {entries} entries"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: if cfg!(miri) { 8 } else { 2048 },
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Whatever address and size a corrupt or hostile entry names, a
        /// direct map gives exactly the table a slice of the same memory
        /// gives (the same words), or refuses it as the slice does.
        #[test]
        fn direct_map_agrees_with_slice_mem_on_any_address(
            offset in proptest::prelude::any::<u64>(),
            near in -0x3000i64..0x5000,
            use_near in proptest::prelude::any::<bool>(),
            entries in proptest::prop_oneof![0usize..1100, proptest::prelude::any::<usize>()],
            words in 0usize..1100,
        ) {
            const BASE: u64 = 0x40_0000;
            let memory: std::vec::Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
            let slice = SliceMem::new(PhysAddr::new(BASE), &memory);
            // SAFETY: `memory` outlives `direct`, is 8-aligned and
            // `words * 8` bytes long, and is only accessed through atomics.
            #[allow(unsafe_code)]
            let direct = unsafe {
                DirectMap::new(
                    PhysAddr::new(BASE),
                    NonNull::from(memory.as_slice()).cast::<u8>(),
                    (words * 8) as u64,
                )
            };
            let table = if use_near { BASE.wrapping_add_signed(near) } else { offset };
            let a = slice.table(PhysAddr::new(table), entries);
            let b = direct.table(PhysAddr::new(table), entries);
            proptest::prop_assert_eq!(
                a.map(|t| (t.as_ptr(), t.len())),
                b.map(|t| (t.as_ptr(), t.len()))
            );
        }
    }
}

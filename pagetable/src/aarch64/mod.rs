//! AArch64 VMSAv8-64 formats: stage 1 ([`Stage1`]: EL1&0, EL2, EL2&0) and
//! stage 2 ([`Stage2`]), with 4, 16 and 64 KiB granules, every input size
//! from 25 bits up, concatenated stage-2 roots, and 52-bit addresses (FEAT_LPA
//! for 64 KiB, FEAT_LPA2 for 4 and 16 KiB, including level -1).
//!
//! Levels are numbered from the bottom as everywhere in this crate: level 0
//! is the architecture's level 3, level 3 its level 0, level 4 its level -1;
//! [`Format::level_name`](crate::Format::level_name) gives `"L3"` .. `"L-1"`.
//!
//! Both formats need break-before-make on live tables (see
//! [`BreakBeforeMake`](crate::BreakBeforeMake)), so they are edited with the
//! `*_live` methods of [`PageTable`](crate::PageTable), and both use the
//! contiguous hint: a map that covers a whole, aligned run of 16 (4 KiB
//! granule), 128 or 32 (16 KiB) or 32 (64 KiB) entries writes the run with
//! the contiguous bit; a later change to part of a run first unfolds it.
//!
//! The decoder is strict: a valid descriptor with a reserved SH value, an
//! AttrIndx naming an unused MAIR slot, a stage-2 MemAttr outside the types
//! modelled, address bits above the output size, or a block where none may be
//! is [`Descriptor::Malformed`](crate::Descriptor::Malformed), which the
//! editor refuses to touch. Software bits, NS, GP and PBHA are ignored when
//! reading and never written.
//!
//! # Example
//!
//! ```
//! use core::sync::atomic::AtomicU64;
//! use hvmem_pagetable::aarch64::{Granule, LargeAddresses, Stage2};
//! use hvmem_pagetable::{Access, Attributes, Break, BreakBeforeMake, Format, MapOptions, PageTable, SliceMem, TableAllocator};
//! use hvmem_types::{GuestPhysAddr, PhysAddr};
//!
//! // 40-bit IPA, 4 KiB granule: starts at level 1 with 2 concatenated tables.
//! let s2 = Stage2::new(Granule::Size4KiB, 40, LargeAddresses::None).unwrap();
//! assert_eq!((s2.start_level(), s2.sl0(), s2.root_tables()), (1, 1, 2));
//!
//! let arena: Vec<AtomicU64> = (0..16 * 512).map(|_| AtomicU64::new(0)).collect();
//! let mem = SliceMem::new(PhysAddr::new(0x4000_0000), &arena);
//! struct Frames(u64);
//! impl TableAllocator for Frames {
//!     fn alloc_table(&mut self) -> Option<PhysAddr> { self.0 += 0x1000; Some(PhysAddr::new(self.0 - 0x1000)) }
//!     fn free_table(&mut self, _: PhysAddr) {}
//!     fn alloc_root(&mut self, tables: usize) -> Option<PhysAddr> {
//!         let size = tables as u64 * 0x1000;
//!         self.0 = self.0.next_multiple_of(size) + size;
//!         Some(PhysAddr::new(self.0 - size))
//!     }
//! }
//! // The caller's half of break-before-make: DSB, TLBI IPAS2E1IS, DSB, TLBI VMALLE1IS, DSB, ISB.
//! struct Tlbi(usize);
//! impl BreakBeforeMake for Tlbi {
//!     fn invalidate(&mut self, _broken: &Break) { self.0 += 1 }
//! }
//! let mut frames = Frames(0x4000_0000);
//! let mut tlbi = Tlbi(0);
//! let mut pt = PageTable::new(s2, &mem, &mut frames).unwrap();
//! let normal = Attributes::new(Access::READ | Access::WRITE);
//! // 64 KiB: one contiguous run of 16 pages.
//! let flush = pt.map_live(&mem, &mut frames, &mut tlbi, GuestPhysAddr::new(0x8000_0000),
//!     PhysAddr::new(0x1_0000_0000), 0x1_0000, &normal, MapOptions::new()).unwrap();
//! assert!(flush.is_empty());
//! let raw = pt.raw_entry(&mem, GuestPhysAddr::new(0x8000_1000), 0).unwrap();
//! assert!(pt.format().is_contiguous(raw));
//! // Unmapping one page of the run unfolds it first: a break, then the flush.
//! let flush = pt.unmap_live(&mem, &mut frames, &mut tlbi, GuestPhysAddr::new(0x8000_1000), 0x1000).unwrap();
//! assert_eq!(tlbi.0, 1);
//! assert!(flush.covers(0x8000_1000));
//! ```

mod geometry;
mod mair;
mod stage1;
mod stage2;

#[cfg(test)]
mod tests;

pub use geometry::{ConfigError, Granule, LargeAddresses};
pub use mair::Mair;
pub use stage1::{Regime, Stage1, VaRange};
pub use stage2::Stage2;

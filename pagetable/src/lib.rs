//! Validated, all-or-nothing page-table editing for hypervisors.
//!
//! One generic editor over a [`Format`] trait edits x86-64 4- and 5-level
//! tables ([`X86Paging`]), Intel EPT ([`Ept`]) and AArch64 VMSAv8-64 stage 1
//! and stage 2 ([`aarch64::Stage1`], [`aarch64::Stage2`], every granule and
//! input size), with the architecture's own words for levels, leaves and
//! attributes:
//!
//! - [`PageTable::map`] maps a range with the largest leaves that fit (or the
//!   sizes you allow), [`unmap`](PageTable::unmap) removes translations and
//!   frees tables left empty, [`protect`](PageTable::protect) rewrites
//!   attributes, splitting large leaves where a range cuts them,
//!   [`merge`](PageTable::merge) folds tables of uniform leaves back into
//!   large leaves, [`translate`](PageTable::translate) walks one address and
//!   [`visit`](PageTable::visit) reports a range. Formats that need
//!   break-before-make (AArch64) have only the live forms,
//!   [`map_live`](PageTable::map_live) and the rest, which take your
//!   [`BreakBeforeMake`]; x86 and EPT have both.
//! - **All or nothing.** An update plans first, reserves every table frame it
//!   will need from your [`TableAllocator`] (or from a [`FrameCache`] you
//!   filled to [`PageTable::max_new_tables`] beforehand), then commits a
//!   step that cannot fail. Out of memory leaves the tables exactly as they
//!   were.
//! - **Atomics, no `&mut` to live tables.** Tables are reached through
//!   [`PhysMem`], which hands out `&[AtomicU64]`: the same code edits live
//!   tables, a guest's tables in guest memory, and a test arena
//!   ([`SliceMem`]); a hypervisor's own tables go through its direct map
//!   ([`DirectMap`], the one `unsafe` constructor in the crate).
//! - **TLB work is returned**, as a `#[must_use]` [`TlbFlush`]: one input
//!   range covering everything the update changed, or "flush all", never
//!   performed inside the crate. Tables an update frees must not be reused
//!   before that flush is done ([`TableAllocator::free_table`]).
//! - **Every input is checked**: alignment, canonical form, output width,
//!   attributes the format cannot express, existing mappings, malformed
//!   entries. Errors leave the tables unchanged; nothing panics.
//! - Module [`pv`] validates the entries an x86 PV guest writes into its own
//!   tables (Xen's `mmu_update`).
//!
//! The crate README (on crates.io and in the repository) has the rules in
//! more detail: break-before-make, the contiguous hint, editing a guest's
//! tables, and the measured performance.
//!
//! # Example
//!
//! ```
//! use core::sync::atomic::AtomicU64;
//! use hvmem_pagetable::{Attributes, MapOptions, PageTable, SliceMem, TableAllocator, X86Paging};
//! use hvmem_types::{PhysAddr, VirtAddr};
//!
//! // 64 KiB of "physical memory" for tables, and a trivial frame allocator.
//! let arena: Vec<AtomicU64> = (0..8192).map(|_| AtomicU64::new(0)).collect();
//! let mem = SliceMem::new(PhysAddr::new(0x10_0000), &arena);
//! struct Bump(u64, Vec<PhysAddr>);
//! impl TableAllocator for Bump {
//!     fn alloc_table(&mut self) -> Option<PhysAddr> {
//!         self.1.pop().or_else(|| (self.0 < 0x11_0000).then(|| { self.0 += 0x1000; PhysAddr::new(self.0 - 0x1000) }))
//!     }
//!     fn free_table(&mut self, table: PhysAddr) { self.1.push(table) }
//! }
//! let mut frames = Bump(0x10_0000, Vec::new());
//!
//! let mut pt = PageTable::new(X86Paging::four_level(), &mem, &mut frames).unwrap();
//! // 4 MiB + 8 KiB at a 2 MiB-aligned address: two 2 MiB leaves, two 4 KiB pages.
//! let va = VirtAddr::new(0xffff_8000_0020_0000);
//! let flush = pt
//!     .map(&mem, &mut frames, va, PhysAddr::new(0x4020_0000), 0x40_2000, &Attributes::DATA, MapOptions::new())
//!     .unwrap();
//! // x86 caches no not-present entry: new translations need no flush.
//! assert!(flush.is_empty());
//!
//! let t = pt.translate(&mem, VirtAddr::new(0xffff_8000_0030_1234)).unwrap();
//! assert_eq!((t.output, t.size), (PhysAddr::new(0x4030_1234), 0x20_0000));
//!
//! // Unmapping 4 KiB from the middle splits a 2 MiB leaf; the old
//! // translation must be invalidated.
//! let flush = pt.unmap(&mem, &mut frames, VirtAddr::new(0xffff_8000_0030_0000), 0x1000).unwrap();
//! assert!(flush.covers(0xffff_8000_0030_0000));
//! assert!(pt.translate(&mem, VirtAddr::new(0xffff_8000_0030_0000)).is_err());
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod aarch64;
mod alloc;
mod attrs;
mod bbm;
mod cache;
mod edit;
mod error;
mod flush;
mod format;
mod mem;
pub mod pv;
mod shape;
mod single;
mod table;
mod walk;
mod x86;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use alloc::TableAllocator;
pub use attrs::{Access, AttrError, Attributes, MemoryType, Shareability, Tracking};
pub use bbm::{Break, BreakBeforeMake};
pub use cache::{FrameCache, TopUpError};
pub use error::{MapError, ProtectError, RangeError, TableError, TranslateError, UnmapError};
pub use flush::TlbFlush;
pub use format::{
    Descriptor, EntryKind, Format, InputAddress, TablePattern, WithoutBreakBeforeMake,
};
pub use mem::{DirectMap, PhysMem, SliceMem};
pub use table::{LeafSizes, MapOptions, PageTable};
pub use walk::{OutputAddr, Translation, Visit};
pub use x86::{Ept, LINUX_PAT, X86Paging};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

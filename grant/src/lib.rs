//! Xen grant tables, versions 1 and 2, both sides.
//!
//! A grant table is how a guest lets another domain map or copy specific
//! frames of its memory: the granting guest writes entries ("domain D may
//! map frame F, read-only") into frames it shares with the hypervisor, and
//! the other domain names an entry by its index (a *grant reference*) in a
//! `grant_table_op` hypercall. Every Xen split driver (block, network,
//! console, xenstore) runs on them. This crate is both sides:
//!
//! - **Guest side** ([`GuestGrantTable`], [`GrantRefAllocator`]): grant a
//!   frame read-only or read-write, a sub-page window, transitively, or for
//!   transfer; end access with the exact flag protocol, so that ending
//!   access never succeeds while the hypervisor has the entry in use
//!   (module [`guest`] states the protocol).
//! - **Hypervisor side** ([`GrantTable`], [`Maptrack`]): the per-domain
//!   table growing by frames up to a limit, v1/v2 and the switch between
//!   them, the active entries with their pin counts, the mapping domain's
//!   maptrack; `map_grant_ref`, `unmap_grant_ref`, `unmap_and_replace`,
//!   [`copy`], [`transfer`], [`setup_table`], [`query_size`],
//!   `set_version`, [`get_status_frames`], [`get_version`],
//!   `swap_grant_ref`, [`cache_flush`], each setting exactly the `GNTST_*`
//!   status (or errno) Xen gives for the same fault.
//! - **ABI** ([`abi`], [`flags`], [`GntSt`]): zerocopy structures with
//!   compile-time size and offset checks, bitflags for `GTF_*`, `GNTMAP_*`,
//!   `GNTCOPY_*`.
//!
//! The shared frames belong to the granting guest, which can rewrite them
//! at any moment: the hypervisor side reaches them only through atomics
//! (trait [`GrantMemory`]), reads each value once, sets the status bits by
//! compare-and-swap as Xen does, and re-validates. The crate is
//! `#![no_std]` and allocates nothing: active entries and maptrack entries
//! live in caller-provided slices.
//!
//! # What the embedder supplies
//!
//! - [`GrantMemory`]: atomic views of a domain's shared and status frames,
//!   their frame numbers, whether the guest still maps a status frame.
//! - [`GrantFrames`]: translation with a frame reference, general and
//!   writable type references (`get_type` included), frame copies, and
//!   `steal_page` / `can_receive` / `assign_page` / `free_page` for
//!   transfers. hvmem-frametable implements it behind its `grant` feature.
//! - [`Domains`]: the grant table of a domain id (see the rule below).
//! - Closures and values passed to single calls: `flush_tlb` for the
//!   unmaps, `replace_pte` for [`Maptrack::unmap_and_replace`], the frame
//!   owner lookup and a [`CacheArch`] for [`cache_flush`].
//!
//! The crate writes no page table, p2m or IOMMU entry. After a map returns
//! `GNTST_okay`, the embedder installs the mapping itself (see
//! [`Maptrack::map_grant_ref`]).
//!
//! # Sharing tables between CPUs
//!
//! Entry operations (map, unmap, copy, transfer, `cache_flush`, ...) take
//! `&GrantTable` through [`Domains::grant_table`] and lock one active entry
//! at a time. They may reach more than one table in one call: a copy
//! reaches both sides, and through a transitive grant a third table; an
//! unmap keeps the table across `flush_tlb`.
//!
//! The rule: a table that [`Domains::grant_table`] returned must not be
//! touched by any `&mut` operation until the call that asked for it has
//! returned. The `&mut` operations are [`GrantTable::grow`],
//! [`GrantTable::set_version`], [`GrantTable::swap_grant_ref`] /
//! [`swap_grant_refs`](GrantTable::swap_grant_refs),
//! [`GrantTable::teardown`] and [`setup_table`].
//!
//! `grant_table` returns a plain reference, not a lock guard, so a lock
//! per table cannot express this. Two ways that work:
//!
//! - One read-write lock for all tables of the host. Entry operations run
//!   under the read side (the [`Domains`] value holds the read guard for
//!   the whole call); the `&mut` operations take the write side.
//! - Tables retired RCU-style: a `&mut` operation waits until no call that
//!   may have looked the table up is still running.
//!
//! In safe Rust the borrow checker enforces the rule, as long as the
//! [`Domains`] value borrows the tables for the whole call.
//!
//! # Differences from Xen
//!
//! The crate README lists, in one place, where the crate deliberately
//! answers differently from Xen (section "Differences from Xen").
//!
//! # Example
//!
//! Needs feature `model` (for `model::ModelFrames` and
//! `model::ModelDomains`, stand-ins for your frame table and domain list).
//!
//! ```
//! use hvmem_grant::model::{ModelDomains, ModelFrames};
//! use hvmem_grant::{
//!     ActiveEntry, GnttabMapGrantRef, GnttabUnmapGrantRef, GntMapFlags, GntSt, GrantRef,
//!     GrantTable, GrantTableConfig, GrantVersion, GuestError, GuestGrantTable, Maptrack,
//!     MaptrackEntry, SliceMemory,
//! };
//! use hvmem_grant::sync_types::{AtomicU16, AtomicU32};
//! use hvmem_types::{DomId, Gfn};
//!
//! let (granter, backend) = (DomId::new(1), DomId::new(2));
//! // The granter's one shared frame, and the hypervisor's state for it.
//! let words: Vec<AtomicU32> = (0..1024).map(|_| AtomicU32::new(0)).collect();
//! let status: Vec<AtomicU16> = Vec::new();
//! let mem = SliceMemory::new(&words, &status, 0x1000, 0x2000);
//! let active: Vec<ActiveEntry> = (0..512).map(|_| ActiveEntry::new()).collect();
//! let table = GrantTable::new(granter, &mem, &active, GrantTableConfig::DEFAULT)?;
//! let frames = ModelFrames::new();
//! frames.give(granter, 0x42, 0x9000); // the granter owns gfn 0x42 = mfn 0x9000
//! let domains = ModelDomains::new([&table]);
//!
//! // The granter grants gfn 0x42 to the backend.
//! let guest = GuestGrantTable::new(&mem, GrantVersion::V1, 1);
//! // read-write (readonly = false)
//! guest.grant_access(GrantRef(8), backend, Gfn::new(0x42), false)?;
//!
//! // The backend maps it.
//! let storage: Vec<MaptrackEntry> = (0..4).map(|_| MaptrackEntry::new()).collect();
//! let maptrack = Maptrack::new(backend, false, &storage, 4);
//! let mut map = GnttabMapGrantRef {
//!     host_addr: 0x7000_0000,
//!     flags: GntMapFlags::HOST_MAP.bits(),
//!     gref: 8,
//!     dom: granter.get(),
//!     ..Default::default()
//! };
//! maptrack.map_grant_ref(&domains, &frames, &mut map);
//! assert_eq!(map.status, GntSt::Okay.raw());
//! assert_eq!(map.dev_bus_addr, 0x9000 << 12);
//! // The crate maps nothing: here the embedder would now point the PTE at
//! // `host_addr` to frame `map.dev_bus_addr >> 12`.
//!
//! // While it is mapped, the granter cannot end access...
//! assert_eq!(guest.end_access(GrantRef(8)), Err(GuestError::InUse));
//!
//! // ...until the backend unmaps (the TLB flush runs before the frame's
//! // references are dropped).
//! let mut unmap = GnttabUnmapGrantRef {
//!     host_addr: 0x7000_0000,
//!     handle: map.handle,
//!     ..Default::default()
//! };
//! maptrack.unmap_grant_ref(&domains, &frames, &mut unmap, &mut || {});
//! assert_eq!(unmap.status, GntSt::Okay.raw());
//! guest.end_access(GrantRef(8))?;
//! assert_eq!(frames.refs(0x9000), (0, 0)); // every reference dropped
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `model`: the reference model and the byte-to-operation decoder that the
//!   property test and the `grant` fuzz target check the tables against,
//!   and the [`GrantFrames`] / [`Domains`] models the example above uses.
//!   It uses `std`. docs.rs builds the documentation with it.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(any(test, feature = "model"))]
extern crate std;

pub mod abi;
mod active;
mod cache;
mod copy;
mod error;
pub mod flags;
mod frames;
pub mod guest;
mod map;
mod maptrack;
mod mem;
mod refs;
mod sync;
mod table;
mod transfer;

#[cfg(any(test, feature = "model"))]
pub mod model;

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;

pub use abi::{
    GnttabCacheFlush, GnttabCopy, GnttabCopyPtr, GnttabGetStatusFrames, GnttabGetVersion,
    GnttabMapGrantRef, GnttabOp, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable,
    GnttabSwapGrantRef, GnttabTransfer, GnttabUnmapAndReplace, GnttabUnmapGrantRef,
    GrantEntryHeader, GrantEntryV1, GrantEntryV2, GrantHandle, GrantRef,
};
pub use active::ActiveEntry;
pub use cache::{CacheArch, CacheFlushRange, FrameOwner, cache_flush};
pub use copy::copy;
pub use error::{CallError, GntSt, GrantError, VersionError};
pub use flags::{GntCopyFlags, GntMapFlags, GrantType, GtfFlags};
pub use frames::{Domains, GfnError, GrantFrames, StealError};
pub use guest::{GuestError, GuestGrantTable, TransferEnd};
pub use map::UNMAP_BATCH;
pub use maptrack::{MappingInfo, Maptrack, MaptrackEntry};
pub use mem::{GrantMemory, GrantVersion, SliceMemory, status_frames_for};
pub use refs::{GrantRefAllocator, RefError};
pub use table::{
    GrantTable, GrantTableConfig, get_status_frames, get_version, query_size, setup_table,
};
pub use transfer::transfer;

/// The atomic types [`GrantMemory`] hands out (`core`'s, or loom's under
/// `--cfg loom`), for embedders that build the shared frames.
pub mod sync_types {
    #[cfg(loom)]
    pub use loom::sync::atomic::{AtomicU16, AtomicU32};

    #[cfg(not(loom))]
    pub use core::sync::atomic::{AtomicU16, AtomicU32};
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! Transcendent memory (tmem) for a hypervisor: the host lends its idle
//! memory to guests as a page cache and as fast swap, through put, get and
//! flush calls on pages instead of mapped memory.
//!
//! This is Xen's tmem as a `#![no_std]` library, with a virtio transport
//! ([`virtio`]) so that a KVM or other VMM can offer it too. The ABI and
//! semantics are those of Xen 4.12, the last release with tmem (removed in
//! 4.13): the public header `xen/include/public/tmem.h` and
//! `docs/misc/tmem-internals.html` at tag `RELEASE-4.12.0`, with the
//! differences listed below.
//!
//! - **Clients and pools.** One client per domain
//!   ([`Tmem::create_client`]); each has up to 16 pools
//!   ([`Tmem::new_pool`], Xen's pool flags: page size, spec version,
//!   persistent, shared). A shared pool is joined by UUID if the toolstack
//!   authorized the client for it ([`Tmem::authorize_shared`]); otherwise the
//!   client quietly gets a private pool, as in Xen.
//! - **Pages** are named by (pool, 192-bit [`Oid`], 32-bit index):
//!   [`Tmem::put_page`] copies in, [`Tmem::get_page`] copies out,
//!   [`Tmem::flush_page`], [`Tmem::flush_object`], [`Tmem::destroy_pool`],
//!   and [`Tmem::flush_all`] for a whole client.
//! - **Ephemeral pools** (cleancache): the host may evict any page at any
//!   time ([`Tmem::evict`], and on a put when the store is full), by LRU
//!   across clients weighted by each client's weight and cap (see
//!   [`Tmem::evict`]). A get from a private ephemeral pool
//!   takes the page out (exclusive). A get never returns stale data: a
//!   flushed, evicted or failed-over page is gone for good.
//! - **Persistent pools** (frontswap): never evicted; a get returns the
//!   last successful put until flushed. A put may fail (the client is at its
//!   quota, or the host has no memory), and then **the old copy under that
//!   key is gone too** (frontswap's rule: a failed store invalidates; the
//!   guest must write the page to its real swap device).
//! - **Compression** (feature `compression`, lz4): pages of pools that ask
//!   for it are stored in half a frame when they compress to 2 KiB or less.
//!   **Deduplication** ([`TmemConfig::dedup`]): identical ephemeral pages of
//!   any clients share one frame, found by a content hash and confirmed by
//!   comparing the whole page; every put copies, so clients stay isolated.
//! - **Statistics** ([`Stats`]) per client, per pool and for the host.
//! - **Xen's hypercall** ([`hypercall`]): `struct tmem_op` decoded and
//!   dispatched with Xen's return values and errnos.
//! - **Guest keys** ([`guest_keys`]): frontswap's and cleancache's page
//!   naming, refusing positions past a 32-bit index.
//!
//! # Differences from Xen 4.12
//!
//! - **Deduplication** ([`TmemConfig::dedup`], off by default). Xen removed
//!   its deduplication in 4.8, so 4.12 had none.
//! - **`ephemeral_cap` is enforced** ([`ClientConfig::ephemeral_cap`]): a
//!   client at its cap evicts its own oldest ephemeral page on each put.
//!   Xen had caps as a setting, but they did nothing.
//! - **The weight test's direction.** A client that holds more than its
//!   weighted share of ephemeral pages loses its own pages first, as Xen's
//!   design document intends. Xen 4.12's code (`client_over_quota`), read
//!   literally, does that to a client holding *less* than its share.
//! - No frozen clients, save/restore or live migration.
//!
//! # Memory
//!
//! Page data lives in a [`PageStore`]. [`SliceStore`] is one over an
//! array. To use any frame allocator instead, number the frames tmem may
//! use from 0 to [`capacity`](PageStore::capacity), take and return frames
//! in [`alloc_frame`](PageStore::alloc_frame) and
//! [`free_frame`](PageStore::free_frame), and map a number to its 4 KiB in
//! [`frame`](PageStore::frame) and [`frame_mut`](PageStore::frame_mut). The
//! indexes live in tables the embedder provides ([`TmemMemory`], sized by
//! [`TmemLayout`]) or, with the `alloc` feature, allocates (`OwnedMemory`).
//!
//! # Before a guest can call
//!
//! - **Create each domain's client yourself**, with
//!   [`Tmem::create_client`] and a
//!   [`persistent_quota`](ClientConfig::persistent_quota). The default
//!   config has no persistent quota, and [`hypercall::do_tmem_op`] creates
//!   a missing client with that default: a guest could then fill the store
//!   with persistent pages, which are never evicted.
//! - **Set your own [`TmemConfig::hash_seed`]**, drawn at random. The
//!   default seed is a public constant.
//! - **When a domain dies**, call [`Tmem::destroy_client`] and drop every
//!   [`ClientId`] and [`virtio::TmemDevice`] of it: client ids are reused
//!   without a generation.
//!
//! # Locking
//!
//! Put one lock around the host's [`Tmem`] and hold it for every call.
//! The page operations take `&mut self` because each of them, a get
//! included, changes state shared by all clients: a put takes frames from
//! the host's store and may evict other clients' pages; a get from a
//! private ephemeral pool removes the page, and a get from a shared pool
//! moves it in the host-wide LRU order; every get and put updates the
//! host's counters. There is no lock-free path and no per-pool lock. To
//! spread the load, run several `Tmem`s (for example one per NUMA node),
//! each with its own lock.
//!
//! # Example
//!
//! ```
//! use hvmem_tmem_pool::{
//!     abi, ClientConfig, GetOutcome, Oid, OwnedMemory, StoreMemory, Tmem, TmemConfig,
//!     TmemLayout, Uuid, PAGE_BYTES,
//! };
//! // `DomId` is from the `hvmem-types` crate: add it to your dependencies.
//! use hvmem_types::DomId;
//!
//! let layout = TmemLayout { clients: 4, pools: 16, pages: 64, objects: 64, frames: 64, dedup: false };
//! let mut pages = StoreMemory::new(64);
//! let mut tables = OwnedMemory::new(&layout);
//! // A real host draws the seed at random when it starts.
//! let config = TmemConfig { hash_seed: 0x243f_6a88_85a3_08d3, ..TmemConfig::default() };
//! let mut tmem = Tmem::new(config, pages.store(), tables.borrow())?;
//!
//! // At most 32 persistent pages for this guest (the default has no limit).
//! let quota = ClientConfig { persistent_quota: 32, ..ClientConfig::default() };
//! let guest = tmem.create_client(DomId::new(1), quota)?;
//! let swap = tmem.new_pool(guest, Uuid::NONE, abi::PRIVATE_PERSISTENT)?;
//! let cache = tmem.new_pool(guest, Uuid::NONE, abi::PRIVATE_EPHEMERAL)?;
//!
//! let page = [7u8; PAGE_BYTES];
//! let mut out = [0u8; PAGE_BYTES];
//! tmem.put_page(guest, swap, Oid([1, 0, 0]), 5, &page)?;
//! assert_eq!(tmem.get_page(guest, swap, Oid([1, 0, 0]), 5, &mut out)?, GetOutcome::Hit);
//! assert_eq!(out, page);
//!
//! // A private ephemeral get is exclusive: the page leaves the pool.
//! tmem.put_page(guest, cache, Oid([9, 9, 9]), 0, &page)?;
//! assert_eq!(tmem.get_page(guest, cache, Oid([9, 9, 9]), 0, &mut out)?, GetOutcome::Hit);
//! assert_eq!(tmem.get_page(guest, cache, Oid([9, 9, 9]), 0, &mut out)?, GetOutcome::PoolEmpty);
//! assert_eq!(tmem.client_stats(guest)?.pages, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `alloc` (default): `OwnedMemory` and `StoreMemory`, heap-allocated
//!   tables. Without it the embedder passes [`TmemMemory`] slices.
//! - `compression`: lz4 (`lz4_flex`, `no_std`) for pools that ask for it.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod abi;
mod error;
mod evict;
mod frames;
pub mod guest_keys;
mod handle;
mod hash_index;
pub mod hypercall;
mod memory;
mod page_ops;
mod stats;
mod store;
mod tmem;
pub mod virtio;

#[cfg(all(test, feature = "alloc"))]
mod model_tests;
#[cfg(all(test, feature = "alloc"))]
mod tests;

pub use error::{LayoutError, TmemError};
pub use evict::Reclaimed;
pub use handle::{
    AUTHORIZED_UUIDS, ClientConfig, ClientId, GetOutcome, Oid, POOLS_PER_CLIENT, PoolId, PoolKind,
    SHARED_POOLS, TmemConfig, Uuid,
};
#[cfg(feature = "alloc")]
pub use memory::OwnedMemory;
pub use memory::{
    ClientRecord, FrameRecord, ObjectRecord, PageRecord, PoolRecord, TmemLayout, TmemMemory,
};
pub use stats::Stats;
#[cfg(feature = "alloc")]
pub use store::StoreMemory;
pub use store::{FrameId, Page, PageStore, SliceStore};
pub use tmem::{Tmem, decode_pool_flags};

/// Bytes of a tmem page (Xen's pools on x86 and Arm: 4 KiB only).
pub const PAGE_BYTES: usize = 4096;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

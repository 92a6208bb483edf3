//! The metadata tables a [`Tmem`](crate::Tmem) works in, provided by the
//! embedder ([`TmemMemory`]) or, with the `alloc` feature, allocated on the
//! heap ([`OwnedMemory`]).

use hvmem_types::DomId;

use crate::handle::{AUTHORIZED_UUIDS, ClientConfig, POOLS_PER_CLIENT, Uuid};
use crate::stats::Stats;

/// "No record": the end of every intrusive list.
pub(crate) const NIL: u32 = u32::MAX;
/// "No pool" in a client's pool table.
pub(crate) const NO_POOL: u16 = u16::MAX;

/// Where a page's data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// The record is free.
    Unused,
    /// A whole frame, possibly shared by deduplicated pages.
    Whole,
    /// The compressed data in the low (0) or high (1) half of a frame.
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    Half(u8),
}

/// One page handle: (pool, object id, index) and where its data is.
#[derive(Clone, Copy, Debug)]
pub struct PageRecord {
    pub(crate) oid: [u64; 3],
    pub(crate) index: u32,
    pub(crate) pool: u16,
    /// The client charged for the page (the one that put it).
    pub(crate) client: u16,
    pub(crate) frame: u32,
    /// Bytes of compressed data (for `Place::Half`).
    pub(crate) len: u16,
    pub(crate) place: Place,
    pub(crate) ephemeral: bool,
    /// The key hash, to find the index bucket again on removal.
    pub(crate) hash: u32,
    pub(crate) object: u32,
    pub(crate) obj_prev: u32,
    /// Next page of the object; next free record on the free list.
    pub(crate) obj_next: u32,
    /// Client LRU: towards older pages.
    pub(crate) lru_prev: u32,
    /// Client LRU: towards newer pages.
    pub(crate) lru_next: u32,
    /// When the page was last put or (shared pools) read: orders the
    /// clients' LRU lists into one global LRU.
    pub(crate) stamp: u64,
}

impl PageRecord {
    /// An unused record.
    pub const EMPTY: Self = Self {
        oid: [0; 3],
        index: 0,
        pool: 0,
        client: 0,
        frame: NIL,
        len: 0,
        place: Place::Unused,
        ephemeral: false,
        hash: 0,
        object: NIL,
        obj_prev: NIL,
        obj_next: NIL,
        lru_prev: NIL,
        lru_next: NIL,
        stamp: 0,
    };
}

/// One object: (pool, object id), with the list of its pages.
#[derive(Clone, Copy, Debug)]
pub struct ObjectRecord {
    pub(crate) oid: [u64; 3],
    pub(crate) pool: u16,
    /// The client that last put into it (a shared pool's leaver takes the
    /// objects it wrote last).
    pub(crate) last_client: u16,
    pub(crate) live: bool,
    pub(crate) hash: u32,
    pub(crate) head: u32,
    pub(crate) pages: u32,
    pub(crate) pool_prev: u32,
    /// Next object of the pool; next free record on the free list.
    pub(crate) pool_next: u32,
}

impl ObjectRecord {
    /// An unused record.
    pub const EMPTY: Self = Self {
        oid: [0; 3],
        pool: 0,
        last_client: 0,
        live: false,
        hash: 0,
        head: NIL,
        pages: 0,
        pool_prev: NIL,
        pool_next: NIL,
    };
}

/// What tmem knows of one frame of the page store.
#[derive(Clone, Copy, Debug)]
pub struct FrameRecord {
    /// Pages whose data is in the frame: deduplicated sharers of a whole
    /// frame, or used halves (bits 0 and 1 of `halves`).
    pub(crate) refs: u32,
    pub(crate) halves: u8,
    /// The frame is in the content index under `hash`.
    pub(crate) indexed: bool,
    pub(crate) hash: u32,
    /// List of frames with one free half.
    pub(crate) half_prev: u32,
    pub(crate) half_next: u32,
}

impl FrameRecord {
    /// A frame tmem does not hold.
    pub const EMPTY: Self = Self {
        refs: 0,
        halves: 0,
        indexed: false,
        hash: 0,
        half_prev: NIL,
        half_next: NIL,
    };
}

/// One pool.
#[derive(Clone, Copy, Debug)]
pub struct PoolRecord {
    pub(crate) live: bool,
    pub(crate) persistent: bool,
    pub(crate) shared: bool,
    pub(crate) compress: bool,
    /// The creator (the only member of a private pool).
    pub(crate) owner: u16,
    /// Clients that joined (1 for a private pool).
    pub(crate) sharers: u32,
    pub(crate) uuid: Uuid,
    pub(crate) objects: u32,
    pub(crate) stats: Stats,
}

impl PoolRecord {
    /// A free pool slot.
    pub const EMPTY: Self = Self {
        live: false,
        persistent: false,
        shared: false,
        compress: false,
        owner: 0,
        sharers: 0,
        uuid: Uuid { lo: 0, hi: 0 },
        objects: NIL,
        stats: Stats {
            puts: 0,
            overwrites: 0,
            failed_puts: 0,
            gets: 0,
            hits: 0,
            misses: 0,
            exclusive_gets: 0,
            evictions: 0,
            flushes: 0,
            pages: 0,
            compressed_pages: 0,
            compressed_bytes: 0,
            duplicates: 0,
        },
    };
}

/// One client (domain).
#[derive(Clone, Copy, Debug)]
pub struct ClientRecord {
    pub(crate) live: bool,
    pub(crate) domid: DomId,
    pub(crate) config: ClientConfig,
    /// The client's pool ids -> host pool slots.
    pub(crate) pools: [u16; POOLS_PER_CLIENT],
    pub(crate) authorized: [Uuid; AUTHORIZED_UUIDS],
    pub(crate) authorized_len: u8,
    /// Oldest ephemeral page.
    pub(crate) lru_head: u32,
    /// Newest ephemeral page.
    pub(crate) lru_tail: u32,
    pub(crate) ephemeral_pages: u32,
    pub(crate) persistent_pages: u32,
    pub(crate) stats: Stats,
}

impl ClientRecord {
    /// A free client slot.
    pub const EMPTY: Self = Self {
        live: false,
        domid: DomId::new(0),
        config: ClientConfig {
            weight: 1,
            ephemeral_cap: None,
            persistent_quota: u32::MAX,
            compress: false,
        },
        pools: [NO_POOL; POOLS_PER_CLIENT],
        authorized: [Uuid { lo: 0, hi: 0 }; AUTHORIZED_UUIDS],
        authorized_len: 0,
        lru_head: NIL,
        lru_tail: NIL,
        ephemeral_pages: 0,
        persistent_pages: 0,
        stats: PoolRecord::EMPTY.stats,
    };
}

/// How big the tables are.
///
/// Every page tmem keeps needs a frame (or half of one, or a share of
/// one), a page record, and an object record for its object id. Size the
/// tables like this:
///
/// - `frames`: the store's [`capacity`](crate::PageStore::capacity).
///   [`Tmem::new`](crate::Tmem::new) refuses fewer.
/// - `pages`: at least `frames`. A put needs a free page record as well as
///   a frame. When the records run out, the put evicts ephemeral pages, and
///   if none are left it fails with
///   [`NoSpace`](crate::TmemError::NoSpace), although the store still has
///   free frames (see the example). With compression two pages can share a
///   frame, so give up to twice `frames`; with deduplication many pages
///   can share a frame, so give more.
/// - `objects`: at most one per page, so `objects = pages` never runs out
///   first. Fewer saves memory; when the object records run out, a put to a
///   new object id evicts and then fails with `NoSpace` in the same way.
///   frontswap needs few: it uses 16 object ids per swap area. cleancache
///   uses one object id per cached file, so a cache of many small files
///   needs about one object per page.
/// - `clients`: one per domain that may use tmem. `pools`: up to 16 per
///   client; a shared pool takes one slot for all its members.
///
/// ```
/// use hvmem_tmem_pool::{abi, ClientConfig, Oid, OwnedMemory, StoreMemory, Tmem, TmemConfig};
/// use hvmem_tmem_pool::{TmemError, TmemLayout, Uuid, PAGE_BYTES};
/// use hvmem_types::DomId;
///
/// // 8 frames but only 2 page records.
/// let layout = TmemLayout { clients: 1, pools: 1, pages: 2, objects: 2, frames: 8, dedup: false };
/// let (mut frames, mut tables) = (StoreMemory::new(8), OwnedMemory::new(&layout));
/// let mut tmem = Tmem::new(TmemConfig::default(), frames.store(), tables.borrow())?;
/// let guest = tmem.create_client(DomId::new(1), ClientConfig::default())?;
/// let swap = tmem.new_pool(guest, Uuid::NONE, abi::PRIVATE_PERSISTENT)?;
/// let page = [1u8; PAGE_BYTES];
/// tmem.put_page(guest, swap, Oid([1, 0, 0]), 0, &page)?;
/// tmem.put_page(guest, swap, Oid([1, 0, 0]), 1, &page)?;
/// assert_eq!(tmem.put_page(guest, swap, Oid([1, 0, 0]), 2, &page), Err(TmemError::NoSpace));
/// assert_eq!(tmem.store().in_use(), 2); // 6 frames are still free
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TmemLayout {
    /// Client slots (at most 65535).
    pub clients: usize,
    /// Pool slots for the whole host (private and shared; at most 65535).
    pub pools: usize,
    /// Page records: the most pages tmem can hold at once. At least
    /// `frames`; more with compression or deduplication.
    pub pages: usize,
    /// Object records: the most object ids holding pages at once.
    pub objects: usize,
    /// Frames of the page store ([`PageStore::capacity`](crate::PageStore::capacity)).
    pub frames: usize,
    /// Room for the content index that deduplication needs.
    pub dedup: bool,
}

impl TmemLayout {
    /// Buckets of the page index.
    #[must_use]
    pub const fn page_buckets(&self) -> usize {
        buckets_for(self.pages)
    }

    /// Buckets of the object index.
    #[must_use]
    pub const fn object_buckets(&self) -> usize {
        buckets_for(self.objects)
    }

    /// Buckets of the content index (0 without deduplication).
    #[must_use]
    pub const fn content_buckets(&self) -> usize {
        if self.dedup {
            buckets_for(self.frames)
        } else {
            0
        }
    }
}

/// The power of two at least twice `records` (load factor <= 1/2).
const fn buckets_for(records: usize) -> usize {
    let want = if records < 4 {
        8
    } else {
        records.saturating_mul(2)
    };
    match want.checked_next_power_of_two() {
        Some(n) => n,
        None => 0,
    }
}

/// The tables a [`Tmem`](crate::Tmem) works in, borrowed from the embedder
/// (no allocation). Lengths: as [`TmemLayout`] says; the hash-index slices
/// have the lengths [`TmemLayout::page_buckets`] and its siblings return.
#[derive(Debug)]
pub struct TmemMemory<'a> {
    /// Client slots.
    pub clients: &'a mut [ClientRecord],
    /// Pool slots.
    pub pools: &'a mut [PoolRecord],
    /// Page handles.
    pub pages: &'a mut [PageRecord],
    /// Page index buckets.
    pub page_buckets: &'a mut [u64],
    /// Objects.
    pub objects: &'a mut [ObjectRecord],
    /// Object index buckets.
    pub object_buckets: &'a mut [u64],
    /// One record per frame of the page store.
    pub frames: &'a mut [FrameRecord],
    /// Content index buckets (empty without deduplication).
    pub content_buckets: &'a mut [u64],
}

/// A [`TmemMemory`]'s tables on the heap.
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct OwnedMemory {
    clients: alloc::vec::Vec<ClientRecord>,
    pools: alloc::vec::Vec<PoolRecord>,
    pages: alloc::vec::Vec<PageRecord>,
    page_buckets: alloc::vec::Vec<u64>,
    objects: alloc::vec::Vec<ObjectRecord>,
    object_buckets: alloc::vec::Vec<u64>,
    frames: alloc::vec::Vec<FrameRecord>,
    content_buckets: alloc::vec::Vec<u64>,
}

#[cfg(feature = "alloc")]
impl OwnedMemory {
    /// Allocates the tables of `layout`.
    #[must_use]
    pub fn new(layout: &TmemLayout) -> Self {
        use alloc::vec;
        Self {
            clients: vec![ClientRecord::EMPTY; layout.clients],
            pools: vec![PoolRecord::EMPTY; layout.pools],
            pages: vec![PageRecord::EMPTY; layout.pages],
            page_buckets: vec![0; layout.page_buckets()],
            objects: vec![ObjectRecord::EMPTY; layout.objects],
            object_buckets: vec![0; layout.object_buckets()],
            frames: vec![FrameRecord::EMPTY; layout.frames],
            content_buckets: vec![0; layout.content_buckets()],
        }
    }

    /// Lends the tables to a [`Tmem`](crate::Tmem).
    pub fn borrow(&mut self) -> TmemMemory<'_> {
        TmemMemory {
            clients: &mut self.clients,
            pools: &mut self.pools,
            pages: &mut self.pages,
            page_buckets: &mut self.page_buckets,
            objects: &mut self.objects,
            object_buckets: &mut self.object_buckets,
            frames: &mut self.frames,
            content_buckets: &mut self.content_buckets,
        }
    }
}

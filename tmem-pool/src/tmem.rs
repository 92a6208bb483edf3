//! The [`Tmem`] facade: clients and pools. Page operations are in
//! `page_ops`, eviction in `evict`, frame use in `frames`.

use hvmem_types::DomId;

use crate::abi;
use crate::error::{LayoutError, TmemError};
use crate::handle::{
    AUTHORIZED_UUIDS, ClientConfig, ClientId, POOLS_PER_CLIENT, PoolId, PoolKind, SHARED_POOLS,
    TmemConfig, Uuid,
};
use crate::hash_index::HashIndex;
use crate::memory::{
    ClientRecord, FrameRecord, NIL, NO_POOL, ObjectRecord, PageRecord, PoolRecord, TmemMemory,
};
use crate::stats::Stats;
use crate::store::PageStore;

/// Transcendent memory for a host: clients, their pools, and the pages in
/// them. See the crate docs for the semantics.
///
/// The pool takes `&mut self`: the embedder chooses the lock (one per host,
/// as the operations touch a host-wide LRU, page store and indexes).
pub struct Tmem<'a, S: PageStore> {
    pub(crate) store: S,
    pub(crate) config: TmemConfig,
    pub(crate) clients: &'a mut [ClientRecord],
    pub(crate) pools: &'a mut [PoolRecord],
    pub(crate) pages: &'a mut [PageRecord],
    pub(crate) page_index: HashIndex<'a>,
    pub(crate) objects: &'a mut [ObjectRecord],
    pub(crate) object_index: HashIndex<'a>,
    pub(crate) frames: &'a mut [FrameRecord],
    pub(crate) content_index: HashIndex<'a>,
    pub(crate) free_page: u32,
    pub(crate) free_object: u32,
    /// Frames with exactly one used half (compressed pages).
    pub(crate) half_free: u32,
    pub(crate) clock: u64,
    pub(crate) frames_held: u64,
    pub(crate) totals: Stats,
}

impl<S: PageStore> core::fmt::Debug for Tmem<'_, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tmem")
            .field("config", &self.config)
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

fn check_len(len: usize, table: &'static str, max: usize) -> Result<(), LayoutError> {
    if len == 0 || len > max {
        Err(LayoutError::BadTable { table })
    } else {
        Ok(())
    }
}

fn check_buckets(buckets: usize, records: usize, table: &'static str) -> Result<(), LayoutError> {
    if buckets.is_power_of_two() && buckets >= records.saturating_mul(2) {
        Ok(())
    } else {
        Err(LayoutError::BadTable { table })
    }
}

fn thread<T>(records: &mut [T], link: impl Fn(&mut T, u32)) -> u32 {
    let n = records.len() as u32;
    for (i, r) in records.iter_mut().enumerate() {
        let i = i as u32;
        link(r, if i + 1 < n { i + 1 } else { NIL });
    }
    if n == 0 { NIL } else { 0 }
}

impl<'a, S: PageStore> Tmem<'a, S> {
    /// A tmem over `store`, keeping its tables in `memory` (which it resets).
    ///
    /// # Errors
    ///
    /// [`LayoutError::BadTable`] if a table is empty or too large for 32-bit
    /// (16-bit for clients and pools) record numbers, the frame table is
    /// shorter than the store's capacity, a hash index is not a power of two
    /// at least twice its records, or deduplication is on without a
    /// content index.
    pub fn new(config: TmemConfig, store: S, memory: TmemMemory<'a>) -> Result<Self, LayoutError> {
        let TmemMemory {
            clients,
            pools,
            pages,
            page_buckets,
            objects,
            object_buckets,
            frames,
            content_buckets,
        } = memory;
        check_len(clients.len(), "clients", NO_POOL as usize)?;
        check_len(pools.len(), "pools", NO_POOL as usize)?;
        check_len(pages.len(), "pages", NIL as usize - 1)?;
        check_len(objects.len(), "objects", NIL as usize - 1)?;
        if frames.len() < store.capacity() as usize {
            return Err(LayoutError::BadTable { table: "frames" });
        }
        check_buckets(page_buckets.len(), pages.len(), "page_buckets")?;
        check_buckets(object_buckets.len(), objects.len(), "object_buckets")?;
        if config.dedup {
            check_buckets(content_buckets.len(), frames.len(), "content_buckets")?;
        }
        clients.fill(ClientRecord::EMPTY);
        pools.fill(PoolRecord::EMPTY);
        frames.fill(FrameRecord::EMPTY);
        pages.fill(PageRecord::EMPTY);
        objects.fill(ObjectRecord::EMPTY);
        let free_page = thread(pages, |r, next| r.obj_next = next);
        let free_object = thread(objects, |r, next| r.pool_next = next);
        Ok(Self {
            store,
            config,
            clients,
            pools,
            pages,
            page_index: HashIndex::new(page_buckets),
            objects,
            object_index: HashIndex::new(object_buckets),
            frames,
            content_index: HashIndex::new(content_buckets),
            free_page,
            free_object,
            half_free: NIL,
            clock: 0,
            frames_held: 0,
            totals: Stats::default(),
        })
    }

    /// The page store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The page store, to change (for example the memory limit of a
    /// [`SliceStore`](crate::SliceStore)).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The host-wide settings.
    pub fn config(&self) -> &TmemConfig {
        &self.config
    }

    /// Counters for the whole host.
    pub fn stats(&self) -> Stats {
        self.totals
    }

    // ---- clients -------------------------------------------------------

    /// Creates the client of domain `domid`.
    ///
    /// # Errors
    ///
    /// [`TmemError::ClientExists`] if the domain has one,
    /// [`TmemError::TooManyClients`] if every slot is taken.
    pub fn create_client(
        &mut self,
        domid: DomId,
        config: ClientConfig,
    ) -> Result<ClientId, TmemError> {
        if self.client_of(domid).is_some() {
            return Err(TmemError::ClientExists);
        }
        let slot = self
            .clients
            .iter()
            .position(|c| !c.live)
            .ok_or(TmemError::TooManyClients)?;
        let client = self
            .clients
            .get_mut(slot)
            .ok_or(TmemError::TooManyClients)?;
        *client = ClientRecord::EMPTY;
        client.live = true;
        client.domid = domid;
        client.config = config;
        Ok(ClientId(slot as u16))
    }

    /// The client of domain `domid`, if it has one.
    #[must_use]
    pub fn client_of(&self, domid: DomId) -> Option<ClientId> {
        self.clients
            .iter()
            .position(|c| c.live && c.domid == domid)
            .map(|i| ClientId(i as u16))
    }

    pub(crate) fn client(&self, client: ClientId) -> Result<&ClientRecord, TmemError> {
        match self.clients.get(client.index()) {
            Some(c) if c.live => Ok(c),
            _ => Err(TmemError::NoSuchClient),
        }
    }

    pub(crate) fn client_mut(&mut self, client: ClientId) -> Result<&mut ClientRecord, TmemError> {
        match self.clients.get_mut(client.index()) {
            Some(c) if c.live => Ok(c),
            _ => Err(TmemError::NoSuchClient),
        }
    }

    /// The client's settings.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`].
    pub fn client_config(&self, client: ClientId) -> Result<ClientConfig, TmemError> {
        Ok(self.client(client)?.config)
    }

    /// Changes the client's weight, cap, quota or compression. A lower cap
    /// or quota takes effect on the next put (pages above it stay until
    /// evicted or flushed); compression applies to pools created later.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`].
    pub fn set_client_config(
        &mut self,
        client: ClientId,
        config: ClientConfig,
    ) -> Result<(), TmemError> {
        self.client_mut(client)?.config = config;
        Ok(())
    }

    /// The client's counters.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`].
    pub fn client_stats(&self, client: ClientId) -> Result<Stats, TmemError> {
        Ok(self.client(client)?.stats)
    }

    /// Lets the client join shared pools with this UUID (Xen's
    /// `TMEM_AUTH`, a toolstack operation).
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`]; [`TmemError::TooManyUuids`] if the client
    /// has 16 already.
    pub fn authorize_shared(&mut self, client: ClientId, uuid: Uuid) -> Result<(), TmemError> {
        let c = self.client_mut(client)?;
        let len = usize::from(c.authorized_len);
        if c.authorized.iter().take(len).any(|&u| u == uuid) {
            return Ok(());
        }
        let slot = c.authorized.get_mut(len).ok_or(TmemError::TooManyUuids)?;
        *slot = uuid;
        c.authorized_len += 1;
        Ok(())
    }

    /// Destroys the client (its domain died): every pool it has is
    /// destroyed (it leaves its shared pools), then its slot is freed.
    ///
    /// **Drop every handle of this client first.** [`ClientId`]s have no
    /// generation: the next [`create_client`](Self::create_client) may get
    /// the same slot, and then a kept `ClientId`, or a kept
    /// [`TmemDevice`](crate::virtio::TmemDevice) built from it, serves the
    /// new domain's client and can read and flush its pages.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`].
    pub fn destroy_client(&mut self, client: ClientId) -> Result<(), TmemError> {
        let pools = self.client(client)?.pools;
        for (id, &slot) in pools.iter().enumerate() {
            if slot != NO_POOL {
                self.destroy_pool(client, PoolId(id as u32))?;
            }
        }
        let c = self.client_mut(client)?;
        debug_assert_eq!(c.stats.pages, 0, "a destroyed client still holds pages");
        *c = ClientRecord::EMPTY;
        Ok(())
    }

    /// Drops every page of every pool of the client (client-level "flush
    /// all"); the pools stay. In a shared pool it drops the objects the
    /// client wrote last and every page it put, as leaving would.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`].
    pub fn flush_all(&mut self, client: ClientId) -> Result<u64, TmemError> {
        let pools = self.client(client)?.pools;
        let mut flushed = 0;
        for &slot in pools.iter() {
            if slot != NO_POOL {
                flushed += self.empty_pool(slot, Some(client.0));
            }
        }
        Ok(flushed)
    }

    // ---- pools ---------------------------------------------------------

    /// Creates a pool for the client, as `TMEM_NEW_POOL` does: `flags` are
    /// Xen's pool flags, `uuid` names a shared pool. Returns the client's
    /// lowest free pool id.
    ///
    /// A shared pool asked for with [`Uuid::NONE`], or with a UUID the client
    /// is not authorized for (when the host checks), is quietly made
    /// private, as Xen does. A shared pool with that UUID is joined if it
    /// exists, else created.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`]; [`TmemError::BadVersion`],
    /// [`TmemError::BadPageSize`], [`TmemError::Precompressed`],
    /// [`TmemError::ReservedFlags`], [`TmemError::SharedPersistent`] for bad
    /// flags; [`TmemError::TooManyPools`] if the client has 16 pools or the
    /// host no free (shared) pool slot.
    pub fn new_pool(
        &mut self,
        client: ClientId,
        uuid: Uuid,
        flags: u32,
    ) -> Result<PoolId, TmemError> {
        let kind = decode_pool_flags(flags)?;
        let c = self.client(client)?;
        let id = c
            .pools
            .iter()
            .position(|&p| p == NO_POOL)
            .ok_or(TmemError::TooManyPools)?;
        let compress = c.config.compress;
        let authorized = !self.config.check_shared_auth
            || c.authorized
                .iter()
                .take(usize::from(c.authorized_len))
                .any(|&u| u == uuid);
        let shared = kind.shared && uuid != Uuid::NONE && authorized;

        let slot = if shared {
            if let Some(existing) = self
                .pools
                .iter()
                .position(|p| p.live && p.shared && p.uuid == uuid)
            {
                let pool = self
                    .pools
                    .get_mut(existing)
                    .ok_or(TmemError::TooManyPools)?;
                pool.sharers += 1;
                existing
            } else {
                if self.pools.iter().filter(|p| p.live && p.shared).count() >= SHARED_POOLS {
                    return Err(TmemError::TooManyPools);
                }
                self.create_pool_record(client, kind.persistent, true, uuid, compress)?
            }
        } else {
            self.create_pool_record(client, kind.persistent, false, Uuid::default(), compress)?
        };
        let c = self.client_mut(client)?;
        if let Some(p) = c.pools.get_mut(id) {
            *p = slot as u16;
        }
        Ok(PoolId(id as u32))
    }

    fn create_pool_record(
        &mut self,
        client: ClientId,
        persistent: bool,
        shared: bool,
        uuid: Uuid,
        compress: bool,
    ) -> Result<usize, TmemError> {
        let slot = self
            .pools
            .iter()
            .position(|p| !p.live)
            .ok_or(TmemError::TooManyPools)?;
        let pool = self.pools.get_mut(slot).ok_or(TmemError::TooManyPools)?;
        *pool = PoolRecord::EMPTY;
        pool.live = true;
        pool.persistent = persistent;
        pool.shared = shared;
        pool.compress = compress;
        pool.owner = client.0;
        pool.sharers = 1;
        pool.uuid = uuid;
        Ok(slot)
    }

    /// The host pool slot behind the client's pool id.
    pub(crate) fn pool_slot(&self, client: ClientId, pool: PoolId) -> Result<u16, TmemError> {
        let c = self.client(client)?;
        let id = usize::try_from(pool.0).map_err(|_| TmemError::NoSuchPool)?;
        match c.pools.get(id) {
            Some(&slot) if slot != NO_POOL => Ok(slot),
            _ => Err(TmemError::NoSuchPool),
        }
    }

    /// The kind of the client's pool.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`], [`TmemError::NoSuchPool`].
    pub fn pool_kind(&self, client: ClientId, pool: PoolId) -> Result<PoolKind, TmemError> {
        let p = self.pool_record(self.pool_slot(client, pool)?)?;
        Ok(PoolKind {
            persistent: p.persistent,
            shared: p.shared,
        })
    }

    /// The pool's counters (for a shared pool, of all its sharers).
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`], [`TmemError::NoSuchPool`].
    pub fn pool_stats(&self, client: ClientId, pool: PoolId) -> Result<Stats, TmemError> {
        Ok(self.pool_record(self.pool_slot(client, pool)?)?.stats)
    }

    /// Turns compression of the pool's new pages on or off (per-pool
    /// override of the client's setting). Needs the `compression` feature to
    /// have an effect.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`], [`TmemError::NoSuchPool`].
    pub fn set_pool_compression(
        &mut self,
        client: ClientId,
        pool: PoolId,
        compress: bool,
    ) -> Result<(), TmemError> {
        let slot = self.pool_slot(client, pool)?;
        self.pools
            .get_mut(usize::from(slot))
            .ok_or(TmemError::NoSuchPool)?
            .compress = compress;
        Ok(())
    }

    pub(crate) fn pool_record(&self, slot: u16) -> Result<&PoolRecord, TmemError> {
        match self.pools.get(usize::from(slot)) {
            Some(p) if p.live => Ok(p),
            _ => Err(TmemError::NoSuchPool),
        }
    }

    /// Destroys the client's pool (`TMEM_DESTROY_POOL`): a private pool and
    /// all its pages go. From a shared pool the client only leaves: the
    /// objects it wrote last and the pages it put go (Xen drops the former;
    /// the latter are ephemeral pages charged to the leaver), and the pool
    /// dies with its last sharer. Returns the pages dropped.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`], [`TmemError::NoSuchPool`].
    pub fn destroy_pool(&mut self, client: ClientId, pool: PoolId) -> Result<u64, TmemError> {
        let slot = self.pool_slot(client, pool)?;
        let p = *self.pool_record(slot)?;
        let last = p.sharers <= 1;
        let flushed = self.empty_pool(slot, if last { None } else { Some(client.0) });
        if let Some(id) = self
            .clients
            .get_mut(client.index())
            .and_then(|c| c.pools.get_mut(pool.0 as usize))
        {
            *id = NO_POOL;
        }
        if let Some(p) = self.pools.get_mut(usize::from(slot)) {
            if last {
                debug_assert_eq!(p.stats.pages, 0, "a destroyed pool still holds pages");
                *p = PoolRecord::EMPTY;
            } else {
                p.sharers -= 1;
                if p.owner == client.0 {
                    // Someone else is still a member; make it the owner.
                    p.owner = self
                        .clients
                        .iter()
                        .position(|c| c.live && c.pools.contains(&slot))
                        .map_or(p.owner, |i| i as u16);
                }
            }
        }
        Ok(flushed)
    }

    /// Drops pages of the pool at `slot`: all of them (`leaver` `None`), or
    /// those a leaving client owns (objects it wrote last, pages it put).
    fn empty_pool(&mut self, slot: u16, leaver: Option<u16>) -> u64 {
        let mut dropped = 0;
        let mut object = self.pools.get(usize::from(slot)).map_or(NIL, |p| p.objects);
        // Bounded: every step moves along the pool's object list, which has at
        // most `objects.len()` entries and only loses entries meanwhile.
        for _ in 0..self.objects.len() {
            if object == NIL {
                break;
            }
            let Some(&o) = self.objects.get(object as usize) else {
                break;
            };
            let next = o.pool_next;
            match leaver {
                Some(client) if o.last_client != client => {
                    dropped += self.drop_object_pages(object, Some(client));
                }
                _ => dropped += self.drop_object_pages(object, None),
            }
            object = next;
        }
        dropped
    }
}

/// Decodes Xen's pool flags as `do_tmem_new_pool` checks them.
///
/// # Errors
///
/// [`TmemError::BadVersion`] (spec version not 1),
/// [`TmemError::SharedPersistent`], [`TmemError::BadPageSize`] (not 4 KiB),
/// [`TmemError::Precompressed`], [`TmemError::ReservedFlags`].
pub fn decode_pool_flags(flags: u32) -> Result<PoolKind, TmemError> {
    let version = (flags >> abi::TMEM_POOL_VERSION_SHIFT) & abi::TMEM_POOL_VERSION_MASK;
    if version != abi::TMEM_SPEC_VERSION {
        return Err(TmemError::BadVersion);
    }
    let persistent = flags & abi::TMEM_POOL_PERSIST != 0;
    let shared = flags & abi::TMEM_POOL_SHARED != 0;
    if persistent && shared {
        return Err(TmemError::SharedPersistent);
    }
    if (flags >> abi::TMEM_POOL_PAGESIZE_SHIFT) & abi::TMEM_POOL_PAGESIZE_MASK != 0 {
        return Err(TmemError::BadPageSize);
    }
    if flags & abi::TMEM_POOL_PRECOMPRESSED != 0 {
        return Err(TmemError::Precompressed);
    }
    if flags & abi::TMEM_POOL_RESERVED_BITS != 0 {
        return Err(TmemError::ReservedFlags);
    }
    Ok(PoolKind { persistent, shared })
}

const _: () = assert!(POOLS_PER_CLIENT == 16 && AUTHORIZED_UUIDS == 16);

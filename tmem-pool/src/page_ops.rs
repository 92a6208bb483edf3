//! Put, get and flush: the page operations of a pool.
//!
//! A page is found through the page index by (pool slot, object id, index)
//! in one probe run. Objects are found through the object index; each
//! object lists its pages and each pool its objects (intrusive doubly
//! linked lists over record numbers), so flushing an object or destroying a
//! pool touches only what it removes.

use crate::error::TmemError;
use crate::handle::{ClientId, GetOutcome, Oid, PoolId};
use crate::hash_index::{Found, K0, K1, fold_mul};
use crate::memory::{NIL, ObjectRecord, PageRecord, Place};
use crate::stats::Event;
use crate::store::{Page, PageStore};
use crate::{PAGE_BYTES, Tmem};

/// What a page operation needs to know of its pool.
#[derive(Clone, Copy, Debug)]
struct PoolInfo {
    persistent: bool,
    shared: bool,
    compress: bool,
    empty: bool,
}

/// The page index's hash of a key.
#[inline]
fn page_hash(seed: u64, pool: u16, oid: &[u64; 3], index: u32) -> u32 {
    let h = fold_mul(seed ^ oid[0], K0) ^ fold_mul(oid[1] ^ K1, oid[2] ^ K0);
    let h = fold_mul(h ^ (u64::from(pool) << 32 | u64::from(index)), K1);
    (h >> 32) as u32 ^ h as u32
}

/// The object index's hash of an object.
#[inline]
fn object_hash(seed: u64, pool: u16, oid: &[u64; 3]) -> u32 {
    let h = fold_mul(seed ^ oid[0] ^ u64::from(pool), K1) ^ fold_mul(oid[1] ^ K0, oid[2] ^ K1);
    (h >> 32) as u32 ^ h as u32
}

impl<S: PageStore> Tmem<'_, S> {
    /// Moves the counters of the client charged, the pool and the host.
    #[inline(always)]
    pub(crate) fn count(&mut self, client: u16, pool: u16, event: Event) {
        if let Some(c) = self.clients.get_mut(usize::from(client)) {
            c.stats.record(event);
        }
        if let Some(p) = self.pools.get_mut(usize::from(pool)) {
            p.stats.record(event);
        }
        self.totals.record(event);
    }

    fn count_compressed(&mut self, client: u16, pool: u16, len: u16, add: bool) {
        if let Some(c) = self.clients.get_mut(usize::from(client)) {
            c.stats.compressed(len, add);
        }
        if let Some(p) = self.pools.get_mut(usize::from(pool)) {
            p.stats.compressed(len, add);
        }
        self.totals.compressed(len, add);
    }

    /// The page's record and its bucket in the page index.
    #[inline]
    fn find_page(&self, pool: u16, oid: &[u64; 3], index: u32, hash: u32) -> Option<Found> {
        let pages = &*self.pages;
        self.page_index.find(hash, |rec| {
            pages
                .get(rec as usize)
                .is_some_and(|r| r.index == index && r.pool == pool && r.oid == *oid)
        })
    }

    /// Readahead in the page index: starts fetching the bucket of the same
    /// object's next index, which the guest is likely to name next
    /// (frontswap numbers consecutive swap slots, and cleancache consecutive
    /// file pages, by consecutive indexes of one object; swap-in readahead,
    /// file readahead and truncation walk them in order). The bucket is
    /// random in the 2 MiB-per-100k-pages index, so a lookup's first load
    /// is a cache miss that everything after it waits for; fetched one
    /// operation early, it overlaps this one. A hint only: nothing is read
    /// or changed, and a guest that does not go in order pays one hash and
    /// one prefetched cache line per operation.
    #[inline(always)]
    fn prefetch_next(&self, pool: u16, oid: &[u64; 3], index: u32) {
        if let Some(next) = index.checked_add(1) {
            self.page_index
                .prefetch(page_hash(self.config.hash_seed, pool, oid, next));
        }
    }

    fn find_object(&self, pool: u16, oid: &[u64; 3], hash: u32) -> Option<u32> {
        let objects = &*self.objects;
        self.object_index
            .find(hash, |rec| {
                objects
                    .get(rec as usize)
                    .is_some_and(|o| o.live && o.pool == pool && o.oid == *oid)
            })
            .map(|f| f.record)
    }

    fn live_pool(&self, client: ClientId, pool: PoolId) -> Result<(u16, PoolInfo), TmemError> {
        let slot = self.pool_slot(client, pool)?;
        let p = self.pool_record(slot)?;
        Ok((
            slot,
            PoolInfo {
                persistent: p.persistent,
                shared: p.shared,
                compress: p.compress,
                empty: p.stats.pages == 0,
            },
        ))
    }

    /// Copies a page into the pool under (`oid`, `index`) (`TMEM_PUT_PAGE`).
    ///
    /// A put over an existing page replaces it. If a put fails, the page
    /// under that key is gone, whether or not one was there: a get can never
    /// return data older than the last put (Xen, and frontswap's rule for
    /// persistent pools: a failed store invalidates the old copy).
    ///
    /// When the store is full, ephemeral pages are evicted to make room (at
    /// most [`evictions_per_put`](crate::TmemConfig::evictions_per_put)).
    ///
    /// # Errors
    ///
    /// Unchanged state: [`TmemError::NoSuchClient`], [`TmemError::NoSuchPool`],
    /// [`TmemError::BadBufferLength`] (`data` not 4096 bytes). Old copy
    /// dropped: [`TmemError::QuotaExceeded`] (persistent quota, or an
    /// ephemeral cap of 0), [`TmemError::NoMemory`], [`TmemError::NoSpace`],
    /// [`TmemError::StoreFault`].
    pub fn put_page(
        &mut self,
        client: ClientId,
        pool: PoolId,
        oid: Oid,
        index: u32,
        data: &[u8],
    ) -> Result<(), TmemError> {
        let data: &Page = data
            .try_into()
            .map_err(|_| TmemError::BadBufferLength { len: data.len() })?;
        let (slot, p) = self.live_pool(client, pool)?;
        let hash = page_hash(self.config.hash_seed, slot, &oid.0, index);
        let dedup = self.config.dedup && !p.persistent;
        let mut replaced = false;
        if let Some(found) = self.find_page(slot, &oid.0, index, hash) {
            let rec = found.record;
            let r = *self.pages.get(rec as usize).ok_or(TmemError::StoreFault)?;
            if r.client == client.0
                && !p.compress
                && self.overwrite_whole(r.frame, r.place, data, dedup)?
            {
                self.count(client.0, slot, Event::Overwrite);
                if r.ephemeral {
                    self.lru_unlink(rec);
                    self.lru_push(rec);
                }
                if let Some(o) = self.objects.get_mut(r.object as usize) {
                    o.last_client = client.0;
                }
                return Ok(());
            }
            // Over another client's page (shared pool) the old page is that
            // client's flush and the new one this client's put.
            replaced = r.client == client.0;
            // Nothing above moved the page index: the bucket still holds it.
            self.remove_found(
                found,
                if replaced {
                    Event::Replaced
                } else {
                    Event::Flush
                },
            )?;
        }
        match self.put_new(client, slot, &p, oid, index, hash, data, dedup) {
            Ok(()) => {
                if replaced {
                    self.count(client.0, slot, Event::Rewritten);
                } else {
                    self.count(client.0, slot, Event::Put);
                }
                Ok(())
            }
            Err(e) => {
                if replaced {
                    self.count(client.0, slot, Event::ReplaceFailed);
                }
                self.count(client.0, slot, Event::FailedPut);
                Err(e)
            }
        }
    }

    /// Stores a page under a key that has none.
    #[allow(clippy::too_many_arguments)]
    fn put_new(
        &mut self,
        client: ClientId,
        slot: u16,
        p: &PoolInfo,
        oid: Oid,
        index: u32,
        hash: u32,
        data: &Page,
        dedup: bool,
    ) -> Result<(), TmemError> {
        let c = self.client(client)?;
        let (persistent_pages, quota) = (c.persistent_pages, c.config.persistent_quota);
        let (ephemeral_pages, cap) = (c.ephemeral_pages, c.config.ephemeral_cap);
        if p.persistent {
            if persistent_pages >= quota {
                return Err(TmemError::QuotaExceeded);
            }
        } else if let Some(cap) = cap {
            // At the cap the client's own oldest pages make room. Bounded by
            // the client's ephemeral pages.
            for _ in 0..=ephemeral_pages {
                let (held, oldest) = self
                    .client(client)
                    .map(|c| (c.ephemeral_pages, c.lru_head))?;
                if held < cap {
                    break;
                }
                if oldest == NIL {
                    return Err(TmemError::QuotaExceeded);
                }
                self.remove_page(oldest, Event::Eviction)?;
            }
        }
        let ohash = object_hash(self.config.hash_seed, slot, &oid.0);
        for _ in 0..=self.config.evictions_per_put {
            let need_object =
                self.free_object == NIL && self.find_object(slot, &oid.0, ohash).is_none();
            if self.free_page != NIL && !need_object {
                break;
            }
            if !self.evict_one(Some(client.0)) {
                break;
            }
        }
        if self.free_page == NIL
            || (self.free_object == NIL && self.find_object(slot, &oid.0, ohash).is_none())
        {
            return Err(TmemError::NoSpace);
        }

        let stored = self.store_page(data, dedup, p.compress, client.0)?;
        // Evictions while storing may have freed the object, never a free
        // record, so both lookups below succeed.
        let object = match self.find_object(slot, &oid.0, ohash) {
            Some(o) => o,
            None => match self.new_object(slot, oid, ohash) {
                Some(o) => o,
                None => {
                    self.release(stored.frame, stored.place)?;
                    return Err(TmemError::NoSpace);
                }
            },
        };
        let rec = self.free_page;
        let Some(record) = self.pages.get_mut(rec as usize) else {
            self.release(stored.frame, stored.place)?;
            return Err(TmemError::NoSpace);
        };
        self.free_page = record.obj_next;
        *record = PageRecord {
            oid: oid.0,
            index,
            pool: slot,
            client: client.0,
            frame: stored.frame,
            len: stored.len,
            place: stored.place,
            ephemeral: !p.persistent,
            hash,
            object,
            ..PageRecord::EMPTY
        };
        if !self.page_index.insert(hash, rec) {
            debug_assert!(false, "a page index sized for its records is never full");
        }
        // Link at the head of the object's page list.
        let o = self
            .objects
            .get_mut(object as usize)
            .ok_or(TmemError::StoreFault)?;
        let old_head = o.head;
        o.head = rec;
        o.pages += 1;
        o.last_client = client.0;
        if let Some(r) = self.pages.get_mut(rec as usize) {
            r.obj_next = old_head;
        }
        if let Some(h) = self.pages.get_mut(old_head as usize) {
            h.obj_prev = rec;
        }
        let c = self.client_mut(client)?;
        if p.persistent {
            c.persistent_pages += 1;
        } else {
            c.ephemeral_pages += 1;
        }
        if !p.persistent {
            self.lru_push(rec);
        }
        if stored.duplicate {
            self.count(client.0, slot, Event::Duplicate);
        }
        if let Place::Half(_) = stored.place {
            self.count_compressed(client.0, slot, stored.len, true);
        }
        Ok(())
    }

    fn new_object(&mut self, pool: u16, oid: Oid, hash: u32) -> Option<u32> {
        let rec = self.free_object;
        let head = self.pools.get(usize::from(pool))?.objects;
        let o = self.objects.get_mut(rec as usize)?;
        self.free_object = o.pool_next;
        *o = ObjectRecord {
            oid: oid.0,
            pool,
            live: true,
            hash,
            pool_next: head,
            ..ObjectRecord::EMPTY
        };
        if let Some(h) = self.objects.get_mut(head as usize) {
            h.pool_prev = rec;
        }
        if let Some(p) = self.pools.get_mut(usize::from(pool)) {
            p.objects = rec;
        }
        if !self.object_index.insert(hash, rec) {
            debug_assert!(false, "an object index sized for its records is never full");
        }
        Some(rec)
    }

    fn free_object_record(&mut self, rec: u32) {
        let Some(&o) = self.objects.get(rec as usize) else {
            return;
        };
        self.object_index.remove(o.hash, rec);
        if let Some(prev) = self.objects.get_mut(o.pool_prev as usize) {
            prev.pool_next = o.pool_next;
        } else if let Some(p) = self.pools.get_mut(usize::from(o.pool)) {
            p.objects = o.pool_next;
        }
        if let Some(next) = self.objects.get_mut(o.pool_next as usize) {
            next.pool_prev = o.pool_prev;
        }
        let free = self.free_object;
        if let Some(o) = self.objects.get_mut(rec as usize) {
            *o = ObjectRecord::EMPTY;
            o.pool_next = free;
        }
        self.free_object = rec;
    }

    /// Removes a page: from the index, its object (freed when empty), its
    /// LRU, its frame; counts `event`.
    pub(crate) fn remove_page(&mut self, rec: u32, event: Event) -> Result<(), TmemError> {
        let hash = self
            .pages
            .get(rec as usize)
            .ok_or(TmemError::StoreFault)?
            .hash;
        match self.page_index.find(hash, |r| r == rec) {
            Some(found) => self.remove_found(found, event),
            // Every used record is in the index; a free one is not.
            None => Err(TmemError::StoreFault),
        }
    }

    /// [`remove_page`](Self::remove_page) for a page the page index has just
    /// found in `found.bucket` (the index has not changed since). Inlined
    /// into each page operation, so that its event is a constant there.
    #[inline(always)]
    fn remove_found(&mut self, found: Found, event: Event) -> Result<(), TmemError> {
        let rec = found.record;
        let r = *self.pages.get(rec as usize).ok_or(TmemError::StoreFault)?;
        if r.place == Place::Unused {
            return Err(TmemError::StoreFault);
        }
        self.page_index.remove_at(found.bucket);
        // Object list.
        if let Some(prev) = self.pages.get_mut(r.obj_prev as usize) {
            prev.obj_next = r.obj_next;
        } else if let Some(o) = self.objects.get_mut(r.object as usize) {
            o.head = r.obj_next;
        }
        if let Some(next) = self.pages.get_mut(r.obj_next as usize) {
            next.obj_prev = r.obj_prev;
        }
        let empty = self.objects.get_mut(r.object as usize).is_some_and(|o| {
            o.pages = o.pages.saturating_sub(1);
            o.pages == 0
        });
        if empty {
            self.free_object_record(r.object);
        }
        if r.ephemeral {
            self.lru_unlink(rec);
        }
        if let Place::Half(_) = r.place {
            self.count_compressed(r.client, r.pool, r.len, false);
        }
        // `count`, sharing the client lookup with the page totals.
        if let Some(c) = self.clients.get_mut(usize::from(r.client)) {
            if r.ephemeral {
                c.ephemeral_pages = c.ephemeral_pages.saturating_sub(1);
            } else {
                c.persistent_pages = c.persistent_pages.saturating_sub(1);
            }
            c.stats.record(event);
        }
        if let Some(p) = self.pools.get_mut(usize::from(r.pool)) {
            p.stats.record(event);
        }
        self.totals.record(event);
        // A free record needs only its mark and its free-list link: a put
        // writes the whole record before using it again, and nothing reads a
        // free record's other fields.
        let free = self.free_page;
        if let Some(record) = self.pages.get_mut(rec as usize) {
            record.place = Place::Unused;
            record.obj_next = free;
        }
        self.free_page = rec;
        if r.place == Place::Whole && (!r.ephemeral || !self.config.dedup) {
            // Only deduplication shares a whole frame or puts it in the
            // content index, and it takes only ephemeral pages: this frame
            // is the page's alone.
            return self.release_sole(r.frame);
        }
        self.release(r.frame, r.place)
    }

    /// An exclusive get's removal, kept out of line so that the other gets
    /// carry none of its code.
    #[inline(never)]
    fn take_found(&mut self, found: Found) -> Result<(), TmemError> {
        self.remove_found(found, Event::Hit { exclusive: true })
    }

    /// Copies the page under (`oid`, `index`) into `out` (`TMEM_GET_PAGE`).
    /// From a private ephemeral pool the page leaves the pool (an exclusive
    /// get, as cleancache expects); from a shared ephemeral pool it stays and
    /// becomes the newest; from a persistent pool it stays. `out` is
    /// untouched on a miss.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`], [`TmemError::NoSuchPool`],
    /// [`TmemError::BadBufferLength`], all with nothing changed;
    /// [`TmemError::StoreFault`] if the store lost the data.
    pub fn get_page(
        &mut self,
        client: ClientId,
        pool: PoolId,
        oid: Oid,
        index: u32,
        out: &mut [u8],
    ) -> Result<GetOutcome, TmemError> {
        let len = out.len();
        let out: &mut Page = out
            .try_into()
            .map_err(|_| TmemError::BadBufferLength { len })?;
        let (slot, p) = self.live_pool(client, pool)?;
        let hash = page_hash(self.config.hash_seed, slot, &oid.0, index);
        self.prefetch_next(slot, &oid.0, index);
        let Some(found) = self.find_page(slot, &oid.0, index, hash) else {
            self.count(client.0, slot, Event::Miss);
            return Ok(if p.empty {
                GetOutcome::PoolEmpty
            } else {
                GetOutcome::Miss
            });
        };
        let rec = found.record;
        let r = *self.pages.get(rec as usize).ok_or(TmemError::StoreFault)?;
        self.read_page(r.frame, r.place, r.len, out)?;
        if r.ephemeral && !p.shared {
            self.take_found(found)?;
        } else {
            self.count(client.0, slot, Event::Hit { exclusive: false });
            if r.ephemeral {
                self.lru_unlink(rec);
                self.lru_push(rec);
            }
        }
        Ok(GetOutcome::Hit)
    }

    /// Removes the page under (`oid`, `index`) if there is one
    /// (`TMEM_FLUSH_PAGE`); returns whether there was.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`], [`TmemError::NoSuchPool`].
    pub fn flush_page(
        &mut self,
        client: ClientId,
        pool: PoolId,
        oid: Oid,
        index: u32,
    ) -> Result<bool, TmemError> {
        let (slot, _) = self.live_pool(client, pool)?;
        let hash = page_hash(self.config.hash_seed, slot, &oid.0, index);
        self.prefetch_next(slot, &oid.0, index);
        match self.find_page(slot, &oid.0, index, hash) {
            Some(found) => self.remove_found(found, Event::Flush).map(|()| true),
            None => Ok(false),
        }
    }

    /// Removes the object and all its pages (`TMEM_FLUSH_OBJECT`); returns
    /// the pages removed.
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`], [`TmemError::NoSuchPool`].
    pub fn flush_object(
        &mut self,
        client: ClientId,
        pool: PoolId,
        oid: Oid,
    ) -> Result<u64, TmemError> {
        let (slot, _) = self.live_pool(client, pool)?;
        let hash = object_hash(self.config.hash_seed, slot, &oid.0);
        Ok(match self.find_object(slot, &oid.0, hash) {
            Some(object) => self.drop_object_pages(object, None),
            None => 0,
        })
    }

    /// Flushes the object's pages (only those `only` put, if given).
    pub(crate) fn drop_object_pages(&mut self, object: u32, only: Option<u16>) -> u64 {
        let mut dropped = 0;
        let mut rec = self.objects.get(object as usize).map_or(NIL, |o| o.head);
        // Bounded: each step moves along the object's page list.
        for _ in 0..self.pages.len() {
            let Some(&r) = self.pages.get(rec as usize) else {
                break;
            };
            let next = r.obj_next;
            if only.is_none_or(|c| c == r.client) && self.remove_page(rec, Event::Flush).is_ok() {
                dropped += 1;
            }
            rec = next;
        }
        dropped
    }

    /// Whether the pool holds the page (without reading or moving it).
    ///
    /// # Errors
    ///
    /// [`TmemError::NoSuchClient`], [`TmemError::NoSuchPool`].
    pub fn contains(
        &self,
        client: ClientId,
        pool: PoolId,
        oid: Oid,
        index: u32,
    ) -> Result<bool, TmemError> {
        let slot = self.pool_slot(client, pool)?;
        let hash = page_hash(self.config.hash_seed, slot, &oid.0, index);
        Ok(self.find_page(slot, &oid.0, index, hash).is_some())
    }
}

const _: () = assert!(PAGE_BYTES == 4096);

//! tmem over the host's idle memory: hvmem-tmem-pool's [`Tmem`] with a
//! [`PageStore`] whose frames come from the host's buddy heap, and Xen's
//! `tmem_op` (38) dispatched to it.
//!
//! # Where tmem's frames come from
//!
//! tmem holds each page in a frame of the host's heap. Such a frame is the
//! host's in the frame table (`Owner::Host`), recorded as lent to tmem in
//! the host's records, and charged in balloon-proto's books to
//! [`TMEM_BOOKS`], an accounting entry no domain uses (the books have no
//! host reservation of their own). So the invariant "every frame is free or
//! owned by exactly one domain or the host" holds with tmem's frames
//! counted, and the books' free pages stay the heap's free frames.
//!
//! [`Tmem`] owns its store and asks it for frames in the middle of an
//! operation, while the heap is the host's. So the host lends frames ahead:
//! before a put it lends the store one frame, if the heap has more than
//! [`TMEM_FREE_FLOOR`] free (Xen refused tmem puts that would leave less
//! than 1 MiB free) and no claim needs it; after every operation it takes
//! back what the store did not use and what tmem freed. At rest, the frames
//! lent to tmem are exactly the frames that hold tmem pages. A put that
//! finds no lent frame makes tmem evict ephemeral pages to reuse their
//! frames, and fails (`-ENOMEM`) if that does not help, as in Xen.
//!
//! When a domain needs memory the heap does not have, the host evicts
//! ephemeral pages ([`Tmem::evict`]) and returns their frames to the heap
//! before it allocates (Xen's `tmem_relinquish_pages`). Persistent pages
//! are never evicted.
//!
//! # Who pays for a page
//!
//! As in Xen, an ephemeral page is charged to the host (its frame counts in
//! [`TMEM_BOOKS`]), a persistent page to the domain that put it: it counts
//! in the domain's `tot_pages` and against its `max_pages`, so a domain at
//! its limit can store nothing in a persistent pool (the put fails with
//! `-ENOMEM` and, by frontswap's rule, the old copy for that key is gone).
//! Before each `tmem_op` the host sets the client's persistent quota to
//! what the domain may still hold (`max_pages` less the pages it holds
//! outside tmem); after it, the books move the charge for the domain's
//! persistent pages between [`TMEM_BOOKS`] and the domain. The frames stay
//! the host's, lent to tmem, either way.
//!
//! # Page contents
//!
//! The sim keeps a fingerprint per data page ([`crate::memory`]); tmem
//! copies real bytes. A guest frame read by tmem is its 512 words (the
//! fingerprint repeated, for a data page), little-endian; a page written
//! back whose words are all equal becomes a data page with that
//! fingerprint. Bytes of the store's frames exist only while tmem holds
//! them.

use hvmem_frametable::{FrameTable, FrameType, Owner, TrustContents};
use hvmem_tmem_pool::hypercall::{GuestFault, GuestPages, do_tmem_op};
use hvmem_tmem_pool::{
    ClientConfig, FrameId, GetOutcome, Oid, PAGE_BYTES, POOLS_PER_CLIENT, Page, PageStore, PoolId,
    Tmem, TmemLayout, abi::TmemOp,
};
use hvmem_types::{DomId, Mfn, PageOrder};

use crate::host::{Host, TMEM_OWNER};
use crate::memory::FrameMemory;

/// The books' accounting entry for the frames lent to tmem: the largest
/// ordinary domain id, which the sim never gives a domain.
pub const TMEM_BOOKS: DomId = DomId::new(0x7fef);

/// Free frames the heap keeps before it lends one to tmem (1 MiB, Xen's
/// check before a tmem put).
pub const TMEM_FREE_FLOOR: u64 = 256;

/// Objects tmem can track: Linux's frontswap uses 16 per swap area, and the
/// sim's cleancache one per 1024 pages of a guest's files.
fn objects_for(frames: u64) -> usize {
    usize::try_from(frames / 256 + 1024).unwrap_or(1024)
}

/// The most pages tmem tracks at once (4 GiB of pages): its page table
/// costs about 100 bytes per page (a record and two index buckets), so a large host does not pay for a tmem
/// bigger than its idle memory is likely to be. A put beyond it fails.
pub const TMEM_MAX_PAGES: usize = 1 << 20;

/// The table sizes of a host of `frames` frames: any frame of the host
/// can hold a tmem page, up to [`TMEM_MAX_PAGES`] at once.
#[must_use]
pub fn tmem_layout(frames: u64) -> TmemLayout {
    let frames = usize::try_from(frames).unwrap_or(0).max(1);
    TmemLayout {
        clients: crate::host::MAX_DOMAINS,
        pools: crate::host::MAX_DOMAINS * 4,
        pages: frames.min(TMEM_MAX_PAGES),
        objects: objects_for(frames as u64),
        frames,
        dedup: false,
    }
}

/// The [`PageStore`] over frames the host lends: frame ids are the frames'
/// indexes in the host (machine frame minus the first), so any host frame
/// can hold a tmem page.
#[derive(Debug)]
pub struct TmemStore {
    first: u64,
    /// Bytes of the frames tmem holds, indexed by frame id.
    bytes: Vec<Option<Box<Page>>>,
    /// Per frame: handed out to tmem now.
    handed: Vec<bool>,
    /// Lent by the host and not yet handed out.
    spare: Vec<u32>,
    /// Given back by tmem; the host takes them back after the operation
    /// (tmem may reuse one in the same operation).
    returned: Vec<u32>,
    in_use: u64,
}

impl TmemStore {
    /// A store for frames `first..first + frames`.
    #[must_use]
    pub fn new(first: Mfn, frames: usize) -> Self {
        Self {
            first: first.get(),
            bytes: (0..frames).map(|_| None).collect(),
            handed: vec![false; frames],
            spare: Vec::new(),
            returned: Vec::new(),
            in_use: 0,
        }
    }

    /// Frames handed out to tmem (holding pages).
    #[must_use]
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Frames lent by the host: handed out, spare and returned.
    #[must_use]
    pub fn lent(&self) -> u64 {
        self.in_use + self.spare.len() as u64 + self.returned.len() as u64
    }

    /// Whether `mfn` is handed out to tmem now.
    #[must_use]
    pub fn holds(&self, mfn: Mfn) -> bool {
        mfn.get()
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.handed.get(i))
            .is_some_and(|&h| h)
    }

    /// Takes back the frames not handed out; their bytes go.
    fn take_unused(&mut self) -> Vec<Mfn> {
        let mut out: Vec<Mfn> = Vec::new();
        for id in self.spare.drain(..).chain(self.returned.drain(..)) {
            if let Some(b) = self.bytes.get_mut(id as usize) {
                *b = None;
            }
            out.push(Mfn::new(self.first + u64::from(id)));
        }
        out
    }
}

impl PageStore for TmemStore {
    fn capacity(&self) -> u32 {
        u32::try_from(self.bytes.len()).unwrap_or(u32::MAX - 1)
    }

    fn alloc_frame(&mut self) -> Option<FrameId> {
        let id = self.returned.pop().or_else(|| self.spare.pop())?;
        let i = id as usize;
        if let Some(h) = self.handed.get_mut(i) {
            *h = true;
        }
        if let Some(b) = self.bytes.get_mut(i)
            && b.is_none()
        {
            *b = Some(Box::new([0; PAGE_BYTES]));
        }
        self.in_use += 1;
        Some(FrameId(id))
    }

    fn free_frame(&mut self, frame: FrameId) {
        let Some(h) = self.handed.get_mut(frame.0 as usize) else {
            return;
        };
        if core::mem::take(h) {
            self.in_use = self.in_use.saturating_sub(1);
            self.returned.push(frame.0);
        }
    }

    fn frame(&self, frame: FrameId) -> Option<&Page> {
        if !self.handed.get(frame.0 as usize).is_some_and(|&h| h) {
            return None;
        }
        self.bytes.get(frame.0 as usize)?.as_deref()
    }

    fn frame_mut(&mut self, frame: FrameId) -> Option<&mut Page> {
        if !self.handed.get(frame.0 as usize).is_some_and(|&h| h) {
            return None;
        }
        self.bytes.get_mut(frame.0 as usize)?.as_deref_mut()
    }
}

/// The bytes of a data page with fingerprint `fp`: the word repeated.
#[must_use]
pub fn page_of(fp: u64) -> Page {
    let mut page = [0u8; PAGE_BYTES];
    for chunk in page.chunks_exact_mut(8) {
        chunk.copy_from_slice(&fp.to_le_bytes());
    }
    page
}

/// The calling guest's memory as tmem copies pages in and out (PV: `cmfn`
/// is a machine frame, which must be the caller's; a write needs the
/// writable type, so a page table in use is never written).
struct CallerPages<'h, 't> {
    table: &'h FrameTable<'t>,
    mem: &'h mut FrameMemory,
    owner: Owner,
}

impl CallerPages<'_, '_> {
    fn words_of(mem: &FrameMemory, mfn: Mfn, page: &mut Page) {
        if mem.has_words(mfn) {
            if let Some(words) = mem.words(mfn) {
                for (chunk, w) in page.chunks_exact_mut(8).zip(words.iter()) {
                    chunk.copy_from_slice(
                        &w.load(core::sync::atomic::Ordering::Relaxed).to_le_bytes(),
                    );
                }
            }
        } else {
            *page = page_of(mem.fingerprint(mfn).unwrap_or(0));
        }
    }
}

impl GuestPages for CallerPages<'_, '_> {
    fn read(&mut self, cmfn: u64, page: &mut Page) -> Result<(), GuestFault> {
        let mfn = Mfn::new(cmfn);
        self.table
            .get_page(mfn, self.owner)
            .map_err(|_| GuestFault)?;
        Self::words_of(self.mem, mfn, page);
        let _ = self.table.put_page(mfn);
        Ok(())
    }

    fn write(&mut self, cmfn: u64, page: &Page) -> Result<(), GuestFault> {
        let mfn = Mfn::new(cmfn);
        let guard = self
            .table
            .get_typed_ref(mfn, self.owner, FrameType::Writable, &TrustContents)
            .map_err(|_| GuestFault)?;
        let mut words = page
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        let first = words.next().unwrap_or(0);
        if words.all(|w| w == first) {
            self.mem.store_data(mfn, first);
        } else {
            for (i, c) in page.chunks_exact(8).enumerate() {
                let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                self.mem.write_word(mfn, i as u32, w);
            }
        }
        drop(guard);
        Ok(())
    }

    fn can_write(&self, cmfn: u64) -> bool {
        let mfn = Mfn::new(cmfn);
        let Ok(r) = self
            .table
            .get_typed_ref(mfn, self.owner, FrameType::Writable, &TrustContents)
        else {
            return false;
        };
        drop(r);
        true
    }
}

impl Host<'_> {
    /// The host's tmem (read-only: pools, statistics, the store).
    #[must_use]
    pub fn tmem(&self) -> &Tmem<'_, TmemStore> {
        &self.tmem
    }

    /// Creates `dom`'s tmem client (its persistent quota follows its
    /// headroom, set before each `tmem_op`). A host whose client slots are
    /// full leaves it to the first `tmem_op`, which then fails with
    /// `-ENOMEM`.
    pub(crate) fn tmem_create_client(&mut self, dom: DomId) {
        let _ = self.tmem.create_client(dom, ClientConfig::default());
    }

    /// Pages `dom`'s persistent pools hold, as tmem counts them.
    #[must_use]
    pub fn tmem_persistent_held(&self, dom: DomId) -> u64 {
        let Some(client) = self.tmem.client_of(dom) else {
            return 0;
        };
        (0..POOLS_PER_CLIENT as u32)
            .map(PoolId)
            .filter(|&p| self.tmem.pool_kind(client, p).is_ok_and(|k| k.persistent))
            .filter_map(|p| self.tmem.pool_stats(client, p).ok())
            .map(|s| s.pages)
            .sum()
    }

    /// Lets `dom`'s client hold as many persistent pages as the domain may
    /// still take: `max_pages` less what it holds outside tmem.
    fn tmem_set_persistent_quota(&mut self, dom: DomId) {
        let (Some(client), Some(d), Some(b)) = (
            self.tmem.client_of(dom),
            self.domain(dom),
            self.books.domain(dom),
        ) else {
            return;
        };
        let outside = b.tot_pages.saturating_sub(d.tmem_persistent);
        let quota = b.max_pages.saturating_sub(outside);
        if let Ok(mut config) = self.tmem.client_config(client) {
            config.persistent_quota = u32::try_from(quota).unwrap_or(u32::MAX);
            let _ = self.tmem.set_client_config(client, config);
        }
    }

    /// Moves the books' charge for `dom`'s persistent pages between
    /// [`TMEM_BOOKS`] and the domain, to what its pools hold now.
    fn tmem_charge_persistent(&mut self, dom: DomId) {
        let held = self.tmem_persistent_held(dom);
        let Some(d) = self.domains.iter_mut().find(|d| d.id() == dom) else {
            return;
        };
        let charged = core::mem::replace(&mut d.tmem_persistent, held);
        let (from, to, k) = if held > charged {
            (TMEM_BOOKS, dom, held - charged)
        } else {
            (dom, TMEM_BOOKS, charged - held)
        };
        if k == 0 {
            return;
        }
        // The quota kept the domain within its max_pages, and the pages
        // freed first cover the ones taken: both always succeed.
        let freed = self.books.decrease_reservation(from, k, 0);
        let taken = self.books.populate_physmap(to, k, 0);
        debug_assert!(
            freed == Ok(k) && taken == Ok(k),
            "moving {k} persistent pages {from} -> {to}: {freed:?} {taken:?}"
        );
    }

    /// Destroys `dom`'s tmem client (its pools and pages) and takes the
    /// frames back.
    pub(crate) fn tmem_destroy_client(&mut self, dom: DomId) {
        if let Some(client) = self.tmem.client_of(dom) {
            let _ = self.tmem.destroy_client(client);
        }
        self.tmem_charge_persistent(dom);
        self.tmem_settle();
    }

    /// Lends tmem one frame of idle memory, if there is some above the
    /// floor and no claim needs it.
    fn tmem_lend(&mut self) {
        if self.heap.free_frames() <= TMEM_FREE_FLOOR
            || self.books.unclaimed_free_pages() <= TMEM_FREE_FLOOR
            || self.books.populate_physmap(TMEM_BOOKS, 1, 0) != Ok(1)
        {
            return;
        }
        let Self { heap, mem, .. } = self;
        let Ok(mfn) = heap.alloc_clean_in(PageOrder::ZERO, hvmem_buddy::ZonePolicy::Any, |m| {
            mem.scrub(m);
        }) else {
            let _ = self.books.decrease_reservation(TMEM_BOOKS, 1, 0);
            return;
        };
        let assigned = self.table.assign(mfn, Owner::Host);
        debug_assert!(assigned.is_ok(), "{mfn}: {assigned:?}");
        self.set_record(mfn, TMEM_OWNER, u64::MAX);
        self.tmem_frames += 1;
        let id = mfn.get() - self.first_mfn().get();
        self.tmem.store_mut().spare.push(id as u32);
    }

    /// Takes back every lent frame tmem does not hold a page in.
    pub(crate) fn tmem_settle(&mut self) {
        for mfn in self.tmem.store_mut().take_unused() {
            let released = self.table.release(mfn, Owner::Host);
            debug_assert!(released.is_ok(), "{mfn}: {released:?}");
        }
        self.reap();
    }

    /// Evicts ephemeral pages until `frames` frames went back to the heap
    /// (or none is left).
    pub(crate) fn tmem_reclaim(&mut self, frames: u64) {
        if self.tmem.ephemeral_pages() == 0 {
            return;
        }
        let _ = self.tmem.evict(frames);
        self.tmem_settle();
    }

    /// `HYPERVISOR_tmem_op` for `caller`: hvmem-tmem-pool's `do_tmem_op`
    /// with the caller's frames, Xen's return values. An unknown caller
    /// gets `-ESRCH`.
    pub(crate) fn do_tmem(&mut self, caller: DomId, op: &TmemOp) -> i64 {
        if self.domain(caller).is_none() {
            return -crate::abi::ESRCH;
        }
        if op.cmd == hvmem_tmem_pool::abi::TMEM_PUT_PAGE {
            self.tmem_lend();
        }
        self.tmem_set_persistent_quota(caller);
        let rc = {
            let Self {
                tmem, table, mem, ..
            } = self;
            let mut pages = CallerPages {
                table,
                mem,
                owner: Owner::Domain(caller),
            };
            do_tmem_op(tmem, caller, op, &mut pages)
        };
        self.tmem_charge_persistent(caller);
        self.tmem_settle();
        rc
    }

    /// The data tmem holds for `dom` in a persistent pool, read without
    /// changing anything but the statistics (a persistent get is not
    /// exclusive): what the checker compares with what the guest put.
    #[must_use]
    pub fn tmem_peek_persistent(
        &mut self,
        dom: DomId,
        pool: u32,
        oid: Oid,
        index: u32,
    ) -> Option<Page> {
        let client = self.tmem.client_of(dom)?;
        if !self
            .tmem
            .pool_kind(client, PoolId(pool))
            .is_ok_and(|k| k.persistent)
        {
            return None;
        }
        let mut page = [0u8; PAGE_BYTES];
        match self
            .tmem
            .get_page(client, PoolId(pool), oid, index, &mut page)
        {
            Ok(GetOutcome::Hit) => Some(page),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{HostConfig, HostStorage};
    use hvmem_tmem_pool::abi::{self, TMEM_GET_PAGE, TMEM_PUT_PAGE};
    use hvmem_types::Gfn;

    #[test]
    fn tmem_frames_are_lent_from_the_heap_and_come_back() {
        let mut storage = HostStorage::new(HostConfig::with_mib(16));
        let mut host = Host::boot(&mut storage).unwrap();
        let d = DomId::new(1);
        host.create_domain(d, 1024, 512).unwrap();
        let free = host.free_frames();
        let pool = host.do_tmem(
            d,
            &TmemOp::new_pool(hvmem_tmem_pool::Uuid::NONE, abi::PRIVATE_PERSISTENT),
        );
        assert_eq!(pool, 0);
        let mfn = host.domain(d).unwrap().mfn(Gfn::new(3)).unwrap();
        host.guest_store(d, mfn, 0xabc).unwrap();
        let put = TmemOp::page(TMEM_PUT_PAGE, 0, Oid([1, 0, 0]), 7, mfn.get());
        assert_eq!(host.do_tmem(d, &put), 1);
        assert_eq!((host.tmem_frames(), host.free_frames()), (1, free - 1));
        host.audit().unwrap();
        host.guest_store(d, mfn, 0).unwrap();
        let get = TmemOp::page(TMEM_GET_PAGE, 0, Oid([1, 0, 0]), 7, mfn.get());
        assert_eq!(host.do_tmem(d, &get), 1);
        assert_eq!(host.memory().fingerprint(mfn), Some(0xabc));
        host.destroy_domain(d).unwrap();
        assert_eq!(host.tmem_frames(), 0);
        assert_eq!(host.free_frames(), 4096 - 16);
        host.check_counters().unwrap();
    }

    /// A persistent page is charged to the domain that put it (its
    /// `tot_pages`, against its `max_pages`), an ephemeral one to the host;
    /// a domain at its limit stores nothing persistent; a flush gives the
    /// charge back.
    #[test]
    fn persistent_pages_are_charged_to_the_domain_within_its_max_pages() {
        let mut storage = HostStorage::new(HostConfig::with_mib(16));
        let mut host = Host::boot(&mut storage).unwrap();
        let d = DomId::new(1);
        host.create_domain(d, 1024, 512).unwrap();
        let tot = |host: &Host<'_>| host.books().domain(d).unwrap().tot_pages;
        let new = |flags| TmemOp::new_pool(hvmem_tmem_pool::Uuid::NONE, flags);
        assert_eq!(host.do_tmem(d, &new(abi::PRIVATE_PERSISTENT)), 0);
        assert_eq!(host.do_tmem(d, &new(abi::PRIVATE_EPHEMERAL)), 1);
        let mfn = host.domain(d).unwrap().mfn(Gfn::new(3)).unwrap();
        host.guest_store(d, mfn, 0xabc).unwrap();
        let key = |cmd, pool, index| TmemOp::page(cmd, pool, Oid([1, 0, 0]), index, mfn.get());
        assert_eq!(host.do_tmem(d, &key(TMEM_PUT_PAGE, 0, 7)), 1);
        assert_eq!(host.do_tmem(d, &key(TMEM_PUT_PAGE, 1, 7)), 1);
        assert_eq!(
            (tot(&host), host.domain(d).unwrap().tmem_persistent()),
            (513, 1)
        );
        assert_eq!(host.tmem_frames(), 2);
        host.check_counters().unwrap();
        // At its limit: the next persistent put fails, an ephemeral one
        // (the host's memory) still goes in.
        assert!(host.set_max_pages(d, 513));
        assert_eq!(
            host.do_tmem(d, &key(TMEM_PUT_PAGE, 0, 8)),
            -i64::from(abi::ENOMEM)
        );
        assert_eq!(host.do_tmem(d, &key(TMEM_PUT_PAGE, 1, 8)), 1);
        assert_eq!(tot(&host), 513);
        host.check_counters().unwrap();
        // A flush gives the page and its charge back.
        assert_eq!(host.do_tmem(d, &key(abi::TMEM_FLUSH_PAGE, 0, 7)), 1);
        assert_eq!(
            (tot(&host), host.domain(d).unwrap().tmem_persistent()),
            (512, 0)
        );
        assert_eq!(host.do_tmem(d, &key(TMEM_PUT_PAGE, 0, 8)), 1);
        assert_eq!(tot(&host), 513);
        host.audit().unwrap();
        host.destroy_domain(d).unwrap();
        assert_eq!(host.tmem_frames(), 0);
        host.check_counters().unwrap();
    }

    #[test]
    fn tmem_op_returns_what_xen_returns_and_keeps_clients_apart() {
        let mut storage = HostStorage::new(HostConfig::with_mib(16));
        let mut host = Host::boot(&mut storage).unwrap();
        let (d1, d2) = (DomId::new(1), DomId::new(2));
        host.create_domain(d1, 1024, 512).unwrap();
        host.create_domain(d2, 1024, 512).unwrap();
        let m1 = host.domain(d1).unwrap().mfn(Gfn::new(5)).unwrap();
        let m2 = host.domain(d2).unwrap().mfn(Gfn::new(5)).unwrap();
        host.guest_store(d1, m1, 0x1111).unwrap();
        let new = |flags| TmemOp::new_pool(hvmem_tmem_pool::Uuid::NONE, flags);
        assert_eq!(host.do_tmem(d1, &new(abi::PRIVATE_PERSISTENT)), 0);
        let key = |cmd, cmfn| TmemOp::page(cmd, 0, Oid([9, 0, 0]), 1, cmfn);
        assert_eq!(host.do_tmem(d1, &key(TMEM_PUT_PAGE, m1.get())), 1);
        // Another domain's frame: -EFAULT, nothing stored.
        assert_eq!(
            host.do_tmem(d1, &key(TMEM_PUT_PAGE, m2.get())),
            -i64::from(abi::EFAULT)
        );
        // Domain 2 has no pool 0: its pool ids name its own slots.
        assert_eq!(
            host.do_tmem(d2, &key(TMEM_GET_PAGE, m2.get())),
            -i64::from(abi::ENODEV)
        );
        assert_eq!(host.do_tmem(d2, &new(abi::PRIVATE_PERSISTENT)), 0);
        assert_eq!(
            host.do_tmem(d2, &key(TMEM_GET_PAGE, m2.get())),
            -i64::from(abi::EEMPTY)
        );
        // An unknown caller; a sub-page command.
        assert_eq!(
            host.do_tmem(DomId::new(9), &key(TMEM_GET_PAGE, m1.get())),
            -crate::abi::ESRCH
        );
        assert_eq!(
            host.do_tmem(
                d1,
                &TmemOp {
                    cmd: abi::TMEM_READ,
                    ..key(0, m1.get())
                }
            ),
            -crate::abi::ENOSYS
        );
        assert_eq!(host.do_tmem(d1, &key(TMEM_GET_PAGE, m1.get())), 1);
        assert_eq!(host.tmem_frames(), 1);
        host.audit().unwrap();
    }
}

//! The simulated host: a buddy heap and a frame table over the host's
//! frames, the frames' contents, the hypervisor's per-domain books, the M2P
//! and each domain's physmap.
//!
//! # Ownership of storage
//!
//! The crates take their metadata from the embedder. [`HostStorage`] owns it
//! (the frame table's records, the heap's metadata words, the list the
//! frame table reports freed frames to) and a [`Host`] borrows it, so
//! nothing leaks and the borrow checker sees every use.
//!
//! # The books
//!
//! Every frame of the host is in exactly one of these states, and the
//! [invariant checker](crate::invariants) proves it after every step:
//!
//! | State | Heap | Frame table | Host record |
//! |---|---|---|---|
//! | free | in a free block | no owner | no owner |
//! | a domain's | allocated | owned by the domain | owner = the domain; M2P = its physmap slot, or none when off the physmap |
//! | the host's (Xen heap) | allocated | owned by the host | owner = host |
//!
//! A domain's pages in balloon-proto's [`HostMemory`] (`tot_pages`) are the
//! frames the frame table says it owns, so a frame a guest gave back while
//! something still references it (a page-table entry, a pin) stays counted
//! until its last reference goes, as in Xen. The frame table reports that
//! moment to [`FreedFrames`]; [`Host`] then returns the frame to the heap
//! and the books.
//!
//! Guests are x86-64 PV guests: page-table entries and reservation ops name
//! machine frames, and the host keeps the M2P (machine to guest frame). The
//! physmap (guest frame to machine frame, `pfn_to_mfn` in Linux) is kept
//! here on the guest's behalf, so that the checker can compare it with the
//! frame table.

use std::sync::{Mutex, PoisonError};

use hvmem_balloon_proto::xen::domain::HostMemory;
use hvmem_buddy::{BuddyAllocator, Contents, ZonePolicy, metadata_words};
use hvmem_frametable::pv::PvValidator;
use hvmem_frametable::{FrameError, FrameType};
use hvmem_frametable::{FrameInfo, FrameTable, FreeSink, Owner, TrustContents};
use hvmem_pagetable::pv::PvConfig;
use hvmem_types::{DomId, FrameRange, Gfn, Mfn, PageOrder};

use crate::grant::{DomainGrants, GrantSlot};
use crate::memory::FrameMemory;
use crate::tmem::{TMEM_BOOKS, TmemStore, tmem_layout};

/// Domains the host can hold (guests and the attacker; the control domain
/// has no memory books).
pub const MAX_DOMAINS: usize = 64;

/// The first machine frame of the host's RAM: Xen never hands MFN 0 to its
/// heap; the sim keeps the first MiB out, as firmware does.
pub const FIRST_MFN: u64 = 0x100;

/// Physical address width of the simulated CPU.
pub const MAX_PHYS_BITS: u8 = 46;

/// No M2P / physmap entry.
pub(crate) const INVALID: u64 = u64::MAX;

/// The record of a frame with no owner.
const NO_OWNER: u16 = u16::MAX;

/// The record of a host-owned frame.
pub(crate) const HOST_OWNER: u16 = DomId::XEN.get();

/// The record of a host-owned frame lent to tmem (the frame table says
/// `Owner::Host`; the host's record tells the two apart).
pub(crate) const TMEM_OWNER: u16 = 0xfffe;

/// Sizes of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// Frames of RAM.
    pub frames: u64,
    /// Frames the hypervisor keeps for itself at boot (its heap).
    pub xen_heap_frames: u64,
}

impl HostConfig {
    /// A host of `mib` MiB with 1/256 of it (at least 16 frames) for the
    /// hypervisor.
    #[must_use]
    pub fn with_mib(mib: u64) -> Self {
        let frames = mib.saturating_mul(256);
        Self {
            frames,
            xen_heap_frames: (frames / 256).max(16).min(frames / 2),
        }
    }
}

/// The frames the frame table freed and the host has not yet returned to
/// the heap.
#[derive(Debug, Default)]
pub struct FreedFrames(Mutex<Vec<Mfn>>);

impl FreedFrames {
    fn take(&self) -> Vec<Mfn> {
        core::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl FreeSink for FreedFrames {
    fn frame_freed(&self, mfn: Mfn) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(mfn);
    }
}

/// The metadata a [`Host`] borrows: frame-table records, heap metadata and
/// the freed-frame list.
#[derive(Debug)]
pub struct HostStorage {
    config: HostConfig,
    frames: Vec<FrameInfo>,
    heap: Vec<u64>,
    freed: FreedFrames,
    tmem_tables: hvmem_tmem_pool::OwnedMemory,
    grant_slots: Vec<GrantSlot>,
}

impl HostStorage {
    /// Storage for a host of `config`'s size.
    #[must_use]
    pub fn new(config: HostConfig) -> Self {
        let n = usize::try_from(config.frames).unwrap_or(0);
        Self {
            config,
            frames: (0..n).map(|_| FrameInfo::new()).collect(),
            heap: vec![0; metadata_words(config.frames)],
            freed: FreedFrames::default(),
            tmem_tables: hvmem_tmem_pool::OwnedMemory::new(&tmem_layout(config.frames)),
            grant_slots: (0..MAX_DOMAINS as u64)
                .map(|i| {
                    GrantSlot::new(FIRST_MFN + config.frames + i * GrantSlot::frames_per_slot())
                })
                .collect(),
        }
    }
}

/// Why a host could not boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootError {
    /// Too few frames for the hypervisor heap and one guest page.
    TooSmall,
    /// A crate refused the layout (a bug in the sizes above).
    Layout,
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooSmall => f.write_str("host memory too small"),
            Self::Layout => f.write_str("the crates refused the host layout"),
        }
    }
}
impl std::error::Error for BootError {}

/// Why a domain could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateDomainError {
    /// balloon-proto's books refused it (id reserved or taken, no slot,
    /// claim refused).
    Books(hvmem_balloon_proto::xen::domain::CreateError),
    /// The initial memory could not be populated.
    OutOfMemory,
}

impl core::fmt::Display for CreateDomainError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Books(e) => write!(f, "{e}"),
            Self::OutOfMemory => f.write_str("out of memory populating the domain"),
        }
    }
}
impl std::error::Error for CreateDomainError {}

/// Why a guest's store into its own memory failed (the CPU would fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The frame is not the guest's.
    NotOwned,
    /// The frame is in use as a page table (or another type that excludes
    /// writable mappings).
    NotWritable,
}

/// One domain as the host sees it.
#[derive(Debug)]
pub struct Domain {
    id: DomId,
    /// Guest frame -> machine frame, `INVALID` where nothing is populated.
    physmap: Vec<u64>,
    /// Frames the frame table says the domain owns.
    owned: u64,
    /// Being destroyed: it receives no more frames (Xen's `is_dying`).
    dying: bool,
    /// Pages its persistent tmem pools hold, charged to its `tot_pages`.
    pub(crate) tmem_persistent: u64,
}

impl Domain {
    /// The domain's id.
    #[must_use]
    pub fn id(&self) -> DomId {
        self.id
    }

    /// Frames it owns (on or off its physmap).
    #[must_use]
    pub fn owned(&self) -> u64 {
        self.owned
    }

    /// Pages its persistent tmem pools hold: they count in its `tot_pages`
    /// and against its `max_pages`, as in Xen (the frames themselves are
    /// the host's, lent to tmem).
    #[must_use]
    pub fn tmem_persistent(&self) -> u64 {
        self.tmem_persistent
    }

    /// Whether it is being destroyed (waiting for others to let go of its
    /// frames or grants); it receives no more frames.
    #[must_use]
    pub fn is_dying(&self) -> bool {
        self.dying
    }

    /// Size of its physmap (its static maximum).
    #[must_use]
    pub fn physmap_frames(&self) -> u64 {
        self.physmap.len() as u64
    }

    /// The machine frame behind `gfn`.
    #[must_use]
    pub fn mfn(&self, gfn: Gfn) -> Option<Mfn> {
        let i = usize::try_from(gfn.get()).ok()?;
        self.physmap
            .get(i)
            .copied()
            .filter(|&m| m != INVALID)
            .map(Mfn::new)
    }

    pub(crate) fn physmap_entries(&self) -> impl Iterator<Item = (Gfn, Mfn)> + '_ {
        self.physmap
            .iter()
            .enumerate()
            .filter(|(_, m)| **m != INVALID)
            .map(|(g, m)| (Gfn::new(g as u64), Mfn::new(*m)))
    }
}

/// A whole simulated host. See the [module docs](self).
pub struct Host<'s> {
    pub(crate) table: FrameTable<'s>,
    pub(crate) heap: BuddyAllocator<'s, 1>,
    freed: &'s FreedFrames,
    pub(crate) mem: FrameMemory,
    pub(crate) books: HostMemory<MAX_DOMAINS>,
    /// Per frame: the owner's domain id, `HOST_OWNER` or `NO_OWNER`.
    owner: Vec<u16>,
    /// Per frame: the guest frame it backs (M2P), or `INVALID`.
    m2p: Vec<u64>,
    /// Per frame: taken from the heap as part of a larger extent, and so
    /// held as a heap reservation that is given back a frame at a time.
    reserved: Vec<bool>,
    pub(crate) domains: Vec<Domain>,
    pub(crate) host_frames: u64,
    /// tmem over the host's idle memory (frames lent from the heap).
    pub(crate) tmem: hvmem_tmem_pool::Tmem<'s, TmemStore>,
    /// Frames lent to tmem (host-owned, charged to [`TMEM_BOOKS`]).
    pub(crate) tmem_frames: u64,
    /// Grant-table storage, one slot per domain.
    pub(crate) grant_slots: &'s [GrantSlot],
    pub(crate) grant_slot_used: Vec<bool>,
    /// Every domain's grant table and maptrack.
    pub(crate) grants: Vec<DomainGrants<'s>>,
    /// The frame each (mapper, handle) mapped, from the map's
    /// `dev_bus_addr` (the maptrack keeps the grant, not the frame).
    pub(crate) grant_frames: std::collections::BTreeMap<(u16, u32), Mfn>,
    pub(crate) pv: PvConfig,
    first: u64,
    frames: u64,
}

impl core::fmt::Debug for Host<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Host")
            .field("frames", &self.frames)
            .field("free", &self.heap.free_frames())
            .field("domains", &self.domains.len())
            .finish_non_exhaustive()
    }
}

impl<'s> Host<'s> {
    /// Boots a host over `storage`: every frame free and clean, then the
    /// hypervisor takes its heap.
    ///
    /// # Errors
    ///
    /// [`BootError::TooSmall`], [`BootError::Layout`].
    pub fn boot(storage: &'s mut HostStorage) -> Result<Self, BootError> {
        let HostStorage {
            config,
            frames,
            heap,
            freed,
            tmem_tables,
            grant_slots,
        } = storage;
        let grant_slots: &'s [GrantSlot] = grant_slots;
        let config = *config;
        if config.frames <= config.xen_heap_frames || config.frames < 64 {
            return Err(BootError::TooSmall);
        }
        let range = FrameRange::new(Mfn::new(FIRST_MFN), config.frames).ok_or(BootError::Layout)?;
        let freed: &'s FreedFrames = freed;
        let table = FrameTable::new(frames, &[range])
            .map_err(|_| BootError::Layout)?
            .with_free_sink(freed);
        let mut buddy: BuddyAllocator<'s, 1> =
            BuddyAllocator::new(hvmem_buddy::DEFAULT_MAX_ORDER).map_err(|_| BootError::Layout)?;
        buddy
            .add_zone(range, heap, Contents::Clean)
            .map_err(|_| BootError::Layout)?;
        let n = usize::try_from(config.frames).map_err(|_| BootError::Layout)?;
        let tmem_config = hvmem_tmem_pool::TmemConfig::default();
        let tmem = hvmem_tmem_pool::Tmem::new(
            tmem_config,
            TmemStore::new(Mfn::new(FIRST_MFN), n),
            tmem_tables.borrow(),
        )
        .map_err(|_| BootError::Layout)?;
        let mut books = HostMemory::new(config.frames - config.xen_heap_frames);
        // balloon-proto's books have no host reservation: tmem's frames are
        // charged to an accounting entry that no domain uses.
        books
            .create_domain(TMEM_BOOKS, config.frames)
            .map_err(|_| BootError::Layout)?;
        let mut host = Self {
            table,
            heap: buddy,
            freed,
            mem: FrameMemory::new(Mfn::new(FIRST_MFN), n),
            books,
            owner: vec![NO_OWNER; n],
            m2p: vec![INVALID; n],
            reserved: vec![false; n],
            domains: Vec::new(),
            host_frames: 0,
            tmem,
            tmem_frames: 0,
            grant_slot_used: vec![false; grant_slots.len()],
            grant_slots,
            grants: Vec::new(),
            grant_frames: std::collections::BTreeMap::new(),
            pv: PvConfig::new(MAX_PHYS_BITS).ok_or(BootError::Layout)?,
            first: FIRST_MFN,
            frames: config.frames,
        };
        for _ in 0..config.xen_heap_frames {
            let mfn = host
                .heap
                .alloc_in(PageOrder::ZERO, ZonePolicy::Any)
                .map_err(|_| BootError::Layout)?;
            host.table
                .assign(mfn, Owner::Host)
                .map_err(|_| BootError::Layout)?;
            host.set_record(mfn, HOST_OWNER, INVALID);
            host.host_frames += 1;
        }
        Ok(host)
    }

    /// Frames of RAM.
    #[must_use]
    pub fn total_frames(&self) -> u64 {
        self.frames
    }

    /// Free frames in the heap.
    #[must_use]
    pub fn free_frames(&self) -> u64 {
        self.heap.free_frames()
    }

    /// Frames the hypervisor holds for itself (its heap; not tmem's).
    #[must_use]
    pub fn host_frames(&self) -> u64 {
        self.host_frames
    }

    /// Frames lent to tmem (host-owned, holding guests' tmem pages).
    #[must_use]
    pub fn tmem_frames(&self) -> u64 {
        self.tmem_frames
    }

    /// Frames available to guests (all but the hypervisor's).
    #[must_use]
    pub fn guest_frames(&self) -> u64 {
        self.books.total_pages()
    }

    /// The first machine frame.
    #[must_use]
    pub fn first_mfn(&self) -> Mfn {
        Mfn::new(self.first)
    }

    /// The hypervisor's books (balloon-proto's `HostMemory`).
    #[must_use]
    pub fn books(&self) -> &HostMemory<MAX_DOMAINS> {
        &self.books
    }

    /// The frame table.
    #[must_use]
    pub fn frame_table(&self) -> &FrameTable<'s> {
        &self.table
    }

    /// The frames' contents.
    #[must_use]
    pub fn memory(&self) -> &FrameMemory {
        &self.mem
    }

    /// The PV rules page-table entries are checked with.
    #[must_use]
    pub fn pv_config(&self) -> &PvConfig {
        &self.pv
    }

    /// Every domain.
    #[must_use]
    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// One domain.
    #[must_use]
    pub fn domain(&self, id: DomId) -> Option<&Domain> {
        self.domains.iter().find(|d| d.id == id)
    }

    fn domain_index(&self, id: DomId) -> Option<usize> {
        self.domains.iter().position(|d| d.id == id)
    }

    /// Adds `delta` to the frames `dom` owns.
    pub(crate) fn adjust_owned(&mut self, dom: DomId, delta: i64) {
        if let Some(d) = self.domains.iter_mut().find(|d| d.id == dom) {
            d.owned = d.owned.saturating_add_signed(delta);
        }
    }

    pub(crate) fn index(&self, mfn: Mfn) -> Option<usize> {
        let i = mfn.get().checked_sub(self.first)?;
        if i < self.frames {
            usize::try_from(i).ok()
        } else {
            None
        }
    }

    /// The owner the host's records give `mfn`.
    #[must_use]
    pub fn recorded_owner(&self, mfn: Mfn) -> Option<Owner> {
        let o = *self.owner.get(self.index(mfn)?)?;
        match o {
            NO_OWNER => None,
            HOST_OWNER | TMEM_OWNER => Some(Owner::Host),
            d => Some(Owner::Domain(DomId::new(d))),
        }
    }

    /// The guest frame `mfn` backs (the M2P), if any.
    #[must_use]
    pub fn m2p(&self, mfn: Mfn) -> Option<Gfn> {
        let g = *self.m2p.get(self.index(mfn)?)?;
        (g != INVALID).then_some(Gfn::new(g))
    }

    /// Whether `mfn` is a frame lent to tmem.
    #[must_use]
    pub fn is_tmem_frame(&self, mfn: Mfn) -> bool {
        self.index(mfn)
            .and_then(|i| self.owner.get(i))
            .is_some_and(|&o| o == TMEM_OWNER)
    }

    pub(crate) fn set_record(&mut self, mfn: Mfn, owner: u16, gfn: u64) {
        if let Some(i) = self.index(mfn) {
            if let Some(o) = self.owner.get_mut(i) {
                *o = owner;
            }
            if let Some(g) = self.m2p.get_mut(i) {
                *g = gfn;
            }
        }
    }

    fn set_m2p(&mut self, mfn: Mfn, gfn: u64) {
        if let Some(g) = self.index(mfn).and_then(|i| self.m2p.get_mut(i)) {
            *g = gfn;
        }
    }

    /// The validator page-table types are validated with.
    pub(crate) fn validator(&self) -> PvValidator<'_, FrameMemory> {
        PvValidator::new(&self.mem, self.pv)
    }

    /// Creates a domain whose physmap has `max_pages` frames, admits it
    /// with a claim of `initial_pages` and populates guest frames
    /// `0..initial_pages` (what a toolstack does to build a guest).
    ///
    /// # Errors
    ///
    /// [`CreateDomainError`]; then no domain exists.
    pub fn create_domain(
        &mut self,
        id: DomId,
        max_pages: u64,
        initial_pages: u64,
    ) -> Result<(), CreateDomainError> {
        let physmap = usize::try_from(max_pages).map_err(|_| CreateDomainError::OutOfMemory)?;
        if initial_pages == 0 {
            self.books
                .create_domain(id, max_pages)
                .map_err(CreateDomainError::Books)?;
        } else {
            self.books
                .admit(id, max_pages, initial_pages)
                .map_err(CreateDomainError::Books)?;
        }
        self.domains.push(Domain {
            id,
            physmap: vec![INVALID; physmap],
            owned: 0,
            dying: false,
            tmem_persistent: 0,
        });
        // Every domain slot has grant storage, so this cannot fail.
        let granted = self.grant_create(id);
        debug_assert!(granted, "no grant slot for {id:?}");
        for gfn in 0..initial_pages {
            if self
                .populate_extent(id, Some(Gfn::new(gfn)), PageOrder::ZERO, 0)
                .is_none()
            {
                let _ = self.destroy_domain(id);
                return Err(CreateDomainError::OutOfMemory);
            }
        }
        // The claim is used up; cancel what is left of it.
        let _ = self.books.claim_pages(id, 0);
        self.tmem_create_client(id);
        Ok(())
    }

    /// `XEN_DOMCTL_max_mem`: the most `id` may hold from now on (it may be
    /// below what it holds; the domain then cannot grow). Returns `false`
    /// for an unknown domain.
    pub fn set_max_pages(&mut self, id: DomId, max_pages: u64) -> bool {
        self.books.set_max_pages(id, max_pages).is_ok()
    }

    /// Destroys `id`: its tmem client goes (its pages' frames back to the
    /// heap), the grant mappings it holds are released and its grant table
    /// torn down, the frame table takes back every frame it owns
    /// (preemptible `relinquish`: pins dropped, page tables de-validated,
    /// allocation references dropped), the freed frames return to the heap
    /// and the books, and the domain is forgotten.
    ///
    /// # Errors
    ///
    /// The number of frames something else still references (another
    /// domain's grant mapping), or of its grant entries still pinned; the
    /// domain then stays (dying) until they are unmapped and this is called
    /// again.
    pub fn destroy_domain(&mut self, id: DomId) -> Result<(), u64> {
        if let Some(d) = self.domains.iter_mut().find(|d| d.id == id) {
            d.dying = true;
        }
        self.tmem_destroy_client(id);
        let pinned = self.grant_release(id) as u64;
        {
            let v = self.validator();
            let mut cursor = hvmem_frametable::RelinquishCursor::new();
            while self.table.relinquish(id, &mut cursor, 4096, &v)
                == hvmem_frametable::RelinquishProgress::Preempted
            {}
        }
        self.reap();
        let left = self.domain(id).map_or(0, Domain::owned);
        if left != 0 || pinned != 0 {
            return Err(left.max(pinned));
        }
        let _ = self.books.destroy_domain(id);
        if let Some(i) = self.domain_index(id) {
            self.domains.remove(i);
        }
        Ok(())
    }

    /// Allocates one extent of `order` for `dom` at `gfn` (or off the
    /// physmap): the books first, then the heap, then the frame table.
    /// `address_bits` (0 = any) limits the machine address. Returns the
    /// first frame, or `None` with nothing changed.
    pub(crate) fn populate_extent(
        &mut self,
        dom: DomId,
        gfn: Option<Gfn>,
        order: PageOrder,
        address_bits: u32,
    ) -> Option<Mfn> {
        let d = self.domain_index(dom)?;
        if self.domains.get(d)?.dying {
            return None;
        }
        let n = order.frames();
        if let Some(gfn) = gfn {
            // The extent must lie in the physmap (the sim's physmap is the
            // domain's static maximum; Xen PV would write any M2P value).
            let end = gfn.get().checked_add(n)?;
            if end > self.domains.get(d)?.physmap_frames() || !gfn.is_aligned(order) {
                return None;
            }
        }
        if self.heap.free_frames() < n || self.books.unclaimed_free_pages() < n {
            // Xen takes ephemeral tmem pages back when the heap runs short.
            self.tmem_reclaim(n);
        }
        let Self { heap, mem, .. } = self;
        let mfn = heap
            .alloc_clean_in(order, ZonePolicy::Any, |m| mem.scrub(m))
            .ok()?;
        let fits = address_bits == 0
            || address_bits >= 64
            || mfn.get().checked_add(n).is_some_and(|end| {
                end.checked_shl(hvmem_types::PAGE_SHIFT)
                    .is_some_and(|a| a <= (1u64 << address_bits.min(63)))
            });
        if !fits || self.books.populate_physmap(dom, 1, u32::from(order.get())) != Ok(1) {
            let _ = self.heap.free(mfn, order);
            return None;
        }
        if n > 1 {
            // The frames of an extent are freed one at a time (a guest gives
            // back single pages), which the heap allows for a reservation,
            // not for an allocated block: turn the block into one.
            let range = FrameRange::new(mfn, n)?;
            let freed = self.heap.free(mfn, order);
            let reserved = self.heap.reserve(range);
            debug_assert!(freed.is_ok() && reserved.is_ok());
            for j in 0..n {
                if let Some(r) = self
                    .index(Mfn::new(mfn.get() + j))
                    .and_then(|i| self.reserved.get_mut(i))
                {
                    *r = true;
                }
            }
        }
        for j in 0..n {
            let m = Mfn::new(mfn.get() + j);
            let assigned = self.table.assign(m, Owner::Domain(dom));
            debug_assert!(assigned.is_ok(), "{m}: {assigned:?}");
            let g = gfn.map_or(INVALID, |g| g.get() + j);
            self.set_record(m, dom.get(), g);
            if g != INVALID {
                self.place_in_physmap(d, g, m);
            }
        }
        if let Some(dom) = self.domains.get_mut(d) {
            dom.owned += n;
        }
        Some(mfn)
    }

    /// Points physmap slot `gfn` of domain `d` at `mfn`; a frame that was
    /// there goes off the physmap (still owned, as in Xen).
    fn place_in_physmap(&mut self, d: usize, gfn: u64, mfn: Mfn) {
        let Some(slot) = self
            .domains
            .get_mut(d)
            .and_then(|dom| dom.physmap.get_mut(usize::try_from(gfn).ok()?))
        else {
            return;
        };
        let old = core::mem::replace(slot, mfn.get());
        if old != INVALID && old != mfn.get() {
            self.set_m2p(Mfn::new(old), INVALID);
        }
    }

    /// Takes `mfn` off its owner's physmap.
    pub(crate) fn remove_from_physmap(&mut self, mfn: Mfn) {
        let (Some(Owner::Domain(dom)), Some(gfn)) = (self.recorded_owner(mfn), self.m2p(mfn))
        else {
            return;
        };
        if let Some(slot) = self
            .domain_index(dom)
            .and_then(|d| self.domains.get_mut(d))
            .and_then(|d| d.physmap.get_mut(usize::try_from(gfn.get()).ok()?))
            && *slot == mfn.get()
        {
            *slot = INVALID;
        }
        self.set_m2p(mfn, INVALID);
    }

    /// `MMU_MACHPHYS_UPDATE`: `mfn` (the caller's) now backs `gfn`.
    pub(crate) fn set_machphys(&mut self, dom: DomId, mfn: Mfn, gfn: u64) {
        self.remove_from_physmap(mfn);
        let Some(d) = self.domain_index(dom) else {
            return;
        };
        if self
            .domains
            .get(d)
            .is_some_and(|x| gfn < x.physmap_frames())
        {
            self.set_m2p(mfn, gfn);
            self.place_in_physmap(d, gfn, mfn);
        }
    }

    /// Returns every frame the frame table freed to the heap and the books.
    pub(crate) fn reap(&mut self) {
        for mfn in self.freed.take() {
            let owner = self.recorded_owner(mfn);
            let lent = self.is_tmem_frame(mfn);
            self.remove_from_physmap(mfn);
            self.set_record(mfn, NO_OWNER, INVALID);
            match owner {
                Some(Owner::Domain(dom)) => {
                    let _ = self.books.decrease_reservation(dom, 1, 0);
                    if let Some(d) = self.domain_index(dom).and_then(|d| self.domains.get_mut(d)) {
                        d.owned = d.owned.saturating_sub(1);
                    }
                }
                Some(Owner::Host) if lent => {
                    self.tmem_frames = self.tmem_frames.saturating_sub(1);
                    let _ = self.books.decrease_reservation(TMEM_BOOKS, 1, 0);
                }
                Some(Owner::Host) => self.host_frames = self.host_frames.saturating_sub(1),
                None => {}
            }
            let reserved = self
                .index(mfn)
                .and_then(|i| self.reserved.get_mut(i))
                .is_some_and(core::mem::take);
            if reserved {
                let released = FrameRange::new(mfn, 1).map(|r| self.heap.release(r));
                debug_assert!(matches!(released, Some(Ok(()))), "{mfn}: {released:?}");
            } else {
                let freed = self.heap.free(mfn, PageOrder::ZERO);
                debug_assert!(freed.is_ok(), "{mfn}: {freed:?}");
            }
        }
    }

    /// A guest stores a whole data page into its frame `mfn` through a
    /// writable mapping of its own: it needs the frame to be its own and to
    /// be able to take the writable type (never a page table in use).
    ///
    /// # Errors
    ///
    /// [`StoreError`]; nothing changes.
    pub fn guest_store(
        &mut self,
        dom: DomId,
        mfn: Mfn,
        fingerprint: u64,
    ) -> Result<(), StoreError> {
        let owner = Owner::Domain(dom);
        self.table
            .get_page(mfn, owner)
            .map_err(|_| StoreError::NotOwned)?;
        if self
            .table
            .get_type(mfn, FrameType::Writable, &TrustContents)
            .is_err()
        {
            let _ = self.table.put_page(mfn);
            self.reap();
            return Err(StoreError::NotWritable);
        }
        self.mem.store_data(mfn, fingerprint);
        let _ = self.table.put_type(mfn, &TrustContents);
        let _ = self.table.put_page(mfn);
        self.reap();
        Ok(())
    }

    /// A plain write of one word into a frame the guest owns that is not a
    /// page table in use (Xen's `mmu_update` on a `PGT_writable_page`).
    pub(crate) fn plain_write(
        &mut self,
        owner: Owner,
        mfn: Mfn,
        index: u32,
        value: u64,
    ) -> Result<(), FrameError> {
        self.table.get_page(mfn, owner)?;
        if let Err(e) = self
            .table
            .get_type(mfn, FrameType::Writable, &TrustContents)
        {
            let _ = self.table.put_page(mfn);
            self.reap();
            return Err(e);
        }
        let _ = self.mem.write_word(mfn, index, value);
        let _ = self.table.put_type(mfn, &TrustContents);
        let _ = self.table.put_page(mfn);
        self.reap();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_gives_the_hypervisor_its_heap_and_the_rest_to_guests() {
        let mut storage = HostStorage::new(HostConfig::with_mib(16));
        let host = Host::boot(&mut storage).unwrap();
        assert_eq!(host.total_frames(), 4096);
        assert_eq!(host.host_frames(), 16);
        assert_eq!(host.free_frames(), 4096 - 16);
        assert_eq!(host.books().free_pages(), host.free_frames());
        assert_eq!(
            host.frame_table()
                .state(host.first_mfn())
                .unwrap()
                .owner
                .is_some(),
            host.recorded_owner(host.first_mfn()).is_some()
        );
    }

    #[test]
    fn a_domain_is_built_on_its_claim_and_destroyed_to_nothing() {
        let mut storage = HostStorage::new(HostConfig::with_mib(16));
        let mut host = Host::boot(&mut storage).unwrap();
        let d = DomId::new(1);
        host.create_domain(d, 1024, 512).unwrap();
        assert_eq!(host.domain(d).unwrap().owned(), 512);
        assert_eq!(host.books().domain(d).unwrap().tot_pages, 512);
        let mfn = host.domain(d).unwrap().mfn(Gfn::new(7)).unwrap();
        assert_eq!(host.m2p(mfn), Some(Gfn::new(7)));
        host.guest_store(d, mfn, 0x77).unwrap();
        assert_eq!(host.memory().fingerprint(mfn), Some(0x77));
        host.destroy_domain(d).unwrap();
        assert_eq!(host.free_frames(), 4096 - 16);
        assert_eq!(host.books().free_pages(), host.free_frames());
    }

    #[test]
    fn a_domain_larger_than_the_host_is_not_created() {
        let mut storage = HostStorage::new(HostConfig::with_mib(16));
        let mut host = Host::boot(&mut storage).unwrap();
        assert!(host.create_domain(DomId::new(1), 8192, 8000).is_err());
        assert!(host.domains().is_empty());
        assert_eq!(host.books().free_pages(), host.free_frames());
    }
}

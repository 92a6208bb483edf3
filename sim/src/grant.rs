//! Grant tables: hvmem-grant's hypervisor side for every domain, with the
//! frame table (hvmem-frametable's `grant` feature, `TableGrantFrames`) for
//! frame references, and `grant_table_op` (20) with Xen's returns.
//!
//! # What a domain has
//!
//! Each domain gets, at creation, a [`GrantTable`] of up to
//! [`GRANT_FRAMES`] frames (v1 at first; v2 on `set_version`) and a
//! [`Maptrack`] of [`MAPTRACK_HANDLES`] handles for the grants it maps. The
//! shared and status frames are hypervisor memory outside the simulated RAM
//! (Xen's grant frames come from its own heap): `setup_table` reports them
//! at frame numbers above the host's RAM, and the guest writes its entries
//! through [`Host::guest_grant_table`], as a guest writes the frames it
//! mapped. Their storage is in [`HostStorage`](crate::host::HostStorage),
//! one slot per domain, reused after a domain is gone.
//!
//! # References
//!
//! Mapping a grant takes references through the frame table, in the
//! granter's name: a general reference per mapping kind (host, device),
//! and a writable type reference per kind if the mapping is writable, so a
//! frame mapped writable through a grant can never become a page table
//! (and a page table can never be mapped writable). The invariant checker
//! counts them from each maptrack's live handles.
//!
//! # Sub-operations
//!
//! Every sub-operation Xen's dispatcher has goes to hvmem-grant, with
//! Xen's returns for x86 PV guests: map, unmap, `unmap_and_replace`,
//! `setup_table`, copy, `query_size`, `set_version`, `get_status_frames`,
//! `get_version`, `swap_grant_ref`, `cache_flush`. `get_version`,
//! `get_status_frames`, `setup_table` and `query_size` of another domain
//! are for the control domain only (Xen's XSM target check).
//! `dump_table` is no longer in Xen's dispatcher: `-ENOSYS`.
//!
//! # Transfers
//!
//! `GNTTABOP_transfer` (PV page flipping) moves a frame from the caller to
//! a domain that offered an accept-transfer entry. hvmem-grant and the
//! frame table move the frame's ownership during the call (sender, then
//! the host, then the receiver, or back to the heap when it cannot be
//! delivered); the host's records follow once the call is done, in the
//! order the frame moved: the sender's physmap slot empties and its
//! `tot_pages` drops by one (Xen's `steal_page`), the receiver's M2P names
//! the guest frame its entry gave and its `tot_pages` grows by one (Xen's
//! `assign_pages` and `guest_physmap_add_page`). A receiver may take the
//! frame only while it is below its `max_pages` (`GNTST_general_error`
//! otherwise, the frame then freed, as Xen does); a domain being
//! destroyed, whose table only waits for its mappers, takes nothing.
//!
//! Host mappings do not enter the mapper's page tables: the sim does not
//! model virtual addresses, so a `GNTMAP_host_map` only holds its
//! references until it is unmapped, every address has a PTE for
//! `unmap_and_replace` to move, and that move re-records only the grant
//! mappings the maptrack holds at `new_addr`. No caches are simulated, so
//! an accepted `cache_flush` has nothing to do.

use core::cell::RefCell;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use hvmem_frametable::Owner;
use hvmem_frametable::grant::{GrantHost, TableGrantFrames};
use hvmem_grant::abi::{STATUS_ENTRIES_PER_FRAME, V1_ENTRIES_PER_FRAME, WORDS_PER_FRAME};
use hvmem_grant::{
    ActiveEntry, CacheArch, CallError, Domains, FrameOwner, GntMapFlags, GntSt, GnttabCacheFlush,
    GnttabCopy, GnttabGetStatusFrames, GnttabGetVersion, GnttabMapGrantRef, GnttabOp,
    GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GnttabSwapGrantRef, GnttabTransfer,
    GnttabUnmapAndReplace, GnttabUnmapGrantRef, GrantHandle, GrantMemory, GrantTable,
    GrantTableConfig, GuestGrantTable, Maptrack, MaptrackEntry, status_frames_for,
};
use hvmem_types::{DomId, Mfn};

use crate::abi::{EFAULT, EINVAL, ENOSYS, EPERM, ESRCH};

use crate::host::Host;
use crate::memory::FrameMemory;

/// Grant frames a domain's table may grow to (Xen's default is 64; the
/// sim's guests use one).
pub const GRANT_FRAMES: u32 = 4;

/// Maptrack handles per domain.
pub const MAPTRACK_HANDLES: u32 = 1024;

/// The storage of one domain's grant table and maptrack.
#[derive(Debug)]
pub struct GrantSlot {
    shared: Vec<AtomicU32>,
    status: Vec<AtomicU16>,
    active: Vec<ActiveEntry>,
    maptrack: Vec<MaptrackEntry>,
    base_gfn: u64,
    status_base_gfn: u64,
    status_released: AtomicU64,
}

impl GrantSlot {
    /// Storage for one domain; its frames are reported from `base_gfn` on.
    #[must_use]
    pub fn new(base_gfn: u64) -> Self {
        let status_frames = status_frames_for(GRANT_FRAMES);
        Self {
            shared: (0..GRANT_FRAMES as usize * WORDS_PER_FRAME)
                .map(|_| AtomicU32::new(0))
                .collect(),
            status: (0..status_frames * STATUS_ENTRIES_PER_FRAME)
                .map(|_| AtomicU16::new(0))
                .collect(),
            active: (0..GRANT_FRAMES * V1_ENTRIES_PER_FRAME)
                .map(|_| ActiveEntry::new())
                .collect(),
            maptrack: (0..MAPTRACK_HANDLES)
                .map(|_| MaptrackEntry::new())
                .collect(),
            base_gfn,
            status_base_gfn: base_gfn + u64::from(GRANT_FRAMES),
            status_released: AtomicU64::new(0),
        }
    }

    /// Frame numbers a slot's frames take (grant frames, then status).
    #[must_use]
    pub fn frames_per_slot() -> u64 {
        u64::from(GRANT_FRAMES + status_frames_for(GRANT_FRAMES))
    }
}

impl GrantMemory for GrantSlot {
    fn shared_frame(&self, index: u32) -> Option<&[AtomicU32]> {
        let start = (index as usize).checked_mul(WORDS_PER_FRAME)?;
        self.shared.get(start..start.checked_add(WORDS_PER_FRAME)?)
    }

    fn status_frame(&self, index: u32) -> Option<&[AtomicU16]> {
        let n = STATUS_ENTRIES_PER_FRAME as usize;
        let start = (index as usize).checked_mul(n)?;
        self.status.get(start..start.checked_add(n)?)
    }

    fn shared_frame_gfn(&self, index: u32) -> u64 {
        self.base_gfn + u64::from(index)
    }

    fn status_frame_gfn(&self, index: u32) -> u64 {
        self.status_base_gfn + u64::from(index)
    }

    fn status_frame_mapped(&self, _index: u32) -> bool {
        // The sim's guests never map their status frames.
        false
    }

    fn release_status_frame(&self, _index: u32) {
        self.status_released.fetch_add(1, Ordering::Relaxed);
    }
}

/// One domain's grant state.
pub(crate) struct DomainGrants<'s> {
    pub(crate) dom: DomId,
    pub(crate) slot: usize,
    pub(crate) table: GrantTable<'s>,
    pub(crate) maptrack: Maptrack<'s>,
}

/// The tables of every domain, for hvmem-grant's lookups.
struct Tables<'a, 's>(&'a [DomainGrants<'s>]);

impl Domains for Tables<'_, '_> {
    fn grant_table(&self, dom: DomId) -> Option<&GrantTable<'_>> {
        self.0.iter().find(|g| g.dom == dom).map(|g| &g.table)
    }
}

/// A copy hvmem-grant asked for, applied once the operation is done.
#[derive(Clone, Copy, Debug)]
struct PendingCopy {
    src: Mfn,
    src_offset: usize,
    dst: Mfn,
    dst_offset: usize,
    len: usize,
}

/// A frame a transfer moved, applied to the host's records once the
/// operation is done.
#[derive(Clone, Copy, Debug)]
enum FrameMove {
    /// Taken from `dom` (now the host's, off every physmap).
    Stolen { dom: DomId, mfn: Mfn },
    /// Given to `dom` at guest frame `gfn`.
    Assigned { dom: DomId, mfn: Mfn, gfn: u64 },
}

/// What the frame-table glue needs from the host: PV translation (frame
/// numbers are machine frames), frame contents for copies, and for
/// transfers the receivers' headroom and the moves to record.
#[derive(Default)]
struct SimGrantHost {
    copies: RefCell<Vec<PendingCopy>>,
    /// Pages each live domain may still take (`max_pages - tot_pages`),
    /// as the moves so far leave it; empty outside transfers.
    headroom: RefCell<Vec<(DomId, u64)>>,
    moves: RefCell<Vec<FrameMove>>,
}

impl SimGrantHost {
    /// The glue for a transfer: every live domain's headroom from the
    /// books.
    fn for_transfer(host: &Host<'_>) -> Self {
        let headroom = host
            .domains
            .iter()
            .filter(|d| !d.is_dying())
            .filter_map(|d| {
                let b = host.books.domain(d.id())?;
                Some((d.id(), b.max_pages.saturating_sub(b.tot_pages)))
            })
            .collect();
        Self {
            headroom: RefCell::new(headroom),
            ..Self::default()
        }
    }

    fn adjust_headroom(&self, dom: DomId, f: impl FnOnce(u64) -> u64) {
        if let Some((_, h)) = self
            .headroom
            .borrow_mut()
            .iter_mut()
            .find(|(d, _)| *d == dom)
        {
            *h = f(*h);
        }
    }
}

impl GrantHost for SimGrantHost {
    fn translate(&self, _dom: DomId, gfn: u64) -> Option<Mfn> {
        Some(Mfn::new(gfn))
    }

    fn remove_from_physmap(&self, dom: DomId, gfn: u64) {
        // Called once the frame table gave the frame to the host.
        self.moves.borrow_mut().push(FrameMove::Stolen {
            dom,
            mfn: Mfn::new(gfn),
        });
        self.adjust_headroom(dom, |h| h.saturating_add(1));
    }

    fn add_to_physmap(&self, dom: DomId, gfn: u64, mfn: Mfn) -> bool {
        // PV: Xen writes the M2P entry and cannot fail; a guest frame
        // beyond the sim's physmap leaves the frame owned but off it.
        self.moves
            .borrow_mut()
            .push(FrameMove::Assigned { dom, mfn, gfn });
        self.adjust_headroom(dom, |h| h.saturating_sub(1));
        true
    }

    fn can_receive(&self, dom: DomId) -> bool {
        self.headroom
            .borrow()
            .iter()
            .any(|&(d, h)| d == dom && h > 0)
    }

    fn copy(&self, src: Mfn, src_offset: usize, dst: Mfn, dst_offset: usize, len: usize) {
        self.copies.borrow_mut().push(PendingCopy {
            src,
            src_offset,
            dst,
            dst_offset,
            len,
        });
    }
}

/// Copies bytes between frames of the sim's memory: a whole data page
/// keeps its fingerprint; anything else goes through the frames' words.
fn apply_copy(mem: &mut FrameMemory, c: PendingCopy) {
    if c.src_offset == 0 && c.dst_offset == 0 && c.len == 4096 && !mem.has_words(c.src) {
        let fp = mem.fingerprint(c.src).unwrap_or(0);
        mem.store_data(c.dst, fp);
        return;
    }
    let mut bytes = [0u8; 4096];
    if let Some(words) = mem.words(c.src) {
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(words.iter()) {
            chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
    }
    let mut out = [0u8; 4096];
    if let Some(words) = mem.words(c.dst) {
        for (chunk, w) in out.chunks_exact_mut(8).zip(words.iter()) {
            chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
    }
    let (Some(from), Some(to)) = (
        bytes.get(c.src_offset..c.src_offset.saturating_add(c.len)),
        out.get_mut(c.dst_offset..c.dst_offset.saturating_add(c.len)),
    ) else {
        return;
    };
    to.copy_from_slice(from);
    for (i, chunk) in out.chunks_exact(8).enumerate() {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        mem.write_word(c.dst, i as u32, w);
    }
}

/// The argument of `grant_table_op`: the guest's array of `count`
/// operation structures (shorter than `count`: the hypervisor cannot read
/// them, `-EFAULT`).
#[derive(Debug)]
#[non_exhaustive]
pub enum GrantArg<'a> {
    /// `GNTTABOP_map_grant_ref`.
    Map(&'a mut [GnttabMapGrantRef]),
    /// `GNTTABOP_unmap_grant_ref`.
    Unmap(&'a mut [GnttabUnmapGrantRef]),
    /// `GNTTABOP_setup_table`, with the guest's frame list.
    SetupTable(&'a mut GnttabSetupTable, &'a mut [u64]),
    /// `GNTTABOP_copy`.
    Copy(&'a mut [GnttabCopy]),
    /// `GNTTABOP_query_size`.
    QuerySize(&'a mut GnttabQuerySize),
    /// `GNTTABOP_set_version`.
    SetVersion(&'a mut GnttabSetVersion),
    /// `GNTTABOP_transfer`.
    Transfer(&'a mut [GnttabTransfer]),
    /// `GNTTABOP_unmap_and_replace`.
    UnmapAndReplace(&'a mut [GnttabUnmapAndReplace]),
    /// `GNTTABOP_get_status_frames`, with the guest's frame list.
    GetStatusFrames(&'a mut GnttabGetStatusFrames, &'a mut [u64]),
    /// `GNTTABOP_get_version`.
    GetVersion(&'a mut GnttabGetVersion),
    /// `GNTTABOP_swap_grant_ref`.
    SwapGrantRef(&'a mut [GnttabSwapGrantRef]),
    /// `GNTTABOP_cache_flush`.
    CacheFlush(&'a mut [GnttabCacheFlush]),
    /// A pointer the hypervisor cannot read.
    Fault,
}

/// One live grant mapping, as the checker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantMapping {
    /// The mapping domain.
    pub mapper: DomId,
    /// The granting domain.
    pub granter: DomId,
    /// The frame.
    pub mfn: Mfn,
    /// Mapping kinds held (host, device): one general reference each.
    pub kinds: u32,
    /// Whether each kind also holds a writable type reference.
    pub writable: bool,
}

impl<'s> Host<'s> {
    /// Gives `dom` its grant table and maptrack. Returns `false` when every
    /// slot is taken (the domain then has no grant table).
    pub(crate) fn grant_create(&mut self, dom: DomId) -> bool {
        let Some(slot) = self.grant_slot_used.iter().position(|u| !u) else {
            return false;
        };
        let slots: &'s [GrantSlot] = self.grant_slots;
        let Some(storage) = slots.get(slot) else {
            return false;
        };
        let config = GrantTableConfig {
            max_frames: GRANT_FRAMES,
            ..GrantTableConfig::DEFAULT
        };
        let Ok(table) = GrantTable::new(dom, storage, &storage.active, config) else {
            return false;
        };
        let maptrack = Maptrack::new(dom, false, &storage.maptrack, MAPTRACK_HANDLES);
        if let Some(u) = self.grant_slot_used.get_mut(slot) {
            *u = true;
        }
        self.grants.push(DomainGrants {
            dom,
            slot,
            table,
            maptrack,
        });
        true
    }

    /// The dying `dom` gives up its grants: every mapping it holds is
    /// released (its references dropped once), then its table is torn
    /// down. Returns the entries others still have pinned (the table then
    /// stays for their unmaps).
    pub(crate) fn grant_release(&mut self, dom: DomId) -> usize {
        let Some(i) = self.grants.iter().position(|g| g.dom == dom) else {
            return 0;
        };
        {
            let frames = TableGrantFrames::new(&self.table, SimGrantHost::default());
            let tables = Tables(&self.grants);
            if let Some(g) = self.grants.get(i) {
                let _ = g.maptrack.release_all(&tables, &frames, &mut || {});
            }
        }
        self.reap();
        self.grant_frames
            .retain(|&(mapper, _), _| mapper != dom.get());
        let Some(g) = self.grants.get_mut(i) else {
            return 0;
        };
        match g.table.teardown() {
            Ok(()) => {
                let slot = g.slot;
                self.grants.remove(i);
                if let Some(u) = self.grant_slot_used.get_mut(slot) {
                    *u = false;
                }
                0
            }
            Err(pinned) => pinned,
        }
    }

    /// The guest's own view of its grant table (the frames it maps), in the
    /// version and size the table has now.
    #[must_use]
    pub fn guest_grant_table(&self, dom: DomId) -> Option<GuestGrantTable<'s>> {
        let g = self.grants.iter().find(|g| g.dom == dom)?;
        let slots: &'s [GrantSlot] = self.grant_slots;
        let storage: &'s GrantSlot = slots.get(g.slot)?;
        Some(GuestGrantTable::new(
            storage,
            g.table.version(),
            g.table.nr_frames(),
        ))
    }

    /// `dom`'s grant table.
    #[must_use]
    pub fn grant_table(&self, dom: DomId) -> Option<&GrantTable<'s>> {
        self.grants.iter().find(|g| g.dom == dom).map(|g| &g.table)
    }

    /// Every live grant mapping (from the maptracks' handles).
    #[must_use]
    pub fn grant_mappings(&self) -> Vec<GrantMapping> {
        let mut out = Vec::new();
        for g in &self.grants {
            for h in 0..g.maptrack.limit() {
                let Some(info) = g.maptrack.mapping(GrantHandle(h)) else {
                    continue;
                };
                let flags = GntMapFlags::from_bits_retain(info.flags);
                let kinds = u32::from(flags.contains(GntMapFlags::HOST_MAP))
                    + u32::from(flags.contains(GntMapFlags::DEVICE_MAP));
                let mfn = self
                    .grant_frames
                    .get(&(g.dom.get(), h))
                    .copied()
                    .unwrap_or(Mfn::new(u64::MAX));
                out.push(GrantMapping {
                    mapper: g.dom,
                    granter: info.domid,
                    mfn,
                    kinds,
                    writable: !flags.contains(GntMapFlags::READONLY),
                });
            }
        }
        out
    }

    /// `HYPERVISOR_grant_table_op(cmd, uop, count)` for `caller`.
    pub(crate) fn do_grant_table_op(
        &mut self,
        caller: DomId,
        cmd: u32,
        count: u32,
        arg: GrantArg<'_>,
    ) -> i64 {
        if !self.grants.iter().any(|g| g.dom == caller) {
            return -ESRCH;
        }
        let Some(op) = GnttabOp::from_raw(cmd) else {
            return -ENOSYS;
        };
        let n = count as usize;
        let rc = match (op, arg) {
            (GnttabOp::MapGrantRef, GrantArg::Map(ops)) => match ops.get_mut(..n) {
                Some(ops) => {
                    self.grant_map(caller, ops);
                    0
                }
                None => -EFAULT,
            },
            (GnttabOp::UnmapGrantRef, GrantArg::Unmap(ops)) => match ops.get_mut(..n) {
                Some(ops) => {
                    let frames = TableGrantFrames::new(&self.table, SimGrantHost::default());
                    let tables = Tables(&self.grants);
                    if let Some(g) = self.grants.iter().find(|g| g.dom == caller) {
                        g.maptrack
                            .unmap_grant_refs(&tables, &frames, ops, &mut || {});
                    }
                    0
                }
                None => -EFAULT,
            },
            (GnttabOp::Copy, GrantArg::Copy(ops)) => match ops.get_mut(..n) {
                Some(ops) => {
                    let host = SimGrantHost::default();
                    let frames = TableGrantFrames::new(&self.table, host);
                    hvmem_grant::copy(caller, &Tables(&self.grants), &frames, ops);
                    let copies = frames.host().copies.take();
                    for c in copies {
                        apply_copy(&mut self.mem, c);
                    }
                    0
                }
                None => -EFAULT,
            },
            (GnttabOp::SetupTable | GnttabOp::QuerySize, _) if n != 1 => -EINVAL,
            (GnttabOp::SetupTable, GrantArg::SetupTable(op, list)) => {
                let target = self.grant_target(caller, op.dom);
                match target {
                    Ok(dom) => {
                        let table = self
                            .grants
                            .iter_mut()
                            .find(|g| g.dom == dom)
                            .map(|g| &mut g.table);
                        hvmem_grant::setup_table(table, op, list);
                    }
                    Err(st) => op.status = st.raw(),
                }
                0
            }
            (GnttabOp::QuerySize, GrantArg::QuerySize(op)) => {
                match self.grant_target(caller, op.dom) {
                    Ok(dom) => hvmem_grant::query_size(self.grant_table(dom), op),
                    Err(st) => op.status = st.raw(),
                }
                0
            }
            (GnttabOp::SetVersion, GrantArg::SetVersion(op)) => {
                match self
                    .grants
                    .iter_mut()
                    .find(|g| g.dom == caller)
                    .map(|g| g.table.set_version(op))
                {
                    Some(Ok(())) => 0,
                    Some(Err(e)) => i64::from(e.errno()),
                    None => -ESRCH,
                }
            }
            (GnttabOp::Transfer, GrantArg::Transfer(ops)) => match ops.get_mut(..n) {
                Some(ops) => {
                    let frames =
                        TableGrantFrames::new(&self.table, SimGrantHost::for_transfer(self));
                    hvmem_grant::transfer(caller, &Tables(&self.grants), &frames, ops);
                    let moves = frames.host().moves.take();
                    for m in moves {
                        self.apply_move(m);
                    }
                    0
                }
                None => -EFAULT,
            },
            (GnttabOp::UnmapAndReplace, GrantArg::UnmapAndReplace(ops)) => {
                match ops.get_mut(..n) {
                    Some(ops) => {
                        let frames = TableGrantFrames::new(&self.table, SimGrantHost::default());
                        let tables = Tables(&self.grants);
                        if let Some(g) = self.grants.iter().find(|g| g.dom == caller) {
                            // No virtual addresses are simulated: every
                            // address has a page table to move a PTE from.
                            g.maptrack.unmap_and_replace(
                                &tables,
                                &frames,
                                ops,
                                &mut |_, _| true,
                                &mut || {},
                            );
                        }
                        0
                    }
                    None => -EFAULT,
                }
            }
            (GnttabOp::SwapGrantRef, GrantArg::SwapGrantRef(ops)) => match ops.get_mut(..n) {
                Some(ops) => {
                    if let Some(g) = self.grants.iter_mut().find(|g| g.dom == caller) {
                        g.table.swap_grant_refs(ops);
                    }
                    0
                }
                None => -EFAULT,
            },
            (GnttabOp::GetVersion, GrantArg::GetVersion(op)) => {
                // Xen reads one element whatever the count.
                match self.grant_target(caller, op.dom) {
                    Ok(dom) => match hvmem_grant::get_version(self.grant_table(dom), op) {
                        Ok(()) => 0,
                        Err(e) => i64::from(e.errno()),
                    },
                    Err(GntSt::PermissionDenied) => -EPERM,
                    Err(_) => i64::from(CallError::NoSuchDomain.errno()),
                }
            }
            (GnttabOp::GetStatusFrames, _) if n != 1 => -EINVAL,
            (GnttabOp::GetStatusFrames, GrantArg::GetStatusFrames(op, list)) => {
                match self.grant_target(caller, op.dom) {
                    Ok(dom) => hvmem_grant::get_status_frames(self.grant_table(dom), op, list),
                    Err(st) => op.status = st.raw(),
                }
                0
            }
            (GnttabOp::CacheFlush, GrantArg::CacheFlush(ops)) => match ops.get(..n) {
                Some(ops) => self.grant_cache_flush(caller, ops),
                None => -EFAULT,
            },
            (
                GnttabOp::MapGrantRef
                | GnttabOp::UnmapGrantRef
                | GnttabOp::Copy
                | GnttabOp::SetupTable
                | GnttabOp::QuerySize
                | GnttabOp::SetVersion
                | GnttabOp::Transfer
                | GnttabOp::UnmapAndReplace
                | GnttabOp::GetStatusFrames
                | GnttabOp::GetVersion
                | GnttabOp::SwapGrantRef
                | GnttabOp::CacheFlush,
                _,
            ) => -EFAULT,
            _ => -ENOSYS,
        };
        self.reap();
        rc
    }

    /// The domain a `setup_table` or `query_size` names: the caller for
    /// `DOMID_SELF` or itself; another domain only for the control domain
    /// (Xen's XSM check: `GNTST_permission_denied`); an unknown one is
    /// `GNTST_bad_domain`.
    fn grant_target(&self, caller: DomId, dom: u16) -> Result<DomId, GntSt> {
        let dom = DomId::new(dom);
        let target = if dom == DomId::SELF { caller } else { dom };
        if !self.grants.iter().any(|g| g.dom == target) {
            return Err(GntSt::BadDomain);
        }
        if target != caller && caller != crate::hypercall::CONTROL_DOMAIN {
            return Err(GntSt::PermissionDenied);
        }
        Ok(target)
    }

    /// `GNTTABOP_cache_flush` as Xen on x86 answers it: each element is
    /// checked by hvmem-grant; the first refused one ends the call with its
    /// errno; an accepted clean needs no work, as the simulated memory has
    /// no caches.
    fn grant_cache_flush(&self, caller: DomId, ops: &[GnttabCacheFlush]) -> i64 {
        let tables = Tables(&self.grants);
        let owner = |mfn: Mfn| {
            if self.index(mfn).is_none() {
                return FrameOwner::Invalid;
            }
            match self.recorded_owner(mfn) {
                Some(Owner::Domain(dom)) => FrameOwner::Domain(dom),
                _ => FrameOwner::Unowned,
            }
        };
        for op in ops {
            if let Err(e) = hvmem_grant::cache_flush(caller, &tables, CacheArch::X86, op, &owner) {
                return i64::from(e.errno());
            }
        }
        0
    }

    /// Records a frame a transfer moved (see the module docs): the frame
    /// table already shows the move.
    fn apply_move(&mut self, m: FrameMove) {
        match m {
            FrameMove::Stolen { dom, mfn } => {
                self.remove_from_physmap(mfn);
                self.set_record(mfn, crate::host::HOST_OWNER, crate::host::INVALID);
                let _ = self.books.decrease_reservation(dom, 1, 0);
                self.adjust_owned(dom, -1);
                self.host_frames += 1;
            }
            FrameMove::Assigned { dom, mfn, gfn } => {
                self.set_record(mfn, dom.get(), crate::host::INVALID);
                self.set_machphys(dom, mfn, gfn);
                let grown = self.books.populate_physmap(dom, 1, 0);
                debug_assert_eq!(grown, Ok(1), "{dom} received {mfn} without headroom");
                self.adjust_owned(dom, 1);
                self.host_frames = self.host_frames.saturating_sub(1);
            }
        }
    }

    fn grant_map(&mut self, caller: DomId, ops: &mut [GnttabMapGrantRef]) {
        {
            let frames = TableGrantFrames::new(&self.table, SimGrantHost::default());
            let tables = Tables(&self.grants);
            if let Some(g) = self.grants.iter().find(|g| g.dom == caller) {
                g.maptrack.map_grant_refs(&tables, &frames, ops);
            }
        }
        for op in ops.iter() {
            if op.status == GntSt::Okay.raw() {
                self.grant_frames
                    .insert((caller.get(), op.handle), Mfn::new(op.dev_bus_addr >> 12));
            }
        }
    }
}

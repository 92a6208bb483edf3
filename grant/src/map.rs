//! `GNTTABOP_map_grant_ref` and `GNTTABOP_unmap_grant_ref` (Xen
//! `xen/common/grant_table.c`), and the release of every mapping a dying
//! domain holds.
//!
//! A map, in order: work out the pin increments from the flags; refuse PV
//! mapping kinds to a translated mapper; find the granter; take a maptrack
//! handle; lock the active entry; if it is already pinned, check that the
//! pin is ours, that no counter overflows, and that it is a full-page grant;
//! on the first pin (or first writable pin) set the status bits (module
//! `table`), and on the first pin translate the frame, whose reference
//! becomes the mapping's (Xen's order); take the mapping's other references; add the pins; fill
//! the maptrack entry, flags last. Every failure unwinds what the steps
//! before it did, so a refused map leaves no pin, bit, reference or handle.
//!
//! An unmap runs in two phases, as Xen's does: the first removes the
//! mapping kinds from the maptrack entry (under the active-entry lock, so of
//! two unmaps of one handle only one finds each kind), the embedder's TLB
//! flush runs for the batch (every 32 unmaps), and only then does the second
//! phase drop the pins and references. A frame is never released while a
//! stale translation to it may remain.

use hvmem_types::{DomId, Mfn};

use crate::abi::{
    GnttabMapGrantRef, GnttabUnmapAndReplace, GnttabUnmapGrantRef, GrantHandle, GrantRef,
};
use crate::active::{
    PIN_DEV_READ, PIN_DEV_WRITE, PIN_HOST_READ, PIN_HOST_WRITE, PinnedKind, pin_can_add,
};
use crate::error::{GntSt, GrantError};
use crate::flags::GntMapFlags;
use crate::frames::{Domains, GfnError, GrantFrames};
use crate::maptrack::Maptrack;
use crate::sync::Ordering;
use crate::table::GrantTable;

/// Unmaps between two TLB flushes (Xen `GNTTAB_UNMAP_BATCH_SIZE`).
pub const UNMAP_BATCH: usize = 32;

/// The kind bits a maptrack entry keeps.
const KINDS: GntMapFlags = GntMapFlags::HOST_MAP.union(GntMapFlags::DEVICE_MAP);

/// The pin increments of a mapping of `kinds`.
fn pin_increments(kinds: GntMapFlags, readonly: bool) -> u32 {
    let mut incr = 0;
    if kinds.contains(GntMapFlags::DEVICE_MAP) {
        incr += if readonly {
            PIN_DEV_READ
        } else {
            PIN_DEV_WRITE
        };
    }
    if kinds.contains(GntMapFlags::HOST_MAP) {
        incr += if readonly {
            PIN_HOST_READ
        } else {
            PIN_HOST_WRITE
        };
    }
    incr
}

/// `pin - dec` counter by counter, or `None` if a counter would go below
/// zero (a broken invariant, never a guest's doing).
pub(crate) fn pin_sub(pin: u32, dec: u32) -> Option<u32> {
    let mut shift = 0;
    while shift < 32 {
        if (dec >> shift) & 0xff > (pin >> shift) & 0xff {
            return None;
        }
        shift += 8;
    }
    Some(pin - dec)
}

/// The frame reference of one mapping kind.
fn get_kind_ref<F: GrantFrames + ?Sized>(frames: &F, owner: DomId, mfn: Mfn, ro: bool) -> bool {
    if ro {
        frames.get_page(owner, mfn)
    } else {
        frames.get_page_and_type(owner, mfn)
    }
}

fn put_kind_ref<F: GrantFrames + ?Sized>(frames: &F, mfn: Mfn, ro: bool) {
    if ro {
        frames.put_page(mfn);
    } else {
        frames.put_page_and_type(mfn);
    }
}

pub(crate) fn gfn_error(error: GfnError) -> GrantError {
    match error {
        GfnError::BadPage => GrantError::BadPage,
        GfnError::PagedOut => GrantError::PagedOut,
    }
}

/// The replacement half of an `unmap_and_replace` element.
struct Replace<'r> {
    new_addr: u64,
    replace_pte: &'r mut dyn FnMut(u64, u64) -> bool,
}

/// What the first phase of an unmap left for the second.
struct PendingUnmap<'d> {
    table: &'d GrantTable<'d>,
    gref: GrantRef,
    mfn: Mfn,
    done: GntMapFlags,
    readonly: bool,
    /// The handle, if it maps nothing any more and goes back to the list.
    free: Option<GrantHandle>,
}

impl Maptrack<'_> {
    /// `GNTTABOP_map_grant_ref` for a batch: each element gets its own
    /// status, handle and `dev_bus_addr`.
    pub fn map_grant_refs<D, F>(&self, domains: &D, frames: &F, ops: &mut [GnttabMapGrantRef])
    where
        D: Domains + ?Sized,
        F: GrantFrames + ?Sized,
    {
        for op in ops {
            self.map_grant_ref(domains, frames, op);
        }
    }

    /// `GNTTABOP_map_grant_ref` for one element: on success `status` is
    /// `GNTST_okay`, `handle` the maptrack handle and `dev_bus_addr` the
    /// frame's address; otherwise `status` is the code Xen returns for the
    /// fault (see [`GrantError::status`]) and nothing changed.
    ///
    /// The crate writes no page table. After `GNTST_okay` the frame is
    /// pinned and referenced, but nothing maps it yet: the embedder maps
    /// frame `dev_bus_addr >> 12` itself, with a PTE at `host_addr` (PV
    /// host mapping), a p2m entry (translated mapper) or an IOMMU entry
    /// (device mapping), read-only if `GNTMAP_readonly` was asked for. If
    /// that fails, it undoes the map with [`unmap_grant_ref`](Self::unmap_grant_ref)
    /// on `handle`, naming the same kinds: `host_addr` as mapped for a host
    /// mapping, the returned `dev_bus_addr` for a device mapping. An unmap
    /// with both addresses 0 removes nothing.
    pub fn map_grant_ref<D, F>(&self, domains: &D, frames: &F, op: &mut GnttabMapGrantRef)
    where
        D: Domains + ?Sized,
        F: GrantFrames + ?Sized,
    {
        match self.map_one(domains, frames, op) {
            Ok((handle, mfn)) => {
                op.handle = handle.0;
                op.dev_bus_addr = mfn.to_phys().map_or(0, |addr| addr.get());
                op.status = GntSt::Okay.raw();
            }
            Err(error) => op.status = error.status().raw(),
        }
    }

    fn map_one<D, F>(
        &self,
        domains: &D,
        frames: &F,
        op: &GnttabMapGrantRef,
    ) -> Result<(GrantHandle, Mfn), GrantError>
    where
        D: Domains + ?Sized,
        F: GrantFrames + ?Sized,
    {
        let flags = GntMapFlags::from_bits_retain(op.flags);
        let readonly = flags.contains(GntMapFlags::READONLY);
        let kinds = flags & KINDS;
        let incr = pin_increments(kinds, readonly);
        if incr == 0 {
            return Err(GrantError::NoMappingKind);
        }
        let pv_only =
            GntMapFlags::DEVICE_MAP | GntMapFlags::APPLICATION_MAP | GntMapFlags::CONTAINS_PTE;
        if self.translated && flags.intersects(pv_only) {
            return Err(GrantError::TranslatedMapperFlags);
        }
        let dom = DomId::new(op.dom);
        let granter = lookup(domains, dom)?;
        let handle = self.alloc_handle().ok_or(GrantError::MaptrackFull)?;
        let mapped = self.pin_for_map(granter, frames, op, kinds, readonly, incr, handle);
        if mapped.is_err() {
            self.free_handle(handle);
        }
        mapped.map(|mfn| (handle, mfn))
    }

    #[allow(clippy::too_many_arguments)]
    fn pin_for_map<F: GrantFrames + ?Sized>(
        &self,
        granter: &GrantTable<'_>,
        frames: &F,
        op: &GnttabMapGrantRef,
        kinds: GntMapFlags,
        readonly: bool,
        incr: u32,
        handle: GrantHandle,
    ) -> Result<Mfn, GrantError> {
        let gref = GrantRef(op.gref);
        let (active, slot) = granter.lock_slot(gref)?;
        let pin = active.pin();
        if pin != 0 {
            if active.domid() != self.owner || active.kind() != PinnedKind::FullPage {
                return Err(GrantError::PinConflict);
            }
            if !pin_can_add(pin, incr) {
                return Err(GrantError::PinOverflow);
            }
        }
        let first = pin == 0;
        let first_write = !readonly && pin & crate::active::PIN_WRITE_MASK == 0;
        if first || first_write {
            granter.set_status(&slot, !first, readonly, true, self.owner)?;
        }
        if first {
            // Read once, after the pin made the entry stable.
            let gfn = slot.frame();
            match frames.get_gfn(granter.owner(), gfn) {
                Ok(mfn) => active.set_target(self.owner, mfn, PinnedKind::FullPage, (0, 4096)),
                Err(error) => {
                    granter.reduce_status(&slot, pin);
                    return Err(gfn_error(error));
                }
            }
        }
        let mfn = active.mfn();
        let owner = granter.owner();
        // The first pin's translation reference is the first kind's general
        // reference (as in Xen); the entry itself holds none.
        let mut inherited = first;
        let mut taken = 0;
        for kind in [GntMapFlags::DEVICE_MAP, GntMapFlags::HOST_MAP] {
            if !kinds.contains(kind) {
                continue;
            }
            let referenced = if inherited {
                readonly || frames.get_type(owner, mfn)
            } else {
                get_kind_ref(frames, owner, mfn, readonly)
            };
            if !referenced {
                for _ in 0..taken {
                    put_kind_ref(frames, mfn, readonly);
                }
                if inherited {
                    frames.put_page(mfn);
                }
                if first {
                    active.clear_target();
                }
                granter.reduce_status(&slot, pin);
                return Err(GrantError::FrameInUse);
            }
            inherited = false;
            taken += 1;
        }
        active.set_pin(pin + incr);
        let Some(entry) = self.entry(handle) else {
            debug_assert!(false, "allocated handle beyond the maptrack");
            return Err(GrantError::MaptrackFull);
        };
        entry.domid.store(u32::from(owner.get()), Ordering::Relaxed);
        entry.gref.store(gref.0, Ordering::Relaxed);
        entry.host_addr.store(op.host_addr, Ordering::Relaxed);
        let mut stored = kinds;
        if readonly {
            stored |= GntMapFlags::READONLY;
        }
        // Release: the fields above are visible to whoever sees the flags.
        entry.flags.store(stored.bits(), Ordering::Release);
        drop(active);
        Ok(mfn)
    }

    /// `GNTTABOP_unmap_grant_ref` for a batch. Each element's status is
    /// set; `flush_tlb` runs after the mappings of every 32 elements are
    /// gone (if any was) and before their frames' references are dropped.
    pub fn unmap_grant_refs<D, F>(
        &self,
        domains: &D,
        frames: &F,
        ops: &mut [GnttabUnmapGrantRef],
        flush_tlb: &mut dyn FnMut(),
    ) where
        D: Domains + ?Sized,
        F: GrantFrames + ?Sized,
    {
        for chunk in ops.chunks_mut(UNMAP_BATCH) {
            let mut pending: [Option<PendingUnmap<'_>>; UNMAP_BATCH] =
                core::array::from_fn(|_| None);
            for (op, slot) in chunk.iter_mut().zip(pending.iter_mut()) {
                match self.unmap_begin(
                    domains,
                    op.handle,
                    op.host_addr,
                    op.dev_bus_addr,
                    false,
                    None,
                ) {
                    Ok(done) => {
                        *slot = done;
                        op.status = GntSt::Okay.raw();
                    }
                    Err(error) => op.status = error.status().raw(),
                }
            }
            self.unmap_finish_batch(frames, pending, flush_tlb);
        }
    }

    /// `GNTTABOP_unmap_grant_ref` for one element: a batch of one, without
    /// the batch's bookkeeping. `flush_tlb` runs if a mapping was removed,
    /// before its references are dropped.
    pub fn unmap_grant_ref<D, F>(
        &self,
        domains: &D,
        frames: &F,
        op: &mut GnttabUnmapGrantRef,
        flush_tlb: &mut dyn FnMut(),
    ) where
        D: Domains + ?Sized,
        F: GrantFrames + ?Sized,
    {
        match self.unmap_begin(
            domains,
            op.handle,
            op.host_addr,
            op.dev_bus_addr,
            false,
            None,
        ) {
            Ok(done) => {
                op.status = GntSt::Okay.raw();
                if let Some(done) = done {
                    flush_tlb();
                    self.unmap_complete(frames, done);
                }
            }
            Err(error) => op.status = error.status().raw(),
        }
    }

    /// The mapping domain is dying: releases every mapping it still holds,
    /// dropping each pin and frame reference once. Returns how many handles
    /// were released. `flush_tlb` runs before any reference is dropped.
    pub fn release_all<D, F>(&self, domains: &D, frames: &F, flush_tlb: &mut dyn FnMut()) -> usize
    where
        D: Domains + ?Sized,
        F: GrantFrames + ?Sized,
    {
        let mut released = 0;
        let high = self.high_water();
        let mut start = 0;
        while start < high {
            let end = high.min(start.saturating_add(UNMAP_BATCH as u32));
            let mut pending: [Option<PendingUnmap<'_>>; UNMAP_BATCH] =
                core::array::from_fn(|_| None);
            for (handle, slot) in (start..end).zip(pending.iter_mut()) {
                if let Ok(done) = self.unmap_begin(domains, handle, 0, 0, true, None) {
                    *slot = done;
                }
            }
            flush_tlb();
            for done in pending.into_iter().flatten() {
                released += usize::from(done.free.is_some());
                self.unmap_complete(frames, done);
            }
            start = end;
        }
        released
    }

    /// `GNTTABOP_unmap_and_replace` for a batch (x86 PV; Xen
    /// `xen/common/grant_table.c`):
    /// each element removes the host mapping of `handle` at `host_addr`, as
    /// an unmap with `dev_bus_addr` 0 does, and puts in its place what
    /// `new_addr` maps, leaving `new_addr` empty (Xen moves the PTE).
    ///
    /// The crate keeps no page tables, so the move is split as the mapping
    /// model allows: `replace_pte(host_addr, new_addr)` is the embedder's
    /// PTE move, called (for a non-zero `new_addr`, under the unmapped
    /// grant's active-entry lock) before anything changes; `false` (no page
    /// table at `new_addr`) refuses the element with
    /// `GNTST_general_error`. Then every grant host mapping this maptrack
    /// records at `new_addr` is recorded at `host_addr` instead: it moved,
    /// keeping its pins and references (moved once, never dropped or
    /// taken again), and a later unmap names it at `host_addr`. The
    /// replaced mapping's pins and references are dropped once, after
    /// `flush_tlb`, as for an unmap. With `new_addr` 0 the element is a
    /// plain host unmap and `replace_pte` is not called.
    ///
    /// Statuses as Xen's: `GNTST_bad_handle` for a handle out of range or
    /// free; `GNTST_general_error` when `host_addr` is not where the handle
    /// maps, or the move is refused (including `new_addr == host_addr`,
    /// where Xen would clear the PTE and then fail; here nothing changes);
    /// `GNTST_okay` with nothing done for `host_addr` 0 or a handle without
    /// a host mapping. Differences: `GNTMAP_contains_pte` mappings are not
    /// told apart (Xen refuses them a non-zero `new_addr`).
    pub fn unmap_and_replace<D, F>(
        &self,
        domains: &D,
        frames: &F,
        ops: &mut [GnttabUnmapAndReplace],
        replace_pte: &mut dyn FnMut(u64, u64) -> bool,
        flush_tlb: &mut dyn FnMut(),
    ) where
        D: Domains + ?Sized,
        F: GrantFrames + ?Sized,
    {
        for chunk in ops.chunks_mut(UNMAP_BATCH) {
            let mut pending: [Option<PendingUnmap<'_>>; UNMAP_BATCH] =
                core::array::from_fn(|_| None);
            for (op, slot) in chunk.iter_mut().zip(pending.iter_mut()) {
                let replace = Replace {
                    new_addr: op.new_addr,
                    replace_pte: &mut *replace_pte,
                };
                match self.unmap_begin(domains, op.handle, op.host_addr, 0, false, Some(replace)) {
                    Ok(done) => {
                        if done.is_some() && op.new_addr != 0 {
                            self.move_host_mappings(
                                domains,
                                GrantHandle(op.handle),
                                op.new_addr,
                                op.host_addr,
                            );
                        }
                        *slot = done;
                        op.status = GntSt::Okay.raw();
                    }
                    Err(error) => op.status = error.status().raw(),
                }
            }
            self.unmap_finish_batch(frames, pending, flush_tlb);
        }
    }

    /// Records every host mapping of this maptrack at `from` (other than
    /// `skip`) at `to`: their PTE moved there. Each entry's address changes
    /// under its grant's active-entry lock, one lock at a time.
    fn move_host_mappings<D: Domains + ?Sized>(
        &self,
        domains: &D,
        skip: GrantHandle,
        from: u64,
        to: u64,
    ) {
        for handle in 0..self.high_water() {
            if handle == skip.0 {
                continue;
            }
            let Some(entry) = self.entry(GrantHandle(handle)) else {
                continue;
            };
            let flags = GntMapFlags::from_bits_retain(entry.flags.load(Ordering::Acquire));
            if !flags.contains(GntMapFlags::HOST_MAP)
                || entry.host_addr.load(Ordering::Relaxed) != from
            {
                continue;
            }
            let dom = entry.domid.load(Ordering::Relaxed);
            let gref = entry.gref.load(Ordering::Relaxed);
            let Some(table) = domains.grant_table(DomId::new(dom as u16)) else {
                continue;
            };
            let Some(active) = table.active_entry(GrantRef(gref)) else {
                continue;
            };
            let active = active.lock();
            let flags = GntMapFlags::from_bits_retain(entry.flags.load(Ordering::Acquire));
            if flags.contains(GntMapFlags::HOST_MAP)
                && entry.domid.load(Ordering::Relaxed) == dom
                && entry.gref.load(Ordering::Relaxed) == gref
                && entry.host_addr.load(Ordering::Relaxed) == from
            {
                entry.host_addr.store(to, Ordering::Relaxed);
            }
            drop(active);
        }
    }

    /// Phase one: validates the handle and removes the kinds the request
    /// names from its maptrack entry (all of them with `force`). `Ok(None)`:
    /// nothing to do (both addresses zero, or naming kinds not mapped).
    /// With `replace`, the embedder's PTE move runs (and may refuse) before
    /// the host kind is removed.
    fn unmap_begin<'d, D: Domains + ?Sized>(
        &self,
        domains: &'d D,
        handle: u32,
        host_addr: u64,
        dev_bus_addr: u64,
        force: bool,
        replace: Option<Replace<'_>>,
    ) -> Result<Option<PendingUnmap<'d>>, GrantError> {
        let handle = GrantHandle(handle);
        let entry = self.entry(handle).ok_or(GrantError::BadHandle)?;
        let flags = entry.flags.load(Ordering::Acquire);
        if flags == 0 {
            return Err(GrantError::BadHandle);
        }
        let dom = entry.domid.load(Ordering::Relaxed);
        let gref = entry.gref.load(Ordering::Relaxed);
        let table = domains
            .grant_table(DomId::new(dom as u16))
            .ok_or(GrantError::BadHandle)?;
        // The entry may have been unmapped (and reused) meanwhile, so the
        // ref is untrusted until re-checked under the lock.
        let active = table
            .active_entry(GrantRef(gref))
            .ok_or(GrantError::BadHandle)?
            .lock();
        let flags = GntMapFlags::from_bits_retain(entry.flags.load(Ordering::Acquire));
        if flags.is_empty()
            || entry.domid.load(Ordering::Relaxed) != dom
            || entry.gref.load(Ordering::Relaxed) != gref
        {
            return Err(GrantError::BadHandle);
        }
        let mfn = active.mfn();
        let mut done = GntMapFlags::empty();
        if force {
            done = flags & KINDS;
        } else {
            if dev_bus_addr != 0 && mfn.to_phys().map(|addr| addr.get()) != Some(dev_bus_addr) {
                return Err(GrantError::BadDevAddr);
            }
            if host_addr != 0 && flags.contains(GntMapFlags::HOST_MAP) {
                if entry.host_addr.load(Ordering::Relaxed) != host_addr {
                    return Err(GrantError::BadHostAddr);
                }
                done |= GntMapFlags::HOST_MAP;
            }
            if dev_bus_addr != 0 && flags.contains(GntMapFlags::DEVICE_MAP) {
                done |= GntMapFlags::DEVICE_MAP;
            }
        }
        if done.is_empty() {
            return Ok(None);
        }
        if let Some(replace) = replace {
            if replace.new_addr != 0
                && (replace.new_addr == host_addr
                    || !(replace.replace_pte)(host_addr, replace.new_addr))
            {
                return Err(GrantError::ReplaceRefused);
            }
        }
        let remaining = flags & KINDS & !done;
        let free = if remaining.is_empty() {
            entry.flags.store(0, Ordering::Release);
            Some(handle)
        } else {
            entry.flags.store((flags & !done).bits(), Ordering::Release);
            None
        };
        drop(active);
        Ok(Some(PendingUnmap {
            table,
            gref: GrantRef(gref),
            mfn,
            done,
            readonly: flags.contains(GntMapFlags::READONLY),
            free,
        }))
    }

    /// Phase two, after the TLB flush: drops the pins and references of the
    /// kinds phase one removed, and frees the handle if it maps nothing.
    /// The second phase of a batch of unmaps: one TLB flush if any mapping
    /// was removed, then each removed mapping's references dropped.
    fn unmap_finish_batch<F: GrantFrames + ?Sized>(
        &self,
        frames: &F,
        pending: [Option<PendingUnmap<'_>>; UNMAP_BATCH],
        flush_tlb: &mut dyn FnMut(),
    ) {
        if pending.iter().any(Option::is_some) {
            flush_tlb();
        }
        for done in pending.into_iter().flatten() {
            self.unmap_complete(frames, done);
        }
    }

    fn unmap_complete<F: GrantFrames + ?Sized>(&self, frames: &F, done: PendingUnmap<'_>) {
        let PendingUnmap {
            table,
            gref,
            mfn,
            done,
            readonly,
            free,
        } = done;
        if let Ok((active, slot)) = table.lock_slot(gref) {
            let pin = active.pin();
            let dec = pin_increments(done, readonly);
            if let Some(left) = pin_sub(pin, dec) {
                active.set_pin(left);
                if done.contains(GntMapFlags::DEVICE_MAP) {
                    put_kind_ref(frames, mfn, readonly);
                }
                if done.contains(GntMapFlags::HOST_MAP) {
                    put_kind_ref(frames, mfn, readonly);
                }
                table.reduce_status(&slot, left);
                if left == 0 {
                    active.clear_target();
                }
            } else {
                debug_assert!(false, "maptrack entry without its pins");
            }
        } else {
            debug_assert!(false, "mapped entry left the table");
        }
        if let Some(handle) = free {
            self.free_handle(handle);
        }
    }
}

/// The table of `dom`, refusing reserved ids (`DOMID_SELF` included: a map
/// names the granter by its real id).
pub(crate) fn lookup<D: Domains + ?Sized>(
    domains: &D,
    dom: DomId,
) -> Result<&GrantTable<'_>, GrantError> {
    if dom.is_reserved() {
        return Err(GrantError::UnknownDomain);
    }
    domains.grant_table(dom).ok_or(GrantError::UnknownDomain)
}

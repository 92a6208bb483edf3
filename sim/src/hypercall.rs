//! The hypercall layer: what a guest of the simulated host can ask of the
//! hypervisor, with Xen's hypercall and command numbers and Xen's return
//! values.
//!
//! | Hypercall | Number | Commands offered | Returns |
//! |---|---|---|---|
//! | `mmu_update` | 1 | `MMU_NORMAL_PT_UPDATE` (0), `MMU_MACHPHYS_UPDATE` (1), `MMU_PT_UPDATE_PRESERVE_AD` (2) | 0, or `-errno` for the first refused request; [`Outcome::done`] counts the requests applied (Xen's `success_count`) |
//! | `memory_op` | 12 | `increase_reservation` (0), `decrease_reservation` (1), `current_reservation` (3), `maximum_reservation` (4), `populate_physmap` (6), `claim_pages` (24) | extents done (0..=3 and 6), pages (3, 4), 0 or `-errno` (24) |
//! | `grant_table_op` | 20 | `map_grant_ref` (0), `unmap_grant_ref` (1), `setup_table` (2), `transfer` (4), `copy` (5), `query_size` (6), `unmap_and_replace` (7), `set_version` (8), `get_status_frames` (9), `get_version` (10), `swap_grant_ref` (11), `cache_flush` (12), through hvmem-grant ([`crate::grant`]) | 0 with each element's `GNTST_*` status (`set_version`, `get_version`, `cache_flush`: 0 or `-errno`); `-EINVAL` for a count other than 1 where Xen wants one, `-EFAULT` for an unreadable array, `-ENOSYS` for `dump_table` (3) and unknown commands |
//! | `mmuext_op` | 26 | `MMUEXT_PIN_L1_TABLE`..`MMUEXT_PIN_L4_TABLE` (0-3), `MMUEXT_UNPIN_TABLE` (4), the local and all-CPU TLB flushes (6, 7, 10, 11: no TLB is simulated, so they succeed doing nothing) | 0 or `-errno`; [`Outcome::done`] counts the ops applied |
//! | `tmem_op` | 38 | `NEW_POOL` (1), `DESTROY_POOL` (2), `PUT_PAGE` (4), `GET_PAGE` (5), `FLUSH_PAGE` (6), `FLUSH_OBJECT` (7), through hvmem-tmem-pool's `do_tmem_op` over the host's idle memory ([`crate::tmem`]); the guest frame `cmfn` must be the caller's (and writable-typable for a get) | pool id, 1, 0 (get miss), `-EEMPTY`, `-ENODEV`, `-ENOMEM`, `-ENOSPC`, `-EFAULT`, `-EPERM`; `-EOPNOTSUPP` for `CONTROL`, `AUTH`, `RESTORE_NEW`; `-ENOSYS` for the sub-page commands |
//! | anything else | | | `-ENOSYS` |
//!
//! # Who may do what
//!
//! Domain 0 is the control domain (the toolstack): it has no memory of its
//! own here and may act on any domain. Every other caller is an
//! unprivileged PV guest: memory ops on another domain do nothing (Xen's
//! XSM "target" check, which makes the reservation ops return the start
//! extent, 0), `claim_pages` is refused with `-EPERM`, and `mmu_update` or
//! `mmuext_op` with a foreign domain is refused (`-ESRCH` for itself named
//! as foreign or an unknown domain, `-EPERM` otherwise).
//!
//! # Reservation ops, as Xen runs them
//!
//! `cmd` carries the start extent above bit 6 (Xen's continuation); a
//! `nr_extents` above `UINT_MAX >> 6`, a start at or past `nr_extents`, an
//! unknown domain or a refused permission make the op return the start
//! extent with nothing done. An extent order above the caller's limit (9
//! for a guest, the heap's 18 for the control domain), a populate-on-demand
//! or virtual-node request (a PV host has neither), or an extent list
//! shorter than `nr_extents` (Xen's `guest_handle_subrange_okay`) does
//! nothing either. Then extents are processed in order and the op stops at
//! the first that fails, returning how many succeeded:
//!
//! - `populate_physmap`: each extent list entry is a guest frame; the extent
//!   is allocated (books first, within `max_pages` and claims; then the
//!   heap), placed in the physmap, and its machine frame written back into
//!   the list. The sim's physmap is the domain's static maximum: an extent
//!   beyond it, or not aligned to its order, fails.
//! - `increase_reservation`: the same, off the physmap; the list (optional)
//!   receives the machine frames.
//! - `decrease_reservation`: each entry is a machine frame (PV guests name
//!   machine frames); every page of the extent is removed as Xen's
//!   `guest_remove_page` does: a reference is taken in the domain's name
//!   (`-ENXIO`, stop, if it is not the domain's), the page leaves the
//!   physmap, its pin is dropped, its allocation reference is dropped, and
//!   the temporary reference goes. A page still referenced (mapped by a
//!   page-table entry) stays the domain's, and counted in its `tot_pages`,
//!   until the last reference goes.
//!
//! Address-width limits (`XENMEMF_address_bits`) are honoured by failing an
//! extent the single heap zone placed too high; NUMA node hints are ignored
//! (one node).

use hvmem_frametable::{FrameError, FrameType, Owner};
use hvmem_pagetable::pv::{
    BatchError, EntryError, MMU_MACHPHYS_UPDATE, MMU_NORMAL_PT_UPDATE, MMU_PT_UPDATE_PRESERVE_AD,
    MmuUpdate, UpdateError, mmu_update,
};
use hvmem_types::{DomId, Gfn, Mfn, PageOrder};

use crate::abi::*;
use crate::host::Host;

/// The argument of a reservation op (`struct xen_memory_reservation`, with
/// the extent list as the guest buffer it points at).
#[derive(Debug)]
pub struct Reservation<'a> {
    /// The extent list (`extent_start`), `None` for a null handle.
    pub extents: Option<&'a mut [u64]>,
    /// `nr_extents`.
    pub nr_extents: u64,
    /// `extent_order`.
    pub extent_order: u32,
    /// `mem_flags` (`XENMEMF_*`).
    pub mem_flags: u32,
    /// `domid`.
    pub domid: DomId,
}

/// The argument of `memory_op`.
#[derive(Debug)]
pub enum MemoryArg<'a> {
    /// A reservation (ops 0, 1, 6, 24).
    Reservation(Reservation<'a>),
    /// A domain id (ops 3, 4).
    Domain(DomId),
    /// An argument pointer the hypervisor cannot read (`copy_from_guest`
    /// fails).
    Fault,
}

/// One `struct mmuext_op`: the command and its frame argument (`arg1.mfn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmuextOp {
    /// `cmd`.
    pub cmd: u32,
    /// `arg1.mfn`.
    pub mfn: u64,
}

/// A hypercall and its arguments.
#[derive(Debug)]
#[non_exhaustive]
pub enum Hypercall<'a> {
    /// `HYPERVISOR_mmu_update(reqs, count, pdone, foreigndom)`.
    MmuUpdate {
        /// The requests.
        requests: &'a [MmuUpdate],
        /// `foreigndom` (`DOMID_SELF` for the caller's own tables).
        foreigndom: DomId,
    },
    /// `HYPERVISOR_mmuext_op(ops, count, pdone, foreigndom)`.
    MmuextOp {
        /// The ops.
        ops: &'a [MmuextOp],
        /// `foreigndom`.
        foreigndom: DomId,
    },
    /// `HYPERVISOR_memory_op(cmd, arg)`.
    MemoryOp {
        /// `cmd`: the op in bits 0-5, the start extent above.
        cmd: u64,
        /// `arg`.
        arg: MemoryArg<'a>,
    },
    /// `HYPERVISOR_grant_table_op(cmd, uop, count)`.
    GrantTableOp {
        /// `cmd`.
        cmd: u32,
        /// `count`.
        count: u32,
        /// `uop`: the operation structures.
        arg: crate::grant::GrantArg<'a>,
    },
    /// `HYPERVISOR_tmem_op(op)`: the `struct tmem_op` the guest passed.
    TmemOp {
        /// The operation.
        op: hvmem_tmem_pool::abi::TmemOp,
    },
    /// Any other hypercall number.
    Other {
        /// The number.
        number: u32,
    },
}

impl Hypercall<'_> {
    /// Xen's number of the hypercall.
    #[must_use]
    pub fn number(&self) -> u32 {
        match self {
            Self::MmuUpdate { .. } => HYPERVISOR_MMU_UPDATE,
            Self::MmuextOp { .. } => HYPERVISOR_MMUEXT_OP,
            Self::MemoryOp { .. } => HYPERVISOR_MEMORY_OP,
            Self::GrantTableOp { .. } => HYPERVISOR_GRANT_TABLE_OP,
            Self::TmemOp { .. } => HYPERVISOR_TMEM_OP,
            Self::Other { number } => *number,
        }
    }
}

/// What a hypercall returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The return value: a count or 0 on success, `-errno` on failure.
    pub rc: i64,
    /// For batched ops (`mmu_update`, `mmuext_op`): the requests applied
    /// (`*pdone`). Otherwise 0.
    pub done: u64,
}

impl Outcome {
    const fn rc(rc: i64) -> Self {
        Self { rc, done: 0 }
    }
}

/// The control domain: the toolstack, privileged over every domain.
pub const CONTROL_DOMAIN: DomId = DomId::DOM0;

/// The largest extent order a domU may ask for (x86 `domu_max_order`).
const DOMU_MAX_ORDER: u32 = 9;

/// The heap's `MAX_ORDER`: the control domain's limit.
const CTLDOM_MAX_ORDER: u32 = 18;

/// `XENMEMF_populate_on_demand`.
const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;

/// `XENMEMF_vnode`.
const XENMEMF_VNODE: u32 = 1 << 18;

/// The errno `mmu_update` returns for a refused request (Xen's
/// `mod_l*_entry` and `get_page_from_l*e` results, reference a.8-a.9).
#[must_use]
pub fn update_errno(error: UpdateError) -> i64 {
    match error {
        UpdateError::UnsupportedCommand { .. } => -ENOSYS,
        UpdateError::Unreachable { .. } => -EFAULT,
        UpdateError::EntryChanged
        | UpdateError::TableBusy { .. }
        | UpdateError::Entry(EntryError::WritablePageTable { .. }) => -EBUSY,
        UpdateError::Entry(EntryError::Retry { .. }) => -EAGAIN,
        _ => -EINVAL,
    }
}

/// The errno `mmuext_op` returns for a refused pin or unpin: Xen reports
/// every refusal of `get_page_and_type_from_mfn` and of the pin flag as
/// `-EINVAL`.
#[must_use]
pub fn pin_errno(error: FrameError) -> i64 {
    match error {
        FrameError::ValidationInProgress { .. } | FrameError::Preempted { .. } => -EAGAIN,
        _ => -EINVAL,
    }
}

impl Host<'_> {
    /// Runs `call` for the domain `caller` and returns what Xen would.
    pub fn hypercall(&mut self, caller: DomId, call: Hypercall<'_>) -> Outcome {
        match call {
            Hypercall::MmuUpdate {
                requests,
                foreigndom,
            } => self.do_mmu_update(caller, requests, foreigndom),
            Hypercall::MmuextOp { ops, foreigndom } => self.do_mmuext_op(caller, ops, foreigndom),
            Hypercall::MemoryOp { cmd, arg } => Outcome::rc(self.do_memory_op(caller, cmd, arg)),
            Hypercall::TmemOp { op } => Outcome::rc(self.do_tmem(caller, &op)),
            Hypercall::GrantTableOp { cmd, count, arg } => {
                Outcome::rc(self.do_grant_table_op(caller, cmd, count, arg))
            }
            Hypercall::Other { .. } => Outcome::rc(-ENOSYS),
        }
    }

    fn is_privileged(caller: DomId) -> bool {
        caller == CONTROL_DOMAIN
    }

    /// `rcu_lock_domain_by_any_id`: `DOMID_SELF` is the caller.
    fn any_domain(&self, caller: DomId, domid: DomId) -> Option<DomId> {
        let id = if domid == DomId::SELF { caller } else { domid };
        self.domain(id).map(|d| d.id())
    }

    /// The domain whose frames a batched op works on (Xen `get_pg_owner`
    /// plus the XSM check): the caller itself, or an error.
    fn page_owner(&self, caller: DomId, foreigndom: DomId) -> Result<Owner, i64> {
        if self.domain(caller).is_none() {
            return Err(-ESRCH);
        }
        if foreigndom == DomId::SELF {
            return Ok(Owner::Domain(caller));
        }
        if foreigndom == caller || self.domain(foreigndom).is_none() {
            return Err(-ESRCH);
        }
        // Foreign page-table updates need privilege; the control domain
        // has no page tables here.
        Err(-EPERM)
    }

    fn do_mmu_update(
        &mut self,
        caller: DomId,
        requests: &[MmuUpdate],
        foreigndom: DomId,
    ) -> Outcome {
        let owner = match self.page_owner(caller, foreigndom) {
            Ok(owner) => owner,
            Err(rc) => return Outcome::rc(rc),
        };
        for (done, request) in requests.iter().enumerate() {
            let rc = self.mmu_update_one(caller, owner, *request);
            if rc != 0 {
                return Outcome {
                    rc,
                    done: done as u64,
                };
            }
        }
        Outcome {
            rc: 0,
            done: requests.len() as u64,
        }
    }

    fn mmu_update_one(&mut self, caller: DomId, owner: Owner, request: MmuUpdate) -> i64 {
        match request.command() {
            MMU_NORMAL_PT_UPDATE | MMU_PT_UPDATE_PRESERVE_AD => {
                let result = {
                    let validator = self.validator();
                    let oracle = validator.oracle(&self.table);
                    mmu_update(
                        &self.mem,
                        &oracle,
                        &self.pv,
                        owner,
                        core::slice::from_ref(&request),
                    )
                };
                self.reap();
                match result {
                    Ok(_) => 0,
                    Err(BatchError {
                        error: UpdateError::NotAPageTable { table },
                        ..
                    }) => {
                        // Not a page table in use: a plain write through a
                        // writable type reference, as Xen does for
                        // `PGT_writable_page` frames.
                        match self.plain_write(owner, table, request.index(), request.val) {
                            Ok(()) => 0,
                            Err(_) => -EINVAL,
                        }
                    }
                    Err(e) => update_errno(e.error),
                }
            }
            MMU_MACHPHYS_UPDATE => {
                let mfn = Mfn::new(request.ptr >> 12);
                if self.table.get_page(mfn, owner).is_err() {
                    return -EINVAL;
                }
                self.set_machphys(caller, mfn, request.val);
                let _ = self.table.put_page(mfn);
                self.reap();
                0
            }
            _ => -ENOSYS,
        }
    }

    fn do_mmuext_op(&mut self, caller: DomId, ops: &[MmuextOp], foreigndom: DomId) -> Outcome {
        let owner = match self.page_owner(caller, foreigndom) {
            Ok(owner) => owner,
            Err(rc) => return Outcome::rc(rc),
        };
        for (done, op) in ops.iter().enumerate() {
            let rc = self.mmuext_one(owner, *op);
            self.reap();
            if rc != 0 {
                return Outcome {
                    rc,
                    done: done as u64,
                };
            }
        }
        Outcome {
            rc: 0,
            done: ops.len() as u64,
        }
    }

    fn mmuext_one(&mut self, owner: Owner, op: MmuextOp) -> i64 {
        let mfn = Mfn::new(op.mfn);
        let level = match op.cmd {
            MMUEXT_PIN_L1_TABLE => FrameType::L1,
            MMUEXT_PIN_L2_TABLE => FrameType::L2,
            MMUEXT_PIN_L3_TABLE => FrameType::L3,
            MMUEXT_PIN_L4_TABLE => FrameType::L4,
            MMUEXT_UNPIN_TABLE => {
                let validator = self.validator();
                return match self.table.unpin(mfn, owner, &validator) {
                    Ok(_) => 0,
                    Err(e) => pin_errno(e),
                };
            }
            // MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL,
            // MMUEXT_TLB_FLUSH_ALL, MMUEXT_INVLPG_ALL.
            6 | 7 | 10 | 11 => return 0,
            _ => return -ENOSYS,
        };
        let validator = self.validator();
        match self.table.pin(mfn, owner, level, &validator) {
            Ok(()) => 0,
            Err(e) => pin_errno(e),
        }
    }

    fn do_memory_op(&mut self, caller: DomId, cmd: u64, arg: MemoryArg<'_>) -> i64 {
        let op = (cmd & MEMOP_CMD_MASK) as u32;
        let start = cmd >> MEMOP_EXTENT_SHIFT;
        let start_rc = i64::try_from(start).unwrap_or(i64::MAX);
        match op {
            XENMEM_INCREASE_RESERVATION | XENMEM_DECREASE_RESERVATION | XENMEM_POPULATE_PHYSMAP => {
                let MemoryArg::Reservation(r) = arg else {
                    return start_rc;
                };
                if r.nr_extents > u64::from(u32::MAX >> MEMOP_EXTENT_SHIFT) || start >= r.nr_extents
                {
                    return start_rc;
                }
                let Some(target) = self.any_domain(caller, r.domid) else {
                    return start_rc;
                };
                if r.mem_flags & XENMEMF_VNODE != 0 {
                    return start_rc;
                }
                if target != caller && !Self::is_privileged(caller) {
                    return start_rc;
                }
                let done = self.reservation(caller, target, op, start, r);
                i64::try_from(done).unwrap_or(i64::MAX)
            }
            XENMEM_CURRENT_RESERVATION | XENMEM_MAXIMUM_RESERVATION => {
                if start != 0 {
                    return -EINVAL;
                }
                let MemoryArg::Domain(domid) = arg else {
                    return -EFAULT;
                };
                let Some(target) = self.any_domain(caller, domid) else {
                    return -ESRCH;
                };
                if target != caller && !Self::is_privileged(caller) {
                    return -EPERM;
                }
                let books = self.books.domain(target);
                let pages = books.map_or(0, |d| {
                    if op == XENMEM_CURRENT_RESERVATION {
                        d.tot_pages
                    } else {
                        d.max_pages
                    }
                });
                i64::try_from(pages).unwrap_or(i64::MAX)
            }
            XENMEM_CLAIM_PAGES => {
                if start != 0 {
                    return -EINVAL;
                }
                let MemoryArg::Reservation(r) = arg else {
                    return -EFAULT;
                };
                if r.extents.is_some() || r.extent_order != 0 || r.mem_flags != 0 {
                    return -EINVAL;
                }
                // `rcu_lock_domain_by_id`: no DOMID_SELF here.
                if self.domain(r.domid).is_none() {
                    return -EINVAL;
                }
                if !Self::is_privileged(caller) {
                    return -EPERM;
                }
                match self.books.claim_pages(r.domid, r.nr_extents) {
                    Ok(()) => 0,
                    Err(e) => i64::from(e.errno()),
                }
            }
            _ => -ENOSYS,
        }
    }

    /// The extent loop of increase, decrease and populate. Returns the
    /// extents done (counting from 0, so a continuation's start included).
    fn reservation(
        &mut self,
        caller: DomId,
        target: DomId,
        op: u32,
        start: u64,
        r: Reservation<'_>,
    ) -> u64 {
        let Reservation {
            mut extents,
            nr_extents,
            extent_order,
            mem_flags,
            ..
        } = r;
        let list_ok = extents
            .as_deref()
            .is_some_and(|list| nr_extents <= list.len() as u64);
        let null_ok = op == XENMEM_INCREASE_RESERVATION && extents.is_none();
        if !list_ok && !null_ok {
            return start;
        }
        let max_order = if Self::is_privileged(caller) {
            CTLDOM_MAX_ORDER
        } else {
            DOMU_MAX_ORDER
        };
        let Some(order) = PageOrder::new(extent_order as u8).filter(|_| extent_order <= max_order)
        else {
            return start;
        };
        if op == XENMEM_POPULATE_PHYSMAP && mem_flags & XENMEMF_POPULATE_ON_DEMAND != 0 {
            // PoD on oneself is refused; a PV domain has no PoD at all.
            return start;
        }
        let address_bits = mem_flags & 0xff;
        let mut i = start;
        while i < nr_extents {
            let slot = usize::try_from(i)
                .ok()
                .and_then(|i| extents.as_deref_mut().and_then(|list| list.get_mut(i)));
            match op {
                XENMEM_POPULATE_PHYSMAP => {
                    let Some(slot) = slot else { break };
                    let Some(mfn) =
                        self.populate_extent(target, Some(Gfn::new(*slot)), order, address_bits)
                    else {
                        break;
                    };
                    *slot = mfn.get();
                }
                XENMEM_INCREASE_RESERVATION => {
                    let Some(mfn) = self.populate_extent(target, None, order, address_bits) else {
                        break;
                    };
                    if let Some(slot) = slot {
                        *slot = mfn.get();
                    }
                }
                _ => {
                    let Some(first) = slot.map(|s| *s) else { break };
                    let all = (0..order.frames()).all(|j| {
                        first
                            .checked_add(j)
                            .is_some_and(|m| self.guest_remove_page(target, Mfn::new(m)) == 0)
                    });
                    if !all {
                        break;
                    }
                }
            }
            i += 1;
        }
        i
    }

    /// Xen's `guest_remove_page` for a PV domain: 0, or `-EINVAL` for a
    /// frame that does not exist, `-ENXIO` for one that is not the
    /// domain's.
    fn guest_remove_page(&mut self, dom: DomId, mfn: Mfn) -> i64 {
        if !self.table.covers(mfn) {
            return -EINVAL;
        }
        let owner = Owner::Domain(dom);
        if self.table.get_page(mfn, owner).is_err() {
            return -ENXIO;
        }
        self.remove_from_physmap(mfn);
        if self.table.state(mfn).is_ok_and(|s| s.pinned) {
            let validator = self.validator();
            let _ = self.table.unpin(mfn, owner, &validator);
        }
        // Only the first removal drops the allocation reference.
        let _ = self.table.release(mfn, owner);
        let _ = self.table.put_page(mfn);
        self.reap();
        0
    }
}

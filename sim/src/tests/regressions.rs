//! Regressions for the Xen advisories whose pattern applies to the crates as
//! composed (named after the advisory), and for the other ways a PV guest
//! has attacked Xen's memory management.

use hvmem_frametable::{FrameType, Owner};
use hvmem_pagetable::pv::MmuUpdate;
use hvmem_types::{DomId, Gfn, Mfn};

use hvmem_grant::{
    GntSt, GnttabCacheFlush, GnttabGetStatusFrames, GnttabGetVersion, GnttabMapGrantRef,
    GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GnttabSwapGrantRef, GnttabTransfer,
    GnttabUnmapAndReplace, GnttabUnmapGrantRef, GrantRef, TransferEnd,
};

use super::*;
use crate::grant::GrantArg;
use crate::hypercall::Hypercall;

const PSE: u64 = 0x80;

/// XSA-182: the fast path of a PV page-table update let a flag change skip
/// the checks. Adding RW to a read-only mapping of a page table must go
/// through the writable type check, and fail.
#[test]
fn xsa_182_flag_change_cannot_make_a_page_table_writable() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let data = mfn_of(&host, D1, 10);
    let t = process(&mut host, D1, 0, data);
    // A read-only mapping of its own L1 table is allowed...
    assert_eq!(update(&mut host, D1, t[3], 5, pte(t[3], P)).rc, 0);
    // ...turning it writable is not.
    assert_eq!(update(&mut host, D1, t[3], 5, pte(t[3], P | RW)).rc, -EBUSY);
    let s = host.frame_table().state(t[3]).unwrap();
    assert_eq!(s.frame_type, FrameType::L1);
    host.audit().unwrap();
}

/// XSA-148: PV guests could create 2 MiB mappings (PSE in an L2 entry)
/// covering frames no per-frame check had seen.
#[test]
fn xsa_148_pv_guests_get_no_superpage_mappings() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let data = mfn_of(&host, D1, 10);
    let t = process(&mut host, D1, 0, data);
    let big = mfn_of(&host, D1, 11);
    assert_eq!(
        update(&mut host, D1, t[2], 1, pte(big, P | RW | PSE)).rc,
        -EINVAL
    );
    assert_eq!(
        update(&mut host, D1, t[1], 1, pte(big, P | RW | PSE)).rc,
        -EINVAL
    );
    host.audit().unwrap();
}

/// XSA-240: linear (recursive) page-table entries let de-typing recurse
/// without bound. The composed host refuses them.
#[test]
fn xsa_240_linear_page_table_entries_are_refused() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let data = mfn_of(&host, D1, 10);
    let t = process(&mut host, D1, 0, data);
    assert_eq!(update(&mut host, D1, t[0], 1, pte(t[0], P)).rc, -EINVAL);
    let other = mfn_of(&host, D1, 30);
    let u = process(&mut host, D1, 20, other);
    // An L2 entry pointing at another (validated) L2.
    assert_eq!(update(&mut host, D1, t[2], 1, pte(u[2], P)).rc, -EINVAL);
    host.audit().unwrap();
}

#[test]
fn another_domains_frame_cannot_be_mapped() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let data = mfn_of(&host, D1, 10);
    let t = process(&mut host, D1, 0, data);
    let victim = mfn_of(&host, D2, 3);
    host.guest_store(D2, victim, 0xfeed_0000).unwrap();
    assert_eq!(
        update(&mut host, D1, t[3], 1, pte(victim, P | RW)).rc,
        -EINVAL
    );
    assert_eq!(update(&mut host, D1, t[3], 1, pte(victim, P)).rc, -EINVAL);
    // Nor can its tables be written, or its frames pinned.
    assert_eq!(
        update(&mut host, D1, victim, 0, pte(data, P | RW)).rc,
        -EINVAL
    );
    assert_eq!(
        mmuext(&mut host, D1, MMUEXT_PIN_L1_TABLE, victim).rc,
        -EINVAL
    );
    assert_eq!(host.memory().fingerprint(victim), Some(0xfeed_0000));
    host.audit().unwrap();
}

#[test]
fn hypervisor_frames_are_out_of_every_guests_reach() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let xen = (0..host.total_frames())
        .map(|i| Mfn::new(host.first_mfn().get() + i))
        .find(|&m| host.recorded_owner(m) == Some(Owner::Host))
        .unwrap();
    assert_eq!(
        host.frame_table().state(xen).unwrap().owner,
        Some(Owner::Host)
    );
    let data = mfn_of(&host, D1, 10);
    let t = process(&mut host, D1, 0, data);
    assert_eq!(update(&mut host, D1, t[3], 1, pte(xen, P)).rc, -EINVAL);
    let mut list = [xen.get()];
    assert_eq!(
        memory_op(
            &mut host,
            D1,
            XENMEM_DECREASE_RESERVATION,
            DomId::SELF,
            &mut list,
            0
        ),
        0
    );
    assert_eq!(mmuext(&mut host, D1, MMUEXT_PIN_L1_TABLE, xen).rc, -EINVAL);
    host.audit().unwrap();
}

#[test]
fn a_page_mapped_writable_cannot_be_pinned_as_a_table() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let data = mfn_of(&host, D1, 10);
    let _ = process(&mut host, D1, 0, data);
    assert_eq!(mmuext(&mut host, D1, MMUEXT_PIN_L1_TABLE, data).rc, -EINVAL);
    assert_eq!(
        host.frame_table().state(data).unwrap().frame_type,
        FrameType::Writable
    );
    host.audit().unwrap();
}

/// A guest that balloons out a frame it still maps: Xen removes it from the
/// physmap at once, but the frame stays the guest's (and in its
/// `tot_pages`) until the mapping goes, so it can never reach another
/// domain while mapped.
#[test]
fn decrease_reservation_of_a_mapped_frame_frees_it_only_when_unmapped() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let data = mfn_of(&host, D1, 10);
    let t = process(&mut host, D1, 0, data);
    let mut list = [data.get()];
    assert_eq!(
        memory_op(
            &mut host,
            D1,
            XENMEM_DECREASE_RESERVATION,
            DomId::SELF,
            &mut list,
            0
        ),
        1
    );
    assert_eq!(host.domain(D1).unwrap().mfn(Gfn::new(10)), None);
    assert_eq!(
        host.frame_table().state(data).unwrap().owner,
        Some(Owner::Domain(D1))
    );
    assert_eq!(host.books().domain(D1).unwrap().tot_pages, 512);
    host.audit().unwrap();
    assert_eq!(update(&mut host, D1, t[3], 0, 0).rc, 0);
    assert_eq!(host.frame_table().state(data).unwrap().owner, None);
    assert_eq!(host.books().domain(D1).unwrap().tot_pages, 511);
    host.audit().unwrap();
}

/// `guest_remove_page` drops the pin of a pinned table before its
/// allocation reference, so ballooning out a pinned root de-validates the
/// whole tree and frees the root.
#[test]
fn decrease_reservation_of_a_pinned_root_unpins_and_frees_it() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let data = mfn_of(&host, D1, 10);
    let t = process(&mut host, D1, 0, data);
    let mut list = [t[0].get()];
    assert_eq!(
        memory_op(
            &mut host,
            D1,
            XENMEM_DECREASE_RESERVATION,
            DomId::SELF,
            &mut list,
            0
        ),
        1
    );
    assert_eq!(host.frame_table().state(t[0]).unwrap().owner, None);
    for m in [t[1], t[2], t[3]] {
        assert_eq!(host.frame_table().state(m).unwrap().type_refs, 0);
    }
    assert_eq!(host.frame_table().state(data).unwrap().refs, 1);
    host.audit().unwrap();
}

#[test]
fn foreign_domain_updates_are_refused() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let req = [MmuUpdate { ptr: 0, val: 0 }];
    let mut call = |foreigndom| {
        host.hypercall(
            D1,
            Hypercall::MmuUpdate {
                requests: &req,
                foreigndom,
            },
        )
        .rc
    };
    assert_eq!(call(D2), -EPERM);
    assert_eq!(call(D1), -ESRCH);
    assert_eq!(call(DomId::new(77)), -ESRCH);
}

#[test]
fn reservation_op_edge_cases_do_nothing() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let mut populate = |extents: Option<&mut [u64]>, nr, order, flags, start: u64| {
        host.hypercall(
            D1,
            Hypercall::MemoryOp {
                cmd: (start << 6) | u64::from(XENMEM_POPULATE_PHYSMAP),
                arg: MemoryArg::Reservation(Reservation {
                    extents,
                    nr_extents: nr,
                    extent_order: order,
                    mem_flags: flags,
                    domid: DomId::SELF,
                }),
            },
        )
        .rc
    };
    let mut list = [600u64, 601];
    // The list is shorter than nr_extents: nothing.
    assert_eq!(populate(Some(&mut list), 3, 0, 0, 0), 0);
    // Too many extents to encode a continuation: the start extent.
    assert_eq!(populate(Some(&mut list), 1 << 40, 0, 0, 0), 0);
    // Start at or past the end: the start extent.
    assert_eq!(populate(Some(&mut list), 2, 0, 0, 2), 2);
    // Order above a domU's limit; populate-on-demand; a null list.
    assert_eq!(populate(Some(&mut list), 2, 10, 0, 0), 0);
    assert_eq!(populate(Some(&mut list), 2, 0, 1 << 16, 0), 0);
    assert_eq!(populate(None, 2, 0, 0, 0), 0);
    // A continuation resumes at its start extent.
    assert_eq!(populate(Some(&mut list), 2, 0, 0, 1), 2);
    assert_eq!(host.books().domain(D1).unwrap().tot_pages, 513);
    host.audit().unwrap();
}

fn grant(host: &mut Host<'_>, caller: DomId, cmd: u32, count: u32, arg: GrantArg<'_>) -> i64 {
    host.hypercall(caller, Hypercall::GrantTableOp { cmd, count, arg })
        .rc
}

fn transfer_op(mfn: Mfn, to: DomId, gref: u32) -> GnttabTransfer {
    GnttabTransfer {
        mfn: mfn.get(),
        domid: to.get(),
        gref,
        ..Default::default()
    }
}

fn transfer(host: &mut Host<'_>, from: DomId, mfn: Mfn, to: DomId, gref: u32) -> i16 {
    let mut op = [transfer_op(mfn, to, gref)];
    assert_eq!(grant(host, from, 4, 1, GrantArg::Transfer(&mut op)), 0);
    op[0].status
}

/// `GNTTABOP_transfer` (PV page flipping): the frame leaves the sender's
/// physmap and `tot_pages` and arrives, with its contents, at the guest
/// frame the receiver's accept-transfer entry names, with the receiver's
/// `tot_pages` one higher. A frame the sender does not own, or still uses,
/// stays where it is; one that cannot be delivered (no such receiver, no
/// offer, a receiver at its `max_pages`) is lost to the sender and freed.
#[test]
fn grant_transfer_moves_the_frame_with_both_domains_books() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let tot = |host: &Host<'_>, d| host.books().domain(d).unwrap().tot_pages;
    // D2 gives up guest frame 40 and offers the slot to D1.
    let mut list = [mfn_of(&host, D2, 40).get()];
    assert_eq!(
        memory_op(
            &mut host,
            D2,
            XENMEM_DECREASE_RESERVATION,
            DomId::SELF,
            &mut list,
            0
        ),
        1
    );
    let offer = |host: &Host<'_>, gref: u32, gfn: u64| {
        host.guest_grant_table(D2)
            .unwrap()
            .grant_transfer(GrantRef(gref), D1, Gfn::new(gfn))
            .unwrap();
    };
    offer(&host, 8, 40);
    let page = mfn_of(&host, D1, 22);
    host.guest_store(D1, page, 0xfeed_0200).unwrap();
    let before = (tot(&host, D1), tot(&host, D2));
    assert_eq!(transfer(&mut host, D1, page, D2, 8), GntSt::Okay.raw());
    assert_eq!(host.recorded_owner(page), Some(Owner::Domain(D2)));
    assert_eq!(host.domain(D1).unwrap().mfn(Gfn::new(22)), None);
    assert_eq!(host.domain(D2).unwrap().mfn(Gfn::new(40)), Some(page));
    assert_eq!(
        (tot(&host, D1), tot(&host, D2)),
        (before.0 - 1, before.1 + 1)
    );
    assert_eq!(host.memory().fingerprint(page), Some(0xfeed_0200));
    assert_eq!(
        host.guest_grant_table(D2)
            .unwrap()
            .end_transfer(GrantRef(8)),
        Ok(TransferEnd::Received(page.get()))
    );
    host.audit().unwrap();

    // Not the sender's frame, or a frame its page tables use: it stays, and
    // both get bad_page (Xen's steal_page fails with -EINVAL for either),
    // the one status after which the ABI says the sender keeps the frame.
    offer(&host, 9, 41);
    let theirs = mfn_of(&host, D2, 41);
    assert_eq!(transfer(&mut host, D1, theirs, D2, 9), GntSt::BadPage.raw());
    let data = mfn_of(&host, D1, 10);
    process(&mut host, D1, 0, data);
    assert_eq!(transfer(&mut host, D1, data, D2, 9), GntSt::BadPage.raw());
    assert_eq!(host.recorded_owner(data), Some(Owner::Domain(D1)));
    assert_eq!(host.recorded_owner(theirs), Some(Owner::Domain(D2)));
    host.audit().unwrap();

    // Undeliverable (no offer, no such domain, then a receiver at its
    // max_pages): the sender loses the frame, the heap gets it back.
    for (gfn, to, gref, st) in [
        (23, D2, 10, GntSt::GeneralError),
        (24, DomId::new(7), 9, GntSt::BadDomain),
        (25, D2, 9, GntSt::GeneralError),
    ] {
        if gfn == 25 {
            host.set_max_pages(D2, tot(&host, D2));
        }
        let lost = mfn_of(&host, D1, gfn);
        let (free, held) = (host.free_frames(), tot(&host, D1));
        assert_eq!(transfer(&mut host, D1, lost, to, gref), st.raw());
        assert_eq!(host.recorded_owner(lost), None);
        assert_eq!((host.free_frames(), tot(&host, D1)), (free + 1, held - 1));
        host.audit().unwrap();
    }
    // The offer the full receiver could not take is still there to cancel.
    assert_eq!(
        host.guest_grant_table(D2)
            .unwrap()
            .end_transfer(GrantRef(9)),
        Ok(TransferEnd::Cancelled)
    );
}

fn map(host: &mut Host<'_>, mapper: DomId, granter: DomId, gref: u32, flags: u32) -> (i16, u32) {
    let mut op = [GnttabMapGrantRef {
        host_addr: 0x1000,
        flags,
        gref,
        dom: granter.get(),
        ..Default::default()
    }];
    assert_eq!(grant(host, mapper, 0, 1, GrantArg::Map(&mut op)), 0);
    (op[0].status, op[0].handle)
}

fn unmap(host: &mut Host<'_>, mapper: DomId, handle: u32) -> i16 {
    let mut op = [GnttabUnmapGrantRef {
        host_addr: 0x1000,
        handle,
        ..Default::default()
    }];
    assert_eq!(grant(host, mapper, 1, 1, GrantArg::Unmap(&mut op)), 0);
    op[0].status
}

const HOST_MAP: u32 = 2;
const READONLY: u32 = 4;

/// A frame granted writable and mapped by another domain holds a writable
/// type reference in its owner's name: it cannot be pinned as a page table
/// while mapped; a page table in use cannot be mapped writable through a
/// grant; the references are counted by the audit and go with the unmap.
#[test]
fn a_writable_grant_mapping_and_a_page_table_type_exclude_each_other() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let page = mfn_of(&host, D1, 20);
    let table = host.guest_grant_table(D1).unwrap();
    table
        .grant_access(GrantRef(8), D2, Gfn::new(page.get()), false)
        .unwrap();
    let (st, handle) = map(&mut host, D2, D1, 8, HOST_MAP);
    assert_eq!(st, GntSt::Okay.raw());
    let s = host.frame_table().state(page).unwrap();
    assert_eq!(
        (s.refs, s.type_refs, s.frame_type),
        (2, 1, FrameType::Writable)
    );
    host.audit().unwrap();
    assert_eq!(mmuext(&mut host, D1, MMUEXT_PIN_L1_TABLE, page).rc, -EINVAL);
    // The granter cannot end access while it is mapped.
    assert!(
        host.guest_grant_table(D1)
            .unwrap()
            .end_access(GrantRef(8))
            .is_err()
    );
    assert_eq!(unmap(&mut host, D2, handle), GntSt::Okay.raw());
    host.guest_grant_table(D1)
        .unwrap()
        .end_access(GrantRef(8))
        .unwrap();
    assert_eq!(host.frame_table().state(page).unwrap().refs, 1);
    // Now a page table: pinned L1, then granted writable: the map fails.
    assert_eq!(mmuext(&mut host, D1, MMUEXT_PIN_L1_TABLE, page).rc, 0);
    host.guest_grant_table(D1)
        .unwrap()
        .grant_access(GrantRef(9), D2, Gfn::new(page.get()), false)
        .unwrap();
    let (st, _) = map(&mut host, D2, D1, 9, HOST_MAP);
    assert_ne!(st, GntSt::Okay.raw());
    // Read-only is fine for a page table.
    host.guest_grant_table(D1)
        .unwrap()
        .end_access(GrantRef(9))
        .unwrap();
    host.guest_grant_table(D1)
        .unwrap()
        .grant_access(GrantRef(9), D2, Gfn::new(page.get()), true)
        .unwrap();
    let (st, _) = map(&mut host, D2, D1, 9, HOST_MAP | READONLY);
    assert_eq!(st, GntSt::Okay.raw());
    host.audit().unwrap();
}

/// Two guests and a third domain; D1 grants its frame 20 writable to D2 as
/// ref 8. Returns the host, the third domain and the frame.
fn d1_grants_a_page_to_d2(storage: &mut HostStorage) -> (Host<'_>, DomId, Mfn) {
    let mut host = two_guests(storage);
    let d3 = DomId::new(3);
    host.create_domain(d3, 512, 64).unwrap();
    let page = mfn_of(&host, D1, 20);
    host.guest_grant_table(D1)
        .unwrap()
        .grant_access(GrantRef(8), D2, Gfn::new(page.get()), true)
        .unwrap();
    (host, d3, page)
}

/// Grants are checked against the grantee and the granter's frames: a ref
/// granted to another domain, a ref never granted, a grant of a frame the
/// granter does not own, an unknown domain; and the table ops' returns.
#[test]
fn grant_table_op_returns_what_xen_returns() {
    let mut storage = storage();
    let (mut host, d3, _) = d1_grants_a_page_to_d2(&mut storage);
    // Granted to D2, mapped by D3 (Xen's `_set_status`: bad domid is
    // GNTST_general_error).
    assert_eq!(
        map(&mut host, d3, D1, 8, HOST_MAP | READONLY).0,
        GntSt::GeneralError.raw()
    );
    // Never granted.
    assert_ne!(map(&mut host, D2, D1, 10, HOST_MAP).0, GntSt::Okay.raw());
    // A frame of D2 granted by D1.
    let other = mfn_of(&host, D2, 20);
    let t = host.guest_grant_table(D1).unwrap();
    t.grant_access(GrantRef(11), D2, Gfn::new(other.get()), true)
        .unwrap();
    assert_eq!(
        map(&mut host, D2, D1, 11, HOST_MAP | READONLY).0,
        GntSt::BadPage.raw()
    );
    assert_eq!(
        map(&mut host, D2, DomId::new(77), 8, HOST_MAP).0,
        GntSt::BadDomain.raw()
    );
    // Unmap of a handle never handed out.
    assert_eq!(unmap(&mut host, D2, 5), GntSt::BadHandle.raw());
    // setup_table: one at a time; another domain's table is refused.
    let mut op = GnttabSetupTable {
        dom: DomId::SELF.get(),
        nr_frames: 2,
        ..Default::default()
    };
    let mut list = [0u64; 2];
    assert_eq!(
        grant(
            &mut host,
            D1,
            2,
            2,
            GrantArg::SetupTable(&mut op, &mut list)
        ),
        -EINVAL
    );
    assert_eq!(
        grant(
            &mut host,
            D1,
            2,
            1,
            GrantArg::SetupTable(&mut op, &mut list)
        ),
        0
    );
    assert_eq!(op.status, GntSt::Okay.raw());
    assert_eq!(list[1], list[0] + 1);
    assert!(list[0] >= host.first_mfn().get() + host.total_frames());
    op.dom = D2.get();
    assert_eq!(
        grant(
            &mut host,
            D1,
            2,
            1,
            GrantArg::SetupTable(&mut op, &mut list)
        ),
        0
    );
    assert_eq!(op.status, GntSt::PermissionDenied.raw());
    op.dom = DomId::SELF.get();
    op.nr_frames = 5; // beyond the limit of 4
    let mut long = [0u64; 5];
    assert_eq!(
        grant(
            &mut host,
            D1,
            2,
            1,
            GrantArg::SetupTable(&mut op, &mut long)
        ),
        0
    );
    assert_eq!(op.status, GntSt::GeneralError.raw());
    let mut q = GnttabQuerySize {
        dom: DomId::SELF.get(),
        ..Default::default()
    };
    assert_eq!(grant(&mut host, D1, 6, 1, GrantArg::QuerySize(&mut q)), 0);
    assert_eq!((q.status, q.nr_frames, q.max_nr_frames), (0, 2, 4));
    // set_version: 3 is -EINVAL; to 2 and back while nothing is pinned.
    let mut v = GnttabSetVersion { version: 3 };
    assert_eq!(
        grant(&mut host, D1, 8, 1, GrantArg::SetVersion(&mut v)),
        -EINVAL
    );
    assert_eq!(v.version, 1);
    v.version = 2;
    assert_eq!(grant(&mut host, D1, 8, 1, GrantArg::SetVersion(&mut v)), 0);
    // A batch shorter than its count: the hypervisor faults reading it.
    let mut ops = [GnttabMapGrantRef::default()];
    assert_eq!(grant(&mut host, D1, 0, 2, GrantArg::Map(&mut ops)), -EFAULT);
    // A caller that does not exist.
    assert_eq!(
        grant(&mut host, DomId::new(99), 6, 1, GrantArg::QuerySize(&mut q)),
        -ESRCH
    );
    host.audit().unwrap();
}

/// The grant sub-operations beyond map, unmap, copy and the table calls
/// return what Xen (x86, PV guests) returns, and the
/// invariants keep holding through them.
#[test]
fn grant_swap_version_status_frames_replace_flush_and_transfer_return_what_xen_returns() {
    let mut storage = storage();
    let (mut host, d3, page) = d1_grants_a_page_to_d2(&mut storage);
    let (st, handle) = map(&mut host, D2, D1, 8, HOST_MAP | READONLY);
    assert_eq!(st, GntSt::Okay.raw());

    // swap_grant_ref: a pinned entry is GNTST_eagain; free ones swap.
    let mut swaps = [
        GnttabSwapGrantRef {
            ref_a: 8,
            ref_b: 9,
            ..Default::default()
        },
        GnttabSwapGrantRef {
            ref_a: 9,
            ref_b: 10,
            ..Default::default()
        },
        GnttabSwapGrantRef {
            ref_a: 9,
            ref_b: 1 << 20,
            ..Default::default()
        },
    ];
    assert_eq!(
        grant(&mut host, D1, 11, 3, GrantArg::SwapGrantRef(&mut swaps)),
        0
    );
    assert_eq!(
        swaps.map(|s| s.status),
        [
            GntSt::Eagain.raw(),
            GntSt::Okay.raw(),
            GntSt::BadGntref.raw()
        ]
    );
    assert_eq!(
        grant(&mut host, D1, 11, 4, GrantArg::SwapGrantRef(&mut swaps)),
        -EFAULT
    );

    // get_version: own (DOMID_SELF), another's (-EPERM), none (-ESRCH).
    let mut v = GnttabGetVersion {
        dom: DomId::SELF.get(),
        ..Default::default()
    };
    assert_eq!(grant(&mut host, D1, 10, 1, GrantArg::GetVersion(&mut v)), 0);
    assert_eq!(v.version, 1);
    v.dom = D2.get();
    assert_eq!(
        grant(&mut host, D1, 10, 1, GrantArg::GetVersion(&mut v)),
        -EPERM
    );
    v.dom = 77;
    assert_eq!(
        grant(&mut host, D1, 10, 1, GrantArg::GetVersion(&mut v)),
        -ESRCH
    );

    // get_status_frames: count must be 1; v1 has none; v2 has one.
    let mut sf = GnttabGetStatusFrames {
        nr_frames: 1,
        dom: DomId::SELF.get(),
        ..Default::default()
    };
    let mut list = [0u64; 2];
    assert_eq!(
        grant(
            &mut host,
            d3,
            9,
            2,
            GrantArg::GetStatusFrames(&mut sf, &mut list)
        ),
        -EINVAL
    );
    assert_eq!(
        grant(
            &mut host,
            d3,
            9,
            1,
            GrantArg::GetStatusFrames(&mut sf, &mut list)
        ),
        0
    );
    assert_eq!(sf.status, GntSt::GeneralError.raw());
    let mut sv = GnttabSetVersion { version: 2 };
    assert_eq!(grant(&mut host, d3, 8, 1, GrantArg::SetVersion(&mut sv)), 0);
    assert_eq!(
        grant(
            &mut host,
            d3,
            9,
            1,
            GrantArg::GetStatusFrames(&mut sf, &mut list)
        ),
        0
    );
    assert_eq!(sf.status, GntSt::Okay.raw());
    assert!(list[0] >= host.first_mfn().get() + host.total_frames());
    sf.dom = D1.get();
    assert_eq!(
        grant(
            &mut host,
            d3,
            9,
            1,
            GrantArg::GetStatusFrames(&mut sf, &mut list)
        ),
        0
    );
    assert_eq!(sf.status, GntSt::PermissionDenied.raw());

    // cache_flush (x86): a clean of a frame D2 maps is done; invalidate
    // alone is -EOPNOTSUPP; a frame it neither owns nor maps is -EINVAL;
    // a range beyond the page is -EINVAL.
    let flush = |mfn: Mfn, op: u32| GnttabCacheFlush {
        a: mfn.get() << 12,
        offset: 0,
        length: 64,
        op,
    };
    let mut f = [flush(page, 1), flush(mfn_of(&host, D2, 3), 1 | 2)];
    assert_eq!(grant(&mut host, D2, 12, 2, GrantArg::CacheFlush(&mut f)), 0);
    let mut f = [flush(page, 2)];
    assert_eq!(
        grant(&mut host, D2, 12, 1, GrantArg::CacheFlush(&mut f)),
        -95
    );
    let mut f = [flush(mfn_of(&host, D1, 21), 1)];
    assert_eq!(
        grant(&mut host, D2, 12, 1, GrantArg::CacheFlush(&mut f)),
        -EINVAL
    );
    let mut f = [GnttabCacheFlush {
        offset: 4090,
        ..flush(page, 1)
    }];
    assert_eq!(
        grant(&mut host, D2, 12, 1, GrantArg::CacheFlush(&mut f)),
        -EINVAL
    );

    // transfer: a count beyond the array cannot be read.
    let mut tr = [transfer_op(mfn_of(&host, D1, 22), D2, 8)];
    assert_eq!(
        grant(&mut host, D1, 4, 2, GrantArg::Transfer(&mut tr)),
        -EFAULT
    );

    // unmap_and_replace: a wrong address keeps the mapping; the right one
    // removes it and drops its references once.
    let mut r = [GnttabUnmapAndReplace {
        host_addr: 0x2000,
        new_addr: 0x3000,
        handle,
        ..Default::default()
    }];
    assert_eq!(
        grant(&mut host, D2, 7, 1, GrantArg::UnmapAndReplace(&mut r)),
        0
    );
    assert_eq!(r[0].status, GntSt::GeneralError.raw());
    host.audit().unwrap();
    r[0].host_addr = 0x1000;
    assert_eq!(
        grant(&mut host, D2, 7, 1, GrantArg::UnmapAndReplace(&mut r)),
        0
    );
    assert_eq!(r[0].status, GntSt::Okay.raw());
    assert_eq!(unmap(&mut host, D2, handle), GntSt::BadHandle.raw());
    assert!(host.grant_mappings().is_empty());
    let t = host.guest_grant_table(D1).unwrap();
    t.end_access(GrantRef(8)).unwrap();
    host.audit().unwrap();
}

/// A dying mapper's mappings are released with it (every reference it held
/// dropped once); a granter whose grants another domain still maps cannot
/// be destroyed until the mapper unmaps.
#[test]
fn domain_teardown_drops_every_grant_reference() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let page = mfn_of(&host, D1, 20);
    let t = host.guest_grant_table(D1).unwrap();
    t.grant_access(GrantRef(8), D2, Gfn::new(page.get()), false)
        .unwrap();
    let (st, handle) = map(&mut host, D2, D1, 8, HOST_MAP);
    assert_eq!(st, GntSt::Okay.raw());
    // The granter dies first: its mapped frame stays until the unmap.
    assert!(host.destroy_domain(D1).is_err());
    host.audit().unwrap();
    assert_eq!(unmap(&mut host, D2, handle), GntSt::Okay.raw());
    host.destroy_domain(D1).unwrap();
    assert!(host.recorded_owner(page).is_none());
    // The mapper dies holding a mapping: released with it.
    host.create_domain(D1, 1024, 512).unwrap();
    let page = mfn_of(&host, D1, 20);
    host.guest_grant_table(D1)
        .unwrap()
        .grant_access(GrantRef(8), D2, Gfn::new(page.get()), false)
        .unwrap();
    assert_eq!(map(&mut host, D2, D1, 8, HOST_MAP).0, GntSt::Okay.raw());
    host.destroy_domain(D2).unwrap();
    let s = host.frame_table().state(page).unwrap();
    assert_eq!((s.refs, s.type_refs), (1, 0));
    host.guest_grant_table(D1)
        .unwrap()
        .end_access(GrantRef(8))
        .unwrap();
    host.audit().unwrap();
    assert_eq!(host.grant_mappings(), Vec::new());
}

/// XSA-15: tmem's hypercalls lacked checks, so a guest could reach memory
/// that was not its own. Composed here: a guest's tmem_op can name only its
/// own pools (another client's pool ids are its own slots), copy only from
/// and to its own frames (a victim's frame or the hypervisor's is
/// `-EFAULT`), and the control commands are not guest hypercalls.
#[test]
fn xsa_15_tmem_ops_reach_only_the_callers_pools_and_frames() {
    use hvmem_tmem_pool::abi::{self, TmemOp};
    use hvmem_tmem_pool::{Oid, Uuid};
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let tmem = |host: &mut Host<'_>, d, op| host.hypercall(d, Hypercall::TmemOp { op }).rc;
    let victim = mfn_of(&host, D1, 30);
    host.guest_store(D1, victim, 0x5ec7e7).unwrap();
    let new = TmemOp::new_pool(Uuid::NONE, abi::PRIVATE_PERSISTENT);
    assert_eq!(tmem(&mut host, D1, new), 0);
    let put = TmemOp::page(abi::TMEM_PUT_PAGE, 0, Oid([1, 0, 0]), 0, victim.get());
    assert_eq!(tmem(&mut host, D1, put), 1);
    // D2 names pool 0: it has none.
    let own = mfn_of(&host, D2, 30);
    let get = |cmfn: Mfn| TmemOp::page(abi::TMEM_GET_PAGE, 0, Oid([1, 0, 0]), 0, cmfn.get());
    assert_eq!(tmem(&mut host, D2, get(own)), -i64::from(abi::ENODEV));
    // With a pool 0 of its own, the same key is its own (empty) pool.
    assert_eq!(tmem(&mut host, D2, new), 0);
    assert_eq!(tmem(&mut host, D2, get(own)), -i64::from(abi::EEMPTY));
    // Reading the victim's frame into its pool, or the hypervisor's.
    let xen = (0..host.total_frames())
        .map(|i| Mfn::new(host.first_mfn().get() + i))
        .find(|&m| host.recorded_owner(m) == Some(Owner::Host))
        .unwrap();
    for frame in [victim, xen, Mfn::new(u64::MAX >> 12)] {
        let steal = TmemOp::page(abi::TMEM_PUT_PAGE, 0, Oid([2, 0, 0]), 0, frame.get());
        assert_eq!(tmem(&mut host, D2, steal), -i64::from(abi::EFAULT));
    }
    // Writing its page into the victim's frame.
    let put2 = TmemOp::page(abi::TMEM_PUT_PAGE, 0, Oid([3, 0, 0]), 0, own.get());
    assert_eq!(tmem(&mut host, D2, put2), 1);
    let into = TmemOp::page(abi::TMEM_GET_PAGE, 0, Oid([3, 0, 0]), 0, victim.get());
    assert_eq!(tmem(&mut host, D2, into), -i64::from(abi::EFAULT));
    assert_eq!(host.memory().fingerprint(victim), Some(0x5ec7e7));
    // The control commands are tools-only.
    let control = TmemOp {
        cmd: abi::TMEM_CONTROL,
        ..TmemOp::default()
    };
    assert_eq!(tmem(&mut host, D2, control), -i64::from(abi::EOPNOTSUPP));
    // The victim's page is intact.
    assert_eq!(tmem(&mut host, D1, get(victim)), 1);
    assert_eq!(host.memory().fingerprint(victim), Some(0x5ec7e7));
    host.audit().unwrap();
}

//! Regressions for the Xen advisories whose pattern applies to the crates as
//! composed (named after the advisory), and for the other ways a PV guest
//! has attacked Xen's memory management.

use hvmem_frametable::{FrameType, Owner};
use hvmem_pagetable::pv::MmuUpdate;
use hvmem_types::{DomId, Gfn, Mfn};

use super::*;
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

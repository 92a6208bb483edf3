//! The host and its hypercall layer, driven directly; scenarios; the
//! advisories' regressions.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use hvmem_pagetable::pv::MmuUpdate;
use hvmem_types::{DomId, Gfn, Mfn};

use crate::abi::*;
use crate::host::{Host, HostConfig, HostStorage};
use crate::hypercall::{CONTROL_DOMAIN, Hypercall, MemoryArg, MmuextOp, Outcome, Reservation};

mod regressions;
mod scenarios;

pub(crate) const P: u64 = 1;
pub(crate) const RW: u64 = 2;
pub(crate) const D1: DomId = DomId::new(1);
pub(crate) const D2: DomId = DomId::new(2);

pub(crate) fn storage() -> HostStorage {
    HostStorage::new(HostConfig::with_mib(16))
}

/// A host with two domains of 512 pages each (max 1024).
pub(crate) fn two_guests(storage: &mut HostStorage) -> Host<'_> {
    let mut host = Host::boot(storage).unwrap();
    host.create_domain(D1, 1024, 512).unwrap();
    host.create_domain(D2, 1024, 512).unwrap();
    host
}

pub(crate) fn mfn_of(host: &Host<'_>, d: DomId, gfn: u64) -> Mfn {
    host.domain(d).unwrap().mfn(Gfn::new(gfn)).unwrap()
}

pub(crate) fn pte(mfn: Mfn, flags: u64) -> u64 {
    (mfn.get() << 12) | flags
}

pub(crate) fn update(host: &mut Host<'_>, d: DomId, table: Mfn, index: u64, val: u64) -> Outcome {
    let req = [MmuUpdate {
        ptr: (table.get() << 12) | (index * 8),
        val,
    }];
    host.hypercall(
        d,
        Hypercall::MmuUpdate {
            requests: &req,
            foreigndom: DomId::SELF,
        },
    )
}

pub(crate) fn mmuext(host: &mut Host<'_>, d: DomId, cmd: u32, mfn: Mfn) -> Outcome {
    host.hypercall(
        d,
        Hypercall::MmuextOp {
            ops: &[MmuextOp {
                cmd,
                mfn: mfn.get(),
            }],
            foreigndom: DomId::SELF,
        },
    )
}

pub(crate) fn memory_op(
    host: &mut Host<'_>,
    caller: DomId,
    op: u32,
    domid: DomId,
    extents: &mut [u64],
    order: u32,
) -> i64 {
    let nr = extents.len() as u64;
    host.hypercall(
        caller,
        Hypercall::MemoryOp {
            cmd: u64::from(op),
            arg: MemoryArg::Reservation(Reservation {
                extents: Some(extents),
                nr_extents: nr,
                extent_order: order,
                mem_flags: 0,
                domid,
            }),
        },
    )
    .rc
}

/// Builds L4 -> L3 -> L2 -> L1 -> `data` (writable) out of guest frames
/// 0..4 of `d` and pins the L4. Returns the tables, root first.
pub(crate) fn process(host: &mut Host<'_>, d: DomId, base: u64, data: Mfn) -> [Mfn; 4] {
    let t = [0, 1, 2, 3].map(|i| mfn_of(host, d, base + i));
    assert_eq!(update(host, d, t[3], 0, pte(data, P | RW)).rc, 0);
    assert_eq!(update(host, d, t[2], 0, pte(t[3], P | RW)).rc, 0);
    assert_eq!(update(host, d, t[1], 0, pte(t[2], P | RW)).rc, 0);
    assert_eq!(update(host, d, t[0], 0, pte(t[1], P | RW)).rc, 0);
    assert_eq!(mmuext(host, d, MMUEXT_PIN_L4_TABLE, t[0]).rc, 0);
    host.audit().unwrap();
    t
}

#[test]
fn populate_and_decrease_return_extents_done_and_keep_the_books() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let mut gfns = [600, 601, 602, 603];
    assert_eq!(
        memory_op(
            &mut host,
            D1,
            XENMEM_POPULATE_PHYSMAP,
            DomId::SELF,
            &mut gfns,
            0
        ),
        4
    );
    assert_eq!(host.books().domain(D1).unwrap().tot_pages, 516);
    assert_eq!(host.m2p(Mfn::new(gfns[2])), Some(Gfn::new(602)));
    let mut mfns = gfns;
    assert_eq!(
        memory_op(
            &mut host,
            D1,
            XENMEM_DECREASE_RESERVATION,
            DomId::SELF,
            &mut mfns,
            0
        ),
        4
    );
    assert_eq!(host.books().domain(D1).unwrap().tot_pages, 512);
    host.audit().unwrap();
}

#[test]
fn populate_stops_at_max_pages() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let mut gfns: Vec<u64> = (512..1024).collect();
    gfns.push(100);
    let done = memory_op(
        &mut host,
        D1,
        XENMEM_POPULATE_PHYSMAP,
        DomId::SELF,
        &mut gfns,
        0,
    );
    // 512 up to max_pages; the 513th extent is refused.
    assert_eq!(done, 512);
    assert_eq!(host.books().domain(D1).unwrap().tot_pages, 1024);
    host.audit().unwrap();
}

#[test]
fn reservation_ops_on_another_domain_do_nothing_for_a_guest() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let victim = mfn_of(&host, D2, 5);
    let mut list = [victim.get()];
    assert_eq!(
        memory_op(&mut host, D1, XENMEM_DECREASE_RESERVATION, D2, &mut list, 0),
        0
    );
    // Naming the victim's frame as its own: get_page fails, -ENXIO stops it.
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
    assert_eq!(host.m2p(victim), Some(Gfn::new(5)));
    host.audit().unwrap();
}

#[test]
fn claim_pages_is_for_the_toolstack_only() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let claim = |host: &mut Host<'_>, caller, domid, pages| {
        host.hypercall(
            caller,
            Hypercall::MemoryOp {
                cmd: u64::from(XENMEM_CLAIM_PAGES),
                arg: MemoryArg::Reservation(Reservation {
                    extents: None,
                    nr_extents: pages,
                    extent_order: 0,
                    mem_flags: 0,
                    domid,
                }),
            },
        )
        .rc
    };
    assert_eq!(claim(&mut host, D1, D1, 600), -EPERM);
    assert_eq!(claim(&mut host, CONTROL_DOMAIN, DomId::SELF, 600), -EINVAL);
    assert_eq!(claim(&mut host, CONTROL_DOMAIN, D1, 600), 0);
    assert_eq!(claim(&mut host, CONTROL_DOMAIN, D1, 700), -EINVAL);
    assert_eq!(claim(&mut host, CONTROL_DOMAIN, D2, 1 << 40), -EINVAL);
    assert_eq!(host.books().outstanding_claims(), 88);
    host.check_counters().unwrap();
}

#[test]
fn current_and_maximum_reservation_report_the_books() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let mut ask = |caller, op, domid| {
        host.hypercall(
            caller,
            Hypercall::MemoryOp {
                cmd: u64::from(op),
                arg: MemoryArg::Domain(domid),
            },
        )
        .rc
    };
    assert_eq!(ask(D1, XENMEM_CURRENT_RESERVATION, DomId::SELF), 512);
    assert_eq!(ask(D1, XENMEM_MAXIMUM_RESERVATION, DomId::SELF), 1024);
    assert_eq!(ask(D1, XENMEM_CURRENT_RESERVATION, D2), -EPERM);
    assert_eq!(ask(D1, XENMEM_CURRENT_RESERVATION, DomId::new(9)), -ESRCH);
    assert_eq!(ask(CONTROL_DOMAIN, XENMEM_CURRENT_RESERVATION, D2), 512);
}

#[test]
fn a_pinned_tree_holds_exactly_the_references_its_entries_imply() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let data = mfn_of(&host, D1, 10);
    let t = process(&mut host, D1, 0, data);
    // The data page is writable-mapped once: general + writable type.
    let s = host.frame_table().state(data).unwrap();
    assert_eq!((s.refs, s.type_refs), (2, 1));
    assert_eq!(mmuext(&mut host, D1, MMUEXT_UNPIN_TABLE, t[0]).rc, 0);
    let s = host.frame_table().state(data).unwrap();
    assert_eq!((s.refs, s.type_refs), (1, 0));
    host.audit().unwrap();
}

#[test]
fn double_pin_and_unpin_of_an_unpinned_table_are_einval() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let data = mfn_of(&host, D1, 10);
    let t = process(&mut host, D1, 0, data);
    assert_eq!(mmuext(&mut host, D1, MMUEXT_PIN_L4_TABLE, t[0]).rc, -EINVAL);
    assert_eq!(mmuext(&mut host, D1, MMUEXT_UNPIN_TABLE, t[1]).rc, -EINVAL);
    assert_eq!(mmuext(&mut host, D2, MMUEXT_UNPIN_TABLE, t[0]).rc, -EINVAL);
    host.audit().unwrap();
}

#[test]
fn grant_commands_xen_lacks_are_enosys_and_unreadable_arrays_efault() {
    let mut storage = storage();
    let mut host = two_guests(&mut storage);
    let rc = |host: &mut Host<'_>, call| host.hypercall(D1, call).rc;
    let op = |cmd| Hypercall::GrantTableOp {
        cmd,
        count: 1,
        arg: crate::grant::GrantArg::Fault,
    };
    // GNTTABOP_dump_table (3: Xen's dispatcher no longer has it) and
    // commands beyond the last.
    for cmd in [3, 13, 99] {
        assert_eq!(rc(&mut host, op(cmd)), -ENOSYS, "{cmd}");
    }
    // Every command Xen has reads the guest's array first.
    for cmd in [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12] {
        assert_eq!(rc(&mut host, op(cmd)), -EFAULT, "{cmd}");
    }
    assert_eq!(rc(&mut host, Hypercall::Other { number: 99 }), -ENOSYS);
}

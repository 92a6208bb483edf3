//! Unit tests, named after the rule they guard; `xsa_*` tests reproduce the
//! pattern of the Xen advisory they name.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::cell::Cell;
use std::vec::Vec;

use hvmem_types::{DomId, Gfn};

use crate::abi::*;
use crate::model::{ModelDomains, ModelFrames};
use crate::*;

const FRONT: DomId = DomId::new(1);
const BACK: DomId = DomId::new(2);
const HOST: u64 = 0x7000_0000;

/// Active entries per domain: two v1 frames natively; under miri, which
/// interprets every constructor, enough for the refs the tests use.
const ACTIVE: usize = if cfg!(miri) { 64 } else { 1024 };
/// Shared-frame words per domain: two frames natively; under miri one
/// frame and the start of a second (enough to grow into).
const WORDS: usize = if cfg!(miri) { 1024 + 16 } else { 2 * 1024 };

/// Storage for two domains: the frontend grants, the backend maps.
struct Store {
    words: [Vec<sync_types::AtomicU32>; 2],
    status: [Vec<sync_types::AtomicU16>; 2],
    active: [Vec<ActiveEntry>; 2],
    maptrack: Vec<MaptrackEntry>,
    frames: ModelFrames,
}

impl Store {
    fn new(maptrack: usize) -> Self {
        let frames = ModelFrames::new();
        for gfn in 0..4 {
            frames.give(FRONT, gfn, 0x100 + gfn);
            frames.give(BACK, gfn, 0x200 + gfn);
        }
        Self {
            words: core::array::from_fn(|_| (0..WORDS).map(|_| 0.into()).collect()),
            status: core::array::from_fn(|_| (0..ACTIVE).map(|_| 0.into()).collect()),
            active: core::array::from_fn(|_| (0..ACTIVE).map(|_| ActiveEntry::new()).collect()),
            maptrack: (0..maptrack).map(|_| MaptrackEntry::new()).collect(),
            frames,
        }
    }
}

struct Env<'s> {
    mems: [SliceMemory<'s>; 2],
    store: &'s Store,
}

impl<'s> Env<'s> {
    fn new(store: &'s Store) -> Self {
        Self {
            mems: core::array::from_fn(|i| {
                SliceMemory::new(&store.words[i], &store.status[i], 0x1000, 0x8000)
            }),
            store,
        }
    }

    fn table(&self, i: usize) -> GrantTable<'_> {
        let config = GrantTableConfig {
            max_frames: 2,
            ..GrantTableConfig::DEFAULT
        };
        GrantTable::new(
            DomId::new(i as u16 + 1),
            &self.mems[i],
            &self.store.active[i],
            config,
        )
        .unwrap()
    }

    fn maptrack(&self) -> Maptrack<'_> {
        Maptrack::new(BACK, false, &self.store.maptrack, u32::MAX)
    }

    fn guest<'t>(&'t self, table: &GrantTable<'_>) -> GuestGrantTable<'t> {
        GuestGrantTable::new(&self.mems[0], table.version(), table.nr_frames())
    }

    fn frames(&self) -> &ModelFrames {
        &self.store.frames
    }
}

fn map_op(gref: u32, flags: GntMapFlags) -> GnttabMapGrantRef {
    GnttabMapGrantRef {
        host_addr: HOST,
        flags: flags.bits(),
        gref,
        dom: FRONT.get(),
        ..Default::default()
    }
}

fn map(
    mt: &Maptrack<'_>,
    d: &ModelDomains<'_>,
    f: &ModelFrames,
    gref: u32,
    flags: GntMapFlags,
) -> GnttabMapGrantRef {
    let mut op = map_op(gref, flags);
    mt.map_grant_ref(d, f, &mut op);
    op
}

fn unmap(
    mt: &Maptrack<'_>,
    d: &ModelDomains<'_>,
    f: &ModelFrames,
    handle: u32,
    host: u64,
    dev: u64,
) -> i16 {
    let mut op = GnttabUnmapGrantRef {
        host_addr: host,
        dev_bus_addr: dev,
        handle,
        ..Default::default()
    };
    mt.unmap_grant_ref(d, f, &mut op, &mut || {});
    op.status
}

const OK: i16 = GntSt::Okay.raw();
const RW_HOST: GntMapFlags = GntMapFlags::HOST_MAP;
const RO_HOST: GntMapFlags = GntMapFlags::HOST_MAP.union(GntMapFlags::READONLY);
const BOTH: GntMapFlags = GntMapFlags::HOST_MAP.union(GntMapFlags::DEVICE_MAP);

/// Runs `test` with the frontend's table, the backend's maptrack, and the
/// domains.
fn with<R>(test: impl FnOnce(&Env<'_>, &GrantTable<'_>, &Maptrack<'_>) -> R) -> R {
    let store = Store::new(256);
    let env = Env::new(&store);
    let table = env.table(0);
    let maptrack = env.maptrack();
    test(&env, &table, &maptrack)
}

#[test]
fn writable_map_holds_a_writable_type_reference() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(1), false)
            .unwrap();
        let d = ModelDomains::new([table]);
        let op = map(mt, &d, env.frames(), 8, RW_HOST);
        assert_eq!(op.status, OK);
        assert_eq!(op.dev_bus_addr, 0x101 << 12);
        // The mapping's general reference (the one the first pin's
        // translation took) and its type reference; the active entry
        // holds none of its own.
        assert_eq!(env.frames().refs(0x101), (1, 1));
        assert_eq!(table.pin_count(GrantRef(8)), Some(1));
        assert_eq!(unmap(mt, &d, env.frames(), op.handle, HOST, 0), OK);
        assert_eq!(env.frames().refs(0x101), (0, 0));
        assert_eq!(table.pin_count(GrantRef(8)), Some(0));
    });
}

#[test]
fn read_only_map_holds_only_general_references() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(1), true)
            .unwrap();
        let d = ModelDomains::new([table]);
        let op = map(mt, &d, env.frames(), 8, RO_HOST | GntMapFlags::DEVICE_MAP);
        assert_eq!(op.status, OK);
        assert_eq!(env.frames().refs(0x101), (2, 0));
        let flags = GtfFlags::from_bits_retain(table.header(GrantRef(8)) as u16);
        assert!(flags.contains(GtfFlags::READING) && !flags.contains(GtfFlags::WRITING));
    });
}

#[test]
fn map_without_host_or_device_kind_is_bad_gntref() {
    with(|env, table, mt| {
        let d = ModelDomains::new([table]);
        let op = map(mt, &d, env.frames(), 8, GntMapFlags::READONLY);
        assert_eq!(op.status, GntSt::BadGntref.raw());
        assert_eq!(mt.mappings(), 0);
    });
}

#[test]
fn map_of_a_missing_or_reserved_domain_is_bad_domain() {
    with(|env, table, mt| {
        let d = ModelDomains::new([table]);
        for dom in [DomId::new(9), DomId::SELF, DomId::INVALID] {
            let mut op = map_op(8, RW_HOST);
            op.dom = dom.get();
            mt.map_grant_ref(&d, env.frames(), &mut op);
            assert_eq!(op.status, GntSt::BadDomain.raw(), "{dom}");
        }
    });
}

#[test]
fn map_of_a_ref_beyond_the_table_is_bad_gntref_and_frees_the_handle() {
    with(|env, table, mt| {
        let d = ModelDomains::new([table]);
        for gref in [512, 1023, u32::MAX] {
            assert_eq!(
                map(mt, &d, env.frames(), gref, RW_HOST).status,
                GntSt::BadGntref.raw()
            );
        }
        assert_eq!(mt.mappings(), 0);
        // The handle went back: the next map gets handle 0.
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
            .unwrap();
        assert_eq!(map(mt, &d, env.frames(), 8, RW_HOST).handle, 0);
    });
}

#[test]
fn map_of_a_grant_to_another_domain_or_not_permit_access_is_general_error() {
    with(|env, table, mt| {
        let guest = env.guest(table);
        guest
            .grant_access(GrantRef(8), DomId::new(3), Gfn::new(0), false)
            .unwrap();
        guest
            .grant_transfer(GrantRef(9), BACK, Gfn::new(7))
            .unwrap();
        let d = ModelDomains::new([table]);
        for gref in [8, 9, 10] {
            assert_eq!(
                map(mt, &d, env.frames(), gref, RW_HOST).status,
                GntSt::GeneralError.raw()
            );
            assert_eq!(table.pin_count(GrantRef(gref)), Some(0));
        }
        assert_eq!(
            table.header(GrantRef(8)) as u16 & 0x18,
            0,
            "no status bit left"
        );
    });
}

#[test]
fn write_map_of_a_read_only_grant_is_general_error_and_sets_no_bit() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(0), true)
            .unwrap();
        let d = ModelDomains::new([table]);
        assert_eq!(
            map(mt, &d, env.frames(), 8, RW_HOST).status,
            GntSt::GeneralError.raw()
        );
        // Read-only first, then a writable map on top: still refused, and the
        // reading bit the first pin set stays.
        assert_eq!(map(mt, &d, env.frames(), 8, RO_HOST).status, OK);
        assert_eq!(
            map(mt, &d, env.frames(), 8, RW_HOST).status,
            GntSt::GeneralError.raw()
        );
        let flags = GtfFlags::from_bits_retain(table.header(GrantRef(8)) as u16);
        assert!(flags.contains(GtfFlags::READING) && !flags.contains(GtfFlags::WRITING));
    });
}

#[test]
fn map_of_an_invalid_frame_is_bad_page_and_of_a_paged_out_one_eagain() {
    with(|env, table, mt| {
        let guest = env.guest(table);
        guest
            .grant_access(GrantRef(8), BACK, Gfn::new(77), false)
            .unwrap();
        guest
            .grant_access(GrantRef(9), BACK, Gfn::new(2), false)
            .unwrap();
        env.frames().set_paged_out(FRONT, 2, true);
        let d = ModelDomains::new([table]);
        assert_eq!(
            map(mt, &d, env.frames(), 8, RW_HOST).status,
            GntSt::BadPage.raw()
        );
        assert_eq!(
            map(mt, &d, env.frames(), 9, RW_HOST).status,
            GntSt::Eagain.raw()
        );
        // Neither failure left a pin behind: the granter can end access.
        guest.end_access(GrantRef(8)).unwrap();
        guest.end_access(GrantRef(9)).unwrap();
    });
}

#[test]
fn map_that_cannot_take_a_writable_type_unwinds_the_first_pin() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(2), false)
            .unwrap();
        env.frames().set_unwritable(0x102, true);
        let d = ModelDomains::new([table]);
        assert_eq!(
            map(mt, &d, env.frames(), 8, BOTH).status,
            GntSt::GeneralError.raw()
        );
        assert_eq!(env.frames().refs(0x102), (0, 0));
        assert_eq!(table.pin_count(GrantRef(8)), Some(0));
        assert_eq!(table.header(GrantRef(8)) as u16 & 0x18, 0);
        assert_eq!(mt.mappings(), 0);
    });
}

#[test]
fn translated_mapper_cannot_ask_for_device_or_pte_mappings() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let table = env.table(0);
    let mt = Maptrack::new(BACK, true, &store.maptrack, 4);
    env.guest(&table)
        .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
        .unwrap();
    let d = ModelDomains::new([&table]);
    for flags in [
        BOTH,
        RW_HOST | GntMapFlags::CONTAINS_PTE,
        RW_HOST | GntMapFlags::APPLICATION_MAP,
    ] {
        assert_eq!(
            map(&mt, &d, env.frames(), 8, flags).status,
            GntSt::GeneralError.raw()
        );
    }
    assert_eq!(map(&mt, &d, env.frames(), 8, RW_HOST).status, OK);
}

#[test]
fn end_access_never_succeeds_while_mapped_v1_and_v2() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    for version in [1, 2] {
        table
            .set_version(&mut GnttabSetVersion { version })
            .unwrap();
        let guest = env.guest(&table);
        guest
            .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
            .unwrap();
        let mt = env.maptrack();
        let d = ModelDomains::new([&table]);
        let op = map(&mt, &d, env.frames(), 8, RW_HOST);
        assert_eq!(op.status, OK);
        assert_eq!(guest.end_access(GrantRef(8)), Err(GuestError::InUse));
        assert!(guest.in_use(GrantRef(8)).unwrap());
        assert_eq!(unmap(&mt, &d, env.frames(), op.handle, HOST, 0), OK);
        guest.end_access(GrantRef(8)).unwrap();
        assert!(!guest.in_use(GrantRef(8)).unwrap());
    }
}

#[test]
fn v2_end_access_revokes_at_once_so_no_new_pin_succeeds() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    table
        .set_version(&mut GnttabSetVersion { version: 2 })
        .unwrap();
    let guest = env.guest(&table);
    guest
        .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
        .unwrap();
    let mt = env.maptrack();
    let d = ModelDomains::new([&table]);
    let first = map(&mt, &d, env.frames(), 8, RW_HOST);
    assert_eq!(guest.end_access(GrantRef(8)), Err(GuestError::InUse));
    // The entry no longer grants anything, although the first map stays.
    assert_eq!(
        map(&mt, &d, env.frames(), 8, RO_HOST).status,
        OK,
        "joins the existing pin"
    );
    assert_eq!(unmap(&mt, &d, env.frames(), 1, HOST, 0), OK);
    assert_eq!(unmap(&mt, &d, env.frames(), first.handle, HOST, 0), OK);
    assert_eq!(
        map(&mt, &d, env.frames(), 8, RO_HOST).status,
        GntSt::GeneralError.raw()
    );
    guest.end_access(GrantRef(8)).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "heavy under miri")]
fn pin_counter_overflow_is_general_error() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
            .unwrap();
        let d = ModelDomains::new([table]);
        for _ in 0..128 {
            assert_eq!(map(mt, &d, env.frames(), 8, RW_HOST).status, OK);
        }
        assert_eq!(
            map(mt, &d, env.frames(), 8, RW_HOST).status,
            GntSt::GeneralError.raw()
        );
        // Other counters are independent.
        assert_eq!(map(mt, &d, env.frames(), 8, RO_HOST).status, OK);
        assert_eq!(table.pin_count(GrantRef(8)), Some(0x180));
    });
}

#[test]
fn xsa_218_double_unmap_of_one_handle_drops_references_once() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
            .unwrap();
        let d = ModelDomains::new([table]);
        let a = map(mt, &d, env.frames(), 8, RW_HOST);
        let b = map(mt, &d, env.frames(), 8, RW_HOST);
        assert_eq!(env.frames().refs(0x100), (2, 2));
        // Two unmaps of the same handle in one batch, and once more after.
        let mut ops = [a.handle, a.handle].map(|handle| GnttabUnmapGrantRef {
            host_addr: HOST,
            handle,
            ..Default::default()
        });
        mt.unmap_grant_refs(&d, env.frames(), &mut ops, &mut || {});
        assert_eq!([ops[0].status, ops[1].status], [OK, GntSt::BadHandle.raw()]);
        assert_eq!(
            unmap(mt, &d, env.frames(), a.handle, HOST, 0),
            GntSt::BadHandle.raw()
        );
        // The other mapping still holds its references and the entry its pin.
        assert_eq!(env.frames().refs(0x100), (1, 1));
        assert!(env.guest(table).in_use(GrantRef(8)).unwrap());
        assert_eq!(unmap(mt, &d, env.frames(), b.handle, HOST, 0), OK);
        assert_eq!(env.frames().refs(0x100), (0, 0));
    });
}

#[test]
fn xsa_224_host_and_device_map_unmapped_by_host_only_keeps_the_device_references() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
            .unwrap();
        let d = ModelDomains::new([table]);
        let op = map(mt, &d, env.frames(), 8, BOTH);
        assert_eq!(env.frames().refs(0x100), (2, 2));
        assert_eq!(unmap(mt, &d, env.frames(), op.handle, HOST, 0), OK);
        assert_eq!(
            env.frames().refs(0x100),
            (1, 1),
            "one kind's references only"
        );
        assert_eq!(table.pin_count(GrantRef(8)), Some(PIN_DEV_WRITE_FOR_TESTS));
        // The host kind is gone; naming it again does nothing.
        assert_eq!(unmap(mt, &d, env.frames(), op.handle, HOST, 0), OK);
        assert_eq!(env.frames().refs(0x100), (1, 1));
        // A wrong device address is refused, the right one finishes it.
        assert_eq!(
            unmap(mt, &d, env.frames(), op.handle, 0, 0x999 << 12),
            GntSt::BadDevAddr.raw()
        );
        assert_eq!(
            unmap(mt, &d, env.frames(), op.handle, 0, op.dev_bus_addr),
            OK
        );
        assert_eq!(env.frames().refs(0x100), (0, 0));
        assert_eq!(mt.mappings(), 0);
    });
}

const PIN_DEV_WRITE_FOR_TESTS: u32 = 1 << 16;
/// One host-read pin (reference b.11).
const PIN_HOST_READ_FOR_TESTS: u32 = 1 << 8;

#[test]
fn xsa_230_status_bits_clear_only_when_their_last_pin_goes() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
            .unwrap();
        let d = ModelDomains::new([table]);
        let ro = map(mt, &d, env.frames(), 8, RO_HOST);
        let rw = map(mt, &d, env.frames(), 8, GntMapFlags::DEVICE_MAP);
        let rw2 = map(mt, &d, env.frames(), 8, RW_HOST);
        let bits = || GtfFlags::from_bits_retain(table.header(GrantRef(8)) as u16);
        assert!(bits().contains(GtfFlags::READING | GtfFlags::WRITING));
        assert_eq!(
            unmap(mt, &d, env.frames(), rw.handle, 0, rw.dev_bus_addr),
            OK
        );
        assert!(bits().contains(GtfFlags::WRITING), "a writable pin remains");
        assert_eq!(unmap(mt, &d, env.frames(), rw2.handle, HOST, 0), OK);
        assert!(!bits().contains(GtfFlags::WRITING) && bits().contains(GtfFlags::READING));
        assert_eq!(unmap(mt, &d, env.frames(), ro.handle, HOST, 0), OK);
        assert!(!bits().intersects(GtfFlags::READING | GtfFlags::WRITING));
    });
}

#[test]
fn set_version_is_refused_while_an_entry_is_mapped() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    env.guest(&table)
        .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
        .unwrap();
    let mt = env.maptrack();
    let op = {
        let d = ModelDomains::new([&table]);
        map(&mt, &d, env.frames(), 8, RW_HOST)
    };
    let mut set = GnttabSetVersion { version: 2 };
    assert_eq!(table.set_version(&mut set), Err(VersionError::InUse));
    assert_eq!(set.version, 1);
    assert_eq!(VersionError::InUse.errno(), -16);
    {
        let d = ModelDomains::new([&table]);
        assert_eq!(unmap(&mt, &d, env.frames(), op.handle, HOST, 0), OK);
    }
    set.version = 2;
    table.set_version(&mut set).unwrap();
    assert_eq!(set.version, 2);
}

#[test]
fn reserved_entries_may_stay_mapped_across_a_switch_and_are_converted() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    env.guest(&table)
        .grant_access(RESERVED_XENSTORE, BACK, Gfn::new(3), false)
        .unwrap();
    env.guest(&table)
        .grant_access(GrantRef(9), BACK, Gfn::new(2), false)
        .unwrap();
    let mt = env.maptrack();
    {
        let d = ModelDomains::new([&table]);
        assert_eq!(map(&mt, &d, env.frames(), 1, RW_HOST).status, OK);
    }
    table
        .set_version(&mut GnttabSetVersion { version: 2 })
        .unwrap();
    let v2 = env.guest(&table);
    assert!(
        v2.in_use(RESERVED_XENSTORE).unwrap(),
        "status bits moved to the status word"
    );
    assert_eq!(table.entry_frame(RESERVED_XENSTORE), 3);
    assert_eq!(table.header(GrantRef(9)), 0, "non-reserved entries wiped");
    table
        .set_version(&mut GnttabSetVersion { version: 1 })
        .unwrap();
    assert!(env.guest(&table).in_use(RESERVED_XENSTORE).unwrap());
    let d = ModelDomains::new([&table]);
    assert_eq!(unmap(&mt, &d, env.frames(), 0, HOST, 0), OK);
    assert_eq!(env.frames().refs(0x103), (0, 0));
}

/// Found by the `grant` fuzz target: a reserved grant ended on v2 while
/// still mapped (the header's type cleared, the status word still busy)
/// lost its busy bits on the way back to v1, and the granter's next
/// end_access then succeeded on a frame another domain still mapped.
#[test]
fn an_ended_but_still_mapped_reserved_entry_stays_busy_across_a_switch_back_to_v1() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    env.guest(&table)
        .grant_access(RESERVED_XENSTORE, BACK, Gfn::new(3), false)
        .unwrap();
    let mt = env.maptrack();
    {
        let d = ModelDomains::new([&table]);
        assert_eq!(map(&mt, &d, env.frames(), 1, RW_HOST).status, OK);
    }
    table
        .set_version(&mut GnttabSetVersion { version: 2 })
        .unwrap();
    assert_eq!(
        env.guest(&table).end_access(RESERVED_XENSTORE),
        Err(GuestError::InUse)
    );
    table
        .set_version(&mut GnttabSetVersion { version: 1 })
        .unwrap();
    let v1 = env.guest(&table);
    assert!(v1.in_use(RESERVED_XENSTORE).unwrap());
    assert_eq!(v1.end_access(RESERVED_XENSTORE), Err(GuestError::InUse));
    let d = ModelDomains::new([&table]);
    assert_eq!(unmap(&mt, &d, env.frames(), 0, HOST, 0), OK);
    assert_eq!(env.frames().refs(0x103), (0, 0));
}

#[test]
fn set_version_refuses_bad_versions_and_v2_beyond_the_limit() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    assert_eq!(
        table.set_version(&mut GnttabSetVersion { version: 3 }),
        Err(VersionError::Invalid)
    );
    let config = GrantTableConfig {
        max_version: GrantVersion::V1,
        ..GrantTableConfig::DEFAULT
    };
    let mut v1_only = GrantTable::new(FRONT, &env.mems[1], &store.active[1], config).unwrap();
    assert_eq!(
        v1_only.set_version(&mut GnttabSetVersion { version: 2 }),
        Err(VersionError::NotSupported)
    );
    assert_eq!(VersionError::NotSupported.errno(), -38);
}

#[test]
fn leaving_v2_refuses_a_reserved_entry_beyond_32_bits() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    table
        .set_version(&mut GnttabSetVersion { version: 2 })
        .unwrap();
    env.guest(&table)
        .grant_access(RESERVED_CONSOLE, BACK, Gfn::new(1 << 40), false)
        .unwrap();
    assert_eq!(
        table.set_version(&mut GnttabSetVersion { version: 1 }),
        Err(VersionError::Unrepresentable)
    );
    assert_eq!(table.version(), GrantVersion::V2);
}

#[test]
fn xsa_255_switch_back_to_v1_is_refused_while_a_status_frame_is_mapped() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    table
        .set_version(&mut GnttabSetVersion { version: 2 })
        .unwrap();
    assert_eq!(table.nr_status_frames(), 1);
    env.mems[0].set_status_mapped(0, true);
    assert_eq!(
        table.set_version(&mut GnttabSetVersion { version: 1 }),
        Err(VersionError::StatusFrameMapped)
    );
    assert_eq!(
        (table.version(), table.nr_status_frames()),
        (GrantVersion::V2, 1)
    );
    assert_eq!(
        env.mems[0].status_releases(),
        0,
        "nothing released while mapped"
    );
    env.mems[0].set_status_mapped(0, false);
    table
        .set_version(&mut GnttabSetVersion { version: 1 })
        .unwrap();
    assert_eq!(table.nr_status_frames(), 0);
    assert_eq!(env.mems[0].status_releases(), 1);
    // The released frames are no longer reachable through the table.
    let mut op = GnttabGetStatusFrames {
        nr_frames: 1,
        ..Default::default()
    };
    get_status_frames(Some(&table), &mut op, &mut [0; 1]);
    assert_eq!(op.status, GntSt::GeneralError.raw());
}

#[test]
fn xsa_382_status_frame_request_beyond_the_array_is_refused() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    table
        .set_version(&mut GnttabSetVersion { version: 2 })
        .unwrap();
    let mut list = [0u64; 4];
    for (nr_frames, status) in [
        (1, OK),
        (2, GntSt::GeneralError.raw()),
        (u32::MAX, GntSt::GeneralError.raw()),
    ] {
        let mut op = GnttabGetStatusFrames {
            nr_frames,
            ..Default::default()
        };
        get_status_frames(Some(&table), &mut op, &mut list);
        assert_eq!(op.status, status, "{nr_frames}");
    }
    assert_eq!(list[0], 0x8000);
    let mut op = GnttabGetStatusFrames::default();
    get_status_frames(None, &mut op, &mut list);
    assert_eq!(op.status, GntSt::BadDomain.raw());
}

#[test]
fn get_status_frames_is_bounded_only_by_the_status_frames_a_v1_table_has_none() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    let untouched = [0xdead_u64; 2];
    // v1: no status frames, so an empty request succeeds and writes
    // nothing, and any other is GNTST_general_error (as Xen, which has no
    // version check of its own here).
    for (nr_frames, status) in [
        (0, OK),
        (1, GntSt::GeneralError.raw()),
        (u32::MAX, GntSt::GeneralError.raw()),
    ] {
        let mut list = untouched;
        let mut op = GnttabGetStatusFrames {
            nr_frames,
            ..Default::default()
        };
        get_status_frames(Some(&table), &mut op, &mut list);
        assert_eq!(op.status, status, "v1, {nr_frames} frames");
        assert_eq!(list, untouched, "v1, {nr_frames} frames");
    }
    // v2: an empty request succeeds too, and writes nothing.
    table
        .set_version(&mut GnttabSetVersion { version: 2 })
        .unwrap();
    let mut list = untouched;
    let mut op = GnttabGetStatusFrames::default();
    get_status_frames(Some(&table), &mut op, &mut list);
    assert_eq!((op.status, list), (OK, untouched));
}

#[test]
fn setup_table_grows_up_to_the_limit_and_query_size_reports_it() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    let mut list = [0u64; 4];
    let mut op = GnttabSetupTable {
        nr_frames: 3,
        ..Default::default()
    };
    setup_table(Some(&mut table), &mut op, &mut list);
    assert_eq!(op.status, GntSt::GeneralError.raw());
    assert_eq!(table.nr_frames(), 1);
    op.nr_frames = 2;
    setup_table(Some(&mut table), &mut op, &mut list[..1]);
    assert_eq!(
        op.status,
        GntSt::BadVirtAddr.raw(),
        "list too short for the guest"
    );
    setup_table(Some(&mut table), &mut op, &mut list);
    assert_eq!(op.status, OK);
    assert_eq!(&list[..2], &[0x1000, 0x1001]);
    assert_eq!(table.nr_entries(), ACTIVE as u32);
    let mut query = GnttabQuerySize::default();
    query_size(Some(&table), &mut query);
    assert_eq!(
        (query.status, query.nr_frames, query.max_nr_frames),
        (OK, 2, 2)
    );
    query_size(None, &mut query);
    assert_eq!(query.status, GntSt::BadDomain.raw());
    setup_table(None, &mut op, &mut list);
    assert_eq!(op.status, GntSt::BadDomain.raw());
}

#[test]
fn maptrack_exhaustion_is_no_space_and_leaves_no_pin() {
    let store = Store::new(2);
    let env = Env::new(&store);
    let table = env.table(0);
    let mt = Maptrack::new(BACK, false, &store.maptrack, 2);
    env.guest(&table)
        .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
        .unwrap();
    env.guest(&table)
        .grant_access(GrantRef(9), BACK, Gfn::new(1), false)
        .unwrap();
    let d = ModelDomains::new([&table]);
    assert_eq!(map(&mt, &d, env.frames(), 8, RW_HOST).status, OK);
    assert_eq!(map(&mt, &d, env.frames(), 8, RW_HOST).status, OK);
    assert_eq!(
        map(&mt, &d, env.frames(), 9, RW_HOST).status,
        GntSt::NoSpace.raw()
    );
    assert_eq!(table.pin_count(GrantRef(9)), Some(0));
    assert_eq!(env.frames().refs(0x101), (0, 0));
    assert_eq!(unmap(&mt, &d, env.frames(), 1, HOST, 0), OK);
    assert_eq!(
        map(&mt, &d, env.frames(), 9, RW_HOST).status,
        OK,
        "freed handle reused"
    );
}

#[test]
fn unmap_drops_references_only_after_the_tlb_flush() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
            .unwrap();
        let d = ModelDomains::new([table]);
        let op = map(mt, &d, env.frames(), 8, RW_HOST);
        let flushed = Cell::new(false);
        let mut unmap = GnttabUnmapGrantRef {
            host_addr: HOST,
            handle: op.handle,
            ..Default::default()
        };
        mt.unmap_grant_ref(&d, env.frames(), &mut unmap, &mut || {
            assert_eq!(
                env.frames().refs(0x100),
                (1, 1),
                "references dropped before the flush"
            );
            assert!(env.guest(table).in_use(GrantRef(8)).unwrap());
            flushed.set(true);
        });
        assert!(flushed.get());
        assert_eq!(env.frames().refs(0x100), (0, 0));
    });
}

#[test]
#[cfg_attr(miri, ignore = "heavy under miri")]
fn unmap_batch_flushes_once_per_32_and_reports_each_status() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
            .unwrap();
        let d = ModelDomains::new([table]);
        let handles: Vec<u32> = (0..40)
            .map(|_| map(mt, &d, env.frames(), 8, RO_HOST).handle)
            .collect();
        let mut ops: Vec<GnttabUnmapGrantRef> = handles
            .iter()
            .chain(&[999])
            .map(|&handle| GnttabUnmapGrantRef {
                host_addr: HOST,
                handle,
                ..Default::default()
            })
            .collect();
        let flushes = Cell::new(0);
        mt.unmap_grant_refs(&d, env.frames(), &mut ops, &mut || {
            flushes.set(flushes.get() + 1)
        });
        assert_eq!(flushes.get(), 2);
        assert!(ops[..40].iter().all(|op| op.status == OK));
        assert_eq!(ops[40].status, GntSt::BadHandle.raw());
        assert_eq!(env.frames().refs(0x100), (0, 0));
    });
}

#[test]
fn unmap_with_a_wrong_host_address_is_general_error_and_keeps_the_mapping() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
            .unwrap();
        let d = ModelDomains::new([table]);
        let op = map(mt, &d, env.frames(), 8, RW_HOST);
        assert_eq!(
            unmap(mt, &d, env.frames(), op.handle, HOST + 4096, 0),
            GntSt::GeneralError.raw()
        );
        assert_eq!(
            unmap(mt, &d, env.frames(), op.handle, 0, 0),
            OK,
            "zero fields do nothing"
        );
        assert_eq!(mt.mappings(), 1);
        assert_eq!(
            unmap(mt, &d, env.frames(), u32::MAX, HOST, 0),
            GntSt::BadHandle.raw()
        );
    });
}

/// Domain 3 copies the byte at `offset` of BACK's grant 9 into its own
/// frame 0; returns the element's status.
fn copy_byte_through_grant_9(env: &Env<'_>, d: &ModelDomains<'_>, offset: u16) -> i16 {
    let mut op = copy_op(
        GnttabCopyPtr::grant(BACK.get(), GrantRef(9), offset),
        GnttabCopyPtr::frame(DomId::SELF.get(), 0, 0),
        1,
        GntCopyFlags::SOURCE_GREF,
    );
    copy(
        DomId::new(3),
        d,
        env.frames(),
        core::slice::from_mut(&mut op),
    );
    op.status
}

fn copy_op(
    source: GnttabCopyPtr,
    dest: GnttabCopyPtr,
    len: u16,
    flags: GntCopyFlags,
) -> GnttabCopy {
    GnttabCopy {
        source,
        dest,
        len,
        flags: flags.bits(),
        ..Default::default()
    }
}

#[test]
fn copy_with_offset_plus_length_beyond_the_page_is_bad_copy_arg() {
    with(|env, table, _| {
        let d = ModelDomains::new([table]);
        let gref = GntCopyFlags::SOURCE_GREF | GntCopyFlags::DEST_GREF;
        for (src_off, dst_off, len) in [
            (4095, 0, 2),
            (0, 4000, 97),
            (u16::MAX, 0, u16::MAX),
            (0, 1, 4096),
        ] {
            let mut op = copy_op(
                GnttabCopyPtr::grant(FRONT.get(), GrantRef(8), src_off),
                GnttabCopyPtr::grant(FRONT.get(), GrantRef(9), dst_off),
                len,
                gref,
            );
            copy(BACK, &d, env.frames(), core::slice::from_mut(&mut op));
            assert_eq!(
                op.status,
                GntSt::BadCopyArg.raw(),
                "{src_off} {dst_off} {len}"
            );
        }
    });
}

#[test]
fn copy_by_frame_number_is_only_for_domid_self() {
    with(|env, table, _| {
        let d = ModelDomains::new([table]);
        let mut op = copy_op(
            GnttabCopyPtr::frame(FRONT.get(), 0, 0),
            GnttabCopyPtr::frame(DomId::SELF.get(), 0, 0),
            8,
            GntCopyFlags::empty(),
        );
        copy(BACK, &d, env.frames(), core::slice::from_mut(&mut op));
        assert_eq!(op.status, GntSt::PermissionDenied.raw());
    });
}

#[test]
fn copy_between_a_grant_and_a_local_frame_moves_the_bytes_and_drops_every_pin() {
    with(|env, table, _| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(1), true)
            .unwrap();
        env.frames().set_byte(0x101, 100, 0xab);
        let d = ModelDomains::new([table]);
        let mut op = copy_op(
            GnttabCopyPtr::grant(FRONT.get(), GrantRef(8), 100),
            GnttabCopyPtr::frame(DomId::SELF.get(), 2, 10),
            1,
            GntCopyFlags::SOURCE_GREF,
        );
        copy(BACK, &d, env.frames(), core::slice::from_mut(&mut op));
        assert_eq!(op.status, OK);
        assert_eq!(env.frames().byte(0x202, 10), 0xab);
        assert_eq!(env.frames().refs(0x101), (0, 0));
        assert_eq!(env.frames().refs(0x202), (0, 0));
        assert!(!env.guest(table).in_use(GrantRef(8)).unwrap());
        // Writing into a read-only grant is refused.
        let mut op = copy_op(
            GnttabCopyPtr::frame(DomId::SELF.get(), 2, 0),
            GnttabCopyPtr::grant(FRONT.get(), GrantRef(8), 0),
            1,
            GntCopyFlags::DEST_GREF,
        );
        copy(BACK, &d, env.frames(), core::slice::from_mut(&mut op));
        assert_eq!(op.status, GntSt::GeneralError.raw());
        assert_eq!(env.frames().refs(0x202), (0, 0));
    });
}

#[test]
fn copy_outside_a_sub_page_window_is_general_error() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    table
        .set_version(&mut GnttabSetVersion { version: 2 })
        .unwrap();
    env.guest(&table)
        .grant_sub_page(GrantRef(8), BACK, Gfn::new(0), 256, 128, false)
        .unwrap();
    let d = ModelDomains::new([&table]);
    for (offset, len, status) in [
        (256, 128, OK),
        (255, 1, GntSt::GeneralError.raw()),
        (300, 85, GntSt::GeneralError.raw()),
        (383, 1, OK),
    ] {
        let mut op = copy_op(
            GnttabCopyPtr::frame(DomId::SELF.get(), 0, 0),
            GnttabCopyPtr::grant(FRONT.get(), GrantRef(8), offset),
            len,
            GntCopyFlags::DEST_GREF,
        );
        copy(BACK, &d, env.frames(), core::slice::from_mut(&mut op));
        assert_eq!(op.status, status, "{offset}+{len}");
    }
    // A sub-page grant cannot be mapped.
    let mt = env.maptrack();
    assert_eq!(
        map(&mt, &d, env.frames(), 8, RW_HOST).status,
        GntSt::GeneralError.raw()
    );
    assert_eq!(env.frames().refs(0x100), (0, 0));
}

#[test]
fn copy_through_a_transitive_grant_reads_the_underlying_frame() {
    let store = Store::new(4);
    let env = Env::new(&store);
    // d1 grants its frame to d2; d2 passes it on transitively to d3 (d3 is
    // the copier here; it needs no table of its own).
    let table1 = env.table(0);
    let mut table2 = env.table(1);
    table2
        .set_version(&mut GnttabSetVersion { version: 2 })
        .unwrap();
    env.guest(&table1)
        .grant_access(GrantRef(8), BACK, Gfn::new(1), true)
        .unwrap();
    GuestGrantTable::new(&env.mems[1], GrantVersion::V2, 1)
        .grant_transitive(GrantRef(9), DomId::new(3), FRONT, GrantRef(8), true)
        .unwrap();
    env.frames().give(DomId::new(3), 0, 0x300);
    env.frames().set_byte(0x101, 5, 0x5a);
    let d = ModelDomains::new([&table1, &table2]);
    assert_eq!(copy_byte_through_grant_9(&env, &d, 5), OK);
    assert_eq!(env.frames().byte(0x300, 0), 0x5a);
    assert_eq!(env.frames().refs(0x101), (0, 0));
    assert_eq!(table1.pin_count(GrantRef(8)), Some(0));
    assert_eq!(table2.pin_count(GrantRef(9)), Some(0));
    // A transitive grant cannot be mapped.
    let mt = Maptrack::new(DomId::new(3), false, &store.maptrack, 4);
    let mut map_op = map_op(9, RO_HOST);
    map_op.dom = BACK.get();
    mt.map_grant_ref(&d, env.frames(), &mut map_op);
    assert_eq!(map_op.status, GntSt::GeneralError.raw());
}

#[test]
fn copy_through_a_transitive_grant_to_a_transitive_or_missing_grant_fails_leaving_neither_busy() {
    // d2's grant 9 passes d1's grant 8 on to d3, transitively. The copy is
    // refused (GNTST_general_error) when grant 8 is itself transitive (one
    // level only) or grants nothing, and then neither entry stays pinned
    // nor keeps GTF_reading, and no frame keeps a reference.
    for inner_transitive in [true, false] {
        let store = Store::new(4);
        let env = Env::new(&store);
        let mut table1 = env.table(0);
        let mut table2 = env.table(1);
        for table in [&mut table1, &mut table2] {
            table
                .set_version(&mut GnttabSetVersion { version: 2 })
                .unwrap();
        }
        let guest1 = GuestGrantTable::new(&env.mems[0], GrantVersion::V2, 1);
        if inner_transitive {
            guest1
                .grant_transitive(GrantRef(8), BACK, BACK, GrantRef(7), true)
                .unwrap();
            GuestGrantTable::new(&env.mems[1], GrantVersion::V2, 1)
                .grant_access(GrantRef(7), FRONT, Gfn::new(1), true)
                .unwrap();
        }
        GuestGrantTable::new(&env.mems[1], GrantVersion::V2, 1)
            .grant_transitive(GrantRef(9), DomId::new(3), FRONT, GrantRef(8), true)
            .unwrap();
        env.frames().give(DomId::new(3), 0, 0x300);
        let d = ModelDomains::new([&table1, &table2]);
        let status = copy_byte_through_grant_9(&env, &d, 0);
        let case = if inner_transitive {
            "inner transitive"
        } else {
            "inner missing"
        };
        assert_eq!(status, GntSt::GeneralError.raw(), "{case}");
        for (table, gref) in [(&table1, 8), (&table2, 9), (&table2, 7)] {
            assert_eq!(table.pin_count(GrantRef(gref)), Some(0), "{case} {gref}");
        }
        for (dom, gref) in [(0, 8), (1, 9), (1, 7)] {
            let status = store.status[dom][gref].load(core::sync::atomic::Ordering::Relaxed);
            assert_eq!(status, 0, "{case}: status of d{} {gref}", dom + 1);
        }
        for mfn in [0x101, 0x201, 0x300] {
            assert_eq!(env.frames().refs(mfn), (0, 0), "{case} {mfn:#x}");
        }
    }
}

/// [`ModelFrames`] that counts translations and records, at each frame
/// copy, the pin count of the frontend's grant 8.
struct CountingFrames<'t> {
    inner: &'t ModelFrames,
    table: &'t GrantTable<'t>,
    translations: Cell<u32>,
    pins_at_copy: core::cell::RefCell<Vec<u32>>,
}

impl<'t> CountingFrames<'t> {
    fn new(inner: &'t ModelFrames, table: &'t GrantTable<'t>) -> Self {
        Self {
            inner,
            table,
            translations: Cell::new(0),
            pins_at_copy: core::cell::RefCell::new(Vec::new()),
        }
    }
}

impl GrantFrames for CountingFrames<'_> {
    fn get_gfn(&self, owner: DomId, gfn: u64) -> Result<hvmem_types::Mfn, GfnError> {
        self.translations.set(self.translations.get() + 1);
        self.inner.get_gfn(owner, gfn)
    }
    fn get_page(&self, owner: DomId, mfn: hvmem_types::Mfn) -> bool {
        self.inner.get_page(owner, mfn)
    }
    fn put_page(&self, mfn: hvmem_types::Mfn) {
        self.inner.put_page(mfn);
    }
    fn get_page_and_type(&self, owner: DomId, mfn: hvmem_types::Mfn) -> bool {
        self.inner.get_page_and_type(owner, mfn)
    }
    fn get_type(&self, owner: DomId, mfn: hvmem_types::Mfn) -> bool {
        self.inner.get_type(owner, mfn)
    }
    fn put_page_and_type(&self, mfn: hvmem_types::Mfn) {
        self.inner.put_page_and_type(mfn);
    }
    fn copy(
        &self,
        src: hvmem_types::Mfn,
        src_offset: usize,
        dst: hvmem_types::Mfn,
        dst_offset: usize,
        len: usize,
    ) {
        let pin = self.table.pin_count(GrantRef(8)).unwrap();
        self.pins_at_copy.borrow_mut().push(pin);
        self.inner.copy(src, src_offset, dst, dst_offset, len);
    }
    fn steal_page(&self, owner: DomId, gfn: u64) -> Result<hvmem_types::Mfn, StealError> {
        self.inner.steal_page(owner, gfn)
    }
    fn can_receive(&self, dom: DomId) -> bool {
        self.inner.can_receive(dom)
    }
    fn assign_page(&self, dom: DomId, mfn: hvmem_types::Mfn, gfn: u64) -> bool {
        self.inner.assign_page(dom, mfn, gfn)
    }
    fn free_page(&self, mfn: hvmem_types::Mfn) {
        self.inner.free_page(mfn);
    }
}

/// Copies of byte `i` of the frontend's grant 8 into local frame `frame`.
fn copy_from_grant_8(i: u16, frame: u64) -> GnttabCopy {
    copy_op(
        GnttabCopyPtr::grant(FRONT.get(), GrantRef(8), i),
        GnttabCopyPtr::frame(DomId::SELF.get(), frame, i),
        1,
        GntCopyFlags::SOURCE_GREF,
    )
}

#[test]
fn copy_batch_keeps_a_claim_across_consecutive_elements_naming_the_same_grant() {
    with(|env, table, _| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(1), true)
            .unwrap();
        for i in 0..4 {
            env.frames().set_byte(0x101, i, 0x10 + i as u8);
        }
        let d = ModelDomains::new([table]);
        let frames = CountingFrames::new(env.frames(), table);
        // Same grant, local frames 0, 0, 1, 1.
        let mut ops = [(0, 0), (1, 0), (2, 1), (3, 1)].map(|(i, f)| copy_from_grant_8(i, f));
        copy(BACK, &d, &frames, &mut ops);
        assert!(ops.iter().all(|op| op.status == OK));
        assert_eq!(
            (0..2)
                .map(|i| env.frames().byte(0x200, i))
                .collect::<Vec<_>>(),
            [0x10, 0x11]
        );
        assert_eq!(
            (2..4)
                .map(|i| env.frames().byte(0x201, i))
                .collect::<Vec<_>>(),
            [0x12, 0x13]
        );
        // The grant once, each local frame once; one read pin throughout.
        assert_eq!(frames.translations.get(), 3);
        assert_eq!(*frames.pins_at_copy.borrow(), [PIN_HOST_READ_FOR_TESTS; 4]);
        // Nothing is kept once the batch is over.
        assert_eq!(table.pin_count(GrantRef(8)), Some(0));
        assert!(!env.guest(table).in_use(GrantRef(8)).unwrap());
        for mfn in [0x101, 0x200, 0x201] {
            assert_eq!(env.frames().refs(mfn), (0, 0), "{mfn:#x}");
        }
        env.guest(table).end_access(GrantRef(8)).unwrap();
    });
}

#[test]
fn copy_batch_drops_both_claims_after_a_failed_element() {
    with(|env, table, _| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(1), true)
            .unwrap();
        let d = ModelDomains::new([table]);
        let frames = CountingFrames::new(env.frames(), table);
        let mut beyond = copy_from_grant_8(0, 0);
        beyond.len = 4097;
        let mut ops = [copy_from_grant_8(0, 0), beyond, copy_from_grant_8(1, 0)];
        copy(BACK, &d, &frames, &mut ops);
        assert_eq!(ops.map(|op| op.status), [OK, GntSt::BadCopyArg.raw(), OK]);
        // Both sides claimed again after the failure.
        assert_eq!(frames.translations.get(), 4);
        assert_eq!(table.pin_count(GrantRef(8)), Some(0));
        assert_eq!(env.frames().refs(0x101), (0, 0));
        assert_eq!(env.frames().refs(0x200), (0, 0));
    });
}

#[test]
fn copy_batch_writing_into_a_grant_it_reads_pins_it_for_writing_until_the_end() {
    with(|env, table, _| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(1), false)
            .unwrap();
        let d = ModelDomains::new([table]);
        let frames = CountingFrames::new(env.frames(), table);
        let both = GntCopyFlags::SOURCE_GREF | GntCopyFlags::DEST_GREF;
        let within = |from: u16, to: u16| {
            copy_op(
                GnttabCopyPtr::grant(FRONT.get(), GrantRef(8), from),
                GnttabCopyPtr::grant(FRONT.get(), GrantRef(8), to),
                1,
                both,
            )
        };
        let mut ops = [copy_from_grant_8(0, 0), within(0, 1), within(1, 2)];
        copy(BACK, &d, &frames, &mut ops);
        assert_eq!(ops.map(|op| op.status), [OK; 3]);
        assert_eq!(
            *frames.pins_at_copy.borrow(),
            [
                PIN_HOST_READ_FOR_TESTS,
                PIN_HOST_READ_FOR_TESTS + 1,
                PIN_HOST_READ_FOR_TESTS + 1
            ]
        );
        let bits = GtfFlags::from_bits_retain(table.header(GrantRef(8)) as u16);
        assert!(!bits.intersects(GtfFlags::READING | GtfFlags::WRITING));
        assert_eq!(env.frames().refs(0x101), (0, 0));
    });
}

fn transfer_op(gfn: u64, to: DomId, gref: u32) -> GnttabTransfer {
    GnttabTransfer {
        mfn: gfn,
        domid: to.get(),
        gref,
        ..Default::default()
    }
}

#[test]
fn transfer_delivers_the_frame_and_writes_its_mfn_before_completing() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let receiver = env.table(0);
    let guest = env.guest(&receiver);
    guest
        .grant_transfer(GrantRef(8), BACK, Gfn::new(9))
        .unwrap();
    let d = ModelDomains::new([&receiver]);
    let mut op = transfer_op(2, FRONT, 8);
    transfer(BACK, &d, env.frames(), core::slice::from_mut(&mut op));
    assert_eq!(op.status, OK);
    assert_eq!(env.frames().owner(0x202), Some(FRONT));
    assert_eq!(env.frames().mfn_of(FRONT, 9), Some(0x202));
    assert_eq!(
        guest.end_transfer(GrantRef(8)),
        Ok(TransferEnd::Received(0x202))
    );
}

#[test]
fn transfer_failures_return_xens_status_and_free_or_keep_the_frame() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let receiver = env.table(0);
    let guest = env.guest(&receiver);
    let d = ModelDomains::new([&receiver]);
    let run = |op: &mut GnttabTransfer| transfer(BACK, &d, env.frames(), core::slice::from_mut(op));
    // Not a frame of the sender: bad_page, nothing lost.
    let mut op = transfer_op(50, FRONT, 8);
    run(&mut op);
    assert_eq!(op.status, GntSt::BadPage.raw());
    // In use: bad_page as in Xen (its steal_page fails with -EINVAL), the
    // one status after which the ABI lets the sender count on its frame.
    assert!(env.frames().get_page(BACK, hvmem_types::Mfn::new(0x200)));
    let mut op = transfer_op(0, FRONT, 8);
    run(&mut op);
    assert_eq!(op.status, GntSt::BadPage.raw());
    assert_eq!(env.frames().owner(0x200), Some(BACK));
    // No such receiver, or no offer: the frame is gone.
    let mut op = transfer_op(1, DomId::new(7), 8);
    run(&mut op);
    assert_eq!(op.status, GntSt::BadDomain.raw());
    let mut op = transfer_op(2, FRONT, 8);
    run(&mut op);
    assert_eq!(op.status, GntSt::GeneralError.raw());
    assert_eq!(env.frames().freed(), 2);
    // A full receiver is refused before the entry is committed.
    guest
        .grant_transfer(GrantRef(8), BACK, Gfn::new(9))
        .unwrap();
    env.frames().set_full(FRONT, true);
    let mut op = transfer_op(3, FRONT, 8);
    run(&mut op);
    assert_eq!(op.status, GntSt::GeneralError.raw());
    assert_eq!(guest.end_transfer(GrantRef(8)), Ok(TransferEnd::Cancelled));
}

#[test]
fn transfer_to_a_v1_pv_receiver_beyond_32_bits_is_address_too_big() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let receiver = env.table(0);
    env.guest(&receiver)
        .grant_transfer(GrantRef(8), BACK, Gfn::new(9))
        .unwrap();
    env.frames().give(BACK, 10, 1 << 33);
    let d = ModelDomains::new([&receiver]);
    let mut op = transfer_op(10, FRONT, 8);
    transfer(BACK, &d, env.frames(), core::slice::from_mut(&mut op));
    assert_eq!(op.status, GntSt::AddressTooBig.raw());
}

#[test]
fn mapper_teardown_releases_every_mapping_and_granter_teardown_waits_for_it() {
    let store = Store::new(8);
    let env = Env::new(&store);
    let mut table = env.table(0);
    let guest = env.guest(&table);
    guest
        .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
        .unwrap();
    guest
        .grant_access(GrantRef(9), BACK, Gfn::new(1), true)
        .unwrap();
    let mt = env.maptrack();
    {
        let d = ModelDomains::new([&table]);
        map(&mt, &d, env.frames(), 8, BOTH);
        map(&mt, &d, env.frames(), 9, RO_HOST);
        map(&mt, &d, env.frames(), 9, RO_HOST);
    }
    assert_eq!(
        table.teardown(),
        Err(2),
        "the granter waits for its mappers"
    );
    {
        let d = ModelDomains::new([&table]);
        assert_eq!(mt.release_all(&d, env.frames(), &mut || {}), 3);
        assert_eq!(mt.release_all(&d, env.frames(), &mut || {}), 0);
    }
    assert_eq!(table.teardown(), Ok(()));
    for mfn in [0x100, 0x101] {
        assert_eq!(env.frames().refs(mfn), (0, 0));
    }
}

#[test]
fn guest_refuses_to_grant_over_a_live_entry_and_checks_v1_frame_width() {
    with(|env, table, _| {
        let guest = env.guest(table);
        guest
            .grant_access(GrantRef(8), BACK, Gfn::new(0), false)
            .unwrap();
        assert_eq!(
            guest.grant_access(GrantRef(8), BACK, Gfn::new(1), false),
            Err(GuestError::EntryInUse)
        );
        assert_eq!(
            guest.grant_access(GrantRef(9), BACK, Gfn::new(1 << 32), false),
            Err(GuestError::FrameTooLarge)
        );
        assert_eq!(
            guest.grant_access(GrantRef(512), BACK, Gfn::new(1), false),
            Err(GuestError::RefOutOfRange)
        );
        assert_eq!(
            guest.grant_sub_page(GrantRef(9), BACK, Gfn::new(1), 0, 8, false),
            Err(GuestError::NeedsVersion2)
        );
        let raw = GrantEntryV1 {
            flags: 1,
            domid: BACK.get(),
            frame: 0,
        };
        assert_eq!(
            table.header(GrantRef(8)),
            u32::from_ne_bytes(zerocopy::IntoBytes::as_bytes(&raw)[..4].try_into().unwrap())
        );
    });
}

#[test]
fn tables_and_maptracks_can_be_shared_between_cpus() {
    fn shared<T: Sync + Send>() {}
    shared::<GrantTable<'static>>();
    shared::<Maptrack<'static>>();
    shared::<ActiveEntry>();
    shared::<MaptrackEntry>();
    shared::<SliceMemory<'static>>();
    shared::<GuestGrantTable<'static>>();
    shared::<ModelFrames>();
}

// ---- swap_grant_ref, get_version, unmap_and_replace, cache_flush ----

/// The shared words of entry `gref` of the frontend's table (v1: 2, v2: 4).
fn entry_words(store: &Store, table: &GrantTable<'_>, gref: u32) -> Vec<u32> {
    let per = match table.version() {
        GrantVersion::V1 => 2,
        GrantVersion::V2 => 4,
    };
    let start = gref as usize * per;
    store.words[0][start..start + per]
        .iter()
        .map(|w| w.load(core::sync::atomic::Ordering::Relaxed))
        .collect()
}

/// Switches `table` to `version` and grants BACK gfn 1 read-only as ref 8
/// and gfn 2 as ref 9 (writable if `nine_writable`); returns the guest's
/// view of the table.
fn grant_refs_8_and_9<'e>(
    env: &'e Env<'_>,
    table: &mut GrantTable<'_>,
    version: u32,
    nine_writable: bool,
) -> GuestGrantTable<'e> {
    table
        .set_version(&mut GnttabSetVersion { version })
        .unwrap();
    let guest = env.guest(table);
    guest
        .grant_access(GrantRef(8), BACK, Gfn::new(1), false)
        .unwrap();
    guest
        .grant_access(GrantRef(9), BACK, Gfn::new(2), nine_writable)
        .unwrap();
    guest
}

fn swap(table: &mut GrantTable<'_>, a: u32, b: u32) -> i16 {
    let mut op = GnttabSwapGrantRef {
        ref_a: a,
        ref_b: b,
        ..Default::default()
    };
    table.swap_grant_ref(&mut op);
    op.status
}

#[test]
fn swap_grant_ref_exchanges_two_entries_with_their_status_v1_and_v2() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    for version in [1, 2] {
        let guest = grant_refs_8_and_9(&env, &mut table, version, true);
        if version == 2 {
            // Status words left by earlier use, which move with the entry.
            store.status[0][8].store(0, core::sync::atomic::Ordering::Relaxed);
            store.status[0][9].store(0x8, core::sync::atomic::Ordering::Relaxed);
        }
        let (before8, before9) = (
            entry_words(&store, &table, 8),
            entry_words(&store, &table, 9),
        );
        assert_eq!(swap(&mut table, 8, 9), OK);
        assert_eq!(entry_words(&store, &table, 8), before9);
        assert_eq!(entry_words(&store, &table, 9), before8);
        if version == 2 {
            assert_eq!(
                store.status[0][8].load(core::sync::atomic::Ordering::Relaxed),
                0x8
            );
            assert_eq!(
                store.status[0][9].load(core::sync::atomic::Ordering::Relaxed),
                0
            );
            store.status[0][8].store(0, core::sync::atomic::Ordering::Relaxed);
        }
        // The grants moved: ref 9 now grants gfn 1 read-write.
        let mt = env.maptrack();
        let d = ModelDomains::new([&table]);
        let op = map(&mt, &d, env.frames(), 9, RW_HOST);
        assert_eq!(op.status, OK);
        assert_eq!(op.dev_bus_addr, 0x101 << 12);
        assert_eq!(
            map(&mt, &d, env.frames(), 8, RW_HOST).status,
            GntSt::GeneralError.raw(),
            "ref 8 is the read-only grant now"
        );
        assert_eq!(unmap(&mt, &d, env.frames(), op.handle, HOST, 0), OK);
        guest.end_access(GrantRef(8)).unwrap();
        guest.end_access(GrantRef(9)).unwrap();
        assert_eq!(env.frames().refs(0x101), (0, 0));
    }
}

#[test]
fn swap_grant_ref_is_refused_while_either_entry_is_pinned_and_changes_nothing() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    for version in [1, 2] {
        let guest = grant_refs_8_and_9(&env, &mut table, version, false);
        let mt = env.maptrack();
        let op = {
            let d = ModelDomains::new([&table]);
            map(&mt, &d, env.frames(), 8, RW_HOST)
        };
        assert_eq!(op.status, OK);
        let (before8, before9) = (
            entry_words(&store, &table, 8),
            entry_words(&store, &table, 9),
        );
        let status8 = table
            .status(GrantRef(8))
            .map(|s| s.load(core::sync::atomic::Ordering::Relaxed));
        assert_eq!(swap(&mut table, 8, 9), GntSt::Eagain.raw());
        assert_eq!(swap(&mut table, 9, 8), GntSt::Eagain.raw());
        assert_eq!(entry_words(&store, &table, 8), before8);
        assert_eq!(entry_words(&store, &table, 9), before9);
        assert_eq!(
            table
                .status(GrantRef(8))
                .map(|s| s.load(core::sync::atomic::Ordering::Relaxed)),
            status8
        );
        // Swapping an entry with itself is a no-op even while pinned (the
        // range is checked first, then the refs compared, as in Xen).
        assert_eq!(swap(&mut table, 8, 8), OK);
        let beyond = table.nr_entries();
        assert_eq!(swap(&mut table, 8, beyond), GntSt::BadGntref.raw());
        assert_eq!(swap(&mut table, beyond, 9), GntSt::BadGntref.raw());
        assert_eq!(swap(&mut table, beyond, beyond), GntSt::BadGntref.raw());
        assert_eq!(swap(&mut table, u32::MAX, 9), GntSt::BadGntref.raw());
        assert_eq!(entry_words(&store, &table, 9), before9);
        {
            let d = ModelDomains::new([&table]);
            assert_eq!(unmap(&mt, &d, env.frames(), op.handle, HOST, 0), OK);
        }
        let before8 = entry_words(&store, &table, 8);
        assert_eq!(swap(&mut table, 8, 9), OK);
        let mut ops = [
            GnttabSwapGrantRef {
                ref_a: 8,
                ref_b: 9,
                ..Default::default()
            },
            GnttabSwapGrantRef {
                ref_a: 8,
                ref_b: beyond,
                ..Default::default()
            },
        ];
        table.swap_grant_refs(&mut ops);
        assert_eq!((ops[0].status, ops[1].status), (OK, GntSt::BadGntref.raw()));
        assert_eq!(entry_words(&store, &table, 8), before8, "swapped twice");
        guest.end_access(GrantRef(8)).unwrap();
        guest.end_access(GrantRef(9)).unwrap();
    }
}

#[test]
fn get_version_reports_the_version_in_force_and_esrch_for_no_domain() {
    let store = Store::new(4);
    let env = Env::new(&store);
    let mut table = env.table(0);
    let mut op = GnttabGetVersion::default();
    get_version(Some(&table), &mut op).unwrap();
    assert_eq!(op.version, 1);
    table
        .set_version(&mut GnttabSetVersion { version: 2 })
        .unwrap();
    get_version(Some(&table), &mut op).unwrap();
    assert_eq!(op.version, 2);
    let mut none = GnttabGetVersion {
        version: 7,
        ..Default::default()
    };
    assert_eq!(get_version(None, &mut none), Err(CallError::NoSuchDomain));
    assert_eq!(CallError::NoSuchDomain.errno(), -3);
    assert_eq!(none.version, 7, "unchanged on error");
}

const HOST2: u64 = 0x7000_1000;

fn replace(
    mt: &Maptrack<'_>,
    d: &ModelDomains<'_>,
    f: &ModelFrames,
    handle: u32,
    host_addr: u64,
    new_addr: u64,
    pte_ok: bool,
) -> (i16, Vec<(u64, u64)>, usize) {
    let mut op = [GnttabUnmapAndReplace {
        host_addr,
        new_addr,
        handle,
        ..Default::default()
    }];
    let mut moves = Vec::new();
    let mut flushes = 0;
    mt.unmap_and_replace(
        d,
        f,
        &mut op,
        &mut |from, to| {
            moves.push((from, to));
            pte_ok
        },
        &mut || flushes += 1,
    );
    (op[0].status, moves, flushes)
}

#[test]
fn unmap_and_replace_moves_the_new_address_mapping_and_drops_the_old_references_once() {
    with(|env, table, mt| {
        let guest = env.guest(table);
        guest
            .grant_access(GrantRef(8), BACK, Gfn::new(1), false)
            .unwrap();
        guest
            .grant_access(GrantRef(9), BACK, Gfn::new(2), true)
            .unwrap();
        let d = ModelDomains::new([table]);
        let old = map(mt, &d, env.frames(), 8, RW_HOST);
        let mut new = map_op(9, RO_HOST);
        new.host_addr = HOST2;
        mt.map_grant_ref(&d, env.frames(), &mut new);
        assert_eq!((old.status, new.status), (OK, OK));
        assert_eq!(env.frames().refs(0x102), (1, 0));

        let (status, moves, flushes) = replace(mt, &d, env.frames(), old.handle, HOST, HOST2, true);
        assert_eq!(status, OK);
        assert_eq!(moves, [(HOST, HOST2)], "the embedder moves the PTE once");
        assert_eq!(flushes, 1);
        // The replaced mapping's references went, once; the moved one's
        // stayed, neither dropped nor taken again.
        assert_eq!(env.frames().refs(0x101), (0, 0));
        assert_eq!(table.pin_count(GrantRef(8)), Some(0));
        guest.end_access(GrantRef(8)).unwrap();
        assert_eq!(env.frames().refs(0x102), (1, 0));
        assert_eq!(mt.mapping(GrantHandle(old.handle)), None);
        // The moved mapping now lives at HOST.
        assert_eq!(
            unmap(mt, &d, env.frames(), new.handle, HOST2, 0),
            GntSt::GeneralError.raw()
        );
        assert_eq!(unmap(mt, &d, env.frames(), new.handle, HOST, 0), OK);
        assert_eq!(env.frames().refs(0x102), (0, 0));
        assert_eq!(mt.mappings(), 0);
    });
}

#[test]
fn unmap_and_replace_refused_or_without_new_address_behaves_as_xen() {
    with(|env, table, mt| {
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(1), false)
            .unwrap();
        let d = ModelDomains::new([table]);
        let f = env.frames();
        let op = map(mt, &d, f, 8, BOTH);
        assert_eq!(op.status, OK);
        let refs = f.refs(0x101);
        let general = GntSt::GeneralError.raw();
        // The embedder has no page table at new_addr: refused, unchanged.
        assert_eq!(replace(mt, &d, f, op.handle, HOST, HOST2, false).0, general);
        // new_addr == host_addr: refused without asking the embedder.
        let (status, moves, _) = replace(mt, &d, f, op.handle, HOST, HOST, true);
        assert_eq!((status, moves.len()), (general, 0));
        // Not where the handle maps.
        assert_eq!(replace(mt, &d, f, op.handle, HOST2, 0, true).0, general);
        assert_eq!(
            replace(mt, &d, f, 4096, HOST, 0, true).0,
            GntSt::BadHandle.raw()
        );
        assert_eq!(
            replace(mt, &d, f, 17, HOST, 0, true).0,
            GntSt::BadHandle.raw()
        );
        // host_addr 0: nothing to do.
        let (status, moves, flushes) = replace(mt, &d, f, op.handle, 0, HOST2, true);
        assert_eq!((status, moves.len(), flushes), (OK, 0, 0));
        assert_eq!(f.refs(0x101), refs);
        assert_eq!(table.pin_count(GrantRef(8)), Some(1 | 1 << 16));
        // new_addr 0: a host unmap; the device mapping stays.
        let (status, moves, flushes) = replace(mt, &d, f, op.handle, HOST, 0, true);
        assert_eq!((status, moves.len(), flushes), (OK, 0, 1));
        assert_eq!(table.pin_count(GrantRef(8)), Some(1 << 16));
        // The handle has no host mapping left: okay, nothing done.
        assert_eq!(replace(mt, &d, f, op.handle, HOST, HOST2, true).0, OK);
        assert_eq!(unmap(mt, &d, f, op.handle, 0, 0x101 << 12), OK);
        assert_eq!(f.refs(0x101), (0, 0));
    });
}

fn flush_op(mfn: u64, offset: u16, length: u16, op: u32) -> GnttabCacheFlush {
    GnttabCacheFlush {
        a: mfn << 12,
        offset,
        length,
        op,
    }
}

#[test]
fn cache_flush_checks_range_flags_owner_and_grant_in_xen_order() {
    with(|env, table, mt| {
        let f = env.frames();
        let d = ModelDomains::new([table]);
        let owner = |mfn: hvmem_types::Mfn| match f.owner(mfn.get()) {
            Some(dom) => FrameOwner::Domain(dom),
            None if mfn.get() < 0x1000 => FrameOwner::Unowned,
            None => FrameOwner::Invalid,
        };
        let flush = |caller, arch, op: GnttabCacheFlush| cache_flush(caller, &d, arch, &op, &owner);
        let clean = GNTTAB_CACHE_CLEAN;
        let inval = GNTTAB_CACHE_INVAL;
        for bad in [
            flush_op(0x101, 4096, 0, clean),
            flush_op(0x101, 0, 4097, clean),
            flush_op(0x101, 4000, 200, clean),
            flush_op(0x101, u16::MAX, u16::MAX, clean),
            flush_op(0x101, 0, 64, 4),
            flush_op(0x101, 0, 64, GNTTAB_CACHE_SOURCE_GREF | clean),
        ] {
            assert_eq!(
                flush(FRONT, CacheArch::X86, bad),
                Err(CallError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(
            flush(FRONT, CacheArch::X86, flush_op(0x5000, 0, 0, clean)),
            Ok(None)
        );
        assert_eq!(
            flush(FRONT, CacheArch::X86, flush_op(0x5000, 0, 64, 0)),
            Ok(None)
        );
        assert_eq!(
            flush(FRONT, CacheArch::X86, flush_op(0x5000, 0, 64, clean)),
            Err(CallError::Invalid),
            "invalid frame"
        );
        assert_eq!(
            flush(FRONT, CacheArch::X86, flush_op(0x300, 0, 64, clean)),
            Err(CallError::NotPermitted),
            "unowned frame"
        );
        assert_eq!(
            flush(FRONT, CacheArch::X86, flush_op(0x201, 0, 64, clean)),
            Err(CallError::NotPermitted),
            "owner without a grant table here"
        );
        // Its own frame: x86 cleans, refuses invalidate alone; Arm does all.
        let own = flush(
            FRONT,
            CacheArch::X86,
            flush_op(0x101, 16, 64, clean | inval),
        );
        assert_eq!(
            own,
            Ok(Some(CacheFlushRange {
                mfn: hvmem_types::Mfn::new(0x101),
                offset: 16,
                length: 64,
                clean: true,
                invalidate: true,
            }))
        );
        assert_eq!(
            flush(FRONT, CacheArch::X86, flush_op(0x101, 0, 64, inval)),
            Err(CallError::NotSupported)
        );
        assert!(matches!(
            flush(FRONT, CacheArch::Arm, flush_op(0x101, 0, 64, inval)),
            Ok(Some(CacheFlushRange {
                invalidate: true,
                clean: false,
                ..
            }))
        ));
        // Another domain's frame only while the caller has it pinned.
        assert_eq!(
            flush(BACK, CacheArch::X86, flush_op(0x101, 0, 64, clean)),
            Err(CallError::Invalid)
        );
        env.guest(table)
            .grant_access(GrantRef(8), BACK, Gfn::new(1), true)
            .unwrap();
        let op = map(mt, &d, f, 8, RO_HOST);
        assert_eq!(op.status, OK);
        let refs = f.refs(0x101);
        assert!(
            flush(BACK, CacheArch::X86, flush_op(0x101, 0, 64, clean))
                .unwrap()
                .is_some()
        );
        assert_eq!(f.refs(0x101), refs, "no reference kept");
        assert_eq!(unmap(mt, &d, f, op.handle, HOST, 0), OK);
        assert_eq!(
            flush(BACK, CacheArch::X86, flush_op(0x101, 0, 64, clean)),
            Err(CallError::Invalid)
        );
    });
}

//! Model checks of the races the grant table must win, every interleaving
//! explored by loom (`RUSTFLAGS="--cfg loom"`): the granter's end of access
//! against the hypervisor's map of the same entry (v1 and v2), map against
//! unmap of the same ref from two CPUs of the mapper, and two unmaps of one
//! handle (XSA-218).

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::boxed::Box;
use std::vec::Vec;

use hvmem_types::{DomId, Gfn};
use loom::sync::atomic::{AtomicU16, AtomicU32};
use loom::thread;

use crate::model::{ModelDomains, ModelFrames};
use crate::{
    ActiveEntry, GntMapFlags, GntSt, GnttabMapGrantRef, GnttabSetVersion, GnttabUnmapGrantRef,
    GrantRef, GrantTable, GrantTableConfig, GrantVersion, GuestGrantTable, Maptrack, MaptrackEntry,
    SliceMemory,
};

const GRANTER: DomId = DomId::new(1);
const MAPPER: DomId = DomId::new(2);
const GREF: GrantRef = GrantRef(8);
const HOST: u64 = 0x7000_0000;
/// Entries in the small test table (refs 0..=8).
const ENTRIES: usize = 9;

/// A granter table and a mapper maptrack, leaked so threads can share them.
struct World {
    mem: &'static SliceMemory<'static>,
    table: &'static GrantTable<'static>,
    maptrack: &'static Maptrack<'static>,
    frames: &'static ModelFrames,
}

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

fn world(version: u32) -> World {
    let words: &'static [AtomicU32] = Box::leak(
        (0..ENTRIES * 4)
            .map(|_| AtomicU32::new(0))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let status: &'static [AtomicU16] = Box::leak(
        (0..ENTRIES)
            .map(|_| AtomicU16::new(0))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let active: &'static [ActiveEntry] = Box::leak(
        (0..ENTRIES)
            .map(|_| ActiveEntry::new())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let storage: &'static [MaptrackEntry] = Box::leak(
        (0..2)
            .map(|_| MaptrackEntry::new())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let mem = leak(SliceMemory::new(words, status, 0x1000, 0x8000));
    let mut table = GrantTable::new(GRANTER, mem, active, GrantTableConfig::DEFAULT).unwrap();
    table
        .set_version(&mut GnttabSetVersion { version })
        .unwrap();
    let frames = leak(ModelFrames::new());
    frames.give(GRANTER, 5, 0x105);
    let guest = GuestGrantTable::new(mem, table.version(), 1);
    guest
        .grant_access(GREF, MAPPER, Gfn::new(5), false)
        .unwrap();
    World {
        mem,
        table: leak(table),
        maptrack: leak(Maptrack::new(MAPPER, false, storage, 2)),
        frames,
    }
}

fn map(world: &World) -> GnttabMapGrantRef {
    let mut op = GnttabMapGrantRef {
        host_addr: HOST,
        flags: GntMapFlags::HOST_MAP.bits(),
        gref: GREF.0,
        dom: GRANTER.get(),
        ..Default::default()
    };
    let domains = ModelDomains::new([world.table]);
    world
        .maptrack
        .map_grant_ref(&domains, world.frames, &mut op);
    op
}

fn unmap(world: &World, handle: u32) -> i16 {
    let mut op = GnttabUnmapGrantRef {
        host_addr: HOST,
        handle,
        ..Default::default()
    };
    let domains = ModelDomains::new([world.table]);
    world
        .maptrack
        .unmap_grant_ref(&domains, world.frames, &mut op, &mut || {});
    op.status
}

fn end_access_racing_map(version: u32) {
    loom::model(move || {
        let world = world(version);
        let (mem, table_version) = (world.mem, world.table.version());
        let granter = thread::spawn(move || {
            GuestGrantTable::new(mem, table_version, 1)
                .end_access(GREF)
                .is_ok()
        });
        let mapped = map(&world).status == GntSt::Okay.raw();
        let ended = granter.join().unwrap();
        assert!(!(ended && mapped), "end_access and map both succeeded");
        if table_version == GrantVersion::V1 {
            assert!(ended || mapped, "v1: one of them always wins");
        }
        // References follow the outcome exactly.
        let expected = if mapped { (1, 1) } else { (0, 0) };
        assert_eq!(world.frames.refs(0x105), expected);
    });
}

#[test]
fn loom_v1_end_access_racing_map_never_both_succeed() {
    end_access_racing_map(1);
}

#[test]
fn loom_v2_end_access_racing_map_never_both_succeed() {
    end_access_racing_map(2);
}

#[test]
fn loom_map_racing_unmap_of_the_same_ref() {
    loom::model(|| {
        let world = world(1);
        let first = map(&world);
        assert_eq!(first.status, GntSt::Okay.raw());
        let shared = leak(world);
        // CPU 1 unmaps the first mapping while CPU 0 maps the ref again.
        let unmapper = thread::spawn(move || unmap(shared, first.handle));
        let second = map(shared);
        assert_eq!(unmapper.join().unwrap(), GntSt::Okay.raw());
        assert_eq!(second.status, GntSt::Okay.raw());
        assert_eq!(shared.maptrack.mappings(), 1);
        assert_eq!(shared.table.pin_count(GREF), Some(1));
        assert_eq!(shared.frames.refs(0x105), (1, 1));
        assert_eq!(unmap(shared, second.handle), GntSt::Okay.raw());
        assert_eq!(shared.frames.refs(0x105), (0, 0));
    });
}

#[test]
fn loom_xsa_218_two_unmaps_of_one_handle_drop_references_once() {
    loom::model(|| {
        let world = leak(world(1));
        let op = map(world);
        let other = thread::spawn(move || unmap(world, op.handle));
        let here = unmap(world, op.handle);
        let there = other.join().unwrap();
        let ok = GntSt::Okay.raw();
        assert!(
            (here == ok) != (there == ok),
            "exactly one unmap succeeds: {here} {there}"
        );
        assert_eq!(world.frames.refs(0x105), (0, 0));
        assert_eq!(world.table.pin_count(GREF), Some(0));
    });
}

#[test]
fn loom_granter_rewriting_its_entry_during_a_map_leaves_no_stray_state() {
    loom::model(|| {
        let world = leak(world(1));
        let mem = world.mem;
        // A malicious granter rewrites the header behind the protocol: a
        // read-only grant to another domain, with the status bits cleared.
        let granter = thread::spawn(move || {
            let header = crate::GrantMemory::shared_frame(mem, 0).unwrap()[2 * GREF.0 as usize]
                .load(loom::sync::atomic::Ordering::Relaxed);
            let hostile = crate::mem::hdr_word(
                crate::GrantType::PermitAccess as u16 | crate::GtfFlags::READONLY.bits(),
                7,
            );
            crate::GrantMemory::shared_frame(mem, 0).unwrap()[2 * GREF.0 as usize]
                .store(hostile, loom::sync::atomic::Ordering::Relaxed);
            header
        });
        let op = map(world);
        granter.join().unwrap();
        if op.status == GntSt::Okay.raw() {
            assert_eq!(world.frames.refs(0x105), (1, 1));
            assert_eq!(unmap(world, op.handle), GntSt::Okay.raw());
        } else {
            assert_eq!(op.status, GntSt::GeneralError.raw());
        }
        assert_eq!(world.frames.refs(0x105), (0, 0));
        assert_eq!(world.table.pin_count(GREF), Some(0));
        assert_eq!(world.maptrack.mappings(), 0);
    });
}

//! Unit tests, each named after the rule it guards.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use hvmem_types::DomId;

use crate::abi::{self, PRIVATE_EPHEMERAL, PRIVATE_PERSISTENT, SHARED_EPHEMERAL, TmemOp};
use crate::hypercall::{self, GuestFault, GuestPages};
use crate::virtio::{
    ChainError, Data, DataDirection, DriverError, Outcome, TmemDevice, TmemDriver,
};
use crate::*;

pub(crate) struct Fixture {
    store: StoreMemory,
    tables: OwnedMemory,
}

pub(crate) fn fixture(frames: u32, pages: usize, dedup: bool) -> Fixture {
    let layout = TmemLayout {
        clients: 4,
        pools: 24,
        pages,
        objects: pages,
        frames: frames as usize,
        dedup,
    };
    Fixture {
        store: StoreMemory::new(frames),
        tables: OwnedMemory::new(&layout),
    }
}

impl Fixture {
    pub(crate) fn tmem(&mut self, config: TmemConfig) -> Tmem<'_, SliceStore<'_>> {
        Tmem::new(config, self.store.store(), self.tables.borrow()).unwrap()
    }
}

fn page(byte: u8) -> [u8; PAGE_BYTES] {
    [byte; PAGE_BYTES]
}

/// A page that lz4 cannot shrink below half a frame.
fn noisy(seed: u64) -> [u8; PAGE_BYTES] {
    let mut x = seed | 1;
    let mut p = [0u8; PAGE_BYTES];
    // A word at a time: cheap under miri.
    for word in p.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
    p
}

const O: Oid = Oid([1, 2, 3]);

fn get(
    t: &mut Tmem<'_, SliceStore<'_>>,
    c: ClientId,
    p: PoolId,
    oid: Oid,
    i: u32,
) -> Option<[u8; PAGE_BYTES]> {
    let mut out = [0u8; PAGE_BYTES];
    match t.get_page(c, p, oid, i, &mut out).unwrap() {
        GetOutcome::Hit => Some(out),
        _ => None,
    }
}

#[test]
fn pool_flags_are_checked_as_xen_checks_them() {
    assert_eq!(PRIVATE_EPHEMERAL, 0x0100_0000);
    assert_eq!(PRIVATE_PERSISTENT, 0x0100_0001);
    assert_eq!(
        decode_pool_flags(PRIVATE_PERSISTENT).unwrap(),
        PoolKind {
            persistent: true,
            shared: false
        }
    );
    assert_eq!(decode_pool_flags(0), Err(TmemError::BadVersion));
    assert_eq!(decode_pool_flags(0x0200_0000), Err(TmemError::BadVersion));
    assert_eq!(
        decode_pool_flags(PRIVATE_PERSISTENT | 2),
        Err(TmemError::SharedPersistent)
    );
    assert_eq!(
        decode_pool_flags(PRIVATE_EPHEMERAL | 1 << 4),
        Err(TmemError::BadPageSize)
    );
    assert_eq!(
        decode_pool_flags(PRIVATE_EPHEMERAL | 4),
        Err(TmemError::Precompressed)
    );
    assert_eq!(
        decode_pool_flags(PRIVATE_EPHEMERAL | 0x100),
        Err(TmemError::ReservedFlags)
    );
    for e in [
        TmemError::BadVersion,
        TmemError::SharedPersistent,
        TmemError::TooManyPools,
    ] {
        assert_eq!(e.errno(), abi::EPERM);
    }
}

#[test]
fn pool_ids_are_the_lowest_free_slot_and_a_client_has_at_most_16() {
    let mut f = fixture(8, 8, false);
    let mut t = f.tmem(TmemConfig::default());
    let c = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    for i in 0..16 {
        assert_eq!(
            t.new_pool(c, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap(),
            PoolId(i)
        );
    }
    assert_eq!(
        t.new_pool(c, Uuid::NONE, PRIVATE_EPHEMERAL),
        Err(TmemError::TooManyPools)
    );
    t.destroy_pool(c, PoolId(3)).unwrap();
    assert_eq!(
        t.new_pool(c, Uuid::NONE, PRIVATE_PERSISTENT).unwrap(),
        PoolId(3)
    );
}

#[test]
fn another_clients_pool_and_unknown_pools_are_refused_without_change() {
    let mut f = fixture(8, 8, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let b = t
        .create_client(DomId::new(2), ClientConfig::default())
        .unwrap();
    let pa = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    t.put_page(a, pa, O, 0, &page(0xaa)).unwrap();
    let before = t.stats();
    let mut out = page(0);
    // B has no pool 0: A's pool 0 is invisible to it.
    assert_eq!(
        t.get_page(b, pa, O, 0, &mut out),
        Err(TmemError::NoSuchPool)
    );
    assert_eq!(
        t.put_page(b, pa, O, 0, &page(1)),
        Err(TmemError::NoSuchPool)
    );
    assert_eq!(t.flush_page(b, pa, O, 0), Err(TmemError::NoSuchPool));
    assert_eq!(t.flush_object(b, pa, O), Err(TmemError::NoSuchPool));
    assert_eq!(t.destroy_pool(b, pa), Err(TmemError::NoSuchPool));
    for bad in [PoolId(1), PoolId(16), PoolId(u32::MAX)] {
        assert_eq!(
            t.put_page(a, bad, O, 0, &page(1)),
            Err(TmemError::NoSuchPool)
        );
    }
    assert_eq!(out, page(0));
    assert_eq!(t.stats(), before);
    assert_eq!(get(&mut t, a, pa, O, 0), Some(page(0xaa)));
}

#[test]
fn buffers_of_the_wrong_length_are_refused_without_change() {
    let mut f = fixture(8, 8, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    t.put_page(a, p, O, 0, &page(3)).unwrap();
    assert_eq!(
        t.put_page(a, p, O, 0, &[0u8; 4095]),
        Err(TmemError::BadBufferLength { len: 4095 })
    );
    let mut big = [0u8; 4097];
    assert_eq!(
        t.get_page(a, p, O, 0, &mut big),
        Err(TmemError::BadBufferLength { len: 4097 })
    );
    assert_eq!(get(&mut t, a, p, O, 0), Some(page(3)));
}

#[test]
fn a_private_ephemeral_get_is_exclusive_and_the_others_are_not() {
    let mut f = fixture(8, 8, false);
    let mut t = f.tmem(TmemConfig {
        check_shared_auth: false,
        ..TmemConfig::default()
    });
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let eph = t.new_pool(a, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    let pers = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    let shared = t
        .new_pool(a, Uuid { lo: 1, hi: 2 }, SHARED_EPHEMERAL)
        .unwrap();
    assert!(t.pool_kind(a, shared).unwrap().shared);
    for p in [eph, pers, shared] {
        t.put_page(a, p, O, 7, &page(9)).unwrap();
        t.put_page(a, p, O, 8, &page(8)).unwrap();
    }
    assert_eq!(get(&mut t, a, eph, O, 7), Some(page(9)));
    assert_eq!(get(&mut t, a, eph, O, 7), None);
    for p in [pers, shared] {
        assert_eq!(get(&mut t, a, p, O, 7), Some(page(9)));
        assert_eq!(get(&mut t, a, p, O, 7), Some(page(9)));
    }
    let s = t.client_stats(a).unwrap();
    assert_eq!(s.exclusive_gets, 1);
    assert_eq!(s.pages, 5);
}

#[test]
fn a_get_from_a_pool_without_pages_reports_pool_empty() {
    let mut f = fixture(8, 8, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    let mut out = page(0);
    assert_eq!(
        t.get_page(a, p, O, 0, &mut out).unwrap(),
        GetOutcome::PoolEmpty
    );
    t.put_page(a, p, O, 1, &page(1)).unwrap();
    assert_eq!(t.get_page(a, p, O, 0, &mut out).unwrap(), GetOutcome::Miss);
}

#[test]
fn a_shared_pool_is_joined_only_with_authorization_and_a_real_uuid() {
    let mut f = fixture(8, 8, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let b = t
        .create_client(DomId::new(2), ClientConfig::default())
        .unwrap();
    let uuid = Uuid {
        lo: 0x1234,
        hi: 0x5678,
    };
    t.authorize_shared(a, uuid).unwrap();
    let pa = t.new_pool(a, uuid, SHARED_EPHEMERAL).unwrap();
    assert!(t.pool_kind(a, pa).unwrap().shared);
    // B is not authorized: it quietly gets a private pool.
    let pb = t.new_pool(b, uuid, SHARED_EPHEMERAL).unwrap();
    assert!(!t.pool_kind(b, pb).unwrap().shared);
    t.put_page(a, pa, O, 0, &page(0x5a)).unwrap();
    assert_eq!(get(&mut t, b, pb, O, 0), None);
    // Authorized, B joins the same pool and sees A's page.
    t.authorize_shared(b, uuid).unwrap();
    let pb2 = t.new_pool(b, uuid, SHARED_EPHEMERAL).unwrap();
    assert_eq!(get(&mut t, b, pb2, O, 0), Some(page(0x5a)));
    // The all-ones UUID means "none": private.
    t.authorize_shared(a, Uuid::NONE).unwrap();
    let none = t.new_pool(a, Uuid::NONE, SHARED_EPHEMERAL).unwrap();
    assert!(!t.pool_kind(a, none).unwrap().shared);
}

#[test]
fn leaving_a_shared_pool_drops_only_what_the_leaver_wrote() {
    let mut f = fixture(16, 16, false);
    let mut t = f.tmem(TmemConfig {
        check_shared_auth: false,
        ..TmemConfig::default()
    });
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let b = t
        .create_client(DomId::new(2), ClientConfig::default())
        .unwrap();
    let uuid = Uuid { lo: 7, hi: 7 };
    let pa = t.new_pool(a, uuid, SHARED_EPHEMERAL).unwrap();
    let pb = t.new_pool(b, uuid, SHARED_EPHEMERAL).unwrap();
    t.put_page(a, pa, Oid([1, 0, 0]), 0, &page(1)).unwrap();
    t.put_page(b, pb, Oid([2, 0, 0]), 0, &page(2)).unwrap();
    assert_eq!(t.destroy_pool(a, pa).unwrap(), 1);
    assert_eq!(get(&mut t, b, pb, Oid([1, 0, 0]), 0), None);
    assert_eq!(get(&mut t, b, pb, Oid([2, 0, 0]), 0), Some(page(2)));
    assert_eq!(t.destroy_pool(b, pb).unwrap(), 1);
    assert_eq!(t.store().in_use(), 0);
}

#[test]
fn a_failed_put_over_a_persistent_page_drops_the_old_copy() {
    // frontswap's rule: after a failed store the old data must not come back.
    let mut f = fixture(8, 8, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(
            DomId::new(1),
            ClientConfig {
                persistent_quota: 2,
                ..ClientConfig::default()
            },
        )
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    t.put_page(a, p, O, 0, &page(1)).unwrap();
    t.put_page(a, p, O, 1, &page(2)).unwrap();
    assert_eq!(
        t.put_page(a, p, O, 2, &page(3)),
        Err(TmemError::QuotaExceeded)
    );
    // Overwriting within the quota works in place.
    t.put_page(a, p, O, 1, &page(4)).unwrap();
    assert_eq!(get(&mut t, a, p, O, 1), Some(page(4)));
    // The host runs out of memory; a put that needs a new frame fails and
    // takes the old copy with it.
    t.set_pool_compression(a, p, true).unwrap();
    // The old copy's frame is freed before the new one is asked for.
    t.store_mut().set_limit(1);
    let r = t.put_page(a, p, O, 0, &noisy(5));
    assert_eq!(r, Err(TmemError::NoMemory));
    assert_eq!(get(&mut t, a, p, O, 0), None);
    assert_eq!(get(&mut t, a, p, O, 1), Some(page(4)));
    let s = t.client_stats(a).unwrap();
    assert_eq!(s.pages, s.puts - s.exclusive_gets - s.flushes - s.evictions);
}

#[test]
fn persistent_pages_are_never_evicted_and_ephemeral_ones_make_room() {
    let mut f = fixture(4, 16, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let eph = t.new_pool(a, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    let pers = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    t.put_page(a, eph, O, 0, &page(10)).unwrap();
    t.put_page(a, eph, O, 1, &page(11)).unwrap();
    t.put_page(a, pers, O, 0, &page(20)).unwrap();
    t.put_page(a, pers, O, 1, &page(21)).unwrap();
    // Full: the oldest ephemeral page goes.
    t.put_page(a, pers, O, 2, &page(22)).unwrap();
    assert_eq!(get(&mut t, a, eph, O, 0), None);
    t.put_page(a, pers, O, 3, &page(23)).unwrap();
    assert_eq!(
        t.put_page(a, pers, O, 4, &page(24)),
        Err(TmemError::NoMemory)
    );
    for i in 0..4 {
        assert_eq!(get(&mut t, a, pers, O, i), Some(page(20 + i as u8)));
    }
    assert_eq!(t.client_stats(a).unwrap().evictions, 2);
}

#[test]
fn an_evicted_page_never_comes_back() {
    let mut f = fixture(4, 16, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    for i in 0..4 {
        t.put_page(a, p, O, i, &page(i as u8)).unwrap();
    }
    let r = t.evict(2);
    assert_eq!(
        r,
        Reclaimed {
            pages: 2,
            frames: 2
        }
    );
    assert_eq!(get(&mut t, a, p, O, 0), None);
    assert_eq!(get(&mut t, a, p, O, 1), None);
    assert_eq!(get(&mut t, a, p, O, 2), Some(page(2)));
    assert_eq!(t.ephemeral_pages(), 1);
}

#[test]
fn a_client_over_its_weighted_share_loses_its_own_pages_first() {
    let mut f = fixture(6, 16, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(
            DomId::new(1),
            ClientConfig {
                weight: 1,
                ..ClientConfig::default()
            },
        )
        .unwrap();
    let b = t
        .create_client(
            DomId::new(2),
            ClientConfig {
                weight: 1,
                ..ClientConfig::default()
            },
        )
        .unwrap();
    let pa = t.new_pool(a, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    let pb = t.new_pool(b, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    // B's pages are the oldest, but A holds 4 of 6.
    t.put_page(b, pb, O, 0, &page(1)).unwrap();
    t.put_page(b, pb, O, 1, &page(1)).unwrap();
    for i in 0..4 {
        t.put_page(a, pa, O, i, &page(2)).unwrap();
    }
    t.put_page(a, pa, O, 4, &page(2)).unwrap();
    assert_eq!(t.client_stats(a).unwrap().evictions, 1);
    assert_eq!(t.client_stats(b).unwrap().evictions, 0);
    // The host reclaims from the client most over its share, too.
    t.evict(1);
    assert_eq!(t.client_stats(a).unwrap().evictions, 2);
    // B under its share asks for memory: the host's oldest page goes.
    t.put_page(b, pb, O, 2, &page(1)).unwrap();
    t.put_page(b, pb, O, 3, &page(1)).unwrap();
    assert_eq!(t.client_stats(b).unwrap().evictions, 1);
}

#[test]
fn a_put_at_the_ephemeral_cap_evicts_the_clients_own_oldest_page() {
    let mut f = fixture(16, 16, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(
            DomId::new(1),
            ClientConfig {
                ephemeral_cap: Some(2),
                ..ClientConfig::default()
            },
        )
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    for i in 0..3 {
        t.put_page(a, p, O, i, &page(i as u8)).unwrap();
    }
    assert_eq!(t.client_stats(a).unwrap().pages, 2);
    assert!(!t.contains(a, p, O, 0).unwrap());
    t.set_client_config(
        a,
        ClientConfig {
            ephemeral_cap: Some(0),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    assert_eq!(
        t.put_page(a, p, O, 9, &page(9)),
        Err(TmemError::QuotaExceeded)
    );
    assert_eq!(t.client_stats(a).unwrap().pages, 0);
}

#[test]
fn flush_object_and_destroy_pool_free_every_frame() {
    let mut f = fixture(16, 16, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    for i in 0..5 {
        t.put_page(a, p, Oid([1, 0, 0]), i, &page(1)).unwrap();
        t.put_page(a, p, Oid([2, 0, 0]), i, &page(2)).unwrap();
    }
    assert_eq!(t.flush_object(a, p, Oid([1, 0, 0])).unwrap(), 5);
    assert_eq!(t.flush_object(a, p, Oid([1, 0, 0])).unwrap(), 0);
    assert!(t.flush_page(a, p, Oid([2, 0, 0]), 4).unwrap());
    assert!(!t.flush_page(a, p, Oid([2, 0, 0]), 4).unwrap());
    assert_eq!(t.store().in_use(), 4);
    assert_eq!(t.destroy_pool(a, p).unwrap(), 4);
    assert_eq!(t.store().in_use(), 0);
    assert_eq!(t.put_page(a, p, O, 0, &page(0)), Err(TmemError::NoSuchPool));
    let s = t.client_stats(a).unwrap();
    assert_eq!((s.puts, s.flushes, s.pages), (10, 10, 0));
}

#[test]
fn flush_all_and_destroy_client_leave_nothing_behind() {
    let mut f = fixture(16, 16, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    let q = t.new_pool(a, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    t.put_page(a, p, O, 0, &page(1)).unwrap();
    t.put_page(a, q, O, 0, &page(1)).unwrap();
    assert_eq!(t.flush_all(a).unwrap(), 2);
    assert!(t.pool_kind(a, p).is_ok());
    t.put_page(a, p, O, 0, &page(1)).unwrap();
    t.destroy_client(a).unwrap();
    assert_eq!(t.store().in_use(), 0);
    assert_eq!(t.client_stats(a), Err(TmemError::NoSuchClient));
    assert!(t.client_of(DomId::new(1)).is_none());
}

#[test]
fn identical_ephemeral_pages_share_a_frame_and_a_put_never_changes_anothers_data() {
    let mut f = fixture(8, 16, true);
    let mut t = f.tmem(TmemConfig {
        dedup: true,
        ..TmemConfig::default()
    });
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let b = t
        .create_client(DomId::new(2), ClientConfig::default())
        .unwrap();
    let pa = t.new_pool(a, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    let pb = t.new_pool(b, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    t.put_page(a, pa, O, 0, &noisy(1)).unwrap();
    t.put_page(b, pb, O, 0, &noisy(1)).unwrap();
    assert_eq!(t.frames_in_use(), 1);
    assert_eq!(t.client_stats(b).unwrap().duplicates, 1);
    // A overwrites its copy: B's data stays.
    t.put_page(a, pa, O, 0, &noisy(2)).unwrap();
    assert_eq!(t.frames_in_use(), 2);
    assert_eq!(get(&mut t, b, pb, O, 0), Some(noisy(1)));
    assert_eq!(get(&mut t, a, pa, O, 0), Some(noisy(2)));
    // Pages that differ in one byte do not share.
    let mut almost = noisy(3);
    t.put_page(a, pa, O, 1, &almost).unwrap();
    almost[4095] ^= 1;
    t.put_page(b, pb, O, 1, &almost).unwrap();
    assert_eq!(t.frames_in_use(), 2);
    assert_eq!(get(&mut t, b, pb, O, 1), Some(almost));
}

#[test]
fn a_content_hash_collision_never_shares_different_pages() {
    // Two pages with one content hash: force it by indexing a frame under
    // the hash of another page.
    let mut f = fixture(8, 16, true);
    let mut t = f.tmem(TmemConfig {
        dedup: true,
        ..TmemConfig::default()
    });
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    t.put_page(a, p, O, 0, &page(1)).unwrap();
    let h = crate::frames::content_hash(t.config.hash_seed, &page(2));
    let frame = t.frames.iter().position(|f| f.refs == 1).unwrap() as u32;
    assert!(t.content_index.insert(h, frame));
    t.put_page(a, p, O, 1, &page(2)).unwrap();
    assert_eq!(t.frames_in_use(), 2);
    assert_eq!(get(&mut t, a, p, O, 1), Some(page(2)));
    assert_eq!(get(&mut t, a, p, O, 0), Some(page(1)));
}

#[cfg(feature = "compression")]
#[test]
fn compressed_pages_take_half_a_frame_and_come_back_intact() {
    let mut f = fixture(8, 16, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(
            DomId::new(1),
            ClientConfig {
                compress: true,
                ..ClientConfig::default()
            },
        )
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    let mut text = [0u8; PAGE_BYTES];
    for chunk in text.chunks_exact_mut(16) {
        chunk.copy_from_slice(b"tmem page text. ");
    }
    for i in 0..4 {
        t.put_page(a, p, O, i, &text).unwrap();
    }
    t.put_page(a, p, O, 9, &noisy(9)).unwrap();
    assert_eq!(t.frames_in_use(), 3);
    let (raw, packed) = t.pool_stats(a, p).unwrap().compression_ratio().unwrap();
    assert_eq!(raw, 4 * 4096);
    assert!(packed < raw / 8);
    assert_eq!(get(&mut t, a, p, O, 2), Some(text));
    assert_eq!(get(&mut t, a, p, O, 9), Some(noisy(9)));
    // Freeing one half keeps the frame; freeing both frees it.
    t.flush_page(a, p, O, 0).unwrap();
    assert_eq!(t.frames_in_use(), 3);
    t.flush_page(a, p, O, 1).unwrap();
    assert_eq!(t.frames_in_use(), 2);
    // A free half is reused before a new frame is taken.
    t.flush_page(a, p, O, 2).unwrap();
    t.put_page(a, p, O, 0, &text).unwrap();
    assert_eq!(t.frames_in_use(), 2);
    assert_eq!(get(&mut t, a, p, O, 0), Some(text));
    assert_eq!(get(&mut t, a, p, O, 3), Some(text));
}

#[test]
fn tmem_works_in_caller_provided_tables_without_alloc() {
    let mut clients = [ClientRecord::EMPTY; 2];
    let mut pools = [PoolRecord::EMPTY; 2];
    let mut pages = [PageRecord::EMPTY; 4];
    let mut page_buckets = [0u64; 8];
    let mut objects = [ObjectRecord::EMPTY; 4];
    let mut object_buckets = [0u64; 8];
    let mut frames = [FrameRecord::EMPTY; 4];
    let mut data = [[0u8; PAGE_BYTES]; 4];
    let mut links = [0u32; 4];
    let memory = TmemMemory {
        clients: &mut clients,
        pools: &mut pools,
        pages: &mut pages,
        page_buckets: &mut page_buckets,
        objects: &mut objects,
        object_buckets: &mut object_buckets,
        frames: &mut frames,
        content_buckets: &mut [],
    };
    let mut t = Tmem::new(
        TmemConfig::default(),
        SliceStore::new(&mut data, &mut links),
        memory,
    )
    .unwrap();
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    for i in 0..4 {
        t.put_page(a, p, O, i, &page(i as u8)).unwrap();
    }
    // Four records: a fifth page finds no room (no ephemeral page to evict).
    assert_eq!(t.put_page(a, p, O, 4, &page(4)), Err(TmemError::NoSpace));
    assert_eq!(get(&mut t, a, p, O, 3), Some(page(3)));
}

#[test]
fn mis_sized_tables_are_refused() {
    let mut clients = [ClientRecord::EMPTY; 1];
    let mut pools = [PoolRecord::EMPTY; 1];
    let mut pages = [PageRecord::EMPTY; 4];
    let mut page_buckets = [0u64; 6];
    let mut objects = [ObjectRecord::EMPTY; 4];
    let mut object_buckets = [0u64; 8];
    let mut frames = [FrameRecord::EMPTY; 4];
    let mut data = [[0u8; PAGE_BYTES]; 4];
    let mut links = [0u32; 4];
    let memory = TmemMemory {
        clients: &mut clients,
        pools: &mut pools,
        pages: &mut pages,
        page_buckets: &mut page_buckets,
        objects: &mut objects,
        object_buckets: &mut object_buckets,
        frames: &mut frames,
        content_buckets: &mut [],
    };
    let r = Tmem::new(
        TmemConfig::default(),
        SliceStore::new(&mut data, &mut links),
        memory,
    );
    assert_eq!(
        r.err(),
        Some(LayoutError::BadTable {
            table: "page_buckets"
        })
    );
}

#[test]
fn tmem_op_layout_matches_xens_struct() {
    let op = TmemOp::new_pool(
        Uuid {
            lo: 0x1111,
            hi: 0x2222,
        },
        PRIVATE_PERSISTENT,
    );
    let bytes = op.to_bytes();
    assert_eq!(&bytes[0..4], &1u32.to_le_bytes());
    assert_eq!(&bytes[8..16], &0x1111u64.to_le_bytes());
    assert_eq!(&bytes[16..24], &0x2222u64.to_le_bytes());
    assert_eq!(&bytes[24..28], &PRIVATE_PERSISTENT.to_le_bytes());
    assert_eq!(TmemOp::from_bytes(&bytes), op);
    let put = TmemOp::page(abi::TMEM_PUT_PAGE, 3, Oid([4, 5, 6]), 7, 0x99);
    let bytes = put.to_bytes();
    assert_eq!(&bytes[32..36], &7u32.to_le_bytes());
    assert_eq!(&bytes[48..56], &0x99u64.to_le_bytes());
    assert_eq!(TmemOp::from_bytes(&bytes), put);
}

struct Guest {
    frames: std::vec::Vec<[u8; PAGE_BYTES]>,
}

impl GuestPages for Guest {
    fn read(&mut self, cmfn: u64, page: &mut Page) -> Result<(), GuestFault> {
        page.copy_from_slice(self.frames.get(cmfn as usize).ok_or(GuestFault)?);
        Ok(())
    }
    fn write(&mut self, cmfn: u64, page: &Page) -> Result<(), GuestFault> {
        self.frames
            .get_mut(cmfn as usize)
            .ok_or(GuestFault)?
            .copy_from_slice(page);
        Ok(())
    }
    fn can_write(&self, cmfn: u64) -> bool {
        (cmfn as usize) < self.frames.len()
    }
}

#[test]
fn the_hypercall_returns_what_xen_returns() {
    let mut f = fixture(8, 8, false);
    let mut t = f.tmem(TmemConfig::default());
    let mut g = Guest {
        frames: std::vec![page(0x42), page(0)],
    };
    let d = DomId::new(5);
    let op = |cmd, pool, index, cmfn| TmemOp::page(cmd, pool, O, index, cmfn);
    assert_eq!(
        hypercall::do_tmem_op(
            &mut t,
            d,
            &TmemOp::new_pool(Uuid::NONE, PRIVATE_EPHEMERAL),
            &mut g
        ),
        0
    );
    assert_eq!(
        hypercall::do_tmem_op(&mut t, d, &TmemOp::new_pool(Uuid::NONE, 0), &mut g),
        -1
    );
    assert_eq!(
        hypercall::do_tmem_op(&mut t, d, &op(abi::TMEM_GET_PAGE, 0, 0, 1), &mut g),
        -1001
    );
    assert_eq!(
        hypercall::do_tmem_op(&mut t, d, &op(abi::TMEM_PUT_PAGE, 0, 0, 0), &mut g),
        1
    );
    assert_eq!(
        hypercall::do_tmem_op(&mut t, d, &op(abi::TMEM_PUT_PAGE, 0, 0, 9), &mut g),
        -14
    );
    assert_eq!(
        hypercall::do_tmem_op(&mut t, d, &op(abi::TMEM_GET_PAGE, 0, 1, 1), &mut g),
        0
    );
    // A bad destination keeps the page in the pool.
    assert_eq!(
        hypercall::do_tmem_op(&mut t, d, &op(abi::TMEM_GET_PAGE, 0, 0, 7), &mut g),
        -14
    );
    assert_eq!(
        hypercall::do_tmem_op(&mut t, d, &op(abi::TMEM_GET_PAGE, 0, 0, 1), &mut g),
        1
    );
    assert_eq!(g.frames[1], page(0x42));
    assert_eq!(
        hypercall::do_tmem_op(&mut t, d, &op(abi::TMEM_FLUSH_PAGE, 0, 0, 0), &mut g),
        1
    );
    assert_eq!(
        hypercall::do_tmem_op(&mut t, d, &op(abi::TMEM_FLUSH_OBJECT, 0, 0, 0), &mut g),
        1
    );
    for bad_pool in [-1, 1, 16, i32::MAX] {
        assert_eq!(
            hypercall::do_tmem_op(&mut t, d, &op(abi::TMEM_PUT_PAGE, bad_pool, 0, 0), &mut g),
            -19
        );
        assert_eq!(
            hypercall::do_tmem_op(
                &mut t,
                d,
                &op(abi::TMEM_DESTROY_POOL, bad_pool, 0, 0),
                &mut g
            ),
            0
        );
    }
    for cmd in [abi::TMEM_CONTROL, abi::TMEM_AUTH, abi::TMEM_RESTORE_NEW] {
        assert_eq!(
            hypercall::do_tmem_op(&mut t, d, &op(cmd, 0, 0, 0), &mut g),
            -95
        );
    }
    for cmd in [
        abi::TMEM_NEW_PAGE,
        abi::TMEM_READ,
        abi::TMEM_WRITE,
        abi::TMEM_XCHG,
        11,
        u32::MAX,
    ] {
        assert_eq!(
            hypercall::do_tmem_op(&mut t, d, &op(cmd, 0, 0, 0), &mut g),
            -38
        );
    }
    assert_eq!(
        hypercall::do_tmem_op(&mut t, d, &op(abi::TMEM_DESTROY_POOL, 0, 0, 0), &mut g),
        1
    );
}

/// Runs one request through the driver and the device.
fn round_trip(
    t: &mut Tmem<'_, SliceStore<'_>>,
    dev: &mut TmemDevice,
    drv: &mut TmemDriver<4>,
    req: crate::virtio::Request,
    page: &mut [u8; PAGE_BYTES],
) -> Outcome {
    let mut response = [0u8; 16];
    let data = match req.data {
        DataDirection::None => Data::None,
        DataDirection::ToDevice => Data::In(page),
        DataDirection::FromDevice => Data::Out(page),
    };
    let served = dev.serve(t, &req.header, data, &mut response).unwrap();
    let done = drv.complete(&response, served.used_len).unwrap();
    assert_eq!(done.tag, req.tag);
    done.outcome
}

#[test]
fn virtio_requests_carry_every_tmem_op() {
    let mut f = fixture(8, 8, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let mut dev = TmemDevice::new(a);
    let mut drv = TmemDriver::<4>::new();
    let mut buf = page(0x77);
    let req = drv.new_pool(Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    assert_eq!(
        round_trip(&mut t, &mut dev, &mut drv, req, &mut buf),
        Outcome::PoolCreated(PoolId(0))
    );
    let req = drv.put(PoolId(0), O, 3).unwrap();
    assert_eq!(
        round_trip(&mut t, &mut dev, &mut drv, req, &mut buf),
        Outcome::Stored
    );
    let mut out = page(0);
    let req = drv.get(PoolId(0), O, 3).unwrap();
    assert_eq!(
        round_trip(&mut t, &mut dev, &mut drv, req, &mut out),
        Outcome::Hit
    );
    assert_eq!(out, page(0x77));
    let req = drv.get(PoolId(0), O, 4).unwrap();
    assert_eq!(
        round_trip(&mut t, &mut dev, &mut drv, req, &mut out),
        Outcome::Miss
    );
    let req = drv.put(PoolId(5), O, 3).unwrap();
    assert_eq!(
        round_trip(&mut t, &mut dev, &mut drv, req, &mut buf),
        Outcome::Failed(abi::ENODEV)
    );
    let req = drv.flush_page(PoolId(0), O, 3).unwrap();
    assert_eq!(
        round_trip(&mut t, &mut dev, &mut drv, req, &mut buf),
        Outcome::Flushed
    );
    let req = drv.flush_object(PoolId(0), O).unwrap();
    assert_eq!(
        round_trip(&mut t, &mut dev, &mut drv, req, &mut buf),
        Outcome::Flushed
    );
    let req = drv.destroy_pool(PoolId(0)).unwrap();
    assert_eq!(
        round_trip(&mut t, &mut dev, &mut drv, req, &mut buf),
        Outcome::PoolDestroyed(true)
    );
    assert_eq!(drv.in_flight(), 0);
    assert_eq!(
        drv.new_pool(Uuid::NONE, 0),
        Err(DriverError::Flags(TmemError::BadVersion))
    );
}

#[test]
fn malformed_virtio_requests_get_an_error_status_and_change_nothing() {
    let mut f = fixture(8, 8, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let p = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    t.put_page(a, p, O, 0, &page(1)).unwrap();
    let before = t.stats();
    let mut dev = TmemDevice::new(a);
    let mut drv = TmemDriver::<4>::new();
    let mut response = [0u8; 16];
    let short = [0u8; 100];
    let mut full = [0u8; PAGE_BYTES];
    let put = drv.put(p, O, 0).unwrap();
    // Wrong data buffer: length, direction, or missing.
    for data in [Data::In(&short[..]), Data::Out(&mut full[..]), Data::None] {
        let s = dev.serve(&mut t, &put.header, data, &mut response).unwrap();
        assert_eq!(s.response.status, -abi::EINVAL);
        assert_eq!(s.used_len, 16);
    }
    // Unknown op.
    let mut header = put.header;
    header[0] = 3;
    let s = dev
        .serve(&mut t, &header, Data::None, &mut response)
        .unwrap();
    assert_eq!(s.response.status, -38);
    // Flags on a page op.
    let mut header = put.header;
    header[36] = 1;
    let s = dev
        .serve(&mut t, &header, Data::In(&page(2)), &mut response)
        .unwrap();
    assert_eq!(s.response.status, -abi::EINVAL);
    // Chains that cannot be answered.
    assert_eq!(
        dev.serve(&mut t, &put.header[..63], Data::None, &mut response),
        Err(ChainError::HeaderLength { len: 63 })
    );
    assert_eq!(
        dev.serve(&mut t, &put.header, Data::In(&page(2)), &mut response[..15]),
        Err(ChainError::ResponseLength { len: 15 })
    );
    assert_eq!(t.stats(), before);
    // The driver refuses responses that do not fit what it sent.
    let get = drv.get(p, O, 0).unwrap();
    let mut out = page(0);
    let s = dev
        .serve(&mut t, &get.header, Data::Out(&mut out), &mut response)
        .unwrap();
    assert_eq!(
        drv.complete(&response, 16),
        Err(DriverError::BadUsedLength { used_len: 16 })
    );
    let mut forged = response;
    forged[0] ^= 0xff;
    assert!(matches!(
        drv.complete(&forged, s.used_len),
        Err(DriverError::UnknownTag { .. })
    ));
    forged = response;
    forged[12] = 1;
    assert_eq!(
        drv.complete(&forged, s.used_len),
        Err(DriverError::BadResponse)
    );
    assert!(drv.complete(&response, s.used_len).is_ok());
    assert!(matches!(
        drv.complete(&response, s.used_len),
        Err(DriverError::UnknownTag { .. })
    ));
}

#[test]
fn the_driver_tracks_at_most_its_queue_of_requests() {
    let mut drv = TmemDriver::<2>::new();
    drv.flush_page(PoolId(0), O, 0).unwrap();
    drv.flush_page(PoolId(0), O, 1).unwrap();
    assert_eq!(drv.flush_page(PoolId(0), O, 2), Err(DriverError::QueueFull));
}

#[test]
fn the_last_index_of_an_object_is_got_and_flushed_like_any_other() {
    // Get and flush fetch the next index's bucket ahead; at index u32::MAX
    // there is none, and the operations must still work.
    let mut f = fixture(8, 16, false);
    let mut t = f.tmem(TmemConfig::default());
    let a = t
        .create_client(DomId::new(1), ClientConfig::default())
        .unwrap();
    let swap = t.new_pool(a, Uuid::NONE, PRIVATE_PERSISTENT).unwrap();
    let cache = t.new_pool(a, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap();
    for p in [swap, cache] {
        t.put_page(a, p, O, u32::MAX, &page(9)).unwrap();
        t.put_page(a, p, O, u32::MAX - 1, &page(8)).unwrap();
    }
    assert_eq!(get(&mut t, a, swap, O, u32::MAX), Some(page(9)));
    assert_eq!(get(&mut t, a, cache, O, u32::MAX), Some(page(9)));
    assert_eq!(get(&mut t, a, cache, O, u32::MAX), None);
    assert!(t.flush_page(a, swap, O, u32::MAX).unwrap());
    assert!(!t.flush_page(a, swap, O, u32::MAX).unwrap());
    assert_eq!(get(&mut t, a, swap, O, u32::MAX - 1), Some(page(8)));
    assert_eq!(t.client_stats(a).unwrap().pages, 2);
}

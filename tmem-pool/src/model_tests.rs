//! The property test: random operation sequences from three clients,
//! checked against a model after every step.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::HashMap;
use std::vec::Vec;

use hvmem_types::DomId;
use proptest::prelude::*;

use crate::abi::{PRIVATE_EPHEMERAL, PRIVATE_PERSISTENT, SHARED_EPHEMERAL};
use crate::*;

const CLIENTS: usize = 3;
const PERSISTENT: PoolId = PoolId(0);
const EPHEMERAL: PoolId = PoolId(1);
const SHARED: PoolId = PoolId(2);
const SHARED_UUID: Uuid = Uuid {
    lo: 0xfeed,
    hi: 0xbeef,
};

#[derive(Clone, Copy, Debug)]
enum Op {
    Put {
        client: usize,
        pool: u8,
        oid: u8,
        index: u8,
    },
    Get {
        client: usize,
        pool: u8,
        oid: u8,
        index: u8,
    },
    FlushPage {
        client: usize,
        pool: u8,
        oid: u8,
        index: u8,
    },
    FlushObject {
        client: usize,
        pool: u8,
        oid: u8,
    },
    FlushAll {
        client: usize,
    },
    Evict {
        frames: u8,
    },
    Limit {
        frames: u8,
    },
    /// An id no pool has: must be refused without change.
    BadPool {
        client: usize,
        pool: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    prop_oneof![
        6 => (c.clone(), 0..3u8, 0..3u8, 0..4u8).prop_map(|(client, pool, oid, index)| Op::Put { client, pool, oid, index }),
        5 => (c.clone(), 0..3u8, 0..3u8, 0..4u8).prop_map(|(client, pool, oid, index)| Op::Get { client, pool, oid, index }),
        2 => (c.clone(), 0..3u8, 0..3u8, 0..4u8).prop_map(|(client, pool, oid, index)| Op::FlushPage { client, pool, oid, index }),
        1 => (c.clone(), 0..3u8, 0..3u8).prop_map(|(client, pool, oid)| Op::FlushObject { client, pool, oid }),
        1 => c.clone().prop_map(|client| Op::FlushAll { client }),
        1 => (0..4u8).prop_map(|frames| Op::Evict { frames }),
        1 => (2..16u8).prop_map(|frames| Op::Limit { frames }),
        1 => (c, 3..u32::MAX).prop_map(|(client, pool)| Op::BadPool { client, pool }),
    ]
}

/// A page carrying `value`: compressible when `value` is even.
fn page_of(value: u64) -> [u8; PAGE_BYTES] {
    let mut p = [0u8; PAGE_BYTES];
    let mut x = value.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    // A word at a time: cheap under miri.
    for (i, word) in p.chunks_exact_mut(8).enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = if value % 2 == 0 {
            (i as u64 / 8) ^ value
        } else {
            x
        };
        word.copy_from_slice(&w.to_le_bytes());
    }
    p[..8].copy_from_slice(&value.to_le_bytes());
    p
}

/// Whose data a model entry is: a private pool's client, or the shared pool.
fn owner(client: usize, pool: PoolId) -> usize {
    if pool == SHARED { CLIENTS } else { client }
}

type Key = (usize, PoolId, u8, u8);

struct Model {
    /// Persistent pages: exactly what a get must return.
    persistent: HashMap<Key, u64>,
    /// Ephemeral pages: the only value a get may return (or miss).
    ephemeral: HashMap<Key, u64>,
}

fn pool_of(p: u8) -> PoolId {
    [PERSISTENT, EPHEMERAL, SHARED][usize::from(p % 3)]
}

fn check_accounting(t: &Tmem<'_, SliceStore<'_>>, clients: &[ClientId], model: &Model) {
    let mut sum = 0;
    for (i, &c) in clients.iter().enumerate() {
        let s = t.client_stats(c).unwrap();
        assert_eq!(
            s.pages,
            s.puts - s.exclusive_gets - s.flushes - s.evictions,
            "client {i}: {s:?}"
        );
        sum += s.pages;
        let persistent = model.persistent.keys().filter(|k| k.0 == i).count() as u64;
        assert_eq!(
            t.pool_stats(c, PERSISTENT).unwrap().pages,
            persistent,
            "client {i} persistent pages"
        );
    }
    let s = t.stats();
    assert_eq!(s.pages, sum);
    assert_eq!(s.pages, s.puts - s.exclusive_gets - s.flushes - s.evictions);
    assert_eq!(t.frames_in_use(), u64::from(t.store().in_use()));
    let ephemeral_pages = s.pages - model.persistent.len() as u64;
    assert_eq!(t.ephemeral_pages(), ephemeral_pages);
    assert!(ephemeral_pages <= model.ephemeral.len() as u64);
}

fn run(ops: &[Op], dedup: bool, compress: bool) {
    let mut f = crate::tests::fixture(12, 24, dedup);
    let mut t = f.tmem(TmemConfig {
        dedup,
        check_shared_auth: false,
        ..TmemConfig::default()
    });
    let config = ClientConfig {
        persistent_quota: 5,
        compress,
        ..ClientConfig::default()
    };
    let clients: Vec<ClientId> = (0..CLIENTS)
        .map(|i| t.create_client(DomId::new(i as u16 + 1), config).unwrap())
        .collect();
    for &c in &clients {
        assert_eq!(
            t.new_pool(c, Uuid::NONE, PRIVATE_PERSISTENT).unwrap(),
            PERSISTENT
        );
        assert_eq!(
            t.new_pool(c, Uuid::NONE, PRIVATE_EPHEMERAL).unwrap(),
            EPHEMERAL
        );
        assert_eq!(
            t.new_pool(c, SHARED_UUID, SHARED_EPHEMERAL).unwrap(),
            SHARED
        );
    }
    let mut model = Model {
        persistent: HashMap::new(),
        ephemeral: HashMap::new(),
    };
    let mut next_value = 0u64;
    for &op in ops {
        match op {
            Op::Put {
                client,
                pool,
                oid,
                index,
            } => {
                let pool = pool_of(pool);
                next_value += 1;
                let key = (owner(client, pool), pool, oid, index);
                let r = t.put_page(
                    clients[client],
                    pool,
                    Oid([u64::from(oid), 0, 0]),
                    u32::from(index),
                    &page_of(next_value),
                );
                let map = if pool == PERSISTENT {
                    &mut model.persistent
                } else {
                    &mut model.ephemeral
                };
                match r {
                    Ok(()) => {
                        map.insert(key, next_value);
                    }
                    Err(TmemError::QuotaExceeded | TmemError::NoMemory | TmemError::NoSpace) => {
                        // The old copy is gone too.
                        map.remove(&key);
                    }
                    Err(e) => panic!("put refused with {e:?}"),
                }
            }
            Op::Get {
                client,
                pool,
                oid,
                index,
            } => {
                let pool = pool_of(pool);
                let key = (owner(client, pool), pool, oid, index);
                let mut out = [0u8; PAGE_BYTES];
                let r = t
                    .get_page(
                        clients[client],
                        pool,
                        Oid([u64::from(oid), 0, 0]),
                        u32::from(index),
                        &mut out,
                    )
                    .unwrap();
                let hit = r == GetOutcome::Hit;
                if pool == PERSISTENT {
                    match model.persistent.get(&key) {
                        Some(&v) => {
                            assert!(hit, "persistent page {key:?} lost");
                            assert_eq!(out, page_of(v), "persistent page {key:?} altered");
                        }
                        None => assert!(!hit, "persistent page {key:?} came back"),
                    }
                } else if hit {
                    let v = model.ephemeral.get(&key).copied();
                    assert_eq!(
                        Some(u64::from_le_bytes(out[..8].try_into().unwrap())),
                        v,
                        "ephemeral {key:?}: stale or foreign data"
                    );
                    assert_eq!(out, page_of(v.unwrap()));
                    if pool == EPHEMERAL {
                        model.ephemeral.remove(&key);
                    }
                } else {
                    // Evicted (or never there): it can never come back.
                    model.ephemeral.remove(&key);
                }
            }
            Op::FlushPage {
                client,
                pool,
                oid,
                index,
            } => {
                let pool = pool_of(pool);
                let key = (owner(client, pool), pool, oid, index);
                t.flush_page(
                    clients[client],
                    pool,
                    Oid([u64::from(oid), 0, 0]),
                    u32::from(index),
                )
                .unwrap();
                model.persistent.remove(&key);
                model.ephemeral.remove(&key);
            }
            Op::FlushObject { client, pool, oid } => {
                let pool = pool_of(pool);
                let o = owner(client, pool);
                t.flush_object(clients[client], pool, Oid([u64::from(oid), 0, 0]))
                    .unwrap();
                model
                    .persistent
                    .retain(|k, _| !(k.0 == o && k.1 == pool && k.2 == oid));
                model
                    .ephemeral
                    .retain(|k, _| !(k.0 == o && k.1 == pool && k.2 == oid));
            }
            Op::FlushAll { client } => {
                t.flush_all(clients[client]).unwrap();
                model.persistent.retain(|k, _| k.0 != client);
                // Shared pages this client put may go as well: ephemeral,
                // so the model's "miss forgets" rule covers them.
                model.ephemeral.retain(|k, _| k.0 != client);
            }
            Op::Evict { frames } => {
                let before = t.ephemeral_pages();
                let r = t.evict(u64::from(frames));
                assert_eq!(t.ephemeral_pages(), before - r.pages);
            }
            Op::Limit { frames } => t.store_mut().set_limit(u32::from(frames)),
            Op::BadPool { client, pool } => {
                let before = t.stats();
                let mut out = [0u8; PAGE_BYTES];
                let c = clients[client];
                assert_eq!(
                    t.put_page(c, PoolId(pool), Oid::default(), 0, &out),
                    Err(TmemError::NoSuchPool)
                );
                assert_eq!(
                    t.get_page(c, PoolId(pool), Oid::default(), 0, &mut out),
                    Err(TmemError::NoSuchPool)
                );
                assert_eq!(t.stats(), before);
            }
        }
        check_accounting(&t, &clients, &model);
    }
    for &c in &clients {
        t.destroy_client(c).unwrap();
    }
    assert_eq!(t.store().in_use(), 0);
    assert_eq!(t.stats().pages, 0);
}

proptest! {
    /// For any sequence of puts, gets, flushes, evictions and memory limits
    /// from three clients over persistent, private ephemeral and shared
    /// ephemeral pools: a persistent get returns exactly the last
    /// successful put until flushed (never lost, never altered); an
    /// ephemeral get returns the last put or misses, never older or another
    /// client's data, and a miss is final; a bad pool id changes nothing;
    /// and every client's and the host's `pages == puts - exclusive_gets -
    /// flushes - evictions`, with frames held equal to the store's.
    #[test]
    fn tmem_matches_model(
        ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 8 } else { 200 }),
        dedup in any::<bool>(),
        compress in any::<bool>(),
    ) {
        run(&ops, dedup, compress);
    }
}

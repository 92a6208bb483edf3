//! `hvmem-tmem-pool` put / get / flush of 100k pages, side by side with two
//! baselines, a `std::collections::HashMap<(pool, oid, index), Box<[u8; 4096]>>`
//! (SipHash, a heap allocation per page) and a slab of pages indexed by a
//! `HashMap` with `rustc-hash`'s Fx hash (`slab_fxhash`: no allocation per
//! page, a free list of slots), and with a plain 4 KiB `memcpy` as the floor.
//!
//! Every contender handles the same 100 000 distinct keys (64 pages per
//! object, 1563 objects) and copies whole 4 KiB pages in and out. tmem keeps
//! its pages in a persistent pool (nothing is evicted) over a
//! `SliceStore` of 100 000 frames; the HashMap allocates a `Box` per page.
//! The `memcpy` floor copies the same pages into (put) or out of (get) an
//! array of 100 000 pages, with no index at all.
//!
//! | group | one iteration |
//! |---|---|
//! | `put_100k` | 100k puts into an empty pool / map / array (emptying it again is not timed) |
//! | `get_100k` | 100k gets (copies out) from a full pool / map / array |
//! | `flush_100k` | 100k flush_page / `remove` from a full pool / map, in the order the keys were put (refilling is not timed) |
//! | `flush_100k_shuffled` | the same 100k flushes in a shuffled order (one fixed permutation): no contender gains from the order the keys were put in |
//!
//! ```text
//! cargo bench -p hvmem-benches --bench tmem -- --warm-up-time 1 --measurement-time 5
//! ```
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "bench setup: a broken pool must stop the bench loudly"
)]

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hvmem_benches::rng::XorShift64;
use hvmem_tmem_pool::{
    ClientConfig, ClientId, GetOutcome, Oid, OwnedMemory, PAGE_BYTES, PoolId, SliceStore,
    StoreMemory, Tmem, TmemConfig, TmemLayout, Uuid, abi,
};
use hvmem_types::DomId;
use rustc_hash::FxHashMap;

const N: u32 = 100_000;
const PER_OBJECT: u32 = 64;
const SOURCES: usize = 16;

type Page = [u8; PAGE_BYTES];
type Key = (u32, [u64; 3], u32);

fn key(i: u32) -> (Oid, u32) {
    (Oid([u64::from(i / PER_OBJECT), 0x7a6b, 0]), i % PER_OBJECT)
}

fn map_key(i: u32) -> Key {
    let (oid, index) = key(i);
    (0, oid.0, index)
}

/// Sixteen distinct source pages.
fn sources() -> Vec<Page> {
    (0..SOURCES)
        .map(|s| {
            let mut p = [0u8; PAGE_BYTES];
            for (i, b) in p.iter_mut().enumerate() {
                *b = (i * 31 + s * 7) as u8;
            }
            p
        })
        .collect()
}

fn layout() -> TmemLayout {
    TmemLayout {
        clients: 1,
        pools: 1,
        pages: N as usize,
        objects: (N / PER_OBJECT + 1) as usize,
        frames: N as usize,
        dedup: false,
    }
}

fn fill(t: &mut Tmem<'_, SliceStore<'_>>, c: ClientId, p: PoolId, src: &[Page]) {
    for i in 0..N {
        let (oid, index) = key(i);
        t.put_page(c, p, oid, index, &src[i as usize % SOURCES])
            .expect("put");
    }
}

fn empty(t: &mut Tmem<'_, SliceStore<'_>>, c: ClientId, p: PoolId) {
    for o in 0..=u64::from(N / PER_OBJECT) {
        t.flush_object(c, p, Oid([o, 0x7a6b, 0])).expect("flush");
    }
}

/// The slab baseline: pages in one preallocated array, a free list of its
/// slots, and a fast-hash map from key to slot.
struct Slab {
    pages: Vec<Page>,
    free: Vec<u32>,
    index: FxHashMap<Key, u32>,
}

impl Slab {
    fn new(slots: u32) -> Self {
        let mut index = FxHashMap::default();
        index.reserve(slots as usize);
        Self {
            pages: vec![[0u8; PAGE_BYTES]; slots as usize],
            free: (0..slots).rev().collect(),
            index,
        }
    }

    /// Copies `page` in under `key`, over the old copy if there is one.
    fn put(&mut self, key: Key, page: &Page) -> Option<()> {
        let slot = match self.index.entry(key) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => *e.insert(self.free.pop()?),
        };
        self.pages[slot as usize].copy_from_slice(page);
        Some(())
    }

    fn get(&self, key: &Key, out: &mut Page) -> bool {
        match self.index.get(key) {
            Some(&slot) => {
                out.copy_from_slice(&self.pages[slot as usize]);
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, key: &Key) -> bool {
        match self.index.remove(key) {
            Some(slot) => {
                self.free.push(slot);
                true
            }
            None => false,
        }
    }
}

fn benches(c: &mut Criterion) {
    let src = sources();
    let mut array: Vec<Page> = vec![[0u8; PAGE_BYTES]; N as usize];
    let mut map: HashMap<Key, Box<Page>> = HashMap::new();
    let mut slab = Slab::new(N);
    let mut store = StoreMemory::new(N);
    let mut tables = OwnedMemory::new(&layout());
    let mut t = Tmem::new(TmemConfig::default(), store.store(), tables.borrow()).expect("tmem");
    let client = t
        .create_client(DomId::new(1), ClientConfig::default())
        .expect("client");
    let pool = t
        .new_pool(client, Uuid::NONE, abi::PRIVATE_PERSISTENT)
        .expect("pool");

    let mut group = c.benchmark_group("put_100k");
    group.sample_size(10);
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            for i in 0..N as usize {
                array[i].copy_from_slice(black_box(&src[i % SOURCES]));
            }
            black_box(&mut array);
        });
    });
    group.bench_function("hashmap", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                map.clear();
                let start = Instant::now();
                for i in 0..N {
                    map.insert(map_key(i), Box::new(*black_box(&src[i as usize % SOURCES])));
                }
                total += start.elapsed();
            }
            total
        });
    });
    group.bench_function("slab_fxhash", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for i in 0..N {
                    slab.remove(&map_key(i));
                }
                let start = Instant::now();
                for i in 0..N {
                    slab.put(map_key(i), black_box(&src[i as usize % SOURCES]))
                        .expect("a free slot");
                }
                total += start.elapsed();
            }
            total
        });
    });
    group.bench_function("hvmem-tmem-pool", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                empty(&mut t, client, pool);
                let start = Instant::now();
                for i in 0..N {
                    let (oid, index) = key(i);
                    t.put_page(
                        client,
                        pool,
                        oid,
                        index,
                        black_box(&src[i as usize % SOURCES]),
                    )
                    .expect("put");
                }
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();

    // Full for the gets.
    empty(&mut t, client, pool);
    fill(&mut t, client, pool, &src);
    map.clear();
    for i in 0..N {
        map.insert(map_key(i), Box::new(src[i as usize % SOURCES]));
        slab.put(map_key(i), &src[i as usize % SOURCES])
            .expect("a free slot");
    }
    let mut out = [0u8; PAGE_BYTES];
    let mut group = c.benchmark_group("get_100k");
    group.sample_size(10);
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            for page in &array {
                out.copy_from_slice(black_box(page));
                black_box(&mut out);
            }
        });
    });
    group.bench_function("hashmap", |b| {
        b.iter(|| {
            for i in 0..N {
                out.copy_from_slice(&**map.get(black_box(&map_key(i))).expect("get"));
                black_box(&mut out);
            }
        });
    });
    group.bench_function("slab_fxhash", |b| {
        b.iter(|| {
            for i in 0..N {
                assert!(slab.get(black_box(&map_key(i)), &mut out));
                black_box(&mut out);
            }
        });
    });
    group.bench_function("hvmem-tmem-pool", |b| {
        b.iter(|| {
            for i in 0..N {
                let (oid, index) = key(black_box(i));
                let r = t.get_page(client, pool, oid, index, &mut out).expect("get");
                assert_eq!(r, GetOutcome::Hit);
                black_box(&mut out);
            }
        });
    });
    group.finish();

    let in_order: Vec<u32> = (0..N).collect();
    let mut shuffled = in_order.clone();
    let mut rng = XorShift64::new(0x7e_3e);
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.index(i + 1));
    }
    for (name, order) in [
        ("flush_100k", &in_order),
        ("flush_100k_shuffled", &shuffled),
    ] {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.bench_function("hashmap", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for i in 0..N {
                        map.insert(map_key(i), Box::new(src[i as usize % SOURCES]));
                    }
                    let start = Instant::now();
                    for &i in order {
                        black_box(map.remove(black_box(&map_key(i))));
                    }
                    total += start.elapsed();
                }
                total
            });
        });
        group.bench_function("slab_fxhash", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for i in 0..N {
                        slab.put(map_key(i), &src[i as usize % SOURCES])
                            .expect("a free slot");
                    }
                    let start = Instant::now();
                    for &i in order {
                        black_box(slab.remove(black_box(&map_key(i))));
                    }
                    total += start.elapsed();
                }
                total
            });
        });
        group.bench_function("hvmem-tmem-pool", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    empty(&mut t, client, pool);
                    fill(&mut t, client, pool, &src);
                    let start = Instant::now();
                    for &i in order {
                        let (oid, index) = key(black_box(i));
                        black_box(t.flush_page(client, pool, oid, index).expect("flush"));
                    }
                    total += start.elapsed();
                }
                total
            });
        });
        group.finish();
    }
}

criterion_group! {
    name = tmem;
    config = hvmem_benches::criterion();
    targets = benches
}
criterion_main!(tmem);

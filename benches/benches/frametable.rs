//! `hvmem-frametable` reference counting against its physical floor.
//!
//! The floors are what any reference count costs: one `AtomicU64` `fetch_add`
//! and one `fetch_sub` on the same word (`atomic_fetch_add_fetch_sub`), and the
//! same pair as two `compare_exchange` (`atomic_compare_exchange_pair`), the
//! primitive a count that checks its owner or its limit before it moves must
//! use, as Xen's `get_page` does. The frame table adds the range
//! lookup (two ranges with a hole between them), the owner check folded into
//! a CAS loop, and for typed references the type-state checks.
//!
//! | group | one iteration |
//! |---|---|
//! | `get_put` | `get_page` + `put_page` on one frame (floors: `fetch_add` + `fetch_sub`; two CAS) |
//! | `get_type_put_type` | `get_type(Writable)` + `put_type`, type count 0 -> 1 -> 0 with no validation (floors: the same pairs) |
//! | `contended_get_put_2_threads` | two threads each run `get_page` + `put_page` on the same frame; time per pair per thread (floors: both threads on one atomic) |
//!
//! ```text
//! cargo bench -p hvmem-benches --bench frametable -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(
    clippy::expect_used,
    reason = "bench setup: a broken table must stop the bench loudly"
)]

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hvmem_frametable::{FrameInfo, FrameTable, FrameType, Owner, TrustContents};
use hvmem_types::{DomId, FrameRange, Mfn};

const OWNER: Owner = Owner::Domain(DomId::new(1));
/// A frame in the second of the two ranges.
const MFN: Mfn = Mfn::new(0x10_0010);

static FRAMES: [FrameInfo; 512] = [const { FrameInfo::new() }; 512];

/// A table over two ranges with a hole between them, with `MFN` assigned to
/// `OWNER`.
fn table() -> FrameTable<'static> {
    let ranges = [
        FrameRange::new(Mfn::new(0x1000), 256).expect("range"),
        FrameRange::new(Mfn::new(0x10_0000), 256).expect("range"),
    ];
    let table = FrameTable::new(&FRAMES, &ranges).expect("layout");
    if table.state(MFN).expect("covered").owner.is_none() {
        table.assign(MFN, OWNER).expect("assign");
    }
    table
}

/// The floor: one fetch_add and one fetch_sub, with the orderings a
/// reference count needs (acquire on get, release on put).
fn atomic_pair(count: &AtomicU64) {
    black_box(count.fetch_add(1, Ordering::Acquire));
    black_box(count.fetch_sub(1, Ordering::Release));
}

/// Moves `count` by `delta` with a `compare_exchange` loop (one iteration
/// when uncontended).
fn cas_add(count: &AtomicU64, delta: u64, success: Ordering) {
    let mut current = count.load(Ordering::Relaxed);
    while let Err(seen) = count.compare_exchange_weak(
        current,
        current.wrapping_add(delta),
        success,
        Ordering::Relaxed,
    ) {
        current = seen;
    }
}

/// The CAS floor: a count moved up and back down by a `compare_exchange`
/// loop each, with the orderings of [`atomic_pair`].
fn cas_pair(count: &AtomicU64) {
    cas_add(count, 1, Ordering::Acquire);
    cas_add(count, u64::MAX, Ordering::Release);
}

fn get_put(c: &mut Criterion) {
    let table = table();
    let floor = AtomicU64::new(1);
    let mut group = c.benchmark_group("get_put");
    group.bench_function("atomic_fetch_add_fetch_sub", |b| {
        b.iter(|| atomic_pair(black_box(&floor)));
    });
    group.bench_function("atomic_compare_exchange_pair", |b| {
        b.iter(|| cas_pair(black_box(&floor)));
    });
    group.bench_function("frametable", |b| {
        b.iter(|| {
            table
                .get_page(black_box(MFN), black_box(OWNER))
                .expect("get");
            let _ = black_box(table.put_page(black_box(MFN)).expect("put"));
        });
    });
    group.finish();
}

fn get_type_put_type(c: &mut Criterion) {
    let table = table();
    // The general reference that backs the type references.
    table.get_page(MFN, OWNER).expect("get");
    let floor = AtomicU64::new(1);
    let mut group = c.benchmark_group("get_type_put_type");
    group.bench_function("atomic_fetch_add_fetch_sub", |b| {
        b.iter(|| atomic_pair(black_box(&floor)));
    });
    group.bench_function("atomic_compare_exchange_pair", |b| {
        b.iter(|| cas_pair(black_box(&floor)));
    });
    group.bench_function("frametable", |b| {
        b.iter(|| {
            table
                .get_type(black_box(MFN), FrameType::Writable, &TrustContents)
                .expect("get_type");
            table
                .put_type(black_box(MFN), &TrustContents)
                .expect("put_type");
        });
    });
    group.finish();
    let _ = table.put_page(MFN).expect("put");
}

/// Runs `pair` `iters` times on each of two threads at once; the time per
/// pair per thread.
fn on_two_threads(iters: u64, pair: &(dyn Fn() + Sync)) -> Duration {
    let start = Barrier::new(2);
    thread::scope(|scope| {
        let other = scope.spawn(|| {
            start.wait();
            for _ in 0..iters {
                pair();
            }
        });
        start.wait();
        let began = Instant::now();
        for _ in 0..iters {
            pair();
        }
        other.join().expect("thread");
        began.elapsed()
    })
}

fn contended_get_put(c: &mut Criterion) {
    let table = table();
    let floor = AtomicU64::new(1);
    let mut group = c.benchmark_group("contended_get_put_2_threads");
    group.bench_function("atomic_fetch_add_fetch_sub", |b| {
        b.iter_custom(|iters| on_two_threads(iters, &|| atomic_pair(&floor)));
    });
    group.bench_function("atomic_compare_exchange_pair", |b| {
        b.iter_custom(|iters| on_two_threads(iters, &|| cas_pair(&floor)));
    });
    group.bench_function("frametable", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, &|| {
                table.get_page(MFN, OWNER).expect("get");
                let _ = black_box(table.put_page(MFN).expect("put"));
            })
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = hvmem_benches::criterion();
    targets = get_put, get_type_put_type, contended_get_put
}
criterion_main!(benches);

//! The physical floors of the page-table groups: what touching the entries
//! alone costs, with no table walk, no validation and no allocation.
//!
//! Each floor runs in the criterion group of the workload it bounds (the
//! group names of `pagetable.rs` and `pagetable_aarch64.rs`), so that
//! `cargo xtask bench-summary` puts it in the same row:
//!
//! | function | groups | one iteration |
//! |---|---|---|
//! | `floor_sequential_pte_store` | `map_1g_of_4k`, `unmap_1g_of_4k`, `protect_1g_of_4k`, `a64_map_1g_of_4k`, `a64_protect_1g` | 262 144 relaxed stores, one per 4 KiB page of 1 GiB, in address order into 512 tables' worth of entries |
//! | `floor_random_pte_load` | `translate_random`, `a64_translate_random` | one relaxed load of a random entry among those 262 144 |
//!
//! ```text
//! cargo bench -p hvmem-benches --bench pagetable_floors -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(
    clippy::indexing_slicing,
    reason = "indices are taken modulo the array length"
)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use hvmem_benches::rng::XorShift64;

/// Leaf entries that map 1 GiB with 4 KiB pages: 512 tables of 512.
const ENTRIES: usize = 1 << 18;

/// A present, writable leaf entry for frame `i` (the bits do not matter to
/// the floor; a constant pattern would let the compiler hoist work).
fn entry(i: usize) -> u64 {
    ((i as u64) << 12) | 0b11
}

/// Fills every entry once, in address order.
fn store_all(entries: &[AtomicU64], flip: u64) {
    for (i, e) in entries.iter().enumerate() {
        e.store(entry(i) ^ flip, Ordering::Relaxed);
    }
}

fn sequential_store(c: &mut Criterion, group: &str) {
    let entries: Vec<AtomicU64> = (0..ENTRIES).map(|_| AtomicU64::new(0)).collect();
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    let mut flip = 0;
    g.bench_function("floor_sequential_pte_store", |b| {
        b.iter(|| {
            flip ^= 1 << 1;
            store_all(black_box(&entries), flip);
        });
    });
    g.finish();
}

fn random_load(c: &mut Criterion, group: &str) {
    let entries: Vec<AtomicU64> = (0..ENTRIES).map(|i| AtomicU64::new(entry(i))).collect();
    let mut rng = XorShift64::new(0x7ab1e);
    let indices: Vec<usize> = (0..4096)
        .map(|_| rng.below(ENTRIES as u64) as usize)
        .collect();
    let mut g = c.benchmark_group(group);
    let mut i = 0;
    g.bench_function("floor_random_pte_load", |b| {
        b.iter(|| {
            i = (i + 1) % indices.len();
            black_box(entries[indices[i]].load(Ordering::Relaxed))
        });
    });
    g.finish();
}

fn floors(c: &mut Criterion) {
    for group in [
        "map_1g_of_4k",
        "unmap_1g_of_4k",
        "protect_1g_of_4k",
        "a64_map_1g_of_4k",
        "a64_protect_1g",
    ] {
        sequential_store(c, group);
    }
    for group in ["translate_random", "a64_translate_random"] {
        random_load(c, group);
    }
}

criterion_group! {
    name = benches;
    config = hvmem_benches::criterion();
    targets = floors
}
criterion_main!(benches);

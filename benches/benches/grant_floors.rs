//! The cold-cache floor of the grant copy group.
//!
//! `grant.rs` measures `GNTTABOP_copy` of 4 KiB against a hot `copy_within`
//! between the same two frames (`memcpy_floor`). A backend's grant copies
//! usually touch memory no cache holds, so this adds the other bound: a 4 KiB
//! copy whose source and destination walk page by page through 256 MiB
//! buffers each, so that every iteration misses the caches
//! (`memcpy_cold`), in the same criterion group, `copy_4k`.
//!
//! ```text
//! cargo bench -p hvmem-benches --bench grant_floors -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(
    clippy::indexing_slicing,
    reason = "offsets are taken modulo the buffer length"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

const PAGE: usize = 4096;
/// Pages in each buffer: 256 MiB, far beyond any last-level cache here.
const PAGES: usize = 1 << 16;
/// Pages skipped between iterations (odd, so every page is visited, and
/// large, so the hardware prefetcher does not follow).
const STRIDE: usize = 4099;

fn copy_4k(c: &mut Criterion) {
    let source = vec![0x5au8; PAGES * PAGE];
    let mut dest = vec![0u8; PAGES * PAGE];
    let mut g = c.benchmark_group("copy_4k");
    let mut page = 0;
    g.bench_function("memcpy_cold", |b| {
        b.iter(|| {
            page = (page + STRIDE) % PAGES;
            let at = page * PAGE;
            dest[at..at + PAGE].copy_from_slice(black_box(&source[at..at + PAGE]));
            black_box(&mut dest);
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = hvmem_benches::criterion();
    targets = copy_4k
}
criterion_main!(benches);

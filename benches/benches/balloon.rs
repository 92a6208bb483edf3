//! The virtio balloon device state machine, inflating and deflating 1 GiB.
//!
//! One iteration inflates all 262 144 4 KiB pages of a 1 GiB guest through
//! `BalloonDevice::inflate`, in requests of 256 little-endian PFNs (what
//! Linux sends), then deflates them all the same way, leaving the device as
//! it started. Criterion's throughput is set to the 524 288 page operations
//! of an iteration, so ns per page = iteration time / 524 288. The host
//! actions go to a counting closure (a VMM would `madvise` there).
//!
//! | function | PFN order | host pages |
//! |---|---|---|
//! | `sequential_4k` | ascending, so discards merge into 256-page runs | 4 KiB |
//! | `shuffled_4k` | a seeded permutation: every discard is one page | 4 KiB |
//! | `sequential_2m` | ascending | 2 MiB: a discard when the 512th piece arrives |
//! | `shuffled_2m` | a seeded permutation: pieces of a host page arrive in many requests | 2 MiB |
//!
//! ```text
//! cargo bench -p hvmem-benches --bench balloon -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(
    clippy::expect_used,
    reason = "bench setup: a refused request must stop the bench loudly"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hvmem_balloon_proto::virtio::Features;
use hvmem_balloon_proto::virtio::device::{
    BalloonDevice, DeviceConfig, HostAction, host_page_storage_words, piece_storage_words,
};
use hvmem_benches::rng::XorShift64;

/// 4 KiB pages in 1 GiB.
const PAGES: u64 = 1 << 18;
/// PFNs per request, as Linux sends them.
const BATCH: usize = 256;

/// The requests of one direction: 1024 buffers of 256 PFNs.
fn requests(shuffled: bool) -> Vec<Vec<u8>> {
    let mut pfns: Vec<u32> = (0..PAGES as u32).collect();
    if shuffled {
        let mut rng = XorShift64::new(0x5eed_0b10);
        for i in (1..pfns.len()).rev() {
            pfns.swap(i, rng.index(i + 1));
        }
    }
    pfns.chunks(BATCH)
        .map(|c| c.iter().flat_map(|p| p.to_le_bytes()).collect())
        .collect()
}

fn device(host_page_shift: u32) -> BalloonDevice<Vec<u64>> {
    let config = DeviceConfig {
        offered: Features::VERSION_1 | Features::MUST_TELL_HOST,
        guest_pages: PAGES,
        host_page_shift,
        require_must_tell_host: false,
        first_hint_id: 2,
        legacy_big_endian: false,
    };
    let mut dev = BalloonDevice::new(
        config,
        vec![0; piece_storage_words(PAGES)],
        vec![0; host_page_storage_words(PAGES, host_page_shift)],
    )
    .expect("device");
    dev.negotiate(config.offered).expect("features");
    dev.driver_ok().expect("driver ok");
    dev
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("inflate_deflate_1gib");
    group.throughput(Throughput::Elements(2 * PAGES));
    for (name, shuffled, shift) in [
        ("sequential_4k", false, 12),
        ("shuffled_4k", true, 12),
        ("sequential_2m", false, 21),
        ("shuffled_2m", true, 21),
    ] {
        let batches = requests(shuffled);
        let mut dev = device(shift);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut actions = 0u64;
                let mut count = |a: HostAction| {
                    actions += black_box(matches!(a, HostAction::Discard { .. }) as u64);
                };
                for req in &batches {
                    dev.inflate(black_box(req), &mut count).expect("inflate");
                }
                for req in &batches {
                    dev.deflate(black_box(req), &mut count).expect("deflate");
                }
                actions
            });
        });
        assert_eq!(dev.inflated_pages(), 0);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = hvmem_benches::criterion();
    targets = bench
}
criterion_main!(benches);

//! A heap under a seeded workload: how fragmented it gets, and how much of it
//! a guest could still get as 2 MiB and 1 GiB blocks.
//!
//! `cargo run --release -p hvmem-buddy --example fragmentation`

#![allow(clippy::expect_used)] // an example: a failure here is a bug to see

use hvmem_buddy::{BuddyAllocator, Contents, DEFAULT_MAX_ORDER, Stats, metadata_words};
use hvmem_types::{FrameRange, Mfn, PageOrder};

/// xorshift64*: a seeded, dependency-free source of workload decisions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn report(title: &str, s: &Stats) {
    println!("== {title}");
    print!("{s}");
    for (name, order) in [("2 MiB", PageOrder::SIZE_2M), ("1 GiB", PageOrder::SIZE_1G)] {
        let frag = s
            .fragmentation_index(order)
            .map_or("- (a block is free)".to_string(), |f| format!("{f}‰"));
        println!(
            "{name} blocks available: {:>6}   fragmentation index: {frag}",
            s.usable_frames(order) >> order.get()
        );
    }
    println!();
}

fn main() {
    // 4 GiB of RAM in two NUMA nodes, the first with a firmware hole at 3 MiB.
    let node0 = FrameRange::new(Mfn::new(0x100), (2 << 18) - 0x100).expect("range");
    let node1 = FrameRange::new(Mfn::new(2 << 18), 2 << 18).expect("range");
    let mut meta0 = vec![0u64; metadata_words(node0.len())];
    let mut meta1 = vec![0u64; metadata_words(node1.len())];
    let mut heap: BuddyAllocator<'_> = BuddyAllocator::new(DEFAULT_MAX_ORDER).expect("max order");
    heap.add_zone(node0, &mut meta0, Contents::Clean)
        .expect("zone");
    heap.add_zone(node1, &mut meta1, Contents::Clean)
        .expect("zone");
    heap.reserve(FrameRange::new(Mfn::new(0x300), 0x80).expect("range"))
        .expect("firmware hole");
    report("boot", &heap.stats());

    // Guests come and go: a working set of mixed-order blocks (mostly single
    // frames, some 2 MiB superpages) grows to ~3 GiB, then shrinks to a third
    // in random order.
    let mut rng = Rng(0x5eed);
    let mut live: Vec<(Mfn, PageOrder)> = Vec::new();
    let target = 3 << 18;
    let mut used = 0u64;
    while used < target {
        let k = match rng.next() % 100 {
            0..=69 => 0,
            70..=89 => (rng.next() % 4) as u8,
            _ => 9,
        };
        let order = PageOrder::new(k).expect("order");
        match heap.alloc(order) {
            Ok(mfn) => {
                live.push((mfn, order));
                used += order.frames();
            }
            Err(_) => break,
        }
    }
    while used > target / 3 {
        let i = (rng.next() % live.len() as u64) as usize;
        let (mfn, order) = live.swap_remove(i);
        heap.free(mfn, order).expect("free what was allocated");
        used -= order.frames();
    }
    report(
        "after the workload (3 GiB used, then freed down to 1 GiB)",
        &heap.stats(),
    );

    // The idle loop scrubs what the guests left behind, 64 MiB at a time.
    let mut rounds = 0;
    while heap.scrub(1 << 14, |_| {}).dirty_left > 0 {
        rounds += 1;
    }
    report(&format!("after {rounds} idle scrub rounds"), &heap.stats());

    for (mfn, order) in live.drain(..) {
        heap.free(mfn, order).expect("free what was allocated");
    }
    report(
        "everything freed (merged back into 1 GiB blocks)",
        &heap.stats(),
    );
}

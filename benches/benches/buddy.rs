//! `hvmem-buddy` side by side with the buddy allocators of crates.io.
//!
//! Eight heaps, each over 1 GiB of 4 KiB frames with blocks up to order 18
//! (see `hvmem_benches::buddy`), run the same workloads: `hvmem-buddy`
//! without and with hot lists, `buddy_system_allocator`, `buddy-alloc`,
//! `frame-alloc` without and with its per-CPU depot, `bitmap-allocator`, and
//! `floor-stack`, the physical floor (a pop and a push on a preallocated
//! stack per order, no heap at all). Criterion groups are
//! named by workload and functions by crate, so the output reads as a table:
//!
//! | group | one iteration |
//! |---|---|
//! | `single_frame_pristine` | one order-0 alloc+free pair on a heap whose 1 GiB is one free block |
//! | `single_frame_half_fragmented` | one order-0 alloc+free pair after every frame was allocated and every other one freed |
//! | `random_orders_0_9_x1000` | 1000 allocations of random orders 0-9, then 1000 frees in random order |
//! | `order9_pristine` | one order-9 (2 MiB) alloc+free pair on a pristine heap |
//! | `mixed_trace_x<pairs>` | a trace of mixed-order allocations and frees of random live blocks; the working set grows and shrinks |
//!
//! The batch groups declare their pair count as criterion throughput; time per
//! pair is the iteration time divided by it.
//!
//! ```text
//! cargo bench -p hvmem-benches --bench buddy -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(
    clippy::expect_used,
    reason = "bench setup: a broken heap must stop the bench loudly"
)]

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use hvmem_benches::buddy::workloads::{self, MixedTrace, RandomBatch};
use hvmem_benches::buddy::{
    BitmapHeap, BuddyAllocHeap, BuddySystemHeap, FloorStack, FrameAllocDepotHeap, FrameAllocHeap,
    FrameHeap, HvmemHeap, HvmemHotHeap,
};
use hvmem_types::PageOrder;

/// Seed of the random-orders batch.
const BATCH_SEED: u64 = 0x5eed_0001;
/// Seed of the mixed trace.
const TRACE_SEED: u64 = 0x5eed_0002;

/// A workload as criterion runs it on each heap.
trait Workload {
    /// The criterion group name.
    fn group(&self) -> String;

    /// Alloc+free pairs in one iteration.
    fn pairs(&self) -> usize;

    /// Brings a pristine heap to the state the workload starts from.
    fn prepare<H: FrameHeap>(&mut self, _heap: &mut H) {}

    /// One iteration; leaves the heap as `prepare` left it.
    fn run<H: FrameHeap>(&mut self, heap: &mut H);

    /// Checks, after measuring, that the heap is still as `prepare` left it.
    fn check<H: FrameHeap>(&mut self, heap: &mut H) {
        workloads::assert_pristine(heap);
    }
}

/// Order-0 alloc+free pairs, on a pristine or a half-fragmented heap.
struct SingleFrame {
    fragmented: bool,
}

impl Workload for SingleFrame {
    fn group(&self) -> String {
        if self.fragmented {
            "single_frame_half_fragmented".into()
        } else {
            "single_frame_pristine".into()
        }
    }

    fn pairs(&self) -> usize {
        1
    }

    fn prepare<H: FrameHeap>(&mut self, heap: &mut H) {
        if self.fragmented {
            workloads::half_fragment(heap);
        }
    }

    fn run<H: FrameHeap>(&mut self, heap: &mut H) {
        workloads::alloc_free(heap, PageOrder::ZERO);
    }

    fn check<H: FrameHeap>(&mut self, heap: &mut H) {
        if self.fragmented {
            workloads::assert_half_fragmented(heap);
        } else {
            workloads::assert_pristine(heap);
        }
    }
}

/// Order-9 (2 MiB) alloc+free pairs on a pristine heap.
struct Order9;

impl Workload for Order9 {
    fn group(&self) -> String {
        "order9_pristine".into()
    }

    fn pairs(&self) -> usize {
        1
    }

    fn run<H: FrameHeap>(&mut self, heap: &mut H) {
        workloads::alloc_free(heap, PageOrder::SIZE_2M);
    }
}

impl Workload for RandomBatch {
    fn group(&self) -> String {
        format!("random_orders_0_9_x{}", self.pairs())
    }

    fn pairs(&self) -> usize {
        RandomBatch::pairs(self)
    }

    fn run<H: FrameHeap>(&mut self, heap: &mut H) {
        RandomBatch::run(self, heap);
    }
}

impl Workload for MixedTrace {
    fn group(&self) -> String {
        format!("mixed_trace_x{}", self.pairs())
    }

    fn pairs(&self) -> usize {
        MixedTrace::pairs(self)
    }

    fn run<H: FrameHeap>(&mut self, heap: &mut H) {
        MixedTrace::run(self, heap);
    }
}

/// Runs `workload` on a fresh heap of each crate, in one criterion group.
fn compare<W: Workload>(c: &mut Criterion, workload: &mut W) {
    let mut group = c.benchmark_group(workload.group());
    group.throughput(Throughput::Elements(workload.pairs() as u64));
    let mut metadata = HvmemHeap::<0>::metadata();
    measure(&mut group, workload, HvmemHeap::<0>::new(&mut metadata));
    let mut metadata = HvmemHotHeap::metadata();
    measure(&mut group, workload, HvmemHotHeap::new(&mut metadata));
    measure(&mut group, workload, BuddySystemHeap::new());
    measure(&mut group, workload, BuddyAllocHeap::new());
    measure(&mut group, workload, FrameAllocHeap::new());
    measure(&mut group, workload, FrameAllocDepotHeap::with_depot());
    measure(&mut group, workload, BitmapHeap::new());
    measure(&mut group, workload, FloorStack::new());
    group.finish();
}

/// Prepares `heap`, measures `workload` on it, then checks the heap.
fn measure<W: Workload, H: FrameHeap>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    workload: &mut W,
    mut heap: H,
) {
    workload.prepare(&mut heap);
    group.bench_function(H::NAME, |b| b.iter(|| workload.run(&mut heap)));
    if !H::FLOOR {
        workload.check(&mut heap);
    }
}

fn buddy(c: &mut Criterion) {
    compare(c, &mut SingleFrame { fragmented: false });
    compare(c, &mut SingleFrame { fragmented: true });
    compare(
        c,
        &mut RandomBatch::new(BATCH_SEED, 1000, PageOrder::SIZE_2M),
    );
    compare(c, &mut Order9);
    compare(c, &mut MixedTrace::new(TRACE_SEED));
}

criterion_group! {
    name = benches;
    config = hvmem_benches::criterion();
    targets = buddy
}
criterion_main!(benches);

//! The workloads of the `buddy` bench, generic over [`FrameHeap`].
//!
//! Every workload leaves a heap in the state it found it in, so criterion can
//! repeat it on one heap; the random ones are drawn once, from a fixed seed,
//! and replayed identically on every heap and every iteration. Every block a
//! heap hands out goes through [`black_box`] before it is freed.

use std::hint::black_box;

use hvmem_types::PageOrder;

use super::{FRAMES, FrameHeap, MAX_ORDER};
use crate::rng::XorShift64;

/// A heap found no block in a workload that fits in memory: it is broken.
#[cold]
#[inline(never)]
fn out_of_memory(heap: &str) -> ! {
    panic!("{heap}: out of memory in a workload that fits");
}

/// A heap refused to free a block it handed out: it is broken.
#[cold]
#[inline(never)]
fn refused(heap: &str) -> ! {
    panic!("{heap}: refused to free a block it handed out");
}

/// A workload plan names a block it never allocated: the plan is broken.
#[cold]
#[inline(never)]
fn bad_plan() -> ! {
    panic!("workload plan refers to a block it did not allocate");
}

/// Allocates a block of `order`, which must succeed.
#[inline]
fn alloc<H: FrameHeap>(heap: &mut H, order: PageOrder) -> usize {
    let block = heap.alloc(order).unwrap_or_else(|| out_of_memory(H::NAME));
    black_box(block)
}

/// Frees a block, which must succeed.
///
/// # Safety
///
/// As [`FrameHeap::free`].
#[inline]
unsafe fn free<H: FrameHeap>(heap: &mut H, block: usize, order: PageOrder) {
    // SAFETY: forwarded from the caller.
    if !unsafe { heap.free(block, order) } {
        refused(H::NAME);
    }
}

/// One alloc+free pair of a block of `order`.
#[inline]
pub fn alloc_free<H: FrameHeap>(heap: &mut H, order: PageOrder) {
    let block = alloc(heap, order);
    // SAFETY: just allocated with this order.
    unsafe { free(heap, block, order) };
}

/// Brings a pristine heap to the half-fragmented state: every frame allocated
/// one at a time, then every other frame, by address, freed. Half the memory
/// is then free as single frames whose buddies are all allocated: order-0
/// free lists (or bitmaps) are as long as they get and nothing merges.
pub fn half_fragment<H: FrameHeap>(heap: &mut H) {
    let mut blocks = Vec::with_capacity(FRAMES);
    while let Some(block) = heap.alloc(PageOrder::ZERO) {
        blocks.push(block);
    }
    assert_eq!(blocks.len(), FRAMES, "{}: frames in 1 GiB", H::NAME);
    blocks.sort_unstable();
    for &block in blocks.iter().step_by(2) {
        // SAFETY: every block was allocated above as a single frame, and
        // `step_by` visits each once.
        unsafe { free(heap, block, PageOrder::ZERO) };
    }
}

/// Checks that a heap is pristine: its whole 1 GiB is one free block (taken
/// and given back).
pub fn assert_pristine<H: FrameHeap>(heap: &mut H) {
    let Some(block) = heap.alloc(MAX_ORDER) else {
        panic!("{}: not pristine after the workload", H::NAME);
    };
    // SAFETY: just allocated with this order.
    unsafe { free(heap, block, MAX_ORDER) };
}

/// Checks that a heap is still half-fragmented: no free block above order 0
/// and exactly half the frames free. Leaves every frame allocated.
pub fn assert_half_fragmented<H: FrameHeap>(heap: &mut H) {
    let order_1 = PageOrder::new(1).expect("order 1 exists");
    assert!(heap.alloc(order_1).is_none(), "{}: merged", H::NAME);
    let mut free = 0;
    while heap.alloc(PageOrder::ZERO).is_some() {
        free += 1;
    }
    assert_eq!(free, FRAMES / 2, "{}: free frames", H::NAME);
}

/// `count` allocations of random orders, then frees of all of them in a
/// random order.
#[derive(Debug)]
pub struct RandomBatch {
    orders: Vec<PageOrder>,
    /// Index into `orders` (and `blocks`) of each free, in free order.
    frees: Vec<(usize, PageOrder)>,
    blocks: Vec<usize>,
}

impl RandomBatch {
    /// A batch of `count` orders drawn uniformly from `0..=max_order`, and a
    /// random free order, from `seed`.
    #[must_use]
    pub fn new(seed: u64, count: usize, max_order: PageOrder) -> Self {
        let mut rng = XorShift64::new(seed);
        let orders: Vec<PageOrder> = (0..count)
            .map(|_| {
                let k = rng.below(u64::from(max_order.get()) + 1) as u8;
                PageOrder::new(k).expect("at most max_order")
            })
            .collect();
        let mut frees: Vec<(usize, PageOrder)> = orders.iter().copied().enumerate().collect();
        rng.shuffle(&mut frees);
        Self {
            orders,
            frees,
            blocks: Vec::with_capacity(count),
        }
    }

    /// Alloc+free pairs per run.
    #[must_use]
    pub fn pairs(&self) -> usize {
        self.orders.len()
    }

    /// Frames allocated at the peak of a run.
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.orders.iter().map(|order| order.frames()).sum()
    }

    /// Runs the batch on `heap`.
    pub fn run<H: FrameHeap>(&mut self, heap: &mut H) {
        self.blocks.clear();
        for &order in &self.orders {
            self.blocks.push(alloc(heap, order));
        }
        for &(i, order) in &self.frees {
            let block = self.blocks.get(i).copied().unwrap_or_else(|| bad_plan());
            // SAFETY: `blocks[i]` was allocated above with `orders[i]`, and
            // `frees` is a permutation, so it is freed once.
            unsafe { free(heap, block, order) };
        }
    }
}

/// One step of a [`MixedTrace`].
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Allocate a block of `order` into `slot`.
    Alloc { slot: u32, order: PageOrder },
    /// Free the block in `slot`, of `order`.
    Free { slot: u32, order: PageOrder },
}

/// Phases of a [`MixedTrace`]: steps, and the percentage of them that
/// allocate (the others free a random live block).
const PHASES: [(usize, u64); 4] = [(1500, 75), (1000, 35), (1500, 75), (1000, 25)];

/// A trace of allocations of mixed orders and frees of random live blocks,
/// whose working set grows, shrinks, grows and shrinks again, then is freed
/// in random order.
///
/// Orders: 55% single frames, 20% orders 1-3, 20% orders 4-8 and 5% 2 MiB
/// blocks (order 9).
#[derive(Debug)]
pub struct MixedTrace {
    steps: Vec<Step>,
    slots: Vec<usize>,
    allocs: usize,
    peak_frames: u64,
}

impl MixedTrace {
    /// The trace drawn from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut rng = XorShift64::new(seed);
        let mut steps = Vec::new();
        let mut live: Vec<(u32, PageOrder)> = Vec::new();
        let mut free_slots: Vec<u32> = Vec::new();
        let mut slots = 0u32;
        let (mut frames, mut peak_frames, mut allocs) = (0u64, 0u64, 0usize);
        for (count, alloc_percent) in PHASES {
            for _ in 0..count {
                if live.is_empty() || rng.below(100) < alloc_percent {
                    let order = Self::order(&mut rng);
                    let slot = free_slots.pop().unwrap_or_else(|| {
                        slots += 1;
                        slots - 1
                    });
                    live.push((slot, order));
                    steps.push(Step::Alloc { slot, order });
                    allocs += 1;
                    frames += order.frames();
                    peak_frames = peak_frames.max(frames);
                } else {
                    let (slot, order) = live.swap_remove(rng.index(live.len()));
                    free_slots.push(slot);
                    steps.push(Step::Free { slot, order });
                    frames -= order.frames();
                }
            }
        }
        rng.shuffle(&mut live);
        steps.extend(
            live.into_iter()
                .map(|(slot, order)| Step::Free { slot, order }),
        );
        Self {
            steps,
            slots: vec![0; slots as usize],
            allocs,
            peak_frames,
        }
    }

    fn order(rng: &mut XorShift64) -> PageOrder {
        let k = match rng.below(100) {
            0..55 => 0,
            55..75 => 1 + rng.below(3),
            75..95 => 4 + rng.below(5),
            _ => 9,
        };
        PageOrder::new(k as u8).expect("order at most 9")
    }

    /// Alloc+free pairs per run (every allocation is freed).
    #[must_use]
    pub fn pairs(&self) -> usize {
        self.allocs
    }

    /// Steps per run (twice the pairs).
    #[must_use]
    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// Frames allocated at the peak of a run.
    #[must_use]
    pub fn peak_frames(&self) -> u64 {
        self.peak_frames
    }

    /// Runs the trace on `heap`.
    pub fn run<H: FrameHeap>(&mut self, heap: &mut H) {
        for &step in &self.steps {
            match step {
                Step::Alloc { slot, order } => {
                    let block = alloc(heap, order);
                    match self.slots.get_mut(slot as usize) {
                        Some(held) => *held = block,
                        None => bad_plan(),
                    }
                }
                Step::Free { slot, order } => {
                    let block = self
                        .slots
                        .get(slot as usize)
                        .copied()
                        .unwrap_or_else(|| bad_plan());
                    // SAFETY: the trace frees a slot only after allocating
                    // into it with this order in this run, and once.
                    unsafe { free(heap, block, order) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_trace_frees_every_allocation_once_and_fits() {
        let trace = MixedTrace::new(42);
        let mut live = vec![None; trace.slots.len()];
        for step in &trace.steps {
            match *step {
                Step::Alloc { slot, order } => {
                    assert!(live[slot as usize].replace(order).is_none());
                }
                Step::Free { slot, order } => {
                    assert_eq!(live[slot as usize].take(), Some(order));
                }
            }
        }
        assert!(live.iter().all(Option::is_none));
        assert_eq!(trace.steps(), 2 * trace.pairs());
        assert!(trace.peak_frames() <= FRAMES as u64 / 2);
    }

    #[test]
    fn random_batch_frees_each_block_once() {
        let batch = RandomBatch::new(7, 1000, PageOrder::SIZE_2M);
        let mut seen = vec![false; batch.pairs()];
        for &(i, order) in &batch.frees {
            assert_eq!(batch.orders[i], order);
            assert!(!std::mem::replace(&mut seen[i], true));
        }
        assert!(seen.iter().all(|&s| s));
        assert!(batch.orders.iter().all(|o| *o <= PageOrder::SIZE_2M));
        assert!(batch.frames() <= FRAMES as u64 / 2);
    }
}

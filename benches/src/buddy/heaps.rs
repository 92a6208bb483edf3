//! The heaps: `hvmem-buddy` (with and without hot lists), the peers, and the
//! physical floor, each over 1 GiB of frames.

use core::fmt;
use core::num::NonZeroUsize;
use core::ptr::{self, NonNull};
use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};

use bitmap_allocator::{BitAlloc, BitAlloc1M};
use buddy_alloc::BuddyAllocParam;
use buddy_alloc::buddy_alloc::BuddyAlloc;
use buddy_system_allocator::FrameAllocator;
use frame_alloc::{
    DepotAllocator, InitError, NoCpuId, PageSize, PhysRange, PhysicalAllocator, Provenance,
    RegionInit, SummaryBuddyAllocator,
};
use hvmem_buddy::{BuddyAllocator, Contents, metadata_words};
use hvmem_types::{FrameRange, Mfn, PageOrder};

use super::{FRAME_SIZE, FRAMES, FrameHeap, HEAP_BYTES, MAX_ORDER};

/// Orders `0..=MAX_ORDER`, as the peers' const generics count them.
const ORDERS: usize = MAX_ORDER.get() as usize + 1;

/// The first frame number of the managed memory (for the crates that manage
/// frame numbers): the frame at 1 GiB, so that the 1 GiB block is naturally
/// aligned.
const FIRST_FRAME: usize = FRAMES;

/// Room for the metadata of the crates that keep it inside the memory they
/// manage (about 200 KiB for `buddy-alloc`, 70 KiB for `frame-alloc`).
const METADATA_SLACK: usize = 1 << 20;

/// `hvmem-buddy`'s [`BuddyAllocator`] with its default zone capacity, one zone
/// of 1 GiB added clean. `HOT` is its hot-list limit in frames per cached
/// order ([`BuddyAllocator::set_hot_frames`]): 0 (the default, Xen's
/// behaviour) merges every free at once.
pub struct HvmemHeap<'m, const HOT: u32 = 0> {
    heap: BuddyAllocator<'m>,
}

/// [`HvmemHeap`] with hot lists of 1024 frames (4 MiB) per cached order,
/// within Linux's usual per-CPU list sizes.
pub type HvmemHotHeap<'m> = HvmemHeap<'m, 1024>;

impl<'m, const HOT: u32> HvmemHeap<'m, HOT> {
    /// Metadata storage for the heap: [`metadata_words`] of 1 GiB of frames.
    #[must_use]
    pub fn metadata() -> Vec<u64> {
        vec![0; metadata_words(FRAMES as u64)]
    }

    /// A pristine heap keeping its metadata in `metadata` (from
    /// [`metadata`](Self::metadata)).
    #[must_use]
    pub fn new(metadata: &'m mut [u64]) -> Self {
        let mut heap = BuddyAllocator::new(MAX_ORDER).expect("MAX_ORDER is supported");
        let ram = FrameRange::new(Mfn::new(FIRST_FRAME as u64), FRAMES as u64)
            .expect("1 GiB at 1 GiB is a valid range");
        heap.add_zone(ram, metadata, Contents::Clean)
            .expect("one zone with metadata_words() of storage");
        heap.set_hot_frames(HOT);
        Self { heap }
    }
}

impl<const HOT: u32> fmt::Debug for HvmemHeap<'_, HOT> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HvmemHeap")
            .field("free_frames", &self.heap.free_frames())
            .field("hot_frames", &HOT)
            .finish()
    }
}

impl<const HOT: u32> FrameHeap for HvmemHeap<'_, HOT> {
    const NAME: &'static str = if HOT == 0 {
        "hvmem-buddy"
    } else {
        "hvmem-buddy+hot"
    };

    #[inline]
    fn alloc(&mut self, order: PageOrder) -> Option<usize> {
        self.heap.alloc(order).ok().map(|mfn| mfn.get() as usize)
    }

    #[inline]
    unsafe fn free(&mut self, block: usize, order: PageOrder) -> bool {
        self.heap.free(Mfn::new(block as u64), order).is_ok()
    }
}

/// `buddy_system_allocator`'s [`FrameAllocator`] (a `BTreeSet` of free blocks
/// per order) over the same frame numbers as [`HvmemHeap`].
pub struct BuddySystemHeap {
    heap: FrameAllocator<ORDERS>,
}

impl BuddySystemHeap {
    /// A pristine heap.
    #[must_use]
    pub fn new() -> Self {
        let mut heap = FrameAllocator::new();
        heap.add_frame(FIRST_FRAME, FIRST_FRAME + FRAMES);
        Self { heap }
    }
}

impl Default for BuddySystemHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for BuddySystemHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuddySystemHeap").finish_non_exhaustive()
    }
}

impl FrameHeap for BuddySystemHeap {
    const NAME: &'static str = "buddy_system_allocator";

    #[inline]
    fn alloc(&mut self, order: PageOrder) -> Option<usize> {
        self.heap.alloc(1 << order.get())
    }

    #[inline]
    unsafe fn free(&mut self, block: usize, order: PageOrder) -> bool {
        self.heap.dealloc(block, 1 << order.get());
        true
    }
}

/// A heap allocation standing in for physical memory, for the peers that keep
/// their metadata (and, for `buddy-alloc`, their free lists) inside it. Its
/// address is exposed, so pointers into it can be rebuilt from addresses.
struct Ram {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Ram {
    /// `bytes` of uninitialised memory aligned to `align`. Pages are only
    /// committed when touched.
    fn new(bytes: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(bytes, align).expect("a valid layout");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            handle_alloc_error(layout)
        };
        let _exposed = ptr.as_ptr().expose_provenance();
        Self { ptr, layout }
    }

    fn addr(&self) -> usize {
        self.ptr.addr().get()
    }

    fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for Ram {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// `buddy-alloc`'s [`BuddyAlloc`] over a real buffer, with leaf size 4 KiB:
/// free-list nodes live in the free frames, allocation bitmaps at the start of
/// the buffer. The buffer is sized so that exactly 1 GiB remains after them,
/// as one 1 GiB block. Blocks are named by address.
pub struct BuddyAllocHeap {
    heap: BuddyAlloc,
    // Dropped after `heap`, which points into it.
    _ram: Ram,
}

impl BuddyAllocHeap {
    /// A pristine heap.
    #[must_use]
    pub fn new() -> Self {
        let ram = Ram::new(HEAP_BYTES + METADATA_SLACK, FRAME_SIZE);
        let base = ram.ptr.as_ptr().cast_const();
        // SAFETY: the buffer is ours, `ram.len()` bytes long, and nothing else
        // uses it; the probe is dropped before the real heap is built.
        let probe = unsafe { BuddyAlloc::new(BuddyAllocParam::new(base, ram.len(), FRAME_SIZE)) };
        let metadata = ram.len() - probe.available_bytes();
        let len = HEAP_BYTES + metadata;
        assert!(len <= ram.len(), "buddy-alloc metadata outgrew the slack");
        // SAFETY: as above, over the first `len <= ram.len()` bytes; the probe
        // is no longer used.
        let heap = unsafe { BuddyAlloc::new(BuddyAllocParam::new(base, len, FRAME_SIZE)) };
        assert_eq!(
            heap.available_bytes(),
            HEAP_BYTES,
            "buddy-alloc must manage exactly 1 GiB"
        );
        Self { heap, _ram: ram }
    }
}

impl Default for BuddyAllocHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for BuddyAllocHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuddyAllocHeap")
            .field("available_bytes", &self.heap.available_bytes())
            .finish()
    }
}

impl FrameHeap for BuddyAllocHeap {
    const NAME: &'static str = "buddy-alloc";

    #[inline]
    fn alloc(&mut self, order: PageOrder) -> Option<usize> {
        let block = self.heap.malloc(FRAME_SIZE << order.get());
        (!block.is_null()).then(|| block.expose_provenance())
    }

    #[inline]
    unsafe fn free(&mut self, block: usize, _order: PageOrder) -> bool {
        self.heap.free(ptr::with_exposed_provenance_mut(block));
        true
    }
}

/// Pointers into [`Ram`] from the addresses `frame-alloc` works with: the
/// "recover exposed provenance" strategy its docs and example describe for a
/// pool that is a host allocation.
#[derive(Debug)]
pub struct ExposedProvenance;

// SAFETY: `create` is only called by `frame-alloc` for addresses inside a `Ram`
// buffer (whose provenance `Ram::new` exposed) that the heap owns, and the
// recovered pointer covers that whole buffer; `destroy` ends nothing, as the
// trait allows for this strategy.
unsafe impl Provenance for ExposedProvenance {
    unsafe fn create(phys: usize) -> NonNull<u8> {
        // SAFETY: `phys` is inside a live `Ram` buffer, so not null.
        unsafe { NonNull::new_unchecked(ptr::with_exposed_provenance_mut(phys)) }
    }

    unsafe fn destroy<T>(ptr: NonNull<T>) -> usize {
        ptr.addr().get()
    }
}

/// `frame-alloc`'s base frame.
const BASE_PAGE: PageSize = PageSize::from_log2(FRAME_SIZE.trailing_zeros() as u8);

/// `frame-alloc`'s lock-free buddy.
type SummaryBuddy = SummaryBuddyAllocator<ORDERS, ExposedProvenance>;

/// `frame-alloc`'s per-CPU depot in front of its buddy, one CPU: a magazine of
/// 128 single frames and a shared depot of 512 (the crate's defaults).
type Depot = DepotAllocator<SummaryBuddy, NoCpuId, 1>;

/// `frame-alloc` over a real buffer: its [`SummaryBuddyAllocator`] (per-order
/// bitmaps with a summary level, lock-free) alone, or with its per-CPU
/// [`DepotAllocator`] in front (`FrameAllocHeap<Depot>`, see
/// [`FrameAllocDepotHeap`]). Its bitmap sits in the frames just past the
/// 1 GiB it manages, so the 1 GiB stays one aligned block. Blocks are named
/// by address.
pub struct FrameAllocHeap<A = SummaryBuddy> {
    heap: A,
    // Dropped after `heap`, which points into it.
    _ram: Ram,
}

/// `frame-alloc` with its per-CPU depot of single frames.
pub type FrameAllocDepotHeap = FrameAllocHeap<Depot>;

impl FrameAllocHeap {
    /// A pristine heap.
    #[must_use]
    pub fn new() -> Self {
        Self::over(SummaryBuddyAllocator::new(BASE_PAGE))
    }
}

impl FrameAllocDepotHeap {
    /// A pristine heap with empty caches.
    #[must_use]
    pub fn with_depot() -> Self {
        Self::over(DepotAllocator::new(
            BASE_PAGE,
            SummaryBuddyAllocator::new(BASE_PAGE),
        ))
    }
}

impl<A: RegionInit> FrameAllocHeap<A> {
    /// Initialises `heap`, not yet initialised, over a fresh 1 GiB.
    fn over(heap: A) -> Self {
        let ram = Ram::new(HEAP_BYTES + METADATA_SLACK, HEAP_BYTES);
        let base = ram.addr();
        // Initialise over 1 GiB plus a bitmap host range after it, the host
        // exactly as large as the bitmap: `try_init` says how large when it
        // refuses, and leaves the allocator untouched.
        let mut bitmap = FRAME_SIZE;
        loop {
            assert!(
                HEAP_BYTES + bitmap <= ram.len(),
                "frame-alloc metadata outgrew the slack"
            );
            let host = PhysRange {
                base: base + HEAP_BYTES,
                len: bitmap,
            };
            // SAFETY: the span and host range are inside `ram`, which the heap
            // owns and nothing else touches; `ExposedProvenance` reaches it.
            // Single-threaded, and retried only after a refusal.
            match unsafe { heap.try_init(base, HEAP_BYTES + bitmap, &[host]) } {
                Ok(()) => break,
                Err(InitError::MetadataWontFit { required_bytes }) if required_bytes > bitmap => {
                    bitmap = required_bytes;
                }
                Err(error) => panic!("frame-alloc init failed: {error:?}"),
            }
        }
        // SAFETY: the first 1 GiB of `ram`, inside the span, frame-aligned,
        // reserved until now, owned by the heap.
        unsafe { heap.add_usable(base, HEAP_BYTES) };
        Self { heap, _ram: ram }
    }
}

impl Default for FrameAllocHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl<A> fmt::Debug for FrameAllocHeap<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAllocHeap").finish_non_exhaustive()
    }
}

/// The physical floor: no allocator at all, a preallocated stack of blocks
/// per order, so that an alloc is a pop and a free a push. The stack of order
/// `k` holds every `2^k`-aligned block of the 1 GiB, so the stacks of
/// different orders overlap: this is the cost of handing out a block, not a
/// heap (it never splits or merges, and the workloads' state checks are
/// skipped for it, see [`FrameHeap::FLOOR`]).
pub struct FloorStack {
    stacks: Vec<Vec<usize>>,
}

impl FloorStack {
    /// Stacks full of every block of every order.
    #[must_use]
    pub fn new() -> Self {
        let stacks = (0..ORDERS)
            .map(|k| {
                (0..FRAMES >> k)
                    .rev()
                    .map(|b| FIRST_FRAME + (b << k))
                    .collect()
            })
            .collect();
        Self { stacks }
    }
}

impl Default for FloorStack {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FloorStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FloorStack").finish_non_exhaustive()
    }
}

impl FrameHeap for FloorStack {
    const NAME: &'static str = "floor-stack";
    const FLOOR: bool = true;

    #[inline]
    fn alloc(&mut self, order: PageOrder) -> Option<usize> {
        self.stacks.get_mut(usize::from(order.get()))?.pop()
    }

    #[inline]
    unsafe fn free(&mut self, block: usize, order: PageOrder) -> bool {
        match self.stacks.get_mut(usize::from(order.get())) {
            Some(stack) => {
                stack.push(block);
                true
            }
            None => false,
        }
    }
}

/// `bitmap-allocator`'s [`BitAlloc1M`] (a segment tree of 16-bit leaves, as
/// rCore's frame allocator uses it) over the 1 GiB of frames, one bit each.
/// Blocks are frame numbers; `alloc_contiguous` finds an aligned run.
pub struct BitmapHeap {
    bits: Box<BitAlloc1M>,
}

impl BitmapHeap {
    /// A pristine heap.
    #[must_use]
    pub fn new() -> Self {
        let mut bits = Box::new(BitAlloc1M::DEFAULT);
        bits.insert(FIRST_FRAME..FIRST_FRAME + FRAMES);
        Self { bits }
    }
}

impl Default for BitmapHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for BitmapHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitmapHeap").finish_non_exhaustive()
    }
}

impl FrameHeap for BitmapHeap {
    const NAME: &'static str = "bitmap-allocator";

    #[inline]
    fn alloc(&mut self, order: PageOrder) -> Option<usize> {
        if order.get() == 0 {
            self.bits.alloc()
        } else {
            self.bits
                .alloc_contiguous(None, frames(order).get(), usize::from(order.get()))
        }
    }

    #[inline]
    unsafe fn free(&mut self, block: usize, order: PageOrder) -> bool {
        if order.get() == 0 {
            self.bits.dealloc(block)
        } else {
            self.bits.dealloc_contiguous(block, frames(order).get())
        }
    }
}

/// `2^order` as a frame count.
#[inline]
fn frames(order: PageOrder) -> NonZeroUsize {
    NonZeroUsize::new(1 << order.get()).unwrap_or(NonZeroUsize::MIN)
}

/// The name each `frame-alloc` configuration runs under.
pub trait FrameAllocName {
    /// The criterion function name.
    const NAME: &'static str;
}

impl FrameAllocName for SummaryBuddy {
    const NAME: &'static str = "frame-alloc";
}

impl FrameAllocName for Depot {
    const NAME: &'static str = "frame-alloc+depot";
}

impl<A: PhysicalAllocator + FrameAllocName> FrameHeap for FrameAllocHeap<A> {
    const NAME: &'static str = A::NAME;

    #[inline]
    fn alloc(&mut self, order: PageOrder) -> Option<usize> {
        self.heap.allocate_physical(BASE_PAGE, frames(order)).ok()
    }

    #[inline]
    unsafe fn free(&mut self, block: usize, order: PageOrder) -> bool {
        // SAFETY: the caller passes a live block of this heap with the order
        // (so the frame count) it was allocated with.
        unsafe {
            self.heap
                .deallocate_physical(BASE_PAGE, frames(order), block)
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates a frame and an order-9 block (so no 1 GiB block is left),
    /// frees them, and checks that exactly one 1 GiB block is back.
    fn smoke<H: FrameHeap>(heap: &mut H) {
        let frame = heap.alloc(PageOrder::ZERO).expect("a frame");
        let block = heap.alloc(PageOrder::SIZE_2M).expect("a 2 MiB block");
        assert!(heap.alloc(MAX_ORDER).is_none(), "{}", H::NAME);
        // SAFETY: both blocks are live, freed once with their orders.
        unsafe {
            assert!(heap.free(block, PageOrder::SIZE_2M));
            assert!(heap.free(frame, PageOrder::ZERO));
        }
        let all = heap.alloc(MAX_ORDER).expect("everything merged back");
        assert!(heap.alloc(PageOrder::ZERO).is_none(), "{}", H::NAME);
        // SAFETY: live, freed once.
        assert!(unsafe { heap.free(all, MAX_ORDER) });
    }

    #[test]
    fn every_heap_manages_exactly_one_gib() {
        let mut metadata = HvmemHeap::<0>::metadata();
        smoke(&mut HvmemHeap::<0>::new(&mut metadata));
        let mut metadata = HvmemHotHeap::metadata();
        smoke(&mut HvmemHotHeap::new(&mut metadata));
        smoke(&mut BuddySystemHeap::new());
        smoke(&mut BuddyAllocHeap::new());
        smoke(&mut FrameAllocHeap::new());
        smoke(&mut FrameAllocDepotHeap::with_depot());
        smoke(&mut BitmapHeap::new());
    }

    #[test]
    fn the_floor_hands_out_aligned_blocks_last_in_first_out() {
        let mut floor = FloorStack::new();
        let block = floor.alloc(PageOrder::SIZE_2M).expect("a 2 MiB block");
        assert_eq!(block % (1 << 9), 0);
        assert!((FIRST_FRAME..FIRST_FRAME + FRAMES).contains(&block));
        // SAFETY: the floor checks nothing; the block goes back on its stack.
        assert!(unsafe { floor.free(block, PageOrder::SIZE_2M) });
        assert_eq!(floor.alloc(PageOrder::SIZE_2M), Some(block));
        let whole = floor.alloc(MAX_ORDER).expect("the one 1 GiB block");
        assert_eq!(whole, FIRST_FRAME);
        assert_eq!(floor.alloc(MAX_ORDER), None, "one 1 GiB block only");
    }

    #[test]
    fn frame_counts_are_powers_of_two() {
        assert_eq!(frames(PageOrder::ZERO).get(), 1);
        assert_eq!(frames(PageOrder::SIZE_2M).get(), 512);
        assert_eq!(frames(MAX_ORDER).get(), FRAMES);
    }
}

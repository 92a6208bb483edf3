//! The `buddy` bench's heaps and workloads.
//!
//! Every heap manages the same 1 GiB of 4 KiB frames, blocks of orders 0 to 18
//! (one 1 GiB block when everything is free), and is driven through
//! [`FrameHeap`]: allocate `2^order` frames, free them with the same order. The
//! workloads in [`workloads`] are generic over that trait, so every crate runs
//! exactly the same sequence of requests.
//!
//! Metadata is not counted in the 1 GiB: `hvmem-buddy` and
//! `buddy_system_allocator` keep it outside the frames they manage;
//! `buddy-alloc` and `frame-alloc` carve it out of the memory they are given,
//! so they get a real buffer of 1 GiB plus exactly what their metadata takes.

mod heaps;
pub mod workloads;

pub use heaps::{
    BitmapHeap, BuddyAllocHeap, BuddySystemHeap, FloorStack, FrameAllocDepotHeap, FrameAllocHeap,
    HvmemHeap, HvmemHotHeap,
};

use hvmem_types::PageOrder;

/// Bytes per frame.
pub const FRAME_SIZE: usize = 4096;

/// The largest order every heap is configured for: 1 GiB blocks, Xen's
/// `MAX_ORDER`.
pub const MAX_ORDER: PageOrder = PageOrder::SIZE_1G;

/// Frames every heap manages: 1 GiB.
pub const FRAMES: usize = 1 << MAX_ORDER.get();

/// Bytes every heap manages.
pub const HEAP_BYTES: usize = FRAMES * FRAME_SIZE;

/// A frame allocator as the bench drives it.
///
/// A block is named by whatever the crate hands out (a frame number or an
/// address), as a `usize`.
pub trait FrameHeap {
    /// The crate's name: the criterion function name.
    const NAME: &'static str;

    /// Whether this is a physical floor rather than a heap: it hands blocks
    /// out but does not split or merge, so the workloads' checks of the
    /// heap's state afterwards do not apply to it.
    const FLOOR: bool = false;

    /// Allocates `2^order` contiguous, naturally aligned frames; `None` when
    /// the heap has no free block that large.
    fn alloc(&mut self, order: PageOrder) -> Option<usize>;

    /// Frees a block. Returns `false` if the crate refused (only
    /// `hvmem-buddy` checks its input and says so).
    ///
    /// # Safety
    ///
    /// `block` was returned by [`alloc`](Self::alloc) on this heap with this
    /// `order` and has not been freed since. (The peers trust their callers:
    /// a bad free corrupts them.)
    unsafe fn free(&mut self, block: usize, order: PageOrder) -> bool;
}

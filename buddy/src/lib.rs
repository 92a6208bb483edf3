//! A binary buddy allocator of machine frames for a hypervisor heap.
//!
//! `hvmem-buddy` hands out naturally aligned blocks of `2^order` 4 KiB machine
//! frames, as Xen's heap allocator does, in a `#![no_std]` crate with no
//! allocation of its own:
//!
//! - **Zones.** Up to `ZONES` frame ranges (a NUMA node each, or the memory
//!   below a DMA limit), each with any start and length. Allocations take any
//!   zone, prefer one, or insist on one ([`ZonePolicy`]).
//! - **O(1) per order level.** Intrusive doubly linked free lists per order,
//!   and a bit mask of non-empty orders: an allocation finds its order with one
//!   `trailing_zeros` and splits down; a free merges up with one byte read per
//!   level. Nothing scans memory in proportion to its size.
//! - **Caller-provided metadata**, 8.125 bytes per frame (0.198% of the
//!   memory managed): [`metadata_words`] sizes it. A zone has fewer than
//!   [`MAX_ZONE_FRAMES`] frames (1 TiB of 4 KiB frames), so its largest
//!   block is order 27.
//! - **Dirty frames.** A freed frame holds its last user's data until
//!   scrubbed. [`BuddyAllocator::alloc_clean`] never returns such a frame; an
//!   idle loop calls [`BuddyAllocator::scrub`] with a budget to clean free memory
//!   lazily; clean and dirty buddies still merge, keeping every dirty mark.
//! - **Reservations.** [`BuddyAllocator::reserve`] takes an exact range out of
//!   the pool (firmware holes, a guest's fixed memory), splitting around it.
//! - **Hot lists** (opt-in, [`BuddyAllocator::set_hot_frames`]): freed blocks
//!   of orders 0 to 9 wait unmerged on bounded LIFO lists and are handed
//!   out again first, as on Linux's per-CPU page lists, with no split or
//!   merge; they are merged whenever a larger block is needed.
//! - **A lock-free per-CPU cache** of single frames, [`FrameCache`],
//!   model-checked with loom. See its docs for the refill and drain pattern.
//! - **Untrusted input.** Every operation checks its arguments and returns a
//!   typed error, leaving the allocator unchanged: double frees, wrong orders,
//!   misaligned or foreign frames, reserving allocated memory. No input panics.
//!
//! # Example
//!
//! ```
//! use hvmem_buddy::{BuddyAllocator, Contents, metadata_words};
//! use hvmem_types::{FrameRange, Mfn, PageOrder};
//!
//! // 64 MiB of RAM at 16 MiB, with a firmware hole to keep out.
//! let ram = FrameRange::new(Mfn::new(0x1000), 0x4000).unwrap();
//! let mut metadata = vec![0u64; metadata_words(ram.len())];
//! // The type annotation is needed: Rust does not infer the default
//! // `ZONES` (4) from `BuddyAllocator::new` alone.
//! let mut heap: BuddyAllocator = BuddyAllocator::new(PageOrder::SIZE_1G).unwrap();
//! heap.add_zone(ram, &mut metadata, Contents::Clean).unwrap();
//! heap.reserve(FrameRange::new(Mfn::new(0x10a0), 0x20).unwrap()).unwrap();
//!
//! // A 2 MiB block is 512 frames, aligned to 512 frames.
//! let block = heap.alloc(PageOrder::SIZE_2M).unwrap();
//! assert!(block.is_aligned(PageOrder::SIZE_2M));
//!
//! // Freed memory is dirty until scrubbed...
//! heap.free(block, PageOrder::SIZE_2M).unwrap();
//! assert_eq!(heap.stats().dirty_frames, 512);
//! // ...and a double free is refused.
//! assert!(heap.free(block, PageOrder::SIZE_2M).is_err());
//! // An idle loop scrubs free memory, at most `budget` frames per call. The
//! // closure clears each frame; here it only counts them.
//! let mut scrubbed = 0;
//! let progress = heap.scrub(1024, |_mfn| scrubbed += 1);
//! assert_eq!((scrubbed, progress.dirty_left), (512, 0));
//! ```
//!
//! # What it does not do
//!
//! - **No locking.** Every method of [`BuddyAllocator`] takes `&mut self`:
//!   the embedder puts the allocator behind its own lock. [`FrameCache`] is
//!   the lock-free part, for single frames.
//! - **No claims or per-domain accounting.** That belongs to the frame table
//!   and the balloon policy.
//! - **No memory access.** Frames are numbers; the allocator never reads or
//!   writes them. Scrubbing happens in the caller's closure.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

mod allocator;
mod error;
mod meta;
mod percpu;
mod stats;
mod sync;
mod zone;

#[cfg(all(test, not(loom)))]
mod tests;

pub use allocator::{BuddyAllocator, ScrubProgress, ZoneId, ZonePolicy};
pub use error::{AddZoneError, AllocError, ConfigError, FreeError, ReleaseError, ReserveError};
pub use meta::{MAX_ZONE_FRAMES, metadata_bytes, metadata_words};
pub use percpu::FrameCache;
pub use stats::Stats;

use hvmem_types::PageOrder;

/// The largest maximum order an allocator can be configured with (30).
///
/// A zone has fewer than [`MAX_ZONE_FRAMES`] (`2^28 - 1`) frames, so no
/// zone ever holds a block of order 28 or more. With a maximum order of 28
/// to 30, such an allocation passes the order check and fails with
/// [`AllocError::OutOfMemory`], not [`AllocError::OrderTooLarge`]. The
/// largest block any zone can give is order 27 (512 GiB of 4 KiB frames).
pub const MAX_SUPPORTED_ORDER: PageOrder = match PageOrder::new(30) {
    Some(order) => order,
    None => PageOrder::ZERO,
};

/// Xen's `MAX_ORDER` on x86 and Arm: 1 GiB blocks of 4 KiB frames.
pub const DEFAULT_MAX_ORDER: PageOrder = PageOrder::SIZE_1G;

/// What the frames of a new zone hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Known to be zeroed (scrubbed at boot, or fresh from firmware that
    /// clears memory).
    Clean,
    /// Possibly someone's data: scrubbed lazily before clean allocations.
    Dirty,
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

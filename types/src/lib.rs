//! Names for the quantities a hypervisor memory subsystem passes around.
//!
//! Every hvmem crate speaks in these types instead of bare `u64`s, so that a
//! guest frame number can never be handed to a function that expects a machine
//! frame number, and so that every conversion that could overflow says so in its
//! signature (`Option` for checked arithmetic, `Result` where the reason matters).
//!
//! - [`Mfn`] machine frame number, [`Gfn`] guest frame number.
//! - [`PhysAddr`] host physical, [`GuestPhysAddr`] guest physical, [`VirtAddr`]
//!   virtual addresses.
//! - [`DomId`] Xen-style domain identifier, with the reserved ids of the ABI.
//! - [`PageOrder`] a power-of-two count of frames, [`PageSize`] the three x86/Arm
//!   4 KiB-granule leaf sizes, and the page-size constants.
//! - [`FrameRange`] a half-open range of machine frames, with its decomposition
//!   into naturally aligned power-of-two blocks.
//!
//! The crate has no logic beyond conversions; it is `#![no_std]` and has no
//! dependencies.
//!
//! # Example
//!
//! ```
//! use hvmem_types::{FrameRange, Mfn, PageOrder, PhysAddr};
//!
//! let mfn = Mfn::new(0x1234);
//! assert_eq!(mfn.to_phys(), Some(PhysAddr::new(0x1234_000)));
//! assert_eq!(PhysAddr::new(0x1234_567).frame(), mfn);
//!
//! // A 2 MiB superpage is an order-9 block that must be 512-frame aligned.
//! let order = PageOrder::new(9).unwrap();
//! assert_eq!(order.frames(), 512);
//! assert!(!Mfn::new(0x1234).is_aligned(order));
//!
//! // Break an arbitrary range into maximal naturally aligned blocks.
//! let range = FrameRange::new(Mfn::new(3), 13).unwrap();
//! let blocks: Vec<_> = range.aligned_blocks(PageOrder::new(18).unwrap()).collect();
//! assert_eq!(blocks, [
//!     (Mfn::new(3), PageOrder::new(0).unwrap()),
//!     (Mfn::new(4), PageOrder::new(2).unwrap()),
//!     (Mfn::new(8), PageOrder::new(3).unwrap()),
//! ]);
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

mod address;
mod domid;
mod frame;
mod order;
mod range;

pub use address::{GuestPhysAddr, PhysAddr, VirtAddr};
pub use domid::DomId;
pub use frame::{Gfn, Mfn};
pub use order::{PageOrder, PageSize};
pub use range::{AlignedBlocks, FrameRange};

/// log2 of the base page size.
pub const PAGE_SHIFT: u32 = 12;
/// The base page (frame) size in bytes: 4 KiB.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// A 2 MiB leaf (x86 PDE with PS, AArch64 level-2 block with a 4 KiB granule).
pub const SIZE_2M: u64 = 1 << 21;
/// A 1 GiB leaf (x86 PDPTE with PS, AArch64 level-1 block with a 4 KiB granule).
pub const SIZE_1G: u64 = 1 << 30;
/// Frames in a 2 MiB leaf.
pub const FRAMES_PER_2M: u64 = SIZE_2M / PAGE_SIZE;
/// Frames in a 1 GiB leaf.
pub const FRAMES_PER_1G: u64 = SIZE_1G / PAGE_SIZE;

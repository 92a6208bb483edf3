//! Sans-I/O balloon state machines for Xen and virtio.
//!
//! Ballooning moves memory between running guests: the host sets a target,
//! a driver inside the guest gives pages back or takes them again. Every
//! machine here takes events and returns actions; none does I/O, reads a
//! clock (time is a tick or a sleep the caller honours) or allocates
//! (per-page state lives in storage the caller hands in, sized by `const
//! fn`s), so any VMM or hypervisor can drive them.
//!
//! - [`xen::driver::BalloonDriver`]: the guest's Xen balloon driver
//!   (Linux `balloon.c`): KiB targets from xenstore, batches of
//!   `XENMEM_populate_physmap` / `XENMEM_decrease_reservation`, partial
//!   success, back-off and retry, cancellation, the static-max bound.
//! - [`xen::domain::HostMemory`]: the hypervisor's books: current pages,
//!   `max_pages`, outstanding claims (`XENMEM_claim_pages`).
//! - [`xen::toolstack::Toolstack`]: a policy sharing the host among domains
//!   within their dynamic min and max, reactive or predictive.
//! - [`xen::selfballoon::SelfBalloon`]: the guest setting its own target
//!   from its committed memory.
//! - [`virtio::device::BalloonDevice`] and [`virtio::driver::BalloonDriver`]:
//!   both sides of virtio-balloon: features and compact queue numbering,
//!   inflate/deflate with per-page state on the device (4 KiB pieces of
//!   larger host pages tracked across requests), statistics, free page
//!   hinting, page reporting, page poison.
//!
//! Every input from a guest or a toolstack is untrusted: each operation
//! returns a typed error and leaves the machine unchanged.
//!
//! # Threads and locking
//!
//! Every operation that changes a machine takes `&mut self`; the machines
//! hold no lock and use no atomics. The embedder serialises the calls. A
//! VMM that serves a device's queues (inflate, deflate, stats, hinting,
//! reporting) and its config accesses on several threads puts the whole
//! device behind one lock that all of those handlers take: the queues share
//! the device's per-page state, so one lock per queue is not enough.
//!
//! # Example
//!
//! A VMM serving a virtio balloon for a 64 MiB guest on 2 MiB hugepages:
//!
//! ```
//! use hvmem_balloon_proto::virtio::device::{
//!     BalloonDevice, DeviceConfig, HostAction, host_page_storage_words, piece_storage_words,
//! };
//! use hvmem_balloon_proto::virtio::Features;
//!
//! let guest_pages = 64 * 256; // 4 KiB pages
//! let config = DeviceConfig {
//!     offered: Features::VERSION_1 | Features::MUST_TELL_HOST | Features::STATS_VQ,
//!     guest_pages,
//!     host_page_shift: 21,
//!     require_must_tell_host: false,
//!     first_hint_id: 0x8000_0000,
//!     legacy_big_endian: false,
//! };
//! let mut pieces = vec![0u64; piece_storage_words(guest_pages)];
//! let mut host = vec![0u64; host_page_storage_words(guest_pages, 21)];
//! let mut dev = BalloonDevice::new(config, &mut pieces[..], &mut host[..]).unwrap();
//! dev.negotiate(Features::VERSION_1 | Features::MUST_TELL_HOST).unwrap();
//! dev.driver_ok().unwrap();
//! assert_eq!(dev.set_num_pages(1024), Ok(HostAction::ConfigChanged));
//!
//! // The guest inflates the first half of a 2 MiB host page: nothing can
//! // be discarded yet...
//! let pfns = |r: core::ops::Range<u32>| r.flat_map(u32::to_le_bytes).collect::<Vec<u8>>();
//! let mut actions = Vec::new();
//! dev.inflate(&pfns(512..768), |a| actions.push(a)).unwrap();
//! assert!(actions.is_empty());
//! // ...until the other half arrives, in a later request.
//! dev.inflate(&pfns(768..1024), |a| actions.push(a)).unwrap();
//! assert_eq!(actions, [HostAction::Discard { first_pfn: 512, pages: 512 }]);
//!
//! // Hostile input changes nothing: a double inflate, a page never inflated.
//! assert!(dev.inflate(&pfns(600..601), |_| unreachable!()).is_err());
//! assert!(dev.deflate(&pfns(0..1), |_| unreachable!()).is_err());
//! assert_eq!(dev.inflated_pages(), 512);
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

mod bitmap;
mod guest;
#[cfg(test)]
mod model;
pub mod virtio;
pub mod xen;

pub use bitmap::{StorageError, bitmap_words};
pub use guest::GuestPages;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

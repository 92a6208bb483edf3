//! A frame table for a hypervisor: for every machine frame, who owns it, how
//! many references exist, and what the frame is currently used as.
//!
//! This is what makes memory safe to share with guests. It follows Xen's
//! `struct page_info` array (`xen/arch/x86/include/asm/mm.h`) and the
//! reference protocol of `xen/arch/x86/mm.c` (`get_page`, `put_page`,
//! `_get_page_type`, `_put_page_type`):
//!
//! - **Ownership.** A frame is free, owned by exactly one domain, or owned by
//!   the host: [`FrameTable::assign`], [`release`](FrameTable::release),
//!   [`transfer`](FrameTable::transfer) and
//!   [`relinquish`](FrameTable::relinquish) move it between those states.
//! - **General references** ([`get_page`](FrameTable::get_page),
//!   [`put_page`](FrameTable::put_page), guard [`PageRef`]): taken only in
//!   the name of the frame's owner; the frame is freed when the last goes.
//! - **Typed references** ([`get_type`](FrameTable::get_type),
//!   [`put_type`](FrameTable::put_type), guard [`TypedRef`]): one
//!   [`FrameType`] at a time, changing only at type count zero, so a frame is
//!   never both writable and a page table. A page-table type is validated on
//!   its first reference and de-validated after its last, through a
//!   [`Validator`]; validation can be preempted and resumed.
//! - **Pinning** ([`pin`](FrameTable::pin), [`unpin`](FrameTable::unpin))
//!   holds a page-table type without a mapping.
//!
//! Counts saturate into errors, never wrap. A refused operation leaves the
//! frame unchanged, with one exception: [`FrameError::Preempted`] can leave a
//! partial validation behind, which the next get of the same type resumes.
//! Every operation is a lock-free compare-and-swap loop on the frame's two
//! atomic words; the [`frame`] module states the protocol: what values each
//! word holds and which memory ordering each access uses.
//!
//! The table is `#![no_std]` and allocates nothing: the embedder provides one
//! [`FrameInfo`] (24 bytes) per frame of the ranges it covers, holes between
//! ranges cost nothing. A record whose bytes are all zero is a free frame.
//!
//! # Rules for callers
//!
//! - **Share one table.** Every method takes `&self` and [`FrameTable`] is
//!   `Sync`: build it once at boot and give every CPU a shared reference.
//!   There is no lock to take around it.
//! - **Always pass the same validator.** The table does not remember which
//!   [`Validator`] validated a frame: the put that drops the last page-table
//!   reference de-validates through the validator it is given. So every
//!   get, put, pin, unpin and relinquish on one table must pass the same
//!   validator. A put with [`TrustContents`] on an L1 that `pv::PvValidator`
//!   validated skips the de-validation, and the references held by the
//!   table's entries are never dropped.
//! - **Do not spin on [`FrameError::ValidationInProgress`].** Another CPU is
//!   validating or de-validating the frame. Retry later, or return to the
//!   guest and restart the hypercall (a continuation). Never wait for it
//!   while holding a lock that the other CPU's validator may need.
//! - **Finish what [`FrameError::Preempted`] started.** Call the same get or
//!   pin again, with the same type, to resume the validation. Until it is
//!   resumed to the end, or [`relinquish`](FrameTable::relinquish) abandons
//!   it, the frame keeps one extra general reference and refuses other
//!   types.
//! - **Keep the [`FreeSink`] short.** It runs on the CPU that drops the last
//!   reference, inside that call. See its docs.
//! - **Owners.** The hypervisor's own frames belong to [`Owner::Host`].
//!   Reserved domain ids (including `DomId::XEN`) cannot own frames.
//!
//! # Example
//!
//! ```
//! use hvmem_frametable::{FrameError, FrameInfo, FrameTable, FrameType, Owner, TrustContents};
//! use hvmem_types::{DomId, FrameRange, Mfn};
//!
//! // Two ranges of RAM with a hole between them.
//! static FRAMES: [FrameInfo; 6] = [const { FrameInfo::new() }; 6];
//! let ranges = [
//!     FrameRange::new(Mfn::new(0x100), 4).unwrap(),
//!     FrameRange::new(Mfn::new(0x200), 2).unwrap(),
//! ];
//! let table = FrameTable::new(&FRAMES, &ranges)?;
//! let guest = Owner::Domain(DomId::new(1));
//! let other = Owner::Domain(DomId::new(2));
//! let frame = Mfn::new(0x201);
//!
//! table.assign(frame, guest)?;
//! // References are taken in the owner's name only.
//! assert_eq!(table.get_page(frame, other), Err(FrameError::WrongOwner { mfn: frame }));
//!
//! // A writable mapping holds a writable type reference...
//! let mapping = table.get_typed_ref(frame, guest, FrameType::Writable, &TrustContents)?;
//! // ...so the frame cannot become a page table meanwhile.
//! assert!(matches!(
//!     table.get_typed_ref(frame, guest, FrameType::L1, &TrustContents),
//!     Err(FrameError::TypeConflict { held: FrameType::Writable, .. })
//! ));
//! drop(mapping);
//!
//! // Once the writable use is gone, the type may change.
//! // `TrustContents` checks nothing; real guest tables are pinned with
//! // `pv::PvValidator` (feature `pagetable`), which checks every entry.
//! table.pin(frame, guest, FrameType::L1, &TrustContents)?;
//! assert!(table.state(frame)?.pinned);
//! assert_eq!(table.pin(frame, guest, FrameType::L1, &TrustContents),
//!            Err(FrameError::AlreadyPinned { mfn: frame }));
//! let _ = table.unpin(frame, guest, &TrustContents)?;
//!
//! // The guest gives the frame back; it is free again.
//! let _ = table.release(frame, guest)?;
//! assert_eq!(table.state(frame)?.owner, None);
//! assert_eq!(table.state(Mfn::new(0x150)), Err(FrameError::OutOfRange { mfn: Mfn::new(0x150) }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `model`: the reference model and operation decoder that the crate's
//!   property test and the `frametable` fuzz target check the table against.
//! - `pagetable`: the `pv` module, hvmem-pagetable's PV guest-table
//!   validation over this table (its `FrameOracle` and `PvValidator`, a
//!   [`Validator`] for L1..L4 page tables).
//! - `grant`: the `grant` module, hvmem-grant's frame references over this
//!   table (a `GrantFrames` implementation).
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(test)]
extern crate std;

mod error;
pub mod frame;
mod frame_type;
mod guard;
mod owner;
mod ownership;
mod pin;
mod refcount;
mod sync;
mod table;
mod typed;
mod validator;

#[cfg(any(test, feature = "model"))]
pub mod model;

#[cfg(feature = "pagetable")]
pub mod pv;

#[cfg(feature = "grant")]
pub mod grant;

#[cfg(all(test, loom))]
mod loom_tests;

pub use error::{FrameError, LayoutError};
pub use frame::{FrameInfo, FrameState};
pub use frame_type::FrameType;
pub use guard::{PageRef, TypedRef};
pub use owner::Owner;
pub use ownership::{RelinquishCursor, RelinquishProgress};
pub use table::{FrameTable, FreeSink, IgnoreFreed, PutOutcome};
pub use validator::{
    InvalidEntry, TableFrame, TrustContents, ValidatedEntries, Validation, Validator,
};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

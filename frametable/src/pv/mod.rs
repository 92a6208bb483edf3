//! The frame table behind hvmem-pagetable's PV guest-table validation
//! (feature `pagetable`).
//!
//! Two pieces of glue, both thin:
//!
//! - [`TableOracle`] implements [`hvmem_pagetable::pv::FrameOracle`] over a
//!   [`FrameTable`](crate::FrameTable): owners, general references
//!   ([`get_page`](crate::FrameTable::get_page)) and typed references
//!   ([`get_type`](crate::FrameTable::get_type), validating through a
//!   [`Validator`](crate::Validator)). Pass it to
//!   [`mmu_update`](hvmem_pagetable::pv::mmu_update) to apply a guest's batch.
//! - [`PvValidator`] implements the frame table's
//!   [`Validator`](crate::Validator) with
//!   [`validate_table`](hvmem_pagetable::pv::validate_table) and
//!   [`devalidate_table`](hvmem_pagetable::pv::devalidate_table): when a frame
//!   first takes an L1..L4 type, every present entry is checked and takes its
//!   references; when the last reference goes, they are dropped. It reads
//!   tables through the embedder's [`PhysMem`](hvmem_pagetable::PhysMem).
//!
//! Types: [`FrameType::L1`](crate::FrameType::L1) ..
//! [`FrameType::L4`](crate::FrameType::L4) are the PV levels,
//! [`FrameType::Writable`](crate::FrameType::Writable) is the writable use.
//! [`PvValidator`] refuses every other type that needs validation (segment
//! descriptor pages, stage-2 tables): it cannot check them, and accepting
//! unchecked contents would defeat the type system.
//!
//! # Example
//!
//! ```
//! use core::sync::atomic::AtomicU64;
//! use hvmem_frametable::pv::PvValidator;
//! use hvmem_frametable::{FrameInfo, FrameTable, FrameType, Owner};
//! use hvmem_pagetable::SliceMem;
//! use hvmem_pagetable::pv::{EntryError, MmuUpdate, PvConfig, UpdateError, mmu_update};
//! use hvmem_types::{DomId, FrameRange, Mfn, PhysAddr};
//!
//! let frames: [FrameInfo; 4] = Default::default();
//! let table = FrameTable::new(&frames, &[FrameRange::new(Mfn::new(0), 4).unwrap()])?;
//! let words: Vec<AtomicU64> = (0..4 * 512).map(|_| AtomicU64::new(0)).collect();
//! let mem = SliceMem::new(PhysAddr::new(0), &words);
//! let validator = PvValidator::new(&mem, PvConfig::new(46).unwrap());
//! let guest = Owner::Domain(DomId::new(1));
//! for mfn in 0..4 {
//!     table.assign(Mfn::new(mfn), guest)?;
//! }
//! // Frame 1 becomes the guest's L1 table (validated empty).
//! table.pin(Mfn::new(1), guest, FrameType::L1, &validator)?;
//!
//! let oracle = validator.oracle(&table);
//! let batch = [
//!     MmuUpdate { ptr: 0x1000, val: 0x2000 | 0b11 }, // L1[0] -> frame 2, RW
//!     MmuUpdate { ptr: 0x1008, val: 0x1000 | 0b11 }, // L1[1] -> itself, RW
//! ];
//! let refused = mmu_update(&mem, &oracle, validator.config(), guest, &batch).unwrap_err();
//! assert_eq!(refused.done, 1);
//! assert_eq!(
//!     refused.error,
//!     UpdateError::Entry(EntryError::WritablePageTable { mfn: Mfn::new(1) })
//! );
//! assert_eq!(table.state(Mfn::new(2))?.frame_type, FrameType::Writable);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod oracle;
mod validator;

#[cfg(all(test, not(loom)))]
mod tests;

pub use oracle::TableOracle;
pub use validator::PvValidator;

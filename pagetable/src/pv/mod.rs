//! Guest-table validation for 64-bit x86 PV guests (Xen `mmu_update` and
//! page-table promotion).
//!
//! A PV guest builds its own page tables in its own frames, and the CPU walks
//! them directly. The hypervisor lets it do so only because every entry the
//! guest writes is checked first, and because the frames involved are
//! reference-counted by type: a frame in use as a page table can never also
//! be mapped writable, so the guest can change its tables only through
//! [`mmu_update`] (Xen's `do_mmu_update` and `mod_l1_entry` to
//! `mod_l4_entry`). This module holds those checks; the
//! frame table behind them is reached through the [`FrameOracle`] trait,
//! which hvmem-frametable implements behind its `pagetable` feature.
//!
//! # What each level accepts
//!
//! A not-present entry (bit 0 clear) is accepted and holds nothing. A present
//! entry must have no address bits at or above MAXPHYADDR
//! ([`EntryError::ReservedBits`]) and none of its level's disallowed flags
//! (Xen's masks over the 24-bit flag space, PTE bits 11..0 and 63..52; see
//! [`PvConfig::disallowed_flags`]), and its target frame must be owned by the
//! table's owner ([`EntryError::ForeignFrame`]). Then, per level:
//!
//! | Level | Flags refused | Target must be | References held on the target |
//! |---|---|---|---|
//! | L1 | PWT, PCD, PAT (unless [`PvConfig::with_cache_attributes`]) | any frame of the guest | general; plus [`Writable`](PvType::Writable) if RW is set, so the target cannot be (or become) a page table |
//! | L2 | PWT, PCD, PSE, GLOBAL | an L1 table (or a frame that validates as one) | general + L1 type |
//! | L3 | PWT, PCD, PSE, GLOBAL | an L2 table | general + L2 type |
//! | L4 | PWT, PCD, PSE, GLOBAL | an L3 table | general + L3 type |
//!
//! - PSE at L2 or L3 is [`EntryError::LargePage`]: PV guests get no
//!   superpages, since a 2 MiB mapping would cover frames (page tables among
//!   them) that no per-frame check has seen (XSA-148).
//! - L4 slots 256..=271 ([`XEN_L4_SLOTS`]) belong to the hypervisor:
//!   [`mmu_update`] refuses them, and validation skips them (neither reads
//!   nor references them); the embedder writes its own entries there.
//! - **Linear (recursive) page tables are refused.** Xen allows an Lx entry
//!   to point read-only at another validated Lx table under a counter
//!   discipline; hvmem does not implement that rule. Every L2..L4 entry asks
//!   for the next *lower* type, so an entry pointing at a table of its own
//!   level fails with [`EntryError::WrongTargetType`] (and one pointing at
//!   its own table with [`EntryError::LinearEntry`]). Levels thus strictly
//!   decrease along every reference, so there are no cycles and validation
//!   recurses at most four deep.
//! - hvmem does not rewrite guest entries (Xen's `adjust_guest_l*e` adds USER
//!   and its guest-kernel bit for guests whose kernel runs in ring 3): an
//!   embedder that needs that adjusts values before writing them. MMIO
//!   targets and foreign (privileged) mappings are not supported: the target
//!   must be a frame the table's owner owns. Not-present entries are not
//!   screened for the L1TF pattern.
//!
//! # Reference ownership
//!
//! While a table is validated, each present guest entry owns one general
//! reference on its target, plus the typed reference in the table above.
//! [`validate_table`] takes them, entry by entry, when a frame first takes a
//! page-table type (the frame table's validator callback); it can stop after
//! a budget of entries and resume, and on failure releases everything the
//! validation took, in this and earlier calls. [`devalidate_table`] drops
//! them when the last reference of the table's type goes. [`mmu_update`]
//! keeps the accounting exact across a write: it takes the new entry's
//! references first, swaps the entry with a compare-and-exchange, and only
//! then drops the old entry's references.
//!
//! Dropping the last reference of a table type de-validates it, which drops
//! the references of its entries, which may de-validate the tables below:
//! at most four levels deep, but not preemptible (the frame table's
//! `devalidate` cannot stop part-way). Pinning the tables a guest keeps
//! using, as Xen guests do, keeps that work off the hot path.
//!
//! # Batch semantics
//!
//! [`mmu_update`] applies its requests in order and stops at the first
//! refused one, as Xen does: it returns `Ok(n)` when all `n` were applied,
//! or a [`BatchError`] whose `done` counts the applied requests (they stay
//! applied) and whose `error` says why request `done` was refused; that
//! request changed nothing, and later ones were not looked at. A request is
//! a [`MmuUpdate`]: `ptr` is the machine address of the entry with the
//! command in its low three bits ([`MMU_NORMAL_PT_UPDATE`] or
//! [`MMU_PT_UPDATE_PRESERVE_AD`]; others are refused), `val` the new entry.
//! The frame holding the entry must be owned by the guest and be a validated
//! page table in use; its level decides the rules.
//!
//! # The fast path
//!
//! When the old and new entries are both present, point at the same frame
//! and differ only in NX, GLOBAL, USER, ACCESSED, DIRTY or the available
//! bits, the entry is swapped without touching references (after the new
//! entry's flags pass the level's mask). RW is never a fast-path flag: at L1
//! it decides the writable reference, and XSA-182 was a fast path that let a
//! flag change skip the checks it needed.
//!
//! # Concurrency
//!
//! Entries are read and written as atomics through [`PhysMem`](crate::PhysMem);
//! the hardware may set accessed/dirty bits at any time, which a write
//! tolerates (a bounded number of retries). Any other concurrent change to
//! the same entry makes the write fail with [`UpdateError::EntryChanged`],
//! leaving everything as it was. Serialising guests' batches on one table is
//! the embedder's choice of lock.
//!
//! # Example
//!
//! ```
//! # use core::cell::RefCell;
//! # use core::sync::atomic::AtomicU64;
//! # use std::collections::HashMap;
//! use hvmem_pagetable::SliceMem;
//! use hvmem_pagetable::pv::{
//!     EntryError, FrameOracle, MmuUpdate, OracleError, PvConfig, PvLevel, PvType, UpdateError,
//!     mmu_update,
//! };
//! use hvmem_types::{Mfn, PhysAddr};
//!
//! // A toy frame table: frame -> (owner, refs, type, type refs). Frame 1 is
//! // an L1 table of domain 7 in use; frames 2 and 3 are its data pages.
//! struct Toy(RefCell<HashMap<u64, (u16, u32, Option<PvType>, u32)>>);
//! impl FrameOracle for Toy {
//!     type Domain = u16;
//!     fn owner(&self, mfn: Mfn) -> Option<u16> {
//!         self.0.borrow().get(&mfn.get()).map(|f| f.0)
//!     }
//!     fn page_table_level(&self, mfn: Mfn) -> Option<PvLevel> {
//!         match self.0.borrow().get(&mfn.get()) {
//!             Some(&(_, _, Some(PvType::Table(level)), n)) if n > 0 => Some(level),
//!             _ => None,
//!         }
//!     }
//!     fn get_ref(&self, mfn: Mfn, owner: u16) -> Result<(), OracleError> {
//!         match self.0.borrow_mut().get_mut(&mfn.get()) {
//!             Some(f) if f.0 == owner => Ok(f.1 += 1),
//!             _ => Err(OracleError::NotOwned),
//!         }
//!     }
//!     fn put_ref(&self, mfn: Mfn) {
//!         self.0.borrow_mut().get_mut(&mfn.get()).unwrap().1 -= 1;
//!     }
//!     fn get_type(&self, mfn: Mfn, ty: PvType) -> Result<(), OracleError> {
//!         let mut frames = self.0.borrow_mut();
//!         let f = frames.get_mut(&mfn.get()).unwrap();
//!         if f.3 > 0 && f.2 != Some(ty) {
//!             return Err(OracleError::TypeConflict);
//!         }
//!         // (A real frame table validates a frame taking a table type.)
//!         f.2 = Some(ty);
//!         f.3 += 1;
//!         Ok(())
//!     }
//!     fn put_type(&self, mfn: Mfn, _ty: PvType) {
//!         self.0.borrow_mut().get_mut(&mfn.get()).unwrap().3 -= 1;
//!     }
//! }
//! let oracle = Toy(RefCell::new(HashMap::from([
//!     (1, (7, 1, Some(PvType::Table(PvLevel::L1)), 1)),
//!     (2, (7, 1, None, 0)),
//!     (3, (7, 1, None, 0)),
//! ])));
//! let words: Vec<AtomicU64> = (0..4 * 512).map(|_| AtomicU64::new(0)).collect();
//! let mem = SliceMem::new(PhysAddr::new(0), &words);
//! let config = PvConfig::new(46).unwrap();
//! const P: u64 = 1;
//! const RW: u64 = 2;
//!
//! let batch = [
//!     // L1[0] -> frame 2, writable: takes a writable type reference.
//!     MmuUpdate { ptr: 0x1000, val: 0x2000 | P | RW },
//!     // L1[1] -> frame 1 read-only: a guest may read its own tables...
//!     MmuUpdate { ptr: 0x1008, val: 0x1000 | P },
//!     // ...but never write them: stops the batch here.
//!     MmuUpdate { ptr: 0x1010, val: 0x1000 | P | RW },
//!     MmuUpdate { ptr: 0x1018, val: 0x3000 | P },
//! ];
//! let refused = mmu_update(&mem, &oracle, &config, 7, &batch).unwrap_err();
//! assert_eq!(refused.done, 2, "the first two stay applied");
//! assert_eq!(
//!     refused.error,
//!     UpdateError::Entry(EntryError::WritablePageTable { mfn: Mfn::new(1) })
//! );
//! assert_eq!(oracle.0.borrow()[&2], (7, 2, Some(PvType::Writable), 1));
//! ```

mod batch;
mod entry;
mod oracle;
mod table;

#[cfg(test)]
mod tests;

pub use batch::{
    BatchError, MMU_MACHPHYS_UPDATE, MMU_NORMAL_PT_UPDATE, MMU_PT_UPDATE_PRESERVE_AD, MmuUpdate,
    UpdateError, mmu_update,
};
pub use entry::{ENTRIES, EntryError, PvConfig, XEN_L4_SLOTS, pte_flags};
pub use oracle::{FrameOracle, OracleError, PvLevel, PvType};
pub use table::{TableProgress, ValidateError, devalidate_table, validate_table};

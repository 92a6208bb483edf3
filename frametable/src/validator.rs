//! The seam to whoever understands a frame's contents.
//!
//! The frame table knows counts, owners and types, not what a page-table entry
//! looks like. When a frame takes a type that [needs
//! validation](crate::FrameType::needs_validation) for the first time (type
//! count 0 -> 1, or a resume after preemption), the table calls
//! [`Validator::validate`]; when the last reference of a page-table type goes,
//! it calls [`Validator::devalidate`]. For x86 PV guest tables,
//! `hvmem_frametable::pv::PvValidator` (feature `pagetable`) implements
//! this trait with hvmem-pagetable's checks: validating a table takes, for
//! every present entry, a general reference (and for a table entry a type
//! reference of the next level down) on the frame the entry points at,
//! through the same [`FrameTable`]; de-validating drops them (as Xen's
//! `promote_l1_table` .. `promote_l4_table` and the `demote_*` functions do
//! in `xen/arch/x86/mm.c`).
//!
//! The table calls the validator only while it holds the frame's validate
//! lock: for a given frame, calls never overlap, and no other CPU can take
//! (or change) the frame's type until the call returns.

use core::fmt;

use hvmem_types::Mfn;

use crate::{FrameTable, FrameType, Owner};

/// The frame being (de)validated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TableFrame {
    /// Its machine frame number.
    pub mfn: Mfn,
    /// Its owner (the domain whose entries are being checked).
    pub owner: Owner,
    /// The type being validated, or dropped.
    pub frame_type: FrameType,
}

/// How far a validation call got.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Validation {
    /// Every entry is checked and holds its references: the frame is valid.
    Complete,
    /// The call stopped before `next_entry` to keep the CPU responsive; the
    /// entries below it hold their references. The next get of the same type
    /// calls [`Validator::validate`] again with `start_entry == next_entry`.
    ///
    /// `next_entry == 0` means nothing was done (Xen `-EINTR`): the type
    /// count returns to 0 rather than entering the partial state.
    Preempted {
        /// The first entry not yet validated.
        next_entry: u32,
    },
}

/// The entry a validator refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InvalidEntry {
    /// Its index in the frame.
    pub index: u32,
}

impl fmt::Display for InvalidEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}", self.index)
    }
}

/// Which entries hold references when [`Validator::devalidate`] is called.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ValidatedEntries {
    /// A fully validated frame: every present entry.
    All,
    /// A partial validation being abandoned (its owner is being destroyed):
    /// the entries below this index.
    Below(u32),
}

/// Checks a frame's contents for a type, and undoes that check.
///
/// `hvmem_frametable::pv::PvValidator` (feature `pagetable`) is the
/// implementation for x86 PV page tables; [`TrustContents`] checks nothing.
///
/// The table does not store which validator validated a frame. Every get,
/// put, pin, unpin and relinquish on one table must pass the same validator:
/// a put that drops the last page-table reference de-validates through the
/// validator it is given, so a different one would skip or garble the
/// release of the entries' references.
///
/// # Contract
///
/// - The table calls the validator for a frame only while it holds that
///   frame's validate lock (type count 1, neither validated nor partial).
///   For one frame, calls never overlap, and no other CPU can take or
///   change the frame's type until the call returns. Gets of the same type
///   on other CPUs meanwhile fail with
///   [`ValidationInProgress`](crate::FrameError::ValidationInProgress).
/// - [`validate`](Self::validate) starts at `start_entry` (0 for a fresh
///   validation, the `next_entry` it returned last time for a resume). On
///   `Ok(Complete)` every entry holds its references. On
///   `Ok(Preempted { next_entry })` the entries below `next_entry` hold their
///   references and `next_entry >= start_entry`. On `Err`, it has released the
///   references of *every* entry it validated, in this call and in earlier
///   preempted calls: the frame goes back to holding nothing. (Xen keeps a
///   failed L2..L4 validation partial and releases later; hvmem releases at
///   once, so a failed get leaves no state behind.)
/// - [`devalidate`](Self::devalidate) releases the references the named
///   entries hold, and cannot fail. It is only called for page-table types.
/// - Both may call back into `table` for *other* frames (taking or dropping
///   references on the frames the entries point at); calling back for the
///   frame being (de)validated fails with
///   [`ValidationInProgress`](crate::FrameError::ValidationInProgress) or a
///   type conflict, as it would on another CPU.
/// - A validator that lets a frame's entries reference the frame itself, or
///   form any other cycle (Xen's linear page tables), must break the cycle
///   itself: the table never forces a de-validation.
///
/// The first call for a type change (`start_entry == 0`) is also where an
/// embedder flushes stale writable TLB entries for the frame, before any
/// entry is trusted (Xen does this in `_get_page_type`, `xen/arch/x86/mm.c`).
pub trait Validator {
    /// Validates the entries of `frame` from `start_entry` on.
    ///
    /// # Errors
    ///
    /// The first entry that cannot be validated, after releasing every
    /// reference this validation took.
    fn validate(
        &self,
        table: &FrameTable<'_>,
        frame: TableFrame,
        start_entry: u32,
    ) -> Result<Validation, InvalidEntry>;

    /// Releases the references held by `entries` of `frame`.
    fn devalidate(&self, table: &FrameTable<'_>, frame: TableFrame, entries: ValidatedEntries);
}

/// A validator that accepts every frame at once and holds no references: for
/// embedders (or tests) that use only types without contents to check, or
/// that check contents elsewhere.
///
/// It skips every check. Guest page tables need a real validator, such as
/// `pv::PvValidator`. Never mix it with another validator on one table: a
/// put through `TrustContents` drops none of the references that the other
/// validator's validation took.
#[derive(Clone, Copy, Default, Debug)]
pub struct TrustContents;

impl Validator for TrustContents {
    fn validate(
        &self,
        _table: &FrameTable<'_>,
        _frame: TableFrame,
        _start_entry: u32,
    ) -> Result<Validation, InvalidEntry> {
        Ok(Validation::Complete)
    }

    fn devalidate(&self, _table: &FrameTable<'_>, _frame: TableFrame, _entries: ValidatedEntries) {}
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use hvmem_types::{DomId, FrameRange};

    use super::*;
    use crate::{FrameError, FrameInfo, PutOutcome};

    const D1: Owner = Owner::Domain(DomId::new(1));
    const ROOT: Mfn = Mfn::new(0x50);
    const CHILDREN: [Mfn; 2] = [Mfn::new(0x51), Mfn::new(0x52)];

    /// What the pagetable crate will do: an L2 frame's entries point at L1
    /// frames; validating an entry takes a general and an L1 type reference
    /// on its target, de-validating drops them. One entry per call, so the
    /// validation is preempted and resumed.
    struct TwoLevel;

    impl Validator for TwoLevel {
        fn validate(
            &self,
            table: &FrameTable<'_>,
            frame: TableFrame,
            start_entry: u32,
        ) -> Result<Validation, InvalidEntry> {
            if frame.frame_type != FrameType::L2 {
                return Ok(Validation::Complete);
            }
            let Some(&target) = CHILDREN.get(start_entry as usize) else {
                return Ok(Validation::Complete);
            };
            let taken = table.get_page(target, frame.owner).and_then(|()| {
                table
                    .get_type(target, FrameType::L1, self)
                    .inspect_err(|_| {
                        let _ = table.put_page(target);
                    })
            });
            if taken.is_err() {
                // Release the entries validated by earlier calls too.
                self.devalidate(table, frame, ValidatedEntries::Below(start_entry));
                return Err(InvalidEntry { index: start_entry });
            }
            Ok(Validation::Preempted {
                next_entry: start_entry + 1,
            })
        }

        fn devalidate(&self, table: &FrameTable<'_>, frame: TableFrame, entries: ValidatedEntries) {
            if frame.frame_type != FrameType::L2 {
                return;
            }
            let count = match entries {
                ValidatedEntries::All => CHILDREN.len(),
                ValidatedEntries::Below(n) => n as usize,
            };
            for &target in &CHILDREN[..count] {
                table.put_type(target, self).unwrap();
                let _ = table.put_page(target).unwrap();
            }
        }
    }

    #[test]
    fn page_table_entries_hold_references_on_their_targets() {
        let frames: [FrameInfo; 3] = Default::default();
        let table = FrameTable::new(&frames, &[FrameRange::new(ROOT, 3).unwrap()]).unwrap();
        for mfn in [ROOT, CHILDREN[0], CHILDREN[1]] {
            table.assign(mfn, D1).unwrap();
        }
        // Two entries, one per call: preempted twice, then complete.
        assert_eq!(
            table.pin(ROOT, D1, FrameType::L2, &TwoLevel),
            Err(FrameError::Preempted { mfn: ROOT })
        );
        assert_eq!(
            table.pin(ROOT, D1, FrameType::L2, &TwoLevel),
            Err(FrameError::Preempted { mfn: ROOT })
        );
        table.pin(ROOT, D1, FrameType::L2, &TwoLevel).unwrap();
        for child in CHILDREN {
            let state = table.state(child).unwrap();
            assert_eq!(
                (state.frame_type, state.type_refs, state.refs),
                (FrameType::L1, 1, 2)
            );
            // A table the guest uses as L1 cannot be mapped writable.
            table.get_page(child, D1).unwrap();
            assert!(matches!(
                table.get_type(child, FrameType::Writable, &TwoLevel),
                Err(FrameError::TypeConflict {
                    held: FrameType::L1,
                    ..
                })
            ));
            let _ = table.put_page(child).unwrap();
        }
        // Unpinning the root drops its validation, which drops the children's.
        let _ = table.unpin(ROOT, D1, &TwoLevel).unwrap();
        for child in CHILDREN {
            let state = table.state(child).unwrap();
            assert_eq!(
                (state.type_refs, state.refs, state.validated),
                (0, 1, false)
            );
        }
        assert_eq!(table.release(CHILDREN[0], D1), Ok(PutOutcome::Freed));
    }

    #[test]
    fn failed_entry_releases_every_reference_taken_so_far() {
        let frames: [FrameInfo; 3] = Default::default();
        let table = FrameTable::new(&frames, &[FrameRange::new(ROOT, 3).unwrap()]).unwrap();
        table.assign(ROOT, D1).unwrap();
        table.assign(CHILDREN[0], D1).unwrap();
        // The second child belongs to someone else: its entry is invalid.
        table
            .assign(CHILDREN[1], Owner::Domain(DomId::new(2)))
            .unwrap();
        table.get_page(ROOT, D1).unwrap();
        assert_eq!(
            table.get_type(ROOT, FrameType::L2, &TwoLevel),
            Err(FrameError::Preempted { mfn: ROOT })
        );
        assert_eq!(
            table.get_type(ROOT, FrameType::L2, &TwoLevel),
            Err(FrameError::Invalid {
                mfn: ROOT,
                entry: InvalidEntry { index: 1 }
            })
        );
        let child = table.state(CHILDREN[0]).unwrap();
        assert_eq!((child.refs, child.type_refs), (1, 0));
        let root = table.state(ROOT).unwrap();
        assert_eq!((root.refs, root.type_refs, root.partial), (2, 0, false));
    }
}

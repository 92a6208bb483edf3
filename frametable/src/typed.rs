//! Type references: "this frame stays a page table (or writable, or ...)
//! while I use it", and the validation that comes with a page-table type.
//!
//! The state machines follow Xen's `_get_page_type` and `_put_page_type`
//! in `xen/arch/x86/mm.c`, with one difference: where Xen spins while another
//! CPU validates the frame, this table returns
//! [`FrameError::ValidationInProgress`] and lets the caller retry (or turn it
//! into a hypercall continuation), so no operation ever waits on another CPU.

use hvmem_types::Mfn;

use crate::frame::{CountWord, TypeWord};
use crate::sync::Ordering;
use crate::{
    FrameError, FrameInfo, FrameTable, FrameType, Owner, TableFrame, ValidatedEntries, Validation,
    Validator,
};

/// Which type reference a put drops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TypeDrop {
    /// One a caller took with a get.
    Ref,
    /// The one a pin holds, clearing the pin in the same CAS.
    Pin,
}

impl FrameTable<'_> {
    /// Takes a reference of type `ty` on `mfn` (Xen `get_page_type`). The
    /// caller must hold a general reference on the frame, which backs this
    /// type reference until [`put_type`](Self::put_type).
    ///
    /// At type count 0 the type may change (and `validated` is cleared). The
    /// get that takes a type needing validation from count 0 to 1 (or
    /// resumes a preempted one) runs `validator` while holding the validate
    /// lock; writable, grant-shared and none are valid at once.
    ///
    /// Pass the same `validator` to every get, put, pin, unpin and
    /// relinquish of this table: the table does not remember which one
    /// validated the frame (see [`Validator`]).
    ///
    /// On [`FrameError::Preempted`], call again with the same `ty` to resume.
    /// Until then the frame holds a partial validation (see that error).
    /// On [`FrameError::ValidationInProgress`], do not spin: retry later or
    /// turn the call into a hypercall continuation.
    ///
    /// # Errors
    ///
    /// - [`FrameError::OutOfRange`]: the table does not cover `mfn`.
    /// - [`FrameError::Unowned`]: the frame is free.
    /// - [`FrameError::NotReferenced`]: no general reference backs the get.
    /// - [`FrameError::TypeCountOverflow`]: the type count is at its limit.
    /// - [`FrameError::TypeConflict`]: the frame is in use as another type.
    /// - [`FrameError::ValidationInProgress`]: another CPU holds the
    ///   validate lock; retry.
    /// - [`FrameError::Preempted`]: the validator stopped part-way; the next
    ///   get of `ty` resumes.
    /// - [`FrameError::Invalid`]: the validator refused an entry.
    pub fn get_type<V: Validator + ?Sized>(
        &self,
        mfn: Mfn,
        ty: FrameType,
        validator: &V,
    ) -> Result<(), FrameError> {
        let frame = self.frame(mfn)?;
        let count = CountWord(frame.count.load(Ordering::Relaxed));
        let owner = count.owner().ok_or(FrameError::Unowned { mfn })?;
        if count.user_refs() == 0 {
            return Err(FrameError::NotReferenced { mfn });
        }
        self.get_type_ref(frame, mfn, owner, ty, validator)
    }

    /// Drops a type reference taken by [`get_type`](Self::get_type) (Xen
    /// `put_page_type`). When the last reference of a page-table type goes,
    /// the frame is de-validated through `validator` (and will be validated
    /// again on its next use); other types keep their validation.
    ///
    /// `validator` must be the one the frame was validated with. A put with
    /// [`TrustContents`](crate::TrustContents) on an L1 that
    /// `pv::PvValidator` validated skips the de-validation, so the
    /// references the table's entries hold are never dropped. If the frame
    /// is freed by this de-validation's puts, the [`FreeSink`](crate::FreeSink)
    /// runs inside this call.
    ///
    /// # Errors
    ///
    /// - [`FrameError::OutOfRange`]: the table does not cover `mfn`.
    /// - [`FrameError::Unowned`]: the frame is free.
    /// - [`FrameError::NotTypeReferenced`]: no type reference but (at most)
    ///   the pin's is held, or the frame is not validated: a put without a
    ///   get.
    pub fn put_type<V: Validator + ?Sized>(
        &self,
        mfn: Mfn,
        validator: &V,
    ) -> Result<(), FrameError> {
        let frame = self.frame(mfn)?;
        self.put_type_ref(frame, mfn, validator, TypeDrop::Ref)
    }

    pub(crate) fn get_type_ref<V: Validator + ?Sized>(
        &self,
        frame: &FrameInfo,
        mfn: Mfn,
        owner: Owner,
        ty: FrameType,
        validator: &V,
    ) -> Result<(), FrameError> {
        let mut current = TypeWord(frame.type_info.load(Ordering::Relaxed));
        // The common case, straight-line: the type is already `ty` and
        // validated, so the get only counts. Everything else (a type change,
        // a validation, a refusal) goes through the full loop below.
        while current.admits_plain_get(ty) {
            // AcqRel, as in the full loop.
            match frame.type_info.compare_exchange_weak(
                current.0,
                current.0 + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = TypeWord(seen),
            }
        }
        self.get_type_slow(frame, mfn, owner, ty, validator, current)
    }

    /// [`get_type_ref`](Self::get_type_ref) from a type word `current` that
    /// is not a plain count increment.
    #[inline(never)]
    fn get_type_slow<V: Validator + ?Sized>(
        &self,
        frame: &FrameInfo,
        mfn: Mfn,
        owner: Owner,
        ty: FrameType,
        validator: &V,
        mut current: TypeWord,
    ) -> Result<(), FrameError> {
        let (taken, resumed) = loop {
            let count = current.count();
            let held = current.frame_type();
            let (next, resumed) = if count >= TypeWord::COUNT_MAX {
                return Err(FrameError::TypeCountOverflow { mfn });
            } else if count == 0 {
                // Unused: the type may change, which drops its validation.
                let next = if held == ty {
                    current
                } else {
                    TypeWord::of_type(ty)
                };
                let next = if ty.needs_validation() {
                    next
                } else {
                    next.with(TypeWord::VALIDATED)
                };
                (next.with_count(1), false)
            } else if held != ty {
                return Err(FrameError::TypeConflict {
                    mfn,
                    held,
                    wanted: ty,
                });
            } else if current.validated() {
                (current.with_count(count + 1), false)
            } else if current.partial() {
                // Take over the preempted validation; its count becomes ours.
                (current.without(TypeWord::PARTIAL), true)
            } else {
                return Err(FrameError::ValidationInProgress { mfn });
            };
            // AcqRel: acquire the validation published with `validated`, and
            // order our use of the type after every earlier holder's.
            match frame.type_info.compare_exchange_weak(
                current.0,
                next.0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break (next, resumed),
                Err(seen) => current = TypeWord(seen),
            }
        };
        if taken.validated() {
            return Ok(());
        }
        let table_frame = TableFrame {
            mfn,
            owner,
            frame_type: ty,
        };
        self.validate(frame, table_frame, resumed, validator)
    }

    /// Runs the validator while holding the validate lock (type count 1,
    /// neither validated nor partial), and leaves the lock in the state its
    /// result calls for.
    fn validate<V: Validator + ?Sized>(
        &self,
        frame: &FrameInfo,
        table_frame: TableFrame,
        resumed: bool,
        validator: &V,
    ) -> Result<(), FrameError> {
        let mfn = table_frame.mfn;
        let start = if resumed {
            frame.resume_at.load(Ordering::Relaxed)
        } else {
            0
        };
        let result = validator.validate(self, table_frame, start);
        let error = match result {
            Ok(Validation::Complete) => {
                frame.resume_at.store(0, Ordering::Relaxed);
                // Release: the validator's work happens before any holder
                // that sees `validated`.
                frame
                    .type_info
                    .fetch_or(TypeWord::VALIDATED, Ordering::Release);
                if resumed {
                    self.drop_partial_ref(frame, mfn);
                }
                return Ok(());
            }
            Ok(Validation::Preempted { next_entry }) if next_entry.max(start) > 0 => {
                frame
                    .resume_at
                    .store(next_entry.max(start), Ordering::Relaxed);
                if !resumed {
                    Self::take_partial_ref(frame);
                }
                // Release: the partial work and the resume point happen
                // before the get that resumes.
                frame
                    .type_info
                    .fetch_or(TypeWord::PARTIAL, Ordering::Release);
                return Err(FrameError::Preempted { mfn });
            }
            Ok(Validation::Preempted { .. }) => FrameError::Preempted { mfn },
            Err(entry) => FrameError::Invalid { mfn, entry },
        };
        // Nothing holds references any more: back to unused (count 0).
        frame.resume_at.store(0, Ordering::Relaxed);
        frame.type_info.fetch_sub(1, Ordering::Release);
        if resumed {
            self.drop_partial_ref(frame, mfn);
        }
        Err(error)
    }

    /// Drops the partial state's general reference once a resumed validation
    /// ends. The caller holds its own reference, so this never frees.
    fn drop_partial_ref(&self, frame: &FrameInfo, mfn: Mfn) {
        let dropped = self.put_ref(frame, mfn);
        debug_assert!(dropped.is_ok(), "partial reference missing on {mfn}");
    }

    pub(crate) fn put_type_ref<V: Validator + ?Sized>(
        &self,
        frame: &FrameInfo,
        mfn: Mfn,
        validator: &V,
        what: TypeDrop,
    ) -> Result<(), FrameError> {
        let mut current = TypeWord(frame.type_info.load(Ordering::Relaxed));
        if what == TypeDrop::Ref {
            // The common case, straight-line: drop one reference of a
            // validated type that keeps others or needs no de-validation.
            while current.drops_plain_ref() {
                // Release, as in the full loop.
                match frame.type_info.compare_exchange_weak(
                    current.0,
                    current.0 - 1,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(()),
                    Err(seen) => current = TypeWord(seen),
                }
            }
        }
        self.put_type_slow(frame, mfn, validator, what, current)
    }

    /// [`put_type_ref`](Self::put_type_ref) from a type word `current` that
    /// is not a plain drop of an ordinary reference.
    #[inline(never)]
    fn put_type_slow<V: Validator + ?Sized>(
        &self,
        frame: &FrameInfo,
        mfn: Mfn,
        validator: &V,
        what: TypeDrop,
        mut current: TypeWord,
    ) -> Result<(), FrameError> {
        let unpin = what == TypeDrop::Pin;
        loop {
            if unpin && !current.pinned() {
                return Err(FrameError::NotPinned { mfn });
            }
            let count = current.count();
            let pin_ref = u64::from(current.pinned() && !unpin);
            // Only validated frames have type references to hand back; a
            // partial or locked frame's count belongs to its validator.
            if !current.validated() || count <= pin_ref {
                return Err(FrameError::NotTypeReferenced { mfn });
            }
            let next = if unpin {
                current.without(TypeWord::PINNED)
            } else {
                current
            };
            let ty = current.frame_type();
            if count == 1 && ty.is_page_table() {
                // The last reference of a page table: take the validate lock
                // (clear `validated`, keep the count at 1) and de-validate.
                let owner = CountWord(frame.count.load(Ordering::Relaxed))
                    .owner()
                    .ok_or(FrameError::Unowned { mfn })?;
                // AcqRel: every earlier holder's use happens before the
                // de-validation.
                match frame.type_info.compare_exchange_weak(
                    current.0,
                    next.without(TypeWord::VALIDATED).0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {}
                    Err(seen) => {
                        current = TypeWord(seen);
                        continue;
                    }
                }
                let table_frame = TableFrame {
                    mfn,
                    owner,
                    frame_type: ty,
                };
                validator.devalidate(self, table_frame, ValidatedEntries::All);
                // Release: the de-validation happens before the type can
                // change.
                frame.type_info.fetch_sub(1, Ordering::Release);
                return Ok(());
            }
            // Release: our use happens before a later type change.
            match frame.type_info.compare_exchange_weak(
                current.0,
                next.with_count(count - 1).0,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = TypeWord(seen),
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used)]
mod tests {
    use core::cell::Cell;

    use hvmem_types::{DomId, FrameRange};

    use super::*;
    use crate::{InvalidEntry, PutOutcome, RelinquishCursor, RelinquishProgress, TrustContents};

    const D1: Owner = Owner::Domain(DomId::new(1));
    const MFN: Mfn = Mfn::new(0x40);

    /// Validates `entries` entries, `chunk` per call, refusing `bad`; counts
    /// calls and the entries whose references it holds.
    struct Scripted {
        entries: u32,
        chunk: u32,
        bad: Option<u32>,
        validations: Cell<u32>,
        devalidations: Cell<u32>,
        held: Cell<u32>,
    }

    impl Scripted {
        fn new(chunk: u32, bad: Option<u32>) -> Self {
            Self {
                entries: 4,
                chunk,
                bad,
                validations: Cell::new(0),
                devalidations: Cell::new(0),
                held: Cell::new(0),
            }
        }
    }

    impl Validator for Scripted {
        fn validate(
            &self,
            _table: &FrameTable<'_>,
            _frame: TableFrame,
            start_entry: u32,
        ) -> Result<Validation, InvalidEntry> {
            assert_eq!(self.held.get(), start_entry);
            let end = (start_entry + self.chunk).min(self.entries);
            if let Some(index) = self.bad.filter(|&bad| bad < end) {
                self.held.set(0);
                return Err(InvalidEntry { index });
            }
            self.held.set(end);
            if end == self.entries {
                self.validations.set(self.validations.get() + 1);
                Ok(Validation::Complete)
            } else {
                Ok(Validation::Preempted { next_entry: end })
            }
        }

        fn devalidate(
            &self,
            _table: &FrameTable<'_>,
            _frame: TableFrame,
            entries: ValidatedEntries,
        ) {
            if entries == ValidatedEntries::All {
                assert_eq!(self.held.get(), self.entries);
                self.devalidations.set(self.devalidations.get() + 1);
            }
            self.held.set(0);
        }
    }

    fn with_frame(test: impl FnOnce(&FrameTable<'_>)) {
        let frames: [FrameInfo; 4] = Default::default();
        let table =
            FrameTable::new(&frames, &[FrameRange::new(Mfn::new(0x40), 4).unwrap()]).unwrap();
        table.assign(MFN, D1).unwrap();
        table.get_page(MFN, D1).unwrap();
        test(&table);
    }

    #[test]
    fn type_changes_only_at_type_count_zero() {
        with_frame(|table| {
            table
                .get_type(MFN, FrameType::GrantShared, &TrustContents)
                .unwrap();
            assert_eq!(
                table.get_type(MFN, FrameType::SegmentDescriptor, &TrustContents),
                Err(FrameError::TypeConflict {
                    mfn: MFN,
                    held: FrameType::GrantShared,
                    wanted: FrameType::SegmentDescriptor
                })
            );
            table.put_type(MFN, &TrustContents).unwrap();
            table
                .get_type(MFN, FrameType::SegmentDescriptor, &TrustContents)
                .unwrap();
            assert_eq!(
                table.state(MFN).unwrap().frame_type,
                FrameType::SegmentDescriptor
            );
        });
    }

    #[test]
    fn frame_is_never_writable_and_a_page_table() {
        with_frame(|table| {
            let validator = Scripted::new(4, None);
            table
                .get_type(MFN, FrameType::Writable, &validator)
                .unwrap();
            let before = table.state(MFN).unwrap();
            assert!(matches!(
                table.get_type(MFN, FrameType::L1, &validator),
                Err(FrameError::TypeConflict {
                    held: FrameType::Writable,
                    ..
                })
            ));
            assert_eq!(table.state(MFN).unwrap(), before);
            table.put_type(MFN, &validator).unwrap();
            table.get_type(MFN, FrameType::L1, &validator).unwrap();
            assert!(matches!(
                table.get_type(MFN, FrameType::Writable, &validator),
                Err(FrameError::TypeConflict {
                    held: FrameType::L1,
                    ..
                })
            ));
            assert_eq!(validator.validations.get(), 1);
        });
    }

    #[test]
    fn page_table_is_validated_once_per_first_reference() {
        with_frame(|table| {
            let validator = Scripted::new(4, None);
            for _ in 0..3 {
                table.get_type(MFN, FrameType::L2, &validator).unwrap();
            }
            assert_eq!(validator.validations.get(), 1);
            assert_eq!(table.state(MFN).unwrap().type_refs, 3);
            for _ in 0..3 {
                table.put_type(MFN, &validator).unwrap();
            }
            // The last reference de-validated it; the next use checks again.
            assert_eq!(validator.devalidations.get(), 1);
            let state = table.state(MFN).unwrap();
            assert_eq!((state.type_refs, state.validated), (0, false));
            table.get_type(MFN, FrameType::L2, &validator).unwrap();
            assert_eq!(validator.validations.get(), 2);
        });
    }

    #[test]
    fn writable_and_descriptor_types_keep_validation_at_type_count_zero() {
        with_frame(|table| {
            let validator = Scripted::new(4, None);
            table
                .get_type(MFN, FrameType::SegmentDescriptor, &validator)
                .unwrap();
            table.put_type(MFN, &validator).unwrap();
            let state = table.state(MFN).unwrap();
            assert_eq!((state.type_refs, state.validated), (0, true));
            table
                .get_type(MFN, FrameType::SegmentDescriptor, &validator)
                .unwrap();
            assert_eq!(validator.validations.get(), 1);
            assert_eq!(validator.devalidations.get(), 0);
        });
    }

    #[test]
    fn preempted_validation_resumes_where_it_stopped() {
        with_frame(|table| {
            let validator = Scripted::new(3, None);
            assert_eq!(
                table.get_type(MFN, FrameType::L3, &validator),
                Err(FrameError::Preempted { mfn: MFN })
            );
            let partial = table.state(MFN).unwrap();
            assert!(partial.partial && !partial.validated);
            // The partial state holds the type count and one general reference.
            assert_eq!((partial.type_refs, partial.refs), (1, 3));
            // Another type cannot take the frame meanwhile.
            assert!(matches!(
                table.get_type(MFN, FrameType::Writable, &validator),
                Err(FrameError::TypeConflict { .. })
            ));
            table.get_type(MFN, FrameType::L3, &validator).unwrap();
            let done = table.state(MFN).unwrap();
            assert!(done.validated && !done.partial);
            assert_eq!((done.type_refs, done.refs), (1, 2));
            assert_eq!(validator.validations.get(), 1);
        });
    }

    #[test]
    fn validation_preempted_before_any_entry_leaves_the_frame_unused() {
        with_frame(|table| {
            let validator = Scripted::new(0, None);
            let before = table.state(MFN).unwrap();
            assert_eq!(
                table.get_type(MFN, FrameType::L1, &validator),
                Err(FrameError::Preempted { mfn: MFN })
            );
            let after = table.state(MFN).unwrap();
            assert_eq!(
                (after.type_refs, after.partial, after.refs),
                (0, false, before.refs)
            );
        });
    }

    #[test]
    fn invalid_entry_leaves_no_type_reference_behind() {
        with_frame(|table| {
            let validator = Scripted::new(2, Some(3));
            assert_eq!(
                table.get_type(MFN, FrameType::L4, &validator),
                Err(FrameError::Preempted { mfn: MFN })
            );
            assert_eq!(
                table.get_type(MFN, FrameType::L4, &validator),
                Err(FrameError::Invalid {
                    mfn: MFN,
                    entry: InvalidEntry { index: 3 }
                })
            );
            let state = table.state(MFN).unwrap();
            assert_eq!(
                (state.type_refs, state.partial, state.validated),
                (0, false, false)
            );
            assert_eq!(state.refs, 2);
            assert_eq!(validator.held.get(), 0);
            // Nothing holds the type: it may change.
            table
                .get_type(MFN, FrameType::Writable, &validator)
                .unwrap();
        });
    }

    #[test]
    fn type_count_saturates_into_an_error() {
        with_frame(|table| {
            table
                .get_type(MFN, FrameType::Writable, &TrustContents)
                .unwrap();
            let frame = table.frame(MFN).unwrap();
            let word =
                TypeWord(frame.type_info.load(Ordering::Relaxed)).with_count(TypeWord::COUNT_MAX);
            frame.type_info.store(word.0, Ordering::Relaxed);
            assert_eq!(
                table.get_type(MFN, FrameType::Writable, &TrustContents),
                Err(FrameError::TypeCountOverflow { mfn: MFN })
            );
            assert_eq!(table.state(MFN).unwrap().type_refs, TypeWord::COUNT_MAX);
        });
    }

    #[test]
    fn put_type_without_get_is_refused() {
        with_frame(|table| {
            assert_eq!(
                table.put_type(MFN, &TrustContents),
                Err(FrameError::NotTypeReferenced { mfn: MFN })
            );
            // The pin's reference is not a caller's to drop either.
            table.pin(MFN, D1, FrameType::L1, &TrustContents).unwrap();
            let pinned = table.state(MFN).unwrap();
            assert_eq!(
                table.put_type(MFN, &TrustContents),
                Err(FrameError::NotTypeReferenced { mfn: MFN })
            );
            assert_eq!(table.state(MFN).unwrap(), pinned);
        });
    }

    #[test]
    fn get_type_needs_a_general_reference() {
        let frames: [FrameInfo; 1] = Default::default();
        let table = FrameTable::new(&frames, &[FrameRange::new(MFN, 1).unwrap()]).unwrap();
        assert_eq!(
            table.get_type(MFN, FrameType::Writable, &TrustContents),
            Err(FrameError::Unowned { mfn: MFN })
        );
        table.assign(MFN, D1).unwrap();
        assert_eq!(
            table.get_type(MFN, FrameType::Writable, &TrustContents),
            Err(FrameError::NotReferenced { mfn: MFN })
        );
    }

    /// De-validates by looking at the frame from "another CPU" first.
    struct RacingLook;

    impl Validator for RacingLook {
        fn validate(
            &self,
            _: &FrameTable<'_>,
            _: TableFrame,
            _: u32,
        ) -> Result<Validation, InvalidEntry> {
            Ok(Validation::Complete)
        }

        fn devalidate(&self, table: &FrameTable<'_>, frame: TableFrame, _: ValidatedEntries) {
            table.get_page(frame.mfn, frame.owner).unwrap();
            assert_eq!(
                table.get_type(frame.mfn, FrameType::Writable, &TrustContents),
                Err(FrameError::TypeConflict {
                    mfn: frame.mfn,
                    held: frame.frame_type,
                    wanted: FrameType::Writable
                })
            );
            assert_eq!(
                table.get_type(frame.mfn, frame.frame_type, &TrustContents),
                Err(FrameError::ValidationInProgress { mfn: frame.mfn })
            );
            assert_eq!(table.put_page(frame.mfn), Ok(PutOutcome::StillReferenced));
        }
    }

    /// XSA-401: while the last page-table reference de-validates the frame,
    /// its count must not read as zero (the type could change under the
    /// de-validation) nor as a validated reference (a getter would use a
    /// half-torn-down table).
    #[test]
    fn xsa_401_type_cannot_change_while_the_last_reference_devalidates() {
        with_frame(|table| {
            table.get_type(MFN, FrameType::L1, &RacingLook).unwrap();
            table.put_type(MFN, &RacingLook).unwrap();
            let state = table.state(MFN).unwrap();
            assert_eq!((state.type_refs, state.validated), (0, false));
            table
                .get_type(MFN, FrameType::Writable, &TrustContents)
                .unwrap();
        });
    }

    /// XSA-299: a preempted (restartable) type change must keep exactly one
    /// extra general reference for its partial state, hand it to whoever
    /// finishes or abandons the validation, and drop it exactly once.
    #[test]
    fn xsa_299_partial_validation_reference_is_dropped_exactly_once() {
        with_frame(|table| {
            let validator = Scripted::new(1, None);
            for _ in 0..2 {
                assert_eq!(
                    table.get_type(MFN, FrameType::L2, &validator),
                    Err(FrameError::Preempted { mfn: MFN })
                );
                assert_eq!(table.state(MFN).unwrap().refs, 3);
            }
            // The domain dies mid-validation: relinquish abandons it.
            let mut cursor = RelinquishCursor::new();
            assert_eq!(
                table.relinquish(DomId::new(1), &mut cursor, 64, &validator),
                RelinquishProgress::Done
            );
            assert_eq!(validator.held.get(), 0);
            let state = table.state(MFN).unwrap();
            assert_eq!((state.refs, state.type_refs, state.partial), (1, 0, false));
            assert_eq!(cursor.still_referenced(), 1);
            assert_eq!(table.put_page(MFN), Ok(PutOutcome::Freed));
        });
    }
}

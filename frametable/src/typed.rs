//! Type references: "this frame stays a page table (or writable, or ...)
//! while I use it", and the validation that comes with a page-table type.
//!
//! The state machines follow Xen's `_get_page_type` and `_put_page_type`
//! (reference a.6 and a.7), with one difference: where Xen spins while another
//! CPU validates the frame, this table returns
//! [`FrameError::ValidationInProgress`] and lets the caller retry (or turn it
//! into a hypercall continuation), so no operation ever waits on another CPU.

use hvmem_types::Mfn;

use crate::frame::{CountWord, TypeWord};
use crate::sync::Ordering;
use crate::{
    FrameError, FrameInfo, FrameTable, FrameType, Owner, TableFrame, ValidatedEntries,
    Validation, Validator,
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
        let unpin = what == TypeDrop::Pin;
        let mut current = TypeWord(frame.type_info.load(Ordering::Relaxed));
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

//! Pinning: holding a page-table type without a mapping (Xen
//! `MMUEXT_PIN_L1_TABLE` .. `MMUEXT_PIN_L4_TABLE`, `MMUEXT_UNPIN_TABLE`).
//!
//! A guest pins its page tables so they stay validated between uses: without
//! a pin, a table whose last type reference goes is de-validated and must be
//! checked entry by entry again on its next use. A pin is a flag, not a
//! counter, and holds exactly one general and one type reference (reference
//! a.11).

use hvmem_types::Mfn;

use crate::frame::TypeWord;
use crate::sync::Ordering;
use crate::typed::TypeDrop;
use crate::{FrameError, FrameTable, FrameType, Owner, PutOutcome, Validator};

impl FrameTable<'_> {
    /// Pins `mfn`, owned by `owner`, as a page table of type `ty`: takes a
    /// general and a type reference (validating the frame if this is its
    /// first type reference), then sets the pinned flag.
    ///
    /// # Errors
    ///
    /// - [`FrameError::NotPinnable`]: `ty` is not a page-table type.
    /// - Those of [`get_page`](Self::get_page) and
    ///   [`get_type`](Self::get_type), including
    ///   [`FrameError::Preempted`] (call again to resume the validation).
    /// - [`FrameError::AlreadyPinned`]: the frame is pinned already (the
    ///   references just taken are dropped again).
    pub fn pin<V: Validator + ?Sized>(
        &self,
        mfn: Mfn,
        owner: Owner,
        ty: FrameType,
        validator: &V,
    ) -> Result<(), FrameError> {
        if !ty.is_page_table() {
            return Err(FrameError::NotPinnable { frame_type: ty });
        }
        let frame = self.frame(mfn)?;
        self.get_ref(frame, mfn, owner)?;
        if let Err(error) = self.get_type_ref(frame, mfn, owner, ty, validator) {
            let _ = self.put_ref(frame, mfn);
            return Err(error);
        }
        // AcqRel: orders the pin with the references it holds.
        let before = TypeWord(frame.type_info.fetch_or(TypeWord::PINNED, Ordering::AcqRel));
        if before.pinned() {
            // The frame stays pinned (by the earlier pin), so dropping ours
            // is a plain decrement of both counts.
            let _ = self.put_type_ref(frame, mfn, validator, TypeDrop::Ref);
            let _ = self.put_ref(frame, mfn);
            return Err(FrameError::AlreadyPinned { mfn });
        }
        Ok(())
    }

    /// Unpins `mfn`, owned by `owner`: clears the pinned flag and drops the
    /// pin's type reference (de-validating a table that nobody else uses) and
    /// its general reference (freeing a frame that nobody else holds).
    ///
    /// # Errors
    ///
    /// - Those of [`get_page`](Self::get_page): `owner` must own the frame.
    /// - [`FrameError::NotPinned`]: the frame is not pinned.
    pub fn unpin<V: Validator + ?Sized>(
        &self,
        mfn: Mfn,
        owner: Owner,
        validator: &V,
    ) -> Result<PutOutcome, FrameError> {
        let frame = self.frame(mfn)?;
        // Hold a reference while unpinning, so the owner checked here is the
        // owner whose pin is dropped.
        self.get_ref(frame, mfn, owner)?;
        if let Err(error) = self.put_type_ref(frame, mfn, validator, TypeDrop::Pin) {
            let _ = self.put_ref(frame, mfn);
            return Err(error);
        }
        let _ = self.put_ref(frame, mfn);
        self.put_ref(frame, mfn)
    }
}

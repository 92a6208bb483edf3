//! Pinning: holding a page-table type without a mapping (Xen
//! `MMUEXT_PIN_L1_TABLE` .. `MMUEXT_PIN_L4_TABLE`, `MMUEXT_UNPIN_TABLE`).
//!
//! A guest pins its page tables so they stay validated between uses: without
//! a pin, a table whose last type reference goes is de-validated and must be
//! checked entry by entry again on its next use. A pin is a flag, not a
//! counter, and holds exactly one general and one type reference (Xen's
//! `do_mmuext_op` in `xen/arch/x86/mm.c`).

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
    /// A pin is a flag, not a counter, and holds one general and one type
    /// reference. It keeps the table validated between uses: without it, a
    /// table whose last type reference goes is de-validated and checked
    /// entry by entry again next time. Pass the same `validator` as every
    /// other call on this table (see [`Validator`]). On
    /// [`FrameError::Preempted`], pin again with the same `ty` to resume.
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
    /// `validator` must be the one the frame was validated with (see
    /// [`Validator`]): the de-validation runs through it.
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

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used)]
mod tests {
    use hvmem_types::{DomId, FrameRange};

    use super::*;
    use crate::TrustContents;

    const D1: Owner = Owner::Domain(DomId::new(1));
    const MFN: Mfn = Mfn::new(0x20);

    fn with_frame(test: impl FnOnce(&FrameTable<'_>)) {
        let frames: [FrameInfo; 1] = Default::default();
        let table = FrameTable::new(&frames, &[FrameRange::new(MFN, 1).unwrap()]).unwrap();
        table.assign(MFN, D1).unwrap();
        test(&table);
    }

    use crate::FrameInfo;

    #[test]
    fn pin_holds_one_general_and_one_type_reference() {
        with_frame(|table| {
            table.pin(MFN, D1, FrameType::L2, &TrustContents).unwrap();
            let state = table.state(MFN).unwrap();
            assert!(state.pinned && state.validated);
            assert_eq!(
                (state.refs, state.type_refs, state.frame_type),
                (2, 1, FrameType::L2)
            );
        });
    }

    #[test]
    fn double_pin_is_refused_with_state_unchanged() {
        with_frame(|table| {
            table.pin(MFN, D1, FrameType::L1, &TrustContents).unwrap();
            let pinned = table.state(MFN).unwrap();
            assert_eq!(
                table.pin(MFN, D1, FrameType::L1, &TrustContents),
                Err(FrameError::AlreadyPinned { mfn: MFN })
            );
            assert!(matches!(
                table.pin(MFN, D1, FrameType::L2, &TrustContents),
                Err(FrameError::TypeConflict { .. })
            ));
            assert_eq!(table.state(MFN).unwrap(), pinned);
        });
    }

    #[test]
    fn unpin_of_an_unpinned_frame_is_refused() {
        with_frame(|table| {
            let before = table.state(MFN).unwrap();
            assert_eq!(
                table.unpin(MFN, D1, &TrustContents),
                Err(FrameError::NotPinned { mfn: MFN })
            );
            assert_eq!(table.state(MFN).unwrap(), before);
        });
    }

    #[test]
    fn only_page_tables_can_be_pinned() {
        with_frame(|table| {
            for ty in [
                FrameType::Writable,
                FrameType::SegmentDescriptor,
                FrameType::None,
            ] {
                assert_eq!(
                    table.pin(MFN, D1, ty, &TrustContents),
                    Err(FrameError::NotPinnable { frame_type: ty })
                );
            }
            table
                .pin(MFN, D1, FrameType::Stage2, &TrustContents)
                .unwrap();
        });
    }

    #[test]
    fn only_the_owner_pins_and_unpins() {
        with_frame(|table| {
            let d2 = Owner::Domain(DomId::new(2));
            assert_eq!(
                table.pin(MFN, d2, FrameType::L1, &TrustContents),
                Err(FrameError::WrongOwner { mfn: MFN })
            );
            table.pin(MFN, D1, FrameType::L1, &TrustContents).unwrap();
            assert_eq!(
                table.unpin(MFN, d2, &TrustContents),
                Err(FrameError::WrongOwner { mfn: MFN })
            );
            assert!(table.state(MFN).unwrap().pinned);
        });
    }

    #[test]
    fn unpin_drops_the_validation_and_frees_a_released_frame() {
        with_frame(|table| {
            table.pin(MFN, D1, FrameType::L3, &TrustContents).unwrap();
            assert_eq!(table.release(MFN, D1), Ok(PutOutcome::StillReferenced));
            // Pinned: the table stays validated without any mapping.
            assert!(table.state(MFN).unwrap().validated);
            assert_eq!(table.unpin(MFN, D1, &TrustContents), Ok(PutOutcome::Freed));
            let state = table.state(MFN).unwrap();
            assert_eq!(
                (state.owner, state.pinned, state.validated),
                (None, false, false)
            );
        });
    }
}

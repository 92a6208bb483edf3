//! General references: "this frame stays allocated while I use it".
//!
//! Every use of a frame by anyone holds a general reference: a mapping, a
//! page-table entry pointing at it, a grant mapping, a hypercall working on
//! it, and the owner's allocation reference (as in Xen's `get_page` and
//! `put_page`, `xen/arch/x86/mm.c`). While the count is non-zero the frame
//! cannot return to the allocator; the put that drops the last one frees it.

use hvmem_types::Mfn;

use crate::frame::{CountWord, TypeWord};
use crate::sync::Ordering;
use crate::{FrameError, FrameInfo, FrameTable, Owner, PutOutcome};

impl FrameTable<'_> {
    /// Takes a general reference on `mfn`, only if `owner` owns it (Xen
    /// `get_page`). Prefer [`get_page_ref`](Self::get_page_ref), whose guard
    /// cannot leak; the raw form is for references kept where a guard cannot
    /// live (a hardware page table, an I/O ring).
    ///
    /// # Errors
    ///
    /// - [`FrameError::OutOfRange`]: the table does not cover `mfn`.
    /// - [`FrameError::Unowned`]: the frame is free.
    /// - [`FrameError::WrongOwner`]: another owner holds it.
    /// - [`FrameError::CountOverflow`]: the count is at its limit.
    #[inline]
    pub fn get_page(&self, mfn: Mfn, owner: Owner) -> Result<(), FrameError> {
        let frame = self.frame(mfn)?;
        self.get_ref(frame, mfn, owner)
    }

    /// Drops a general reference taken by [`get_page`](Self::get_page) (Xen
    /// `put_page`). If it was the last one, the frame is freed.
    ///
    /// The caller must hold the reference it drops, and must have dropped the
    /// type references it backs first.
    ///
    /// # Errors
    ///
    /// - [`FrameError::OutOfRange`]: the table does not cover `mfn`.
    /// - [`FrameError::NotReferenced`]: no reference but (at most) the
    ///   allocation reference is held: a put without a get.
    /// - [`FrameError::TypeStillReferenced`]: this is the last reference but
    ///   type references remain.
    #[inline]
    pub fn put_page(&self, mfn: Mfn) -> Result<PutOutcome, FrameError> {
        let frame = self.frame(mfn)?;
        self.put_ref(frame, mfn)
    }

    // Both loops keep their common case straight-line: one mask-and-compare
    // decides whether the CAS may go ahead, and everything else (the error
    // classification, the last put) lives out of line.
    pub(crate) fn get_ref(
        &self,
        frame: &FrameInfo,
        mfn: Mfn,
        owner: Owner,
    ) -> Result<(), FrameError> {
        let owner_field = CountWord::owner_field(owner);
        let mut current = CountWord(frame.count.load(Ordering::Relaxed));
        loop {
            // The owner must match, and the last count value is kept for the
            // partial-validation reference, which must never fail.
            if !current.admits_get(owner_field) {
                return Err(Self::get_refused(current, mfn, owner));
            }
            match frame.count.compare_exchange_weak(
                current.0,
                current.incremented().0,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = CountWord(seen),
            }
        }
    }

    /// Why `owner` may not take a reference on a frame whose count word is
    /// `current`.
    #[cold]
    #[inline(never)]
    fn get_refused(current: CountWord, mfn: Mfn, owner: Owner) -> FrameError {
        match current.owner() {
            Some(held) if held == owner => FrameError::CountOverflow { mfn },
            Some(_) => FrameError::WrongOwner { mfn },
            None => FrameError::Unowned { mfn },
        }
    }

    pub(crate) fn put_ref(&self, frame: &FrameInfo, mfn: Mfn) -> Result<PutOutcome, FrameError> {
        // Acquire, also on CAS failure: the value seen may be the one that
        // makes this put the last, and then every earlier put (each a
        // `Release`) must happen before the type count is read in
        // `put_last_ref`.
        let mut current = CountWord(frame.count.load(Ordering::Acquire));
        while current.drops_without_freeing() {
            match frame.count.compare_exchange_weak(
                current.0,
                current.decremented().0,
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(PutOutcome::StillReferenced),
                Err(seen) => current = CountWord(seen),
            }
        }
        self.put_last_ref(frame, mfn, current)
    }

    /// The rest of [`put_ref`](Self::put_ref) once `current` (read with
    /// `Acquire`) holds at most one reference or no owner: the put that
    /// frees the frame, or the refusal of a put without a get. It still
    /// loops, as the count may have risen again by the time it runs.
    #[inline(never)]
    fn put_last_ref(
        &self,
        frame: &FrameInfo,
        mfn: Mfn,
        mut current: CountWord,
    ) -> Result<PutOutcome, FrameError> {
        loop {
            if current.owner().is_none() || current.user_refs() == 0 {
                return Err(FrameError::NotReferenced { mfn });
            }
            let (next, success) = if current.count() == 1 {
                // The last reference: nobody else can take a type reference
                // now, so a non-zero type count is a put out of order.
                if TypeWord(frame.type_info.load(Ordering::Acquire)).count() != 0 {
                    return Err(FrameError::TypeStillReferenced { mfn });
                }
                (CountWord::FREE, Ordering::AcqRel)
            } else {
                (current.decremented(), Ordering::Release)
            };
            match frame
                .count
                .compare_exchange_weak(current.0, next.0, success, Ordering::Acquire)
            {
                Ok(_) if next == CountWord::FREE => {
                    self.sink.frame_freed(mfn);
                    return Ok(PutOutcome::Freed);
                }
                Ok(_) => return Ok(PutOutcome::StillReferenced),
                Err(seen) => current = CountWord(seen),
            }
        }
    }

    /// Takes the extra general reference that a partial validation holds.
    /// The caller holds a reference, so the frame is owned; at most one
    /// partial state exists per frame and ordinary gets stop one below
    /// `COUNT_MAX`, so this one always fits.
    pub(crate) fn take_partial_ref(frame: &FrameInfo) {
        // Relaxed: the `Release` that sets `partial` afterwards publishes it.
        let before = CountWord(frame.count.fetch_add(1, Ordering::Relaxed));
        debug_assert!(before.owner().is_some() && before.count() < CountWord::COUNT_MAX);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::frame::FrameState;
    use crate::{FrameType, TrustContents};
    use hvmem_types::{DomId, FrameRange};

    const D1: Owner = Owner::Domain(DomId::new(1));
    const D2: Owner = Owner::Domain(DomId::new(2));
    const MFN: Mfn = Mfn::new(0x10);

    fn with_table(test: impl FnOnce(&FrameTable<'_>)) {
        let frames: [FrameInfo; 2] = Default::default();
        let table =
            FrameTable::new(&frames, &[FrameRange::new(Mfn::new(0x10), 2).unwrap()]).unwrap();
        test(&table);
    }

    #[test]
    fn get_page_requires_the_named_owner() {
        with_table(|table| {
            assert_eq!(
                table.get_page(MFN, D1),
                Err(FrameError::Unowned { mfn: MFN })
            );
            table.assign(MFN, D1).unwrap();
            assert_eq!(
                table.get_page(MFN, D2),
                Err(FrameError::WrongOwner { mfn: MFN })
            );
            assert_eq!(
                table.get_page(MFN, Owner::Host),
                Err(FrameError::WrongOwner { mfn: MFN })
            );
            assert_eq!(table.state(MFN).unwrap().refs, 1);
            table.get_page(MFN, D1).unwrap();
            assert_eq!(table.state(MFN).unwrap().refs, 2);
        });
    }

    #[test]
    fn put_without_get_is_refused() {
        with_table(|table| {
            assert_eq!(
                table.put_page(MFN),
                Err(FrameError::NotReferenced { mfn: MFN })
            );
            table.assign(MFN, D1).unwrap();
            // Only the allocation reference is held: it is not put_page's to drop.
            assert_eq!(
                table.put_page(MFN),
                Err(FrameError::NotReferenced { mfn: MFN })
            );
            assert_eq!(table.state(MFN).unwrap().refs, 1);
        });
    }

    #[test]
    fn general_count_saturates_into_an_error() {
        with_table(|table| {
            table.assign(MFN, D1).unwrap();
            let frame = table.frame(MFN).unwrap();
            let near_limit = CountWord::allocated_to(D1).0 - 1 + CountWord::COUNT_MAX - 2;
            frame.count.store(near_limit, Ordering::Relaxed);
            table.get_page(MFN, D1).unwrap();
            let at_limit = table.state(MFN).unwrap();
            assert_eq!(at_limit.refs, CountWord::COUNT_MAX - 1);
            assert_eq!(
                table.get_page(MFN, D1),
                Err(FrameError::CountOverflow { mfn: MFN })
            );
            assert_eq!(table.state(MFN).unwrap(), at_limit);
            assert_eq!(at_limit.owner, Some(D1));
        });
    }

    #[test]
    fn last_put_frees_the_frame_exactly_once() {
        with_table(|table| {
            table.assign(MFN, D1).unwrap();
            table.get_page(MFN, D1).unwrap();
            assert_eq!(table.release(MFN, D1), Ok(PutOutcome::StillReferenced));
            assert_eq!(table.put_page(MFN), Ok(PutOutcome::Freed));
            let state = table.state(MFN).unwrap();
            assert_eq!((state.owner, state.refs), (None, 0));
            assert_eq!(
                table.put_page(MFN),
                Err(FrameError::NotReferenced { mfn: MFN })
            );
        });
    }

    #[test]
    fn last_put_is_refused_while_a_type_is_held() {
        with_table(|table| {
            table.assign(MFN, D1).unwrap();
            table.get_page(MFN, D1).unwrap();
            table
                .get_type(MFN, FrameType::Writable, &TrustContents)
                .unwrap();
            let _ = table.release(MFN, D1).unwrap();
            let before: FrameState = table.state(MFN).unwrap();
            assert_eq!(
                table.put_page(MFN),
                Err(FrameError::TypeStillReferenced { mfn: MFN })
            );
            assert_eq!(table.state(MFN).unwrap(), before);
            table.put_type(MFN, &TrustContents).unwrap();
            assert_eq!(table.put_page(MFN), Ok(PutOutcome::Freed));
        });
    }
}

//! Ownership: assigning free frames, releasing them, moving them between
//! owners, and taking back every frame of a dying domain.
//!
//! Conservation: every frame is free, or owned by exactly one domain, or by
//! the host. The owner lives in the count word, so each change below is one
//! CAS from one of those states to another; there is no moment where a frame
//! has two owners, and none where an owned frame has a count of zero.
//!
//! Assignment and moves go through a short "claimed" state in which the
//! claimant alone resets the frame's type word before publishing the new
//! owner (Xen resets `type_info` when it allocates a frame), so no stale type
//! or `validated` flag follows a frame to a new owner. Nobody waits on a
//! claim: every other operation sees an unowned frame and fails at once.

use hvmem_types::{DomId, Mfn};

use crate::frame::{CountWord, TypeWord};
use crate::sync::Ordering;
use crate::typed::TypeDrop;
use crate::{
    FrameError, FrameInfo, FrameTable, Owner, PutOutcome, TableFrame, ValidatedEntries, Validator,
};

impl FrameTable<'_> {
    /// Gives the free frame `mfn` to `owner`, with its allocation reference
    /// (general count 1) and no type (Xen `assign_pages`, per frame).
    ///
    /// The caller decides whether the owner may receive frames (not dying,
    /// within its limits); the frame table only keeps the frame's state.
    /// Give the hypervisor's own frames to [`Owner::Host`]; reserved ids such
    /// as `DomId::XEN` are refused.
    ///
    /// The frame is briefly "claimed" while its type is reset. An operation
    /// on it from another CPU meanwhile sees a free frame and fails at once
    /// ([`FrameError::Unowned`]); nobody waits.
    ///
    /// # Errors
    ///
    /// - [`FrameError::ReservedDomain`]: `owner` is a reserved domain id.
    /// - [`FrameError::OutOfRange`]: the table does not cover `mfn`.
    /// - [`FrameError::AlreadyOwned`]: the frame is not free.
    pub fn assign(&self, mfn: Mfn, owner: Owner) -> Result<(), FrameError> {
        if !owner.is_valid() {
            return Err(FrameError::ReservedDomain { owner });
        }
        let frame = self.frame(mfn)?;
        // Acquire: the previous owner's last accesses happen before ours.
        frame
            .count
            .compare_exchange(
                CountWord::FREE.0,
                CountWord::CLAIMED.0,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .map_err(|_| FrameError::AlreadyOwned { mfn })?;
        Self::publish_owner(frame, owner);
        Ok(())
    }

    /// Drops the allocation reference `owner` holds on `mfn` (the guest gives
    /// the frame back, Xen `decrease_reservation`). The frame is freed now if
    /// nobody else holds a reference, or later by the last
    /// [`put_page`](Self::put_page).
    ///
    /// # Errors
    ///
    /// - [`FrameError::OutOfRange`]: the table does not cover `mfn`.
    /// - [`FrameError::Unowned`] / [`FrameError::WrongOwner`]: `owner` does
    ///   not own the frame.
    /// - [`FrameError::NotAllocated`]: the allocation reference is already
    ///   gone.
    /// - [`FrameError::TypeStillReferenced`]: it is the last reference but a
    ///   type reference remains.
    pub fn release(&self, mfn: Mfn, owner: Owner) -> Result<PutOutcome, FrameError> {
        let frame = self.frame(mfn)?;
        self.drop_allocation(frame, mfn, owner)
    }

    /// Moves `mfn` from `from` to `to` (grant transfer, ballooning): only a
    /// frame that holds nothing but its allocation reference can move, and it
    /// arrives untyped, still with its allocation reference (Xen
    /// `steal_page` followed by an assignment).
    ///
    /// # Errors
    ///
    /// - [`FrameError::ReservedDomain`]: `to` is a reserved domain id.
    /// - [`FrameError::OutOfRange`]: the table does not cover `mfn`.
    /// - [`FrameError::Unowned`] / [`FrameError::WrongOwner`]: `from` does not
    ///   own the frame.
    /// - [`FrameError::NotAllocated`]: the allocation reference is gone.
    /// - [`FrameError::InUse`]: other references are held.
    pub fn transfer(&self, mfn: Mfn, from: Owner, to: Owner) -> Result<(), FrameError> {
        if !to.is_valid() {
            return Err(FrameError::ReservedDomain { owner: to });
        }
        let frame = self.frame(mfn)?;
        let mut current = CountWord(frame.count.load(Ordering::Relaxed));
        loop {
            Self::check_owner(current, mfn, from)?;
            if !current.allocated() {
                return Err(FrameError::NotAllocated { mfn });
            }
            if current.count() != 1 {
                return Err(FrameError::InUse { mfn });
            }
            // Acquire: every earlier user's accesses happen before the new
            // owner's.
            match frame.count.compare_exchange_weak(
                current.0,
                CountWord::CLAIMED.0,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = CountWord(seen),
            }
        }
        Self::publish_owner(frame, to);
        Ok(())
    }

    /// Takes back the frames of the dying domain `dom`, at most `budget`
    /// records per call so that a large domain never holds a CPU for long
    /// (Xen's preemptible `relinquish_memory`).
    ///
    /// For each of its frames, in order: the pin is dropped (de-validating
    /// the table if that was its last type reference), a preempted validation
    /// is abandoned (the validator releases the entries it had validated),
    /// and the allocation reference is dropped. A frame that nobody else
    /// references is freed; one that others still reference (a foreign
    /// mapping, a grant) stays owned by `dom` until their last
    /// [`put_page`](Self::put_page) frees it. The domain's vCPUs must be
    /// stopped and no new frames assigned to it.
    ///
    /// Call again with the same cursor until it returns
    /// [`RelinquishProgress::Done`]; the cursor counts what happened.
    ///
    /// It walks every record of the table, in every range, not only the
    /// frames `dom` owns: `budget` counts records visited, and a full pass
    /// costs the table's size whatever the domain's. Pass the same
    /// `validator` as every other call on this table (see [`Validator`]).
    pub fn relinquish<V: Validator + ?Sized>(
        &self,
        dom: DomId,
        cursor: &mut RelinquishCursor,
        budget: u64,
        validator: &V,
    ) -> RelinquishProgress {
        let owner = Owner::Domain(dom);
        // A zero budget still makes progress, so a caller's retry loop ends.
        let mut left = budget.max(1);
        loop {
            let Some((mfn, frame)) = self.frame_in_span(cursor.span, cursor.offset) else {
                if cursor.span >= self.spans().len() {
                    return RelinquishProgress::Done;
                }
                cursor.span += 1;
                cursor.offset = 0;
                continue;
            };
            if left == 0 {
                return RelinquishProgress::Preempted;
            }
            left -= 1;
            cursor.offset += 1;
            match self.relinquish_frame(frame, mfn, owner, validator) {
                Some(PutOutcome::Freed) => cursor.freed += 1,
                Some(PutOutcome::StillReferenced) => cursor.still_referenced += 1,
                None => {}
            }
        }
    }

    /// One frame of [`relinquish`](Self::relinquish); `None` if `owner` does
    /// not own it.
    fn relinquish_frame<V: Validator + ?Sized>(
        &self,
        frame: &FrameInfo,
        mfn: Mfn,
        owner: Owner,
        validator: &V,
    ) -> Option<PutOutcome> {
        // Hold a reference throughout, as Xen does: the frame cannot be
        // freed and handed to another owner between the steps below.
        self.get_ref(frame, mfn, owner).ok()?;
        if self
            .put_type_ref(frame, mfn, validator, TypeDrop::Pin)
            .is_ok()
        {
            // The pin's general reference; ours keeps the frame.
            let _ = self.put_ref(frame, mfn);
        }
        self.abandon_partial(frame, mfn, owner, validator);
        let _ = self.drop_allocation(frame, mfn, owner);
        // Ours: the last one frees the frame. It cannot be refused: the type
        // references left are backed by other holders' general references.
        self.put_ref(frame, mfn).ok()
    }

    /// Ends a preempted validation without finishing it: takes the validate
    /// lock from the partial state, lets the validator release what the
    /// validated entries hold, and drops the partial state's reference.
    fn abandon_partial<V: Validator + ?Sized>(
        &self,
        frame: &FrameInfo,
        mfn: Mfn,
        owner: Owner,
        validator: &V,
    ) {
        let mut current = TypeWord(frame.type_info.load(Ordering::Relaxed));
        loop {
            if !current.partial() {
                return;
            }
            // Clearing `partial` keeps the count at 1: the validate lock.
            // Acquire: the preempted validator's work is visible.
            match frame.type_info.compare_exchange_weak(
                current.0,
                current.without(TypeWord::PARTIAL).0,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = TypeWord(seen),
            }
        }
        let validated = frame.resume_at.load(Ordering::Relaxed);
        if validated > 0 {
            let table_frame = TableFrame {
                mfn,
                owner,
                frame_type: current.frame_type(),
            };
            validator.devalidate(self, table_frame, ValidatedEntries::Below(validated));
        }
        frame.resume_at.store(0, Ordering::Relaxed);
        // Release: the de-validation happens before the type can change.
        frame.type_info.fetch_sub(1, Ordering::Release);
        let _ = self.put_ref(frame, mfn);
    }

    pub(crate) fn drop_allocation(
        &self,
        frame: &FrameInfo,
        mfn: Mfn,
        owner: Owner,
    ) -> Result<PutOutcome, FrameError> {
        // Acquire, also on CAS failure: the value seen may be the one that
        // makes this put the last, and then every earlier put (each a
        // `Release`) must happen before the type count is read below.
        let mut current = CountWord(frame.count.load(Ordering::Acquire));
        loop {
            Self::check_owner(current, mfn, owner)?;
            if !current.allocated() {
                return Err(FrameError::NotAllocated { mfn });
            }
            let (next, success) = if current.count() == 1 {
                if TypeWord(frame.type_info.load(Ordering::Acquire)).count() != 0 {
                    return Err(FrameError::TypeStillReferenced { mfn });
                }
                (CountWord::FREE, Ordering::AcqRel)
            } else {
                (current.without_allocation(), Ordering::Release)
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

    fn check_owner(current: CountWord, mfn: Mfn, owner: Owner) -> Result<(), FrameError> {
        match current.owner() {
            Some(held) if held == owner => Ok(()),
            Some(_) => Err(FrameError::WrongOwner { mfn }),
            None => Err(FrameError::Unowned { mfn }),
        }
    }

    /// Resets the claimed frame's type and publishes `owner` with the
    /// allocation reference.
    fn publish_owner(frame: &FrameInfo, owner: Owner) {
        // Relaxed: only the claimant touches the type word of a claimed
        // frame, and the `Release` below publishes it with the owner.
        frame.type_info.store(0, Ordering::Relaxed);
        frame.resume_at.store(0, Ordering::Relaxed);
        frame
            .count
            .store(CountWord::allocated_to(owner).0, Ordering::Release);
    }
}

/// Where a [`FrameTable::relinquish`] stopped, and what it has done so far.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RelinquishCursor {
    span: usize,
    offset: u64,
    freed: u64,
    still_referenced: u64,
}

impl RelinquishCursor {
    /// A cursor at the first frame of the table.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            span: 0,
            offset: 0,
            freed: 0,
            still_referenced: 0,
        }
    }

    /// Frames of the domain freed so far (each also went to the table's
    /// [`FreeSink`](crate::FreeSink)).
    #[must_use]
    pub const fn freed(&self) -> u64 {
        self.freed
    }

    /// Frames of the domain that others still reference: they stay owned by
    /// it until the last reference goes.
    #[must_use]
    pub const fn still_referenced(&self) -> u64 {
        self.still_referenced
    }
}

/// Whether a [`FrameTable::relinquish`] has visited every frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use = "a preempted relinquish must be called again"]
pub enum RelinquishProgress {
    /// Every frame is visited.
    Done,
    /// The budget ran out; call again with the same cursor.
    Preempted,
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used)]
mod tests {
    use hvmem_types::FrameRange;

    use super::*;
    use crate::{FrameType, TrustContents};

    const D1: Owner = Owner::Domain(DomId::new(1));
    const D2: Owner = Owner::Domain(DomId::new(2));

    fn mfn(n: u64) -> Mfn {
        Mfn::new(0x80 + n)
    }

    fn with_table(test: impl FnOnce(&FrameTable<'_>)) {
        let frames: [FrameInfo; 8] = Default::default();
        let table = FrameTable::new(&frames, &[FrameRange::new(mfn(0), 8).unwrap()]).unwrap();
        test(&table);
    }

    #[test]
    fn assign_refuses_reserved_domains_and_owned_frames() {
        with_table(|table| {
            let io = Owner::Domain(DomId::IO);
            assert_eq!(
                table.assign(mfn(0), io),
                Err(FrameError::ReservedDomain { owner: io })
            );
            table.assign(mfn(0), D1).unwrap();
            assert_eq!(
                table.assign(mfn(0), D2),
                Err(FrameError::AlreadyOwned { mfn: mfn(0) })
            );
            let state = table.state(mfn(0)).unwrap();
            assert_eq!(
                (state.owner, state.allocated, state.refs),
                (Some(D1), true, 1)
            );
        });
    }

    #[test]
    fn release_frees_only_when_no_other_reference_remains() {
        with_table(|table| {
            table.assign(mfn(0), D1).unwrap();
            assert_eq!(
                table.release(mfn(0), D2),
                Err(FrameError::WrongOwner { mfn: mfn(0) })
            );
            assert_eq!(table.release(mfn(0), D1), Ok(PutOutcome::Freed));
            assert_eq!(
                table.release(mfn(0), D1),
                Err(FrameError::Unowned { mfn: mfn(0) })
            );

            table.assign(mfn(1), D1).unwrap();
            table.get_page(mfn(1), D1).unwrap();
            assert_eq!(table.release(mfn(1), D1), Ok(PutOutcome::StillReferenced));
            assert_eq!(
                table.release(mfn(1), D1),
                Err(FrameError::NotAllocated { mfn: mfn(1) })
            );
            assert_eq!(table.put_page(mfn(1)), Ok(PutOutcome::Freed));
        });
    }

    #[test]
    fn transfer_moves_only_an_unreferenced_frame_and_it_arrives_untyped() {
        with_table(|table| {
            table.assign(mfn(0), D1).unwrap();
            table.get_page(mfn(0), D1).unwrap();
            table
                .get_type(mfn(0), FrameType::Writable, &TrustContents)
                .unwrap();
            let before = table.state(mfn(0)).unwrap();
            assert_eq!(
                table.transfer(mfn(0), D1, D2),
                Err(FrameError::InUse { mfn: mfn(0) })
            );
            assert_eq!(table.state(mfn(0)).unwrap(), before);
            table.put_type(mfn(0), &TrustContents).unwrap();
            let _ = table.put_page(mfn(0)).unwrap();

            assert_eq!(
                table.transfer(mfn(0), D2, D1),
                Err(FrameError::WrongOwner { mfn: mfn(0) })
            );
            table.transfer(mfn(0), D1, Owner::Host).unwrap();
            let moved = table.state(mfn(0)).unwrap();
            assert_eq!(
                (moved.owner, moved.refs, moved.allocated),
                (Some(Owner::Host), 1, true)
            );
            assert_eq!(
                (moved.frame_type, moved.validated),
                (FrameType::None, false)
            );
            assert_eq!(
                table.get_page(mfn(0), D1),
                Err(FrameError::WrongOwner { mfn: mfn(0) })
            );
        });
    }

    #[test]
    fn relinquish_frees_unreferenced_frames_and_leaves_referenced_ones() {
        with_table(|table| {
            for n in 0..6 {
                table
                    .assign(mfn(n), if n % 2 == 0 { D1 } else { D2 })
                    .unwrap();
            }
            // A pinned table, and a frame a foreign domain still maps.
            table
                .pin(mfn(0), D1, FrameType::L4, &TrustContents)
                .unwrap();
            table.get_page(mfn(2), D1).unwrap();

            let mut cursor = RelinquishCursor::new();
            let mut calls = 0;
            while table.relinquish(DomId::new(1), &mut cursor, 3, &TrustContents)
                == RelinquishProgress::Preempted
            {
                calls += 1;
            }
            assert_eq!(calls, 2, "8 frames, 3 per call");
            assert_eq!((cursor.freed(), cursor.still_referenced()), (2, 1));
            for n in [0, 4] {
                assert_eq!(table.state(mfn(n)).unwrap().owner, None);
            }
            let mapped = table.state(mfn(2)).unwrap();
            assert_eq!(
                (mapped.owner, mapped.allocated, mapped.refs),
                (Some(D1), false, 1)
            );
            assert_eq!(table.put_page(mfn(2)), Ok(PutOutcome::Freed));
            // The other domain's frames are untouched.
            for n in [1, 3, 5] {
                let state = table.state(mfn(n)).unwrap();
                assert_eq!((state.owner, state.refs), (Some(D2), 1));
            }
        });
    }
}

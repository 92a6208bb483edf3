//! A reference model of the frame table, and a decoder that turns arbitrary
//! bytes into operations checked against it.
//!
//! [`run`] builds a six-frame table over two ranges with a hole between them,
//! decodes `data` four bytes per operation (assign, release, transfer,
//! get/put page, get/put type, pin, unpin, relinquish, and reconfiguring the
//! test validator), applies each to the table and to a plain, single-threaded
//! model, and panics as soon as they disagree. It is the oracle of the crate's
//! property test and of the `frametable` fuzz target.
//!
//! After every operation it checks, for every frame:
//!
//! - conservation: the frame is free (no owner, no reference) or owned by
//!   exactly the owner the model says, with the model's general count;
//! - the type, type count and flags equal the model's;
//! - no frame is both writable-typed and holding page-table validation: the
//!   validator's entry references exist only on a validated (or partially
//!   validated) page-table frame;
//! - each validation completed exactly once per type count 0 -> 1 transition
//!   (or resume) the model predicts, and each de-validation once per last put;
//! - the free sink heard of each free exactly once.
//!
//! The harness acts as one user: it takes references and gives back only the
//! ones it holds (contract-breaking puts are tried only where the table can
//! tell, and must then be refused).

// The model indexes its own fixed arrays with indices it derived from them;
// a panic here is the oracle reporting a divergence.
#![allow(clippy::indexing_slicing, clippy::panic, clippy::expect_used)]

use core::array;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hvmem_types::{DomId, FrameRange, Mfn};

use crate::{
    FrameError, FrameInfo, FrameTable, FrameType, FreeSink, InvalidEntry, Owner, PutOutcome,
    RelinquishCursor, RelinquishProgress, TableFrame, ValidatedEntries, Validation, Validator,
};

/// Frames in the model's table.
pub const FRAMES: usize = 6;
/// Entries the test validator checks per frame.
pub const ENTRIES: u32 = 3;
/// Bytes per decoded operation.
pub const OP_BYTES: usize = 4;

/// The covered ranges: four frames, a hole, two frames.
const RANGES: [(u64, u64); 2] = [(0x100, 4), (0x200, 2)];
/// Frames the table does not cover: one in the hole, one beyond.
const OUTSIDE: [u64; 2] = [0x104, 0x300];

/// One operation on the table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// [`FrameTable::assign`].
    Assign {
        /// The frame.
        mfn: Mfn,
        /// The new owner.
        owner: Owner,
    },
    /// [`FrameTable::release`].
    Release {
        /// The frame.
        mfn: Mfn,
        /// The owner named.
        owner: Owner,
    },
    /// [`FrameTable::transfer`].
    Transfer {
        /// The frame.
        mfn: Mfn,
        /// The owner named as source.
        from: Owner,
        /// The destination.
        to: Owner,
    },
    /// [`FrameTable::get_page`].
    GetPage {
        /// The frame.
        mfn: Mfn,
        /// The owner named.
        owner: Owner,
    },
    /// [`FrameTable::put_page`] of a reference the harness holds (or, where
    /// the table can tell, one nobody holds).
    PutPage {
        /// The frame.
        mfn: Mfn,
    },
    /// [`FrameTable::get_type`], backed by a general reference the harness
    /// holds.
    GetType {
        /// The frame.
        mfn: Mfn,
        /// The type asked for.
        ty: FrameType,
    },
    /// [`FrameTable::put_type`].
    PutType {
        /// The frame.
        mfn: Mfn,
    },
    /// [`FrameTable::pin`].
    Pin {
        /// The frame.
        mfn: Mfn,
        /// The owner named.
        owner: Owner,
        /// The type to pin.
        ty: FrameType,
    },
    /// [`FrameTable::unpin`].
    Unpin {
        /// The frame.
        mfn: Mfn,
        /// The owner named.
        owner: Owner,
    },
    /// [`FrameTable::relinquish`] to completion, `budget` frames per call.
    Relinquish {
        /// The dying domain.
        dom: DomId,
        /// Frames per call.
        budget: u64,
    },
    /// Changes how the test validator treats a frame.
    Configure {
        /// The frame.
        mfn: Mfn,
        /// Entries per call before it reports preemption (0: preempt at
        /// once).
        chunk: u32,
        /// The entry it refuses, if any.
        bad: Option<u32>,
    },
}

impl Op {
    /// Decodes one operation from `OP_BYTES` bytes (missing bytes read as
    /// zero). Every byte string decodes to some operation.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Self {
        let byte = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let (a, b, c) = (byte(1), byte(2), byte(3));
        match byte(0) % 11 {
            0 => Self::Assign {
                mfn: mfn(a),
                owner: owner(b),
            },
            1 => Self::Release {
                mfn: mfn(a),
                owner: owner(b),
            },
            2 => Self::Transfer {
                mfn: mfn(a),
                from: owner(b),
                to: owner(c),
            },
            3 => Self::GetPage {
                mfn: mfn(a),
                owner: owner(b),
            },
            4 => Self::PutPage { mfn: mfn(a) },
            5 => Self::GetType {
                mfn: mfn(a),
                ty: frame_type(b),
            },
            6 => Self::PutType { mfn: mfn(a) },
            7 => Self::Pin {
                mfn: mfn(a),
                owner: owner(b),
                ty: frame_type(c),
            },
            8 => Self::Unpin {
                mfn: mfn(a),
                owner: owner(b),
            },
            9 => Self::Relinquish {
                dom: DomId::new(1 + u16::from(a % 4)),
                budget: 1 + u64::from(b % 7),
            },
            _ => Self::Configure {
                mfn: mfn(a),
                chunk: u32::from(b % 4),
                bad: (c % 5 < 3).then_some(u32::from(c % 5)),
            },
        }
    }
}

fn mfn(code: u8) -> Mfn {
    let index = usize::from(code) % (FRAMES + OUTSIDE.len());
    match index.checked_sub(FRAMES) {
        Some(outside) => Mfn::new(OUTSIDE[outside]),
        None => mfn_of(index),
    }
}

fn owner(code: u8) -> Owner {
    match code % 5 {
        3 => Owner::Host,
        4 => Owner::Domain(DomId::IO),
        d => Owner::Domain(DomId::new(1 + u16::from(d))),
    }
}

fn frame_type(code: u8) -> FrameType {
    FrameType::ALL[usize::from(code) % FrameType::ALL.len()]
}

/// The frame number of model frame `index`.
fn mfn_of(index: usize) -> Mfn {
    let mut index = index as u64;
    for (start, len) in RANGES {
        if index < len {
            return Mfn::new(start + index);
        }
        index -= len;
    }
    Mfn::new(OUTSIDE[0])
}

/// The model frame index of `mfn`, if the table covers it.
fn index_of(mfn: Mfn) -> Option<usize> {
    let mut base = 0;
    for (start, len) in RANGES {
        if let Some(offset) = mfn.get().checked_sub(start).filter(|&o| o < len) {
            return Some((base + offset) as usize);
        }
        base += len;
    }
    None
}

/// What the test validator does with a frame: check `chunk` entries per call,
/// refusing entry `bad`.
fn simulate(start: u32, chunk: u32, bad: Option<u32>) -> Result<Validation, InvalidEntry> {
    let end = if chunk == 0 {
        start
    } else {
        (start + chunk).min(ENTRIES)
    };
    match bad.filter(|&bad| start <= bad && bad < end) {
        Some(index) => Err(InvalidEntry { index }),
        None if end >= ENTRIES => Ok(Validation::Complete),
        None => Ok(Validation::Preempted { next_entry: end }),
    }
}

/// A validator whose frames have [`ENTRIES`] entries; a page-table frame's
/// validated entries each "hold a reference" (a counter), which it checks
/// are taken and released exactly once.
struct TestValidator {
    /// Per frame: `chunk | bad << 8`, `bad == 0xff` for none.
    config: [AtomicU32; FRAMES],
    held: [AtomicU32; FRAMES],
    validations: [AtomicU64; FRAMES],
    devalidations: [AtomicU64; FRAMES],
}

impl TestValidator {
    fn new() -> Self {
        Self {
            // Frames start out validating at different paces, so preemption
            // happens without a reconfiguration first.
            config: array::from_fn(|index| {
                AtomicU32::new([ENTRIES, 1, 2, 0][index % 4] | 0xff << 8)
            }),
            held: array::from_fn(|_| AtomicU32::new(0)),
            validations: array::from_fn(|_| AtomicU64::new(0)),
            devalidations: array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn configure(&self, index: usize, chunk: u32, bad: Option<u32>) {
        self.config[index].store(chunk | bad.unwrap_or(0xff) << 8, Ordering::Relaxed);
    }

    fn config(&self, index: usize) -> (u32, Option<u32>) {
        let raw = self.config[index].load(Ordering::Relaxed);
        let bad = raw >> 8;
        (raw & 0xff, (bad != 0xff).then_some(bad))
    }
}

impl Validator for TestValidator {
    fn validate(
        &self,
        table: &FrameTable<'_>,
        frame: TableFrame,
        start_entry: u32,
    ) -> Result<Validation, InvalidEntry> {
        let index = index_of(frame.mfn).expect("validating a frame outside the table");
        let state = table.state(frame.mfn).expect("covered frame");
        // The validate lock: count 1, neither validated nor partial.
        assert_eq!(
            (
                state.type_refs,
                state.validated,
                state.partial,
                state.frame_type
            ),
            (1, false, false, frame.frame_type),
            "validator called without the validate lock on {}",
            frame.mfn
        );
        assert!(frame.frame_type.needs_validation());
        let held = &self.held[index];
        let counts = frame.frame_type.is_page_table();
        if counts {
            assert_eq!(
                held.load(Ordering::Relaxed),
                start_entry,
                "entries held on resume"
            );
        }
        let (chunk, bad) = self.config(index);
        let result = simulate(start_entry, chunk, bad);
        let now_held = match result {
            Ok(Validation::Complete) => {
                self.validations[index].fetch_add(1, Ordering::Relaxed);
                ENTRIES
            }
            Ok(Validation::Preempted { next_entry }) => next_entry,
            Err(_) => 0,
        };
        if counts {
            held.store(now_held, Ordering::Relaxed);
        }
        result
    }

    fn devalidate(&self, table: &FrameTable<'_>, frame: TableFrame, entries: ValidatedEntries) {
        let index = index_of(frame.mfn).expect("devalidating a frame outside the table");
        let state = table.state(frame.mfn).expect("covered frame");
        assert_eq!(
            (
                state.type_refs,
                state.validated,
                state.partial,
                state.frame_type
            ),
            (1, false, false, frame.frame_type),
            "devalidate called without the validate lock on {}",
            frame.mfn
        );
        let held = &self.held[index];
        if frame.frame_type.is_page_table() {
            let expected = match entries {
                ValidatedEntries::All => {
                    self.devalidations[index].fetch_add(1, Ordering::Relaxed);
                    ENTRIES
                }
                ValidatedEntries::Below(n) => n,
            };
            assert_eq!(held.load(Ordering::Relaxed), expected, "entries released");
        }
        held.store(0, Ordering::Relaxed);
    }
}

/// Counts the frees the table reports, per frame.
struct CountingSink {
    frees: [AtomicU64; FRAMES],
}

impl FreeSink for CountingSink {
    fn frame_freed(&self, mfn: Mfn) {
        let index = index_of(mfn).expect("freed a frame outside the table");
        self.frees[index].fetch_add(1, Ordering::Relaxed);
    }
}

/// What the model knows about one frame.
#[derive(Clone, Copy, Debug)]
struct ModelFrame {
    owner: Option<Owner>,
    allocated: bool,
    /// General references the harness holds.
    user_refs: u64,
    /// Type references the harness holds, each backed by one of `user_refs`.
    user_types: u64,
    pinned: bool,
    partial: bool,
    ty: FrameType,
    validated: bool,
    resume_at: u32,
    validations: u64,
    devalidations: u64,
    frees: u64,
}

impl ModelFrame {
    const FREE: Self = Self {
        owner: None,
        allocated: false,
        user_refs: 0,
        user_types: 0,
        pinned: false,
        partial: false,
        ty: FrameType::None,
        validated: false,
        resume_at: 0,
        validations: 0,
        devalidations: 0,
        frees: 0,
    };

    fn refs(&self) -> u64 {
        u64::from(self.allocated)
            + self.user_refs
            + u64::from(self.pinned)
            + u64::from(self.partial)
    }

    fn type_refs(&self) -> u64 {
        self.user_types + u64::from(self.pinned) + u64::from(self.partial)
    }

    /// References `put_page` may drop.
    fn droppable_refs(&self) -> u64 {
        self.refs() - u64::from(self.allocated)
    }

    fn check_owner(&self, mfn: Mfn, owner: Owner) -> Result<(), FrameError> {
        match self.owner {
            Some(held) if held == owner => Ok(()),
            Some(_) => Err(FrameError::WrongOwner { mfn }),
            None => Err(FrameError::Unowned { mfn }),
        }
    }

    /// Frees the frame if nothing references it any more.
    fn settle(&mut self) -> PutOutcome {
        if self.refs() == 0 {
            self.owner = None;
            self.frees += 1;
            PutOutcome::Freed
        } else {
            PutOutcome::StillReferenced
        }
    }

    /// The last type reference went: a page table loses its validation.
    fn after_type_put(&mut self) {
        if self.type_refs() == 0 && self.ty.is_page_table() {
            self.validated = false;
            self.devalidations += 1;
        }
    }

    /// Xen's get_page_type state machine, for a caller holding a general
    /// reference.
    fn get_type(
        &mut self,
        mfn: Mfn,
        ty: FrameType,
        config: (u32, Option<u32>),
    ) -> Result<(), FrameError> {
        let start = if self.type_refs() == 0 {
            if self.ty != ty {
                self.ty = ty;
                self.validated = false;
            }
            if !ty.needs_validation() {
                self.validated = true;
            }
            if self.validated {
                self.user_types += 1;
                return Ok(());
            }
            0
        } else if self.ty != ty {
            return Err(FrameError::TypeConflict {
                mfn,
                held: self.ty,
                wanted: ty,
            });
        } else if self.validated {
            self.user_types += 1;
            return Ok(());
        } else if self.partial {
            self.partial = false;
            self.resume_at
        } else {
            return Err(FrameError::ValidationInProgress { mfn });
        };
        self.resume_at = 0;
        match simulate(start, config.0, config.1) {
            Ok(Validation::Complete) => {
                self.validated = true;
                self.validations += 1;
                self.user_types += 1;
                Ok(())
            }
            Ok(Validation::Preempted { next_entry }) if next_entry.max(start) > 0 => {
                self.partial = true;
                self.resume_at = next_entry.max(start);
                Err(FrameError::Preempted { mfn })
            }
            Ok(Validation::Preempted { .. }) => Err(FrameError::Preempted { mfn }),
            Err(entry) => Err(FrameError::Invalid { mfn, entry }),
        }
    }

    /// The entries the test validator should hold for this frame.
    fn held_entries(&self) -> u32 {
        if !self.ty.is_page_table() {
            0
        } else if self.partial {
            self.resume_at
        } else if self.validated {
            ENTRIES
        } else {
            0
        }
    }
}

/// The table, the model, and what the harness holds.
struct Harness<'a> {
    table: FrameTable<'a>,
    validator: &'a TestValidator,
    sink: &'a CountingSink,
    model: [ModelFrame; FRAMES],
}

/// A result the harness compares, with the operation's own outcome type.
type Outcome = Result<Option<PutOutcome>, FrameError>;

impl Harness<'_> {
    fn apply(&mut self, op: Op) {
        let (expected, actual) = match op {
            Op::Assign { mfn, owner } => (
                self.model_assign(mfn, owner),
                self.table.assign(mfn, owner).map(|()| None),
            ),
            Op::Release { mfn, owner } => (
                self.model_release(mfn, owner),
                self.table.release(mfn, owner).map(Some),
            ),
            Op::Transfer { mfn, from, to } => (
                self.model_transfer(mfn, from, to),
                self.table.transfer(mfn, from, to).map(|()| None),
            ),
            Op::GetPage { mfn, owner } => (
                self.model_get_page(mfn, owner),
                self.table.get_page(mfn, owner).map(|()| None),
            ),
            Op::PutPage { mfn } => match self.model_put_page(mfn) {
                Some(expected) => (expected, self.table.put_page(mfn).map(Some)),
                None => return,
            },
            Op::GetType { mfn, ty } => match self.model_get_type(mfn, ty) {
                Some(expected) => (
                    expected,
                    self.table.get_type(mfn, ty, self.validator).map(|()| None),
                ),
                None => return,
            },
            Op::PutType { mfn } => (
                self.model_put_type(mfn),
                self.table.put_type(mfn, self.validator).map(|()| None),
            ),
            Op::Pin { mfn, owner, ty } => (
                self.model_pin(mfn, owner, ty),
                self.table
                    .pin(mfn, owner, ty, self.validator)
                    .map(|()| None),
            ),
            Op::Unpin { mfn, owner } => (
                self.model_unpin(mfn, owner),
                self.table.unpin(mfn, owner, self.validator).map(Some),
            ),
            Op::Relinquish { dom, budget } => {
                self.relinquish(dom, budget);
                return;
            }
            Op::Configure { mfn, chunk, bad } => {
                if let Some(index) = index_of(mfn) {
                    self.validator.configure(index, chunk, bad);
                }
                return;
            }
        };
        assert_eq!(actual, expected, "{op:?}");
    }

    fn model_frame(&mut self, mfn: Mfn) -> Result<&mut ModelFrame, FrameError> {
        index_of(mfn)
            .map(|index| &mut self.model[index])
            .ok_or(FrameError::OutOfRange { mfn })
    }

    fn model_assign(&mut self, mfn: Mfn, owner: Owner) -> Outcome {
        if !owner.is_valid() {
            return Err(FrameError::ReservedDomain { owner });
        }
        let frame = self.model_frame(mfn)?;
        if frame.owner.is_some() {
            return Err(FrameError::AlreadyOwned { mfn });
        }
        frame.owner = Some(owner);
        frame.allocated = true;
        frame.ty = FrameType::None;
        frame.validated = false;
        Ok(None)
    }

    fn model_release(&mut self, mfn: Mfn, owner: Owner) -> Outcome {
        let frame = self.model_frame(mfn)?;
        frame.check_owner(mfn, owner)?;
        if !frame.allocated {
            return Err(FrameError::NotAllocated { mfn });
        }
        frame.allocated = false;
        Ok(Some(frame.settle()))
    }

    fn model_transfer(&mut self, mfn: Mfn, from: Owner, to: Owner) -> Outcome {
        if !to.is_valid() {
            return Err(FrameError::ReservedDomain { owner: to });
        }
        let frame = self.model_frame(mfn)?;
        frame.check_owner(mfn, from)?;
        if !frame.allocated {
            return Err(FrameError::NotAllocated { mfn });
        }
        if frame.refs() != 1 {
            return Err(FrameError::InUse { mfn });
        }
        frame.owner = Some(to);
        frame.ty = FrameType::None;
        frame.validated = false;
        Ok(None)
    }

    fn model_get_page(&mut self, mfn: Mfn, owner: Owner) -> Outcome {
        let frame = self.model_frame(mfn)?;
        frame.check_owner(mfn, owner)?;
        frame.user_refs += 1;
        Ok(None)
    }

    /// `None`: the harness holds no reference to drop, but others do; the
    /// table cannot tell, so the put is not tried.
    fn model_put_page(&mut self, mfn: Mfn) -> Option<Outcome> {
        let frame = match self.model_frame(mfn) {
            Ok(frame) => frame,
            Err(error) => return Some(Err(error)),
        };
        if frame.user_refs > frame.user_types {
            frame.user_refs -= 1;
            Some(Ok(Some(frame.settle())))
        } else if frame.droppable_refs() == 0 {
            Some(Err(FrameError::NotReferenced { mfn }))
        } else {
            None
        }
    }

    fn model_get_type(&mut self, mfn: Mfn, ty: FrameType) -> Option<Outcome> {
        let config = index_of(mfn).map(|index| self.validator.config(index));
        let frame = match self.model_frame(mfn) {
            Ok(frame) => frame,
            Err(error) => return Some(Err(error)),
        };
        if frame.owner.is_none() {
            return Some(Err(FrameError::Unowned { mfn }));
        }
        if frame.droppable_refs() == 0 {
            return Some(Err(FrameError::NotReferenced { mfn }));
        }
        if frame.user_refs <= frame.user_types {
            return None;
        }
        Some(frame.get_type(mfn, ty, config?).map(|()| None))
    }

    fn model_put_type(&mut self, mfn: Mfn) -> Outcome {
        let frame = self.model_frame(mfn)?;
        if frame.user_types == 0 {
            return Err(FrameError::NotTypeReferenced { mfn });
        }
        frame.user_types -= 1;
        frame.after_type_put();
        Ok(None)
    }

    fn model_pin(&mut self, mfn: Mfn, owner: Owner, ty: FrameType) -> Outcome {
        if !ty.is_page_table() {
            return Err(FrameError::NotPinnable { frame_type: ty });
        }
        let config = index_of(mfn).map(|index| self.validator.config(index));
        let frame = self.model_frame(mfn)?;
        frame.check_owner(mfn, owner)?;
        let config = config.ok_or(FrameError::OutOfRange { mfn })?;
        // The pin's general reference, held like a user's while its type
        // reference is taken.
        frame.user_refs += 1;
        if let Err(error) = frame.get_type(mfn, ty, config) {
            // Dropping the pin's reference (with a partial state's, dropped
            // by a failed resume) may free a released frame.
            frame.user_refs -= 1;
            let _ = frame.settle();
            return Err(error);
        }
        frame.user_refs -= 1;
        frame.user_types -= 1;
        if frame.pinned {
            return Err(FrameError::AlreadyPinned { mfn });
        }
        frame.pinned = true;
        Ok(None)
    }

    fn model_unpin(&mut self, mfn: Mfn, owner: Owner) -> Outcome {
        let frame = self.model_frame(mfn)?;
        frame.check_owner(mfn, owner)?;
        if !frame.pinned {
            return Err(FrameError::NotPinned { mfn });
        }
        frame.pinned = false;
        frame.after_type_put();
        Ok(Some(frame.settle()))
    }

    fn relinquish(&mut self, dom: DomId, budget: u64) {
        let mut cursor = RelinquishCursor::new();
        let mut calls = 0;
        while self
            .table
            .relinquish(dom, &mut cursor, budget, self.validator)
            == RelinquishProgress::Preempted
        {
            calls += 1;
            assert!(calls <= FRAMES, "relinquish does not finish");
        }
        let (mut freed, mut still_referenced) = (0, 0);
        for frame in &mut self.model {
            if frame.owner != Some(Owner::Domain(dom)) {
                continue;
            }
            if frame.pinned {
                frame.pinned = false;
                frame.after_type_put();
            }
            if frame.partial {
                frame.partial = false;
                frame.resume_at = 0;
            }
            frame.allocated = false;
            match frame.settle() {
                PutOutcome::Freed => freed += 1,
                PutOutcome::StillReferenced => still_referenced += 1,
            }
        }
        assert_eq!(
            (cursor.freed(), cursor.still_referenced()),
            (freed, still_referenced),
            "relinquish of {dom}"
        );
    }

    /// Compares every frame with the model and checks the invariants.
    fn check(&self) {
        let mut owned = 0;
        for (index, model) in self.model.iter().enumerate() {
            let mfn = mfn_of(index);
            let state = self.table.state(mfn).expect("covered frame");
            // Conservation: free, or owned once with a count.
            assert_eq!(state.owner, model.owner, "owner of {mfn}");
            match state.owner {
                None => assert_eq!((state.refs, state.type_refs), (0, 0), "free {mfn}"),
                Some(_) => {
                    owned += 1;
                    assert!(state.refs >= 1, "owned {mfn} without a reference");
                }
            }
            assert_eq!(state.allocated, model.allocated, "allocated {mfn}");
            assert_eq!(state.refs, model.refs(), "general count of {mfn}");
            assert_eq!(state.type_refs, model.type_refs(), "type count of {mfn}");
            assert_eq!(state.frame_type, model.ty, "type of {mfn}");
            assert_eq!(state.pinned, model.pinned, "pin of {mfn}");
            assert_eq!(state.partial, model.partial, "partial of {mfn}");
            assert_eq!(state.validated, model.validated, "validated {mfn}");
            // Never writable and a page table: entry references exist only
            // on a validated or partial page table.
            let held = self.validator.held[index].load(Ordering::Relaxed);
            assert_eq!(held, model.held_entries(), "entries held by {mfn}");
            if held > 0 {
                assert!(state.frame_type.is_page_table() && state.type_refs > 0);
            }
            if state.validated && state.frame_type.is_page_table() {
                assert!(
                    state.type_refs > 0,
                    "validated page table {mfn} without a user"
                );
            }
            assert_eq!(
                self.validator.validations[index].load(Ordering::Relaxed),
                model.validations,
                "validations of {mfn}"
            );
            assert_eq!(
                self.validator.devalidations[index].load(Ordering::Relaxed),
                model.devalidations,
                "de-validations of {mfn}"
            );
            assert_eq!(
                self.sink.frees[index].load(Ordering::Relaxed),
                model.frees,
                "frees of {mfn}"
            );
        }
        let free = self
            .model
            .iter()
            .filter(|frame| frame.owner.is_none())
            .count();
        assert_eq!(owned + free, FRAMES);
    }
}

/// Decodes `data` into operations and checks each against the model; panics
/// on the first divergence or broken invariant.
pub fn run(data: &[u8]) {
    let frames: [FrameInfo; FRAMES] = array::from_fn(|_| FrameInfo::new());
    let ranges =
        RANGES.map(|(start, len)| FrameRange::new(Mfn::new(start), len).expect("small range"));
    let validator = TestValidator::new();
    let sink = CountingSink {
        frees: array::from_fn(|_| AtomicU64::new(0)),
    };
    let table = FrameTable::new(&frames, &ranges)
        .expect("storage fits the ranges")
        .with_free_sink(&sink);
    let mut harness = Harness {
        table,
        validator: &validator,
        sink: &sink,
        model: [ModelFrame::FREE; FRAMES],
    };
    for bytes in data.chunks(OP_BYTES) {
        harness.apply(Op::decode(bytes));
        harness.check();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn ops(ops: &[[u8; OP_BYTES]]) -> Vec<u8> {
        ops.iter().flatten().copied().collect()
    }

    #[test]
    fn decoder_reaches_every_operation_and_the_holes() {
        let seen: Vec<_> = (0..11u8).map(|code| Op::decode(&[code, 6, 0, 0])).collect();
        assert!(matches!(seen[0], Op::Assign { mfn, .. } if mfn == Mfn::new(OUTSIDE[0])));
        assert!(matches!(seen[10], Op::Configure { .. }));
        assert_eq!(
            Op::decode(&[]),
            Op::Assign {
                mfn: Mfn::new(0x100),
                owner: owner(0)
            }
        );
    }

    #[test]
    fn model_scenario_with_preempted_validation_and_relinquish() {
        run(&ops(&[
            [0, 0, 0, 0],  // assign 0x100 to d1
            [10, 0, 1, 4], // validator: 1 entry per call, no bad entry
            [3, 0, 0, 0],  // get_page
            [5, 0, 1, 0],  // get_type L1: preempted after entry 0
            [5, 0, 1, 0],  // resume: preempted after entry 1
            [7, 0, 0, 1],  // pin L1: resumes, completes, pins
            [9, 0, 3, 0],  // relinquish d1
            [6, 0, 0, 0],  // put_type: nothing held by the harness
            [4, 0, 0, 0],  // put_page: frees
        ]));
    }

    /// One operation's bytes: mostly on the first two frames and the first
    /// two owners (so that sequences build up state on them), sometimes on
    /// anything.
    fn op_bytes() -> impl Strategy<Value = [u8; OP_BYTES]> {
        prop_oneof![
            3 => (any::<u8>(), 0u8..2, 0u8..2, any::<u8>()).prop_map(|(op, frame, owner, c)| [op, frame, owner, c]),
            1 => any::<[u8; OP_BYTES]>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 2048 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Any operation sequence keeps the table equal to the model, with
        /// conservation (every frame free or owned once), counts equal to the
        /// model's, no frame both writable-typed and page-table-validated, and
        /// one validation per type count 0 -> 1 transition.
        #[test]
        fn table_matches_model(chunks in proptest::collection::vec(op_bytes(), 0..if cfg!(miri) { 40 } else { 120 })) {
            run(&chunks.concat());
        }
    }
}

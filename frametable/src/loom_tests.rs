//! Model checks of the races the frame table must win: every interleaving of
//! the CAS loops, explored by loom (`RUSTFLAGS="--cfg loom"`).

#![allow(clippy::unwrap_used, clippy::panic)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use loom::thread;

use hvmem_types::{DomId, FrameRange, Mfn};

use crate::{
    FrameError, FrameInfo, FrameTable, FrameType, FreeSink, InvalidEntry, Owner, PutOutcome,
    RelinquishCursor, RelinquishProgress, TableFrame, ValidatedEntries, Validation, Validator,
};

const MFN: Mfn = Mfn::new(0x10);
const D1: Owner = Owner::Domain(DomId::new(1));
const ENTRIES: u32 = 2;

/// Counts (de)validations and the entry references a table holds, and checks
/// that it is only ever called under the validate lock.
struct CountingValidator {
    validations: AtomicU32,
    devalidations: AtomicU32,
    held: AtomicU32,
}

impl CountingValidator {
    fn assert_locked(table: &FrameTable<'_>, frame: TableFrame) {
        let state = table.state(frame.mfn).unwrap();
        assert_eq!(
            (
                state.frame_type,
                state.type_refs,
                state.validated,
                state.partial
            ),
            (frame.frame_type, 1, false, false),
            "(de)validation outside the validate lock"
        );
    }
}

impl Validator for CountingValidator {
    fn validate(
        &self,
        table: &FrameTable<'_>,
        frame: TableFrame,
        start_entry: u32,
    ) -> Result<Validation, InvalidEntry> {
        Self::assert_locked(table, frame);
        assert_eq!(self.held.swap(ENTRIES, Ordering::Relaxed), start_entry);
        self.validations.fetch_add(1, Ordering::Relaxed);
        Ok(Validation::Complete)
    }

    fn devalidate(&self, table: &FrameTable<'_>, frame: TableFrame, _: ValidatedEntries) {
        Self::assert_locked(table, frame);
        assert_eq!(self.held.swap(0, Ordering::Relaxed), ENTRIES);
        self.devalidations.fetch_add(1, Ordering::Relaxed);
    }
}

struct CountingSink {
    frees: AtomicUsize,
}

impl FreeSink for CountingSink {
    fn frame_freed(&self, _mfn: Mfn) {
        self.frees.fetch_add(1, Ordering::Relaxed);
    }
}

struct Shared {
    frames: [FrameInfo; 1],
    sink: CountingSink,
    validator: CountingValidator,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            frames: [FrameInfo::new()],
            sink: CountingSink {
                frees: AtomicUsize::new(0),
            },
            validator: CountingValidator {
                validations: AtomicU32::new(0),
                devalidations: AtomicU32::new(0),
                held: AtomicU32::new(0),
            },
        })
    }

    fn table(&self) -> FrameTable<'_> {
        FrameTable::new(&self.frames, &[FrameRange::new(MFN, 1).unwrap()])
            .unwrap()
            .with_free_sink(&self.sink)
    }
}

/// Two CPUs race to take the first L1 reference while a third takes a
/// writable one: exactly one type wins, the table is validated at most once
/// (exactly once if L1 won), the losers get an error, never both types.
#[test]
fn loom_first_page_table_reference_races_writable() {
    loom::model(|| {
        let shared = Shared::new();
        {
            let table = shared.table();
            table.assign(MFN, D1).unwrap();
            for _ in 0..3 {
                table.get_page(MFN, D1).unwrap();
            }
        }
        let cpus: [_; 2] = core::array::from_fn(|_| {
            let shared = shared.clone();
            thread::spawn(move || {
                shared
                    .table()
                    .get_type(MFN, FrameType::L1, &shared.validator)
            })
        });
        let table = shared.table();
        let writable = table.get_type(MFN, FrameType::Writable, &shared.validator);
        let l1: [_; 2] = cpus.map(|cpu| cpu.join().unwrap());

        let l1_won = l1.iter().filter(|result| result.is_ok()).count();
        assert!(!(writable.is_ok() && l1_won > 0), "writable and L1 at once");
        for result in l1.iter().chain([&writable]) {
            if let Err(error) = result {
                assert!(
                    matches!(
                        error,
                        FrameError::TypeConflict { .. } | FrameError::ValidationInProgress { .. }
                    ),
                    "{error:?}"
                );
            }
        }
        let validations = shared.validator.validations.load(Ordering::Relaxed);
        assert_eq!(validations, u32::from(l1_won > 0));
        let state = table.state(MFN).unwrap();
        let winners = l1_won + usize::from(writable.is_ok());
        assert_eq!(state.type_refs, winners as u64);
        if winners > 0 {
            assert!(state.validated);
        }
    });
}

/// XSA-401 class: a writable get races the put of the last L1 reference. The
/// type must not change while the de-validation is in flight: if the writable
/// get wins, the entries' references are already gone.
#[test]
fn loom_get_type_races_put_of_last_page_table_reference() {
    loom::model(|| {
        let shared = Shared::new();
        {
            let table = shared.table();
            table.assign(MFN, D1).unwrap();
            table.get_page(MFN, D1).unwrap();
            table.get_page(MFN, D1).unwrap();
            table
                .get_type(MFN, FrameType::L1, &shared.validator)
                .unwrap();
        }
        let putter = {
            let shared = shared.clone();
            thread::spawn(move || shared.table().put_type(MFN, &shared.validator))
        };
        let table = shared.table();
        let writable = table.get_type(MFN, FrameType::Writable, &shared.validator);
        if writable.is_ok() {
            assert_eq!(shared.validator.held.load(Ordering::Relaxed), 0);
            assert_eq!(shared.validator.devalidations.load(Ordering::Relaxed), 1);
        } else {
            assert!(matches!(writable, Err(FrameError::TypeConflict { .. })));
        }
        putter.join().unwrap().unwrap();

        let state = table.state(MFN).unwrap();
        assert_eq!(shared.validator.held.load(Ordering::Relaxed), 0);
        assert_eq!(shared.validator.devalidations.load(Ordering::Relaxed), 1);
        assert_eq!(state.type_refs, u64::from(writable.is_ok()));
    });
}

/// The same race with a get of the same type: the getter either shares the
/// validated table, is told to retry, or validates it afresh after the
/// de-validation; never does it see a half-de-validated table as valid.
#[test]
fn loom_get_same_type_races_put_of_last_reference() {
    loom::model(|| {
        let shared = Shared::new();
        {
            let table = shared.table();
            table.assign(MFN, D1).unwrap();
            table.get_page(MFN, D1).unwrap();
            table.get_page(MFN, D1).unwrap();
            table
                .get_type(MFN, FrameType::L1, &shared.validator)
                .unwrap();
        }
        let putter = {
            let shared = shared.clone();
            thread::spawn(move || shared.table().put_type(MFN, &shared.validator))
        };
        let table = shared.table();
        let again = table.get_type(MFN, FrameType::L1, &shared.validator);
        if again.is_ok() {
            assert_eq!(shared.validator.held.load(Ordering::Relaxed), ENTRIES);
        } else {
            assert!(matches!(
                again,
                Err(FrameError::ValidationInProgress { .. })
            ));
        }
        putter.join().unwrap().unwrap();

        let validator = &shared.validator;
        let state = table.state(MFN).unwrap();
        assert_eq!(state.type_refs, u64::from(again.is_ok()));
        assert_eq!(state.validated, again.is_ok());
        let live = validator.validations.load(Ordering::Relaxed)
            - validator.devalidations.load(Ordering::Relaxed);
        assert_eq!(live, u32::from(again.is_ok()), "one validation per 0 -> 1");
        assert_eq!(
            validator.held.load(Ordering::Relaxed),
            if again.is_ok() { ENTRIES } else { 0 }
        );
    });
}

/// A foreign user drops its reference while the owner dies and relinquish
/// unpins the frame and drops the allocation reference: no reference is
/// lost, the frame is freed exactly once, by exactly one of them.
#[test]
fn loom_put_page_races_relinquish() {
    loom::model(|| {
        let shared = Shared::new();
        {
            let table = shared.table();
            table.assign(MFN, D1).unwrap();
            table.get_page(MFN, D1).unwrap();
            table
                .pin(MFN, D1, FrameType::L1, &shared.validator)
                .unwrap();
        }
        let user = {
            let shared = shared.clone();
            thread::spawn(move || shared.table().put_page(MFN))
        };
        let table = shared.table();
        let mut cursor = RelinquishCursor::new();
        while table.relinquish(DomId::new(1), &mut cursor, 4, &shared.validator)
            == RelinquishProgress::Preempted
        {}
        let put = user.join().unwrap().unwrap();

        let by_user = usize::from(put == PutOutcome::Freed);
        assert_eq!(by_user + cursor.freed() as usize, 1, "freed by exactly one");
        assert_eq!(shared.sink.frees.load(Ordering::Relaxed), 1);
        let state = table.state(MFN).unwrap();
        assert_eq!((state.owner, state.refs, state.type_refs), (None, 0, 0));
        assert_eq!(shared.validator.devalidations.load(Ordering::Relaxed), 1);
        assert_eq!(shared.validator.held.load(Ordering::Relaxed), 0);
    });
}

/// A get in the owner's name races the put of the last reference (the
/// owner already released its allocation reference): the get either lands
/// while the frame is still owned, and then its own put races the other one,
/// or finds the frame free, never a transient count; the frame is freed
/// exactly once, by whichever put was the last.
#[test]
fn loom_get_page_races_the_last_put() {
    loom::model(|| {
        let shared = Shared::new();
        {
            let table = shared.table();
            table.assign(MFN, D1).unwrap();
            table.get_page(MFN, D1).unwrap();
            let _ = table.release(MFN, D1).unwrap();
        }
        let user = {
            let shared = shared.clone();
            thread::spawn(move || shared.table().put_page(MFN))
        };
        let table = shared.table();
        let got = table.get_page(MFN, D1);
        let ours = got.map(|()| table.put_page(MFN).unwrap());
        let theirs = user.join().unwrap().unwrap();

        match ours {
            Ok(ours) => assert_ne!(ours, theirs, "exactly one put frees"),
            Err(error) => {
                assert_eq!(error, FrameError::Unowned { mfn: MFN });
                assert_eq!(theirs, PutOutcome::Freed);
            }
        }
        assert_eq!(shared.sink.frees.load(Ordering::Relaxed), 1);
        let state = table.state(MFN).unwrap();
        assert_eq!((state.owner, state.refs), (None, 0));
    });
}

//! The guest balloon driver: Linux's `drivers/xen/balloon.c` as a sans-I/O
//! state machine.
//!
//! # Protocol
//!
//! The toolstack writes `memory/target` (KiB) in xenstore; the embedder's
//! watch passes it to [`BalloonDriver::set_target_kib`]. The driver keeps
//! `credit = target - current` and, each time the embedder runs it
//! ([`BalloonDriver::poll`], Linux's balloon thread iteration), moves at most
//! one batch of `BATCH` pages (512 in Linux):
//!
//! | credit | what `poll` does | state after the batch |
//! |---|---|---|
//! | > 0, balloon non-empty | asks for `XENMEM_populate_physmap` of up to `min(credit, BATCH)` parked frames, lowest first | `Done`, or `EAgain` if the hypervisor gave nothing |
//! | > 0, balloon empty | nothing to populate: the target is cut to the current size | `ECanceled` |
//! | < 0 | takes up to `min(-credit, BATCH)` pages from the guest ([`GuestPages`], "don't try hard") and asks for `XENMEM_decrease_reservation` of them | `Done`, or `EAgain` if the guest had too few pages or Xen took fewer |
//! | 0 | nothing | `Done` |
//!
//! The hypercall itself is the embedder's: it issues the [`Reservation`] and
//! reports the hypervisor's return value with [`BalloonDriver::complete`].
//! Extents are processed in order, so a short count means the first `n`
//! frames moved and the rest did not (Linux `BUG`s on a short decrease; this
//! driver hands the unmoved pages back to the guest and retries).
//!
//! After each batch the schedule follows Linux's `update_schedule`: `Done`
//! resets the delay to 1 s and the retry count; `EAgain` doubles the delay up
//! to `max_schedule_delay` (32 s) and after `max_retry_count` (4) retries
//! gives up (`ECanceled`) until the target changes. A new target wakes the
//! driver when it is `Done` and the credit is non-zero, or when the credit
//! changed.
//!
//! **Cancellation.** A target that moves while a batch is in flight never
//! undoes the hypercall: the completion accounts what Xen did, and the next
//! `poll` works toward the new target, so the rest of a move toward the old
//! one is cancelled at the batch boundary. A batch that was prepared but
//! never issued is dropped with [`BalloonDriver::abandon`].
//!
//! **Static max.** A target above `memory/static-max` is refused. For
//! translated guests (HVM, PVH) the first target fixes `target_diff =
//! static_max - boot target` and every later target is taken less that
//! difference (memory that is configured but never guest RAM).
//!
//! Not modelled: memory hotplug (`BP_WAIT`): a balloon that runs empty while
//! the target asks for more ends in `ECanceled` with the target cut to the
//! current size, as Linux does without hotplug.

use core::fmt;

use hvmem_types::{DomId, Gfn};

use crate::bitmap::{PageBitmap, StorageError, bitmap_words};
pub use crate::guest::GuestPages;
use crate::xen::abi::{MemoryOp, kib_to_pages};

/// Words of storage a driver needs for a physmap of `physmap_pages` frames.
#[must_use]
pub const fn driver_storage_words(physmap_pages: u64) -> usize {
    bitmap_words(physmap_pages)
}

/// What kind of guest the driver runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestKind {
    /// x86 PV or the control domain: targets are taken as written.
    Pv,
    /// HVM or PVH: the first target fixes `target_diff`.
    Translated,
}

/// How a driver starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DriverConfig {
    /// PV or translated.
    pub kind: GuestKind,
    /// Frames in the guest physmap; frame numbers `0..physmap_pages`.
    pub physmap_pages: u64,
    /// Frames populated at boot: `0..populated_pages`. The rest of the
    /// physmap starts out in the balloon.
    pub populated_pages: u64,
    /// `memory/static-max` in KiB.
    pub static_max_kib: u64,
    /// Retries before giving up; 0 retries forever (older kernels).
    pub max_retry_count: u32,
    /// Longest back-off in seconds.
    pub max_schedule_delay: u32,
}

impl DriverConfig {
    /// Linux's defaults for a guest with `physmap_pages` frames of which
    /// `populated_pages` are backed, and `static_max_kib`.
    #[must_use]
    pub const fn linux(
        kind: GuestKind,
        physmap_pages: u64,
        populated_pages: u64,
        static_max_kib: u64,
    ) -> Self {
        Self {
            kind,
            physmap_pages,
            populated_pages,
            static_max_kib,
            max_retry_count: 4,
            max_schedule_delay: 32,
        }
    }
}

/// Linux's `enum bp_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BalloonState {
    /// `BP_DONE`: done, or nothing to do.
    Done,
    /// `BP_EAGAIN`: failed; retry after the back-off.
    EAgain,
    /// `BP_ECANCELED`: gave up until the target changes.
    ECanceled,
}

/// A reservation hypercall the driver wants made: `__HYPERVISOR_memory_op`
/// with `op` and a `xen_memory_reservation` naming these frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation<'a> {
    /// `XENMEM_populate_physmap` or `XENMEM_decrease_reservation`.
    pub op: MemoryOp,
    /// Always `DOMID_SELF`.
    pub domid: DomId,
    /// Always 0: one Xen page per guest page.
    pub extent_order: u32,
    /// The frames, in the order Xen will process them.
    pub extents: &'a [Gfn],
}

/// What the embedder should do after `poll`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Step<'a> {
    /// Make this hypercall, then call [`BalloonDriver::complete`].
    Hypercall(Reservation<'a>),
    /// Nothing to do until [`BalloonDriver::set_target_kib`] says to wake.
    Idle,
    /// Run `poll` again after this many seconds (back-off).
    Sleep {
        /// Seconds.
        seconds: u32,
    },
}

/// When to run the driver next, after a batch completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Next {
    /// At once: the credit is not yet zero.
    Now,
    /// After this many seconds.
    Sleep {
        /// Seconds.
        seconds: u32,
    },
    /// When the target changes.
    Idle,
}

/// Whether a new target should wake the driver early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Wake {
    /// Run `poll` now.
    Now,
    /// Leave the current sleep as it is.
    NotYet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum InFlight {
    Populate,
    /// `short` when the guest had fewer pages than asked.
    Decrease {
        short: bool,
    },
}

/// Why a target from the toolstack was refused. The driver is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetError {
    /// The target is above `memory/static-max`.
    AboveStaticMax {
        /// The target, KiB.
        target_kib: u64,
        /// `memory/static-max`, KiB.
        static_max_kib: u64,
    },
    /// A translated guest's target is below the memory that is configured
    /// but never guest RAM (`target_diff`).
    BelowHiddenMemory {
        /// The target, pages.
        target_pages: u64,
        /// `target_diff`, pages.
        hidden_pages: u64,
    },
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AboveStaticMax {
                target_kib,
                static_max_kib,
            } => write!(
                f,
                "target {target_kib} KiB is above static-max {static_max_kib} KiB"
            ),
            Self::BelowHiddenMemory {
                target_pages,
                hidden_pages,
            } => write!(
                f,
                "target of {target_pages} pages is below the {hidden_pages} pages that are never guest RAM"
            ),
        }
    }
}
impl core::error::Error for TargetError {}

/// Why a driver could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverConfigError {
    /// More populated frames than the physmap has.
    PopulatedAbovePhysmap,
    /// The storage is too small for the physmap.
    Storage(StorageError),
}

impl fmt::Display for DriverConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PopulatedAbovePhysmap => {
                f.write_str("more populated frames than the physmap has")
            }
            Self::Storage(e) => write!(f, "driver storage: {e}"),
        }
    }
}
impl core::error::Error for DriverConfigError {}

/// Why `poll` could not run. The driver is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PollError {
    /// A batch is in flight: complete or abandon it first.
    BatchInFlight,
    /// The guest allocator handed out a frame outside the physmap or one
    /// that is already ballooned out; every page it gave is handed back.
    BadGuestPage {
        /// The frame.
        gfn: Gfn,
    },
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BatchInFlight => f.write_str("a batch is in flight"),
            Self::BadGuestPage { gfn } => {
                write!(
                    f,
                    "the guest allocator gave {gfn}, which is not a populated physmap frame"
                )
            }
        }
    }
}
impl core::error::Error for PollError {}

/// Why a completion was refused. The driver is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompleteError {
    /// No batch is in flight.
    NoBatch,
    /// The hypervisor claims more extents than the batch had.
    MoreThanAsked {
        /// The return value.
        done: i64,
        /// Extents in the batch.
        asked: usize,
    },
}

impl fmt::Display for CompleteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoBatch => f.write_str("no batch is in flight"),
            Self::MoreThanAsked { done, asked } => {
                write!(f, "hypercall returned {done} for a batch of {asked}")
            }
        }
    }
}
impl core::error::Error for CompleteError {}

/// The guest side of Xen ballooning. `S` is the storage of the balloon
/// bitmap (`&mut [u64]`, or an array), `BATCH` the frames per hypercall.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BalloonDriver<S, const BATCH: usize = 512> {
    kind: GuestKind,
    static_max_kib: u64,
    current_pages: u64,
    target_pages: u64,
    /// `None` until the first target of a translated guest.
    target_diff: Option<u64>,
    /// A set bit is a frame parked in the balloon (not backed by Xen).
    balloon: PageBitmap<S>,
    state: BalloonState,
    schedule_delay: u32,
    retry_count: u32,
    max_retry_count: u32,
    max_schedule_delay: u32,
    /// The credit when the driver last went to sleep.
    credit_at_sleep: i128,
    batch: [Gfn; BATCH],
    batch_len: usize,
    in_flight: Option<InFlight>,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>, const BATCH: usize> BalloonDriver<S, BATCH> {
    /// A driver for a guest as `config` describes, with balloon storage of
    /// at least [`driver_storage_words`] words.
    ///
    /// # Errors
    ///
    /// [`DriverConfigError::PopulatedAbovePhysmap`], or
    /// [`DriverConfigError::Storage`] when the storage is too small.
    pub fn new(config: DriverConfig, storage: S) -> Result<Self, DriverConfigError> {
        if config.populated_pages > config.physmap_pages {
            return Err(DriverConfigError::PopulatedAbovePhysmap);
        }
        let mut balloon =
            PageBitmap::new(storage, config.physmap_pages).map_err(DriverConfigError::Storage)?;
        for gfn in config.populated_pages..config.physmap_pages {
            balloon.set(gfn);
        }
        Ok(Self {
            kind: config.kind,
            static_max_kib: config.static_max_kib,
            current_pages: config.populated_pages,
            target_pages: config.populated_pages,
            target_diff: None,
            balloon,
            state: BalloonState::Done,
            schedule_delay: 1,
            retry_count: 1,
            max_retry_count: config.max_retry_count,
            max_schedule_delay: config.max_schedule_delay.max(1),
            credit_at_sleep: 0,
            batch: [Gfn::new(0); BATCH],
            batch_len: 0,
            in_flight: None,
        })
    }

    /// Pages the guest holds (`balloon_stats.current_pages`).
    #[must_use]
    pub fn current_pages(&self) -> u64 {
        self.current_pages
    }

    /// The target in pages, after `target_diff`.
    #[must_use]
    pub fn target_pages(&self) -> u64 {
        self.target_pages
    }

    /// Frames parked in the balloon.
    #[must_use]
    pub fn ballooned_pages(&self) -> u64 {
        self.balloon.count()
    }

    /// Whether `gfn` is parked in the balloon.
    #[must_use]
    pub fn is_ballooned(&self, gfn: Gfn) -> bool {
        self.balloon.get(gfn.get())
    }

    /// The state of the last iteration.
    #[must_use]
    pub fn state(&self) -> BalloonState {
        self.state
    }

    /// Frames of the batch in flight, if any.
    #[must_use]
    pub fn in_flight(&self) -> Option<&[Gfn]> {
        self.in_flight.and(self.batch.get(..self.batch_len))
    }

    /// `target - current` in pages.
    #[must_use]
    pub fn credit(&self) -> i128 {
        i128::from(self.target_pages) - i128::from(self.current_pages)
    }

    /// The toolstack wrote `memory/target` = `target_kib`.
    ///
    /// # Errors
    ///
    /// [`TargetError::AboveStaticMax`], or for a translated guest
    /// [`TargetError::BelowHiddenMemory`]. The driver is unchanged.
    pub fn set_target_kib(&mut self, target_kib: u64) -> Result<Wake, TargetError> {
        if target_kib > self.static_max_kib {
            return Err(TargetError::AboveStaticMax {
                target_kib,
                static_max_kib: self.static_max_kib,
            });
        }
        let pages = kib_to_pages(target_kib);
        let diff = match (self.kind, self.target_diff) {
            (GuestKind::Pv, _) => 0,
            (GuestKind::Translated, Some(diff)) => diff,
            (GuestKind::Translated, None) => {
                kib_to_pages(self.static_max_kib).saturating_sub(self.target_pages)
            }
        };
        let Some(target) = pages.checked_sub(diff) else {
            return Err(TargetError::BelowHiddenMemory {
                target_pages: pages,
                hidden_pages: diff,
            });
        };
        if self.kind == GuestKind::Translated {
            self.target_diff = Some(diff);
        }
        self.target_pages = target;
        let credit = self.credit();
        let wake = match self.state {
            BalloonState::Done => credit != 0,
            _ => credit != self.credit_at_sleep,
        };
        Ok(if wake { Wake::Now } else { Wake::NotYet })
    }

    /// One iteration of the balloon thread.
    ///
    /// # Errors
    ///
    /// [`PollError::BatchInFlight`]; [`PollError::BadGuestPage`] when the
    /// guest allocator hands out a frame the driver cannot balloon (every
    /// page taken in this call goes back). The driver is unchanged.
    pub fn poll<G: GuestPages>(&mut self, guest: &mut G) -> Result<Step<'_>, PollError> {
        if self.in_flight.is_some() {
            return Err(PollError::BatchInFlight);
        }
        let credit = self.credit();
        if credit > 0 {
            if self.balloon.count() == 0 {
                // Nothing parked to bring back: Linux without memory hotplug
                // cuts the target to what it has and gives up.
                self.target_pages = self.current_pages;
                let state = self.update_schedule(BalloonState::ECanceled);
                return Ok(self.sleep_step(state));
            }
            let want = credit.min(BATCH as i128) as usize;
            let mut n = 0;
            let mut from = 0;
            while n < want {
                let Some(gfn) = self.balloon.first_set_from(from) else {
                    break;
                };
                if let Some(slot) = self.batch.get_mut(n) {
                    *slot = Gfn::new(gfn);
                }
                n += 1;
                from = gfn + 1;
            }
            return Ok(self.issue(MemoryOp::PopulatePhysmap, n, InFlight::Populate));
        }
        if credit < 0 {
            let want = (-credit).min(BATCH as i128) as usize;
            let mut n = 0;
            while n < want {
                let Some(gfn) = guest.alloc_page() else {
                    break;
                };
                // Marking the page parked while collecting catches a page
                // handed out twice; the marks are undone below.
                if !self.balloon.set(gfn.get()) {
                    guest.free_page(gfn);
                    for i in 0..n {
                        let taken = self.batch.get(i).copied().unwrap_or_default();
                        self.balloon.clear(taken.get());
                        guest.free_page(taken);
                    }
                    self.clear_batch(n);
                    return Err(PollError::BadGuestPage { gfn });
                }
                if let Some(slot) = self.batch.get_mut(n) {
                    *slot = gfn;
                }
                n += 1;
            }
            for i in 0..n {
                let taken = self.batch.get(i).copied().unwrap_or_default();
                self.balloon.clear(taken.get());
            }
            if n == 0 {
                let state = self.update_schedule(BalloonState::EAgain);
                return Ok(self.sleep_step(state));
            }
            let short = n < want;
            return Ok(self.issue(
                MemoryOp::DecreaseReservation,
                n,
                InFlight::Decrease { short },
            ));
        }
        let state = self.update_schedule(BalloonState::Done);
        Ok(self.sleep_step(state))
    }

    fn issue(&mut self, op: MemoryOp, n: usize, kind: InFlight) -> Step<'_> {
        self.batch_len = n;
        self.in_flight = Some(kind);
        Step::Hypercall(Reservation {
            op,
            domid: DomId::SELF,
            extent_order: 0,
            extents: self.batch.get(..n).unwrap_or(&[]),
        })
    }

    fn sleep_step(&mut self, state: BalloonState) -> Step<'static> {
        match self.next_after(state) {
            Next::Now => Step::Sleep { seconds: 0 },
            Next::Sleep { seconds } => Step::Sleep { seconds },
            Next::Idle => Step::Idle,
        }
    }

    /// The hypervisor returned `rc` for the batch in flight: the number of
    /// extents done, or a negative errno (nothing done).
    ///
    /// # Errors
    ///
    /// [`CompleteError::NoBatch`], or [`CompleteError::MoreThanAsked`] when
    /// `rc` exceeds the batch. The driver is unchanged.
    pub fn complete<G: GuestPages>(
        &mut self,
        rc: i64,
        guest: &mut G,
    ) -> Result<Next, CompleteError> {
        let Some(kind) = self.in_flight else {
            return Err(CompleteError::NoBatch);
        };
        let asked = self.batch_len;
        let done = usize::try_from(rc.max(0)).unwrap_or(usize::MAX);
        if done > asked {
            return Err(CompleteError::MoreThanAsked { done: rc, asked });
        }
        let batch = self.batch.get(..asked).unwrap_or(&[]);
        let (moved, unmoved) = batch.split_at(done.min(batch.len()));
        let state = match kind {
            InFlight::Populate => {
                for gfn in moved {
                    self.balloon.clear(gfn.get());
                    guest.free_page(*gfn);
                }
                self.current_pages += moved.len() as u64;
                if rc <= 0 {
                    BalloonState::EAgain
                } else {
                    BalloonState::Done
                }
            }
            InFlight::Decrease { short } => {
                for gfn in moved {
                    self.balloon.set(gfn.get());
                }
                for gfn in unmoved {
                    guest.free_page(*gfn);
                }
                self.current_pages -= moved.len() as u64;
                if short || !unmoved.is_empty() {
                    BalloonState::EAgain
                } else {
                    BalloonState::Done
                }
            }
        };
        self.in_flight = None;
        self.clear_batch(asked);
        let state = self.update_schedule(state);
        Ok(self.next_after(state))
    }

    /// Drops a batch that `poll` prepared but the embedder never issued:
    /// pages taken for a decrease go back to the guest.
    ///
    /// # Errors
    ///
    /// [`CompleteError::NoBatch`].
    pub fn abandon<G: GuestPages>(&mut self, guest: &mut G) -> Result<(), CompleteError> {
        let Some(kind) = self.in_flight.take() else {
            return Err(CompleteError::NoBatch);
        };
        if let InFlight::Decrease { .. } = kind {
            for &gfn in self.batch.get(..self.batch_len).unwrap_or(&[]) {
                guest.free_page(gfn);
            }
        }
        self.clear_batch(self.batch_len);
        Ok(())
    }

    /// Forgets the first `n` batch slots, so that equal balloons compare
    /// equal whatever batches came before.
    fn clear_batch(&mut self, n: usize) {
        if let Some(used) = self.batch.get_mut(..n) {
            used.fill(Gfn::new(0));
        }
        self.batch_len = 0;
    }

    /// Linux's `update_schedule`.
    fn update_schedule(&mut self, state: BalloonState) -> BalloonState {
        let state = match state {
            BalloonState::ECanceled => BalloonState::ECanceled,
            BalloonState::Done => {
                self.schedule_delay = 1;
                self.retry_count = 1;
                BalloonState::Done
            }
            BalloonState::EAgain => {
                self.retry_count = self.retry_count.saturating_add(1);
                if self.max_retry_count != 0 && self.retry_count > self.max_retry_count {
                    self.schedule_delay = 1;
                    self.retry_count = 1;
                    BalloonState::ECanceled
                } else {
                    self.schedule_delay = self
                        .schedule_delay
                        .saturating_mul(2)
                        .min(self.max_schedule_delay);
                    BalloonState::EAgain
                }
            }
        };
        self.state = state;
        state
    }

    fn next_after(&mut self, state: BalloonState) -> Next {
        let credit = self.credit();
        self.credit_at_sleep = credit;
        match state {
            BalloonState::Done if credit != 0 => Next::Now,
            BalloonState::Done | BalloonState::ECanceled => Next::Idle,
            BalloonState::EAgain => Next::Sleep {
                seconds: self.schedule_delay,
            },
        }
    }
}

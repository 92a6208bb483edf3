//! The device side of virtio-balloon, with per-page balloon state.
//!
//! # Protocol
//!
//! - **Status.** Features are negotiated once
//!   ([`BalloonDevice::negotiate`], FEATURES_OK), then the driver sets
//!   DRIVER_OK ([`BalloonDevice::driver_ok`]); queues are served only after
//!   that (a stats buffer may arrive before). [`BalloonDevice::reset`]
//!   returns to the start: the guest owns all its memory again.
//! - **Per-page state.** The device keeps one bit per 4 KiB guest page
//!   (PFN = guest-physical address >> 12, whatever the guest's page size):
//!   set while the page is in the balloon. So it refuses an inflate of an
//!   inflated page, a deflate of a page that is not inflated, a PFN past
//!   guest memory, and a PFN twice in one request. A request is all or
//!   nothing: it is checked in full before any state changes, and a refused
//!   request changes nothing.
//! - **Host pages.** With host pages of `2^host_page_shift` bytes (2 MiB
//!   hugepages, 64 KiB hosts), a 4 KiB piece cannot be discarded alone. The
//!   device keeps a second bit per host page, set while the host page is
//!   discarded: it is discarded ([`HostAction::Discard`]) when its last piece
//!   is inflated, in whatever requests the pieces came, and handed back
//!   ([`HostAction::Reclaim`], an `MADV_WILLNEED` hint) when its first piece
//!   is deflated. QEMU forgets partial host pages between requests,
//!   cloud-hypervisor when a PFN of another host page arrives, Firecracker
//!   never tracks them; this device never loses a piece.
//! - **Actions** go to the caller's `emit` function, in runs of contiguous
//!   host pages, *before* the request is acknowledged (without
//!   MUST_TELL_HOST the guest may reuse a page as soon as its deflate, or an
//!   inflate's ack, is seen). An `Ok` return means: put the buffer on the
//!   used ring with length 0.
//! - **Targets.** `num_pages` is the host's ([`BalloonDevice::set_num_pages`],
//!   at most the guest's pages); `actual` is the driver's word, bounded but
//!   never trusted: [`BalloonDevice::inflated_pages`] is the device's own
//!   count.
//! - **Statistics.** The driver posts one buffer; the device holds it and
//!   gives it back when it wants fresh numbers. At most one is outstanding;
//!   a legacy device ignores the contents of the first.
//! - **Free page hinting.** Command ids >= 2 start a round; STOP (0) and
//!   DONE (1) end it. The driver answers each id with exactly one 4-byte
//!   buffer carrying it, then hints pages, then STOP. Hints under an id that
//!   is no longer current are ignored; an id out of sequence is refused.
//! - **Page reporting.** Reported free ranges are discarded (their
//!   host-page-aligned interior) unless PAGE_POISON is negotiated with a
//!   non-zero `poison_val`, as QEMU does.
//!
//! Buffer contents are little-endian with VERSION_1 and guest-endian for a
//! legacy driver ([`DeviceConfig::legacy_big_endian`]).

use core::fmt;

use hvmem_types::PAGE_SHIFT;

use crate::bitmap::{PageBitmap, StorageError, bitmap_words};
use crate::virtio::config::{
    ACTUAL_OFFSET, BalloonConfig, ConfigAccessError, POISON_VAL_OFFSET, config_len,
};
use crate::virtio::features::{Features, NegotiationError};
use crate::virtio::hint::{CMD_ID_DONE, CMD_ID_STOP, HintError, HintRound};
use crate::virtio::stats::{Stats, StatsError};

/// Linux's most PFNs per request, and what Firecracker and cloud-hypervisor
/// accept.
pub const MAX_PFNS_PER_REQUEST: usize = 256;

/// The most ranges in one report (Linux sends at most 32).
pub const MAX_REPORT_RANGES: usize = 256;

/// Words of piece storage for `guest_pages` 4 KiB pages.
#[must_use]
pub const fn piece_storage_words(guest_pages: u64) -> usize {
    bitmap_words(guest_pages)
}

/// Words of host-page storage for `guest_pages` 4 KiB pages and host pages
/// of `2^host_page_shift` bytes (0 for 4 KiB host pages).
#[must_use]
pub const fn host_page_storage_words(guest_pages: u64, host_page_shift: u32) -> usize {
    if host_page_shift <= PAGE_SHIFT || host_page_shift > 30 {
        0
    } else {
        bitmap_words(guest_pages.div_ceil(1 << (host_page_shift - PAGE_SHIFT)))
    }
}

/// How a device is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceConfig {
    /// Features offered.
    pub offered: Features,
    /// Guest memory in 4 KiB pages: PFNs `0..guest_pages` (at most 2^32).
    pub guest_pages: u64,
    /// log2 of the host page size backing guest memory (12 to 30).
    pub host_page_shift: u32,
    /// Refuse FEATURES_OK when MUST_TELL_HOST is offered and declined.
    pub require_must_tell_host: bool,
    /// The first free page hint command id (>= 2; QEMU 0x8000_0000,
    /// Firecracker 2).
    pub first_hint_id: u32,
    /// A legacy (pre-VERSION_1) guest is big-endian.
    pub legacy_big_endian: bool,
}

/// What the VMM must do to host memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostAction {
    /// Discard the host pages backing these guest pages (`MADV_DONTNEED`,
    /// hole punching): whole host pages.
    Discard {
        /// First 4 KiB guest page.
        first_pfn: u64,
        /// 4 KiB pages.
        pages: u64,
    },
    /// The guest takes these pages back: prefetch them (`MADV_WILLNEED`);
    /// advisory.
    Reclaim {
        /// First 4 KiB guest page.
        first_pfn: u64,
        /// 4 KiB pages.
        pages: u64,
    },
    /// Raise a configuration-change interrupt.
    ConfigChanged,
}

/// Why the device could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceConfigError {
    /// More than 2^32 guest pages: a 32-bit PFN cannot name them.
    TooManyPages,
    /// The host page shift is outside 12..=30.
    BadHostPageShift,
    /// The first hint id is STOP or DONE.
    BadFirstHintId,
    /// The storage is too small.
    Storage(StorageError),
}

impl fmt::Display for DeviceConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyPages => f.write_str("more guest pages than 32-bit PFNs can name"),
            Self::BadHostPageShift => f.write_str("host page shift outside 12..=30"),
            Self::BadFirstHintId => f.write_str("the first hint id must be at least 2"),
            Self::Storage(e) => write!(f, "device storage: {e}"),
        }
    }
}
impl core::error::Error for DeviceConfigError {}

/// Why a status change was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusError {
    /// DRIVER_OK before FEATURES_OK.
    FeaturesNotNegotiated,
    /// DRIVER_OK twice.
    AlreadyRunning,
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FeaturesNotNegotiated => f.write_str("DRIVER_OK before FEATURES_OK"),
            Self::AlreadyRunning => f.write_str("DRIVER_OK is already set"),
        }
    }
}
impl core::error::Error for StatusError {}

/// Why the host's target was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetTargetError {
    /// More pages than the guest has.
    AboveGuestMemory {
        /// The target.
        pages: u32,
        /// The guest's pages.
        guest_pages: u64,
    },
}

impl fmt::Display for SetTargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AboveGuestMemory { pages, guest_pages } => {
                write!(
                    f,
                    "target of {pages} pages is above the guest's {guest_pages}"
                )
            }
        }
    }
}
impl core::error::Error for SetTargetError {}

/// Why an inflate or deflate request was refused. Nothing changed; the
/// buffer is still returned with length 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// DRIVER_OK is not set.
    NotRunning,
    /// The buffer is not a whole number of 32-bit PFNs.
    BadLength {
        /// Bytes.
        len: usize,
    },
    /// More PFNs than [`MAX_PFNS_PER_REQUEST`].
    TooManyPfns {
        /// PFNs in the request.
        count: usize,
    },
    /// A PFN past guest memory.
    PfnOutOfRange {
        /// The PFN.
        pfn: u32,
    },
    /// Inflate of a page already in the balloon.
    AlreadyInflated {
        /// The PFN.
        pfn: u32,
    },
    /// Deflate of a page not in the balloon.
    NotInflated {
        /// The PFN.
        pfn: u32,
    },
    /// The same PFN twice in one request.
    Duplicate {
        /// The PFN.
        pfn: u32,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRunning => f.write_str("DRIVER_OK is not set"),
            Self::BadLength { len } => {
                write!(f, "request of {len} bytes is not a whole number of PFNs")
            }
            Self::TooManyPfns { count } => write!(f, "request of {count} PFNs is above the limit"),
            Self::PfnOutOfRange { pfn } => write!(f, "PFN {pfn:#x} is past guest memory"),
            Self::AlreadyInflated { pfn } => write!(f, "PFN {pfn:#x} is already in the balloon"),
            Self::NotInflated { pfn } => write!(f, "PFN {pfn:#x} is not in the balloon"),
            Self::Duplicate { pfn } => write!(f, "PFN {pfn:#x} appears twice in the request"),
        }
    }
}
impl core::error::Error for RequestError {}

/// Why a free page report was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// PAGE_REPORTING was not negotiated.
    NotNegotiated,
    /// DRIVER_OK is not set.
    NotRunning,
    /// No range, or more than [`MAX_REPORT_RANGES`].
    BadRangeCount,
    /// A range that is empty, not 4 KiB aligned, or past guest memory.
    BadRange {
        /// Guest-physical address.
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// A reported free range holds pages that are in the balloon.
    OverlapsBalloon {
        /// Guest-physical address.
        addr: u64,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotNegotiated => f.write_str("PAGE_REPORTING was not negotiated"),
            Self::NotRunning => f.write_str("DRIVER_OK is not set"),
            Self::BadRangeCount => f.write_str("no range, or too many ranges"),
            Self::BadRange { addr, len } => write!(
                f,
                "range {addr:#x}+{len:#x} is not whole guest pages in guest memory"
            ),
            Self::OverlapsBalloon { addr } => {
                write!(f, "reported range at {addr:#x} overlaps the balloon")
            }
        }
    }
}
impl core::error::Error for ReportError {}

/// What a free page hint buffer amounted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum HintOutcome {
    /// The pages are free in the guest for the current round: the VMM may
    /// skip them (they may still be written until DONE).
    ///
    /// The pages stay the guest's. The VMM must not discard or unmap them:
    /// the guest may allocate and write one at any moment, without telling
    /// the device. In a migration, a hinted page may be left out only if it
    /// was not written after the hint (dirty logging shows that); a written
    /// one must be sent.
    Hinted {
        /// First 4 KiB guest page.
        first_pfn: u64,
        /// 4 KiB pages.
        pages: u64,
    },
    /// Sent under an id that is no longer current: ignored, as the spec
    /// requires.
    Ignored,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Status {
    Reset,
    FeaturesOk,
    Running,
}

/// A run of host pages being collected for one action.
#[derive(Clone, Copy)]
struct Run {
    first: u64,
    len: u64,
}

/// The balloon device. `S` is the storage of the two bitmaps (`&mut [u64]`
/// or arrays): one bit per 4 KiB guest page, one per host page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BalloonDevice<S> {
    config: DeviceConfig,
    status: Status,
    negotiated: Features,
    /// PFNs and command ids are big-endian (a legacy big-endian guest).
    big_endian: bool,
    num_pages: u32,
    actual: u32,
    poison_val: u32,
    /// log2 of 4 KiB pieces per host page.
    piece_shift: u32,
    pieces: PageBitmap<S>,
    /// Discarded host pages; unused (empty) with 4 KiB host pages, where a
    /// piece is a host page.
    host: PageBitmap<S>,
    stats: Stats,
    stats_held: bool,
    stats_buffers: u64,
    hint: HintRound,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> BalloonDevice<S> {
    /// A device in reset state with empty balloon.
    ///
    /// # Errors
    ///
    /// Every [`DeviceConfigError`] variant.
    pub fn new(config: DeviceConfig, pieces: S, host: S) -> Result<Self, DeviceConfigError> {
        if config.guest_pages > 1 << 32 {
            return Err(DeviceConfigError::TooManyPages);
        }
        if !(PAGE_SHIFT..=30).contains(&config.host_page_shift) {
            return Err(DeviceConfigError::BadHostPageShift);
        }
        if config.first_hint_id < 2 {
            return Err(DeviceConfigError::BadFirstHintId);
        }
        let piece_shift = config.host_page_shift - PAGE_SHIFT;
        let host_pages = if piece_shift == 0 {
            0
        } else {
            config.guest_pages.div_ceil(1 << piece_shift)
        };
        Ok(Self {
            config,
            status: Status::Reset,
            negotiated: Features::empty(),
            big_endian: false,
            num_pages: 0,
            actual: 0,
            poison_val: 0,
            piece_shift,
            pieces: PageBitmap::new(pieces, config.guest_pages)
                .map_err(DeviceConfigError::Storage)?,
            host: PageBitmap::new(host, host_pages).map_err(DeviceConfigError::Storage)?,
            stats: Stats::default(),
            stats_held: false,
            stats_buffers: 0,
            hint: HintRound::new(config.first_hint_id),
        })
    }

    /// The negotiated features (empty before FEATURES_OK).
    #[must_use]
    pub fn negotiated(&self) -> Features {
        self.negotiated
    }

    /// Whether DRIVER_OK is set.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.status == Status::Running
    }

    /// `num_pages`: the target.
    #[must_use]
    pub fn num_pages(&self) -> u32 {
        self.num_pages
    }

    /// `actual` as the driver last wrote it.
    #[must_use]
    pub fn actual(&self) -> u32 {
        self.actual
    }

    /// 4 KiB pages in the balloon, by the device's own count.
    #[must_use]
    pub fn inflated_pages(&self) -> u64 {
        self.pieces.count()
    }

    /// Whether a 4 KiB page is in the balloon.
    #[must_use]
    pub fn is_inflated(&self, pfn: u64) -> bool {
        self.pieces.get(pfn)
    }

    /// Host pages discarded (with 4 KiB host pages: the inflated pages).
    #[must_use]
    pub fn discarded_host_pages(&self) -> u64 {
        if self.piece_shift == 0 {
            self.pieces.count()
        } else {
            self.host.count()
        }
    }

    /// Whether the host page holding `pfn` is discarded.
    #[must_use]
    pub fn is_discarded(&self, pfn: u64) -> bool {
        if self.piece_shift == 0 {
            self.pieces.get(pfn)
        } else {
            self.host.get(pfn >> self.piece_shift)
        }
    }

    /// The last statistics the guest reported.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The current free page hint command id (the config field).
    #[must_use]
    pub fn hint_cmd_id(&self) -> u32 {
        self.hint.config_id()
    }

    /// The driver's features: FEATURES_OK if they are a subset of the
    /// offer (and include MUST_TELL_HOST if the device insists).
    ///
    /// # Errors
    ///
    /// Every [`NegotiationError`] variant; FEATURES_OK stays clear.
    pub fn negotiate(&mut self, accepted: Features) -> Result<Features, NegotiationError> {
        if self.status != Status::Reset {
            return Err(NegotiationError::AlreadyNegotiated);
        }
        let extra = accepted - self.config.offered;
        if !extra.is_empty() {
            return Err(NegotiationError::NotOffered { bits: extra });
        }
        if self.config.require_must_tell_host
            && self.config.offered.contains(Features::MUST_TELL_HOST)
            && !accepted.contains(Features::MUST_TELL_HOST)
        {
            return Err(NegotiationError::MustTellHostDeclined);
        }
        self.negotiated = accepted;
        self.big_endian = self.config.legacy_big_endian && !accepted.contains(Features::VERSION_1);
        self.status = Status::FeaturesOk;
        Ok(accepted)
    }

    /// The driver set DRIVER_OK.
    ///
    /// # Errors
    ///
    /// Every [`StatusError`] variant.
    pub fn driver_ok(&mut self) -> Result<(), StatusError> {
        match self.status {
            Status::Reset => Err(StatusError::FeaturesNotNegotiated),
            Status::Running => Err(StatusError::AlreadyRunning),
            Status::FeaturesOk => {
                self.status = Status::Running;
                Ok(())
            }
        }
    }

    /// Device reset: features, config and balloon start over (the guest owns
    /// all its memory again; discarded pages fault back in as zeros). The
    /// host's target survives.
    pub fn reset(&mut self) {
        self.status = Status::Reset;
        self.negotiated = Features::empty();
        self.big_endian = false;
        self.actual = 0;
        self.poison_val = 0;
        self.pieces.clear_all();
        self.host.clear_all();
        self.stats = Stats::default();
        self.stats_held = false;
        self.stats_buffers = 0;
        self.hint = HintRound::new(self.config.first_hint_id);
    }

    /// The host sets the target balloon size (`num_pages`).
    ///
    /// # Errors
    ///
    /// [`SetTargetError::AboveGuestMemory`].
    pub fn set_num_pages(&mut self, pages: u32) -> Result<HostAction, SetTargetError> {
        if u64::from(pages) > self.config.guest_pages {
            return Err(SetTargetError::AboveGuestMemory {
                pages,
                guest_pages: self.config.guest_pages,
            });
        }
        self.num_pages = pages;
        Ok(HostAction::ConfigChanged)
    }

    fn config_bytes(&self) -> BalloonConfig {
        BalloonConfig {
            num_pages: self.num_pages.into(),
            actual: self.actual.into(),
            free_page_hint_cmd_id: self.hint.config_id().into(),
            poison_val: self.poison_val.into(),
        }
    }

    /// A driver reads the config space.
    ///
    /// # Errors
    ///
    /// [`ConfigAccessError::OutOfRange`] past the exposed length.
    pub fn read_config(&self, offset: u32, out: &mut [u8]) -> Result<(), ConfigAccessError> {
        use zerocopy::IntoBytes;
        let len = config_len(self.config.offered) as usize;
        let start = offset as usize;
        let end = start
            .checked_add(out.len())
            .ok_or(ConfigAccessError::OutOfRange)?;
        let config = self.config_bytes();
        let bytes = config
            .as_bytes()
            .get(..len)
            .and_then(|b| b.get(start..end))
            .ok_or(ConfigAccessError::OutOfRange)?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    /// A driver writes the config space: `actual`, or `poison_val` with
    /// PAGE_POISON before DRIVER_OK; one aligned little-endian 4-byte write.
    ///
    /// # Errors
    ///
    /// Every [`ConfigAccessError`] variant.
    pub fn write_config(&mut self, offset: u32, data: &[u8]) -> Result<(), ConfigAccessError> {
        let len = config_len(self.config.offered);
        let end = u64::from(offset) + data.len() as u64;
        if end > u64::from(len) {
            return Err(ConfigAccessError::OutOfRange);
        }
        let Ok(&raw) = <&[u8; 4]>::try_from(data) else {
            return Err(ConfigAccessError::NotAWholeField);
        };
        let value = u32::from_le_bytes(raw);
        match offset {
            ACTUAL_OFFSET => {
                if u64::from(value) > self.config.guest_pages {
                    return Err(ConfigAccessError::ActualTooLarge { actual: value });
                }
                self.actual = value;
                Ok(())
            }
            POISON_VAL_OFFSET
                if self
                    .negotiated
                    .contains(crate::virtio::Features::PAGE_POISON) =>
            {
                if self.status == Status::Running {
                    return Err(ConfigAccessError::PoisonAfterDriverOk);
                }
                self.poison_val = value;
                Ok(())
            }
            _ if offset % 4 != 0 => Err(ConfigAccessError::NotAWholeField),
            _ => Err(ConfigAccessError::ReadOnly { offset }),
        }
    }

    /// Decodes PFN `i` of a request buffer whose length was checked.
    #[inline]
    fn pfn_at(&self, buffer: &[u8], i: usize) -> u32 {
        let raw = buffer
            .get(i * 4..i * 4 + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .unwrap_or([0xff; 4]);
        if self.big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        }
    }

    fn check_request(&self, buffer: &[u8]) -> Result<usize, RequestError> {
        if self.status != Status::Running {
            return Err(RequestError::NotRunning);
        }
        if buffer.len() % 4 != 0 {
            return Err(RequestError::BadLength { len: buffer.len() });
        }
        let count = buffer.len() / 4;
        if count > MAX_PFNS_PER_REQUEST {
            return Err(RequestError::TooManyPfns { count });
        }
        Ok(count)
    }

    /// An inflate request: the buffer of 32-bit PFNs the driver put on
    /// inflateq. Host pages whose every piece is now inflated are discarded
    /// through `emit` before this returns.
    ///
    /// # Errors
    ///
    /// [`RequestError::NotRunning`], [`RequestError::BadLength`],
    /// [`RequestError::TooManyPfns`], [`RequestError::PfnOutOfRange`],
    /// [`RequestError::AlreadyInflated`], [`RequestError::Duplicate`]. The
    /// balloon is unchanged and nothing is emitted.
    pub fn inflate(
        &mut self,
        buffer: &[u8],
        mut emit: impl FnMut(HostAction),
    ) -> Result<(), RequestError> {
        let count = self.check_request(buffer)?;
        // Pass 1: set each piece, catching range errors, pages already in
        // the balloon and repeats; undo on the first error.
        for i in 0..count {
            let pfn = self.pfn_at(buffer, i);
            if u64::from(pfn) >= self.config.guest_pages {
                self.undo(buffer, i, false);
                return Err(RequestError::PfnOutOfRange { pfn });
            }
            if !self.pieces.set(u64::from(pfn)) {
                let repeated = (0..i).any(|j| self.pfn_at(buffer, j) == pfn);
                self.undo(buffer, i, false);
                return Err(if repeated {
                    RequestError::Duplicate { pfn }
                } else {
                    RequestError::AlreadyInflated { pfn }
                });
            }
        }
        // Pass 2: discard the host pages that are now whole.
        let mut run: Option<Run> = None;
        // Every piece of this request is set by now, so once a host page is
        // decided (discarded now, before, or still incomplete) the answer
        // holds for the rest of the pass: skip its further pieces.
        let mut decided: Option<u64> = None;
        for i in 0..count {
            let pfn = u64::from(self.pfn_at(buffer, i));
            let hp = pfn >> self.piece_shift;
            if self.piece_shift != 0 {
                if decided == Some(hp) {
                    continue;
                }
                decided = Some(hp);
                // A host page of 64 pieces or more is incomplete while the
                // word holding this piece is: usually one read decides.
                if (self.piece_shift >= 6 && !self.pieces.word_full(pfn))
                    || self.host.get(hp)
                    || !self
                        .pieces
                        .all_set(hp << self.piece_shift, 1 << self.piece_shift)
                {
                    continue;
                }
                self.host.set(hp);
            }
            self.extend(&mut run, hp, &mut emit, true);
        }
        self.flush(run, &mut emit, true);
        Ok(())
    }

    /// A deflate request: the buffer of 32-bit PFNs the driver put on
    /// deflateq. Discarded host pages that lose a piece are handed back
    /// through `emit` before this returns.
    ///
    /// # Errors
    ///
    /// [`RequestError::NotRunning`], [`RequestError::BadLength`],
    /// [`RequestError::TooManyPfns`], [`RequestError::PfnOutOfRange`],
    /// [`RequestError::NotInflated`], [`RequestError::Duplicate`]. The
    /// balloon is unchanged and nothing is emitted.
    pub fn deflate(
        &mut self,
        buffer: &[u8],
        mut emit: impl FnMut(HostAction),
    ) -> Result<(), RequestError> {
        let count = self.check_request(buffer)?;
        for i in 0..count {
            let pfn = self.pfn_at(buffer, i);
            if u64::from(pfn) >= self.config.guest_pages {
                self.undo(buffer, i, true);
                return Err(RequestError::PfnOutOfRange { pfn });
            }
            if !self.pieces.clear(u64::from(pfn)) {
                let repeated = (0..i).any(|j| self.pfn_at(buffer, j) == pfn);
                self.undo(buffer, i, true);
                return Err(if repeated {
                    RequestError::Duplicate { pfn }
                } else {
                    RequestError::NotInflated { pfn }
                });
            }
        }
        let mut run: Option<Run> = None;
        // A host page is handed back by its first deflated piece; its
        // further pieces in a row need no look.
        let mut decided: Option<u64> = None;
        for i in 0..count {
            let hp = u64::from(self.pfn_at(buffer, i)) >> self.piece_shift;
            if self.piece_shift != 0 {
                if decided == Some(hp) {
                    continue;
                }
                decided = Some(hp);
                if !self.host.clear(hp) {
                    continue;
                }
            }
            self.extend(&mut run, hp, &mut emit, false);
        }
        self.flush(run, &mut emit, false);
        Ok(())
    }

    /// Reverts pass 1 for the first `n` PFNs of a request.
    fn undo(&mut self, buffer: &[u8], n: usize, deflating: bool) {
        for j in 0..n {
            let pfn = u64::from(self.pfn_at(buffer, j));
            if deflating {
                self.pieces.set(pfn);
            } else {
                self.pieces.clear(pfn);
            }
        }
    }

    #[inline]
    fn extend(
        &self,
        run: &mut Option<Run>,
        hp: u64,
        emit: &mut impl FnMut(HostAction),
        discard: bool,
    ) {
        match run {
            Some(r) if r.first + r.len == hp => r.len += 1,
            _ => {
                self.flush(run.take(), emit, discard);
                *run = Some(Run { first: hp, len: 1 });
            }
        }
    }

    fn flush(&self, run: Option<Run>, emit: &mut impl FnMut(HostAction), discard: bool) {
        let Some(r) = run else { return };
        let first_pfn = r.first << self.piece_shift;
        let pages = (r.len << self.piece_shift).min(self.config.guest_pages - first_pfn);
        emit(if discard {
            HostAction::Discard { first_pfn, pages }
        } else {
            HostAction::Reclaim { first_pfn, pages }
        });
    }

    /// The driver posted a stats buffer. Returns the statistics it carried
    /// (`None` for the first buffer of a legacy driver, which the device
    /// ignores). The device holds the buffer until
    /// [`request_stats`](Self::request_stats).
    ///
    /// # Errors
    ///
    /// [`StatsError::NotNegotiated`], [`StatsError::NotRunning`] (before
    /// FEATURES_OK), [`StatsError::AlreadyHeld`], [`StatsError::BadLength`],
    /// [`StatsError::TooLarge`]. Nothing changes.
    pub fn stats_buffer(&mut self, buffer: &[u8]) -> Result<Option<Stats>, StatsError> {
        if self.status == Status::Reset {
            return Err(StatsError::NotRunning);
        }
        if !self.negotiated.contains(Features::STATS_VQ) {
            return Err(StatsError::NotNegotiated);
        }
        if self.stats_held {
            return Err(StatsError::AlreadyHeld);
        }
        let stats = Stats::parse(buffer)?;
        self.stats_held = true;
        self.stats_buffers += 1;
        if self.stats_buffers == 1 && !self.negotiated.contains(Features::VERSION_1) {
            return Ok(None);
        }
        self.stats = stats;
        Ok(Some(stats))
    }

    /// The device wants fresh statistics: give the held buffer back (put it
    /// on the used ring and interrupt).
    ///
    /// # Errors
    ///
    /// [`StatsError::NoneHeld`].
    pub fn request_stats(&mut self) -> Result<(), StatsError> {
        if !self.stats_held {
            return Err(StatsError::NoneHeld);
        }
        self.stats_held = false;
        Ok(())
    }

    /// Starts a free page hinting round with a fresh command id, written to
    /// the config space. Returns the id.
    ///
    /// # Errors
    ///
    /// [`HintError::NotNegotiated`], [`HintError::RoundActive`] while the
    /// driver has not finished the round (write STOP first).
    pub fn start_hinting(&mut self) -> Result<u32, HintError> {
        if !self.negotiated.contains(Features::FREE_PAGE_HINT) {
            return Err(HintError::NotNegotiated);
        }
        self.hint.start()
    }

    /// Writes STOP: the device cannot use more hints; hinted pages stay
    /// hinted.
    ///
    /// # Errors
    ///
    /// [`HintError::NotNegotiated`].
    pub fn stop_hinting(&mut self) -> Result<HostAction, HintError> {
        if !self.negotiated.contains(Features::FREE_PAGE_HINT) {
            return Err(HintError::NotNegotiated);
        }
        self.hint.device_writes(CMD_ID_STOP);
        Ok(HostAction::ConfigChanged)
    }

    /// Writes DONE: the device no longer needs the hinted pages; the driver
    /// may release them all.
    ///
    /// # Errors
    ///
    /// [`HintError::NotNegotiated`].
    pub fn done_hinting(&mut self) -> Result<HostAction, HintError> {
        if !self.negotiated.contains(Features::FREE_PAGE_HINT) {
            return Err(HintError::NotNegotiated);
        }
        self.hint.device_writes(CMD_ID_DONE);
        Ok(HostAction::ConfigChanged)
    }

    /// A 4-byte command buffer from the driver on free_page_vq.
    ///
    /// # Errors
    ///
    /// [`HintError::NotNegotiated`], [`HintError::NotRunning`],
    /// [`HintError::BadLength`], [`HintError::OutOfSequence`]. Nothing
    /// changes.
    pub fn hint_command(&mut self, buffer: &[u8]) -> Result<(), HintError> {
        if !self.negotiated.contains(Features::FREE_PAGE_HINT) {
            return Err(HintError::NotNegotiated);
        }
        if self.status != Status::Running {
            return Err(HintError::NotRunning);
        }
        let Ok(&raw) = <&[u8; 4]>::try_from(buffer) else {
            return Err(HintError::BadLength { len: buffer.len() });
        };
        let id = if self.config.legacy_big_endian && !self.negotiated.contains(Features::VERSION_1)
        {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        };
        self.hint.driver_sends(id)
    }

    /// A hinted free block (device-writable buffer) on free_page_vq.
    ///
    /// # Errors
    ///
    /// [`HintError::NotNegotiated`], [`HintError::NotRunning`],
    /// [`HintError::BadRange`], [`HintError::OverlapsBalloon`].
    pub fn hint_pages(&mut self, addr: u64, len: u64) -> Result<HintOutcome, HintError> {
        if !self.negotiated.contains(Features::FREE_PAGE_HINT) {
            return Err(HintError::NotNegotiated);
        }
        if self.status != Status::Running {
            return Err(HintError::NotRunning);
        }
        let (first_pfn, pages) = self
            .page_range(addr, len)
            .ok_or(HintError::BadRange { addr, len })?;
        if self.pieces.any_set(first_pfn, pages) {
            return Err(HintError::OverlapsBalloon { addr });
        }
        Ok(if self.hint.accepts_hints() {
            HintOutcome::Hinted { first_pfn, pages }
        } else {
            HintOutcome::Ignored
        })
    }

    /// Whole 4 KiB pages of guest memory covered by `addr..addr + len`.
    fn page_range(&self, addr: u64, len: u64) -> Option<(u64, u64)> {
        let mask = (1 << PAGE_SHIFT) - 1;
        if len == 0 || addr & mask != 0 || len & mask != 0 {
            return None;
        }
        let (first, pages) = (addr >> PAGE_SHIFT, len >> PAGE_SHIFT);
        (first.checked_add(pages)? <= self.config.guest_pages).then_some((first, pages))
    }

    /// A free page report: the guest-physical ranges of one reporting_vq
    /// chain. The host-page-aligned interior of each range is discarded
    /// through `emit`, unless PAGE_POISON is negotiated with a non-zero
    /// `poison_val` (a discard would read back zeros).
    ///
    /// # Errors
    ///
    /// Every [`ReportError`] variant; nothing is emitted.
    pub fn report(
        &mut self,
        ranges: &[(u64, u64)],
        mut emit: impl FnMut(HostAction),
    ) -> Result<(), ReportError> {
        if !self.negotiated.contains(Features::PAGE_REPORTING) {
            return Err(ReportError::NotNegotiated);
        }
        if self.status != Status::Running {
            return Err(ReportError::NotRunning);
        }
        if ranges.is_empty() || ranges.len() > MAX_REPORT_RANGES {
            return Err(ReportError::BadRangeCount);
        }
        for &(addr, len) in ranges {
            let (first, pages) = self
                .page_range(addr, len)
                .ok_or(ReportError::BadRange { addr, len })?;
            if self.pieces.any_set(first, pages) {
                return Err(ReportError::OverlapsBalloon { addr });
            }
        }
        if self.negotiated.contains(Features::PAGE_POISON) && self.poison_val != 0 {
            return Ok(());
        }
        let per = 1u64 << self.piece_shift;
        for &(addr, len) in ranges {
            let first = (addr >> PAGE_SHIFT).div_ceil(per) * per;
            let end = ((addr + len) >> PAGE_SHIFT) / per * per;
            if end > first {
                emit(HostAction::Discard {
                    first_pfn: first,
                    pages: end - first,
                });
            }
        }
        Ok(())
    }
}

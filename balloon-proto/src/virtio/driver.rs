//! The driver side of virtio-balloon, as Linux's `virtio_balloon.c` behaves.
//!
//! # Protocol
//!
//! - **Features.** The driver accepts what [`driver_accepts`] keeps of the
//!   offer (MUST_TELL_HOST always; PAGE_POISON only if the guest fills free
//!   pages; no PAGE_REPORTING if it fills them and the device cannot be
//!   told the pattern).
//! - **Sizing.** [`BalloonDriver::config_changed`] takes `num_pages` (4 KiB
//!   units) and rounds it *up* to whole guest pages, so a guest with 64 KiB
//!   pages does not oscillate. Each [`BalloonDriver::poll`] builds at most
//!   one request of at most 256 PFNs, every 4 KiB sub-PFN of each guest
//!   page, consecutively: inflate while the balloon is below the target,
//!   deflate while above it. One request is outstanding at a time; the
//!   device's ack ([`BalloonDriver::ack`]) moves the pages and tells the
//!   driver to write `actual`.
//! - **Page safety.** A page put in an inflate request is the balloon's
//!   from that moment; it counts as ballooned (and may be deflated) only
//!   after the ack. A deflated page goes back to the guest only after the
//!   device acked the deflate: required with MUST_TELL_HOST, and what Linux
//!   does regardless.
//! - **DEFLATE_ON_OOM.** [`BalloonDriver::oom`] deflates up to 256 4 KiB
//!   pages whatever the target, only when negotiated.
//! - **Statistics.** When the device returns the stats buffer, the driver
//!   fills a new one with the same tag subset every time
//!   ([`BalloonDriver::fill_stats`]).
//! - **Free page hinting and reporting** run beside the balloon, each with
//!   its own state: [`FreePageHinter`](crate::virtio::hinter::FreePageHinter)
//!   and [`FreePageReporter`](crate::virtio::reporter::FreePageReporter).
//!   Both ask the driver whether a free block holds balloon pages
//!   ([`BalloonDriver::holds_any`]).
//! - **Poison.** With PAGE_POISON the driver writes `poison_val` once,
//!   before DRIVER_OK ([`BalloonDriver::poison_val`]).

use core::fmt;

use hvmem_types::{Gfn, PAGE_SHIFT};

use crate::bitmap::{PageBitmap, StorageError, bitmap_words};
use crate::guest::GuestPages;
use crate::virtio::device::MAX_PFNS_PER_REQUEST;
use crate::virtio::features::{Features, GuestPoisoning, driver_accepts};
use crate::virtio::stats::{Stats, StatsError};

/// Words of storage for a guest of `guest_pages` 4 KiB pages with pages of
/// `2^page_shift` bytes.
#[must_use]
pub const fn driver_storage_words(guest_pages: u64, page_shift: u32) -> usize {
    if page_shift < PAGE_SHIFT || page_shift > 30 {
        0
    } else {
        bitmap_words(guest_pages >> (page_shift - PAGE_SHIFT))
    }
}

/// 4 KiB pages the Linux OOM notifier deflates per call.
pub const OOM_DEFLATE_PAGES: usize = 256;

/// Why a driver could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverConfigError {
    /// The guest page shift is outside 12..=20 (up to 256 PFNs per page).
    BadPageShift,
    /// More than 2^32 4 KiB pages.
    TooManyPages,
    /// The storage is too small.
    Storage(StorageError),
}

impl fmt::Display for DriverConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPageShift => f.write_str("guest page shift outside 12..=20"),
            Self::TooManyPages => f.write_str("more guest pages than 32-bit PFNs can name"),
            Self::Storage(e) => write!(f, "driver storage: {e}"),
        }
    }
}
impl core::error::Error for DriverConfigError {}

/// Why a driver step was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError {
    /// A request is in flight: wait for its ack.
    RequestInFlight,
    /// No request is in flight to acknowledge.
    NoRequest,
    /// DEFLATE_ON_OOM was not negotiated.
    DeflateOnOomNotNegotiated,
    /// The balloon is empty.
    BalloonEmpty,
    /// The guest allocator gave a frame that is unaligned, past guest
    /// memory, or already in the balloon; it and the pages taken so far go
    /// back.
    BadGuestPage {
        /// The frame.
        gfn: Gfn,
    },
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RequestInFlight => f.write_str("a request is in flight"),
            Self::NoRequest => f.write_str("no request is in flight"),
            Self::DeflateOnOomNotNegotiated => f.write_str("DEFLATE_ON_OOM was not negotiated"),
            Self::BalloonEmpty => f.write_str("the balloon is empty"),
            Self::BadGuestPage { gfn } => write!(
                f,
                "the guest allocator gave {gfn}, which cannot be ballooned"
            ),
        }
    }
}
impl core::error::Error for DriverError {}

/// What the driver wants done after `poll` or `oom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum DriverStep<'a> {
    /// Put this buffer (little-endian 32-bit PFNs) on inflateq, notify, and
    /// call [`BalloonDriver::ack`] when the device used it.
    Inflate(&'a [u8]),
    /// Put this buffer on deflateq, notify, and call `ack` when used.
    Deflate(&'a [u8]),
    /// The guest had no page to give ("Out of puff!"): retry in 200 ms.
    OutOfPuff,
    /// The balloon is at its target.
    Idle,
}

/// What to do after an ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub struct WriteActual(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Request {
    Inflate,
    Deflate,
}

/// The balloon driver. `S` is the storage of its bitmap (one bit per guest
/// page).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BalloonDriver<S> {
    negotiated: Features,
    /// log2 of 4 KiB pieces per guest page.
    piece_shift: u32,
    guest_pages: u64,
    balloon: PageBitmap<S>,
    target: u64,
    in_flight: Option<Request>,
    /// Guest pages of the request in flight, by first 4 KiB frame.
    pages: [u32; MAX_PFNS_PER_REQUEST],
    npages: usize,
    buffer: [u8; MAX_PFNS_PER_REQUEST * 4],
    buffer_len: usize,
    stats_mask: Option<u16>,
    poison: Option<u32>,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> BalloonDriver<S> {
    /// A driver for `guest_pages` 4 KiB pages with guest pages of
    /// `2^page_shift` bytes, accepting from `offered` what a Linux guest
    /// with `poisoning` would. `poison` is the guest's fill value.
    ///
    /// # Errors
    ///
    /// Every [`DriverConfigError`] variant.
    pub fn new(
        offered: Features,
        poisoning: GuestPoisoning,
        poison: u32,
        guest_pages: u64,
        page_shift: u32,
        storage: S,
    ) -> Result<Self, DriverConfigError> {
        if !(PAGE_SHIFT..=PAGE_SHIFT + 8).contains(&page_shift) {
            return Err(DriverConfigError::BadPageShift);
        }
        if guest_pages > 1 << 32 {
            return Err(DriverConfigError::TooManyPages);
        }
        let piece_shift = page_shift - PAGE_SHIFT;
        let negotiated = driver_accepts(offered, poisoning);
        Ok(Self {
            negotiated,
            piece_shift,
            guest_pages,
            balloon: PageBitmap::new(storage, guest_pages >> piece_shift)
                .map_err(DriverConfigError::Storage)?,
            target: 0,
            in_flight: None,
            pages: [0; MAX_PFNS_PER_REQUEST],
            npages: 0,
            buffer: [0; MAX_PFNS_PER_REQUEST * 4],
            buffer_len: 0,
            stats_mask: None,
            poison: negotiated.contains(Features::PAGE_POISON).then_some(poison),
        })
    }

    /// The features to write back (FEATURES_OK).
    #[must_use]
    pub fn features(&self) -> Features {
        self.negotiated
    }

    /// The `poison_val` to write before DRIVER_OK, with PAGE_POISON.
    #[must_use]
    pub fn poison_val(&self) -> Option<u32> {
        self.poison
    }

    /// 4 KiB pages in the balloon (acked inflates): the value of `actual`.
    #[must_use]
    pub fn actual(&self) -> u32 {
        u32::try_from(self.balloon.count() << self.piece_shift).unwrap_or(u32::MAX)
    }

    /// The target in 4 KiB pages, rounded up to whole guest pages.
    #[must_use]
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Whether the guest page starting at 4 KiB frame `gfn` is in the
    /// balloon.
    #[must_use]
    pub fn is_ballooned(&self, gfn: Gfn) -> bool {
        self.balloon.get(gfn.get() >> self.piece_shift)
    }

    /// Whether any guest page of the `pages` 4 KiB frames from `gfn` is in
    /// the balloon or in the request in flight: such pages are not free.
    #[must_use]
    pub fn holds_any(&self, gfn: Gfn, pages: u64) -> bool {
        let first = gfn.get() >> self.piece_shift;
        let last = gfn.get().saturating_add(pages.max(1) - 1) >> self.piece_shift;
        if self.balloon.any_set(first, last - first + 1) {
            return true;
        }
        self.in_flight.is_some()
            && self.pages.get(..self.npages).is_some_and(|p| {
                p.iter()
                    .any(|&f| (first..=last).contains(&(u64::from(f) >> self.piece_shift)))
            })
    }

    /// Whether a request is in flight.
    #[must_use]
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The device changed `num_pages`. Values above guest memory are
    /// clamped to it (the device's word is bounded, not trusted).
    pub fn config_changed(&mut self, num_pages: u32) {
        let per = 1u64 << self.piece_shift;
        let wanted = u64::from(num_pages).min(self.guest_pages);
        self.target = (wanted.div_ceil(per) * per)
            .min(self.guest_pages >> self.piece_shift << self.piece_shift);
    }

    /// One step toward the target: at most one request.
    ///
    /// # Errors
    ///
    /// [`DriverError::RequestInFlight`], [`DriverError::BadGuestPage`].
    pub fn poll<G: GuestPages>(&mut self, guest: &mut G) -> Result<DriverStep<'_>, DriverError> {
        if self.in_flight.is_some() {
            return Err(DriverError::RequestInFlight);
        }
        let have = u64::from(self.actual());
        let per = 1usize << self.piece_shift;
        let max_pages = MAX_PFNS_PER_REQUEST / per;
        if self.target > have {
            let want = (((self.target - have) >> self.piece_shift) as usize).min(max_pages);
            self.npages = 0;
            while self.npages < want {
                let Some(gfn) = guest.alloc_page() else { break };
                let ok = gfn.get() % per as u64 == 0
                    && gfn.get() < self.guest_pages
                    && !self.balloon.get(gfn.get() >> self.piece_shift)
                    && !self
                        .pages
                        .get(..self.npages)
                        .is_some_and(|p| p.contains(&(gfn.get() as u32)));
                if !ok {
                    guest.free_page(gfn);
                    for &p in self.pages.get(..self.npages).unwrap_or(&[]) {
                        guest.free_page(Gfn::new(u64::from(p)));
                    }
                    self.npages = 0;
                    return Err(DriverError::BadGuestPage { gfn });
                }
                if let Some(slot) = self.pages.get_mut(self.npages) {
                    *slot = gfn.get() as u32;
                }
                self.npages += 1;
            }
            if self.npages == 0 {
                return Ok(DriverStep::OutOfPuff);
            }
            return Ok(self.issue(Request::Inflate));
        }
        if self.target < have {
            let want = (((have - self.target) >> self.piece_shift) as usize).min(max_pages);
            return self.take_from_balloon(want, Request::Deflate);
        }
        Ok(DriverStep::Idle)
    }

    /// Memory pressure: with DEFLATE_ON_OOM, deflate up to
    /// [`OOM_DEFLATE_PAGES`] 4 KiB pages whatever the target.
    ///
    /// # Errors
    ///
    /// [`DriverError::DeflateOnOomNotNegotiated`],
    /// [`DriverError::RequestInFlight`], [`DriverError::BalloonEmpty`].
    pub fn oom(&mut self) -> Result<DriverStep<'_>, DriverError> {
        if !self.negotiated.contains(Features::DEFLATE_ON_OOM) {
            return Err(DriverError::DeflateOnOomNotNegotiated);
        }
        if self.in_flight.is_some() {
            return Err(DriverError::RequestInFlight);
        }
        if self.balloon.count() == 0 {
            return Err(DriverError::BalloonEmpty);
        }
        self.take_from_balloon(OOM_DEFLATE_PAGES >> self.piece_shift, Request::Deflate)
    }

    fn take_from_balloon(
        &mut self,
        want: usize,
        kind: Request,
    ) -> Result<DriverStep<'_>, DriverError> {
        self.npages = 0;
        let mut from = 0;
        while self.npages < want {
            let Some(page) = self.balloon.first_set_from(from) else {
                break;
            };
            if let Some(slot) = self.pages.get_mut(self.npages) {
                *slot = (page << self.piece_shift) as u32;
            }
            self.npages += 1;
            from = page + 1;
        }
        Ok(self.issue(kind))
    }

    fn issue(&mut self, kind: Request) -> DriverStep<'_> {
        let per = 1u32 << self.piece_shift;
        let mut len = 0;
        for &first in self.pages.get(..self.npages).unwrap_or(&[]) {
            for piece in 0..per {
                if let Some(out) = self.buffer.get_mut(len..len + 4) {
                    out.copy_from_slice(&(first + piece).to_le_bytes());
                }
                len += 4;
            }
        }
        self.buffer_len = len;
        self.in_flight = Some(kind);
        let buffer = self.buffer.get(..len).unwrap_or(&[]);
        match kind {
            Request::Inflate => DriverStep::Inflate(buffer),
            Request::Deflate => DriverStep::Deflate(buffer),
        }
    }

    /// The device used the request in flight: inflated pages join the
    /// balloon; deflated pages go back to the guest. Write `actual` next.
    ///
    /// # Errors
    ///
    /// [`DriverError::NoRequest`].
    pub fn ack<G: GuestPages>(&mut self, guest: &mut G) -> Result<WriteActual, DriverError> {
        let kind = self.in_flight.take().ok_or(DriverError::NoRequest)?;
        for &first in self.pages.get(..self.npages).unwrap_or(&[]) {
            let page = u64::from(first) >> self.piece_shift;
            match kind {
                Request::Inflate => {
                    self.balloon.set(page);
                }
                Request::Deflate => {
                    self.balloon.clear(page);
                    guest.free_page(Gfn::new(u64::from(first)));
                }
            }
        }
        if let Some(used) = self.pages.get_mut(..self.npages) {
            used.fill(0);
        }
        if let Some(used) = self.buffer.get_mut(..self.buffer_len) {
            used.fill(0);
        }
        self.npages = 0;
        self.buffer_len = 0;
        Ok(WriteActual(self.actual()))
    }

    /// The device returned the stats buffer: encode `stats` into `out` for
    /// the next one. The tag subset must be the same every time.
    ///
    /// # Errors
    ///
    /// [`StatsError::NotNegotiated`], [`StatsError::BufferTooSmall`], and
    /// [`StatsError::BadLength`] when the subset of tags changed.
    pub fn fill_stats(&mut self, stats: &Stats, out: &mut [u8]) -> Result<usize, StatsError> {
        if !self.negotiated.contains(Features::STATS_VQ) {
            return Err(StatsError::NotNegotiated);
        }
        let mask = stats.tag_mask();
        if self.stats_mask.is_some_and(|m| m != mask) {
            return Err(StatsError::BadLength {
                len: stats.encoded_len(),
            });
        }
        let n = stats.encode(out)?;
        self.stats_mask = Some(mask);
        Ok(n)
    }
}

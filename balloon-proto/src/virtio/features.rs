//! Feature bits, their negotiation, and the queue numbers they imply.
//!
//! # Queue numbering
//!
//! The spec numbers the queues inflateq 0, deflateq 1, statsq 2,
//! free_page_vq 3, reporting_vq 4. Linux's transports number only the
//! queues that exist after negotiation, in that order, so with no STATS_VQ
//! and no FREE_PAGE_HINT the reporting queue is queue 2. Devices do not all
//! agree: QEMU always has statsq at 2 (it always offers STATS_VQ), and
//! Firecracker numbers from the features it *offers*, not the negotiated
//! ones.
//!
//! [`QueueLayout`] follows Linux: it numbers compactly from the
//! *negotiated* features, so a driver that declines an offered STATS_VQ
//! shifts the later queues. A device that must match QEMU's or
//! Firecracker's numbering computes its own.

use core::fmt;

bitflags::bitflags! {
    /// virtio-balloon feature bits (device ID 5), plus the two transport
    /// bits balloon devices offer.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Features: u64 {
        /// Bit 0, `VIRTIO_BALLOON_F_MUST_TELL_HOST`: the driver must wait
        /// for the deflate ack before reusing a page.
        const MUST_TELL_HOST = 1 << 0;
        /// Bit 1, `VIRTIO_BALLOON_F_STATS_VQ`: statsq exists.
        const STATS_VQ = 1 << 1;
        /// Bit 2, `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`: the driver may deflate
        /// under memory pressure.
        const DEFLATE_ON_OOM = 1 << 2;
        /// Bit 3, `VIRTIO_BALLOON_F_FREE_PAGE_HINT`: free_page_vq exists.
        const FREE_PAGE_HINT = 1 << 3;
        /// Bit 4, `VIRTIO_BALLOON_F_PAGE_POISON`: `poison_val` is valid.
        const PAGE_POISON = 1 << 4;
        /// Bit 5, `VIRTIO_BALLOON_F_PAGE_REPORTING` (Linux:
        /// `VIRTIO_BALLOON_F_REPORTING`): reporting_vq exists.
        const PAGE_REPORTING = 1 << 5;
        /// Bit 32, `VIRTIO_F_VERSION_1`: a modern (non-legacy) device.
        const VERSION_1 = 1 << 32;
        /// Bit 33, `VIRTIO_F_ACCESS_PLATFORM`.
        const ACCESS_PLATFORM = 1 << 33;
    }
}

/// The virtio device ID of the traditional memory balloon.
pub const DEVICE_ID: u32 = 5;

/// The queues of a balloon device, in spec order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Inflate requests: arrays of 32-bit PFNs.
    Inflate,
    /// Deflate requests: arrays of 32-bit PFNs.
    Deflate,
    /// Statistics, with STATS_VQ.
    Stats,
    /// Free page hints, with FREE_PAGE_HINT.
    FreePage,
    /// Free page reports, with PAGE_REPORTING.
    Reporting,
}

impl Queue {
    /// Every queue, in spec order.
    pub const ALL: [Self; 5] = [
        Self::Inflate,
        Self::Deflate,
        Self::Stats,
        Self::FreePage,
        Self::Reporting,
    ];

    /// The spec's index of the queue (which implementations do not use).
    #[must_use]
    pub const fn spec_index(self) -> u16 {
        match self {
            Self::Inflate => 0,
            Self::Deflate => 1,
            Self::Stats => 2,
            Self::FreePage => 3,
            Self::Reporting => 4,
        }
    }

    /// The feature that makes the queue exist; `None` for the two that
    /// always do.
    #[must_use]
    pub const fn feature(self) -> Option<Features> {
        match self {
            Self::Inflate | Self::Deflate => None,
            Self::Stats => Some(Features::STATS_VQ),
            Self::FreePage => Some(Features::FREE_PAGE_HINT),
            Self::Reporting => Some(Features::PAGE_REPORTING),
        }
    }
}

/// The queue numbers of a negotiated feature set, numbered compactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueLayout {
    features: Features,
}

impl QueueLayout {
    /// The layout for `negotiated` features.
    #[must_use]
    pub const fn new(negotiated: Features) -> Self {
        Self {
            features: negotiated,
        }
    }

    /// The number of queues.
    #[must_use]
    pub fn count(&self) -> u16 {
        Queue::ALL.iter().filter(|q| self.exists(**q)).count() as u16
    }

    /// Whether the queue exists.
    #[must_use]
    pub fn exists(&self, queue: Queue) -> bool {
        queue.feature().is_none_or(|f| self.features.contains(f))
    }

    /// The queue's number, or `None` if it does not exist.
    #[must_use]
    pub fn index(&self, queue: Queue) -> Option<u16> {
        if !self.exists(queue) {
            return None;
        }
        Some(
            Queue::ALL
                .iter()
                .take_while(|q| **q != queue)
                .filter(|q| self.exists(**q))
                .count() as u16,
        )
    }

    /// The queue with number `index`, or `None` (a guest may notify any
    /// number).
    #[must_use]
    pub fn queue(&self, index: u16) -> Option<Queue> {
        Queue::ALL
            .into_iter()
            .filter(|q| self.exists(*q))
            .nth(usize::from(index))
    }
}

/// The device's rules for accepting the driver's features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevicePolicy {
    /// Refuse FEATURES_OK when MUST_TELL_HOST was offered and declined (the
    /// spec allows it; transitional devices must not).
    pub require_must_tell_host: bool,
}

/// Why the device refused the driver's features (FEATURES_OK stays clear).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NegotiationError {
    /// The driver accepted bits the device did not offer.
    NotOffered {
        /// The bits.
        bits: Features,
    },
    /// The driver declined an offered MUST_TELL_HOST and the device insists.
    MustTellHostDeclined,
    /// The driver wrote features after FEATURES_OK.
    AlreadyNegotiated,
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOffered { bits } => {
                write!(f, "the driver accepted bits not offered: {bits:?}")
            }
            Self::MustTellHostDeclined => f.write_str("the driver declined MUST_TELL_HOST"),
            Self::AlreadyNegotiated => f.write_str("features are already negotiated"),
        }
    }
}
impl core::error::Error for NegotiationError {}

/// What the guest kernel does with free pages, which decides the features
/// a Linux-like driver accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestPoisoning {
    /// Whether freed pages are filled (page poisoning or init-on-free).
    pub poisons_free_pages: bool,
}

/// The features a driver accepts from `offered`, as Linux's validate hook
/// filters them: ACCESS_PLATFORM always cleared; PAGE_POISON kept only if
/// the guest fills free pages; PAGE_REPORTING dropped if the guest fills
/// free pages but the device did not offer PAGE_POISON (a report could
/// destroy the fill pattern). MUST_TELL_HOST is always taken when offered.
#[must_use]
pub fn driver_accepts(offered: Features, guest: GuestPoisoning) -> Features {
    let mut accepted = offered - Features::ACCESS_PLATFORM;
    if !guest.poisons_free_pages {
        accepted -= Features::PAGE_POISON;
    } else if !offered.contains(Features::PAGE_POISON) {
        accepted -= Features::PAGE_REPORTING;
    }
    accepted
}

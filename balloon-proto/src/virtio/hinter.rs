//! Free page hinting, driver side, as Linux's `virtio_balloon.c` behaves
//! (the device side is [`hint`](crate::virtio::hint)).
//!
//! # Protocol
//!
//! 1. The device writes a fresh command id (>= 2) to config;
//!    [`FreePageHinter::config_changed`] answers [`HintStep::SendCommand`]:
//!    put those 4 bytes on free_page_vq, exactly once per id.
//! 2. While the id in config is still that one, the guest takes free blocks
//!    of the hinting order out of its allocator (Linux: `MAX_PAGE_ORDER`
//!    blocks, allocated without reclaim) and [`FreePageHinter::hint`] records
//!    each and gives the buffer to put on free_page_vq. The pages stay out
//!    of the guest's allocator while hinted: the host may drop their contents.
//! 3. When the guest has no more free blocks, or the device wrote STOP or
//!    DONE meanwhile ([`HintStep::Stop`], [`HintStep::ReleaseAll`]),
//!    [`FreePageHinter::finish`] gives the STOP command to send.
//! 4. After DONE the hinted blocks go back to the guest
//!    ([`FreePageHinter::release`] with no limit). Under memory pressure the
//!    guest may take some back earlier (Linux's shrinker: `release` with a
//!    limit); a block released before DONE holds garbage and must be
//!    initialised before use, which the guest allocator does for any page it
//!    hands out uninitialised anyway.
//!
//! The driver keeps one bit per hinted block, so a block is never hinted
//! twice and every hinted block is given back exactly once.

use core::fmt;

use hvmem_types::{Gfn, PAGE_SHIFT};

use crate::bitmap::StorageError;
use crate::guest::GuestPages;
use crate::virtio::Features;
use crate::virtio::blocks::{BlockError, FreeBlock, GranuleMap, granule_words};
use crate::virtio::driver::BalloonDriver;
use crate::virtio::hint::{CMD_ID_DONE, CMD_ID_STOP};

/// Linux's hinting block order in 4 KiB pages: `MAX_PAGE_ORDER` (10, 4 MiB)
/// on x86-64 with 4 KiB pages.
pub const LINUX_HINT_ORDER: u32 = 10;

/// Words of storage for a hinter over `guest_pages` 4 KiB pages hinting
/// blocks of `2^order` pages.
#[must_use]
pub const fn hinter_storage_words(guest_pages: u64, order: u32) -> usize {
    granule_words(guest_pages, order)
}

/// What a change of `free_page_hint_cmd_id` asks of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum HintStep {
    /// A new round: send this 4-byte command id on free_page_vq, then hint
    /// free blocks.
    SendCommand(u32),
    /// STOP: stop hinting and [`finish`](FreePageHinter::finish) the round;
    /// hinted pages stay hinted.
    Stop,
    /// DONE: stop hinting, finish the round, and
    /// [`release`](FreePageHinter::release) every hinted page.
    ReleaseAll,
    /// Nothing new (an id already answered, or hinting not negotiated).
    Nothing,
}

/// Why a hinter could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HinterConfigError {
    /// The block order is below the guest page order or above
    /// [`MAX_BLOCK_ORDER`](crate::virtio::blocks::MAX_BLOCK_ORDER).
    BadOrder,
    /// The storage is too small.
    Storage(StorageError),
}

impl fmt::Display for HinterConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadOrder => f.write_str("hinting order outside the guest page order..=18"),
            Self::Storage(e) => write!(f, "hinter storage: {e}"),
        }
    }
}
impl core::error::Error for HinterConfigError {}

/// Why a block could not be hinted. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HintBlockError {
    /// No round is active: the id was not sent yet, or the round ended.
    NoRound,
    /// The block itself was refused.
    Block(BlockError),
}

impl fmt::Display for HintBlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRound => f.write_str("no hinting round is active"),
            Self::Block(e) => e.fmt(f),
        }
    }
}
impl core::error::Error for HintBlockError {}

/// The driver's free page hinting state: the round and the hinted blocks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FreePageHinter<S> {
    negotiated: bool,
    /// log2 of 4 KiB pages per guest page.
    piece_shift: u32,
    hinted: GranuleMap<S>,
    /// The last id answered ([`CMD_ID_STOP`] before the first).
    answered: u32,
    /// The round's id while hinting is allowed.
    active: Option<u32>,
    /// An id was sent and its STOP not yet.
    stop_owed: bool,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> FreePageHinter<S> {
    /// A hinter for the driver that negotiated `negotiated`, over
    /// `guest_pages` 4 KiB pages with guest pages of `2^page_shift` bytes,
    /// hinting blocks of `2^order` 4 KiB pages.
    ///
    /// # Errors
    ///
    /// Every [`HinterConfigError`] variant.
    pub fn new(
        negotiated: Features,
        guest_pages: u64,
        page_shift: u32,
        order: u32,
        storage: S,
    ) -> Result<Self, HinterConfigError> {
        let piece_shift = page_shift
            .checked_sub(PAGE_SHIFT)
            .filter(|&p| p <= order && order <= crate::virtio::blocks::MAX_BLOCK_ORDER)
            .ok_or(HinterConfigError::BadOrder)?;
        Ok(Self {
            negotiated: negotiated.contains(Features::FREE_PAGE_HINT),
            piece_shift,
            hinted: GranuleMap::new(storage, guest_pages, order)
                .map_err(HinterConfigError::Storage)?,
            answered: CMD_ID_STOP,
            active: None,
            stop_owed: false,
        })
    }

    /// The device changed `free_page_hint_cmd_id` to `id`.
    pub fn config_changed(&mut self, id: u32) -> HintStep {
        if !self.negotiated {
            return HintStep::Nothing;
        }
        match id {
            CMD_ID_DONE => {
                self.active = None;
                HintStep::ReleaseAll
            }
            CMD_ID_STOP => {
                self.active = None;
                HintStep::Stop
            }
            id if id == self.answered => HintStep::Nothing,
            id => {
                self.answered = id;
                self.active = Some(id);
                self.stop_owed = true;
                HintStep::SendCommand(id)
            }
        }
    }

    /// The id of the round in which blocks may be hinted.
    #[must_use]
    pub fn active_round(&self) -> Option<u32> {
        self.active
    }

    /// Records `block`, which the guest took out of its allocator, as
    /// hinted; returns the `(address, length)` buffer to put on
    /// free_page_vq. `balloon` is the driver, whose pages are never free.
    ///
    /// # Errors
    ///
    /// [`HintBlockError::NoRound`], or the [`BlockError`] for a block that
    /// is not of the hinting order, reaches past memory, holds ballooned
    /// pages, or is already hinted.
    pub fn hint<B: AsRef<[u64]> + AsMut<[u64]>>(
        &mut self,
        block: FreeBlock,
        balloon: &BalloonDriver<B>,
    ) -> Result<(u64, u64), HintBlockError> {
        if !self.negotiated {
            return Err(HintBlockError::Block(BlockError::NotNegotiated));
        }
        if self.active.is_none() {
            return Err(HintBlockError::NoRound);
        }
        if block.order != self.hinted.order() {
            return Err(HintBlockError::Block(BlockError::Misaligned { block }));
        }
        let granules = self.hinted.granules(block).map_err(HintBlockError::Block)?;
        if balloon.holds_any(block.gfn, block.pages()) {
            return Err(HintBlockError::Block(BlockError::InBalloon { block }));
        }
        if self.hinted.any_set(granules) {
            return Err(HintBlockError::Block(BlockError::AlreadyHeld { block }));
        }
        self.hinted.set(granules);
        Ok(block.range())
    }

    /// Ends the round from the driver's side (no more free blocks, or the
    /// device wrote STOP or DONE): the STOP command to put on free_page_vq,
    /// or `None` when no round was answered since the last STOP. The id
    /// stays remembered, so reading the same id from config again does not
    /// start another round.
    pub fn finish(&mut self) -> Option<[u8; 4]> {
        self.active = None;
        core::mem::take(&mut self.stop_owed).then(|| CMD_ID_STOP.to_le_bytes())
    }

    /// Gives up to `max_blocks` hinted blocks back to the guest, every guest
    /// page of each through [`GuestPages::free_page`]; returns how many
    /// blocks went back. After DONE pass `usize::MAX`; earlier (memory
    /// pressure) the guest must treat the pages as uninitialised.
    pub fn release<G: GuestPages>(&mut self, max_blocks: usize, guest: &mut G) -> usize {
        let mut released = 0;
        let mut from = 0;
        while released < max_blocks {
            let Some(block) = self.hinted.first_from(from) else {
                break;
            };
            let Ok(granules) = self.hinted.granules(block) else {
                break;
            };
            self.hinted.clear(granules);
            let step = 1u64 << self.piece_shift;
            let mut gfn = block.gfn.get();
            while gfn < block.gfn.get() + block.pages() {
                guest.free_page(Gfn::new(gfn));
                gfn += step;
            }
            from = granules.0 + granules.1;
            released += 1;
        }
        released
    }

    /// 4 KiB pages hinted and not yet released.
    #[must_use]
    pub fn hinted_pages(&self) -> u64 {
        self.hinted.pages()
    }

    /// Whether the 4 KiB frame `gfn` is in a hinted block.
    #[must_use]
    pub fn is_hinted(&self, gfn: Gfn) -> bool {
        self.hinted.holds(gfn)
    }
}

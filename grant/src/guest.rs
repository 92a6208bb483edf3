//! The granting guest's side: creating entries and ending access safely
//! (the guest half of Xen's `xen/include/public/grant_table.h` protocol).
//!
//! # Protocol
//!
//! - **Grant.** Write the grantee and frame first, then publish the flags
//!   with a release store of the header word: the hypervisor reads the frame
//!   only after it has seen valid flags (acquire, or its compare-and-swap).
//! - **End access, v1.** The hypervisor marks an entry it pins with
//!   `GTF_reading` (and `GTF_writing`), by compare-and-swap on the header
//!   word. Ending access is one compare-and-swap on the same word from a
//!   value without those bits to flags 0: the two CASes are ordered on that
//!   word, so either the hypervisor pinned first (ours fails, we see the bits
//!   and report [`GuestError::InUse`]) or we cleared first (its CAS finds an
//!   invalid entry and refuses the pin). Never both.
//! - **End access, v2.** The status bits live in a separate word, so there
//!   is no single word to CAS. We clear the flags, issue a full fence, then
//!   read the status; the hypervisor sets the status, issues a full fence,
//!   then re-reads the flags and backs out if they changed. With both fences
//!   sequentially consistent, at least one side sees the other's write
//!   (Dekker), so a pin that succeeds is always visible to our read.
//!
//! After a v2 [`end_access`](GuestGrantTable::end_access) that reports
//! `InUse` the entry already grants nothing new; existing pins stay until the
//! grantee drops them, and the frame must not be reused until
//! [`end_access`](GuestGrantTable::end_access) (or
//! [`in_use`](GuestGrantTable::in_use)) says so. There is no way to force a
//! grantee to drop a mapping.

use core::fmt;

use hvmem_types::{DomId, Gfn};

use crate::abi::{FRAME_SIZE, GrantRef};
use crate::flags::{GTF_TYPE_MASK, GrantType, GtfFlags};
use crate::mem::{
    GrantMemory, GrantVersion, entry_word, hdr_domid, hdr_flags, hdr_word, join_u64, split_u64,
    status_word,
};
use crate::sync::{Ordering, fence};

/// Attempts at the v1 end-access CAS before reporting the entry busy: each
/// failure means the hypervisor changed the word, so a mapper pinning and
/// unpinning in a loop cannot keep us spinning.
const END_ACCESS_RETRIES: u32 = 16;

/// Why a guest-side operation was refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum GuestError {
    /// The reference lies beyond the table.
    RefOutOfRange,
    /// Granting over an entry that is still valid or still in use.
    EntryInUse,
    /// A v1 entry holds only 32-bit frame numbers.
    FrameTooLarge,
    /// Sub-page and transitive grants need a v2 table.
    NeedsVersion2,
    /// The sub-page window crosses the end of the page.
    BadWindow,
    /// The grantee still has the entry pinned: access cannot end yet.
    InUse,
    /// The entry is not of the kind the operation expects.
    WrongType,
    /// The hypervisor has committed to a transfer that is not complete yet.
    TransferInProgress,
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RefOutOfRange => "grant reference beyond the table",
            Self::EntryInUse => "entry is still valid or in use",
            Self::FrameTooLarge => "frame number does not fit a v1 entry",
            Self::NeedsVersion2 => "sub-page and transitive grants need v2",
            Self::BadWindow => "sub-page window crosses the end of the page",
            Self::InUse => "grantee still has the entry pinned",
            Self::WrongType => "entry is not of the expected type",
            Self::TransferInProgress => "transfer committed but not complete",
        })
    }
}

impl core::error::Error for GuestError {}

/// How an accept-transfer entry ended.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TransferEnd {
    /// Nothing arrived; the entry is invalid again.
    Cancelled,
    /// A frame arrived: the value the hypervisor wrote into `frame` (the
    /// MFN, for a non-translated guest) or the slot it was given.
    Received(u64),
}

/// The granting guest's view of its own table.
#[derive(Clone, Copy)]
pub struct GuestGrantTable<'a> {
    mem: &'a dyn GrantMemory,
    version: GrantVersion,
    nr_frames: u32,
}

impl fmt::Debug for GuestGrantTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestGrantTable")
            .field("version", &self.version)
            .field("nr_frames", &self.nr_frames)
            .finish_non_exhaustive()
    }
}

impl<'a> GuestGrantTable<'a> {
    /// The guest's table over `mem`, `nr_frames` frames of `version` (as
    /// `setup_table` / `set_version` left them).
    ///
    /// The guest side uses only [`GrantMemory::shared_frame`] and, for v2,
    /// [`GrantMemory::status_frame`]. The other methods
    /// (`shared_frame_gfn`, `status_frame_gfn`, `status_frame_mapped`,
    /// `release_status_frame`) serve the hypervisor side; a guest may
    /// implement them as stubs.
    #[must_use]
    pub fn new(mem: &'a dyn GrantMemory, version: GrantVersion, nr_frames: u32) -> Self {
        Self {
            mem,
            version,
            nr_frames,
        }
    }

    /// The number of entries.
    #[must_use]
    pub fn capacity(&self) -> u32 {
        self.nr_frames
            .saturating_mul(self.version.entries_per_frame())
    }

    /// The table's version.
    #[must_use]
    pub fn version(&self) -> GrantVersion {
        self.version
    }

    /// Lets `domid` map and copy `frame`, read-only or read-write
    /// (`gnttab_grant_foreign_access_ref`).
    ///
    /// # Errors
    ///
    /// [`GuestError::RefOutOfRange`], [`GuestError::EntryInUse`] (the entry
    /// is valid or still pinned), [`GuestError::FrameTooLarge`] (v1).
    pub fn grant_access(
        &self,
        gref: GrantRef,
        domid: DomId,
        frame: Gfn,
        readonly: bool,
    ) -> Result<(), GuestError> {
        let mut flags = GrantType::PermitAccess as u16;
        if readonly {
            flags |= GtfFlags::READONLY.bits();
        }
        self.publish(gref, domid, flags, frame.get(), 0)
    }

    /// Lets `domid` copy only `[offset, offset + length)` of `frame` (v2
    /// `GTF_sub_page`; such grants cannot be mapped).
    ///
    /// # Errors
    ///
    /// As [`grant_access`](Self::grant_access), plus
    /// [`GuestError::NeedsVersion2`] and [`GuestError::BadWindow`].
    pub fn grant_sub_page(
        &self,
        gref: GrantRef,
        domid: DomId,
        frame: Gfn,
        offset: u16,
        length: u16,
        readonly: bool,
    ) -> Result<(), GuestError> {
        if self.version != GrantVersion::V2 {
            return Err(GuestError::NeedsVersion2);
        }
        if usize::from(offset) + usize::from(length) > FRAME_SIZE {
            return Err(GuestError::BadWindow);
        }
        let mut flags = GrantType::PermitAccess as u16 | GtfFlags::SUB_PAGE.bits();
        if readonly {
            flags |= GtfFlags::READONLY.bits();
        }
        let window = u32::from(offset) | u32::from(length) << 16;
        self.publish(gref, domid, flags, frame.get(), window)
    }

    /// Lets `domid` copy through entry `trans_gref` of `trans_domid` as if
    /// it were this entry (v2 `GTF_transitive`; copy only).
    ///
    /// # Errors
    ///
    /// [`GuestError::RefOutOfRange`], [`GuestError::EntryInUse`],
    /// [`GuestError::NeedsVersion2`].
    pub fn grant_transitive(
        &self,
        gref: GrantRef,
        domid: DomId,
        trans_domid: DomId,
        trans_gref: GrantRef,
        readonly: bool,
    ) -> Result<(), GuestError> {
        if self.version != GrantVersion::V2 {
            return Err(GuestError::NeedsVersion2);
        }
        let mut flags = GrantType::Transitive as u16;
        if readonly {
            flags |= GtfFlags::READONLY.bits();
        }
        // Word 1: trans_domid, pad; word 2: gref.
        self.check_free(gref)?;
        self.word(gref, 1)?
            .store(hdr_word(trans_domid.get(), 0), Ordering::Relaxed);
        self.word(gref, 2)?.store(trans_gref.0, Ordering::Relaxed);
        self.word(gref, 3)?.store(0, Ordering::Relaxed);
        self.word(gref, 0)?
            .store(hdr_word(flags, domid.get()), Ordering::Release);
        Ok(())
    }

    /// Lets `domid` transfer one frame to us, to be placed at `slot`
    /// (`gnttab_grant_foreign_transfer_ref`).
    ///
    /// # Errors
    ///
    /// [`GuestError::RefOutOfRange`], [`GuestError::EntryInUse`],
    /// [`GuestError::FrameTooLarge`] (v1).
    pub fn grant_transfer(
        &self,
        gref: GrantRef,
        domid: DomId,
        slot: Gfn,
    ) -> Result<(), GuestError> {
        self.publish(gref, domid, GrantType::AcceptTransfer as u16, slot.get(), 0)
    }

    /// Ends the grant, only if the grantee has no pin on it
    /// (`gnttab_end_foreign_access_ref`); see the module docs for why this
    /// can never succeed while a map is in flight.
    ///
    /// # Errors
    ///
    /// - [`GuestError::InUse`]: pinned (v1: the entry is unchanged and still
    ///   valid; v2: the entry is already invalid, but existing pins remain).
    /// - [`GuestError::RefOutOfRange`].
    pub fn end_access(&self, gref: GrantRef) -> Result<(), GuestError> {
        let header = self.word(gref, 0)?;
        match self.version {
            GrantVersion::V1 => {
                let busy = GtfFlags::READING | GtfFlags::WRITING;
                let mut seen = header.load(Ordering::Relaxed);
                for _ in 0..END_ACCESS_RETRIES {
                    if GtfFlags::from_bits_retain(hdr_flags(seen)).intersects(busy) {
                        return Err(GuestError::InUse);
                    }
                    // Acquire: on success, the grantee's last accesses (its
                    // unpin cleared the bits) happen before the frame's reuse.
                    match header.compare_exchange(
                        seen,
                        hdr_word(0, hdr_domid(seen)),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return Ok(()),
                        Err(now) => seen = now,
                    }
                }
                Err(GuestError::InUse)
            }
            GrantVersion::V2 => {
                let status = self.status(gref)?;
                header.fetch_and(!hdr_word(u16::MAX, 0), Ordering::SeqCst);
                fence(Ordering::SeqCst);
                let pinned = status.load(Ordering::Acquire);
                if GtfFlags::from_bits_retain(pinned)
                    .intersects(GtfFlags::READING | GtfFlags::WRITING)
                {
                    Err(GuestError::InUse)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Whether the grantee has the entry pinned (its frame must not be
    /// reused).
    ///
    /// # Errors
    ///
    /// [`GuestError::RefOutOfRange`].
    pub fn in_use(&self, gref: GrantRef) -> Result<bool, GuestError> {
        let bits = match self.version {
            GrantVersion::V1 => hdr_flags(self.word(gref, 0)?.load(Ordering::Acquire)),
            GrantVersion::V2 => self.status(gref)?.load(Ordering::Acquire),
        };
        Ok(GtfFlags::from_bits_retain(bits).intersects(GtfFlags::READING | GtfFlags::WRITING))
    }

    /// Ends an accept-transfer entry: cancels it if no transfer was
    /// committed, or collects the frame once the transfer completed
    /// (`gnttab_end_foreign_transfer_ref`).
    ///
    /// # Errors
    ///
    /// - [`GuestError::TransferInProgress`]: committed, not yet complete;
    ///   call again.
    /// - [`GuestError::WrongType`]: not an accept-transfer entry.
    /// - [`GuestError::RefOutOfRange`].
    pub fn end_transfer(&self, gref: GrantRef) -> Result<TransferEnd, GuestError> {
        let header = self.word(gref, 0)?;
        let mut seen = header.load(Ordering::Acquire);
        for _ in 0..END_ACCESS_RETRIES {
            let flags = hdr_flags(seen);
            if flags & GTF_TYPE_MASK != GrantType::AcceptTransfer as u16 {
                return Err(GuestError::WrongType);
            }
            let flags = GtfFlags::from_bits_retain(flags);
            if flags.contains(GtfFlags::TRANSFER_COMMITTED) {
                if !flags.contains(GtfFlags::TRANSFER_COMPLETED) {
                    return Err(GuestError::TransferInProgress);
                }
                // The acquire load above ordered the frame write before us.
                let frame = self.read_frame(gref)?;
                header.store(hdr_word(0, hdr_domid(seen)), Ordering::Relaxed);
                return Ok(TransferEnd::Received(frame));
            }
            match header.compare_exchange(
                seen,
                hdr_word(0, hdr_domid(seen)),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(TransferEnd::Cancelled),
                Err(now) => seen = now,
            }
        }
        Err(GuestError::TransferInProgress)
    }

    fn publish(
        &self,
        gref: GrantRef,
        domid: DomId,
        flags: u16,
        frame: u64,
        window: u32,
    ) -> Result<(), GuestError> {
        self.check_free(gref)?;
        match self.version {
            GrantVersion::V1 => {
                let frame = u32::try_from(frame).map_err(|_| GuestError::FrameTooLarge)?;
                self.word(gref, 1)?.store(frame, Ordering::Relaxed);
            }
            GrantVersion::V2 => {
                let (lo, hi) = split_u64(frame);
                self.word(gref, 1)?.store(window, Ordering::Relaxed);
                self.word(gref, 2)?.store(lo, Ordering::Relaxed);
                self.word(gref, 3)?.store(hi, Ordering::Relaxed);
            }
        }
        // Release: the frame (and window) are visible before the flags.
        self.word(gref, 0)?
            .store(hdr_word(flags, domid.get()), Ordering::Release);
        Ok(())
    }

    /// Refuses to reuse an entry that is valid or still pinned.
    fn check_free(&self, gref: GrantRef) -> Result<(), GuestError> {
        let flags = hdr_flags(self.word(gref, 0)?.load(Ordering::Acquire));
        if flags != 0 || self.in_use(gref)? {
            return Err(GuestError::EntryInUse);
        }
        Ok(())
    }

    fn read_frame(&self, gref: GrantRef) -> Result<u64, GuestError> {
        Ok(match self.version {
            GrantVersion::V1 => u64::from(self.word(gref, 1)?.load(Ordering::Relaxed)),
            GrantVersion::V2 => join_u64(
                self.word(gref, 2)?.load(Ordering::Relaxed),
                self.word(gref, 3)?.load(Ordering::Relaxed),
            ),
        })
    }

    fn word(&self, gref: GrantRef, word: u32) -> Result<&'a crate::sync::AtomicU32, GuestError> {
        if gref.0 >= self.capacity() {
            return Err(GuestError::RefOutOfRange);
        }
        entry_word(self.mem, self.version, gref, word).ok_or(GuestError::RefOutOfRange)
    }

    fn status(&self, gref: GrantRef) -> Result<&'a crate::sync::AtomicU16, GuestError> {
        if gref.0 >= self.capacity() {
            return Err(GuestError::RefOutOfRange);
        }
        status_word(self.mem, gref).ok_or(GuestError::RefOutOfRange)
    }
}

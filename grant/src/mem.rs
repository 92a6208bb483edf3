//! How the crate reaches the shared frames, and where each entry's words lie
//! in them.
//!
//! The shared entries and the v2 status words live in frames the granting
//! guest maps and writes at any moment, so both sides reach them only through
//! atomics: the embedder hands out `&[AtomicU32]` views of shared frames and
//! `&[AtomicU16]` views of status frames, the way hvmem-pagetable's `PhysMem`
//! hands out page tables. The crate never holds a `&mut` to guest memory and
//! treats every value it reads there as hostile and possibly changing between
//! two reads.
//!
//! An entry's header (`flags`, `domid`) is one aligned 32-bit word (word
//! `2 * i` of a v1 entry, `4 * i` of a v2 entry), so the hypervisor can
//! compare-and-swap flags and grantee together, as Xen does.

use crate::abi::{
    GrantRef, STATUS_ENTRIES_PER_FRAME, V1_ENTRIES_PER_FRAME, V2_ENTRIES_PER_FRAME, WORDS_PER_FRAME,
};
use crate::sync::{AtomicU16, AtomicU32};

/// The grant frames of one domain's table, as the embedder maps them.
///
/// Implementing it is safe: producing the slices is the implementor's
/// business (a direct map of guest memory, a test arena); the contract is
/// only that a slice stays valid for as long as it is borrowed. A slice
/// shorter than a frame is allowed; entries beyond it are out of range.
/// It is `Sync` because every CPU of every domain reaches the table through
/// it at once.
pub trait GrantMemory: Sync {
    /// Shared frame `index` as [`WORDS_PER_FRAME`] words, or `None` if the
    /// embedder has no such frame (the table cannot grow to it).
    fn shared_frame(&self, index: u32) -> Option<&[AtomicU32]>;

    /// Status frame `index` (v2) as
    /// [`STATUS_ENTRIES_PER_FRAME`](crate::abi::STATUS_ENTRIES_PER_FRAME)
    /// words, or `None` if the embedder has no such frame.
    fn status_frame(&self, index: u32) -> Option<&[AtomicU16]>;

    /// The frame number under which the guest finds shared frame `index`
    /// (what `setup_table` reports).
    fn shared_frame_gfn(&self, index: u32) -> u64;

    /// The frame number under which the guest finds status frame `index`
    /// (what `get_status_frames` reports).
    fn status_frame_gfn(&self, index: u32) -> u64;

    /// Whether the guest still maps status frame `index`. A table switching
    /// back to v1 refuses while any is mapped, so a frame is never released
    /// while the guest can reach it (XSA-255).
    fn status_frame_mapped(&self, index: u32) -> bool;

    /// Status frame `index` is no longer part of the table (the table
    /// switched back to v1); the embedder may reclaim it.
    fn release_status_frame(&self, index: u32);
}

/// Which layout the shared entries have.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GrantVersion {
    /// 8-byte entries, status bits in the entry's flags.
    V1,
    /// 16-byte entries, status bits in separate status frames.
    V2,
}

impl GrantVersion {
    /// Entries per shared frame.
    #[must_use]
    pub const fn entries_per_frame(self) -> u32 {
        match self {
            Self::V1 => V1_ENTRIES_PER_FRAME,
            Self::V2 => V2_ENTRIES_PER_FRAME,
        }
    }

    /// The ABI number (1 or 2).
    #[must_use]
    pub const fn number(self) -> u32 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    pub(crate) const fn words_per_entry(self) -> u32 {
        match self {
            Self::V1 => 2,
            Self::V2 => 4,
        }
    }
}

/// Status frames needed by `grant_frames` v2 grant frames (`ceil(n / 8)`).
#[must_use]
pub const fn status_frames_for(grant_frames: u32) -> u32 {
    let per = STATUS_ENTRIES_PER_FRAME / V2_ENTRIES_PER_FRAME;
    grant_frames.div_ceil(per)
}

/// Word `word` (0 = header) of entry `gref` in a table of `version`.
pub(crate) fn entry_word<M: GrantMemory + ?Sized>(
    mem: &M,
    version: GrantVersion,
    gref: GrantRef,
    word: u32,
) -> Option<&AtomicU32> {
    let per_frame = version.entries_per_frame();
    let frame = gref.0 / per_frame;
    let index = (gref.0 % per_frame) * version.words_per_entry() + word;
    mem.shared_frame(frame)?.get(index as usize)
}

/// The v2 status word of entry `gref`.
pub(crate) fn status_word<M: GrantMemory + ?Sized>(mem: &M, gref: GrantRef) -> Option<&AtomicU16> {
    let frame = gref.0 / STATUS_ENTRIES_PER_FRAME;
    let index = gref.0 % STATUS_ENTRIES_PER_FRAME;
    mem.status_frame(frame)?.get(index as usize)
}

/// The flags half of a header word (offset 0 of the header).
#[inline]
pub(crate) const fn hdr_flags(word: u32) -> u16 {
    if cfg!(target_endian = "little") {
        word as u16
    } else {
        (word >> 16) as u16
    }
}

/// The domid half of a header word (offset 2 of the header).
#[inline]
pub(crate) const fn hdr_domid(word: u32) -> u16 {
    if cfg!(target_endian = "little") {
        (word >> 16) as u16
    } else {
        word as u16
    }
}

/// The header word holding `flags` and `domid`.
#[inline]
pub(crate) const fn hdr_word(flags: u16, domid: u16) -> u32 {
    if cfg!(target_endian = "little") {
        flags as u32 | (domid as u32) << 16
    } else {
        (flags as u32) << 16 | domid as u32
    }
}

/// The 64-bit field stored in two consecutive words (`lo` at the lower
/// address).
#[inline]
pub(crate) const fn join_u64(lo_addr: u32, hi_addr: u32) -> u64 {
    if cfg!(target_endian = "little") {
        lo_addr as u64 | (hi_addr as u64) << 32
    } else {
        (lo_addr as u64) << 32 | hi_addr as u64
    }
}

/// The two words (lower address first) of a 64-bit field.
#[inline]
pub(crate) const fn split_u64(value: u64) -> (u32, u32) {
    if cfg!(target_endian = "little") {
        (value as u32, (value >> 32) as u32)
    } else {
        ((value >> 32) as u32, value as u32)
    }
}

/// A [`GrantMemory`] over caller-provided slices: the shared frames one after
/// the other, and the status frames likewise. For tests, benches, fuzzing,
/// and embedders whose grant frames are contiguous in their address space.
///
/// Whether the guest maps a status frame is tracked in a bitmap the embedder
/// sets with [`set_status_mapped`](Self::set_status_mapped) (the first 64
/// status frames; frames beyond count as unmapped).
#[derive(Debug)]
pub struct SliceMemory<'a> {
    shared: &'a [AtomicU32],
    status: &'a [AtomicU16],
    shared_base_gfn: u64,
    status_base_gfn: u64,
    status_mapped: core::sync::atomic::AtomicU64,
    status_released: core::sync::atomic::AtomicU64,
}

impl<'a> SliceMemory<'a> {
    /// Shared frames over `shared` (a whole number of frames of
    /// [`WORDS_PER_FRAME`] words, or a shorter slice for a partial frame),
    /// status frames over `status`; the guest finds them at frame numbers
    /// counting up from `shared_base_gfn` and `status_base_gfn`.
    #[must_use]
    pub fn new(
        shared: &'a [AtomicU32],
        status: &'a [AtomicU16],
        shared_base_gfn: u64,
        status_base_gfn: u64,
    ) -> Self {
        Self {
            shared,
            status,
            shared_base_gfn,
            status_base_gfn,
            status_mapped: core::sync::atomic::AtomicU64::new(0),
            status_released: core::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Records whether the guest maps status frame `index` (below 64).
    pub fn set_status_mapped(&self, index: u32, mapped: bool) {
        let bit = 1u64.checked_shl(index).unwrap_or(0);
        let order = core::sync::atomic::Ordering::Relaxed;
        if mapped {
            self.status_mapped.fetch_or(bit, order);
        } else {
            self.status_mapped.fetch_and(!bit, order);
        }
    }

    /// How many times a status frame was released.
    #[must_use]
    pub fn status_releases(&self) -> u64 {
        self.status_released
            .load(core::sync::atomic::Ordering::Relaxed)
    }
}

impl GrantMemory for SliceMemory<'_> {
    #[inline]
    fn shared_frame(&self, index: u32) -> Option<&[AtomicU32]> {
        let start = (index as usize).checked_mul(WORDS_PER_FRAME)?;
        let end = start.saturating_add(WORDS_PER_FRAME).min(self.shared.len());
        self.shared
            .get(start..end)
            .filter(|words| !words.is_empty())
    }

    #[inline]
    fn status_frame(&self, index: u32) -> Option<&[AtomicU16]> {
        let per = STATUS_ENTRIES_PER_FRAME as usize;
        let start = (index as usize).checked_mul(per)?;
        let end = start.saturating_add(per).min(self.status.len());
        self.status
            .get(start..end)
            .filter(|words| !words.is_empty())
    }

    fn shared_frame_gfn(&self, index: u32) -> u64 {
        self.shared_base_gfn.wrapping_add(u64::from(index))
    }

    fn status_frame_gfn(&self, index: u32) -> u64 {
        self.status_base_gfn.wrapping_add(u64::from(index))
    }

    fn status_frame_mapped(&self, index: u32) -> bool {
        let bit = 1u64.checked_shl(index).unwrap_or(0);
        self.status_mapped
            .load(core::sync::atomic::Ordering::Relaxed)
            & bit
            != 0
    }

    fn release_status_frame(&self, _index: u32) {
        self.status_released
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn header_word_puts_flags_at_offset_zero() {
        let word = hdr_word(0x0109, 0x0007);
        assert_eq!(word.to_ne_bytes(), [0x09, 0x01, 0x07, 0x00]);
        assert_eq!((hdr_flags(word), hdr_domid(word)), (0x0109, 7));
        let (lo, hi) = split_u64(0x1122_3344_5566_7788);
        assert_eq!(join_u64(lo, hi), 0x1122_3344_5566_7788);
    }

    #[test]
    fn entries_map_onto_their_frames_words() {
        let words: Vec<AtomicU32> = (0..2 * WORDS_PER_FRAME)
            .map(|_| AtomicU32::new(0))
            .collect();
        let status: Vec<AtomicU16> = (0..10).map(|_| AtomicU16::new(0)).collect();
        let mem = SliceMemory::new(&words, &status, 0x100, 0x200);
        let first = entry_word(&mem, GrantVersion::V1, GrantRef(512), 1).unwrap();
        assert!(core::ptr::eq(first, &words[WORDS_PER_FRAME + 1]));
        let v2 = entry_word(&mem, GrantVersion::V2, GrantRef(257), 2).unwrap();
        assert!(core::ptr::eq(v2, &words[WORDS_PER_FRAME + 6]));
        assert!(entry_word(&mem, GrantVersion::V1, GrantRef(1024), 0).is_none());
        assert!(status_word(&mem, GrantRef(9)).is_some());
        assert!(status_word(&mem, GrantRef(10)).is_none());
        assert_eq!(status_frames_for(1), 1);
        assert_eq!(status_frames_for(9), 2);
        assert_eq!(mem.shared_frame_gfn(1), 0x101);
    }
}

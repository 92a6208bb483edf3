//! How page data occupies the store's frames.
//!
//! - **Whole frames.** An uncompressed page takes a frame. With
//!   deduplication, an ephemeral page whose bytes equal those of a frame
//!   already in the content index shares that frame (`refs` counts the
//!   sharers). The content hash only finds candidates: the whole page is
//!   compared before sharing. Data is copied in on every put and a shared
//!   frame is never written (a put over a shared page gets a new frame), so
//!   sharing is invisible to the clients.
//! - **Half frames** (feature `compression`). A page that lz4 compresses to
//!   at most 2048 bytes goes into one half of a frame (zbud-style pairing);
//!   frames with one free half are on a list. A page that does not compress
//!   that well is stored whole.

use crate::error::TmemError;
use crate::hash_index::{K0, K1, fold_mul};
use crate::memory::{FrameRecord, NIL, Place};
use crate::store::{FrameId, Page, PageStore};
use crate::{PAGE_BYTES, Tmem};

/// Bytes of a half frame.
pub(crate) const HALF: usize = PAGE_BYTES / 2;

/// Where a stored page went.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stored {
    pub(crate) frame: u32,
    pub(crate) place: Place,
    pub(crate) len: u16,
    pub(crate) duplicate: bool,
}

/// A 32-bit hash of a page's contents (four independent lanes, so the
/// multiplies overlap).
pub(crate) fn content_hash(seed: u64, page: &Page) -> u32 {
    let mut lanes = [seed, seed ^ K1, seed.rotate_left(17), seed ^ K0];
    for chunk in page.chunks_exact(32) {
        for (lane, word) in lanes.iter_mut().zip(chunk.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            *lane = fold_mul(*lane ^ u64::from_le_bytes(w), K0);
        }
    }
    let [a, b, c, d] = lanes;
    let h = fold_mul(a ^ b.rotate_left(21), K1) ^ fold_mul(c ^ d.rotate_left(42), K0);
    (h ^ (h >> 32)) as u32
}

impl<S: PageStore> Tmem<'_, S> {
    pub(crate) fn frame_record(&mut self, frame: u32) -> Result<&mut FrameRecord, TmemError> {
        self.frames
            .get_mut(frame as usize)
            .ok_or(TmemError::StoreFault)
    }

    /// A free frame, evicting ephemeral pages (at most
    /// `evictions_per_put`) on behalf of `requester` if the store has none.
    fn alloc_frame(&mut self, requester: u16) -> Result<u32, TmemError> {
        for _ in 0..=self.config.evictions_per_put {
            if let Some(FrameId(frame)) = self.store.alloc_frame() {
                if (frame as usize) < self.frames.len() {
                    self.frames_held += 1;
                    return Ok(frame);
                }
                debug_assert!(false, "the page store handed out a frame past its capacity");
                self.store.free_frame(FrameId(frame));
                return Err(TmemError::StoreFault);
            }
            if !self.evict_one(Some(requester)) {
                break;
            }
        }
        Err(TmemError::NoMemory)
    }

    /// Stores a copy of `data`: shared with an identical frame if
    /// `dedup`, compressed if `compress`, else in a frame of its own.
    pub(crate) fn store_page(
        &mut self,
        data: &Page,
        dedup: bool,
        compress: bool,
        requester: u16,
    ) -> Result<Stored, TmemError> {
        let mut hash = None;
        if dedup {
            let h = content_hash(self.config.hash_seed, data);
            hash = Some(h);
            let store = &self.store;
            let frames = &*self.frames;
            let found = self.content_index.find(h, |frame| {
                frames
                    .get(frame as usize)
                    .is_some_and(|f| f.refs < u32::MAX)
                    && store.frame(FrameId(frame)).is_some_and(|page| page == data)
            });
            if let Some(found) = found {
                self.frame_record(found.record)?.refs += 1;
                return Ok(Stored {
                    frame: found.record,
                    place: Place::Whole,
                    len: PAGE_BYTES as u16,
                    duplicate: true,
                });
            }
        }
        if compress {
            if let Some(stored) = self.store_compressed(data, requester)? {
                return Ok(stored);
            }
        }
        let frame = self.alloc_frame(requester)?;
        let Some(page) = self.store.frame_mut(FrameId(frame)) else {
            self.store.free_frame(FrameId(frame));
            self.frames_held -= 1;
            return Err(TmemError::StoreFault);
        };
        page.copy_from_slice(data);
        let indexed = hash.is_some_and(|h| self.content_index.insert(h, frame));
        let record = self.frame_record(frame)?;
        *record = FrameRecord::EMPTY;
        record.refs = 1;
        record.indexed = indexed;
        record.hash = hash.unwrap_or(0);
        Ok(Stored {
            frame,
            place: Place::Whole,
            len: PAGE_BYTES as u16,
            duplicate: false,
        })
    }

    /// Overwrites a page held alone in a whole frame with `data`; `false`
    /// if its frame is shared or compressed (the caller stores anew).
    pub(crate) fn overwrite_whole(
        &mut self,
        frame: u32,
        place: Place,
        data: &Page,
        dedup: bool,
    ) -> Result<bool, TmemError> {
        let record = *self.frame_record(frame)?;
        if place != Place::Whole || record.refs != 1 {
            return Ok(false);
        }
        if record.indexed {
            self.content_index.remove(record.hash, frame);
        }
        self.store
            .frame_mut(FrameId(frame))
            .ok_or(TmemError::StoreFault)?
            .copy_from_slice(data);
        let hash = if dedup {
            content_hash(self.config.hash_seed, data)
        } else {
            0
        };
        let indexed = dedup && self.content_index.insert(hash, frame);
        let r = self.frame_record(frame)?;
        r.indexed = indexed;
        r.hash = hash;
        Ok(true)
    }

    #[cfg(feature = "compression")]
    fn store_compressed(
        &mut self,
        data: &Page,
        requester: u16,
    ) -> Result<Option<Stored>, TmemError> {
        // lz4_flex wants room for the worst case, though only half a page
        // is kept.
        let mut packed = [0u8; lz4_flex::block::get_maximum_output_size(PAGE_BYTES)];
        let len = match lz4_flex::block::compress_into(data, &mut packed) {
            Ok(len) if len > 0 && len <= HALF => len,
            _ => return Ok(None),
        };
        let frame = if self.half_free != NIL {
            self.half_free
        } else {
            let frame = self.alloc_frame(requester)?;
            *self.frame_record(frame)? = FrameRecord::EMPTY;
            self.half_list_push(frame)?;
            frame
        };
        let record = *self.frame_record(frame)?;
        let half: u8 = if record.halves & 1 == 0 { 0 } else { 1 };
        let start = usize::from(half) * HALF;
        let page = self
            .store
            .frame_mut(FrameId(frame))
            .ok_or(TmemError::StoreFault)?;
        page.get_mut(start..start + len)
            .ok_or(TmemError::StoreFault)?
            .copy_from_slice(packed.get(..len).ok_or(TmemError::StoreFault)?);
        let r = self.frame_record(frame)?;
        r.halves |= 1 << half;
        r.refs += 1;
        if r.halves == 0b11 {
            self.half_list_unlink(frame)?;
        }
        Ok(Some(Stored {
            frame,
            place: Place::Half(half),
            len: len as u16,
            duplicate: false,
        }))
    }

    #[cfg(not(feature = "compression"))]
    #[allow(clippy::unnecessary_wraps, clippy::unused_self)]
    fn store_compressed(
        &mut self,
        _data: &Page,
        _requester: u16,
    ) -> Result<Option<Stored>, TmemError> {
        Ok(None)
    }

    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    fn half_list_push(&mut self, frame: u32) -> Result<(), TmemError> {
        let head = self.half_free;
        let r = self.frame_record(frame)?;
        r.half_prev = NIL;
        r.half_next = head;
        if head != NIL {
            self.frame_record(head)?.half_prev = frame;
        }
        self.half_free = frame;
        Ok(())
    }

    fn half_list_unlink(&mut self, frame: u32) -> Result<(), TmemError> {
        let r = *self.frame_record(frame)?;
        if r.half_prev == NIL {
            self.half_free = r.half_next;
        } else {
            self.frame_record(r.half_prev)?.half_next = r.half_next;
        }
        if r.half_next != NIL {
            self.frame_record(r.half_next)?.half_prev = r.half_prev;
        }
        let r = self.frame_record(frame)?;
        r.half_prev = NIL;
        r.half_next = NIL;
        Ok(())
    }

    /// Drops one page's use of `frame`; frees the frame when its last user
    /// goes. The whole-frame path is inlined into the page operations.
    #[inline(always)]
    pub(crate) fn release(&mut self, frame: u32, place: Place) -> Result<(), TmemError> {
        match place {
            Place::Unused => self.frame_record(frame).map(|_| ()),
            Place::Whole => {
                let record = self.frame_record(frame)?;
                if record.refs > 1 {
                    record.refs -= 1;
                    return Ok(());
                }
                let (indexed, hash) = (record.indexed, record.hash);
                *record = FrameRecord::EMPTY;
                if indexed {
                    self.content_index.remove(hash, frame);
                }
                self.store.free_frame(FrameId(frame));
                self.frames_held -= 1;
                Ok(())
            }
            Place::Half(half) => self.release_half(frame, half),
        }
    }

    /// [`release`](Self::release) of a whole frame that only one page has
    /// ever used and that is not in the content index (a persistent page's,
    /// or any page's without deduplication): its record needs no reading,
    /// which saves the page operations a cache miss on the frame table.
    #[inline(always)]
    pub(crate) fn release_sole(&mut self, frame: u32) -> Result<(), TmemError> {
        let record = self.frame_record(frame)?;
        debug_assert!(
            record.refs == 1 && !record.indexed && record.halves == 0,
            "a sole whole frame"
        );
        // The rest of the record is already as in `EMPTY` (see `store_page`
        // and `overwrite_whole`).
        record.refs = 0;
        self.store.free_frame(FrameId(frame));
        self.frames_held -= 1;
        Ok(())
    }

    /// [`release`](Self::release) of a compressed page's half frame.
    #[inline(never)]
    fn release_half(&mut self, frame: u32, half: u8) -> Result<(), TmemError> {
        let r = self.frame_record(frame)?;
        let was_full = r.halves == 0b11;
        r.halves &= !(1 << half);
        r.refs = r.refs.saturating_sub(1);
        if r.halves == 0 {
            self.half_list_unlink(frame)?;
            *self.frame_record(frame)? = FrameRecord::EMPTY;
            self.store.free_frame(FrameId(frame));
            self.frames_held -= 1;
        } else if was_full {
            self.half_list_push(frame)?;
        }
        Ok(())
    }

    /// Copies a stored page out.
    pub(crate) fn read_page(
        &self,
        frame: u32,
        place: Place,
        len: u16,
        out: &mut Page,
    ) -> Result<(), TmemError> {
        let page = self
            .store
            .frame(FrameId(frame))
            .ok_or(TmemError::StoreFault)?;
        match place {
            Place::Whole => {
                out.copy_from_slice(page);
                Ok(())
            }
            Place::Half(half) => {
                let start = usize::from(half) * HALF;
                let packed = page
                    .get(start..start + usize::from(len))
                    .ok_or(TmemError::StoreFault)?;
                unpack(packed, out)
            }
            Place::Unused => Err(TmemError::StoreFault),
        }
    }

    /// Frames of the store tmem holds now.
    #[must_use]
    pub fn frames_in_use(&self) -> u64 {
        self.frames_held
    }
}

#[cfg(feature = "compression")]
fn unpack(packed: &[u8], out: &mut Page) -> Result<(), TmemError> {
    match lz4_flex::block::decompress_into(packed, out) {
        Ok(n) if n == PAGE_BYTES => Ok(()),
        _ => Err(TmemError::StoreFault),
    }
}

#[cfg(not(feature = "compression"))]
fn unpack(_packed: &[u8], _out: &mut Page) -> Result<(), TmemError> {
    Err(TmemError::StoreFault)
}

//! Where page contents live: the [`PageStore`] trait, and [`SliceStore`], a
//! store over a caller-provided array of pages.

use crate::PAGE_BYTES;

/// A 4 KiB page of data.
pub type Page = [u8; PAGE_BYTES];

/// A frame of a [`PageStore`]: an index below its
/// [`capacity`](PageStore::capacity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameId(pub u32);

/// The host memory that holds tmem's page data.
///
/// [`SliceStore`] backs it with an array. To back it with your own frame
/// allocator, give each frame tmem may use a number below `capacity()`
/// (for example its frame number minus the region's first), take and
/// return frames in `alloc_frame` and `free_frame`, and map a number to the
/// frame's 4 KiB in `frame` and `frame_mut`. tmem asks for a frame
/// for every page it keeps and gives it back when the page goes; when
/// [`alloc_frame`](PageStore::alloc_frame) says no, tmem evicts ephemeral
/// pages to make room, and fails the put if that does not help.
///
/// # Implementor contract
///
/// - `alloc_frame` returns a frame below `capacity()` that is not
///   currently handed out, or `None` when the host has no memory for tmem.
/// - `free_frame` receives only frames handed out and not yet freed. The
///   store must not show a freed frame's contents to anyone else unless it
///   scrubs it (tmem writes a whole page, or a compressed prefix whose
///   length it records, before it reads a frame).
/// - `frame` / `frame_mut` return the same bytes for a handed-out frame
///   until it is freed, and `None` for any other frame.
pub trait PageStore {
    /// One more than the largest frame id the store can hand out.
    fn capacity(&self) -> u32;
    /// Takes a free frame, or `None` if the host has no memory for tmem.
    fn alloc_frame(&mut self) -> Option<FrameId>;
    /// Gives a frame back.
    fn free_frame(&mut self, frame: FrameId);
    /// The contents of a handed-out frame.
    fn frame(&self, frame: FrameId) -> Option<&Page>;
    /// The contents of a handed-out frame, to write.
    fn frame_mut(&mut self, frame: FrameId) -> Option<&mut Page>;
}

/// A [`PageStore`] over a caller-provided array of pages, with a limit the
/// embedder can lower and raise to simulate host memory pressure.
#[derive(Debug)]
pub struct SliceStore<'a> {
    pages: &'a mut [Page],
    /// Free frames form a stack threaded through `next`; `NONE` ends it.
    next: &'a mut [u32],
    free_head: u32,
    in_use: u32,
    limit: u32,
}

const NONE: u32 = u32::MAX;

impl<'a> SliceStore<'a> {
    /// A store over `pages`, with `links` (one `u32` per page) for its free
    /// list. Uses `min(pages.len(), links.len(), u32::MAX - 1)` pages.
    pub fn new(pages: &'a mut [Page], links: &'a mut [u32]) -> Self {
        let n = pages.len().min(links.len()).min(NONE as usize - 1) as u32;
        for (i, link) in links.iter_mut().enumerate().take(n as usize) {
            let i = i as u32;
            *link = if i + 1 < n { i + 1 } else { NONE };
        }
        Self {
            pages,
            next: links,
            free_head: if n == 0 { NONE } else { 0 },
            in_use: 0,
            limit: n,
        }
    }

    /// Frames handed out now.
    #[must_use]
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Hands out at most `limit` frames at a time from now on (frames above
    /// the limit stay with tmem until it frees them).
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }
}

impl PageStore for SliceStore<'_> {
    fn capacity(&self) -> u32 {
        self.pages.len().min(self.next.len()).min(NONE as usize - 1) as u32
    }

    fn alloc_frame(&mut self) -> Option<FrameId> {
        if self.in_use >= self.limit || self.free_head == NONE {
            return None;
        }
        let frame = self.free_head;
        self.free_head = *self.next.get(frame as usize)?;
        self.in_use += 1;
        Some(FrameId(frame))
    }

    fn free_frame(&mut self, frame: FrameId) {
        if let Some(link) = self.next.get_mut(frame.0 as usize) {
            *link = self.free_head;
            self.free_head = frame.0;
            self.in_use = self.in_use.saturating_sub(1);
        }
    }

    fn frame(&self, frame: FrameId) -> Option<&Page> {
        self.pages.get(frame.0 as usize)
    }

    fn frame_mut(&mut self, frame: FrameId) -> Option<&mut Page> {
        self.pages.get_mut(frame.0 as usize)
    }
}

/// A [`SliceStore`]'s memory on the heap.
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct StoreMemory {
    pages: alloc::vec::Vec<Page>,
    links: alloc::vec::Vec<u32>,
}

#[cfg(feature = "alloc")]
impl StoreMemory {
    /// Memory for `frames` pages (zeroed).
    #[must_use]
    pub fn new(frames: u32) -> Self {
        Self {
            pages: alloc::vec![[0u8; PAGE_BYTES]; frames as usize],
            links: alloc::vec![0u32; frames as usize],
        }
    }

    /// The store over this memory.
    pub fn store(&mut self) -> SliceStore<'_> {
        SliceStore::new(&mut self.pages, &mut self.links)
    }
}

//! One bit per page, in storage the embedder provides.
//!
//! The balloon machines keep per-page state (a Xen guest's ballooned-out
//! frames, a virtio device's inflated 4 KiB pages) without allocating: the
//! embedder hands in the words, sized by [`bitmap_words`]. The storage type is
//! generic, so a VMM passes `&mut [u64]` and a model checker that must clone
//! states passes an array.

use core::fmt;

/// `u64` words needed for one bit per page for `pages` pages.
#[must_use]
pub const fn bitmap_words(pages: u64) -> usize {
    pages.div_ceil(64) as usize
}

/// Why caller-provided storage was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// The slice is shorter than the sizing function asks.
    TooSmall {
        /// Words needed.
        needed: usize,
        /// Words given.
        given: usize,
    },
    /// The page count does not fit the address space of this machine.
    TooManyPages,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooSmall { needed, given } => {
                write!(f, "storage of {given} words given, {needed} needed")
            }
            Self::TooManyPages => f.write_str("too many pages for this machine's address space"),
        }
    }
}
impl core::error::Error for StorageError {}

/// A bit per page over `pages` pages, with a running count of set bits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PageBitmap<S> {
    words: S,
    pages: u64,
    set: u64,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> PageBitmap<S> {
    /// Takes `words` for `pages` pages and clears them.
    pub(crate) fn new(mut words: S, pages: u64) -> Result<Self, StorageError> {
        if pages > (usize::MAX as u64).saturating_mul(64) / 2 {
            return Err(StorageError::TooManyPages);
        }
        let needed = bitmap_words(pages);
        let given = words.as_ref().len();
        let Some(used) = words.as_mut().get_mut(..needed) else {
            return Err(StorageError::TooSmall { needed, given });
        };
        used.fill(0);
        Ok(Self {
            words,
            pages,
            set: 0,
        })
    }

    /// The number of set bits.
    pub(crate) fn count(&self) -> u64 {
        self.set
    }

    /// Whether page `i` is set; pages past the end read as clear.
    #[inline]
    pub(crate) fn get(&self, i: u64) -> bool {
        i < self.pages
            && self
                .words
                .as_ref()
                .get((i / 64) as usize)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets page `i`; returns whether it was clear before (and so changed).
    /// Pages past the end are never set.
    #[inline]
    pub(crate) fn set(&mut self, i: u64) -> bool {
        if i >= self.pages {
            return false;
        }
        let Some(w) = self.words.as_mut().get_mut((i / 64) as usize) else {
            return false;
        };
        let bit = 1 << (i % 64);
        let was_clear = *w & bit == 0;
        *w |= bit;
        self.set += u64::from(was_clear);
        was_clear
    }

    /// Clears page `i`; returns whether it was set before (and so changed).
    #[inline]
    pub(crate) fn clear(&mut self, i: u64) -> bool {
        if i >= self.pages {
            return false;
        }
        let Some(w) = self.words.as_mut().get_mut((i / 64) as usize) else {
            return false;
        };
        let bit = 1 << (i % 64);
        let was_set = *w & bit != 0;
        *w &= !bit;
        self.set -= u64::from(was_set);
        was_set
    }

    /// Clears every page.
    pub(crate) fn clear_all(&mut self) {
        let n = bitmap_words(self.pages);
        if let Some(used) = self.words.as_mut().get_mut(..n) {
            used.fill(0);
        }
        self.set = 0;
    }

    /// Whether every page of `start..start + len` is set (an empty or
    /// out-of-range run is not). Word at a time: a 2 MiB host page is 8
    /// reads, not 512.
    pub(crate) fn all_set(&self, start: u64, len: u64) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        if len == 0 || end > self.pages {
            return false;
        }
        let words = self.words.as_ref();
        if start % 64 == 0 && len % 64 == 0 {
            // Whole words (host pages of 256 KiB and up): no masks.
            let first = (start / 64) as usize;
            return words
                .get(first..first + (len / 64) as usize)
                .is_some_and(|run| run.iter().all(|&w| w == u64::MAX));
        }
        let mut i = start;
        while i < end {
            let bit = i % 64;
            let n = (64 - bit).min(end - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            let w = words.get((i / 64) as usize).copied().unwrap_or(0);
            if w & mask != mask {
                return false;
            }
            i += n;
        }
        true
    }

    /// Whether every page of the 64-page word holding page `i` is set.
    #[inline]
    pub(crate) fn word_full(&self, i: u64) -> bool {
        self.words
            .as_ref()
            .get((i / 64) as usize)
            .is_some_and(|&w| w == u64::MAX)
    }

    /// Whether any page of `start..start + len` is set, clipped to the map.
    pub(crate) fn any_set(&self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len).min(self.pages);
        let mut i = start;
        while i < end {
            // Skip whole clear words: a reported range can be large.
            if i % 64 == 0 && end - i >= 64 {
                if self.words.as_ref().get((i / 64) as usize).copied() != Some(0) {
                    return true;
                }
                i += 64;
            } else {
                if self.get(i) {
                    return true;
                }
                i += 1;
            }
        }
        false
    }

    /// The lowest set page at or after `from`.
    pub(crate) fn first_set_from(&self, from: u64) -> Option<u64> {
        let words = self.words.as_ref();
        let mut index = (from / 64) as usize;
        let mut mask = u64::MAX.checked_shl((from % 64) as u32).unwrap_or(0);
        while let Some(&w) = words.get(index) {
            let hit = w & mask;
            if hit != 0 {
                let page = index as u64 * 64 + u64::from(hit.trailing_zeros());
                return (page < self.pages).then_some(page);
            }
            index += 1;
            mask = u64::MAX;
            if index as u64 * 64 >= self.pages {
                break;
            }
        }
        None
    }
}

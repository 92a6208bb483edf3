//! Counters kept per client, per pool and for the whole host.

/// What happened to a client's, a pool's or the host's pages.
///
/// Accounting identity, exact at every moment (checked by the property
/// test): `pages == puts - exclusive_gets - flushes - evictions`. A put
/// over an existing page is an `overwrite`, not a put: the page count does
/// not change. A put that fails over an existing page drops the old copy
/// and counts it in `flushes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// Puts that added a page.
    pub puts: u64,
    /// Puts that replaced the data of a page already held.
    pub overwrites: u64,
    /// Puts that failed (no memory, quota, tables full).
    pub failed_puts: u64,
    /// Gets asked for.
    pub gets: u64,
    /// Gets that found their page.
    pub hits: u64,
    /// Gets that did not.
    pub misses: u64,
    /// Hits that took the page out (private ephemeral pools).
    pub exclusive_gets: u64,
    /// Pages the host evicted.
    pub evictions: u64,
    /// Pages removed by flush_page, flush_object, destroy_pool, flush_all,
    /// or dropped by a failed put over them.
    pub flushes: u64,
    /// Pages held now.
    pub pages: u64,
    /// Pages held now in compressed form.
    pub compressed_pages: u64,
    /// Bytes those compressed pages take.
    pub compressed_bytes: u64,
    /// Puts whose data matched a page already stored, and share its frame.
    pub duplicates: u64,
}

impl Stats {
    /// `(uncompressed bytes, compressed bytes)` of the pages held compressed
    /// now; their ratio is the compression ratio. `None` if none is.
    #[must_use]
    pub fn compression_ratio(&self) -> Option<(u64, u64)> {
        if self.compressed_pages == 0 {
            None
        } else {
            Some((
                self.compressed_pages * crate::PAGE_BYTES as u64,
                self.compressed_bytes,
            ))
        }
    }
}

/// Which counter an event moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Put,
    Overwrite,
    /// The old copy of a page left so that a new put can store anew.
    Replaced,
    /// The new copy after `Replaced` was stored.
    Rewritten,
    /// The new copy after `Replaced` could not be stored.
    ReplaceFailed,
    FailedPut,
    Hit {
        exclusive: bool,
    },
    Miss,
    Eviction,
    Flush,
    Duplicate,
}

impl Stats {
    /// Moves the counters `event` moves. Inlined, so that the dispatch
    /// folds away where the event is known (every page operation's fast
    /// path).
    #[inline(always)]
    pub(crate) fn record(&mut self, event: Event) {
        match event {
            Event::Put => {
                self.puts += 1;
                self.pages += 1;
            }
            Event::Overwrite => self.overwrites += 1,
            Event::Replaced => self.pages = self.pages.saturating_sub(1),
            Event::Rewritten => {
                self.overwrites += 1;
                self.pages += 1;
            }
            Event::ReplaceFailed => self.flushes += 1,
            Event::FailedPut => self.failed_puts += 1,
            Event::Hit { exclusive } => {
                self.gets += 1;
                self.hits += 1;
                if exclusive {
                    self.exclusive_gets += 1;
                    self.pages = self.pages.saturating_sub(1);
                }
            }
            Event::Miss => {
                self.gets += 1;
                self.misses += 1;
            }
            Event::Eviction => {
                self.evictions += 1;
                self.pages = self.pages.saturating_sub(1);
            }
            Event::Flush => {
                self.flushes += 1;
                self.pages = self.pages.saturating_sub(1);
            }
            Event::Duplicate => self.duplicates += 1,
        }
    }

    pub(crate) fn compressed(&mut self, bytes: u16, add: bool) {
        if add {
            self.compressed_pages += 1;
            self.compressed_bytes += u64::from(bytes);
        } else {
            self.compressed_pages = self.compressed_pages.saturating_sub(1);
            self.compressed_bytes = self.compressed_bytes.saturating_sub(u64::from(bytes));
        }
    }
}

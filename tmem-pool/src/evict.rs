//! Eviction of ephemeral pages: the per-client LRU lists, victim choice by
//! weight and cap, and the host's reclaim call.
//!
//! Every ephemeral page is on its client's LRU list (oldest at the head)
//! and carries a stamp from a host-wide clock, taken when it was put (or,
//! in a shared pool, last read); the oldest page of the host is the oldest
//! head among the clients. Persistent pages are on no list and are never
//! evicted.
//!
//! Victim choice follows the intent described in Xen's
//! `docs/misc/tmem-internals.html` (`RELEASE-4.12.0`). Xen 4.12's own test,
//! `client_over_quota` in `xen/common/tmem.c`, compares the other way
//! round when read literally: it finds a client "over" when it holds less
//! than its share (see the crate docs):
//!
//! - a client is *over its share* when it holds more than
//!   `weight / total weight` of the host's ephemeral pages (weight 0, or a
//!   total of 0, exempts it); *at its cap* when it holds `ephemeral_cap`
//!   pages or more;
//! - when a client needs memory (a put), its own oldest page goes if it is
//!   over its share or at its cap, else the host's oldest page;
//! - when the host reclaims ([`Tmem::evict`]), the oldest page of the
//!   client most over its share goes, or the host's oldest if none is.

use crate::Tmem;
use crate::memory::NIL;
use crate::stats::Event;
use crate::store::PageStore;

/// What [`Tmem::evict`] gave back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reclaimed {
    /// Ephemeral pages evicted.
    pub pages: u64,
    /// Frames returned to the page store.
    pub frames: u64,
}

impl<S: PageStore> Tmem<'_, S> {
    /// Appends an ephemeral page at the newest end of its client's LRU.
    pub(crate) fn lru_push(&mut self, rec: u32) {
        self.clock += 1;
        let stamp = self.clock;
        let Some(&r) = self.pages.get(rec as usize) else {
            return;
        };
        let Some(client) = self.clients.get_mut(usize::from(r.client)) else {
            return;
        };
        let tail = client.lru_tail;
        client.lru_tail = rec;
        if tail == NIL {
            client.lru_head = rec;
        }
        if let Some(t) = self.pages.get_mut(tail as usize) {
            t.lru_next = rec;
        }
        if let Some(r) = self.pages.get_mut(rec as usize) {
            r.lru_prev = tail;
            r.lru_next = NIL;
            r.stamp = stamp;
        }
    }

    /// Takes an ephemeral page off its client's LRU.
    pub(crate) fn lru_unlink(&mut self, rec: u32) {
        let Some(&r) = self.pages.get(rec as usize) else {
            return;
        };
        if let Some(p) = self.pages.get_mut(r.lru_prev as usize) {
            p.lru_next = r.lru_next;
        } else if let Some(c) = self.clients.get_mut(usize::from(r.client)) {
            c.lru_head = r.lru_next;
        }
        if let Some(n) = self.pages.get_mut(r.lru_next as usize) {
            n.lru_prev = r.lru_prev;
        } else if let Some(c) = self.clients.get_mut(usize::from(r.client)) {
            c.lru_tail = r.lru_prev;
        }
        if let Some(r) = self.pages.get_mut(rec as usize) {
            r.lru_prev = NIL;
            r.lru_next = NIL;
        }
    }

    /// Ephemeral pages on the host, and the sum of the live clients'
    /// weights.
    fn ephemeral_totals(&self) -> (u64, u64) {
        self.clients
            .iter()
            .filter(|c| c.live)
            .fold((0, 0), |(pages, weight), c| {
                (
                    pages + u64::from(c.ephemeral_pages),
                    weight + u64::from(c.config.weight),
                )
            })
    }

    /// How far client `i` is over its weighted share (scaled), if it is.
    fn over_share(&self, i: usize, total_pages: u64, total_weight: u64) -> Option<u128> {
        let c = self.clients.get(i)?;
        if !c.live || c.config.weight == 0 || total_weight == 0 || c.lru_head == NIL {
            return None;
        }
        let held = u128::from(c.ephemeral_pages) * u128::from(total_weight);
        let share = u128::from(total_pages) * u128::from(c.config.weight);
        (held > share).then(|| held - share)
    }

    fn at_cap(&self, i: usize) -> bool {
        self.clients.get(i).is_some_and(|c| {
            c.config
                .ephemeral_cap
                .is_some_and(|cap| c.ephemeral_pages >= cap)
        })
    }

    /// The page to evict when `requester` needs memory (or the host, for
    /// `None`).
    fn victim(&self, requester: Option<u16>) -> Option<u32> {
        let (total_pages, total_weight) = self.ephemeral_totals();
        if let Some(c) = requester.map(usize::from) {
            let own = self.clients.get(c).map_or(NIL, |r| r.lru_head);
            if own != NIL
                && (self.at_cap(c) || self.over_share(c, total_pages, total_weight).is_some())
            {
                return Some(own);
            }
        } else {
            let most_over = (0..self.clients.len())
                .filter_map(|i| Some((self.over_share(i, total_pages, total_weight)?, i)))
                .max();
            if let Some((_, i)) = most_over {
                return self.clients.get(i).map(|c| c.lru_head);
            }
        }
        self.clients
            .iter()
            .filter(|c| c.live && c.lru_head != NIL)
            .filter_map(|c| Some((self.pages.get(c.lru_head as usize)?.stamp, c.lru_head)))
            .min()
            .map(|(_, rec)| rec)
    }

    /// Evicts one ephemeral page on behalf of `requester`; `false` if the
    /// host holds none.
    pub(crate) fn evict_one(&mut self, requester: Option<u16>) -> bool {
        match self.victim(requester) {
            Some(rec) => self.remove_page(rec, Event::Eviction).is_ok(),
            None => false,
        }
    }

    /// The host wants memory back (its balloon policy, or its allocator
    /// running short): evicts ephemeral pages until `frames` frames went
    /// back to the page store or no ephemeral page is left.
    ///
    /// Each victim is the oldest page of the client most over its weighted
    /// share (it holds more than `weight / total weight` of the host's
    /// ephemeral pages), or the host's oldest ephemeral page if no client is
    /// over. A put that finds the store full evicts likewise, but takes the
    /// putting client's own oldest page when that client is over its share
    /// or at its cap. Persistent pages are never evicted.
    pub fn evict(&mut self, frames: u64) -> Reclaimed {
        let mut done = Reclaimed::default();
        let before = self.frames_in_use();
        // Bounded: each round removes one of at most `pages.len()` pages.
        for _ in 0..self.pages.len() {
            if done.frames >= frames || !self.evict_one(None) {
                break;
            }
            done.pages += 1;
            done.frames = before.saturating_sub(self.frames_in_use());
        }
        done
    }

    /// Ephemeral pages held on the host now (what it could reclaim).
    #[must_use]
    pub fn ephemeral_pages(&self) -> u64 {
        self.ephemeral_totals().0
    }
}

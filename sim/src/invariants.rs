//! The cross-crate invariants, checked after every step.
//!
//! Two checks, so that checking every step stays cheap on a large host:
//!
//! - [`Host::check_counters`], O(domains), after every step: the heap's free
//!   frames equal the books' free pages; the books are conserved (free +
//!   every domain's pages = guest memory, claims within free memory); each
//!   domain's pages in the books equal the frames the host counts for it
//!   plus the pages its persistent tmem pools hold, and stay within its
//!   `max_pages`; free + domains' + host's + tmem's frames = all frames;
//!   the frames lent to tmem are exactly those holding its pages, and the
//!   books charge them to tmem's entry but for the persistent pages the
//!   domains pay for.
//! - [`Host::audit`], O(frames), every N steps: every frame's owner in the
//!   frame table equals the host's record, and the per-owner counts equal
//!   the counters above (a frame is lent to tmem in the host's records
//!   exactly when tmem's store holds it, and each domain is charged for
//!   exactly the pages its persistent pools hold); every physmap entry points at a frame the domain
//!   owns whose M2P points back; every frame's general and type reference
//!   counts equal what the live page tables hold (one general reference per
//!   present entry in a validated table in use, plus a type reference per
//!   writable L1 entry or per L2..L4 entry, plus its pin and its allocation
//!   reference, plus what live grant mappings hold: a general reference
//!   per mapping kind, a writable type reference per kind of a writable
//!   mapping), and its type is the one those entries need; so no frame
//!   is both writable-mapped (by a page table or a grant) and a page table.
//!
//! Honest guests' data (their fingerprints) is checked by the scenario,
//! which knows what each guest wrote.

use core::fmt;
use core::sync::atomic::Ordering;

use hvmem_frametable::{FrameType, Owner};
use hvmem_pagetable::pv::{ENTRIES, XEN_L4_SLOTS};
use hvmem_types::{DomId, Mfn};

use crate::host::Host;

/// A broken invariant: a bug in a crate or in the sim.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The heap and the books disagree on free memory.
    FreeMismatch {
        /// Free frames in the heap.
        heap: u64,
        /// Free pages in the books.
        books: u64,
    },
    /// The books are not conserved.
    BooksNotConserved,
    /// A domain's pages differ between the books and the frames it owns.
    DomainPages {
        /// The domain.
        domid: DomId,
        /// `tot_pages` in the books.
        books: u64,
        /// Frames counted by the host (or found in the frame table).
        frames: u64,
    },
    /// A domain holds more than its `max_pages`.
    AboveMax {
        /// The domain.
        domid: DomId,
    },
    /// Frames are not conserved.
    FramesNotConserved,
    /// A frame's owner differs between the frame table and the host.
    Owner {
        /// The frame.
        mfn: Mfn,
    },
    /// A physmap entry and the M2P disagree.
    Physmap {
        /// The frame.
        mfn: Mfn,
    },
    /// A frame's reference counts differ from what the page tables hold.
    References {
        /// The frame.
        mfn: Mfn,
        /// `(general, type)` counts in the frame table.
        found: (u64, u64),
        /// `(general, type)` counts the tables, pin and allocation imply.
        expected: (u64, u64),
    },
    /// A frame's type is not what the entries pointing at it need.
    Type {
        /// The frame.
        mfn: Mfn,
    },
    /// An honest guest's data changed behind its back.
    GuestData {
        /// The frame.
        mfn: Mfn,
    },
    /// The frames lent to tmem differ from what tmem holds or from the
    /// books' charge for them.
    TmemFrames {
        /// Frames the host counts as lent.
        lent: u64,
        /// Frames tmem's store holds pages in.
        held: u64,
        /// Pages tmem says it holds.
        pages: u64,
    },
    /// A domain is charged for a number of persistent tmem pages other
    /// than its persistent pools hold.
    TmemCharge {
        /// The domain.
        domid: DomId,
        /// Pages the host charges it for.
        charged: u64,
        /// Pages its persistent pools hold.
        held: u64,
    },
    /// An honest split driver's grant operation failed (the frame
    /// involved, or the domain id for a table setup).
    Grant {
        /// The frame.
        mfn: Mfn,
    },
    /// A page an honest guest put into a persistent tmem pool is gone or
    /// changed.
    TmemData {
        /// The guest.
        domid: DomId,
        /// The page's index in the guest's working set.
        page: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant broken: {self:?}")
    }
}
impl std::error::Error for Violation {}

/// What the live page tables say a frame should hold.
#[derive(Clone, Copy, Default)]
struct Expected {
    refs: u32,
    writable: u32,
    table: u32,
    /// The level of the tables pointing at it (0 none, 2..4).
    from_level: u8,
}

fn level_of(ty: FrameType) -> Option<u8> {
    match ty {
        FrameType::L1 => Some(1),
        FrameType::L2 => Some(2),
        FrameType::L3 => Some(3),
        FrameType::L4 => Some(4),
        _ => None,
    }
}

impl Host<'_> {
    /// The O(domains) check run after every step. See the [module
    /// docs](self).
    ///
    /// # Errors
    ///
    /// The first [`Violation`] found.
    pub fn check_counters(&self) -> Result<(), Violation> {
        let heap = self.heap.free_frames();
        let books = self.books.free_pages();
        if heap != books {
            return Err(Violation::FreeMismatch { heap, books });
        }
        if !self.books.is_conserved() {
            return Err(Violation::BooksNotConserved);
        }
        let (mut owned, mut persistent) = (0u64, 0u64);
        for d in &self.domains {
            let b = self
                .books
                .domain(d.id())
                .ok_or(Violation::BooksNotConserved)?;
            // Its frames and its persistent tmem pages (the audit checks the
            // latter against tmem's own count).
            let held = d.tmem_persistent();
            if b.tot_pages != d.owned() + held {
                return Err(Violation::DomainPages {
                    domid: d.id(),
                    books: b.tot_pages,
                    frames: d.owned() + held,
                });
            }
            if b.tot_pages > b.max_pages {
                return Err(Violation::AboveMax { domid: d.id() });
            }
            owned += d.owned();
            persistent += held;
        }
        if heap + owned + self.host_frames + self.tmem_frames != self.total_frames() {
            return Err(Violation::FramesNotConserved);
        }
        // tmem: at rest every lent frame holds a page (one page per frame:
        // no compression or deduplication here), and the books charge the
        // lent frames to tmem but for the persistent pages, which the
        // domains above pay for.
        let store = self.tmem.store();
        let charged = self
            .books
            .domain(crate::tmem::TMEM_BOOKS)
            .map_or(u64::MAX, |d| d.tot_pages);
        let pages = self.tmem.stats().pages;
        if self.tmem_frames != store.lent()
            || store.lent() != store.in_use()
            || store.in_use() != pages
            || charged.checked_add(persistent) != Some(self.tmem_frames)
        {
            return Err(Violation::TmemFrames {
                lent: self.tmem_frames,
                held: store.in_use(),
                pages,
            });
        }
        Ok(())
    }

    /// The O(frames) audit run every N steps. See the [module docs](self).
    ///
    /// # Errors
    ///
    /// The first [`Violation`] found.
    pub fn audit(&self) -> Result<(), Violation> {
        self.check_counters()?;
        let first = self.first_mfn().get();
        let n = self.total_frames();
        let mut expected = vec![Expected::default(); usize::try_from(n).unwrap_or(0)];
        let mut per_domain = vec![0u64; self.domains.len()];
        let mut host = 0u64;
        let mut lent = 0u64;
        let mask = self.pv.address_mask();
        for i in 0..n {
            let mfn = Mfn::new(first + i);
            let state = self
                .table
                .state(mfn)
                .map_err(|_| Violation::Owner { mfn })?;
            if state.owner != self.recorded_owner(mfn) {
                return Err(Violation::Owner { mfn });
            }
            if self.is_tmem_frame(mfn) != self.tmem.store().holds(mfn) {
                return Err(Violation::Owner { mfn });
            }
            match state.owner {
                Some(Owner::Host) if self.is_tmem_frame(mfn) => lent += 1,
                Some(Owner::Host) => host += 1,
                Some(Owner::Domain(d)) => {
                    let slot = self
                        .domains
                        .iter()
                        .position(|x| x.id() == d)
                        .and_then(|p| per_domain.get_mut(p))
                        .ok_or(Violation::Owner { mfn })?;
                    *slot += 1;
                }
                None => {}
            }
            let Some(level) = level_of(state.frame_type) else {
                continue;
            };
            if state.type_refs == 0 || !state.validated {
                continue;
            }
            let Some(words) = self.mem.words(mfn) else {
                continue;
            };
            for (index, word) in words.iter().enumerate().take(ENTRIES as usize) {
                if level == 4 && XEN_L4_SLOTS.contains(&(index as u32)) {
                    continue;
                }
                let entry = word.load(Ordering::Relaxed);
                if entry & 1 == 0 {
                    continue;
                }
                let target = (entry & mask) >> 12;
                let Some(e) = target
                    .checked_sub(first)
                    .and_then(|t| usize::try_from(t).ok())
                    .and_then(|t| expected.get_mut(t))
                else {
                    return Err(Violation::References {
                        mfn: Mfn::new(target),
                        found: (0, 0),
                        expected: (1, 0),
                    });
                };
                e.refs += 1;
                if level == 1 {
                    if entry & 2 != 0 {
                        e.writable += 1;
                    }
                } else {
                    e.table += 1;
                    e.from_level = level;
                }
            }
        }
        // Grant mappings: a general reference per mapping kind, and a
        // writable type reference per kind of a writable mapping, taken in
        // the granter's name (hvmem-grant's discipline: a pinned active
        // entry holds no reference of its own).
        for m in self.grant_mappings() {
            let e = m
                .mfn
                .get()
                .checked_sub(first)
                .and_then(|t| usize::try_from(t).ok())
                .and_then(|t| expected.get_mut(t))
                .ok_or(Violation::References {
                    mfn: m.mfn,
                    found: (0, 0),
                    expected: (u64::from(m.kinds), 0),
                })?;
            if self.recorded_owner(m.mfn) != Some(Owner::Domain(m.granter)) {
                return Err(Violation::Owner { mfn: m.mfn });
            }
            e.refs += m.kinds;
            if m.writable {
                e.writable += m.kinds;
            }
        }
        for (d, &count) in self.domains.iter().zip(&per_domain) {
            if count != d.owned() {
                return Err(Violation::DomainPages {
                    domid: d.id(),
                    books: d.owned(),
                    frames: count,
                });
            }
            let held = self.tmem_persistent_held(d.id());
            if held != d.tmem_persistent() {
                return Err(Violation::TmemCharge {
                    domid: d.id(),
                    charged: d.tmem_persistent(),
                    held,
                });
            }
        }
        if host != self.host_frames {
            return Err(Violation::FramesNotConserved);
        }
        if lent != self.tmem_frames {
            return Err(Violation::TmemFrames {
                lent: self.tmem_frames,
                held: lent,
                pages: self.tmem.stats().pages,
            });
        }
        for (i, e) in expected.iter().enumerate() {
            let mfn = Mfn::new(first + i as u64);
            let state = self
                .table
                .state(mfn)
                .map_err(|_| Violation::Owner { mfn })?;
            let pinned = u64::from(state.pinned);
            let want_refs = u64::from(state.allocated) + pinned + u64::from(e.refs);
            let want_types = pinned + u64::from(e.writable) + u64::from(e.table);
            if (state.refs, state.type_refs) != (want_refs, want_types) {
                return Err(Violation::References {
                    mfn,
                    found: (state.refs, state.type_refs),
                    expected: (want_refs, want_types),
                });
            }
            if e.writable > 0 && state.frame_type != FrameType::Writable {
                return Err(Violation::Type { mfn });
            }
            if e.table > 0 && level_of(state.frame_type) != Some(e.from_level - 1) {
                return Err(Violation::Type { mfn });
            }
        }
        for d in &self.domains {
            for (gfn, mfn) in d.physmap_entries() {
                if self.recorded_owner(mfn) != Some(Owner::Domain(d.id()))
                    || self.m2p(mfn) != Some(gfn)
                {
                    return Err(Violation::Physmap { mfn });
                }
            }
        }
        for i in 0..n {
            let mfn = Mfn::new(first + i);
            if let (Some(Owner::Domain(d)), Some(gfn)) = (self.recorded_owner(mfn), self.m2p(mfn))
                && self.domain(d).and_then(|x| x.mfn(gfn)) != Some(mfn)
            {
                return Err(Violation::Physmap { mfn });
            }
        }
        Ok(())
    }
}

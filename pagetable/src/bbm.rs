//! Break-before-make: the step the editor cannot do itself.
//!
//! On AArch64 a valid descriptor may not be replaced by another valid one
//! unless only "safe" fields differ: two TLB entries for one address could
//! coexist, which the architecture leaves CONSTRAINED UNPREDICTABLE. The rule
//! is to write an invalid entry, make that visible, invalidate every cached
//! translation through it, and only then write the new entry.
//!
//! The `*_live` methods of [`PageTable`](crate::PageTable) follow it. Where a
//! change needs a break ([`Format::needs_break`](crate::Format::needs_break)),
//! the editor writes the invalid entries, calls
//! [`BreakBeforeMake::invalidate`] with the range they covered, and writes the
//! new entries after it returns. Everything that needed no break is returned
//! as the usual `#[must_use]` [`TlbFlush`](crate::TlbFlush). On x86 and EPT
//! the callback is never called: the same interface yields only flush
//! ranges.

/// Entries that the editor has just made invalid, as part of a
/// break-before-make sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Break {
    /// First input address the broken entries covered.
    pub start: u64,
    /// Input address just past them.
    pub end: u64,
    /// Their level in this crate's numbering (0 = last-level table). The
    /// architecture numbers from the root instead: its level is
    /// `3 - level` (as a signed number: level -1 exists with LPA2), which
    /// is what a TLBI TTL level hint wants.
    pub level: u8,
    /// Whether one of them pointed to a table, so that cached walks through
    /// it must go too (a non-last-level TLBI: `VAE1IS`, not `VALE1IS`).
    pub table: bool,
}

/// What the caller of a live edit does between breaking and making.
///
/// # Which changes break
///
/// This crate follows the conservative reading that aarch64-paging uses
/// (its `is_bbm_safe`), the one list the rest of the documentation
/// refers to:
///
/// | | written in place | needs break-before-make |
/// |---|---|---|
/// | stage 1 | AP\[2\] (read-only), AF, DBM, PXN, UXN, software bits \[58:55\], setting nG | output address, block/table size, AttrIndx, SH, the contiguous bit, clearing nG, AP\[1\] (EL0 access), anything else |
/// | stage 2 | S2AP, AF, XN, software bits | output address, block/table size, MemAttr, SH, the contiguous bit, anything else |
///
/// Splitting a live block or merging into one changes the size, so both
/// break. FEAT_BBM's relaxations are not used.
///
/// `invalidate` must not return before no CPU can use a translation through
/// the broken entries any more. The sequences (as KVM and Linux use them):
///
/// - stage 1 (own EL2 or EL1&0 tables): `DSB ISHST`; `TLBI VAE2IS` /
///   `VAE1IS` (with the ASID; `VALE*` when [`Break::table`] is false) for
///   each page of the range, or by ASID above a threshold; `DSB ISH`; `ISB`.
/// - stage 2: `DSB ISHST`; `TLBI IPAS2E1IS` per page (level hint from
///   [`Break::level`]); `DSB ISH`; `TLBI VMALLE1IS` (combined stage-1+2
///   entries are tagged by VA); `DSB ISH`; `ISB`. Or `TLBI VMALLS12E1IS`.
///
/// Plus cache maintenance where the new mapping needs it (no FWB, executable
/// pages). The editor writes the new entry with release ordering after this
/// returns; a `DSB ISHST` after the whole update (before relying on it) is
/// the caller's, as after any update.
pub trait BreakBeforeMake {
    /// Invalidates the translations of the broken entries.
    fn invalidate(&mut self, broken: &Break);
}

/// The break-before-make step of formats that never need one.
pub(crate) struct NeverBreak;

impl BreakBeforeMake for NeverBreak {
    fn invalidate(&mut self, _broken: &Break) {
        debug_assert!(false, "a WithoutBreakBeforeMake format asked for a break");
    }
}

/// The record of entry writes and invalidations that the break-before-make
/// checker of the tests replays.
#[cfg(test)]
pub(crate) mod trace {
    use core::cell::RefCell;
    use core::sync::atomic::AtomicU64;
    use std::vec::Vec;

    use super::Break;

    /// One recorded step.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Event {
        /// `entry` (covering input `[at, at + size)` at `level`) went from
        /// `old` to `new`.
        Write {
            entry: usize,
            level: u8,
            at: u64,
            size: u64,
            old: u64,
            new: u64,
        },
        /// The caller invalidated a broken range.
        Invalidate(Break),
        /// A table frame was cleared for reuse: its entries start afresh.
        Fresh { first: usize, bytes: usize },
    }

    std::thread_local! {
        static LOG: RefCell<Option<Vec<Event>>> = const { RefCell::new(None) };
    }

    /// Starts recording on this thread.
    pub(crate) fn start() {
        LOG.with(|l| *l.borrow_mut() = Some(Vec::new()));
    }

    /// Stops recording and returns what was recorded.
    pub(crate) fn take() -> Vec<Event> {
        LOG.with(|l| l.borrow_mut().take().unwrap_or_default())
    }

    pub(crate) fn record(event: Event) {
        LOG.with(|l| {
            if let Some(log) = l.borrow_mut().as_mut() {
                log.push(event);
            }
        });
    }

    pub(crate) fn write(entry: &AtomicU64, level: u8, at: u64, size: u64, old: u64, new: u64) {
        record(Event::Write {
            entry: entry as *const AtomicU64 as usize,
            level,
            at,
            size,
            old,
            new,
        });
    }

    pub(crate) fn fresh(table: &[AtomicU64]) {
        record(Event::Fresh {
            first: table.as_ptr() as usize,
            bytes: core::mem::size_of_val(table),
        });
    }
}

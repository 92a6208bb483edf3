//! Protect in a last-level table: one verdict per attribute pattern.
//!
//! A protect keeps each leaf's output address and gives it new attributes.
//! For a format with a [`leaf_address_mask`](Format::leaf_address_mask) the
//! rebuilt leaf is `(raw & mask) | template`, and an entry's kind, hint and
//! break-before-make verdict depend only on its bits outside the mask, so
//! `kind` and `needs_break` run once per distinct pattern and groups of
//! entries holding the last pattern are tested with one OR. Contiguous runs
//! are prepared (unfolded, or broken and rewritten whole) before their
//! entries change. Formats without a mask take the per-entry path,
//! [`protect_last_level`](Editor::protect_last_level).

use core::sync::atomic::{AtomicU64, Ordering};

use super::{Editor, PlanError, Refill, Slot, slots};
use crate::alloc::TableAllocator;
use crate::attrs::Attributes;
use crate::bbm::BreakBeforeMake;
use crate::error::TableError;
use crate::format::{EntryKind, Format};
use crate::mem::PhysMem;

/// What a protect does to a contiguous run before changing its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunStep {
    /// Nothing: not hinted, or a change the entries take in place.
    Keep,
    /// Break it and write it back without the hint (cut by the range).
    Unfold,
    /// Break it and write it back whole with the new attributes.
    Rewrite,
}

/// How many last-level entries a protect tests together where the format
/// has no contiguous runs (where it has, a run is the group).
const GROUP: usize = 8;

/// How many last-level entries (at least) a protect first tests together,
/// before it looks at their groups one by one.
const BLOCK: usize = 64;

/// Whether every entry of `entries` holds `known` outside `mask`: one OR
/// over the group, eight entries at a time.
#[inline]
fn all_hold(entries: &[AtomicU64], known: u64, mask: u64) -> bool {
    let differ = |acc: u64, e: &AtomicU64| acc | (e.load(Ordering::Acquire) ^ known);
    let mut groups = entries.chunks_exact(GROUP);
    let mut acc = 0;
    for group in &mut groups {
        if let Ok(group) = <&[AtomicU64; GROUP]>::try_from(group) {
            acc = group.iter().fold(acc, differ);
        }
    }
    acc = groups.remainder().iter().fold(acc, differ);
    acc & !mask == 0
}

/// What a protect does to the leaves with one pattern of bits outside the
/// leaf address mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// They already hold the new value.
    Keep,
    /// Written in place, flushed afterwards.
    Store,
    /// Replaced with break-before-make.
    Break,
}

/// The state of a protect's pass over a last-level table.
struct Rewrite {
    mask: u64,
    /// The new leaf's bits outside the mask, without and with the hint.
    template: u64,
    hinted: u64,
    /// The bits outside the mask of the last leaf classified (at first
    /// those of an invalid entry, 0, kept), what its rewrite sets there, and
    /// the verdict.
    known: u64,
    bits: u64,
    verdict: Verdict,
    /// The changed slots not yet added to the flush, `[run_start, run_end)`
    /// in index space (empty when equal).
    run_start: u64,
    run_end: u64,
}

impl<F: Format, M: PhysMem, B: BreakBeforeMake> Editor<'_, F, M, B> {
    /// The plan of a protect in a last-level table, for formats with a
    /// [`leaf_address_mask`](Format::leaf_address_mask): every entry must be
    /// invalid or a leaf. An entry whose bits outside the mask are those of
    /// a leaf already checked is a leaf too (the mask's rule), so `kind`
    /// runs once per distinct attribute pattern, and a group of entries that
    /// all share the pattern is checked with one test. `None` as
    /// [`plan_last_level`](Self::plan_last_level), or without a mask.
    pub(super) fn plan_protect_last_level(
        &self,
        entries: &[AtomicU64],
        base: u64,
        start: u64,
        end: u64,
    ) -> Option<Result<usize, PlanError>> {
        let mask = self.format.leaf_address_mask(0)? | self.format.hardware_bits();
        // Entries with no bit outside the mask are invalid (the mask's rule).
        if self.format.kind(0, 0) != EntryKind::Invalid {
            return None;
        }
        let shift = self.format.level_shift(0);
        let first = usize::try_from((start - base) >> shift).ok()?;
        let last = usize::try_from((end - 1 - base) >> shift).ok()?;
        let run = entries.get(first..=last)?;
        // The bits outside the mask of the last leaf checked: those of the
        // first entry if it is one (so that the first block can pass the
        // group test), else those of an invalid entry, 0.
        let mut known = 0;
        if let Some(raw) = run.first().map(|e| e.load(Ordering::Acquire)) {
            if let EntryKind::Leaf(_) = self.format.kind(raw, 0) {
                known = raw & !mask;
            }
        }
        for (g, group) in run.chunks(BLOCK).enumerate() {
            if all_hold(group, known, mask) {
                continue;
            }
            for (k, e) in group.iter().enumerate() {
                let raw = e.load(Ordering::Acquire);
                if raw & !mask == known {
                    continue;
                }
                match self.format.kind(raw, 0) {
                    EntryKind::Leaf(_) => known = raw & !mask,
                    EntryKind::Invalid => {}
                    EntryKind::Table(_) | EntryKind::Malformed => {
                        let at = base + (((first + g * BLOCK + k) as u64) << shift);
                        return Some(Err(TableError::Malformed {
                            at: self.format.index_to_input(at),
                            level: 0,
                        }
                        .into()));
                    }
                }
            }
        }
        Some(Ok(0))
    }

    /// A protect in a last-level table, for formats with a
    /// [`leaf_address_mask`](Format::leaf_address_mask): each leaf keeps its
    /// address bits and takes the template's (and its own contiguous hint)
    /// for the rest, `(raw & mask) | template`, with no decode or encode of
    /// its address. By the mask's rule, leaves with the same bits outside
    /// the mask get the same verdict: left alone (already the new value),
    /// written in place, or broken; so `kind` and `needs_break` run once per
    /// distinct attribute pattern.
    ///
    /// The table goes by groups: a format's contiguous runs, or eight
    /// entries. A whole group whose entries all share the last pattern seen,
    /// with an in-place verdict, is tested with one OR and rewritten: such a
    /// run needs no preparation (its hint, if any, stays, and nothing in it
    /// needs a break). Any other group is prepared as
    /// [`prepare_runs`](Self::prepare_runs) would, then done entry by
    /// entry. `false` if the format has no mask, its templates hold address
    /// bits, or the range is not inside `entries` (the caller then takes the
    /// general path; nothing was written).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn protect_last_level_masked(
        &mut self,
        entries: &[AtomicU64],
        base: u64,
        start: u64,
        end: u64,
        attrs: &Attributes,
        template: u64,
        alloc: &mut impl TableAllocator,
    ) -> bool {
        let format = self.format;
        // The hardware bits ride along with the address: they change no
        // entry's kind or verdict (the format's contract), and a protect
        // keeps them.
        let Some(mask) = format
            .leaf_address_mask(0)
            .map(|m| m | format.hardware_bits())
        else {
            return false;
        };
        let hinted = format.with_contiguous(template, true);
        // Entries with no bit outside the mask are invalid (the mask's rule):
        // the pattern the pass starts from, with nothing to do.
        if (template | hinted) & mask != 0 || format.kind(0, 0) != EntryKind::Invalid {
            return false;
        }
        let shift = format.level_shift(0);
        let size = 1u64 << shift;
        let runs = format.contiguous_run(0);
        let group_bits = if runs > 0 {
            runs
        } else {
            GROUP.trailing_zeros()
        };
        let group_len = 1usize << group_bits;
        let block_bits = group_bits.max(BLOCK.trailing_zeros());
        let block_len = 1usize << block_bits;
        // Every block the range touches lies inside the table.
        let (Ok(last), true) = (
            usize::try_from((end - 1 - base) >> shift),
            entries.len() % block_len == 0,
        ) else {
            return false;
        };
        if last >= entries.len() {
            return false;
        }
        let mut state = Rewrite {
            mask,
            template,
            hinted,
            known: 0,
            bits: template,
            verdict: Verdict::Keep,
            run_start: 0,
            run_end: 0,
        };
        // Start from the first entry's pattern, so that the first block can
        // pass the group test.
        if let Some(entry) = entries.get(((start - base) >> shift) as usize) {
            self.classify(entry.load(Ordering::Acquire), &mut state);
        }
        for block in slots(shift + block_bits, base, start, end) {
            let first = block.index << block_bits;
            let Some(block_entries) = entries.get(first..first + block_len) else {
                continue;
            };
            // A block of whole groups that all pass the test below at once.
            if block.is_full() && self.rewrite_group(block_entries, &block, &mut state) {
                continue;
            }
            for group in slots(
                shift + group_bits,
                block.start,
                block.piece_start,
                block.piece_end,
            ) {
                let first = first + (group.index << group_bits);
                let Some(group_entries) = entries.get(first..first + group_len) else {
                    continue;
                };
                if group.is_full() && self.rewrite_group(group_entries, &group, &mut state) {
                    continue;
                }
                if runs > 0 {
                    self.prepare_protect_run(group_entries, 0, &group, attrs, template, alloc);
                }
                let piece = ((group.piece_start - base) >> shift) as usize
                    ..((group.piece_end - base) >> shift) as usize;
                let mut here = group.piece_start;
                for (index, entry) in piece.clone().zip(entries.get(piece).unwrap_or_default()) {
                    self.protect_leaf(entry, index, here, size, &mut state);
                    here += size;
                }
            }
        }
        if state.run_start != state.run_end {
            self.flush_index(state.run_start, state.run_end);
        }
        true
    }

    /// The fast step of [`protect_last_level_masked`](Self::protect_last_level_masked)
    /// over whole groups (`entries`, covering `slot`): if every entry holds
    /// the last pattern seen and its verdict is in place, rewrites them all
    /// (or, if they already hold the new value, leaves them) and returns
    /// `true`; otherwise writes nothing and returns `false`.
    #[inline]
    fn rewrite_group(&mut self, entries: &[AtomicU64], slot: &Slot, state: &mut Rewrite) -> bool {
        let mask = state.mask;
        if state.verdict == Verdict::Break || !all_hold(entries, state.known, mask) {
            return false;
        }
        if state.verdict == Verdict::Store {
            let size = slot.size >> entries.len().trailing_zeros();
            let mut here = slot.start;
            for entry in entries {
                // Read again, just before the store: hardware may have set
                // A/D since the test (kept: they are under the mask), or AF,
                // or cleared AP[2] for DBM (replaced by the template's).
                let raw = entry.load(Ordering::Acquire);
                self.store(entry, raw, (raw & mask) | state.bits, 0, here, size);
                here += size;
            }
            self.changed(state, slot.start, slot.start + slot.size);
        }
        true
    }

    /// Makes the pattern of `raw` (its bits outside the mask) the known one,
    /// with its rewrite and verdict, if `raw` is a leaf; `false` (state
    /// unchanged) if it is not.
    fn classify(&self, raw: u64, state: &mut Rewrite) -> bool {
        let format = self.format;
        if !matches!(format.kind(raw, 0), EntryKind::Leaf(_)) {
            return false;
        }
        let mask = state.mask;
        state.known = raw & !mask;
        // A run still hinted here is one that keeps the hint.
        state.bits = if format.is_contiguous(raw) {
            state.hinted
        } else {
            state.template
        };
        let new = (raw & mask) | state.bits;
        state.verdict = if new == raw {
            Verdict::Keep
        } else if format.needs_break(raw, new, 0) {
            Verdict::Break
        } else {
            Verdict::Store
        };
        true
    }

    /// One entry of [`protect_last_level_masked`](Self::protect_last_level_masked):
    /// classifies it if its bits outside the mask are new, then applies the
    /// verdict.
    fn protect_leaf(
        &mut self,
        entry: &AtomicU64,
        index: usize,
        at: u64,
        size: u64,
        state: &mut Rewrite,
    ) {
        let mask = state.mask;
        let raw = entry.load(Ordering::Acquire);
        if raw & !mask != state.known && !self.classify(raw, state) {
            return;
        }
        let new = (raw & mask) | state.bits;
        match state.verdict {
            // Already the new value: no store, nothing to flush.
            Verdict::Keep => {}
            Verdict::Break => {
                let slot = Slot {
                    index,
                    start: at,
                    size,
                    piece_start: at,
                    piece_end: at + size,
                };
                // Broken: already invalidated, nothing to flush.
                let _ = self.replace(entry, raw, new, 0, &slot);
            }
            Verdict::Store => {
                // A plain store, as in `protect_last_level`.
                self.store(entry, raw, new, 0, at, size);
                self.changed(state, at, at + size);
            }
        }
    }

    /// Notes `[start, end)` (index space) as changed in place: it extends
    /// the pending flush run or, after a gap, starts a new one.
    #[inline]
    fn changed(&mut self, state: &mut Rewrite, start: u64, end: u64) {
        if state.run_end != start {
            if state.run_start != state.run_end {
                self.flush_index(state.run_start, state.run_end);
            }
            state.run_start = start;
        }
        state.run_end = end;
    }

    /// A protect in a last-level table: each leaf gets the template with its
    /// own output address (and contiguous hint), with break-before-make where
    /// the format needs it; the changed entries are flushed as runs rather
    /// than one slot at a time. The same decisions as the general loop.
    /// Returns `false` if the range is not inside `entries`.
    pub(super) fn protect_last_level(
        &mut self,
        entries: &[AtomicU64],
        base: u64,
        start: u64,
        end: u64,
        template: u64,
    ) -> bool {
        let shift = self.format.level_shift(0);
        let size = 1u64 << shift;
        let (Ok(first), Ok(last)) = (
            usize::try_from((start - base) >> shift),
            usize::try_from((end - 1 - base) >> shift),
        ) else {
            return false;
        };
        let Some(run) = entries.get(first..=last) else {
            return false;
        };
        let format = self.format;
        // The changed slots not yet added to the flush, `[run_start,
        // run_end)` in index space (empty when equal).
        let (mut run_start, mut run_end) = (0u64, 0u64);
        let mut slot_start = base + ((first as u64) << shift);
        for (i, entry) in run.iter().enumerate() {
            let at = slot_start;
            slot_start += size;
            let raw = entry.load(Ordering::Acquire);
            let EntryKind::Leaf(pa) = format.kind(raw, 0) else {
                continue;
            };
            let mut new =
                format.with_output_address(template, pa, 0) | (raw & format.hardware_bits());
            // A run still hinted here is one that keeps the hint.
            if format.is_contiguous(raw) {
                new = format.with_contiguous(new, true);
            }
            if raw == new {
                continue;
            }
            if format.needs_break(raw, new, 0) {
                let slot = Slot {
                    index: first + i,
                    start: at,
                    size,
                    piece_start: at,
                    piece_end: at + size,
                };
                // Broken: already invalidated, nothing to flush.
                let _ = self.replace(entry, raw, new, 0, &slot);
                continue;
            }
            // A plain store, not an exchange: a locked exchange per page is
            // most of the cost of a large protect. The hardware bits kept
            // are those the load above saw; one set between that load and
            // this store is lost (see `PageTable::protect`).
            self.store(entry, raw, new, 0, at, size);
            if run_end != at {
                if run_start != run_end {
                    self.flush_index(run_start, run_end);
                }
                run_start = at;
            }
            run_end = at + size;
        }
        if run_start != run_end {
            self.flush_index(run_start, run_end);
        }
        true
    }

    /// Before a protect changes the entries of a contiguous run (`group`,
    /// all of its entries in `run_entries`): a run with the hint that the
    /// range cuts, or that holds something other than leaves, is unfolded;
    /// one that changes whole and needs break-before-make is broken and
    /// rewritten whole with its hint; a permission change stays in place.
    pub(super) fn prepare_protect_run(
        &mut self,
        run_entries: &[AtomicU64],
        level: u8,
        group: &Slot,
        attrs: &Attributes,
        template: u64,
        alloc: &mut impl TableAllocator,
    ) {
        let full = group.is_full();
        let step = self
            .protect_run_step(run_entries, level, full, template)
            .unwrap_or_else(|| self.protect_run_step_by_entry(run_entries, level, full, template));
        match step {
            RunStep::Keep => {}
            RunStep::Unfold => self.break_run(run_entries, level, group, Refill::Unhinted, alloc),
            // The whole run at once: one invalidation, and the run keeps its
            // hint with the new attributes.
            RunStep::Rewrite => {
                self.break_run(run_entries, level, group, Refill::Protect(attrs), alloc);
            }
        }
    }

    /// [`protect_run_step`](Self::protect_run_step) for any run, entry by
    /// entry.
    fn protect_run_step_by_entry(
        &self,
        run_entries: &[AtomicU64],
        level: u8,
        full: bool,
        template: u64,
    ) -> RunStep {
        let hinted = run_entries.iter().any(|e| {
            let raw = e.load(Ordering::Acquire);
            self.format.is_contiguous(raw)
                && matches!(self.format.kind(raw, level), EntryKind::Leaf(_))
        });
        if !hinted {
            return RunStep::Keep;
        }
        if !full {
            return RunStep::Unfold;
        }
        let mut needs_break = false;
        for e in run_entries {
            let raw = e.load(Ordering::Acquire);
            let EntryKind::Leaf(pa) = self.format.kind(raw, level) else {
                return RunStep::Unfold;
            };
            let new = self.format.with_contiguous(
                self.format.with_output_address(template, pa, level),
                self.format.is_contiguous(raw),
            );
            needs_break |= self.format.needs_break(raw, new, level);
        }
        if needs_break {
            RunStep::Rewrite
        } else {
            RunStep::Keep
        }
    }

    /// What [`prepare_runs`](Self::prepare_runs) does to a run a protect
    /// touches, decided from its first entry when every entry shares its
    /// bits outside the format's [`leaf_address_mask`](Format::leaf_address_mask)
    /// (the mask's rule makes their kinds, hints and break verdicts the
    /// same); `None` otherwise (no mask, or the entries differ), for the
    /// entry-by-entry decision.
    fn protect_run_step(
        &self,
        run_entries: &[AtomicU64],
        level: u8,
        full: bool,
        template: u64,
    ) -> Option<RunStep> {
        let mask = self.format.leaf_address_mask(level)?;
        let first = run_entries.first()?.load(Ordering::Acquire);
        let differ = run_entries
            .iter()
            .fold(0, |acc, e| acc | (e.load(Ordering::Acquire) ^ first));
        if differ & !mask != 0 {
            return None;
        }
        // Only a run of hinted leaves needs anything.
        let EntryKind::Leaf(pa) = self.format.kind(first, level) else {
            return Some(RunStep::Keep);
        };
        if !self.format.is_contiguous(first) {
            return Some(RunStep::Keep);
        }
        if !full {
            return Some(RunStep::Unfold);
        }
        let new = self
            .format
            .with_contiguous(self.format.with_output_address(template, pa, level), true);
        // A permission change stays in place, hint kept; anything else
        // rewrites the run whole.
        Some(if self.format.needs_break(first, new, level) {
            RunStep::Rewrite
        } else {
            RunStep::Keep
        })
    }
}

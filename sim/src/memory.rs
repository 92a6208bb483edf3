//! The contents of the simulated machine frames, kept only where they are
//! needed.
//!
//! A host of a few GiB cannot keep a few GiB of bytes for a simulation, and
//! it does not need to: what the checks care about is that a guest's data
//! stays its own and that page tables hold exactly the entries the guests
//! wrote. So each frame is one of:
//!
//! - a **data page**, summarised by a 64-bit fingerprint (0 for a scrubbed
//!   frame): a guest that writes data stores a fingerprint, and the
//!   invariant checker compares it with what the guest remembers;
//! - a **page of words**, 512 eight-byte entries, created the first time
//!   anyone reads the frame as a page table or writes an entry into it. Its
//!   words start out as the data page's fingerprint repeated (that is what
//!   the page held), so a data page read as a table holds exactly what its
//!   owner put there.
//!
//! [`FrameMemory`] is the [`PhysMem`] that pagetable's validation and
//! `mmu_update` read tables through. Pages are created behind `&self` (a
//! validation reads tables through a shared reference) and dropped only
//! behind `&mut self` (scrubbing, a data write), so a slice handed out can
//! never dangle.

use core::cell::OnceCell;
use core::sync::atomic::{AtomicU64, Ordering};

use hvmem_pagetable::PhysMem;
use hvmem_pagetable::pv::ENTRIES;
use hvmem_types::{Mfn, PAGE_SHIFT, PhysAddr};

/// Eight-byte words in a 4 KiB page.
const WORDS: usize = ENTRIES as usize;

/// One page of words.
type Words = Box<[AtomicU64; WORDS]>;

/// The contents of every frame of a host: a fingerprint each, and a page of
/// words for the frames used as page tables.
#[derive(Debug)]
pub struct FrameMemory {
    first: u64,
    fingerprints: Vec<u64>,
    pages: Vec<OnceCell<Words>>,
}

impl FrameMemory {
    /// Zeroed memory for `frames` frames from `first` on.
    #[must_use]
    pub fn new(first: Mfn, frames: usize) -> Self {
        Self {
            first: first.get(),
            fingerprints: vec![0; frames],
            pages: (0..frames).map(|_| OnceCell::new()).collect(),
        }
    }

    fn index(&self, mfn: Mfn) -> Option<usize> {
        let i = usize::try_from(mfn.get().checked_sub(self.first)?).ok()?;
        (i < self.fingerprints.len()).then_some(i)
    }

    /// The data fingerprint of `mfn` (0 when scrubbed, or when the frame
    /// holds words instead), or `None` outside the host.
    #[must_use]
    pub fn fingerprint(&self, mfn: Mfn) -> Option<u64> {
        self.index(mfn)
            .and_then(|i| self.fingerprints.get(i).copied())
    }

    /// Whether `mfn` holds a page of words.
    #[must_use]
    pub fn has_words(&self, mfn: Mfn) -> bool {
        self.index(mfn)
            .and_then(|i| self.pages.get(i))
            .is_some_and(|page| page.get().is_some())
    }

    /// A guest wrote a whole data page: the frame now holds `fingerprint`.
    /// Returns `false` outside the host.
    pub fn store_data(&mut self, mfn: Mfn, fingerprint: u64) -> bool {
        let Some(i) = self.index(mfn) else {
            return false;
        };
        if let Some(page) = self.pages.get_mut(i) {
            page.take();
        }
        if let Some(f) = self.fingerprints.get_mut(i) {
            *f = fingerprint;
        }
        true
    }

    /// Writes entry `index` of `mfn` (a guest's plain write into a frame
    /// that is not a page table in use). The frame becomes a page of words.
    /// Returns `false` outside the host or past the page.
    pub fn write_word(&mut self, mfn: Mfn, index: u32, value: u64) -> bool {
        let Some(words) = self.words(mfn) else {
            return false;
        };
        let Some(word) = words.get(index as usize) else {
            return false;
        };
        word.store(value, Ordering::Relaxed);
        if let Some(f) = self.index(mfn).and_then(|i| self.fingerprints.get_mut(i)) {
            *f = 0;
        }
        true
    }

    /// Erases `mfn` (the heap's scrub callback): no fingerprint, no words.
    pub fn scrub(&mut self, mfn: Mfn) {
        let _ = self.store_data(mfn, 0);
    }

    /// The 512 words of `mfn`, created from its fingerprint on first use.
    #[must_use]
    pub fn words(&self, mfn: Mfn) -> Option<&[AtomicU64; WORDS]> {
        let i = self.index(mfn)?;
        let fill = self.fingerprints.get(i).copied().unwrap_or(0);
        let page = self.pages.get(i)?;
        Some(page.get_or_init(|| Box::new(core::array::from_fn(|_| AtomicU64::new(fill)))))
    }

    /// Frames that hold a page of words.
    #[must_use]
    pub fn pages_with_words(&self) -> usize {
        self.pages.iter().filter(|p| p.get().is_some()).count()
    }
}

impl PhysMem for FrameMemory {
    fn table(&self, table: PhysAddr, entries: usize) -> Option<&[AtomicU64]> {
        let offset = table.page_offset();
        if offset % 8 != 0 {
            return None;
        }
        let mfn = Mfn::new(table.get() >> PAGE_SHIFT);
        let first = usize::try_from(offset / 8).ok()?;
        self.words(mfn)?.get(first..first.checked_add(entries)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_page_read_as_a_table_holds_its_fingerprint() {
        let mut mem = FrameMemory::new(Mfn::new(0x100), 4);
        assert!(mem.store_data(Mfn::new(0x101), 0xabc0));
        let words = mem.table(PhysAddr::new(0x101_000), 512).unwrap();
        assert!(words.iter().all(|w| w.load(Ordering::Relaxed) == 0xabc0));
        assert!(mem.has_words(Mfn::new(0x101)));
    }

    #[test]
    fn scrubbing_erases_words_and_fingerprint() {
        let mut mem = FrameMemory::new(Mfn::new(0x100), 4);
        assert!(mem.write_word(Mfn::new(0x102), 3, 0x5003));
        assert_eq!(mem.fingerprint(Mfn::new(0x102)), Some(0));
        mem.scrub(Mfn::new(0x102));
        assert!(!mem.has_words(Mfn::new(0x102)));
        let words = mem.table(PhysAddr::new(0x102_000), 512).unwrap();
        assert!(words.iter().all(|w| w.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn frames_outside_the_host_are_unreachable() {
        let mem = FrameMemory::new(Mfn::new(0x100), 4);
        assert!(mem.table(PhysAddr::new(0x104_000), 512).is_none());
        assert!(mem.table(PhysAddr::new(0xff_000), 1).is_none());
        assert!(mem.table(PhysAddr::new(0x100_004), 1).is_none());
        assert!(mem.table(PhysAddr::new(0x100_ff8), 2).is_none());
        assert_eq!(mem.fingerprint(Mfn::new(0x99)), None);
    }
}

//! A domain's grant table as the hypervisor keeps it: the shared frames, the
//! v2 status frames, the active entries, the version, growth up to a limit,
//! and the table-level operations (`setup_table`, `query_size`,
//! `set_version`, `get_status_frames`).
//!
//! Operations on entries (map, unmap, copy, transfer, cache flush) take
//! `&GrantTable` through `Domains` and lock one active entry at a time;
//! operations that reshape the table or move entries (growth, setup,
//! version switch, swap, teardown) take `&mut GrantTable`. A table handed
//! out by `Domains` must see no `&mut` operation until the entry operation
//! returns; the rule and the ways to keep it are on `Domains` and in the
//! crate docs. A lock per table is not enough, because `Domains` returns a
//! reference, not a guard, and a copy may reach a third table.

use core::fmt;

use hvmem_types::DomId;

use crate::abi::{
    GnttabGetStatusFrames, GnttabGetVersion, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable,
    GnttabSwapGrantRef, GrantRef, NR_RESERVED_ENTRIES,
};
use crate::active::{Active, ActiveEntry, PIN_WRITE_MASK};
use crate::error::{CallError, GntSt, GrantError, VersionError};
use crate::flags::{GTF_TYPE_MASK, GrantType, GtfFlags};
use crate::mem::{
    GrantMemory, GrantVersion, entry_word, hdr_domid, hdr_flags, hdr_word, join_u64, split_u64,
    status_frames_for, status_word,
};
use crate::sync::{AtomicU16, AtomicU32, Ordering, fence};

/// Attempts at the v1 status CAS before giving up on a granter that keeps
/// rewriting its entry (Xen: 5).
const STATUS_RETRIES: u32 = 5;

/// Limits and properties of one domain's table, set at domain creation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GrantTableConfig {
    /// The most grant frames the table may grow to (Xen default 64).
    pub max_frames: u32,
    /// The highest version the domain may select (`gnttab=max-ver:`).
    pub max_version: GrantVersion,
    /// Whether the domain is translated (HVM, PVH, Arm): its frame numbers
    /// go through a p2m, and a transfer does not write the MFN back.
    /// [`Maptrack::new`](crate::Maptrack::new) takes the same flag for the
    /// domain's maptrack; give both the same value (nothing checks that
    /// they agree).
    pub translated: bool,
}

impl GrantTableConfig {
    /// Xen's defaults: 64 frames, v2 allowed, a PV (non-translated) domain.
    pub const DEFAULT: Self = Self {
        max_frames: 64,
        max_version: GrantVersion::V2,
        translated: false,
    };
}

impl Default for GrantTableConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One domain's grant table, hypervisor side.
pub struct GrantTable<'a> {
    owner: DomId,
    mem: &'a dyn GrantMemory,
    active: &'a [ActiveEntry],
    config: GrantTableConfig,
    version: GrantVersion,
    nr_frames: u32,
    nr_status_frames: u32,
    /// [`nr_entries`](Self::nr_entries), kept up to date by everything
    /// that changes the frames or the version (all `&mut self`), so that
    /// finding an entry does not recompute it.
    nr_entries: u32,
}

impl fmt::Debug for GrantTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantTable")
            .field("owner", &self.owner)
            .field("version", &self.version)
            .field("nr_frames", &self.nr_frames)
            .field("nr_status_frames", &self.nr_status_frames)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<'a> GrantTable<'a> {
    /// The v1 table of `owner` over `mem`, with its first grant frame
    /// (Xen's initial size) cleared. `active` holds one [`ActiveEntry`] per
    /// entry the table may ever have: `max_frames * 512` for full capacity;
    /// entries beyond it count as out of range.
    ///
    /// # Errors
    ///
    /// [`GrantError::TooManyFrames`] if the limit is zero or `mem` has no
    /// first frame.
    pub fn new(
        owner: DomId,
        mem: &'a dyn GrantMemory,
        active: &'a [ActiveEntry],
        config: GrantTableConfig,
    ) -> Result<Self, GrantError> {
        let mut table = Self {
            owner,
            mem,
            active,
            config,
            version: GrantVersion::V1,
            nr_frames: 0,
            nr_status_frames: 0,
            nr_entries: 0,
        };
        table.grow(1)?;
        Ok(table)
    }

    /// The owning (granting) domain.
    #[must_use]
    pub fn owner(&self) -> DomId {
        self.owner
    }

    /// The table's configuration.
    #[must_use]
    pub fn config(&self) -> GrantTableConfig {
        self.config
    }

    /// The entry layout in force.
    #[must_use]
    pub fn version(&self) -> GrantVersion {
        self.version
    }

    /// Grant frames in use.
    #[must_use]
    pub fn nr_frames(&self) -> u32 {
        self.nr_frames
    }

    /// v2 status frames in use (0 for v1).
    #[must_use]
    pub fn nr_status_frames(&self) -> u32 {
        self.nr_status_frames
    }

    /// The number of entries (limited by the active-entry storage).
    #[must_use]
    pub fn nr_entries(&self) -> u32 {
        self.nr_entries
    }

    /// Recomputes [`nr_entries`](Self::nr_entries) after the frames or the
    /// version changed.
    fn count_entries(&mut self) {
        let entries = self
            .nr_frames
            .saturating_mul(self.version.entries_per_frame());
        self.nr_entries = entries.min(u32::try_from(self.active.len()).unwrap_or(u32::MAX));
    }

    /// The pin word of entry `gref`, or `None` beyond the table. It holds
    /// four 8-bit counters: host-write pins in bits 0-7, host-read 8-15,
    /// device-write 16-23, device-read 24-31 (Xen's `GNTPIN_*` layout in
    /// `xen/common/grant_table.c`).
    #[must_use]
    pub fn pin_count(&self, gref: GrantRef) -> Option<u32> {
        self.active_entry(gref).map(|entry| entry.lock().pin())
    }

    /// Entries pinned by any mapping or copy.
    #[must_use]
    pub fn pinned_entries(&self) -> usize {
        self.active
            .iter()
            .take(self.nr_entries() as usize)
            .filter(|entry| entry.lock().pin() != 0)
            .count()
    }

    /// Whether an entry of this table is pinned by `dom` and resolved to
    /// `mfn` (Xen `grant_map_exists`).
    pub(crate) fn pinned_by(&self, dom: DomId, mfn: hvmem_types::Mfn) -> bool {
        self.active
            .iter()
            .take(self.nr_entries() as usize)
            .any(|entry| {
                let active = entry.lock();
                active.pin() != 0 && active.domid() == dom && active.mfn() == mfn
            })
    }

    /// Grows the table to `nr_frames` grant frames (and the status frames
    /// they need in v2), clearing the new frames. Asking for no more frames
    /// than the table has is a no-op (tables never shrink).
    ///
    /// # Errors
    ///
    /// [`GrantError::TooManyFrames`]: beyond the limit, or the memory has no
    /// such frame. Nothing changes then.
    pub fn grow(&mut self, nr_frames: u32) -> Result<(), GrantError> {
        if nr_frames <= self.nr_frames {
            return Ok(());
        }
        if nr_frames > self.config.max_frames {
            return Err(GrantError::TooManyFrames);
        }
        let status_frames = match self.version {
            GrantVersion::V1 => 0,
            GrantVersion::V2 => status_frames_for(nr_frames),
        };
        let shared_ok = (self.nr_frames..nr_frames).all(|i| self.mem.shared_frame(i).is_some());
        let status_ok =
            (self.nr_status_frames..status_frames).all(|i| self.mem.status_frame(i).is_some());
        if !shared_ok || !status_ok {
            return Err(GrantError::TooManyFrames);
        }
        for i in self.nr_frames..nr_frames {
            clear_words(self.mem.shared_frame(i));
        }
        for i in self.nr_status_frames..status_frames {
            clear_status(self.mem.status_frame(i));
        }
        self.nr_frames = nr_frames;
        self.count_entries();
        self.nr_status_frames = status_frames.max(self.nr_status_frames);
        Ok(())
    }

    /// `GNTTABOP_set_version`: switches between v1 and v2, writing the
    /// version in force back into `op` whatever the outcome.
    ///
    /// The switch is refused while any entry other than the 8 reserved ones
    /// is pinned; the reserved entries are converted, every other entry is
    /// wiped. Going to v2 brings in the status frames; going back releases
    /// them, refused while the guest still maps one (XSA-255).
    ///
    /// # Errors
    ///
    /// [`VersionError::Invalid`], [`VersionError::NotSupported`],
    /// [`VersionError::InUse`], [`VersionError::StatusFrameMapped`],
    /// [`VersionError::Unrepresentable`], [`VersionError::NoMemory`].
    pub fn set_version(&mut self, op: &mut GnttabSetVersion) -> Result<(), VersionError> {
        let result = self.switch_version(op.version);
        op.version = self.version.number();
        result
    }

    fn switch_version(&mut self, raw: u32) -> Result<(), VersionError> {
        let target = match raw {
            1 => GrantVersion::V1,
            2 => GrantVersion::V2,
            _ => return Err(VersionError::Invalid),
        };
        if target == GrantVersion::V2 && self.config.max_version == GrantVersion::V1 {
            return Err(VersionError::NotSupported);
        }
        if target == self.version {
            return Ok(());
        }
        let busy = self
            .active
            .iter()
            .take(self.nr_entries() as usize)
            .skip(NR_RESERVED_ENTRIES as usize)
            .any(|entry| entry.pin_unlocked() != 0);
        if busy {
            return Err(VersionError::InUse);
        }
        let reserved = self.nr_entries().min(NR_RESERVED_ENTRIES);
        match self.version {
            GrantVersion::V1 => {
                let needed = status_frames_for(self.nr_frames);
                if !(0..needed).all(|i| self.mem.status_frame(i).is_some()) {
                    return Err(VersionError::NoMemory);
                }
            }
            GrantVersion::V2 => {
                for gref in 0..reserved {
                    let (flags, _, frame) = self.reserved_entry(GrantRef(gref));
                    match GrantType::of(flags) {
                        GrantType::PermitAccess if frame >> 32 != 0 => {
                            return Err(VersionError::Unrepresentable);
                        }
                        GrantType::Transitive => return Err(VersionError::Unrepresentable),
                        _ => {}
                    }
                }
                if (0..self.nr_status_frames).any(|i| self.mem.status_frame_mapped(i)) {
                    return Err(VersionError::StatusFrameMapped);
                }
            }
        }
        // From here on nothing can fail.
        // A reserved entry survives the switch when it grants access, and
        // also when its grant was ended but a mapper still has it pinned: on
        // v2 ending access clears the header's type while the status word
        // keeps GTF_reading/GTF_writing, and those bits must reach the new
        // header, or the granter's next end_access would succeed on a frame
        // another domain still maps.
        let busy = (GtfFlags::READING | GtfFlags::WRITING).bits();
        let mut saved = [(0u16, 0u16, 0u64); NR_RESERVED_ENTRIES as usize];
        for (gref, slot) in (0..reserved).zip(saved.iter_mut()) {
            let entry = self.reserved_entry(GrantRef(gref));
            if self.version == GrantVersion::V1
                || GrantType::of(entry.0) == GrantType::PermitAccess
                || entry.0 & busy != 0
            {
                *slot = entry;
            }
        }
        if self.version == GrantVersion::V2 {
            for i in 0..self.nr_status_frames {
                clear_status(self.mem.status_frame(i));
                self.mem.release_status_frame(i);
            }
            self.nr_status_frames = 0;
        }
        for i in 0..self.nr_frames {
            clear_words(self.mem.shared_frame(i));
        }
        if target == GrantVersion::V2 {
            self.nr_status_frames = status_frames_for(self.nr_frames);
            for i in 0..self.nr_status_frames {
                clear_status(self.mem.status_frame(i));
            }
        }
        self.version = target;
        self.count_entries();
        let pinned = (GtfFlags::READING | GtfFlags::WRITING).bits();
        for (gref, &(flags, domid, frame)) in (0..reserved).zip(saved.iter()) {
            let gref = GrantRef(gref);
            match target {
                GrantVersion::V1 => {
                    self.store_word(gref, 1, frame as u32);
                    self.store_word(gref, 0, hdr_word(flags, domid));
                }
                GrantVersion::V2 => {
                    let (lo, hi) = split_u64(frame);
                    self.store_word(gref, 2, lo);
                    self.store_word(gref, 3, hi);
                    if let Some(status) = self.status(gref) {
                        status.store(flags & pinned, Ordering::Relaxed);
                    }
                    self.store_word(gref, 0, hdr_word(flags & !pinned, domid));
                }
            }
        }
        Ok(())
    }

    /// `GNTTABOP_swap_grant_ref` for a batch: each element swaps two
    /// entries of this (the caller's own) table and gets its own status.
    pub fn swap_grant_refs(&mut self, ops: &mut [GnttabSwapGrantRef]) {
        for op in ops {
            self.swap_grant_ref(op);
        }
    }

    /// `GNTTABOP_swap_grant_ref` for one element: exchanges the shared
    /// entries `ref_a` and `ref_b` (v2: with their status words), as Xen
    /// does under its table write lock, which `&mut self` stands for.
    /// Swapping an entry with itself does nothing. Refused, with nothing
    /// changed, when either ref lies beyond the table (`GNTST_bad_gntref`,
    /// `ref_a` checked first) or either entry is pinned by a mapping or a
    /// copy (`GNTST_eagain`).
    pub fn swap_grant_ref(&mut self, op: &mut GnttabSwapGrantRef) {
        op.status = status_of(self.swap(GrantRef(op.ref_a), GrantRef(op.ref_b)));
    }

    fn swap(&mut self, a: GrantRef, b: GrantRef) -> Result<(), GrantError> {
        let slot_a = self.slot(a).ok_or(GrantError::RefOutOfRange)?;
        let slot_b = self.slot(b).ok_or(GrantError::RefOutOfRange)?;
        if a == b {
            return Ok(());
        }
        for gref in [a, b] {
            let pinned = self
                .active_entry(gref)
                .is_none_or(|entry| entry.pin_unlocked() != 0);
            if pinned {
                return Err(GrantError::EntryBusy);
            }
        }
        let words = self.version.words_per_entry();
        if (0..words).any(|w| slot_a.word(w).is_none() || slot_b.word(w).is_none()) {
            return Err(GrantError::RefOutOfRange);
        }
        if self.version == GrantVersion::V2 && (slot_a.status.is_none() || slot_b.status.is_none())
        {
            return Err(GrantError::RefOutOfRange);
        }
        // Nothing can fail from here on. The granter may write either entry
        // meanwhile (they are its own); as in Xen, each word moves whole.
        for w in 0..words {
            if let (Some(x), Some(y)) = (slot_a.word(w), slot_b.word(w)) {
                let old = x.load(Ordering::Acquire);
                x.store(y.load(Ordering::Acquire), Ordering::Release);
                y.store(old, Ordering::Release);
            }
        }
        if let (Some(x), Some(y)) = (slot_a.status, slot_b.status) {
            let old = x.load(Ordering::Acquire);
            x.store(y.load(Ordering::Acquire), Ordering::Release);
            y.store(old, Ordering::Release);
        }
        Ok(())
    }

    /// A reserved entry as (flags with status bits, domid, frame).
    fn reserved_entry(&self, gref: GrantRef) -> (u16, u16, u64) {
        let header = self.load_word(gref, 0);
        let (flags, domid) = (hdr_flags(header), hdr_domid(header));
        match self.version {
            GrantVersion::V1 => (flags, domid, u64::from(self.load_word(gref, 1))),
            GrantVersion::V2 => {
                let status = self
                    .status(gref)
                    .map_or(0, |status| status.load(Ordering::Relaxed));
                let frame = join_u64(self.load_word(gref, 2), self.load_word(gref, 3));
                (flags | status, domid, frame)
            }
        }
    }

    /// The dying granter gives up its table: the status frames are released
    /// and the shared frames wiped, once no other domain has an entry
    /// pinned. Until then (a mapper has not unmapped yet, or is dying
    /// itself) it returns how many entries are still pinned and changes
    /// nothing; the embedder keeps the table for those mappers' unmaps and
    /// calls again.
    ///
    /// # Errors
    ///
    /// The number of entries still pinned.
    pub fn teardown(&mut self) -> Result<(), usize> {
        match self.pinned_entries() {
            0 => {}
            pinned => return Err(pinned),
        }
        for i in 0..self.nr_status_frames {
            clear_status(self.mem.status_frame(i));
            self.mem.release_status_frame(i);
        }
        self.nr_status_frames = 0;
        for i in 0..self.nr_frames {
            clear_words(self.mem.shared_frame(i));
        }
        Ok(())
    }

    // ---- entry access, for the operations ----

    pub(crate) fn active_entry(&self, gref: GrantRef) -> Option<&'a ActiveEntry> {
        if gref.0 >= self.nr_entries() {
            return None;
        }
        self.active.get(gref.0 as usize)
    }

    /// Locks the active entry of `gref`.
    ///
    /// # Errors
    ///
    /// [`GrantError::RefOutOfRange`].
    pub(crate) fn lock(&self, gref: GrantRef) -> Result<Active<'a>, GrantError> {
        // Every entry below nr_entries() must be reachable in memory too.
        if self.word(gref, 0).is_none() {
            return Err(GrantError::RefOutOfRange);
        }
        self.active_entry(gref)
            .map(ActiveEntry::lock)
            .ok_or(GrantError::RefOutOfRange)
    }

    /// The shared words of `gref` (and its v2 status word), found once so
    /// that one operation does not look them up again for every access.
    #[inline]
    pub(crate) fn slot(&self, gref: GrantRef) -> Option<EntrySlot<'a>> {
        if gref.0 >= self.nr_entries() {
            return None;
        }
        let per_frame = self.version.entries_per_frame();
        let per_entry = self.version.words_per_entry() as usize;
        let frame = self.mem.shared_frame(gref.0 / per_frame)?;
        let start = ((gref.0 % per_frame) as usize) * per_entry;
        let words = frame.get(start..)?;
        let words = words.get(..per_entry).unwrap_or(words);
        if words.is_empty() {
            return None;
        }
        let status = match self.version {
            GrantVersion::V1 => None,
            GrantVersion::V2 => status_word(self.mem, gref),
        };
        Some(EntrySlot {
            words,
            status,
            version: self.version,
        })
    }

    /// Locks the active entry of `gref` and finds its shared words.
    ///
    /// # Errors
    ///
    /// [`GrantError::RefOutOfRange`].
    pub(crate) fn lock_slot(
        &self,
        gref: GrantRef,
    ) -> Result<(Active<'a>, EntrySlot<'a>), GrantError> {
        let (entry, slot) = self.entry_slot(gref)?;
        Ok((entry.lock(), slot))
    }

    /// The active entry of `gref` (not locked) and its shared words, for an
    /// operation that locks the entry more than once: both stay valid, and
    /// need no second lookup, for as long as `&self` is held (the table
    /// cannot shrink or change version meanwhile).
    ///
    /// # Errors
    ///
    /// [`GrantError::RefOutOfRange`].
    #[inline]
    pub(crate) fn entry_slot(
        &self,
        gref: GrantRef,
    ) -> Result<(&'a ActiveEntry, EntrySlot<'a>), GrantError> {
        let slot = self.slot(gref).ok_or(GrantError::RefOutOfRange)?;
        let entry = self
            .active
            .get(gref.0 as usize)
            .ok_or(GrantError::RefOutOfRange)?;
        Ok((entry, slot))
    }

    pub(crate) fn word(&self, gref: GrantRef, word: u32) -> Option<&'a AtomicU32> {
        if gref.0 >= self.nr_entries() {
            return None;
        }
        entry_word(self.mem, self.version, gref, word)
    }

    pub(crate) fn status(&self, gref: GrantRef) -> Option<&'a AtomicU16> {
        if self.version != GrantVersion::V2 || gref.0 >= self.nr_entries() {
            return None;
        }
        status_word(self.mem, gref)
    }

    fn load_word(&self, gref: GrantRef, word: u32) -> u32 {
        self.word(gref, word)
            .map_or(0, |word| word.load(Ordering::Acquire))
    }

    fn store_word(&self, gref: GrantRef, word: u32, value: u32) {
        if let Some(word) = self.word(gref, word) {
            word.store(value, Ordering::Release);
        }
    }

    /// The header word of `gref`, as it is now.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn header(&self, gref: GrantRef) -> u32 {
        self.load_word(gref, 0)
    }

    /// The frame field of a permit-access or accept-transfer entry.
    pub(crate) fn entry_frame(&self, gref: GrantRef) -> u64 {
        match self.version {
            GrantVersion::V1 => u64::from(self.load_word(gref, 1)),
            GrantVersion::V2 => join_u64(self.load_word(gref, 2), self.load_word(gref, 3)),
        }
    }

    /// Writes the frame field (a completed transfer to a PV receiver).
    pub(crate) fn set_entry_frame(&self, gref: GrantRef, frame: u64) {
        match self.version {
            GrantVersion::V1 => self.store_word(gref, 1, frame as u32),
            GrantVersion::V2 => {
                let (lo, hi) = split_u64(frame);
                self.store_word(gref, 2, lo);
                self.store_word(gref, 3, hi);
            }
        }
    }

    /// Sets `GTF_reading` (and `GTF_writing`) for a new pin on `gref` (Xen
    /// `_set_status`): on the first pin, the entry must grant this access
    /// to `grantee`; on the first writable pin, it must not be read-only.
    /// `map` refuses sub-page and transitive entries. Called with the active
    /// entry locked.
    #[inline(always)]
    pub(crate) fn set_status(
        &self,
        slot: &EntrySlot<'_>,
        already_pinned: bool,
        readonly: bool,
        map: bool,
        grantee: DomId,
    ) -> Result<(), GrantError> {
        let header = slot.word(0).ok_or(GrantError::RefOutOfRange)?;
        if self.version == GrantVersion::V2 {
            return self.set_status_v2(slot, header, already_pinned, readonly, map, grantee);
        }
        let mut seen = header.load(Ordering::Acquire);
        for _ in 0..STATUS_RETRIES {
            if !already_pinned && !self.grants(seen, map, grantee) {
                return Err(GrantError::NotGranted);
            }
            let mut set = GtfFlags::READING;
            if !readonly {
                if read_only(seen) {
                    return Err(GrantError::ReadOnlyGrant);
                }
                set |= GtfFlags::WRITING;
            }
            let new = hdr_word(hdr_flags(seen) | set.bits(), hdr_domid(seen));
            // Acquire: the frame the granter wrote before its flags is
            // visible to the reads that follow.
            match header.compare_exchange(seen, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => seen = now,
            }
        }
        Err(GrantError::UnstableEntry)
    }

    /// [`set_status`](Self::set_status) of a v2 entry, whose status bits
    /// live in the status word.
    #[inline(never)]
    fn set_status_v2(
        &self,
        slot: &EntrySlot<'_>,
        header: &AtomicU32,
        already_pinned: bool,
        readonly: bool,
        map: bool,
        grantee: DomId,
    ) -> Result<(), GrantError> {
        let status = slot.status.ok_or(GrantError::RefOutOfRange)?;
        let seen = header.load(Ordering::Acquire);
        if !already_pinned && !self.grants(seen, map, grantee) {
            return Err(GrantError::NotGranted);
        }
        if !readonly && read_only(seen) {
            return Err(GrantError::ReadOnlyGrant);
        }
        let set = if readonly {
            GtfFlags::READING
        } else {
            GtfFlags::READING | GtfFlags::WRITING
        };
        status.fetch_or(set.bits(), Ordering::SeqCst);
        // Dekker with the granter's end_access: our status write before our
        // re-read of the header (module guest).
        fence(Ordering::SeqCst);
        let now = header.load(Ordering::SeqCst);
        if !already_pinned {
            if !self.grants(now, map, grantee) || (!readonly && read_only(now)) {
                status.fetch_and(
                    !(GtfFlags::READING | GtfFlags::WRITING).bits(),
                    Ordering::Release,
                );
                return Err(GrantError::UnstableEntry);
            }
        } else if !readonly && read_only(now) {
            status.fetch_and(!GtfFlags::WRITING.bits(), Ordering::Release);
            return Err(GrantError::UnstableEntry);
        }
        Ok(())
    }

    /// Whether the header word `word` grants access to `grantee` (a map
    /// also refuses sub-page entries; a copy also accepts a v2 transitive
    /// one).
    #[inline]
    fn grants(&self, word: u32, map: bool, grantee: DomId) -> bool {
        let mask = if map {
            GTF_TYPE_MASK | GtfFlags::SUB_PAGE.bits()
        } else {
            GTF_TYPE_MASK
        };
        let kind = hdr_flags(word) & mask;
        let kind_ok = kind == GrantType::PermitAccess as u16
            || (!map && self.version == GrantVersion::V2 && kind == GrantType::Transitive as u16);
        kind_ok && hdr_domid(word) == grantee.get()
    }

    /// [`EntrySlot::reduce_status`] of `slot`.
    pub(crate) fn reduce_status(&self, slot: &EntrySlot<'_>, pin: u32) {
        slot.reduce_status(pin);
    }
}

/// Whether the header word `word` grants read-only access.
#[inline]
fn read_only(word: u32) -> bool {
    hdr_flags(word) & GtfFlags::READONLY.bits() != 0
}

/// One entry's shared words (the header first, then as many of the entry's
/// words as the memory holds) and its v2 status word, as
/// [`GrantTable::slot`] found them for one operation. Valid while the
/// table's version cannot change (`&GrantTable` is held).
#[derive(Clone, Copy)]
pub(crate) struct EntrySlot<'a> {
    words: &'a [AtomicU32],
    status: Option<&'a AtomicU16>,
    version: GrantVersion,
}

impl<'a> EntrySlot<'a> {
    /// Word `word` of the entry (0 = header).
    #[inline]
    pub(crate) fn word(&self, word: u32) -> Option<&'a AtomicU32> {
        self.words.get(word as usize)
    }

    #[inline]
    fn load(&self, word: u32) -> u32 {
        self.word(word)
            .map_or(0, |word| word.load(Ordering::Acquire))
    }

    /// The header word, as it is now.
    #[inline]
    pub(crate) fn header(&self) -> u32 {
        self.load(0)
    }

    /// The second word of a v2 entry: the sub-page window (page_off,
    /// length) or the transitive domid.
    #[inline]
    pub(crate) fn word1(&self) -> u32 {
        self.load(1)
    }

    /// The frame field of a permit-access entry.
    #[inline]
    pub(crate) fn frame(&self) -> u64 {
        match self.version {
            GrantVersion::V1 => u64::from(self.load(1)),
            GrantVersion::V2 => join_u64(self.load(2), self.load(3)),
        }
    }

    /// [`StatusWord::reduce`] of the entry's status bits.
    #[inline]
    pub(crate) fn reduce_status(&self, pin: u32) {
        if let Some(status) = self.status_word() {
            status.reduce(pin);
        }
    }

    /// The word holding the entry's `GTF_reading`/`GTF_writing`: the v1
    /// header or the v2 status word (`None` if the memory has no such
    /// word).
    #[inline]
    pub(crate) fn status_word(&self) -> Option<StatusWord<'a>> {
        match self.version {
            GrantVersion::V1 => self.word(0).map(StatusWord::V1),
            GrantVersion::V2 => self.status.map(StatusWord::V2),
        }
    }
}

/// Where an entry's `GTF_reading`/`GTF_writing` live: in the v1 header
/// word, or in the v2 status word.
#[derive(Clone, Copy)]
pub(crate) enum StatusWord<'a> {
    V1(&'a AtomicU32),
    V2(&'a AtomicU16),
}

impl StatusWord<'_> {
    /// Clears the status bits that the pin word `pin` no longer justifies
    /// (Xen `reduce_status_for_pin`): `GTF_writing` once no writable pin
    /// remains, `GTF_reading` once no pin remains. Release: our accesses to
    /// the frame happen before the granter sees the bits clear. Called with
    /// the entry's active entry locked.
    #[inline]
    pub(crate) fn reduce(self, pin: u32) {
        let mut clear = GtfFlags::empty();
        if pin & PIN_WRITE_MASK == 0 {
            clear |= GtfFlags::WRITING;
        }
        if pin == 0 {
            clear |= GtfFlags::READING;
        }
        if clear.is_empty() {
            return;
        }
        match self {
            Self::V1(header) => {
                header.fetch_and(!hdr_word(clear.bits(), 0), Ordering::Release);
            }
            Self::V2(status) => {
                status.fetch_and(!clear.bits(), Ordering::Release);
            }
        }
    }
}

fn clear_words(words: Option<&[AtomicU32]>) {
    for word in words.unwrap_or(&[]) {
        word.store(0, Ordering::Relaxed);
    }
}

fn clear_status(words: Option<&[AtomicU16]>) {
    for word in words.unwrap_or(&[]) {
        word.store(0, Ordering::Relaxed);
    }
}

/// `GNTTABOP_setup_table` on `table` (`None`: no such domain): grows the
/// table to `op.nr_frames` and writes the frames' numbers into
/// `frame_list` (the guest's list, already mapped by the embedder).
pub fn setup_table(
    table: Option<&mut GrantTable<'_>>,
    op: &mut GnttabSetupTable,
    frame_list: &mut [u64],
) {
    let result = (|| {
        let table = table.ok_or(GrantError::UnknownDomain)?;
        table.grow(op.nr_frames)?;
        let mut written = 0;
        for (i, slot) in (0..op.nr_frames).zip(frame_list.iter_mut()) {
            *slot = table.mem.shared_frame_gfn(i);
            written += 1;
        }
        if written < op.nr_frames {
            return Err(GrantError::BadFrameList);
        }
        Ok(())
    })();
    op.status = status_of(result);
}

/// `GNTTABOP_query_size` on `table` (`None`: no such domain).
pub fn query_size(table: Option<&GrantTable<'_>>, op: &mut GnttabQuerySize) {
    match table {
        Some(table) => {
            op.nr_frames = table.nr_frames;
            op.max_nr_frames = table.config.max_frames;
            op.status = GntSt::Okay.raw();
        }
        None => op.status = GntSt::BadDomain.raw(),
    }
}

/// `GNTTABOP_get_status_frames` on `table` (`None`: no such domain):
/// writes the numbers of the first `op.nr_frames` status frames into
/// `frame_list`. As in Xen, the only bound is the number of status frames
/// the table has, which is 0 for a v1 table: asking a v1 table for none
/// succeeds and writes nothing, asking it for one or more is
/// `GNTST_general_error`, and so is asking a v2 table for more than it has
/// (XSA-382: never read past the status-frame array).
pub fn get_status_frames(
    table: Option<&GrantTable<'_>>,
    op: &mut GnttabGetStatusFrames,
    frame_list: &mut [u64],
) {
    let result = (|| {
        let table = table.ok_or(GrantError::UnknownDomain)?;
        // No version check of its own (Xen has none): a v1 table has no
        // status frames, so this bound refuses any request but an empty one.
        if op.nr_frames > table.nr_status_frames {
            return Err(GrantError::TooManyFrames);
        }
        let mut written = 0;
        for (i, slot) in (0..op.nr_frames).zip(frame_list.iter_mut()) {
            *slot = table.mem.status_frame_gfn(i);
            written += 1;
        }
        if written < op.nr_frames {
            return Err(GrantError::BadFrameList);
        }
        Ok(())
    })();
    op.status = status_of(result);
}

/// `GNTTABOP_get_version` on `table` (`None`: no such domain): writes the
/// table's version (1 or 2) into `op.version`. Which domains a caller may
/// ask about is the embedder's policy (Xen's XSM check; the default lets a
/// domain ask about itself and the control domain about any).
///
/// # Errors
///
/// [`CallError::NoSuchDomain`] (`-ESRCH`); `op` is then unchanged.
pub fn get_version(
    table: Option<&GrantTable<'_>>,
    op: &mut GnttabGetVersion,
) -> Result<(), CallError> {
    let table = table.ok_or(CallError::NoSuchDomain)?;
    op.version = table.version.number();
    Ok(())
}

/// The `GNTST_*` value of an operation's outcome.
pub(crate) fn status_of(result: Result<(), GrantError>) -> i16 {
    match result {
        Ok(()) => GntSt::Okay.raw(),
        Err(error) => error.status().raw(),
    }
}

//! The hypervisor's private state of each grant entry: who has it pinned,
//! how often, and which frame it resolved to (Xen `struct active_grant_entry`).
//!
//! # Protocol
//!
//! Each [`ActiveEntry`] has a small spin lock; every field is read and
//! written only while holding it (relaxed accesses inside, acquire on lock,
//! release on unlock). The lock is held for a bounded number of steps (one
//! bounded CAS loop on the shared entry plus frame-reference calls), never
//! across a wait on a guest, so a CPU spins at most for another CPU's
//! bounded critical section. The same lock also serialises unmaps of one
//! maptrack handle (as Xen's active-entry lock does), which is what makes a
//! double unmap drop references once.
//!
//! The pin word is four 8-bit counters, host-write in bits 0-7, host-read
//! 8-15, device-write 16-23, device-read 24-31 (Xen's `GNTPIN_*`); an increment
//! is refused once the counter it touches has its top bit set, so none ever
//! wraps.

use hvmem_types::{DomId, Mfn};

use crate::sync::{AtomicU32, AtomicU64, Ordering, spin_wait};

/// One host-write pin.
pub(crate) const PIN_HOST_WRITE: u32 = 1;
/// One host-read pin.
pub(crate) const PIN_HOST_READ: u32 = 1 << 8;
/// One device-write pin.
pub(crate) const PIN_DEV_WRITE: u32 = 1 << 16;
/// One device-read pin.
pub(crate) const PIN_DEV_READ: u32 = 1 << 24;
/// The write counters.
pub(crate) const PIN_WRITE_MASK: u32 = 0x00ff_00ff;

/// Whether adding `incr` to `pin` keeps every touched counter below 256
/// (each counter refuses once its top bit is set).
pub(crate) const fn pin_can_add(pin: u32, incr: u32) -> bool {
    let mut shift = 0;
    while shift < 32 {
        let add = (incr >> shift) & 0xff;
        let have = (pin >> shift) & 0xff;
        if add != 0 && (have & 0x80 != 0 || have + add > 0xff) {
            return false;
        }
        shift += 8;
    }
    true
}

/// What kind of grant the pinned entry is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PinnedKind {
    /// A whole frame (maps and copies).
    FullPage,
    /// A v2 sub-page window (copies only).
    SubPage,
    /// A v2 transitive grant (copies only, one copy at a time).
    Transitive,
}

/// The hypervisor's state for one grant entry. The embedder provides one
/// per entry the table may ever hold (see
/// [`GrantTable::new`](crate::GrantTable::new)).
pub struct ActiveEntry {
    lock: AtomicU32,
    pin: AtomicU32,
    domid: AtomicU32,
    mfn: AtomicU64,
    /// start | length << 16; bit 30 sub-page, bit 31 transitive.
    window: AtomicU32,
}

const KIND_SUB_PAGE: u32 = 1 << 30;
const KIND_TRANSITIVE: u32 = 1 << 31;
const FULL_WINDOW: u32 = 4096 << 16;

impl ActiveEntry {
    /// An unpinned entry.
    #[cfg(not(loom))]
    #[must_use]
    pub const fn new() -> Self {
        Self {
            lock: AtomicU32::new(0),
            pin: AtomicU32::new(0),
            domid: AtomicU32::new(0),
            mfn: AtomicU64::new(0),
            window: AtomicU32::new(FULL_WINDOW),
        }
    }

    /// An unpinned entry.
    #[cfg(loom)]
    #[must_use]
    pub fn new() -> Self {
        Self {
            lock: AtomicU32::new(0),
            pin: AtomicU32::new(0),
            domid: AtomicU32::new(0),
            mfn: AtomicU64::new(0),
            window: AtomicU32::new(FULL_WINDOW),
        }
    }

    /// Takes the entry's lock.
    pub(crate) fn lock(&self) -> Active<'_> {
        loop {
            if self
                .lock
                .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Active { entry: self };
            }
            while self.lock.load(Ordering::Relaxed) != 0 {
                spin_wait();
            }
        }
    }

    /// The pin word, for callers that hold exclusive access to the table.
    pub(crate) fn pin_unlocked(&self) -> u32 {
        self.pin.load(Ordering::Relaxed)
    }
}

impl Default for ActiveEntry {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for ActiveEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ActiveEntry")
            .field(
                "pin",
                &format_args!("{:#010x}", self.pin.load(Ordering::Relaxed)),
            )
            .field("mfn", &self.mfn.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A locked active entry; unlocks on drop.
pub(crate) struct Active<'t> {
    entry: &'t ActiveEntry,
}

impl Active<'_> {
    pub(crate) fn pin(&self) -> u32 {
        self.entry.pin.load(Ordering::Relaxed)
    }

    pub(crate) fn set_pin(&self, pin: u32) {
        self.entry.pin.store(pin, Ordering::Relaxed);
    }

    pub(crate) fn domid(&self) -> DomId {
        DomId::new(self.entry.domid.load(Ordering::Relaxed) as u16)
    }

    pub(crate) fn mfn(&self) -> Mfn {
        Mfn::new(self.entry.mfn.load(Ordering::Relaxed))
    }

    pub(crate) fn kind(&self) -> PinnedKind {
        let window = self.entry.window.load(Ordering::Relaxed);
        if window & KIND_TRANSITIVE != 0 {
            PinnedKind::Transitive
        } else if window & KIND_SUB_PAGE != 0 {
            PinnedKind::SubPage
        } else {
            PinnedKind::FullPage
        }
    }

    /// The accessible window: (first byte, length).
    pub(crate) fn window(&self) -> (u16, u16) {
        let window = self.entry.window.load(Ordering::Relaxed);
        (window as u16, ((window >> 16) & 0x1fff) as u16)
    }

    /// Records the first pin's resolution.
    pub(crate) fn set_target(&self, domid: DomId, mfn: Mfn, kind: PinnedKind, window: (u16, u16)) {
        let mut word = u32::from(window.0) | u32::from(window.1) << 16;
        word |= match kind {
            PinnedKind::FullPage => 0,
            PinnedKind::SubPage => KIND_SUB_PAGE,
            PinnedKind::Transitive => KIND_TRANSITIVE,
        };
        self.entry
            .domid
            .store(u32::from(domid.get()), Ordering::Relaxed);
        self.entry.mfn.store(mfn.get(), Ordering::Relaxed);
        self.entry.window.store(word, Ordering::Relaxed);
    }

    /// Forgets the resolution after the last pin went.
    pub(crate) fn clear_target(&self) {
        self.entry.domid.store(0, Ordering::Relaxed);
        self.entry.mfn.store(0, Ordering::Relaxed);
        self.entry.window.store(FULL_WINDOW, Ordering::Relaxed);
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.entry.lock.store(0, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pin_counter_refuses_at_its_top_bit() {
        assert!(pin_can_add(0x7f, PIN_HOST_WRITE));
        assert!(!pin_can_add(0x80, PIN_HOST_WRITE));
        assert!(
            pin_can_add(0x80, PIN_HOST_READ),
            "other counters unaffected"
        );
        assert!(!pin_can_add(0x80 << 24, PIN_DEV_READ));
        assert!(pin_can_add(0, PIN_HOST_WRITE | PIN_DEV_WRITE));
    }

    #[test]
    fn lock_is_released_on_drop() {
        let entry = ActiveEntry::new();
        {
            let locked = entry.lock();
            locked.set_target(DomId::new(3), Mfn::new(9), PinnedKind::SubPage, (16, 32));
            assert_eq!(locked.window(), (16, 32));
            assert_eq!(locked.kind(), PinnedKind::SubPage);
        }
        let locked = entry.lock();
        assert_eq!(locked.domid(), DomId::new(3));
        locked.clear_target();
        assert_eq!(locked.window(), (0, 4096));
        assert_eq!(locked.kind(), PinnedKind::FullPage);
    }
}

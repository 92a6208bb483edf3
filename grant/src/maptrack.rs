//! The mapping domain's maptrack: one entry per grant mapping it holds, the
//! handle a map returns being the entry's index (Xen
//! `xen/common/grant_table.c`).
//!
//! An entry's `flags` word is written last on map (release) and read first
//! by unmap (acquire): a zero `flags` means "no mapping", so a handle being
//! filled in or torn down is never seen half-made. Once allocated, an
//! entry's fields change only under the active-entry lock of the grant it
//! maps, which is how concurrent unmaps of one handle are serialised.
//!
//! Free handles sit on one free list under a small lock (Xen keeps per-vCPU
//! lists and steals between them; one list keeps the same guarantees with
//! less code). Handles never handed out yet are taken from a high-water
//! mark, so construction costs nothing and the limit can be any value up to
//! the storage.

use core::fmt;

use hvmem_types::DomId;

use crate::abi::GrantHandle;
use crate::sync::{AtomicU32, AtomicU64, Ordering, spin_wait};

/// The end of the free list.
const NIL: u32 = u32::MAX;

/// One mapping a domain holds (Xen `struct grant_mapping`).
pub struct MaptrackEntry {
    /// `GNTMAP_*` kinds still mapped (host, device) and `GNTMAP_readonly`;
    /// zero when the handle maps nothing.
    pub(crate) flags: AtomicU32,
    pub(crate) domid: AtomicU32,
    pub(crate) gref: AtomicU32,
    pub(crate) host_addr: AtomicU64,
    next: AtomicU32,
}

impl MaptrackEntry {
    /// A free entry.
    #[cfg(not(loom))]
    #[must_use]
    pub const fn new() -> Self {
        Self {
            flags: AtomicU32::new(0),
            domid: AtomicU32::new(0),
            gref: AtomicU32::new(0),
            host_addr: AtomicU64::new(0),
            next: AtomicU32::new(NIL),
        }
    }

    /// A free entry.
    #[cfg(loom)]
    #[must_use]
    pub fn new() -> Self {
        Self {
            flags: AtomicU32::new(0),
            domid: AtomicU32::new(0),
            gref: AtomicU32::new(0),
            host_addr: AtomicU64::new(0),
            next: AtomicU32::new(NIL),
        }
    }
}

impl Default for MaptrackEntry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MaptrackEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaptrackEntry")
            .field("flags", &self.flags.load(Ordering::Relaxed))
            .field("domid", &self.domid.load(Ordering::Relaxed))
            .field("gref", &self.gref.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A mapping domain's maptrack over caller-provided entries.
pub struct Maptrack<'a> {
    pub(crate) owner: DomId,
    pub(crate) translated: bool,
    pub(crate) entries: &'a [MaptrackEntry],
    limit: u32,
    lock: AtomicU32,
    /// Under `lock`.
    free_head: AtomicU32,
    /// Under `lock`: handles at and above it were never handed out.
    fresh: AtomicU32,
}

impl fmt::Debug for Maptrack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maptrack")
            .field("owner", &self.owner)
            .field("limit", &self.limit)
            .field("in_use", &self.mappings())
            .finish_non_exhaustive()
    }
}

impl<'a> Maptrack<'a> {
    /// The maptrack of `owner`, with at most `limit` handles (cut to the
    /// storage). `translated` says whether `owner` is a translated guest,
    /// which may not ask for device, application or PTE mappings.
    ///
    /// `owner`'s own grant table has the same flag
    /// ([`GrantTableConfig::translated`](crate::GrantTableConfig::translated)).
    /// Pass the same value to both: the crate does not compare them, and
    /// reads each in a different operation (this one in map, the table's in
    /// transfer).
    #[must_use]
    pub fn new(owner: DomId, translated: bool, entries: &'a [MaptrackEntry], limit: u32) -> Self {
        let storage = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        Self {
            owner,
            translated,
            entries,
            limit: limit.min(storage).min(NIL - 1),
            lock: AtomicU32::new(0),
            free_head: AtomicU32::new(NIL),
            fresh: AtomicU32::new(0),
        }
    }

    /// The mapping domain.
    #[must_use]
    pub fn owner(&self) -> DomId {
        self.owner
    }

    /// The most handles.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Handles that currently map something.
    #[must_use]
    pub fn mappings(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| entry.flags.load(Ordering::Acquire) != 0)
            .count()
    }

    /// The `GNTMAP_*` kinds `handle` still maps, or `None` if it maps
    /// nothing.
    #[must_use]
    pub fn mapping(&self, handle: GrantHandle) -> Option<MappingInfo> {
        let entry = self.entry(handle)?;
        let flags = entry.flags.load(Ordering::Acquire);
        (flags != 0).then(|| MappingInfo {
            flags,
            domid: DomId::new(entry.domid.load(Ordering::Relaxed) as u16),
            gref: entry.gref.load(Ordering::Relaxed),
        })
    }

    pub(crate) fn entry(&self, handle: GrantHandle) -> Option<&'a MaptrackEntry> {
        if handle.0 >= self.limit {
            return None;
        }
        self.entries.get(handle.0 as usize)
    }

    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spin_wait();
        }
        let result = f();
        self.lock.store(0, Ordering::Release);
        result
    }

    /// A free handle, or `None` at the limit.
    pub(crate) fn alloc_handle(&self) -> Option<GrantHandle> {
        self.with_lock(|| {
            let head = self.free_head.load(Ordering::Relaxed);
            if let Some(entry) = self.entries.get(head as usize) {
                self.free_head
                    .store(entry.next.load(Ordering::Relaxed), Ordering::Relaxed);
                return Some(GrantHandle(head));
            }
            let fresh = self.fresh.load(Ordering::Relaxed);
            if fresh < self.limit {
                self.fresh.store(fresh + 1, Ordering::Relaxed);
                Some(GrantHandle(fresh))
            } else {
                None
            }
        })
    }

    /// Puts `handle` (whose flags are zero) back on the free list.
    pub(crate) fn free_handle(&self, handle: GrantHandle) {
        let Some(entry) = self.entry(handle) else {
            debug_assert!(false, "freeing a handle beyond the maptrack");
            return;
        };
        self.with_lock(|| {
            entry
                .next
                .store(self.free_head.load(Ordering::Relaxed), Ordering::Relaxed);
            self.free_head.store(handle.0, Ordering::Relaxed);
        });
    }

    /// Handles ever handed out (the high-water mark).
    pub(crate) fn high_water(&self) -> u32 {
        self.with_lock(|| self.fresh.load(Ordering::Relaxed))
    }
}

/// What a maptrack handle maps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MappingInfo {
    /// The `GNTMAP_*` kinds still mapped, and `GNTMAP_readonly`.
    pub flags: u32,
    /// The granting domain.
    pub domid: DomId,
    /// The grant reference.
    pub gref: u32,
}

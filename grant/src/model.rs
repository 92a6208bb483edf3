//! Models for testing and fuzzing (feature `model`): a frame table and
//! domain set that implement [`GrantFrames`] and [`Domains`] with exact
//! reference counting, and a two-domain reference model with a decoder that
//! turns arbitrary bytes into guest and hypercall operations.
//!
//! [`run`] builds two domains, each a granter (a grant table over two shared
//! frames and one status frame) and a mapper (a maptrack of
//! [`MAPTRACK_LIMIT`] handles), plus a third domain id that does not exist.
//! It decodes `data` four bytes per operation: the granting guests' calls
//! (grant, sub-page, transitive, transfer offers, end access, end transfer)
//! and, for a malicious granter, raw writes of chosen values into its shared
//! frames; the mappers' hypercalls with arbitrary refs, handles, flags,
//! frames, offsets and lengths (map, unmap, copy, transfer, set_version,
//! setup_table, get_status_frames, query_size) and a dying mapper's release.
//! After every operation it checks:
//!
//! - every live maptrack handle is in the model with the same kinds, and
//!   the model's handles are all live: a map succeeds only on a grant that
//!   the granter made to that mapper with the right permission (for entries
//!   the granter did not tamper with), and an unmap removes exactly what it
//!   names;
//! - each active entry's pin counters equal the sum of the mappings on it
//!   (copies leave no pin behind), and it is pinned by the domain that maps
//!   it;
//! - for entries the granter did not tamper with, `GTF_reading` is set
//!   exactly while pinned and `GTF_writing` exactly while writably pinned,
//!   and a pinned entry still grants what its mappings use;
//! - end access succeeds only on an entry nobody maps;
//! - a copy, issued twice in one batch (the second element reusing what
//!   the first claimed), ends the same way both times;
//! - every frame's general and writable-type reference counts equal what
//!   the mappings hold (a general reference per mapping kind, a type
//!   reference per writable kind; an active entry holds none of its own):
//!   nothing leaks, nothing is dropped twice.

// The model indexes its own arrays with indices it derived from them; a
// panic here is the oracle reporting a divergence.
#![allow(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::vec::Vec;

use hvmem_types::{DomId, Gfn, Mfn};

use crate::abi::{
    FRAME_SIZE, GnttabCopy, GnttabCopyPtr, GnttabGetStatusFrames, GnttabMapGrantRef,
    GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GnttabTransfer, GnttabUnmapGrantRef,
    GrantHandle, GrantRef, STATUS_ENTRIES_PER_FRAME, WORDS_PER_FRAME,
};
use crate::active::PIN_WRITE_MASK;
use crate::error::GntSt;
use crate::flags::{GntCopyFlags, GntMapFlags, GrantType, GtfFlags};
use crate::mem::{hdr_domid, hdr_flags};
use crate::sync::{AtomicU16, AtomicU32, Ordering};
use crate::{
    ActiveEntry, Domains, GfnError, GrantFrames, GrantTable, GrantTableConfig, GrantVersion,
    GuestError, GuestGrantTable, Maptrack, MaptrackEntry, SliceMemory, StealError,
};

/// One frame of [`ModelFrames`].
#[derive(Clone, Debug, Default)]
struct Frame {
    owner: Option<DomId>,
    refs: u32,
    type_refs: u32,
    /// Cannot take a writable type (a page table, say).
    unwritable: bool,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct FramesState {
    frames: BTreeMap<u64, Frame>,
    p2m: BTreeMap<(u16, u64), u64>,
    paged_out: BTreeSet<(u16, u64)>,
    full: BTreeSet<u16>,
    freed: u64,
}

/// A frame table for tests: owners, a p2m per domain, general and writable
/// type reference counts, and frame contents, behind a mutex.
#[derive(Debug, Default)]
pub struct ModelFrames {
    state: Mutex<FramesState>,
}

impl ModelFrames {
    /// No frames.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives `dom` the frame `mfn` at its frame number `gfn`.
    pub fn give(&self, dom: DomId, gfn: u64, mfn: u64) {
        let mut state = self.state.lock().unwrap();
        state.frames.insert(
            mfn,
            Frame {
                owner: Some(dom),
                bytes: std::vec![0; FRAME_SIZE],
                ..Frame::default()
            },
        );
        state.p2m.insert((dom.get(), gfn), mfn);
    }

    /// Makes `dom`'s `gfn` look paged out (or back in).
    pub fn set_paged_out(&self, dom: DomId, gfn: u64, paged_out: bool) {
        let mut state = self.state.lock().unwrap();
        if paged_out {
            state.paged_out.insert((dom.get(), gfn));
        } else {
            state.paged_out.remove(&(dom.get(), gfn));
        }
    }

    /// Makes `mfn` refuse writable type references (it is a page table).
    pub fn set_unwritable(&self, mfn: u64, unwritable: bool) {
        if let Some(frame) = self.state.lock().unwrap().frames.get_mut(&mfn) {
            frame.unwritable = unwritable;
        }
    }

    /// Makes `dom` refuse further frames (at its maximum, or dying).
    pub fn set_full(&self, dom: DomId, full: bool) {
        let mut state = self.state.lock().unwrap();
        if full {
            state.full.insert(dom.get());
        } else {
            state.full.remove(&dom.get());
        }
    }

    /// `mfn`'s (general, writable type) reference counts, beyond its
    /// owner's allocation.
    #[must_use]
    pub fn refs(&self, mfn: u64) -> (u32, u32) {
        self.state
            .lock()
            .unwrap()
            .frames
            .get(&mfn)
            .map_or((0, 0), |frame| (frame.refs, frame.type_refs))
    }

    /// The owner of `mfn` (`None`: stolen, freed or unknown).
    #[must_use]
    pub fn owner(&self, mfn: u64) -> Option<DomId> {
        self.state
            .lock()
            .unwrap()
            .frames
            .get(&mfn)
            .and_then(|frame| frame.owner)
    }

    /// The frame at `dom`'s `gfn`.
    #[must_use]
    pub fn mfn_of(&self, dom: DomId, gfn: u64) -> Option<u64> {
        self.state
            .lock()
            .unwrap()
            .p2m
            .get(&(dom.get(), gfn))
            .copied()
    }

    /// Byte `offset` of `mfn`.
    #[must_use]
    pub fn byte(&self, mfn: u64, offset: usize) -> u8 {
        let state = self.state.lock().unwrap();
        state
            .frames
            .get(&mfn)
            .and_then(|frame| frame.bytes.get(offset).copied())
            .unwrap_or(0)
    }

    /// Writes `value` at byte `offset` of `mfn`.
    pub fn set_byte(&self, mfn: u64, offset: usize, value: u8) {
        let mut state = self.state.lock().unwrap();
        if let Some(byte) = state
            .frames
            .get_mut(&mfn)
            .and_then(|frame| frame.bytes.get_mut(offset))
        {
            *byte = value;
        }
    }

    /// Frames freed after a failed transfer.
    #[must_use]
    pub fn freed(&self) -> u64 {
        self.state.lock().unwrap().freed
    }

    /// Every frame's (mfn, general, type) counts.
    #[must_use]
    pub fn all_refs(&self) -> Vec<(u64, u32, u32)> {
        self.state
            .lock()
            .unwrap()
            .frames
            .iter()
            .map(|(&mfn, frame)| (mfn, frame.refs, frame.type_refs))
            .collect()
    }
}

impl GrantFrames for ModelFrames {
    fn get_gfn(&self, owner: DomId, gfn: u64) -> Result<Mfn, GfnError> {
        let mut state = self.state.lock().unwrap();
        if state.paged_out.contains(&(owner.get(), gfn)) {
            return Err(GfnError::PagedOut);
        }
        let mfn = *state
            .p2m
            .get(&(owner.get(), gfn))
            .ok_or(GfnError::BadPage)?;
        let frame = state.frames.get_mut(&mfn).ok_or(GfnError::BadPage)?;
        if frame.owner != Some(owner) {
            return Err(GfnError::BadPage);
        }
        frame.refs += 1;
        Ok(Mfn::new(mfn))
    }

    fn get_page(&self, owner: DomId, mfn: Mfn) -> bool {
        let mut state = self.state.lock().unwrap();
        match state.frames.get_mut(&mfn.get()) {
            Some(frame) if frame.owner == Some(owner) => {
                frame.refs += 1;
                true
            }
            _ => false,
        }
    }

    fn put_page(&self, mfn: Mfn) {
        let mut state = self.state.lock().unwrap();
        let frame = state
            .frames
            .get_mut(&mfn.get())
            .expect("put of an unknown frame");
        assert!(frame.refs > 0, "put_page without a reference on {mfn}");
        assert!(
            frame.refs > frame.type_refs,
            "general reference dropped under a type reference on {mfn}"
        );
        frame.refs -= 1;
    }

    fn get_page_and_type(&self, owner: DomId, mfn: Mfn) -> bool {
        let mut state = self.state.lock().unwrap();
        match state.frames.get_mut(&mfn.get()) {
            Some(frame) if frame.owner == Some(owner) && !frame.unwritable => {
                frame.refs += 1;
                frame.type_refs += 1;
                true
            }
            _ => false,
        }
    }

    fn get_type(&self, owner: DomId, mfn: Mfn) -> bool {
        let mut state = self.state.lock().unwrap();
        match state.frames.get_mut(&mfn.get()) {
            Some(frame) if frame.owner == Some(owner) && !frame.unwritable => {
                assert!(
                    frame.refs > frame.type_refs,
                    "get_type without a general reference to back it on {mfn}"
                );
                frame.type_refs += 1;
                true
            }
            _ => false,
        }
    }

    fn put_page_and_type(&self, mfn: Mfn) {
        let mut state = self.state.lock().unwrap();
        let frame = state
            .frames
            .get_mut(&mfn.get())
            .expect("put of an unknown frame");
        assert!(
            frame.type_refs > 0,
            "put_page_and_type without a type reference on {mfn}"
        );
        frame.type_refs -= 1;
        frame.refs -= 1;
    }

    fn copy(&self, src: Mfn, src_offset: usize, dst: Mfn, dst_offset: usize, len: usize) {
        assert!(src_offset + len <= FRAME_SIZE && dst_offset + len <= FRAME_SIZE);
        let mut state = self.state.lock().unwrap();
        let source = state
            .frames
            .get(&src.get())
            .expect("copy from unknown")
            .bytes[src_offset..src_offset + len]
            .to_vec();
        let dest = state.frames.get_mut(&dst.get()).expect("copy to unknown");
        assert!(
            dest.type_refs > 0,
            "copy into a frame without a writable type"
        );
        dest.bytes[dst_offset..dst_offset + len].copy_from_slice(&source);
    }

    fn steal_page(&self, owner: DomId, gfn: u64) -> Result<Mfn, StealError> {
        let mut state = self.state.lock().unwrap();
        let mfn = *state
            .p2m
            .get(&(owner.get(), gfn))
            .ok_or(StealError::BadPage)?;
        let frame = state.frames.get_mut(&mfn).ok_or(StealError::BadPage)?;
        if frame.owner != Some(owner) {
            return Err(StealError::BadPage);
        }
        if frame.refs != 0 || frame.type_refs != 0 {
            return Err(StealError::InUse);
        }
        frame.owner = None;
        state.p2m.remove(&(owner.get(), gfn));
        Ok(Mfn::new(mfn))
    }

    fn can_receive(&self, dom: DomId) -> bool {
        !self.state.lock().unwrap().full.contains(&dom.get())
    }

    fn assign_page(&self, dom: DomId, mfn: Mfn, gfn: u64) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.full.contains(&dom.get()) || state.p2m.contains_key(&(dom.get(), gfn)) {
            return false;
        }
        let Some(frame) = state.frames.get_mut(&mfn.get()) else {
            return false;
        };
        assert_eq!(frame.owner, None, "assigning a frame that was not stolen");
        frame.owner = Some(dom);
        state.p2m.insert((dom.get(), gfn), mfn.get());
        true
    }

    fn free_page(&self, mfn: Mfn) {
        let mut state = self.state.lock().unwrap();
        let frame = state
            .frames
            .remove(&mfn.get())
            .expect("freeing unknown frame");
        assert_eq!(frame.owner, None, "freeing an owned frame");
        state.freed += 1;
    }
}

/// A set of domains' grant tables, found by owner.
#[derive(Debug)]
pub struct ModelDomains<'t> {
    tables: Vec<&'t GrantTable<'t>>,
}

impl<'t> ModelDomains<'t> {
    /// The domains owning `tables`.
    pub fn new(tables: impl IntoIterator<Item = &'t GrantTable<'t>>) -> Self {
        Self {
            tables: tables.into_iter().collect(),
        }
    }
}

impl Domains for ModelDomains<'_> {
    fn grant_table(&self, dom: DomId) -> Option<&GrantTable<'_>> {
        self.tables
            .iter()
            .find(|table| table.owner() == dom)
            .copied()
    }
}

// ---------------------------------------------------------------------
// The two-domain reference model.

/// Domains in the model (ids 1 and 2); id 3 names no domain.
pub const DOMAINS: usize = 2;
/// Grant frames each table may grow to.
pub const MAX_FRAMES: u32 = 2;
/// Handles per maptrack.
pub const MAPTRACK_LIMIT: u32 = 6;
/// Bytes per decoded operation.
pub const OP_BYTES: usize = 4;
/// Frames each domain owns (gfn 0..GFNS).
const GFNS: u64 = 4;

fn dom(index: usize) -> DomId {
    DomId::new(index as u16 + 1)
}

fn mfn_of(index: usize, gfn: u64) -> u64 {
    0x100 * (index as u64 + 1) + gfn
}

/// A grant reference: mostly among the first twenty, sometimes anywhere.
fn gref(byte: u8) -> GrantRef {
    match byte {
        0..=239 => GrantRef(u32::from(byte % 20)),
        240..=247 => GrantRef(500 + u32::from(byte - 240) * 4),
        248..=251 => GrantRef(1020 + u32::from(byte - 248)),
        _ => GrantRef(u32::MAX - u32::from(byte - 252)),
    }
}

/// Every reference [`gref`] can produce below the largest table: the only
/// entries an operation can touch, so the only ones the checks visit.
fn reachable_refs() -> Vec<GrantRef> {
    let refs: BTreeSet<u32> = (0..=255u8)
        .map(gref)
        .filter(|gref| gref.0 < MAX_FRAMES * 512)
        .map(|gref| gref.0)
        .collect();
    refs.into_iter().map(GrantRef).collect()
}

/// A domain id byte: 1, 2, the missing 3, or DOMID_SELF.
fn domid(byte: u8) -> DomId {
    match byte % 8 {
        0..=2 => DomId::new(1),
        3..=5 => DomId::new(2),
        6 => DomId::new(3),
        _ => DomId::SELF,
    }
}

/// One decoded operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// Guest `grant_access`.
    Grant {
        /// Granter index.
        by: usize,
        /// Entry.
        gref: GrantRef,
        /// Grantee.
        to: DomId,
        /// Frame number (may be invalid).
        gfn: u64,
        /// Read-only.
        readonly: bool,
    },
    /// Guest `grant_sub_page`.
    SubPage {
        /// Granter index.
        by: usize,
        /// Entry.
        gref: GrantRef,
        /// Grantee.
        to: DomId,
        /// Frame.
        gfn: u64,
        /// Window start.
        offset: u16,
        /// Window length.
        length: u16,
    },
    /// Guest `grant_transitive`.
    Transitive {
        /// Granter index.
        by: usize,
        /// Entry.
        gref: GrantRef,
        /// Grantee.
        to: DomId,
        /// Underlying domain.
        trans: DomId,
        /// Underlying entry.
        trans_gref: GrantRef,
    },
    /// Guest `grant_transfer`.
    OfferTransfer {
        /// Receiver index.
        by: usize,
        /// Entry.
        gref: GrantRef,
        /// Allowed sender.
        from: DomId,
        /// Slot.
        gfn: u64,
    },
    /// Guest `end_access`.
    EndAccess {
        /// Granter index.
        by: usize,
        /// Entry.
        gref: GrantRef,
    },
    /// Guest `end_transfer`.
    EndTransfer {
        /// Receiver index.
        by: usize,
        /// Entry.
        gref: GrantRef,
    },
    /// A malicious granter stores `value` into word `word` of its shared
    /// frames.
    RawWrite {
        /// Granter index.
        by: usize,
        /// Word index into the shared frames.
        word: u32,
        /// Value.
        value: u32,
    },
    /// `map_grant_ref`.
    Map {
        /// Mapper index.
        by: usize,
        /// Granting domain.
        dom: DomId,
        /// Entry.
        gref: GrantRef,
        /// `GNTMAP_*`.
        flags: u32,
    },
    /// `unmap_grant_ref`.
    Unmap {
        /// Mapper index.
        by: usize,
        /// Handle.
        handle: u32,
        /// Unmap the host mapping (with the right or a wrong address).
        host: Option<bool>,
        /// Unmap the device mapping (with the right or a wrong address).
        device: Option<bool>,
    },
    /// `copy`.
    Copy {
        /// Copier index.
        by: usize,
        /// The operation.
        op: GnttabCopy,
    },
    /// `transfer`.
    Transfer {
        /// Sender index.
        by: usize,
        /// The operation.
        op: GnttabTransfer,
    },
    /// `set_version`.
    SetVersion {
        /// Domain index.
        by: usize,
        /// Version asked for.
        version: u32,
    },
    /// `setup_table`.
    Setup {
        /// Domain index.
        by: usize,
        /// Frames.
        frames: u32,
    },
    /// `get_status_frames`.
    StatusFrames {
        /// Domain index.
        by: usize,
        /// Frames.
        frames: u32,
    },
    /// `query_size` and a check of its answer.
    Query {
        /// Domain index.
        by: usize,
    },
    /// Marks a status frame mapped by its guest, or not.
    MapStatus {
        /// Domain index.
        by: usize,
        /// Mapped.
        mapped: bool,
    },
    /// `swap_grant_ref` of two of the domain's own entries.
    Swap {
        /// Domain index.
        by: usize,
        /// One entry.
        a: GrantRef,
        /// The other.
        b: GrantRef,
    },
    /// `get_version` and a check of its answer.
    GetVersion {
        /// Domain index.
        by: usize,
    },
    /// `unmap_and_replace`.
    Replace {
        /// Mapper index.
        by: usize,
        /// Handle.
        handle: u32,
        /// Name the host mapping at its right address.
        right: bool,
        /// The new address: 0, one of the four map addresses, or an
        /// address nothing maps.
        new_addr: u64,
        /// Whether the embedder can move the PTE.
        pte_ok: bool,
    },
    /// `cache_flush` of a frame, and a check of its answer.
    CacheFlush {
        /// Caller index.
        by: usize,
        /// The operation.
        op: crate::GnttabCacheFlush,
        /// Arm rather than x86.
        arm: bool,
    },
    /// The mapper releases every mapping (dying).
    ReleaseAll {
        /// Mapper index.
        by: usize,
    },
}

impl Op {
    /// Decodes one operation from (up to) four bytes; missing bytes are
    /// zero.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Self {
        let byte = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let (code, a, b, c) = (byte(0), byte(1), byte(2), byte(3));
        let by = usize::from(a & 1);
        match code % 18 {
            0 => Self::Grant {
                by,
                gref: gref(b),
                to: domid(a >> 1),
                gfn: u64::from(c & 7),
                readonly: c & 8 != 0,
            },
            1 => Self::SubPage {
                by,
                gref: gref(b),
                to: domid(a >> 1),
                gfn: u64::from(c & 3),
                offset: u16::from(c >> 2) * 128,
                length: u16::from(a >> 4) * 256,
            },
            2 => Self::Transitive {
                by,
                gref: gref(b),
                to: domid(a >> 1),
                trans: domid(a >> 4),
                trans_gref: gref(c),
            },
            3 => Self::OfferTransfer {
                by,
                gref: gref(b),
                from: domid(a >> 1),
                gfn: u64::from(c % 8) + 4,
            },
            4 => Self::EndAccess { by, gref: gref(b) },
            5 => Self::EndTransfer { by, gref: gref(b) },
            6 => {
                let word = (u32::from(b) | u32::from(c & 7) << 8) % (2 * WORDS_PER_FRAME as u32);
                let value = match a >> 1 & 3 {
                    0 => 0,
                    1 => u32::from(c) | u32::from(a >> 3 & 3) << 16,
                    2 => (u32::from(c & 0xf0) << 4) | (u32::from(b & 1) + 1),
                    _ => u32::from(b) << 8 | u32::from(c),
                };
                Self::RawWrite { by, word, value }
            }
            7..=9 => Self::Map {
                by,
                dom: domid(a >> 1),
                gref: gref(b),
                flags: u32::from(c & 0x1f) | if c & 0x20 != 0 { 0x1_0000 } else { 0 },
            },
            10 | 11 => Self::Unmap {
                by,
                handle: u32::from(b % 10),
                host: (c & 1 != 0).then_some(c & 4 == 0),
                device: (c & 2 != 0).then_some(c & 8 == 0),
            },
            12 => {
                let side = |sel: u8, value: u8| {
                    let domid = domid(sel).get();
                    if sel & 0x8 != 0 {
                        (GnttabCopyPtr::frame(domid, u64::from(value % 6), 0), false)
                    } else {
                        (GnttabCopyPtr::grant(domid, gref(value), 0), true)
                    }
                };
                let (mut source, src_gref) = side(a >> 1, b);
                let (mut dest, dst_gref) = side(a >> 4 | (c & 1) << 3, c);
                source.offset = u16::from(b & 0xf0) * 16;
                dest.offset = u16::from(c & 0xe) * 256;
                let mut flags = GntCopyFlags::empty();
                flags.set(GntCopyFlags::SOURCE_GREF, src_gref);
                flags.set(GntCopyFlags::DEST_GREF, dst_gref);
                let len = match a >> 6 {
                    0 => 0,
                    1 => 16,
                    2 => 2048,
                    _ => 4096,
                };
                Self::Copy {
                    by,
                    op: GnttabCopy {
                        source,
                        dest,
                        len,
                        flags: flags.bits(),
                        ..GnttabCopy::default()
                    },
                }
            }
            13 => Self::Transfer {
                by,
                op: GnttabTransfer {
                    mfn: u64::from(c % 6),
                    domid: domid(a >> 1).get(),
                    gref: gref(b).0,
                    ..GnttabTransfer::default()
                },
            },
            14 => Self::SetVersion {
                by,
                version: u32::from(b % 4),
            },
            15 => Self::Setup {
                by,
                frames: u32::from(b % 4),
            },
            16 => match b % 7 {
                0 => Self::StatusFrames {
                    by,
                    frames: u32::from(c % 3),
                },
                1 => Self::Query { by },
                2 => Self::MapStatus {
                    by,
                    mapped: c & 1 != 0,
                },
                3 => Self::Swap {
                    by,
                    a: gref(c),
                    b: gref(a >> 1 | b & 0x80),
                },
                4 => Self::GetVersion { by },
                6 => Self::CacheFlush {
                    by,
                    op: crate::GnttabCacheFlush {
                        a: mfn_of(usize::from(c & 1), u64::from(c >> 1 & 7)) << 12,
                        offset: u16::from(c >> 4) * 512,
                        length: match a >> 1 & 3 {
                            0 => 0,
                            1 => 64,
                            2 => 2048,
                            _ => 4096,
                        },
                        op: u32::from(a >> 3 & 3) | if a & 0x80 != 0 { 4 } else { 0 },
                    },
                    arm: a & 0x20 != 0,
                },
                _ => Self::Replace {
                    by,
                    handle: u32::from(c % 10),
                    right: c & 0x80 == 0,
                    new_addr: match a >> 1 & 7 {
                        0 => 0,
                        k @ 1..=4 => host_addr_of(GrantRef(u32::from(k) - 1)),
                        _ => HOST_ADDR + 0x20_0000,
                    },
                    pte_ok: a & 0x10 == 0 || a >> 5 != 0,
                },
            },
            _ => Self::ReleaseAll { by },
        }
    }
}

/// What the model remembers about a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Mapping {
    granter: usize,
    gref: GrantRef,
    kinds: GntMapFlags,
    readonly: bool,
    mfn: u64,
    /// Where the host mapping is (it moves with `unmap_and_replace`).
    host: u64,
}

const HOST_ADDR: u64 = 0x7000_0000;
/// An address no mapping is ever at.
const WRONG_ADDR: u64 = HOST_ADDR + 0x10_0000;

/// Where a map of `gref` puts its host mapping: one of four addresses, so
/// that mappings share them now and then.
fn host_addr_of(gref: GrantRef) -> u64 {
    HOST_ADDR + u64::from(gref.0 & 3) * 0x1000
}

/// The tables, maptracks and model of one run.
struct World<'t> {
    tables: [GrantTable<'t>; DOMAINS],
    mems: [&'t SliceMemory<'t>; DOMAINS],
    maptracks: [Maptrack<'t>; DOMAINS],
    frames: &'t ModelFrames,
    /// Per mapper: handle -> mapping.
    mappings: [BTreeMap<u32, Mapping>; DOMAINS],
    /// Entries whose shared words the granter overwrote behind the API.
    tampered: [BTreeSet<u32>; DOMAINS],
    /// The entries operations can reach.
    refs: Vec<GrantRef>,
}

impl World<'_> {
    fn domains(&self) -> ModelDomains<'_> {
        ModelDomains::new(self.tables.iter())
    }

    fn guest(&self, by: usize) -> GuestGrantTable<'_> {
        let table = &self.tables[by];
        GuestGrantTable::new(self.mems[by], table.version(), table.nr_frames())
    }

    fn mapped(&self, granter: usize, gref: GrantRef) -> bool {
        self.mappings
            .iter()
            .flat_map(BTreeMap::values)
            .any(|m| m.granter == granter && m.gref == gref)
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Grant {
                by,
                gref,
                to,
                gfn,
                readonly,
            } => {
                let _ = self
                    .guest(by)
                    .grant_access(gref, to, Gfn::new(gfn), readonly);
            }
            Op::SubPage {
                by,
                gref,
                to,
                gfn,
                offset,
                length,
            } => {
                let _ =
                    self.guest(by)
                        .grant_sub_page(gref, to, Gfn::new(gfn), offset, length, false);
            }
            Op::Transitive {
                by,
                gref,
                to,
                trans,
                trans_gref,
            } => {
                let _ = self
                    .guest(by)
                    .grant_transitive(gref, to, trans, trans_gref, true);
            }
            Op::OfferTransfer {
                by,
                gref,
                from,
                gfn,
            } => {
                let _ = self.guest(by).grant_transfer(gref, from, Gfn::new(gfn));
            }
            Op::EndAccess { by, gref } => {
                let ended = self.guest(by).end_access(gref);
                // A granter that wrote its own entry behind the protocol's
                // back can make end_access succeed on its own grant; the
                // tables are not at fault then.
                if ended.is_ok() && !self.tampered[by].contains(&gref.0) {
                    assert!(
                        !self.mapped(by, gref),
                        "end_access of {gref:?} succeeded while it is mapped"
                    );
                }
                if ended == Err(GuestError::InUse)
                    && !self.tampered[by].contains(&gref.0)
                    && self.tables[by].version() == GrantVersion::V2
                {
                    assert!(
                        self.mapped(by, gref),
                        "end_access refused on an unmapped entry"
                    );
                }
            }
            Op::EndTransfer { by, gref } => {
                let _ = self.guest(by).end_transfer(gref);
            }
            Op::RawWrite { by, word, value } => {
                let per_entry = match self.tables[by].version() {
                    GrantVersion::V1 => 2,
                    GrantVersion::V2 => 4,
                };
                let mem = self.mems[by];
                let frame = word / WORDS_PER_FRAME as u32;
                if let Some(slot) = crate::GrantMemory::shared_frame(mem, frame)
                    .and_then(|words| words.get(word as usize % WORDS_PER_FRAME))
                {
                    slot.store(value, Ordering::Relaxed);
                    let per_frame = WORDS_PER_FRAME as u32 / per_entry;
                    let entry = frame * per_frame + (word % WORDS_PER_FRAME as u32) / per_entry;
                    self.tampered[by].insert(entry);
                }
            }
            Op::Map {
                by,
                dom,
                gref,
                flags,
            } => self.map(by, dom, gref, flags),
            Op::Unmap {
                by,
                handle,
                host,
                device,
            } => self.unmap(by, handle, host, device),
            Op::Copy { by, op } => {
                let domains = self.domains();
                // Twice in one batch: the second element reuses what the
                // first claimed (or claims again after a failure), and
                // must end the same way.
                let mut ops = [op, op];
                crate::copy(dom(by), &domains, self.frames, &mut ops);
                assert_eq!(ops[0].status, ops[1].status, "{op:?}");
                let op = ops[0];
                let len = usize::from(op.len);
                if op.source.offset as usize + len > FRAME_SIZE
                    || op.dest.offset as usize + len > FRAME_SIZE
                {
                    assert_eq!(op.status, GntSt::BadCopyArg.raw(), "{op:?}");
                }
            }
            Op::Transfer { by, mut op } => {
                let domains = self.domains();
                crate::transfer(
                    dom(by),
                    &domains,
                    self.frames,
                    core::slice::from_mut(&mut op),
                );
            }
            Op::SetVersion { by, version } => {
                let pinned_beyond_reserved = self
                    .mappings
                    .iter()
                    .flat_map(BTreeMap::values)
                    .any(|m| m.granter == by && m.gref.0 >= crate::abi::NR_RESERVED_ENTRIES);
                let before = self.tables[by].version();
                let mut op = GnttabSetVersion { version };
                let result = self.tables[by].set_version(&mut op);
                let after = self.tables[by].version();
                assert_eq!(op.version, after.number());
                if after != before {
                    assert!(!pinned_beyond_reserved, "version switched while mapped");
                    assert!(result.is_ok());
                    // Every entry but the reserved ones was wiped.
                    self.tampered[by].retain(|&e| e < crate::abi::NR_RESERVED_ENTRIES);
                }
                if pinned_beyond_reserved
                    && (version == 1 || version == 2)
                    && version != before.number()
                {
                    assert_eq!(result, Err(crate::VersionError::InUse));
                }
            }
            Op::Setup { by, frames } => {
                let mut op = GnttabSetupTable {
                    dom: dom(by).get(),
                    nr_frames: frames,
                    ..GnttabSetupTable::default()
                };
                let mut list = [0u64; 4];
                crate::setup_table(Some(&mut self.tables[by]), &mut op, &mut list);
                if frames > MAX_FRAMES {
                    assert_eq!(op.status, GntSt::GeneralError.raw());
                } else {
                    assert_eq!(op.status, GntSt::Okay.raw());
                    assert!(self.tables[by].nr_frames() >= frames);
                }
            }
            Op::StatusFrames { by, frames } => {
                let mut op = GnttabGetStatusFrames {
                    nr_frames: frames,
                    dom: dom(by).get(),
                    ..GnttabGetStatusFrames::default()
                };
                let mut list = [0u64; 4];
                crate::get_status_frames(Some(&self.tables[by]), &mut op, &mut list);
                // Xen's only bound; a v1 table has no status frames, so
                // only an empty request succeeds there.
                let ok = frames <= self.tables[by].nr_status_frames();
                if self.tables[by].version() == GrantVersion::V1 {
                    assert_eq!(self.tables[by].nr_status_frames(), 0);
                }
                assert_eq!(op.status == 0, ok, "{op:?}");
            }
            Op::Query { by } => {
                let mut op = GnttabQuerySize::default();
                crate::query_size(Some(&self.tables[by]), &mut op);
                assert_eq!(op.status, 0);
                assert_eq!(op.nr_frames, self.tables[by].nr_frames());
                assert_eq!(op.max_nr_frames, MAX_FRAMES);
            }
            Op::MapStatus { by, mapped } => self.mems[by].set_status_mapped(0, mapped),
            Op::Swap { by, a, b } => {
                let entries = self.tables[by].nr_entries();
                let expected = if a.0 >= entries || b.0 >= entries {
                    GntSt::BadGntref
                } else if a == b {
                    GntSt::Okay
                } else if self.mapped(by, a) || self.mapped(by, b) {
                    GntSt::Eagain
                } else {
                    GntSt::Okay
                };
                let mut op = crate::GnttabSwapGrantRef {
                    ref_a: a.0,
                    ref_b: b.0,
                    ..Default::default()
                };
                self.tables[by].swap_grant_ref(&mut op);
                assert_eq!(op.status, expected.raw(), "{op:?}");
                if expected == GntSt::Okay && a != b {
                    // The entries' contents moved, tampering included.
                    let (ta, tb) = (
                        self.tampered[by].remove(&a.0),
                        self.tampered[by].remove(&b.0),
                    );
                    if ta {
                        self.tampered[by].insert(b.0);
                    }
                    if tb {
                        self.tampered[by].insert(a.0);
                    }
                }
            }
            Op::GetVersion { by } => {
                let mut op = crate::GnttabGetVersion::default();
                crate::get_version(Some(&self.tables[by]), &mut op).unwrap();
                assert_eq!(op.version, self.tables[by].version().number());
            }
            Op::Replace {
                by,
                handle,
                right,
                new_addr,
                pte_ok,
            } => self.replace(by, handle, right, new_addr, pte_ok),
            Op::CacheFlush { by, op, arm } => {
                use crate::{CacheArch, CallError, FrameOwner};
                let mfn = op.a >> 12;
                let owner = self.frames.owner(mfn);
                let pinned = self.mappings[by]
                    .values()
                    .any(|m| m.mfn == mfn && Some(dom(m.granter)) == owner);
                let (offset, length) = (u32::from(op.offset), u32::from(op.length));
                let clean = op.op & crate::abi::GNTTAB_CACHE_CLEAN != 0;
                let expected = if offset >= 4096 || offset + length > 4096 || op.op & !3 != 0 {
                    Err(CallError::Invalid)
                } else if length == 0 || op.op == 0 {
                    Ok(false)
                } else if owner.is_none() {
                    Err(CallError::NotPermitted)
                } else if owner != Some(dom(by)) && !pinned {
                    Err(CallError::Invalid)
                } else if !arm && !clean {
                    Err(CallError::NotSupported)
                } else {
                    Ok(true)
                };
                let refs = self.frames.refs(mfn);
                let domains = self.domains();
                let arch = if arm { CacheArch::Arm } else { CacheArch::X86 };
                let lookup = |m: Mfn| {
                    self.frames
                        .owner(m.get())
                        .map_or(FrameOwner::Unowned, FrameOwner::Domain)
                };
                let got = crate::cache_flush(dom(by), &domains, arch, &op, &lookup);
                assert_eq!(got.map(|r| r.is_some()), expected, "{op:?}");
                if let Ok(Some(range)) = got {
                    assert_eq!(range.mfn.get(), mfn);
                    assert_eq!((range.offset, range.length), (op.offset, op.length));
                }
                assert_eq!(self.frames.refs(mfn), refs, "cache_flush kept a reference");
            }
            Op::ReleaseAll { by } => {
                let domains = self.domains();
                let released = self.maptracks[by].release_all(&domains, self.frames, &mut || {});
                assert_eq!(released, self.mappings[by].len());
                self.mappings[by].clear();
            }
        }
    }

    fn map(&mut self, by: usize, granter_id: DomId, gref: GrantRef, flags: u32) {
        let mut op = GnttabMapGrantRef {
            host_addr: host_addr_of(gref),
            flags,
            gref: gref.0,
            dom: granter_id.get(),
            ..GnttabMapGrantRef::default()
        };
        // What the entry says before the map, for the soundness check.
        let granter = (0..DOMAINS).find(|&i| dom(i) == granter_id);
        let before = granter.map(|g| self.entry_view(g, gref));
        // Xen checks the entry's type only on the first pin: a map that joins
        // an existing pin succeeds even after the granter ended access (the
        // grant then stays busy until the last unmap).
        let pinned_before = granter.is_some_and(|g| self.mapped(g, gref));
        let domains = self.domains();
        self.maptracks[by].map_grant_ref(&domains, self.frames, &mut op);
        let map_flags = GntMapFlags::from_bits_retain(flags);
        let kinds = map_flags & (GntMapFlags::HOST_MAP | GntMapFlags::DEVICE_MAP);
        if kinds.is_empty() {
            assert_eq!(op.status, GntSt::BadGntref.raw());
        }
        if op.status != GntSt::Okay.raw() {
            return;
        }
        let granter = granter.expect("map of a domain that does not exist succeeded");
        let readonly = map_flags.contains(GntMapFlags::READONLY);
        let (flags_seen, grantee, tampered) = before.expect("granter exists");
        if !tampered {
            if !pinned_before {
                assert_eq!(
                    GrantType::of(flags_seen),
                    GrantType::PermitAccess,
                    "map of a non-grant"
                );
            }
            assert_eq!(grantee, dom(by).get(), "map of a grant to another domain");
            assert_eq!(
                flags_seen & GtfFlags::SUB_PAGE.bits(),
                0,
                "map of a sub-page grant"
            );
            if !readonly {
                assert_eq!(
                    flags_seen & GtfFlags::READONLY.bits(),
                    0,
                    "write map of r/o grant"
                );
            }
        }
        let mfn = op.dev_bus_addr >> 12;
        let previous = self.mappings[by].insert(
            op.handle,
            Mapping {
                granter,
                gref,
                kinds,
                readonly,
                mfn,
                host: op.host_addr,
            },
        );
        assert_eq!(previous, None, "handle {} handed out twice", op.handle);
    }

    /// (flags, domid, tampered) of an entry.
    fn entry_view(&self, granter: usize, gref: GrantRef) -> (u16, u16, bool) {
        let table = &self.tables[granter];
        let header = table.word(gref, 0).map_or(0, |w| w.load(Ordering::Relaxed));
        (
            hdr_flags(header),
            hdr_domid(header),
            self.tampered[granter].contains(&gref.0),
        )
    }

    fn unmap(&mut self, by: usize, handle: u32, host: Option<bool>, device: Option<bool>) {
        let known = self.mappings[by].get(&handle).copied();
        let mfn_addr = known.map_or(0x1234_5000, |m| m.mfn << 12);
        let mut op = GnttabUnmapGrantRef {
            host_addr: host.map_or(0, |right| {
                if right {
                    known.map_or(HOST_ADDR, |m| m.host)
                } else {
                    WRONG_ADDR
                }
            }),
            dev_bus_addr: device
                .map_or(0, |right| if right { mfn_addr } else { mfn_addr + 0x1000 }),
            handle,
            ..GnttabUnmapGrantRef::default()
        };
        let domains = self.domains();
        self.maptracks[by].unmap_grant_ref(&domains, self.frames, &mut op, &mut || {});
        let Some(mapping) = known else {
            assert_eq!(
                op.status,
                GntSt::BadHandle.raw(),
                "unmap of unknown handle {handle}"
            );
            return;
        };
        if device == Some(false) {
            assert_eq!(op.status, GntSt::BadDevAddr.raw());
            return;
        }
        let mut removed = GntMapFlags::empty();
        if host.is_some() && mapping.kinds.contains(GntMapFlags::HOST_MAP) {
            if host == Some(false) {
                assert_eq!(op.status, GntSt::GeneralError.raw());
                return;
            }
            removed |= GntMapFlags::HOST_MAP;
        }
        if device.is_some() && mapping.kinds.contains(GntMapFlags::DEVICE_MAP) {
            removed |= GntMapFlags::DEVICE_MAP;
        }
        assert_eq!(op.status, GntSt::Okay.raw(), "{op:?} of {mapping:?}");
        let left = mapping.kinds & !removed;
        if left.is_empty() {
            self.mappings[by].remove(&handle);
        } else if let Some(m) = self.mappings[by].get_mut(&handle) {
            m.kinds = left;
        }
    }

    fn replace(&mut self, by: usize, handle: u32, right: bool, new_addr: u64, pte_ok: bool) {
        let known = self.mappings[by].get(&handle).copied();
        let host_addr = match (right, known) {
            (true, Some(m)) => m.host,
            _ => WRONG_ADDR,
        };
        let mut op = crate::GnttabUnmapAndReplace {
            host_addr,
            new_addr,
            handle,
            ..Default::default()
        };
        let domains = self.domains();
        let mut moved = 0;
        self.maptracks[by].unmap_and_replace(
            &domains,
            self.frames,
            core::slice::from_mut(&mut op),
            &mut |from, to| {
                assert_eq!((from, to), (host_addr, new_addr));
                moved += 1;
                pte_ok
            },
            &mut || {},
        );
        let Some(mapping) = known else {
            assert_eq!(op.status, GntSt::BadHandle.raw(), "{op:?}");
            return;
        };
        if !mapping.kinds.contains(GntMapFlags::HOST_MAP) {
            assert_eq!(op.status, GntSt::Okay.raw(), "{op:?}");
            assert_eq!(moved, 0);
            return;
        }
        if !right || (new_addr != 0 && (new_addr == host_addr || !pte_ok)) {
            assert_eq!(op.status, GntSt::GeneralError.raw(), "{op:?}");
            return;
        }
        assert_eq!(op.status, GntSt::Okay.raw(), "{op:?} of {mapping:?}");
        assert_eq!(moved, u32::from(new_addr != 0));
        let left = mapping.kinds - GntMapFlags::HOST_MAP;
        if left.is_empty() {
            self.mappings[by].remove(&handle);
        } else if let Some(m) = self.mappings[by].get_mut(&handle) {
            m.kinds = left;
        }
        if new_addr != 0 {
            for m in self.mappings[by].values_mut() {
                if m.kinds.contains(GntMapFlags::HOST_MAP) && m.host == new_addr {
                    m.host = host_addr;
                }
            }
        }
    }

    /// The invariants listed in the module docs.
    fn check(&self) {
        use crate::active::{PIN_DEV_READ, PIN_DEV_WRITE, PIN_HOST_READ, PIN_HOST_WRITE};
        // Maptracks equal the model.
        for (by, maptrack) in self.maptracks.iter().enumerate() {
            for handle in 0..MAPTRACK_LIMIT {
                let live = maptrack.mapping(GrantHandle(handle));
                let model = self.mappings[by].get(&handle);
                match (live, model) {
                    (None, None) => {}
                    (Some(live), Some(model)) => {
                        assert_eq!(live.domid, dom(model.granter));
                        assert_eq!(live.gref, model.gref.0);
                        let kinds = GntMapFlags::from_bits_retain(live.flags)
                            & (GntMapFlags::HOST_MAP | GntMapFlags::DEVICE_MAP);
                        assert_eq!(kinds, model.kinds, "kinds of handle {handle}");
                    }
                    (live, model) => panic!("handle {handle} of d{by}: {live:?} vs {model:?}"),
                }
            }
        }
        // Pins equal the mappings; status bits follow the pins.
        let mut pins: BTreeMap<(usize, u32), (u32, usize)> = BTreeMap::new();
        let mut refs: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
        for (mapper, mappings) in self.mappings.iter().enumerate() {
            for m in mappings.values() {
                let pin = pins.entry((m.granter, m.gref.0)).or_insert((0, mapper));
                assert_eq!(pin.1, mapper, "one entry pinned by two domains");
                let r = refs.entry(m.mfn).or_default();
                for kind in m.kinds.iter() {
                    pin.0 += match (kind == GntMapFlags::HOST_MAP, m.readonly) {
                        (true, true) => PIN_HOST_READ,
                        (true, false) => PIN_HOST_WRITE,
                        (false, true) => PIN_DEV_READ,
                        (false, false) => PIN_DEV_WRITE,
                    };
                    r.0 += 1;
                    r.1 += u32::from(!m.readonly);
                }
            }
        }
        for (granter, table) in self.tables.iter().enumerate() {
            for &gref in self.refs.iter().filter(|gref| gref.0 < table.nr_entries()) {
                let pin = table.pin_count(gref).unwrap();
                let expected = pins.get(&(granter, gref.0)).map_or(0, |p| p.0);
                assert_eq!(pin, expected, "pin of d{} {gref:?}", granter + 1);
                if self.tampered[granter].contains(&gref.0) {
                    continue;
                }
                let (flags, grantee, _) = self.entry_view(granter, gref);
                let bits = match table.version() {
                    GrantVersion::V1 => flags,
                    GrantVersion::V2 => table.status(gref).map_or(0, |s| s.load(Ordering::Relaxed)),
                };
                let bits = GtfFlags::from_bits_retain(bits);
                if GrantType::of(flags) == GrantType::AcceptTransfer {
                    continue;
                }
                assert_eq!(
                    bits.contains(GtfFlags::READING),
                    pin != 0,
                    "GTF_reading of {gref:?}"
                );
                assert_eq!(
                    bits.contains(GtfFlags::WRITING),
                    pin & PIN_WRITE_MASK != 0,
                    "GTF_writing of {gref:?}"
                );
                // A v2 granter may revoke a pinned entry (the pins stay); a
                // reserved entry revoked so keeps only its busy bits when
                // the table goes back to v1.
                let revoked = (table.version() == GrantVersion::V2 && flags == 0)
                    || GrantType::of(flags) == GrantType::Invalid;
                if pin != 0 && !revoked {
                    let mapper = pins[&(granter, gref.0)].1;
                    assert_eq!(GrantType::of(flags), GrantType::PermitAccess);
                    assert_eq!(grantee, dom(mapper).get());
                }
            }
        }
        // Frame references equal what pins and mappings hold.
        for (mfn, general, typed) in self.frames.all_refs() {
            let (want_general, want_typed) = refs.get(&mfn).copied().unwrap_or((0, 0));
            assert_eq!(
                (general, typed),
                (want_general, want_typed),
                "references of mfn {mfn:#x}"
            );
        }
    }
}

/// Decodes `data` into operations and checks each against the model; panics
/// on the first divergence or broken invariant.
pub fn run(data: &[u8]) {
    let shared: [Vec<AtomicU32>; DOMAINS] = core::array::from_fn(|_| {
        (0..MAX_FRAMES as usize * WORDS_PER_FRAME)
            .map(|_| AtomicU32::new(0))
            .collect()
    });
    // Under miri, which interprets every constructor, fewer active entries
    // (refs beyond them are out of range, consistently for every check).
    let entries = if cfg!(miri) {
        32
    } else {
        MAX_FRAMES as usize * 512
    };
    let status: [Vec<AtomicU16>; DOMAINS] = core::array::from_fn(|_| {
        (0..STATUS_ENTRIES_PER_FRAME as usize)
            .take(entries)
            .map(|_| AtomicU16::new(0))
            .collect()
    });
    let mems: [SliceMemory<'_>; DOMAINS] = core::array::from_fn(|i| {
        SliceMemory::new(&shared[i], &status[i], 0x1000 * (i as u64 + 1), 0x8000)
    });
    let active: [Vec<ActiveEntry>; DOMAINS] =
        core::array::from_fn(|_| (0..entries).map(|_| ActiveEntry::new()).collect());
    let storage: [Vec<MaptrackEntry>; DOMAINS] = core::array::from_fn(|_| {
        (0..MAPTRACK_LIMIT as usize)
            .map(|_| MaptrackEntry::new())
            .collect()
    });
    let frames = ModelFrames::new();
    for i in 0..DOMAINS {
        for gfn in 0..GFNS {
            frames.give(dom(i), gfn, mfn_of(i, gfn));
            frames.set_byte(mfn_of(i, gfn), 0, gfn as u8 + 1);
        }
    }
    // Domain 1's frame 2 is a page table; domain 2's frame 3 is paged out.
    frames.set_unwritable(mfn_of(0, 2), true);
    frames.set_paged_out(dom(1), 3, true);
    let config = GrantTableConfig {
        max_frames: MAX_FRAMES,
        ..GrantTableConfig::DEFAULT
    };
    let mut world = World {
        tables: core::array::from_fn(|i| {
            GrantTable::new(dom(i), &mems[i], &active[i], config).expect("table")
        }),
        mems: core::array::from_fn(|i| &mems[i]),
        maptracks: core::array::from_fn(|i| {
            Maptrack::new(dom(i), false, &storage[i], MAPTRACK_LIMIT)
        }),
        frames: &frames,
        mappings: core::array::from_fn(|_| BTreeMap::new()),
        tampered: core::array::from_fn(|_| BTreeSet::new()),
        refs: reachable_refs(),
    };
    for bytes in data.chunks(OP_BYTES) {
        world.apply(Op::decode(bytes));
        world.check();
    }
    // Teardown: both mappers die, then both granters; nothing stays behind.
    for by in 0..DOMAINS {
        let domains = world.domains();
        world.maptracks[by].release_all(&domains, &frames, &mut || {});
        world.mappings[by].clear();
    }
    world.check();
    for table in &mut world.tables {
        assert_eq!(table.teardown(), Ok(()));
    }
    for (mfn, general, typed) in frames.all_refs() {
        assert_eq!(
            (general, typed),
            (0, 0),
            "mfn {mfn:#x} kept references after teardown"
        );
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;

    fn ops(ops: &[[u8; OP_BYTES]]) -> Vec<u8> {
        ops.iter().flatten().copied().collect()
    }

    #[test]
    fn decoder_reaches_every_operation() {
        let mut seen = BTreeSet::new();
        for code in 0..18u8 {
            for b in 0u8..7 {
                let op = Op::decode(&[code, 0, b, 0]);
                seen.insert(
                    std::format!("{op:?}")
                        .split([' ', '{'])
                        .next()
                        .unwrap()
                        .to_string(),
                );
            }
        }
        assert_eq!(seen.len(), 21, "{seen:?}");
    }

    #[test]
    fn model_scenario_map_copy_unmap_end() {
        run(&ops(&[
            [0, 6, 9, 0],         // d1 grants ref 9 (gfn 0) to d2, read-write
            [7, 1, 9, 2],         // d2 maps d1's ref 9, host, rw
            [7, 1, 9, 7],         // d2 maps it again, host+device, ro
            [4, 0, 9, 0],         // d1 tries to end access: refused
            [12, 1, 9, 0],        // d2 copies (len 0)
            [10, 1, 0, 3],        // d2 unmaps handle 0 (host + device)
            [10, 1, 1, 3],        // d2 unmaps handle 1
            [4, 0, 9, 0],         // d1 ends access
            [14, 0, 2, 0],        // d1 switches to v2
            [1, 0x36, 10, 4],     // d1 sub-page grant of gfn 0 to d2
            [12, 0xc3, 10, 0x19], // copy through it
        ]));
    }

    #[test]
    fn model_scenario_replace_swap_and_cache_flush() {
        let replace = [16, 7, 5, 0];
        assert_eq!(
            Op::decode(&replace),
            Op::Replace {
                by: 1,
                handle: 0,
                right: true,
                new_addr: host_addr_of(GrantRef(10)),
                pte_ok: true,
            }
        );
        assert_eq!(
            Op::decode(&[16, 0, 3, 9]),
            Op::Swap {
                by: 0,
                a: GrantRef(9),
                b: GrantRef(0),
            }
        );
        let flush = [16, 11, 6, 0];
        assert_eq!(
            Op::decode(&flush),
            Op::CacheFlush {
                by: 1,
                op: crate::GnttabCacheFlush {
                    a: mfn_of(0, 0) << 12,
                    offset: 0,
                    length: 64,
                    op: crate::abi::GNTTAB_CACHE_CLEAN,
                },
                arm: false,
            }
        );
        run(&ops(&[
            flush,         // d2 flushes d1's frame: refused, not mapped
            [0, 6, 9, 0],  // d1 grants ref 9 (gfn 0) to d2, read-write
            [0, 6, 10, 1], // and ref 10 (gfn 1)
            [7, 1, 9, 2],  // d2 maps ref 9 (handle 0)
            [7, 1, 10, 2], // and ref 10 (handle 1), at another address
            flush,         // now allowed
            [16, 0, 3, 9], // d1 swaps ref 9 with ref 0: refused, mapped
            replace,       // d2 replaces handle 0 with handle 1's mapping
            [10, 1, 0, 1], // handle 0 is gone
            [10, 1, 1, 1], // handle 1 unmapped at its new address
            [16, 0, 3, 9], // now the swap goes through
            [16, 0, 4, 0], // get_version
            [4, 0, 0, 0],  // d1 ends access of ref 0 (was 9)
        ]));
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 2 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Any sequence of guest and hypercall operations from two domains
        /// keeps every mapping backed by a live grant with the right
        /// permission, pins and status bits equal to the mappings, and every
        /// frame's reference counts equal to what pins and mappings hold;
        /// teardown leaves no reference behind.
        #[test]
        #[cfg_attr(miri, ignore = "heavy under miri; model_scenario covers run()")]
        fn tables_match_model(chunks in proptest::collection::vec(
            any::<[u8; OP_BYTES]>(),
            0..if cfg!(miri) { 12 } else { 80 },
        )) {
            run(&chunks.concat());
        }
    }
}

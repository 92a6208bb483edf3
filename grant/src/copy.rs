//! `GNTTABOP_copy`: copies between grant references and/or the caller's own
//! frames (reference b.9).
//!
//! Each side is a grant reference (its `GNTCOPY_*` flag set) or, only for
//! `DOMID_SELF`, a frame number. The checks run in Xen's order: offset plus
//! length within the page on both sides (`GNTST_bad_copy_arg`), frame
//! numbers only for `DOMID_SELF` (`GNTST_permission_denied`), the domains
//! (`GNTST_bad_domain`); a zero length then succeeds without touching
//! anything. A source grant is pinned for reading, a destination grant for
//! writing (so `GTF_reading`, and `GTF_writing` on the destination, are set
//! for the copy's duration), each with the frame references a mapping of
//! that kind would hold; the copy must lie inside a sub-page grant's window
//! (`GNTST_general_error`). A v2 transitive grant is followed one level, to
//! an entry that must not be transitive itself nor belong to the same
//! domain; the transitive entry is pinned by one copy at a time.
//!
//! As Xen does, a batch keeps each side's claim across consecutive
//! elements that name the same grant (or local frame), so a run of copies
//! out of one grant pins, validates and references it once (see [`copy`]).

use hvmem_types::{DomId, Mfn};

use crate::abi::{FRAME_SIZE, GnttabCopy, GnttabCopyPtr, GrantRef};
use crate::active::{PIN_HOST_READ, PIN_HOST_WRITE, PIN_WRITE_MASK, PinnedKind, pin_can_add};
use crate::error::GrantError;
use crate::flags::{GntCopyFlags, GrantType, GtfFlags};
use crate::frames::{Domains, GrantFrames};
use crate::map::{gfn_error, lookup, pin_sub};
use crate::mem::{GrantVersion, hdr_domid, hdr_flags};
use crate::table::{GrantTable, status_of};

/// One side of a copy, claimed.
enum Claim<'d> {
    /// A frame of the caller's own, with a general reference (and a
    /// writable type reference if `writable`).
    Local { mfn: Mfn, writable: bool },
    /// A pinned grant.
    Grant(GrantClaim<'d>),
}

struct GrantClaim<'d> {
    table: &'d GrantTable<'d>,
    gref: GrantRef,
    mfn: Mfn,
    window: (u16, u16),
    readonly: bool,
    /// For a transitive grant: the underlying grant it pinned.
    inner: Option<(&'d GrantTable<'d>, GrantRef)>,
}

impl Claim<'_> {
    fn mfn(&self) -> Mfn {
        match self {
            Self::Local { mfn, .. } => *mfn,
            Self::Grant(claim) => claim.mfn,
        }
    }

    fn window(&self) -> (u16, u16) {
        match self {
            Self::Local { .. } => (0, FRAME_SIZE as u16),
            Self::Grant(claim) => claim.window,
        }
    }

    fn transitive(&self) -> bool {
        matches!(self, Self::Grant(GrantClaim { inner: Some(_), .. }))
    }
}

/// `GNTTABOP_copy` for a batch issued by `copier`; each element gets its
/// own status.
///
/// As in Xen, each side's claim (the pinned grant or the referenced local
/// frame) is kept for the next element: an element naming the same domain
/// id and the same grant reference (or frame number) as the one before it
/// on that side reuses it, without pinning, validating or referencing
/// again. A claim goes when an element names another one on its side, when
/// either side names another domain id, when an element fails (both
/// sides), and at the end of the batch. A claim through a transitive grant
/// is never kept (one copy at a time goes through a transitive entry).
pub fn copy<D, F>(copier: DomId, domains: &D, frames: &F, ops: &mut [GnttabCopy])
where
    D: Domains + ?Sized,
    F: GrantFrames + ?Sized,
{
    let mut src = None;
    let mut dst = None;
    for op in ops {
        let result = copy_one(copier, domains, frames, op, &mut src, &mut dst);
        if result.is_err() {
            drop_held(frames, &mut dst);
            drop_held(frames, &mut src);
        }
        op.status = status_of(result);
    }
    drop_held(frames, &mut dst);
    drop_held(frames, &mut src);
}

/// A side's claim kept for the next element, with what its element named.
struct Held<'d> {
    domid: u16,
    by_gref: bool,
    /// The grant reference or the frame number.
    named: u64,
    claim: Claim<'d>,
}

fn drop_held<F: GrantFrames + ?Sized>(frames: &F, held: &mut Option<Held<'_>>) {
    if let Some(held) = held.take() {
        release(frames, held.claim);
    }
}

fn copy_one<'d, D, F>(
    copier: DomId,
    domains: &'d D,
    frames: &F,
    op: &GnttabCopy,
    src_held: &mut Option<Held<'d>>,
    dst_held: &mut Option<Held<'d>>,
) -> Result<(), GrantError>
where
    D: Domains + ?Sized,
    F: GrantFrames + ?Sized,
{
    let flags = GntCopyFlags::from_bits_retain(op.flags);
    let len = usize::from(op.len);
    for side in [&op.source, &op.dest] {
        if usize::from(side.offset) + len > FRAME_SIZE {
            return Err(GrantError::CopyBeyondPage);
        }
    }
    let src_gref = flags.contains(GntCopyFlags::SOURCE_GREF);
    let dst_gref = flags.contains(GntCopyFlags::DEST_GREF);
    for (side, by_gref) in [(&op.source, src_gref), (&op.dest, dst_gref)] {
        if !by_gref && DomId::new(side.domid) != DomId::SELF {
            return Err(GrantError::CopyByFrameForeign);
        }
    }
    let src_table = side_table(copier, domains, &op.source, src_gref)?;
    let dst_table = side_table(copier, domains, &op.dest, dst_gref)?;
    if len == 0 {
        return Ok(());
    }
    let other_domain = |held: &Option<Held<'_>>, side: &GnttabCopyPtr| {
        held.as_ref().is_some_and(|h| h.domid != side.domid)
    };
    if other_domain(src_held, &op.source) || other_domain(dst_held, &op.dest) {
        drop_held(frames, dst_held);
        drop_held(frames, src_held);
    }
    let (src_mfn, src_window) = keep_or_claim(
        copier, domains, frames, &op.source, src_gref, src_table, true, src_held,
    )?;
    let (dst_mfn, dst_window) = keep_or_claim(
        copier, domains, frames, &op.dest, dst_gref, dst_table, false, dst_held,
    )?;
    let inside = |(start, length): (u16, u16), offset: u16| {
        offset >= start && usize::from(offset) + len <= usize::from(start) + usize::from(length)
    };
    if !inside(src_window, op.source.offset) || !inside(dst_window, op.dest.offset) {
        return Err(GrantError::CopyOutsideWindow);
    }
    frames.copy(
        src_mfn,
        usize::from(op.source.offset),
        dst_mfn,
        usize::from(op.dest.offset),
        len,
    );
    for held in [dst_held, src_held] {
        if held.as_ref().is_some_and(|h| h.claim.transitive()) {
            drop_held(frames, held);
        }
    }
    Ok(())
}

/// The frame and window of `side`: the kept claim if it names the same
/// grant or frame, else a new claim (dropping the kept one first).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn keep_or_claim<'d, D, F>(
    copier: DomId,
    domains: &'d D,
    frames: &F,
    side: &GnttabCopyPtr,
    by_gref: bool,
    table: Option<&'d GrantTable<'d>>,
    readonly: bool,
    held: &mut Option<Held<'d>>,
) -> Result<(Mfn, (u16, u16)), GrantError>
where
    D: Domains + ?Sized,
    F: GrantFrames + ?Sized,
{
    let named = if by_gref {
        u64::from(side.gref().0)
    } else {
        side.gmfn()
    };
    if let Some(kept) = held {
        if kept.by_gref == by_gref && kept.named == named {
            return Ok((kept.claim.mfn(), kept.claim.window()));
        }
    }
    drop_held(frames, held);
    let claim = claim(copier, domains, frames, side, table, readonly)?;
    let found = (claim.mfn(), claim.window());
    *held = Some(Held {
        domid: side.domid,
        by_gref,
        named,
        claim,
    });
    Ok(found)
}

/// The table a grant side names (`None` for a local frame).
fn side_table<'d, D: Domains + ?Sized>(
    copier: DomId,
    domains: &'d D,
    side: &GnttabCopyPtr,
    by_gref: bool,
) -> Result<Option<&'d GrantTable<'d>>, GrantError> {
    if !by_gref {
        return Ok(None);
    }
    let dom = match DomId::new(side.domid) {
        DomId::SELF => copier,
        dom => dom,
    };
    lookup(domains, dom).map(Some)
}

fn claim<'d, D, F>(
    copier: DomId,
    domains: &'d D,
    frames: &F,
    side: &GnttabCopyPtr,
    table: Option<&'d GrantTable<'d>>,
    readonly: bool,
) -> Result<Claim<'d>, GrantError>
where
    D: Domains + ?Sized,
    F: GrantFrames + ?Sized,
{
    let Some(table) = table else {
        let mfn = frames.get_gfn(copier, side.gmfn()).map_err(gfn_error)?;
        if !readonly && !frames.get_type(copier, mfn) {
            frames.put_page(mfn);
            return Err(GrantError::FrameInUse);
        }
        return Ok(Claim::Local {
            mfn,
            writable: !readonly,
        });
    };
    acquire(domains, frames, table, side.gref(), copier, readonly, true).map(Claim::Grant)
}

/// Pins `gref` of `table` for a copy by `grantee` (Xen
/// `acquire_grant_for_copy`).
fn acquire<'d, D, F>(
    domains: &'d D,
    frames: &F,
    table: &'d GrantTable<'d>,
    gref: GrantRef,
    grantee: DomId,
    readonly: bool,
    allow_transitive: bool,
) -> Result<GrantClaim<'d>, GrantError>
where
    D: Domains + ?Sized,
    F: GrantFrames + ?Sized,
{
    let incr = if readonly {
        PIN_HOST_READ
    } else {
        PIN_HOST_WRITE
    };
    let (active, slot) = table.lock_slot(gref)?;
    let pin = active.pin();
    if pin != 0 {
        if active.domid() != grantee || active.kind() == PinnedKind::Transitive {
            return Err(GrantError::PinConflict);
        }
        if !pin_can_add(pin, incr) {
            return Err(GrantError::PinOverflow);
        }
    }
    let first = pin == 0;
    if first || (!readonly && pin & PIN_WRITE_MASK == 0) {
        table.set_status(&slot, !first, readonly, false, grantee)?;
    }
    if first {
        let flags = hdr_flags(slot.header());
        let v2 = table.version() == GrantVersion::V2;
        if v2 && GrantType::of(flags) == GrantType::Transitive {
            let word1 = slot.word1();
            let trans_dom = DomId::new(hdr_flags(word1));
            let trans_gref = GrantRef(
                slot.word(2)
                    .map_or(0, |w| w.load(crate::sync::Ordering::Acquire)),
            );
            let inner_table = (allow_transitive && trans_dom != table.owner())
                .then(|| lookup(domains, trans_dom).ok())
                .flatten();
            let Some(inner_table) = inner_table else {
                table.reduce_status(&slot, 0);
                return Err(GrantError::NotGranted);
            };
            // Pinned exclusively while the inner grant is acquired without
            // holding this lock, so no two active-entry locks nest.
            active.set_target(grantee, Mfn::new(0), PinnedKind::Transitive, (0, 4096));
            active.set_pin(incr);
            drop(active);
            let owner = table.owner();
            return match acquire(
                domains,
                frames,
                inner_table,
                trans_gref,
                owner,
                readonly,
                false,
            ) {
                Ok(inner) => Ok(GrantClaim {
                    table,
                    gref,
                    mfn: inner.mfn,
                    window: inner.window,
                    readonly,
                    inner: Some((inner_table, trans_gref)),
                }),
                Err(error) => {
                    unpin(frames, table, gref, incr, Mfn::new(0), false);
                    Err(error)
                }
            };
        }
        let (kind, window) = if v2 && flags & GtfFlags::SUB_PAGE.bits() != 0 {
            let word1 = slot.word1();
            let (start, length) = (hdr_flags(word1), hdr_domid(word1));
            if usize::from(start) + usize::from(length) > FRAME_SIZE {
                table.reduce_status(&slot, 0);
                return Err(GrantError::NotGranted);
            }
            (PinnedKind::SubPage, (start, length))
        } else {
            (PinnedKind::FullPage, (0, FRAME_SIZE as u16))
        };
        match frames.get_gfn(table.owner(), slot.frame()) {
            Ok(mfn) => active.set_target(grantee, mfn, kind, window),
            Err(error) => {
                table.reduce_status(&slot, 0);
                return Err(gfn_error(error));
            }
        }
    }
    let mfn = active.mfn();
    // The first pin's translation reference is this copy's general
    // reference (as in Xen); the entry itself holds none.
    let referenced = match (first, readonly) {
        (true, true) => true,
        (true, false) => frames.get_type(table.owner(), mfn),
        (false, true) => frames.get_page(table.owner(), mfn),
        (false, false) => frames.get_page_and_type(table.owner(), mfn),
    };
    if !referenced {
        if first {
            frames.put_page(mfn);
            active.clear_target();
        }
        table.reduce_status(&slot, pin);
        return Err(GrantError::FrameInUse);
    }
    active.set_pin(pin + incr);
    Ok(GrantClaim {
        table,
        gref,
        mfn,
        window: active.window(),
        readonly,
        inner: None,
    })
}

/// Drops a copy's pin `incr` on `gref`, with the copy's references if
/// `referenced`.
fn unpin<F: GrantFrames + ?Sized>(
    frames: &F,
    table: &GrantTable<'_>,
    gref: GrantRef,
    incr: u32,
    mfn: Mfn,
    referenced: bool,
) {
    let Ok((active, slot)) = table.lock_slot(gref) else {
        debug_assert!(false, "pinned entry left the table");
        return;
    };
    let Some(left) = pin_sub(active.pin(), incr) else {
        debug_assert!(false, "copy pin missing");
        return;
    };
    active.set_pin(left);
    if referenced {
        if incr == PIN_HOST_READ {
            frames.put_page(mfn);
        } else {
            frames.put_page_and_type(mfn);
        }
    }
    table.reduce_status(&slot, left);
    if left == 0 {
        active.clear_target();
    }
}

fn release<F: GrantFrames + ?Sized>(frames: &F, claim: Claim<'_>) {
    match claim {
        Claim::Local { mfn, writable } => {
            if writable {
                frames.put_page_and_type(mfn);
            } else {
                frames.put_page(mfn);
            }
        }
        Claim::Grant(claim) => {
            let incr = if claim.readonly {
                PIN_HOST_READ
            } else {
                PIN_HOST_WRITE
            };
            match claim.inner {
                Some((inner_table, inner_gref)) => {
                    unpin(frames, inner_table, inner_gref, incr, claim.mfn, true);
                    unpin(frames, claim.table, claim.gref, incr, claim.mfn, false);
                }
                None => unpin(frames, claim.table, claim.gref, incr, claim.mfn, true),
            }
        }
    }
}

//! `GNTTABOP_copy`: copies between grant references and/or the caller's own
//! frames (Xen `xen/common/grant_table.c`).
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
use crate::active::{
    Active, ActiveEntry, PIN_HOST_READ, PIN_HOST_WRITE, PIN_WRITE_MASK, PinnedKind, pin_can_add,
};
use crate::error::GrantError;
use crate::flags::{GntCopyFlags, GrantType, GtfFlags};
use crate::frames::{Domains, GrantFrames};
use crate::map::{gfn_error, lookup, pin_sub};
use crate::mem::{GrantVersion, hdr_domid, hdr_flags};
use crate::table::{GrantTable, StatusWord, status_of};

/// A pinned entry's active entry and status bits, found once when it is
/// pinned and used again to unpin it (valid while the table is borrowed:
/// the table cannot shrink or change version meanwhile).
#[derive(Clone, Copy)]
struct Pinned<'d> {
    entry: &'d ActiveEntry,
    /// `None` only if the memory lacks the word, in which case no pin
    /// could set a bit there (`set_status` refuses first).
    status: Option<StatusWord<'d>>,
}

/// What a side's claim holds, and so what letting it go drops.
#[derive(Clone, Copy)]
enum Hold<'d> {
    /// A frame of the caller's own, with a general reference (and a
    /// writable type reference if `writable`).
    Local { writable: bool },
    /// A pinned grant, with the copy's references on its frame.
    Grant { pinned: Pinned<'d> },
    /// A transitive grant, pinned without references, and the grant it
    /// names, pinned with them.
    Transitive {
        outer: Pinned<'d>,
        inner: Pinned<'d>,
    },
}

/// One side of a copy, claimed, with what its element named (to tell
/// whether the next element names the same).
#[derive(Clone, Copy)]
struct Held<'d> {
    mfn: Mfn,
    /// The accessible window: (first byte, length).
    window: (u16, u16),
    domid: u16,
    by_gref: bool,
    readonly: bool,
    /// The grant reference or the frame number.
    named: u64,
    hold: Hold<'d>,
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

#[inline(always)]
fn drop_held<F: GrantFrames + ?Sized>(frames: &F, held: &mut Option<Held<'_>>) {
    if let Some(held) = held.take() {
        release(frames, &held);
    }
}

#[inline(always)]
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
    let src = keep_or_claim(
        copier, domains, frames, &op.source, src_gref, src_table, true, src_held,
    )?;
    let dst = keep_or_claim(
        copier, domains, frames, &op.dest, dst_gref, dst_table, false, dst_held,
    )?;
    let inside = |(start, length): (u16, u16), offset: u16| {
        offset >= start && usize::from(offset) + len <= usize::from(start) + usize::from(length)
    };
    if !inside(src.window, op.source.offset) || !inside(dst.window, op.dest.offset) {
        return Err(GrantError::CopyOutsideWindow);
    }
    frames.copy(
        src.mfn,
        usize::from(op.source.offset),
        dst.mfn,
        usize::from(op.dest.offset),
        len,
    );
    for held in [dst_held, src_held] {
        if held
            .as_ref()
            .is_some_and(|h| matches!(h.hold, Hold::Transitive { .. }))
        {
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
) -> Result<Found, GrantError>
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
            return Ok(Found {
                mfn: kept.mfn,
                window: kept.window,
            });
        }
    }
    drop_held(frames, held);
    let (mfn, window, hold) = claim(copier, domains, frames, side, table, readonly)?;
    *held = Some(Held {
        mfn,
        window,
        domid: side.domid,
        by_gref,
        readonly,
        named,
        hold,
    });
    Ok(Found { mfn, window })
}

/// The frame and window a side's claim gives the copy.
struct Found {
    mfn: Mfn,
    window: (u16, u16),
}

/// The table a grant side names (`None` for a local frame).
#[inline(always)]
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

/// Claims `side`: references the caller's own frame, or pins the grant.
#[inline(always)]
fn claim<'d, D, F>(
    copier: DomId,
    domains: &'d D,
    frames: &F,
    side: &GnttabCopyPtr,
    table: Option<&'d GrantTable<'d>>,
    readonly: bool,
) -> Result<(Mfn, (u16, u16), Hold<'d>), GrantError>
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
        let hold = Hold::Local {
            writable: !readonly,
        };
        return Ok((mfn, (0, FRAME_SIZE as u16), hold));
    };
    let acquired = acquire::<D, F, true>(domains, frames, table, side.gref(), copier, readonly)?;
    let hold = match acquired.inner {
        None => Hold::Grant {
            pinned: acquired.pinned,
        },
        Some(inner) => Hold::Transitive {
            outer: acquired.pinned,
            inner,
        },
    };
    Ok((acquired.mfn, acquired.window, hold))
}

/// Pins `gref` of `table` for a copy by `grantee` (Xen
/// `acquire_grant_for_copy`); a transitive entry is followed only if
/// `TRANSITIVE` (the grant a transitive entry names is acquired with it
/// off, so no chain goes deeper than one level and nothing recurses).
#[inline(always)]
fn acquire<'d, D, F, const TRANSITIVE: bool>(
    domains: &'d D,
    frames: &F,
    table: &'d GrantTable<'d>,
    gref: GrantRef,
    grantee: DomId,
    readonly: bool,
) -> Result<Acquired<'d>, GrantError>
where
    D: Domains + ?Sized,
    F: GrantFrames + ?Sized,
{
    let incr = if readonly {
        PIN_HOST_READ
    } else {
        PIN_HOST_WRITE
    };
    let (entry, slot) = table.entry_slot(gref)?;
    let status = slot.status_word();
    let active = entry.lock();
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
    let pinned = Pinned { entry, status };
    let (mfn, window) = if first {
        let v2 = table.version() == GrantVersion::V2;
        // Only a v2 entry can be transitive or sub-page.
        let flags = if v2 { hdr_flags(slot.header()) } else { 0 };
        if v2 && GrantType::of(flags) == GrantType::Transitive {
            if !TRANSITIVE {
                reduce_status(status, 0);
                return Err(GrantError::NotGranted);
            }
            let trans_dom = DomId::new(hdr_flags(slot.word1()));
            let trans_gref = GrantRef(
                slot.word(2)
                    .map_or(0, |w| w.load(crate::sync::Ordering::Acquire)),
            );
            return acquire_transitive(
                domains, frames, table, active, pinned, grantee, incr, trans_dom, trans_gref,
            );
        }
        let (kind, window) = if v2 && flags & GtfFlags::SUB_PAGE.bits() != 0 {
            let word1 = slot.word1();
            let (start, length) = (hdr_flags(word1), hdr_domid(word1));
            if usize::from(start) + usize::from(length) > FRAME_SIZE {
                reduce_status(status, 0);
                return Err(GrantError::NotGranted);
            }
            (PinnedKind::SubPage, (start, length))
        } else {
            (PinnedKind::FullPage, (0, FRAME_SIZE as u16))
        };
        match frames.get_gfn(table.owner(), slot.frame()) {
            Ok(mfn) => {
                active.set_target(grantee, mfn, kind, window);
                (mfn, window)
            }
            Err(error) => {
                reduce_status(status, 0);
                return Err(gfn_error(error));
            }
        }
    } else {
        (active.mfn(), active.window())
    };
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
        reduce_status(status, pin);
        return Err(GrantError::FrameInUse);
    }
    active.set_pin(pin + incr);
    Ok(Acquired {
        mfn,
        window,
        pinned,
        inner: None,
    })
}

/// A grant [`acquire`] pinned: its frame and window, and for a transitive
/// grant the entry it names (pinned with the references) besides its own
/// (pinned without).
struct Acquired<'d> {
    mfn: Mfn,
    window: (u16, u16),
    pinned: Pinned<'d>,
    inner: Option<Pinned<'d>>,
}

/// The rest of [`acquire`] for a first pin of a v2 transitive entry (its
/// active entry locked, `GTF_reading`/`GTF_writing` set): follows it one
/// level, to the grant `trans_gref` of `trans_dom`.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn acquire_transitive<'d, D, F>(
    domains: &'d D,
    frames: &F,
    table: &'d GrantTable<'d>,
    active: Active<'d>,
    outer: Pinned<'d>,
    grantee: DomId,
    incr: u32,
    trans_dom: DomId,
    trans_gref: GrantRef,
) -> Result<Acquired<'d>, GrantError>
where
    D: Domains + ?Sized,
    F: GrantFrames + ?Sized,
{
    let readonly = incr == PIN_HOST_READ;
    let inner_table = (trans_dom != table.owner())
        .then(|| lookup(domains, trans_dom).ok())
        .flatten();
    let Some(inner_table) = inner_table else {
        reduce_status(outer.status, 0);
        return Err(GrantError::NotGranted);
    };
    // Pinned exclusively while the inner grant is acquired without holding
    // this lock, so no two active-entry locks nest.
    active.set_target(grantee, Mfn::new(0), PinnedKind::Transitive, (0, 4096));
    active.set_pin(incr);
    drop(active);
    let owner = table.owner();
    match acquire::<D, F, false>(domains, frames, inner_table, trans_gref, owner, readonly) {
        Ok(inner) => Ok(Acquired {
            mfn: inner.mfn,
            window: inner.window,
            pinned: outer,
            inner: Some(inner.pinned),
        }),
        Err(error) => {
            unpin(frames, outer, incr, Mfn::new(0), false);
            Err(error)
        }
    }
}

/// Drops a copy's pin `incr` on the entry `pinned`, with the copy's
/// references if `referenced`.
#[inline(always)]
fn unpin<F: GrantFrames + ?Sized>(
    frames: &F,
    pinned: Pinned<'_>,
    incr: u32,
    mfn: Mfn,
    referenced: bool,
) {
    let active = pinned.entry.lock();
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
    reduce_status(pinned.status, left);
    if left == 0 {
        active.clear_target();
    }
}

/// [`StatusWord::reduce`] if the entry has a status word (as
/// `EntrySlot::reduce_status`).
#[inline(always)]
fn reduce_status(status: Option<StatusWord<'_>>, pin: u32) {
    if let Some(status) = status {
        status.reduce(pin);
    }
}

/// Lets a side's claim go: its pins and references.
#[inline(always)]
fn release<F: GrantFrames + ?Sized>(frames: &F, held: &Held<'_>) {
    let incr = if held.readonly {
        PIN_HOST_READ
    } else {
        PIN_HOST_WRITE
    };
    let mfn = held.mfn;
    match held.hold {
        Hold::Local { writable } => {
            if writable {
                frames.put_page_and_type(mfn);
            } else {
                frames.put_page(mfn);
            }
        }
        Hold::Grant { pinned } => unpin(frames, pinned, incr, mfn, true),
        Hold::Transitive { outer, inner } => {
            unpin(frames, inner, incr, mfn, true);
            unpin(frames, outer, incr, mfn, false);
        }
    }
}

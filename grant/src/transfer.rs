//! `GNTTABOP_transfer`: a PV guest gives one of its frames to another domain
//! that offered an accept-transfer entry (Xen `xen/common/grant_table.c`),
//! in Xen's order:
//! steal the frame from the sender (`GNTST_bad_page` if it is not a valid
//! frame of the sender or has other users, the frame then staying with the
//! sender: Xen's `steal_page` fails with `-EINVAL` for both), find the receiver
//! (`GNTST_bad_domain`), check that a v1 PV receiver can address the frame
//! (`GNTST_address_too_big`) and can take one more frame
//! (`GNTST_general_error`), commit the receiver's entry (flags exactly
//! `GTF_accept_transfer`, grantee the sender; at most five CAS attempts),
//! assign the frame, write its MFN into the entry for a PV receiver, and
//! only then set `GTF_transfer_completed`.
//!
//! Once stolen, a frame that cannot be delivered is freed, never returned:
//! after any failure other than `GNTST_bad_page` the sender has lost the
//! frame, as the ABI documents.

use hvmem_types::{DomId, Mfn};

use crate::abi::{GnttabTransfer, GrantRef};
use crate::error::GrantError;
use crate::flags::{GrantType, GtfFlags};
use crate::frames::{Domains, GrantFrames, StealError};
use crate::map::lookup;
use crate::mem::{GrantVersion, hdr_domid, hdr_flags, hdr_word};
use crate::sync::{Ordering, fence};
use crate::table::{GrantTable, status_of};

/// CAS attempts on the receiver's entry (Xen: 5).
const COMMIT_RETRIES: u32 = 5;

/// `GNTTABOP_transfer` for a batch sent by `sender`; each element gets its
/// own status.
///
/// Each element first takes the frame from the sender
/// ([`GrantFrames::steal_page`]). If a later step fails (bad receiver,
/// bad reference, the receiver cannot address or take the frame, the
/// receiver's entry does not offer the transfer), the frame is freed
/// through [`GrantFrames::free_page`]: the sender has lost it. So after any
/// status other than `GNTST_okay` or `GNTST_bad_page`, the frame may be
/// gone:
///
/// - `GNTST_okay`: the receiver has the frame.
/// - `GNTST_bad_page`: the steal was refused (not a valid frame of the
///   sender, or one with other users: [`StealError`]); nothing changed
///   and the sender keeps the frame.
/// - any other status: the frame was freed.
pub fn transfer<D, F>(sender: DomId, domains: &D, frames: &F, ops: &mut [GnttabTransfer])
where
    D: Domains + ?Sized,
    F: GrantFrames + ?Sized,
{
    for op in ops {
        op.status = status_of(transfer_one(sender, domains, frames, op));
    }
}

fn transfer_one<D, F>(
    sender: DomId,
    domains: &D,
    frames: &F,
    op: &GnttabTransfer,
) -> Result<(), GrantError>
where
    D: Domains + ?Sized,
    F: GrantFrames + ?Sized,
{
    let mfn = frames
        .steal_page(sender, op.mfn)
        .map_err(|error| match error {
            StealError::BadPage => GrantError::BadPage,
            // Xen: steal_page fails with -EINVAL for a frame with other
            // users too, and gnttab_transfer answers -EINVAL with
            // GNTST_bad_page, the one status after which the sender keeps
            // its frame.
            StealError::InUse => GrantError::BadPage,
        })?;
    let delivered = deliver(sender, domains, frames, op, mfn);
    if delivered.is_err() {
        frames.free_page(mfn);
    }
    delivered
}

fn deliver<D, F>(
    sender: DomId,
    domains: &D,
    frames: &F,
    op: &GnttabTransfer,
    mfn: Mfn,
) -> Result<(), GrantError>
where
    D: Domains + ?Sized,
    F: GrantFrames + ?Sized,
{
    let receiver = lookup(domains, DomId::new(op.domid))?;
    let translated = receiver.config().translated;
    if !translated && receiver.version() == GrantVersion::V1 && mfn.get() >> 32 != 0 {
        return Err(GrantError::AddressTooBig);
    }
    if !frames.can_receive(receiver.owner()) {
        return Err(GrantError::ReceiverFull);
    }
    let gref = GrantRef(op.gref);
    // The active-entry lock keeps two transfers to one entry apart.
    let active = receiver.lock(gref)?;
    commit(receiver, gref, sender)?;
    let slot = receiver.entry_frame(gref);
    if !frames.assign_page(receiver.owner(), mfn, slot) {
        uncommit(receiver, gref);
        return Err(GrantError::ReceiverFull);
    }
    if !translated {
        receiver.set_entry_frame(gref, mfn.get());
    }
    // The frame number is visible before the completion flag.
    fence(Ordering::Release);
    if let Some(header) = receiver.word(gref, 0) {
        header.fetch_or(
            hdr_word(GtfFlags::TRANSFER_COMPLETED.bits(), 0),
            Ordering::Release,
        );
    }
    drop(active);
    Ok(())
}

/// Sets `GTF_transfer_committed` on an entry offering exactly an accept
/// transfer to `sender`.
fn commit(receiver: &GrantTable<'_>, gref: GrantRef, sender: DomId) -> Result<(), GrantError> {
    let header = receiver.word(gref, 0).ok_or(GrantError::RefOutOfRange)?;
    let mut seen = header.load(Ordering::Acquire);
    for _ in 0..COMMIT_RETRIES {
        if hdr_flags(seen) != GrantType::AcceptTransfer as u16 || hdr_domid(seen) != sender.get() {
            return Err(GrantError::NotGranted);
        }
        let committed = hdr_word(
            hdr_flags(seen) | GtfFlags::TRANSFER_COMMITTED.bits(),
            hdr_domid(seen),
        );
        match header.compare_exchange(seen, committed, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(now) => seen = now,
        }
    }
    Err(GrantError::UnstableEntry)
}

/// Withdraws a commitment that could not be honoured.
fn uncommit(receiver: &GrantTable<'_>, gref: GrantRef) {
    if let Some(header) = receiver.word(gref, 0) {
        header.fetch_and(
            !hdr_word(GtfFlags::TRANSFER_COMMITTED.bits(), 0),
            Ordering::Release,
        );
    }
}

//! `GNTTABOP_cache_flush`: cache maintenance on part of a frame the caller
//! owns or maps through a grant (Xen `xen/common/grant_table.c`).
//!
//! The crate decides whether the request is allowed and what it covers; the
//! embedder performs the maintenance, because only it knows the machine's
//! caches. On x86 the caches are coherent with devices, so Xen answers a
//! clean (with or without invalidate) with a cache write-back and an
//! invalidate alone with `-EOPNOTSUPP`; on Arm every combination is
//! carried out. [`CacheArch`] selects which of those answers the call
//! gives.

use hvmem_types::{DomId, Mfn};

use crate::abi::{FRAME_SIZE, GNTTAB_CACHE_CLEAN, GNTTAB_CACHE_INVAL, GnttabCacheFlush};
use crate::error::CallError;
use crate::frames::Domains;

/// The architecture whose cache operations the embedder carries out.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CacheArch {
    /// x86: invalidate without clean is not offered (`-EOPNOTSUPP`).
    X86,
    /// Arm: clean, invalidate and both are offered.
    Arm,
}

/// Who owns a frame, as the embedder's frame table knows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FrameOwner {
    /// Not a valid frame number (`-EINVAL`).
    Invalid,
    /// A valid frame no domain owns (`-EPERM`).
    Unowned,
    /// The owning domain.
    Domain(DomId),
}

/// The maintenance the embedder is to perform.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CacheFlushRange {
    /// The frame.
    pub mfn: Mfn,
    /// First byte.
    pub offset: u16,
    /// Bytes (at least one; `offset + length` stays within the frame).
    pub length: u16,
    /// Write dirty lines back.
    pub clean: bool,
    /// Discard the lines.
    pub invalidate: bool,
}

/// `GNTTABOP_cache_flush` for one element issued by `caller`, in Xen's
/// order of checks: an offset or length beyond the frame, or flags other
/// than `GNTTAB_CACHE_CLEAN` / `GNTTAB_CACHE_INVAL` (which includes
/// `GNTTAB_CACHE_SOURCE_GREF`) are `-EINVAL`; a zero length or no
/// operation is done at once (`Ok(None)`); the frame (`dev_bus_addr >>
/// 12`) must be valid (`-EINVAL`) and owned by a domain with a grant table
/// (`-EPERM`); a frame of another domain must be one that domain granted to
/// `caller` and that `caller` has pinned (mapped or being copied),
/// `-EINVAL` otherwise; on x86 an invalidate without clean is then
/// `-EOPNOTSUPP`. `owner` is the embedder's frame-table lookup, which
/// should keep the frame from being freed until the maintenance is done
/// (Xen holds a page reference meanwhile).
///
/// # Errors
///
/// [`CallError::Invalid`], [`CallError::NotPermitted`],
/// [`CallError::NotSupported`]; nothing changes in any case.
pub fn cache_flush<D: Domains + ?Sized>(
    caller: DomId,
    domains: &D,
    arch: CacheArch,
    op: &GnttabCacheFlush,
    owner: &dyn Fn(Mfn) -> FrameOwner,
) -> Result<Option<CacheFlushRange>, CallError> {
    let page = FRAME_SIZE as u32;
    let (offset, length) = (u32::from(op.offset), u32::from(op.length));
    if offset >= page
        || length > page
        || offset + length > page
        || op.op & !(GNTTAB_CACHE_CLEAN | GNTTAB_CACHE_INVAL) != 0
    {
        return Err(CallError::Invalid);
    }
    if length == 0 || op.op == 0 {
        return Ok(None);
    }
    let mfn = Mfn::new(op.a >> 12);
    let owner = match owner(mfn) {
        FrameOwner::Invalid => return Err(CallError::Invalid),
        FrameOwner::Unowned => return Err(CallError::NotPermitted),
        FrameOwner::Domain(dom) => dom,
    };
    let table = domains.grant_table(owner).ok_or(CallError::NotPermitted)?;
    if owner != caller && !table.pinned_by(caller, mfn) {
        return Err(CallError::Invalid);
    }
    let clean = op.op & GNTTAB_CACHE_CLEAN != 0;
    let invalidate = op.op & GNTTAB_CACHE_INVAL != 0;
    if arch == CacheArch::X86 && !clean {
        return Err(CallError::NotSupported);
    }
    Ok(Some(CacheFlushRange {
        mfn,
        offset: op.offset,
        length: op.length,
        clean,
        invalidate,
    }))
}

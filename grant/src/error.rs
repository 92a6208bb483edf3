//! Why an operation was refused, and the one place where each reason becomes
//! the `GNTST_*` code (or errno) a guest sees.

use core::fmt;

/// `GNTST_*`: the per-operation status codes (Xen
/// `xen/include/public/grant_table.h`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(i16)]
pub enum GntSt {
    /// `GNTST_okay`.
    Okay = 0,
    /// `GNTST_general_error`.
    GeneralError = -1,
    /// `GNTST_bad_domain`.
    BadDomain = -2,
    /// `GNTST_bad_gntref`.
    BadGntref = -3,
    /// `GNTST_bad_handle`.
    BadHandle = -4,
    /// `GNTST_bad_virt_addr`.
    BadVirtAddr = -5,
    /// `GNTST_bad_dev_addr`.
    BadDevAddr = -6,
    /// `GNTST_no_device_space`.
    NoDeviceSpace = -7,
    /// `GNTST_permission_denied`.
    PermissionDenied = -8,
    /// `GNTST_bad_page`.
    BadPage = -9,
    /// `GNTST_bad_copy_arg`.
    BadCopyArg = -10,
    /// `GNTST_address_too_big`.
    AddressTooBig = -11,
    /// `GNTST_eagain`.
    Eagain = -12,
    /// `GNTST_no_space` (Xen 4.16+).
    NoSpace = -13,
}

impl GntSt {
    /// The raw `int16_t` status.
    #[must_use]
    pub const fn raw(self) -> i16 {
        self as i16
    }
}

/// Why a grant operation was refused: map, unmap, `unmap_and_replace`,
/// copy, transfer, `setup_table`, `get_status_frames`, swap,
/// or [`GrantTable::new`](crate::GrantTable::new) /
/// [`grow`](crate::GrantTable::grow). The hypercall operations write its
/// [`status`](Self::status) code into the operation structure; `new` and
/// `grow` return it.
///
/// In general nothing changed when one of these is returned. Exceptions:
///
/// - [`setup_table`](crate::setup_table) with a `frame_list` shorter than
///   `nr_frames` gives [`BadFrameList`](Self::BadFrameList), but the table
///   has grown anyway and the list holds the frames that fit (as in Xen).
///   [`get_status_frames`](crate::get_status_frames) also fills what fits
///   of a short list, but changes no table.
/// - [`transfer`](crate::transfer): once the sender's frame was taken, a
///   failure frees it. See `transfer` for which statuses mean that.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum GrantError {
    /// Map flags name neither a host nor a device mapping.
    NoMappingKind,
    /// A translated mapper asked for a device, application or PTE mapping.
    TranslatedMapperFlags,
    /// The domain named does not exist.
    UnknownDomain,
    /// The grant reference lies beyond the table.
    RefOutOfRange,
    /// The mapper's maptrack has no free handle.
    MaptrackFull,
    /// The entry is pinned by another domain, or is a sub-page or transitive
    /// grant being copied (such entries cannot be mapped meanwhile).
    PinConflict,
    /// A pin counter would overflow.
    PinOverflow,
    /// The entry does not grant this access to this domain (wrong type,
    /// wrong grantee, sub-page for a map).
    NotGranted,
    /// Write access to a read-only grant.
    ReadOnlyGrant,
    /// The granter kept rewriting the entry while we tried to pin it.
    UnstableEntry,
    /// The granted frame is invalid, not RAM, or not the granter's.
    BadPage,
    /// The granted frame is paged out; retry.
    PagedOut,
    /// A frame reference or writable type could not be taken.
    FrameInUse,
    /// The handle is out of range, free, or changed under us.
    BadHandle,
    /// The device address does not match the mapping.
    BadDevAddr,
    /// The host address does not match the mapping.
    BadHostAddr,
    /// Copy offset plus length crosses the end of the page.
    CopyBeyondPage,
    /// Copy outside a sub-page grant's window.
    CopyOutsideWindow,
    /// Copy by frame number for a domain other than `DOMID_SELF`.
    CopyByFrameForeign,
    /// Transfer receiver cannot address the frame.
    AddressTooBig,
    /// Transfer receiver is full or dying.
    ReceiverFull,
    /// More frames than the table's limit, or the table could not grow.
    TooManyFrames,
    /// Writing the frame list back to the guest failed.
    BadFrameList,
    /// A swapped entry is pinned by a mapping or copy; retry later.
    EntryBusy,
    /// `unmap_and_replace` could not move the mapping at `new_addr` (the
    /// embedder has no page table there, or `new_addr` is the address
    /// being unmapped).
    ReplaceRefused,
}

impl GrantError {
    /// The `GNTST_*` code Xen returns for this fault.
    #[must_use]
    pub const fn status(self) -> GntSt {
        match self {
            Self::NoMappingKind | Self::RefOutOfRange => GntSt::BadGntref,
            Self::UnknownDomain => GntSt::BadDomain,
            Self::MaptrackFull => GntSt::NoSpace,
            Self::BadPage => GntSt::BadPage,
            Self::PagedOut => GntSt::Eagain,
            Self::BadHandle => GntSt::BadHandle,
            Self::BadDevAddr => GntSt::BadDevAddr,
            Self::CopyBeyondPage => GntSt::BadCopyArg,
            Self::CopyByFrameForeign => GntSt::PermissionDenied,
            Self::AddressTooBig => GntSt::AddressTooBig,
            Self::BadFrameList => GntSt::BadVirtAddr,
            Self::EntryBusy => GntSt::Eagain,
            Self::TranslatedMapperFlags
            | Self::PinConflict
            | Self::PinOverflow
            | Self::NotGranted
            | Self::ReadOnlyGrant
            | Self::UnstableEntry
            | Self::FrameInUse
            | Self::BadHostAddr
            | Self::CopyOutsideWindow
            | Self::ReceiverFull
            | Self::TooManyFrames
            | Self::ReplaceRefused => GntSt::GeneralError,
        }
    }
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoMappingKind => "map flags name neither a host nor a device mapping",
            Self::TranslatedMapperFlags => "translated mapper asked for a PV-only mapping kind",
            Self::UnknownDomain => "no such domain",
            Self::RefOutOfRange => "grant reference beyond the table",
            Self::MaptrackFull => "no free maptrack handle",
            Self::PinConflict => "entry pinned by another domain or as sub-page/transitive",
            Self::PinOverflow => "pin counter would overflow",
            Self::NotGranted => "entry does not grant this access to this domain",
            Self::ReadOnlyGrant => "write access to a read-only grant",
            Self::UnstableEntry => "granter kept rewriting the entry",
            Self::BadPage => "granted frame is not a valid frame of the granter",
            Self::PagedOut => "granted frame is paged out",
            Self::FrameInUse => "could not take a frame reference or writable type",
            Self::BadHandle => "bad maptrack handle",
            Self::BadDevAddr => "device address does not match the mapping",
            Self::BadHostAddr => "host address does not match the mapping",
            Self::CopyBeyondPage => "copy crosses the end of the page",
            Self::CopyOutsideWindow => "copy outside the sub-page window",
            Self::CopyByFrameForeign => "copy by frame number for another domain",
            Self::AddressTooBig => "receiver cannot address the frame",
            Self::ReceiverFull => "receiver cannot take another frame",
            Self::TooManyFrames => "more frames than the table allows",
            Self::BadFrameList => "frame list could not be written",
            Self::EntryBusy => "entry is in use",
            Self::ReplaceRefused => "the mapping at the new address cannot be moved",
        })
    }
}

impl core::error::Error for GrantError {}

/// Why `set_version` was refused; the hypercall returns these as errnos, not
/// as `GNTST_*` (Xen `gnttab_set_version` in `xen/common/grant_table.c`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum VersionError {
    /// Version other than 1 or 2 (`-EINVAL`).
    Invalid,
    /// v2 asked of a domain limited to v1 (`-ENOSYS`).
    NotSupported,
    /// An entry beyond the reserved ones is pinned (`-EBUSY`).
    InUse,
    /// The guest still maps a status frame (`-EBUSY`, XSA-255).
    StatusFrameMapped,
    /// A reserved entry cannot be expressed in v1 (`-ERANGE`).
    Unrepresentable,
    /// The status frames could not be allocated (`-ENOMEM`).
    NoMemory,
}

impl VersionError {
    /// The negative errno the hypercall returns.
    #[must_use]
    pub const fn errno(self) -> i32 {
        match self {
            Self::Invalid => -22,
            Self::NotSupported => -38,
            Self::InUse | Self::StatusFrameMapped => -16,
            Self::Unrepresentable => -34,
            Self::NoMemory => -12,
        }
    }
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Invalid => "grant table version must be 1 or 2",
            Self::NotSupported => "domain is limited to grant table v1",
            Self::InUse => "grant entries are in use",
            Self::StatusFrameMapped => "a v2 status frame is still mapped by the guest",
            Self::Unrepresentable => "a reserved entry cannot be expressed in v1",
            Self::NoMemory => "no memory for status frames",
        })
    }
}

impl core::error::Error for VersionError {}

/// Why `get_version` or `cache_flush` was refused; the hypercall returns
/// these as errnos (those operations have no `GNTST_*` status field).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum CallError {
    /// No such domain (`-ESRCH`).
    NoSuchDomain,
    /// Bad arguments: a range beyond the page, unknown flags, an invalid
    /// frame, or no grant of the frame mapped by the caller (`-EINVAL`).
    Invalid,
    /// The frame has no owner with a grant table (`-EPERM`).
    NotPermitted,
    /// The cache operation is not available on this architecture
    /// (`-EOPNOTSUPP`: invalidate without clean on x86).
    NotSupported,
}

impl CallError {
    /// The negative errno the hypercall returns.
    #[must_use]
    pub const fn errno(self) -> i32 {
        match self {
            Self::NoSuchDomain => -3,
            Self::Invalid => -22,
            Self::NotPermitted => -1,
            Self::NotSupported => -95,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSuchDomain => "no such domain",
            Self::Invalid => "invalid argument",
            Self::NotPermitted => "frame has no owner with a grant table",
            Self::NotSupported => "cache operation not supported on this architecture",
        })
    }
}

impl core::error::Error for CallError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_match_the_xen_abi() {
        let expected = [
            (GntSt::Okay, 0),
            (GntSt::GeneralError, -1),
            (GntSt::BadDomain, -2),
            (GntSt::BadGntref, -3),
            (GntSt::BadHandle, -4),
            (GntSt::BadVirtAddr, -5),
            (GntSt::BadDevAddr, -6),
            (GntSt::NoDeviceSpace, -7),
            (GntSt::PermissionDenied, -8),
            (GntSt::BadPage, -9),
            (GntSt::BadCopyArg, -10),
            (GntSt::AddressTooBig, -11),
            (GntSt::Eagain, -12),
            (GntSt::NoSpace, -13),
        ];
        for (status, raw) in expected {
            assert_eq!(status.raw(), raw);
        }
    }

    #[test]
    fn swap_of_a_busy_entry_is_eagain_and_errnos_match_xen() {
        assert_eq!(GrantError::EntryBusy.status(), GntSt::Eagain);
        assert_eq!(GrantError::ReplaceRefused.status(), GntSt::GeneralError);
        assert_eq!(CallError::NoSuchDomain.errno(), -3);
        assert_eq!(CallError::Invalid.errno(), -22);
        assert_eq!(CallError::NotPermitted.errno(), -1);
        assert_eq!(CallError::NotSupported.errno(), -95);
    }

    #[test]
    fn maptrack_exhaustion_is_no_space_since_xen_4_16() {
        assert_eq!(GrantError::MaptrackFull.status(), GntSt::NoSpace);
    }
}

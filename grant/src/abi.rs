//! The grant-table ABI: shared entries and hypercall operation structures,
//! laid out exactly as Xen's public `grant_table.h` compiles on x86-64
//! (Xen `xen/include/public/grant_table.h`).
//!
//! Every structure is `#[repr(C)]` with zerocopy derives, and its size and
//! each field's offset are checked at compile time. Padding the C compiler
//! inserts implicitly is an explicit `pad` field here (always zero), so the
//! types can be read from and written to guest memory as bytes.
//!
//! The hypervisor side never reads a live shared entry through these types:
//! a guest can rewrite its entries at any moment, so the table reads them
//! through atomics (see [`GrantMemory`](crate::GrantMemory)). The types are
//! for building entries, for documentation, and for the operation arrays a
//! hypercall handler copies in and out.

use core::mem::{offset_of, size_of};

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A grant reference: the index of an entry in the granting domain's table
/// (`grant_ref_t`).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Debug,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
)]
#[repr(transparent)]
pub struct GrantRef(pub u32);

/// A maptrack handle: the index of a mapping in the mapping domain's
/// maptrack (`grant_handle_t`).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Debug,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
)]
#[repr(transparent)]
pub struct GrantHandle(pub u32);

/// One v2 status word (`grant_status_t`): `GTF_reading` / `GTF_writing`.
pub type GrantStatus = u16;

/// The hypercall number of `grant_table_op` (`__HYPERVISOR_grant_table_op`).
pub const HYPERVISOR_GRANT_TABLE_OP: u32 = 20;
/// Entries reserved for the toolstack at the start of every table
/// (`GNTTAB_NR_RESERVED_ENTRIES`); they survive version switches.
pub const NR_RESERVED_ENTRIES: u32 = 8;
/// The reserved entry of the console ring (`GNTTAB_RESERVED_CONSOLE`).
pub const RESERVED_CONSOLE: GrantRef = GrantRef(0);
/// The reserved entry of the xenstore ring (`GNTTAB_RESERVED_XENSTORE`).
pub const RESERVED_XENSTORE: GrantRef = GrantRef(1);
/// Bytes per grant frame.
pub const FRAME_SIZE: usize = 4096;
/// v1 entries per frame.
pub const V1_ENTRIES_PER_FRAME: u32 = (FRAME_SIZE / size_of::<GrantEntryV1>()) as u32;
/// v2 entries per frame.
pub const V2_ENTRIES_PER_FRAME: u32 = (FRAME_SIZE / size_of::<GrantEntryV2>()) as u32;
/// v2 status words per status frame.
pub const STATUS_ENTRIES_PER_FRAME: u32 = (FRAME_SIZE / size_of::<GrantStatus>()) as u32;
/// `u32` words per grant frame, the unit [`GrantMemory`](crate::GrantMemory)
/// hands shared frames out in.
pub const WORDS_PER_FRAME: usize = FRAME_SIZE / 4;

/// `GNTTABOP_*`: the sub-operations of `grant_table_op` (Xen
/// `xen/include/public/grant_table.h`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u32)]
#[non_exhaustive]
pub enum GnttabOp {
    /// `GNTTABOP_map_grant_ref`, batched [`GnttabMapGrantRef`].
    MapGrantRef = 0,
    /// `GNTTABOP_unmap_grant_ref`, batched [`GnttabUnmapGrantRef`].
    UnmapGrantRef = 1,
    /// `GNTTABOP_setup_table`, [`GnttabSetupTable`].
    SetupTable = 2,
    /// `GNTTABOP_dump_table` (debug).
    DumpTable = 3,
    /// `GNTTABOP_transfer`, batched [`GnttabTransfer`].
    Transfer = 4,
    /// `GNTTABOP_copy`, batched [`GnttabCopy`].
    Copy = 5,
    /// `GNTTABOP_query_size`, [`GnttabQuerySize`].
    QuerySize = 6,
    /// `GNTTABOP_unmap_and_replace` (x86 PV), batched
    /// [`GnttabUnmapAndReplace`].
    UnmapAndReplace = 7,
    /// `GNTTABOP_set_version`, [`GnttabSetVersion`].
    SetVersion = 8,
    /// `GNTTABOP_get_status_frames`, [`GnttabGetStatusFrames`].
    GetStatusFrames = 9,
    /// `GNTTABOP_get_version`, [`GnttabGetVersion`].
    GetVersion = 10,
    /// `GNTTABOP_swap_grant_ref`, batched [`GnttabSwapGrantRef`].
    SwapGrantRef = 11,
    /// `GNTTABOP_cache_flush`, batched [`GnttabCacheFlush`].
    CacheFlush = 12,
}

impl GnttabOp {
    /// The operation with command number `cmd`, if there is one.
    #[must_use]
    pub const fn from_raw(cmd: u32) -> Option<Self> {
        Some(match cmd {
            0 => Self::MapGrantRef,
            1 => Self::UnmapGrantRef,
            2 => Self::SetupTable,
            3 => Self::DumpTable,
            4 => Self::Transfer,
            5 => Self::Copy,
            6 => Self::QuerySize,
            7 => Self::UnmapAndReplace,
            8 => Self::SetVersion,
            9 => Self::GetStatusFrames,
            10 => Self::GetVersion,
            11 => Self::SwapGrantRef,
            12 => Self::CacheFlush,
            _ => return None,
        })
    }
}

/// A v1 shared entry (`struct grant_entry_v1`, 8 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*` flags and the entry type.
    pub flags: u16,
    /// The domain being given the right.
    pub domid: u16,
    /// The granted frame (GFN), or the slot of an accepted transfer.
    pub frame: u32,
}

/// The header common to v1 and v2 entries (`struct grant_entry_header`).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GrantEntryHeader {
    /// `GTF_*` flags and the entry type.
    pub flags: u16,
    /// The domain being given the right.
    pub domid: u16,
}

/// A v2 full-page entry (`grant_entry_v2.full_page`): permit access without
/// `GTF_sub_page`, or accept transfer.
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GrantEntryV2FullPage {
    /// Flags and grantee.
    pub hdr: GrantEntryHeader,
    /// Zero.
    pub pad0: u32,
    /// The granted frame.
    pub frame: u64,
}

/// A v2 sub-page entry (`grant_entry_v2.sub_page`): only
/// `[page_off, page_off + length)` of the frame may be copied.
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GrantEntryV2SubPage {
    /// Flags (with `GTF_sub_page`) and grantee.
    pub hdr: GrantEntryHeader,
    /// First byte of the window.
    pub page_off: u16,
    /// Bytes in the window.
    pub length: u16,
    /// The granted frame.
    pub frame: u64,
}

/// A v2 transitive entry (`grant_entry_v2.transitive`): the grantee may use
/// `gref` of `trans_domid` as if it were this entry (copy only).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GrantEntryV2Transitive {
    /// Flags (type `GTF_transitive`) and grantee.
    pub hdr: GrantEntryHeader,
    /// The domain that granted the underlying entry to us.
    pub trans_domid: u16,
    /// Zero.
    pub pad0: u16,
    /// The underlying entry in `trans_domid`'s table.
    pub gref: u32,
}

/// A v2 shared entry (`union grant_entry_v2`, 16 bytes, align 8), as its raw
/// words (`__spacer`); [`full_page`](Self::full_page),
/// [`sub_page`](Self::sub_page) and [`transitive`](Self::transitive) read it
/// as each union member.
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(8))]
pub struct GrantEntryV2 {
    /// The raw entry.
    pub spacer: [u32; 4],
}

impl GrantEntryV2 {
    /// The header (`hdr` member).
    #[must_use]
    pub fn hdr(&self) -> GrantEntryHeader {
        zerocopy::transmute!(self.spacer[0])
    }

    /// The entry read as `full_page`.
    #[must_use]
    pub fn full_page(&self) -> GrantEntryV2FullPage {
        zerocopy::transmute!(*self)
    }

    /// The entry read as `sub_page`.
    #[must_use]
    pub fn sub_page(&self) -> GrantEntryV2SubPage {
        zerocopy::transmute!(*self)
    }

    /// The entry read as `transitive` (the first 12 bytes).
    #[must_use]
    pub fn transitive(&self) -> GrantEntryV2Transitive {
        let [a, b, c, _] = self.spacer;
        zerocopy::transmute!([a, b, c])
    }
}

impl From<GrantEntryV2FullPage> for GrantEntryV2 {
    fn from(entry: GrantEntryV2FullPage) -> Self {
        zerocopy::transmute!(entry)
    }
}

impl From<GrantEntryV2SubPage> for GrantEntryV2 {
    fn from(entry: GrantEntryV2SubPage) -> Self {
        zerocopy::transmute!(entry)
    }
}

impl From<GrantEntryV2Transitive> for GrantEntryV2 {
    fn from(entry: GrantEntryV2Transitive) -> Self {
        let [a, b, c]: [u32; 3] = zerocopy::transmute!(entry);
        Self {
            spacer: [a, b, c, 0],
        }
    }
}

/// `GNTTABOP_map_grant_ref` (32 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabMapGrantRef {
    /// IN: where to map (a virtual address, or with `GNTMAP_contains_pte`
    /// the machine address of the PTE).
    pub host_addr: u64,
    /// IN: `GNTMAP_*`.
    pub flags: u32,
    /// IN: the entry in the granter's table.
    pub gref: u32,
    /// IN: the granting domain.
    pub dom: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// OUT: the maptrack handle for the unmap.
    pub handle: u32,
    /// OUT: the frame's bus address (MFN << 12).
    pub dev_bus_addr: u64,
}

/// `GNTTABOP_unmap_grant_ref` (24 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabUnmapGrantRef {
    /// IN: the host mapping to remove, or 0 to keep it.
    pub host_addr: u64,
    /// IN: the device mapping's bus address to remove, or 0 to keep it.
    pub dev_bus_addr: u64,
    /// IN: the handle the map returned.
    pub handle: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Zero.
    pub pad: u16,
}

/// `GNTTABOP_setup_table` (24 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabSetupTable {
    /// IN: the domain (`DOMID_SELF` or, privileged, another).
    pub dom: u16,
    /// Zero.
    pub pad0: u16,
    /// IN: frames wanted.
    pub nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Zero.
    pub pad1: [u16; 3],
    /// IN: guest handle of the frame list the hypervisor fills.
    pub frame_list: u64,
}

/// `GNTTABOP_transfer` (24 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabTransfer {
    /// IN: the sender's frame (its GFN; named `mfn` in the ABI).
    pub mfn: u64,
    /// IN: the receiving domain.
    pub domid: u16,
    /// Zero.
    pub pad0: u16,
    /// IN: the receiver's accept-transfer entry.
    pub gref: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Zero.
    pub pad1: [u16; 3],
}

/// One side of a copy (`struct gnttab_copy_ptr`, 16 bytes): a grant
/// reference or, for `DOMID_SELF`, a frame number.
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabCopyPtr {
    /// The union `u`: `ref` (first four bytes) or `gmfn` (all eight).
    pub u: u64,
    /// The domain.
    pub domid: u16,
    /// Byte offset in the frame.
    pub offset: u16,
    /// Zero.
    pub pad: u32,
}

impl GnttabCopyPtr {
    /// A side named by grant reference.
    #[must_use]
    pub fn grant(domid: u16, gref: GrantRef, offset: u16) -> Self {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&gref.0.to_ne_bytes());
        Self {
            u: u64::from_ne_bytes(bytes),
            domid,
            offset,
            pad: 0,
        }
    }

    /// A side named by frame number (only for `DOMID_SELF`).
    #[must_use]
    pub fn frame(domid: u16, gmfn: u64, offset: u16) -> Self {
        Self {
            u: gmfn,
            domid,
            offset,
            pad: 0,
        }
    }

    /// The union read as `ref`: its first four bytes, whatever the byte
    /// order.
    #[must_use]
    pub fn gref(&self) -> GrantRef {
        let [a, b, c, d, ..] = self.u.to_ne_bytes();
        GrantRef(u32::from_ne_bytes([a, b, c, d]))
    }

    /// The union read as `gmfn`.
    #[must_use]
    pub fn gmfn(&self) -> u64 {
        self.u
    }
}

/// `GNTTABOP_copy` (40 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabCopy {
    /// IN: where to copy from.
    pub source: GnttabCopyPtr,
    /// IN: where to copy to.
    pub dest: GnttabCopyPtr,
    /// IN: bytes.
    pub len: u16,
    /// IN: `GNTCOPY_*`.
    pub flags: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Zero.
    pub pad: u16,
}

/// `GNTTABOP_query_size` (16 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabQuerySize {
    /// IN: the domain.
    pub dom: u16,
    /// Zero.
    pub pad0: u16,
    /// OUT: current grant frames.
    pub nr_frames: u32,
    /// OUT: the domain's limit.
    pub max_nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Zero.
    pub pad1: u16,
}

/// `GNTTABOP_set_version` (4 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabSetVersion {
    /// IN: the version wanted (1 or 2); OUT: the version in force.
    pub version: u32,
}

/// `GNTTABOP_get_status_frames` (16 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabGetStatusFrames {
    /// IN: frames wanted.
    pub nr_frames: u32,
    /// IN: the domain.
    pub dom: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// IN: guest handle of the frame list the hypervisor fills.
    pub frame_list: u64,
}

/// `GNTTABOP_get_version` (8 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabGetVersion {
    /// IN: the domain.
    pub dom: u16,
    /// Zero.
    pub pad: u16,
    /// OUT: its version.
    pub version: u32,
}

/// `GNTTABOP_unmap_and_replace` (24 bytes, x86 PV): removes the host
/// mapping of `handle` at `host_addr` and moves whatever `new_addr` maps
/// there, leaving `new_addr` empty.
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabUnmapAndReplace {
    /// IN: the host mapping to remove (0: leave the handle alone).
    pub host_addr: u64,
    /// IN: the address whose mapping takes its place (0: none, a plain
    /// host unmap).
    pub new_addr: u64,
    /// IN: the handle the map returned.
    pub handle: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Zero.
    pub pad: u16,
}

/// `GNTTABOP_swap_grant_ref` (12 bytes): swaps two entries of the caller's
/// own table.
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabSwapGrantRef {
    /// IN: one entry.
    pub ref_a: u32,
    /// IN: the other.
    pub ref_b: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Zero.
    pub pad: u16,
}

/// `GNTTAB_CACHE_CLEAN`: write dirty cache lines back.
pub const GNTTAB_CACHE_CLEAN: u32 = 1 << 0;
/// `GNTTAB_CACHE_INVAL`: discard cache lines.
pub const GNTTAB_CACHE_INVAL: u32 = 1 << 1;
/// `GNTTAB_CACHE_SOURCE_GREF`: the union names a grant reference (defined
/// by the ABI, refused by Xen).
pub const GNTTAB_CACHE_SOURCE_GREF: u32 = 1 << 31;

/// `GNTTABOP_cache_flush` (16 bytes): cache maintenance on a range of a
/// frame the caller owns or maps through a grant.
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabCacheFlush {
    /// The union `a`: `dev_bus_addr` (the frame's machine address, all
    /// eight bytes) or `ref` (first four, with `GNTTAB_CACHE_SOURCE_GREF`).
    pub a: u64,
    /// Byte offset in the frame.
    pub offset: u16,
    /// Bytes.
    pub length: u16,
    /// `GNTTAB_CACHE_*`.
    pub op: u32,
}

macro_rules! assert_layout {
    ($ty:ty, size $size:expr, align $align:expr, $($field:ident @ $offset:expr),* $(,)?) => {
        const_assert_eq!(size_of::<$ty>(), $size);
        const_assert_eq!(core::mem::align_of::<$ty>(), $align);
        $(const_assert_eq!(offset_of!($ty, $field), $offset);)*
    };
}

assert_layout!(GrantEntryV1, size 8, align 4, flags @ 0, domid @ 2, frame @ 4);
assert_layout!(GrantEntryHeader, size 4, align 2, flags @ 0, domid @ 2);
assert_layout!(GrantEntryV2, size 16, align 8, spacer @ 0);
assert_layout!(GrantEntryV2FullPage, size 16, align 8, hdr @ 0, pad0 @ 4, frame @ 8);
assert_layout!(GrantEntryV2SubPage, size 16, align 8, hdr @ 0, page_off @ 4, length @ 6, frame @ 8);
assert_layout!(GrantEntryV2Transitive, size 12, align 4, hdr @ 0, trans_domid @ 4, pad0 @ 6, gref @ 8);
assert_layout!(GnttabMapGrantRef, size 32, align 8,
    host_addr @ 0, flags @ 8, gref @ 12, dom @ 16, status @ 18, handle @ 20, dev_bus_addr @ 24);
assert_layout!(GnttabUnmapGrantRef, size 24, align 8,
    host_addr @ 0, dev_bus_addr @ 8, handle @ 16, status @ 20);
assert_layout!(GnttabSetupTable, size 24, align 8, dom @ 0, nr_frames @ 4, status @ 8, frame_list @ 16);
assert_layout!(GnttabTransfer, size 24, align 8, mfn @ 0, domid @ 8, gref @ 12, status @ 16);
assert_layout!(GnttabCopyPtr, size 16, align 8, u @ 0, domid @ 8, offset @ 10);
assert_layout!(GnttabCopy, size 40, align 8, source @ 0, dest @ 16, len @ 32, flags @ 34, status @ 36);
assert_layout!(GnttabQuerySize, size 16, align 4, dom @ 0, nr_frames @ 4, max_nr_frames @ 8, status @ 12);
assert_layout!(GnttabSetVersion, size 4, align 4, version @ 0);
assert_layout!(GnttabGetStatusFrames, size 16, align 8, nr_frames @ 0, dom @ 4, status @ 6, frame_list @ 8);
assert_layout!(GnttabGetVersion, size 8, align 4, dom @ 0, pad @ 2, version @ 4);
assert_layout!(GnttabUnmapAndReplace, size 24, align 8,
    host_addr @ 0, new_addr @ 8, handle @ 16, status @ 20);
assert_layout!(GnttabSwapGrantRef, size 12, align 4, ref_a @ 0, ref_b @ 4, status @ 8);
assert_layout!(GnttabCacheFlush, size 16, align 8, a @ 0, offset @ 8, length @ 10, op @ 12);
const_assert_eq!(GNTTAB_CACHE_CLEAN, 1);
const_assert_eq!(GNTTAB_CACHE_INVAL, 2);
const_assert_eq!(GNTTAB_CACHE_SOURCE_GREF, 0x8000_0000);
const_assert_eq!(size_of::<GrantRef>(), 4);
const_assert_eq!(size_of::<GrantHandle>(), 4);
const_assert_eq!(size_of::<GrantStatus>(), 2);
const_assert_eq!(V1_ENTRIES_PER_FRAME, 512);
const_assert_eq!(V2_ENTRIES_PER_FRAME, 256);
const_assert_eq!(STATUS_ENTRIES_PER_FRAME, 2048);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn op_numbers_match_the_xen_abi() {
        for (cmd, op) in [
            (0, GnttabOp::MapGrantRef),
            (1, GnttabOp::UnmapGrantRef),
            (2, GnttabOp::SetupTable),
            (4, GnttabOp::Transfer),
            (5, GnttabOp::Copy),
            (6, GnttabOp::QuerySize),
            (7, GnttabOp::UnmapAndReplace),
            (8, GnttabOp::SetVersion),
            (9, GnttabOp::GetStatusFrames),
            (10, GnttabOp::GetVersion),
            (11, GnttabOp::SwapGrantRef),
            (12, GnttabOp::CacheFlush),
        ] {
            assert_eq!(GnttabOp::from_raw(cmd), Some(op));
            assert_eq!(op as u32, cmd);
        }
        assert_eq!(GnttabOp::from_raw(13), None);
        assert_eq!(HYPERVISOR_GRANT_TABLE_OP, 20);
    }

    #[test]
    fn v2_union_members_share_the_header_and_frame() {
        let sub = GrantEntryV2SubPage {
            hdr: GrantEntryHeader {
                flags: 0x101,
                domid: 7,
            },
            page_off: 16,
            length: 32,
            frame: 0x1_2345_6789,
        };
        let entry = GrantEntryV2::from(sub);
        assert_eq!(entry.hdr(), sub.hdr);
        assert_eq!(entry.sub_page(), sub);
        assert_eq!(entry.full_page().frame, 0x1_2345_6789);
        let trans = GrantEntryV2Transitive {
            hdr: GrantEntryHeader { flags: 3, domid: 2 },
            trans_domid: 5,
            pad0: 0,
            gref: 99,
        };
        assert_eq!(GrantEntryV2::from(trans).transitive(), trans);
    }

    #[test]
    fn copy_ptr_ref_is_the_first_four_bytes_of_the_union() {
        let ptr = GnttabCopyPtr::grant(3, GrantRef(0xdead_beef), 12);
        assert_eq!(ptr.gref(), GrantRef(0xdead_beef));
        assert_eq!(&ptr.as_bytes()[..4], &0xdead_beefu32.to_ne_bytes());
        assert_eq!(GnttabCopyPtr::frame(3, 77, 0).gmfn(), 77);
    }
}

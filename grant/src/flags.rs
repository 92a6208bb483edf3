//! Flag words of the ABI: `GTF_*` in shared entries, `GNTMAP_*` in map
//! operations, `GNTCOPY_*` in copy operations (Xen
//! `xen/include/public/grant_table.h`).

use bitflags::bitflags;

/// The type field of an entry's flags (`flags & GTF_type_mask`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u16)]
pub enum GrantType {
    /// `GTF_invalid`: grants nothing.
    Invalid = 0,
    /// `GTF_permit_access`: `domid` may map or copy `frame`.
    PermitAccess = 1,
    /// `GTF_accept_transfer`: `domid` may transfer one frame to us.
    AcceptTransfer = 2,
    /// `GTF_transitive` (v2): `domid` may copy through another domain's entry.
    Transitive = 3,
}

/// `GTF_type_mask`.
pub const GTF_TYPE_MASK: u16 = 3;

impl GrantType {
    /// The type of an entry with `flags`.
    #[must_use]
    pub const fn of(flags: u16) -> Self {
        match flags & GTF_TYPE_MASK {
            0 => Self::Invalid,
            1 => Self::PermitAccess,
            2 => Self::AcceptTransfer,
            _ => Self::Transitive,
        }
    }
}

bitflags! {
    /// The flag bits of an entry (`GTF_*` above the type field). Bits 2 and
    /// 3 mean `GTF_readonly` / `GTF_reading` on permit-access entries and
    /// `GTF_transfer_committed` / `GTF_transfer_completed` on accept-transfer
    /// entries.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    pub struct GtfFlags: u16 {
        /// `GTF_readonly` (guest): read-only grant.
        const READONLY = 1 << 2;
        /// `GTF_reading` (hypervisor): the grantee has the entry pinned.
        const READING = 1 << 3;
        /// `GTF_writing` (hypervisor): pinned for writing.
        const WRITING = 1 << 4;
        /// `GTF_PWT` (guest): x86 cache attribute of MMIO grants.
        const PWT = 1 << 5;
        /// `GTF_PCD` (guest).
        const PCD = 1 << 6;
        /// `GTF_PAT` (guest).
        const PAT = 1 << 7;
        /// `GTF_sub_page` (guest, v2): only a window may be copied.
        const SUB_PAGE = 1 << 8;
        /// `GTF_transfer_committed` (hypervisor): a transfer is under way.
        const TRANSFER_COMMITTED = 1 << 2;
        /// `GTF_transfer_completed` (hypervisor): the frame has arrived.
        const TRANSFER_COMPLETED = 1 << 3;
        /// The type field's bits, so that any flags value converts.
        const TYPE_MASK = GTF_TYPE_MASK;
    }
}

bitflags! {
    /// `GNTMAP_*`: how a map operation maps the frame.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    pub struct GntMapFlags: u32 {
        /// `GNTMAP_device_map`: usable for device DMA.
        const DEVICE_MAP = 1 << 0;
        /// `GNTMAP_host_map`: mapped for CPU access at `host_addr`.
        const HOST_MAP = 1 << 1;
        /// `GNTMAP_readonly`.
        const READONLY = 1 << 2;
        /// `GNTMAP_application_map` (PV): user-space accessible.
        const APPLICATION_MAP = 1 << 3;
        /// `GNTMAP_contains_pte` (PV): `host_addr` is a PTE's address.
        const CONTAINS_PTE = 1 << 4;
        /// `GNTMAP_guest_avail_mask`: software bits copied into the PTE.
        const GUEST_AVAIL_MASK = 0xffff_0000;
        // A guest may pass any bits; they are kept, not rejected.
        const _ = !0;
    }
}

bitflags! {
    /// `GNTCOPY_*`: which sides of a copy are grant references.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    pub struct GntCopyFlags: u16 {
        /// `GNTCOPY_source_gref`.
        const SOURCE_GREF = 1 << 0;
        /// `GNTCOPY_dest_gref`.
        const DEST_GREF = 1 << 1;
        const _ = !0;
    }
}

/// The `GNTMAP_can_fail` bit, removed in Xen 4.16 and ignored here.
pub const GNTMAP_CAN_FAIL_REMOVED: u32 = 1 << 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_match_the_xen_abi() {
        assert_eq!(GtfFlags::READONLY.bits(), 4);
        assert_eq!(GtfFlags::READING.bits(), 8);
        assert_eq!(GtfFlags::WRITING.bits(), 16);
        assert_eq!(GtfFlags::PWT.bits(), 32);
        assert_eq!(GtfFlags::PCD.bits(), 64);
        assert_eq!(GtfFlags::PAT.bits(), 128);
        assert_eq!(GtfFlags::SUB_PAGE.bits(), 256);
        assert_eq!(GtfFlags::TRANSFER_COMMITTED.bits(), 4);
        assert_eq!(GtfFlags::TRANSFER_COMPLETED.bits(), 8);
        assert_eq!(GntMapFlags::DEVICE_MAP.bits(), 1);
        assert_eq!(GntMapFlags::HOST_MAP.bits(), 2);
        assert_eq!(GntMapFlags::READONLY.bits(), 4);
        assert_eq!(GntMapFlags::APPLICATION_MAP.bits(), 8);
        assert_eq!(GntMapFlags::CONTAINS_PTE.bits(), 16);
        assert_eq!(GntMapFlags::GUEST_AVAIL_MASK.bits(), 0xffff_0000);
        assert_eq!(GntCopyFlags::SOURCE_GREF.bits(), 1);
        assert_eq!(GntCopyFlags::DEST_GREF.bits(), 2);
        assert_eq!(GNTMAP_CAN_FAIL_REMOVED, 32);
    }

    #[test]
    fn type_field_is_the_low_two_bits() {
        assert_eq!(GrantType::of(0x109), GrantType::PermitAccess);
        assert_eq!(GrantType::of(2 | 4), GrantType::AcceptTransfer);
        assert_eq!(GrantType::of(3), GrantType::Transitive);
        assert_eq!(GrantType::of(0x18), GrantType::Invalid);
    }
}

//! The parts of the Xen memory-op ABI a balloon speaks: `XENMEM_*` command
//! numbers of `__HYPERVISOR_memory_op`, the reservation argument, and the
//! xenstore units.

use static_assertions::{const_assert, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `__HYPERVISOR_memory_op`: the hypercall that carries every `XENMEM_*` op.
pub const HYPERVISOR_MEMORY_OP: u32 = 12;

/// The `XENMEM_*` commands of the balloon protocol (first argument of
/// `__HYPERVISOR_memory_op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum MemoryOp {
    /// `XENMEM_increase_reservation` (0): allocate extents, return their MFNs
    /// (PV).
    IncreaseReservation = 0,
    /// `XENMEM_decrease_reservation` (1): give back the listed GMFNs.
    DecreaseReservation = 1,
    /// `XENMEM_current_reservation` (3): the domain's current pages.
    CurrentReservation = 3,
    /// `XENMEM_maximum_reservation` (4): the domain's `max_pages`.
    MaximumReservation = 4,
    /// `XENMEM_populate_physmap` (6): back the listed GFNs with memory. Linux
    /// balloons in with this op, not with `increase_reservation`.
    PopulatePhysmap = 6,
    /// `XENMEM_claim_pages` (24, tools only): stake a claim on a number of
    /// free pages for a domain being built.
    ClaimPages = 24,
}

impl MemoryOp {
    /// The command number.
    #[must_use]
    pub const fn number(self) -> u32 {
        self as u32
    }
}

/// `struct xen_memory_reservation`, the argument of increase, decrease,
/// populate and claim (32 bytes, x86-64 layout).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct XenMemoryReservation {
    /// Guest pointer to an array of `xen_pfn_t` (0 for a claim).
    pub extent_start: u64,
    /// Number of extents.
    pub nr_extents: u64,
    /// Each extent is `2^extent_order` pages, naturally aligned.
    pub extent_order: u32,
    /// `XENMEMF_*` flags: address bits, NUMA node, populate-on-demand.
    pub mem_flags: u32,
    /// The target domain; `DOMID_SELF` for a guest's own balloon.
    pub domid: u16,
    /// Padding to the struct's 8-byte alignment.
    pub _pad: [u8; 6],
}

const_assert_eq!(core::mem::size_of::<XenMemoryReservation>(), 32);
const_assert_eq!(core::mem::offset_of!(XenMemoryReservation, extent_start), 0);
const_assert_eq!(core::mem::offset_of!(XenMemoryReservation, nr_extents), 8);
const_assert_eq!(
    core::mem::offset_of!(XenMemoryReservation, extent_order),
    16
);
const_assert_eq!(core::mem::offset_of!(XenMemoryReservation, mem_flags), 20);
const_assert_eq!(core::mem::offset_of!(XenMemoryReservation, domid), 24);

/// The largest `nr_extents` Xen accepts: it continues long calls by
/// encoding the next extent in the command's upper bits (`start << 6`).
pub const MAX_NR_EXTENTS: u64 = (u32::MAX >> 6) as u64;

/// The largest extent order a domU may ask for on x86 (2 MiB extents).
pub const DOMU_MAX_EXTENT_ORDER: u32 = 9;

/// Frame numbers Linux passes per reservation call: one 4 KiB page of
/// `xen_pfn_t`.
pub const LINUX_BATCH: usize = 512;

/// xenstore's `memory/target` and `memory/static-max` are in KiB: pages =
/// KiB >> (PAGE_SHIFT - 10).
pub const KIB_PER_PAGE_SHIFT: u32 = hvmem_types::PAGE_SHIFT - 10;
const_assert!(KIB_PER_PAGE_SHIFT == 2);

/// Pages in `kib` KiB, rounded down as the Linux watch does.
#[must_use]
pub const fn kib_to_pages(kib: u64) -> u64 {
    kib >> KIB_PER_PAGE_SHIFT
}

/// KiB in `pages` pages, or `None` on overflow.
#[must_use]
pub const fn pages_to_kib(pages: u64) -> Option<u64> {
    pages.checked_mul(1 << KIB_PER_PAGE_SHIFT)
}

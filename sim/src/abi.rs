//! The Xen numbers the hypercall layer speaks: hypercall numbers, command
//! numbers and errno values, each as Xen's public headers define them
//! (reference `xen-abi.json`, `xen/include/public/errno.h`).

/// `__HYPERVISOR_mmu_update`.
pub const HYPERVISOR_MMU_UPDATE: u32 = 1;
/// `__HYPERVISOR_memory_op`.
pub const HYPERVISOR_MEMORY_OP: u32 = 12;
/// `__HYPERVISOR_grant_table_op`.
pub const HYPERVISOR_GRANT_TABLE_OP: u32 = 20;
/// `__HYPERVISOR_mmuext_op`.
pub const HYPERVISOR_MMUEXT_OP: u32 = 26;
/// `__HYPERVISOR_tmem_op`.
pub const HYPERVISOR_TMEM_OP: u32 = 38;

/// `XENMEM_increase_reservation`.
pub const XENMEM_INCREASE_RESERVATION: u32 = 0;
/// `XENMEM_decrease_reservation`.
pub const XENMEM_DECREASE_RESERVATION: u32 = 1;
/// `XENMEM_current_reservation`.
pub const XENMEM_CURRENT_RESERVATION: u32 = 3;
/// `XENMEM_maximum_reservation`.
pub const XENMEM_MAXIMUM_RESERVATION: u32 = 4;
/// `XENMEM_populate_physmap`.
pub const XENMEM_POPULATE_PHYSMAP: u32 = 6;
/// `XENMEM_claim_pages` (tools only).
pub const XENMEM_CLAIM_PAGES: u32 = 24;
/// `MEMOP_EXTENT_SHIFT`: the continuation's start extent sits above the
/// command in `cmd`.
pub const MEMOP_EXTENT_SHIFT: u32 = 6;
/// `MEMOP_CMD_MASK`.
pub const MEMOP_CMD_MASK: u64 = 63;

/// `MMUEXT_PIN_L1_TABLE`.
pub const MMUEXT_PIN_L1_TABLE: u32 = 0;
/// `MMUEXT_PIN_L2_TABLE`.
pub const MMUEXT_PIN_L2_TABLE: u32 = 1;
/// `MMUEXT_PIN_L3_TABLE`.
pub const MMUEXT_PIN_L3_TABLE: u32 = 2;
/// `MMUEXT_PIN_L4_TABLE`.
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
/// `MMUEXT_UNPIN_TABLE`.
pub const MMUEXT_UNPIN_TABLE: u32 = 4;

/// `EPERM`.
pub const EPERM: i64 = 1;
/// `ESRCH`.
pub const ESRCH: i64 = 3;
/// `ENXIO`.
pub const ENXIO: i64 = 6;
/// `EAGAIN`.
pub const EAGAIN: i64 = 11;
/// `ENOMEM`.
pub const ENOMEM: i64 = 12;
/// `EFAULT`.
pub const EFAULT: i64 = 14;
/// `EBUSY`.
pub const EBUSY: i64 = 16;
/// `EINVAL`.
pub const EINVAL: i64 = 22;
/// `ENOSYS`.
pub const ENOSYS: i64 = 38;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_xen_abi() {
        assert_eq!(
            [
                HYPERVISOR_MMU_UPDATE,
                HYPERVISOR_MEMORY_OP,
                HYPERVISOR_GRANT_TABLE_OP,
                HYPERVISOR_MMUEXT_OP,
                HYPERVISOR_TMEM_OP
            ],
            [1, 12, 20, 26, 38]
        );
        assert_eq!(
            [
                XENMEM_INCREASE_RESERVATION,
                XENMEM_DECREASE_RESERVATION,
                XENMEM_CURRENT_RESERVATION,
                XENMEM_MAXIMUM_RESERVATION,
                XENMEM_POPULATE_PHYSMAP,
                XENMEM_CLAIM_PAGES
            ],
            [0, 1, 3, 4, 6, 24]
        );
        assert_eq!((MEMOP_EXTENT_SHIFT, MEMOP_CMD_MASK), (6, 63));
        assert_eq!(
            [
                MMUEXT_PIN_L1_TABLE,
                MMUEXT_PIN_L2_TABLE,
                MMUEXT_PIN_L3_TABLE,
                MMUEXT_PIN_L4_TABLE,
                MMUEXT_UNPIN_TABLE
            ],
            [0, 1, 2, 3, 4]
        );
        assert_eq!(
            [
                EPERM, ESRCH, ENXIO, EAGAIN, ENOMEM, EFAULT, EBUSY, EINVAL, ENOSYS
            ],
            [1, 3, 6, 11, 12, 14, 16, 22, 38]
        );
        // balloon-proto speaks the same numbers.
        assert_eq!(i64::from(hvmem_balloon_proto::xen::domain::EINVAL), EINVAL);
        assert_eq!(i64::from(hvmem_balloon_proto::xen::domain::ENOMEM), ENOMEM);
        assert_eq!(i64::from(hvmem_balloon_proto::xen::domain::ESRCH), ESRCH);
    }
}

//! What a frame is currently used as.

use core::fmt;

/// The use a frame is typed for (Xen `PGT_*_page` / `PGT_lN_page_table`).
///
/// A frame holds exactly one type at a time, with its own reference count; the
/// type changes only while that count is zero. Since a writable mapping holds a
/// [`Writable`](Self::Writable) reference and a page-table use holds a
/// page-table reference, a frame can never be both writable and a page table
/// (Xen's `_get_page_type` in `xen/arch/x86/mm.c` enforces the same): that is what stops a guest from editing its own page
/// tables behind the hypervisor's back.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum FrameType {
    /// No special use (Xen `PGT_none`).
    None,
    /// x86 level-1 page table (`PGT_l1_page_table`).
    L1,
    /// x86 level-2 page table (`PGT_l2_page_table`).
    L2,
    /// x86 level-3 page table (`PGT_l3_page_table`).
    L3,
    /// x86 level-4 page table, the 64-bit PV root (`PGT_l4_page_table`).
    L4,
    /// A stage-2 (Arm) or EPT (Intel) table of a translated guest.
    Stage2,
    /// A GDT/LDT page of segment descriptors (`PGT_seg_desc_page`).
    SegmentDescriptor,
    /// A frame shared with another domain through a grant.
    GrantShared,
    /// A frame with writable mappings (`PGT_writable_page`).
    Writable,
}

impl FrameType {
    /// Every type, in encoding order.
    pub const ALL: [Self; 9] = [
        Self::None,
        Self::L1,
        Self::L2,
        Self::L3,
        Self::L4,
        Self::Stage2,
        Self::SegmentDescriptor,
        Self::GrantShared,
        Self::Writable,
    ];

    /// Whether the type is a page table (x86 L1..L4 or a stage-2/EPT table).
    /// Page-table types hold references on the frames their entries point at,
    /// so they are validated on the first reference and de-validated when the
    /// last one goes.
    #[inline]
    #[must_use]
    pub const fn is_page_table(self) -> bool {
        matches!(
            self,
            Self::L1 | Self::L2 | Self::L3 | Self::L4 | Self::Stage2
        )
    }

    /// Whether taking the type for the first time runs the validator: page
    /// tables and segment-descriptor pages (Xen checks their contents); the
    /// other types are valid at once.
    #[inline]
    #[must_use]
    pub const fn needs_validation(self) -> bool {
        self.is_page_table() || matches!(self, Self::SegmentDescriptor)
    }

    /// The 4-bit code stored in the type word.
    #[inline]
    pub(crate) const fn code(self) -> u64 {
        match self {
            Self::None => 0,
            Self::L1 => 1,
            Self::L2 => 2,
            Self::L3 => 3,
            Self::L4 => 4,
            Self::Stage2 => 5,
            Self::SegmentDescriptor => 6,
            Self::GrantShared => 7,
            Self::Writable => 8,
        }
    }

    /// The type for a 4-bit code; codes 9..=15 are never stored.
    #[inline]
    pub(crate) const fn from_code(code: u64) -> Option<Self> {
        match code {
            0 => Some(Self::None),
            1 => Some(Self::L1),
            2 => Some(Self::L2),
            3 => Some(Self::L3),
            4 => Some(Self::L4),
            5 => Some(Self::Stage2),
            6 => Some(Self::SegmentDescriptor),
            7 => Some(Self::GrantShared),
            8 => Some(Self::Writable),
            _ => None,
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::L1 => "L1 page table",
            Self::L2 => "L2 page table",
            Self::L3 => "L3 page table",
            Self::L4 => "L4 page table",
            Self::Stage2 => "stage-2 table",
            Self::SegmentDescriptor => "segment descriptor page",
            Self::GrantShared => "grant-shared",
            Self::Writable => "writable",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn type_codes_round_trip() {
        for ty in FrameType::ALL {
            assert_eq!(FrameType::from_code(ty.code()), Some(ty));
        }
        assert_eq!(FrameType::from_code(9), None);
    }

    #[test]
    fn only_page_tables_and_descriptor_pages_are_validated() {
        for ty in FrameType::ALL {
            let expected = matches!(
                ty,
                FrameType::L1
                    | FrameType::L2
                    | FrameType::L3
                    | FrameType::L4
                    | FrameType::Stage2
                    | FrameType::SegmentDescriptor
            );
            assert_eq!(ty.needs_validation(), expected, "{ty}");
        }
        assert!(!FrameType::SegmentDescriptor.is_page_table());
        assert!(!FrameType::Writable.is_page_table());
    }
}

//! The device configuration space: layout, length, and who may write what.
//!
//! | Offset | Field | Written by | Present when |
//! |---|---|---|---|
//! | 0x00 | `num_pages` (le32) | device | always: target balloon size, 4 KiB pages |
//! | 0x04 | `actual` (le32) | driver | always: current balloon size, 4 KiB pages |
//! | 0x08 | `free_page_hint_cmd_id` (le32) | device | FREE_PAGE_HINT |
//! | 0x0C | `poison_val` (le32) | driver | PAGE_POISON |
//!
//! The balloon's config space is little-endian even for legacy devices. The
//! exposed length follows QEMU: 8 bytes, 12 with FREE_PAGE_HINT, 16 with
//! PAGE_POISON. A driver may write only `actual`, and `poison_val` when
//! PAGE_POISON was negotiated and before DRIVER_OK, each as one aligned
//! 4-byte access; everything else is refused.
//!
//! Limitation: some old legacy PCI drivers write `actual` one byte at a
//! time, lowest byte first. The spec lets a device wait for the last byte
//! before acting; this device does not assemble the bytes, so each of
//! those writes is refused and `actual` does not change.

use core::fmt;

use static_assertions::const_assert_eq;
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::virtio::features::Features;

/// `struct virtio_balloon_config`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BalloonConfig {
    /// Target balloon size in 4 KiB pages (device writes).
    pub num_pages: U32,
    /// Current balloon size in 4 KiB pages (driver writes).
    pub actual: U32,
    /// Free page hinting command id (device writes).
    pub free_page_hint_cmd_id: U32,
    /// Poison value (driver writes, before DRIVER_OK).
    pub poison_val: U32,
}

const_assert_eq!(core::mem::size_of::<BalloonConfig>(), 16);
const_assert_eq!(core::mem::offset_of!(BalloonConfig, num_pages), 0x0);
const_assert_eq!(core::mem::offset_of!(BalloonConfig, actual), 0x4);
const_assert_eq!(
    core::mem::offset_of!(BalloonConfig, free_page_hint_cmd_id),
    0x8
);
const_assert_eq!(core::mem::offset_of!(BalloonConfig, poison_val), 0xC);

/// Offset of `actual`.
pub const ACTUAL_OFFSET: u32 = 0x4;
/// Offset of `poison_val`.
pub const POISON_VAL_OFFSET: u32 = 0xC;

/// The config length a device exposes for the features it offers.
#[must_use]
pub const fn config_len(offered: Features) -> u32 {
    if offered.contains(Features::PAGE_POISON) {
        16
    } else if offered.contains(Features::FREE_PAGE_HINT) {
        12
    } else {
        8
    }
}

/// Why a config access was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigAccessError {
    /// The access reaches past the exposed config length.
    OutOfRange,
    /// A write to a field the driver may not write.
    ReadOnly {
        /// The offset written.
        offset: u32,
    },
    /// A write that is not one aligned 4-byte access of a field.
    NotAWholeField,
    /// `poison_val` written while DRIVER_OK is set.
    PoisonAfterDriverOk,
    /// `actual` names more pages than the guest has.
    ActualTooLarge {
        /// The value written.
        actual: u32,
    },
}

impl fmt::Display for ConfigAccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange => f.write_str("access past the config space"),
            Self::ReadOnly { offset } => {
                write!(f, "config offset {offset:#x} is read-only for the driver")
            }
            Self::NotAWholeField => f.write_str("config writes must be one aligned 4-byte field"),
            Self::PoisonAfterDriverOk => f.write_str("poison_val written after DRIVER_OK"),
            Self::ActualTooLarge { actual } => {
                write!(f, "actual of {actual} pages is more than the guest has")
            }
        }
    }
}
impl core::error::Error for ConfigAccessError {}

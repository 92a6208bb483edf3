//! The free page hinting command-id protocol (FREE_PAGE_HINT).
//!
//! # Protocol
//!
//! | Config value | Meaning |
//! |---|---|
//! | 0 `CMD_ID_STOP` | all earlier ids invalid; stop hinting, keep hinted pages |
//! | 1 `CMD_ID_DONE` | all earlier ids invalid; stop, and the driver may release every hinted page |
//! | >= 2 | a hinting round with this id |
//!
//! One round at a time, in phases:
//!
//! | Phase | Entered when | Leaves when |
//! |---|---|---|
//! | `Idle` | start, or the round is over | the device writes a fresh id (`Requested`) |
//! | `Requested(id)` | the device wrote `id` | the driver sends exactly `id` (`Active`); the device writes STOP/DONE (`Idle`) |
//! | `Active(id)` | the driver answered | the driver sends STOP (`Idle`); the device writes STOP/DONE (`Stopping`) |
//! | `Stopping(id)` | the device ended an answered round | the driver sends STOP (`Idle`) |
//!
//! Hints count only in `Active` with the id still in config; any other
//! command from the driver (a second copy of the id, an old id, DONE, a
//! STOP with no round) is out of sequence.
//!
//! Each round gets the next id, counting up from the first id. A new round
//! starts only when no round is in progress, so an id is not issued again
//! while its round is open (until the driver has sent STOP for it, or the
//! device ended it before the driver answered). After `u32::MAX` the ids
//! wrap back to the first id (never 0 or 1), so after that many rounds an
//! old id can come back.

use core::fmt;

/// `VIRTIO_BALLOON_CMD_ID_STOP`.
pub const CMD_ID_STOP: u32 = 0;
/// `VIRTIO_BALLOON_CMD_ID_DONE`.
pub const CMD_ID_DONE: u32 = 1;
/// QEMU's first command id.
pub const QEMU_FIRST_HINT_ID: u32 = 0x8000_0000;

/// Why a hinting step was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HintError {
    /// FREE_PAGE_HINT was not negotiated.
    NotNegotiated,
    /// DRIVER_OK is not set.
    NotRunning,
    /// A round is in progress: the driver has not sent STOP for it.
    RoundActive,
    /// A command buffer that is not 4 bytes.
    BadLength {
        /// Bytes.
        len: usize,
    },
    /// A command id the protocol does not expect now.
    OutOfSequence {
        /// The id the driver sent.
        got: u32,
        /// The id in config.
        current: u32,
    },
    /// A hinted range that is empty, not 4 KiB aligned, or past guest memory.
    BadRange {
        /// Guest-physical address.
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// A hinted range holds pages that are in the balloon.
    OverlapsBalloon {
        /// Guest-physical address.
        addr: u64,
    },
}

impl fmt::Display for HintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotNegotiated => f.write_str("FREE_PAGE_HINT was not negotiated"),
            Self::NotRunning => f.write_str("DRIVER_OK is not set"),
            Self::RoundActive => f.write_str("a hinting round is in progress"),
            Self::BadLength { len } => write!(f, "command buffer of {len} bytes, 4 expected"),
            Self::OutOfSequence { got, current } => write!(
                f,
                "command id {got:#x} out of sequence (config holds {current:#x})"
            ),
            Self::BadRange { addr, len } => write!(
                f,
                "hinted range {addr:#x}+{len:#x} is not whole guest pages in guest memory"
            ),
            Self::OverlapsBalloon { addr } => {
                write!(f, "hinted range at {addr:#x} overlaps the balloon")
            }
        }
    }
}
impl core::error::Error for HintError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Idle,
    Requested(u32),
    Active(u32),
    Stopping(u32),
}

/// The device's view of the hinting protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HintRound {
    config_id: u32,
    first_id: u32,
    next_id: u32,
    phase: Phase,
}

impl HintRound {
    pub(crate) fn new(first_id: u32) -> Self {
        Self {
            config_id: CMD_ID_STOP,
            first_id,
            next_id: first_id,
            phase: Phase::Idle,
        }
    }

    pub(crate) fn config_id(&self) -> u32 {
        self.config_id
    }

    pub(crate) fn start(&mut self) -> Result<u32, HintError> {
        if self.phase != Phase::Idle {
            return Err(HintError::RoundActive);
        }
        let id = self.next_id;
        self.next_id = id.checked_add(1).unwrap_or(self.first_id).max(2);
        self.config_id = id;
        self.phase = Phase::Requested(id);
        Ok(id)
    }

    /// The device writes STOP or DONE.
    pub(crate) fn device_writes(&mut self, value: u32) {
        self.config_id = value;
        self.phase = match self.phase {
            Phase::Requested(_) | Phase::Idle => Phase::Idle,
            Phase::Active(id) | Phase::Stopping(id) => Phase::Stopping(id),
        };
    }

    pub(crate) fn driver_sends(&mut self, id: u32) -> Result<(), HintError> {
        let next = match (self.phase, id) {
            (Phase::Active(_) | Phase::Stopping(_), CMD_ID_STOP) => Phase::Idle,
            (Phase::Requested(want), got) if got == want && got == self.config_id => {
                Phase::Active(got)
            }
            _ => {
                return Err(HintError::OutOfSequence {
                    got: id,
                    current: self.config_id,
                });
            }
        };
        self.phase = next;
        Ok(())
    }

    pub(crate) fn accepts_hints(&self) -> bool {
        matches!(self.phase, Phase::Active(id) if id == self.config_id)
    }
}

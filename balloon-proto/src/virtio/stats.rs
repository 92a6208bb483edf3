//! The statistics queue: tags and the packed entry format.
//!
//! An entry is 10 bytes, `le16 tag` then `le64 val`, no padding (the spec's
//! "multiple of 6 bytes" is an erratum). Tags 0-9 are the spec's; 10-15 are
//! Linux's. A device ignores unknown tags and accepts any order.

use core::fmt;

use static_assertions::const_assert_eq;
use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One packed statistics entry.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C, packed)]
pub struct StatEntry {
    /// The tag.
    pub tag: U16,
    /// The value.
    pub val: U64,
}

const_assert_eq!(core::mem::size_of::<StatEntry>(), 10);

/// Bytes in one entry.
pub const STAT_ENTRY_SIZE: usize = 10;

/// The largest stats buffer a device accepts, in entries (Firecracker's
/// cap).
pub const MAX_STAT_ENTRIES: usize = 256;

/// The statistics tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
#[non_exhaustive]
pub enum StatTag {
    /// 0, bytes swapped in.
    SwapIn = 0,
    /// 1, bytes swapped out.
    SwapOut = 1,
    /// 2, major faults.
    MajFlt = 2,
    /// 3, minor faults.
    MinFlt = 3,
    /// 4, free memory, bytes.
    MemFree = 4,
    /// 5, total memory, bytes.
    MemTot = 5,
    /// 6, available memory, bytes.
    Avail = 6,
    /// 7, disk caches, bytes.
    Caches = 7,
    /// 8, hugetlb allocations.
    HtlbPgAlloc = 8,
    /// 9, hugetlb allocation failures.
    HtlbPgFail = 9,
    /// 10, OOM kills (Linux >= 6.12, not in the spec).
    OomKill = 10,
    /// 11, allocation stalls (Linux).
    AllocStall = 11,
    /// 12, async scan, bytes (Linux).
    AsyncScan = 12,
    /// 13, direct scan, bytes (Linux).
    DirectScan = 13,
    /// 14, async reclaim, bytes (Linux).
    AsyncReclaim = 14,
    /// 15, direct reclaim, bytes (Linux).
    DirectReclaim = 15,
}

/// Number of known tags.
pub const STAT_TAGS: usize = 16;

impl StatTag {
    /// Every known tag, in numeric order.
    pub const ALL: [Self; STAT_TAGS] = [
        Self::SwapIn,
        Self::SwapOut,
        Self::MajFlt,
        Self::MinFlt,
        Self::MemFree,
        Self::MemTot,
        Self::Avail,
        Self::Caches,
        Self::HtlbPgAlloc,
        Self::HtlbPgFail,
        Self::OomKill,
        Self::AllocStall,
        Self::AsyncScan,
        Self::DirectScan,
        Self::AsyncReclaim,
        Self::DirectReclaim,
    ];

    /// The tag with number `raw`, or `None` for an unknown one.
    #[must_use]
    pub fn from_raw(raw: u16) -> Option<Self> {
        Self::ALL.get(usize::from(raw)).copied()
    }
}

/// The last statistics a guest reported; a tag it did not report is unset
/// (QEMU resets every value on each buffer, so a stale number never
/// survives).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    values: [Option<u64>; STAT_TAGS],
}

impl Stats {
    /// The value of `tag`, if the last buffer had it.
    #[must_use]
    pub fn get(&self, tag: StatTag) -> Option<u64> {
        self.values.get(tag as usize).copied().flatten()
    }

    /// Parses a stats buffer. Unknown tags are ignored; a repeated tag keeps
    /// its last value.
    ///
    /// # Errors
    ///
    /// [`StatsError::BadLength`] when the buffer is not a whole number of
    /// entries, [`StatsError::TooLarge`] above [`MAX_STAT_ENTRIES`].
    pub fn parse(buffer: &[u8]) -> Result<Self, StatsError> {
        if buffer.len() % STAT_ENTRY_SIZE != 0 {
            return Err(StatsError::BadLength { len: buffer.len() });
        }
        if buffer.len() / STAT_ENTRY_SIZE > MAX_STAT_ENTRIES {
            return Err(StatsError::TooLarge { len: buffer.len() });
        }
        let mut stats = Self::default();
        for chunk in buffer.chunks_exact(STAT_ENTRY_SIZE) {
            let Ok(entry) = StatEntry::read_from_bytes(chunk) else {
                continue;
            };
            if let Some(slot) = stats.values.get_mut(usize::from(entry.tag.get())) {
                *slot = Some(entry.val.get());
            }
        }
        Ok(stats)
    }

    /// Sets a value (driver side, before encoding).
    pub fn set(&mut self, tag: StatTag, value: u64) {
        if let Some(slot) = self.values.get_mut(tag as usize) {
            *slot = Some(value);
        }
    }

    /// Bytes [`encode`](Self::encode) writes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.values.iter().flatten().count() * STAT_ENTRY_SIZE
    }

    /// Writes the set values as packed entries in tag order; returns the
    /// bytes written.
    ///
    /// # Errors
    ///
    /// [`StatsError::BufferTooSmall`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, StatsError> {
        let len = self.encoded_len();
        let Some(out) = out.get_mut(..len) else {
            return Err(StatsError::BufferTooSmall { needed: len });
        };
        let set = StatTag::ALL
            .iter()
            .zip(&self.values)
            .filter_map(|(t, v)| v.map(|v| (*t, v)));
        for (chunk, (tag, val)) in out.chunks_exact_mut(STAT_ENTRY_SIZE).zip(set) {
            let entry = StatEntry {
                tag: U16::new(tag as u16),
                val: U64::new(val),
            };
            chunk.copy_from_slice(entry.as_bytes());
        }
        Ok(len)
    }

    /// Which tags are set, as a bit mask (bit `tag`).
    #[must_use]
    pub fn tag_mask(&self) -> u16 {
        self.values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .fold(0, |m, (i, _)| m | (1 << i))
    }
}

/// Why a stats buffer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatsError {
    /// Not a whole number of 10-byte entries.
    BadLength {
        /// The length.
        len: usize,
    },
    /// More than [`MAX_STAT_ENTRIES`] entries.
    TooLarge {
        /// The length.
        len: usize,
    },
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// STATS_VQ was not negotiated.
    NotNegotiated,
    /// The device already holds a stats buffer: at most one is outstanding.
    AlreadyHeld,
    /// The device holds no stats buffer to return.
    NoneHeld,
    /// The device is not running (DRIVER_OK clear).
    NotRunning,
}

impl fmt::Display for StatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength { len } => write!(
                f,
                "stats buffer of {len} bytes is not a whole number of 10-byte entries"
            ),
            Self::TooLarge { len } => write!(f, "stats buffer of {len} bytes is above the cap"),
            Self::BufferTooSmall { needed } => write!(f, "stats need {needed} bytes"),
            Self::NotNegotiated => f.write_str("STATS_VQ was not negotiated"),
            Self::AlreadyHeld => f.write_str("a stats buffer is already outstanding"),
            Self::NoneHeld => f.write_str("no stats buffer is held"),
            Self::NotRunning => f.write_str("the device is not running"),
        }
    }
}
impl core::error::Error for StatsError {}

//! MAIR_ELx: the eight memory-attribute slots that stage-1 AttrIndx selects.

use super::ConfigError;
use crate::attrs::MemoryType;

/// A MAIR_ELx layout: which memory type each AttrIndx value selects.
///
/// Program [`value`](Self::value) into MAIR_ELx; the stage-1 format encodes
/// a mapping's [`MemoryType`] as the first slot that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mair {
    slots: [Option<MemoryType>; 8],
}

/// The MAIR attribute byte of a memory type, if it has one.
const fn encoding(mt: MemoryType) -> Option<u8> {
    match mt {
        // Normal, inner and outer write-back non-transient, read/write-allocate.
        MemoryType::WriteBack => Some(0xff),
        // Normal, inner and outer write-through non-transient, read/write-allocate.
        MemoryType::WriteThrough => Some(0xbb),
        // Normal, inner and outer non-cacheable.
        MemoryType::WriteCombining => Some(0x44),
        MemoryType::Uncacheable => Some(0x00),
        MemoryType::Device => Some(0x04),
        MemoryType::WriteProtect | MemoryType::UncacheableMinus | MemoryType::Inherited => None,
    }
}

impl Mair {
    /// Linux's layout: 0 Device-nGnRnE, 1 Device-nGnRE, 2 Normal-NC,
    /// 3 Normal WB, 5 Normal WT (4 is Linux's MTE-tagged normal memory,
    /// which this crate does not model; 6 and 7 unused).
    pub const LINUX: Self = Self {
        slots: [
            Some(MemoryType::Uncacheable),
            Some(MemoryType::Device),
            Some(MemoryType::WriteCombining),
            Some(MemoryType::WriteBack),
            None,
            Some(MemoryType::WriteThrough),
            None,
            None,
        ],
    };

    /// A layout from its slots (`None`: unused, encoded as 0).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Mair`] if a slot holds a type without a MAIR encoding
    /// (x86 WP, UC-; stage-2 "inherited").
    pub fn new(slots: [Option<MemoryType>; 8]) -> Result<Self, ConfigError> {
        if slots.iter().flatten().any(|&mt| encoding(mt).is_none()) {
            return Err(ConfigError::Mair);
        }
        Ok(Self { slots })
    }

    /// The MAIR_ELx register value.
    #[must_use]
    pub fn value(&self) -> u64 {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| u64::from(s.and_then(encoding).unwrap_or(0)) << (8 * i))
            .fold(0, |a, b| a | b)
    }

    /// The AttrIndx of a memory type: the first slot holding it.
    #[must_use]
    pub fn index_of(&self, mt: MemoryType) -> Option<u8> {
        self.slots
            .iter()
            .position(|&s| s == Some(mt))
            .map(|i| i as u8)
    }

    /// The memory type AttrIndx `index` selects (`None`: an unused slot).
    #[must_use]
    #[inline]
    pub fn memory_type(&self, index: u8) -> Option<MemoryType> {
        self.slots.get(usize::from(index)).copied().flatten()
    }
}

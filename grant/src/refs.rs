//! Free grant references, for the granting guest.

use core::fmt;

use crate::abi::{GrantRef, NR_RESERVED_ENTRIES};

/// Why a reference could not be freed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum RefError {
    /// The reference is reserved or beyond the allocator's capacity.
    OutOfRange,
    /// The reference is already free (double free).
    NotAllocated,
}

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutOfRange => "grant reference reserved or beyond the allocator",
            Self::NotAllocated => "grant reference is already free",
        })
    }
}

impl core::error::Error for RefError {}

/// Hands out free grant references from a bitmap in caller-provided storage
/// (one bit per reference, set = free). The toolstack's reserved entries
/// (0..8) are never handed out. Allocation scans from a hint, one 64-bit
/// word at a time.
pub struct GrantRefAllocator<'a> {
    bits: &'a mut [u64],
    capacity: u32,
    free: u32,
    hint: usize,
}

impl fmt::Debug for GrantRefAllocator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantRefAllocator")
            .field("capacity", &self.capacity)
            .field("free", &self.free)
            .finish()
    }
}

impl<'a> GrantRefAllocator<'a> {
    /// An allocator for references below `capacity` (at most 64 per word of
    /// `bits`), all free except the reserved ones.
    #[must_use]
    pub fn new(bits: &'a mut [u64], capacity: u32) -> Self {
        bits.fill(0);
        let mut this = Self {
            bits,
            capacity: NR_RESERVED_ENTRIES,
            free: 0,
            hint: 0,
        };
        this.grow(capacity);
        this
    }

    /// Adds references up to `capacity` (after the table grew); a capacity
    /// beyond the storage is cut to it.
    pub fn grow(&mut self, capacity: u32) {
        let limit = u32::try_from(self.bits.len().saturating_mul(64)).unwrap_or(u32::MAX);
        let capacity = capacity.min(limit);
        for raw in self.capacity..capacity {
            if let Some(word) = self.bits.get_mut(raw as usize / 64) {
                *word |= 1 << (raw % 64);
                self.free += 1;
            }
        }
        self.capacity = self.capacity.max(capacity);
    }

    /// Free references left.
    #[must_use]
    pub fn free_count(&self) -> u32 {
        self.free
    }

    /// A free reference, or `None` if all are in use.
    pub fn alloc(&mut self) -> Option<GrantRef> {
        let words = self.bits.len();
        for step in 0..words {
            let at = (self.hint + step) % words;
            let word = self.bits.get_mut(at)?;
            if *word != 0 {
                let bit = word.trailing_zeros();
                *word &= !(1 << bit);
                self.free -= 1;
                self.hint = at;
                return Some(GrantRef(at as u32 * 64 + bit));
            }
        }
        None
    }

    /// Gives `gref` back. End access first: a reference whose entry is still
    /// in use must not be reused.
    ///
    /// # Errors
    ///
    /// [`RefError::OutOfRange`], [`RefError::NotAllocated`] (double free).
    pub fn free(&mut self, gref: GrantRef) -> Result<(), RefError> {
        if gref.0 < NR_RESERVED_ENTRIES || gref.0 >= self.capacity {
            return Err(RefError::OutOfRange);
        }
        let word = self
            .bits
            .get_mut(gref.0 as usize / 64)
            .ok_or(RefError::OutOfRange)?;
        let bit = 1 << (gref.0 % 64);
        if *word & bit != 0 {
            return Err(RefError::NotAllocated);
        }
        *word |= bit;
        self.free += 1;
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reserved_refs_are_never_handed_out() {
        let mut bits = [0u64; 2];
        let mut refs = GrantRefAllocator::new(&mut bits, 100);
        assert_eq!(refs.free_count(), 92);
        let mut seen = std::vec::Vec::new();
        while let Some(gref) = refs.alloc() {
            assert!(gref.0 >= NR_RESERVED_ENTRIES && gref.0 < 100);
            seen.push(gref);
        }
        assert_eq!(seen.len(), 92);
        assert_eq!(refs.free(GrantRef(1)), Err(RefError::OutOfRange));
        assert_eq!(refs.free(GrantRef(100)), Err(RefError::OutOfRange));
    }

    #[test]
    fn double_free_of_a_ref_is_refused() {
        let mut bits = [0u64; 1];
        let mut refs = GrantRefAllocator::new(&mut bits, 64);
        let gref = refs.alloc().unwrap();
        refs.free(gref).unwrap();
        assert_eq!(refs.free(gref), Err(RefError::NotAllocated));
        refs.grow(1000);
        assert_eq!(refs.free_count(), 56);
    }
}

//! An open-addressing hash index from a 32-bit hash to a record number,
//! over caller-provided buckets.
//!
//! Each bucket is one `u64`: the key's 32-bit hash in the high half and the
//! record number plus one in the low half (0 = empty). Linear probing from
//! `hash & mask`; removal shifts later entries back (no tombstones), so a
//! probe never walks more than the run it belongs to. The tables are sized
//! to at least twice their records, so the load stays at or below one half
//! and every probe loop ends at an empty bucket within `buckets.len()` steps.
//! A probe compares the stored hash before touching the record, so a miss
//! costs one cache line in the common case.

/// A hash index over `buckets` (a power of two in length).
#[derive(Debug)]
pub(crate) struct HashIndex<'a> {
    buckets: &'a mut [u64],
    mask: usize,
}

/// Where a key was found: the bucket and the record number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) bucket: usize,
    pub(crate) record: u32,
}

impl<'a> HashIndex<'a> {
    /// An index over `buckets`, which must be empty (all zero) and a power of
    /// two long (or empty: then nothing is ever found or inserted).
    pub(crate) fn new(buckets: &'a mut [u64]) -> Self {
        buckets.fill(0);
        let mask = buckets.len().wrapping_sub(1);
        Self { buckets, mask }
    }

    /// The first record with `hash` for which `matches` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u32, mut matches: impl FnMut(u32) -> bool) -> Option<Found> {
        if self.buckets.is_empty() {
            return None;
        }
        let mut at = hash as usize & self.mask;
        for _ in 0..self.buckets.len() {
            let b = *self.buckets.get(at)?;
            if b == 0 {
                return None;
            }
            if (b >> 32) as u32 == hash {
                let record = (b as u32).wrapping_sub(1);
                if matches(record) {
                    return Some(Found { bucket: at, record });
                }
            }
            at = (at + 1) & self.mask;
        }
        None
    }

    /// Asks the cache for the bucket where a lookup of `hash` starts,
    /// without waiting for it (a hint: nothing is read or changed). A no-op
    /// where there is no prefetch instruction to use: all but x86_64,
    /// x86_64 targets built without SSE (`x86_64-unknown-none`), and miri.
    #[inline(always)]
    pub(crate) fn prefetch(&self, hash: u32) {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse", not(miri)))]
        if let Some(bucket) = self.buckets.get(hash as usize & self.mask) {
            #[allow(unsafe_code)]
            // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has.
            // A prefetch only hints the cache: it cannot fault, reads nothing
            // the program sees and writes nothing; the address is that of a
            // bucket this index borrows.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    core::ptr::from_ref(bucket).cast::<i8>(),
                );
            }
        }
        #[cfg(not(all(target_arch = "x86_64", target_feature = "sse", not(miri))))]
        let _ = hash;
    }

    /// Adds `record` under `hash`. Returns `false` (and changes nothing) if
    /// the index is full, which a correctly sized index never is.
    #[inline]
    pub(crate) fn insert(&mut self, hash: u32, record: u32) -> bool {
        let mut at = hash as usize & self.mask;
        for _ in 0..self.buckets.len() {
            let Some(b) = self.buckets.get_mut(at) else {
                return false;
            };
            if *b == 0 {
                *b = (u64::from(hash) << 32) | u64::from(record.wrapping_add(1));
                return true;
            }
            at = (at + 1) & self.mask;
        }
        false
    }

    /// Removes the entry in `bucket`, shifting the rest of its run back.
    #[inline]
    pub(crate) fn remove_at(&mut self, bucket: usize) {
        let mut hole = bucket;
        let mut at = bucket;
        for _ in 0..self.buckets.len() {
            at = (at + 1) & self.mask;
            let b = match self.buckets.get(at) {
                Some(&b) if b != 0 => b,
                _ => break,
            };
            let home = (b >> 32) as usize & self.mask;
            // The entry at `at` may move into the hole unless its home lies
            // cyclically in (hole, at].
            let stays = if hole <= at {
                hole < home && home <= at
            } else {
                hole < home || home <= at
            };
            if !stays {
                if let Some(slot) = self.buckets.get_mut(hole) {
                    *slot = b;
                }
                hole = at;
            }
        }
        if let Some(slot) = self.buckets.get_mut(hole) {
            *slot = 0;
        }
    }

    /// Removes the entry for `record` under `hash`, if present.
    pub(crate) fn remove(&mut self, hash: u32, record: u32) -> bool {
        match self.find(hash, |r| r == record) {
            Some(found) => {
                self.remove_at(found.bucket);
                true
            }
            None => false,
        }
    }
}

/// Folds a 128-bit product: the mixing step of the key and content hashes.
#[inline]
pub(crate) fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// An odd constant with well-spread bits (2^64 / golden ratio).
pub(crate) const K0: u64 = 0x9e37_79b9_7f4a_7c15;
/// A second mixing constant.
pub(crate) const K1: u64 = 0xbf58_476d_1ce4_e5b9;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn removal_keeps_every_other_entry_findable() {
        let mut buckets = vec![0u64; 16];
        let mut index = HashIndex::new(&mut buckets);
        // Collide on purpose: many records on a few home buckets, wrapping.
        let hashes: Vec<u32> = (0..8).map(|i| [15u32, 15, 0, 1, 15, 3, 2, 0][i]).collect();
        for (r, &h) in hashes.iter().enumerate() {
            assert!(index.insert(h, r as u32));
        }
        for victim in [1u32, 6, 0, 4] {
            assert!(index.remove(hashes[victim as usize], victim));
            for (r, &h) in hashes.iter().enumerate() {
                let r = r as u32;
                let gone = [1u32, 6, 0, 4]
                    .iter()
                    .take_while(|&&v| v != victim)
                    .any(|&v| v == r)
                    || r == victim;
                assert_eq!(index.find(h, |x| x == r).is_some(), !gone, "record {r}");
            }
        }
    }

    #[test]
    fn an_empty_index_finds_nothing() {
        let mut buckets: [u64; 0] = [];
        let mut index = HashIndex::new(&mut buckets);
        assert!(index.find(3, |_| true).is_none());
        assert!(!index.insert(3, 1));
    }
}

//! How Linux's tmem users name pages, for guest-side drivers: frontswap's
//! swap slots and cleancache's file pages, as Linux's Xen tmem driver
//! (`drivers/xen/tmem.c`, removed from Linux in 2019 by commit
//! `814bbf49dcd0`) built them.

use core::fmt;

use crate::handle::Oid;

/// A page position that does not fit tmem's 32-bit index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexOverflow {
    /// The position asked for.
    pub position: u64,
}

impl fmt::Display for IndexOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "page position {:#x} does not fit a 32-bit tmem index",
            self.position
        )
    }
}

impl core::error::Error for IndexOverflow {}

/// The key of swap slot `offset` of swap area `swap_type`, as Linux's
/// frontswap backend built it: `oid[0] = swap_type << 4 | (offset & 0xf)`,
/// `oid[1] = oid[2] = 0`, index `offset >> 4`. The 16 objects of a swap
/// type are what swapoff flushes.
///
/// # Errors
///
/// [`IndexOverflow`] if `offset >> 4` does not fit 32 bits (Linux then
/// does not use tmem for that slot).
pub fn frontswap_key(swap_type: u32, offset: u64) -> Result<(Oid, u32), IndexOverflow> {
    let index = u32::try_from(offset >> 4).map_err(|_| IndexOverflow { position: offset })?;
    Ok((
        Oid([u64::from(swap_type) << 4 | (offset & 0xf), 0, 0]),
        index,
    ))
}

/// The index of page `page_index` of a file in cleancache (the file's key is
/// the object id).
///
/// # Errors
///
/// [`IndexOverflow`] if the page index does not fit 32 bits (Linux skips
/// such pages).
pub fn cleancache_index(page_index: u64) -> Result<u32, IndexOverflow> {
    u32::try_from(page_index).map_err(|_| IndexOverflow {
        position: page_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_past_a_32_bit_index_are_refused() {
        assert_eq!(frontswap_key(1, 0x35), Ok((Oid([0x15, 0, 0]), 3)));
        assert_eq!(
            frontswap_key(0, 1 << 36),
            Err(IndexOverflow { position: 1 << 36 })
        );
        assert_eq!(frontswap_key(0, (1 << 36) - 1).map(|k| k.1), Ok(u32::MAX));
        assert_eq!(cleancache_index(u64::from(u32::MAX)), Ok(u32::MAX));
        assert!(cleancache_index(1 << 32).is_err());
    }
}

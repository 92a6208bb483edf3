//! The table geometry the fast loops need, as compile-time constants when
//! it is the common one.
//!
//! A walk or one-page update reads one entry per level: it asks
//! [`PhysMem`](crate::PhysMem) for the table, masks the index to the
//! table's size and bounds-checks the slot. With the geometry known only at
//! run time (AArch64 formats carry their granule and root size in `self`),
//! each of those is a load, a shift and a compare per level. Every x86
//! format, and AArch64 with the 4 KiB granule and a full root table, has
//! tables of 512 entries at every level, root included: for them the loops
//! are compiled with [`Tables512`], where the table size, the index masks
//! and the number of levels are constants: the bounds checks fold away and
//! the loops over the levels unroll. Other configurations run the
//! same loop with [`AnyShape`].

use crate::format::Format;

/// The sizes a fast loop needs (see the module documentation).
pub(crate) trait Shape: Copy {
    /// Entries in a table below the root.
    fn entries(self) -> usize;
    /// Entries in the root table.
    fn root_entries(self) -> usize;
    /// Index bits each table below the root resolves.
    fn bits(self) -> u32;
    /// Levels, the root's counted (`format.levels()`).
    fn levels(self) -> u8;
    /// `format.level_shift(level)`.
    fn level_shift<F: Format>(self, format: &F, level: u8) -> u32;
}

/// 4 KiB tables of 512 entries at every level, the root included, and
/// `LEVELS` levels: the loops over the levels unroll.
#[derive(Clone, Copy)]
pub(crate) struct Tables512<const LEVELS: u8>;

/// Whether `format`'s tables are all 512 entries of 8 bytes, each level
/// resolving 9 bits above a 4 KiB page.
#[inline(always)]
pub(crate) fn all_512<F: Format>(format: &F) -> bool {
    format.granule_shift() == 12
        && format.root_entries() == 512
        && (0..format.levels()).all(|l| format.level_shift(l) == 12 + 9 * u32::from(l))
}

impl<const LEVELS: u8> Shape for Tables512<LEVELS> {
    #[inline(always)]
    fn level_shift<F: Format>(self, _: &F, level: u8) -> u32 {
        12 + 9 * u32::from(level)
    }
    #[inline(always)]
    fn levels(self) -> u8 {
        LEVELS
    }
    #[inline(always)]
    fn entries(self) -> usize {
        512
    }
    #[inline(always)]
    fn root_entries(self) -> usize {
        512
    }
    #[inline(always)]
    fn bits(self) -> u32 {
        9
    }
}

/// Any geometry, read from the format at run time.
#[derive(Clone, Copy)]
pub(crate) struct AnyShape {
    entries: usize,
    root_entries: usize,
    bits: u32,
    levels: u8,
}

impl AnyShape {
    /// `format`'s geometry.
    #[inline(always)]
    pub(crate) fn of<F: Format>(format: &F) -> Self {
        Self {
            entries: format.entries(),
            root_entries: format.root_entries(),
            bits: format.granule_shift() - 3,
            levels: format.levels(),
        }
    }
}

impl Shape for AnyShape {
    #[inline(always)]
    fn entries(self) -> usize {
        self.entries
    }
    #[inline(always)]
    fn root_entries(self) -> usize {
        self.root_entries
    }
    #[inline(always)]
    fn bits(self) -> u32 {
        self.bits
    }
    #[inline(always)]
    fn levels(self) -> u8 {
        self.levels
    }
    #[inline(always)]
    fn level_shift<F: Format>(self, format: &F, level: u8) -> u32 {
        format.level_shift(level)
    }
}

/// Which [`Shape`] a format's tables have, decided once (a
/// [`PageTable`](crate::PageTable) keeps it) so that each operation's
/// dispatch is one compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShapeTag {
    /// [`Tables512`] with 4 levels.
    Tables512x4,
    /// [`Tables512`] with 5 levels.
    Tables512x5,
    /// [`Tables512`] with 3 levels.
    Tables512x3,
    /// [`AnyShape`].
    Any,
}

impl ShapeTag {
    /// The tag of `format`'s tables.
    pub(crate) fn of<F: Format>(format: &F) -> Self {
        match (all_512(format), format.levels()) {
            (true, 4) => Self::Tables512x4,
            (true, 5) => Self::Tables512x5,
            (true, 3) => Self::Tables512x3,
            _ => Self::Any,
        }
    }
}

/// Calls `$body` with `$shape` bound to the [`Shape`] `$tag` (a
/// [`ShapeTag`] of `$format`) names. Each arm is a separate monomorphised
/// copy of `$body`.
macro_rules! with_shape {
    ($tag:expr, $format:expr, |$shape:ident| $body:expr) => {{
        // Tested in turn, the most common first (a jump table would cost
        // an indirect branch on every operation).
        let tag = $tag;
        if tag == crate::shape::ShapeTag::Tables512x4 {
            let $shape = crate::shape::Tables512::<4>;
            $body
        } else if tag == crate::shape::ShapeTag::Tables512x5 {
            let $shape = crate::shape::Tables512::<5>;
            $body
        } else if tag == crate::shape::ShapeTag::Tables512x3 {
            let $shape = crate::shape::Tables512::<3>;
            $body
        } else {
            let $shape = crate::shape::AnyShape::of($format);
            $body
        }
    }};
}
pub(crate) use with_shape;

//! The page-table handle: a root, a format, and the public operations.

use core::ops::ControlFlow;
use core::sync::atomic::Ordering;

use hvmem_types::{PageSize, PhysAddr};

use crate::alloc::{Reservation, ReserveFailure, TableAllocator};
use crate::attrs::Attributes;
use crate::bbm::{BreakBeforeMake, NeverBreak};
use crate::edit::{Edit, Editor};
use crate::error::{MapError, ProtectError, RangeError, TableError, TranslateError, UnmapError};
use crate::flush::TlbFlush;
use crate::format::{Format, InputAddress, WithoutBreakBeforeMake};
use crate::mem::PhysMem;
use crate::shape::ShapeTag;
use crate::single::{Single, SingleError};
use crate::walk::{self, OutputAddr, Translation, Visit};

/// Which levels a mapping may place leaves at (bit `n` = level `n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafSizes(u8);

impl LeafSizes {
    /// Every leaf size the format supports: the largest that fit are used.
    pub const ANY: Self = Self(u8::MAX);

    /// Only leaves at `level` (a forced size).
    #[must_use]
    pub const fn only_level(level: u8) -> Self {
        Self(if level < 8 { 1 << level } else { 0 })
    }

    /// Only leaves of this size, for formats with a 4 KiB granule (x86, EPT,
    /// AArch64 4K): 4 KiB is level 0, 2 MiB level 1, 1 GiB level 2.
    #[must_use]
    pub const fn only(size: PageSize) -> Self {
        Self::only_level(match size {
            PageSize::Size4K => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
        })
    }

    /// Leaves at `level` or below (at most that size, the largest that fit).
    #[must_use]
    pub const fn up_to_level(level: u8) -> Self {
        Self(if level < 7 {
            (1 << (level + 1)) - 1
        } else {
            u8::MAX
        })
    }

    pub(crate) const fn allows(self, level: u8) -> bool {
        level < 8 && self.0 & (1 << level) != 0
    }
}

/// How [`PageTable::map`] treats what is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MapOptions {
    /// The leaf sizes the mapping may use.
    pub sizes: LeafSizes,
    /// Replace existing mappings in the range instead of refusing.
    pub replace: bool,
    /// Afterwards, merge tables of uniform contiguous leaves in the range
    /// into larger leaves.
    pub merge: bool,
    /// Set the contiguous hint on whole, aligned runs of leaves (AArch64;
    /// no effect elsewhere). On by default.
    pub contiguous_hint: bool,
}

impl Default for MapOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl MapOptions {
    /// The largest leaves that fit, refusing to overwrite, no merging, and
    /// the contiguous hint on (AArch64; no effect on x86 and EPT).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            sizes: LeafSizes::ANY,
            replace: false,
            merge: false,
            contiguous_hint: true,
        }
    }

    /// The same options with other leaf sizes.
    #[must_use]
    pub const fn sizes(mut self, sizes: LeafSizes) -> Self {
        self.sizes = sizes;
        self
    }

    /// The same options, replacing existing mappings. A replaced leaf is
    /// new: the accessed, dirty and software bits of the old one are not
    /// kept.
    #[must_use]
    pub const fn replacing(mut self) -> Self {
        self.replace = true;
        self
    }

    /// The same options, without the contiguous hint.
    #[must_use]
    pub const fn without_contiguous_hint(mut self) -> Self {
        self.contiguous_hint = false;
        self
    }

    /// The same options, merging afterwards.
    #[must_use]
    pub const fn merging(mut self) -> Self {
        self.merge = true;
        self
    }
}

/// `attrs` as one word, one byte a field, so that the remembered page
/// template is found with one compare (the derived `==` compares field by
/// field). Every field is a byte or maps to one, so equal keys are equal
/// attributes; the top byte stays zero.
#[inline(always)]
fn attributes_key(attrs: &Attributes) -> u64 {
    u64::from_le_bytes([
        attrs.access.bits(),
        attrs.memory_type as u8,
        u8::from(attrs.global),
        attrs.protection_key,
        u8::from(attrs.ignore_guest_pat),
        attrs.shareability as u8,
        attrs.tracking.bits(),
        0,
    ])
}

/// The key no attributes have (its top byte is not zero).
const NO_KEY: u64 = u64::MAX;

/// A page table of format `F`: its root table and the format.
///
/// The handle holds no memory of its own: tables are reached through a
/// [`PhysMem`] and come from a [`TableAllocator`] passed to each operation.
/// Operations that change the tables take `&mut self`: the embedder
/// serialises editors (hardware walkers and A/D updates may run concurrently;
/// every entry is accessed atomically).
#[derive(Debug)]
pub struct PageTable<F: Format> {
    pub(crate) format: F,
    pub(crate) root: u64,
    /// The last-level leaf encoding (at address 0) of the attributes the
    /// last one-page map used, with their [`attributes_key`] ([`NO_KEY`]
    /// before the first): the format never changes, so it stays valid, and
    /// repeated one-page maps with the same attributes skip
    /// `Format::encode_leaf`.
    last_page_template: (u64, u64),
    /// The shape of the format's tables, for the fast loops.
    pub(crate) shape: ShapeTag,
}

impl<F: Format> PageTable<F> {
    /// A new, empty table with a root from `alloc`.
    ///
    /// A root that spans several tables (AArch64 stage-2 concatenation,
    /// [`Format::root_tables`]) comes from [`TableAllocator::alloc_root`],
    /// whose default has none to give (`MapError::OutOfMemory`): an
    /// allocator for such formats overrides `alloc_root` and `free_root`.
    ///
    /// # Errors
    ///
    /// [`MapError::OutOfMemory`] if `alloc` has no frame,
    /// [`MapError::Range`] if a concatenated root is not aligned to its size,
    /// [`MapError::Table`] if the frame is not accessible through `mem`.
    pub fn new(
        format: F,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
    ) -> Result<Self, MapError> {
        let tables = format.root_tables();
        if tables <= 1 {
            let mut r = Reservation::take_frames(1, format.root_entries(), mem, alloc)
                .map_err(reserve_error::<MapError>)?;
            let root = r.take(mem).ok_or(MapError::OutOfMemory)?;
            return Ok(Self {
                shape: ShapeTag::of(&format),
                format,
                root,
                last_page_template: (NO_KEY, 0),
            });
        }
        // A concatenated root: contiguous tables, aligned to their total size.
        let root = alloc.alloc_root(tables).ok_or(MapError::OutOfMemory)?;
        let bytes = format.root_entries() as u64 * 8;
        if root.get() % bytes != 0 {
            alloc.free_root(root, tables);
            return Err(MapError::Range(RangeError::Misaligned));
        }
        let Some(entries) = mem.table(root, format.root_entries()) else {
            alloc.free_root(root, tables);
            return Err(MapError::Table(TableError::NotAccessible { table: root }));
        };
        for e in entries {
            e.store(0, Ordering::Relaxed);
        }
        #[cfg(test)]
        crate::bbm::trace::fresh(entries);
        Ok(Self {
            shape: ShapeTag::of(&format),
            format,
            root: root.get(),
            last_page_template: (NO_KEY, 0),
        })
    }

    /// A handle on existing tables rooted at `root` (a guest's CR3 or EPTP
    /// table, tables built elsewhere). Operations check every entry they
    /// meet, so malformed tables produce errors, never undefined behaviour.
    ///
    /// The `PhysMem` you pass is handed the table addresses these tables
    /// hold (guest-physical for a guest's own tables), and the
    /// `TableAllocator` gives and takes frames that belong to them. Nothing
    /// else may write the tables while an update runs (pause the vCPUs that
    /// could): tables changed between an update's plan and its commit can
    /// leave it applied in part. Do not [`destroy`](Self::destroy) tables
    /// you did not build.
    #[must_use]
    pub fn from_root(format: F, root: PhysAddr) -> Self {
        Self {
            shape: ShapeTag::of(&format),
            format,
            root: root.get(),
            last_page_template: (NO_KEY, 0),
        }
    }

    /// The root table's physical address (for CR3, EPTP, TTBR, VTTBR).
    #[must_use]
    pub fn root(&self) -> PhysAddr {
        PhysAddr::new(self.root)
    }

    /// The format.
    #[must_use]
    pub fn format(&self) -> &F {
        &self.format
    }

    /// The most table frames one update of `len` bytes at `input` can take
    /// from its allocator, whatever the tables hold: [`map`](Self::map),
    /// [`unmap`](Self::unmap), [`protect`](Self::protect),
    /// [`merge`](Self::merge) or their live forms. An update needs at most
    /// one new table (created, or made by splitting a large leaf) for each
    /// region a table below the root covers that the range touches, so this
    /// is the number of such regions. It reads no table: compute it before
    /// taking the lock that serialises editors, to top up a
    /// [`FrameCache`](crate::FrameCache). 0 for an empty range, or one
    /// whose start the format cannot translate (the update refuses it).
    ///
    /// On 4-level x86, one 4 KiB page needs at most 3 (a PDPT, a PD and a
    /// PT), and 1 GiB aligned to 1 GiB at most 514 (512 PTs, a PD, a PDPT).
    #[must_use]
    pub fn max_new_tables(&self, input: F::Input, len: u64) -> usize {
        let Some(first) = self.format.input_to_index(input.raw()) else {
            return 0;
        };
        let Some(last) = len.checked_sub(1).and_then(|l| first.checked_add(l)) else {
            return 0;
        };
        // Tables below the root are referenced from levels 1 up to the root;
        // one referenced from `level` covers `1 << level_shift(level)` bytes.
        (1..self.format.levels())
            .map(|level| {
                let shift = self.format.level_shift(level);
                let regions = (last >> shift) - (first >> shift) + 1;
                usize::try_from(regions).unwrap_or(usize::MAX)
            })
            .fold(0, usize::saturating_add)
    }

    /// Checks an input range and returns it in index space. `align` is a
    /// power of two.
    #[inline]
    fn index_range(&self, input: F::Input, len: u64, align: u64) -> Result<(u64, u64), RangeError> {
        let start_raw = input.raw();
        debug_assert!(align.is_power_of_two());
        if (start_raw | len) & align.wrapping_sub(1) != 0 {
            return Err(RangeError::Misaligned);
        }
        if len == 0 {
            let start = self
                .format
                .input_to_index(start_raw)
                .ok_or(RangeError::OutOfRange)?;
            return Ok((start, start));
        }
        // One aligned block no larger than a smallest page (the one-page
        // update): a page is translatable as a whole and maps to contiguous
        // indexes (`Format::input_to_index`), so its first address decides.
        if len == align && align <= 1u64 << self.format.granule_shift() {
            let start = self
                .format
                .input_to_index(start_raw)
                .ok_or(RangeError::OutOfRange)?;
            let end = start.checked_add(len).ok_or(RangeError::OutOfRange)?;
            return Ok((start, end));
        }
        let last_raw = start_raw
            .checked_add(len - 1)
            .ok_or(RangeError::OutOfRange)?;
        let start = self
            .format
            .input_to_index(start_raw)
            .ok_or(RangeError::OutOfRange)?;
        let last = self
            .format
            .input_to_index(last_raw)
            .ok_or(RangeError::OutOfRange)?;
        // Both ends translatable and contiguous in index space: the range
        // does not cross the canonical hole.
        if last < start || last - start != len - 1 {
            return Err(RangeError::OutOfRange);
        }
        Ok((start, last + 1))
    }

    /// The level whose leaf is exactly `[start, start + len)`, if one is
    /// allowed: the case for the one-leaf fast path.
    #[inline]
    fn single_leaf_level(&self, start: u64, len: u64, sizes: LeafSizes) -> Option<u8> {
        if !len.is_power_of_two() || start & (len - 1) != 0 {
            return None;
        }
        // The most frequent case first: one smallest page.
        if len.trailing_zeros() == self.format.level_shift(0) {
            return (sizes.allows(0) && self.format.leaf_allowed(0)).then_some(0);
        }
        (0..self.format.levels()).find(|&l| {
            self.format.level_shift(l) == len.trailing_zeros()
                && sizes.allows(l)
                && self.format.leaf_allowed(l)
        })
    }

    #[inline]
    fn smallest_leaf(&self, sizes: LeafSizes) -> Option<u8> {
        if sizes.allows(0) && self.format.leaf_allowed(0) {
            return Some(0);
        }
        (0..self.format.levels()).find(|&l| sizes.allows(l) && self.format.leaf_allowed(l))
    }

    /// Maps `len` bytes at `input` to the physical range at `pa` with
    /// `attrs`, using the largest leaves `options.sizes` allows that fit the
    /// alignment of both addresses.
    ///
    /// All or nothing: every table the mapping needs is reserved from `alloc`
    /// before any entry changes. Returns the translations to invalidate
    /// (those replaced, and large leaves split at the edges).
    ///
    /// # Errors
    ///
    /// The tables are unchanged on every error:
    /// - [`MapError::Range`]: misaligned for the smallest allowed leaf,
    ///   untranslatable input, physical range beyond the output size, or no
    ///   allowed leaf size,
    /// - [`MapError::Attributes`]: the format cannot express `attrs`,
    /// - [`MapError::AlreadyMapped`]: something is mapped there and
    ///   `options.replace` is off,
    /// - [`MapError::OutOfMemory`]: `alloc` ran out,
    /// - [`MapError::Table`]: an inaccessible table or malformed entry.
    ///
    /// The checks and the one-leaf fast path are inlined into the caller
    /// (the result, a [`TlbFlush`], is then written once, in place); the
    /// general engine is [`map_general`](Self::map_general).
    #[allow(clippy::too_many_arguments)] // where, to what, how long, how, and the resources
    #[inline(always)]
    fn map_with(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        input: F::Input,
        pa: PhysAddr,
        len: u64,
        attrs: &Attributes,
        options: MapOptions,
    ) -> Result<TlbFlush, MapError> {
        let smallest = self
            .smallest_leaf(options.sizes)
            .ok_or(RangeError::NoLeafSize)?;
        let align = 1u64 << self.format.level_shift(smallest);
        let (start, end) = self.index_range(input, len, align)?;
        if pa.get() & (align - 1) != 0 {
            return Err(RangeError::Misaligned.into());
        }
        let pa_end = pa
            .get()
            .checked_add(len)
            .ok_or(RangeError::OutputOutOfRange)?;
        if self.format.output_bits() < 64 && pa_end > 1u64 << self.format.output_bits() {
            return Err(RangeError::OutputOutOfRange.into());
        }
        if let Some(level) = self.single_leaf_level(start, len, options.sizes) {
            if pa.get() & (len - 1) == 0 && !options.merge {
                let template = if level == 0 {
                    self.page_template(attrs)
                } else {
                    self.format.encode_leaf(0, attrs, level)
                }
                .map_err(MapError::Attributes)?;
                let leaf = self.format.with_output_address(template, pa.get(), level);
                let mut flush = TlbFlush::NONE;
                match self.map_single(
                    mem,
                    alloc,
                    bbm,
                    start,
                    level,
                    leaf,
                    options.replace,
                    &mut flush,
                ) {
                    Ok(Single::Done) => return Ok(flush),
                    Ok(Single::General) => {}
                    Err(SingleError::Table(t)) => return Err(MapError::Table(t)),
                    Err(SingleError::Reserve(r)) => return Err(reserve_error(r)),
                    Err(SingleError::Mapped(at)) => return Err(MapError::AlreadyMapped { at }),
                }
            }
        }
        self.map_general(mem, alloc, bbm, start, end, pa, attrs, options)
    }

    /// `Format::encode_leaf(0, attrs, 0)`, remembered for the next call with
    /// the same attributes (errors are not remembered).
    #[inline]
    fn page_template(&mut self, attrs: &Attributes) -> Result<u64, crate::AttrError> {
        let key = attributes_key(attrs);
        let (last, template) = self.last_page_template;
        if last == key {
            return Ok(template);
        }
        let template = self.format.encode_leaf(0, attrs, 0)?;
        self.last_page_template = (key, template);
        Ok(template)
    }

    /// [`map_with`](Self::map_with) past its checks: plan, reserve, commit
    /// (`[start, end)` in index space, checked).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(crate) fn map_general(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        start: u64,
        end: u64,
        pa: PhysAddr,
        attrs: &Attributes,
        options: MapOptions,
    ) -> Result<TlbFlush, MapError> {
        let mut templates = [0u64; 8];
        for (level, template) in (0..self.format.levels()).zip(templates.iter_mut()) {
            if options.sizes.allows(level) && self.format.leaf_allowed(level) {
                *template = self
                    .format
                    .encode_leaf(0, attrs, level)
                    .map_err(MapError::Attributes)?;
            }
        }
        let edit = Edit::Map {
            pa: pa.get(),
            start,
            templates,
            sizes: options.sizes,
            replace: options.replace,
            contiguous: options.contiguous_hint,
        };
        let flush = self
            .run(mem, alloc, bbm, start, end, &edit)
            .map_err(|e| match e {
                EditFailure::Reserve(r) => reserve_error(r),
                EditFailure::Table(t) => MapError::Table(t),
                EditFailure::Mapped(at) => MapError::AlreadyMapped { at },
            })?;
        if options.merge {
            Ok(flush.merge(self.merge_index(mem, alloc, bbm, start, end)))
        } else {
            Ok(flush)
        }
    }

    /// Removes every translation in `len` bytes at `input`. A large leaf
    /// only partly inside is split first; tables left empty are freed to
    /// `alloc` (see [`TableAllocator::free_table`] for when they may be
    /// reused).
    ///
    /// # Errors
    ///
    /// The tables are unchanged on every error:
    /// - [`UnmapError::Range`]: not 4 KiB aligned (the smallest page), or
    ///   untranslatable,
    /// - [`UnmapError::OutOfMemory`]: a split needed a table `alloc` lacked,
    /// - [`UnmapError::Table`]: an inaccessible table or malformed entry.
    ///
    /// Inlined like [`map_with`](Self::map_with); the general engine is
    /// [`unmap_general`](Self::unmap_general).
    #[inline(always)]
    fn unmap_with(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        input: F::Input,
        len: u64,
    ) -> Result<TlbFlush, UnmapError> {
        let align = 1u64 << self.format.granule_shift();
        let (start, end) = self.index_range(input, len, align)?;
        if let Some(level) = self.single_leaf_level(start, len, LeafSizes::ANY) {
            let mut flush = TlbFlush::NONE;
            match self.unmap_single(mem, alloc, start, level, &mut flush) {
                Ok(Single::Done) => return Ok(flush),
                Ok(Single::General) => {}
                Err(SingleError::Table(t)) => return Err(UnmapError::Table(t)),
                Err(SingleError::Reserve(ReserveFailure::OutOfMemory)) => {
                    return Err(UnmapError::OutOfMemory);
                }
                Err(SingleError::Reserve(ReserveFailure::NotAccessible(table))) => {
                    return Err(UnmapError::Table(TableError::NotAccessible { table }));
                }
                Err(SingleError::Mapped(at)) => {
                    return Err(UnmapError::Table(TableError::Malformed { at, level: 0 }));
                }
            }
        }
        self.unmap_general(mem, alloc, bbm, start, end)
    }

    /// [`unmap_with`](Self::unmap_with) past its checks.
    #[inline(never)]
    pub(crate) fn unmap_general(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        start: u64,
        end: u64,
    ) -> Result<TlbFlush, UnmapError> {
        self.run(mem, alloc, bbm, start, end, &Edit::Unmap)
            .map_err(|e| match e {
                EditFailure::Reserve(ReserveFailure::OutOfMemory) => UnmapError::OutOfMemory,
                EditFailure::Reserve(ReserveFailure::NotAccessible(table)) => {
                    UnmapError::Table(TableError::NotAccessible { table })
                }
                EditFailure::Table(t) => UnmapError::Table(t),
                // Only a map without `replace` refuses mapped entries.
                EditFailure::Mapped(at) => {
                    UnmapError::Table(TableError::Malformed { at, level: 0 })
                }
            })
    }

    /// Gives every translation in `len` bytes at `input` the attributes
    /// `attrs`, keeping its physical address. Holes stay holes; a large leaf
    /// only partly inside is split first.
    ///
    /// Each rewritten leaf holds what `attrs` encodes, its address, and the
    /// accessed and dirty bits (x86, EPT; [`Format::hardware_bits`]) it held
    /// when the editor read it; a large leaf that is split passes its bits
    /// to every piece. On last-level pages, a bit hardware sets between that
    /// read and the plain store of the new entry (a window of a few
    /// instructions) is lost: exact dirty tracking needs the writers
    /// stopped during the protect. Large leaves are exchanged atomically
    /// and keep late bits too.
    /// AArch64 software bits are cleared, and AF/DBM follow
    /// `attrs.tracking`.
    ///
    /// # Errors
    ///
    /// The tables are unchanged on every error:
    /// - [`ProtectError::Range`]: not 4 KiB aligned, or untranslatable,
    /// - [`ProtectError::Attributes`]: the format cannot express `attrs` at
    ///   a level where the range has a leaf,
    /// - [`ProtectError::OutOfMemory`]: a split needed a table `alloc` lacked,
    /// - [`ProtectError::Table`]: an inaccessible table or malformed entry.
    fn protect_with(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        input: F::Input,
        len: u64,
        attrs: &Attributes,
    ) -> Result<TlbFlush, ProtectError> {
        let align = 1u64 << self.format.granule_shift();
        let (start, end) = self.index_range(input, len, align)?;
        let mut templates = [0u64; 8];
        for (level, template) in (0..self.format.levels()).zip(templates.iter_mut()) {
            if self.format.leaf_allowed(level) {
                *template = self
                    .format
                    .encode_leaf(0, attrs, level)
                    .map_err(ProtectError::Attributes)?;
            }
        }
        self.run(
            mem,
            alloc,
            bbm,
            start,
            end,
            &Edit::Protect {
                attrs: *attrs,
                templates,
            },
        )
        .map_err(|e| match e {
            EditFailure::Reserve(ReserveFailure::OutOfMemory) => ProtectError::OutOfMemory,
            EditFailure::Reserve(ReserveFailure::NotAccessible(table)) => {
                ProtectError::Table(TableError::NotAccessible { table })
            }
            EditFailure::Table(t) => ProtectError::Table(t),
            // Only a map without `replace` refuses mapped entries.
            EditFailure::Mapped(at) => ProtectError::Table(TableError::Malformed { at, level: 0 }),
        })
    }

    /// Replaces every table in `len` bytes at `input` whose entries are all
    /// leaves with contiguous physical addresses and identical attributes by
    /// one larger leaf, where the format allows one, and frees the table.
    /// Never allocates; malformed or inaccessible parts are left alone. The
    /// large leaf carries the union of its leaves' accessed and dirty bits
    /// (x86, EPT).
    ///
    /// # Errors
    ///
    /// [`RangeError`] for a misaligned or untranslatable range.
    fn merge_with(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        input: F::Input,
        len: u64,
    ) -> Result<TlbFlush, RangeError> {
        let align = 1u64 << self.format.granule_shift();
        let (start, end) = self.index_range(input, len, align)?;
        Ok(self.merge_index(mem, alloc, bbm, start, end))
    }

    fn merge_index(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        start: u64,
        end: u64,
    ) -> TlbFlush {
        let mut editor = Editor::new(
            &self.format,
            mem,
            Reservation::empty(self.format.entries()),
            bbm,
        );
        editor.merge(self.root, self.top_level(), 0, start, end, alloc);
        editor.finish(mem, alloc)
    }

    fn top_level(&self) -> u8 {
        self.format.levels().saturating_sub(1)
    }

    /// Plans, reserves, commits.
    fn run(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        start: u64,
        end: u64,
        edit: &Edit,
    ) -> Result<TlbFlush, EditFailure> {
        if start == end {
            return Ok(TlbFlush::NONE);
        }
        let mut never = NeverBreak;
        let planner = Editor::new(
            &self.format,
            mem,
            Reservation::empty(self.format.entries()),
            &mut never,
        );
        let needed = planner
            .plan(
                crate::edit::Node::Real(self.root),
                self.top_level(),
                0,
                start,
                end,
                edit,
            )
            .map_err(|e| match e {
                crate::edit::PlanError::Table(t) => EditFailure::Table(t),
                crate::edit::PlanError::Mapped(at) => EditFailure::Mapped(at),
            })?;
        let reservation = Reservation::take_frames(needed, self.format.entries(), mem, alloc)
            .map_err(EditFailure::Reserve)?;
        let mut editor = Editor::new(&self.format, mem, reservation, bbm);
        editor.commit(
            self.root,
            self.top_level(),
            0,
            start,
            end,
            edit,
            alloc,
            false,
        );
        Ok(editor.finish(mem, alloc))
    }

    /// The translation of `input`: the physical address, the leaf's level
    /// and size, and the attributes combined over every level of the walk.
    ///
    /// # Errors
    ///
    /// [`TranslateError`] if the address is out of range, not mapped, or the
    /// walk meets an inaccessible table or a malformed entry. The walk reads
    /// at most one entry per level, so any table contents terminate.
    #[inline]
    pub fn translate(
        &self,
        mem: &impl PhysMem,
        input: F::Input,
    ) -> Result<Translation, TranslateError> {
        let index = self
            .format
            .input_to_index(input.raw())
            .ok_or(TranslateError::OutOfRange)?;
        walk::translate(&self.format, self.shape, mem, self.root, index)
    }

    /// Translates `input` to its output address only, as an MMU's walk
    /// would, without building the leaf's attributes or combining the
    /// tables' rights: the cheaper walk for callers that need the address
    /// (e.g. to copy from it). It accepts and refuses exactly the entries
    /// [`translate`](Self::translate) does.
    ///
    /// # Errors
    ///
    /// As [`translate`](Self::translate).
    pub fn translate_addr(
        &self,
        mem: &impl PhysMem,
        input: F::Input,
    ) -> Result<OutputAddr, TranslateError> {
        let index = self
            .format
            .input_to_index(input.raw())
            .ok_or(TranslateError::OutOfRange)?;
        walk::translate_addr(&self.format, self.shape, mem, self.root, index)
    }

    /// Calls `visit` for each table, leaf, hole and malformed entry that
    /// covers part of `len` bytes at `input`, top down and in address order,
    /// until it returns `Break`. The walk is bounded by the levels and the
    /// range, whatever the tables contain.
    ///
    /// # Errors
    ///
    /// [`RangeError`] for an untranslatable range.
    pub fn visit(
        &self,
        mem: &impl PhysMem,
        input: F::Input,
        len: u64,
        mut visit: impl FnMut(Visit) -> ControlFlow<()>,
    ) -> Result<(), RangeError> {
        let (start, end) = self.index_range(input, len, 1)?;
        let _ = walk::visit(
            &self.format,
            mem,
            self.root,
            self.top_level(),
            0,
            start,
            end,
            &mut visit,
        );
        Ok(())
    }

    /// Frees every table, the root included, to `alloc`; returns the flush
    /// of the whole address space.
    ///
    /// The root is freed at once: it must no longer be loaded (CR3, EPTP,
    /// TTBR, VTTBR) on any CPU. Only for tables this editor built: every
    /// table reached is freed, with no check that a frame is reached only
    /// once, so a guest's aliased or cyclic tables would be freed twice. A
    /// concatenated root goes to [`TableAllocator::free_root`]; give the
    /// allocator that made it.
    pub fn destroy(self, mem: &impl PhysMem, alloc: &mut impl TableAllocator) -> TlbFlush {
        let mut never = NeverBreak;
        let editor = Editor::new(
            &self.format,
            mem,
            Reservation::empty(self.format.entries()),
            &mut never,
        );
        if let Some(l) = self.top_level().checked_sub(1) {
            if let Some(entries) = mem.table(PhysAddr::new(self.root), self.format.root_entries()) {
                for e in entries {
                    if let crate::Descriptor::Table(child) = self
                        .format
                        .decode(e.load(Ordering::Acquire), self.top_level())
                    {
                        editor.free_subtree(child, l, alloc);
                    }
                }
            }
        }
        alloc.free_root(PhysAddr::new(self.root), self.format.root_tables());
        TlbFlush::ALL
    }

    /// Reads the raw entry covering `input` at `level` (for diagnostics and
    /// tests).
    #[must_use]
    pub fn raw_entry(&self, mem: &impl PhysMem, input: F::Input, level: u8) -> Option<u64> {
        let index = self.format.input_to_index(input.raw())?;
        walk::entry_at(&self.format, mem, self.root, index, level)
            .map(|e| e.load(Ordering::Acquire))
    }
}

/// Editing tables whose live entries may be replaced in one store (x86-64
/// paging, EPT): everything to invalidate comes back as the [`TlbFlush`].
impl<F: WithoutBreakBeforeMake> PageTable<F> {
    /// Maps `len` bytes at `input` to the physical range at `pa` with
    /// `attrs`, using the largest leaves `options.sizes` allows that fit the
    /// alignment of both addresses.
    ///
    /// All or nothing: every table the mapping needs is reserved from `alloc`
    /// before any entry changes. Returns the translations to invalidate
    /// (those replaced, and large leaves split at the edges).
    ///
    /// # Errors
    ///
    /// The tables are unchanged on every error:
    /// - [`MapError::Range`]: misaligned for the smallest allowed leaf,
    ///   untranslatable input, physical range beyond the output size, or no
    ///   allowed leaf size,
    /// - [`MapError::Attributes`]: the format cannot express `attrs`,
    /// - [`MapError::AlreadyMapped`]: something is mapped there and
    ///   `options.replace` is off,
    /// - [`MapError::OutOfMemory`]: `alloc` ran out,
    /// - [`MapError::Table`]: an inaccessible table or malformed entry.
    #[allow(clippy::too_many_arguments)] // where, to what, how long, how, and the two resources
    #[inline]
    pub fn map(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        input: F::Input,
        pa: PhysAddr,
        len: u64,
        attrs: &Attributes,
        options: MapOptions,
    ) -> Result<TlbFlush, MapError> {
        self.map_with(mem, alloc, &mut NeverBreak, input, pa, len, attrs, options)
    }

    /// Removes every translation in `len` bytes at `input`. A large leaf
    /// only partly inside is split first; tables left empty are freed to
    /// `alloc` (see [`TableAllocator::free_table`] for when they may be
    /// reused).
    ///
    /// # Errors
    ///
    /// The tables are unchanged on every error:
    /// - [`UnmapError::Range`]: not aligned to the smallest page, or
    ///   untranslatable,
    /// - [`UnmapError::OutOfMemory`]: a split needed a table `alloc` lacked,
    /// - [`UnmapError::Table`]: an inaccessible table or malformed entry.
    #[inline]
    pub fn unmap(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        input: F::Input,
        len: u64,
    ) -> Result<TlbFlush, UnmapError> {
        self.unmap_with(mem, alloc, &mut NeverBreak, input, len)
    }

    /// Gives every translation in `len` bytes at `input` the attributes
    /// `attrs`, keeping its physical address. Holes stay holes; a large leaf
    /// only partly inside is split first.
    ///
    /// # Errors
    ///
    /// The tables are unchanged on every error:
    /// - [`ProtectError::Range`]: not aligned to the smallest page, or
    ///   untranslatable,
    /// - [`ProtectError::Attributes`]: the format cannot express `attrs` at
    ///   a level where the range has a leaf,
    /// - [`ProtectError::OutOfMemory`]: a split needed a table `alloc` lacked,
    /// - [`ProtectError::Table`]: an inaccessible table or malformed entry.
    pub fn protect(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        input: F::Input,
        len: u64,
        attrs: &Attributes,
    ) -> Result<TlbFlush, ProtectError> {
        self.protect_with(mem, alloc, &mut NeverBreak, input, len, attrs)
    }

    /// Replaces every table in `len` bytes at `input` whose entries are all
    /// leaves with contiguous physical addresses and identical attributes by
    /// one larger leaf, where the format allows one, and frees the table.
    /// Never allocates; malformed or inaccessible parts are left alone.
    ///
    /// # Errors
    ///
    /// [`RangeError`] for a misaligned or untranslatable range.
    pub fn merge(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        input: F::Input,
        len: u64,
    ) -> Result<TlbFlush, RangeError> {
        self.merge_with(mem, alloc, &mut NeverBreak, input, len)
    }
}

/// Editing tables that hardware may be walking, for every format: where the
/// architecture requires break-before-make (AArch64), the editor writes the
/// invalid entries, calls `bbm` to invalidate them, and only then writes the
/// new entries; the rest comes back as the [`TlbFlush`]. On x86 and EPT
/// `bbm` is never called.
impl<F: Format> PageTable<F> {
    /// [`map`](PageTable::map) on a live table: replacing a valid entry by
    /// one the architecture does not allow in place (the list on
    /// [`BreakBeforeMake`]), splitting a block, or touching part of a
    /// contiguous run goes through `bbm`.
    /// A run of the right length and alignment gets the contiguous hint.
    ///
    /// # Errors
    ///
    /// As [`map`](PageTable::map); the tables are unchanged on every error
    /// and `bbm` has not been called.
    #[allow(clippy::too_many_arguments)]
    pub fn map_live(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        input: F::Input,
        pa: PhysAddr,
        len: u64,
        attrs: &Attributes,
        options: MapOptions,
    ) -> Result<TlbFlush, MapError> {
        self.map_with(mem, alloc, bbm, input, pa, len, attrs, options)
    }

    /// [`unmap`](PageTable::unmap) on a live table (splitting a block, or
    /// unfolding a contiguous run cut by the range, goes through `bbm`).
    ///
    /// # Errors
    ///
    /// As [`unmap`](PageTable::unmap).
    pub fn unmap_live(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        input: F::Input,
        len: u64,
    ) -> Result<TlbFlush, UnmapError> {
        self.unmap_with(mem, alloc, bbm, input, len)
    }

    /// [`protect`](PageTable::protect) on a live table: changes the
    /// architecture allows in place (the list on [`BreakBeforeMake`]) are
    /// written and flushed; memory-type or shareability changes, a change of
    /// EL0 access at stage 1, touching part of a contiguous run, and splits
    /// go through `bbm`.
    ///
    /// # Errors
    ///
    /// As [`protect`](PageTable::protect).
    pub fn protect_live(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        input: F::Input,
        len: u64,
        attrs: &Attributes,
    ) -> Result<TlbFlush, ProtectError> {
        self.protect_with(mem, alloc, bbm, input, len, attrs)
    }

    /// [`merge`](PageTable::merge) on a live table: each table replaced by a
    /// block goes through `bbm`.
    ///
    /// # Errors
    ///
    /// As [`merge`](PageTable::merge).
    pub fn merge_live(
        &mut self,
        mem: &impl PhysMem,
        alloc: &mut impl TableAllocator,
        bbm: &mut impl BreakBeforeMake,
        input: F::Input,
        len: u64,
    ) -> Result<TlbFlush, RangeError> {
        self.merge_with(mem, alloc, bbm, input, len)
    }
}

/// Why the planning or reservation step stopped an update.
enum EditFailure {
    Reserve(ReserveFailure),
    Table(TableError),
    Mapped(u64),
}

fn reserve_error<E: From<TableError> + OutOfMemory>(r: ReserveFailure) -> E {
    match r {
        ReserveFailure::OutOfMemory => E::out_of_memory(),
        ReserveFailure::NotAccessible(table) => TableError::NotAccessible { table }.into(),
    }
}

trait OutOfMemory {
    fn out_of_memory() -> Self;
}

impl OutOfMemory for MapError {
    fn out_of_memory() -> Self {
        Self::OutOfMemory
    }
}

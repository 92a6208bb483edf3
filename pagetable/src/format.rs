//! What the editor needs to know about a page-table format.
//!
//! The editor is one algorithm over a radix tree; a [`Format`] supplies the
//! geometry (levels, bits per level, the root's size), which levels may hold
//! leaves, and the encoding of entries. Levels are numbered from the bottom:
//! level 0 is the last-level table whose entries map the smallest pages
//! (x86 PT, AArch64 level 3), level 1 the one above (x86 PD, AArch64 level 2),
//! and so on up to the root at `levels() - 1`. [`Format::level_name`] gives the
//! architecture's own name for each.

use crate::attrs::{AttrError, Attributes};

/// An address the format translates: a virtual address for stage-1 formats,
/// a guest-physical address for stage-2 / EPT.
pub trait InputAddress: Copy + core::fmt::Debug {
    /// The raw address.
    fn raw(self) -> u64;
    /// Wraps a raw address.
    fn from_raw(raw: u64) -> Self;
}

impl InputAddress for hvmem_types::VirtAddr {
    fn raw(self) -> u64 {
        self.get()
    }
    fn from_raw(raw: u64) -> Self {
        Self::new(raw)
    }
}

impl InputAddress for hvmem_types::GuestPhysAddr {
    fn raw(self) -> u64 {
        self.get()
    }
    fn from_raw(raw: u64) -> Self {
        Self::new(raw)
    }
}

/// An entry as the editor understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descriptor {
    /// Not valid: translations through it fault.
    Invalid,
    /// Points to the next-level table at this physical address.
    Table(u64),
    /// Maps a block or page at this physical address.
    Leaf(u64, Attributes),
    /// Valid, but not something a conforming walker accepts at this level
    /// (reserved bits, a leaf where none may be, a misaligned address).
    Malformed,
}

/// What kind of entry a raw value is, without a leaf's attributes: what a
/// walk needs at every level but the last (see [`Format::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Not valid.
    Invalid,
    /// Points to the next-level table at this physical address.
    Table(u64),
    /// A block or page mapping this physical address.
    Leaf(u64),
    /// Valid but malformed at this level.
    Malformed,
}

impl From<Descriptor> for EntryKind {
    #[inline]
    fn from(d: Descriptor) -> Self {
        match d {
            Descriptor::Invalid => Self::Invalid,
            Descriptor::Table(t) => Self::Table(t),
            Descriptor::Leaf(pa, _) => Self::Leaf(pa),
            Descriptor::Malformed => Self::Malformed,
        }
    }
}

/// A page-table format: geometry and entry encoding.
///
/// Implemented by [`X86Paging`](crate::X86Paging), [`Ept`](crate::Ept),
/// [`aarch64::Stage1`](crate::aarch64::Stage1) and
/// [`aarch64::Stage2`](crate::aarch64::Stage2).
///
/// Two hooks let the one editor follow both architectures' rules for live
/// tables: [`needs_break`](Self::needs_break) says when a valid entry may not
/// be replaced by another in one store (AArch64 break-before-make; never on
/// x86), and [`contiguous_run`](Self::contiguous_run) says where runs of
/// entries may carry a contiguous hint (AArch64; none on x86).
///
/// The all-zero entry must decode as [`Descriptor::Invalid`] at every
/// level: the editor clears an entry by writing zero, fills new tables with
/// zeros, and takes a zero entry for a free slot without decoding it.
pub trait Format {
    /// The kind of address this format translates.
    type Input: InputAddress;

    /// Number of levels, counting the root.
    fn levels(&self) -> u8;

    /// log2 of the table and smallest page size (12 for 4 KiB).
    fn granule_shift(&self) -> u32;

    /// Entries in a table below the root.
    fn entries(&self) -> usize {
        1 << (self.granule_shift() - 3)
    }

    /// Entries in the root table (more than [`entries`](Self::entries) with
    /// concatenated roots, fewer when the input size does not fill it).
    fn root_entries(&self) -> usize {
        self.entries()
    }

    /// How many granule-sized tables the root spans (AArch64 stage-2
    /// concatenated roots: up to 16, aligned to their total size).
    fn root_tables(&self) -> usize {
        self.root_entries().div_ceil(self.entries()).max(1)
    }

    /// log2 of the size an entry at `level` maps.
    fn level_shift(&self, level: u8) -> u32 {
        self.granule_shift() + (self.granule_shift() - 3) * u32::from(level)
    }

    // -- Hooks of the fast walk (translation and the one-page update) --

    /// A mask test that recognises the common well-formed table entry at
    /// every level above the last, so that a walk need not classify it with
    /// [`kind`](Self::kind). The test is only a shortcut: an entry it does
    /// not match is classified by `kind` as before. The default,
    /// [`TablePattern::NEVER`], matches nothing.
    ///
    /// Contract (checked for the crate's formats by the tests): for every
    /// level `l` from 1 up to the root and every `raw`,
    /// `pattern.matches(raw)` implies
    /// `kind(raw, l) == EntryKind::Table(pattern.address(raw))`.
    #[inline]
    fn table_pattern(&self) -> TablePattern {
        TablePattern::NEVER
    }

    /// A shortcut for the last level (level 0): `Some(pa)` if `raw` is
    /// certainly a well-formed page there mapping `pa`, `None` if the walk
    /// must ask [`kind`](Self::kind). The default always says `None`.
    ///
    /// Contract (checked for the crate's formats by the tests):
    /// `last_level_leaf(raw) == Some(pa)` implies
    /// `kind(raw, 0) == EntryKind::Leaf(pa)`.
    #[inline]
    fn last_level_leaf(&self, _raw: u64) -> Option<u64> {
        None
    }

    /// The architecture's name of a level, e.g. `"PD"` or `"L2"`.
    fn level_name(&self, level: u8) -> &'static str;

    /// Translates an input address to the index space the tables cover
    /// (`0 .. 2^input_bits`), or `None` if the address is not translatable
    /// by this format (non-canonical, beyond the input size).
    ///
    /// Uniform over each smallest page (`1 << granule_shift()` bytes,
    /// aligned): either every address of the page translates, to
    /// consecutive indexes, or none does.
    fn input_to_index(&self, input: u64) -> Option<u64>;

    /// The input address of an index (the inverse of `input_to_index`).
    fn index_to_input(&self, index: u64) -> u64;

    /// The width of physical addresses the tables may hold.
    fn output_bits(&self) -> u32;

    /// Whether an entry at `level` may be a leaf.
    fn leaf_allowed(&self, level: u8) -> bool;

    /// Decodes a raw entry read at `level`.
    fn decode(&self, raw: u64, level: u8) -> Descriptor;

    /// The kind of a raw entry at `level`: exactly what
    /// [`decode`](Self::decode) says, without building a leaf's attributes.
    /// Walks call it at every level and decode only the leaf they stop at.
    /// The default goes through `decode`; formats override it with a
    /// cheaper check that must agree with `decode` on every value.
    #[inline]
    fn kind(&self, raw: u64, level: u8) -> EntryKind {
        self.decode(raw, level).into()
    }

    /// The raw entry for a pointer to the next-level table at `table`.
    fn encode_table(&self, table: u64, level: u8) -> u64;

    /// The raw leaf entry mapping `pa` with `attrs` at `level`.
    ///
    /// # Errors
    ///
    /// An [`AttrError`] if the format cannot express `attrs` there.
    fn encode_leaf(&self, pa: u64, attrs: &Attributes, level: u8) -> Result<u64, AttrError>;

    /// The leaf entry mapping `pa` at `level`, built from `template`: what
    /// [`encode_leaf`](Self::encode_leaf) returned for the same attributes and
    /// level at address 0. The bulk-map fast path; formats whose output
    /// address is not one plain bit field (AArch64 LPA2) override it.
    fn with_output_address(&self, template: u64, pa: u64, _level: u8) -> u64 {
        template | pa
    }

    /// Whether replacing the valid entry `old` by the valid entry `new` at
    /// `level` needs break-before-make: an invalid entry and a TLB
    /// invalidation in between (AArch64: the list on
    /// [`BreakBeforeMake`](crate::BreakBeforeMake)). Never on x86, where one
    /// store and a later flush suffice.
    fn needs_break(&self, _old: u64, _new: u64, _level: u8) -> bool {
        false
    }

    /// The bits hardware sets in a leaf to record its use (x86 and EPT:
    /// accessed and dirty), at the same positions at every level; 0 (the
    /// default) if the format has none or leaves them to the attributes
    /// (AArch64's AF and DBM are [`Attributes::tracking`](crate::Attributes)).
    ///
    /// The editor carries them over wherever a leaf keeps mapping the same
    /// memory: a protect keeps a leaf's, a split copies the large leaf's
    /// into every leaf it becomes, and a merge gives the large leaf the
    /// union of its leaves'. A map that replaces a leaf starts afresh.
    ///
    /// Contract (checked for the crate's formats by the tests): these bits
    /// never change an entry's [`kind`](Self::kind), its
    /// [`is_contiguous`](Self::is_contiguous) or a
    /// [`needs_break`](Self::needs_break) verdict, and
    /// [`encode_leaf`](Self::encode_leaf) leaves them clear.
    #[inline]
    fn hardware_bits(&self) -> u64 {
        0
    }

    /// log2 of the number of entries at `level` that form one contiguous
    /// run (AArch64 with 4 KiB pages: 4, for runs of 16), or 0 if the format
    /// has no contiguous hint there.
    fn contiguous_run(&self, _level: u8) -> u32 {
        0
    }

    /// Whether the leaf `raw` carries the contiguous hint.
    fn is_contiguous(&self, _raw: u64) -> bool {
        false
    }

    /// The leaf `raw` with the contiguous hint set (`on`) or clear.
    fn with_contiguous(&self, raw: u64, _on: bool) -> u64 {
        raw
    }

    /// The rights a table entry at `level` leaves to the entries below it
    /// (x86 ANDs R/W and U/S and ORs XD down the walk). The editor writes
    /// table entries that restrict nothing; guest-written ones may.
    fn table_limits(&self, _raw: u64, _level: u8) -> crate::Access {
        crate::Access::all()
    }

    // The attribute-change fast path.

    /// The bits of a leaf at `level` that hold its output address, as far
    /// as a well-formed leaf there can set them (aligned to the level's
    /// size, below [`output_bits`](Self::output_bits)), or `None` if the
    /// format does not say (the default: protect then decodes and encodes
    /// every leaf).
    ///
    /// A protect keeps these bits of each leaf and replaces the rest, and
    /// checks each run of leaves with the same other bits once. A format
    /// returning a mask `m` promises, at that level:
    /// - `kind(raw)`'s variant (invalid, table, leaf, malformed) depends
    ///   only on `raw & !m`;
    /// - for a leaf `raw` at `pa` and every `t` that
    ///   `encode_leaf(0, attrs, level)` returns: `t & m == 0` and
    ///   `with_output_address(t, pa, level) == t | (raw & m)`;
    /// - `is_contiguous(raw)` depends only on `raw & !m`, and so does
    ///   `needs_break(old, new)` when `old` and `new` hold the same address
    ///   bits.
    #[inline]
    fn leaf_address_mask(&self, _level: u8) -> Option<u64> {
        None
    }

    // The bulk-map fast path.

    /// The bits of an output address that a leaf at `level` holds in place
    /// (bit `n` of the address is bit `n` of the entry), or `None` if the
    /// format does not say (the default: a bulk map encodes every leaf with
    /// [`with_output_address`](Self::with_output_address)).
    ///
    /// A bulk map into a fresh last-level table then encodes the first leaf
    /// of a stretch and steps each next one by the page size, as long as the
    /// stretch's addresses differ only inside these bits. A format
    /// returning `Some(f)` promises, at that level:
    /// - `f` is one run of consecutive bits whose lowest is at most
    ///   [`level_shift(level)`](Self::level_shift);
    /// - for every `t` that `encode_leaf(0, attrs, level)` returns, with or
    ///   without the contiguous hint: `t & f == 0`;
    /// - for every aligned `pa`: `with_output_address(t, pa, level) ==
    ///   with_output_address(t, pa & !f, level) | (pa & f)` and
    ///   `with_output_address(t, pa & !f, level) & f == 0`.
    #[inline]
    fn leaf_address_in_place(&self, _level: u8) -> Option<u64> {
        None
    }
}

/// Formats whose live entries may be replaced in a single store, with the
/// TLB flush afterwards (x86-64 paging, EPT): they have the plain
/// [`PageTable::map`](crate::PageTable::map), `unmap`, `protect` and `merge`.
/// Formats that need break-before-make are edited only through the `*_live`
/// methods, which take a [`BreakBeforeMake`](crate::BreakBeforeMake).
pub trait WithoutBreakBeforeMake: Format {}

/// A table entry recognised by one mask test (see
/// [`Format::table_pattern`]): `raw` is a well-formed table entry if
/// `raw & check == value`, and it points to the table at `raw & address`.
///
/// `check` holds the type bits and every bit that must be zero in a table
/// entry (reserved bits, address bits beyond the output size); `value` the
/// type bits' required values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablePattern {
    /// The bits the test looks at.
    pub check: u64,
    /// What they must hold.
    pub value: u64,
    /// The bits of the next table's physical address.
    pub address: u64,
}

impl TablePattern {
    /// A pattern no entry matches: every entry goes through
    /// [`Format::kind`].
    pub const NEVER: Self = Self {
        check: 0,
        value: 1,
        address: 0,
    };

    /// Whether `raw` is a table entry by this pattern.
    #[inline]
    #[must_use]
    pub const fn matches(&self, raw: u64) -> bool {
        raw & self.check == self.value
    }

    /// The next table's address in a matching entry.
    #[inline]
    #[must_use]
    pub const fn address(&self, raw: u64) -> u64 {
        raw & self.address
    }
}

//! What the grant table needs from the frame table and from memory.

use hvmem_types::{DomId, Mfn};

/// Why the granter's frame number could not be used.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GfnError {
    /// Not a valid frame of the domain: unmapped, not RAM, or foreign
    /// (`GNTST_bad_page`).
    BadPage,
    /// Paged out; the caller should retry (`GNTST_eagain`).
    PagedOut,
}

/// Why a transfer could not take the sender's frame.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum StealError {
    /// Not a valid frame of the sender (`GNTST_bad_page`).
    BadPage,
    /// The frame has other users (`GNTST_general_error`); it stays with the
    /// sender.
    InUse,
}

/// Frame references, translation and frame memory for grant operations
/// (hvmem-frametable implements it behind its `grant` feature).
///
/// Reference discipline the table keeps, and which the implementor counts:
///
/// - An active entry (a grant pinned by at least one mapping or copy) holds
///   the one general reference [`get_gfn`](Self::get_gfn) took when it was
///   first pinned, dropped with [`put_page`](Self::put_page) when the last
///   pin goes.
/// - Each mapping kind (host, device) holds a general reference
///   ([`get_page`](Self::get_page)) if read-only, or a general and a
///   writable type reference ([`get_page_and_type`](Self::get_page_and_type))
///   if writable; unmap or teardown drops exactly that, once.
/// - A copy holds the same for the duration of the copy.
pub trait GrantFrames {
    /// Translates `owner`'s frame number `gfn` (identity for a PV guest, the
    /// p2m for a translated one) and takes a general reference on the frame
    /// in `owner`'s name (Xen `get_paged_frame`).
    ///
    /// # Errors
    ///
    /// [`GfnError::BadPage`], [`GfnError::PagedOut`].
    fn get_gfn(&self, owner: DomId, gfn: u64) -> Result<Mfn, GfnError>;

    /// Takes a general reference on `mfn`, only if `owner` owns it.
    fn get_page(&self, owner: DomId, mfn: Mfn) -> bool;

    /// Drops a general reference taken by [`get_gfn`](Self::get_gfn) or
    /// [`get_page`](Self::get_page).
    fn put_page(&self, mfn: Mfn);

    /// Takes a general and a writable type reference on `mfn`, only if
    /// `owner` owns it and the frame can be writable (Xen
    /// `get_page_and_type(PGT_writable_page)`); takes neither otherwise.
    fn get_page_and_type(&self, owner: DomId, mfn: Mfn) -> bool;

    /// Drops what [`get_page_and_type`](Self::get_page_and_type) took.
    fn put_page_and_type(&self, mfn: Mfn);

    /// Copies `len` bytes from offset `src_offset` of `src` to offset
    /// `dst_offset` of `dst`. The table guarantees both ranges lie inside
    /// their 4 KiB frame and holds references on both frames (a writable
    /// type on `dst`).
    fn copy(&self, src: Mfn, src_offset: usize, dst: Mfn, dst_offset: usize, len: usize);

    /// Takes `owner`'s frame `gfn` away from it for a transfer: the frame
    /// must have no other user; it leaves the owner's physmap and belongs to
    /// nobody until [`assign_page`](Self::assign_page) or
    /// [`free_page`](Self::free_page) (Xen `steal_page`).
    ///
    /// # Errors
    ///
    /// [`StealError::BadPage`], [`StealError::InUse`].
    fn steal_page(&self, owner: DomId, gfn: u64) -> Result<Mfn, StealError>;

    /// Whether `dom` may receive one more frame (not dying, below its
    /// maximum).
    fn can_receive(&self, dom: DomId) -> bool;

    /// Gives the stolen `mfn` to `dom` at its frame number `gfn`; `false`
    /// if `dom` cannot take it after all (the frame stays stolen).
    fn assign_page(&self, dom: DomId, mfn: Mfn, gfn: u64) -> bool;

    /// Frees a stolen frame that no transfer could deliver.
    fn free_page(&self, mfn: Mfn);
}

/// The grant tables of the domains an operation may name.
pub trait Domains {
    /// The table of `dom`, or `None` if there is no such domain. Reserved
    /// ids are refused before this is asked.
    fn grant_table(&self, dom: DomId) -> Option<&crate::GrantTable<'_>>;
}

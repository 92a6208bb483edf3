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
    /// The frame has other users (`GNTST_bad_page`, as in Xen); it stays
    /// with the sender.
    InUse,
}

/// Frame references, translation and frame memory for grant operations
/// (hvmem-frametable implements it behind its `grant` feature).
///
/// Reference discipline the table keeps, and which the implementor counts
/// (Xen's):
///
/// - Each mapping kind (host, device) holds a general reference if
///   read-only, or a general and a writable type reference if writable;
///   unmap or teardown drops exactly that, once
///   ([`put_page`](Self::put_page) /
///   [`put_page_and_type`](Self::put_page_and_type)).
/// - A copy holds the same on each grant or frame it uses, for as long as
///   it uses it.
/// - The general reference [`get_gfn`](Self::get_gfn) takes when a grant is
///   first pinned (or a copy claims a frame of its own) is the first user's
///   general reference, completed by [`get_type`](Self::get_type) if that
///   user writes; later users of a pinned grant take theirs with
///   [`get_page`](Self::get_page) or
///   [`get_page_and_type`](Self::get_page_and_type). An active entry holds
///   no reference of its own: while it is pinned, its pins' references keep
///   the frame.
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

    /// Takes a writable type reference on `mfn`, on which the caller holds
    /// a general reference taken in `owner`'s name (Xen
    /// `get_page_type(PGT_writable_page)`); `false`, taking nothing, if the
    /// frame cannot be writable. [`put_page_and_type`](Self::put_page_and_type)
    /// drops it together with that general reference.
    fn get_type(&self, owner: DomId, mfn: Mfn) -> bool;

    /// Drops what [`get_page_and_type`](Self::get_page_and_type) took, or a
    /// general reference and the type reference [`get_type`](Self::get_type)
    /// added to it.
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
///
/// A table returned here must not be touched by any `&mut` operation
/// ([`GrantTable::grow`](crate::GrantTable::grow),
/// [`set_version`](crate::GrantTable::set_version),
/// [`swap_grant_ref`](crate::GrantTable::swap_grant_ref) and
/// [`swap_grant_refs`](crate::GrantTable::swap_grant_refs),
/// [`teardown`](crate::GrantTable::teardown),
/// [`setup_table`](crate::setup_table)) until the operation that asked for
/// it has returned. One operation may ask for several tables: a copy asks
/// for both sides and, through a transitive grant, a third; an unmap keeps
/// its table across `flush_tlb`.
///
/// The method returns a plain reference, not a lock guard, so a lock per
/// table cannot keep this rule. Use one read-write lock for all tables
/// (this value holds the read guard for the whole operation; the `&mut`
/// operations take the write side), or retire tables RCU-style (a `&mut`
/// operation waits until no operation that may have looked the table up
/// is still running). See the crate docs, "Sharing tables between CPUs".
pub trait Domains {
    /// The table of `dom`, or `None` if there is no such domain. Reserved
    /// ids are refused before this is asked.
    fn grant_table(&self, dom: DomId) -> Option<&crate::GrantTable<'_>>;
}

//! Guards that hold a reference and drop it when they go out of scope.
//!
//! A [`PageRef`] holds one general reference; a [`TypedRef`] holds a general
//! reference and the type reference it backs. Leaking one is visible in the
//! types (`into_raw`), and so is adopting one back (`from_raw`), which is how
//! an embedder keeps references in structures the hardware reads (a page
//! table entry, an IOMMU entry) and gets them back when the entry goes.

use core::fmt;
use core::mem::ManuallyDrop;

use hvmem_types::Mfn;

use crate::{FrameError, FrameTable, FrameType, Owner, PutOutcome, Validator};

/// A general reference on a frame, dropped with the guard.
///
/// To keep a reference where a guard cannot live (a page-table entry, an
/// IOMMU entry), give it up with [`into_raw`](Self::into_raw) and adopt it
/// back with [`from_raw`](Self::from_raw) when the entry goes.
///
/// If the guard held the frame's last reference, its drop frees the frame
/// and tells the table's [`FreeSink`](crate::FreeSink); use
/// [`put`](Self::put) to see that outcome instead.
#[must_use = "dropping the guard drops the reference at once"]
pub struct PageRef<'t> {
    table: &'t FrameTable<'t>,
    mfn: Mfn,
}

impl<'t> PageRef<'t> {
    /// Adopts a general reference taken earlier with
    /// [`FrameTable::get_page`] or given up with [`into_raw`](Self::into_raw).
    /// Adopting a reference nobody holds is a logic error that a later put
    /// reports as [`FrameError::NotReferenced`]; it cannot corrupt memory.
    pub fn from_raw(table: &'t FrameTable<'t>, mfn: Mfn) -> Self {
        Self { table, mfn }
    }

    /// The frame.
    #[must_use]
    pub fn mfn(&self) -> Mfn {
        self.mfn
    }

    /// Gives up the guard without dropping the reference; the caller now
    /// owns it and must drop it with [`FrameTable::put_page`] or
    /// [`from_raw`](Self::from_raw).
    #[must_use = "the reference leaks unless it is put or adopted again"]
    pub fn into_raw(self) -> Mfn {
        ManuallyDrop::new(self).mfn
    }

    /// Drops the reference now, reporting whether the frame was freed.
    pub fn put(self) -> PutOutcome {
        let this = ManuallyDrop::new(self);
        // The guard held a reference, so the put cannot be refused unless
        // raw puts elsewhere broke the contract.
        this.table
            .put_page(this.mfn)
            .unwrap_or(PutOutcome::StillReferenced)
    }
}

impl Drop for PageRef<'_> {
    fn drop(&mut self) {
        let dropped = self.table.put_page(self.mfn);
        debug_assert!(dropped.is_ok(), "guard of {} held no reference", self.mfn);
    }
}

impl fmt::Debug for PageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PageRef").field(&self.mfn).finish()
    }
}

/// A general reference and a type reference on a frame, both dropped with
/// the guard (type first). Dropping the last reference of a page-table type
/// de-validates the frame through the guard's validator.
#[must_use = "dropping the guard drops the references at once"]
pub struct TypedRef<'t, V: Validator + ?Sized> {
    table: &'t FrameTable<'t>,
    validator: &'t V,
    mfn: Mfn,
}

impl<'t, V: Validator + ?Sized> TypedRef<'t, V> {
    /// Adopts a general and a type reference taken earlier with
    /// [`FrameTable::get_page`] and [`FrameTable::get_type`], or given up
    /// with [`into_raw`](Self::into_raw).
    pub fn from_raw(table: &'t FrameTable<'t>, validator: &'t V, mfn: Mfn) -> Self {
        Self {
            table,
            validator,
            mfn,
        }
    }

    /// The frame.
    #[must_use]
    pub fn mfn(&self) -> Mfn {
        self.mfn
    }

    /// Gives up the guard without dropping the references; the caller now
    /// owns both.
    #[must_use = "the references leak unless they are put or adopted again"]
    pub fn into_raw(self) -> Mfn {
        ManuallyDrop::new(self).mfn
    }

    /// Drops the references now, reporting whether the frame was freed.
    pub fn put(self) -> PutOutcome {
        let this = ManuallyDrop::new(self);
        let _ = this.table.put_type(this.mfn, this.validator);
        this.table
            .put_page(this.mfn)
            .unwrap_or(PutOutcome::StillReferenced)
    }
}

impl<V: Validator + ?Sized> Drop for TypedRef<'_, V> {
    fn drop(&mut self) {
        let typed = self.table.put_type(self.mfn, self.validator);
        let general = self.table.put_page(self.mfn);
        debug_assert!(
            typed.is_ok() && general.is_ok(),
            "guard of {} held no reference",
            self.mfn
        );
    }
}

impl<V: Validator + ?Sized> fmt::Debug for TypedRef<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TypedRef").field(&self.mfn).finish()
    }
}

impl<'a> FrameTable<'a> {
    /// Takes a general reference on `mfn` for `owner`, held by the returned
    /// guard.
    ///
    /// # Errors
    ///
    /// Those of [`get_page`](Self::get_page).
    pub fn get_page_ref(&self, mfn: Mfn, owner: Owner) -> Result<PageRef<'_>, FrameError> {
        self.get_page(mfn, owner)?;
        Ok(PageRef::from_raw(self, mfn))
    }

    /// Takes a general and a type reference on `mfn` for `owner` (Xen
    /// `get_page_and_type`), held by the returned guard. If the type cannot
    /// be taken, the general reference is dropped again.
    ///
    /// # Errors
    ///
    /// Those of [`get_page`](Self::get_page) and
    /// [`get_type`](Self::get_type).
    pub fn get_typed_ref<'t, V: Validator + ?Sized>(
        &'t self,
        mfn: Mfn,
        owner: Owner,
        ty: FrameType,
        validator: &'t V,
    ) -> Result<TypedRef<'t, V>, FrameError> {
        let page = self.get_page_ref(mfn, owner)?;
        self.get_type(mfn, ty, validator)?;
        Ok(TypedRef::from_raw(self, validator, page.into_raw()))
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used)]
mod tests {
    use core::sync::atomic::{AtomicU64, Ordering};

    use hvmem_types::{DomId, FrameRange};

    use super::*;
    use crate::{FrameInfo, FreeSink, TrustContents};

    const D1: Owner = Owner::Domain(DomId::new(1));
    const MFN: Mfn = Mfn::new(0x30);

    struct LastFreed(AtomicU64);

    impl FreeSink for LastFreed {
        fn frame_freed(&self, mfn: Mfn) {
            self.0.store(mfn.get(), Ordering::Relaxed);
        }
    }

    #[test]
    fn guards_drop_their_references_and_the_last_one_frees() {
        let frames: [FrameInfo; 1] = Default::default();
        let sink = LastFreed(AtomicU64::new(0));
        let table = FrameTable::new(&frames, &[FrameRange::new(MFN, 1).unwrap()])
            .unwrap()
            .with_free_sink(&sink);
        table.assign(MFN, D1).unwrap();
        let page = table.get_page_ref(MFN, D1).unwrap();
        {
            let typed = table
                .get_typed_ref(MFN, D1, FrameType::Writable, &TrustContents)
                .unwrap();
            assert_eq!(typed.mfn(), MFN);
            let state = table.state(MFN).unwrap();
            assert_eq!((state.refs, state.type_refs), (3, 1));
        }
        let state = table.state(MFN).unwrap();
        assert_eq!((state.refs, state.type_refs), (2, 0));
        assert_eq!(table.release(MFN, D1), Ok(PutOutcome::StillReferenced));
        assert_eq!(sink.0.load(Ordering::Relaxed), 0);
        drop(page);
        assert_eq!(sink.0.load(Ordering::Relaxed), MFN.get());
        assert_eq!(table.state(MFN).unwrap().owner, None);
    }

    #[test]
    fn raw_references_round_trip_through_hardware_structures() {
        let frames: [FrameInfo; 1] = Default::default();
        let table = FrameTable::new(&frames, &[FrameRange::new(MFN, 1).unwrap()]).unwrap();
        table.assign(MFN, D1).unwrap();
        let typed = table
            .get_typed_ref(MFN, D1, FrameType::GrantShared, &TrustContents)
            .unwrap();
        // Stored in, say, an IOMMU entry: the references stay held.
        let raw = typed.into_raw();
        assert_eq!(table.state(MFN).unwrap().type_refs, 1);
        let typed = TypedRef::from_raw(&table, &TrustContents, raw);
        assert_eq!(typed.put(), PutOutcome::StillReferenced);
        let state = table.state(MFN).unwrap();
        assert_eq!((state.refs, state.type_refs), (1, 0));
    }

    #[test]
    fn typed_guard_that_cannot_take_its_type_keeps_no_reference() {
        let frames: [FrameInfo; 1] = Default::default();
        let table = FrameTable::new(&frames, &[FrameRange::new(MFN, 1).unwrap()]).unwrap();
        table.assign(MFN, D1).unwrap();
        let writable = table
            .get_typed_ref(MFN, D1, FrameType::Writable, &TrustContents)
            .unwrap();
        assert!(matches!(
            table.get_typed_ref(MFN, D1, FrameType::L1, &TrustContents),
            Err(FrameError::TypeConflict { .. })
        ));
        assert_eq!(table.state(MFN).unwrap().refs, 2);
        drop(writable);
        assert_eq!(table.state(MFN).unwrap().refs, 1);
    }
}
